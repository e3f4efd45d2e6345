/*  tm_shardmap - the cluster's shard map: which worker owns which shard

    A fixed number of virtual shards (chosen at cluster creation, default
    1024). An entity's shard is siphash24(cluster_key, entity_id) mod N:
    keyed, so no producer can aim readings at one shard. The broker is the
    map's single source of truth; every other component holds a read-only
    copy of some epoch and swaps it whole when a newer one arrives.
*/
#ifndef TM_SHARDMAP_H_INCLUDED
#define TM_SHARDMAP_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_SHARDMAP_KEY_BYTES 16
#define TM_SHARDMAP_MAX_SHARDS 65536
#define TM_SHARDMAP_MAX_WORKERS 4096
#define TM_SHARDMAP_UNASSIGNED UINT32_MAX

typedef struct {
    char *id;                      //  Stable worker name, e.g. "worker-0"
    char *endpoint;                //  Where gateways reach its append socket
    char *public_key;              //  Z85 CURVE key, 40 characters
} tm_shardmap_worker_t;

typedef struct {
    uint64_t epoch;                //  Bumped by the broker on every change
    uint32_t num_shards;           //  Fixed for the life of the cluster
    uint8_t key[TM_SHARDMAP_KEY_BYTES];  //  siphash key for entity -> shard
    size_t nworkers;               //  Entries in workers
    tm_shardmap_worker_t *workers; //  Owned array
    uint32_t *owners;              //  owners[shard] = worker index or UNASSIGNED
} tm_shardmap_t;

//  New map at epoch 0, every shard unassigned. NULL if num_shards is 0 or
//  above TM_SHARDMAP_MAX_SHARDS.
tm_shardmap_t *tm_shardmap_new (uint32_t num_shards, const uint8_t key[TM_SHARDMAP_KEY_BYTES]);

//  Destroy; nulls the pointer.
void tm_shardmap_destroy (tm_shardmap_t **self_p);

//  Deep copy, or NULL.
tm_shardmap_t *tm_shardmap_dup (const tm_shardmap_t *self);

//  Shard of an entity id under a key.
uint32_t tm_shardmap_hash (const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards,
                           const char *entity, size_t len);

//  Shard of an entity id in this map.
uint32_t tm_shardmap_shard_of (const tm_shardmap_t *self, const char *entity, size_t len);

//  Owner (worker index) of a shard, or TM_SHARDMAP_UNASSIGNED.
uint32_t tm_shardmap_owner (const tm_shardmap_t *self, uint32_t shard);

//  Index of a worker by id, or -1.
int tm_shardmap_find_worker (const tm_shardmap_t *self, const char *id);

//  Add a worker or update its endpoint and key; returns its index or -1.
int tm_shardmap_set_worker (tm_shardmap_t *self, const char *id, const char *endpoint,
                            const char *public_key);

//  Number of shards a worker owns.
uint32_t tm_shardmap_count_owned (const tm_shardmap_t *self, uint32_t worker);

//  Encode as a ShardMap protobuf (caller owns the buffer, free()); NULL on
//  allocation failure.
uint8_t *tm_shardmap_encode (const tm_shardmap_t *self, size_t *size);

//  Decode and validate (owner indexes in range, key size, endpoint and key
//  present). NULL if invalid.
tm_shardmap_t *tm_shardmap_decode (const uint8_t *data, size_t size);

#endif
