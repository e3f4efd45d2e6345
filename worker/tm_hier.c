/*  tm_hier - a parent twin's children and their aggregates  */
#include "tm_hier.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_util.h"

#include <czmq.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *id;                      //  Child entity id, owned
    const char *model;             //  Interned model name ("" if none)
    uint32_t nvalues;              //  Entries in use in values
    uint32_t cap;                  //  Entries allocated
    tm_hier_value_t *values;       //  Latest contribution per property (names interned)
} s_child_t;

typedef struct {
    zhashx_t *children;            //  Child id -> s_child_t, owned
    void *tag;                     //  The caller's (the worker keeps the parent's twin)
} s_parent_t;

struct _tm_hier_t {
    zhashx_t *parents;             //  Parent id -> s_parent_t, owned
    zhashx_t *names;               //  Interned property and model names: name -> copy
    size_t max_children;           //  Per parent
    uint64_t nchildren;            //  Over all parents
    uint64_t children_refused;     //  Values refused because the parent was full
    uint64_t values_refused;       //  Values refused because the child was full
};

static void
s_child_free (void **item)
{
    s_child_t *c = (s_child_t *) *item;
    if (c) {
        free (c->id);
        free (c->values);
        free (c);
    }
    *item = NULL;
}

static void
s_parent_free (void **item)
{
    s_parent_t *p = (s_parent_t *) *item;
    if (p) {
        zhashx_destroy (&p->children);
        free (p);
    }
    *item = NULL;
}

static void
s_name_free (void **item)
{
    free (*item);
    *item = NULL;
}

