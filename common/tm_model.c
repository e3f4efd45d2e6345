/*  tm_model - twin models: the file format, its in-memory form, a registry

    The parser is jansson (a maintained parser beats one of ours for
    untrusted files) plus one walk over the tree that checks every field
    against what this file allows, keeps the JSON path of where it is, and
    stops at the first mistake with that path in the message. Defaults are
    filled in while walking, so the in-memory form is always complete; the
    canonical text is then written from the in-memory form (never from the
    input), which is what makes parse (canonical (m)) == m hold.

    The reference for every field, default and rule is docs/models.md; the
    two must change together.
*/
#include "tm_model.h"
#include "tm_expr.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Bounds that are not part of the public limits: they only keep numbers
//  sane (an interval of a century is a typo, and ms values must not
//  overflow when multiplied by a stale factor).
#define S_DAY_MS 86400000LL
#define S_INTERVAL_MAX (366 * S_DAY_MS)        //  Longest expected interval
#define S_RETENTION_MAX (3660 * S_DAY_MS)      //  Longest retention, ~10 years
#define S_UNIT_MAX 32                          //  Bytes of a unit
#define S_DESC_MAX 1024                        //  Bytes of an item's description
#define S_MODEL_DESC_MAX 4096                  //  Bytes of a model's description
#define S_STRING_MAX 256                       //  Bytes of a string attribute value
#define S_TAG_MAX 64                           //  Bytes of one tag
#define S_AGG_MODELS_MAX 16                    //  Child models named by one aggregate
#define S_RUN_MAX 1000000                      //  Largest stuck_run and warmup
#define S_HORIZON_MAX 10000                    //  Largest forecast horizon, steps
#define S_PATH_MAX 384                         //  Bytes of a JSON path in messages
#define S_SEGMENT_MAX 64                       //  Bytes of one path segment shown

//  The defaults of docs/models.md, in one place: the generic property and
//  the parser both start from this.
static const tm_model_property_t s_default_property = {
    .name = "",
    .index = 0,
    .type = TM_MODEL_NUMBER,
    .unit = "",
    .description = "",
    .valid_min = -INFINITY,
    .valid_max = INFINITY,
    .limit_lower = -INFINITY,
    .limit_upper = INFINITY,
    .expected_interval_ms = 0,
    .stale_factor = 3.0,
    .ewma_alpha = 0.1,
    .stuck_run = 0,
    .anomaly_enabled = true,
    .anomaly_threshold_sigma = 4.0,
    .anomaly_warmup = 30,
    .forecast_enabled = true,
    .forecast_alpha = 0.3,
    .forecast_beta = 0.1,
    .forecast_horizon = 10,
    .retention_ms = 0,
};

static const char *s_type_names[] = {"number", "integer", "boolean"};
static const char *s_attr_type_names[] = {"string", "number", "location", "tags"};
static const char *s_rel_kind_names[] = {"parent"};
static const char *s_agg_names[] = {"mean", "min", "max", "count_anomalous"};
static const char *s_quality_names[] = {"good", "out_of_range", "invalid_type",
                                        "unknown_property", "unmodelled"};

_Static_assert (sizeof s_type_names / sizeof s_type_names[0] == TM_MODEL_BOOLEAN + 1,
                "a name per property type");
_Static_assert (sizeof s_attr_type_names / sizeof s_attr_type_names[0]
                    == TM_MODEL_ATTR_TAGS + 1,
                "a name per attribute type");
_Static_assert (sizeof s_quality_names / sizeof s_quality_names[0] == TM_MODEL_Q_COUNT,
                "a name per quality");
_Static_assert (TM_MODEL_MAX_PROPERTIES < 255, "slots hold index + 1 in a byte");

//  ---------------------------------------------------------------------
//  The parse context: where we are, and the first error

typedef struct {
    const char *source;            //  File name or "model", for messages
    char *err;                     //  Caller's buffer, may be NULL
    size_t err_size;               //  Its size
    bool failed;                   //  An error was reported: keep the first
    char path[S_PATH_MAX];         //  JSON path of the value being checked
    size_t path_len;               //  Bytes used in path
} s_ctx_t;

static void
s_ctx_init (s_ctx_t *ctx, const char *source, char *err, size_t err_size)
{
    memset (ctx, 0, sizeof *ctx);
    ctx->source = source? source: "model";
    ctx->err = err;
    ctx->err_size = err_size;
    if (err && err_size)
        *err = 0;
}

//  Report an error at the current path; returns -1 so callers can
//  "return s_fail (...)". Only the first error is kept: it is the cause,
//  the rest are consequences.
static int
s_fail (s_ctx_t *ctx, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static int
s_fail (s_ctx_t *ctx, const char *format, ...)
{
    if (ctx->failed)
        return -1;
    ctx->failed = true;
    if (!ctx->err || ctx->err_size == 0)
        return -1;
    char message[S_PATH_MAX];
    va_list ap;
    va_start (ap, format);
    vsnprintf (message, sizeof message, format, ap);
    va_end (ap);
    if (ctx->path_len)
        snprintf (ctx->err, ctx->err_size, "%s: %s: %s", ctx->source, ctx->path, message);
    else
        snprintf (ctx->err, ctx->err_size, "%s: %s", ctx->source, message);
    return -1;
}

//  Append ".key" to the path (just "key" at the top); returns the length
//  to restore with s_pop. Keys come from the file: control characters are
//  shown as '?', and a long key is cut (at a UTF-8 boundary) with "...".
static size_t
s_push (s_ctx_t *ctx, const char *key)
{
    size_t saved = ctx->path_len;
    size_t n = ctx->path_len;
    if (n && n + 1 < sizeof ctx->path)
        ctx->path[n++] = '.';
    size_t klen = strlen (key);
    size_t show = klen;
    if (show > S_SEGMENT_MAX) {
        show = S_SEGMENT_MAX;
        while (show > 0 && ((unsigned char) key[show] & 0xC0) == 0x80)
            show--;
    }
    for (size_t i = 0; i < show && n + 1 < sizeof ctx->path; i++) {
        unsigned char c = (unsigned char) key[i];
        ctx->path[n++] = (c < 0x20 || c == 0x7F)? '?': (char) c;
    }
    if (show < klen)
        for (int i = 0; i < 3 && n + 1 < sizeof ctx->path; i++)
            ctx->path[n++] = '.';
    ctx->path[n] = 0;
    ctx->path_len = n;
    return saved;
}

static size_t
s_push_index (s_ctx_t *ctx, size_t index)
{
    size_t saved = ctx->path_len;
    int n = snprintf (ctx->path + ctx->path_len, sizeof ctx->path - ctx->path_len, "[%zu]",
                      index);
    if (n > 0 && (size_t) n < sizeof ctx->path - ctx->path_len)
        ctx->path_len += (size_t) n;
    return saved;
}

static void
s_pop (s_ctx_t *ctx, size_t saved)
{
    ctx->path_len = saved;
    ctx->path[saved] = 0;
}

//  The JSON type of a value as a message says it.
static const char *
s_found (const json_t *value)
{
    switch (json_typeof (value)) {
        case JSON_OBJECT: return "object";
        case JSON_ARRAY: return "array";
        case JSON_STRING: return "string";
        case JSON_INTEGER: return "integer";
        case JSON_REAL: return "real number";
        case JSON_TRUE:
        case JSON_FALSE: return "boolean";
        case JSON_NULL: return "null";
    }
    return "unknown";
}

static bool
s_is_extension (const char *key)
{
    return key[0] == 'x' && key[1] == '-';
}

//  Edit distance for "did you mean": keys are short, two rows suffice.
static size_t
s_distance (const char *a, const char *b)
{
    size_t la = strlen (a), lb = strlen (b);
    if (la > S_SEGMENT_MAX || lb > S_SEGMENT_MAX)
        return SIZE_MAX;
    size_t prev[S_SEGMENT_MAX + 1], cur[S_SEGMENT_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del? (sub < ins? sub: ins): (del < ins? del: ins);
        }
        memcpy (prev, cur, (lb + 1) * sizeof prev[0]);
    }
    return prev[lb];
}

