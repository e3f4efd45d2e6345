/*  tm_history - a series' history in the worker's RocksDB  */
#include "tm_history.h"
#include "tm_log.h"
#include "tm_segment.h"
#include "tm_util.h"
#include "tm_wire.h"

#include <stdlib.h>
#include <string.h>

//  Longest key: 'S' shard(4) kind, entity, 0, property, 0, ts(8).
#define S_KEY_MAX (6 + TM_WIRE_MAX_ENTITY + 1 + TM_WIRE_MAX_PROPERTY + 1 + 8)

//  The series' key prefix for kind 'H' or 'L'; returns its length.
static size_t
s_prefix (uint8_t *key, char kind, uint32_t shard, const char *entity, size_t elen,
          const char *property, size_t plen)
{
    size_t n = 0;
    key[n++] = 'S';
    key[n++] = (uint8_t) (shard >> 24);
    key[n++] = (uint8_t) (shard >> 16);
    key[n++] = (uint8_t) (shard >> 8);
    key[n++] = (uint8_t) shard;
    key[n++] = (uint8_t) kind;
    memcpy (key + n, entity, elen);
    n += elen;
    key[n++] = 0;
    memcpy (key + n, property, plen);
    n += plen;
    key[n++] = 0;
    return n;
}

_Static_assert (TM_GORILLA_VERSION != TM_HISTORY_VALUE_STAMPED,
                "byte 8 of a format-0 chunk value is the chunk's version");

//  A stamped value's head (8 bytes), marker and expiry.
#define S_STAMP_SIZE 9

int
tm_history_value_decode (char kind, const void *val, size_t vlen, tm_history_value_t *out)
{
    const uint8_t *v = (const uint8_t *) val;
    memset (out, 0, sizeof *out);
    out->expires = TM_HISTORY_NO_EXPIRY;
    if (kind == 'L') {
        if (vlen != 8 && !(vlen == 8 + S_STAMP_SIZE && v[8] == TM_HISTORY_VALUE_STAMPED))
            return -1;
        uint64_t bits = 0;
        for (int b = 7; b >= 0; b--)
            bits = bits << 8 | v[b];
        memcpy (&out->value, &bits, 8);
        if (vlen > 8) {
            out->format = 1;
            out->expires = tm_segment_get_ts (v + 9);
        }
        return 0;
    }
    if (kind != 'H' || vlen < 9)
        return -1;
    size_t marker = v[8] == TM_HISTORY_VALUE_STAMPED? 8 + S_STAMP_SIZE: 8;
    if (vlen > marker && (v[marker] == TM_SEGMENT_JOINED || v[marker] == TM_SEGMENT_BROKEN)) {
        tm_segment_t seg;
        if (tm_segment_parse (v, vlen, &seg) != 0)
            return -1;
        out->format = seg.expires == TM_SEGMENT_NO_EXPIRY? 0: 1;
        out->expires = seg.expires == TM_SEGMENT_NO_EXPIRY? TM_HISTORY_NO_EXPIRY: seg.expires;
        out->last_ts = seg.last_ts;
        out->kind = seg.kind;
        //  A broken value gets no more segments: retention may drop it.
        out->closed = seg.kind == TM_SEGMENT_BROKEN || (seg.flags & TM_SEGMENT_CLOSED);
        out->count = seg.count;
        out->bits = seg.bits;
        out->chunk = seg.bytes;
        out->chunk_size = seg.size;
        return 0;
    }
    if (vlen < 8 + TM_GORILLA_EMPTY_SIZE)
        return -1;
    out->last_ts = tm_segment_get_ts (v);
    size_t head = 8;
    if (v[8] == TM_HISTORY_VALUE_STAMPED) {
        if (vlen < 8 + S_STAMP_SIZE + TM_GORILLA_EMPTY_SIZE)
            return -1;
        out->format = 1;
        out->expires = tm_segment_get_ts (v + 9);
        head += S_STAMP_SIZE;
    }
    out->chunk = v + head;
    out->chunk_size = vlen - head;
    out->closed = true;
    return 0;
}

