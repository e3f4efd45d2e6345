/*  tm_qexec - executing a query plan: partial answers, merges, results

    tm_qpartial_feed is the hot path: a worker calls it once per twin, up
    to a million twins per query, so it allocates nothing but new groups
    and kept rows. A group key tuple is encoded into a scratch buffer
    (type byte and payload per key), hashed, and looked up in an
    open-addressing table of group indexes; a query without GROUP BY has
    its one group always at index 0. Rows with ORDER BY live in a binary
    heap whose top is the worst kept row, so a row that does not make the
    cut costs one comparison and no allocation.

    Everything that arrives as bytes (partials from workers and peer
    sites, results at the client) is checked completely before a merge
    touches the partial, so a bad message leaves it as it was.

    Ties are broken on every value of a row or group, so the answer does
    not depend on how the twins were split between workers.
*/
#include "tm_qexec.h"
#include "tm_codec.h"
#include "tm_sketch.h"
#include "tm_util.h"

#include <assert.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_RESULT_SITES 1024        //  Sites in a decoded result
#define S_MAX_WARNINGS 1024            //  Warnings in a decoded result
#define S_MAX_MISSING (1 << 20)        //  Missing shards in a decoded result
#define S_MAX_VALUES (TM_QUERY_MAX_SELECT + TM_QUERY_MAX_ORDER)

//  Key encoding tags, one byte per value.
enum { S_KEY_NULL = 0, S_KEY_NUMBER, S_KEY_STRING, S_KEY_BOOL, S_KEY_LOCATION };

//  The state of one aggregate in one group.
typedef struct {
    uint64_t count;                    //  Values counted
    double sum;                        //  Of numbers
    double min;                        //  Smallest number (count > 0, not noisy)
    double max;                        //  Largest number (count > 0, not noisy)
    tm_sketch_t *sketch;               //  Quantiles: created with the first value
    bool noisy;                        //  Noise added: min, max, sketch are gone
} s_state_t;

//  A group: its encoded key tuple, twins and aggregate states, in one block.
typedef struct {
    uint64_t hash;                     //  Of the key bytes
    uint64_t twins;                    //  Twins in the group
    size_t key_len;                    //  Bytes of key
    uint8_t *key;                      //  Encoded keys, after the states
    s_state_t states[];                //  One per aggregate
} s_group_t;

//  A row: values, then the strings they point to, in one block.
typedef struct {
    size_t nvalues;                    //  Values in the row
    tm_expr_value_t values[];          //  Outputs, then ORDER BY keys (partials)
} s_row_t;

//  What orders rows: ORDER BY keys after the outputs, then every value.
typedef struct {
    size_t noutputs;                   //  Output values first in a row
    size_t norder;                     //  ORDER BY values after them
    bool desc[TM_QUERY_MAX_ORDER];     //  Per ORDER BY key
} s_order_t;

struct _tm_qpartial_t {
    const tm_query_t *query;           //  Borrowed
    bool aggregate;                    //  Groups, else rows
    const tm_expr_t *where;            //  Filter or NULL
    size_t nkeys;                      //  GROUP BY keys
    const tm_expr_t *keys[TM_QUERY_MAX_GROUP_KEYS];   //  Over the columns
    size_t naggs;                      //  Aggregates
    tm_query_agg_t func[TM_QUERY_MAX_AGGREGATES];     //  Their functions
    const tm_expr_t *arg[TM_QUERY_MAX_AGGREGATES];    //  Their arguments, NULL = count(*)
    const tm_expr_t *outputs[TM_QUERY_MAX_SELECT];    //  Row queries' outputs
    const tm_expr_t *order[TM_QUERY_MAX_ORDER];       //  Row queries' ORDER BY
    s_order_t ord;                     //  Row ordering
    size_t cap;                        //  Rows kept at most
    bool has_limit;                    //  LIMIT given: dropping is not truncation
    uint64_t scanned;                  //  Twins fed or merged in
    uint64_t matched;                  //  Twins that passed WHERE
    bool truncated;                    //  Something was dropped at a limit
    s_group_t **groups;                //  Groups in creation order
    size_t ngroups;                    //  Groups in use
    size_t groups_cap;                 //  Allocated entries of groups
    uint32_t *table;                   //  Open addressing: group index + 1, 0 = empty
    size_t table_size;                 //  Power of two, at least twice ngroups
    uint8_t *scratch;                  //  Encoded key of the twin being fed
    size_t scratch_cap;                //  Bytes of scratch
    s_row_t **rows;                    //  Kept rows; a heap (worst on top) with ORDER BY
    size_t nrows;                      //  Rows kept
    size_t rows_cap;                   //  Allocated entries of rows
    struct _tm_qbatch_t *batch;        //  Batch feeding's scratch, made on first use
};

typedef struct _tm_qbatch_t s_qbatch_t;
static void s_qbatch_free (struct _tm_qpartial_t *self);

//  One site's answer in a result.
typedef struct {
    char *name;                        //  Site name
    bool answered;                     //  Within the deadline
    char *detail;                      //  Why not, or the policy applied
    uint64_t matched;                  //  Its twins matched
    uint32_t shards_missing;           //  Its shards that did not answer
    s_row_t **rows;                    //  Its own answer (same columns)
    size_t nrows;                      //  Rows in it
} s_site_t;

struct _tm_qresult_t {
    size_t ncolumns;                   //  Output columns
    char **columns;                    //  Titles
    s_row_t **rows;                    //  Final rows
    size_t nrows;                      //  Rows
    uint64_t scanned;                  //  Twins looked at
    uint64_t matched;                  //  Twins that passed WHERE
    bool truncated;                    //  Groups or rows were dropped
    uint32_t shards_total;             //  Shards asked
    uint32_t *missing;                 //  Shards with no answer
    size_t nmissing;                   //  Entries of missing
    uint32_t elapsed_us;               //  Time the broker took
    s_site_t *sites;                   //  Federated answers
    size_t nsites;                     //  Entries of sites
    char **warnings;                   //  Broker's warnings
    size_t nwarnings;                  //  Entries of warnings
};

//  ---------------------------------------------------------------------
//  Values

static int
s_rank (tm_expr_type_t type)
{
    switch (type) {
        case TM_EXPR_NUMBER:
            return 0;
        case TM_EXPR_STRING:
            return 1;
        case TM_EXPR_BOOL:
            return 2;
        case TM_EXPR_LOCATION:
            return 3;
        default:
            return 4;
    }
}

static int
s_num_cmp (double a, double b)
{
    return a < b? -1: a > b? 1: 0;
}

//  Ascending order of two values: numbers < strings < booleans <
//  locations < null.
static int
s_value_cmp (const tm_expr_value_t *a, const tm_expr_value_t *b)
{
    int ra = s_rank (a->type), rb = s_rank (b->type);
    if (ra != rb)
        return ra < rb? -1: 1;
    switch (a->type) {
        case TM_EXPR_NUMBER:
            return s_num_cmp (a->num, b->num);
        case TM_EXPR_STRING: {
            size_t n = a->len < b->len? a->len: b->len;
            int c = n? memcmp (a->str, b->str, n): 0;
            if (c)
                return c < 0? -1: 1;
            return a->len < b->len? -1: a->len > b->len? 1: 0;
        }
        case TM_EXPR_BOOL:
            return (int) a->b - (int) b->b;
        case TM_EXPR_LOCATION: {
            int c = s_num_cmp (a->lat, b->lat);
            return c? c: s_num_cmp (a->lon, b->lon);
        }
        default:
            return 0;
    }
}

//  One ORDER BY key: nulls last in both directions.
static int
s_key_cmp (const tm_expr_value_t *a, const tm_expr_value_t *b, bool desc)
{
    bool na = a->type == TM_EXPR_NULL, nb = b->type == TM_EXPR_NULL;
    if (na || nb)
        return (int) na - (int) nb;
    int c = s_value_cmp (a, b);
    return desc? -c: c;
}

//  ORDER BY keys only.
static int
s_order_cmp (const s_order_t *o, const tm_expr_value_t *a, const tm_expr_value_t *b)
{
    for (size_t i = 0; i < o->norder; i++) {
        int c = s_key_cmp (&a[o->noutputs + i], &b[o->noutputs + i], o->desc[i]);
        if (c)
            return c;
    }
    return 0;
}

//  ORDER BY keys, then every value: a total order on row contents.
static int
s_row_cmp (const s_order_t *o, const tm_expr_value_t *a, const tm_expr_value_t *b)
{
    int c = s_order_cmp (o, a, b);
    for (size_t i = 0; !c && i < o->noutputs + o->norder; i++)
        c = s_value_cmp (&a[i], &b[i]);
    return c;
}

//  A copy of a string fit for the wire: UTF-8 with no NUL, bad bytes as
//  '?'. Writes len bytes and a NUL to out.
static void
s_copy_clean (char *out, const char *s, size_t len)
{
    memcpy (out, s, len);
    out[len] = 0;
    if (tm_util_utf8_valid (s, len) && !memchr (s, 0, len))
        return;
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char) out[i];
        size_t n = ch < 0x80? 1: ch >= 0xF0? 4: ch >= 0xE0? 3: 2;
        if (ch == 0 || i + n > len || !tm_util_utf8_valid (out + i, n)) {
            out[i++] = '?';
            continue;
        }
        i += n;
    }
}

//  A row block holding copies of n values (strings cleaned, NUL-ended).
static s_row_t *
s_row_new (const tm_expr_value_t *values, size_t n)
{
    size_t bytes = sizeof (s_row_t) + n * sizeof (tm_expr_value_t);
    for (size_t i = 0; i < n; i++)
        if (values[i].type == TM_EXPR_STRING)
            bytes += (size_t) values[i].len + 1;
    s_row_t *row = (s_row_t *) malloc (bytes);
    if (!row)
        return NULL;
    row->nvalues = n;
    char *strings = (char *) (row->values + n);
    for (size_t i = 0; i < n; i++) {
        row->values[i] = values[i];
        if (values[i].type == TM_EXPR_STRING) {
            s_copy_clean (strings, values[i].str, values[i].len);
            row->values[i].str = strings;
            strings += values[i].len + 1;
        }
        else
        if (values[i].type == TM_EXPR_NUMBER && values[i].num == 0)
            row->values[i].num = 0;    //  -0 prints as 0
    }
    return row;
}

//  ---------------------------------------------------------------------
//  Group keys

static size_t
s_key_size (const tm_expr_value_t *v)
{
    switch (v->type) {
        case TM_EXPR_NUMBER:
            return 1 + 8;
        case TM_EXPR_STRING:
            return 1 + 4 + (size_t) v->len + 1;
        case TM_EXPR_BOOL:
            return 1 + 1;
        case TM_EXPR_LOCATION:
            return 1 + 16;
        default:
            return 1;
    }
}

static uint8_t *
s_key_put (uint8_t *p, const tm_expr_value_t *v)
{
    switch (v->type) {
        case TM_EXPR_NUMBER: {
            double x = v->num == 0? 0: v->num;     //  -0 and 0 are one group
            *p++ = S_KEY_NUMBER;
            memcpy (p, &x, 8);
            return p + 8;
        }
        case TM_EXPR_STRING: {
            uint32_t len = v->len;
            *p++ = S_KEY_STRING;
            memcpy (p, &len, 4);
            memcpy (p + 4, v->str, len);
            p[4 + len] = 0;            //  Strings in keys end with NUL for the wire
            return p + 4 + len + 1;
        }
        case TM_EXPR_BOOL:
            *p++ = S_KEY_BOOL;
            *p++ = v->b? 1: 0;
            return p;
        case TM_EXPR_LOCATION:
            *p++ = S_KEY_LOCATION;
            memcpy (p, &v->lat, 8);
            memcpy (p + 8, &v->lon, 8);
            return p + 16;
        default:
            *p++ = S_KEY_NULL;
            return p;
    }
}

