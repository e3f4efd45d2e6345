/*  tm_wreplay - recovery's log reader on a helper thread  */
#include "tm_wreplay.h"
#include "tm_handoff.h"
#include "tm_log.h"
#include "tm_varint.h"
#include "tm_wire.h"

#include <stdlib.h>
#include <string.h>

#define S_QUEUE 16                 //  Records read ahead of the apply thread

typedef struct {
    uint64_t seq;
    uint8_t *data;                 //  Owned by whoever holds the item
    size_t size;
    size_t skipped;                //  Readings left out of it
} s_item_t;

struct _tm_wreplay_t {
    tm_store_t *store;             //  Borrowed; read by the helper only
    uint8_t prefix[2];
    uint8_t start[10];
    tm_wreplay_filter_t filter;
    tm_handoff_t *handoff;         //  The helper and its queue
    uint8_t *given;                //  Bytes of the record last given, owned
    uint64_t skipped;              //  Readings left out of records given
};

static void
s_item_free (void *item)
{
    free (((s_item_t *) item)->data);
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

static bool
s_helper (tm_handoff_t *handoff, void *arg)
{
    tm_wreplay_t *self = (tm_wreplay_t *) arg;
    tm_store_iter_t *it = tm_store_iter_new_at (self->store, (const char *) self->prefix, 2,
                                                self->start, sizeof self->start);
    bool ok = it != NULL;
    const char *k, *v;
    size_t kl, vl;
    while (ok && tm_store_iter_next (it, &k, &kl, &v, &vl)) {
        if (kl != 10)
            continue;
        s_item_t item = {.seq = tm_be64_get ((const uint8_t *) k + 2)};
        item.data = malloc (vl? vl: 1);
        if (!item.data) {
            ok = false;
            break;
        }
        if (self->filter.covered)
            item.size = s_filter (&self->filter, item.seq, (const uint8_t *) v, vl, item.data,
                                  &item.skipped);
        else {
            memcpy (item.data, v, vl);
            item.size = vl;
        }
        if (!tm_handoff_put (handoff, &item))
            break;
    }
    tm_store_iter_destroy (&it);
    return ok;
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
    self->handoff = tm_handoff_new (sizeof (s_item_t), S_QUEUE, s_helper, self, s_item_free);
    if (!self->handoff) {
        free (self);
        return NULL;
    }
    return self;
}

int
tm_wreplay_next (tm_wreplay_t *self, uint64_t *seq, const uint8_t **data, size_t *size)
{
    free (self->given);
    self->given = NULL;
    s_item_t item;
    int rc = tm_handoff_take (self->handoff, &item);
    if (rc == 1) {
        *seq = item.seq;
        *data = self->given = item.data;
        *size = item.size;
        self->skipped += item.skipped;
    }
    else
    if (rc < 0)
        tm_error ("wreplay: the log could not be read to its end (memory or store)");
    return rc;
}

uint64_t
tm_wreplay_skipped (tm_wreplay_t *self)
{
    return self->skipped;
}

void
tm_wreplay_destroy (tm_wreplay_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_wreplay_t *self = *self_p;
    tm_handoff_destroy (&self->handoff);
    free (self->given);
    free (self);
    *self_p = NULL;
}