bool
tm_history_filter (void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    const tm_history_retention_t *ret = (const tm_history_retention_t *) arg;
    const uint8_t *k = (const uint8_t *) key;
    if (!ret || klen < 6 + 8 || k[0] != 'S' || (k[5] != 'H' && k[5] != 'L'))
        return false;
    tm_history_value_t hv;
    if (tm_history_value_decode ((char) k[5], val, vlen, &hv) != 0)
        return false;      //  not ours to judge: keep it for the reader to report
    //  An open chunk's next segment needs the bytes before it (tm_segment).
    if (k[5] == 'H' && !hv.closed)
        return false;
    int64_t now = ret->now_ms? ret->now_ms (): tm_util_wall_ms ();
    if (hv.format == 1)
        return now > hv.expires;
    if (ret->retention_ms <= 0)
        return false;
    int64_t last = k[5] == 'H'? hv.last_ts: tm_segment_get_ts (k + klen - 8);
    //  now - retention is a few years from now at most: no overflow.
    return now - ret->retention_ms > last;
}

int64_t
tm_history_series_retention (tm_twins_t *twins, const tm_twin_t *twin, const char *property,
                             size_t plen)
{
    const tm_models_t *models = tm_twins_models (twins);
    if (!models || !twin->model)
        return 0;
    const tm_model_t *m = tm_models_find (models, twin->model, tm_twins_name_len (twin->model));
    if (!m)
        return 0;
    return tm_model_retention_ms (m, tm_model_property_find (m, property, plen));
}

//  The expiry of a value whose newest point is at last (saturating: a
//  reading far in the future simply never expires).
static int64_t
s_expiry (int64_t last, int64_t retention_ms)
{
    int64_t expires;
    if (__builtin_add_overflow (last, retention_ms, &expires))
        return INT64_MAX;
    return expires;
}

//  The stamp of a series' values: its model's retention as of now, from
//  its newest point (the compaction filter cannot look models up: banner).
static int64_t
s_stamp (tm_twins_t *twins, const tm_twin_t *t, const char *property, int64_t last_ts)
{
    int64_t retention = tm_history_series_retention (twins, t, property,
                                                     tm_twins_name_len (property));
    return retention > 0? s_expiry (last_ts, retention): TM_SEGMENT_NO_EXPIRY;
}

//  A value buffer that grows; false if memory is short.
static bool
s_room (uint8_t **val, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    uint8_t *grown = realloc (*val, need);
    if (!grown)
        return false;
    *val = grown;
    *cap = need;
    return true;
}

//  A chunk's bytes into the batch under its key: a joined value when they
//  are the whole chunk (a put: nothing to join), else a segment (a merge).
//  Returns the value's size, 0 if memory is short.
static size_t
s_stage_chunk (tm_store_batch_t *batch, const uint8_t *key, size_t klen, tm_segment_t *seg,
               uint8_t **val, size_t *cap)
{
    seg->kind = seg->start == 0? TM_SEGMENT_JOINED: TM_SEGMENT_PIECE;
    size_t vlen = tm_segment_size (seg);
    if (!s_room (val, cap, vlen))
        return 0;
    tm_segment_put (*val, seg);
    if (seg->kind == TM_SEGMENT_JOINED)
        tm_store_batch_put (batch, key, klen, *val, vlen);
    else
        tm_store_batch_merge (batch, key, klen, *val, vlen);
    return vlen;
}