tm_hier_t *
tm_hier_new (size_t max_children)
{
    tm_hier_t *self = (tm_hier_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->max_children = max_children? max_children: TM_HIER_DEFAULT_MAX_CHILDREN;
    self->parents = zhashx_new ();
    self->names = zhashx_new ();
    if (!self->parents || !self->names) {
        tm_hier_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->parents, s_parent_free);
    zhashx_set_destructor (self->names, s_name_free);
    return self;
}

void
tm_hier_destroy (tm_hier_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_hier_t *self = *self_p;
    zhashx_destroy (&self->parents);
    zhashx_destroy (&self->names);
    free (self);
    *self_p = NULL;
}

//  One copy of each property and model name, so a child's values compare
//  names as pointers and a million children share a few strings.
static const char *
s_intern (tm_hier_t *self, const char *name)
{
    const char *held = (const char *) zhashx_lookup (self->names, name);
    if (held)
        return held;
    char *copy = strdup (name);
    if (!copy || zhashx_insert (self->names, name, copy) != 0) {
        free (copy);
        return NULL;
    }
    return copy;
}

static s_parent_t *
s_parent (tm_hier_t *self, const char *id, bool create)
{
    s_parent_t *p = (s_parent_t *) zhashx_lookup (self->parents, id);
    if (p || !create)
        return p;
    p = (s_parent_t *) calloc (1, sizeof *p);
    if (!p)
        return NULL;
    p->children = zhashx_new ();
    if (!p->children || zhashx_insert (self->parents, id, p) != 0) {
        zhashx_destroy (&p->children);
        free (p);
        return NULL;
    }
    zhashx_set_destructor (p->children, s_child_free);
    return p;
}

int
tm_hier_apply (tm_hier_t *self, const tm_hier_entry_t *e, tm_hier_counts_t *counts)
{
    return tm_hier_apply_tag (self, e, counts, NULL);
}

int
tm_hier_apply_tag (tm_hier_t *self, const tm_hier_entry_t *e, tm_hier_counts_t *counts,
                   void ***tag_p)
{
    if (tag_p)
        *tag_p = NULL;
    if (e->detached) {
        s_parent_t *p = s_parent (self, e->parent, false);
        if (p && zhashx_lookup (p->children, e->child)) {
            zhashx_delete (p->children, e->child);
            self->nchildren--;
            counts->applied++;
            //  A parent without children holds nothing worth keeping.
            if (zhashx_size (p->children) == 0) {
                zhashx_delete (self->parents, e->parent);
                p = NULL;
            }
        }
        else
            counts->ignored++;
        if (tag_p && p)
            *tag_p = &p->tag;
        return 0;
    }
    if (e->nvalues == 0)
        return 0;
    s_parent_t *p = s_parent (self, e->parent, true);
    if (!p) {
        counts->refused += (uint32_t) e->nvalues;
        return -1;
    }
    if (tag_p)
        *tag_p = &p->tag;
    s_child_t *c = (s_child_t *) zhashx_lookup (p->children, e->child);
    if (!c) {
        if (zhashx_size (p->children) >= self->max_children) {
            counts->refused += (uint32_t) e->nvalues;
            self->children_refused += e->nvalues;
            return 0;
        }
        c = (s_child_t *) calloc (1, sizeof *c);
        if (c)
            c->id = strdup (e->child);
        if (!c || !c->id || zhashx_insert (p->children, e->child, c) != 0) {
            if (c)
                free (c->id);
            free (c);
            counts->refused += (uint32_t) e->nvalues;
            return -1;
        }
        self->nchildren++;
    }
    const char *model = s_intern (self, e->child_model? e->child_model: "");
    if (model)
        c->model = model;
    for (size_t i = 0; i < e->nvalues; i++) {
        const tm_hier_value_t *v = &e->values[i];
        //  The child's own names first (a few, compared as strings): an
        //  update of a property it has needs no trip through the intern
        //  table, which was a hash lookup per value.
        tm_hier_value_t *held = NULL;
        for (uint32_t k = 0; k < c->nvalues && !held; k++)
            if (c->values[k].property == v->property
                || strcmp (c->values[k].property, v->property) == 0)
                held = &c->values[k];
        const char *name = held? held->property: s_intern (self, v->property);
        if (!name) {
            counts->refused++;
            continue;
        }
        if (held) {
            //  Idempotent by child, property and timestamp (DESIGN.md's unit
            //  of idempotency is the series and its timestamp): a repeat or
            //  a replay of an older update changes nothing, whatever value
            //  it carries, so applying any message twice is a no-op.
            if (v->ts_ms <= held->ts_ms) {
                counts->ignored++;
                continue;
            }
        }
        else {
            if (c->nvalues >= TM_HIER_MAX_VALUES) {
                counts->refused++;
                self->values_refused++;
                continue;
            }
            if (c->nvalues == c->cap) {
                uint32_t cap = c->cap? c->cap * 2: 4;
                tm_hier_value_t *grown =
                    (tm_hier_value_t *) realloc (c->values, cap * sizeof *grown);
                if (!grown) {
                    counts->refused++;
                    continue;
                }
                c->values = grown;
                c->cap = cap;
            }
            held = &c->values[c->nvalues++];
        }
        held->property = name;
        held->value = v->value;
        held->ts_ms = v->ts_ms;
        held->anomalous = v->anomalous;
        counts->applied++;
    }
    return 0;
}

bool
tm_hier_has_parent (tm_hier_t *self, const char *parent)
{
    return s_parent (self, parent, false) != NULL;
}

size_t
tm_hier_nchildren (tm_hier_t *self, const char *parent)
{
    s_parent_t *p = s_parent (self, parent, false);
    return p? zhashx_size (p->children): 0;
}

static int
s_agg_cmp (const void *a, const void *b)
{
    return strcmp (((const tm_hier_agg_t *) a)->property, ((const tm_hier_agg_t *) b)->property);
}

size_t
tm_hier_aggregates (tm_hier_t *self, const char *parent, tm_hier_filter_fn *filter, void *arg,
                    tm_hier_agg_t *out, size_t max)
{
    s_parent_t *p = s_parent (self, parent, false);
    if (!p || max == 0)
        return 0;
    if (max > TM_HIER_MAX_PROPS)
        max = TM_HIER_MAX_PROPS;
    //  Neumaier's compensated sum per property: the mean must not depend
    //  on the order children happen to sit in the hash table.
    double sum[TM_HIER_MAX_PROPS], comp[TM_HIER_MAX_PROPS];
    size_t n = 0;
    for (s_child_t *c = (s_child_t *) zhashx_first (p->children); c;
         c = (s_child_t *) zhashx_next (p->children)) {
        for (uint32_t k = 0; k < c->nvalues; k++) {
            const tm_hier_value_t *v = &c->values[k];
            if (filter && !filter (arg, c->model, v->property))
                continue;
            size_t i = 0;
            while (i < n && out[i].property != v->property)
                i++;
            if (i == n) {
                if (n == max)
                    continue;
                out[n] = (tm_hier_agg_t) {.property = v->property, .min = v->value,
                                          .max = v->value, .newest_ts_ms = v->ts_ms};
                sum[n] = comp[n] = 0;
                n++;
            }
            tm_hier_agg_t *a = &out[i];
            a->children++;
            double t = sum[i] + v->value;
            if (fabs (sum[i]) >= fabs (v->value))
                comp[i] += (sum[i] - t) + v->value;
            else
                comp[i] += (v->value - t) + sum[i];
            sum[i] = t;
            if (v->value < a->min)
                a->min = v->value;
            if (v->value > a->max)
                a->max = v->value;
            a->anomalous += v->anomalous;
            if (v->ts_ms > a->newest_ts_ms)
                a->newest_ts_ms = v->ts_ms;
        }
    }
    for (size_t i = 0; i < n; i++)
        out[i].mean = (sum[i] + comp[i]) / out[i].children;
    qsort (out, n, sizeof *out, s_agg_cmp);
    return n;
}

static int
s_child_cmp (const void *a, const void *b)
{
    return strcmp ((*(s_child_t *const *) a)->id, (*(s_child_t *const *) b)->id);
}

size_t
tm_hier_children (tm_hier_t *self, const char *parent, tm_hier_child_t *out, size_t max,
                  size_t *total)
{
    *total = 0;
    s_parent_t *p = s_parent (self, parent, false);
    if (!p)
        return 0;
    size_t n = zhashx_size (p->children);
    *total = n;
    s_child_t **all = (s_child_t **) malloc ((n? n: 1) * sizeof *all);
    if (!all)
        return 0;
    size_t i = 0;
    for (s_child_t *c = (s_child_t *) zhashx_first (p->children); c && i < n;
         c = (s_child_t *) zhashx_next (p->children))
        all[i++] = c;
    qsort (all, i, sizeof *all, s_child_cmp);
    size_t shown = i < max? i: max;
    for (size_t k = 0; k < shown; k++)
        out[k] = (tm_hier_child_t) {.child = all[k]->id, .model = all[k]->model,
                                    .values = all[k]->values, .nvalues = all[k]->nvalues};
    free (all);
    return shown;
}

size_t
tm_hier_drop (tm_hier_t *self, bool (*drop) (void *arg, const char *parent), void *arg)
{
    zlistx_t *gone = zlistx_new ();
    if (!gone)
        return 0;
    for (s_parent_t *p = (s_parent_t *) zhashx_first (self->parents); p;
         p = (s_parent_t *) zhashx_next (self->parents)) {
        const char *id = (const char *) zhashx_cursor (self->parents);
        char *copy = drop (arg, id)? strdup (id): NULL;
        if (copy && !zlistx_add_end (gone, copy))
            free (copy);
    }
    size_t n = 0;
    for (char *id = (char *) zlistx_first (gone); id; id = (char *) zlistx_next (gone)) {
        s_parent_t *p = s_parent (self, id, false);
        if (p) {
            self->nchildren -= zhashx_size (p->children);
            zhashx_delete (self->parents, id);
            n++;
        }
        free (id);
    }
    zlistx_destroy (&gone);
    return n;
}

void
tm_hier_stats (tm_hier_t *self, tm_hier_stats_t *stats)
{
    stats->parents = zhashx_size (self->parents);
    stats->children = self->nchildren;
    stats->children_refused = self->children_refused;
    stats->values_refused = self->values_refused;
}

//  ---------------------------------------------------------------------
//  The CHILD_UPDATE codec

static void
s_err (char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || !err_size)
        return;
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (err, err_size, fmt, ap);
    va_end (ap);
}

