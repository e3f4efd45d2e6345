/*  tm_store - the RocksDB wrapper  */
#include "tm_store.h"
#include "tm_log.h"
#include "tm_segment.h"

#include <rocksdb/c.h>
#include <stdlib.h>
#include <string.h>

//  Read-ahead of a one-pass scan: a shard's state is one value of up to a
//  few MB at a million twins, so reads of a few blocks would each cost a
//  system call and a fresh buffer.
#define S_SCAN_READAHEAD (8 << 20)

struct _tm_store_t {
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_writeoptions_t *wopt_sync;    //  fsync the WAL on write
    rocksdb_writeoptions_t *wopt_async;   //  WAL written, not fsync'd
    rocksdb_readoptions_t *ropt;
    rocksdb_compactionfilter_t *filter;    //  Retention, or NULL
    rocksdb_mergeoperator_t *merge;        //  History segments (tm_segment); owned by
                                           //  the options (a shared_ptr), never destroyed here
    tm_store_options_t settings;           //  As given to open
    char *path;                            //  For log lines
    int fail_countdown;                    //  >0: writes until injected failure
    bool failing;                          //  Injected failure in force
    uint64_t writes;                       //  Successful writes
};

struct _tm_store_batch_t {
    rocksdb_writebatch_t *wb;
};

struct _tm_store_iter_t {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ropt;
    char *prefix;
    size_t plen;
    bool started;
};

//  RocksDB's compaction filter callbacks, over tm_store_filter_fn.
static unsigned char
s_filter (void *state, int level, const char *key, size_t klen, const char *val, size_t vlen,
          char **new_val, size_t *new_vlen, unsigned char *changed)
{
    (void) level;
    (void) new_val;
    (void) new_vlen;
    *changed = 0;
    tm_store_t *self = (tm_store_t *) state;
    return self->settings.filter (self->settings.filter_arg, key, klen, val, vlen)? 1: 0;
}

static void
s_filter_destroy (void *state)
{
    (void) state;
}

static const char *
s_filter_name (void *state)
{
    (void) state;
    return "twinmesh.retention";
}

//  RocksDB's merge operator callbacks, over tm_segment: the only values
//  ever merged are history segments.
static char *
s_full_merge (void *state, const char *key, size_t klen, const char *base, size_t blen,
              const char *const *ops, const size_t *lens, int n, unsigned char *success,
              size_t *size)
{
    (void) state;
    (void) key;
    (void) klen;
    char *value = (char *) tm_segment_join ((const uint8_t *) base, blen, ops, lens, n, size);
    *success = value != NULL;
    return value;
}

static char *
s_partial_merge (void *state, const char *key, size_t klen, const char *const *ops,
                 const size_t *lens, int n, unsigned char *success, size_t *size)
{
    (void) state;
    (void) key;
    (void) klen;
    char *value = (char *) tm_segment_combine (ops, lens, n, size);
    *success = value != NULL;
    return value;
}

static void
s_merge_free (void *state, const char *value, size_t size)
{
    (void) state;
    (void) size;
    free ((char *) value);
}

static const char *
s_merge_name (void *state)
{
    (void) state;
    return "twinmesh.segments";
}

tm_store_t *
tm_store_open (const char *path)
{
    return tm_store_open_with (path, NULL);
}

int
tm_store_release_compactions (tm_store_t *self)
{
    if (!self->settings.hold_compactions)
        return 0;
    const char *keys[] = {"disable_auto_compactions"};
    const char *values[] = {"false"};
    char *err = NULL;
    rocksdb_set_options (self->db, 1, keys, values, &err);
    if (err) {
        tm_error ("store: cannot let compactions run again path=%s reason=%s", self->path, err);
        rocksdb_free (err);
        return -1;
    }
    self->settings.hold_compactions = false;
    return 0;
}

