/*  tm_broker - the control plane: membership, the shard map, cluster status

    The broker is the single source of truth for the shard map, so its one
    hard rule is: an epoch is durable (RocksDB, fsync'd) before it is
    published or answered to anyone. Every change is made on a copy of the
    map, persisted, and only then swapped in; if the write fails the old map
    stays in force and the change is retried. A broker restarted after a
    crash therefore never hands out a different map under an epoch someone
    has already seen (invariant 3: one writer per shard).

    The load is small: one HELLO and one MAP_GET per node per heartbeat,
    and an occasional STATUS. One thread polls one ROUTER; the PUB socket
    only sends. Node counts are in the tens, so the node table is a hash
    and status sorts a copy of it.

    Nodes are keyed by role and id. A node is up while it has said HELLO
    within node_timeout; a worker that goes silent keeps its shards (its
    data is on its disk) and is shown down. Gateways and workers that are
    not in the map are forgotten after a long silence, so short-lived
    gateways do not accumulate.
*/
#include "tm_broker.h"
#include "tm_auth.h"
#include "tm_catalog.h"
#include "tm_codec.h"
#include "tm_coord.h"
#include "tm_log.h"
#include "tm_msg.h"
#include "tm_net.h"
#include "tm_query.h"
#include "tm_shardmap.h"
#include "tm_store.h"
#include "tm_util.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define TM_BROKER_MAP_KEY "map"
//  MODEL_PUT is the largest request: a model file of up to TM_MODEL_MAX_TEXT
//  bytes. The frame limit leaves room above it so an oversized model is
//  answered TOO_LARGE rather than cut off by ZeroMQ without a word.
#define TM_BROKER_MAX_MSG_BYTES (2 * TM_MODEL_MAX_TEXT)
#define TM_BROKER_MAX_NODES 8192               //  New ids beyond this are refused
#define TM_BROKER_FORGET_MS (10 * 60 * 1000)   //  Silence after which a node not in the map goes
#define TM_BROKER_TICK_MS 200                  //  Liveness and assignment checks
#define TM_BROKER_RETRY_MS 1000                //  Back-off after a failed map write
#define TM_BROKER_SEND_TIMEOUT_MS 100          //  A reply never stalls the loop longer
#define TM_BROKER_MAX_ID 128                   //  Node id length limit
#define TM_BROKER_MAX_ENDPOINT 256             //  Endpoint length limit

typedef struct {
    char *key;                     //  "role/id": the node table key, owned
    tm_role_t role;                //  TM_ROLE_WORKER or TM_ROLE_GATEWAY
    Twinmesh__NodeInfo *info;      //  Last HELLO's NodeInfo, owned (unpacked)
    int64_t last_seen_ms;          //  Monotonic time of the last HELLO
    bool up;                       //  Liveness as last logged, to log changes once
} s_node_t;

struct _tm_broker_t {
    zsock_t *router;               //  Requests from nodes and clients
    zsock_t *pub;                  //  Shard map epochs, send only
    zpoller_t *poller;             //  Over router, for tm_broker_poll
    tm_store_t *store;             //  The broker's own RocksDB
    tm_shardmap_t *map;            //  Current map, always the persisted one
    tm_catalog_t *catalog;         //  Models by name, kept in store
    tm_coord_t *coord;             //  Queries in flight and links to workers
    uint8_t *map_bytes;            //  Encoded current map, owned (MAP and PUB)
    size_t map_size;               //  Bytes in map_bytes
    zhashx_t *nodes;               //  "role/id" -> s_node_t, owned
    char *endpoint;                //  Bound request endpoint, owned
    char *pub_endpoint;            //  Bound publish endpoint, owned
    char public_key[41];           //  Our Z85 public key, shown in status
    uint32_t expect_workers;       //  Live workers the first assignment waits for
    int64_t assign_grace_ms;       //  After this, assign to fewer workers
    int64_t node_timeout_ms;       //  Silence after which a node is down
    int64_t started_ms;            //  Monotonic start time, for assign_grace
    int64_t next_tick_ms;          //  When s_tick runs next
    int64_t retry_commit_ms;       //  No map write before this, after a failure
    int64_t last_warn_ms;          //  Rate limit for bad-request warnings
    uint64_t pub_seq;              //  Our PUB message counter
    uint64_t requests;             //  Requests received
    uint64_t refused;              //  Requests refused (any reason)
    uint64_t malformed;            //  Requests that did not decode
};

static void
s_node_destroy (s_node_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_node_t *self = *self_p;
    tm_codec_free (&self->info);
    free (self->key);
    free (self);
    *self_p = NULL;
}

static void
s_node_destructor (void **item)
{
    s_node_destroy ((s_node_t **) item);
}

//  Printable ASCII without spaces: node ids and endpoints go into log
//  lines and status tables, so nothing a sender chooses may break a line.
static bool
s_token_valid (const char *s, size_t max)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || s[n] <= 0x20 || s[n] >= 0x7f)
            return false;
    return true;
}

static bool
s_z85_key_valid (const char *s)
{
    uint8_t raw[32];
    return s && strlen (s) == 40 && zmq_z85_decode (raw, s) != NULL;
}

// -------------------------------------------------------------------------
//  The map: persist, then swap in, then publish

