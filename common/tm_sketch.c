/*  tm_sketch - mergeable quantile sketch (DDSketch)

    A value v > 0 goes to bucket i = ceil(log(v) / log(gamma)), gamma =
    (1 + alpha) / (1 - alpha), and the bucket answers 2 gamma^i / (gamma + 1):
    for every v in (gamma^(i-1), gamma^i] that is within alpha of v. A
    negative value goes to the bucket of -v in a store of its own; values
    too small to have a logarithm worth the name are counted as zeros.

    Each store is a dense array of counts with an offset, grown with some
    slack so that a stream of values adds without reallocating. It never
    spans more than TM_SKETCH_MAX_BINS buckets: past that, the buckets of
    lowest magnitude fold into the lowest one kept. The highest non-empty
    bucket alone decides where that fold lies, and it only ever rises, so
    the result does not depend on the order values or merges came in: a
    merged sketch is bucket for bucket the sketch of the union.

    Encoding (all varints minimal, as tm_varint.h writes them):

        magic 0x5D, version 1
        alpha           8 bytes, IEEE 754 binary64, little-endian
        zero count      varint
        negative store, then positive store:
            runs        varint, maximal runs of non-empty buckets
            each run    first: zigzag varint of its first index, later:
                        varint (empty buckets since the last run) - 1;
                        varint length - 1; then length varints, each >= 1
        if the count is not 0: min, max, 8 bytes each as alpha

    Every sketch has exactly one encoding and the decoder accepts nothing
    else, so decode then encode gives the same bytes back.
*/
#include "tm_sketch.h"
#include "tm_varint.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_MAGIC 0x5D               //  First byte of every encoding
#define S_VERSION 1                //  Second byte; bumped on any format change
#define S_ZERO DBL_MIN             //  Magnitudes below this (subnormals, 0) count as zero
//  Below this alpha, log(v) / log(gamma) is so large that its rounding
//  error is no longer small against one bucket, and the accuracy promise
//  would not hold.
#define S_ALPHA_MIN 1e-9
#define S_HEADER_SIZE 10           //  Magic, version, alpha

typedef struct {
    uint64_t *bins;                //  Counts; bins[k] is bucket offset + k
    int64_t offset;                //  Index of bins[0]
    uint32_t size;                 //  Buckets allocated, at most TM_SKETCH_MAX_BINS
    int64_t lo;                    //  Lowest non-empty index, when total > 0
    int64_t hi;                    //  Highest non-empty index, when total > 0
    uint64_t total;                //  Sum of the counts
} s_store_t;

//  What adding a range of buckets to a store needs: computed (and
//  allocated) first, so that a merge can fail before changing anything.
typedef struct {
    bool active;                   //  Something is added to this store
    int64_t lo;                    //  Lowest index kept after the fold
    int64_t hi;                    //  Highest index after the addition
    uint64_t *fresh;               //  Bucket array to move to, or NULL if the current fits
    int64_t offset;                //  Index of fresh[0]
    uint32_t size;                 //  Buckets in fresh
} s_plan_t;

struct _tm_sketch_t {
    double alpha;                  //  Relative accuracy asked for
    double ln_gamma;               //  log(gamma), the width of a bucket in log space
    double ln_scale;               //  log(2 / (gamma + 1)), so values need one exp
    int64_t index_min;             //  Lowest index a decoded bucket may have
    int64_t index_max;             //  Highest index a decoded bucket may have
    s_store_t neg;                 //  Negative values, by the index of -v
    s_store_t pos;                 //  Positive values
    uint64_t zero_count;           //  Values of magnitude below S_ZERO
    uint64_t count;                //  All values
    double min;                    //  Lowest value, when count > 0
    double max;                    //  Highest value, when count > 0
};

//  ---------------------------------------------------------------------
//  Mapping

static int64_t
s_index (const tm_sketch_t *self, double magnitude)
{
    //  log and ceil are monotonic, so magnitudes in [S_ZERO, DBL_MAX] give
    //  indexes in a range bounded by S_ALPHA_MIN: 709.8 / 2e-9 < 2^39.
    return (int64_t) ceil (log (magnitude) / self->ln_gamma);
}

static double
s_value (const tm_sketch_t *self, int64_t index)
{
    //  One exp of the sum rather than gamma^i * scale: gamma^i of the top
    //  bucket can exceed DBL_MAX while the value it stands for does not.
    return exp ((double) index * self->ln_gamma + self->ln_scale);
}

