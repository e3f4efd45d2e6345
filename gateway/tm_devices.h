/*  tm_devices - the gateway's relay of delta events to devices

    Every worker publishes its twins' delta events (set, unset, cleared) on
    a CURVE PUB socket that only gateways may join. The gateway subscribes
    to all of them on one SUB socket (connected to each worker with that
    worker's key) and republishes every event on its own XPUB, which
    devices (ingest keys) and operators join; a device subscribes to its
    entity id followed by a NUL (or to any prefix). Subscribing to
    everything upstream costs little (commands are rare next to readings)
    and keeps the relay always live: when the XPUB tells us of a new
    subscription we answer it at once with a "subscribed" event on that
    topic, and from then on the device misses nothing the gateway receives,
    so a snapshot it asks for after that event plus the events after the
    snapshot's version are the whole state (the zguide's Clone pattern).

    The snapshot comes through the gateway too: a device's DELTAS_GET is
    split by owner, sent to each on the DEALER the gateway appends on, and
    the answers merged (each twin keeps its owner's clock), so a device
    needs nothing but a gateway.

    Workers are found through the shard map the gateway follows already:
    at every heartbeat the gateway asks each worker (EVENTS_INFO on the
    DEALER it appends on) where it publishes, and (re)connects when the
    answer changes, so a worker that restarts on a new port is followed
    within a heartbeat.

    Not thread-safe: owned by the gateway's thread.
*/
#ifndef TM_DEVICES_H_INCLUDED
#define TM_DEVICES_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "tm_msg.h"

typedef struct _tm_devices_t tm_devices_t;

//  Bind the devices' XPUB on bind (advertise: the endpoint to tell devices,
//  NULL: the bound one) and make the upstream SUB. cert is borrowed. NULL
//  with a logged reason.
tm_devices_t *tm_devices_new (const char *gateway_id, const char *bind, const char *advertise,
                              zcert_t *cert);

//  Destroy; nulls the pointer.
void tm_devices_destroy (tm_devices_t **self_p);

//  The two sockets to poll for input (borrowed).
zsock_t *tm_devices_xpub (tm_devices_t *self);
zsock_t *tm_devices_sub (tm_devices_t *self);

//  Relay what is waiting: events from workers to devices, subscriptions
//  from devices (each answered with a "subscribed" event). Never blocks.
void tm_devices_handle (tm_devices_t *self);

//  Ask a worker where it publishes (EVENTS_INFO on its DEALER, borrowed).
void tm_devices_ask (tm_devices_t *self, zsock_t *worker_sock);

//  A worker's EVENTS_INFO_REPLY: connect (or reconnect) to its events with
//  its key (the key from the shard map, not from the reply).
void tm_devices_worker_info (tm_devices_t *self, const char *worker_id, const char *public_key,
                             const tm_msg_t *reply);

//  Answer a device's EVENTS_INFO on the gateway's ROUTER with our XPUB.
void tm_devices_answer (tm_devices_t *self, zsock_t *router, const tm_msg_t *msg);

//  The owner of an entity's shard: its worker's DEALER (borrowed) and slot,
//  or NULL when the shard has no owner or there is no map.
typedef zsock_t *(tm_devices_owner_fn) (void *arg, const char *entity, size_t len,
                                        uint32_t *slot);

//  A device's DELTAS_GET on the gateway's ROUTER: asks each owner for its
//  entities (with our request ids) and answers the device when all have
//  answered (tm_devices_deltas_reply) or at the deadline, now_ms +
//  timeout_ms (tm_devices_expire). A device needs nothing but the gateway.
void tm_devices_deltas_get (tm_devices_t *self, zsock_t *router, const tm_msg_t *msg,
                            tm_devices_owner_fn *owner, void *arg, uint64_t epoch,
                            int64_t now_ms, int64_t timeout_ms);

//  A worker's DELTAS answer to one of our DELTAS_GET.
void tm_devices_deltas_reply (tm_devices_t *self, zsock_t *router, const tm_msg_t *reply);

//  Answer RETRY_LATER to snapshots whose owners did not all answer by now.
void tm_devices_expire (tm_devices_t *self, zsock_t *router, int64_t now_ms);

//  Events relayed and subscriptions seen since start.
uint64_t tm_devices_relayed (tm_devices_t *self);
uint64_t tm_devices_subscriptions (tm_devices_t *self);

#endif
