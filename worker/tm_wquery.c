/*  tm_wquery - a query plan evaluated over the worker's twins  */
#include "tm_wquery.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S_AHEAD 8                      //  Slots between a prefetch and its use

typedef enum {
    S_COL_NULL = 0,                //  Nothing on this worker has the name
    S_COL_ENTITY,
    S_COL_MODEL,
    S_COL_STATUS,
    S_COL_STALE,
    S_COL_ANOMALOUS,
    S_COL_CONFIDENCE,
    S_COL_UPDATED,
    S_COL_PARENT,
    S_COL_NAME,                    //  A property's latest value, else an attribute
    S_COL_FIELD                    //  PROPERTY.FIELD
} s_kind_t;

typedef enum {
    S_F_VALUE = 0, S_F_TS, S_F_COUNT, S_F_MEAN, S_F_STDDEV, S_F_MIN, S_F_MAX, S_F_EWMA,
    S_F_SCORE, S_F_ANOMALOUS, S_F_OUT_OF_RANGE, S_F_QUALITY
} s_field_t;

static const char *s_field_names[] = {
    "value", "ts", "count", "mean", "stddev", "min", "max", "ewma", "score", "anomalous",
    "out_of_range", "quality"
};

typedef struct {
    s_kind_t kind;                 //  What fills the column
    s_field_t field;               //  S_COL_FIELD: which analytics field
    const char *interned;          //  S_COL_NAME / S_COL_FIELD: the worker's name
    const char *name;              //  The column's name as the plan gives it
    bool has_default;              //  Some model gives an attribute of this name a default
    bool has_derived;              //  Some model has a derived property of this name
} s_col_t;

static bool
s_any_derived (const tm_models_t *models, const char *name)
{
    size_t n = models? tm_models_size (models): 0;
    for (size_t i = 0; i < n; i++)
        if (tm_model_derived_find (tm_models_at (models, i), name))
            return true;
    return false;
}

//  True if any model in the registry declares a default for the attribute:
//  otherwise a twin without the attribute reads null with no model lookup.
static bool
s_any_default (const tm_models_t *models, const char *name)
{
    size_t n = models? tm_models_size (models): 0;
    for (size_t i = 0; i < n; i++) {
        const tm_model_attribute_t *a = tm_model_attribute_find (tm_models_at (models, i), name);
        if (a && a->dflt.set)
            return true;
    }
    return false;
}

static s_col_t
s_resolve (tm_twins_t *twins, const char *name)
{
    s_col_t c = {.kind = S_COL_NULL, .name = name};
    static const struct {
        const char *name;
        s_kind_t kind;
    } builtins[] = {
        {"entity", S_COL_ENTITY}, {"model", S_COL_MODEL}, {"status", S_COL_STATUS},
        {"stale", S_COL_STALE}, {"anomalous", S_COL_ANOMALOUS},
        {"confidence", S_COL_CONFIDENCE}, {"updated", S_COL_UPDATED},
        {"parent", S_COL_PARENT},
    };
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (strcmp (name, builtins[i].name) == 0) {
            c.kind = builtins[i].kind;
            return c;
        }
    const char *dot = strchr (name, '.');
    if (dot) {
        for (size_t f = 0; f < sizeof s_field_names / sizeof s_field_names[0]; f++)
            if (strcmp (dot + 1, s_field_names[f]) == 0) {
                c.interned = tm_twins_name_find (twins, name, (size_t) (dot - name));
                c.kind = c.interned? S_COL_FIELD: S_COL_NULL;
                c.field = (s_field_t) f;
                return c;
            }
        return c;
    }
    c.interned = tm_twins_name_find (twins, name, strlen (name));
    //  A name no twin here ever used may still be an attribute with a
    //  model default: S_COL_NAME looks the default up when a twin lacks it.
    c.kind = S_COL_NAME;
    return c;
}

//  A model attribute's default as a value; null if it has none. Strings
//  borrow the model's memory, alive for the whole scan.
static tm_expr_value_t
s_default (const tm_model_t *model, const char *name)
{
    const tm_model_attribute_t *a = model? tm_model_attribute_find (model, name): NULL;
    if (!a || !a->dflt.set)
        return tm_expr_null ();
    switch (a->type) {
        case TM_MODEL_ATTR_STRING:
            return tm_expr_string (a->dflt.string, (uint32_t) strlen (a->dflt.string));
        case TM_MODEL_ATTR_NUMBER:
            return tm_expr_number (a->dflt.number);
        case TM_MODEL_ATTR_LOCATION:
            return tm_expr_location (a->dflt.lat, a->dflt.lon);
        default:
            return tm_expr_null ();
    }
}

