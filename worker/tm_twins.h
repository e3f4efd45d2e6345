/*  tm_twins - the worker's twins in memory: one open-addressing table

    Every reading a worker accepts is applied here, so this is on the hot
    path: at a million readings a second the apply budget is well under a
    microsecond. czmq's zhashx costs about 1.5x an open-addressing table
    (measured for DESIGN.md), so twins live in a linear-probing table keyed
    by entity id, and property names are interned once per worker so that a
    twin finds its property by comparing 16-bit ids. Nothing is allocated
    per reading; a new twin or a new property allocates once.

    A twin's state here is what issue #2 needs: per property the latest value
    and timestamp and how many readings it has applied. Idempotency lives
    here too: a reading whose timestamp equals the series' newest changes
    nothing (a retry or a replayed log record), an older one is "late".

    Not thread-safe: owned by the worker's apply thread.
*/
#ifndef TM_TWINS_H_INCLUDED
#define TM_TWINS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm_analytics.h"
#include "tm_attr.h"
#include "tm_gorilla.h"
#include "tm_model.h"
#include "tm_shardmap.h"
#include "tm_wire.h"

//  Limits that keep hostile input from growing memory without bound.
#define TM_TWINS_MAX_PROPS 64          //  Distinct properties per twin
#define TM_TWINS_MAX_NAMES 65536       //  Distinct property names per worker

//  Points in a history chunk before it closes: about two hours of a series
//  read once a minute. Smaller chunks cost a key (~40 bytes) per chunk;
//  larger ones make a range query decode more than it returns.
#define TM_TWINS_CHUNK_POINTS 120

//  112 bytes, eight properties 896, open chunks' state included (issue
//  #3: a twin in 1 KiB): the encoder lives in the property, not behind a
//  pointer, which saved a malloc'd 48 bytes and its 16-byte header per
//  series, an allocation per series at restore and a cache miss per
//  reading; it holds no last point of its own, the chunk's last point
//  being the latest value and timestamp in an (16 bytes a series); and
//  the name is a 16-bit intern id, not a pointer: with the other small
//  fields it fills the 8 bytes after the encoder, where the pointer took 8
//  of its own. The small fields last, together, so that they share padding.
typedef struct {
    tm_analytics_t an;             //  Latest value and timestamp, and analytics
    tm_gorilla_open_t hist;        //  Open history chunk, its last point the latest
                                   //  in an (empty: no point since the last chunk
                                   //  closed; its bytes are malloc'd)
    uint32_t count;                //  Readings applied to this series, saturating
                                   //  (136 years at one a second; an.count too)
    uint8_t sidx;                  //  Index in the twin's settings table, or a
                                   //  TM_TWINS_SIDX_* value (fills padding: no growth)
    uint8_t quality;               //  tm_model_quality_t of the latest reading (padding too)
    uint16_t id;                   //  Interned name's id in the table: read the name
                                   //  with tm_twins_prop_name (padding too)
} tm_prop_t;
_Static_assert (sizeof (void *) != 8 || sizeof (tm_prop_t) <= 112, "a property stays small");
_Static_assert (TM_TWINS_MAX_NAMES <= 65536, "a name's id fits tm_prop_t.id");

//  Values of tm_prop_t.sidx besides an index into the settings table.
#define TM_TWINS_SIDX_UNRESOLVED 0xff  //  Not looked up since the twin's table changed
#define TM_TWINS_SIDX_NONE 0xfe        //  The model does not define the property

//  A model's analytics settings, built once per model version (opaque).
typedef struct _tm_twins_table_t tm_twins_table_t;

