/*  tm_derived - a twin's derived properties, computed from its latest values  */
#include "tm_derived.h"

#include <stdlib.h>
#include <string.h>

#define S_MAX_NAMES 256                //  Distinct names read by one model's expressions

//  One model version's derived properties, compiled.
typedef struct s_entry_t {
    struct s_entry_t *next;
    const tm_model_t *model;       //  Borrowed: valid while the registry generation holds
    uint32_t nderived;
    tm_expr_t **exprs;             //  One per derived property, model order; owned
    char *names[S_MAX_NAMES];      //  Identifiers read, by slot; owned
    int derived_of[S_MAX_NAMES];   //  Slot -> derived index, or -1 for a series
    size_t nnames;
} s_entry_t;

struct _tm_derived_t {
    tm_twins_t *twins;             //  Borrowed
    const tm_models_t *models;     //  Registry the entries were built from
    uint64_t generation;           //  Its generation then
    s_entry_t *entries;            //  Owned
    tm_derived_series_fn *series;  //  Other series (a parent's aggregates), NULL: none
    void *series_arg;
};

static void
s_entry_destroy (s_entry_t *e)
{
    for (uint32_t i = 0; i < e->nderived; i++)
        tm_expr_destroy (&e->exprs[i]);
    free (e->exprs);
    for (size_t i = 0; i < e->nnames; i++)
        free (e->names[i]);
    free (e);
}

static void
s_clear (tm_derived_t *self)
{
    while (self->entries) {
        s_entry_t *next = self->entries->next;
        s_entry_destroy (self->entries);
        self->entries = next;
    }
}

tm_derived_t *
tm_derived_new (tm_twins_t *twins)
{
    tm_derived_t *self = calloc (1, sizeof *self);
    if (self)
        self->twins = twins;
    return self;
}

void
tm_derived_set_series (tm_derived_t *self, tm_derived_series_fn *fn, void *arg)
{
    self->series = fn;
    self->series_arg = arg;
}

void
tm_derived_destroy (tm_derived_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_clear (*self_p);
    free (*self_p);
    *self_p = NULL;
}

static int
s_resolve (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    s_entry_t *e = (s_entry_t *) user;
    (void) len;
    size_t i = 0;
    while (i < e->nnames && strcmp (e->names[i], name))
        i++;
    if (i == e->nnames) {
        if (e->nnames == S_MAX_NAMES || !(e->names[i] = strdup (name)))
            return -1;
        e->derived_of[i] = -1;
        const tm_model_derived_t *d = tm_model_derived_find (e->model, name);
        if (d)
            e->derived_of[i] = (int) (d - e->model->derived);
        e->nnames++;
    }
    out->slot = (uint32_t) i;
    out->type = TM_EXPR_NUMBER;
    return 0;
}

static s_entry_t *
s_entry (tm_derived_t *self, const tm_models_t *models, const tm_twin_t *twin)
{
    if (!models || !twin->model)
        return NULL;
    if (models != self->models || tm_models_generation (models) != self->generation) {
        s_clear (self);
        self->models = models;
        self->generation = tm_models_generation (models);
    }
    const tm_model_t *m = tm_models_find (models, twin->model, tm_twins_name_len (twin->model));
    if (!m || m->nderived == 0)
        return NULL;
    for (s_entry_t *e = self->entries; e; e = e->next)
        if (e->model == m)
            return e;
    s_entry_t *e = calloc (1, sizeof *e);
    if (!e)
        return NULL;
    e->model = m;
    e->exprs = calloc (m->nderived, sizeof *e->exprs);
    e->nderived = m->nderived;
    tm_expr_options_t opts = {.resolve = s_resolve, .user = e, .expect = TM_EXPR_NUMBER};
    for (uint32_t i = 0; e->exprs && i < m->nderived; i++)
        //  The model parser compiled these already; a failure here leaves
        //  the property without a value rather than the worker without a twin.
        e->exprs[i] = tm_expr_compile (m->derived[i].expression, &opts, NULL);
    if (!e->exprs) {
        s_entry_destroy (e);
        return NULL;
    }
    e->next = self->entries;
    self->entries = e;
    return e;
}

//  Compute derived properties 0 .. upto of twin into results.
static void
s_compute (tm_derived_t *self, s_entry_t *e, const tm_twin_t *twin, uint32_t upto,
           tm_expr_value_t *results)
{
    tm_expr_value_t values[S_MAX_NAMES];
    for (size_t k = 0; k < e->nnames; k++) {
        values[k] = tm_expr_null ();
        if (e->derived_of[k] >= 0)
            continue;
        const char *interned = tm_twins_name_find (self->twins, e->names[k], strlen (e->names[k]));
        const tm_prop_t *p = interned? tm_twins_prop (twin, interned): NULL;
        if (p && p->count)
            values[k] = tm_expr_number (p->an.value);
        double v;
        if (values[k].type == TM_EXPR_NULL && self->series
            && self->series (self->series_arg, twin, e->names[k], &v))
            values[k] = tm_expr_number (v);
    }
    for (uint32_t i = 0; i <= upto && i < e->nderived; i++) {
        results[i] = tm_expr_null ();
        if (e->exprs[i])
            tm_expr_eval (e->exprs[i], values, e->nnames, &results[i]);
        for (size_t k = 0; k < e->nnames; k++)
            if (e->derived_of[k] == (int) i)
                values[k] = results[i];
    }
}

bool
tm_derived_get (tm_derived_t *self, const tm_models_t *models, const tm_twin_t *twin,
                const char *name, tm_expr_value_t *out)
{
    s_entry_t *e = s_entry (self, models, twin);
    const tm_model_derived_t *d = e? tm_model_derived_find (e->model, name): NULL;
    if (!d)
        return false;
    tm_expr_value_t results[TM_MODEL_MAX_DERIVED];
    uint32_t index = (uint32_t) (d - e->model->derived);
    s_compute (self, e, twin, index, results);
    *out = results[index];
    return true;
}

size_t
tm_derived_all (tm_derived_t *self, const tm_models_t *models, const tm_twin_t *twin,
                const char **names, tm_expr_value_t *values, size_t max)
{
    s_entry_t *e = s_entry (self, models, twin);
    if (!e)
        return 0;
    tm_expr_value_t results[TM_MODEL_MAX_DERIVED];
    s_compute (self, e, twin, e->nderived - 1, results);
    size_t n = 0;
    for (uint32_t i = 0; i < e->nderived && n < max; i++, n++) {
        names[n] = e->model->derived[i].name;
        values[n] = results[i];
    }
    return n;
}
