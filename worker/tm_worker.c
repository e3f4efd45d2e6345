/*  tm_worker - the worker actor: append, group commit, ack, apply

    The loop, per wake-up:
      1. drain every message waiting on the ROUTER (bounded), answering
         reads and refusals at once and staging each good APPEND part as a
         log record;
      2. commit all staged records in one write (fsync'd by default);
      3. ack every staged part (or refuse them all with RETRY_LATER if the
         write failed: nothing unwritten is ever acked);
      4. apply the parts to the twins.
    Heartbeats and checkpoints run between drains. The fewer, larger the
    writes, the less the fsync costs each reading; under load a drain holds
    many parts, and at low load a part is committed as soon as it arrives.
*/
#include "tm_worker.h"
#include "tm_auth.h"
#include "tm_commands.h"
#include "tm_history.h"
#include "tm_log.h"
#include "tm_mapclient.h"
#include "tm_modelsync.h"
#include "tm_msg.h"
#include "tm_net.h"
#include "tm_store.h"
#include "tm_twins.h"
#include "tm_util.h"
#include "tm_wire.h"
#include "tm_wlog.h"
#include "tm_derived.h"
#include "tm_wquery.h"
#include "tm_peers.h"

#include <malloc.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#define S_DRAIN_MAX_PARTS 512          //  Parts per group commit at most
#define S_DRAIN_MAX_BYTES (32 << 20)   //  Bytes per group commit at most
#define S_MAX_WRONG_SHARDS 64          //  Shards listed in one WRONG_SHARD
#define S_META_MAP "WMmap"             //  Last shard map seen, for restarts
#define S_CHECKPOINT_STEP_MS 20        //  Between the steps of a checkpoint round
#define S_TICK_PARTS 10                //  A heartbeat's sync-timer pass, in parts

typedef struct {
    zframe_t *routing;             //  Gateway to ack, owned
    uint64_t request_id;           //  Its part id
    zframe_t *body;                //  The part's readings, owned
    uint32_t readings;             //  Readings in the part
} s_staged_t;

typedef struct {
    uint64_t accepted;             //  Readings durable in the log
    uint64_t parts;                //  Parts acked
    uint64_t applied;              //  Readings that became a series' latest
    uint64_t duplicates;           //  Same series and timestamp as the latest
    uint64_t late;                 //  Older than the series' latest
    uint64_t rejected;             //  Over a per-twin or per-worker limit
    uint64_t refused;              //  Requests refused, any reason
    uint64_t malformed;            //  Undecodable messages or readings
    uint64_t wrong_shard;          //  Parts refused for shards not ours
    uint64_t retry_later;          //  Parts refused for a failed write or no map
    uint64_t unauthorized;         //  Requests from roles that may not
    uint64_t commit_failures;      //  Log writes that failed
} s_stats_t;

struct _tm_worker_t {
    char *id;                      //  Stable worker name
    char *endpoint;                //  Advertised append endpoint
    char *public_key;              //  Our Z85 public key
    zcert_t *cert;                 //  Borrowed
    bool fsync;
    int64_t heartbeat_ms;
    int64_t checkpoint_ms;
    int64_t max_batch_bytes;
    volatile sig_atomic_t *stop;
    volatile sig_atomic_t *reload;
    tm_store_t *store;             //  The worker's RocksDB
    tm_history_retention_t retention;  //  Read by the store's compactions
    tm_wlog_t *wlog;               //  Log and checkpoints in it
    tm_twins_t *twins;             //  Twin state in memory
    tm_derived_t *derived;         //  Compiled derived properties of the models
    tm_wquery_t *wquery;           //  Query columns kept between scans
    zsock_t *router;               //  APPEND and TWIN_GET from clients
    tm_mapclient_t *mapc;          //  Broker link: HELLO, shard map
    tm_modelsync_t *msync;         //  Broker link for models (own DEALER)
    tm_peers_t *peers;             //  Hierarchy: children's contributions, other workers
    zpoller_t *poller;
    uint32_t num_shards;           //  From the map (0 until a map is known)
    uint8_t shard_key[TM_SHARDMAP_KEY_BYTES];  //  From the map
    int my_index;                  //  Our index in the map's workers, -1 if absent
    uint32_t owned;                //  Shards we own at the current epoch
    tm_commands_t *commands;       //  Desired values and their events (tm_commands)
    zsock_t *events;               //  PUB of delta events to gateways (role gateway)
    s_staged_t *staged;            //  Parts in the current group commit
    size_t nstaged;
    s_stats_t stats;
    int64_t last_warn_ms;          //  Rate limit for refusal warnings
    uint64_t warns_suppressed;     //  Warnings not logged since the last one
    bool checkpoint_soon;          //  Start a checkpoint round at once (log replayed)
    int64_t memory_budget;         //  Heap bytes over which idle twins passivate, 0: never
    int64_t passivate_idle_ms;     //  Idle this long before a twin may passivate
    size_t heap_bytes;             //  Heap in use when last measured (0: not yet)
    int64_t heap_measured_ms;      //  When (monotonic)
    uint64_t passivated_before;    //  tm_wlog_passivated when the round started
    bool passivating;              //  The running round passivates
    uint64_t passive_scanned;      //  Passive twins read from the store by queries
};

//  Reactivation: read a passive twin's copy (tm_twins_load_fn).
static int
s_load_passive (void *arg, uint32_t shard, const char *entity, size_t len, uint8_t **val,
                size_t *vlen)
{
    tm_worker_t *self = (tm_worker_t *) arg;
    uint8_t key[6 + TM_WIRE_MAX_ENTITY];
    if (len > TM_WIRE_MAX_ENTITY)
        return 0;
    size_t klen = tm_wlog_passive_key (key, shard, entity, len);
    char *v = NULL;
    int rc = tm_store_get (self->store, key, klen, &v, vlen);
    if (rc == TM_STORE_E_NOT_FOUND)
        return 0;
    if (rc != 0)
        return -1;
    *val = (uint8_t *) v;
    return 1;
}

static bool
s_may_passivate (void *arg, tm_twin_t *twin)
{
    tm_worker_t *self = (tm_worker_t *) arg;
    if (!self->peers)
        return !twin->hier || twin->hier == TM_TWINS_NO_PARENT;
    return tm_peers_may_passivate (self->peers, twin);
}

//  The worker's own heap in use: malloc'd and mmap'd chunks (which resident
//  size does not show once freed pages stay mapped), less what RocksDB
//  holds (memtables, block cache: bounded by its own settings, and
//  passivating fills the memtable with the very bytes it frees).
static size_t
s_heap_bytes (tm_worker_t *self)
{
    self->heap_measured_ms = tm_util_mono_ms ();
    struct mallinfo2 mi = mallinfo2 ();
    size_t heap = mi.uordblks + mi.hblkhd;
    if (!heap) {
        //  Another allocator (a sanitizer's) tells glibc's nothing: resident size then.
        FILE *f = fopen ("/proc/self/statm", "r");
        unsigned long long size = 0, resident = 0;
        if (f) {
            if (fscanf (f, "%llu %llu", &size, &resident) != 2)
                resident = 0;
            fclose (f);
        }
        long page = sysconf (_SC_PAGESIZE);
        heap = (size_t) resident * (size_t) (page > 0? page: 4096);
    }
    uint64_t store = self->store? tm_store_memory (self->store): 0;
    return heap > store? heap - (size_t) store: 0;
}

