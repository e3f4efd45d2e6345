/*  tm_wlog - the worker's durable log and checkpoints in its RocksDB  */
#include "tm_wlog.h"
#include "tm_varint.h"
#include "tm_history.h"
#include "tm_log.h"
#include "tm_util.h"
#include "tm_wrestore.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define S_LOG_PREFIX "WL"
#define S_META_APPLIED "WMapplied"

//  Bytes of shard blobs one checkpoint step encodes before it writes (at
//  least one shard). The apply thread serves nothing while a step runs:
//  measured after loading a million twins on four workers, steps of a
//  tenth of the shards (a hundred thousand twins) held queries and acks
//  for 0.5 to 1.8 s; a megabyte is a few milliseconds of encoding.
#define S_STEP_BYTES (1u << 20)

struct _tm_wlog_t {
    tm_store_t *store;             //  Borrowed
    bool fsync;                    //  fsync each commit before acking
    tm_store_batch_t *pending;     //  Records staged for the next commit
    uint64_t last_seq;             //  Last committed record
    uint64_t staged_seq;           //  Last staged record
    uint64_t checkpoint_seq;       //  Covered by the stored twins
    bool in_round;                 //  A checkpoint round is running
    uint64_t round_seq;            //  P: the last record the round covers
    uint32_t *round_shards;        //  Shards the round must write, owned
    size_t round_count;            //  Entries in round_shards
    size_t round_ndirty;           //  The first ones, changed; the rest are visited
                                   //  only for idle twins (written if any go)
    size_t round_next;             //  Next entry to write
    tm_history_counts_t hist;      //  History staged by checkpoints
    uint8_t *encode_buf;           //  Reused for encoding shards
    size_t encode_cap;
    uint8_t *twin_buf;             //  Reused for encoding passivated twins
    size_t twin_cap;
    int64_t idle_before_ms;        //  Passivate twins idle since before this in the
                                   //  running round; INT64_MIN: none
    uint64_t passivated;           //  Twins passivated by checkpoints since open
};

static void
s_log_key (uint8_t key[10], uint64_t seq)
{
    memcpy (key, S_LOG_PREFIX, 2);
    tm_be64_put (key + 2, seq);
}

