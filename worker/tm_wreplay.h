/*  tm_wreplay - recovery's log reader: reads the shard log on a helper
    thread and hands the apply thread each record without the readings it
    need not apply

    After a crash in a checkpoint round the log to replay is long (at a
    million twins under full ingest, ten thousand records of a thousand
    readings), and most of its readings are of shards whose stored blob
    holds them already (tm_twins_covered). Telling those apart costs a
    keyed hash of the entity id per reading, and reading and decoding the
    records costs as much again; on the apply thread that was a third of
    the replay. Here a helper thread reads each record, drops the readings
    of covered shards and hands on the rest as a part of concatenated
    readings (which is what a part is: tm_wire), a few records ahead of
    the apply thread, in a small bounded queue. The apply thread still
    checks coverage itself (tm_twins_apply); this only spares it the work.
*/
#ifndef TM_WREPLAY_H_INCLUDED
#define TM_WREPLAY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm_shardmap.h"
#include "tm_store.h"

//  Which readings to leave out: those of shards whose covered seq is at
//  least the record's. covered NULL: none (every reading is handed on).
typedef struct {
    uint8_t key[TM_SHARDMAP_KEY_BYTES];    //  The shard map's key
    uint32_t num_shards;                   //  > 0 when covered is set
    const uint64_t *covered;               //  TM_SHARDMAP_MAX_SHARDS entries, not
                                           //  written while the reader runs
} tm_wreplay_filter_t;

typedef struct _tm_wreplay_t tm_wreplay_t;

//  Start reading the log records at keys prefix(2) seq(8), from start (a
//  key of that form) on, from the store (borrowed; nothing else may write
//  it until destroy). filter is copied (its covered array is borrowed).
//  NULL if the thread or memory cannot be had.
tm_wreplay_t *tm_wreplay_new (tm_store_t *store, const uint8_t *prefix,
                              const uint8_t start[10], const tm_wreplay_filter_t *filter);

//  The next record, in log order: 1 with *seq, and *data and *size its
//  readings still to apply (borrowed until the next call; *size may be 0),
//  0 after the last, -1 if the reader ran out of memory or the store
//  failed. Blocks until the reader has one. Apply thread.
int tm_wreplay_next (tm_wreplay_t *self, uint64_t *seq, const uint8_t **data, size_t *size);

//  Readings left out so far (of records already handed on).
uint64_t tm_wreplay_skipped (tm_wreplay_t *self);

//  Stop the reader, join it, free what nobody took; nulls the pointer.
void tm_wreplay_destroy (tm_wreplay_t **self_p);

#endif