//  112 bytes and the entity id, in one allocation (issue #3: a twin in
//  1 KiB): pointers first, then the sync state, then the small fields
//  packed, the id's bytes starting right after them (144 bytes with a
//  16-byte id and malloc's header, where a separate id pointer, a stored
//  hash, 64-bit generation and padding made 176).
typedef struct _tm_twin_t {
    uint64_t version;              //  Bumped on every change
    const char *model;             //  Model name, interned like property names (its
                                   //  length in the byte before it), or NULL
    tm_prop_t *props;              //  Owned array
    tm_attr_t *attrs;              //  Attributes (names interned), owned; NULL if none
    struct _tm_twin_t *next_in_shard;  //  The shard's twins, for checkpoints
    const tm_twins_table_t *table; //  Its model's settings, NULL: defaults (a cache)
    struct _tm_commands_twin_t *commands;  //  Desired values (tm_commands), NULL if none:
                                   //  the apply path's only cost for commands
    void *hier;                    //  The hierarchy's link (worker/tm_peers): NULL not
                                   //  looked at, TM_TWINS_NO_PARENT, or owned by tm_peers
    tm_analytics_sync_t sync;      //  Sync status (initializing .. error)
    uint32_t row;                  //  Its row for columnar scans (tm_twins_rows)
    uint32_t models_gen;           //  Registry generation table was resolved at, its
                                   //  low 32 bits (TM_TWINS_GEN_NONE: not resolved)
    uint16_t shard;                //  Shard of the entity (fixed per cluster; < 65536)
    uint8_t entity_len;            //  Bytes of the id (<= TM_WIRE_MAX_ENTITY)
    uint8_t nprops;                //  Properties in use (<= TM_TWINS_MAX_PROPS)
    uint8_t cap;                   //  Properties allocated
    uint8_t nattrs;                //  Attributes in attrs
    uint8_t changed;               //  In the changed-rows list
    uint8_t flags;                 //  TM_TWIN_* (passivation)
    char entity[];                 //  NUL-terminated entity id
} tm_twin_t;
_Static_assert (TM_WIRE_MAX_ENTITY <= UINT8_MAX && TM_TWINS_MAX_PROPS <= UINT8_MAX
                    && TM_SHARDMAP_MAX_SHARDS <= UINT16_MAX + 1,
                "a twin's small fields hold their limits");
_Static_assert (sizeof (void *) != 8 || sizeof (tm_twin_t) <= 112, "a twin stays small");

//  tm_twin_t.models_gen of a twin whose settings are not resolved yet.
#define TM_TWINS_GEN_NONE UINT32_MAX

//  tm_twin_t.flags.
#define TM_TWIN_PINNED 0x01        //  Never passivated: something keeps its pointer
#define TM_TWIN_PASSIVATING 0x02   //  Marked by tm_twins_passivate_mark, not yet gone
#define TM_TWIN_REACTIVATED 0x04   //  Loaded back from its passive copy since its
                                   //  shard's last checkpoint (which must delete it)

//  tm_twin_t.hier of a twin known to have no parent: its readings skip the
//  hierarchy with one compare.
extern const char tm_twins_no_parent_;
#define TM_TWINS_NO_PARENT ((void *) &tm_twins_no_parent_)

//  Called by the apply path for a twin whose hier is not TM_TWINS_NO_PARENT
//  (see tm_twins_set_touch): prop is the index of a property that just got
//  a good reading, or -1 when the twin's model or attributes changed (its
//  parent may have). Must be cheap: it runs per reading.
typedef void (tm_twins_touch_fn) (void *arg, tm_twin_t *twin, int prop);

typedef enum {
    TM_APPLY_APPLIED = 0,          //  Newer than the series' newest: now latest
    TM_APPLY_DUPLICATE,            //  Same timestamp as the newest: no change
    TM_APPLY_LATE,                 //  Older than the newest: no change to latest
    TM_APPLY_REJECTED              //  Over a limit (properties per twin, names)
} tm_apply_t;

typedef struct _tm_twins_t tm_twins_t;