tm_wlog_t *
tm_wlog_new (tm_store_t *store, bool fsync)
{
    tm_wlog_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->fsync = fsync;
    self->idle_before_ms = INT64_MIN;
    self->pending = tm_store_batch_new ();
    if (!self->pending) {
        free (self);
        return NULL;
    }
    char *val = NULL;
    size_t vlen = 0;
    int rc = tm_store_get (store, S_META_APPLIED, strlen (S_META_APPLIED), &val, &vlen);
    if (rc == 0 && vlen == 8)
        self->checkpoint_seq = tm_be64_get ((const uint8_t *) val);
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
            uint64_t seq = tm_be64_get ((const uint8_t *) k + 2);
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
    free ((*self_p)->twin_buf);
    free ((*self_p)->round_shards);
    free ((*self_p)->encode_buf);
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

static void
s_shard_key (uint8_t key[6], uint32_t shard, char what)
{
    key[0] = 'S';
    key[1] = (uint8_t) (shard >> 24);
    key[2] = (uint8_t) (shard >> 16);
    key[3] = (uint8_t) (shard >> 8);
    key[4] = (uint8_t) shard;
    key[5] = (uint8_t) what;
}

size_t
tm_wlog_passive_key (uint8_t *key, uint32_t shard, const char *entity, size_t len)
{
    s_shard_key (key, shard, 'P');
    memcpy (key + 6, entity, len);
    return 6 + len;
}

#define S_SKIPPED UINT32_MAX        //  A round entry visited and left unwritten

//  A passivating round also visits the shards with twins that did not
//  change (a shard of idle twins is what it is after): appended after the
//  changed ones, each once. 0, or -1 if memory is short.
static int
s_add_idle_shards (tm_twins_t *twins, uint32_t **shards, size_t *count)
{
    uint8_t *listed = calloc (TM_SHARDMAP_MAX_SHARDS / 8, 1);
    size_t extra = 0;
    if (!listed)
        return -1;
    for (size_t i = 0; i < *count; i++)
        listed[(*shards)[i] >> 3] |= (uint8_t) (1u << ((*shards)[i] & 7));
    for (uint32_t sh = 0; sh < TM_SHARDMAP_MAX_SHARDS; sh++)
        extra += tm_twins_shard_first (twins, sh) && !(listed[sh >> 3] >> (sh & 7) & 1);
    uint32_t *grown = extra? realloc (*shards, (*count + extra) * sizeof *grown): *shards;
    if (extra && !grown) {
        free (listed);
        return -1;
    }
    for (uint32_t sh = 0; extra && sh < TM_SHARDMAP_MAX_SHARDS; sh++)
        if (tm_twins_shard_first (twins, sh) && !(listed[sh >> 3] >> (sh & 7) & 1))
            grown[(*count)++] = sh;
    *shards = grown;
    free (listed);
    return 0;
}

//  Give the round's unwritten shards back to the changed set.
static void
s_abandon_round (tm_wlog_t *self, tm_twins_t *twins, size_t from)
{
    for (size_t i = from; i < self->round_count; i++)
        if (self->round_shards[i] != S_SKIPPED) {
            tm_twins_passivate_abort (twins, self->round_shards[i]);
            if (i < self->round_ndirty)
                tm_twins_mark_dirty (twins, self->round_shards[i]);
        }
    self->idle_before_ms = INT64_MIN;
    free (self->round_shards);
    self->round_shards = NULL;
    self->round_count = self->round_next = 0;
    self->in_round = false;
}

void
tm_wlog_passivate (tm_wlog_t *self, int64_t idle_before_ms)
{
    self->idle_before_ms = idle_before_ms;
}

uint64_t
tm_wlog_passivated (tm_wlog_t *self)
{
    return self->passivated;
}

//  The shard's passive copies into the batch: a put for each twin marked
//  to go, a delete for each that came back since (its copy is stale now),
//  and the set. -1 if memory is short.
static int
s_stage_passive (tm_wlog_t *self, tm_store_batch_t *batch, tm_twins_t *twins, uint32_t shard,
                 size_t *bytes)
{
    uint8_t key[6 + TM_WIRE_MAX_ENTITY];
    for (tm_twin_t *t = tm_twins_shard_first (twins, shard); t; t = t->next_in_shard) {
        if (!(t->flags & (TM_TWIN_PASSIVATING | TM_TWIN_REACTIVATED))
            || t->entity_len > TM_WIRE_MAX_ENTITY)
            continue;
        size_t klen = tm_wlog_passive_key (key, shard, t->entity, t->entity_len);
        if (t->flags & TM_TWIN_PASSIVATING) {
            size_t size = tm_twins_encode_twin (twins, t, &self->twin_buf, &self->twin_cap);
            if (size == 0)
                return -1;
            tm_store_batch_put (batch, key, klen, self->twin_buf, size);
            *bytes += size;
        }
        else
            tm_store_batch_delete (batch, key, klen);
    }
    bool ok;
    size_t size;
    uint8_t *set = tm_twins_passive_encode (twins, shard, &size, &ok);
    if (!ok)
        return -1;
    s_shard_key (key, shard, 'Q');
    if (set)
        tm_store_batch_put (batch, key, 6, set, size);
    else
        tm_store_batch_delete (batch, key, 6);
    free (set);
    return 0;
}

int
tm_wlog_checkpoint_step (tm_wlog_t *self, tm_twins_t *twins, size_t max_shards, bool *done)
{
    *done = false;
    if (!self->in_round) {
        size_t count;
        uint32_t *shards = tm_twins_take_dirty (twins, &count);
        self->round_ndirty = count;
        if (self->idle_before_ms != INT64_MIN && s_add_idle_shards (twins, &shards, &count) != 0) {
            for (size_t i = 0; i < self->round_ndirty; i++)
                tm_twins_mark_dirty (twins, shards[i]);
            free (shards);
            return -1;
        }
        if (count == 0 && self->checkpoint_seq == self->last_seq) {
            free (shards);
            self->idle_before_ms = INT64_MIN;
            *done = true;
            return 0;
        }
        self->in_round = true;
        self->round_seq = self->last_seq;
        self->round_shards = shards;
        self->round_count = count;
        self->round_next = 0;
    }
    tm_store_batch_t *batch = tm_store_batch_new ();
    if (!batch)
        return -1;
    //  Every committed record is applied by now: the blobs hold them all.
    tm_twins_set_log_seq (twins, self->last_seq);
    tm_twins_due_clear (twins);
    size_t first = self->round_next;
    size_t step_bytes = 0;
    uint8_t key[6];
    while (self->round_next < self->round_count && self->round_next - first < max_shards
           && (self->round_next == first || step_bytes < S_STEP_BYTES)) {
        uint32_t shard = self->round_shards[self->round_next];
        size_t marked = self->idle_before_ms != INT64_MIN?
                        tm_twins_passivate_mark (twins, shard, self->idle_before_ms): 0;
        if (self->round_next >= self->round_ndirty && !marked
            && !tm_twins_passive_changed (twins, shard)) {
            //  Unchanged and nothing to let go: its stored value stands.
            self->round_shards[self->round_next++] = S_SKIPPED;
            continue;
        }
        int prc = tm_twins_passive_changed (twins, shard)?
                  s_stage_passive (self, batch, twins, shard, &step_bytes): 0;
        size_t size = prc == 0? tm_twins_encode_shard (twins, shard, &self->encode_buf,
                                                       &self->encode_cap): 0;
        step_bytes += size;
        if (size == 0 || tm_history_stage (batch, twins, shard, &self->hist) != 0) {
            tm_store_batch_destroy (&batch);
            s_abandon_round (self, twins, first);
            return -1;
        }
        s_shard_key (key, shard, 'T');
        tm_store_batch_put (batch, key, sizeof key, self->encode_buf, size);
        self->round_next++;
    }
    bool last = self->round_next == self->round_count;
    if (last) {
        uint8_t pos[8], from[10], to[10];
        tm_be64_put (pos, self->round_seq);
        tm_store_batch_put (batch, S_META_APPLIED, strlen (S_META_APPLIED), pos, 8);
        s_log_key (from, 0);
        s_log_key (to, self->round_seq + 1);
        tm_store_batch_delete_range (batch, from, sizeof from, to, sizeof to);
    }
    //  Only the round's last write is fsync'd: the WAL is sequential, so it
    //  makes the earlier steps durable too, and nothing depends on them
    //  before P is recorded.
    int rc = tm_store_write (self->store, batch, last);
    tm_store_batch_destroy (&batch);
    if (rc != 0) {
        s_abandon_round (self, twins, first);
        return -1;
    }
    //  The closed chunks, late readings and open chunks' new bytes of
    //  these shards are on disk now, in the same write as the blob that no
    //  longer holds them.
    //  Then the passivated twins leave the table (their pending history
    //  pointed at them).
    for (size_t i = first; i < self->round_next; i++) {
        if (self->round_shards[i] == S_SKIPPED)
            continue;      //  not written: history it may have got meanwhile waits
        tm_twins_pending_drop (twins, self->round_shards[i]);
        tm_twins_history_flushed (twins, self->round_shards[i]);
        self->passivated += tm_twins_passivate_commit (twins, self->round_shards[i]);
    }
    if (last) {
        self->idle_before_ms = INT64_MIN;
        self->checkpoint_seq = self->round_seq;
        free (self->round_shards);
        self->round_shards = NULL;
        self->round_count = self->round_next = 0;
        self->in_round = false;
        *done = true;
    }
    return 0;
}

int
tm_wlog_checkpoint (tm_wlog_t *self, tm_twins_t *twins)
{
    //  Finish a running round, then run a complete one for what changed.
    for (int rounds = 0; rounds < 2; rounds++) {
        bool done = false;
        while (!done)
            if (tm_wlog_checkpoint_step (self, twins, SIZE_MAX, &done) != 0)
                return -1;
    }
    return 0;
}

bool
tm_wlog_checkpointing (tm_wlog_t *self)
{
    return self->in_round;
}

long
tm_wlog_recover (tm_wlog_t *self, tm_twins_t *twins, tm_wlog_replay_fn *fn, void *arg,
                 const tm_wreplay_filter_t *filter, size_t *bad_twins, uint64_t *skipped)
{
    *bad_twins = 0;
    *skipped = 0;
    //  Read and decoded on a helper thread, restored here (tm_wrestore).
    tm_wrestore_t *loader = tm_wrestore_new (self->store);
    if (!loader)
        return -1;
    //  Where a restart's time goes, for operators (docs/operations.md).
    int64_t t0 = tm_util_mono_ms (), restore_ms = 0;
    size_t shards = 0;
    uint32_t shard;
    tm_twins_decoded_t *decoded;
    int rc;
    while ((rc = tm_wrestore_next (loader, &shard, &decoded)) == 1) {
        int64_t d0 = tm_util_mono_ms ();
        size_t qlen;
        const uint8_t *q = tm_wrestore_passive (loader, &qlen);
        if (q && tm_twins_passive_load (twins, shard, q, qlen) != 0) {
            tm_warn ("wlog: the passive set of shard %u does not decode; its passive twins "
                     "come back only from the log", shard);
            (*bad_twins)++;
        }
        if (decoded && tm_twins_restore_decoded (twins, shard, &decoded) < 0) {
            tm_warn ("wlog: stored twins of shard %u do not decode; the log alone restores them",
                     shard);
            (*bad_twins)++;
        }
        restore_ms += tm_util_mono_ms () - d0;
        shards++;
    }
    *bad_twins += tm_wrestore_bad_keys (loader);
    tm_wrestore_destroy (&loader);
    tm_twins_restore_end (twins);
    if (rc < 0)
        return -1;
    int64_t t1 = tm_util_mono_ms ();
    //  Loaded state is what is stored: nothing to write back for it.
    size_t n;
    free (tm_twins_take_dirty (twins, &n));

    //  Read, and left out what the blobs hold, on a helper thread.
    uint8_t start[10];
    s_log_key (start, self->checkpoint_seq + 1);
    tm_wreplay_filter_t f = {0};
    if (filter) {
        f = *filter;
        f.covered = tm_twins_covered_all (twins);
    }
    tm_wreplay_t *reader = tm_wreplay_new (self->store, (const uint8_t *) S_LOG_PREFIX, start,
                                           filter? &f: NULL);
    if (!reader)
        return -1;
    long replayed = 0;
    uint64_t seq;
    const uint8_t *data;
    size_t size;
    while ((rc = tm_wreplay_next (reader, &seq, &data, &size)) == 1) {
        fn (arg, seq, data, size);
        replayed++;
    }
    *skipped = tm_wreplay_skipped (reader);
    tm_wreplay_destroy (&reader);
    if (rc < 0)
        return -1;
    tm_info ("wlog: recovery shards=%zu load_ms=%lld (restore_ms=%lld) replay_ms=%lld "
             "records=%ld readings_skipped=%llu", shards, (long long) (t1 - t0),
             (long long) restore_ms, (long long) (tm_util_mono_ms () - t1), replayed,
             (unsigned long long) *skipped);
    return replayed;
}

void
tm_wlog_history_counts (tm_wlog_t *self, uint64_t *chunks, uint64_t *points, uint64_t *bytes)
{
    *chunks = self->hist.chunks;
    *points = self->hist.points;
    *bytes = self->hist.value_bytes + self->hist.key_bytes;
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