//  Decode n values from key bytes we wrote; strings point into them.
static void
s_key_values (const uint8_t *p, size_t n, tm_expr_value_t *out)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t tag = *p++;
        memset (&out[i], 0, sizeof out[i]);
        if (tag == S_KEY_NUMBER) {
            out[i].type = TM_EXPR_NUMBER;
            memcpy (&out[i].num, p, 8);
            p += 8;
        }
        else
        if (tag == S_KEY_STRING) {
            uint32_t len;
            memcpy (&len, p, 4);
            out[i].type = TM_EXPR_STRING;
            out[i].len = len;
            out[i].str = (const char *) p + 4;
            p += 4 + (size_t) len + 1;
        }
        else
        if (tag == S_KEY_BOOL) {
            out[i].type = TM_EXPR_BOOL;
            out[i].b = *p++ != 0;
        }
        else
        if (tag == S_KEY_LOCATION) {
            out[i].type = TM_EXPR_LOCATION;
            memcpy (&out[i].lat, p, 8);
            memcpy (&out[i].lon, p + 8, 8);
            p += 16;
        }
        else
            out[i].type = TM_EXPR_NULL;
    }
}

static uint64_t
s_hash (const uint8_t *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

//  Encode key values into the scratch buffer; its length, or 0 (and
//  truncated) on allocation failure.
static size_t
s_encode_key (tm_qpartial_t *self, const tm_expr_value_t *keys)
{
    size_t size = 0;
    for (size_t i = 0; i < self->nkeys; i++)
        size += s_key_size (&keys[i]);
    if (size > self->scratch_cap) {
        size_t cap = size * 2;
        uint8_t *grown = (uint8_t *) realloc (self->scratch, cap);
        if (!grown) {
            self->truncated = true;
            return 0;
        }
        self->scratch = grown;
        self->scratch_cap = cap;
    }
    uint8_t *p = self->scratch;
    for (size_t i = 0; i < self->nkeys; i++)
        p = s_key_put (p, &keys[i]);
    return size;
}

static int
s_table_grow (tm_qpartial_t *self)
{
    size_t size = self->table_size? self->table_size * 2: 64;
    uint32_t *table = (uint32_t *) calloc (size, sizeof *table);
    if (!table)
        return -1;
    for (size_t g = 0; g < self->ngroups; g++) {
        size_t i = (size_t) self->groups[g]->hash & (size - 1);
        while (table[i])
            i = (i + 1) & (size - 1);
        table[i] = (uint32_t) g + 1;
    }
    free (self->table);
    self->table = table;
    self->table_size = size;
    return 0;
}

//  The group of the key in scratch (len bytes), created if new; NULL past
//  the group limit or on allocation failure (truncated then).
static s_group_t *
s_group_get (tm_qpartial_t *self, size_t len)
{
    uint64_t hash = 0;
    size_t i = 0;
    if (self->nkeys) {
        hash = s_hash (self->scratch, len);
        size_t mask = self->table_size - 1;
        for (i = (size_t) hash & mask; self->table[i]; i = (i + 1) & mask) {
            s_group_t *g = self->groups[self->table[i] - 1];
            if (g->hash == hash && g->key_len == len && memcmp (g->key, self->scratch, len) == 0)
                return g;
        }
    }
    else
    if (self->ngroups)
        return self->groups[0];
    if (self->ngroups == TM_QUERY_MAX_LIMIT) {
        self->truncated = true;
        return NULL;
    }
    if (self->ngroups == self->groups_cap) {
        size_t cap = self->groups_cap? self->groups_cap * 2: 16;
        s_group_t **grown = (s_group_t **) realloc (self->groups, cap * sizeof *grown);
        if (!grown) {
            self->truncated = true;
            return NULL;
        }
        self->groups = grown;
        self->groups_cap = cap;
    }
    size_t states = self->naggs * sizeof (s_state_t);
    s_group_t *g = (s_group_t *) calloc (1, sizeof (s_group_t) + states + len);
    if (!g) {
        self->truncated = true;
        return NULL;
    }
    g->hash = hash;
    g->key_len = len;
    g->key = (uint8_t *) g->states + states;
    if (len)
        memcpy (g->key, self->scratch, len);
    self->groups[self->ngroups++] = g;
    if (self->nkeys) {
        self->table[i] = (uint32_t) self->ngroups;
        if (self->ngroups * 2 > self->table_size && s_table_grow (self) != 0) {
            //  The table stays valid, only fuller; probing still ends
            //  while a free entry remains.
            if (self->ngroups + 1 >= self->table_size) {
                self->ngroups--;
                self->table[i] = 0;
                free (g);
                self->truncated = true;
                return NULL;
            }
        }
    }
    return g;
}

static void
s_group_free (const tm_qpartial_t *self, s_group_t **g_p)
{
    if (!*g_p)
        return;
    for (size_t a = 0; a < self->naggs; a++)
        tm_sketch_destroy (&(*g_p)->states[a].sketch);
    free (*g_p);
    *g_p = NULL;
}

//  ---------------------------------------------------------------------
//  Partials

tm_qpartial_t *
tm_qpartial_new (const tm_query_t *query)
{
    assert (query);
    tm_qpartial_t *self = (tm_qpartial_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->query = query;
    self->aggregate = tm_query_is_aggregate (query);
    self->where = tm_query_where (query);
    self->nkeys = tm_query_group_keys (query);
    for (size_t i = 0; i < self->nkeys; i++)
        self->keys[i] = tm_query_group_key (query, i);
    self->naggs = tm_query_aggregates (query);
    for (size_t i = 0; i < self->naggs; i++)
        self->func[i] = tm_query_aggregate (query, i, NULL, &self->arg[i]);
    if (!self->aggregate) {
        self->ord.noutputs = tm_query_outputs (query);
        for (size_t i = 0; i < self->ord.noutputs; i++)
            self->outputs[i] = tm_query_output (query, i);
        self->ord.norder = tm_query_order_keys (query);
        for (size_t i = 0; i < self->ord.norder; i++)
            self->order[i] = tm_query_order_key (query, i, &self->ord.desc[i]);
    }
    uint32_t limit = tm_query_limit (query);
    self->has_limit = limit > 0;
    self->cap = limit? limit: TM_QUERY_MAX_LIMIT;
    if (self->nkeys && s_table_grow (self) != 0)
        tm_qpartial_destroy (&self);
    return self;
}

static void
s_drop_groups (tm_qpartial_t *self)
{
    for (size_t g = 0; g < self->ngroups; g++)
        s_group_free (self, &self->groups[g]);
    self->ngroups = 0;
    if (self->table)
        memset (self->table, 0, self->table_size * sizeof *self->table);
}

void
tm_qpartial_destroy (tm_qpartial_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_qpartial_t *self = *self_p;
    s_drop_groups (self);
    free (self->groups);
    free (self->table);
    free (self->scratch);
    tm_qpartial_drop_rows (self);
    free (self->rows);
    s_qbatch_free (self);
    free (self);
    *self_p = NULL;
}

//  Heap of rows, worst on top.
static void
s_heap_up (tm_qpartial_t *self, size_t i)
{
    s_row_t **h = self->rows;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s_row_cmp (&self->ord, h[parent]->values, h[i]->values) >= 0)
            break;
        s_row_t *t = h[parent];
        h[parent] = h[i];
        h[i] = t;
        i = parent;
    }
}

static void
s_heap_down (tm_qpartial_t *self, size_t i)
{
    s_row_t **h = self->rows;
    size_t n = self->nrows;
    for (;;) {
        size_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && s_row_cmp (&self->ord, h[l]->values, h[worst]->values) > 0)
            worst = l;
        if (r < n && s_row_cmp (&self->ord, h[r]->values, h[worst]->values) > 0)
            worst = r;
        if (worst == i)
            return;
        s_row_t *t = h[worst];
        h[worst] = h[i];
        h[i] = t;
        i = worst;
    }
}

//  A row dropped at the cap: truncation only when no LIMIT asked for it.
static void
s_row_dropped (tm_qpartial_t *self)
{
    if (!self->has_limit)
        self->truncated = true;
}

//  Offer a row (outputs then ORDER BY values, strings borrowed): kept if
//  it is among the best cap rows. Without ORDER BY the first cap are kept.
static void
s_row_offer (tm_qpartial_t *self, const tm_expr_value_t *values)
{
    size_t n = self->ord.noutputs + self->ord.norder;
    bool full = self->nrows == self->cap;
    if (full && (self->ord.norder == 0
                 || s_row_cmp (&self->ord, values, self->rows[0]->values) >= 0)) {
        s_row_dropped (self);
        return;
    }
    if (!full && self->nrows == self->rows_cap) {
        size_t cap = self->rows_cap? self->rows_cap * 2: 16;
        if (cap > self->cap)
            cap = self->cap;
        s_row_t **grown = (s_row_t **) realloc (self->rows, cap * sizeof *grown);
        if (!grown) {
            self->truncated = true;
            return;
        }
        self->rows = grown;
        self->rows_cap = cap;
    }
    s_row_t *row = s_row_new (values, n);
    if (!row) {
        self->truncated = true;
        return;
    }
    if (full) {
        free (self->rows[0]);
        self->rows[0] = row;
        s_heap_down (self, 0);
        s_row_dropped (self);
    }
    else {
        self->rows[self->nrows++] = row;
        if (self->ord.norder)
            s_heap_up (self, self->nrows - 1);
    }
}

static void
s_feed_row (tm_qpartial_t *self, const tm_expr_value_t *values, size_t nvalues)
{
    tm_expr_value_t row[S_MAX_VALUES];
    size_t nout = self->ord.noutputs;
    if (self->nrows == self->cap) {
        if (self->ord.norder == 0) {
            s_row_dropped (self);
            return;
        }
        //  Most twins lose on the ORDER BY keys alone: skip the outputs.
        for (size_t i = 0; i < self->ord.norder; i++)
            tm_expr_eval (self->order[i], values, nvalues, &row[nout + i]);
        if (s_order_cmp (&self->ord, row, self->rows[0]->values) > 0) {
            s_row_dropped (self);
            return;
        }
    }
    else
        for (size_t i = 0; i < self->ord.norder; i++)
            tm_expr_eval (self->order[i], values, nvalues, &row[nout + i]);
    for (size_t i = 0; i < nout; i++)
        tm_expr_eval (self->outputs[i], values, nvalues, &row[i]);
    s_row_offer (self, row);
}