static const tm_prop_t *
s_prop (const tm_twin_t *t, const char *interned)
{
    for (uint16_t i = 0; i < t->nprops; i++)
        if (t->props[i].name == interned)
            return &t->props[i];
    return NULL;
}

typedef struct {
    tm_twins_t *twins;
    const tm_models_t *models;
    tm_derived_t *derived;         //  NULL: no derived properties
    const tm_model_t *model;       //  Model of the twin being filled (looked up lazily)
    bool model_looked;
    int64_t now_ms;
} s_ctx_t;

static const tm_model_t *
s_model (s_ctx_t *ctx, const tm_twin_t *t)
{
    if (!ctx->model_looked) {
        ctx->model_looked = true;
        ctx->model = ctx->models && t->model?
                     tm_models_find (ctx->models, t->model, tm_twins_name_len (t->model)): NULL;
    }
    return ctx->model;
}

static tm_expr_value_t
s_field (s_ctx_t *ctx, const tm_twin_t *t, const tm_prop_t *p, s_field_t f)
{
    const tm_analytics_t *a = &p->an;
    switch (f) {
        case S_F_VALUE: return tm_expr_number (a->value);
        case S_F_TS: return tm_expr_number ((double) a->ts_ms);
        case S_F_COUNT: return tm_expr_number ((double) p->count);
        case S_F_MEAN: return a->count? tm_expr_number (a->mean): tm_expr_null ();
        case S_F_STDDEV: return a->count > 1? tm_expr_number (tm_analytics_stddev (a)): tm_expr_null ();
        case S_F_MIN: return a->count? tm_expr_number (a->min): tm_expr_null ();
        case S_F_MAX: return a->count? tm_expr_number (a->max): tm_expr_null ();
        case S_F_EWMA: return a->count? tm_expr_number (a->ewma): tm_expr_null ();
        case S_F_SCORE: return tm_expr_number (tm_analytics_score (a));
        case S_F_QUALITY: {
            const char *q = tm_model_quality_name ((tm_model_quality_t) p->quality);
            return tm_expr_string (q, (uint32_t) strlen (q));
        }
        case S_F_ANOMALOUS:
        case S_F_OUT_OF_RANGE: {
            unsigned flags = tm_analytics_flags (a, tm_twins_settings (ctx->twins, t, p));
            return tm_expr_bool ((flags & (f == S_F_ANOMALOUS? TM_ANALYTICS_ANOMALOUS:
                                           TM_ANALYTICS_OUT_OF_RANGE)) != 0);
        }
    }
    return tm_expr_null ();
}