//  -1 negative, 0 counted as zero, 1 positive.
static int
s_class (double value)
{
    return fabs (value) < S_ZERO? 0: value > 0? 1: -1;
}

//  ---------------------------------------------------------------------
//  Stores

static void
s_store_fini (s_store_t *self)
{
    free (self->bins);
    self->bins = NULL;
}

static void
s_plan_discard (s_plan_t *plan)
{
    free (plan->fresh);
    plan->fresh = NULL;
}

//  Plan to add buckets in [in_lo, in_hi]; 0, or -1 on allocation failure.
static int
s_store_plan (const s_store_t *self, int64_t in_lo, int64_t in_hi, s_plan_t *plan)
{
    memset (plan, 0, sizeof *plan);
    plan->active = true;
    int64_t lo = in_lo;
    int64_t hi = in_hi;
    if (self->total > 0) {
        lo = self->lo < lo? self->lo: lo;
        hi = self->hi > hi? self->hi: hi;
    }
    //  The fold: only the top TM_SKETCH_MAX_BINS indexes stay apart.
    if (hi - lo >= TM_SKETCH_MAX_BINS)
        lo = hi - TM_SKETCH_MAX_BINS + 1;
    plan->lo = lo;
    plan->hi = hi;
    if (self->bins && lo >= self->offset && hi < self->offset + (int64_t) self->size)
        return 0;
    //  Slack on the side the store grows towards: streams of values
    //  wander a bucket or two at a time.
    uint32_t need = (uint32_t) (hi - lo + 1);
    uint32_t size = need + need / 2 + 8;
    if (size > TM_SKETCH_MAX_BINS)
        size = TM_SKETCH_MAX_BINS;
    bool down = self->total > 0 && in_lo < self->lo;
    plan->offset = down? hi - size + 1: lo;
    plan->size = size;
    plan->fresh = calloc (size, sizeof (uint64_t));
    return plan->fresh? 0: -1;
}

//  Move to the planned array, folding what falls below plan->lo.
static void
s_store_apply (s_store_t *self, s_plan_t *plan)
{
    if (!plan->fresh) {
        //  A fold needs a span over TM_SKETCH_MAX_BINS, which never fits.
        assert (self->total == 0 || self->lo >= plan->lo);
        return;
    }
    if (self->total > 0) {
        for (int64_t i = self->lo; i <= self->hi; i++) {
            int64_t to = i < plan->lo? plan->lo: i;
            plan->fresh[to - plan->offset] += self->bins[i - self->offset];
        }
        if (self->lo < plan->lo)
            self->lo = plan->lo;
    }
    free (self->bins);
    self->bins = plan->fresh;
    self->offset = plan->offset;
    self->size = plan->size;
    plan->fresh = NULL;
}

//  Add n (> 0) to bucket index, which the applied plan covers once folded.
static void
s_store_put (s_store_t *self, const s_plan_t *plan, int64_t index, uint64_t n)
{
    if (index < plan->lo)
        index = plan->lo;
    assert (index <= plan->hi && index >= self->offset);
    assert (index < self->offset + (int64_t) self->size);
    self->bins[index - self->offset] += n;
    if (self->total == 0)
        self->lo = self->hi = index;
    else if (index < self->lo)
        self->lo = index;
    else if (index > self->hi)
        self->hi = index;
    self->total += n;
}

//  The index of the bucket holding the rank-th value (0-based, rank <
//  total), counting from the lowest index up, or from the highest down.
static int64_t
s_store_at_rank (const s_store_t *self, uint64_t rank, bool from_top)
{
    uint64_t seen = 0;
    for (int64_t k = 0; k <= self->hi - self->lo; k++) {
        int64_t i = from_top? self->hi - k: self->lo + k;
        seen += self->bins[i - self->offset];
        if (seen > rank)
            return i;
    }
    assert (false);
    return self->hi;
}

//  ---------------------------------------------------------------------
//  Sketch

tm_sketch_t *
tm_sketch_new (double alpha)
{
    if (!(alpha >= S_ALPHA_MIN && alpha < 1))
        return NULL;
    tm_sketch_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->alpha = alpha;
    double gamma = (1 + alpha) / (1 - alpha);
    //  log1p keeps the precision log(gamma) would lose for small alpha.
    self->ln_gamma = log1p (2 * alpha / (1 - alpha));
    self->ln_scale = log (2 / (gamma + 1));
    //  One index of slack each side: another machine's log may round the
    //  extremes differently, and its sketches must still decode here.
    self->index_min = s_index (self, S_ZERO) - 1;
    self->index_max = s_index (self, DBL_MAX) + 1;
    return self;
}