//  Count one twin into its group: args[a] is aggregate a's argument
//  (ignored for count(*)).
static void
s_group_add (tm_qpartial_t *self, s_group_t *g, const tm_expr_value_t *args)
{
    g->twins++;
    for (size_t a = 0; a < self->naggs; a++) {
        s_state_t *s = &g->states[a];
        if (!self->arg[a]) {
            s->count++;
            continue;
        }
        const tm_expr_value_t *v = &args[a];
        if (self->func[a] == TM_QUERY_AGG_COUNT) {
            s->count += v->type != TM_EXPR_NULL;
            continue;
        }
        if (v->type != TM_EXPR_NUMBER)
            continue;
        double x = v->num;
        if (s->count == 0 || x < s->min)
            s->min = x;
        if (s->count == 0 || x > s->max)
            s->max = x;
        s->count++;
        s->sum += x;
        if (self->func[a] == TM_QUERY_AGG_QUANTILE && !s->noisy) {
            if (!s->sketch)
                s->sketch = tm_sketch_new (TM_SKETCH_DEFAULT_ALPHA);
            if (!s->sketch || tm_sketch_add (s->sketch, x) != 0)
                self->truncated = true;
        }
    }
}

//  s_group_add for aggregates over columns of numbers (NaN: null), row r;
//  nums[a] NULL: null in every row (count(*) ignores it).
static inline void
s_group_add_numbers (tm_qpartial_t *self, s_group_t *g, const double *const *nums, size_t r)
{
    g->twins++;
    for (size_t a = 0; a < self->naggs; a++) {
        s_state_t *s = &g->states[a];
        if (!self->arg[a]) {
            s->count++;
            continue;
        }
        double x = nums[a]? nums[a][r]: NAN;
        if (!isfinite (x))
            continue;
        if (self->func[a] != TM_QUERY_AGG_COUNT) {
            if (s->count == 0 || x < s->min)
                s->min = x;
            if (s->count == 0 || x > s->max)
                s->max = x;
            s->sum += x;
        }
        s->count++;
    }
}

static void
s_feed_group (tm_qpartial_t *self, const tm_expr_value_t *values, size_t nvalues)
{
    size_t len = 0;
    if (self->nkeys) {
        tm_expr_value_t keys[TM_QUERY_MAX_GROUP_KEYS];
        for (size_t i = 0; i < self->nkeys; i++)
            tm_expr_eval (self->keys[i], values, nvalues, &keys[i]);
        len = s_encode_key (self, keys);
        if (!len)
            return;
    }
    s_group_t *g = s_group_get (self, len);
    if (!g)
        return;
    tm_expr_value_t args[TM_QUERY_MAX_AGGREGATES];
    for (size_t a = 0; a < self->naggs; a++)
        if (self->arg[a])
            tm_expr_eval (self->arg[a], values, nvalues, &args[a]);
    s_group_add (self, g, args);
}

bool
tm_qpartial_feed (tm_qpartial_t *self, const tm_expr_value_t *values, size_t nvalues)
{
    assert (self);
    if (!values)
        nvalues = 0;
    self->scanned++;
    if (self->where && !tm_expr_match (self->where, values, nvalues))
        return false;
    self->matched++;
    if (self->aggregate)
        s_feed_group (self, values, nvalues);
    else
        s_feed_row (self, values, nvalues);
    return true;
}

//  ---------------------------------------------------------------------
//  Feeding in batches
//
//  What tm_qpartial_feed does per twin, for many twins at once: WHERE,
//  GROUP BY keys and aggregate arguments are evaluated a column at a time
//  (tm_expr_eval_batch), and the group of a twin is looked up first in a
//  small cache keyed by the identity of its key values (the same string
//  pointer, the same bits of a number), which spares the encode, hash and
//  compare of the group table for the twins of a group seen recently:
//  worker strings such as districts are shared between twins, so that is
//  most of them. Identical values always encode to identical keys, so the
//  cache only ever finds the group the table would.

#define S_BATCH 1024                   //  Twins per pass
#define S_CACHE 256                    //  Entries of the group cache

typedef struct {
    s_group_t *group;                  //  NULL: empty
    tm_expr_value_t keys[TM_QUERY_MAX_GROUP_KEYS];
} s_cache_t;

struct _tm_qbatch_t {
    tm_expr_batch_t *where;            //  NULL without WHERE
    int32_t key_slot[TM_QUERY_MAX_GROUP_KEYS];     //  A bare column's slot, else -1
    int32_t arg_slot[TM_QUERY_MAX_AGGREGATES];     //  Likewise for arguments
    tm_expr_batch_t *keys[TM_QUERY_MAX_GROUP_KEYS];
    tm_expr_batch_t *args[TM_QUERY_MAX_AGGREGATES];   //  NULL for count(*)
    uint8_t *wout;                     //  S_BATCH matches of WHERE
    tm_expr_value_t *kout;             //  nkeys x S_BATCH
    tm_expr_value_t *aout;             //  naggs x S_BATCH
    uint32_t *sel;                     //  Twins of a pass that passed WHERE
    s_cache_t *cache;                  //  S_CACHE entries
    s_group_t **by_id;                 //  One key over a column of strings: the
    size_t by_id_cap;                  //  group of each dictionary entry, per call
};

static void
s_qbatch_free (tm_qpartial_t *self)
{
    s_qbatch_t *b = self->batch;
    if (!b)
        return;
    tm_expr_batch_destroy (&b->where);
    for (size_t i = 0; i < TM_QUERY_MAX_GROUP_KEYS; i++)
        tm_expr_batch_destroy (&b->keys[i]);
    for (size_t i = 0; i < TM_QUERY_MAX_AGGREGATES; i++)
        tm_expr_batch_destroy (&b->args[i]);
    free (b->wout);
    free (b->kout);
    free (b->aout);
    free (b->sel);
    free (b->cache);
    free (b->by_id);
    free (b);
    self->batch = NULL;
}

static s_qbatch_t *
s_qbatch (tm_qpartial_t *self)
{
    if (self->batch)
        return self->batch;
    s_qbatch_t *b = (s_qbatch_t *) calloc (1, sizeof *b);
    if (!b)
        return NULL;
    self->batch = b;
    bool ok = true;
    if (self->where)
        ok = ok && (b->where = tm_expr_batch_new (self->where));
    if (self->aggregate) {
        //  GROUP BY district, avg(pm25): a bare column is read where the
        //  twin passed, not evaluated for every twin.
        for (size_t i = 0; i < self->nkeys; i++) {
            uint32_t slot;
            b->key_slot[i] = tm_expr_is_slot (self->keys[i], &slot)
                             && slot < TM_QUERY_MAX_COLUMNS? (int32_t) slot: -1;
            if (b->key_slot[i] < 0)
                ok = ok && (b->keys[i] = tm_expr_batch_new (self->keys[i]));
        }
        for (size_t a = 0; a < self->naggs; a++) {
            uint32_t slot;
            b->arg_slot[a] = self->arg[a] && tm_expr_is_slot (self->arg[a], &slot)
                             && slot < TM_QUERY_MAX_COLUMNS? (int32_t) slot: -1;
            if (self->arg[a] && b->arg_slot[a] < 0)
                ok = ok && (b->args[a] = tm_expr_batch_new (self->arg[a]));
        }
        ok = ok && (b->kout = (tm_expr_value_t *) malloc ((self->nkeys? self->nkeys: 1) * S_BATCH
                                                          * sizeof (tm_expr_value_t)));
        ok = ok && (b->aout = (tm_expr_value_t *) malloc ((self->naggs? self->naggs: 1) * S_BATCH
                                                          * sizeof (tm_expr_value_t)));
        ok = ok && (b->cache = (s_cache_t *) malloc (S_CACHE * sizeof (s_cache_t)));
    }
    ok = ok && (b->wout = (uint8_t *) malloc (S_BATCH));
    ok = ok && (b->sel = (uint32_t *) malloc (S_BATCH * sizeof (uint32_t)));
    if (!ok) {
        s_qbatch_free (self);
        return NULL;
    }
    return b;
}

//  Identity of a value: equal identities mean equal encoded keys.
static uint64_t
s_identity (const tm_expr_value_t *v)
{
    uint64_t h = (uint64_t) v->type * 0x9e3779b97f4a7c15ULL;
    uint64_t bits = 0;
    switch (v->type) {
        case TM_EXPR_NUMBER:
            memcpy (&bits, &v->num, sizeof bits);
            break;
        case TM_EXPR_STRING:
            bits = (uint64_t) (uintptr_t) v->str ^ ((uint64_t) v->len << 48);
            break;
        case TM_EXPR_BOOL:
            bits = v->b;
            break;
        case TM_EXPR_LOCATION: {
            uint64_t lon;
            memcpy (&bits, &v->lat, sizeof bits);
            memcpy (&lon, &v->lon, sizeof lon);
            bits ^= lon * 31;
            break;
        }
        default:
            break;
    }
    h ^= bits;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

static bool
s_identical (const tm_expr_value_t *a, const tm_expr_value_t *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
        case TM_EXPR_NUMBER:
            return memcmp (&a->num, &b->num, sizeof a->num) == 0;
        case TM_EXPR_STRING:
            return a->str == b->str && a->len == b->len;
        case TM_EXPR_BOOL:
            return a->b == b->b;
        case TM_EXPR_LOCATION:
            return memcmp (&a->lat, &b->lat, sizeof a->lat) == 0
                   && memcmp (&a->lon, &b->lon, sizeof a->lon) == 0;
        default:
            return true;
    }
}

//  The aggregates' arguments for row i of a pass.
static inline void
s_group_args (const tm_qpartial_t *self, const s_qbatch_t *b, const tm_expr_col_t *view,
              size_t ncols, size_t i, tm_expr_value_t *args)
{
    for (size_t a = 0; a < self->naggs; a++) {
        int32_t slot = b->arg_slot[a];
        if (b->args[a])
            args[a] = b->aout[a * S_BATCH + i];
        else
        if (slot < 0)
            continue;      //  count(*)
        else
        if ((size_t) slot < ncols)
            tm_expr_col_get (&view[slot], i, &args[a]);
        else
            args[a] = tm_expr_null ();
    }
}