static tm_expr_value_t
s_fill (s_ctx_t *ctx, const s_col_t *c, const tm_twin_t *t)
{
    switch (c->kind) {
        case S_COL_NULL:
            return tm_expr_null ();
        case S_COL_ENTITY:
            return tm_expr_string (t->entity, t->entity_len);
        case S_COL_MODEL:
            return t->model? tm_expr_string (t->model, (uint32_t) tm_twins_name_len (t->model)):
                             tm_expr_string (TM_MODEL_GENERIC, sizeof TM_MODEL_GENERIC - 1);
        case S_COL_STATUS: {
            const char *s = tm_analytics_sync_state_name (t->sync.state);
            return tm_expr_string (s, (uint32_t) strlen (s));
        }
        case S_COL_STALE:
            return tm_expr_bool (t->sync.state == TM_SYNC_STALE);
        case S_COL_ANOMALOUS:
            for (uint16_t i = 0; i < t->nprops; i++) {
                const tm_prop_t *p = &t->props[i];
                unsigned flags = tm_analytics_flags (&p->an, tm_twins_settings (ctx->twins, t, p));
                if (flags & TM_ANALYTICS_ANOMALOUS)
                    return tm_expr_bool (true);
            }
            return tm_expr_bool (false);
        case S_COL_CONFIDENCE:
            return tm_expr_number (tm_analytics_sync_confidence (&t->sync, ctx->now_ms));
        case S_COL_UPDATED: {
            int64_t newest = 0;
            for (uint16_t i = 0; i < t->nprops; i++)
                if (t->props[i].an.ts_ms > newest)
                    newest = t->props[i].an.ts_ms;
            return newest? tm_expr_number ((double) newest): tm_expr_null ();
        }
        case S_COL_PARENT: {
            const tm_model_t *model = s_model (ctx, t);
            const tm_model_relationship_t *rel = model? tm_model_parent (model): NULL;
            if (!rel)
                return tm_expr_null ();
            const char *interned = tm_twins_name_find (ctx->twins, rel->attribute,
                                                       strlen (rel->attribute));
            const tm_attr_t *a = interned? tm_twins_attr (t, interned): NULL;
            return a? tm_attr_value (a): s_default (s_model (ctx, t), rel->attribute);
        }
        case S_COL_NAME: {
            if (c->interned) {
                const tm_prop_t *p = s_prop (t, c->interned);
                if (p && p->count)
                    return tm_expr_number (p->an.value);
                const tm_attr_t *a = tm_twins_attr (t, c->interned);
                if (a)
                    return tm_attr_value (a);
            }
            tm_expr_value_t v;
            if (c->has_derived && ctx->derived
                && tm_derived_get (ctx->derived, ctx->models, t, c->name, &v))
                return v;
            return c->has_default? s_default (s_model (ctx, t), c->name): tm_expr_null ();
        }
        case S_COL_FIELD: {
            const tm_prop_t *p = s_prop (t, c->interned);
            return p && p->count? s_field (ctx, t, p, c->field): tm_expr_null ();
        }
    }
    return tm_expr_null ();
}

long
tm_wquery_scan (tm_twins_t *twins, const tm_models_t *models, tm_derived_t *derived,
                const tm_query_t *plan, const uint32_t *shards, size_t nshards,
                int64_t now_ms, tm_qpartial_t *partial)
{
    size_t ncols = tm_query_columns (plan);
    s_col_t *cols = calloc (ncols? ncols: 1, sizeof *cols);
    tm_expr_value_t *values = calloc (ncols? ncols: 1, sizeof *values);
    if (!cols || !values) {
        free (cols);
        free (values);
        return -1;
    }
    for (size_t i = 0; i < ncols; i++) {
        cols[i] = s_resolve (twins, tm_query_column_name (plan, i));
        cols[i].has_default = cols[i].kind == S_COL_NAME && s_any_default (models, cols[i].name);
        cols[i].has_derived = cols[i].kind == S_COL_NAME && s_any_derived (models, cols[i].name);
    }
    s_ctx_t ctx = {.twins = twins, .models = models, .derived = derived, .now_ms = now_ms};
    long scanned = 0;
    //  Walk the table's slot array, not the shards' lists: the array is
    //  sequential, so the twin S_AHEAD slots on and its properties and
    //  attributes can be prefetched while this one is evaluated (a list
    //  walk waits for each twin's memory in turn; measured: most of a
    //  scan's time was those waits). The shards asked for are a bitmap.
    uint8_t *want = calloc (TM_SHARDMAP_MAX_SHARDS / 8, 1);
    if (!want) {
        free (cols);
        free (values);
        return -1;
    }
    for (size_t s = 0; s < nshards; s++)
        if (shards[s] < TM_SHARDMAP_MAX_SHARDS)
            want[shards[s] >> 3] |= (uint8_t) (1u << (shards[s] & 7));
    size_t nslots;
    tm_twin_t *const *slots = tm_twins_slots (twins, &nslots);
    for (size_t i = 0; i < nslots; i++) {
        if (i + 2 * S_AHEAD < nslots && slots[i + 2 * S_AHEAD])
            __builtin_prefetch (slots[i + 2 * S_AHEAD]);
        if (i + S_AHEAD < nslots && slots[i + S_AHEAD]) {
            __builtin_prefetch (slots[i + S_AHEAD]->props);
            __builtin_prefetch (slots[i + S_AHEAD]->attrs);
        }
        const tm_twin_t *t = slots[i];
        if (!t || !(want[t->shard >> 3] & (1u << (t->shard & 7))))
            continue;
        ctx.model_looked = false;
        for (size_t c = 0; c < ncols; c++)
            values[c] = s_fill (&ctx, &cols[c], t);
        tm_qpartial_feed (partial, values, ncols);
        scanned++;
    }
    free (want);
    free (cols);
    free (values);
    return scanned;
}
