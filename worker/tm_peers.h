/*  tm_peers - worker-to-worker messaging for the hierarchy

    A child twin's contributions (its latest good value of each property,
    with the anomalous flag and the reading's timestamp) must reach the
    twin's parent, which lives in the shard of the parent's entity id and so
    maybe on another worker. This module is the child's side of that and
    the transport between workers (docs/hierarchy.md):

    - the apply path tells it, per good reading, which property of which
      twin changed (tm_twins' touch hook: a bit in the twin's link; a twin
      without a parent pays one compare);
    - every flush (after a drain, at most every TM_PEERS_FLUSH_MS or nine
      times the last routing pass's duration, so about a tenth of the
      worker's time at most) it routes
      the changed twins: parents on this worker get the contribution at once,
      without the network; the others are queued per owner worker. Only
      the latest contribution matters, so the queue is a dirty set: a twin
      is queued once whatever number of readings it took, and its values
      are read from the twin when the message is built;
    - per owner worker one CHILD_UPDATE is in flight at a time over a CURVE
      DEALER to that worker's ROUTER (capped at TM_HIER_MAX_ENTRIES
      entries); the next one leaves when the ack comes, so a slow or
      stopped peer costs a queue of twins, never memory per reading, and
      never blocks ingest. A message not acked within its timeout (1 s,
      doubling to 8 s) goes back into the dirty set and is sent again;
    - a worker that starts asks every other worker to resend what they hold
      for its parents (HIER_RESYNC), and itself routes every twin it has:
      the aggregates are derived state, rebuilt instead of persisted.

    The server side (CHILD_UPDATE from workers only, HIER_RESYNC,
    CHILDREN_GET) is here too, as handlers the worker's message switch
    calls.

    Not thread-safe: owned by the worker's apply thread.
*/
#ifndef TM_PEERS_H_INCLUDED
#define TM_PEERS_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "tm_hier.h"
#include "tm_model.h"
#include "tm_msg.h"
#include "tm_shardmap.h"
#include "tm_twins.h"

#define TM_PEERS_FLUSH_MS 50           //  Contributions routed at most this often
#define TM_PEERS_RETRY_MS 1000         //  First resend of an unacked CHILD_UPDATE
#define TM_PEERS_RETRY_MAX_MS 8000     //  Resends back off up to this

typedef struct {
    const char *id;                //  Our worker id (as in the shard map)
    zcert_t *cert;                 //  Our certificate, borrowed
    tm_twins_t *twins;             //  The worker's twins, borrowed
    const tm_models_t *models;     //  The worker's models, borrowed
    zpoller_t *poller;             //  The worker's poller: peer sockets join it
    size_t max_children;           //  Children per parent (0: the default)
} tm_peers_config_t;

typedef struct _tm_peers_t tm_peers_t;

//  New, hooked into the twins' apply path. NULL on allocation failure.
tm_peers_t *tm_peers_new (const tm_peers_config_t *config);

//  Unhook, close sockets, free every twin's link; nulls the pointer. Call
//  before the twins are destroyed.
void tm_peers_destroy (tm_peers_t **self_p);

//  The parents' side: contributions held for the parents we own.
tm_hier_t *tm_peers_hier (tm_peers_t *self);

//  Call after recovery: every twin is routed again, and every other worker
//  is asked (HIER_RESYNC) to resend what it holds for our parents.
void tm_peers_start (tm_peers_t *self);

//  The shard map changed (borrowed; must stay valid until the next call):
//  peers are rebuilt and everything queued or in flight is routed again.
void tm_peers_set_map (tm_peers_t *self, const tm_shardmap_t *map);

//  Route and send what is due at now_ms (monotonic); cheap when nothing
//  is. force: route now even within TM_PEERS_FLUSH_MS of the last time.
void tm_peers_flush (tm_peers_t *self, int64_t now_ms, bool force);

//  Milliseconds until tm_peers_flush has work (0: now), or -1 if idle.
int64_t tm_peers_next_ms (tm_peers_t *self, int64_t now_ms);

//  True if which is one of our peer sockets; then reads its replies.
bool tm_peers_handle (tm_peers_t *self, zsock_t *which, int64_t now_ms);

//  True once: a peer answered WRONG_SHARD (refresh the map).
bool tm_peers_want_map (tm_peers_t *self);

//  Server side: answer one request on the worker's ROUTER (the handlers
//  check the sender's role and reply in every case).
void tm_peers_on_update (tm_peers_t *self, zsock_t *router, const tm_msg_t *msg);
void tm_peers_on_resync (tm_peers_t *self, zsock_t *router, const tm_msg_t *msg);
void tm_peers_on_children_get (tm_peers_t *self, zsock_t *router, const tm_msg_t *msg);

//  The aggregates of a parent twin as a TwinState fragment to append to
//  its TWIN reply (see tm_hier_encode_twin_extra); NULL if it has none.
uint8_t *tm_peers_twin_extra (tm_peers_t *self, const tm_twin_t *twin, size_t *size);

//  A parent's aggregate series by the name its model gives it,
//  <property>_<function> (`pm25_mean`, `pm25_count_anomalous`, docs/models.md,
//  "Aggregates"): true with *value when the model declares it and a child
//  reports the property. A tm_derived_series_fn, arg the tm_peers_t, so
//  that derived properties (`1 - occupied_mean`) read aggregates.
bool tm_peers_series (void *arg, const tm_twin_t *twin, const char *name, double *value);

//  Counters since start, for logs and tests.
typedef struct {
    uint64_t sent;                 //  CHILD_UPDATE messages sent
    uint64_t sent_values;          //  Values in them
    uint64_t acked;                //  Acked OK
    uint64_t resent;               //  Timed out or refused, their twins queued again
    uint64_t local_values;         //  Values delivered to parents on this worker
    uint64_t received;             //  CHILD_UPDATEs received
    uint64_t applied;              //  Values that changed a parent (received or local)
    uint64_t ignored;              //  Values not newer than the one held
    uint64_t refused;              //  Values over a limit
    uint64_t malformed;            //  Requests that did not decode
    uint64_t unauthorized;         //  Requests from roles that may not
    uint64_t resyncs;              //  HIER_RESYNC requests served
} tm_peers_stats_t;
void tm_peers_stats (tm_peers_t *self, tm_peers_stats_t *stats);

//  The same, with what tm_hier holds and what waits in queues, for the
//  worker's heartbeat (NodeStats.hier).
void tm_peers_node_stats (tm_peers_t *self, Twinmesh__HierStats *out);

//  tm_twins_may_fn for passivation (arg: the peers): yes for a twin with
//  no parent link, or whose link is quiet (nothing queued, in flight or
//  detaching), and then the link is freed; no otherwise.
bool tm_peers_may_passivate (void *arg, tm_twin_t *twin);

#endif