void
tm_qpartial_feed_batch (tm_qpartial_t *self, const tm_expr_col_t *cols, size_t ncols, size_t n,
                        const uint8_t *skip)
{
    assert (self);
    if (!cols)
        ncols = 0;
    if (ncols > TM_QUERY_MAX_COLUMNS)
        ncols = TM_QUERY_MAX_COLUMNS;
    s_qbatch_t *b = s_qbatch (self);
    if (!b) {
        //  No memory for the batch path: the twin-at-a-time one needs none.
        tm_expr_value_t row[TM_QUERY_MAX_COLUMNS];
        for (size_t i = 0; i < n; i++) {
            if (skip && skip[i])
                continue;
            for (size_t c = 0; c < ncols; c++)
                tm_expr_col_get (&cols[c], i, &row[c]);
            tm_qpartial_feed (self, row, ncols);
        }
        return;
    }
    if (b->cache)
        for (size_t e = 0; e < S_CACHE; e++)
            b->cache[e].group = NULL;      //  Strings of an earlier call may be gone
    //  GROUP BY one column of strings (district): its dictionary id is the
    //  group's identity, so the group is found by indexing, not hashing.
    const tm_expr_col_t *by = NULL;
    if (self->aggregate && self->nkeys == 1 && b->key_slot[0] >= 0
        && (size_t) b->key_slot[0] < ncols && cols[b->key_slot[0]].kind == TM_EXPR_COL_STRINGS) {
        by = &cols[b->key_slot[0]];
        if (by->ndict > b->by_id_cap) {
            s_group_t **grown = (s_group_t **) realloc (b->by_id, by->ndict * sizeof *grown);
            if (grown) {
                b->by_id = grown;
                b->by_id_cap = by->ndict;
            }
        }
        if (by->ndict <= b->by_id_cap)
            memset (b->by_id, 0, by->ndict * sizeof *b->by_id);
        else
            by = NULL;
    }
    //  Aggregates that are all count(*) or count, sum, avg, min, max of a
    //  bare column of numbers: read as doubles, no values made per twin.
    const double *nums[TM_QUERY_MAX_AGGREGATES];
    bool plain = self->aggregate;
    for (size_t a = 0; plain && a < self->naggs; a++) {
        nums[a] = NULL;
        if (!self->arg[a])
            continue;
        int32_t slot = b->arg_slot[a];
        const tm_expr_col_t *c = slot >= 0 && (size_t) slot < ncols? &cols[slot]: NULL;
        if (self->func[a] == TM_QUERY_AGG_QUANTILE || slot < 0
            || (c && c->kind != TM_EXPR_COL_NUMBERS && c->kind != TM_EXPR_COL_NULL))
            plain = false;
        else
        if (c && c->kind == TM_EXPR_COL_NUMBERS)
            nums[a] = c->nums;
    }
    tm_expr_col_t view[TM_QUERY_MAX_COLUMNS];
    for (size_t from = 0; from < n; from += S_BATCH) {
        size_t m = n - from < S_BATCH? n - from: S_BATCH;
        for (size_t c = 0; c < ncols; c++)
            view[c] = tm_expr_col_shift (&cols[c], from);
        if (b->where)
            tm_expr_match_batch (b->where, view, ncols, m, b->wout);
        //  Without branches: whether a twin passed is as good as a coin
        //  toss for the branch predictor (measured: the mispredictions were
        //  over half of this function's time).
        size_t nsel = 0;
        if (!skip && b->where) {
            for (size_t i = 0; i < m; i++) {
                b->sel[nsel] = (uint32_t) i;
                nsel += b->wout[i];
            }
            self->scanned += m;
        }
        else
            for (size_t i = 0; i < m; i++) {
                uint8_t in = skip? !skip[from + i]: 1;
                self->scanned += in;
                b->sel[nsel] = (uint32_t) i;
                nsel += in & (b->where? b->wout[i]: 1);
            }
        self->matched += nsel;
        if (!nsel)
            continue;
        if (!self->aggregate) {
            tm_expr_value_t row[TM_QUERY_MAX_COLUMNS];
            for (size_t k = 0; k < nsel; k++) {
                size_t i = b->sel[k];
                for (size_t c = 0; c < ncols; c++)
                    tm_expr_col_get (&view[c], i, &row[c]);
                s_feed_row (self, row, ncols);
            }
            continue;
        }
        for (size_t k = 0; k < self->nkeys; k++)
            if (b->keys[k])
                tm_expr_eval_batch (b->keys[k], view, ncols, m, b->kout + k * S_BATCH);
        for (size_t a = 0; a < self->naggs; a++)
            if (b->args[a])
                tm_expr_eval_batch (b->args[a], view, ncols, m, b->aout + a * S_BATCH);
        for (size_t k = 0; k < nsel; k++) {
            size_t i = b->sel[k];
            tm_expr_value_t args[TM_QUERY_MAX_AGGREGATES];
            if (by) {
                uint32_t d = by->ids[from + i];
                s_group_t *g = d < by->ndict? b->by_id[d]: NULL;
                if (!g) {
                    tm_expr_value_t key;
                    tm_expr_col_get (&view[b->key_slot[0]], i, &key);
                    size_t len = s_encode_key (self, &key);
                    if (!len || !(g = s_group_get (self, len)))
                        continue;
                    if (d < by->ndict)
                        b->by_id[d] = g;
                }
                if (plain) {
                    s_group_add_numbers (self, g, nums, from + i);
                    continue;
                }
                s_group_args (self, b, view, ncols, i, args);
                s_group_add (self, g, args);
                continue;
            }
            tm_expr_value_t keys[TM_QUERY_MAX_GROUP_KEYS];
            uint64_t id = 0;
            for (size_t j = 0; j < self->nkeys; j++) {
                int32_t slot = b->key_slot[j];
                if (slot < 0)
                    keys[j] = b->kout[j * S_BATCH + i];
                else
                if ((size_t) slot < ncols)
                    tm_expr_col_get (&view[slot], i, &keys[j]);
                else
                    keys[j] = tm_expr_null ();
                id = id * 31 + s_identity (&keys[j]);
            }
            s_cache_t *entry = &b->cache[id & (S_CACHE - 1)];
            s_group_t *g = entry->group;
            for (size_t j = 0; g && j < self->nkeys; j++)
                if (!s_identical (&entry->keys[j], &keys[j]))
                    g = NULL;
            if (!g) {
                size_t len = self->nkeys? s_encode_key (self, keys): 0;
                if (self->nkeys && !len)
                    continue;
                g = s_group_get (self, len);
                if (!g)
                    continue;
                entry->group = g;
                memcpy (entry->keys, keys, self->nkeys * sizeof keys[0]);
            }
            if (plain)
                s_group_add_numbers (self, g, nums, from + i);
            else {
                s_group_args (self, b, view, ncols, i, args);
                s_group_add (self, g, args);
            }
        }
    }
}

uint64_t
tm_qpartial_scanned (const tm_qpartial_t *self)
{
    assert (self);
    return self->scanned;
}

uint64_t
tm_qpartial_matched (const tm_qpartial_t *self)
{
    assert (self);
    return self->matched;
}

bool
tm_qpartial_truncated (const tm_qpartial_t *self)
{
    assert (self);
    return self->truncated;
}

//  ---------------------------------------------------------------------
//  Partial bytes

//  Buffers an encoding allocates, freed once it is packed.
typedef struct {
    void **items;                      //  Owned buffers
    size_t count;                      //  In use
    size_t cap;                        //  Allocated
    bool failed;                       //  An allocation failed
} s_bag_t;

static void *
s_bag_add (s_bag_t *bag, void *item)
{
    if (!item) {
        bag->failed = true;
        return NULL;
    }
    if (bag->count == bag->cap) {
        size_t cap = bag->cap? bag->cap * 2: 64;
        void **grown = (void **) realloc (bag->items, cap * sizeof *grown);
        if (!grown) {
            free (item);
            bag->failed = true;
            return NULL;
        }
        bag->items = grown;
        bag->cap = cap;
    }
    bag->items[bag->count++] = item;
    return item;
}

static void *
s_bag_alloc (s_bag_t *bag, size_t n, size_t size)
{
    return s_bag_add (bag, calloc (n? n: 1, size));
}

static void
s_bag_free (s_bag_t *bag)
{
    for (size_t i = 0; i < bag->count; i++)
        free (bag->items[i]);
    free (bag->items);
}

//  Fill a protobuf Value from a value; strings must be NUL-ended and fit
//  for the wire (ours are); loc is storage for a location.
static void
s_value_to (const tm_expr_value_t *v, Twinmesh__Value *out, Twinmesh__Location *loc)
{
    twinmesh__value__init (out);
    switch (v->type) {
        case TM_EXPR_NUMBER:
            out->v_case = TWINMESH__VALUE__V_NUMBER;
            out->number = v->num;
            break;
        case TM_EXPR_STRING:
            out->v_case = TWINMESH__VALUE__V_STR;
            out->str = (char *) v->str;
            break;
        case TM_EXPR_BOOL:
            out->v_case = TWINMESH__VALUE__V_BOOLEAN;
            out->boolean = v->b;
            break;
        case TM_EXPR_LOCATION:
            twinmesh__location__init (loc);
            loc->lat = v->lat;
            loc->lon = v->lon;
            out->v_case = TWINMESH__VALUE__V_LOCATION;
            out->location = loc;
            break;
        default:
            break;
    }
}

//  Check and convert an untrusted Value; strings borrowed from it.
static int
s_value_from (const Twinmesh__Value *pv, tm_expr_value_t *out)
{
    memset (out, 0, sizeof *out);
    out->type = TM_EXPR_NULL;
    if (!pv)
        return 0;
    switch (pv->v_case) {
        case TWINMESH__VALUE__V__NOT_SET:
            return 0;
        case TWINMESH__VALUE__V_NUMBER:
            if (!isfinite (pv->number))
                return -1;
            *out = tm_expr_number (pv->number);
            return 0;
        case TWINMESH__VALUE__V_STR: {
            if (!pv->str)
                return -1;
            size_t len = strlen (pv->str);
            if (len > UINT32_MAX || !tm_util_utf8_valid (pv->str, len))
                return -1;
            *out = tm_expr_string (pv->str, (uint32_t) len);
            return 0;
        }
        case TWINMESH__VALUE__V_BOOLEAN:
            *out = tm_expr_bool (pv->boolean);
            return 0;
        case TWINMESH__VALUE__V_LOCATION:
            if (!pv->location || !(pv->location->lat >= -90 && pv->location->lat <= 90)
                || !(pv->location->lon >= -180 && pv->location->lon <= 180))
                return -1;
            *out = tm_expr_location (pv->location->lat, pv->location->lon);
            return 0;
        default:
            return -1;
    }
}

//  Value messages for n values (strings cleaned into the bag when not
//  fit for the wire as they are).
static Twinmesh__Value **
s_values_to (s_bag_t *bag, const tm_expr_value_t *values, size_t n)
{
    Twinmesh__Value **ptrs = (Twinmesh__Value **) s_bag_alloc (bag, n, sizeof *ptrs);
    Twinmesh__Value *msgs = (Twinmesh__Value *) s_bag_alloc (bag, n, sizeof *msgs);
    Twinmesh__Location *locs = (Twinmesh__Location *) s_bag_alloc (bag, n, sizeof *locs);
    if (!ptrs || !msgs || !locs)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        tm_expr_value_t v = values[i];
        if (v.type == TM_EXPR_STRING
            && (!tm_util_utf8_valid (v.str, v.len) || memchr (v.str, 0, v.len))) {
            char *clean = (char *) s_bag_add (bag, malloc ((size_t) v.len + 1));
            if (!clean)
                return NULL;
            s_copy_clean (clean, v.str, v.len);
            v.str = clean;
        }
        s_value_to (&v, &msgs[i], &locs[i]);
        ptrs[i] = &msgs[i];
    }
    return ptrs;
}

static Twinmesh__QueryRow **
s_rows_to (s_bag_t *bag, s_row_t *const *rows, size_t nrows, size_t nvalues, size_t norder)
{
    Twinmesh__QueryRow **ptrs = (Twinmesh__QueryRow **) s_bag_alloc (bag, nrows, sizeof *ptrs);
    Twinmesh__QueryRow *msgs = (Twinmesh__QueryRow *) s_bag_alloc (bag, nrows, sizeof *msgs);
    if (!ptrs || !msgs)
        return NULL;
    for (size_t r = 0; r < nrows; r++) {
        twinmesh__query_row__init (&msgs[r]);
        msgs[r].n_values = nvalues;
        msgs[r].values = s_values_to (bag, rows[r]->values, nvalues);
        msgs[r].n_order = norder;
        msgs[r].order = s_values_to (bag, rows[r]->values + nvalues, norder);
        ptrs[r] = &msgs[r];
    }
    return ptrs;
}

