/*  tm_query - the twin query language: text to plan, plan to bytes

    A query (docs/queries.md is the reference) reads like SQL over one
    table, the twins:

        SELECT district, count(*), avg(pm25), p90(pm25)
        FROM twins
        WHERE model = 'air_station' AND pm25 > 35
              AND within(location, 45.4642, 9.19, 2000)
        GROUP BY district ORDER BY avg(pm25) DESC LIMIT 10
        AT SITES (milan, turin)

    The broker parses it once (tm_query_parse). What the workers must do
    per twin is the plan: the columns to fill, the WHERE filter, the group
    keys and the aggregates' arguments (or, for a query without
    aggregates, the output expressions and the ORDER BY keys, with LIMIT
    pushed down). It travels as a QueryPlan protobuf; a worker rebuilds it
    with tm_query_plan_decode, checking everything, since the bytes come
    from the network. What happens after the merge (expressions over
    aggregates such as `max(x) - min(x)`, ORDER BY of groups, LIMIT,
    column titles) stays in the broker's parsed query.

    Every expression is a tm_expr (one evaluator for query filters and
    model-derived properties). Identifiers name columns that a worker
    fills per twin: a property's latest value (`pm25`), an attribute
    (`district`, `location`), a built-in (`entity`, `model`, `status`,
    `stale`, `anomalous`, `confidence`, `updated`, `parent`) or a field of
    a property's analytics (`pm25.mean`, `pm25.anomalous`, ...); see
    tm_query_builtin_type for the list and types. Aggregates are taken by
    tm_expr's call hook, so they may sit inside expressions.

    Errors name the byte offset, line and column and what was expected
    ("at column 31: expected FROM, found 'WHERE'"). Hostile text and plan
    bytes never abort: every list has a limit below.
*/
#ifndef TM_QUERY_H_INCLUDED
#define TM_QUERY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm_expr.h"

#define TM_QUERY_MAX_TEXT 65536        //  Bytes of query text
#define TM_QUERY_MAX_COLUMNS 256       //  Distinct identifiers a query reads
#define TM_QUERY_MAX_SELECT 64         //  Output columns
#define TM_QUERY_MAX_AGGREGATES 64     //  Distinct aggregates
#define TM_QUERY_MAX_GROUP_KEYS 16     //  GROUP BY expressions
#define TM_QUERY_MAX_ORDER 8           //  ORDER BY keys
#define TM_QUERY_MAX_SITES 16          //  Sites named by AT SITES
#define TM_QUERY_MAX_LIMIT 100000      //  Largest LIMIT; also the cap on rows and groups
#define TM_QUERY_MAX_PLAN (1 << 22)    //  Bytes of an encoded plan

//  Aggregate functions (QueryAggregate.func).
typedef enum {
    TM_QUERY_AGG_COUNT = 1,            //  count(*) or count(expr): non-null values
    TM_QUERY_AGG_SUM = 2,              //  sum of numbers
    TM_QUERY_AGG_AVG = 3,              //  sum / count of numbers
    TM_QUERY_AGG_MIN = 4,              //  smallest number
    TM_QUERY_AGG_MAX = 5,              //  largest number
    TM_QUERY_AGG_QUANTILE = 6          //  p50 / p90 / p99 (q), from tm_sketch
} tm_query_agg_t;

typedef struct _tm_query_t tm_query_t;

//  Parse and compile a query (NUL-terminated). Returns it, or NULL with
//  *err filled (code TM_EXPR_E_*, offset/line/column into text, message).
tm_query_t *tm_query_parse (const char *text, tm_expr_error_t *err);

//  Encode the workers' part as a QueryPlan protobuf. Returns a new buffer
//  (caller frees with free) with *size, or NULL.
uint8_t *tm_query_plan_encode (const tm_query_t *self, size_t *size);

