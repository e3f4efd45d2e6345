/*  tm_broker - the control plane: membership, the shard map, cluster status

    One broker per cluster. Workers and gateways say HELLO every heartbeat;
    the broker remembers them, creates the shard map once enough workers
    are present, makes every new epoch durable in its own RocksDB before
    anyone can see it, publishes it, and answers MAP_GET and STATUS. It also
    keeps the cluster's model catalogue (tm_catalog), answering MODEL_PUT,
    MODEL_LIST and MODEL_GET.

    The object runs on one thread and polls one ROUTER; the PUB socket only
    sends. tm_broker_actor runs the same code as a czmq actor, so tests can
    start a broker in-process. The caller must start the process's tm_auth
    handler before tm_broker_new binds its CURVE sockets.
*/
#ifndef TM_BROKER_H_INCLUDED
#define TM_BROKER_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

#include "tm_coord.h"

//  A peer site (federation): its name, its broker's endpoint and key.
typedef struct {
    const char *name;              //  Site name, as queries name it
    const char *endpoint;          //  Its broker's request endpoint
    const char *public_key;        //  Its broker's Z85 public key
} tm_broker_peer_t;

typedef struct {
    const char *bind;              //  ROUTER endpoint for requests
    const char *pub_bind;          //  PUB endpoint for shard map epochs
    const char *data_dir;          //  RocksDB directory that holds the map and models
    zcert_t *cert;                 //  Broker's secret certificate, borrowed
    uint32_t num_shards;           //  Shards of a new map; a stored map keeps its own
    uint32_t expect_workers;       //  Live workers the first assignment waits for
    int64_t assign_grace_ms;       //  After this, assign to the live workers present
    int64_t node_timeout_ms;       //  A node silent this long is shown down
    int64_t query_deadline_ms;     //  Default deadline of a query (0: 3 s)
    const char *site;              //  This site's name (NULL: "local")
    tm_coord_policy_t policy;      //  What this site lets out to peers
    zcert_t *site_cert;            //  Our key of role site, for peers; borrowed (NULL: no peers)
    const tm_broker_peer_t *peers; //  Peer sites, npeers entries (copied)
    size_t npeers;
} tm_broker_config_t;

typedef struct _tm_broker_t tm_broker_t;

//  Open the store, load or create the shard map, load the models, bind
//  both sockets.
//  config is copied (cert stays borrowed and must outlive the broker).
//  NULL with a logged reason.
tm_broker_t *tm_broker_new (const tm_broker_config_t *config);

//  Close sockets and store; nulls the pointer.
void tm_broker_destroy (tm_broker_t **self_p);

//  Serve requests for up to timeout_ms (returns early when a signal
//  interrupts the wait, so the caller can act on it). Returns 0, or -1 once
//  the process has been interrupted (SIGINT/SIGTERM via czmq).
int tm_broker_poll (tm_broker_t *self, int timeout_ms);

//  The endpoints actually bound (ports resolved), borrowed.
const char *tm_broker_endpoint (tm_broker_t *self);
const char *tm_broker_pub_endpoint (tm_broker_t *self);

//  Current shard map epoch (0: no shards assigned yet).
uint64_t tm_broker_epoch (tm_broker_t *self);

//  czmq actor: args is a tm_broker_config_t * (read before the actor
//  signals). Signals 0 when serving, -1 if tm_broker_new failed. Commands
//  on the pipe: "$TERM"; "ENDPOINTS" -> two strings (request, publish);
//  "EPOCH" -> the epoch as a decimal string.
void tm_broker_actor (zsock_t *pipe, void *args);

#endif