//  Every key of obj must be in allowed (NULL-terminated) or start with
//  "x-": a typo must not fall back to a default silently.
static int
s_check_fields (s_ctx_t *ctx, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *value;
    json_object_foreach (obj, key, value) {
        if (s_is_extension (key))
            continue;
        const char *best = NULL;
        size_t best_d = SIZE_MAX;
        bool known = false;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp (key, *a) == 0) {
                known = true;
                break;
            }
            size_t d = s_distance (key, *a);
            if (d < best_d) {
                best_d = d;
                best = *a;
            }
        }
        if (known)
            continue;
        s_push (ctx, key);
        if (best && best_d <= 2)
            return s_fail (ctx, "unknown field (did you mean \"%s\"?)", best);
        return s_fail (ctx, "unknown field (names starting with \"x-\" are ignored)");
    }
    return 0;
}

//  [A-Za-z_][A-Za-z0-9_]{0,63}: the wire's 64-byte limit, and a leading
//  digit is refused so that expressions can name every property.
static bool
s_name_valid (const char *name, size_t len)
{
    if (len == 0 || len > TM_MODEL_NAME_MAX)
        return false;
    if (name[0] >= '0' && name[0] <= '9')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '_'))
            return false;
    }
    return true;
}

static int
s_fail_name (s_ctx_t *ctx)
{
    return s_fail (ctx, "invalid name: 1 to %d bytes of [A-Za-z0-9_], not starting with a "
                        "digit",
                   TM_MODEL_NAME_MAX);
}

//  ---------------------------------------------------------------------
//  Typed getters. Each returns 1 if the field is present and valid, 0 if
//  it is absent and optional, -1 after reporting an error at obj.key.

static int
s_missing (s_ctx_t *ctx, const char *key, bool required)
{
    if (!required)
        return 0;
    size_t saved = s_push (ctx, key);
    s_fail (ctx, "missing (required)");
    s_pop (ctx, saved);
    return -1;
}

static int
s_get_string (s_ctx_t *ctx, json_t *obj, const char *key, size_t max, bool required,
              const char **out)
{
    json_t *v = json_object_get (obj, key);
    if (!v)
        return s_missing (ctx, key, required);
    size_t saved = s_push (ctx, key);
    int rc = 1;
    if (!json_is_string (v))
        rc = s_fail (ctx, "expected a string, found %s", s_found (v));
    else
    if (json_string_length (v) > max)
        rc = s_fail (ctx, "longer than %zu bytes", max);
    else
        *out = json_string_value (v);
    s_pop (ctx, saved);
    return rc;
}

//  A name-valued string field (a model or attribute name).
static int
s_get_name (s_ctx_t *ctx, json_t *obj, const char *key, bool required, char *out)
{
    const char *s = NULL;
    int rc = s_get_string (ctx, obj, key, SIZE_MAX, required, &s);
    if (rc != 1)
        return rc;
    if (!s_name_valid (s, strlen (s))) {
        size_t saved = s_push (ctx, key);
        s_fail_name (ctx);
        s_pop (ctx, saved);
        return -1;
    }
    strcpy (out, s);
    return 1;
}

//  A string field copied into owned memory; absent gives "".
static int
s_dup_string (s_ctx_t *ctx, json_t *obj, const char *key, size_t max, bool required,
              char **out)
{
    const char *s = "";
    int rc = s_get_string (ctx, obj, key, max, required, &s);
    if (rc < 0)
        return rc;
    *out = strdup (s);
    if (!*out)
        return s_fail (ctx, "out of memory");
    return rc;
}

//  A number in the interval lo..hi; lo_open/hi_open exclude the bound.
static int
s_get_number (s_ctx_t *ctx, json_t *obj, const char *key, double lo, bool lo_open, double hi,
              bool hi_open, bool required, double *out)
{
    json_t *v = json_object_get (obj, key);
    if (!v)
        return s_missing (ctx, key, required);
    size_t saved = s_push (ctx, key);
    int rc = 1;
    if (!json_is_number (v))
        rc = s_fail (ctx, "expected a number, found %s", s_found (v));
    else {
        double d = json_number_value (v);
        if (!isfinite (d))
            rc = s_fail (ctx, "expected a finite number");
        else
        if ((lo_open? d <= lo: d < lo) || (hi_open? d >= hi: d > hi)) {
            char los[32] = "-inf", his[32] = "inf";
            if (isfinite (lo))
                snprintf (los, sizeof los, "%g", lo);
            if (isfinite (hi))
                snprintf (his, sizeof his, "%g", hi);
            rc = s_fail (ctx, "must be in %c%s, %s%c, found %g", lo_open? '(': '[', los, his,
                         hi_open? ')': ']', d);
        }
        else
            *out = d;
    }
    s_pop (ctx, saved);
    return rc;
}

static int
s_get_integer (s_ctx_t *ctx, json_t *obj, const char *key, int64_t lo, int64_t hi,
               bool required, int64_t *out)
{
    json_t *v = json_object_get (obj, key);
    if (!v)
        return s_missing (ctx, key, required);
    size_t saved = s_push (ctx, key);
    int rc = 1;
    if (!json_is_integer (v))
        rc = s_fail (ctx, "expected an integer, found %s", s_found (v));
    else {
        json_int_t i = json_integer_value (v);
        if (i < lo || i > hi)
            rc = s_fail (ctx, "must be in [%lld, %lld], found %lld", (long long) lo,
                         (long long) hi, (long long) i);
        else
            *out = (int64_t) i;
    }
    s_pop (ctx, saved);
    return rc;
}

static int
s_get_u32 (s_ctx_t *ctx, json_t *obj, const char *key, int64_t lo, int64_t hi,
           uint32_t *out)
{
    int64_t v = 0;
    int rc = s_get_integer (ctx, obj, key, lo, hi, false, &v);
    if (rc == 1)
        *out = (uint32_t) v;
    return rc;
}

static int
s_get_bool (s_ctx_t *ctx, json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get (obj, key);
    if (!v)
        return 0;
    if (!json_is_boolean (v)) {
        size_t saved = s_push (ctx, key);
        s_fail (ctx, "expected true or false, found %s", s_found (v));
        s_pop (ctx, saved);
        return -1;
    }
    *out = json_is_true (v);
    return 1;
}

//  An object-valued field; *out is NULL when absent.
static int
s_get_object (s_ctx_t *ctx, json_t *obj, const char *key, bool required, json_t **out)
{
    *out = NULL;
    json_t *v = json_object_get (obj, key);
    if (!v)
        return s_missing (ctx, key, required);
    if (!json_is_object (v)) {
        size_t saved = s_push (ctx, key);
        s_fail (ctx, "expected an object, found %s", s_found (v));
        s_pop (ctx, saved);
        return -1;
    }
    *out = v;
    return 1;
}

//  A string field that must be one of names[0..count).
static int
s_get_enum (s_ctx_t *ctx, json_t *obj, const char *key, const char **names, size_t count,
            bool required, int *out)
{
    const char *s = NULL;
    int rc = s_get_string (ctx, obj, key, SIZE_MAX, required, &s);
    if (rc != 1)
        return rc;
    for (size_t i = 0; i < count; i++)
        if (strcmp (s, names[i]) == 0) {
            *out = (int) i;
            return 1;
        }
    char list[128] = "";
    for (size_t i = 0; i < count; i++) {
        strncat (list, i? ", ": "", sizeof list - strlen (list) - 1);
        strncat (list, names[i], sizeof list - strlen (list) - 1);
    }
    size_t saved = s_push (ctx, key);
    s_fail (ctx, "expected one of %s, found \"%.64s\"", list, s);
    s_pop (ctx, saved);
    return -1;
}

