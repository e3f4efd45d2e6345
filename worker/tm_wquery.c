/*  tm_wquery - a query plan evaluated over the worker's twins  */
#include "tm_wquery.h"

#include <assert.h>
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

//  A column resolved for a scan: s_resolve plus what the models say.
static s_col_t s_resolve (tm_twins_t *twins, const char *name);
static bool s_any_default (const tm_models_t *models, const char *name);
static bool s_any_derived (const tm_models_t *models, const char *name);

static s_col_t
s_column (tm_twins_t *twins, const tm_models_t *models, const char *name)
{
    s_col_t c = s_resolve (twins, name);
    c.has_default = c.kind == S_COL_NAME && s_any_default (models, name);
    c.has_derived = c.kind == S_COL_NAME && s_any_derived (models, name);
    return c;
}

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
        case S_F_EWMA: return a->count? tm_expr_number (tm_analytics_ewma (a)): tm_expr_null ();
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
                const tm_prop_t *p = tm_twins_prop (t, c->interned);
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
            const tm_prop_t *p = tm_twins_prop (t, c->interned);
            return p && p->count? s_field (ctx, t, p, c->field): tm_expr_null ();
        }
    }
    return tm_expr_null ();
}

long
tm_wquery_scan_rows (tm_twins_t *twins, const tm_models_t *models, tm_derived_t *derived,
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
    for (size_t i = 0; i < ncols; i++)
        cols[i] = s_column (twins, models, tm_query_column_name (plan, i));
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

//  -------------------------------------------------------------------------
//  The columnar scan
//
//  Measured on the twin-at-a-time scan above: about 250-400 ns a twin,
//  most of it waiting for the memory of each twin, its properties and
//  attributes. Here a query column is an array indexed by twin row
//  (tm_twins_rows), filled with s_fill, the very function the row scan
//  uses, so both see the same values; a scan is then one
//  tm_qpartial_feed_batch over dense arrays. A scan is bound by the bytes
//  it reads, so a column is typed while its values allow (tm_expr_col_t):
//  numbers as doubles, strings as ids into a dictionary of their distinct
//  values, locations as lat/lon pairs; a column whose values mix kinds
//  (or whose strings are too many to be worth a dictionary, like entity
//  ids) holds 24-byte values. Columns are kept between queries and caught
//  up from the rows that changed since (tm_twins_changed): ingest pays a
//  flag test per reading, a query pays for the twins that changed. Columns
//  that move with the clock (status, stale, confidence: the sync timers
//  change them without a reading) are filled afresh for each scan.

#define S_MAX_CACHED 16                //  Columns kept between scans
#define S_IDLE_MS (10 * 60 * 1000)     //  A column unused this long is dropped
#define S_MAX_DICT 65536               //  Distinct strings a typed column keeps
#define S_PTR_CACHE 64                 //  String pointer -> id cache entries
#define S_FRESH 3                      //  Clock-bound column kinds
#define S_BUDGET_BYTES ((size_t) 256 << 20)    //  Kept columns, beyond this scan's

//  A column's distinct strings. Entry 0 is null; each other entry owns a
//  copy of its bytes, so its pointer stays valid for the column's life
//  (a twin's own string may be freed when its attribute changes).
typedef struct {
    tm_expr_value_t *entries;      //  ndict values
    uint32_t ndict;
    uint32_t cap;
    uint32_t *index;               //  Open addressing over entries: id + 1, 0 = empty
    uint32_t index_size;           //  Power of two, at least twice ndict
    const char *ptr[S_PTR_CACHE];  //  Recently seen twin string -> its id (checked)
    uint32_t ptr_id[S_PTR_CACHE];
} s_dict_t;

typedef struct {
    char *name;                    //  Column name, owned
    s_col_t col;                   //  As resolved when filled (name borrowed from us)
    tm_expr_col_kind_t kind;       //  TM_EXPR_COL_NULL until a value is seen
    tm_expr_value_t *values;       //  VALUES (strings borrowed from twins, models,
                                   //  static tables or the dictionary)
    double *nums;                  //  NUMBERS: NaN for null
    uint32_t *ids;                 //  STRINGS: into dict
    double *latlon;                //  LOCATIONS: pairs, NaN latitude for null
    s_dict_t dict;
    size_t nrows;                  //  Rows filled
    size_t cap;                    //  Rows the arrays hold
    int64_t used_ms;               //  Last scan that read it (worker clock)
} s_cached_t;

struct _tm_wquery_t {
    tm_twins_t *twins;             //  Borrowed
    s_cached_t *cached[S_MAX_CACHED];
    size_t ncached;
    const tm_models_t *models;     //  Registry the cached columns were filled with
    uint64_t models_gen;           //  Its generation then
    uint16_t *shard;               //  Per row, its twin's shard (fixed for life)
    size_t nshard;                 //  Rows in shard
    size_t shard_cap;
    uint32_t *present;             //  The shards that have rows (a scan that asks for
    size_t npresent;               //  all of them needs no per-row skip flags)
    uint8_t *has_rows;             //  Per shard: in present
    uint8_t *skip;                 //  Per row, for one scan: not asked for
    size_t skip_cap;
    tm_expr_value_t *fresh[S_FRESH];   //  Clock-bound columns of a scan, by s_fresh_index
    size_t fresh_cap;              //  Rows each fresh array holds
    uint64_t filled;               //  Cells filled since made (reports, tests)
};

tm_wquery_t *
tm_wquery_new (tm_twins_t *twins)
{
    tm_wquery_t *self = calloc (1, sizeof *self);
    if (self)
        self->twins = twins;
    return self;
}

static void
s_cached_free (s_cached_t **c_p)
{
    s_cached_t *c = *c_p;
    if (!c)
        return;
    for (uint32_t d = 1; d < c->dict.ndict; d++)
        free ((char *) c->dict.entries[d].str);
    free (c->dict.entries);
    free (c->dict.index);
    free (c->name);
    free (c->values);
    free (c->nums);
    free (c->ids);
    free (c->latlon);
    free (c);
    *c_p = NULL;
}

static void
s_drop_all (tm_wquery_t *self)
{
    for (size_t i = 0; i < self->ncached; i++)
        s_cached_free (&self->cached[i]);
    self->ncached = 0;
}

void
tm_wquery_destroy (tm_wquery_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_wquery_t *self = *self_p;
    s_drop_all (self);
    free (self->shard);
    free (self->present);
    free (self->has_rows);
    free (self->skip);
    for (size_t i = 0; i < S_FRESH; i++)
        free (self->fresh[i]);
    free (self);
    *self_p = NULL;
}

//  Columns whose values move with the clock, not only with readings.
static bool
s_clock_bound (s_kind_t kind)
{
    return kind == S_COL_STATUS || kind == S_COL_STALE || kind == S_COL_CONFIDENCE;
}

//  The array a clock-bound column is filled into: one per kind (a plan
//  names each column once), so a worker holds at most three.
static size_t
s_fresh_index (s_kind_t kind)
{
    return kind == S_COL_STATUS? 0: kind == S_COL_STALE? 1: 2;
}

//  A column that reads null for every twin: no cells needed.
static bool
s_always_null (const s_col_t *c)
{
    return c->kind == S_COL_NULL
           || (c->kind == S_COL_NAME && !c->interned && !c->has_default && !c->has_derived);
}

static bool
s_same_col (const s_col_t *a, const s_col_t *b)
{
    return a->kind == b->kind && a->field == b->field && a->interned == b->interned
           && a->has_default == b->has_default && a->has_derived == b->has_derived;
}

static uint64_t
s_str_hash (const char *s, uint32_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ (uint8_t) s[i]) * 0x100000001b3ULL;
    return h ^ (h >> 31);
}

