/*  tm_commands - desired values of twins, their deltas, and delta events

    An operator sets a desired value on a twin's property ("valve=1"); until
    a reading reports that value (within the command's tolerance) the twin
    has a delta, which devices follow through the gateway. This module keeps
    the desired values of the worker's twins: in memory, hung off each twin
    by one pointer (tm_twin_t.commands), and in the worker's RocksDB, one
    key per desired value under the twin's shard (so a shard's commands are
    part of the shard's key range):

      'S' shard(4, big-endian) 'D' entity 0 property  -> desired record

    The record (tm_commands_record_encode) is: format 1, value, tolerance
    (IEEE doubles, big-endian bits), set_ms, version, set_seq (64-bit
    big-endian each), the setter's key name (length byte + bytes).

    Load: commands are rare (a few per twin per day at most) and readings
    are a million a second, so the apply path pays for commands only on
    twins that have one: tm_twins calls the reported hook only when the
    twin's commands pointer is set. Writes of a set or unset are fsync'd
    before the reply; a clear (a reading reported the value) is staged and
    written, fsync'd, once per group commit (tm_commands_flush).

    Replay: a desired value remembers the log position at which it was set
    (set_seq). Readings of log records at or before it never clear it, so
    replaying the log after a crash gives the desired values that were
    outstanding before it (docs/commands.md, "Durability").

    Not thread-safe: owned by the worker's thread, like its twins.
*/
#ifndef TM_COMMANDS_H_INCLUDED
#define TM_COMMANDS_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm_model.h"
#include "tm_msg.h"
#include "tm_shardmap.h"
#include "tm_store.h"
#include "tm_twins.h"

//  Outcomes of tm_commands_set besides 0 and -1.
#define TM_COMMANDS_E_INVALID 1        //  Refused, detail says why; nothing changed

#define TM_COMMANDS_MAX_PER_TWIN 64    //  Desired values per twin (= properties per twin)
#define TM_COMMANDS_MAX_CHANGES 64     //  Changes in one TWIN_SET
#define TM_COMMANDS_MAX_ENTITIES 1024  //  Entities in one DELTAS_GET
#define TM_COMMANDS_WHO_MAX 63         //  Bytes of a setter's key name kept
#define TM_COMMANDS_RECORD_MAX (42 + TM_COMMANDS_WHO_MAX)  //  Bytes of a record

//  One desired value.
typedef struct {
    char property[TM_MODEL_NAME_MAX + 1];  //  Property name, NUL-terminated
    double value;                  //  What the property should report
    double tolerance;              //  |reported - value| <= tolerance reports it; >= 0
    int64_t set_ms;                //  Worker wall clock when set
    uint64_t version;              //  Command clock value of the set
    uint64_t set_seq;              //  Last log record committed when set: replayed
                                   //  records up to it never clear it
    char set_by[TM_COMMANDS_WHO_MAX + 1];  //  Setter's key name
} tm_desired_t;

//  A twin's desired values (what tm_twin_t.commands points to).
typedef struct _tm_commands_twin_t {
    char *entity;                  //  NUL-terminated entity id, owned
    uint32_t shard;                //  Its shard
    tm_twin_t *twin;               //  The twin once it exists, or NULL (not reported yet)
    tm_desired_t *items;           //  Outstanding desired values, owned
    uint16_t n;                    //  Entries used in items
    uint16_t cap;                  //  Entries allocated
} tm_commands_twin_t;

//  One change of tm_commands_set.
typedef struct {
    const char *property;          //  Property name (borrowed)
    double value;                  //  Desired value
    double tolerance;              //  Its tolerance (>= 0)
    bool unset;                    //  Withdraw the desired value instead
} tm_command_change_t;

typedef enum {
    TM_COMMAND_SET = 0,            //  Stored: now outstanding
    TM_COMMAND_UNCHANGED,          //  The same value and tolerance were outstanding already
    TM_COMMAND_IN_SYNC,            //  The twin reports it already: nothing outstanding
    TM_COMMAND_UNSET,              //  Withdrawn
    TM_COMMAND_NOT_SET             //  Unset of a property with no desired value
} tm_command_outcome_t;

typedef struct _tm_commands_t tm_commands_t;