int
tm_history_stage (tm_store_batch_t *batch, tm_twins_t *twins, uint32_t shard,
                  tm_history_counts_t *counts)
{
    tm_history_counts_t none;
    if (!counts)
        counts = &none;
    uint8_t key[S_KEY_MAX];
    uint8_t *val = NULL;
    size_t cap = 0;
    for (const tm_twins_pending_t *item = tm_twins_pending (twins, shard); item;
         item = item->next) {
        const tm_twin_t *t = item->twin;
        size_t plen = tm_twins_name_len (item->property);
        size_t n = s_prefix (key, item->late? 'L': 'H', shard, t->entity, t->entity_len,
                             item->property, plen);
        tm_segment_put_ts (key + n, item->first_ts);
        n += 8;
        int64_t expires = s_stamp (twins, t, item->property, item->last_ts);
        if (item->late) {
            uint8_t v[8 + S_STAMP_SIZE];
            uint64_t bits;
            memcpy (&bits, &item->value, 8);
            for (int b = 0; b < 8; b++)
                v[b] = (uint8_t) (bits >> (8 * b));
            size_t vlen = 8;
            if (expires != TM_SEGMENT_NO_EXPIRY) {
                v[8] = TM_HISTORY_VALUE_STAMPED;
                tm_segment_put_ts (v + 9, expires);
                vlen += S_STAMP_SIZE;
            }
            tm_store_batch_put (batch, key, n, v, vlen);
            counts->late++;
            continue;
        }
        //  The chunk's last segment.
        tm_segment_t seg = {.last_ts = item->last_ts, .expires = expires,
                            .flags = TM_SEGMENT_CLOSED, .count = item->count,
                            .bits = item->bits, .start = item->start,
                            .bytes = item->data, .size = item->size};
        size_t vlen = s_stage_chunk (batch, key, n, &seg, &val, &cap);
        if (vlen == 0)
            goto oom;
        //  Counted as what stays once joined.
        seg.kind = TM_SEGMENT_JOINED;
        seg.start = 0;
        seg.size = ((size_t) item->bits + 7) / 8;
        counts->chunks++;
        counts->points += item->count;
        counts->value_bytes += tm_segment_size (&seg);
        counts->key_bytes += n;
        if (item->start) {
            counts->segments++;
            counts->segment_bytes += vlen + n;
        }
    }
    //  The open chunks' new bytes, where due (the others ride in the blob):
    //  the series the shard's encoding noted.
    size_t ndue;
    const tm_twins_due_t *due = tm_twins_due (twins, &ndue);
    for (size_t i = 0; i < ndue; i++) {
        const tm_twin_t *t = due[i].twin;
        if (!t || t->shard != shard)
            continue;
        const tm_prop_t *pr = &t->props[due[i].prop];
        tm_segment_t seg = {.last_ts = pr->an.ts_ms,
                            .count = tm_gorilla_open_count (&pr->hist),
                            .bits = tm_gorilla_open_bits (&pr->hist)};
        seg.bytes = tm_gorilla_open_pending (&pr->hist, &seg.start, &seg.size);
        const char *pname = tm_twins_prop_name (twins, pr);
        seg.expires = s_stamp (twins, t, pname, seg.last_ts);
        size_t n = s_prefix (key, 'H', shard, t->entity, t->entity_len, pname,
                             tm_twins_name_len (pname));
        tm_segment_put_ts (key + n, tm_gorilla_open_first_ts (&pr->hist, pr->an.ts_ms));
        n += 8;
        size_t vlen = s_stage_chunk (batch, key, n, &seg, &val, &cap);
        if (vlen == 0)
            goto oom;
        counts->segments++;
        counts->segment_bytes += vlen + n;
    }
    free (val);
    return 0;
oom:
    free (val);
    return -1;
}

int
tm_history_agg_parse (const char *name, tm_history_agg_t *agg)
{
    static const char *names[] = {"avg", "min", "max", "last", "count"};
    if (!name || !*name) {
        *agg = TM_HISTORY_AVG;
        return 0;
    }
    for (int i = 0; i < 5; i++)
        if (strcmp (name, names[i]) == 0) {
            *agg = (tm_history_agg_t) i;
            return 0;
        }
    return -1;
}

typedef struct {
    int64_t ts;                    //  Reading time
    double value;                  //  Its value
    bool late;                     //  Came as a late reading
} s_point_t;

typedef struct {
    s_point_t *p;                  //  Points collected
    size_t n;                      //  In use
    size_t cap;                    //  Allocated
    int64_t from;                  //  Range start, inclusive
    int64_t to;                    //  Range end, exclusive (shrinks at the scan cap)
    size_t scanned;                //  Readings decoded so far
    bool failed;                   //  Out of memory
} s_points_t;

static void
s_add (s_points_t *pts, int64_t ts, double value, bool late)
{
    if (ts < pts->from || ts >= pts->to || pts->failed)
        return;
    if (pts->n == pts->cap) {
        size_t cap = pts->cap? pts->cap * 2: 1024;
        s_point_t *grown = realloc (pts->p, cap * sizeof *grown);
        if (!grown) {
            pts->failed = true;
            return;
        }
        pts->p = grown;
        pts->cap = cap;
    }
    pts->p[pts->n++] = (s_point_t) {.ts = ts, .value = value, .late = late};
}