static int
s_dict_grow_index (s_dict_t *d)
{
    uint32_t size = d->index_size? d->index_size * 2: 64;
    uint32_t *index = calloc (size, sizeof *index);
    if (!index)
        return -1;
    for (uint32_t id = 1; id < d->ndict; id++) {
        uint32_t j = (uint32_t) s_str_hash (d->entries[id].str, d->entries[id].len) & (size - 1);
        while (index[j])
            j = (j + 1) & (size - 1);
        index[j] = id + 1;
    }
    free (d->index);
    d->index = index;
    d->index_size = size;
    return 0;
}

//  The id of a string in the dictionary, added if new; UINT32_MAX when
//  the dictionary is full (the column then holds values instead).
static uint32_t
s_dict_id (s_dict_t *d, const char *str, uint32_t len)
{
    size_t slot = ((uintptr_t) str >> 3) & (S_PTR_CACHE - 1);
    uint32_t id = d->ptr_id[slot];
    if (d->ptr[slot] == str && id && id < d->ndict && d->entries[id].len == len
        && (len == 0 || memcmp (d->entries[id].str, str, len) == 0))
        return id;
    if (!d->ndict) {
        d->entries = malloc (64 * sizeof *d->entries);
        if (!d->entries)
            return UINT32_MAX;
        d->cap = 64;
        d->entries[0] = tm_expr_null ();
        d->ndict = 1;
    }
    if (!d->index && s_dict_grow_index (d) != 0)
        return UINT32_MAX;
    uint64_t h = s_str_hash (str, len);
    uint32_t j = (uint32_t) h & (d->index_size - 1);
    while (d->index[j]) {
        id = d->index[j] - 1;
        if (d->entries[id].len == len && (len == 0 || memcmp (d->entries[id].str, str, len) == 0)) {
            d->ptr[slot] = str;
            d->ptr_id[slot] = id;
            return id;
        }
        j = (j + 1) & (d->index_size - 1);
    }
    if (d->ndict >= S_MAX_DICT)
        return UINT32_MAX;
    if (d->ndict == d->cap) {
        tm_expr_value_t *grown = realloc (d->entries, 2 * d->cap * sizeof *grown);
        if (!grown)
            return UINT32_MAX;
        d->entries = grown;
        d->cap *= 2;
    }
    char *copy = malloc (len + 1);
    if (!copy)
        return UINT32_MAX;
    memcpy (copy, str, len);
    copy[len] = 0;
    id = d->ndict++;
    d->entries[id] = tm_expr_string (copy, len);
    d->index[j] = id + 1;
    if (d->ndict * 2 > d->index_size && s_dict_grow_index (d) != 0) {
        //  Keep the entry: the index is only fuller, probing still ends.
        if (d->ndict + 1 >= d->index_size)
            return UINT32_MAX;
    }
    d->ptr[slot] = str;
    d->ptr_id[slot] = id;
    return id;
}