//  History waiting for its shard's next checkpoint: the last segment of a
//  closed chunk (tm_segment: the earlier ones are stored already when
//  start > 0), or one late reading (older than its series' newest, so not
//  in the time-ordered chunks). A checkpoint writes them with the shard's
//  twins, in one batch.
typedef struct _tm_twins_pending_t {
    struct _tm_twins_pending_t *next;  //  Next in the shard's list (newest first)
    const tm_twin_t *twin;         //  Its twin (twins live as long as the table)
    const char *property;          //  Interned property name
    bool late;                     //  A late reading, not a chunk
    int64_t first_ts;              //  Chunk: first point; late: the reading's ts
    int64_t last_ts;               //  Chunk: last point; late: the reading's ts
    double value;                  //  Late: the reading's value
    uint32_t start;                //  Chunk: offset of data in the chunk
    uint32_t bits;                 //  Chunk: its bits in all
    uint32_t count;                //  Chunk: its points
    size_t size;                   //  Chunk: bytes at data
    uint8_t data[];                //  Chunk: tm_gorilla bytes [start, ceil(bits / 8))
} tm_twins_pending_t;

//  New empty table.
tm_twins_t *tm_twins_new (void);

//  The log record (tm_wlog sequence number) the table's state includes:
//  written into the shard blobs encoded from now on, so that recovery
//  knows which logged readings a shard's stored twins hold already.
void tm_twins_set_log_seq (tm_twins_t *self, uint64_t seq);

//  Recovery: the log record being replayed now (0 when replay is over).
//  Its readings of a shard whose stored blob covers the record (blob's
//  log seq >= seq) change nothing: they count as duplicates. Without this
//  a record replayed over a shard written after it looks "late" (older
//  than the series' newest) and could only be told from a real late
//  reading by decoding the series' chunk, which is no longer in memory.
void tm_twins_replaying (tm_twins_t *self, uint64_t seq);

//  The log seq the shard's restored blob covers (0: none).
uint64_t tm_twins_covered (const tm_twins_t *self, uint32_t shard);

//  All of them: TM_SHARDMAP_MAX_SHARDS entries, or NULL if no blob covers
//  any record. Written only by restores, so another thread may read it
//  while the apply thread replays (tm_wreplay).
const uint64_t *tm_twins_covered_all (const tm_twins_t *self);

//  True if a checkpoint writes the series' bytes not yet stored as a
//  segment now (tm_history_stage), rather than keeping them in the shard's
//  blob: once they outgrow the room the encoder has for them inside the
//  property. A segment is a key in RocksDB, dearer to write than a few
//  bytes more of a blob that is written anyway, so a series reporting
//  every second writes one about every five readings, not every round.
//  The blob, tm_history_stage and tm_twins_history_flushed decide alike.
bool tm_twins_flush_due (const tm_prop_t *p);

//  Encoding a twin for a checkpoint (tm_twins_encode_shard, _encode_twin)
//  notes each of its series that is due, so that tm_history_stage and
//  tm_twins_history_flushed need not walk the shard's twins again (at a
//  million twins each walk is a few hundred ms of cache misses). The notes
//  hold twin pointers: clear them before each checkpoint step, while no
//  twin can have left the table since they were taken.
typedef struct {
    tm_twin_t *twin;
    uint16_t prop;                 //  Index in twin->props
} tm_twins_due_t;
void tm_twins_due_clear (tm_twins_t *self);
const tm_twins_due_t *tm_twins_due (const tm_twins_t *self, size_t *n);

//  The shard's blob and its history (tm_history_stage) were written: the
//  open chunks noted due (above) now keep only the bytes not yet stored.
void tm_twins_history_flushed (tm_twins_t *self, uint32_t shard);

//  Destroy, freeing every twin; nulls the pointer.
void tm_twins_destroy (tm_twins_t **self_p);

//  Apply one reading to the twin of its entity. A new twin is created in
//  the entity's shard under the cluster's key: the siphash is computed
//  only then, not for every reading.
tm_apply_t tm_twins_apply (tm_twins_t *self, const tm_reading_t *r,
                           const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards,
                           int64_t now_ms);

