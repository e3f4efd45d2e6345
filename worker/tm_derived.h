/*  tm_derived - a twin's derived properties, computed from its latest values

    A model's derived property (`pm_coarse = pm10 - pm25`) is an expression
    in the query language over the twin's series (docs/models.md). It is
    computed when read (by a query or a TWIN_GET), from the latest values
    at that moment, never stored: a reading costs nothing more, and a value
    can never be out of date with its inputs. The expressions are compiled
    once per model version (the model parser checked them at load) and
    evaluated without allocation.

    Not thread-safe: the worker's apply thread owns it, with the twins.
*/
#ifndef TM_DERIVED_H_INCLUDED
#define TM_DERIVED_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "tm_expr.h"
#include "tm_model.h"
#include "tm_twins.h"

typedef struct _tm_derived_t tm_derived_t;

//  New cache of compiled expressions over twins (borrowed: outlives it).
tm_derived_t *tm_derived_new (tm_twins_t *twins);

//  Destroy; nulls the pointer.
void tm_derived_destroy (tm_derived_t **self_p);

//  A source of series that are not the twin's properties: a parent's
//  aggregate series (`occupied_mean`, docs/hierarchy.md). Returns true
//  with *value if it has one for the name.
typedef bool (tm_derived_series_fn) (void *arg, const tm_twin_t *twin, const char *name,
                                     double *value);

//  Read names the twin's properties lack from fn (NULL: none).
void tm_derived_set_series (tm_derived_t *self, tm_derived_series_fn *fn, void *arg);

//  The value of twin's derived property name under its model in models.
//  Returns false if the twin's model is not loaded or defines no derived
//  property of that name; true with *out (null when an input is missing
//  or the result is not a finite number).
bool tm_derived_get (tm_derived_t *self, const tm_models_t *models, const tm_twin_t *twin,
                     const char *name, tm_expr_value_t *out);

//  Every derived property of the twin's model, in model order: names[i]
//  (borrowed from the model) and values[i], at most max. Returns how many.
size_t tm_derived_all (tm_derived_t *self, const tm_models_t *models, const tm_twin_t *twin,
                       const char **names, tm_expr_value_t *values, size_t max);

#endif