//  A string from the wire of 1..max bytes (0..max if optional) of UTF-8.
static bool
s_text_ok (const char *s, size_t max, bool optional)
{
    if (!s)
        return optional;
    size_t len = strnlen (s, max + 1);
    if (len > max || (len == 0 && !optional))
        return false;
    return tm_util_utf8_valid (s, len);
}

long
tm_hier_decode_update (const uint8_t *data, size_t size, tm_hier_entry_fn *fn, void *arg,
                       char *err, size_t err_size)
{
    //  One arena per thread, reused: a ChildUpdate is thousands of small
    //  entries, and protobuf-c's own allocation per field cost more than
    //  the decoding (measured under load, docs/hierarchy.md).
    static _Thread_local tm_codec_arena_t *arena;
    if (!arena && !(arena = tm_codec_arena_new ())) {
        s_err (err, err_size, "out of memory");
        return -1;
    }
    tm_codec_arena_reset (arena);
    Twinmesh__ChildUpdate *u = (Twinmesh__ChildUpdate *) tm_codec_unpack_in (
        &twinmesh__child_update__descriptor, data, size, arena);
    if (!u) {
        s_err (err, err_size, "ChildUpdate does not decode");
        return -1;
    }
    long result = -1;
    if (u->n_entries > TM_HIER_MAX_ENTRIES) {
        s_err (err, err_size, "%zu entries, at most %d", u->n_entries, TM_HIER_MAX_ENTRIES);
        goto done;
    }
    //  Check everything first: a message is applied whole or not at all.
    size_t total = 0;
    for (size_t i = 0; i < u->n_entries; i++) {
        const Twinmesh__ChildEntry *e = u->entries[i];
        if (!e || !s_text_ok (e->parent, TM_HIER_MAX_ID, false)
            || !s_text_ok (e->child, TM_HIER_MAX_ID, false)
            || !s_text_ok (e->child_model, TM_HIER_MAX_NAME, true)
            || !s_text_ok (e->parent_model, TM_HIER_MAX_NAME, true)) {
            s_err (err, err_size, "entry %zu: parent and child must be 1-128 bytes of UTF-8, "
                                  "models at most 64", i);
            goto done;
        }
        if (e->n_values > TM_HIER_MAX_VALUES || (e->detached && e->n_values)) {
            s_err (err, err_size, "entry %zu: at most %d values, none on a detachment", i,
                   TM_HIER_MAX_VALUES);
            goto done;
        }
        total += e->n_values;
        if (total > TM_HIER_MAX_MSG_VALUES) {
            s_err (err, err_size, "more than %d values", TM_HIER_MAX_MSG_VALUES);
            goto done;
        }
        for (size_t k = 0; k < e->n_values; k++) {
            const Twinmesh__ChildValue *v = e->values[k];
            if (!v || !s_text_ok (v->property, TM_HIER_MAX_NAME, false) || !isfinite (v->value)) {
                s_err (err, err_size, "entry %zu value %zu: a property of 1-64 bytes and a "
                                      "finite value", i, k);
                goto done;
            }
        }
    }
    for (size_t i = 0; i < u->n_entries; i++) {
        const Twinmesh__ChildEntry *e = u->entries[i];
        tm_hier_value_t values[TM_HIER_MAX_VALUES];
        for (size_t k = 0; k < e->n_values; k++)
            values[k] = (tm_hier_value_t) {.property = e->values[k]->property,
                                           .value = e->values[k]->value,
                                           .ts_ms = e->values[k]->ts_ms,
                                           .anomalous = e->values[k]->anomalous};
        tm_hier_entry_t entry = {.parent = e->parent, .child = e->child,
                                 .child_model = e->child_model? e->child_model: "",
                                 .parent_model = e->parent_model? e->parent_model: "",
                                 .values = values, .nvalues = e->n_values,
                                 .detached = e->detached};
        if (fn && fn (arg, &entry) != 0)
            break;
    }
    result = (long) u->n_entries;
done:
    tm_codec_arena_reset (arena);
    return result;
}