//  Log a refusal at most once a second, saying how many were not logged.
static void
s_warn_refusal (tm_worker_t *self, const char *what, const char *detail, const char *peer)
{
    int64_t now = tm_util_mono_ms ();
    if (now - self->last_warn_ms < 1000) {
        self->warns_suppressed++;
        return;
    }
    tm_warn ("worker: refused %s peer=%s detail=\"%s\" suppressed=%llu", what, peer, detail,
             (unsigned long long) self->warns_suppressed);
    self->last_warn_ms = now;
    self->warns_suppressed = 0;
}

static void
s_reply_status (tm_worker_t *self, const tm_msg_t *msg, int type, int status,
                const char *detail)
{
    self->stats.refused++;
    s_warn_refusal (self, tm_status_name (status), detail, *msg->peer? msg->peer: "?");
    if (msg->routing)
        tm_msg_reply (self->router, msg, type, status, tm_mapclient_epoch (self->mapc), detail,
                      NULL, 0);
}

//  Recompute what we own after the map changed; persist the map so that
//  a restart can replay and serve before the broker answers.
static void
s_map_changed (tm_worker_t *self, bool persist)
{
    const tm_shardmap_t *map = tm_mapclient_map (self->mapc);
    if (!map)
        return;
    self->num_shards = map->num_shards;
    memcpy (self->shard_key, map->key, TM_SHARDMAP_KEY_BYTES);
    self->my_index = tm_shardmap_find_worker (map, self->id);
    self->owned = self->my_index < 0? 0: tm_shardmap_count_owned (map, (uint32_t) self->my_index);
    tm_info ("worker: shard map epoch=%llu owned_shards=%u", (unsigned long long) map->epoch,
             self->owned);
    if (self->peers)
        tm_peers_set_map (self->peers, map);
    tm_twins_set_passivation (self->twins, self->shard_key, self->num_shards, s_load_passive,
                              s_may_passivate, self);
    if (!persist)
        return;
    size_t size;
    uint8_t *buf = tm_shardmap_encode (map, &size);
    if (!buf || tm_store_put (self->store, S_META_MAP, strlen (S_META_MAP), buf, size, true) != 0)
        tm_warn ("worker: could not persist shard map epoch=%llu",
                 (unsigned long long) map->epoch);
    free (buf);
}

static void
s_count_apply (tm_worker_t *self, tm_apply_t rc)
{
    switch (rc) {
        case TM_APPLY_APPLIED:
            self->stats.applied++;
            break;
        case TM_APPLY_DUPLICATE:
            self->stats.duplicates++;
            break;
        case TM_APPLY_LATE:
            self->stats.late++;
            break;
        case TM_APPLY_REJECTED:
            self->stats.rejected++;
            break;
    }
}

#define S_APPLY_AHEAD 6                //  Readings decoded, hashed and prefetched ahead

//  Apply a part's readings in order. Each twin is a cache miss or three
//  (its slot, the twin, its properties) when the twins outgrow the caches,
//  and most of an apply is waiting for them: readings are decoded a few
//  ahead, each one's slot prefetched when decoded and its twin when it is
//  next, so the memory comes while the reading before is applied.
static void
s_apply_part (tm_worker_t *self, const uint8_t *data, size_t size)
{
    tm_wire_iter_t it;
    tm_reading_t ring[S_APPLY_AHEAD];
    uint64_t hash[S_APPLY_AHEAD];
    //  Checked by s_check_part before it was logged (or, on replay, before
    //  it was logged in an earlier run).
    tm_wire_iter_init_trusted (&it, data, size);
    //  One clock read per part: sync status tracks when the worker heard
    //  from a twin, to the millisecond at most.
    int64_t now = tm_util_wall_ms ();
    size_t n = 0;
    while (n < S_APPLY_AHEAD && tm_wire_next (&it, &ring[n]) == 1) {
        hash[n] = tm_twins_hash (ring[n].entity, ring[n].entity_len);
        tm_twins_prefetch (self->twins, hash[n]);
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        size_t k = i % S_APPLY_AHEAD;
        tm_reading_t r = ring[k];
        uint64_t h = hash[k];
        //  Three readings on, the slot is in: its twin; one on, the twin is
        //  in: its properties.
        if (i + 3 < n)
            tm_twins_prefetch_twin (self->twins, hash[(i + 3) % S_APPLY_AHEAD]);
        if (i + 1 < n)
            tm_twins_prefetch_props (self->twins, hash[(i + 1) % S_APPLY_AHEAD]);
        if (tm_wire_next (&it, &ring[k]) == 1) {
            hash[k] = tm_twins_hash (ring[k].entity, ring[k].entity_len);
            tm_twins_prefetch (self->twins, hash[k]);
            n++;
        }
        s_count_apply (self, tm_twins_apply_hashed (self->twins, &r, h, self->shard_key,
                                                    self->num_shards, now));
    }
}

static void
s_replay_record (void *arg, uint64_t seq, const uint8_t *data, size_t size)
{
    tm_worker_t *self = (tm_worker_t *) arg;
    //  Desired values set after this record are not cleared by it.
    tm_commands_replaying (self->commands, seq);
    //  Nor does it change shards whose stored blob holds it already.
    tm_twins_replaying (self->twins, seq);
    s_apply_part (self, data, size);
}

static void s_commit_group (tm_worker_t *self);

//  Check a part: every reading valid, every shard ours. Returns 0 with the
//  count, or a status with detail (and wrong shards listed in ack).
static int
s_check_part (tm_worker_t *self, const uint8_t *data, size_t size, uint32_t *count,
              char *detail, size_t detail_size, uint32_t *wrong, size_t *nwrong)
{
    const tm_shardmap_t *map = tm_mapclient_map (self->mapc);
    *nwrong = 0;
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    int rc;
    while ((rc = tm_wire_next (&it, &r)) == 1) {
        uint32_t shard = tm_shardmap_shard_of (map, r.entity, r.entity_len);
        if (self->my_index < 0 || map->owners[shard] != (uint32_t) self->my_index) {
            bool listed = false;
            for (size_t i = 0; i < *nwrong && !listed; i++)
                listed = wrong[i] == shard;
            if (!listed && *nwrong < S_MAX_WRONG_SHARDS)
                wrong[(*nwrong)++] = shard;
        }
    }
    if (rc < 0) {
        snprintf (detail, detail_size, "reading %zu: %s", it.index, it.error);
        return TWINMESH__STATUS__MALFORMED;
    }
    if (*nwrong) {
        snprintf (detail, detail_size, "shard %u is not owned by %s at epoch %llu", wrong[0],
                  self->id, (unsigned long long) map->epoch);
        return TWINMESH__STATUS__WRONG_SHARD;
    }
    *count = (uint32_t) it.index;
    return 0;
}