//  Rebuild the workers' part from untrusted QueryPlan bytes. The result
//  serves tm_qpartial (feed, encode, merge) but has no final phase: it
//  cannot make a tm_qresult. NULL with *err on anything malformed.
tm_query_t *tm_query_plan_decode (const uint8_t *data, size_t size, tm_expr_error_t *err);

//  Destroy; accepts NULL, nulls the pointer.
void tm_query_destroy (tm_query_t **self_p);

//  The query text as given (parse) or as carried by the plan (decode).
const char *tm_query_text (const tm_query_t *self);

//  Columns a worker fills per twin, in slot order: values[i] of
//  tm_qpartial_feed is column i. Names are NUL-terminated, borrowed.
size_t tm_query_columns (const tm_query_t *self);
const char *tm_query_column_name (const tm_query_t *self, size_t index);
tm_expr_type_t tm_query_column_type (const tm_query_t *self, size_t index);

//  Built-in column names and their types: entity, model, status
//  (initializing | synchronized | stale | error), parent (strings); stale,
//  anomalous (any property anomalous now) (booleans); confidence (0..1),
//  updated (ms of the newest reading) (numbers); and PROPERTY.FIELD with
//  FIELD one of value, ts, count, mean, stddev, min, max, ewma, score
//  (numbers), anomalous, out_of_range (booleans) or quality (the latest
//  reading's class: good, out_of_range, invalid_type, unknown_property,
//  unmodelled; docs/models.md). Returns the type, or
//  TM_EXPR_ANY for any other name (a property or attribute).
tm_expr_type_t tm_query_builtin_type (const char *name);

//  True for a query with aggregates or GROUP BY (groups), false for rows.
bool tm_query_is_aggregate (const tm_query_t *self);

//  The LIMIT (0 = none).
uint32_t tm_query_limit (const tm_query_t *self);

//  Sites: without AT SITES a query is local (0 sites, all false);
//  `AT SITES (a, b)` names them; `AT ALL SITES` sets all (every peer).
size_t tm_query_sites (const tm_query_t *self);
const char *tm_query_site (const tm_query_t *self, size_t index);
bool tm_query_all_sites (const tm_query_t *self);

//  ---------------------------------------------------------------------
//  The parts of a query, for tm_qexec (borrowed from the query; NULL or 0
//  where a part is absent). Expressions of the workers' part read the
//  columns (tm_query_columns); those of the final phase read the final
//  slots: the GROUP BY keys (0 .. keys-1), then the aggregates.

//  The WHERE filter, or NULL for every twin.
const tm_expr_t *tm_query_where (const tm_query_t *self);

//  GROUP BY keys.
size_t tm_query_group_keys (const tm_query_t *self);
const tm_expr_t *tm_query_group_key (const tm_query_t *self, size_t index);

//  Aggregates: the function, its quantile (*q, for TM_QUERY_AGG_QUANTILE)
//  and its argument (*arg, NULL for count(*)), over the columns.
size_t tm_query_aggregates (const tm_query_t *self);
tm_query_agg_t tm_query_aggregate (const tm_query_t *self, size_t index, double *q,
                                   const tm_expr_t **arg);

//  True if the query has its final phase (it was parsed, not decoded).
bool tm_query_has_final (const tm_query_t *self);

//  Output columns: for a row query, expressions over the columns (parsed
//  or decoded); for a parsed aggregate query, over the final slots (0 for
//  a decoded one). Titles are the AS alias or the canonical text.
size_t tm_query_outputs (const tm_query_t *self);
const tm_expr_t *tm_query_output (const tm_query_t *self, size_t index);
const char *tm_query_output_title (const tm_query_t *self, size_t index);

//  ORDER BY keys, with their direction: over the columns for a row query
//  (pushed down to the workers), over the final slots for an aggregate
//  query (parsed only).
size_t tm_query_order_keys (const tm_query_t *self);
const tm_expr_t *tm_query_order_key (const tm_query_t *self, size_t index, bool *desc);

//  HAVING over the final slots, or NULL.
const tm_expr_t *tm_query_having (const tm_query_t *self);

#endif