//  A message under construction keeps its strings in one arena (offsets,
//  since the arena grows), so building one costs no allocation per entry:
//  a full message is a few thousand entries, built up to 20 times a second.
typedef struct {
    size_t parent, child, child_model, parent_model;   //  Offsets in the arena
    size_t first;                  //  Index of its first value in the message
    size_t nvalues;
    bool detached;
} s_msg_entry_t;

typedef struct {
    size_t property;               //  Offset in the arena
    double value;
    int64_t ts_ms;
    bool anomalous;
} s_msg_value_t;

struct _tm_hier_msg_t {
    s_msg_entry_t entries[TM_HIER_MAX_ENTRIES];
    size_t nentries;
    s_msg_value_t values[TM_HIER_MAX_MSG_VALUES];
    size_t nvalues;
    char *arena;                   //  NUL-terminated strings, back to back
    size_t used, cap;
};

tm_hier_msg_t *
tm_hier_msg_new (void)
{
    return (tm_hier_msg_t *) calloc (1, sizeof (tm_hier_msg_t));
}

void
tm_hier_msg_destroy (tm_hier_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free ((*self_p)->arena);
    free (*self_p);
    *self_p = NULL;
}

void
tm_hier_msg_reset (tm_hier_msg_t *self)
{
    self->nentries = self->nvalues = self->used = 0;
}