static void
s_handle_append (tm_worker_t *self, tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__APPEND_ACK;
    if (msg->role != TM_ROLE_GATEWAY && msg->role != TM_ROLE_WORKER) {
        self->stats.unauthorized++;
        s_reply_status (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                        "only gateways may append");
        return;
    }
    if ((int64_t) zframe_size (msg->body) > self->max_batch_bytes) {
        s_reply_status (self, msg, type, TWINMESH__STATUS__TOO_LARGE, "part over max_batch_bytes");
        return;
    }
    const tm_shardmap_t *map = tm_mapclient_map (self->mapc);
    if (msg->hdr.epoch > tm_mapclient_epoch (self->mapc))
        tm_mapclient_request (self->mapc);
    if (!map || map->epoch == 0) {
        self->stats.retry_later++;
        s_reply_status (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "no shard map yet");
        return;
    }
    uint32_t count = 0, wrong[S_MAX_WRONG_SHARDS];
    size_t nwrong = 0;
    char detail[256];
    int status = s_check_part (self, zframe_data (msg->body), zframe_size (msg->body), &count,
                               detail, sizeof detail, wrong, &nwrong);
    if (status == TWINMESH__STATUS__MALFORMED) {
        self->stats.malformed++;
        s_reply_status (self, msg, type, status, detail);
        return;
    }
    if (status == TWINMESH__STATUS__WRONG_SHARD) {
        self->stats.wrong_shard++;
        self->stats.refused++;
        s_warn_refusal (self, "WRONG_SHARD", detail, msg->peer);
        Twinmesh__AppendAck ack = TWINMESH__APPEND_ACK__INIT;
        ack.n_wrong_shards = nwrong;
        ack.wrong_shards = wrong;
        size_t size;
        uint8_t *buf = tm_codec_pack_buf (&ack.base, &size);
        tm_msg_reply (self->router, msg, type, status, map->epoch, detail, buf, buf? size: 0);
        free (buf);
        return;
    }
    //  Staged: ownership of the frames moves into the group.
    tm_wlog_stage (self->wlog, zframe_data (msg->body), zframe_size (msg->body));
    s_staged_t *s = &self->staged[self->nstaged++];
    s->routing = msg->routing;
    s->body = msg->body;
    s->request_id = msg->hdr.request_id;
    s->readings = count;
    msg->routing = NULL;
    msg->body = NULL;
}

static void
s_handle_twin_get (tm_worker_t *self, tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__TWIN;
    if (!tm_role_may_read (msg->role)) {
        self->stats.unauthorized++;
        s_reply_status (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                        "this key's role may not read twins");
        return;
    }
    Twinmesh__TwinGet *req =
        TM_UNPACK (TwinGet, twin_get, zframe_data (msg->body), zframe_size (msg->body));
    if (!req || !req->entity || !*req->entity) {
        self->stats.malformed++;
        tm_codec_free (&req);
        s_reply_status (self, msg, type, TWINMESH__STATUS__MALFORMED, "TwinGet needs an entity");
        return;
    }
    size_t len = strlen (req->entity);
    tm_twin_t *twin = tm_twins_find (self->twins, req->entity, len);
    if (twin) {
        size_t size;
        const char *names[TM_MODEL_MAX_DERIVED];
        tm_expr_value_t values[TM_MODEL_MAX_DERIVED];
        size_t nderived = tm_derived_all (self->derived, tm_modelsync_models (self->msync), twin,
                                          names, values, TM_MODEL_MAX_DERIVED);
        uint8_t *buf = tm_twins_encode (self->twins, twin, self->id, tm_util_wall_ms (), names,
                                        values, nderived, &size);
        //  A parent's aggregates: a TwinState fragment appended to the bytes
        //  (protobuf merges concatenated messages), so tm_twins_encode
        //  need not know about the hierarchy.
        size_t extra_size = 0;
        uint8_t *extra = buf? tm_peers_twin_extra (self->peers, twin, &extra_size): NULL;
        if (extra) {
            uint8_t *joined = realloc (buf, size + extra_size);
            if (joined) {
                memcpy (joined + size, extra, extra_size);
                buf = joined;
                size += extra_size;
            }
            free (extra);
        }
        tm_msg_reply (self->router, msg, type, buf? TWINMESH__STATUS__OK: TWINMESH__STATUS__RETRY_LATER,
                      tm_mapclient_epoch (self->mapc), NULL, buf, buf? size: 0);
        free (buf);
    }
    else {
        const tm_shardmap_t *map = tm_mapclient_map (self->mapc);
        char detail[256];
        if (map && map->epoch > 0) {
            uint32_t shard = tm_shardmap_shard_of (map, req->entity, len);
            bool mine = self->my_index >= 0 && map->owners[shard] == (uint32_t) self->my_index;
            snprintf (detail, sizeof detail, "%s shard %u on %s",
                      mine? "no such twin in": "not the owner of", shard, self->id);
            tm_msg_reply (self->router, msg, type,
                          mine? TWINMESH__STATUS__NOT_FOUND: TWINMESH__STATUS__WRONG_SHARD,
                          map->epoch, detail, NULL, 0);
        }
        else
            tm_msg_reply (self->router, msg, type, TWINMESH__STATUS__NOT_FOUND, 0,
                          "no shard map yet", NULL, 0);
    }
    tm_codec_free (&req);
}

#define S_FORECAST_MAX_POINTS 1000     //  Points in one forecast reply
#define S_FORECAST_MAX_HORIZON_MS (366LL * 86400000)