void
tm_sketch_destroy (tm_sketch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_sketch_t *self = *self_p;
    s_store_fini (&self->neg);
    s_store_fini (&self->pos);
    free (self);
    *self_p = NULL;
}

//  a < b, with -0.0 below 0.0: then which zero is the min or max does not
//  depend on the order values came in, and merges stay byte for byte the
//  sketch of the union.
static bool
s_below (double a, double b)
{
    return a < b || (a == b && signbit (a) && !signbit (b));
}

static void
s_update_range (tm_sketch_t *self, double min, double max)
{
    if (self->count == 0 || s_below (min, self->min))
        self->min = min;
    if (self->count == 0 || s_below (self->max, max))
        self->max = max;
}

int
tm_sketch_add (tm_sketch_t *self, double value)
{
    assert (self);
    if (!isfinite (value) || self->count == UINT64_MAX)
        return -1;
    if (fabs (value) < S_ZERO)
        self->zero_count++;
    else {
        s_store_t *store = value > 0? &self->pos: &self->neg;
        int64_t index = s_index (self, fabs (value));
        s_plan_t plan;
        if (s_store_plan (store, index, index, &plan) != 0)
            return -1;
        s_store_apply (store, &plan);
        s_store_put (store, &plan, index, 1);
    }
    s_update_range (self, value, value);
    self->count++;
    return 0;
}

static int
s_merge_plan (const s_store_t *self, const s_store_t *other, s_plan_t *plan)
{
    if (other->total == 0) {
        memset (plan, 0, sizeof *plan);
        return 0;
    }
    return s_store_plan (self, other->lo, other->hi, plan);
}

static void
s_merge_apply (s_store_t *self, const s_store_t *other, s_plan_t *plan)
{
    if (!plan->active)
        return;
    s_store_apply (self, plan);
    //  Also right when other is self: the range is unchanged, so no
    //  bucket is read after being written.
    for (int64_t i = other->lo; i <= other->hi; i++) {
        uint64_t n = other->bins[i - other->offset];
        if (n > 0)
            s_store_put (self, plan, i, n);
    }
}

int
tm_sketch_merge (tm_sketch_t *self, const tm_sketch_t *other)
{
    assert (self);
    assert (other);
    if (self->alpha != other->alpha)
        return -1;
    if (other->count == 0)
        return 0;
    //  Bucket counts are bounded by the total, so this check covers them.
    if (other->count > UINT64_MAX - self->count)
        return -1;
    s_plan_t neg_plan, pos_plan;
    if (s_merge_plan (&self->neg, &other->neg, &neg_plan) != 0)
        return -1;
    if (s_merge_plan (&self->pos, &other->pos, &pos_plan) != 0) {
        s_plan_discard (&neg_plan);
        return -1;
    }
    //  Read before self changes, in case other is self.
    uint64_t other_zero = other->zero_count;
    uint64_t other_count = other->count;
    double other_min = other->min;
    double other_max = other->max;
    s_merge_apply (&self->neg, &other->neg, &neg_plan);
    s_merge_apply (&self->pos, &other->pos, &pos_plan);
    self->zero_count += other_zero;
    s_update_range (self, other_min, other_max);
    self->count += other_count;
    return 0;
}

uint64_t
tm_sketch_count (const tm_sketch_t *self)
{
    assert (self);
    return self->count;
}

double
tm_sketch_alpha (const tm_sketch_t *self)
{
    assert (self);
    return self->alpha;
}

double
tm_sketch_quantile (const tm_sketch_t *self, double q)
{
    assert (self);
    if (self->count == 0 || !(q >= 0 && q <= 1))
        return NAN;
    if (q == 0)
        return self->min;
    if (q == 1)
        return self->max;
    //  The value of 0-based rank floor(q (n - 1)) in sorted order, as the
    //  DDSketch paper and its reference implementations define it.
    double real_rank = q * (double) (self->count - 1);
    uint64_t rank = real_rank >= (double) (self->count - 1)? self->count - 1
                                                             : (uint64_t) real_rank;
    double value;
    if (rank < self->neg.total)
        //  Ascending order of values is descending order of magnitudes.
        value = -s_value (self, s_store_at_rank (&self->neg, rank, true));
    else if (rank - self->neg.total < self->zero_count)
        value = 0;
    else {
        rank -= self->neg.total + self->zero_count;
        value = s_value (self, s_store_at_rank (&self->pos, rank, false));
    }
    //  The extreme buckets answer for values that may lie outside [min,
    //  max]; the exact bounds are closer to the truth.
    return value < self->min? self->min: value > self->max? self->max: value;
}

