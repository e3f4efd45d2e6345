/*  tm_sketch - mergeable quantile sketch (DDSketch) for query percentiles

    p50/p90/p99 in a query are computed by every worker over its own twins
    and merged by the broker, and by brokers of other sites: a percentile
    needs a summary that merges exactly and stays small whatever the number
    of values. DDSketch (Masson, Rim, Lee, VLDB 2019) keeps counts in
    logarithmic buckets: every quantile it returns is within a relative
    error alpha of a true value of that rank, merging is adding bucket
    counts (so the merged sketch is the one of the union), and the size
    depends on the range of values, not their number. t-digest gives no
    such guarantee after merges, which is why this one.

    Values may be negative, zero or positive (three stores). Memory is
    bounded: past TM_SKETCH_MAX_BINS buckets per sign the lowest-magnitude
    ones collapse into one, which only loses accuracy at the far low end.

    Bytes from tm_sketch_encode travel between processes and sites: the
    decoder treats them as untrusted and is fuzzed.

    Not thread-safe; a sketch belongs to one query partial.
*/
#ifndef TM_SKETCH_H_INCLUDED
#define TM_SKETCH_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#define TM_SKETCH_DEFAULT_ALPHA 0.01   //  1% relative accuracy
#define TM_SKETCH_MAX_BINS 2048        //  Buckets per sign before collapsing

typedef struct _tm_sketch_t tm_sketch_t;

//  New empty sketch with relative accuracy alpha (0 < alpha < 1; anything
//  else gets NULL, and so does alpha below 1e-9, where rounding in the
//  bucket mapping would exceed the accuracy asked for). NULL on allocation
//  failure.
tm_sketch_t *tm_sketch_new (double alpha);

//  Destroy; accepts NULL, nulls the pointer.
void tm_sketch_destroy (tm_sketch_t **self_p);

//  Add a value (NaN and infinities are ignored and return -1); 0 on success,
//  -1 on allocation failure (the value is not counted).
int tm_sketch_add (tm_sketch_t *self, double value);

//  Add every value of other to self (other may be self). Both must have
//  the same alpha, and the total count must fit in 64 bits (else -1, self
//  unchanged); -1 on allocation failure, self unchanged.
int tm_sketch_merge (tm_sketch_t *self, const tm_sketch_t *other);

//  Values added.
uint64_t tm_sketch_count (const tm_sketch_t *self);

//  The q-quantile (0 <= q <= 1): within relative error alpha of the value
//  of 0-based rank floor(q * (count - 1)) in sorted order, always within
//  [lowest, highest], and exactly those for q = 0 and q = 1; NAN if the
//  sketch is empty or q is out of range. Values of magnitude below
//  DBL_MIN count as 0.
double tm_sketch_quantile (const tm_sketch_t *self, double q);

//  The relative accuracy it was made with.
double tm_sketch_alpha (const tm_sketch_t *self);

//  Serialise (compact: versioned, varints, only non-empty runs of buckets;
//  the format is in tm_sketch.c). Returns a new buffer (caller frees with
//  free) and its size, or NULL. Equal sketches give equal bytes.
uint8_t *tm_sketch_encode (const tm_sketch_t *self, size_t *size);

//  Rebuild from untrusted bytes; NULL if they are malformed, not in the
//  one canonical form tm_sketch_encode writes, or over the limits (never
//  aborts, never allocates more than the limits allow). Does not log: the
//  caller knows where the bytes came from.
tm_sketch_t *tm_sketch_decode (const uint8_t *data, size_t size);

#endif