static tm_expr_col_t s_view (const s_cached_t *c);

//  Row r of a typed column as a value (what tm_expr_col_get reads).
static tm_expr_value_t
s_cell (const s_cached_t *c, size_t r)
{
    if (c->kind == TM_EXPR_COL_VALUES)
        return c->values[r];
    tm_expr_col_t view = s_view (c);
    tm_expr_value_t v;
    tm_expr_col_get (&view, r, &v);
    return v;
}

//  Arrays of the column's kind for at least rows rows; -1 on failure.
static int
s_reserve (s_cached_t *c, size_t rows)
{
    if (rows <= c->cap && (c->kind == TM_EXPR_COL_NULL
                           || c->values || c->nums || c->ids || c->latlon))
        return 0;
    size_t cap = c->cap > rows? c->cap: c->cap? c->cap: 1024;
    while (cap < rows)
        cap *= 2;
    void **arr = NULL;
    size_t size = 0;
    switch (c->kind) {
        case TM_EXPR_COL_VALUES: arr = (void **) &c->values; size = sizeof (tm_expr_value_t); break;
        case TM_EXPR_COL_NUMBERS: arr = (void **) &c->nums; size = sizeof (double); break;
        case TM_EXPR_COL_STRINGS: arr = (void **) &c->ids; size = sizeof (uint32_t); break;
        case TM_EXPR_COL_LOCATIONS: arr = (void **) &c->latlon; size = 2 * sizeof (double); break;
        default: c->cap = cap; return 0;
    }
    void *grown = realloc (*arr, cap * size);
    if (!grown)
        return -1;
    *arr = grown;
    c->cap = cap;
    return 0;
}