tm_store_t *
tm_store_open_with (const char *path, const tm_store_options_t *options)
{
    tm_store_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    if (options)
        self->settings = *options;
    self->path = strdup (path);
    self->options = rocksdb_options_create ();
    rocksdb_options_set_create_if_missing (self->options, 1);
    rocksdb_options_increase_parallelism (self->options, 2);
    //  Smaller memtables and WAL files than the defaults: with fsync on,
    //  deleting a 64 MiB obsolete WAL stalled writes for ~100 ms here;
    //  recycling WAL files avoids the delete and the re-allocation.
    rocksdb_options_set_write_buffer_size (self->options, 16 << 20);
    rocksdb_options_set_max_total_wal_size (self->options, 64 << 20);
    rocksdb_options_set_recycle_log_file_num (self->options, 4);
    //  No compression: on two cores, lz4 in flushes and compactions took a
    //  third of all CPU with a million twins being checkpointed (perf), and
    //  what we write is short-lived (the log) or rewritten often (state).
    rocksdb_options_set_compression (self->options, rocksdb_no_compression);
    //  A worker restarted after a crash opens onto the memtables its log
    //  replay flushed, and the compactions they start took one of the two
    //  cores for the whole of the restore; they can wait a few seconds.
    if (self->settings.hold_compactions)
        rocksdb_options_set_disable_auto_compactions (self->options, 1);
    if (self->settings.filter) {
        self->filter = rocksdb_compactionfilter_create (self, s_filter_destroy, s_filter,
                                                        s_filter_name);
        rocksdb_options_set_compaction_filter (self->options, self->filter);
    }
    //  Always: a store holding segments cannot be read without it.
    self->merge = rocksdb_mergeoperator_create (NULL, s_filter_destroy, s_full_merge,
                                                s_partial_merge, s_merge_free, s_merge_name);
    rocksdb_options_set_merge_operator (self->options, self->merge);
    char *err = NULL;
    if (self->settings.hold_compactions) {
        //  Nor flush at open what the WAL gives back to the memtables (the
        //  log records of the last seconds, tens of MB, which a checkpoint
        //  deletes soon after): no option setter for it in the C API.
        rocksdb_options_t *opened = rocksdb_options_create ();
        rocksdb_get_options_from_string (self->options, "avoid_flush_during_recovery=true",
                                         opened, &err);
        if (err) {
            tm_warn ("store: keeps flushing at open reason=%s", err);
            rocksdb_free (err);
            err = NULL;
            rocksdb_options_destroy (opened);
        }
        else {
            rocksdb_options_destroy (self->options);
            self->options = opened;
        }
    }
    self->db = rocksdb_open (self->options, path, &err);
    if (!self->db) {
        tm_error ("store: cannot open path=%s reason=%s", path, err? err: "?");
        rocksdb_free (err);
        tm_store_destroy (&self);
        return NULL;
    }
    self->wopt_sync = rocksdb_writeoptions_create ();
    rocksdb_writeoptions_set_sync (self->wopt_sync, 1);
    self->wopt_async = rocksdb_writeoptions_create ();
    self->ropt = rocksdb_readoptions_create ();
    return self;
}

void
tm_store_destroy (tm_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_store_t *self = *self_p;
    if (self->db)
        rocksdb_close (self->db);
    if (self->options)
        rocksdb_options_destroy (self->options);
    if (self->filter)
        rocksdb_compactionfilter_destroy (self->filter);
    if (self->wopt_sync)
        rocksdb_writeoptions_destroy (self->wopt_sync);
    if (self->wopt_async)
        rocksdb_writeoptions_destroy (self->wopt_async);
    if (self->ropt)
        rocksdb_readoptions_destroy (self->ropt);
    free (self->path);
    free (self);
    *self_p = NULL;
}

static bool
s_injected_failure (tm_store_t *self)
{
    if (self->fail_countdown > 0 && --self->fail_countdown == 0)
        self->failing = true;
    return self->failing;
}

static int
s_check (tm_store_t *self, char *err, const char *what)
{
    if (err) {
        tm_error ("store: %s failed path=%s reason=%s", what, self->path, err);
        rocksdb_free (err);
        return -1;
    }
    self->writes++;
    return 0;
}

int
tm_store_put (tm_store_t *self, const void *key, size_t klen, const void *val, size_t vlen,
              bool sync)
{
    if (s_injected_failure (self))
        return -1;
    char *err = NULL;
    rocksdb_put (self->db, sync? self->wopt_sync: self->wopt_async, key, klen, val, vlen, &err);
    return s_check (self, err, "put");
}

int
tm_store_get (tm_store_t *self, const void *key, size_t klen, char **val, size_t *vlen)
{
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get (self->db, self->ropt, key, klen, &len, &err);
    if (err) {
        tm_error ("store: get failed path=%s reason=%s", self->path, err);
        rocksdb_free (err);
        return -1;
    }
    if (!v)
        return TM_STORE_E_NOT_FOUND;
    //  RocksDB's buffer must be freed with rocksdb_free; hand out malloc'd.
    *val = malloc (len + 1);
    if (!*val) {
        rocksdb_free (v);
        return -1;
    }
    memcpy (*val, v, len);
    (*val)[len] = 0;
    *vlen = len;
    rocksdb_free (v);
    return 0;
}

tm_store_batch_t *
tm_store_batch_new (void)
{
    tm_store_batch_t *self = calloc (1, sizeof *self);
    if (self)
        self->wb = rocksdb_writebatch_create ();
    return self;
}

void
tm_store_batch_destroy (tm_store_batch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    rocksdb_writebatch_destroy ((*self_p)->wb);
    free (*self_p);
    *self_p = NULL;
}

void
tm_store_batch_put (tm_store_batch_t *self, const void *key, size_t klen, const void *val,
                    size_t vlen)
{
    rocksdb_writebatch_put (self->wb, key, klen, val, vlen);
}

uint64_t
tm_store_memory (tm_store_t *self)
{
    static const char *const props[] = {"rocksdb.cur-size-all-mem-tables",
                                        "rocksdb.block-cache-usage",
                                        "rocksdb.estimate-table-readers-mem"};
    uint64_t total = 0;
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
        uint64_t v = 0;
        if (rocksdb_property_int (self->db, props[i], &v) == 0)
            total += v;
    }
    return total;
}

