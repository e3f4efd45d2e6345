/*  tm_wreplay - recovery's log reader on a helper thread  */
#include "tm_wreplay.h"
#include "tm_log.h"
#include "tm_varint.h"
#include "tm_wire.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define S_QUEUE 16                 //  Records read ahead of the apply thread

typedef struct {
    uint64_t seq;
    uint8_t *data;                 //  Owned while in the queue
    size_t size;
    size_t skipped;                //  Readings left out of it
} s_item_t;

struct _tm_wreplay_t {
    tm_store_t *store;             //  Borrowed; read by the helper only
    uint8_t prefix[2];
    uint8_t start[10];
    tm_wreplay_filter_t filter;
    pthread_t thread;              //  The helper
    pthread_mutex_t lock;          //  Guards everything below
    pthread_cond_t changed;        //  Signalled on every put, take and stop
    s_item_t queue[S_QUEUE];       //  Ring of records read
    size_t head;                   //  Next to take
    size_t count;                  //  In the ring
    bool done;                     //  The helper has put its last record
    bool failed;                   //  It ran out of memory, or the store failed
    bool stop;                     //  Asked to stop early (destroy)
    uint8_t *given;                //  Bytes of the record last given, owned
    uint64_t skipped;              //  Readings left out of records given
};

//  Hand a record to the apply thread (its bytes go with it); false if
//  asked to stop (then they are freed here).
static bool
s_put (tm_wreplay_t *self, s_item_t item)
{
    pthread_mutex_lock (&self->lock);
    while (self->count == S_QUEUE && !self->stop)
        pthread_cond_wait (&self->changed, &self->lock);
    bool stop = self->stop;
    if (!stop) {
        self->queue[(self->head + self->count) % S_QUEUE] = item;
        self->count++;
        pthread_cond_broadcast (&self->changed);
    }
    pthread_mutex_unlock (&self->lock);
    if (stop)
        free (item.data);
    return !stop;
}

//  The readings of a record the apply thread must see, into out (at least
//  size bytes): those of shards not covered up to seq, their bytes as they
//  are (repeated fields concatenate). The whole record if it does not
//  parse: the apply thread stops where it stops being readings, as it
//  always did.
static size_t
s_filter (const tm_wreplay_filter_t *f, uint64_t seq, const uint8_t *data, size_t size,
          uint8_t *out, size_t *skipped)
{
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init_trusted (&it, data, size);
    size_t n = 0, left_out = 0;
    int rc;
    while ((rc = tm_wire_next (&it, &r)) == 1) {
        uint32_t shard = tm_shardmap_hash (f->key, f->num_shards, r.entity, r.entity_len);
        if (f->covered[shard % TM_SHARDMAP_MAX_SHARDS] >= seq) {
            left_out++;
            continue;
        }
        memcpy (out + n, r.raw, r.raw_len);
        n += r.raw_len;
    }
    if (rc < 0) {
        memcpy (out, data, size);
        *skipped = 0;
        return size;
    }
    *skipped = left_out;
    return n;
}

static void *
s_helper (void *arg)
{
    tm_wreplay_t *self = (tm_wreplay_t *) arg;
    bool failed = false;
    tm_store_iter_t *it = tm_store_iter_new_at (self->store, (const char *) self->prefix, 2,
                                                self->start, sizeof self->start);
    const char *k, *v;
    size_t kl, vl;
    while (it && tm_store_iter_next (it, &k, &kl, &v, &vl)) {
        if (kl != 10)
            continue;
        s_item_t item = {.seq = tm_be64_get ((const uint8_t *) k + 2)};
        item.data = malloc (vl? vl: 1);
        if (!item.data) {
            failed = true;
            break;
        }
        if (self->filter.covered)
            item.size = s_filter (&self->filter, item.seq, (const uint8_t *) v, vl, item.data,
                                  &item.skipped);
        else {
            memcpy (item.data, v, vl);
            item.size = vl;
        }
        if (!s_put (self, item))
            break;
    }
    if (!it)
        failed = true;
    tm_store_iter_destroy (&it);
    pthread_mutex_lock (&self->lock);
    self->done = true;
    self->failed = failed;
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

tm_wreplay_t *
tm_wreplay_new (tm_store_t *store, const uint8_t *prefix, const uint8_t start[10],
                const tm_wreplay_filter_t *filter)
{
    tm_wreplay_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    memcpy (self->prefix, prefix, sizeof self->prefix);
    memcpy (self->start, start, sizeof self->start);
    if (filter && filter->covered && filter->num_shards)
        self->filter = *filter;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->changed, NULL);
    if (pthread_create (&self->thread, NULL, s_helper, self) != 0) {
        tm_error ("wreplay: cannot start the log reader thread");
        pthread_cond_destroy (&self->changed);
        pthread_mutex_destroy (&self->lock);
        free (self);
        return NULL;
    }
    return self;
}

int
tm_wreplay_next (tm_wreplay_t *self, uint64_t *seq, const uint8_t **data, size_t *size)
{
    int rc;
    pthread_mutex_lock (&self->lock);
    while (self->count == 0 && !self->done)
        pthread_cond_wait (&self->changed, &self->lock);
    free (self->given);
    self->given = NULL;
    if (self->count) {
        s_item_t *item = &self->queue[self->head];
        *seq = item->seq;
        *data = self->given = item->data;
        *size = item->size;
        self->skipped += item->skipped;
        item->data = NULL;
        self->head = (self->head + 1) % S_QUEUE;
        self->count--;
        pthread_cond_broadcast (&self->changed);
        rc = 1;
    }
    else
        rc = self->failed? -1: 0;
    pthread_mutex_unlock (&self->lock);
    if (rc < 0)
        tm_error ("wreplay: the log could not be read to its end (memory or store)");
    return rc;
}

uint64_t
tm_wreplay_skipped (tm_wreplay_t *self)
{
    pthread_mutex_lock (&self->lock);
    uint64_t n = self->skipped;
    pthread_mutex_unlock (&self->lock);
    return n;
}

void
tm_wreplay_destroy (tm_wreplay_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_wreplay_t *self = *self_p;
    pthread_mutex_lock (&self->lock);
    self->stop = true;
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    pthread_join (self->thread, NULL);
    free (self->given);
    while (self->count) {
        free (self->queue[self->head].data);
        self->head = (self->head + 1) % S_QUEUE;
        self->count--;
    }
    pthread_cond_destroy (&self->changed);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}
