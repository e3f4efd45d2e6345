/*  tm_wrestore - recovery's shard loader on a helper thread  */
#include "tm_wrestore.h"
#include "tm_log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_QUEUE 8                  //  Shards decoded ahead of the apply thread

typedef struct {
    uint32_t shard;
    tm_twins_decoded_t *decoded;   //  Owned by the queue while in it; NULL if the
                                   //  shard has passive twins only
    uint8_t *passive;              //  Its passive set ('Q' value), NULL if none
    size_t passive_size;
} s_item_t;

struct _tm_wrestore_t {
    tm_store_t *store;             //  Borrowed; read by the helper only
    pthread_t thread;              //  The helper
    pthread_mutex_t lock;          //  Guards everything below
    pthread_cond_t changed;        //  Signalled on every put, take and stop
    s_item_t queue[S_QUEUE];       //  Ring of decoded shards
    size_t head;                   //  Next to take
    size_t count;                  //  In the ring
    bool done;                     //  The helper has put its last shard
    bool failed;                   //  The helper ran out of memory
    bool stop;                     //  Asked to stop early (destroy)
    size_t bad_keys;               //  Keys that are not ours
    uint8_t *given;                //  Passive set of the item last given, owned
    size_t given_size;
};

//  Hand a decoded shard to the apply thread (ownership moves with it);
//  false if asked to stop (then it is freed here).
static bool
s_put (tm_wrestore_t *self, uint32_t shard, tm_twins_decoded_t *decoded, uint8_t *passive,
       size_t passive_size)
{
    pthread_mutex_lock (&self->lock);
    while (self->count == S_QUEUE && !self->stop)
        pthread_cond_wait (&self->changed, &self->lock);
    bool stop = self->stop;
    if (!stop) {
        self->queue[(self->head + self->count) % S_QUEUE] =
            (s_item_t) {.shard = shard, .decoded = decoded, .passive = passive,
                        .passive_size = passive_size};
        self->count++;
        pthread_cond_broadcast (&self->changed);
    }
    pthread_mutex_unlock (&self->lock);
    if (stop) {
        tm_twins_decoded_destroy (&decoded);
        free (passive);
    }
    return !stop;
}

static uint32_t
s_shard_of (const uint8_t *key)
{
    return (uint32_t) key[1] << 24 | (uint32_t) key[2] << 16 | (uint32_t) key[3] << 8 | key[4];
}

//  A shard's keys sort H (history), L (late readings), P (passive twins),
//  Q (the passive set), T (the twins): history and passive copies are read
//  only on demand, so the scan seeks over them; Q rides with T.
static void *
s_helper (void *arg)
{
    tm_wrestore_t *self = (tm_wrestore_t *) arg;
    bool failed = false, stopped = false;
    size_t bad = 0;
    uint8_t *q = NULL;             //  A Q value waiting for its shard's T
    size_t qlen = 0;
    uint32_t qshard = 0;
    tm_store_iter_t *it = tm_store_iter_new_scan (self->store, "S", 1);
    const char *k, *v;
    size_t kl, vl;
    while (it && tm_store_iter_next (it, &k, &kl, &v, &vl)) {
        const uint8_t *key = (const uint8_t *) k;
        uint32_t shard = kl >= 6? s_shard_of (key): 0;
        if (q && shard != qshard) {
            //  A shard whose twins are all passive has no T.
            bool ok = s_put (self, qshard, NULL, q, qlen);
            q = NULL;
            if (!ok) {
                stopped = true;
                break;
            }
        }
        if (kl > 6 && (key[5] == 'H' || key[5] == 'L' || key[5] == 'P')) {
            uint8_t skip[6];
            memcpy (skip, key, 5);
            skip[5] = key[5] == 'P'? 'Q': 'P';
            tm_store_iter_seek (it, skip, sizeof skip);
            continue;
        }
        if (kl == 6 && key[5] == 'Q') {
            q = malloc (vl? vl: 1);
            if (!q) {
                failed = true;
                break;
            }
            memcpy (q, v, vl);
            qlen = vl;
            qshard = shard;
            continue;
        }
        if (kl != 6 || key[5] != 'T') {
            bad++;
            continue;
        }
        //  A copy: the decoded twins point into their bytes, which must
        //  outlive the iterator's next step.
        uint8_t *copy = malloc (vl? vl: 1);
        tm_twins_decoded_t *decoded = NULL;
        if (copy) {
            memcpy (copy, v, vl);
            decoded = tm_twins_decode_shard (&copy, vl);
        }
        if (!decoded) {
            free (copy);
            failed = true;
            break;
        }
        bool ok = s_put (self, shard, decoded, q, q? qlen: 0);
        q = NULL;
        if (!ok) {
            stopped = true;
            break;
        }
    }
    if (q && !failed && !stopped)
        s_put (self, qshard, NULL, q, qlen);
    else
        free (q);
    if (!it)
        failed = true;
    tm_store_iter_destroy (&it);
    pthread_mutex_lock (&self->lock);
    self->done = true;
    self->failed = failed;
    self->bad_keys = bad;
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

tm_wrestore_t *
tm_wrestore_new (tm_store_t *store)
{
    tm_wrestore_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->changed, NULL);
    if (pthread_create (&self->thread, NULL, s_helper, self) != 0) {
        tm_error ("wrestore: cannot start the loader thread");
        pthread_cond_destroy (&self->changed);
        pthread_mutex_destroy (&self->lock);
        free (self);
        return NULL;
    }
    return self;
}

int
tm_wrestore_next (tm_wrestore_t *self, uint32_t *shard, tm_twins_decoded_t **decoded)
{
    int rc;
    pthread_mutex_lock (&self->lock);
    while (self->count == 0 && !self->done)
        pthread_cond_wait (&self->changed, &self->lock);
    if (self->count) {
        //  Ownership of the decoded shard moves to the caller here.
        *shard = self->queue[self->head].shard;
        *decoded = self->queue[self->head].decoded;
        self->queue[self->head].decoded = NULL;
        free (self->given);
        self->given = self->queue[self->head].passive;
        self->given_size = self->queue[self->head].passive_size;
        self->queue[self->head].passive = NULL;
        self->head = (self->head + 1) % S_QUEUE;
        self->count--;
        pthread_cond_broadcast (&self->changed);
        rc = 1;
    }
    else
        rc = self->failed? -1: 0;
    pthread_mutex_unlock (&self->lock);
    if (rc < 0)
        tm_error ("wrestore: out of memory reading the stored shards");
    return rc;
}

const uint8_t *
tm_wrestore_passive (tm_wrestore_t *self, size_t *size)
{
    *size = self->given_size;
    return self->given;
}

size_t
tm_wrestore_bad_keys (tm_wrestore_t *self)
{
    pthread_mutex_lock (&self->lock);
    size_t bad = self->bad_keys;
    pthread_mutex_unlock (&self->lock);
    return bad;
}

void
tm_wrestore_destroy (tm_wrestore_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_wrestore_t *self = *self_p;
    pthread_mutex_lock (&self->lock);
    self->stop = true;
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    pthread_join (self->thread, NULL);
    free (self->given);
    while (self->count) {
        tm_twins_decoded_destroy (&self->queue[self->head].decoded);
        free (self->queue[self->head].passive);
        self->head = (self->head + 1) % S_QUEUE;
        self->count--;
    }
    pthread_cond_destroy (&self->changed);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}
