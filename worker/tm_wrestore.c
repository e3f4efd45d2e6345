/*  tm_wrestore - recovery's shard loader on a helper thread  */
#include "tm_wrestore.h"
#include "tm_handoff.h"
#include "tm_log.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_QUEUE 8                  //  Shards decoded ahead of the apply thread

typedef struct {
    uint32_t shard;
    tm_twins_decoded_t *decoded;   //  Owned by whoever holds the item; NULL if the
                                   //  shard has passive twins only
    uint8_t *passive;              //  Its passive set ('Q' value), NULL if none
    size_t passive_size;
} s_item_t;

struct _tm_wrestore_t {
    tm_store_t *store;             //  Borrowed; read by the helper only
    tm_handoff_t *handoff;         //  The helper and its queue
    size_t bad_keys;               //  Keys that are not ours (helper's, until it ends)
    uint8_t *given;                //  Passive set of the item last given, owned
    size_t given_size;
};

static void
s_item_free (void *item)
{
    s_item_t *it = (s_item_t *) item;
    tm_twins_decoded_destroy (&it->decoded);
    free (it->passive);
}

//  Hand a decoded shard to the apply thread (ownership moves with it);
//  false if asked to stop (then it is freed).
static bool
s_put (tm_handoff_t *handoff, uint32_t shard, tm_twins_decoded_t *decoded, uint8_t *passive,
       size_t passive_size)
{
    s_item_t item = {.shard = shard, .decoded = decoded, .passive = passive,
                     .passive_size = passive_size};
    return tm_handoff_put (handoff, &item);
}

static uint32_t
s_shard_of (const uint8_t *key)
{
    return (uint32_t) key[1] << 24 | (uint32_t) key[2] << 16 | (uint32_t) key[3] << 8 | key[4];
}

//  A shard's keys sort H (history), L (late readings), P (passive twins),
//  Q (the passive set), T (the twins): history and passive copies are read
//  only on demand, so the scan seeks over them; Q rides with T.
static bool
s_helper (tm_handoff_t *handoff, void *arg)
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
            bool ok = s_put (handoff, qshard, NULL, q, qlen);
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
        bool ok = s_put (handoff, shard, decoded, q, q? qlen: 0);
        q = NULL;
        if (!ok) {
            stopped = true;
            break;
        }
    }
    if (q && !failed && !stopped)
        s_put (handoff, qshard, NULL, q, qlen);
    else
        free (q);
    if (!it)
        failed = true;
    tm_store_iter_destroy (&it);
    //  Read by the apply thread once take says the end: after the handoff's
    //  lock has passed between the two threads.
    self->bad_keys = bad;
    return !failed;
}

tm_wrestore_t *
tm_wrestore_new (tm_store_t *store)
{
    tm_wrestore_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->handoff = tm_handoff_new (sizeof (s_item_t), S_QUEUE, s_helper, self, s_item_free);
    if (!self->handoff) {
        free (self);
        return NULL;
    }
    return self;
}

int
tm_wrestore_next (tm_wrestore_t *self, uint32_t *shard, tm_twins_decoded_t **decoded)
{
    s_item_t item;
    int rc = tm_handoff_take (self->handoff, &item);
    if (rc == 1) {
        //  Ownership of the decoded shard moves to the caller here.
        *shard = item.shard;
        *decoded = item.decoded;
        free (self->given);
        self->given = item.passive;
        self->given_size = item.passive_size;
    }
    else
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
    return self->bad_keys;
}

void
tm_wrestore_destroy (tm_wrestore_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_wrestore_t *self = *self_p;
    tm_handoff_destroy (&self->handoff);
    free (self->given);
    free (self);
    *self_p = NULL;
}