//  The same with the entity's table hash (tm_twins_hash) already known:
//  a caller that walks a batch hashes a few readings ahead and prefetches
//  their slots, twins and properties (tm_twins_prefetch, then
//  tm_twins_prefetch_twin, then tm_twins_prefetch_props, each when the
//  line before has had time to come), since waiting for the twins' memory
//  is most of an apply once they outgrow the caches.
tm_apply_t tm_twins_apply_hashed (tm_twins_t *self, const tm_reading_t *r, uint64_t hash,
                                  const uint8_t key[TM_SHARDMAP_KEY_BYTES],
                                  uint32_t num_shards, int64_t now_ms);
uint64_t tm_twins_hash (const char *entity, size_t len);
void tm_twins_prefetch (tm_twins_t *self, uint64_t hash);
void tm_twins_prefetch_twin (tm_twins_t *self, uint64_t hash);
void tm_twins_prefetch_props (tm_twins_t *self, uint64_t hash);

//  Hooks for worker/tm_commands, called with the hooks' arg: created for
//  every new twin (from a reading or a checkpoint; prop NULL), reported
//  after a reading of a twin whose commands pointer is set became its
//  series' latest or repeated its timestamp (prop is the series). Either
//  may be NULL. Twins without commands pay one pointer test per reading.
typedef void (tm_twins_hook_fn) (void *arg, tm_twin_t *twin, const tm_prop_t *prop);
void tm_twins_set_hooks (tm_twins_t *self, tm_twins_hook_fn *created,
                         tm_twins_hook_fn *reported, void *arg);

//  Run the sync timers of every twin at now_ms (worker clock): a twin not
//  heard from within its window becomes stale. Call about once a second.
//  Returns how many twins changed state.
size_t tm_twins_tick (tm_twins_t *self, int64_t now_ms);

//  The same for the next max twins only, in row order, starting over after
//  the last (*wrapped set when this call reached it). A whole pass over a
//  million twins is tens of milliseconds of cache misses on the apply
//  thread: in parts, no request waits for all of it.
size_t tm_twins_tick_part (tm_twins_t *self, int64_t now_ms, size_t max, bool *wrapped);

//  Counters since the table was made: readings flagged anomalous and out of
//  range, and twins now stale and in error (as of the last tick or apply).
typedef struct {
    uint64_t anomalies;
    uint64_t out_of_range;
    uint64_t stale;
    uint64_t error;
    uint64_t unmodelled;           //  Readings of twins whose model is not loaded (or none)
    uint64_t unknown_property;     //  Readings of properties their twin's model lacks
    uint64_t invalid_type;         //  Fractional for an integer, not 0/1 for a boolean
    uint64_t history_dropped;      //  Applied readings not in history: memory was short
} tm_twins_stats_t;
void tm_twins_stats (tm_twins_t *self, tm_twins_stats_t *stats);

//  Use models from this registry (borrowed, must outlive the table; NULL:
//  every property uses the defaults). A model's settings are built once,
//  when the table first sees the model at a new registry generation.
void tm_twins_set_models (tm_twins_t *self, const tm_models_t *models);

//  The registry set by tm_twins_set_models (borrowed; NULL if none).
const tm_models_t *tm_twins_models (tm_twins_t *self);

//  The analytics settings a property of this twin uses: its model's, when
//  the twin's model is in the registry and defines the property, else the
//  defaults. O(1) per reading: the twin caches its model's settings table
//  and the generation it was resolved at, each property the index of its
//  settings (twin and prop are const to callers; only those caches move).
//  The pointer stays valid until tm_twins_destroy: settings tables are
//  never freed before (models change rarely, so the few old tables cost
//  little, and no twin or caller can be left pointing at a freed one).
const tm_analytics_settings_t *tm_twins_settings (tm_twins_t *self, const tm_twin_t *twin,
                                                  const tm_prop_t *prop);

//  Call touch from the apply path (see tm_twins_touch_fn); NULL: never.
void tm_twins_set_touch (tm_twins_t *self, tm_twins_touch_fn *touch, void *arg);