//  Turn the column into one of kind (its rows so far null in it, for a
//  column that had seen no value, or their values, for VALUES). -1 on
//  allocation failure.
static int
s_become (s_cached_t *c, tm_expr_col_kind_t kind)
{
    size_t rows = c->cap? c->cap: 1024;
    if (kind == TM_EXPR_COL_VALUES) {
        tm_expr_value_t *values = malloc (rows * sizeof *values);
        if (!values)
            return -1;
        for (size_t r = 0; r < c->nrows; r++)
            values[r] = s_cell (c, r);
        free (c->nums);
        free (c->ids);
        free (c->latlon);
        c->nums = NULL;
        c->ids = NULL;
        c->latlon = NULL;
        //  The dictionary stays: values point into it.
        c->values = values;
        c->kind = kind;
        c->cap = rows;
        return 0;
    }
    assert (c->kind == TM_EXPR_COL_NULL);
    c->kind = kind;
    c->cap = 0;
    if (s_reserve (c, rows) != 0) {
        c->kind = TM_EXPR_COL_NULL;
        return -1;
    }
    for (size_t r = 0; r < c->nrows; r++) {
        if (kind == TM_EXPR_COL_NUMBERS)
            c->nums[r] = NAN;
        else
        if (kind == TM_EXPR_COL_STRINGS)
            c->ids[r] = 0;
        else {
            c->latlon[2 * r] = NAN;
            c->latlon[2 * r + 1] = NAN;
        }
    }
    return 0;
}

//  Store v as row r (r < cap), changing the column's kind if v does not
//  fit it. -1 on allocation failure.
static int
s_put (s_cached_t *c, size_t r, const tm_expr_value_t *v)
{
    if (c->kind == TM_EXPR_COL_NULL) {
        if (v->type == TM_EXPR_NULL)
            return 0;
        tm_expr_col_kind_t kind = v->type == TM_EXPR_NUMBER? TM_EXPR_COL_NUMBERS
                                : v->type == TM_EXPR_STRING? TM_EXPR_COL_STRINGS
                                : v->type == TM_EXPR_LOCATION? TM_EXPR_COL_LOCATIONS
                                : TM_EXPR_COL_VALUES;
        if (s_become (c, kind) != 0)
            return -1;
    }
    switch (c->kind) {
        case TM_EXPR_COL_NUMBERS:
            if (v->type == TM_EXPR_NUMBER || v->type == TM_EXPR_NULL) {
                c->nums[r] = v->type == TM_EXPR_NUMBER? v->num: NAN;
                return 0;
            }
            break;
        case TM_EXPR_COL_STRINGS:
            if (v->type == TM_EXPR_NULL) {
                c->ids[r] = 0;
                return 0;
            }
            if (v->type == TM_EXPR_STRING) {
                uint32_t id = s_dict_id (&c->dict, v->str? v->str: "", v->str? v->len: 0);
                if (id != UINT32_MAX) {
                    c->ids[r] = id;
                    return 0;
                }
            }
            break;
        case TM_EXPR_COL_LOCATIONS:
            if (v->type == TM_EXPR_LOCATION || v->type == TM_EXPR_NULL) {
                c->latlon[2 * r] = v->type == TM_EXPR_LOCATION? v->lat: NAN;
                c->latlon[2 * r + 1] = v->type == TM_EXPR_LOCATION? v->lon: NAN;
                return 0;
            }
            break;
        case TM_EXPR_COL_VALUES:
            c->values[r] = *v;
            return 0;
        default:
            break;
    }
    //  A value of another kind, or one string too many: plain values.
    if (s_become (c, TM_EXPR_COL_VALUES) != 0)
        return -1;
    c->values[r] = *v;
    return 0;
}

//  Fill rows [from, to) of a cached column; -1 on allocation failure.
static int
s_fill_rows (tm_wquery_t *self, s_ctx_t *ctx, s_cached_t *c, tm_twin_t *const *rows,
             size_t from, size_t to)
{
    if (s_reserve (c, to) != 0)
        return -1;
    for (size_t r = from; r < to; r++) {
        ctx->model_looked = false;
        tm_expr_value_t v = s_fill (ctx, &c->col, rows[r]);
        if (s_put (c, r, &v) != 0)
            return -1;
        if (r >= c->nrows)
            c->nrows = r + 1;
    }
    self->filled += to - from;
    return 0;
}