//  Decode a chunk's points in range (dec initialised); false if it does
//  not decode.
static bool
s_add_points (s_points_t *pts, tm_gorilla_dec_t *dec)
{
    int64_t ts;
    double value;
    int rc;
    while ((rc = tm_gorilla_dec_next (dec, &ts, &value)) == 1) {
        pts->scanned++;
        if (ts >= pts->to)
            break;
        s_add (pts, ts, value, false);
    }
    return rc >= 0;
}

//  A stored chunk value's points: version 1, or joined segments.
static bool
s_add_value (s_points_t *pts, const tm_history_value_t *hv)
{
    tm_gorilla_dec_t dec;
    if (hv->kind == TM_SEGMENT_BROKEN)
        return false;
    int rc = hv->kind == TM_SEGMENT_JOINED?
             tm_gorilla_dec_init_stream (&dec, hv->chunk, hv->chunk_size, hv->count, hv->bits):
             tm_gorilla_dec_init (&dec, hv->chunk, hv->chunk_size);
    return rc == 0 && s_add_points (pts, &dec);
}

//  A chunk partly in memory: bytes [start, ceil(bits / 8)) are here, the
//  ones before (start > 0) in the store under the chunk's key, written by
//  earlier checkpoints. -1 on a store or memory error; a stored part that
//  is missing or does not fit is reported and the chunk skipped.
static int
s_add_parts (s_points_t *pts, tm_store_t *store, const uint8_t *prefix, size_t plen,
             int64_t first_ts, uint32_t start, const uint8_t *data, size_t size,
             uint32_t count, uint32_t bits)
{
    size_t total = ((size_t) bits + 7) / 8;
    if (start + size != total)
        return 0;
    if (start == 0) {
        tm_gorilla_dec_t dec;
        if (tm_gorilla_dec_init_stream (&dec, data, size, count, bits) != 0
            || !s_add_points (pts, &dec))
            tm_warn ("history: an open chunk does not decode; skipped");
        return 0;
    }
    uint8_t key[S_KEY_MAX];
    memcpy (key, prefix, plen);
    tm_segment_put_ts (key + plen, first_ts);
    char *val = NULL;
    size_t vlen = 0;
    int rc = tm_store_get (store, key, plen + 8, &val, &vlen);
    if (rc < 0)
        return -1;
    tm_history_value_t hv;
    if (rc != 0 || tm_history_value_decode ('H', val, vlen, &hv) != 0
        || hv.kind != TM_SEGMENT_JOINED || hv.chunk_size < start) {
        tm_warn ("history: the stored part of a chunk is missing or does not join; "
                 "its points since the last checkpoint are skipped");
        free (val);
        return 0;
    }
    uint8_t *whole = malloc (total);
    if (!whole) {
        free (val);
        return -1;
    }
    memcpy (whole, hv.chunk, start);
    memcpy (whole + start, data, size);
    free (val);
    tm_gorilla_dec_t dec;
    if (tm_gorilla_dec_init_stream (&dec, whole, total, count, bits) != 0
        || !s_add_points (pts, &dec))
        tm_warn ("history: a chunk joined with its stored part does not decode; skipped");
    free (whole);
    return 0;
}

static int
s_cmp_point (const void *a, const void *b)
{
    const s_point_t *x = (const s_point_t *) a, *y = (const s_point_t *) b;
    if (x->ts != y->ts)
        return x->ts < y->ts? -1: 1;
    return (int) x->late - (int) y->late;
}