//  The twin of an entity, created without a reading if absent (a parent
//  that only its children's updates have named), with model (may be NULL
//  or "") if it has none yet. NULL on allocation failure. Borrowed.
tm_twin_t *tm_twins_ensure (tm_twins_t *self, const char *entity, size_t len, const char *model,
                            const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards);

//  Count a change of the twin that no reading made (a parent's aggregates):
//  its version moves and its shard is checkpointed again.
void tm_twins_mark_changed (tm_twins_t *self, tm_twin_t *twin);

//  Find a twin by entity id; NULL if absent. Borrowed.
tm_twin_t *tm_twins_find (tm_twins_t *self, const char *entity, size_t len);

//  Number of twins.
size_t tm_twins_size (tm_twins_t *self);

//  The shards whose twins changed since the last call, as a new array
//  (caller frees with free; NULL with *count 0 when none), and forget them.
uint32_t *tm_twins_take_dirty (tm_twins_t *self, size_t *count);

//  Mark a shard changed again (its checkpoint write failed).
void tm_twins_mark_dirty (tm_twins_t *self, uint32_t shard);

//  The shard's history waiting to be written (borrowed, newest first).
const tm_twins_pending_t *tm_twins_pending (tm_twins_t *self, uint32_t shard);

//  Forget the shard's pending history (it is written).
void tm_twins_pending_drop (tm_twins_t *self, uint32_t shard);

//  Closed chunks and late readings pending, over all shards.
size_t tm_twins_pending_count (tm_twins_t *self);

//  Readings and bytes in every open chunk, stored or not (walks the
//  table: for reports).
void tm_twins_open_history (tm_twins_t *self, uint64_t *points, uint64_t *bytes);

//  The interned copy of a property or attribute name, or NULL if no twin
//  on this worker ever used it (then no twin has it: queries use this to
//  compare names as pointers).
const char *tm_twins_name_find (tm_twins_t *self, const char *name, size_t len);

//  A twin's attribute by interned name; NULL if it has none.
const tm_attr_t *tm_twins_attr (const tm_twin_t *twin, const char *interned);

//  The table's slot array (*nslots entries, NULL where empty), for scans
//  that visit every twin: walking it is sequential, so a scan can prefetch
//  twins ahead, which a shard's linked list does not allow. Borrowed; valid
//  until the next apply or restore.
tm_twin_t *const *tm_twins_slots (tm_twins_t *self, size_t *nslots);

//  Every twin by row: rows are numbered in creation order and a twin
//  keeps its row for its life, so a columnar scan (worker/tm_wquery) can
//  keep a query column as an array indexed by row. *nrows rows; borrowed,
//  valid until the next apply or restore.
tm_twin_t *const *tm_twins_rows (tm_twins_t *self, size_t *nrows);

//  The rows whose twins changed since tm_twins_changed_clear: a new twin,
//  a reading applied (latest value, analytics), a model or attributes
//  set; not the sync timers of tm_twins_tick, nor duplicate or late
//  readings (they change no latest value). Each row once, in order of
//  first change. Borrowed, valid until the next apply or clear.
const uint32_t *tm_twins_changed (tm_twins_t *self, size_t *count);

//  True if a change could not be listed (out of memory): take every row
//  as changed.
bool tm_twins_changed_overflow (tm_twins_t *self);

//  Forget the changed rows (a columnar scan has caught up with them).
void tm_twins_changed_clear (tm_twins_t *self);

//  The first twin of a shard (then follow next_in_shard); NULL if none.
tm_twin_t *tm_twins_shard_first (tm_twins_t *self, uint32_t shard);

//  Attributes refused since the table was made (a model declares another
//  type, or over the limit).
uint64_t tm_twins_attrs_refused (tm_twins_t *self);

//  Length of a property name (interned names carry it).
size_t tm_twins_name_len (const char *interned);

//  A property's name, interned: borrowed, and the same pointer for the
//  table's life (pending history, attributes and models keep it).
const char *tm_twins_prop_name (const tm_twins_t *self, const tm_prop_t *prop);

