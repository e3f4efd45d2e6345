/*  tm_worker - the worker actor: append, group commit, ack, apply

    A worker owns the shards the broker's map gives it. Gateways send it
    parts of producers' batches (APPEND); it checks that it owns every
    reading's shard at its newest map epoch (one writer per shard), writes
    all the parts waiting on its socket as log records in one fsync'd batch,
    acks them, and then applies them to its twins. Clients read twins with
    TWIN_GET. One thread drives everything, so a twin never needs a lock
    and its readings apply in arrival order.
*/
#ifndef TM_WORKER_H_INCLUDED
#define TM_WORKER_H_INCLUDED

#include <czmq.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *id;                //  Stable worker name
    const char *bind;              //  Append/read endpoint to bind
    const char *advertise;         //  Endpoint to tell the broker; NULL = bound
    const char *data_dir;          //  RocksDB directory
    const char *broker;            //  Broker request endpoint
    const char *broker_pub;        //  Broker publisher endpoint
    const char *broker_key;        //  Broker public key, Z85
    zcert_t *cert;                 //  Our certificate, borrowed
    bool fsync;                    //  fsync every group commit before acking
    int64_t heartbeat_ms;          //  HELLO / MAP_GET interval
    int64_t checkpoint_ms;         //  Twin state flush interval
    int64_t max_batch_bytes;       //  Largest APPEND accepted
    int64_t history_retention_ms;  //  History kept this long (0 = forever) when its
                                   //  model sets no retention
    bool compact_at_start;         //  Compact the store once after recovery
    int64_t memory_budget;         //  Heap bytes over which idle twins passivate (0: never)
    int64_t passivate_idle_ms;     //  How long a twin is idle before it may (0: 10 min)
    const char *events_bind;       //  PUB of delta events (NULL: tcp://127.0.0.1:*)
    const char *events_advertise;  //  Its endpoint for gateways (NULL: the bound one)
    volatile sig_atomic_t *stop;   //  Set by a signal handler to stop
    volatile sig_atomic_t *reload; //  Set by a signal handler: return to reload keys
} tm_worker_config_t;

typedef struct _tm_worker_t tm_worker_t;

//  Open the store, recover twins and log, bind. NULL with a logged reason.
//  The process's tm_auth handler must already run.
tm_worker_t *tm_worker_new (const tm_worker_config_t *config);

//  Checkpoint and close; nulls the pointer.
void tm_worker_destroy (tm_worker_t **self_p);

//  Serve until *config->stop is set (returns 0) or *config->reload is set
//  (returns 1: the caller reloads the allow-list and calls run again).
int tm_worker_run (tm_worker_t *self);

#endif