//  ---------------------------------------------------------------------
//  Encoding. The writers take out = NULL to only count bytes, so the
//  buffer is sized exactly by the same code that fills it.

static size_t
s_put_varint (uint8_t *out, uint64_t v)
{
    return out? tm_varint_put (out, v): tm_varint_len (v);
}

static size_t
s_put_double (uint8_t *out, double v)
{
    if (out) {
        uint64_t bits;
        memcpy (&bits, &v, sizeof bits);
        for (int b = 0; b < 8; b++)
            out[b] = (uint8_t) (bits >> (8 * b));
    }
    return 8;
}

#define S_AT(out, n) ((out)? (out) + (n): NULL)

static size_t
s_put_store (uint8_t *out, const s_store_t *store)
{
    size_t n = 0;
    uint64_t runs = 0;
    if (store->total > 0)
        for (int64_t i = store->lo; i <= store->hi; i++)
            if (store->bins[i - store->offset] > 0
                && (i == store->lo || store->bins[i - 1 - store->offset] == 0))
                runs++;
    n += s_put_varint (S_AT (out, n), runs);
    if (runs == 0)
        return n;
    int64_t prev_end = 0;
    int64_t i = store->lo;
    while (i <= store->hi) {
        //  lo and hi are non-empty, so a run starts here and another
        //  after every stretch of empty buckets.
        int64_t start = i;
        while (i <= store->hi && store->bins[i - store->offset] > 0)
            i++;
        int64_t len = i - start;
        if (start == store->lo)
            n += s_put_varint (S_AT (out, n), tm_zigzag (start));
        else
            n += s_put_varint (S_AT (out, n), (uint64_t) (start - prev_end - 2));
        n += s_put_varint (S_AT (out, n), (uint64_t) (len - 1));
        for (int64_t k = start; k < i; k++)
            n += s_put_varint (S_AT (out, n), store->bins[k - store->offset]);
        prev_end = i - 1;
        while (i <= store->hi && store->bins[i - store->offset] == 0)
            i++;
    }
    return n;
}

static size_t
s_encode_into (const tm_sketch_t *self, uint8_t *out)
{
    size_t n = 0;
    if (out) {
        out[0] = S_MAGIC;
        out[1] = S_VERSION;
    }
    n += 2;
    n += s_put_double (S_AT (out, n), self->alpha);
    n += s_put_varint (S_AT (out, n), self->zero_count);
    n += s_put_store (S_AT (out, n), &self->neg);
    n += s_put_store (S_AT (out, n), &self->pos);
    if (self->count > 0) {
        n += s_put_double (S_AT (out, n), self->min);
        n += s_put_double (S_AT (out, n), self->max);
    }
    return n;
}

uint8_t *
tm_sketch_encode (const tm_sketch_t *self, size_t *size)
{
    assert (self);
    assert (size);
    size_t n = s_encode_into (self, NULL);
    uint8_t *out = malloc (n);
    if (!out)
        return NULL;
    size_t written = s_encode_into (self, out);
    assert (written == n);
    *size = n;
    return out;
}

//  ---------------------------------------------------------------------
//  Decoding: every read checks the end, every number its range.

typedef struct {
    const uint8_t *pos;            //  Next byte to read
    const uint8_t *end;            //  One past the last byte
} s_reader_t;

//  A varint in its shortest form only: anything else would decode to a
//  sketch that encodes to other bytes.
static int
s_get_varint (s_reader_t *r, uint64_t *out)
{
    const uint8_t *start = r->pos;
    if (tm_varint_get (&r->pos, r->end, out) != 0)
        return -1;
    size_t used = (size_t) (r->pos - start);
    //  A tenth byte carries one bit; more would be silently dropped.
    if (used != tm_varint_len (*out) || (used == 10 && start[9] > 1))
        return -1;
    return 0;
}

static int
s_get_double (s_reader_t *r, double *out)
{
    if (r->end - r->pos < 8)
        return -1;
    uint64_t bits = 0;
    for (int b = 0; b < 8; b++)
        bits |= (uint64_t) r->pos[b] << (8 * b);
    r->pos += 8;
    memcpy (out, &bits, sizeof bits);
    return 0;
}