uint8_t *
tm_qpartial_encode (const tm_qpartial_t *self, size_t *size)
{
    assert (self);
    assert (size);
    s_bag_t bag = {NULL, 0, 0, false};
    Twinmesh__QueryPartial msg = TWINMESH__QUERY_PARTIAL__INIT;
    msg.scanned = self->scanned;
    msg.matched = self->matched;
    msg.truncated = self->truncated;
    size_t ng = self->ngroups, na = self->naggs, nk = self->nkeys;
    if (ng) {
        msg.n_groups = ng;
        msg.groups = (Twinmesh__QueryGroup **) s_bag_alloc (&bag, ng, sizeof *msg.groups);
        Twinmesh__QueryGroup *groups = (Twinmesh__QueryGroup *) s_bag_alloc (&bag, ng,
                                                                              sizeof *groups);
        Twinmesh__AggregateState **sptrs = (Twinmesh__AggregateState **) s_bag_alloc (
            &bag, ng * na, sizeof *sptrs);
        Twinmesh__AggregateState *states = (Twinmesh__AggregateState *) s_bag_alloc (
            &bag, ng * na, sizeof *states);
        tm_expr_value_t keys[TM_QUERY_MAX_GROUP_KEYS];
        for (size_t g = 0; !bag.failed && g < ng; g++) {
            const s_group_t *grp = self->groups[g];
            twinmesh__query_group__init (&groups[g]);
            s_key_values (grp->key, nk, keys);
            groups[g].n_keys = nk;
            groups[g].keys = s_values_to (&bag, keys, nk);
            groups[g].twins = grp->twins;
            groups[g].n_aggregates = na;
            groups[g].aggregates = sptrs + g * na;
            for (size_t a = 0; a < na; a++) {
                Twinmesh__AggregateState *s = &states[g * na + a];
                const s_state_t *st = &grp->states[a];
                twinmesh__aggregate_state__init (s);
                s->count = st->count;
                s->sum = st->sum;
                s->noisy = st->noisy;
                if (st->count && !st->noisy) {
                    s->min = st->min;
                    s->max = st->max;
                }
                if (st->sketch) {
                    size_t n = 0;
                    s->sketch.data = (uint8_t *) s_bag_add (&bag, tm_sketch_encode (st->sketch,
                                                                                    &n));
                    s->sketch.len = s->sketch.data? n: 0;
                }
                sptrs[g * na + a] = s;
            }
            msg.groups[g] = &groups[g];
        }
    }
    if (self->nrows) {
        msg.n_rows = self->nrows;
        msg.rows = s_rows_to (&bag, self->rows, self->nrows, self->ord.noutputs,
                              self->ord.norder);
    }
    uint8_t *out = NULL;
    if (!bag.failed)
        out = tm_codec_pack_buf (&msg.base, size);
    s_bag_free (&bag);
    return out;
}

static void
s_say (char *err, size_t err_size, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static void
s_say (char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || !err_size)
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (err, err_size, fmt, args);
    va_end (args);
}

static uint64_t
s_add_sat (uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b? UINT64_MAX: a + b;
}

//  Check one incoming group against the query; sketches decoded into
//  sk[naggs] (NULL where there is none).
static int
s_check_group (const tm_qpartial_t *self, const Twinmesh__QueryGroup *g, tm_expr_value_t *keys,
               tm_sketch_t **sk, char *err, size_t err_size)
{
    if (!g || g->n_keys != self->nkeys || g->n_aggregates != self->naggs) {
        s_say (err, err_size, "a group has %zu keys and %zu aggregates, the query %zu and %zu",
               g? g->n_keys: 0, g? g->n_aggregates: 0, self->nkeys, self->naggs);
        return -1;
    }
    for (size_t k = 0; k < self->nkeys; k++)
        if (s_value_from (g->keys[k], &keys[k]) != 0) {
            s_say (err, err_size, "a group key is not a valid value");
            return -1;
        }
    for (size_t a = 0; a < self->naggs; a++) {
        const Twinmesh__AggregateState *s = g->aggregates[a];
        if (!s || !isfinite (s->sum) || !isfinite (s->min) || !isfinite (s->max)
            || (s->count && !s->noisy && s->min > s->max)
            || (self->func[a] != TM_QUERY_AGG_QUANTILE && s->sketch.len)) {
            s_say (err, err_size, "aggregate %zu of a group has a bad state", a);
            return -1;
        }
        if (self->func[a] == TM_QUERY_AGG_QUANTILE && s->sketch.len && !s->noisy) {
            sk[a] = tm_sketch_decode (s->sketch.data, s->sketch.len);
            if (!sk[a] || tm_sketch_alpha (sk[a]) != TM_SKETCH_DEFAULT_ALPHA
                || tm_sketch_count (sk[a]) > s->count) {
                s_say (err, err_size, "aggregate %zu of a group has a bad sketch", a);
                return -1;
            }
        }
    }
    return 0;
}

static void
s_merge_state (tm_qpartial_t *self, s_state_t *into, const Twinmesh__AggregateState *s,
               tm_sketch_t **sk)
{
    if (s->noisy && !into->noisy) {
        into->noisy = true;
        tm_sketch_destroy (&into->sketch);
    }
    if (!into->noisy && s->count) {
        if (into->count == 0 || s->min < into->min)
            into->min = s->min;
        if (into->count == 0 || s->max > into->max)
            into->max = s->max;
    }
    into->count = s_add_sat (into->count, s->count);
    into->sum += s->sum;
    if (into->noisy || !*sk)
        return;
    if (!into->sketch) {
        into->sketch = *sk;
        *sk = NULL;
    }
    else
    if (tm_sketch_merge (into->sketch, *sk) != 0)
        self->truncated = true;
}

static int
s_merge_groups (tm_qpartial_t *self, const Twinmesh__QueryPartial *msg, char *err,
                size_t err_size)
{
    size_t ng = msg->n_groups, na = self->naggs;
    tm_sketch_t **sk = NULL;
    if (ng && na) {
        sk = (tm_sketch_t **) calloc (ng * na, sizeof *sk);
        if (!sk) {
            s_say (err, err_size, "out of memory");
            return -1;
        }
    }
    tm_expr_value_t keys[TM_QUERY_MAX_GROUP_KEYS];
    int rc = 0;
    for (size_t g = 0; g < ng && rc == 0; g++)
        rc = s_check_group (self, msg->groups[g], keys, sk? sk + g * na: NULL, err, err_size);
    for (size_t g = 0; g < ng && rc == 0; g++) {
        const Twinmesh__QueryGroup *in = msg->groups[g];
        for (size_t k = 0; k < self->nkeys; k++)
            s_value_from (in->keys[k], &keys[k]);
        size_t len = self->nkeys? s_encode_key (self, keys): 0;
        if (self->nkeys && !len)
            continue;
        s_group_t *grp = s_group_get (self, len);
        if (!grp)
            continue;
        grp->twins = s_add_sat (grp->twins, in->twins);
        for (size_t a = 0; a < na; a++)
            s_merge_state (self, &grp->states[a], in->aggregates[a], &sk[g * na + a]);
    }
    for (size_t i = 0; sk && i < ng * na; i++)
        tm_sketch_destroy (&sk[i]);
    free (sk);
    return rc;
}

static int
s_merge_rows (tm_qpartial_t *self, const Twinmesh__QueryPartial *msg, char *err,
              size_t err_size)
{
    size_t nout = self->ord.noutputs, nord = self->ord.norder;
    tm_expr_value_t row[S_MAX_VALUES];
    for (size_t r = 0; r < msg->n_rows; r++) {
        const Twinmesh__QueryRow *in = msg->rows[r];
        if (!in || in->n_values != nout || in->n_order != nord) {
            s_say (err, err_size, "a row has %zu values and %zu keys, the query %zu and %zu",
                   in? in->n_values: 0, in? in->n_order: 0, nout, nord);
            return -1;
        }
        for (size_t i = 0; i < nout + nord; i++)
            if (s_value_from (i < nout? in->values[i]: in->order[i - nout], &row[i]) != 0) {
                s_say (err, err_size, "a row holds an invalid value");
                return -1;
            }
    }
    for (size_t r = 0; r < msg->n_rows; r++) {
        const Twinmesh__QueryRow *in = msg->rows[r];
        for (size_t i = 0; i < nout + nord; i++)
            s_value_from (i < nout? in->values[i]: in->order[i - nout], &row[i]);
        s_row_offer (self, row);
    }
    return 0;
}

int
tm_qpartial_merge (tm_qpartial_t *self, const uint8_t *data, size_t size, char *err,
                   size_t err_size)
{
    assert (self);
    Twinmesh__QueryPartial *msg = TM_UNPACK (QueryPartial, query_partial, data, size);
    if (!msg) {
        s_say (err, err_size, "not a QueryPartial message");
        return -1;
    }
    int rc = -1;
    if (msg->n_groups > TM_QUERY_MAX_LIMIT || msg->n_rows > TM_QUERY_MAX_LIMIT)
        s_say (err, err_size, "more than %d groups or rows", TM_QUERY_MAX_LIMIT);
    else
    if (self->aggregate && msg->n_rows)
        s_say (err, err_size, "rows in the answer of an aggregate query");
    else
    if (!self->aggregate && msg->n_groups)
        s_say (err, err_size, "groups in the answer of a row query");
    else
    if (msg->matched > msg->scanned)
        s_say (err, err_size, "more twins matched than scanned");
    else
    if (self->aggregate)
        rc = s_merge_groups (self, msg, err, err_size);
    else
        rc = s_merge_rows (self, msg, err, err_size);
    if (rc == 0) {
        self->scanned = s_add_sat (self->scanned, msg->scanned);
        self->matched = s_add_sat (self->matched, msg->matched);
        self->truncated = self->truncated || msg->truncated;
    }
    tm_codec_free (&msg);
    return rc;
}

//  ---------------------------------------------------------------------
//  Export policies

size_t
tm_qpartial_suppress_small (tm_qpartial_t *self, uint64_t min_twins)
{
    assert (self);
    size_t kept = 0, dropped = 0;
    for (size_t g = 0; g < self->ngroups; g++) {
        if (self->groups[g]->twins < min_twins) {
            s_group_free (self, &self->groups[g]);
            dropped++;
        }
        else
            self->groups[kept++] = self->groups[g];
    }
    self->ngroups = kept;
    if (dropped && self->table) {
        //  Rebuild the index over the groups left.
        memset (self->table, 0, self->table_size * sizeof *self->table);
        size_t mask = self->table_size - 1;
        for (size_t g = 0; g < self->ngroups; g++) {
            size_t i = (size_t) self->groups[g]->hash & mask;
            while (self->table[i])
                i = (i + 1) & mask;
            self->table[i] = (uint32_t) g + 1;
        }
    }
    return dropped;
}

void
tm_qpartial_drop_rows (tm_qpartial_t *self)
{
    assert (self);
    for (size_t r = 0; r < self->nrows; r++)
        free (self->rows[r]);
    self->nrows = 0;
}

//  Laplace(0, scale) from libsodium's generator.
static double
s_laplace (double scale)
{
    uint64_t r;
    randombytes_buf (&r, sizeof r);
    double u = ((double) (r >> 11) + 0.5) / 9007199254740992.0;     //  In (0, 1)
    return u < 0.5? scale * log (2 * u): -scale * log (2 * (1 - u));
}

