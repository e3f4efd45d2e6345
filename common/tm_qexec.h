/*  tm_qexec - executing a query plan: partial answers, merges, results

    A worker makes a partial (tm_qpartial_new), feeds it one twin at a time
    (the values of the plan's columns) and sends it encoded. The broker
    makes an empty partial, merges every worker's bytes into it, and turns
    it into a result (tm_qresult_new): final expressions, ORDER BY, LIMIT.
    A site's broker forwarding to a peer sends its merged partial, after
    its export policy (tm_qpartial_suppress_small, _drop_rows, _add_noise).

    A query with aggregates keeps one group per distinct tuple of GROUP BY
    key values (one group with no keys without GROUP BY), each with, per
    aggregate, count, sum, min, max and, for quantiles, a tm_sketch. Merging
    adds counts and sums, keeps the smallest min and largest max, merges
    sketches: the merged partial is the one of all the twins. A query
    without aggregates keeps rows: the output values and the ORDER BY keys;
    with a LIMIT only the best LIMIT rows survive a feed or a merge, which
    is what makes LIMIT cheap to push down.

    SQL's rules where it has one: null and non-numbers are skipped by
    every aggregate but count(*); sum, min, max and avg of no values are
    null; count of nothing is 0; null is a group key like any other value.
    Ordering: numbers < strings (bytewise) < booleans (false < true) <
    locations; nulls last in both directions.

    Partial bytes are untrusted (a worker, a peer site): every merge checks
    them against the query (number of keys and aggregates, types) and
    limits. Past TM_QUERY_MAX_LIMIT groups (or rows without LIMIT), new ones
    are dropped and the partial says truncated.

    Not thread-safe; one partial per query per thread.
*/
#ifndef TM_QEXEC_H_INCLUDED
#define TM_QEXEC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tm_expr.h"
#include "tm_query.h"

typedef struct _tm_qpartial_t tm_qpartial_t;
typedef struct _tm_qresult_t tm_qresult_t;

//  ---------------------------------------------------------------------
//  Partial answers

//  New empty partial for a query (borrowed: it must outlive the partial).
tm_qpartial_t *tm_qpartial_new (const tm_query_t *query);

//  Destroy; accepts NULL, nulls the pointer.
void tm_qpartial_destroy (tm_qpartial_t **self_p);

//  Offer one twin: values[i] is column i (nvalues may be short: missing
//  columns read as null). Strings are copied if kept. Returns true if the
//  twin passed WHERE. Never fails; an allocation failure marks the partial
//  truncated.
bool tm_qpartial_feed (tm_qpartial_t *self, const tm_expr_value_t *values, size_t nvalues);

//  Offer n twins at once, column by column: row i of cols[c] is column c
//  of twin i (tm_expr_col_t; ncols may be short: null past it). skip
//  (NULL: none) flags, non-zero, the twins that are not this query's:
//  they are not counted. The partial ends up exactly as if each twin not
//  skipped were fed in turn with tm_qpartial_feed, in a fraction of the
//  time. Strings are borrowed for the call (copied if kept).
void tm_qpartial_feed_batch (tm_qpartial_t *self, const tm_expr_col_t *cols, size_t ncols,
                             size_t n, const uint8_t *skip);

//  Encode as a QueryPartial protobuf. Returns a new buffer (caller frees
//  with free) with *size, or NULL on allocation failure.
uint8_t *tm_qpartial_encode (const tm_qpartial_t *self, size_t *size);

//  Merge untrusted QueryPartial bytes. 0 on success; -1 if they are
//  malformed or do not fit the query (self unchanged then, err says why).
int tm_qpartial_merge (tm_qpartial_t *self, const uint8_t *data, size_t size, char *err,
                       size_t err_size);

//  Twins fed (or merged in) and twins that passed WHERE.
uint64_t tm_qpartial_scanned (const tm_qpartial_t *self);
uint64_t tm_qpartial_matched (const tm_qpartial_t *self);

//  True if groups or rows were dropped at a limit.
bool tm_qpartial_truncated (const tm_qpartial_t *self);

//  Export policies (federation): drop groups with fewer than min_twins
//  twins (returns how many were dropped); drop every row (an
//  aggregates-only site); add Laplace noise with scale 1/epsilon to counts
//  and twins and sum_bound/epsilon to sums (sum_bound: the largest
//  magnitude one twin may add), from libsodium's generator; min, max and
//  sketches are dropped then (they would leak single values), and so is
//  the exact matched count (it gets the same noise). epsilon must be > 0
//  and finite, else nothing is done.
size_t tm_qpartial_suppress_small (tm_qpartial_t *self, uint64_t min_twins);
void tm_qpartial_drop_rows (tm_qpartial_t *self);
void tm_qpartial_add_noise (tm_qpartial_t *self, double epsilon, double sum_bound);