static uint32_t
s_count_unassigned (const tm_shardmap_t *map)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < map->num_shards; s++)
        n += map->owners[s] == TM_SHARDMAP_UNASSIGNED;
    return n;
}

static void
s_publish (tm_broker_t *self)
{
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__MAP, 0, self->map->epoch);
    hdr.seq = ++self->pub_seq;
    zframe_t *head = tm_header_encode (&hdr);
    zmsg_t *zm = zmsg_new ();
    if (!head || !zm) {
        zframe_destroy (&head);
        zmsg_destroy (&zm);
        tm_error ("broker: cannot build PUB message epoch=%llu",
                  (unsigned long long) self->map->epoch);
        return;
    }
    zmsg_addstr (zm, "MAP");
    zmsg_append (zm, &head);
    zmsg_addmem (zm, self->map_bytes, self->map_size);
    if (zmsg_send (&zm, self->pub) != 0) {
        zmsg_destroy (&zm);
        tm_warn ("broker: cannot publish epoch=%llu (MAP_GET will carry it)",
                 (unsigned long long) self->map->epoch);
    }
}

//  Make *next_p (a changed copy of the map) the new epoch: persist with
//  fsync, swap in, publish. Consumes *next_p. On a failed write the old map
//  stays in force and further writes wait TM_BROKER_RETRY_MS. 0 or -1.
static int
s_commit (tm_broker_t *self, tm_shardmap_t **next_p, const char *reason)
{
    tm_shardmap_t *next = *next_p;
    *next_p = NULL;
    next->epoch = self->map->epoch + 1;
    size_t size = 0;
    uint8_t *bytes = tm_shardmap_encode (next, &size);
    if (!bytes || tm_store_put (self->store, TM_BROKER_MAP_KEY, strlen (TM_BROKER_MAP_KEY),
                                bytes, size, true) != 0) {
        tm_error ("broker: cannot persist shard map epoch=%llu reason=%s; keeping epoch=%llu "
                  "and retrying (check the data_dir disk)",
                  (unsigned long long) next->epoch, reason,
                  (unsigned long long) self->map->epoch);
        free (bytes);
        tm_shardmap_destroy (&next);
        self->retry_commit_ms = tm_util_mono_ms () + TM_BROKER_RETRY_MS;
        return -1;
    }
    tm_shardmap_destroy (&self->map);
    free (self->map_bytes);
    self->map = next;
    self->map_bytes = bytes;
    self->map_size = size;
    tm_info ("broker: new map epoch=%llu reason=%s workers=%zu unassigned=%u",
             (unsigned long long) next->epoch, reason, next->nworkers,
             s_count_unassigned (next));
    s_publish (self);
    return 0;
}

static int
s_load_map (tm_broker_t *self, const char *data_dir, uint32_t num_shards)
{
    char *val = NULL;
    size_t vlen = 0;
    int rc = tm_store_get (self->store, TM_BROKER_MAP_KEY, strlen (TM_BROKER_MAP_KEY), &val,
                           &vlen);
    if (rc < 0) {
        tm_error ("broker: cannot read the shard map data_dir=%s", data_dir);
        return -1;
    }
    if (rc == 0) {
        self->map = tm_shardmap_decode ((const uint8_t *) val, vlen);
        free (val);
        if (!self->map) {
            //  Never overwrite it: a new map would re-shard a cluster whose
            //  data already sits on workers under the old key.
            tm_error ("broker: the stored shard map is unreadable data_dir=%s; refusing to "
                      "start (restore it from a backup; move the directory away only to "
                      "create a new, empty cluster)",
                      data_dir);
            return -1;
        }
        if (self->map->num_shards != num_shards)
            tm_warn ("broker: num_shards=%u differs from the stored map's num_shards=%u; "
                     "keeping the stored value (it is fixed at cluster creation)",
                     num_shards, self->map->num_shards);
        tm_info ("broker: loaded shard map epoch=%llu num_shards=%u workers=%zu",
                 (unsigned long long) self->map->epoch, self->map->num_shards,
                 self->map->nworkers);
    }
    else {
        uint8_t key[TM_SHARDMAP_KEY_BYTES];
        randombytes_buf (key, sizeof key);
        self->map = tm_shardmap_new (num_shards, key);
        sodium_memzero (key, sizeof key);
        if (!self->map) {
            tm_error ("broker: cannot create a shard map num_shards=%u (1..%u)", num_shards,
                      TM_SHARDMAP_MAX_SHARDS);
            return -1;
        }
    }
    self->map_bytes = tm_shardmap_encode (self->map, &self->map_size);
    if (!self->map_bytes)
        return -1;
    if (rc == TM_STORE_E_NOT_FOUND) {
        if (tm_store_put (self->store, TM_BROKER_MAP_KEY, strlen (TM_BROKER_MAP_KEY),
                          self->map_bytes, self->map_size, true) != 0) {
            tm_error ("broker: cannot persist the new shard map data_dir=%s", data_dir);
            return -1;
        }
        tm_info ("broker: created shard map num_shards=%u epoch=0", num_shards);
    }
    return 0;
}

// -------------------------------------------------------------------------
//  Nodes

