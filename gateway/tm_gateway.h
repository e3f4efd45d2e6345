/*  tm_gateway - the ingest edge: split producer batches by shard owner

    A producer sends INGEST with an IngestBatch of up to max_batch_bytes. The
    gateway checks every reading, splits the batch by the worker that owns
    each reading's shard (copying encoded readings, never re-encoding), sends
    each worker its part as APPEND, and answers the producer once: OK when
    every part is durable on its worker, otherwise a status that says why
    (RETRY_LATER, MALFORMED, UNAUTHORIZED, TOO_LARGE).

    It is built for a million readings a second on two cores: batches of
    about a thousand readings, a few hundred batches in flight, and per
    batch a handful of allocations and ZeroMQ sends, none per reading. It
    holds nothing that cannot be rebuilt: any number of gateways run side
    by side, and a restarted one only makes its producers resend.

    Single-threaded: the gateway runs as a czmq actor (tm_gateway_actor)
    whose pipe takes DRAIN and $TERM. Sockets are created by tm_gateway_new
    in the caller's thread and handed to the actor thread (ZeroMQ allows a
    socket to move between threads across a full memory barrier, which
    thread creation is).
*/
#ifndef TM_GATEWAY_H_INCLUDED
#define TM_GATEWAY_H_INCLUDED

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *id;                //  Node id in HELLO, e.g. "gateway-0"
    const char *bind;              //  Producer endpoint (ROUTER)
    const char *broker;            //  Broker request endpoint
    const char *broker_pub;        //  Broker shard-map publisher, or NULL
    const char *broker_key;        //  Broker's Z85 public key
    zcert_t *cert;                 //  Our secret certificate; borrowed, must outlive us
    int64_t heartbeat_ms;          //  HELLO and MAP_GET interval
    int64_t ack_timeout_ms;        //  A part not acked by then fails its batch
    uint32_t max_inflight;         //  Producer batches in flight before RETRY_LATER
    size_t max_batch_bytes;        //  Larger batch bodies are answered TOO_LARGE
    const char *events_bind;       //  Devices' XPUB of delta events (NULL: tcp://127.0.0.1:*)
    const char *events_advertise;  //  Its endpoint for devices (NULL: the bound one)
} tm_gateway_config_t;

typedef struct _tm_gateway_t tm_gateway_t;

//  Create a gateway: bind the producer socket and connect to the broker.
//  The process's tm_auth handler must already run. Strings in config are
//  copied; cert is borrowed. Returns NULL with a logged reason (bad
//  settings, bind failure).
tm_gateway_t *tm_gateway_new (const tm_gateway_config_t *config);

//  Destroy a gateway that is not running; nulls the pointer. Batches still
//  in flight are answered RETRY_LATER first.
void tm_gateway_destroy (tm_gateway_t **self_p);

//  The endpoint actually bound ("tcp://127.0.0.1:5570"); borrowed.
const char *tm_gateway_endpoint (tm_gateway_t *self);

//  Run the loop in the calling thread until told to stop on pipe (may be
//  NULL: then it runs until interrupted). Pipe commands: "DRAIN" (refuse
//  new batches with RETRY_LATER "draining", wait up to ack_timeout for the
//  ones in flight, then return) and "$TERM" (answer batches in flight
//  RETRY_LATER and return). Returns 0 on a clean stop, -1 on a fatal error.
int tm_gateway_run (tm_gateway_t *self, zsock_t *pipe);

//  zactor body: args is a tm_gateway_t from tm_gateway_new, borrowed (the
//  creator destroys it after zactor_destroy). When the actor stops by
//  itself (after DRAIN), its pipe becomes readable.
void tm_gateway_actor (zsock_t *pipe, void *args);

//  Result of the last tm_gateway_run (0 clean, -1 fatal).
int tm_gateway_exit_code (tm_gateway_t *self);

#endif
