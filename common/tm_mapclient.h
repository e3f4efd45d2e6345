/*  tm_mapclient - follow the broker's shard map (the Clone pattern, simplified)

    Gateways, workers and twinctl hold a read-only copy of the shard map.
    They ask for a snapshot (MAP_GET) at start and at every heartbeat, and
    subscribe to the broker's PUB for immediate news of a new epoch; a PUB
    message missed while (re)connecting is caught by the next MAP_GET. The
    same DEALER carries the node's HELLO, which is also its heartbeat.

    Not thread-safe: owned by the thread that polls its sockets.
*/
#ifndef TM_MAPCLIENT_H_INCLUDED
#define TM_MAPCLIENT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "tm_codec.h"
#include "tm_shardmap.h"

typedef struct _tm_mapclient_t tm_mapclient_t;

//  Connect to the broker's request and publish endpoints (pub_endpoint may
//  be NULL: snapshots only). cert is borrowed and must outlive the client.
//  NULL with a logged reason.
tm_mapclient_t *tm_mapclient_new (const char *endpoint, const char *pub_endpoint,
                                  const char *broker_public_z85, zcert_t *cert);

//  Destroy; nulls the pointer.
void tm_mapclient_destroy (tm_mapclient_t **self_p);

//  Sockets to add to the caller's poller (the second may be NULL).
zsock_t *tm_mapclient_req_sock (tm_mapclient_t *self);
zsock_t *tm_mapclient_sub_sock (tm_mapclient_t *self);

//  Handle a readable socket of ours. Returns 1 if a newer map was
//  installed, 0 otherwise, -1 if which is not ours.
int tm_mapclient_handle (tm_mapclient_t *self, zsock_t *which);

//  Send a MAP_GET now (e.g. after WRONG_SHARD), at most once per 100 ms.
void tm_mapclient_request (tm_mapclient_t *self);

//  Send HELLO with this node's info (may be NULL: none) and a MAP_GET.
//  Call every heartbeat.
void tm_mapclient_tick (tm_mapclient_t *self, const Twinmesh__NodeInfo *hello);

//  Block up to timeout_ms for a map with epoch > 0; returns it or NULL.
//  For one-shot clients such as twinctl.
const tm_shardmap_t *tm_mapclient_fetch (tm_mapclient_t *self, int timeout_ms);

//  Install a map known from elsewhere (e.g. persisted by a worker before a
//  restart) if it is newer than ours; takes ownership of *map_p. Returns 1
//  if installed.
int tm_mapclient_install (tm_mapclient_t *self, tm_shardmap_t **map_p);

//  The current map (NULL before the first); valid until the next handle.
const tm_shardmap_t *tm_mapclient_map (tm_mapclient_t *self);

//  Epoch of the current map, 0 if none.
uint64_t tm_mapclient_epoch (tm_mapclient_t *self);

//  Milliseconds (monotonic) when the broker last answered, 0 if never.
int64_t tm_mapclient_last_reply_ms (tm_mapclient_t *self);

#endif