//  Empty a column for a refill from row 0.
static void
s_reset (s_cached_t *c)
{
    free (c->values);
    free (c->nums);
    free (c->ids);
    free (c->latlon);
    c->values = NULL;
    c->nums = NULL;
    c->ids = NULL;
    c->latlon = NULL;
    c->kind = TM_EXPR_COL_NULL;
    c->nrows = 0;
    c->cap = 0;
}

//  Bring the per-row shard array and every cached column up to date with
//  the twins: rows added since, and rows changed since. 0, or -1 on
//  allocation failure (the cache is dropped then: it may be half done).
static int
s_catch_up (tm_wquery_t *self, s_ctx_t *ctx)
{
    size_t nrows;
    tm_twin_t *const *rows = tm_twins_rows (self->twins, &nrows);
    if (nrows > self->shard_cap) {
        size_t cap = self->shard_cap? self->shard_cap: 1024;
        while (cap < nrows)
            cap *= 2;
        uint16_t *grown = realloc (self->shard, cap * sizeof *grown);
        if (!grown)
            return -1;
        self->shard = grown;
        self->shard_cap = cap;
    }
    if (!self->present) {
        self->present = malloc (TM_SHARDMAP_MAX_SHARDS * sizeof *self->present);
        self->has_rows = calloc (TM_SHARDMAP_MAX_SHARDS, 1);
        if (!self->present || !self->has_rows) {
            free (self->present);
            free (self->has_rows);
            self->present = NULL;
            self->has_rows = NULL;
            return -1;
        }
    }
    //  Overflow also means rows moved (twins passivated): every row's shard again.
    bool everything = tm_twins_changed_overflow (self->twins);
    if (everything)
        self->nshard = 0;
    for (size_t r = self->nshard; r < nrows; r++) {
        uint16_t sh = (uint16_t) rows[r]->shard;
        self->shard[r] = sh;
        if (!self->has_rows[sh]) {
            self->has_rows[sh] = 1;
            self->present[self->npresent++] = sh;
        }
    }
    self->nshard = nrows;
    size_t nchanged;
    const uint32_t *changed = tm_twins_changed (self->twins, &nchanged);
    for (size_t i = 0; i < self->ncached; i++) {
        s_cached_t *c = self->cached[i];
        if (everything)
            s_reset (c);
        else
            for (size_t k = 0; k < nchanged; k++) {
                uint32_t r = changed[k];
                if (r < c->nrows) {
                    ctx->model_looked = false;
                    tm_expr_value_t v = s_fill (ctx, &c->col, rows[r]);
                    if (s_put (c, r, &v) != 0) {
                        s_drop_all (self);
                        return -1;
                    }
                }
            }
        self->filled += everything? 0: nchanged;
        if (s_fill_rows (self, ctx, c, rows, c->nrows, nrows) != 0) {
            s_drop_all (self);
            return -1;
        }
    }
    tm_twins_changed_clear (self->twins);
    return 0;
}

//  The cached column for a resolved column, made and filled if new
//  (evicting the least recently used when full); NULL on allocation failure.
static s_cached_t *
s_cached (tm_wquery_t *self, s_ctx_t *ctx, const s_col_t *col)
{
    size_t nrows;
    tm_twin_t *const *rows = tm_twins_rows (self->twins, &nrows);
    for (size_t i = 0; i < self->ncached; i++) {
        s_cached_t *c = self->cached[i];
        if (strcmp (c->name, col->name) == 0) {
            if (s_same_col (&c->col, col))
                return c;
            //  A name first seen since, or a default or derived property
            //  that came with a model: fill it again.
            c->col = *col;
            c->col.name = c->name;
            s_reset (c);
            if (s_fill_rows (self, ctx, c, rows, 0, nrows) != 0) {
                s_cached_free (&self->cached[i]);
                self->cached[i] = self->cached[--self->ncached];
                return NULL;
            }
            return c;
        }
    }
    if (self->ncached == S_MAX_CACHED) {
        //  The least recently used goes, unless this scan reads it (a
        //  query of more than S_MAX_CACHED columns: the caller falls back
        //  to the twin-at-a-time scan).
        size_t lru = SIZE_MAX;
        for (size_t i = 0; i < self->ncached; i++)
            if (self->cached[i]->used_ms < ctx->now_ms
                && (lru == SIZE_MAX || self->cached[i]->used_ms < self->cached[lru]->used_ms))
                lru = i;
        if (lru == SIZE_MAX)
            return NULL;
        s_cached_free (&self->cached[lru]);
        self->cached[lru] = self->cached[--self->ncached];
    }
    s_cached_t *c = calloc (1, sizeof *c);
    if (!c || !(c->name = strdup (col->name))) {
        free (c);
        return NULL;
    }
    c->col = *col;
    c->col.name = c->name;
    if (s_fill_rows (self, ctx, c, rows, 0, nrows) != 0) {
        s_cached_free (&c);
        return NULL;
    }
    self->cached[self->ncached++] = c;
    return c;
}