void
tm_store_batch_merge (tm_store_batch_t *self, const void *key, size_t klen, const void *val,
                      size_t vlen)
{
    rocksdb_writebatch_merge (self->wb, key, klen, val, vlen);
}

void
tm_store_batch_delete (tm_store_batch_t *self, const void *key, size_t klen)
{
    rocksdb_writebatch_delete (self->wb, key, klen);
}

void
tm_store_batch_delete_range (tm_store_batch_t *self, const void *start, size_t slen,
                             const void *end, size_t elen)
{
    rocksdb_writebatch_delete_range (self->wb, start, slen, end, elen);
}

void
tm_store_batch_clear (tm_store_batch_t *self)
{
    rocksdb_writebatch_clear (self->wb);
}

int
tm_store_batch_count (tm_store_batch_t *self)
{
    return rocksdb_writebatch_count (self->wb);
}

int
tm_store_write (tm_store_t *self, tm_store_batch_t *batch, bool sync)
{
    if (s_injected_failure (self))
        return -1;
    char *err = NULL;
    rocksdb_write (self->db, sync? self->wopt_sync: self->wopt_async, batch->wb, &err);
    return s_check (self, err, "write");
}

tm_store_iter_t *
tm_store_iter_new (tm_store_t *self, const void *prefix, size_t plen)
{
    return tm_store_iter_new_at (self, prefix, plen, prefix, plen);
}

tm_store_iter_t *
tm_store_iter_new_at (tm_store_t *self, const void *prefix, size_t plen, const void *start,
                      size_t slen)
{
    tm_store_iter_t *it = calloc (1, sizeof *it);
    if (!it)
        return NULL;
    it->prefix = malloc (plen? plen: 1);
    if (!it->prefix) {
        free (it);
        return NULL;
    }
    memcpy (it->prefix, prefix, plen);
    it->plen = plen;
    it->ropt = rocksdb_readoptions_create ();
    it->it = rocksdb_create_iterator (self->db, it->ropt);
    rocksdb_iter_seek (it->it, start, slen);
    return it;
}

tm_store_iter_t *
tm_store_iter_new_scan (tm_store_t *self, const void *prefix, size_t plen)
{
    tm_store_iter_t *it = calloc (1, sizeof *it);
    if (!it)
        return NULL;
    it->prefix = malloc (plen? plen: 1);
    if (!it->prefix) {
        free (it);
        return NULL;
    }
    memcpy (it->prefix, prefix, plen);
    it->plen = plen;
    it->ropt = rocksdb_readoptions_create ();
    rocksdb_readoptions_set_fill_cache (it->ropt, 0);
    rocksdb_readoptions_set_readahead_size (it->ropt, S_SCAN_READAHEAD);
    it->it = rocksdb_create_iterator (self->db, it->ropt);
    rocksdb_iter_seek (it->it, prefix, plen);
    return it;
}

tm_store_iter_t *
tm_store_iter_new_before (tm_store_t *self, const void *prefix, size_t plen, const void *start,
                          size_t slen)
{
    tm_store_iter_t *it = tm_store_iter_new_at (self, prefix, plen, start, slen);
    if (!it)
        return NULL;
    rocksdb_iter_seek_for_prev (it->it, start, slen);
    size_t klen = 0;
    const char *key = rocksdb_iter_valid (it->it)? rocksdb_iter_key (it->it, &klen): NULL;
    if (!key || klen < plen || memcmp (key, prefix, plen) != 0)
        rocksdb_iter_seek (it->it, start, slen);
    return it;
}

void
tm_store_iter_seek (tm_store_iter_t *self, const void *start, size_t slen)
{
    rocksdb_iter_seek (self->it, start, slen);
    self->started = false;
}

int
tm_store_compact (tm_store_t *self)
{
    rocksdb_compact_range (self->db, NULL, 0, NULL, 0);
    return 0;
}

bool
tm_store_iter_next (tm_store_iter_t *self, const char **key, size_t *klen, const char **val,
                    size_t *vlen)
{
    if (self->started)
        rocksdb_iter_next (self->it);
    self->started = true;
    if (!rocksdb_iter_valid (self->it))
        return false;
    *key = rocksdb_iter_key (self->it, klen);
    if (*klen < self->plen || memcmp (*key, self->prefix, self->plen) != 0)
        return false;
    *val = rocksdb_iter_value (self->it, vlen);
    return true;
}

void
tm_store_iter_destroy (tm_store_iter_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_store_iter_t *self = *self_p;
    rocksdb_iter_destroy (self->it);
    rocksdb_readoptions_destroy (self->ropt);
    free (self->prefix);
    free (self);
    *self_p = NULL;
}

void
tm_store_fail_after (tm_store_t *self, int n)
{
    self->fail_countdown = n;
    self->failing = false;
}

uint64_t
tm_store_writes (tm_store_t *self)
{
    return self->writes;
}
