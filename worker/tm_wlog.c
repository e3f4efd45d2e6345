/*  tm_wlog - the worker's durable log and checkpoints in its RocksDB  */
#include "tm_wlog.h"
#include "tm_log.h"

#include <stdlib.h>
#include <string.h>

#define S_LOG_PREFIX "WL"
#define S_META_APPLIED "WMapplied"

struct _tm_wlog_t {
    tm_store_t *store;             //  Borrowed
    bool fsync;                    //  fsync each commit before acking
    tm_store_batch_t *pending;     //  Records staged for the next commit
    uint64_t last_seq;             //  Last committed record
    uint64_t staged_seq;           //  Last staged record
    uint64_t checkpoint_seq;       //  Covered by the stored twins
};

static void
s_put_be64 (uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}

static uint64_t
s_get_be64 (const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void
s_log_key (uint8_t key[10], uint64_t seq)
{
    memcpy (key, S_LOG_PREFIX, 2);
    s_put_be64 (key + 2, seq);
}

tm_wlog_t *
tm_wlog_new (tm_store_t *store, bool fsync)
{
    tm_wlog_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->fsync = fsync;
    self->pending = tm_store_batch_new ();
    if (!self->pending) {
        free (self);
        return NULL;
    }
    char *val = NULL;
    size_t vlen = 0;
    int rc = tm_store_get (store, S_META_APPLIED, strlen (S_META_APPLIED), &val, &vlen);
    if (rc == 0 && vlen == 8)
        self->checkpoint_seq = s_get_be64 ((const uint8_t *) val);
    else
    if (rc < 0 || (rc == 0 && vlen != 8)) {
        tm_error ("wlog: checkpoint position unreadable");
        free (val);
        tm_wlog_destroy (&self);
        return NULL;
    }
    free (val);
    //  The last record's number: records after the checkpoint are still in
    //  the log; with none, numbering continues after the checkpoint.
    self->last_seq = self->checkpoint_seq;
    tm_store_iter_t *it = tm_store_iter_new (store, S_LOG_PREFIX, 2);
    const char *k, *v;
    size_t kl, vl;
    while (it && tm_store_iter_next (it, &k, &kl, &v, &vl))
        if (kl == 10) {
            uint64_t seq = s_get_be64 ((const uint8_t *) k + 2);
            if (seq > self->last_seq)
                self->last_seq = seq;
        }
    tm_store_iter_destroy (&it);
    self->staged_seq = self->last_seq;
    return self;
}

void
tm_wlog_destroy (tm_wlog_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_store_batch_destroy (&(*self_p)->pending);
    free (*self_p);
    *self_p = NULL;
}

uint64_t
tm_wlog_stage (tm_wlog_t *self, const void *data, size_t size)
{
    uint8_t key[10];
    s_log_key (key, ++self->staged_seq);
    tm_store_batch_put (self->pending, key, sizeof key, data, size);
    return self->staged_seq;
}

int
tm_wlog_commit (tm_wlog_t *self)
{
    if (self->staged_seq == self->last_seq)
        return 0;
    int rc = tm_store_write (self->store, self->pending, self->fsync);
    tm_store_batch_clear (self->pending);
    if (rc != 0) {
        self->staged_seq = self->last_seq;
        return -1;
    }
    self->last_seq = self->staged_seq;
    return 0;
}

static size_t
s_twin_key (uint8_t *key, const tm_twin_t *t)
{
    key[0] = 'S';
    key[1] = (uint8_t) (t->shard >> 24);
    key[2] = (uint8_t) (t->shard >> 16);
    key[3] = (uint8_t) (t->shard >> 8);
    key[4] = (uint8_t) t->shard;
    key[5] = 'T';
    memcpy (key + 6, t->entity, t->entity_len);
    return 6 + t->entity_len;
}

int
tm_wlog_checkpoint (tm_wlog_t *self, tm_twins_t *twins, const char *worker_id)
{
    size_t ndirty;
    tm_twin_t **dirty = tm_twins_dirty (twins, &ndirty);
    if (ndirty == 0 && self->checkpoint_seq == self->last_seq)
        return 0;
    tm_store_batch_t *batch = tm_store_batch_new ();
    if (!batch)
        return -1;
    uint8_t key[6 + TM_WIRE_MAX_ENTITY];
    int rc = 0;
    for (size_t i = 0; i < ndirty && rc == 0; i++) {
        size_t size;
        uint8_t *val = tm_twins_encode (dirty[i], worker_id, &size);
        if (!val) {
            rc = -1;
            break;
        }
        tm_store_batch_put (batch, key, s_twin_key (key, dirty[i]), val, size);
        free (val);
    }
    if (rc == 0) {
        uint8_t pos[8], from[10], to[10];
        s_put_be64 (pos, self->last_seq);
        tm_store_batch_put (batch, S_META_APPLIED, strlen (S_META_APPLIED), pos, 8);
        s_log_key (from, 0);
        s_log_key (to, self->last_seq + 1);
        tm_store_batch_delete_range (batch, from, sizeof from, to, sizeof to);
        //  Always fsync'd: losing a checkpoint would be harmless (the log
        //  replays), but the log deletion must never be durable before the
        //  twin state that replaces it; one synced batch keeps them together.
        rc = tm_store_write (self->store, batch, true);
    }
    tm_store_batch_destroy (&batch);
    if (rc == 0) {
        self->checkpoint_seq = self->last_seq;
        tm_twins_clear_dirty (twins);
    }
    return rc;
}

long
tm_wlog_recover (tm_wlog_t *self, tm_twins_t *twins, tm_wlog_replay_fn *fn, void *arg,
                 size_t *bad_twins)
{
    *bad_twins = 0;
    tm_store_iter_t *it = tm_store_iter_new (self->store, "S", 1);
    if (!it)
        return -1;
    const char *k, *v;
    size_t kl, vl;
    while (tm_store_iter_next (it, &k, &kl, &v, &vl)) {
        const uint8_t *key = (const uint8_t *) k;
        if (kl < 7 || key[5] != 'T') {
            (*bad_twins)++;
            continue;
        }
        uint32_t shard = (uint32_t) key[1] << 24 | (uint32_t) key[2] << 16
                       | (uint32_t) key[3] << 8 | key[4];
        if (tm_twins_restore (twins, (const uint8_t *) v, vl, shard) != 0)
            (*bad_twins)++;
    }
    tm_store_iter_destroy (&it);
    tm_twins_clear_dirty (twins);

    uint8_t start[10];
    s_log_key (start, self->checkpoint_seq + 1);
    it = tm_store_iter_new_at (self->store, S_LOG_PREFIX, 2, start, sizeof start);
    if (!it)
        return -1;
    long replayed = 0;
    while (tm_store_iter_next (it, &k, &kl, &v, &vl)) {
        if (kl != 10)
            continue;
        fn (arg, s_get_be64 ((const uint8_t *) k + 2), (const uint8_t *) v, vl);
        replayed++;
    }
    tm_store_iter_destroy (&it);
    return replayed;
}

uint64_t
tm_wlog_last_seq (tm_wlog_t *self)
{
    return self->last_seq;
}

uint64_t
tm_wlog_checkpoint_seq (tm_wlog_t *self)
{
    return self->checkpoint_seq;
}