//  Memory a cached column holds.
static size_t
s_cached_bytes (const s_cached_t *c)
{
    size_t per = c->kind == TM_EXPR_COL_VALUES? sizeof (tm_expr_value_t)
               : c->kind == TM_EXPR_COL_NUMBERS? sizeof (double)
               : c->kind == TM_EXPR_COL_STRINGS? sizeof (uint32_t)
               : c->kind == TM_EXPR_COL_LOCATIONS? 2 * sizeof (double): 0;
    return c->cap * per + c->dict.cap * sizeof (tm_expr_value_t)
           + c->dict.index_size * sizeof (uint32_t);
}

static tm_expr_col_t
s_view (const s_cached_t *c)
{
    tm_expr_col_t v = {.kind = c->kind, .dict = c->dict.entries, .ndict = c->dict.ndict};
    switch (c->kind) {
        case TM_EXPR_COL_VALUES: v.values = c->values; break;
        case TM_EXPR_COL_NUMBERS: v.nums = c->nums; break;
        case TM_EXPR_COL_STRINGS: v.ids = c->ids; break;
        case TM_EXPR_COL_LOCATIONS: v.latlon = c->latlon; break;
        default: break;
    }
    return v;
}

long
tm_wquery_scan (tm_wquery_t *self, const tm_models_t *models, tm_derived_t *derived,
                const tm_query_t *plan, const uint32_t *shards, size_t nshards,
                int64_t now_ms, tm_qpartial_t *partial)
{
    tm_twins_t *twins = self->twins;
    s_ctx_t ctx = {.twins = twins, .models = models, .derived = derived, .now_ms = now_ms};
    uint64_t gen = models? tm_models_generation (models): 0;
    if (models != self->models || gen != self->models_gen) {
        //  Defaults, derived properties and settings may all have changed.
        s_drop_all (self);
        self->models = models;
        self->models_gen = gen;
    }
    //  Unused columns go first, so that a burst of odd queries does not
    //  keep a million-row array each alive for good.
    for (size_t i = 0; i < self->ncached;)
        if (now_ms - self->cached[i]->used_ms > S_IDLE_MS) {
            s_cached_free (&self->cached[i]);
            self->cached[i] = self->cached[--self->ncached];
        }
        else
            i++;
    if (s_catch_up (self, &ctx) != 0)
        return tm_wquery_scan_rows (twins, models, derived, plan, shards, nshards, now_ms,
                                    partial);
    size_t nrows;
    tm_twin_t *const *rows = tm_twins_rows (twins, &nrows);
    size_t ncols = tm_query_columns (plan);
    if (ncols > TM_QUERY_MAX_COLUMNS)
        ncols = TM_QUERY_MAX_COLUMNS;
    tm_expr_col_t view[TM_QUERY_MAX_COLUMNS];
    s_col_t cols[TM_QUERY_MAX_COLUMNS];
    bool fresh = false;
    for (size_t i = 0; i < ncols; i++) {
        cols[i] = s_column (twins, models, tm_query_column_name (plan, i));
        view[i] = (tm_expr_col_t) {.kind = TM_EXPR_COL_NULL};
        if (s_always_null (&cols[i]))
            continue;
        if (s_clock_bound (cols[i].kind)) {
            fresh = true;
            continue;
        }
        s_cached_t *c = s_cached (self, &ctx, &cols[i]);
        if (!c)
            return tm_wquery_scan_rows (twins, models, derived, plan, shards, nshards,
                                        now_ms, partial);
        c->used_ms = now_ms;
    }
    //  Over the budget, the least recently used columns that this scan
    //  does not read go (a million twins' column is 4 to 24 MB).
    for (;;) {
        size_t total = 0, lru = SIZE_MAX;
        for (size_t k = 0; k < self->ncached; k++) {
            total += s_cached_bytes (self->cached[k]);
            if (self->cached[k]->used_ms < now_ms
                && (lru == SIZE_MAX || self->cached[k]->used_ms < self->cached[lru]->used_ms))
                lru = k;
        }
        if (total <= S_BUDGET_BYTES || lru == SIZE_MAX)
            break;
        s_cached_free (&self->cached[lru]);
        self->cached[lru] = self->cached[--self->ncached];
    }
    //  Views only now: making a column may have evicted another.
    for (size_t i = 0; i < ncols; i++)
        for (size_t k = 0; k < self->ncached; k++)
            if (!s_always_null (&cols[i]) && !s_clock_bound (cols[i].kind)
                && strcmp (self->cached[k]->name, cols[i].name) == 0)
                view[i] = s_view (self->cached[k]);
    if (fresh && nrows > self->fresh_cap) {
        for (size_t f = 0; f < S_FRESH; f++) {
            free (self->fresh[f]);
            self->fresh[f] = NULL;
        }
        self->fresh_cap = nrows;
    }
    for (size_t i = 0; fresh && i < ncols; i++) {
        if (!s_clock_bound (cols[i].kind))
            continue;
        size_t f = s_fresh_index (cols[i].kind);
        if (!self->fresh[f] && !(self->fresh[f] = malloc ((self->fresh_cap? self->fresh_cap: 1)
                                                          * sizeof (tm_expr_value_t))))
            return tm_wquery_scan_rows (twins, models, derived, plan, shards, nshards,
                                        now_ms, partial);
        for (size_t r = 0; r < nrows; r++)
            self->fresh[f][r] = s_fill (&ctx, &cols[i], rows[r]);
        view[i] = (tm_expr_col_t) {.kind = TM_EXPR_COL_VALUES, .values = self->fresh[f]};
    }
    //  The shards asked for, as a per-row skip flag.
    if (nrows > self->skip_cap) {
        uint8_t *grown = realloc (self->skip, nrows);
        if (!grown)
            return tm_wquery_scan_rows (twins, models, derived, plan, shards, nshards,
                                        now_ms, partial);
        self->skip = grown;
        self->skip_cap = nrows;
    }
    uint8_t *want = calloc (TM_SHARDMAP_MAX_SHARDS / 8, 1);
    if (!want)
        return -1;
    for (size_t s = 0; s < nshards; s++)
        if (shards[s] < TM_SHARDMAP_MAX_SHARDS)
            want[shards[s] >> 3] |= (uint8_t) (1u << (shards[s] & 7));
    //  The broker asks a worker for the shards it owns: usually every
    //  shard that has rows here, and then no twin needs its flag looked up.
    bool all = true;
    for (size_t k = 0; all && k < self->npresent; k++) {
        uint32_t sh = self->present[k];
        all = (want[sh >> 3] >> (sh & 7)) & 1;
    }
    long scanned = 0;
    if (all)
        scanned = (long) nrows;
    else
        for (size_t r = 0; r < nrows; r++) {
            uint16_t sh = self->shard[r];
            bool in = (want[sh >> 3] >> (sh & 7)) & 1;
            self->skip[r] = !in;
            scanned += in;
        }
    free (want);
    tm_qpartial_feed_batch (partial, view, ncols, nrows, all? NULL: self->skip);
    return scanned;
}

size_t
tm_wquery_cached (tm_wquery_t *self, size_t *bytes)
{
    size_t total = 0;
    for (size_t i = 0; i < self->ncached; i++)
        total += s_cached_bytes (self->cached[i]);
    if (bytes)
        *bytes = total + self->shard_cap * sizeof (uint16_t) + self->skip_cap;
    return self->ncached;
}

uint64_t
tm_wquery_filled (tm_wquery_t *self)
{
    return self->filled;
}
