/*  tm_wlog - the worker's durable log and checkpoints in its RocksDB

    Readings are durable before they are acked: each drain of the worker's
    socket appends every accepted part as one log record, all in one
    WriteBatch, fsync'd once (group commit). That is one RocksDB write per
    group, not per reading: Debian's RocksDB is an assert-enabled build and
    a put per reading capped the whole path near 150k readings/s.

    Twin state is written in the background of that log, a shard at a
    time: one value holds all the twins of a shard, so a checkpoint costs a
    put per changed shard, not per twin (a put per twin, at a million
    twins, took most of the worker's time). A checkpoint is a *round*: it
    notes the last committed record P, then writes the shards that changed
    before P over several steps, interleaved with ingest, and when the last
    is written it records P and deletes the log up to P. Shards written
    during the round may already include records after P; replaying those
    records again changes nothing (a reading is applied only if newer than
    its series' latest), so the round needs no pause. Recovery = load every
    shard's twins + replay the records after the last recorded P.

    History rides on the same round: a shard's closed chunks and late
    readings are written in the batch that writes its twins.

    Key layout (the first byte says what a key is):
      'S' shard(4, big-endian) 'T'          -> the shard's twins (with each
                                                series' open history chunk)
      'S' shard(4) 'H' entity 0 property 0 first_ts(8)
                                             -> closed history chunk (tm_history)
      'S' shard(4) 'L' entity 0 property 0 ts(8)
                                             -> a late reading (tm_history)
      'S' shard(4) 'P' entity               -> a passive twin (tm_twins
                                                passivation: a one-twin blob)
      'S' shard(4) 'Q'                       -> the shard's passive set (the
                                                table hashes of its 'P' twins)
      'W' 'L' seq(8, big-endian)             -> log record (IngestBatch bytes)
      'W' 'M' "applied"                      -> seq(8) covered by the twins
    So a shard's twin state is one key range (streamed, deleted or ingested
    whole by a shard move), while the log stays one append-only range for
    the whole worker, which is what makes group commit one write.
*/
#ifndef TM_WLOG_H_INCLUDED
#define TM_WLOG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm_store.h"
#include "tm_twins.h"
#include "tm_wreplay.h"

typedef struct _tm_wlog_t tm_wlog_t;

//  Open the log over an open store (borrowed). Reads the log's last
//  sequence number. NULL on error.
tm_wlog_t *tm_wlog_new (tm_store_t *store, bool fsync);

//  Destroy; nulls the pointer.
void tm_wlog_destroy (tm_wlog_t **self_p);

//  Stage one record (the bytes are copied into the pending batch). Returns
//  the sequence number it will have.
uint64_t tm_wlog_stage (tm_wlog_t *self, const void *data, size_t size);

//  Write every staged record in one batch (fsync'd if configured). 0 on
//  success; -1 if the write failed, in which case nothing staged is
//  durable, the staged records are dropped and their numbers reused.
int tm_wlog_commit (tm_wlog_t *self);

//  One step of a checkpoint round: starts a round if none is running and
//  something changed (or the log is not yet trimmed), writes at most
//  max_shards changed shards and, past the first, about a megabyte of
//  shard blobs (the apply thread waits for a step), and finishes the round when none are left
//  (writes P, trims the log, fsync). *done is set when no round is left
//  running. 0, or -1 if a write failed: the round is abandoned, its shards
//  are marked changed again and the log stays.
int tm_wlog_checkpoint_step (tm_wlog_t *self, tm_twins_t *twins, size_t max_shards,
                             bool *done);

//  Passivate, in the next round this starts (in a running one: in the
//  shards it has left to write), the twins not heard
//  from since idle_before_ms (wall clock), in every shard that has twins
//  (an unchanged shard is written only if some go): each
//  goes to its own 'P' key in the batch that writes its shard without it
//  (tm_twins_passivate_mark). The request ends with the round.
void tm_wlog_passivate (tm_wlog_t *self, int64_t idle_before_ms);

//  Twins passivated by checkpoints since open.
uint64_t tm_wlog_passivated (tm_wlog_t *self);

//  The key of a passive twin's copy into key (6 + len bytes); its size.
size_t tm_wlog_passive_key (uint8_t *key, uint32_t shard, const char *entity, size_t len);

//  Run a whole checkpoint now (at shutdown, after recovery). 0 or -1.
int tm_wlog_checkpoint (tm_wlog_t *self, tm_twins_t *twins);

//  True while a round is in progress.
bool tm_wlog_checkpointing (tm_wlog_t *self);

//  Called for each record during recovery.
typedef void (tm_wlog_replay_fn) (void *arg, uint64_t seq, const uint8_t *data, size_t size);

//  Recovery: load every stored shard's twins, then call fn for each log
//  record after the checkpoint, in order. Loading ends a bulk restore the
//  caller may have begun (tm_twins_restore_begin) before the replay. With
//  filter (its key and num_shards; its covered is ignored), the readings
//  of shards whose restored blob holds them already (tm_twins_covered) are
//  left out of the records fn gets, and counted in *skipped: only for a
//  caller to which such readings mean nothing (tm_wreplay). Returns the
//  number of records replayed, or -1 on a store error. Shards whose stored
//  state does not decode are counted in *bad_twins (their twins decoded
//  before the fault are kept; the rest come back only from the log).
long tm_wlog_recover (tm_wlog_t *self, tm_twins_t *twins, tm_wlog_replay_fn *fn, void *arg,
                      const tm_wreplay_filter_t *filter, size_t *bad_twins, uint64_t *skipped);

//  History written by checkpoints since open (tm_history_counts_t).
void tm_wlog_history_counts (tm_wlog_t *self, uint64_t *chunks, uint64_t *points,
                             uint64_t *bytes);

//  Last committed sequence number (0 if none).
uint64_t tm_wlog_last_seq (tm_wlog_t *self);

//  Sequence number covered by the last checkpoint.
uint64_t tm_wlog_checkpoint_seq (tm_wlog_t *self);

#endif