//  A twin's property by a name interned by the twin's own table (from
//  tm_twins_name_find: the id it carries means nothing to another table);
//  NULL if the twin has no such property. Compares ids, not strings.
const tm_prop_t *tm_twins_prop (const tm_twin_t *twin, const char *interned);

//  The same by any name (NUL-terminated): NULL also if no twin of the
//  table has such a property. For requests, which name it as text.
const tm_prop_t *tm_twins_prop_named (tm_twins_t *self, const tm_twin_t *twin,
                                      const char *name);

//  Encode every twin of a shard into *buf (grown as needed; caller owns,
//  reuse it across calls). Returns the encoded size, or 0 on allocation
//  failure. The encoding is the worker's own checkpoint format: one value
//  per shard, so a checkpoint is one RocksDB put per shard, not per twin.
size_t tm_twins_encode_shard (tm_twins_t *self, uint32_t shard, uint8_t **buf, size_t *cap);

//  Restore the twins of one shard from tm_twins_encode_shard bytes (which
//  may come from a damaged disk: every length is checked). Returns the
//  twins restored, or -1 if the bytes are invalid (twins decoded before the
//  fault are kept).
long tm_twins_restore_shard (tm_twins_t *self, uint32_t shard, const uint8_t *data,
                             size_t size);

//  The same without the series' open history chunks: the twins have their
//  latest values, analytics and sync state only, which is all a query
//  reads (resuming each chunk's encoder was a third of a scan of passive
//  twins). For tables that are read and dropped, never encoded.
long tm_twins_restore_latest (tm_twins_t *self, uint32_t shard, const uint8_t *data,
                              size_t size);

//  The same in two steps, for recovery on two threads: decode on any
//  thread (it touches no table), then restore on the table's thread. A
//  decoded blob owns its bytes (data_p is consumed; malloc'd) and the
//  twins' properties; whoever holds it destroys it. decode returns NULL
//  only when memory is short; bytes that do not decode are reported by
//  restore_decoded, which returns as tm_twins_restore_shard and consumes
//  *decoded_p.
typedef struct _tm_twins_decoded_t tm_twins_decoded_t;
tm_twins_decoded_t *tm_twins_decode_shard (uint8_t **data_p, size_t size);
long tm_twins_restore_decoded (tm_twins_t *self, uint32_t shard,
                               tm_twins_decoded_t **decoded_p);
void tm_twins_decoded_destroy (tm_twins_decoded_t **self_p);

//  Twins a decoded blob holds.
size_t tm_twins_decoded_count (const tm_twins_decoded_t *self);

//  Recovery of a whole worker: between begin and end, restore_shard may
//  trust that a twin is nowhere but in its shard's blob, checking that its
//  entity hashes to that shard (key, num_shards: the cluster's) and that a
//  blob names it once, instead of searching the table for it; and the
//  first blob sizes the table for owned shards like it. Only if the table
//  is empty at begin (else, and with num_shards 0, restore_shard searches
//  as usual); every shard's blob must be restored at most once.
void tm_twins_restore_begin (tm_twins_t *self, const uint8_t key[TM_SHARDMAP_KEY_BYTES],
                             uint32_t num_shards, uint32_t owned);
void tm_twins_restore_end (tm_twins_t *self);

//  Encode a twin's state for TWIN replies (a TwinState protobuf with its
//  analytics, attributes, sync status at now_ms, and nderived derived
//  properties computed by the caller: names and values, null ones left
//  out; caller frees with free). NULL on allocation failure.
uint8_t *tm_twins_encode (tm_twins_t *self, const tm_twin_t *twin, const char *worker_id,
                          int64_t now_ms, const char *const *derived_names,
                          const tm_expr_value_t *derived_values, size_t nderived, size_t *size);

//  -------------------------------------------------------------------------
//  Passivation: under a memory budget, a twin idle for long leaves the
//  table for a copy of its own in the store ('S' shard 'P' entity: a
//  one-twin blob in the checkpoint format), written in the same batch as
//  the shard blob that no longer holds it, so a crash finds it in exactly
//  one of the two. The table keeps only the 8-byte table hash of each
//  passive twin, per shard, so that a miss in tm_twins_find (a reading, a
//  request) knows whether to look in the store: new entities pay a short
//  binary search, readings of active twins nothing.

