/*  tm_wrestore - recovery's shard loader: reads and decodes the stored
    shards on a helper thread while the apply thread puts them in its table

    A worker restarted with a million twins spends its recovery reading a
    thousand shard values from RocksDB and decoding them (about 2.5 s on
    these 2-core machines, most of it allocating and filling the twins'
    properties and open chunks). Reading and the table-free half of the
    decoding (tm_twins_decode_shard) run here on one helper thread, a few
    shards ahead of the apply thread, which only restores them
    (tm_twins_restore_decoded): twins still enter the table from one
    thread. The helper owns its iterator; each decoded shard changes hands
    through a small bounded queue (at most S_QUEUE shards decoded ahead, so
    memory stays bounded by a few shards' values).
*/
#ifndef TM_WRESTORE_H_INCLUDED
#define TM_WRESTORE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "tm_store.h"
#include "tm_twins.h"

typedef struct _tm_wrestore_t tm_wrestore_t;

//  Start reading every shard's stored twins ('S' shard 'T' and 'Q' keys) from the
//  store (borrowed; nothing else may write it until destroy). NULL if the
//  thread or memory cannot be had.
tm_wrestore_t *tm_wrestore_new (tm_store_t *store);

//  The next shard, in key order: 1 with *shard and *decoded (the caller
//  now owns it: restore it with tm_twins_restore_decoded; NULL for a shard
//  whose twins are all passive), 0 when every shard was given, -1 if the
//  helper ran out of memory. Blocks until the helper has one. Apply thread.
int tm_wrestore_next (tm_wrestore_t *self, uint32_t *shard, tm_twins_decoded_t **decoded);

//  The passive set ('S' shard 'Q' value, see tm_twins_passive_load) of the
//  shard tm_wrestore_next gave last, or NULL if it has none. Borrowed until
//  the next call of tm_wrestore_next.
const uint8_t *tm_wrestore_passive (tm_wrestore_t *self, size_t *size);

//  Keys under 'S' that are neither shard state nor history (counted as bad),
//  once tm_wrestore_next has returned 0 or -1.
size_t tm_wrestore_bad_keys (tm_wrestore_t *self);

//  Stop the helper (if still reading), join it, free what it decoded and
//  nobody took; nulls the pointer.
void tm_wrestore_destroy (tm_wrestore_t **self_p);

#endif
