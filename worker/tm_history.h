/*  tm_history - a series' history in the worker's RocksDB: keys, retention
    and range queries

    Every applied reading goes into its series' open chunk (tm_twins); a
    chunk closes at TM_TWINS_CHUNK_POINTS. Each checkpoint of a shard
    writes, in the batch that writes the shard's twins, the bytes each of
    its open chunks gained since the last one, as a segment on the chunk's
    key (tm_segment: RocksDB joins them), and the last segment of each
    chunk that closed; memory keeps only what no checkpoint has stored yet.
    Late readings (older than their series' newest) are written one key
    each. Keys (timestamps are 8 bytes big-endian with the sign bit
    flipped, so that negative times sort first):

      'S' shard(4) 'H' entity 0x00 property 0x00 first_ts(8)
          -> last_ts(8) chunk            a chunk (tm_segment's formats)
      'S' shard(4) 'L' entity 0x00 property 0x00 ts(8)
          -> f64 (8, little-endian)      a late reading

    They live under the shard's prefix, so a shard's whole state is one key
    range.

    Retention is a compaction filter: a chunk whose last point (a late
    reading whose ts) is older than its retention is dropped when a
    compaction passes by, so nothing ever scans the store to expire data.
    The retention is the series' model's (a property's retention_ms, else
    its model's) or, when the model says nothing or is not loaded, the
    worker's history_retention. The filter runs on RocksDB's background
    threads, where the model registry (owned by the apply thread) cannot be
    read: so a value whose series has a model retention carries its expiry
    time, stamped when it is written from the model the worker holds then,
    and the filter only compares numbers. Value formats (byte 8 says which;
    in format 0 it is what follows the head: a version-1 chunk's version
    byte, tm_segment's marker of a joined or broken value, or nothing):

      format 0  H: last_ts(8) chunk       L: f64(8)
                the worker's history_retention applies (at compaction time,
                so changing the setting applies to all of this history)
      format 1  H: last_ts(8) 0xE1 expires(8) chunk
                L: f64(8) 0xE1 expires(8)
                dropped once now > expires (an absolute time in ms, as a
                key timestamp), whatever the worker's setting

    A changed model retention applies to history written after the change:
    what is stamped stays stamped. Format 0 is still written for series
    without a model retention (9 bytes less per value), and every store
    written before format 1 existed reads as it did.

    An open chunk is never dropped by retention (its next segment needs
    the bytes before it): it expires once closed.

    A query merges, for one series, the stored chunks overlapping the range
    (found by seeking to the last chunk starting at or before its start),
    the chunks with bytes still in memory (the open one and closed ones
    whose last segment is not written yet: their stored part is read with
    one get and joined with those bytes), and the late readings;
    sorts by time, keeps one reading per timestamp (the in-order one), and
    returns raw points or one per step. It runs on the worker's one thread,
    so it reads at most TM_HISTORY_MAX_SCAN points: past that, the answer
    stops early and says it is truncated.
*/
#ifndef TM_HISTORY_H_INCLUDED
#define TM_HISTORY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm_store.h"
#include "tm_twins.h"

#define TM_HISTORY_MAX_POINTS 100000       //  Points in one answer (and the default)
#define TM_HISTORY_MAX_SCAN 2000000        //  Readings one query may decode

//  Retention for the compaction filter; lives as long as the store.
typedef struct {
    int64_t retention_ms;          //  Keep format-0 values this long after their last
                                   //  point (the worker's history_retention; 0 = forever)
    int64_t (*now_ms) (void);      //  Clock (tests move it), NULL = wall clock
} tm_history_retention_t;

//  The compaction filter (tm_store_filter_fn) over tm_history_retention_t:
//  true to drop an expired history value. Keys that are not history, and
//  values that do not decode, are kept. Any thread; no locks, no lookups.
bool tm_history_filter (void *arg, const void *key, size_t klen, const void *val, size_t vlen);

#define TM_HISTORY_VALUE_STAMPED 0xE1  //  Byte 8 of a format-1 value
#define TM_HISTORY_NO_EXPIRY INT64_MIN //  tm_history_value_t.expires of format 0