//  Entries of a name -> object map, without "x-" keys; -1 after an error
//  if there are more than max or an entry's name is invalid.
static int
s_count_entries (s_ctx_t *ctx, json_t *map, const char *what, size_t max, size_t *count)
{
    const char *key;
    json_t *value;
    size_t n = 0;
    json_object_foreach (map, key, value) {
        if (s_is_extension (key))
            continue;
        size_t saved = s_push (ctx, key);
        if (!s_name_valid (key, strlen (key)))
            return s_fail_name (ctx);
        if (!json_is_object (value))
            return s_fail (ctx, "expected an object, found %s", s_found (value));
        s_pop (ctx, saved);
        n++;
    }
    if (n > max)
        return s_fail (ctx, "at most %zu %s, found %zu", max, what, n);
    *count = n;
    return 0;
}

//  ---------------------------------------------------------------------
//  Destruction (works on partly built models: arrays are calloc'd and
//  counts include the entry being parsed)

static void
s_value_fini (tm_model_value_t *v)
{
    free (v->string);
    for (uint32_t i = 0; i < v->ntags; i++)
        free (v->tags[i]);
    free (v->tags);
    memset (v, 0, sizeof *v);
}

void
tm_model_destroy (tm_model_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_model_t *self = *self_p;
    for (uint32_t i = 0; i < self->nproperties; i++) {
        free (self->properties[i].unit);
        free (self->properties[i].description);
    }
    free (self->properties);
    for (uint32_t i = 0; i < self->nattributes; i++) {
        free (self->attributes[i].description);
        s_value_fini (&self->attributes[i].dflt);
    }
    free (self->attributes);
    for (uint32_t i = 0; i < self->nrelationships; i++)
        free (self->relationships[i].description);
    free (self->relationships);
    for (uint32_t i = 0; i < self->nderived; i++) {
        free (self->derived[i].unit);
        free (self->derived[i].description);
        free (self->derived[i].expression);
    }
    free (self->derived);
    for (uint32_t i = 0; i < self->naggregates; i++) {
        for (uint32_t j = 0; j < self->aggregates[i].nmodels; j++)
            free (self->aggregates[i].models[j]);
        free (self->aggregates[i].models);
    }
    free (self->aggregates);
    free (self->description);
    free (self->canonical);
    free (self);
    *self_p = NULL;
}

//  ---------------------------------------------------------------------
//  Properties

static const char *const s_property_fields[] = {
    "type", "unit", "description", "valid", "limits", "expected_interval_ms", "stale_factor",
    "ewma_alpha", "stuck_run", "anomaly", "forecast", "retention_ms", NULL};
static const char *const s_valid_fields[] = {"min", "max", NULL};
static const char *const s_limits_fields[] = {"lower", "upper", NULL};
static const char *const s_anomaly_fields[] = {"enabled", "threshold_sigma", "warmup", NULL};
static const char *const s_forecast_fields[] = {"enabled", "alpha", "beta", "horizon", NULL};

//  A {lo_key, hi_key} pair of bounds, at least one given, lo < hi.
static int
s_parse_bounds (s_ctx_t *ctx, json_t *obj, const char *key, const char *const *fields,
                double *lo, double *hi)
{
    size_t saved = s_push (ctx, key);
    if (s_check_fields (ctx, obj, fields) != 0)
        return -1;
    int a = s_get_number (ctx, obj, fields[0], -INFINITY, true, INFINITY, true, false, lo);
    int b = a < 0? -1: s_get_number (ctx, obj, fields[1], -INFINITY, true, INFINITY, true,
                                     false, hi);
    if (a < 0 || b < 0)
        return -1;
    if (a == 0 && b == 0)
        return s_fail (ctx, "give %s, %s or both", fields[0], fields[1]);
    if (a == 1 && b == 1 && !(*lo < *hi))
        return s_fail (ctx, "%s (%g) must be less than %s (%g)", fields[0], *lo, fields[1],
                       *hi);
    s_pop (ctx, saved);
    return 0;
}