//  FORECAST_GET: the property's Holt forecast over a horizon and the time
//  until a limit, computed on a copy of its state (a what-if first applies
//  the value to that copy), so the live twin never changes.
static void
s_handle_forecast (tm_worker_t *self, tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__FORECAST;
    if (!tm_role_may_read (msg->role)) {
        self->stats.unauthorized++;
        s_reply_status (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                        "this key's role may not read twins");
        return;
    }
    Twinmesh__ForecastGet *req =
        TM_UNPACK (ForecastGet, forecast_get, zframe_data (msg->body), zframe_size (msg->body));
    if (!req || !req->entity || !*req->entity || !req->property || !*req->property
        || req->horizon_ms < 0 || req->horizon_ms > S_FORECAST_MAX_HORIZON_MS
        || req->step_ms < 0 || (req->has_limit && !isfinite (req->limit))
        || (req->what_if && !isfinite (req->set_value))) {
        self->stats.malformed++;
        tm_codec_free (&req);
        s_reply_status (self, msg, type, TWINMESH__STATUS__MALFORMED,
                        "ForecastGet needs an entity, a property, a horizon of at most a year, "
                        "and finite values");
        return;
    }
    char detail[256];
    tm_twin_t *twin = tm_twins_find (self->twins, req->entity, strlen (req->entity));
    const tm_prop_t *prop = tm_twins_prop_named (self->twins, twin, req->property);
    if (!prop) {
        snprintf (detail, sizeof detail, "%s %.128s%s%.64s", twin? "twin": "no twin",
                  req->entity, twin? " has no property ": "", twin? req->property: "");
        tm_msg_reply (self->router, msg, type, TWINMESH__STATUS__NOT_FOUND,
                      tm_mapclient_epoch (self->mapc), detail, NULL, 0);
        tm_codec_free (&req);
        return;
    }
    tm_analytics_settings_t settings = *tm_twins_settings (self->twins, twin, prop);
    tm_analytics_t an = prop->an;
    //  Forecasts start at the series' latest reading, not at the worker's
    //  clock: a sensor's own time is what its trend is measured in, and a
    //  series silent for days should not be extrapolated over the silence.
    //  A what-if says "the property is now VALUE": the level moves there
    //  and the trend and its uncertainty stay. Feeding VALUE through the
    //  update instead would mostly be clipped as an outlier (the robust
    //  Holt update is built to ignore one wild reading), and answer nothing.
    int64_t base = an.ts_ms != INT64_MIN? an.ts_ms: tm_util_wall_ms ();
    if (req->what_if) {
        if (an.ts_ms == INT64_MIN)
            tm_analytics_update (&an, &settings, base, req->set_value);
        base = an.ts_ms + 1;
        an.value = req->set_value;
        tm_analytics_set_level (&an, req->set_value);
        an.ts_ms = base;
    }
    int64_t horizon = req->horizon_ms? req->horizon_ms: 3600000;
    int64_t step = req->step_ms? req->step_ms: horizon / 12;
    if (step < horizon / S_FORECAST_MAX_POINTS)
        step = horizon / S_FORECAST_MAX_POINTS;
    if (step < 1)
        step = 1;
    settings.horizon_ms = horizon;
    if (req->has_limit) {
        //  One limit, on the side the series would have to travel to.
        double level = 0;
        tm_analytics_forecast (&an, &settings, base, &level, NULL);
        settings.limit_upper = req->limit >= level? req->limit: INFINITY;
        settings.limit_lower = req->limit < level? req->limit: -INFINITY;
    }
    size_t npoints = (size_t) (horizon / step);
    if (npoints > S_FORECAST_MAX_POINTS)
        npoints = S_FORECAST_MAX_POINTS;
    int64_t *at = calloc (npoints + 1, sizeof (int64_t));
    double *value = calloc (npoints + 1, sizeof (double));
    double *sd = calloc (npoints + 1, sizeof (double));
    Twinmesh__Forecast fc = TWINMESH__FORECAST__INIT;
    fc.entity = req->entity;
    fc.property = req->property;
    fc.from_ms = base;
    fc.simulated = req->what_if;
    size_t n = 0;
    for (size_t k = 1; at && value && sd && k <= npoints; k++) {
        int64_t t = base + (int64_t) k * step;
        if (tm_analytics_forecast (&an, &settings, t, &value[n], &sd[n]) != 0)
            break;
        at[n++] = t;
    }
    fc.n_at_ms = fc.n_value = fc.n_stddev = n;
    fc.at_ms = at;
    fc.value = value;
    fc.stddev = sd;
    double limit = 0;
    int64_t ttl = 0;
    if (!isfinite (settings.limit_upper) && !isfinite (settings.limit_lower))
        fc.limit_status = 4;
    else {
        int rc = tm_analytics_time_to_limit (&an, &settings, base, &ttl, &limit);
        fc.limit_status = rc == 0? 0: rc == TM_ANALYTICS_E_HORIZON? 1:
                          rc == TM_ANALYTICS_E_NEVER? 2: 3;
        fc.time_to_limit_ms = fc.limit_status <= 1? ttl: 0;
        fc.limit = fc.limit_status <= 1? limit: req->has_limit? req->limit: 0;
    }
    size_t size;
    uint8_t *buf = (at && value && sd)? tm_codec_pack_buf (&fc.base, &size): NULL;
    tm_msg_reply (self->router, msg, type, buf? TWINMESH__STATUS__OK: TWINMESH__STATUS__RETRY_LATER,
                  tm_mapclient_epoch (self->mapc), buf? NULL: "out of memory", buf,
                  buf? size: 0);
    free (buf);
    free (at);
    free (value);
    free (sd);
    tm_codec_free (&req);
}

//  The twin and property a read names, or NOT_FOUND sent with a detail
//  saying which is missing (NULL returned).
static const tm_prop_t *
s_find_prop (tm_worker_t *self, tm_msg_t *msg, int type, const char *entity,
             const char *property, tm_twin_t **twin_p)
{
    tm_twin_t *twin = tm_twins_find (self->twins, entity, strlen (entity));
    const tm_prop_t *prop = tm_twins_prop_named (self->twins, twin, property);
    if (!prop) {
        char detail[256];
        snprintf (detail, sizeof detail, "%s %.128s%s%.64s", twin? "twin": "no twin", entity,
                  twin? " has no property ": "", twin? property: "");
        tm_msg_reply (self->router, msg, type, TWINMESH__STATUS__NOT_FOUND,
                      tm_mapclient_epoch (self->mapc), detail, NULL, 0);
    }
    *twin_p = twin;
    return prop;
}

//  HISTORY_GET: one series' readings in a range, raw or per step, read
//  from the store and the chunks in memory (tm_history).
static void
s_handle_history (tm_worker_t *self, tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__HISTORY;
    if (!tm_role_may_read (msg->role)) {
        self->stats.unauthorized++;
        s_reply_status (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                        "this key's role may not read twins");
        return;
    }
    Twinmesh__HistoryGet *req =
        TM_UNPACK (HistoryGet, history_get, zframe_data (msg->body), zframe_size (msg->body));
    tm_history_agg_t agg = TM_HISTORY_AVG;
    if (!req || !req->entity || !*req->entity || !req->property || !*req->property
        || req->step_ms < 0 || (req->to_ms && req->to_ms <= req->from_ms)
        || tm_history_agg_parse (req->agg, &agg) != 0) {
        self->stats.malformed++;
        tm_codec_free (&req);
        s_reply_status (self, msg, type, TWINMESH__STATUS__MALFORMED,
                        "HistoryGet needs an entity, a property, to after from, a step >= 0 "
                        "and agg avg|min|max|last|count");
        return;
    }
    tm_twin_t *twin;
    const tm_prop_t *prop = s_find_prop (self, msg, type, req->entity, req->property, &twin);
    if (!prop) {
        tm_codec_free (&req);
        return;
    }
    tm_history_result_t res;
    int rc = tm_history_query (self->store, self->twins, twin, prop, req->from_ms, req->to_ms,
                               req->step_ms, agg, req->limit, &res);
    tm_codec_free (&req);
    if (rc != 0) {
        tm_msg_reply (self->router, msg, type, TWINMESH__STATUS__RETRY_LATER,
                      tm_mapclient_epoch (self->mapc), "history read failed", NULL, 0);
        return;
    }
    Twinmesh__HistoryReply rep = TWINMESH__HISTORY_REPLY__INIT;
    rep.n_ts_ms = rep.n_values = rep.n_counts = res.n;
    rep.ts_ms = res.ts_ms;
    rep.values = res.values;
    rep.counts = res.counts;
    rep.truncated = res.truncated;
    rep.late = res.late;
    size_t size;
    uint8_t *buf = tm_codec_pack_buf (&rep.base, &size);
    tm_msg_reply (self->router, msg, type, buf? TWINMESH__STATUS__OK: TWINMESH__STATUS__RETRY_LATER,
                  tm_mapclient_epoch (self->mapc), buf? NULL: "out of memory", buf,
                  buf? size: 0);
    free (buf);
    tm_history_result_fini (&res);
}

#define S_PASSIVE_BATCH 4096         //  Passive twins a query holds in memory at once

typedef struct {
    tm_twins_t *twins;             //  Passive twins read so far, NULL if none
    size_t n;
    long scanned;                  //  Fed to the partial, -1 after an error
} s_passive_batch_t;