//  Read a store's runs. With store NULL, only check them, and return the
//  range and total; with a store (on bytes already checked), fill it.
static int
s_get_store (const tm_sketch_t *self, s_reader_t *r, s_store_t *store, const s_plan_t *plan,
             int64_t *first_p, int64_t *last_p, uint64_t *total_p)
{
    uint64_t runs;
    if (s_get_varint (r, &runs) != 0 || runs > TM_SKETCH_MAX_BINS)
        return -1;
    int64_t first = 0;
    int64_t next = 0;              //  Lowest index the next run may start at
    uint64_t total = 0;
    for (uint64_t run = 0; run < runs; run++) {
        uint64_t field, len_1;
        if (s_get_varint (r, &field) != 0)
            return -1;
        int64_t start;
        if (run == 0) {
            first = tm_unzigzag (field);
            if (first < self->index_min || first > self->index_max)
                return -1;
            start = first;
        }
        else {
            //  The whole store spans at most TM_SKETCH_MAX_BINS, which
            //  also keeps the sums below far from overflowing.
            if (field >= TM_SKETCH_MAX_BINS)
                return -1;
            start = next + 1 + (int64_t) field;
        }
        if (s_get_varint (r, &len_1) != 0 || len_1 >= TM_SKETCH_MAX_BINS)
            return -1;
        int64_t end = start + (int64_t) len_1;
        if (end - first >= TM_SKETCH_MAX_BINS || end > self->index_max)
            return -1;
        for (int64_t i = start; i <= end; i++) {
            uint64_t n;
            if (s_get_varint (r, &n) != 0 || n == 0 || n > UINT64_MAX - total)
                return -1;
            total += n;
            if (store)
                s_store_put (store, plan, i, n);
        }
        next = end + 1;
    }
    *first_p = first;
    *last_p = next - 1;
    *total_p = total;
    return 0;
}

//  Read a store into self, checking everything first; 0 or -1.
static int
s_decode_store (tm_sketch_t *self, s_reader_t *r, s_store_t *store)
{
    s_reader_t check = *r;
    int64_t first, last;
    uint64_t total;
    if (s_get_store (self, &check, NULL, NULL, &first, &last, &total) != 0)
        return -1;
    if (total > 0) {
        s_plan_t plan;
        if (s_store_plan (store, first, last, &plan) != 0)
            return -1;
        s_store_apply (store, &plan);
        if (s_get_store (self, r, store, &plan, &first, &last, &total) != 0)
            assert (false);   //  The same bytes passed a moment ago
    }
    *r = check;
    return 0;
}

tm_sketch_t *
tm_sketch_decode (const uint8_t *data, size_t size)
{
    if (!data || size < S_HEADER_SIZE || data[0] != S_MAGIC || data[1] != S_VERSION)
        return NULL;
    s_reader_t r = {data + 2, data + size};
    double alpha;
    if (s_get_double (&r, &alpha) != 0)
        return NULL;
    tm_sketch_t *self = tm_sketch_new (alpha);   //  Refuses NaN and out of range
    if (!self)
        return NULL;
    if (s_get_varint (&r, &self->zero_count) != 0
        || s_decode_store (self, &r, &self->neg) != 0
        || s_decode_store (self, &r, &self->pos) != 0)
        goto refused;
    uint64_t count = self->zero_count;
    if (self->neg.total > UINT64_MAX - count)
        goto refused;
    count += self->neg.total;
    if (self->pos.total > UINT64_MAX - count)
        goto refused;
    count += self->pos.total;
    if (count > 0) {
        double min, max;
        if (s_get_double (&r, &min) != 0 || s_get_double (&r, &max) != 0)
            goto refused;
        if (!isfinite (min) || !isfinite (max) || min > max)
            goto refused;
        //  min and max must be of the lowest and highest non-empty kind,
        //  as they are in any sketch built by adding values.
        int lowest = self->neg.total? -1: self->zero_count? 0: 1;
        int highest = self->pos.total? 1: self->zero_count? 0: -1;
        if (s_class (min) != lowest || s_class (max) != highest)
            goto refused;
        self->min = min;
        self->max = max;
    }
    self->count = count;
    if (r.pos != r.end)
        goto refused;
    return self;

refused:
    tm_sketch_destroy (&self);
    return NULL;
}
