/*  tm_shardmap - the cluster's shard map  */
#include "tm_shardmap.h"
#include "tm_codec.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

_Static_assert (crypto_shorthash_KEYBYTES == TM_SHARDMAP_KEY_BYTES, "siphash key size");

tm_shardmap_t *
tm_shardmap_new (uint32_t num_shards, const uint8_t key[TM_SHARDMAP_KEY_BYTES])
{
    if (num_shards == 0 || num_shards > TM_SHARDMAP_MAX_SHARDS)
        return NULL;
    tm_shardmap_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->num_shards = num_shards;
    memcpy (self->key, key, TM_SHARDMAP_KEY_BYTES);
    self->owners = malloc (num_shards * sizeof (uint32_t));
    if (!self->owners) {
        free (self);
        return NULL;
    }
    for (uint32_t s = 0; s < num_shards; s++)
        self->owners[s] = TM_SHARDMAP_UNASSIGNED;
    return self;
}

void
tm_shardmap_destroy (tm_shardmap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_shardmap_t *self = *self_p;
    for (size_t i = 0; i < self->nworkers; i++) {
        free (self->workers[i].id);
        free (self->workers[i].endpoint);
        free (self->workers[i].public_key);
    }
    free (self->workers);
    free (self->owners);
    free (self);
    *self_p = NULL;
}

tm_shardmap_t *
tm_shardmap_dup (const tm_shardmap_t *self)
{
    tm_shardmap_t *copy = tm_shardmap_new (self->num_shards, self->key);
    if (!copy)
        return NULL;
    copy->epoch = self->epoch;
    memcpy (copy->owners, self->owners, self->num_shards * sizeof (uint32_t));
    for (size_t i = 0; i < self->nworkers; i++)
        if (tm_shardmap_set_worker (copy, self->workers[i].id, self->workers[i].endpoint,
                                    self->workers[i].public_key) < 0) {
            tm_shardmap_destroy (&copy);
            return NULL;
        }
    return copy;
}

uint32_t
tm_shardmap_hash (const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards,
                  const char *entity, size_t len)
{
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash (out, (const unsigned char *) entity, len, key);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | out[i];
    return (uint32_t) (h % num_shards);
}

uint32_t
tm_shardmap_shard_of (const tm_shardmap_t *self, const char *entity, size_t len)
{
    return tm_shardmap_hash (self->key, self->num_shards, entity, len);
}

uint32_t
tm_shardmap_owner (const tm_shardmap_t *self, uint32_t shard)
{
    return shard < self->num_shards? self->owners[shard]: TM_SHARDMAP_UNASSIGNED;
}

int
tm_shardmap_find_worker (const tm_shardmap_t *self, const char *id)
{
    for (size_t i = 0; i < self->nworkers; i++)
        if (strcmp (self->workers[i].id, id) == 0)
            return (int) i;
    return -1;
}

int
tm_shardmap_set_worker (tm_shardmap_t *self, const char *id, const char *endpoint,
                        const char *public_key)
{
    if (!id || !endpoint || !public_key)
        return -1;
    int i = tm_shardmap_find_worker (self, id);
    if (i < 0) {
        if (self->nworkers >= TM_SHARDMAP_MAX_WORKERS)
            return -1;
        tm_shardmap_worker_t *grown =
            realloc (self->workers, (self->nworkers + 1) * sizeof *grown);
        if (!grown)
            return -1;
        self->workers = grown;
        i = (int) self->nworkers++;
        memset (&self->workers[i], 0, sizeof self->workers[i]);
        self->workers[i].id = strdup (id);
    }
    tm_shardmap_worker_t *w = &self->workers[i];
    char *ep = strdup (endpoint), *pk = strdup (public_key);
    if (!w->id || !ep || !pk) {
        free (ep);
        free (pk);
        return -1;
    }
    free (w->endpoint);
    free (w->public_key);
    w->endpoint = ep;
    w->public_key = pk;
    return i;
}

uint32_t
tm_shardmap_count_owned (const tm_shardmap_t *self, uint32_t worker)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < self->num_shards; s++)
        n += self->owners[s] == worker;
    return n;
}

uint8_t *
tm_shardmap_encode (const tm_shardmap_t *self, size_t *size)
{
    Twinmesh__ShardMap m = TWINMESH__SHARD_MAP__INIT;
    m.epoch = self->epoch;
    m.num_shards = self->num_shards;
    m.cluster_key.data = (uint8_t *) self->key;
    m.cluster_key.len = TM_SHARDMAP_KEY_BYTES;
    Twinmesh__WorkerEntry *entries = calloc (self->nworkers + 1, sizeof *entries);
    Twinmesh__WorkerEntry **ptrs = calloc (self->nworkers + 1, sizeof *ptrs);
    uint8_t *buf = NULL;
    if (entries && ptrs) {
        for (size_t i = 0; i < self->nworkers; i++) {
            twinmesh__worker_entry__init (&entries[i]);
            entries[i].id = self->workers[i].id;
            entries[i].endpoint = self->workers[i].endpoint;
            entries[i].public_key = self->workers[i].public_key;
            ptrs[i] = &entries[i];
        }
        m.n_workers = self->nworkers;
        m.workers = ptrs;
        m.n_owners = self->num_shards;
        m.owners = self->owners;
        buf = tm_codec_pack_buf (&m.base, size);
    }
    free (entries);
    free (ptrs);
    return buf;
}

tm_shardmap_t *
tm_shardmap_decode (const uint8_t *data, size_t size)
{
    Twinmesh__ShardMap *m = TM_UNPACK (ShardMap, shard_map, data, size);
    if (!m)
        return NULL;
    tm_shardmap_t *self = NULL;
    if (m->cluster_key.len != TM_SHARDMAP_KEY_BYTES || m->n_owners != m->num_shards
        || m->n_workers > TM_SHARDMAP_MAX_WORKERS)
        goto done;
    self = tm_shardmap_new (m->num_shards, m->cluster_key.data);
    if (!self)
        goto done;
    self->epoch = m->epoch;
    for (size_t i = 0; i < m->n_workers; i++) {
        Twinmesh__WorkerEntry *w = m->workers[i];
        if (!w->id || !*w->id || !w->endpoint || !*w->endpoint || !w->public_key
            || strlen (w->public_key) != 40 || tm_shardmap_find_worker (self, w->id) >= 0
            || tm_shardmap_set_worker (self, w->id, w->endpoint, w->public_key) < 0) {
            tm_shardmap_destroy (&self);
            goto done;
        }
    }
    for (uint32_t s = 0; s < m->num_shards; s++) {
        if (m->owners[s] != TM_SHARDMAP_UNASSIGNED && m->owners[s] >= m->n_workers) {
            tm_shardmap_destroy (&self);
            goto done;
        }
        self->owners[s] = m->owners[s];
    }
done:
    tm_codec_free (&m);
    return self;
}