//  Scan the batch of passive twins read and drop it.
static void
s_passive_flush (tm_worker_t *self, s_passive_batch_t *b, const tm_query_t *plan,
                 const uint32_t *shards, size_t nshards, int64_t now, tm_qpartial_t *partial)
{
    if (b->twins && b->n && b->scanned >= 0) {
        //  Their sync status as of now, as the active twins' timers keep it.
        tm_twins_tick (b->twins, now);
        //  Derived properties resolve names in their table: one of its own.
        tm_derived_t *derived = tm_derived_new (b->twins);
        long n = derived? tm_wquery_scan_rows (b->twins, tm_modelsync_models (self->msync),
                                               derived, plan, shards, nshards, now, partial): -1;
        tm_derived_destroy (&derived);
        b->scanned = n < 0? -1: b->scanned + n;
        self->passive_scanned += b->n;
    }
    tm_twins_destroy (&b->twins);
    b->n = 0;
}

//  The passive twins of the shards asked for: their copies are read from
//  the store into a table of their own, a batch at a time, scanned with
//  the same row scan, and dropped, so a query sees every twin and memory
//  stays within a batch. A copy whose twin is active again (reactivated
//  since the last checkpoint) or not in the passive set is stale and
//  skipped. Returns the twins scanned, -1 on a store error or short memory.
static long
s_scan_passive (tm_worker_t *self, const tm_query_t *plan, const uint32_t *shards,
                size_t nshards, int64_t now, tm_qpartial_t *partial)
{
    s_passive_batch_t b = {0};
    for (size_t i = 0; b.scanned >= 0 && i < nshards; i++) {
        uint32_t shard = shards[i];
        if (!tm_twins_passive_count (self->twins, shard))
            continue;
        uint8_t prefix[6 + 1];
        size_t plen = tm_wlog_passive_key (prefix, shard, "", 0);
        tm_store_iter_t *it = tm_store_iter_new (self->store, prefix, plen);
        if (!it) {
            b.scanned = -1;
            break;
        }
        const char *k, *v;
        size_t kl, vl;
        while (b.scanned >= 0 && tm_store_iter_next (it, &k, &kl, &v, &vl)) {
            const char *entity = k + plen;
            size_t len = kl - plen;
            if (len == 0 || !tm_twins_passive_has (self->twins, shard, entity, len)
                || tm_twins_find_active (self->twins, entity, len))
                continue;
            if (!b.twins) {
                b.twins = tm_twins_new ();
                if (!b.twins) {
                    b.scanned = -1;
                    break;
                }
                tm_twins_set_models (b.twins, tm_modelsync_models (self->msync));
            }
            if (tm_twins_restore_latest (b.twins, shard, (const uint8_t *) v, vl) == 1)
                b.n++;
            else
                tm_warn ("worker: the passive copy of a twin in shard %u does not decode; "
                         "a query skips it", shard);
            if (b.n >= S_PASSIVE_BATCH)
                s_passive_flush (self, &b, plan, shards, nshards, now, partial);
        }
        tm_store_iter_destroy (&it);
    }
    s_passive_flush (self, &b, plan, shards, nshards, now, partial);
    return b.scanned;
}

//  QUERY_SCAN: the broker's plan over the twins of the shards it asks for
//  that this worker owns now; the reply lists the shards scanned, so the
//  broker knows which shards answered, whatever the epochs.
static void
s_handle_query_scan (tm_worker_t *self, tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__QUERY_PARTIAL;
    if (msg->role != TM_ROLE_BROKER) {
        self->stats.unauthorized++;
        s_reply_status (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                        "only the broker scatters queries to workers");
        return;
    }
    int64_t t0 = tm_util_mono_us ();
    Twinmesh__QueryScan *req =
        TM_UNPACK (QueryScan, query_scan, zframe_data (msg->body), zframe_size (msg->body));
    tm_expr_error_t err = {0};
    tm_query_t *plan = req? tm_query_plan_decode (req->plan.data, req->plan.len, &err): NULL;
    if (!plan) {
        self->stats.malformed++;
        tm_codec_free (&req);
        char detail[300];
        snprintf (detail, sizeof detail, "query plan does not decode: %s",
                  err.message[0]? err.message: "malformed QueryScan");
        s_reply_status (self, msg, type, TWINMESH__STATUS__MALFORMED, detail);
        return;
    }
    const tm_shardmap_t *map = tm_mapclient_map (self->mapc);
    uint32_t *mine = malloc ((req->n_shards? req->n_shards: 1) * sizeof *mine);
    size_t nmine = 0;
    for (size_t i = 0; mine && map && self->my_index >= 0 && i < req->n_shards; i++) {
        uint32_t shard = req->shards[i];
        if (shard < map->num_shards && map->owners[shard] == (uint32_t) self->my_index)
            mine[nmine++] = shard;
    }
    tm_qpartial_t *partial = mine? tm_qpartial_new (plan): NULL;
    int64_t now = tm_util_wall_ms ();
    long scanned = partial? tm_wquery_scan (self->wquery, tm_modelsync_models (self->msync),
                                            self->derived, plan, mine, nmine, now, partial): -1;
    if (scanned >= 0 && tm_twins_passive_total (self->twins)) {
        long more = s_scan_passive (self, plan, mine, nmine, now, partial);
        scanned = more < 0? -1: scanned + more;
    }
    size_t size = 0;
    uint8_t *bytes = scanned >= 0? tm_qpartial_encode (partial, &size): NULL;
    uint8_t *out = NULL;
    size_t out_size = 0;
    if (bytes) {
        Twinmesh__QueryPartialReply rep = TWINMESH__QUERY_PARTIAL_REPLY__INIT;
        rep.partial.data = bytes;
        rep.partial.len = size;
        rep.n_shards = nmine;
        rep.shards = mine;
        rep.worker = self->id;
        int64_t us = tm_util_mono_us () - t0;
        rep.elapsed_us = us > UINT32_MAX? UINT32_MAX: (uint32_t) us;
        out = tm_codec_pack_buf (&rep.base, &out_size);
    }
    if (out)
        tm_msg_reply (self->router, msg, type, TWINMESH__STATUS__OK,
                      tm_mapclient_epoch (self->mapc), NULL, out, out_size);
    else
        s_reply_status (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "out of memory");
    tm_debug ("worker: query scanned %ld twins in %u shards in %lld us", scanned,
              (unsigned) nmine, (long long) (tm_util_mono_us () - t0));
    free (out);
    free (bytes);
    tm_qpartial_destroy (&partial);
    free (mine);
    tm_query_destroy (&plan);
    tm_codec_free (&req);
}