//  The stored chunks overlapping the range, oldest first; stops at the
//  scan cap (the range then ends after the last chunk read).
static int
s_scan_chunks (tm_store_t *store, const uint8_t *prefix, size_t plen, s_points_t *pts,
               size_t budget, const int64_t *skip, size_t nskip, bool *truncated)
{
    uint8_t start[S_KEY_MAX];
    memcpy (start, prefix, plen);
    tm_segment_put_ts (start + plen, pts->from);
    tm_store_iter_t *it = tm_store_iter_new_before (store, prefix, plen, start, plen + 8);
    if (!it)
        return -1;
    const char *k, *v;
    size_t kl, vl;
    while (tm_store_iter_next (it, &k, &kl, &v, &vl)) {
        tm_history_value_t hv;
        if (kl != plen + 8 || tm_history_value_decode ('H', v, vl, &hv) != 0)
            continue;
        int64_t first = tm_segment_get_ts ((const uint8_t *) k + plen);
        int64_t last = hv.last_ts;
        if (first >= pts->to)
            break;
        if (last < pts->from)
            continue;
        //  Chunks with a part in memory are read whole later.
        bool held = false;
        for (size_t i = 0; i < nskip && !held; i++)
            held = skip[i] == first;
        if (held)
            continue;
        if (!s_add_value (pts, &hv))
            tm_warn ("history: a stored chunk does not decode; skipped");
        if (pts->n > budget || pts->scanned >= TM_HISTORY_MAX_SCAN) {
            if (last < INT64_MAX && last + 1 < pts->to)
                pts->to = last + 1;
            *truncated = true;
            break;
        }
    }
    tm_store_iter_destroy (&it);
    return 0;
}

//  The stored late readings in range; at the scan cap the range ends there.
static int
s_scan_late (tm_store_t *store, const uint8_t *prefix, size_t plen, s_points_t *pts,
             bool *truncated)
{
    uint8_t start[S_KEY_MAX];
    memcpy (start, prefix, plen);
    tm_segment_put_ts (start + plen, pts->from);
    tm_store_iter_t *it = tm_store_iter_new_at (store, prefix, plen, start, plen + 8);
    if (!it)
        return -1;
    const char *k, *v;
    size_t kl, vl;
    while (tm_store_iter_next (it, &k, &kl, &v, &vl)) {
        tm_history_value_t hv;
        if (kl != plen + 8 || tm_history_value_decode ('L', v, vl, &hv) != 0)
            continue;
        int64_t ts = tm_segment_get_ts ((const uint8_t *) k + plen);
        if (ts >= pts->to)
            break;
        if (++pts->scanned > TM_HISTORY_MAX_SCAN) {
            pts->to = ts;
            *truncated = true;
            break;
        }
        s_add (pts, ts, hv.value, true);
    }
    tm_store_iter_destroy (&it);
    return 0;
}