//  New command table over the worker's store, twins and model registry (all
//  borrowed, must outlive it); installs itself as the twins' hooks. NULL on
//  allocation failure.
tm_commands_t *tm_commands_new (tm_store_t *store, tm_twins_t *twins, const tm_models_t *models,
                                const char *worker_id);

//  Destroy (before the twins: it clears their pointers); nulls the pointer.
void tm_commands_destroy (tm_commands_t **self_p);

//  Publish events on this PUB socket (borrowed; NULL: none), as
//  [entity "\0", Header DELTA_EVENT, DeltaEvent].
void tm_commands_set_pub (tm_commands_t *self, zsock_t *pub);

//  Load every stored desired value of shards 0 .. num_shards - 1 (before
//  the log is replayed). Records that do not decode are skipped, logged
//  and counted in *bad. Returns the number loaded, or -1 on a store error.
long tm_commands_load (tm_commands_t *self, uint32_t num_shards, size_t *bad);

//  During recovery, the sequence number of the log record being replayed;
//  UINT64_MAX (the start state) once live, when every reading applied is
//  newer than every desired value.
void tm_commands_replaying (tm_commands_t *self, uint64_t seq);

//  Write the clears staged since the last flush in one fsync'd batch.
//  (self may be NULL: nothing to do.)
//  0, or -1 (they stay staged and are written with the next flush).
int tm_commands_flush (tm_commands_t *self);

//  Apply changes to one twin (entity, len bytes, in shard), all or none:
//  each is checked against the twin's model when it has a loaded one, then
//  every write goes in one fsync'd batch, then memory changes and events
//  go out. log_seq is the worker's last committed log record. outcomes
//  (n entries) receive each change's outcome. Returns 0, TM_COMMANDS_E_INVALID
//  with detail, or -1 if the store write failed (nothing changed).
int tm_commands_set (tm_commands_t *self, const char *entity, size_t len, uint32_t shard,
                     const tm_command_change_t *changes, size_t n, uint64_t log_seq,
                     int64_t now_ms, const char *who, tm_command_outcome_t *outcomes,
                     char *detail, size_t detail_size);

//  A twin's desired values, or NULL if it has none. Borrowed: valid until
//  the next set, apply or flush.
const tm_commands_twin_t *tm_commands_find (tm_commands_t *self, const char *entity);

//  Desired values outstanding over all twins.
size_t tm_commands_count (tm_commands_t *self);

//  The command clock now (every change so far has a version <= this).
uint64_t tm_commands_clock (tm_commands_t *self);

//  True if two values count as the same for a desired value: exactly, or
//  within its tolerance.
bool tm_commands_matches (const tm_desired_t *d, double reported);

//  Encode a record into buf (TM_COMMANDS_RECORD_MAX bytes); returns its size.
size_t tm_commands_record_encode (const tm_desired_t *d, uint8_t *buf);

//  Encode the key of (shard, entity, property) into buf (at least
//  6 + 128 + 1 + TM_MODEL_NAME_MAX bytes); returns its size.
size_t tm_commands_key_encode (uint32_t shard, const char *entity, size_t len,
                               const char *property, uint8_t *buf);

//  Decode a key and its record (bytes from disk: every field is checked).
//  0 with *shard, entity (NUL-terminated, esize >= 129) and *d filled, or
//  -1 if either does not decode.
int tm_commands_record_decode (const uint8_t *key, size_t klen, const uint8_t *val,
                               size_t vlen, uint32_t *shard, char *entity, size_t esize,
                               tm_desired_t *d);

//  True for the message types tm_commands_handle answers.
bool tm_commands_serves (int type);

//  Answer TWIN_SET, DELTAS_GET or EVENTS_INFO on the worker's ROUTER. map
//  (may be NULL) and my_index say which shards are ours; log_seq as for
//  tm_commands_set (the caller commits its group first, so that parts
//  received before a set are applied before it). The caller sets the
//  events endpoint with tm_commands_set_endpoint.
void tm_commands_handle (tm_commands_t *self, zsock_t *router, const tm_msg_t *msg,
                         const tm_shardmap_t *map, int my_index, uint64_t log_seq);

//  Where our PUB socket is reached, and its key, for EVENTS_INFO (copied).
void tm_commands_set_endpoint (tm_commands_t *self, const char *endpoint,
                               const char *public_key);


#endif