//  Copy a string into the arena; its offset, or SIZE_MAX if memory is short.
static size_t
s_arena_put (tm_hier_msg_t *self, const char *s)
{
    size_t len = strlen (s? s: "") + 1;
    if (self->used + len > self->cap) {
        size_t cap = self->cap? self->cap: 65536;
        while (cap < self->used + len)
            cap *= 2;
        char *grown = (char *) realloc (self->arena, cap);
        if (!grown)
            return SIZE_MAX;
        self->arena = grown;
        self->cap = cap;
    }
    memcpy (self->arena + self->used, s? s: "", len);
    self->used += len;
    return self->used - len;
}

int
tm_hier_msg_add (tm_hier_msg_t *self, const tm_hier_entry_t *e)
{
    size_t nvalues = e->detached? 0: e->nvalues;
    if (self->nentries == TM_HIER_MAX_ENTRIES
        || self->nvalues + nvalues > TM_HIER_MAX_MSG_VALUES)
        return 1;
    size_t used = self->used;
    s_msg_entry_t m = {.parent = s_arena_put (self, e->parent),
                       .child = s_arena_put (self, e->child),
                       .child_model = s_arena_put (self, e->child_model),
                       .parent_model = s_arena_put (self, e->parent_model),
                       .first = self->nvalues, .nvalues = nvalues, .detached = e->detached};
    bool failed = m.parent == SIZE_MAX || m.child == SIZE_MAX || m.child_model == SIZE_MAX
                  || m.parent_model == SIZE_MAX;
    for (size_t k = 0; k < nvalues && !failed; k++) {
        s_msg_value_t *v = &self->values[self->nvalues + k];
        *v = (s_msg_value_t) {.property = s_arena_put (self, e->values[k].property),
                              .value = e->values[k].value, .ts_ms = e->values[k].ts_ms,
                              .anomalous = e->values[k].anomalous};
        failed = v->property == SIZE_MAX;
    }
    if (failed) {
        self->used = used;         //  the message stays as it was
        return -1;
    }
    self->entries[self->nentries++] = m;
    self->nvalues += nvalues;
    return 0;
}

size_t
tm_hier_msg_entries (const tm_hier_msg_t *self)
{
    return self->nentries;
}

size_t
tm_hier_msg_values (const tm_hier_msg_t *self)
{
    return self->nvalues;
}

uint8_t *
tm_hier_msg_encode (const tm_hier_msg_t *self, size_t *size)
{
    *size = 0;
    size_t ne = self->nentries, nv = self->nvalues;
    Twinmesh__ChildEntry *entries = (Twinmesh__ChildEntry *) calloc (ne? ne: 1, sizeof *entries);
    Twinmesh__ChildEntry **eptrs = (Twinmesh__ChildEntry **) calloc (ne? ne: 1, sizeof *eptrs);
    Twinmesh__ChildValue *values = (Twinmesh__ChildValue *) calloc (nv? nv: 1, sizeof *values);
    Twinmesh__ChildValue **vptrs = (Twinmesh__ChildValue **) calloc (nv? nv: 1, sizeof *vptrs);
    uint8_t *buf = NULL;
    if (!entries || !eptrs || !values || !vptrs)
        goto done;
    for (size_t i = 0; i < nv; i++) {
        twinmesh__child_value__init (&values[i]);
        values[i].property = self->arena + self->values[i].property;
        values[i].value = self->values[i].value;
        values[i].ts_ms = self->values[i].ts_ms;
        values[i].anomalous = self->values[i].anomalous;
        vptrs[i] = &values[i];
    }
    for (size_t i = 0; i < ne; i++) {
        const s_msg_entry_t *m = &self->entries[i];
        twinmesh__child_entry__init (&entries[i]);
        entries[i].parent = self->arena + m->parent;
        entries[i].child = self->arena + m->child;
        entries[i].child_model = self->arena + m->child_model;
        entries[i].parent_model = self->arena + m->parent_model;
        entries[i].detached = m->detached;
        entries[i].n_values = m->nvalues;
        entries[i].values = m->nvalues? &vptrs[m->first]: NULL;
        eptrs[i] = &entries[i];
    }
    Twinmesh__ChildUpdate u = TWINMESH__CHILD_UPDATE__INIT;
    u.n_entries = ne;
    u.entries = eptrs;
    buf = tm_codec_pack_buf (&u.base, size);
done:
    free (entries);
    free (eptrs);
    free (values);
    free (vptrs);
    return buf;
}