static bool
s_node_live (tm_broker_t *self, const s_node_t *node, int64_t now)
{
    return now - node->last_seen_ms <= self->node_timeout_ms;
}

static int
s_compare_nodes (const void *a, const void *b)
{
    const s_node_t *na = *(const s_node_t *const *) a;
    const s_node_t *nb = *(const s_node_t *const *) b;
    if (na->role != nb->role)
        return na->role == TM_ROLE_WORKER? -1: 1;
    return strcmp (na->info->id, nb->info->id);
}

//  Nodes sorted workers first, then by id; caller frees the array.
static s_node_t **
s_sorted_nodes (tm_broker_t *self, size_t *count)
{
    *count = zhashx_size (self->nodes);
    s_node_t **list = calloc (*count + 1, sizeof *list);
    if (!list)
        return NULL;
    size_t n = 0;
    for (s_node_t *node = zhashx_first (self->nodes); node && n < *count;
         node = zhashx_next (self->nodes))
        list[n++] = node;
    *count = n;
    qsort (list, n, sizeof *list, s_compare_nodes);
    return list;
}

//  Assign every unassigned shard round-robin over the live workers in id
//  order, once enough are live or the grace period is over.
static void
s_check_assign (tm_broker_t *self, int64_t now)
{
    if (now < self->retry_commit_ms)
        return;
    uint32_t unassigned = s_count_unassigned (self->map);
    if (unassigned == 0)
        return;
    size_t count;
    s_node_t **nodes = s_sorted_nodes (self, &count);
    if (!nodes)
        return;
    size_t live = 0;
    for (size_t i = 0; i < count; i++)
        if (nodes[i]->role == TM_ROLE_WORKER && s_node_live (self, nodes[i], now))
            nodes[live++] = nodes[i];       //  sorted order is kept
    bool enough = live >= self->expect_workers;
    bool waited = now - self->started_ms >= self->assign_grace_ms;
    tm_shardmap_t *next = NULL;
    uint32_t *index = NULL;
    if (live == 0 || (!enough && !waited))
        goto done;
    next = tm_shardmap_dup (self->map);
    index = calloc (live, sizeof *index);
    if (!next || !index)
        goto done;
    for (size_t i = 0; i < live; i++) {
        const Twinmesh__NodeInfo *info = nodes[i]->info;
        int idx = tm_shardmap_set_worker (next, info->id, info->endpoint, info->public_key);
        if (idx < 0) {
            tm_error ("broker: cannot add worker to the map id=%s", info->id);
            goto done;
        }
        index[i] = (uint32_t) idx;
    }
    size_t k = 0;
    for (uint32_t s = 0; s < next->num_shards; s++)
        if (next->owners[s] == TM_SHARDMAP_UNASSIGNED)
            next->owners[s] = index[k++ % live];
    tm_info ("broker: assigning shards=%u live_workers=%zu expect_workers=%u%s", unassigned,
             live, self->expect_workers, enough? "": " (assign_grace elapsed)");
    s_commit (self, &next, "assigned");
done:
    tm_shardmap_destroy (&next);
    free (index);
    free (nodes);
}

//  A worker that said HELLO after the map exists: add it to the worker
//  list (it owns nothing until shards move), or update a changed endpoint
//  or key. Before the first assignment the map stays at epoch 0 and the
//  workers are added when shards are assigned.
static void
s_update_worker (tm_broker_t *self, const Twinmesh__NodeInfo *info, int64_t now)
{
    if (self->map->epoch == 0 || now < self->retry_commit_ms)
        return;
    int idx = tm_shardmap_find_worker (self->map, info->id);
    const char *reason = "worker joined";
    if (idx >= 0) {
        const tm_shardmap_worker_t *w = &self->map->workers[idx];
        if (strcmp (w->endpoint, info->endpoint) == 0
            && strcmp (w->public_key, info->public_key) == 0)
            return;
        tm_warn ("broker: worker changed id=%s endpoint=%s->%s key=%s", info->id, w->endpoint,
                 info->endpoint, strcmp (w->public_key, info->public_key)? "changed": "same");
        reason = "worker changed";
    }
    tm_shardmap_t *next = tm_shardmap_dup (self->map);
    if (next && tm_shardmap_set_worker (next, info->id, info->endpoint, info->public_key) >= 0)
        s_commit (self, &next, reason);
    else
        tm_error ("broker: cannot add worker to the map id=%s", info->id);
    tm_shardmap_destroy (&next);
}

//  Liveness changes are logged once; long-silent nodes outside the map are
//  forgotten; assignment is checked.
static void
s_tick (tm_broker_t *self, int64_t now)
{
    zlistx_t *gone = zlistx_new ();
    for (s_node_t *node = zhashx_first (self->nodes); node;
         node = zhashx_next (self->nodes)) {
        bool live = s_node_live (self, node, now);
        if (node->up && !live)
            tm_warn ("broker: node down id=%s role=%s silent_ms=%lld", node->info->id,
                     tm_role_name (node->role), (long long) (now - node->last_seen_ms));
        node->up = live;
        bool in_map = node->role == TM_ROLE_WORKER
                   && tm_shardmap_find_worker (self->map, node->info->id) >= 0;
        if (!in_map && gone && now - node->last_seen_ms > TM_BROKER_FORGET_MS)
            zlistx_add_end (gone, node->key);
    }
    for (char *key = gone? zlistx_first (gone): NULL; key; key = zlistx_next (gone)) {
        tm_info ("broker: forgetting silent node key=%s", key);
        zhashx_delete (self->nodes, key);
    }
    zlistx_destroy (&gone);
    s_check_assign (self, now);
}

