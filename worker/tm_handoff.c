/*  tm_handoff - a helper thread and its bounded queue to the apply thread  */
#include "tm_handoff.h"
#include "tm_log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct _tm_handoff_t {
    size_t item_size;
    size_t capacity;
    tm_handoff_helper_fn *fn;
    void *arg;
    tm_handoff_free_fn *free_fn;
    pthread_t thread;
    pthread_mutex_t lock;          //  Guards everything below
    pthread_cond_t changed;        //  Signalled on every put, take, end and stop
    uint8_t *ring;                 //  capacity items
    size_t head;                   //  Next to take
    size_t count;                  //  In the ring
    bool done;                     //  The helper has returned
    bool failed;                   //  It returned false
    bool stop;                     //  Asked to stop early (destroy)
};

static void *
s_thread (void *arg)
{
    tm_handoff_t *self = (tm_handoff_t *) arg;
    bool ok = self->fn (self, self->arg);
    pthread_mutex_lock (&self->lock);
    self->done = true;
    self->failed = !ok;
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

tm_handoff_t *
tm_handoff_new (size_t item_size, size_t capacity, tm_handoff_helper_fn *fn, void *arg,
                tm_handoff_free_fn *free_fn)
{
    tm_handoff_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->ring = calloc (capacity, item_size);
    if (!self->ring) {
        free (self);
        return NULL;
    }
    self->item_size = item_size;
    self->capacity = capacity;
    self->fn = fn;
    self->arg = arg;
    self->free_fn = free_fn;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->changed, NULL);
    if (pthread_create (&self->thread, NULL, s_thread, self) != 0) {
        tm_error ("handoff: cannot start a helper thread");
        pthread_cond_destroy (&self->changed);
        pthread_mutex_destroy (&self->lock);
        free (self->ring);
        free (self);
        return NULL;
    }
    return self;
}

bool
tm_handoff_put (tm_handoff_t *self, const void *item)
{
    pthread_mutex_lock (&self->lock);
    while (self->count == self->capacity && !self->stop)
        pthread_cond_wait (&self->changed, &self->lock);
    bool stop = self->stop;
    if (!stop) {
        size_t at = (self->head + self->count) % self->capacity;
        memcpy (self->ring + at * self->item_size, item, self->item_size);
        self->count++;
        pthread_cond_broadcast (&self->changed);
    }
    pthread_mutex_unlock (&self->lock);
    if (stop)
        self->free_fn ((void *) item);
    return !stop;
}

int
tm_handoff_take (tm_handoff_t *self, void *item)
{
    int rc;
    pthread_mutex_lock (&self->lock);
    while (self->count == 0 && !self->done)
        pthread_cond_wait (&self->changed, &self->lock);
    if (self->count) {
        memcpy (item, self->ring + self->head * self->item_size, self->item_size);
        self->head = (self->head + 1) % self->capacity;
        self->count--;
        pthread_cond_broadcast (&self->changed);
        rc = 1;
    }
    else
        rc = self->failed? -1: 0;
    pthread_mutex_unlock (&self->lock);
    return rc;
}

void
tm_handoff_destroy (tm_handoff_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_handoff_t *self = *self_p;
    pthread_mutex_lock (&self->lock);
    self->stop = true;
    pthread_cond_broadcast (&self->changed);
    pthread_mutex_unlock (&self->lock);
    pthread_join (self->thread, NULL);
    while (self->count) {
        self->free_fn (self->ring + self->head * self->item_size);
        self->head = (self->head + 1) % self->capacity;
        self->count--;
    }
    pthread_cond_destroy (&self->changed);
    pthread_mutex_destroy (&self->lock);
    free (self->ring);
    free (self);
    *self_p = NULL;
}