static uint64_t
s_noisy_count (uint64_t n, double scale)
{
    double x = round ((double) n + s_laplace (scale));
    if (!(x > 0))
        return 0;
    return x >= 1.8e19? UINT64_MAX: (uint64_t) x;
}

void
tm_qpartial_add_noise (tm_qpartial_t *self, double epsilon, double sum_bound)
{
    assert (self);
    if (!(epsilon > 0) || !isfinite (epsilon))
        return;
    if (sodium_init () < 0)
        return;
    double scale = 1 / epsilon;
    double sum_scale = isfinite (sum_bound)? fabs (sum_bound) / epsilon: 0;
    for (size_t g = 0; g < self->ngroups; g++) {
        s_group_t *grp = self->groups[g];
        grp->twins = s_noisy_count (grp->twins, scale);
        for (size_t a = 0; a < self->naggs; a++) {
            s_state_t *s = &grp->states[a];
            s->count = s_noisy_count (s->count, scale);
            s->sum += s_laplace (sum_scale);
            if (!isfinite (s->sum))
                s->sum = 0;
            s->min = s->max = 0;
            s->noisy = true;
            tm_sketch_destroy (&s->sketch);
        }
    }
    self->matched = s_noisy_count (self->matched, scale);
    if (self->matched > self->scanned)
        self->matched = self->scanned;
}

//  ---------------------------------------------------------------------
//  Results

//  A group or row on its way to the result, with what sorts it.
typedef struct {
    const s_order_t *ord;              //  Shared: how to compare
    tm_expr_value_t *order;            //  ORDER BY values (nulls when none)
    tm_expr_value_t *keys;             //  Group keys, the tie-break (groups)
    size_t nkeys;                      //  Entries of keys
    s_row_t *row;                      //  Output values (owned until moved)
} s_entry_t;

static int
s_entry_cmp (const void *pa, const void *pb)
{
    const s_entry_t *a = (const s_entry_t *) pa, *b = (const s_entry_t *) pb;
    const s_order_t *o = a->ord;
    for (size_t i = 0; i < o->norder; i++) {
        int c = s_key_cmp (&a->order[i], &b->order[i], o->desc[i]);
        if (c)
            return c;
    }
    for (size_t i = 0; i < a->nkeys; i++) {
        int c = s_key_cmp (&a->keys[i], &b->keys[i], false);
        if (c)
            return c;
    }
    for (size_t i = 0; i < a->row->nvalues; i++) {
        int c = s_value_cmp (&a->row->values[i], &b->row->values[i]);
        if (c)
            return c;
    }
    return 0;
}

static int
s_row_entry_cmp (const void *pa, const void *pb)
{
    const s_entry_t *a = (const s_entry_t *) pa, *b = (const s_entry_t *) pb;
    return s_row_cmp (a->ord, a->row->values, b->row->values);
}

static tm_qresult_t *
s_result_new (size_t ncolumns)
{
    tm_qresult_t *self = (tm_qresult_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->columns = (char **) calloc (ncolumns? ncolumns: 1, sizeof *self->columns);
    if (!self->columns) {
        free (self);
        return NULL;
    }
    self->ncolumns = ncolumns;
    return self;
}

//  The value of aggregate a of a group in the final phase.
static tm_expr_value_t
s_agg_value (const tm_query_t *query, size_t a, const s_state_t *s)
{
    double q;
    tm_query_agg_t func = tm_query_aggregate (query, a, &q, NULL);
    double x = NAN;
    switch (func) {
        case TM_QUERY_AGG_COUNT:
            x = (double) s->count;
            break;
        case TM_QUERY_AGG_SUM:
            x = s->count? s->sum: NAN;
            break;
        case TM_QUERY_AGG_AVG:
            x = s->count? s->sum / (double) s->count: NAN;
            break;
        case TM_QUERY_AGG_MIN:
            x = s->count && !s->noisy? s->min: NAN;
            break;
        case TM_QUERY_AGG_MAX:
            x = s->count && !s->noisy? s->max: NAN;
            break;
        case TM_QUERY_AGG_QUANTILE:
            x = s->sketch && !s->noisy? tm_sketch_quantile (s->sketch, q): NAN;
            break;
    }
    return isfinite (x)? tm_expr_number (x): tm_expr_null ();
}

static int
s_result_groups (tm_qresult_t *self, const tm_query_t *query, const tm_qpartial_t *merged)
{
    size_t nkeys = merged->nkeys, naggs = merged->naggs, nout = self->ncolumns;
    size_t norder = tm_query_order_keys (query);
    s_order_t ord = {0, norder, {false}};
    const tm_expr_t *order[TM_QUERY_MAX_ORDER];
    for (size_t i = 0; i < norder; i++)
        order[i] = tm_query_order_key (query, i, &ord.desc[i]);
    const tm_expr_t *having = tm_query_having (query);
    //  Without GROUP BY there is one row even over no twins, as in SQL.
    size_t ngroups = merged->ngroups;
    s_group_t *empty = NULL;
    if (nkeys == 0 && ngroups == 0) {
        empty = (s_group_t *) calloc (1, sizeof (s_group_t) + naggs * sizeof (s_state_t));
        if (!empty)
            return -1;
        ngroups = 1;
    }
    size_t nfinal = nkeys + naggs;
    s_entry_t *entries = (s_entry_t *) calloc (ngroups, sizeof *entries);
    tm_expr_value_t *store = (tm_expr_value_t *) calloc (ngroups * (nfinal + norder) + 1,
                                                         sizeof *store);
    int rc = entries && store? 0: -1;
    size_t n = 0;
    tm_expr_value_t out[TM_QUERY_MAX_SELECT];
    for (size_t g = 0; g < ngroups && rc == 0; g++) {
        const s_group_t *grp = empty? empty: merged->groups[g];
        tm_expr_value_t *fv = store + g * (nfinal + norder);
        s_key_values (grp->key, nkeys, fv);
        for (size_t a = 0; a < naggs; a++)
            fv[nkeys + a] = s_agg_value (query, a, &grp->states[a]);
        if (having && !tm_expr_match (having, fv, nfinal))
            continue;
        s_entry_t *e = &entries[n];
        e->ord = &ord;
        e->keys = fv;
        e->nkeys = nkeys;
        e->order = fv + nfinal;
        for (size_t i = 0; i < norder; i++)
            tm_expr_eval (order[i], fv, nfinal, &e->order[i]);
        for (size_t i = 0; i < nout; i++)
            tm_expr_eval (tm_query_output (query, i), fv, nfinal, &out[i]);
        e->row = s_row_new (out, nout);
        if (!e->row)
            rc = -1;
        else
            n++;
    }
    if (rc == 0) {
        qsort (entries, n, sizeof *entries, s_entry_cmp);
        size_t limit = tm_query_limit (query);
        size_t keep = limit && limit < n? limit: n;
        self->rows = (s_row_t **) calloc (keep? keep: 1, sizeof *self->rows);
        if (!self->rows)
            rc = -1;
        for (size_t i = 0; rc == 0 && i < keep; i++) {
            self->rows[i] = entries[i].row;
            entries[i].row = NULL;
        }
        if (rc == 0)
            self->nrows = keep;
    }
    for (size_t i = 0; entries && i < n; i++)
        free (entries[i].row);
    free (entries);
    free (store);
    free (empty);
    return rc;
}

static int
s_result_rows (tm_qresult_t *self, const tm_query_t *query, const tm_qpartial_t *merged)
{
    size_t n = merged->nrows;
    s_entry_t *entries = (s_entry_t *) calloc (n? n: 1, sizeof *entries);
    if (!entries)
        return -1;
    for (size_t i = 0; i < n; i++) {
        entries[i].ord = &merged->ord;
        entries[i].row = merged->rows[i];
    }
    if (merged->ord.norder)
        qsort (entries, n, sizeof *entries, s_row_entry_cmp);
    size_t limit = tm_query_limit (query);
    size_t keep = limit && limit < n? limit: n;
    self->rows = (s_row_t **) calloc (keep? keep: 1, sizeof *self->rows);
    int rc = self->rows? 0: -1;
    for (size_t i = 0; rc == 0 && i < keep; i++) {
        //  Drop the ORDER BY values: the result has the outputs only.
        self->rows[i] = s_row_new (entries[i].row->values, self->ncolumns);
        if (!self->rows[i])
            rc = -1;
        else
            self->nrows++;
    }
    free (entries);
    return rc;
}

tm_qresult_t *
tm_qresult_new (const tm_query_t *query, const tm_qpartial_t *merged)
{
    assert (query);
    assert (merged);
    //  The partial may come from another parse of the same text: it must
    //  have this query's shape.
    if (!tm_query_has_final (query) || merged->aggregate != tm_query_is_aggregate (query)
        || merged->nkeys != tm_query_group_keys (query)
        || merged->naggs != tm_query_aggregates (query)
        || (!merged->aggregate
            && (merged->ord.noutputs != tm_query_outputs (query)
                || merged->ord.norder != tm_query_order_keys (query))))
        return NULL;
    size_t nout = tm_query_outputs (query);
    tm_qresult_t *self = s_result_new (nout);
    if (!self)
        return NULL;
    for (size_t i = 0; i < nout; i++)
        if (!(self->columns[i] = strdup (tm_query_output_title (query, i)))) {
            tm_qresult_destroy (&self);
            return NULL;
        }
    self->scanned = merged->scanned;
    self->matched = merged->matched;
    self->truncated = merged->truncated;
    int rc = merged->aggregate? s_result_groups (self, query, merged)
                              : s_result_rows (self, query, merged);
    if (rc != 0)
        tm_qresult_destroy (&self);
    return self;
}

static void
s_rows_free (s_row_t **rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++)
        free (rows[i]);
    free (rows);
}

void
tm_qresult_destroy (tm_qresult_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_qresult_t *self = *self_p;
    for (size_t i = 0; i < self->ncolumns; i++)
        free (self->columns[i]);
    free (self->columns);
    s_rows_free (self->rows, self->nrows);
    free (self->missing);
    for (size_t i = 0; i < self->nsites; i++) {
        free (self->sites[i].name);
        free (self->sites[i].detail);
        s_rows_free (self->sites[i].rows, self->sites[i].nrows);
    }
    free (self->sites);
    for (size_t i = 0; i < self->nwarnings; i++)
        free (self->warnings[i]);
    free (self->warnings);
    free (self);
    *self_p = NULL;
}

int
tm_qresult_set_shards (tm_qresult_t *self, uint32_t total, const uint32_t *missing,
                       size_t nmissing)
{
    assert (self);
    uint32_t *copy = NULL;
    if (nmissing) {
        copy = (uint32_t *) malloc (nmissing * sizeof *copy);
        if (!copy)
            return -1;
        memcpy (copy, missing, nmissing * sizeof *copy);
    }
    free (self->missing);
    self->missing = copy;
    self->nmissing = nmissing;
    self->shards_total = total;
    return 0;
}

void
tm_qresult_set_elapsed_us (tm_qresult_t *self, uint32_t elapsed_us)
{
    assert (self);
    self->elapsed_us = elapsed_us;
}

//  A clean NUL-ended copy of text (UTF-8, no control trouble on the wire).
static char *
s_clean_dup (const char *text)
{
    if (!text)
        text = "";
    size_t len = strlen (text);
    char *copy = (char *) malloc (len + 1);
    if (copy)
        s_copy_clean (copy, text, len);
    return copy;
}