// -------------------------------------------------------------------------
//  Requests

static void
s_reply (tm_broker_t *self, const tm_msg_t *msg, int type, int status, const char *detail,
         const void *body, size_t size)
{
    if (status != TWINMESH__STATUS__OK)
        self->refused++;
    if (tm_msg_reply (self->router, msg, type, status, self->map->epoch, detail, body, size)
        != 0)
        tm_debug ("broker: reply not sent peer=%s type=%s (client gone)", msg->peer,
                  tm_msg_type_name (type));
}

//  Count and answer a request we cannot read; the warning is rate-limited
//  so a flood of garbage costs one line a second.
static void
s_bad_request (tm_broker_t *self, const tm_msg_t *msg, int type, int status, const char *why)
{
    self->malformed++;
    int64_t now = tm_util_mono_ms ();
    if (now - self->last_warn_ms >= 1000) {
        self->last_warn_ms = now;
        tm_warn ("broker: bad request peer=%s status=%s reason=%s malformed_total=%llu",
                 *msg->peer? msg->peer: "?", tm_status_name (status), why,
                 (unsigned long long) self->malformed);
    }
    s_reply (self, msg, type, status, why, NULL, 0);
}

static void
s_handle_hello (tm_broker_t *self, const tm_msg_t *msg)
{
    int ack = TWINMESH__MSG_TYPE__HELLO_ACK;
    Twinmesh__NodeInfo *info =
        TM_UNPACK (NodeInfo, node_info, zframe_data (msg->body), zframe_size (msg->body));
    if (!info) {
        s_bad_request (self, msg, ack, TWINMESH__STATUS__MALFORMED, "body is not a NodeInfo");
        return;
    }
    tm_role_t role = tm_role_parse (info->role);
    const char *problem = NULL;
    if (role != TM_ROLE_WORKER && role != TM_ROLE_GATEWAY)
        problem = "role must be worker or gateway";
    else
    if (!s_token_valid (info->id, TM_BROKER_MAX_ID))
        problem = "id must be 1-128 printable characters without spaces";
    else
    if (role == TM_ROLE_WORKER && !s_token_valid (info->endpoint, TM_BROKER_MAX_ENDPOINT))
        problem = "a worker needs an endpoint (printable, at most 256 characters)";
    else
    if (role == TM_ROLE_WORKER && !s_z85_key_valid (info->public_key))
        problem = "a worker needs a 40-character Z85 public key";
    if (problem) {
        s_bad_request (self, msg, ack, TWINMESH__STATUS__MALFORMED, problem);
        tm_codec_free (&info);
        return;
    }
    //  A worker's id names the shards it owns, so only the key of that name
    //  may speak for it: another worker key could otherwise re-register the
    //  id with its own endpoint and take the shards (one writer per shard).
    bool wrong_name = role == TM_ROLE_WORKER && strcmp (info->id, msg->peer) != 0;
    if (msg->role != role || wrong_name) {
        char detail[200];
        if (wrong_name)
            snprintf (detail, sizeof detail, "worker id %.64s must match its key's name %.64s",
                      info->id, msg->peer);
        else
            snprintf (detail, sizeof detail, "key role %s may not register as %s",
                      tm_role_name (msg->role), tm_role_name (role));
        tm_warn ("broker: refused HELLO peer=%s reason=%s", msg->peer, detail);
        s_reply (self, msg, ack, TWINMESH__STATUS__UNAUTHORIZED, detail, NULL, 0);
        tm_codec_free (&info);
        return;
    }
    char *key = NULL;
    if (asprintf (&key, "%s/%s", tm_role_name (role), info->id) < 0) {
        tm_codec_free (&info);
        return;
    }
    int64_t now = tm_util_mono_ms ();
    s_node_t *node = (s_node_t *) zhashx_lookup (self->nodes, key);
    if (!node) {
        if (zhashx_size (self->nodes) >= TM_BROKER_MAX_NODES) {
            s_reply (self, msg, ack, TWINMESH__STATUS__RETRY_LATER, "too many nodes", NULL, 0);
            tm_codec_free (&info);
            free (key);
            return;
        }
        node = (s_node_t *) zmalloc (sizeof *node);
        node->key = key;
        node->role = role;
        key = NULL;
        zhashx_insert (self->nodes, node->key, node);
    }
    free (key);
    if (!node->up)
        tm_info ("broker: node up id=%s role=%s endpoint=%s peer=%s", info->id,
                 tm_role_name (role), info->endpoint && *info->endpoint? info->endpoint: "-",
                 msg->peer);
    tm_codec_free (&node->info);
    node->info = info;
    node->last_seen_ms = now;
    node->up = true;
    if (role == TM_ROLE_WORKER) {
        s_update_worker (self, info, now);
        s_check_assign (self, now);
    }
    s_reply (self, msg, ack, TWINMESH__STATUS__OK, NULL, NULL, 0);
}