int
tm_history_query (tm_store_t *store, tm_twins_t *twins, const tm_twin_t *twin,
                  const tm_prop_t *prop, int64_t from_ms, int64_t to_ms, int64_t step_ms,
                  tm_history_agg_t agg, size_t limit, tm_history_result_t *result)
{
    memset (result, 0, sizeof *result);
    if (limit == 0 || limit > TM_HISTORY_MAX_POINTS)
        limit = TM_HISTORY_MAX_POINTS;
    s_points_t pts = {.from = from_ms, .to = to_ms? to_ms: INT64_MAX};
    if (pts.to <= pts.from)
        return 0;
    uint8_t prefix[S_KEY_MAX];
    const char *pname = tm_twins_prop_name (twins, prop);
    size_t nlen = tm_twins_name_len (pname);
    size_t plen = s_prefix (prefix, 'H', twin->shard, twin->entity, twin->entity_len,
                            pname, nlen);
    //  Raw points: one more than the limit in range is enough to know the
    //  answer is truncated; with a step, every reading in range counts.
    //  Either way no more than TM_HISTORY_MAX_SCAN readings are decoded.
    size_t budget = step_ms? TM_HISTORY_MAX_SCAN: limit + 1;
    bool truncated = false;
    //  Chunks with bytes still in memory: the open one, and closed ones
    //  whose last segment waits for a checkpoint (a few at most).
    int64_t held[16];
    size_t nheld = 0;
    bool open = tm_gorilla_open_count (&prop->hist) > 0;
    if (open)
        held[nheld++] = tm_gorilla_open_first_ts (&prop->hist, prop->an.ts_ms);
    for (const tm_twins_pending_t *item = tm_twins_pending (twins, twin->shard); item;
         item = item->next)
        if (item->twin == twin && item->property == pname && !item->late
            && nheld < sizeof held / sizeof *held)
            held[nheld++] = item->first_ts;
    if (s_scan_chunks (store, prefix, plen, &pts, budget, held, nheld, &truncated) != 0)
        goto fail;
    //  Not yet written (or not whole): closed chunks and late readings,
    //  then the open chunk.
    for (const tm_twins_pending_t *item = tm_twins_pending (twins, twin->shard); item;
         item = item->next) {
        if (item->twin != twin || item->property != pname)
            continue;
        if (item->late)
            s_add (&pts, item->first_ts, item->value, true);
        else
        if (item->first_ts < pts.to && item->last_ts >= pts.from
            && s_add_parts (&pts, store, prefix, plen, item->first_ts, item->start, item->data,
                            item->size, item->count, item->bits) != 0)
            goto fail;
    }
    int64_t first_ts = tm_gorilla_open_first_ts (&prop->hist, prop->an.ts_ms);
    if (open && prop->an.ts_ms >= pts.from && first_ts < pts.to) {
        uint32_t start;
        size_t size;
        const uint8_t *data = tm_gorilla_open_pending (&prop->hist, &start, &size);
        if (s_add_parts (&pts, store, prefix, plen, first_ts,
                         start, data, size, tm_gorilla_open_count (&prop->hist),
                         tm_gorilla_open_bits (&prop->hist)) != 0)
            goto fail;
    }
    prefix[5] = 'L';
    if (s_scan_late (store, prefix, plen, &pts, &truncated) != 0)
        goto fail;
    if (pts.failed)
        goto fail;
    //  Sources were added in a few runs: sort, and keep one reading per
    //  timestamp (the in-order one sorts first). Points past a shrunk end
    //  (scan cap) are dropped.
    if (pts.n > 1)
        qsort (pts.p, pts.n, sizeof *pts.p, s_cmp_point);
    size_t m = 0;
    for (size_t i = 0; i < pts.n; i++)
        if (pts.p[i].ts < pts.to && (m == 0 || pts.p[m - 1].ts != pts.p[i].ts))
            pts.p[m++] = pts.p[i];
    pts.n = m;
    size_t cap = pts.n < limit? pts.n: limit;
    result->ts_ms = malloc ((cap? cap: 1) * sizeof (int64_t));
    result->values = malloc ((cap? cap: 1) * sizeof (double));
    result->counts = malloc ((cap? cap: 1) * sizeof (uint32_t));
    if (!result->ts_ms || !result->values || !result->counts)
        goto fail;
    result->truncated = truncated;
    for (size_t i = 0; i < pts.n; i++) {
        const s_point_t *pt = &pts.p[i];
        if (!step_ms) {
            if (result->n == limit) {
                result->truncated = true;
                break;
            }
            result->ts_ms[result->n] = pt->ts;
            result->values[result->n] = pt->value;
            result->counts[result->n++] = 1;
            result->late += pt->late;
            continue;
        }
        //  Buckets aligned on from: [from + k step, from + (k+1) step).
        int64_t bucket = from_ms + (int64_t) ((uint64_t) (pt->ts - from_ms)
                                              / (uint64_t) step_ms) * step_ms;
        size_t b = result->n;
        if (b == 0 || result->ts_ms[b - 1] != bucket) {
            if (b == limit) {
                result->truncated = true;
                break;
            }
            result->ts_ms[b] = bucket;
            result->values[b] = agg == TM_HISTORY_COUNT || agg == TM_HISTORY_AVG? 0: pt->value;
            result->counts[b] = 0;
            result->n++;
        }
        else
            b--;
        double *v = &result->values[b];
        switch (agg) {
            case TM_HISTORY_AVG:
                *v += pt->value;   //  a sum until the end
                break;
            case TM_HISTORY_MIN:
                *v = pt->value < *v? pt->value: *v;
                break;
            case TM_HISTORY_MAX:
                *v = pt->value > *v? pt->value: *v;
                break;
            case TM_HISTORY_LAST:
                *v = pt->value;
                break;
            case TM_HISTORY_COUNT:
                *v += 1;
                break;
        }
        result->counts[b]++;
        result->late += pt->late;
    }
    if (step_ms && agg == TM_HISTORY_AVG)
        for (size_t b = 0; b < result->n; b++)
            result->values[b] /= (double) result->counts[b];
    free (pts.p);
    return 0;
fail:
    free (pts.p);
    tm_history_result_fini (result);
    return -1;
}

void
tm_history_result_fini (tm_history_result_t *result)
{
    free (result->ts_ms);
    free (result->values);
    free (result->counts);
    memset (result, 0, sizeof *result);
}