//  ---------------------------------------------------------------------
//  Results

typedef enum {
    TM_QRESULT_TABLE = 0,              //  Aligned columns for people
    TM_QRESULT_JSON,                   //  One JSON object: columns, rows, and the metadata
    TM_QRESULT_CSV                     //  RFC 4180, a header line then rows
} tm_qresult_format_t;

//  Finish a merged partial of a parsed query (not a decoded plan: NULL
//  then): final expressions, ORDER BY (groups without ORDER BY come in
//  group-key order), LIMIT. NULL on allocation failure, or if merged is
//  not a partial of this query's shape (it may come from another parse
//  of the same text).
tm_qresult_t *tm_qresult_new (const tm_query_t *query, const tm_qpartial_t *merged);

//  Rebuild from untrusted QueryResult bytes (the client side); NULL if
//  malformed, with err filled.
tm_qresult_t *tm_qresult_decode (const uint8_t *data, size_t size, char *err,
                                 size_t err_size);

//  Destroy; accepts NULL, nulls the pointer.
void tm_qresult_destroy (tm_qresult_t **self_p);

//  What the broker adds: shards (total and those with no answer), time,
//  per-site answers, warnings. Strings are copied. 0, or -1 on allocation
//  failure.
int tm_qresult_set_shards (tm_qresult_t *self, uint32_t total, const uint32_t *missing,
                           size_t nmissing);
void tm_qresult_set_elapsed_us (tm_qresult_t *self, uint32_t elapsed_us);
int tm_qresult_add_site (tm_qresult_t *self, const char *site, bool answered,
                         const char *detail, uint64_t matched);
int tm_qresult_add_warning (tm_qresult_t *self, const char *warning);

//  A site's answer with its own result (own may be NULL: no rows then;
//  its rows are copied if its columns match) and how many of the site's
//  own shards did not answer (any makes the result partial). 0, or -1 on
//  allocation failure. tm_qresult_add_site is this with no own result.
int tm_qresult_add_site_answer (tm_qresult_t *self, const char *site, bool answered,
                                const char *detail, uint64_t matched, const tm_qresult_t *own,
                                uint32_t shards_missing);

//  Encode as a QueryResult protobuf; new buffer (caller frees) or NULL.
uint8_t *tm_qresult_encode (const tm_qresult_t *self, size_t *size);

//  The table: column titles (the select items as written canonically, or
//  their AS aliases), rows, cells (strings borrowed from the result).
size_t tm_qresult_columns (const tm_qresult_t *self);
const char *tm_qresult_column (const tm_qresult_t *self, size_t index);
size_t tm_qresult_rows (const tm_qresult_t *self);
tm_expr_value_t tm_qresult_cell (const tm_qresult_t *self, size_t row, size_t column);

//  Metadata.
uint64_t tm_qresult_scanned (const tm_qresult_t *self);
uint64_t tm_qresult_matched (const tm_qresult_t *self);
bool tm_qresult_truncated (const tm_qresult_t *self);
bool tm_qresult_partial (const tm_qresult_t *self);    //  Shards or sites missing
uint32_t tm_qresult_shards_total (const tm_qresult_t *self);
size_t tm_qresult_missing (const tm_qresult_t *self, const uint32_t **shards);
uint32_t tm_qresult_elapsed_us (const tm_qresult_t *self);
size_t tm_qresult_warnings (const tm_qresult_t *self);
const char *tm_qresult_warning (const tm_qresult_t *self, size_t index);

//  Sites that answered or were asked (tm_qresult_add_site_answer order):
//  the name (NULL past the end), and optionally whether it answered, its
//  twins matched and its own rows.
size_t tm_qresult_sites (const tm_qresult_t *self);
const char *tm_qresult_site (const tm_qresult_t *self, size_t index, bool *answered,
                             uint64_t *matched, size_t *rows);

//  Print in a format. Table and CSV go with a trailer on err (NULL: none):
//  rows, twins matched/scanned, time, and a loud line when the answer is
//  partial (which shards, which sites). JSON carries all of it in the
//  object. Returns 0, or -1 on a write error.
int tm_qresult_print (const tm_qresult_t *self, tm_qresult_format_t format, FILE *out,
                      FILE *err);

#endif