uint8_t *
tm_hier_encode_twin_extra (tm_hier_t *self, const char *parent, tm_hier_filter_fn *filter,
                           void *arg, size_t *size)
{
    *size = 0;
    size_t nchildren = tm_hier_nchildren (self, parent);
    if (nchildren == 0)
        return NULL;
    tm_hier_agg_t aggs[TM_HIER_MAX_PROPS];
    size_t n = tm_hier_aggregates (self, parent, filter, arg, aggs, TM_HIER_MAX_PROPS);
    Twinmesh__ChildAggregate items[TM_HIER_MAX_PROPS];
    Twinmesh__ChildAggregate *ptrs[TM_HIER_MAX_PROPS];
    for (size_t i = 0; i < n; i++) {
        twinmesh__child_aggregate__init (&items[i]);
        items[i].property = (char *) aggs[i].property;
        items[i].children = aggs[i].children;
        items[i].mean = aggs[i].mean;
        items[i].min = aggs[i].min;
        items[i].max = aggs[i].max;
        items[i].anomalous = aggs[i].anomalous;
        items[i].newest_ts_ms = aggs[i].newest_ts_ms;
        ptrs[i] = &items[i];
    }
    Twinmesh__TwinState ts = TWINMESH__TWIN_STATE__INIT;
    ts.n_child_aggregates = n;
    ts.child_aggregates = ptrs;
    ts.children = nchildren > UINT32_MAX? UINT32_MAX: (uint32_t) nchildren;
    return tm_codec_pack_buf (&ts.base, size);
}

uint8_t *
tm_hier_encode_children (tm_hier_t *self, const char *parent, size_t limit, size_t *size)
{
    *size = 0;
    size_t total = tm_hier_nchildren (self, parent);
    size_t want = total < limit? total: limit;
    tm_hier_child_t *kids = (tm_hier_child_t *) calloc (want? want: 1, sizeof *kids);
    Twinmesh__ChildInfo *infos = (Twinmesh__ChildInfo *) calloc (want? want: 1, sizeof *infos);
    Twinmesh__ChildInfo **iptrs = (Twinmesh__ChildInfo **) calloc (want? want: 1, sizeof *iptrs);
    size_t nv = 0;
    uint8_t *buf = NULL;
    Twinmesh__ChildValue *values = NULL;
    Twinmesh__ChildValue **vptrs = NULL;
    if (!kids || !infos || !iptrs)
        goto done;
    size_t shown = tm_hier_children (self, parent, kids, want, &total);
    for (size_t i = 0; i < shown; i++)
        nv += kids[i].nvalues;
    values = (Twinmesh__ChildValue *) calloc (nv? nv: 1, sizeof *values);
    vptrs = (Twinmesh__ChildValue **) calloc (nv? nv: 1, sizeof *vptrs);
    if (!values || !vptrs)
        goto done;
    size_t v = 0;
    for (size_t i = 0; i < shown; i++) {
        twinmesh__child_info__init (&infos[i]);
        infos[i].entity = (char *) kids[i].child;
        infos[i].model = (char *) kids[i].model;
        infos[i].values = &vptrs[v];
        infos[i].n_values = kids[i].nvalues;
        for (size_t k = 0; k < kids[i].nvalues; k++, v++) {
            twinmesh__child_value__init (&values[v]);
            values[v].property = (char *) kids[i].values[k].property;
            values[v].value = kids[i].values[k].value;
            values[v].ts_ms = kids[i].values[k].ts_ms;
            values[v].anomalous = kids[i].values[k].anomalous;
            vptrs[v] = &values[v];
        }
        iptrs[i] = &infos[i];
    }
    Twinmesh__ChildrenReply rep = TWINMESH__CHILDREN_REPLY__INIT;
    rep.entity = (char *) parent;
    rep.n_children = shown;
    rep.children = iptrs;
    rep.total = total > UINT32_MAX? UINT32_MAX: (uint32_t) total;
    rep.truncated = shown < total;
    buf = tm_codec_pack_buf (&rep.base, size);
done:
    free (kids);
    free (infos);
    free (iptrs);
    free (values);
    free (vptrs);
    return buf;
}