static int
s_parse_property (s_ctx_t *ctx, json_t *obj, tm_model_property_t *p)
{
    if (s_check_fields (ctx, obj, s_property_fields) != 0)
        return -1;
    int type = TM_MODEL_NUMBER;
    if (s_get_enum (ctx, obj, "type", s_type_names, 3, false, &type) < 0)
        return -1;
    p->type = (tm_model_type_t) type;
    bool boolean = p->type == TM_MODEL_BOOLEAN;
    //  A boolean has nothing to smooth or extrapolate: off unless asked.
    p->anomaly_enabled = p->forecast_enabled = !boolean;
    if (s_dup_string (ctx, obj, "unit", S_UNIT_MAX, false, &p->unit) < 0
        || s_dup_string (ctx, obj, "description", S_DESC_MAX, false, &p->description) < 0)
        return -1;

    json_t *sub;
    if (s_get_object (ctx, obj, "valid", false, &sub) < 0)
        return -1;
    if (sub) {
        size_t saved = s_push (ctx, "valid");
        if (boolean)
            return s_fail (ctx, "not allowed for a boolean property (always 0 or 1)");
        s_pop (ctx, saved);
        if (s_parse_bounds (ctx, sub, "valid", s_valid_fields, &p->valid_min, &p->valid_max)
            != 0)
            return -1;
    }
    if (s_get_object (ctx, obj, "limits", false, &sub) < 0)
        return -1;
    if (sub) {
        size_t saved = s_push (ctx, "limits");
        if (boolean)
            return s_fail (ctx, "not allowed for a boolean property");
        s_pop (ctx, saved);
        if (s_parse_bounds (ctx, sub, "limits", s_limits_fields, &p->limit_lower,
                            &p->limit_upper)
            != 0)
            return -1;
        //  A limit outside the valid range can never be crossed by a
        //  good reading: it is a mistake, not a setting.
        const char *names[2] = {"lower", "upper"};
        double values[2] = {p->limit_lower, p->limit_upper};
        for (int i = 0; i < 2; i++) {
            if (!isfinite (values[i]))
                continue;
            if (values[i] < p->valid_min || values[i] > p->valid_max) {
                saved = s_push (ctx, "limits");
                s_push (ctx, names[i]);
                return s_fail (ctx, "outside the valid range [%g, %g], found %g", p->valid_min,
                               p->valid_max, values[i]);
            }
        }
    }
    if (s_get_integer (ctx, obj, "expected_interval_ms", 1, S_INTERVAL_MAX, false,
                       &p->expected_interval_ms)
            < 0
        || s_get_number (ctx, obj, "stale_factor", 1, false, 1000, false, false,
                         &p->stale_factor)
               < 0
        || s_get_number (ctx, obj, "ewma_alpha", 0, true, 1, false, false, &p->ewma_alpha) < 0
        || s_get_u32 (ctx, obj, "stuck_run", 0, S_RUN_MAX, &p->stuck_run) < 0
        || s_get_integer (ctx, obj, "retention_ms", 1, S_RETENTION_MAX, false,
                          &p->retention_ms)
               < 0)
        return -1;
    if (p->stuck_run == 1) {
        size_t saved = s_push (ctx, "stuck_run");
        s_fail (ctx, "must be 0 (off) or at least 2: one value is never a run");
        s_pop (ctx, saved);
        return -1;
    }

    if (s_get_object (ctx, obj, "anomaly", false, &sub) < 0)
        return -1;
    if (sub) {
        size_t saved = s_push (ctx, "anomaly");
        if (s_check_fields (ctx, sub, s_anomaly_fields) != 0
            || s_get_bool (ctx, sub, "enabled", &p->anomaly_enabled) < 0
            || s_get_number (ctx, sub, "threshold_sigma", 0, true, 100, false, false,
                             &p->anomaly_threshold_sigma)
                   < 0
            || s_get_u32 (ctx, sub, "warmup", 0, S_RUN_MAX, &p->anomaly_warmup) < 0)
            return -1;
        s_pop (ctx, saved);
    }
    if (s_get_object (ctx, obj, "forecast", false, &sub) < 0)
        return -1;
    if (sub) {
        size_t saved = s_push (ctx, "forecast");
        if (s_check_fields (ctx, sub, s_forecast_fields) != 0
            || s_get_bool (ctx, sub, "enabled", &p->forecast_enabled) < 0
            || s_get_number (ctx, sub, "alpha", 0, true, 1, false, false, &p->forecast_alpha)
                   < 0
            || s_get_number (ctx, sub, "beta", 0, false, 1, false, false, &p->forecast_beta)
                   < 0
            || s_get_u32 (ctx, sub, "horizon", 1, S_HORIZON_MAX, &p->forecast_horizon) < 0)
            return -1;
        s_pop (ctx, saved);
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Attributes and their values

static const char *const s_attribute_fields[] = {"type", "required", "default", "description",
                                                 NULL};
static const char *const s_location_fields[] = {"lat", "lon", NULL};

//  A value of an attribute type at the current path.
static int
s_parse_value (s_ctx_t *ctx, tm_model_attr_type_t type, json_t *v, tm_model_value_t *out)
{
    switch (type) {
        case TM_MODEL_ATTR_STRING:
            if (!json_is_string (v))
                return s_fail (ctx, "expected a string, found %s", s_found (v));
            if (json_string_length (v) > S_STRING_MAX)
                return s_fail (ctx, "longer than %d bytes", S_STRING_MAX);
            out->string = strdup (json_string_value (v));
            if (!out->string)
                return s_fail (ctx, "out of memory");
            break;
        case TM_MODEL_ATTR_NUMBER:
            if (!json_is_number (v))
                return s_fail (ctx, "expected a number, found %s", s_found (v));
            out->number = json_number_value (v);
            break;
        case TM_MODEL_ATTR_LOCATION:
            if (!json_is_object (v))
                return s_fail (ctx, "expected an object {\"lat\": ..., \"lon\": ...}, found %s",
                               s_found (v));
            if (s_check_fields (ctx, v, s_location_fields) != 0
                || s_get_number (ctx, v, "lat", -90, false, 90, false, true, &out->lat) < 0
                || s_get_number (ctx, v, "lon", -180, false, 180, false, true, &out->lon) < 0)
                return -1;
            break;
        case TM_MODEL_ATTR_TAGS: {
            if (!json_is_array (v))
                return s_fail (ctx, "expected an array of strings, found %s", s_found (v));
            size_t n = json_array_size (v);
            if (n > TM_MODEL_MAX_TAGS)
                return s_fail (ctx, "at most %d tags, found %zu", TM_MODEL_MAX_TAGS, n);
            out->tags = calloc (n? n: 1, sizeof (char *));
            if (!out->tags)
                return s_fail (ctx, "out of memory");
            for (size_t i = 0; i < n; i++) {
                json_t *t = json_array_get (v, i);
                size_t saved = s_push_index (ctx, i);
                if (!json_is_string (t))
                    return s_fail (ctx, "expected a string, found %s", s_found (t));
                size_t tl = json_string_length (t);
                if (tl == 0 || tl > S_TAG_MAX)
                    return s_fail (ctx, "a tag is 1 to %d bytes", S_TAG_MAX);
                const char *ts = json_string_value (t);
                for (uint32_t j = 0; j < out->ntags; j++)
                    if (strcmp (out->tags[j], ts) == 0)
                        return s_fail (ctx, "duplicate tag \"%s\"", ts);
                out->tags[out->ntags] = strdup (ts);
                if (!out->tags[out->ntags])
                    return s_fail (ctx, "out of memory");
                out->ntags++;
                s_pop (ctx, saved);
            }
            break;
        }
    }
    out->set = true;
    return 0;
}

static int
s_parse_attribute (s_ctx_t *ctx, json_t *obj, tm_model_attribute_t *a)
{
    if (s_check_fields (ctx, obj, s_attribute_fields) != 0)
        return -1;
    int type = 0;
    if (s_get_enum (ctx, obj, "type", s_attr_type_names, 4, true, &type) < 0)
        return -1;
    a->type = (tm_model_attr_type_t) type;
    if (s_get_bool (ctx, obj, "required", &a->required) < 0
        || s_dup_string (ctx, obj, "description", S_DESC_MAX, false, &a->description) < 0)
        return -1;
    json_t *dflt = json_object_get (obj, "default");
    if (dflt) {
        size_t saved = s_push (ctx, "default");
        //  Required and defaulted contradict: which one did the author mean?
        if (a->required)
            return s_fail (ctx, "not allowed for a required attribute");
        if (s_parse_value (ctx, a->type, dflt, &a->dflt) != 0)
            return -1;
        s_pop (ctx, saved);
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Relationships, derived properties, aggregates

static const char *const s_relationship_fields[] = {"kind", "target", "attribute",
                                                    "description", NULL};
static const char *const s_derived_fields[] = {"unit", "description", "expression", NULL};
static const char *const s_aggregate_fields[] = {"functions", "models", NULL};

static int
s_parse_relationship (s_ctx_t *ctx, json_t *obj, const tm_model_t *m,
                      tm_model_relationship_t *r)
{
    int kind = 0;
    if (s_check_fields (ctx, obj, s_relationship_fields) != 0
        || s_get_enum (ctx, obj, "kind", s_rel_kind_names, 1, true, &kind) < 0
        || s_get_name (ctx, obj, "target", true, r->target) < 0
        || s_get_name (ctx, obj, "attribute", true, r->attribute) < 0
        || s_dup_string (ctx, obj, "description", S_DESC_MAX, false, &r->description) < 0)
        return -1;
    r->kind = (tm_model_rel_kind_t) kind;
    //  The related twin's entity id is the value of this attribute, so it
    //  must exist and be a string.
    const tm_model_attribute_t *a = tm_model_attribute_find (m, r->attribute);
    if (!a || a->type != TM_MODEL_ATTR_STRING) {
        size_t saved = s_push (ctx, "attribute");
        s_fail (ctx, "no string attribute \"%s\" in attributes", r->attribute);
        s_pop (ctx, saved);
        return -1;
    }
    return 0;
}

static int
s_parse_derived (s_ctx_t *ctx, json_t *obj, tm_model_derived_t *d)
{
    if (s_check_fields (ctx, obj, s_derived_fields) != 0
        || s_dup_string (ctx, obj, "unit", S_UNIT_MAX, false, &d->unit) < 0
        || s_dup_string (ctx, obj, "description", S_DESC_MAX, false, &d->description) < 0
        || s_dup_string (ctx, obj, "expression", TM_MODEL_MAX_EXPR, true, &d->expression) < 0)
        return -1;
    //  The expression compiler (tm_expr) checks the syntax; here only
    //  that there is something to compile.
    if (strspn (d->expression, " \t\r\n") == strlen (d->expression)) {
        size_t saved = s_push (ctx, "expression");
        s_fail (ctx, "must not be empty");
        s_pop (ctx, saved);
        return -1;
    }
    return 0;
}

static int
s_parse_aggregate (s_ctx_t *ctx, json_t *obj, tm_model_aggregate_t *g)
{
    if (s_check_fields (ctx, obj, s_aggregate_fields) != 0)
        return -1;
    json_t *fns = json_object_get (obj, "functions");
    if (!fns)
        return s_missing (ctx, "functions", true);
    size_t saved = s_push (ctx, "functions");
    if (!json_is_array (fns))
        return s_fail (ctx, "expected an array of strings, found %s", s_found (fns));
    if (json_array_size (fns) == 0)
        return s_fail (ctx, "give at least one of mean, min, max, count_anomalous");
    for (size_t i = 0; i < json_array_size (fns); i++) {
        json_t *f = json_array_get (fns, i);
        size_t saved_i = s_push_index (ctx, i);
        if (!json_is_string (f))
            return s_fail (ctx, "expected a string, found %s", s_found (f));
        uint32_t bit = 0;
        for (size_t k = 0; k < 4; k++)
            if (strcmp (json_string_value (f), s_agg_names[k]) == 0)
                bit = 1u << k;
        if (!bit)
            return s_fail (ctx, "expected one of mean, min, max, count_anomalous, found "
                                "\"%.64s\"",
                           json_string_value (f));
        if (g->functions & bit)
            return s_fail (ctx, "\"%s\" given twice", json_string_value (f));
        g->functions |= bit;
        s_pop (ctx, saved_i);
    }
    s_pop (ctx, saved);

    json_t *models = json_object_get (obj, "models");
    if (models) {
        saved = s_push (ctx, "models");
        if (!json_is_array (models))
            return s_fail (ctx, "expected an array of model names, found %s",
                           s_found (models));
        size_t n = json_array_size (models);
        if (n > S_AGG_MODELS_MAX)
            return s_fail (ctx, "at most %d models, found %zu", S_AGG_MODELS_MAX, n);
        //  An empty list would count no child at all; "any" is said by
        //  leaving the field out.
        if (n == 0)
            return s_fail (ctx, "empty: leave \"models\" out to aggregate children of any "
                                "model");
        g->models = calloc (n, sizeof (char *));
        if (!g->models)
            return s_fail (ctx, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *mv = json_array_get (models, i);
            size_t saved_i = s_push_index (ctx, i);
            if (!json_is_string (mv))
                return s_fail (ctx, "expected a string, found %s", s_found (mv));
            const char *name = json_string_value (mv);
            if (!s_name_valid (name, json_string_length (mv)))
                return s_fail_name (ctx);
            for (uint32_t j = 0; j < g->nmodels; j++)
                if (strcmp (g->models[j], name) == 0)
                    return s_fail (ctx, "\"%s\" given twice", name);
            g->models[g->nmodels] = strdup (name);
            if (!g->models[g->nmodels])
                return s_fail (ctx, "out of memory");
            g->nmodels++;
            s_pop (ctx, saved_i);
        }
        s_pop (ctx, saved);
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Names share one namespace per model: properties, derived properties and
//  the aggregate outputs (<property>_<function>) are all series of the
//  twin, read by queries and expressions by name.

static const char *
s_series_owner (const tm_model_t *m, const char *name, const void *except)
{
    for (uint32_t i = 0; i < m->nproperties; i++)
        if ((const void *) &m->properties[i] != except && !strcmp (m->properties[i].name, name))
            return "properties";
    for (uint32_t i = 0; i < m->nderived; i++)
        if ((const void *) &m->derived[i] != except && !strcmp (m->derived[i].name, name))
            return "derived";
    for (uint32_t i = 0; i < m->naggregates; i++) {
        const tm_model_aggregate_t *g = &m->aggregates[i];
        if ((const void *) g == except)
            continue;
        for (size_t k = 0; k < 4; k++) {
            char out[2 * TM_MODEL_NAME_MAX + 20];
            snprintf (out, sizeof out, "%s_%s", g->property, s_agg_names[k]);
            if ((g->functions & (1u << k)) && !strcmp (out, name))
                return "aggregates";
        }
    }
    return NULL;
}

static int
s_check_namespace (s_ctx_t *ctx, const tm_model_t *m)
{
    for (uint32_t i = 0; i < m->nderived; i++) {
        const char *owner = s_series_owner (m, m->derived[i].name, &m->derived[i]);
        if (owner) {
            size_t saved = s_push (ctx, "derived");
            s_push (ctx, m->derived[i].name);
            s_fail (ctx, "name already used in %s", owner);
            s_pop (ctx, saved);
            return -1;
        }
    }
    for (uint32_t i = 0; i < m->naggregates; i++) {
        const tm_model_aggregate_t *g = &m->aggregates[i];
        for (size_t k = 0; k < 4; k++) {
            if (!(g->functions & (1u << k)))
                continue;
            char out[2 * TM_MODEL_NAME_MAX + 20];
            snprintf (out, sizeof out, "%s_%s", g->property, s_agg_names[k]);
            size_t saved = s_push (ctx, "aggregates");
            s_push (ctx, g->property);
            if (strlen (out) > TM_MODEL_NAME_MAX)
                return s_fail (ctx, "the series \"%s\" would be longer than %d bytes", out,
                               TM_MODEL_NAME_MAX);
            const char *owner = s_series_owner (m, out, g);
            if (owner)
                return s_fail (ctx, "the series \"%s\" is already a name in %s", out, owner);
            s_pop (ctx, saved);
        }
    }
    return 0;
}

//  A derived property reads the model's properties, its aggregate series
//  and the derived properties above it in the file (so there is an order
//  to compute them in and no cycle). Checked here, once, so that a worker
//  never meets an expression it cannot compile.
typedef struct {
    const tm_model_t *m;               //  The model
    uint32_t before;                   //  Derived properties [0, before) are readable
} s_derived_scope_t;

static int
s_derived_resolve (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    const s_derived_scope_t *scope = (const s_derived_scope_t *) user;
    (void) len;
    const char *owner = s_series_owner (scope->m, name, NULL);
    if (!owner)
        return -1;
    if (!strcmp (owner, "derived")) {
        uint32_t i = 0;
        while (i < scope->m->nderived && strcmp (scope->m->derived[i].name, name))
            i++;
        if (i >= scope->before)
            return -1;
    }
    out->slot = 0;
    out->type = TM_EXPR_NUMBER;
    return 0;
}

static int
s_check_derived_exprs (s_ctx_t *ctx, const tm_model_t *m)
{
    for (uint32_t i = 0; i < m->nderived; i++) {
        s_derived_scope_t scope = {.m = m, .before = i};
        tm_expr_options_t opts = {.resolve = s_derived_resolve, .user = &scope,
                                  .expect = TM_EXPR_NUMBER};
        tm_expr_error_t err;
        tm_expr_t *e = tm_expr_compile (m->derived[i].expression, &opts, &err);
        if (e) {
            tm_expr_destroy (&e);
            continue;
        }
        size_t saved = s_push (ctx, "derived");
        s_push (ctx, m->derived[i].name);
        s_push (ctx, "expression");
        if (err.code == TM_EXPR_E_UNKNOWN_NAME)
            s_fail (ctx, "%s (an expression reads the model's properties, aggregate series "
                         "and the derived properties above it)", err.message);
        else
            s_fail (ctx, "%s", err.message);
        s_pop (ctx, saved);
        return -1;
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  The property index: FNV-1a into 128 slots, linear probing

static uint32_t
s_hash (const char *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char) name[i];
        h *= 16777619u;
    }
    return h;
}

#define S_SLOTS (2 * TM_MODEL_MAX_PROPERTIES)

static void
s_index_properties (tm_model_t *m)
{
    memset (m->slots, 0, sizeof m->slots);
    for (uint32_t i = 0; i < m->nproperties; i++) {
        const char *name = m->properties[i].name;
        uint32_t s = s_hash (name, strlen (name)) & (S_SLOTS - 1);
        while (m->slots[s])
            s = (s + 1) & (S_SLOTS - 1);
        m->slots[s] = (uint8_t) (i + 1);
    }
}

const tm_model_property_t *
tm_model_property_find (const tm_model_t *self, const char *name, size_t len)
{
    assert (self);
    if (len == 0 || len > TM_MODEL_NAME_MAX)
        return NULL;
    uint32_t s = s_hash (name, len) & (S_SLOTS - 1);
    //  At most 64 of 128 slots are full, so an empty slot ends every probe.
    while (self->slots[s]) {
        const tm_model_property_t *p = &self->properties[self->slots[s] - 1];
        if (memcmp (p->name, name, len) == 0 && p->name[len] == 0)
            return p;
        s = (s + 1) & (S_SLOTS - 1);
    }
    return NULL;
}

//  ---------------------------------------------------------------------
//  The canonical text: written from the in-memory form, fields in a fixed
//  order, every default spelled out; unbounded ranges, absent limits, an
//  unknown interval and an inherited retention are left out because JSON
//  has no infinity and "absent" is their meaning.

//  Set key to a new value; a NULL value (out of memory) marks the build
//  as failed and is otherwise harmless.
static void
s_set (json_t *obj, const char *key, json_t *value, bool *ok)
{
    if (!value || json_object_set_new (obj, key, value) != 0)
        *ok = false;
}

static json_t *
s_bounds_json (double lo, double hi, const char *lo_key, const char *hi_key, bool *ok)
{
    json_t *o = json_object ();
    if (!o) {
        *ok = false;
        return NULL;
    }
    if (isfinite (lo))
        s_set (o, lo_key, json_real (lo), ok);
    if (isfinite (hi))
        s_set (o, hi_key, json_real (hi), ok);
    return o;
}

static json_t *
s_property_json (const tm_model_property_t *p, bool *ok)
{
    json_t *o = json_object ();
    if (!o) {
        *ok = false;
        return NULL;
    }
    s_set (o, "type", json_string (s_type_names[p->type]), ok);
    s_set (o, "unit", json_string (p->unit), ok);
    s_set (o, "description", json_string (p->description), ok);
    if (isfinite (p->valid_min) || isfinite (p->valid_max))
        s_set (o, "valid", s_bounds_json (p->valid_min, p->valid_max, "min", "max", ok), ok);
    if (isfinite (p->limit_lower) || isfinite (p->limit_upper))
        s_set (o, "limits",
               s_bounds_json (p->limit_lower, p->limit_upper, "lower", "upper", ok), ok);
    if (p->expected_interval_ms)
        s_set (o, "expected_interval_ms", json_integer (p->expected_interval_ms), ok);
    s_set (o, "stale_factor", json_real (p->stale_factor), ok);
    s_set (o, "ewma_alpha", json_real (p->ewma_alpha), ok);
    s_set (o, "stuck_run", json_integer (p->stuck_run), ok);
    s_set (o, "anomaly",
           json_pack ("{s:b,s:f,s:I}", "enabled", p->anomaly_enabled, "threshold_sigma",
                      p->anomaly_threshold_sigma, "warmup", (json_int_t) p->anomaly_warmup),
           ok);
    s_set (o, "forecast",
           json_pack ("{s:b,s:f,s:f,s:I}", "enabled", p->forecast_enabled, "alpha",
                      p->forecast_alpha, "beta", p->forecast_beta, "horizon",
                      (json_int_t) p->forecast_horizon),
           ok);
    if (p->retention_ms)
        s_set (o, "retention_ms", json_integer (p->retention_ms), ok);
    return o;
}

static json_t *
s_value_json (tm_model_attr_type_t type, const tm_model_value_t *v, bool *ok)
{
    json_t *out = NULL;
    switch (type) {
        case TM_MODEL_ATTR_STRING: out = json_string (v->string); break;
        case TM_MODEL_ATTR_NUMBER: out = json_real (v->number); break;
        case TM_MODEL_ATTR_LOCATION:
            out = json_pack ("{s:f,s:f}", "lat", v->lat, "lon", v->lon);
            break;
        case TM_MODEL_ATTR_TAGS:
            out = json_array ();
            for (uint32_t i = 0; out && i < v->ntags; i++)
                if (json_array_append_new (out, json_string (v->tags[i])) != 0)
                    *ok = false;
            break;
    }
    if (!out)
        *ok = false;
    return out;
}

//  jansson prints every real with one precision. 17 digits always give
//  the double back, but turn 0.3 into 0.29999999999999999; so use the
//  fewest digits (15, 16, 17) at which the whole document reads back to
//  the same doubles, judged by comparing 17-digit dumps (exact, and glibc
//  rounds correctly both ways). The choice depends only on the model.
static char *
s_dump_exact (json_t *root)
{
    size_t flags = JSON_COMPACT;
    char *exact = json_dumps (root, flags | JSON_REAL_PRECISION (17));
    if (!exact)
        return NULL;
    for (int digits = 15; digits < 17; digits++) {
        char *text = json_dumps (root, flags | JSON_REAL_PRECISION (digits));
        json_t *back = text? json_loads (text, 0, NULL): NULL;
        char *again = back? json_dumps (back, flags | JSON_REAL_PRECISION (17)): NULL;
        json_decref (back);
        //  Out of memory fails the whole text rather than choosing another
        //  precision: the same model must always give the same bytes.
        if (!again) {
            free (text);
            free (exact);
            return NULL;
        }
        bool same = strcmp (again, exact) == 0;
        free (again);
        if (same) {
            free (exact);
            return text;
        }
        free (text);
    }
    return exact;
}

static char *
s_canonical (const tm_model_t *m, size_t *len)
{
    bool ok = true;
    json_t *root = json_object ();
    json_t *props = json_object (), *attrs = json_object (), *rels = json_object ();
    json_t *derived = json_object (), *aggs = json_object ();
    if (!root || !props || !attrs || !rels || !derived || !aggs) {
        json_decref (root);
        json_decref (props);
        json_decref (attrs);
        json_decref (rels);
        json_decref (derived);
        json_decref (aggs);
        return NULL;
    }
    s_set (root, "format", json_integer (TM_MODEL_FORMAT), &ok);
    s_set (root, "name", json_string (m->name), &ok);
    s_set (root, "version", json_integer (m->version), &ok);
    s_set (root, "description", json_string (m->description), &ok);
    if (m->retention_ms)
        s_set (root, "retention_ms", json_integer (m->retention_ms), &ok);
    for (uint32_t i = 0; i < m->nproperties; i++)
        s_set (props, m->properties[i].name, s_property_json (&m->properties[i], &ok), &ok);
    s_set (root, "properties", props, &ok);
    for (uint32_t i = 0; i < m->nattributes; i++) {
        const tm_model_attribute_t *a = &m->attributes[i];
        json_t *o = json_pack ("{s:s,s:b,s:s}", "type", s_attr_type_names[a->type], "required",
                               a->required, "description", a->description);
        if (o && a->dflt.set)
            s_set (o, "default", s_value_json (a->type, &a->dflt, &ok), &ok);
        s_set (attrs, a->name, o, &ok);
    }
    s_set (root, "attributes", attrs, &ok);
    for (uint32_t i = 0; i < m->nrelationships; i++) {
        const tm_model_relationship_t *r = &m->relationships[i];
        s_set (rels, r->name,
               json_pack ("{s:s,s:s,s:s,s:s}", "kind", s_rel_kind_names[r->kind], "target",
                          r->target, "attribute", r->attribute, "description", r->description),
               &ok);
    }
    s_set (root, "relationships", rels, &ok);
    for (uint32_t i = 0; i < m->nderived; i++) {
        const tm_model_derived_t *d = &m->derived[i];
        s_set (derived, d->name,
               json_pack ("{s:s,s:s,s:s}", "unit", d->unit, "description", d->description,
                          "expression", d->expression),
               &ok);
    }
    s_set (root, "derived", derived, &ok);
    for (uint32_t i = 0; i < m->naggregates; i++) {
        const tm_model_aggregate_t *g = &m->aggregates[i];
        json_t *o = json_object (), *fns = json_array ();
        for (size_t k = 0; fns && k < 4; k++)
            if ((g->functions & (1u << k))
                && json_array_append_new (fns, json_string (s_agg_names[k])) != 0)
                ok = false;
        if (o)
            s_set (o, "functions", fns, &ok);
        else
            json_decref (fns);
        if (o && g->nmodels) {
            json_t *ms = json_array ();
            for (uint32_t j = 0; ms && j < g->nmodels; j++)
                if (json_array_append_new (ms, json_string (g->models[j])) != 0)
                    ok = false;
            s_set (o, "models", ms, &ok);
        }
        s_set (aggs, g->property, o, &ok);
    }
    s_set (root, "aggregates", aggs, &ok);
    char *text = ok? s_dump_exact (root): NULL;
    json_decref (root);
    if (text)
        *len = strlen (text);
    return text;
}

//  ---------------------------------------------------------------------
//  The model

static const char *const s_model_fields[] = {
    "format", "name", "version", "description", "retention_ms", "properties", "attributes",
    "relationships", "derived", "aggregates", NULL};

//  Allocate the entries of one name -> object map; *count entries.
static int
s_map_prepare (s_ctx_t *ctx, json_t *root, const char *key, size_t max, size_t item_size,
               json_t **map, void **items)
{
    size_t n = 0;
    if (s_get_object (ctx, root, key, false, map) < 0)
        return -1;
    if (!*map)
        return 0;
    size_t saved = s_push (ctx, key);
    if (s_count_entries (ctx, *map, key, max, &n) != 0)
        return -1;
    s_pop (ctx, saved);
    *items = calloc (n? n: 1, item_size);
    if (!*items)
        return s_fail (ctx, "out of memory");
    return 0;
}

static int
s_parse_root (s_ctx_t *ctx, json_t *root, tm_model_t *m)
{
    if (!json_is_object (root))
        return s_fail (ctx, "expected an object, found %s", s_found (root));
    if (s_check_fields (ctx, root, s_model_fields) != 0)
        return -1;
    int64_t format = TM_MODEL_FORMAT, version = 0;
    if (s_get_integer (ctx, root, "format", 1, INT32_MAX, false, &format) < 0)
        return -1;
    if (format != TM_MODEL_FORMAT) {
        s_push (ctx, "format");
        return s_fail (ctx, "format %lld is not supported (this build reads format %d)",
                       (long long) format, TM_MODEL_FORMAT);
    }
    if (s_get_name (ctx, root, "name", true, m->name) < 0
        || s_get_integer (ctx, root, "version", 1, UINT32_MAX, true, &version) < 0
        || s_dup_string (ctx, root, "description", S_MODEL_DESC_MAX, false, &m->description)
               < 0
        || s_get_integer (ctx, root, "retention_ms", 1, S_RETENTION_MAX, false,
                          &m->retention_ms)
               < 0)
        return -1;
    m->version = (uint32_t) version;
    if (strcmp (m->name, TM_MODEL_GENERIC) == 0) {
        s_push (ctx, "name");
        return s_fail (ctx, "\"%s\" is the built-in model for twins without one",
                       TM_MODEL_GENERIC);
    }

    const char *key;
    json_t *map, *obj;
    size_t saved;
    //  Attributes first: relationships refer to them.
    if (s_map_prepare (ctx, root, "attributes", TM_MODEL_MAX_ATTRIBUTES,
                       sizeof *m->attributes, &map, (void **) &m->attributes)
        != 0)
        return -1;
    if (map) {
        json_object_foreach (map, key, obj) {
            if (s_is_extension (key))
                continue;
            tm_model_attribute_t *a = &m->attributes[m->nattributes++];
            strcpy (a->name, key);
            saved = s_push (ctx, "attributes");
            s_push (ctx, key);
            if (s_parse_attribute (ctx, obj, a) != 0)
                return -1;
            s_pop (ctx, saved);
        }
    }
    if (s_map_prepare (ctx, root, "properties", TM_MODEL_MAX_PROPERTIES,
                       sizeof *m->properties, &map, (void **) &m->properties)
        != 0)
        return -1;
    if (map) {
        json_object_foreach (map, key, obj) {
            if (s_is_extension (key))
                continue;
            tm_model_property_t *p = &m->properties[m->nproperties];
            *p = s_default_property;
            p->unit = p->description = NULL;       //  Not the static "": owned below
            strcpy (p->name, key);
            p->index = m->nproperties++;
            saved = s_push (ctx, "properties");
            s_push (ctx, key);
            if (s_parse_property (ctx, obj, p) != 0)
                return -1;
            s_pop (ctx, saved);
        }
    }
    if (s_map_prepare (ctx, root, "relationships", TM_MODEL_MAX_RELATIONSHIPS,
                       sizeof *m->relationships, &map, (void **) &m->relationships)
        != 0)
        return -1;
    if (map) {
        const char *parent = NULL;
        json_object_foreach (map, key, obj) {
            if (s_is_extension (key))
                continue;
            tm_model_relationship_t *r = &m->relationships[m->nrelationships++];
            strcpy (r->name, key);
            saved = s_push (ctx, "relationships");
            s_push (ctx, key);
            if (s_parse_relationship (ctx, obj, m, r) != 0)
                return -1;
            //  One parent: aggregates roll up one tree, not a graph.
            if (r->kind == TM_MODEL_REL_PARENT) {
                if (parent) {
                    s_push (ctx, "kind");
                    return s_fail (ctx, "a model has at most one parent (already "
                                        "relationships.%s)",
                                   parent);
                }
                parent = r->name;
            }
            s_pop (ctx, saved);
        }
    }
    if (s_map_prepare (ctx, root, "derived", TM_MODEL_MAX_DERIVED, sizeof *m->derived, &map,
                       (void **) &m->derived)
        != 0)
        return -1;
    if (map) {
        json_object_foreach (map, key, obj) {
            if (s_is_extension (key))
                continue;
            tm_model_derived_t *d = &m->derived[m->nderived++];
            strcpy (d->name, key);
            saved = s_push (ctx, "derived");
            s_push (ctx, key);
            if (s_parse_derived (ctx, obj, d) != 0)
                return -1;
            s_pop (ctx, saved);
        }
    }
    if (s_map_prepare (ctx, root, "aggregates", TM_MODEL_MAX_AGGREGATES,
                       sizeof *m->aggregates, &map, (void **) &m->aggregates)
        != 0)
        return -1;
    if (map) {
        json_object_foreach (map, key, obj) {
            if (s_is_extension (key))
                continue;
            tm_model_aggregate_t *g = &m->aggregates[m->naggregates++];
            strcpy (g->property, key);
            saved = s_push (ctx, "aggregates");
            s_push (ctx, key);
            if (s_parse_aggregate (ctx, obj, g) != 0)
                return -1;
            s_pop (ctx, saved);
        }
    }
    if (s_check_namespace (ctx, m) != 0)
        return -1;
    return s_check_derived_exprs (ctx, m);
}

tm_model_t *
tm_model_parse (const char *text, size_t len, const char *source, char *err, size_t err_size)
{
    s_ctx_t ctx;
    s_ctx_init (&ctx, source, err, err_size);
    if (!text) {
        s_fail (&ctx, "no text");
        return NULL;
    }
    if (len > TM_MODEL_MAX_TEXT) {
        s_fail (&ctx, "larger than %d bytes", TM_MODEL_MAX_TEXT);
        return NULL;
    }
    json_error_t jerr;
    //  Duplicate keys are refused: which of two "min"s did the author mean?
    //  jansson caps nesting depth, so hostile input cannot exhaust the stack.
    json_t *root = json_loadb (text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (err && err_size)
            snprintf (err, err_size, "%s:%d:%d: %s", ctx.source, jerr.line, jerr.column,
                      jerr.text);
        return NULL;
    }
    tm_model_t *self = calloc (1, sizeof *self);
    if (!self) {
        json_decref (root);
        s_fail (&ctx, "out of memory");
        return NULL;
    }
    int rc = s_parse_root (&ctx, root, self);
    json_decref (root);
    if (rc == 0) {
        s_index_properties (self);
        self->canonical = s_canonical (self, &self->canonical_len);
        if (!self->canonical)
            rc = s_fail (&ctx, "out of memory");
    }
    if (rc != 0)
        tm_model_destroy (&self);
    return self;
}

tm_model_t *
tm_model_load_file (const char *path, char *err, size_t err_size)
{
    FILE *f = fopen (path, "rb");
    if (!f) {
        if (err && err_size)
            snprintf (err, err_size, "%s: %s", path, strerror (errno));
        return NULL;
    }
    //  One byte over the limit tells "too large" from "exactly the limit".
    char *text = malloc (TM_MODEL_MAX_TEXT + 1);
    if (!text) {
        fclose (f);
        if (err && err_size)
            snprintf (err, err_size, "%s: out of memory", path);
        return NULL;
    }
    size_t n = fread (text, 1, TM_MODEL_MAX_TEXT + 1, f);
    bool bad = ferror (f);
    fclose (f);
    tm_model_t *self = NULL;
    if (bad) {
        if (err && err_size)
            snprintf (err, err_size, "%s: read error", path);
    }
    else
        self = tm_model_parse (text, n, path, err, err_size);
    free (text);
    return self;
}

const char *
tm_model_canonical (const tm_model_t *self, size_t *len)
{
    assert (self);
    if (len)
        *len = self->canonical_len;
    return self->canonical;
}

bool
tm_model_equal (const tm_model_t *a, const tm_model_t *b)
{
    assert (a && b);
    return a->canonical_len == b->canonical_len
        && memcmp (a->canonical, b->canonical, a->canonical_len) == 0;
}

const tm_model_attribute_t *
tm_model_attribute_find (const tm_model_t *self, const char *name)
{
    for (uint32_t i = 0; i < self->nattributes; i++)
        if (strcmp (self->attributes[i].name, name) == 0)
            return &self->attributes[i];
    return NULL;
}

const tm_model_derived_t *
tm_model_derived_find (const tm_model_t *self, const char *name)
{
    for (uint32_t i = 0; i < self->nderived; i++)
        if (strcmp (self->derived[i].name, name) == 0)
            return &self->derived[i];
    return NULL;
}

const tm_model_aggregate_t *
tm_model_aggregate_find (const tm_model_t *self, const char *name)
{
    for (uint32_t i = 0; i < self->naggregates; i++)
        if (strcmp (self->aggregates[i].property, name) == 0)
            return &self->aggregates[i];
    return NULL;
}

const tm_model_relationship_t *
tm_model_parent (const tm_model_t *self)
{
    for (uint32_t i = 0; i < self->nrelationships; i++)
        if (self->relationships[i].kind == TM_MODEL_REL_PARENT)
            return &self->relationships[i];
    return NULL;
}

int64_t
tm_model_retention_ms (const tm_model_t *self, const tm_model_property_t *prop)
{
    if (prop && prop->retention_ms)
        return prop->retention_ms;
    return self? self->retention_ms: 0;
}

const tm_model_property_t *
tm_model_default_property (void)
{
    return &s_default_property;
}

tm_model_quality_t
tm_model_check_value (const tm_model_property_t *prop, double value)
{
    if (!isfinite (value))
        return TM_MODEL_Q_INVALID_TYPE;
    if (prop->type == TM_MODEL_INTEGER && value != floor (value))
        return TM_MODEL_Q_INVALID_TYPE;
    if (prop->type == TM_MODEL_BOOLEAN && value != 0 && value != 1)
        return TM_MODEL_Q_INVALID_TYPE;
    if (value < prop->valid_min || value > prop->valid_max)
        return TM_MODEL_Q_OUT_OF_RANGE;
    return TM_MODEL_Q_GOOD;
}

const char *
tm_model_quality_name (tm_model_quality_t quality)
{
    return (unsigned) quality < TM_MODEL_Q_COUNT? s_quality_names[quality]: "unknown";
}

const char *
tm_model_type_name (tm_model_type_t type)
{
    return (unsigned) type <= TM_MODEL_BOOLEAN? s_type_names[type]: "unknown";
}

const char *
tm_model_attr_type_name (tm_model_attr_type_t type)
{
    return (unsigned) type <= TM_MODEL_ATTR_TAGS? s_attr_type_names[type]: "unknown";
}

int
tm_model_attribute_check (const tm_model_attribute_t *attr, const char *json, size_t len,
                          char *err, size_t err_size)
{
    s_ctx_t ctx;
    s_ctx_init (&ctx, "attribute", err, err_size);
    s_push (&ctx, attr->name);
    if (!json || len > TM_MODEL_MAX_TEXT)
        return s_fail (&ctx, "no value or larger than %d bytes", TM_MODEL_MAX_TEXT);
    json_error_t jerr;
    json_t *v = json_loadb (json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return s_fail (&ctx, "%s", jerr.text);
    tm_model_value_t value = {0};
    int rc = s_parse_value (&ctx, attr->type, v, &value);
    s_value_fini (&value);
    json_decref (v);
    return rc;
}

//  ---------------------------------------------------------------------
//  The registry. Models are few (tens to hundreds) and looked up when a
//  twin is created or its model changes, not per reading: a sorted array
//  with binary search is enough and lists in name order for free.

struct _tm_models_t {
    tm_model_t **models;           //  Sorted by name; owned
    size_t size;                   //  Models held
    size_t cap;                    //  Slots allocated
    uint64_t generation;           //  Bumped on every add, replace, remove
};

tm_models_t *
tm_models_new (void)
{
    return calloc (1, sizeof (tm_models_t));
}

void
tm_models_destroy (tm_models_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_models_t *self = *self_p;
    for (size_t i = 0; i < self->size; i++)
        tm_model_destroy (&self->models[i]);
    free (self->models);
    free (self);
    *self_p = NULL;
}

static int
s_name_cmp (const char *a, const char *b, size_t blen)
{
    size_t alen = strlen (a);
    int c = memcmp (a, b, alen < blen? alen: blen);
    if (c)
        return c;
    return alen < blen? -1: alen > blen? 1: 0;
}

//  Index of name, or where it would go (*found false).
static size_t
s_search (const tm_models_t *self, const char *name, size_t len, bool *found)
{
    size_t lo = 0, hi = self->size;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = s_name_cmp (self->models[mid]->name, name, len);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

int
tm_models_put (tm_models_t *self, tm_model_t **model_p, uint32_t *previous, char *err,
               size_t err_size)
{
    assert (self && model_p && *model_p);
    tm_model_t *model = *model_p;
    *model_p = NULL;
    if (previous)
        *previous = 0;
    if (err && err_size)
        *err = 0;
    bool found;
    size_t at = s_search (self, model->name, strlen (model->name), &found);
    if (found) {
        tm_model_t *held = self->models[at];
        int rc = 0;
        if (model->version < held->version) {
            if (err && err_size)
                snprintf (err, err_size, "%s: version %u is older than the loaded version %u",
                          model->name, model->version, held->version);
            rc = TM_MODELS_E_OLDER;
        }
        else
        if (model->version == held->version) {
            //  Loading the same file twice is harmless; two different
            //  models under one version would leave workers disagreeing
            //  on which one they run.
            rc = tm_model_equal (model, held)? TM_MODELS_E_UNCHANGED: TM_MODELS_E_CONFLICT;
            if (rc == TM_MODELS_E_CONFLICT && err && err_size)
                snprintf (err, err_size, "%s: version %u is already loaded with different "
                                         "content; raise \"version\" to replace it",
                          model->name, model->version);
        }
        if (rc) {
            tm_model_destroy (&model);
            return rc;
        }
        if (previous)
            *previous = held->version;
        tm_model_destroy (&held);
        self->models[at] = model;
        self->generation++;
        return 0;
    }
    if (self->size == self->cap) {
        size_t cap = self->cap? self->cap * 2: 16;
        tm_model_t **grown = realloc (self->models, cap * sizeof *grown);
        if (!grown) {
            if (err && err_size)
                snprintf (err, err_size, "%s: out of memory", model->name);
            tm_model_destroy (&model);
            return -1;
        }
        self->models = grown;
        self->cap = cap;
    }
    memmove (&self->models[at + 1], &self->models[at],
             (self->size - at) * sizeof self->models[0]);
    self->models[at] = model;
    self->size++;
    self->generation++;
    return 0;
}

int
tm_models_load_file (tm_models_t *self, const char *path, char *err, size_t err_size)
{
    tm_model_t *model = tm_model_load_file (path, err, err_size);
    if (!model)
        return -1;
    return tm_models_put (self, &model, NULL, err, err_size);
}

const tm_model_t *
tm_models_find (const tm_models_t *self, const char *name, size_t len)
{
    bool found;
    size_t at = s_search (self, name, len, &found);
    return found? self->models[at]: NULL;
}

int
tm_models_remove (tm_models_t *self, const char *name)
{
    bool found;
    size_t at = s_search (self, name, strlen (name), &found);
    if (!found)
        return -1;
    tm_model_destroy (&self->models[at]);
    memmove (&self->models[at], &self->models[at + 1],
             (self->size - at - 1) * sizeof self->models[0]);
    self->size--;
    self->generation++;
    return 0;
}

size_t
tm_models_size (const tm_models_t *self)
{
    return self->size;
}

const tm_model_t *
tm_models_at (const tm_models_t *self, size_t index)
{
    return index < self->size? self->models[index]: NULL;
}

uint64_t
tm_models_generation (const tm_models_t *self)
{
    return self->generation;
}