static void
s_handle_map_get (tm_broker_t *self, const tm_msg_t *msg)
{
    bool newer = self->map->epoch > 0 && msg->hdr.epoch < self->map->epoch;
    s_reply (self, msg, TWINMESH__MSG_TYPE__MAP, TWINMESH__STATUS__OK, NULL,
             newer? self->map_bytes: NULL, newer? self->map_size: 0);
}

static int
s_role_rank (const char *role)
{
    return strcmp (role, "broker") == 0? 0: strcmp (role, "worker") == 0? 1: 2;
}

static int
s_compare_status (const void *a, const void *b)
{
    const Twinmesh__NodeStatus *sa = *(Twinmesh__NodeStatus *const *) a;
    const Twinmesh__NodeStatus *sb = *(Twinmesh__NodeStatus *const *) b;
    int ra = s_role_rank (sa->info->role), rb = s_role_rank (sb->info->role);
    if (ra != rb)
        return ra - rb;
    return strcmp (sa->info->id, sb->info->id);
}

static void
s_handle_status (tm_broker_t *self, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__STATUS_REPLY;
    if (!tm_role_may_read (msg->role)) {
        char detail[96];
        snprintf (detail, sizeof detail, "role %s may not read status",
                  tm_role_name (msg->role));
        tm_info ("broker: refused STATUS peer=%s role=%s", msg->peer, tm_role_name (msg->role));
        s_reply (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED, detail, NULL, 0);
        return;
    }
    int64_t now = tm_util_mono_ms ();
    const tm_shardmap_t *map = self->map;
    size_t nnodes;
    s_node_t **nodes = s_sorted_nodes (self, &nnodes);
    //  One broker entry, the known nodes, and map workers not seen yet.
    size_t cap = 1 + nnodes + map->nworkers;
    Twinmesh__NodeStatus *entries = calloc (cap, sizeof *entries);
    Twinmesh__NodeStatus **ptrs = calloc (cap, sizeof *ptrs);
    Twinmesh__NodeInfo *unseen = calloc (map->nworkers + 1, sizeof *unseen);
    uint32_t *owned = calloc (map->nworkers + 1, sizeof *owned);
    bool *seen = calloc (map->nworkers + 1, sizeof *seen);
    uint8_t *buf = NULL;
    size_t size = 0;
    if (!nodes || !entries || !ptrs || !unseen || !owned || !seen) {
        s_reply (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "out of memory", NULL, 0);
        goto done;
    }
    for (uint32_t s = 0; s < map->num_shards; s++)
        if (map->owners[s] != TM_SHARDMAP_UNASSIGNED)
            owned[map->owners[s]]++;

    Twinmesh__NodeInfo me = TWINMESH__NODE_INFO__INIT;
    Twinmesh__NodeStats my_stats = TWINMESH__NODE_STATS__INIT;
    me.id = (char *) "broker";
    me.role = (char *) "broker";
    me.endpoint = self->endpoint;
    me.public_key = self->public_key;
    my_stats.batches = self->requests;
    my_stats.refused = self->refused;
    my_stats.malformed = self->malformed;
    my_stats.map_epoch = map->epoch;
    me.stats = &my_stats;
    size_t n = 0;
    twinmesh__node_status__init (&entries[n]);
    entries[n].info = &me;
    entries[n].up = true;
    n++;

    for (size_t i = 0; i < nnodes; i++) {
        s_node_t *node = nodes[i];
        Twinmesh__NodeStatus *e = &entries[n++];
        twinmesh__node_status__init (e);
        e->info = node->info;
        e->up = s_node_live (self, node, now);
        e->last_seen_ms_ago = (uint64_t) (now - node->last_seen_ms);
        if (node->role == TM_ROLE_WORKER) {
            int idx = tm_shardmap_find_worker (map, node->info->id);
            if (idx >= 0) {
                e->shards = owned[idx];
                seen[idx] = true;
            }
        }
    }
    //  Workers the map knows but that have not said HELLO since we started:
    //  down, and last seen at least as long ago as our start.
    for (size_t w = 0; w < map->nworkers; w++) {
        if (seen[w])
            continue;
        twinmesh__node_info__init (&unseen[w]);
        unseen[w].id = map->workers[w].id;
        unseen[w].role = (char *) "worker";
        unseen[w].endpoint = map->workers[w].endpoint;
        unseen[w].public_key = map->workers[w].public_key;
        Twinmesh__NodeStatus *e = &entries[n++];
        twinmesh__node_status__init (e);
        e->info = &unseen[w];
        e->up = false;
        e->last_seen_ms_ago = (uint64_t) (now - self->started_ms);
        e->shards = owned[w];
    }
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &entries[i];
    qsort (ptrs + 1, n - 1, sizeof *ptrs, s_compare_status);

    Twinmesh__ClusterStatus cs = TWINMESH__CLUSTER_STATUS__INIT;
    cs.epoch = map->epoch;
    cs.num_shards = map->num_shards;
    cs.unassigned_shards = s_count_unassigned (map);
    cs.n_nodes = n;
    cs.nodes = ptrs;
    buf = tm_codec_pack_buf (&cs.base, &size);
    if (buf)
        s_reply (self, msg, type, TWINMESH__STATUS__OK, NULL, buf, size);
    else
        s_reply (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "out of memory", NULL, 0);
done:
    free (buf);
    free (seen);
    free (owned);
    free (unseen);
    free (ptrs);
    free (entries);
    free (nodes);
}