int
tm_qresult_add_site_answer (tm_qresult_t *self, const char *site, bool answered,
                            const char *detail, uint64_t matched, const tm_qresult_t *own,
                            uint32_t shards_missing)
{
    assert (self);
    s_site_t *grown = (s_site_t *) realloc (self->sites, (self->nsites + 1) * sizeof *grown);
    if (!grown)
        return -1;
    self->sites = grown;
    s_site_t *s = &self->sites[self->nsites];
    memset (s, 0, sizeof *s);
    s->name = s_clean_dup (site);
    s->detail = s_clean_dup (detail);
    s->answered = answered;
    s->matched = matched;
    s->shards_missing = shards_missing;
    bool ok = s->name && s->detail;
    if (ok && own && own->ncolumns == self->ncolumns && own->nrows) {
        s->rows = (s_row_t **) calloc (own->nrows, sizeof *s->rows);
        ok = s->rows != NULL;
        for (size_t r = 0; ok && r < own->nrows; r++) {
            s->rows[r] = s_row_new (own->rows[r]->values, own->ncolumns);
            ok = s->rows[r] != NULL;
            if (ok)
                s->nrows++;
        }
    }
    if (!ok) {
        free (s->name);
        free (s->detail);
        s_rows_free (s->rows, s->nrows);
        return -1;
    }
    self->nsites++;
    return 0;
}

int
tm_qresult_add_site (tm_qresult_t *self, const char *site, bool answered, const char *detail,
                     uint64_t matched)
{
    return tm_qresult_add_site_answer (self, site, answered, detail, matched, NULL, 0);
}

int
tm_qresult_add_warning (tm_qresult_t *self, const char *warning)
{
    assert (self);
    char **grown = (char **) realloc (self->warnings, (self->nwarnings + 1) * sizeof *grown);
    if (!grown)
        return -1;
    self->warnings = grown;
    char *copy = s_clean_dup (warning);
    if (!copy)
        return -1;
    self->warnings[self->nwarnings++] = copy;
    return 0;
}

uint8_t *
tm_qresult_encode (const tm_qresult_t *self, size_t *size)
{
    assert (self);
    assert (size);
    s_bag_t bag = {NULL, 0, 0, false};
    Twinmesh__QueryResult msg = TWINMESH__QUERY_RESULT__INIT;
    msg.n_columns = self->ncolumns;
    msg.columns = self->columns;
    msg.n_rows = self->nrows;
    msg.rows = s_rows_to (&bag, self->rows, self->nrows, self->ncolumns, 0);
    msg.shards_total = self->shards_total;
    msg.n_missing_shards = self->nmissing;
    msg.missing_shards = self->missing;
    msg.scanned = self->scanned;
    msg.matched = self->matched;
    msg.elapsed_us = self->elapsed_us;
    msg.truncated = self->truncated;
    msg.n_warnings = self->nwarnings;
    msg.warnings = self->warnings;
    if (self->nsites) {
        msg.n_sites = self->nsites;
        msg.sites = (Twinmesh__SiteAnswer **) s_bag_alloc (&bag, self->nsites,
                                                           sizeof *msg.sites);
        Twinmesh__SiteAnswer *sites = (Twinmesh__SiteAnswer *) s_bag_alloc (&bag, self->nsites,
                                                                            sizeof *sites);
        for (size_t i = 0; !bag.failed && i < self->nsites; i++) {
            const s_site_t *s = &self->sites[i];
            twinmesh__site_answer__init (&sites[i]);
            sites[i].site = s->name;
            sites[i].answered = s->answered;
            sites[i].detail = s->detail;
            sites[i].matched = s->matched;
            sites[i].shards_missing = s->shards_missing;
            sites[i].n_rows = s->nrows;
            sites[i].rows = s_rows_to (&bag, s->rows, s->nrows, self->ncolumns, 0);
            msg.sites[i] = &sites[i];
        }
    }
    uint8_t *out = NULL;
    if (!bag.failed)
        out = tm_codec_pack_buf (&msg.base, size);
    s_bag_free (&bag);
    return out;
}

static bool
s_text_ok (const char *s, size_t max)
{
    if (!s)
        return true;
    size_t len = strnlen (s, max + 1);
    return len <= max && tm_util_utf8_valid (s, len);
}

//  Rows of a decoded result: n values each, checked.
static int
s_rows_from (Twinmesh__QueryRow **in, size_t n, size_t ncolumns, s_row_t ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (n > TM_QUERY_MAX_LIMIT)
        return -1;
    if (!n)
        return 0;
    s_row_t **rows = (s_row_t **) calloc (n, sizeof *rows);
    if (!rows)
        return -1;
    tm_expr_value_t values[TM_QUERY_MAX_SELECT];
    for (size_t r = 0; r < n; r++) {
        if (!in[r] || in[r]->n_values != ncolumns || in[r]->n_order) {
            s_rows_free (rows, r);
            return -1;
        }
        for (size_t c = 0; c < ncolumns; c++)
            if (s_value_from (in[r]->values[c], &values[c]) != 0) {
                s_rows_free (rows, r);
                return -1;
            }
        rows[r] = s_row_new (values, ncolumns);
        if (!rows[r]) {
            s_rows_free (rows, r);
            return -1;
        }
    }
    *out = rows;
    *nout = n;
    return 0;
}

tm_qresult_t *
tm_qresult_decode (const uint8_t *data, size_t size, char *err, size_t err_size)
{
    Twinmesh__QueryResult *msg = TM_UNPACK (QueryResult, query_result, data, size);
    if (!msg) {
        s_say (err, err_size, "not a QueryResult message");
        return NULL;
    }
    tm_qresult_t *self = NULL;
    const char *why = NULL;
    if (msg->n_columns > TM_QUERY_MAX_SELECT)
        why = "too many columns";
    else
    if (msg->n_sites > S_MAX_RESULT_SITES || msg->n_warnings > S_MAX_WARNINGS
        || msg->n_missing_shards > S_MAX_MISSING)
        why = "too many sites, warnings or missing shards";
    else
    if (msg->matched > msg->scanned)
        why = "more twins matched than scanned";
    for (size_t i = 0; !why && i < msg->n_columns; i++)
        if (!msg->columns[i] || !s_text_ok (msg->columns[i], 4096))
            why = "a column title is not valid text";
    for (size_t i = 0; !why && i < msg->n_warnings; i++)
        if (!s_text_ok (msg->warnings[i], 4096))
            why = "a warning is not valid text";
    for (size_t i = 0; !why && i < msg->n_sites; i++)
        if (!msg->sites[i] || !s_text_ok (msg->sites[i]->site, 4096)
            || !s_text_ok (msg->sites[i]->detail, 4096))
            why = "a site is not valid";
    if (!why) {
        self = s_result_new (msg->n_columns);
        if (!self)
            why = "out of memory";
    }
    for (size_t i = 0; !why && i < msg->n_columns; i++)
        if (!(self->columns[i] = strdup (msg->columns[i])))
            why = "out of memory";
    if (!why && s_rows_from (msg->rows, msg->n_rows, msg->n_columns, &self->rows, &self->nrows))
        why = "bad rows";
    if (!why && tm_qresult_set_shards (self, msg->shards_total, msg->missing_shards,
                                       msg->n_missing_shards) != 0)
        why = "out of memory";
    for (size_t i = 0; !why && i < msg->n_warnings; i++)
        if (tm_qresult_add_warning (self, msg->warnings[i]) != 0)
            why = "out of memory";
    for (size_t i = 0; !why && i < msg->n_sites; i++) {
        const Twinmesh__SiteAnswer *s = msg->sites[i];
        if (tm_qresult_add_site (self, s->site, s->answered, s->detail, s->matched) != 0) {
            why = "out of memory";
            break;
        }
        s_site_t *site = &self->sites[self->nsites - 1];
        site->shards_missing = s->shards_missing;
        if (s_rows_from (s->rows, s->n_rows, msg->n_columns, &site->rows, &site->nrows) != 0)
            why = "bad rows in a site's answer";
    }
    if (self && !why) {
        self->scanned = msg->scanned;
        self->matched = msg->matched;
        self->elapsed_us = msg->elapsed_us;
        self->truncated = msg->truncated;
    }
    if (why) {
        s_say (err, err_size, "%s", why);
        tm_qresult_destroy (&self);
    }
    tm_codec_free (&msg);
    return self;
}

size_t
tm_qresult_columns (const tm_qresult_t *self)
{
    assert (self);
    return self->ncolumns;
}

const char *
tm_qresult_column (const tm_qresult_t *self, size_t index)
{
    assert (self);
    return index < self->ncolumns? self->columns[index]: NULL;
}

size_t
tm_qresult_rows (const tm_qresult_t *self)
{
    assert (self);
    return self->nrows;
}

tm_expr_value_t
tm_qresult_cell (const tm_qresult_t *self, size_t row, size_t column)
{
    assert (self);
    if (row >= self->nrows || column >= self->ncolumns)
        return tm_expr_null ();
    return self->rows[row]->values[column];
}

uint64_t
tm_qresult_scanned (const tm_qresult_t *self)
{
    assert (self);
    return self->scanned;
}

uint64_t
tm_qresult_matched (const tm_qresult_t *self)
{
    assert (self);
    return self->matched;
}

bool
tm_qresult_truncated (const tm_qresult_t *self)
{
    assert (self);
    return self->truncated;
}

bool
tm_qresult_partial (const tm_qresult_t *self)
{
    assert (self);
    if (self->nmissing)
        return true;
    for (size_t i = 0; i < self->nsites; i++)
        if (!self->sites[i].answered || self->sites[i].shards_missing)
            return true;
    return false;
}

uint32_t
tm_qresult_shards_total (const tm_qresult_t *self)
{
    assert (self);
    return self->shards_total;
}

size_t
tm_qresult_missing (const tm_qresult_t *self, const uint32_t **shards)
{
    assert (self);
    if (shards)
        *shards = self->missing;
    return self->nmissing;
}

uint32_t
tm_qresult_elapsed_us (const tm_qresult_t *self)
{
    assert (self);
    return self->elapsed_us;
}

size_t
tm_qresult_warnings (const tm_qresult_t *self)
{
    assert (self);
    return self->nwarnings;
}

const char *
tm_qresult_warning (const tm_qresult_t *self, size_t index)
{
    assert (self);
    return index < self->nwarnings? self->warnings[index]: NULL;
}

size_t
tm_qresult_sites (const tm_qresult_t *self)
{
    assert (self);
    return self->nsites;
}

const char *
tm_qresult_site (const tm_qresult_t *self, size_t index, bool *answered, uint64_t *matched,
                 size_t *rows)
{
    assert (self);
    if (index >= self->nsites)
        return NULL;
    const s_site_t *s = &self->sites[index];
    if (answered)
        *answered = s->answered;
    if (matched)
        *matched = s->matched;
    if (rows)
        *rows = s->nrows;
    return s->name;
}

//  ---------------------------------------------------------------------
//  Printing

//  For people: 6 significant digits, whole numbers below 1e15 in full.
static void
s_format_number (double x, char *buf, size_t cap)
{
    if (x == 0)
        x = 0;
    if (x == floor (x) && fabs (x) < 1e15)
        snprintf (buf, cap, "%.0f", x);
    else
        snprintf (buf, cap, "%.6g", x);
}

