/*  tm_modelsync - bring the broker's models to a worker

    The broker keeps the cluster's models (tm_catalog); a worker needs them
    to judge readings (valid ranges, limits, intervals, anomaly settings).
    This module follows the catalogue over its own DEALER, so a slow or
    lost model exchange never shares a queue with the shard map's: every
    heartbeat it asks MODEL_LIST, and when the list's generation is not the
    one it last completed it asks MODEL_GET for each model whose name and
    version it does not hold. Each reply is parsed again with
    tm_model_parse (the wire is never trusted, even from the broker) and
    offered to the worker's own registry.

    One exchange is outstanding at a time; a reply that does not come
    within TM_MODELSYNC_TIMEOUT_MS is given up and the next heartbeat asks
    again, so a lost reply costs one timeout, not the feature. A broker
    that is down changes nothing: the models held stay, and twins keep
    using them. Models removed from the catalogue are kept too: a worker
    judging readings with an old model is better than one that forgets.

    Not thread-safe: owned by the worker's thread, like its poller.
*/
#ifndef TM_MODELSYNC_H_INCLUDED
#define TM_MODELSYNC_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

#include "tm_model.h"

//  An outstanding request older than this is given up.
#define TM_MODELSYNC_TIMEOUT_MS 5000

typedef struct _tm_modelsync_t tm_modelsync_t;

//  Connect a DEALER to the broker's request endpoint with our certificate
//  (borrowed; must outlive the client) and the broker's Z85 public key.
//  NULL with a logged reason.
tm_modelsync_t *tm_modelsync_new (const char *endpoint, const char *broker_public_z85,
                                  zcert_t *cert);

//  Destroy with its registry; nulls the pointer.
void tm_modelsync_destroy (tm_modelsync_t **self_p);

//  The socket to add to the caller's poller.
zsock_t *tm_modelsync_sock (tm_modelsync_t *self);

//  The models received so far (owned by the client; its generation moves
//  when a model is installed).
tm_models_t *tm_modelsync_models (tm_modelsync_t *self);

//  Call every heartbeat with the monotonic clock: asks MODEL_LIST unless a
//  request is outstanding and not yet timed out.
void tm_modelsync_tick (tm_modelsync_t *self, int64_t now_ms);

//  Handle the readable socket: returns the models installed by this reply
//  (0 or 1), or -1 if which is not ours.
int tm_modelsync_handle (tm_modelsync_t *self, zsock_t *which);

#endif