//  A stored history value, decoded (pointers into the value's bytes).
typedef struct {
    int format;                    //  0 or 1
    int64_t expires;               //  Format 1: drop after this time (ms);
                                   //  format 0: TM_HISTORY_NO_EXPIRY
    int64_t last_ts;               //  H: the chunk's last point (L: unused)
    double value;                  //  L: the reading's value (H: unused)
    const uint8_t *chunk;          //  H: the tm_gorilla bytes (L: NULL)
    size_t chunk_size;             //  H: their size
    uint8_t kind;                  //  H: 0 for a version-1 chunk, else the
                                   //  tm_segment kind (joined or broken)
    bool closed;                   //  H joined: no segment follows (else the chunk is open)
    uint32_t count;                //  H joined: the chunk's points
    uint32_t bits;                 //  H joined: its bits
} tm_history_value_t;

//  Decode the value of a history key of kind 'H' (a chunk: version 1, or
//  joined from segments, or broken) or 'L' (a late reading), from the store
//  (untrusted: every length is checked; the chunk itself is checked by its
//  decoder). 0, or -1 if the bytes are no value of that kind.
int tm_history_value_decode (char kind, const void *val, size_t vlen, tm_history_value_t *out);

//  The retention that applies to a series of a twin (property interned, or
//  any name) from the models the twin table uses: its model's property
//  retention_ms, else its model's, else 0 when the worker's setting applies
//  (no model retention, or the model is not loaded). Apply thread only.
int64_t tm_history_series_retention (tm_twins_t *twins, const tm_twin_t *twin,
                                     const char *property, size_t plen);

//  What tm_history_stage put in batches, for the measures operators ask
//  for (bytes per reading); counted before the write succeeds.
typedef struct {
    uint64_t chunks;               //  Closed chunks
    uint64_t points;               //  Readings in them
    uint64_t value_bytes;          //  Their values as stored once joined
    uint64_t key_bytes;            //  Their keys
    uint64_t late;                 //  Late readings
    uint64_t segments;             //  Segments written (each a key and a value)
    uint64_t segment_bytes;        //  Their keys and values (write volume)
} tm_history_counts_t;

//  Add the shard's pending history (tm_twins_pending) to a batch, and a
//  segment for each of its open chunks that the shard's encoding noted due
//  (tm_twins_due: call this after encoding the shard), adding to *counts
//  if not NULL; values of series
//  with a model retention are stamped with their expiry (format 1). The
//  caller calls tm_twins_history_flushed once the batch is written. 0, or
//  -1 if memory is short (the history stays pending).
int tm_history_stage (tm_store_batch_t *batch, tm_twins_t *twins, uint32_t shard,
                      tm_history_counts_t *counts);


//  Aggregations with a step.
typedef enum {
    TM_HISTORY_AVG = 0,
    TM_HISTORY_MIN,
    TM_HISTORY_MAX,
    TM_HISTORY_LAST,
    TM_HISTORY_COUNT
} tm_history_agg_t;

//  Parse "avg" .. "count" ("" = avg). -1 if unknown.
int tm_history_agg_parse (const char *name, tm_history_agg_t *agg);

typedef struct {
    int64_t *ts_ms;                //  Point time, or bucket start
    double *values;                //  Value, or the bucket's aggregate
    uint32_t *counts;              //  1, or readings in the bucket
    size_t n;                      //  Points
    bool truncated;                //  More points than the limit, or scan cap hit
    uint64_t late;                 //  Late readings among those used
} tm_history_result_t;

//  Query one series in [from_ms, to_ms) (to_ms 0 = no end), raw (step_ms
//  0) or per step, at most limit points (0 = TM_HISTORY_MAX_POINTS).
//  0 with *result filled (free with tm_history_result_fini), -1 on a store
//  or memory error. Stored chunks that do not decode are skipped (logged).
int tm_history_query (tm_store_t *store, tm_twins_t *twins, const tm_twin_t *twin,
                      const tm_prop_t *prop, int64_t from_ms, int64_t to_ms, int64_t step_ms,
                      tm_history_agg_t agg, size_t limit, tm_history_result_t *result);

void tm_history_result_fini (tm_history_result_t *result);

#endif