// -------------------------------------------------------------------------
//  Models: the catalogue (tm_catalog) does the work; these check roles and
//  translate between the wire and it.

//  Answer UNAUTHORIZED for a model request the sender's role may not make.
static void
s_refuse_role (tm_broker_t *self, const tm_msg_t *msg, int type, const char *what)
{
    char detail[96];
    snprintf (detail, sizeof detail, "role %s may not %s", tm_role_name (msg->role), what);
    tm_info ("broker: refused %s peer=%s role=%s", tm_msg_type_name (msg->hdr.type), msg->peer,
             tm_role_name (msg->role));
    s_reply (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED, detail, NULL, 0);
}

static void
s_handle_model_put (tm_broker_t *self, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__MODEL_ACK;
    if (msg->role != TM_ROLE_OPERATOR && msg->role != TM_ROLE_ADMIN) {
        s_refuse_role (self, msg, type, "load models");
        return;
    }
    Twinmesh__ModelPut *put =
        TM_UNPACK (ModelPut, model_put, zframe_data (msg->body), zframe_size (msg->body));
    if (!put) {
        s_bad_request (self, msg, type, TWINMESH__STATUS__MALFORMED, "body is not a ModelPut");
        return;
    }
    tm_catalog_result_t result;
    char err[TM_MODEL_ERR_SIZE];
    int rc = tm_catalog_put (self->catalog, (const char *) put->json.data, put->json.len,
                             &result, err, sizeof err);
    tm_codec_free (&put);
    int status = TWINMESH__STATUS__OK;
    if (rc == 0)
        tm_info ("broker: model stored name=%s version=%u previous=%u generation=%llu peer=%s",
                 result.name, result.version, result.previous,
                 (unsigned long long) result.generation, msg->peer);
    else
    if (rc == TM_CATALOG_E_OLDER || rc == TM_CATALOG_E_CONFLICT)
        status = TWINMESH__STATUS__CONFLICT;
    else
    if (rc == TM_CATALOG_E_MALFORMED)
        status = TWINMESH__STATUS__MALFORMED;
    else
    if (rc == TM_CATALOG_E_TOO_LARGE)
        status = TWINMESH__STATUS__TOO_LARGE;
    else
    if (rc != TM_CATALOG_E_UNCHANGED)
        status = TWINMESH__STATUS__RETRY_LATER;
    if (status != TWINMESH__STATUS__OK) {
        tm_info ("broker: model refused name=%s status=%s reason=%s peer=%s",
                 *result.name? result.name: "-", tm_status_name (status), err, msg->peer);
        s_reply (self, msg, type, status, err, NULL, 0);
        return;
    }
    Twinmesh__ModelAck ack = TWINMESH__MODEL_ACK__INIT;
    ack.name = result.name;
    ack.version = result.version;
    ack.unchanged = rc == TM_CATALOG_E_UNCHANGED;
    ack.generation = result.generation;
    size_t size = 0;
    uint8_t *buf = tm_codec_pack_buf (&ack.base, &size);
    if (buf)
        s_reply (self, msg, type, TWINMESH__STATUS__OK, NULL, buf, size);
    else
        s_reply (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "out of memory", NULL, 0);
    free (buf);
}

static void
s_handle_model_list (tm_broker_t *self, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__MODEL_LIST_REPLY;
    if (!tm_role_may_read (msg->role)) {
        s_refuse_role (self, msg, type, "list models");
        return;
    }
    const tm_models_t *models = tm_catalog_list (self->catalog);
    size_t n = tm_models_size (models);
    Twinmesh__ModelInfo *infos = calloc (n + 1, sizeof *infos);
    Twinmesh__ModelInfo **ptrs = calloc (n + 1, sizeof *ptrs);
    uint8_t *buf = NULL;
    size_t size = 0;
    if (infos && ptrs) {
        for (size_t i = 0; i < n; i++) {
            const tm_model_t *m = tm_models_at (models, i);
            twinmesh__model_info__init (&infos[i]);
            infos[i].name = (char *) m->name;
            infos[i].version = m->version;
            infos[i].properties = m->nproperties;
            infos[i].description = m->description;
            ptrs[i] = &infos[i];
        }
        Twinmesh__ModelList list = TWINMESH__MODEL_LIST__INIT;
        list.n_models = n;
        list.models = ptrs;
        list.generation = tm_catalog_generation (self->catalog);
        buf = tm_codec_pack_buf (&list.base, &size);
    }
    if (buf)
        s_reply (self, msg, type, TWINMESH__STATUS__OK, NULL, buf, size);
    else
        s_reply (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "out of memory", NULL, 0);
    free (buf);
    free (ptrs);
    free (infos);
}