//  For machines: the shortest text that reads back as the same double.
static void
s_format_exact (double x, char *buf, size_t cap)
{
    if (x == 0)
        x = 0;
    if (x == floor (x) && fabs (x) < 1e15) {
        snprintf (buf, cap, "%.0f", x);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf (buf, cap, "%.*g", prec, x);
        if (strtod (buf, NULL) == x)
            return;
    }
}

//  Up to 7 decimals (about 1 cm), trailing zeros trimmed.
static void
s_format_degrees (double x, char *buf, size_t cap)
{
    snprintf (buf, cap, "%.7f", x == 0? 0: x);
    char *dot = strchr (buf, '.');
    if (!dot)
        return;
    char *end = buf + strlen (buf);
    while (end > dot + 1 && end[-1] == '0')
        *--end = 0;
    if (end == dot + 1)
        *dot = 0;
}

//  A cell as text for the table and CSV (new string), NULL on no memory.
static char *
s_cell_text (const tm_expr_value_t *v, bool exact, bool table)
{
    char buf[96];
    switch (v->type) {
        case TM_EXPR_NUMBER:
            if (exact)
                s_format_exact (v->num, buf, sizeof buf);
            else
                s_format_number (v->num, buf, sizeof buf);
            return strdup (buf);
        case TM_EXPR_STRING: {
            char *s = strndup (v->str, v->len);
            for (size_t i = 0; s && table && s[i]; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7F)
                    s[i] = ' ';            //  One table line per row
            return s;
        }
        case TM_EXPR_BOOL:
            return strdup (v->b? "true": "false");
        case TM_EXPR_LOCATION: {
            char lat[40], lon[40];
            s_format_degrees (v->lat, lat, sizeof lat);
            s_format_degrees (v->lon, lon, sizeof lon);
            snprintf (buf, sizeof buf, "%s,%s", lat, lon);
            return strdup (buf);
        }
        default:
            return strdup (table? "NULL": "");
    }
}

//  Characters on screen of UTF-8 text (one per code point).
static size_t
s_width (const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char) *s & 0xC0) != 0x80;
    return n;
}

static void
s_pad (FILE *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fputc (' ', out);
}

static int
s_print_table (const tm_qresult_t *self, FILE *out)
{
    size_t nc = self->ncolumns, nr = self->nrows;
    size_t *width = (size_t *) calloc (nc? nc: 1, sizeof *width);
    char **cells = (char **) calloc (nr * nc + 1, sizeof *cells);
    int rc = width && cells? 0: -1;
    for (size_t c = 0; rc == 0 && c < nc; c++)
        width[c] = s_width (self->columns[c]);
    for (size_t r = 0; rc == 0 && r < nr; r++)
        for (size_t c = 0; rc == 0 && c < nc; c++) {
            cells[r * nc + c] = s_cell_text (&self->rows[r]->values[c], false, true);
            if (!cells[r * nc + c])
                rc = -1;
            else
            if (s_width (cells[r * nc + c]) > width[c])
                width[c] = s_width (cells[r * nc + c]);
        }
    if (rc == 0) {
        for (size_t c = 0; c < nc; c++) {
            fputs (self->columns[c], out);
            if (c + 1 < nc)
                s_pad (out, width[c] - s_width (self->columns[c]) + 2);
        }
        fputc ('\n', out);
        for (size_t c = 0; c < nc; c++) {
            for (size_t i = 0; i < width[c]; i++)
                fputc ('-', out);
            if (c + 1 < nc)
                fputs ("  ", out);
        }
        fputc ('\n', out);
        for (size_t r = 0; r < nr; r++) {
            for (size_t c = 0; c < nc; c++) {
                const char *cell = cells[r * nc + c];
                size_t pad = width[c] - s_width (cell);
                //  Numbers right-aligned, the rest left-aligned.
                bool right = self->rows[r]->values[c].type == TM_EXPR_NUMBER;
                if (right)
                    s_pad (out, pad);
                fputs (cell, out);
                if (c + 1 < nc)
                    s_pad (out, (right? 0: pad) + 2);
            }
            fputc ('\n', out);
        }
    }
    for (size_t i = 0; cells && i < nr * nc; i++)
        free (cells[i]);
    free (cells);
    free (width);
    return rc;
}

static void
s_csv_field (FILE *out, const char *s)
{
    if (!strpbrk (s, ",\"\r\n")) {
        fputs (s, out);
        return;
    }
    fputc ('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc ('"', out);
        fputc (*s, out);
    }
    fputc ('"', out);
}

static int
s_print_csv (const tm_qresult_t *self, FILE *out)
{
    for (size_t c = 0; c < self->ncolumns; c++) {
        if (c)
            fputc (',', out);
        s_csv_field (out, self->columns[c]);
    }
    fputs ("\r\n", out);
    for (size_t r = 0; r < self->nrows; r++) {
        for (size_t c = 0; c < self->ncolumns; c++) {
            char *cell = s_cell_text (&self->rows[r]->values[c], true, false);
            if (!cell)
                return -1;
            if (c)
                fputc (',', out);
            s_csv_field (out, cell);
            free (cell);
        }
        fputs ("\r\n", out);
    }
    return 0;
}

static json_t *
s_json_value (const tm_expr_value_t *v)
{
    switch (v->type) {
        case TM_EXPR_NUMBER:
            if (v->num == floor (v->num) && fabs (v->num) < 9007199254740992.0)
                return json_integer ((json_int_t) v->num);
            return json_real (v->num);
        case TM_EXPR_STRING:
            return json_stringn (v->str, v->len);
        case TM_EXPR_BOOL:
            return json_boolean (v->b);
        case TM_EXPR_LOCATION:
            return json_pack ("{s:f,s:f}", "lat", v->lat, "lon", v->lon);
        default:
            return json_null ();
    }
}

static json_t *
s_json_rows (s_row_t *const *rows, size_t nrows, size_t ncolumns)
{
    json_t *array = json_array ();
    for (size_t r = 0; array && r < nrows; r++) {
        json_t *row = json_array ();
        for (size_t c = 0; row && c < ncolumns; c++)
            if (json_array_append_new (row, s_json_value (&rows[r]->values[c])) != 0) {
                json_decref (row);
                row = NULL;
            }
        if (!row || json_array_append_new (array, row) != 0) {
            json_decref (array);
            array = NULL;
        }
    }
    return array;
}

static int
s_print_json (const tm_qresult_t *self, FILE *out)
{
    json_t *root = json_object ();
    json_t *columns = json_array ();
    json_t *missing = json_array ();
    json_t *sites = json_array ();
    json_t *warnings = json_array ();
    int rc = root && columns && missing && sites && warnings? 0: -1;
    for (size_t c = 0; rc == 0 && c < self->ncolumns; c++)
        rc = json_array_append_new (columns, json_string (self->columns[c]));
    for (size_t i = 0; rc == 0 && i < self->nmissing; i++)
        rc = json_array_append_new (missing, json_integer (self->missing[i]));
    for (size_t i = 0; rc == 0 && i < self->nwarnings; i++)
        rc = json_array_append_new (warnings, json_string (self->warnings[i]));
    for (size_t i = 0; rc == 0 && i < self->nsites; i++) {
        const s_site_t *s = &self->sites[i];
        json_t *rows = s_json_rows (s->rows, s->nrows, self->ncolumns);
        json_t *site = rows? json_pack ("{s:s,s:b,s:s,s:I,s:I,s:o}", "site", s->name,
                                        "answered", s->answered, "detail", s->detail,
                                        "matched", (json_int_t) s->matched, "shards_missing",
                                        (json_int_t) s->shards_missing, "rows", rows)
                         : NULL;
        rc = site? json_array_append_new (sites, site): -1;
    }
    json_t *rows = rc == 0? s_json_rows (self->rows, self->nrows, self->ncolumns): NULL;
    if (rc == 0 && rows) {
        json_object_set_new (root, "columns", columns);
        json_object_set_new (root, "rows", rows);
        json_object_set_new (root, "scanned", json_integer ((json_int_t) self->scanned));
        json_object_set_new (root, "matched", json_integer ((json_int_t) self->matched));
        json_object_set_new (root, "elapsed_ms", json_real (self->elapsed_us / 1000.0));
        json_object_set_new (root, "partial", json_boolean (tm_qresult_partial (self)));
        json_object_set_new (root, "missing_shards", missing);
        json_object_set_new (root, "shards_total", json_integer (self->shards_total));
        json_object_set_new (root, "sites", sites);
        json_object_set_new (root, "warnings", warnings);
        json_object_set_new (root, "truncated", json_boolean (self->truncated));
        columns = missing = sites = warnings = NULL;
        rc = json_dumpf (root, out, JSON_REAL_PRECISION (15) | JSON_PRESERVE_ORDER);
        if (rc == 0)
            fputc ('\n', out);
    }
    else
        rc = -1;
    json_decref (columns);
    json_decref (missing);
    json_decref (sites);
    json_decref (warnings);
    json_decref (root);
    return rc;
}

static void
s_print_trailer (const tm_qresult_t *self, FILE *err)
{
    fprintf (err, "%zu row%s; %llu of %llu twins matched; %.1f ms\n", self->nrows,
             self->nrows == 1? "": "s", (unsigned long long) self->matched,
             (unsigned long long) self->scanned, self->elapsed_us / 1000.0);
    if (self->truncated)
        fprintf (err, "TRUNCATED: more than %d groups or rows; the answer is cut\n",
                 TM_QUERY_MAX_LIMIT);
    if (self->nmissing) {
        fprintf (err, "PARTIAL ANSWER: %zu of %u shards did not answer within the deadline: ",
                 self->nmissing, self->shards_total);
        for (size_t i = 0; i < self->nmissing; i++)
            fprintf (err, "%s%u", i? ",": "", self->missing[i]);
        fputc ('\n', err);
    }
    for (size_t i = 0; i < self->nsites; i++) {
        const s_site_t *s = &self->sites[i];
        if (s->answered)
            fprintf (err, "site %s: answered, %llu twins matched%s%s%s", s->name,
                     (unsigned long long) s->matched, *s->detail? " (": "", s->detail,
                     *s->detail? ")": "");
        else
            fprintf (err, "PARTIAL ANSWER: site %s did not answer%s%s%s", s->name,
                     *s->detail? " (": "", s->detail, *s->detail? ")": "");
        if (s->shards_missing)
            fprintf (err, "; PARTIAL: %u of its shards did not answer", s->shards_missing);
        fputc ('\n', err);
    }
    for (size_t i = 0; i < self->nwarnings; i++)
        fprintf (err, "warning: %s\n", self->warnings[i]);
}

int
tm_qresult_print (const tm_qresult_t *self, tm_qresult_format_t format, FILE *out, FILE *err)
{
    assert (self);
    assert (out);
    int rc;
    if (format == TM_QRESULT_JSON)
        rc = s_print_json (self, out);
    else {
        rc = format == TM_QRESULT_CSV? s_print_csv (self, out): s_print_table (self, out);
        //  The table first, then the trailer, also on a terminal where the
        //  two streams meet (stderr is unbuffered, stdout is not).
        if (fflush (out) != 0)
            rc = -1;
        if (err)
            s_print_trailer (self, err);
    }
    if (fflush (out) != 0 || ferror (out))
        rc = -1;
    if (err && (fflush (err) != 0 || ferror (err)))
        rc = -1;
    return rc;
}
