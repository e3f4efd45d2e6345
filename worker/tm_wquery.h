/*  tm_wquery - a query plan evaluated over the worker's twins

    The broker scatters a plan (common/tm_query) to every worker; this is
    the worker's half: resolve the plan's columns once against the
    worker's own names (properties and attributes are interned, so a
    column is a pointer compared per twin, not a string), walk the twins of
    the shards asked for, fill each twin's column values and feed them to
    a partial (common/tm_qexec). It runs on the apply thread, between
    drains: a query sees each twin in one state, never half-applied, and
    ingest waits for the scan (a million twins take tens of milliseconds;
    bench_query measures it).
*/
#ifndef TM_WQUERY_H_INCLUDED
#define TM_WQUERY_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "tm_derived.h"
#include "tm_model.h"
#include "tm_qexec.h"
#include "tm_query.h"
#include "tm_twins.h"

typedef struct _tm_wquery_t tm_wquery_t;

//  New columnar scanner over twins (borrowed: it must outlive the scanner).
tm_wquery_t *tm_wquery_new (tm_twins_t *twins);

//  Destroy; accepts NULL, nulls the pointer.
void tm_wquery_destroy (tm_wquery_t **self_p);

//  Feed every twin of the given shards to partial (made for plan), from
//  the scanner's columns, caught up first with the twins that changed.
//  models may be NULL (no attribute defaults, parents or derived
//  properties); derived computes derived properties (NULL: none). now_ms
//  is the worker's clock for confidence. Returns the twins scanned, or -1
//  on allocation failure. The partial ends up as tm_wquery_scan_rows
//  would leave it, but for the order in which twins are fed (sums may
//  differ in their last bits).
long tm_wquery_scan (tm_wquery_t *self, const tm_models_t *models, tm_derived_t *derived,
                     const tm_query_t *plan, const uint32_t *shards, size_t nshards,
                     int64_t now_ms, tm_qpartial_t *partial);

//  The same, a twin at a time straight from the twins, with no columns:
//  the reference the columnar scan is tested against, and its fallback
//  when a column cannot be allocated.
long tm_wquery_scan_rows (tm_twins_t *twins, const tm_models_t *models, tm_derived_t *derived,
                          const tm_query_t *plan, const uint32_t *shards, size_t nshards,
                          int64_t now_ms, tm_qpartial_t *partial);

//  Columns kept between scans, and (bytes, may be NULL) the memory they and
//  the per-row arrays hold.
size_t tm_wquery_cached (tm_wquery_t *self, size_t *bytes);

//  Cells filled since the scanner was made: what catching up cost (tests).
uint64_t tm_wquery_filled (tm_wquery_t *self);

#endif