static void
s_handle_model_get (tm_broker_t *self, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__MODEL;
    if (!tm_role_may_read (msg->role)) {
        s_refuse_role (self, msg, type, "read models");
        return;
    }
    Twinmesh__ModelGet *get =
        TM_UNPACK (ModelGet, model_get, zframe_data (msg->body), zframe_size (msg->body));
    if (!get) {
        s_bad_request (self, msg, type, TWINMESH__STATUS__MALFORMED, "body is not a ModelGet");
        return;
    }
    const tm_model_t *model = tm_catalog_get (self->catalog, get->name);
    if (!model) {
        char detail[128];
        //  The name came from the network: cut it, and keep it on one line.
        snprintf (detail, sizeof detail, "no model named %.64s", get->name? get->name: "");
        for (char *p = detail; *p; p++)
            if ((unsigned char) *p < 0x20)
                *p = '?';
        s_reply (self, msg, type, TWINMESH__STATUS__NOT_FOUND, detail, NULL, 0);
    }
    else {
        Twinmesh__ModelText text = TWINMESH__MODEL_TEXT__INIT;
        size_t len = 0;
        text.json.data = (uint8_t *) tm_model_canonical (model, &len);
        text.json.len = len;
        size_t size = 0;
        uint8_t *buf = tm_codec_pack_buf (&text.base, &size);
        if (buf)
            s_reply (self, msg, type, TWINMESH__STATUS__OK, NULL, buf, size);
        else
            s_reply (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "out of memory", NULL, 0);
        free (buf);
    }
    tm_codec_free (&get);
}

static void
s_handle_router (tm_broker_t *self)
{
    tm_msg_t msg;
    int rc = tm_msg_recv (self->router, true, &msg);
    if (rc < 0 || !msg.routing) {
        tm_msg_fini (&msg);    //  interrupted, or nothing to answer to
        return;
    }
    self->requests++;
    if (rc == TM_MSG_E_MALFORMED)
        s_bad_request (self, &msg, TWINMESH__MSG_TYPE__ERROR, TWINMESH__STATUS__MALFORMED,
                       "not a twinmesh message: expected [Header, body]");
    else
    if (rc == TM_MSG_E_VERSION) {
        char why[96];
        snprintf (why, sizeof why, "protocol version %u not supported; this broker speaks %d",
                  msg.hdr.version, TM_PROTOCOL_VERSION);
        s_bad_request (self, &msg, TWINMESH__MSG_TYPE__ERROR, TWINMESH__STATUS__BAD_VERSION,
                       why);
    }
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__HELLO)
        s_handle_hello (self, &msg);
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__MAP_GET)
        s_handle_map_get (self, &msg);
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__STATUS)
        s_handle_status (self, &msg);
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__MODEL_PUT)
        s_handle_model_put (self, &msg);
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__MODEL_LIST)
        s_handle_model_list (self, &msg);
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__MODEL_GET)
        s_handle_model_get (self, &msg);
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__QUERY)
        tm_coord_query (self->coord, self->map, &msg);
    else
    if (msg.hdr.type == TWINMESH__MSG_TYPE__SITE_QUERY)
        tm_coord_site_query (self->coord, self->map, &msg);
    else {
        char why[96];
        snprintf (why, sizeof why, "a broker does not take %s requests (type %d)",
                  tm_msg_type_name (msg.hdr.type), msg.hdr.type);
        s_bad_request (self, &msg, TWINMESH__MSG_TYPE__ERROR, TWINMESH__STATUS__MALFORMED, why);
    }
    tm_msg_fini (&msg);
}

// -------------------------------------------------------------------------
//  Life cycle

tm_broker_t *
tm_broker_new (const tm_broker_config_t *config)
{
    if (!config || !config->cert || !config->bind || !config->pub_bind || !config->data_dir) {
        tm_error ("broker: needs a certificate, bind, pub_bind and data_dir");
        return NULL;
    }
    if (sodium_init () < 0) {
        tm_error ("broker: libsodium cannot initialise");
        return NULL;
    }
    tm_broker_t *self = (tm_broker_t *) zmalloc (sizeof *self);
    self->expect_workers = config->expect_workers;
    self->assign_grace_ms = config->assign_grace_ms;
    self->node_timeout_ms = config->node_timeout_ms;
    self->started_ms = tm_util_mono_ms ();
    snprintf (self->public_key, sizeof self->public_key, "%s", zcert_public_txt (config->cert));
    self->nodes = zhashx_new ();
    zhashx_set_destructor (self->nodes, s_node_destructor);

    if (tm_util_mkdir_p (config->data_dir) != 0) {
        tm_error ("broker: cannot create data_dir=%s (check permissions)", config->data_dir);
        goto fail;
    }
    self->store = tm_store_open (config->data_dir);
    if (!self->store || s_load_map (self, config->data_dir, config->num_shards) != 0)
        goto fail;
    self->catalog = tm_catalog_new (self->store);
    if (!self->catalog) {
        //  Starting without a model the cluster relies on would let workers
        //  fetch a catalogue that silently lacks it.
        tm_error ("broker: cannot load the model catalogue data_dir=%s; refusing to start "
                  "(restore the store from a backup)", config->data_dir);
        goto fail;
    }

    self->router = tm_net_server (ZMQ_ROUTER, config->bind, config->cert,
                                  TM_BROKER_MAX_MSG_BYTES);
    if (!self->router)
        goto fail;
    zsock_set_sndtimeo (self->router, TM_BROKER_SEND_TIMEOUT_MS);
    self->pub = tm_net_server (ZMQ_PUB, config->pub_bind, config->cert, 0);
    if (!self->pub)
        goto fail;
    self->endpoint = tm_net_bound_endpoint (self->router);
    self->pub_endpoint = tm_net_bound_endpoint (self->pub);
    self->poller = zpoller_new (self->router, NULL);
    self->coord = tm_coord_new (config->cert, self->router, config->query_deadline_ms);
    if (!self->endpoint || !self->pub_endpoint || !self->poller || !self->coord
        || tm_coord_attach (self->coord, self->poller) != 0)
        goto fail;
    if (config->site && tm_coord_set_site (self->coord, config->site, &config->policy) != 0) {
        tm_error ("broker: site name '%s' is not 1 to 64 bytes", config->site);
        goto fail;
    }
    for (size_t i = 0; i < config->npeers; i++) {
        const tm_broker_peer_t *peer = &config->peers[i];
        if (!config->site_cert
            || tm_coord_add_peer (self->coord, peer->name, peer->endpoint, peer->public_key,
                                  config->site_cert) != 0) {
            tm_error ("broker: cannot add peer site %s at %s (a duplicate, our own name, "
                      "more than %d, or no site key)", peer->name, peer->endpoint,
                      TM_QUERY_MAX_SITES);
            goto fail;
        }
    }
    tm_info ("broker: ready endpoint=%s pub=%s epoch=%llu num_shards=%u", self->endpoint,
             self->pub_endpoint, (unsigned long long) self->map->epoch, self->map->num_shards);
    return self;
fail:
    tm_broker_destroy (&self);
    return NULL;
}