static void
s_handle (tm_worker_t *self, tm_msg_t *msg, int rc)
{
    if (rc == TM_MSG_E_MALFORMED || rc == TM_MSG_E_VERSION) {
        self->stats.malformed++;
        s_reply_status (self, msg, TWINMESH__MSG_TYPE__ERROR,
                        rc == TM_MSG_E_VERSION? TWINMESH__STATUS__BAD_VERSION:
                                                TWINMESH__STATUS__MALFORMED,
                        rc == TM_MSG_E_VERSION? "unsupported protocol version":
                                                "message does not decode");
        return;
    }
    if (msg->hdr.type == TWINMESH__MSG_TYPE__APPEND)
        s_handle_append (self, msg);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__TWIN_GET)
        s_handle_twin_get (self, msg);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__FORECAST_GET)
        s_handle_forecast (self, msg);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__HISTORY_GET)
        s_handle_history (self, msg);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__QUERY_SCAN)
        s_handle_query_scan (self, msg);
    else
    if (tm_commands_serves (msg->hdr.type)) {
        //  Parts received before a set apply before it: then a desired
        //  value is newer than every record up to the last committed one.
        if (msg->hdr.type == TWINMESH__MSG_TYPE__TWIN_SET)
            s_commit_group (self);
        if (msg->hdr.epoch > tm_mapclient_epoch (self->mapc))
            tm_mapclient_request (self->mapc);
        tm_commands_handle (self->commands, self->router, msg, tm_mapclient_map (self->mapc),
                            self->my_index, tm_wlog_last_seq (self->wlog));
    }
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__CHILD_UPDATE)
        tm_peers_on_update (self->peers, self->router, msg);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__HIER_RESYNC)
        tm_peers_on_resync (self->peers, self->router, msg);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__CHILDREN_GET)
        tm_peers_on_children_get (self->peers, self->router, msg);
    else {
        self->stats.malformed++;
        char detail[96];
        snprintf (detail, sizeof detail, "a worker does not serve %s",
                  tm_msg_type_name (msg->hdr.type));
        s_reply_status (self, msg, TWINMESH__MSG_TYPE__ERROR, TWINMESH__STATUS__MALFORMED, detail);
    }
}

//  Commit the group, ack or refuse every part in it, then apply.
static void
s_commit_group (tm_worker_t *self)
{
    if (self->nstaged == 0)
        return;
    int rc = tm_wlog_commit (self->wlog);
    if (rc != 0) {
        self->stats.commit_failures++;
        tm_error ("worker: log write failed; refusing parts=%zu", self->nstaged);
    }
    uint64_t epoch = tm_mapclient_epoch (self->mapc);
    for (size_t i = 0; i < self->nstaged; i++) {
        s_staged_t *s = &self->staged[i];
        tm_header_t hdr;
        tm_header_init (&hdr, TWINMESH__MSG_TYPE__APPEND_ACK, s->request_id, epoch);
        if (rc == 0) {
            Twinmesh__AppendAck ack = TWINMESH__APPEND_ACK__INIT;
            ack.accepted = s->readings;
            uint8_t buf[16];
            size_t size = protobuf_c_message_get_packed_size (&ack.base);
            protobuf_c_message_pack (&ack.base, buf);
            tm_msg_send (self->router, s->routing, &hdr, buf, size);
            self->stats.accepted += s->readings;
            self->stats.parts++;
        }
        else {
            hdr.status = TWINMESH__STATUS__RETRY_LATER;
            snprintf (hdr.detail, sizeof hdr.detail, "worker %s could not write its log", self->id);
            tm_msg_send (self->router, s->routing, &hdr, NULL, 0);
            self->stats.retry_later++;
            self->stats.refused++;
        }
    }
    for (size_t i = 0; i < self->nstaged; i++) {
        s_staged_t *s = &self->staged[i];
        if (rc == 0)
            s_apply_part (self, zframe_data (s->body), zframe_size (s->body));
        zframe_destroy (&s->routing);
        zframe_destroy (&s->body);
    }
    self->nstaged = 0;
    //  Desired values the group's readings cleared, in one fsync'd write.
    tm_commands_flush (self->commands);
}

static void
s_drain (tm_worker_t *self)
{
    size_t bytes = 0;
    for (int n = 0; n < S_DRAIN_MAX_PARTS && bytes < S_DRAIN_MAX_BYTES; n++) {
        if (n > 0 && !(zsock_events (self->router) & ZMQ_POLLIN))
            break;
        tm_msg_t msg;
        int rc = tm_msg_recv (self->router, true, &msg);
        if (rc < 0) {
            tm_msg_fini (&msg);
            break;
        }
        bytes += zframe_size (msg.body);
        s_handle (self, &msg, rc);
        tm_msg_fini (&msg);
    }
    s_commit_group (self);
    tm_peers_flush (self->peers, tm_util_mono_ms (), false);
}

static void
s_heartbeat (tm_worker_t *self)
{
    Twinmesh__NodeStats st = TWINMESH__NODE_STATS__INIT;
    st.readings = self->stats.accepted;
    st.batches = self->stats.parts;
    st.refused = self->stats.refused;
    st.malformed = self->stats.malformed;
    st.wrong_shard = self->stats.wrong_shard;
    st.retry_later = self->stats.retry_later;
    st.twins = tm_twins_size (self->twins);
    st.duplicates = self->stats.duplicates;
    st.late = self->stats.late;
    st.shards = self->owned;
    st.map_epoch = tm_mapclient_epoch (self->mapc);
    tm_twins_stats_t ts;
    tm_twins_stats (self->twins, &ts);
    st.anomalies = ts.anomalies;
    st.out_of_range = ts.out_of_range;
    st.stale_twins = ts.stale;
    st.error_twins = ts.error;
    st.unmodelled = ts.unmodelled;
    st.unknown_property = ts.unknown_property;
    st.invalid_type = ts.invalid_type;
    st.history_dropped = ts.history_dropped;
    tm_twins_passive_stats_t pst;
    tm_twins_passive_stats (self->twins, &pst);
    st.passive_twins = tm_twins_passive_total (self->twins);
    st.passivated = pst.passivated;
    st.reactivated = pst.reactivated;
    //  mallinfo2 walks every free chunk of every arena: at a million twins,
    //  with RocksDB's compactions freeing merge results, that took 13% of
    //  the worker's CPU when each status measured it. A round start over a
    //  budget measures it anyway; else once a minute is enough to report.
    if (self->heap_measured_ms == 0 || tm_util_mono_ms () - self->heap_measured_ms > 60000)
        self->heap_bytes = s_heap_bytes (self);
    st.heap_bytes = self->heap_bytes;
    Twinmesh__HierStats hs = TWINMESH__HIER_STATS__INIT;
    tm_peers_node_stats (self->peers, &hs);
    st.hier = &hs;
    Twinmesh__NodeInfo info = TWINMESH__NODE_INFO__INIT;
    info.id = self->id;
    info.role = (char *) "worker";
    info.endpoint = self->endpoint;
    info.public_key = self->public_key;
    info.stats = &st;
    tm_mapclient_tick (self->mapc, &info);
}

//  Load the last map we saw, so recovery knows the shard of every entity
//  and the worker can take writes before the broker answers.
static void
s_load_saved_map (tm_worker_t *self)
{
    char *val = NULL;
    size_t vlen = 0;
    if (tm_store_get (self->store, S_META_MAP, strlen (S_META_MAP), &val, &vlen) != 0)
        return;
    tm_shardmap_t *map = tm_shardmap_decode ((const uint8_t *) val, vlen);
    free (val);
    if (!map) {
        tm_warn ("worker: saved shard map does not decode; waiting for the broker's");
        return;
    }
    if (tm_mapclient_install (self->mapc, &map) == 1)
        s_map_changed (self, false);
}