//  Read the stored copy of a passive twin: 1 with *val (malloc'd) and
//  *vlen, 0 if there is none, -1 on a store error.
typedef int (tm_twins_load_fn) (void *arg, uint32_t shard, const char *entity, size_t len,
                                uint8_t **val, size_t *vlen);

//  May this twin leave the table (called for twins otherwise eligible; the
//  hierarchy's links say no while a message about the twin is on its way)?
typedef bool (tm_twins_may_fn) (void *arg, tm_twin_t *twin);

//  Enable reactivation: load reads passive copies; key and num_shards are
//  the cluster's (find computes a missing entity's shard). Call again
//  when the map changes. may (NULL: always) vetoes passivation.
void tm_twins_set_passivation (tm_twins_t *self, const uint8_t key[TM_SHARDMAP_KEY_BYTES],
                               uint32_t num_shards, tm_twins_load_fn *load,
                               tm_twins_may_fn *may, void *arg);

//  Mark the shard's twins that may passivate: not heard from since
//  idle_before_ms (tm_util_wall_ms clock, as readings' now), no desired
//  values, no parent link the hierarchy holds, not pinned. Returns how
//  many are marked (they are left out of tm_twins_encode_shard from now).
size_t tm_twins_passivate_mark (tm_twins_t *self, uint32_t shard, int64_t idle_before_ms);

//  True if the shard's passive set changed since its last commit (twins
//  reactivated, or marked): its checkpoint must write P and Q keys.
bool tm_twins_passive_changed (tm_twins_t *self, uint32_t shard);

//  The shard's passive set as it will be after commit (current set plus
//  marked twins, minus none), as big-endian u64 hashes in a new buffer
//  (caller frees; NULL with *size 0 when empty or out of memory: *ok says
//  which).
uint8_t *tm_twins_passive_encode (tm_twins_t *self, uint32_t shard, size_t *size, bool *ok);

//  The marked twins are written: drop them from the table (rows move:
//  every row counts as changed), add them to the passive set, and forget
//  the shard's reactivations. Returns the twins dropped.
size_t tm_twins_passivate_commit (tm_twins_t *self, uint32_t shard);

//  The write failed: the marked twins stay.
void tm_twins_passivate_abort (tm_twins_t *self, uint32_t shard);

//  Load a shard's passive set (a 'Q' value, from tm_twins_passive_encode)
//  at recovery. 0, or -1 if the bytes are not a set.
int tm_twins_passive_load (tm_twins_t *self, uint32_t shard, const uint8_t *data, size_t size);

//  True if an entity with this id is in the shard's passive set (its
//  stored copy counts for the shard; one that is not in it is stale).
bool tm_twins_passive_has (tm_twins_t *self, uint32_t shard, const char *entity, size_t len);

//  The twin in the table only, never loaded from the store.
tm_twin_t *tm_twins_find_active (tm_twins_t *self, const char *entity, size_t len);

//  Passive twins in a shard and in all.
size_t tm_twins_passive_count (tm_twins_t *self, uint32_t shard);
size_t tm_twins_passive_total (tm_twins_t *self);

//  Counters since the table was made.
typedef struct {
    uint64_t passivated;           //  Twins that left the table
    uint64_t reactivated;          //  Twins loaded back
    uint64_t failed;               //  Passive twins whose copy could not be read
} tm_twins_passive_stats_t;
void tm_twins_passive_stats (tm_twins_t *self, tm_twins_passive_stats_t *stats);

//  Encode one twin as a one-twin shard blob (tm_twins_restore_shard
//  reads it). Returns the size, 0 on allocation failure.
size_t tm_twins_encode_twin (tm_twins_t *self, const tm_twin_t *twin, uint8_t **buf,
                             size_t *cap);

#endif