void
tm_broker_destroy (tm_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_broker_t *self = *self_p;
    tm_coord_destroy (&self->coord);
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->router);
    zsock_destroy (&self->pub);
    tm_catalog_destroy (&self->catalog);
    tm_store_destroy (&self->store);
    tm_shardmap_destroy (&self->map);
    zhashx_destroy (&self->nodes);
    free (self->map_bytes);
    free (self->endpoint);
    free (self->pub_endpoint);
    free (self);
    *self_p = NULL;
}

//  Handle one readable socket (or none) and what timers are due; shared by
//  poll and the actor.
static void
s_after_wait (tm_broker_t *self, void *which)
{
    if (which && which == self->router)
        s_handle_router (self);
    else
    if (which && tm_coord_owns (self->coord, which))
        tm_coord_handle (self->coord, (zsock_t *) which);
    int64_t now = tm_util_mono_ms ();
    tm_coord_tick (self->coord, now);
    if (now >= self->next_tick_ms) {
        s_tick (self, now);
        self->next_tick_ms = now + TM_BROKER_TICK_MS;
    }
}

int
tm_broker_poll (tm_broker_t *self, int timeout_ms)
{
    int64_t deadline = tm_util_mono_ms () + timeout_ms;
    while (!zsys_interrupted) {
        int64_t now = tm_util_mono_ms ();
        int64_t wait = deadline - now;
        if (wait > self->next_tick_ms - now)
            wait = self->next_tick_ms - now;
        if (wait > tm_coord_next_deadline (self->coord) - now)
            wait = tm_coord_next_deadline (self->coord) - now;
        if (wait < 0)
            wait = 0;
        void *which = zpoller_wait (self->poller, (int) wait);
        if (!which && zpoller_terminated (self->poller))
            break;             //  a signal: let the caller look at it
        s_after_wait (self, which);
        if (tm_util_mono_ms () >= deadline)
            break;
    }
    return zsys_interrupted? -1: 0;
}

const char *
tm_broker_endpoint (tm_broker_t *self)
{
    return self->endpoint;
}

const char *
tm_broker_pub_endpoint (tm_broker_t *self)
{
    return self->pub_endpoint;
}

uint64_t
tm_broker_epoch (tm_broker_t *self)
{
    return self->map->epoch;
}

void
tm_broker_actor (zsock_t *pipe, void *args)
{
    tm_broker_t *self = tm_broker_new ((const tm_broker_config_t *) args);
    zsock_signal (pipe, self? 0: 255);
    if (!self)
        return;
    zpoller_t *poller = zpoller_new (pipe, self->router, NULL);
    if (poller)
        tm_coord_attach (self->coord, poller);
    while (poller) {
        int64_t wait = self->next_tick_ms - tm_util_mono_ms ();
        if (wait > tm_coord_next_deadline (self->coord) - tm_util_mono_ms ())
            wait = tm_coord_next_deadline (self->coord) - tm_util_mono_ms ();
        void *which = zpoller_wait (poller, wait > 0? (int) wait: 0);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            if (command && streq (command, "ENDPOINTS"))
                zstr_sendx (pipe, self->endpoint, self->pub_endpoint, NULL);
            else
            if (command && streq (command, "EPOCH"))
                zstr_sendf (pipe, "%llu", (unsigned long long) self->map->epoch);
            zstr_free (&command);
            if (term)
                break;
            continue;
        }
        if (!which && zpoller_terminated (poller))
            break;
        s_after_wait (self, which);
    }
    zpoller_destroy (&poller);
    tm_broker_destroy (&self);
}
