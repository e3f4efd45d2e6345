/*  tm_store - the RocksDB wrapper: one store per process, batches, prefixes

    RocksDB's C API reports errors through char **errptr; that convention
    stops here. Writes go through one function, so tests can make the Nth
    write fail (tm_store_fail_after) and check that nothing is acked that
    was not written.

    Debian's librocksdb is built with assertions on and runs small writes
    about 3x slower than a release build: callers make one write per group
    of work, never one per reading.
*/
#ifndef TM_STORE_H_INCLUDED
#define TM_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_STORE_E_NOT_FOUND 1

typedef struct _tm_store_t tm_store_t;
typedef struct _tm_store_batch_t tm_store_batch_t;
typedef struct _tm_store_iter_t tm_store_iter_t;

//  Open (creating if missing) the store at path. NULL with a logged reason.
tm_store_t *tm_store_open (const char *path);

//  Called by RocksDB's compactions for every key they rewrite, from its own
//  background threads (so arg must be safe to read from any thread):
//  return true to drop the key. This is how retention is enforced without
//  ever scanning the store: old keys disappear as compactions pass by.
typedef bool (tm_store_filter_fn) (void *arg, const void *key, size_t klen, const void *val,
                                   size_t vlen);

//  Settings that must be known before the store opens.
typedef struct {
    tm_store_filter_fn *filter;    //  Compaction filter, or NULL for none
    void *filter_arg;              //  Its argument; must outlive the store
    bool hold_compactions;         //  Start no compaction until tm_store_release_compactions
} tm_store_options_t;

//  Open with options (NULL = as tm_store_open).
tm_store_t *tm_store_open_with (const char *path, const tm_store_options_t *options);

//  Let RocksDB compact again, as it decides (a store opened with
//  hold_compactions; otherwise nothing changes). 0, or -1 with a logged
//  reason.
int tm_store_release_compactions (tm_store_t *self);

//  Close; nulls the pointer.
void tm_store_destroy (tm_store_t **self_p);

//  Put one key; sync forces an fsync of the log. 0 or -1.
int tm_store_put (tm_store_t *self, const void *key, size_t klen, const void *val,
                  size_t vlen, bool sync);

//  Get one key: 0 with *val (caller frees with free) and *vlen, or
//  TM_STORE_E_NOT_FOUND, or -1 on error.
int tm_store_get (tm_store_t *self, const void *key, size_t klen, char **val, size_t *vlen);

//  A write batch, applied atomically by tm_store_write.
tm_store_batch_t *tm_store_batch_new (void);
void tm_store_batch_destroy (tm_store_batch_t **self_p);
void tm_store_batch_put (tm_store_batch_t *self, const void *key, size_t klen,
                         const void *val, size_t vlen);
//  Add a history segment (tm_segment) to the key's value: RocksDB joins
//  a key's segments with tm_segment_join when it reads or compacts it.
void tm_store_batch_merge (tm_store_batch_t *self, const void *key, size_t klen,
                           const void *val, size_t vlen);
void tm_store_batch_delete (tm_store_batch_t *self, const void *key, size_t klen);
void tm_store_batch_delete_range (tm_store_batch_t *self, const void *start, size_t slen,
                                  const void *end, size_t elen);
void tm_store_batch_clear (tm_store_batch_t *self);
int tm_store_batch_count (tm_store_batch_t *self);

//  Bytes RocksDB holds in memory for this store: memtables (unflushed
//  writes), block cache and table readers (index and filter blocks).
uint64_t tm_store_memory (tm_store_t *self);

//  Apply a batch atomically; sync forces an fsync. 0 or -1.
int tm_store_write (tm_store_t *self, tm_store_batch_t *batch, bool sync);

//  Iterate keys that start with prefix, in order. The pointers returned by
//  next are valid until the following call.
tm_store_iter_t *tm_store_iter_new (tm_store_t *self, const void *prefix, size_t plen);

//  The same, for one pass over a large range (recovery reading every
//  shard's state): blocks read are not kept in RocksDB's block cache (they
//  would only evict each other) and files are read ahead in large reads.
tm_store_iter_t *tm_store_iter_new_scan (tm_store_t *self, const void *prefix, size_t plen);

//  The same, starting at the first key >= start (which should begin with
//  prefix).
tm_store_iter_t *tm_store_iter_new_at (tm_store_t *self, const void *prefix, size_t plen,
                                       const void *start, size_t slen);
//  The same, starting at the last key <= start if it has the prefix, else
//  at the first key >= start: the chunk that may overlap a range's start.
tm_store_iter_t *tm_store_iter_new_before (tm_store_t *self, const void *prefix, size_t plen,
                                           const void *start, size_t slen);
//  Move to the first key >= start (skipping a range without reading it).
void tm_store_iter_seek (tm_store_iter_t *self, const void *start, size_t slen);
bool tm_store_iter_next (tm_store_iter_t *self, const char **key, size_t *klen,
                         const char **val, size_t *vlen);
void tm_store_iter_destroy (tm_store_iter_t **self_p);

//  Compact the whole store now (tests: runs the compaction filter). 0 or -1.
int tm_store_compact (tm_store_t *self);

//  Fault injection for tests: the nth write from now (1 = the next) and
//  every write after it fail. 0 turns it off.
void tm_store_fail_after (tm_store_t *self, int n);

//  Writes and write failures since open.
uint64_t tm_store_writes (tm_store_t *self);

#endif