tm_worker_t *
tm_worker_new (const tm_worker_config_t *config)
{
    tm_worker_t *self = (tm_worker_t *) zmalloc (sizeof *self);
    self->id = strdup (config->id);
    self->cert = config->cert;
    self->public_key = strdup (zcert_public_txt (config->cert));
    self->fsync = config->fsync;
    self->heartbeat_ms = config->heartbeat_ms > 0? config->heartbeat_ms: 1000;
    self->checkpoint_ms = config->checkpoint_ms > 0? config->checkpoint_ms: 1000;
    self->max_batch_bytes = config->max_batch_bytes;
    self->stop = config->stop;
    self->reload = config->reload;
    self->memory_budget = config->memory_budget > 0? config->memory_budget: 0;
    self->passivate_idle_ms = config->passivate_idle_ms > 0? config->passivate_idle_ms: 600000;
    self->my_index = -1;
    self->staged = calloc (S_DRAIN_MAX_PARTS, sizeof (s_staged_t));
    self->twins = tm_twins_new ();
    self->derived = self->twins? tm_derived_new (self->twins): NULL;
    self->wquery = self->twins? tm_wquery_new (self->twins): NULL;
    if (!self->staged || !self->twins || !self->derived || !self->wquery)
        goto fail;

    if (tm_util_mkdir_p (config->data_dir) != 0) {
        tm_error ("worker: cannot create data_dir=%s", config->data_dir);
        goto fail;
    }
    self->retention.retention_ms = config->history_retention_ms;
    tm_store_options_t so = {.filter = tm_history_filter, .filter_arg = &self->retention,
                             .hold_compactions = true};     //  until recovered
    self->store = tm_store_open_with (config->data_dir, &so);
    if (!self->store)
        goto fail;
    self->wlog = tm_wlog_new (self->store, config->fsync);
    if (!self->wlog)
        goto fail;
    self->mapc = tm_mapclient_new (config->broker, config->broker_pub, config->broker_key,
                                   config->cert);
    if (!self->mapc)
        goto fail;
    //  Models come over their own DEALER: a big MODEL reply must not sit
    //  in front of the map the data plane waits for.
    self->msync = tm_modelsync_new (config->broker, config->broker_key, config->cert);
    if (!self->msync)
        goto fail;
    tm_twins_set_models (self->twins, tm_modelsync_models (self->msync));
    s_load_saved_map (self);
    self->commands = tm_commands_new (self->store, self->twins, tm_modelsync_models (self->msync),
                                      self->id);
    if (!self->commands || tm_commands_load (self->commands, self->num_shards, NULL) < 0)
        goto fail;

    int64_t t0 = tm_util_mono_ms ();
    size_t bad = 0;
    long replayed = 0;
    if (self->num_shards == 0 && tm_wlog_last_seq (self->wlog) > tm_wlog_checkpoint_seq (self->wlog)) {
        tm_error ("worker: log records exist but no shard map was saved; data_dir=%s",
                  config->data_dir);
        goto fail;
    }
    //  The saved map's key lets the restore check each twin's shard
    //  instead of searching the table for it (tm_twins_restore_begin).
    tm_twins_restore_begin (self->twins, self->shard_key, self->num_shards, self->owned);
    //  Readings of shards whose blob holds them change nothing: the log
    //  reader leaves them out (tm_wreplay), unless one may be what clears a
    //  desired value (tm_twins_apply calls tm_commands for those).
    tm_wreplay_filter_t filter = {.num_shards = self->num_shards};
    memcpy (filter.key, self->shard_key, sizeof filter.key);
    bool filtered = self->num_shards && tm_commands_count (self->commands) == 0;
    uint64_t skipped = 0;
    replayed = tm_wlog_recover (self->wlog, self->twins, s_replay_record, self,
                                filtered? &filter: NULL, &bad, &skipped);
    self->stats.duplicates += skipped;
    if (tm_store_release_compactions (self->store) != 0)
        goto fail;
    tm_commands_replaying (self->commands, UINT64_MAX);
    tm_twins_replaying (self->twins, 0);
    if (replayed < 0)
        goto fail;
    if (tm_commands_flush (self->commands) != 0)
        tm_warn ("worker: clears found in the replay are not written yet; will retry");
    //  Replayed readings are in memory and still in the log: the first
    //  checkpoint round, started as soon as the worker runs, writes them
    //  and trims the log. Not here before serving: a few seconds of log
    //  touch nearly every shard, and writing them all at once (every
    //  shard's value, ~600 MB at a million twins) took longer than the
    //  restore itself. A crash before that round just replays again.
    self->checkpoint_soon = replayed > 0;
    tm_info ("worker: recovered twins=%zu log_records=%ld bad_twins=%zu ms=%lld",
             tm_twins_size (self->twins), replayed, bad, (long long) (tm_util_mono_ms () - t0));
    if (config->compact_at_start) {
        //  After the checkpoint, so that the history it wrote is judged too.
        int64_t c0 = tm_util_mono_ms ();
        if (tm_store_compact (self->store) != 0)
            tm_warn ("worker: compaction at start failed; expired history stays until "
                     "compactions pass by");
        else
            tm_info ("worker: compacted at start ms=%lld", (long long) (tm_util_mono_ms () - c0));
    }
    memset (&self->stats, 0, sizeof self->stats);

    self->router = tm_net_server (ZMQ_ROUTER, config->bind, config->cert,
                                  config->max_batch_bytes * 2 + 65536);
    if (!self->router)
        goto fail;
    if (config->advertise && *config->advertise)
        self->endpoint = strdup (config->advertise);
    else {
        self->endpoint = tm_net_bound_endpoint (self->router);
        if (self->endpoint && (strstr (self->endpoint, "0.0.0.0") || strstr (self->endpoint, "[::]")))
            tm_warn ("worker: advertising a wildcard address endpoint=%s; set advertise",
                     self->endpoint);
    }
    //  Delta events: only gateways may subscribe (ZAP refuses the rest).
    self->events = tm_net_server_roles (ZMQ_PUB, config->events_bind && *config->events_bind?
                                        config->events_bind: "tcp://127.0.0.1:*",
                                        config->cert, 65536, "gateway");
    if (!self->events)
        goto fail;
    char *events_ep = config->events_advertise && *config->events_advertise?
                      strdup (config->events_advertise): tm_net_bound_endpoint (self->events);
    tm_commands_set_endpoint (self->commands, events_ep, self->public_key);
    tm_commands_set_pub (self->commands, self->events);
    tm_info ("worker: delta events endpoint=%s", events_ep? events_ep: "?");
    free (events_ep);
    self->poller = zpoller_new (self->router, tm_mapclient_req_sock (self->mapc),
                                tm_modelsync_sock (self->msync), NULL);
    if (!self->poller || !self->endpoint)
        goto fail;
    if (tm_mapclient_sub_sock (self->mapc))
        zpoller_add (self->poller, tm_mapclient_sub_sock (self->mapc));
    tm_peers_config_t pc = {.id = self->id, .cert = self->cert, .twins = self->twins,
                            .models = tm_modelsync_models (self->msync),
                            .poller = self->poller};
    self->peers = tm_peers_new (&pc);
    if (!self->peers)
        goto fail;
    //  Derived properties of parents read their aggregates (1 - occupied_mean).
    tm_derived_set_series (self->derived, tm_peers_series, self->peers);
    if (tm_mapclient_map (self->mapc))
        tm_peers_set_map (self->peers, tm_mapclient_map (self->mapc));
    //  Parents' aggregates are rebuilt, not persisted (docs/hierarchy.md):
    //  route every twin again and ask the other workers to resend.
    tm_peers_start (self->peers);
    tm_info ("worker: ready id=%s endpoint=%s fsync=%s", self->id, self->endpoint,
             self->fsync? "on": "off");
    return self;
fail:
    tm_worker_destroy (&self);
    return NULL;
}

void
tm_worker_destroy (tm_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_worker_t *self = *self_p;
    if (self->wlog && self->twins) {
        s_commit_group (self);
        if (tm_wlog_checkpoint (self->wlog, self->twins) != 0)
            tm_warn ("worker: final checkpoint failed; the log will replay at start");
        //  History's size, for "bytes per reading" (docs/operations.md):
        //  the closed chunks this run wrote, and the open chunks it keeps.
        uint64_t chunks, points, bytes, open_points, open_bytes;
        tm_wlog_history_counts (self->wlog, &chunks, &points, &bytes);
        tm_twins_open_history (self->twins, &open_points, &open_bytes);
        tm_info ("worker: history written chunks=%llu readings=%llu bytes=%llu (keys "
                 "included); open chunks readings=%llu bytes=%llu",
                 (unsigned long long) chunks, (unsigned long long) points,
                 (unsigned long long) bytes, (unsigned long long) open_points,
                 (unsigned long long) open_bytes);
    }
    //  Before the poller (its sockets leave it) and the twins (their links).
    if (self->derived)
        tm_derived_set_series (self->derived, NULL, NULL);
    tm_peers_destroy (&self->peers);
    if (self->staged)
        for (size_t i = 0; i < self->nstaged; i++) {
            zframe_destroy (&self->staged[i].routing);
            zframe_destroy (&self->staged[i].body);
        }
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->router);
    tm_mapclient_destroy (&self->mapc);
    tm_wlog_destroy (&self->wlog);
    tm_store_destroy (&self->store);
    tm_wquery_destroy (&self->wquery);
    tm_derived_destroy (&self->derived);
    //  Before the twins: it clears their pointers to it.
    tm_commands_destroy (&self->commands);
    zsock_destroy (&self->events);
    tm_twins_destroy (&self->twins);
    //  After the twins: they borrow its registry until then.
    tm_modelsync_destroy (&self->msync);
    free (self->staged);
    free (self->id);
    free (self->endpoint);
    free (self->public_key);
    free (self);
    *self_p = NULL;
}

//  At a checkpoint round's start: over the memory budget, the round also
//  passivates the twins idle for passivate_idle_ms (it visits every shard
//  with twins, and writes an unchanged one only if some of them go).
static void
s_round_start (tm_worker_t *self)
{
    if (!self->memory_budget)
        return;
    self->heap_bytes = s_heap_bytes (self);
    if ((int64_t) self->heap_bytes <= self->memory_budget || self->num_shards == 0)
        return;
    tm_wlog_passivate (self->wlog, tm_util_wall_ms () - self->passivate_idle_ms);
    self->passivated_before = tm_wlog_passivated (self->wlog);
    self->passivating = true;
}

int
tm_worker_run (tm_worker_t *self)
{
    int64_t next_heartbeat = 0, next_tick = 0;
    int64_t next_checkpoint = tm_util_mono_ms () + (self->checkpoint_soon? 0: self->checkpoint_ms);
    self->checkpoint_soon = false;
    int64_t round_started = 0;
    zsock_t *req = tm_mapclient_req_sock (self->mapc);
    zsock_t *sub = tm_mapclient_sub_sock (self->mapc);
    while (!*self->stop) {
        if (self->reload && *self->reload)
            return 1;
        int64_t now = tm_util_mono_ms ();
        if (now >= next_tick) {
            //  Sync timers: staleness is measured in expected intervals (a
            //  minute by default), so a pass over the twins per heartbeat is
            //  plenty; it goes in S_TICK_PARTS parts, since a whole pass over
            //  a million twins held requests for tens of milliseconds.
            size_t part = tm_twins_size (self->twins) / S_TICK_PARTS + 1;
            bool wrapped;
            tm_twins_tick_part (self->twins, tm_util_wall_ms (), part, &wrapped);
            next_tick = now + self->heartbeat_ms / S_TICK_PARTS;
        }
        if (now >= next_heartbeat) {
            s_heartbeat (self);
            tm_modelsync_tick (self->msync, now);
            next_heartbeat = now + self->heartbeat_ms;
        }
        if (now >= next_checkpoint) {
            //  A round is spread over steps so that ingest never waits for
            //  more than a tenth of the shards to be written; rounds start
            //  at most once per checkpoint interval.
            if (!tm_wlog_checkpointing (self->wlog)) {
                round_started = now;
                s_round_start (self);
            }
            size_t step = self->num_shards / 10 > 16? self->num_shards / 10: 16;
            bool done = false;
            if (tm_wlog_checkpoint_step (self->wlog, self->twins, step, &done) != 0) {
                tm_warn ("worker: checkpoint failed; retrying next interval");
                done = true;
            }
            if (done && self->passivating) {
                self->passivating = false;
                uint64_t gone = tm_wlog_passivated (self->wlog) - self->passivated_before;
                tm_info ("worker: passivated twins=%llu active=%zu passive=%zu heap_before=%zu "
                         "heap_after=%zu budget=%lld", (unsigned long long) gone,
                         tm_twins_size (self->twins), tm_twins_passive_total (self->twins),
                         self->heap_bytes, s_heap_bytes (self), (long long) self->memory_budget);
            }
            if (done)
                next_checkpoint = round_started + self->checkpoint_ms;
            else
                next_checkpoint = tm_util_mono_ms () + S_CHECKPOINT_STEP_MS;
            if (next_checkpoint < now)
                next_checkpoint = now;
        }
        tm_peers_flush (self->peers, tm_util_mono_ms (), false);
        if (tm_peers_want_map (self->peers))
            tm_mapclient_request (self->mapc);
        int64_t next = next_heartbeat < next_checkpoint? next_heartbeat: next_checkpoint;
        int64_t wait = (next_tick < next? next_tick: next) - tm_util_mono_ms ();
        int64_t peers_wait = tm_peers_next_ms (self->peers, tm_util_mono_ms ());
        if (peers_wait >= 0 && peers_wait < wait)
            wait = peers_wait;
        void *which = zpoller_wait (self->poller, (int) (wait < 0? 0: wait > 1000? 1000: wait));
        if (which == self->router)
            s_drain (self);
        else
        if (which && tm_peers_handle (self->peers, (zsock_t *) which, tm_util_mono_ms ()))
            ;
        else
        if (which && which == tm_modelsync_sock (self->msync))
            tm_modelsync_handle (self->msync, (zsock_t *) which);
        else
        if (which && (which == req || which == sub)) {
            if (tm_mapclient_handle (self->mapc, (zsock_t *) which) == 1)
                s_map_changed (self, true);
        }
    }
    tm_info ("worker: stopping id=%s accepted=%llu applied=%llu", self->id,
             (unsigned long long) self->stats.accepted, (unsigned long long) self->stats.applied);
    tm_peers_stats_t ps;
    tm_peers_stats (self->peers, &ps);
    tm_info ("worker: hierarchy sent=%llu acked=%llu resent=%llu local_values=%llu "
             "received=%llu applied=%llu ignored=%llu refused=%llu resyncs=%llu",
             (unsigned long long) ps.sent, (unsigned long long) ps.acked,
             (unsigned long long) ps.resent, (unsigned long long) ps.local_values,
             (unsigned long long) ps.received, (unsigned long long) ps.applied,
             (unsigned long long) ps.ignored, (unsigned long long) ps.refused,
             (unsigned long long) ps.resyncs);
    return 0;
}
