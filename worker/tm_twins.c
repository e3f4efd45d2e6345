/*  tm_twins - the worker's twins in memory: one open-addressing table  */
#include "tm_twins.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_varint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TM_TWINS_INITIAL_SLOTS 1024    //  Power of two

typedef struct {
    uint64_t hash;
    char *name;                    //  Owned, NUL-terminated, S_NAME_HEAD bytes into
                                   //  its block
    uint32_t len;
} s_name_t;

//  An interned name's block: its id (u16, little-endian) and its length
//  (one byte: names are at most 64 bytes) before the name. The length, so
//  that encoding a checkpoint never scans a name for its end; the id, so
//  that a name found by tm_twins_name_find leads to the properties that
//  hold it without a second lookup.
#define S_NAME_HEAD 3

//  One model version's settings, one entry per model property. Self-
//  contained (names copied): it outlives the model it was built from, so
//  a twin still pointing at it after the model is replaced reads memory
//  that is alive. Freed only by tm_twins_destroy.
struct _tm_twins_table_t {
    struct _tm_twins_table_t *next;    //  Every table built, newest first
    char model[TM_MODEL_NAME_MAX + 1]; //  Model name
    uint32_t version;                  //  Model version
    uint64_t text_hash;                //  Hash of the canonical text (same version,
                                       //  removed and loaded again, may differ)
    uint32_t nprops;                   //  Entries in names and settings
    char (*names)[TM_MODEL_NAME_MAX + 1];  //  Property names, model order; owned
    tm_analytics_settings_t *settings; //  Per property; owned
    uint8_t *types;                    //  Per property, tm_model_type_t; owned
};

struct _tm_twins_t {
    tm_twin_t **slots;             //  Open addressing, linear probing; NULL = empty
    size_t nslots;                 //  Power of two
    size_t count;                  //  Twins in the table
    s_name_t *names;               //  Interned property names, open addressing
    size_t nnames_slots;           //  Power of two
    size_t nnames;                 //  Names interned (the next one's id)
    const char **by_id;            //  Interned names by id (tm_prop_t.id), borrowed
                                   //  from names: the array moves as it grows, the
                                   //  names never do
    size_t by_id_cap;              //  Entries allocated in by_id
    tm_twin_t **shard_heads;       //  Per shard, its twins (TM_SHARDMAP_MAX_SHARDS)
    uint8_t *shard_dirty;          //  Bitmap: shard changed since take_dirty
    uint32_t *dirty;               //  The changed shards, in order of first change
    size_t ndirty;
    tm_twins_pending_t **pending;  //  Per shard, history waiting for a checkpoint
    size_t npending;               //  Entries in all pending lists
    tm_analytics_settings_t defaults;  //  For properties without a model
    const tm_models_t *models;     //  Registry of models, borrowed; NULL: none
    tm_twins_hook_fn *on_created;  //  tm_commands: a twin was made, or NULL
    tm_twins_hook_fn *on_reported; //  tm_commands: a twin with commands read, or NULL
    void *hooks_arg;               //  Their argument
    uint64_t models_gen;           //  Its generation when current was built
    bool models_seen;              //  current was built at least once
    tm_twins_table_t *tables;      //  Every settings table built, owned
    tm_twins_table_t **current;    //  Tables of the registry's models now, in its order
    size_t ncurrent;               //  Entries in current
    uint64_t anomalies;            //  Readings flagged anomalous
    uint64_t out_of_range;         //  Readings outside their valid range
    uint64_t history_dropped;      //  Applied readings no chunk holds (s_hist_append)
    uint64_t attrs_refused;        //  Attribute values refused (type, limit)
    uint64_t quality[TM_MODEL_Q_COUNT];    //  Readings applied, by quality class
    zhashx_t *values;              //  Attribute string values, shared: text -> s_value_t
    size_t in_state[TM_SYNC_NSTATES];  //  Twins per sync state
    tm_twin_t **rows;              //  Every twin by row (creation order)
    size_t rows_cap;               //  Entries allocated in rows (count in use)
    uint32_t *changed;             //  Rows changed since tm_twins_changed_clear
    size_t nchanged;               //  Entries in changed
    size_t changed_cap;            //  Allocated entries of changed
    bool changed_overflow;         //  A change could not be listed: all rows changed
    size_t tick_next;              //  Next row tm_twins_tick_part ticks
    uint16_t last_prop;            //  Index the last applied reading's property had
    uint64_t log_seq;              //  Log record the state includes (tm_twins_set_log_seq)
    uint64_t replay_seq;           //  Record being replayed, 0: none
    uint64_t *covered;             //  Per shard, log seq of its restored blob; NULL: none
    tm_twins_due_t *due;           //  Series due a segment, noted by the encoders
    size_t ndue;
    size_t due_cap;
    tm_twins_touch_fn *touch;      //  The hierarchy's hook (tm_peers), NULL: none
    void *touch_arg;
    struct {
        tm_twins_load_fn *load;    //  Reads a passive twin's copy; NULL: none
        tm_twins_may_fn *may;      //  Vetoes passivation, or NULL
        void *arg;
        uint8_t key[TM_SHARDMAP_KEY_BYTES];    //  The cluster's shard key
        uint32_t num_shards;       //  Its shard count (0: unknown, no reactivation)
        uint64_t **set;            //  Per shard, sorted table hashes of passive twins
        uint32_t *n;               //  Per shard, entries in set
        uint32_t *cap;             //  Per shard, allocated entries
        uint8_t *changed;          //  Bitmap: passive set changed since the last commit
        size_t total;              //  Entries in every set
        tm_twins_passive_stats_t stats;
    } passive;                     //  tm_twins_set_passivation
    struct {
        bool on;                   //  Recovery into a table that was empty
        uint8_t key[TM_SHARDMAP_KEY_BYTES];    //  The cluster's shard key
        uint32_t num_shards;       //  Its shard count
        uint32_t owned;            //  Shards this worker owns (sizes the table)
        tm_twin_t **seen;          //  One blob's twins by hash (open addressing)
        size_t nseen;              //  Slots in seen (a power of two)
    } bulk;                        //  tm_twins_restore_begin .. end
};

const char tm_twins_no_parent_ = 0;

//  A table hash, not a keyed one: the shard hash that spreads entities
//  across workers is keyed, so no producer can pick colliding ids for a
//  worker it cannot aim at. Eight bytes per step with a multiply-xorshift
//  mix: the byte-at-a-time FNV-1a this replaced was most of the lookup.
static uint64_t
s_hash (const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *) data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (len * 0xff51afd7ed558ccdULL);
    while (len >= 8) {
        uint64_t w;
        memcpy (&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy (&w, p, len);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

//  A twin's table hash, from its id: not kept in the twin (8 bytes of
//  every twin, issue #3), it is needed only where a twin moves or leaves
//  (growth, removal) or is passivated, never by a lookup, which compares
//  the id's length and bytes of the twins on its probe path.
static uint64_t
s_twin_hash (const tm_twin_t *t)
{
    return s_hash (t->entity, t->entity_len);
}

//  One attribute string value shared by every twin that has it: a city's
//  million twins have a few dozen districts, so one copy each instead of a
//  million saves memory, and a query grouping by district reads the same
//  few cache lines instead of one miss per twin. Counted, freed at zero.
typedef struct {
    uint32_t refs;                 //  Attributes pointing at str
    char str[];                    //  The value, NUL-terminated
} s_value_t;

static void
s_value_destructor (void **item)
{
    free (*item);
    *item = NULL;
}

//  The shared copy of str (one more reference), or NULL (keep your own).
static char *
s_value_intern (tm_twins_t *self, const char *str, size_t len)
{
    if (!self->values || strlen (str) != len)
        return NULL;       //  no table, or a NUL inside: not a zhashx key
    s_value_t *v = (s_value_t *) zhashx_lookup (self->values, str);
    if (!v) {
        v = malloc (sizeof *v + len + 1);
        if (!v)
            return NULL;
        v->refs = 0;
        memcpy (v->str, str, len + 1);
        if (zhashx_insert (self->values, str, v) != 0) {
            free (v);
            return NULL;
        }
    }
    v->refs++;
    return v->str;
}

//  Drop what an attribute holds: its own string, or a shared reference.
static void
s_attr_drop (tm_twins_t *self, tm_attr_t *a)
{
    if (a->type == TM_EXPR_STRING && a->shared && self->values) {
        s_value_t *v = (s_value_t *) zhashx_lookup (self->values, a->str);
        if (v && --v->refs == 0)
            zhashx_delete (self->values, a->str);
    }
    tm_attr_fini (a);
}

tm_twins_t *
tm_twins_new (void)
{
    tm_twins_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->nslots = TM_TWINS_INITIAL_SLOTS;
    self->slots = calloc (self->nslots, sizeof (tm_twin_t *));
    self->nnames_slots = 256;
    self->names = calloc (self->nnames_slots, sizeof (s_name_t));
    self->by_id_cap = 256;
    self->by_id = calloc (self->by_id_cap, sizeof (const char *));
    //  Sized for the largest cluster (512 KiB of heads): a worker learns
    //  its cluster's shard count only from the map, after the table exists.
    self->shard_heads = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof (tm_twin_t *));
    self->shard_dirty = calloc (TM_SHARDMAP_MAX_SHARDS / 8, 1);
    self->dirty = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof (uint32_t));
    self->pending = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof (tm_twins_pending_t *));
    tm_analytics_settings_defaults (&self->defaults);
    self->values = zhashx_new ();
    if (self->values)
        zhashx_set_destructor (self->values, s_value_destructor);
    if (!self->slots || !self->names || !self->by_id || !self->shard_heads || !self->shard_dirty
        || !self->dirty || !self->pending || !self->values) {
        tm_twins_destroy (&self);
        return NULL;
    }
    return self;
}

static void
s_twin_free (tm_twins_t *self, tm_twin_t *twin)
{
    //  The entity id lives in the twin's allocation (s_insert).
    for (uint16_t i = 0; i < twin->nprops; i++)
        tm_gorilla_open_fini (&twin->props[i].hist);
    free (twin->props);
    for (uint8_t i = 0; i < twin->nattrs; i++)
        s_attr_drop (self, &twin->attrs[i]);
    free (twin->attrs);
    free (twin);
}

void
tm_twins_destroy (tm_twins_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_twins_t *self = *self_p;
    if (self->slots)
        for (size_t i = 0; i < self->nslots; i++)
            if (self->slots[i])
                s_twin_free (self, self->slots[i]);
    if (self->names)
        for (size_t i = 0; i < self->nnames_slots; i++)
            if (self->names[i].name)
                free (self->names[i].name - S_NAME_HEAD);
    if (self->pending)
        for (uint32_t shard = 0; shard < TM_SHARDMAP_MAX_SHARDS; shard++)
            if (self->pending[shard])
                tm_twins_pending_drop (self, shard);
    while (self->tables) {
        tm_twins_table_t *next = self->tables->next;
        free (self->tables->names);
        free (self->tables->settings);
        free (self->tables->types);
        free (self->tables);
        self->tables = next;
    }
    zhashx_destroy (&self->values);
    if (self->passive.set)
        for (uint32_t shard = 0; shard < TM_SHARDMAP_MAX_SHARDS; shard++)
            free (self->passive.set[shard]);
    free (self->passive.set);
    free (self->covered);
    free (self->due);
    free (self->passive.n);
    free (self->passive.cap);
    free (self->passive.changed);
    free (self->bulk.seen);
    free (self->current);
    free (self->pending);
    free (self->rows);
    free (self->changed);
    free (self->slots);
    free (self->names);
    free (self->by_id);
    free (self->shard_heads);
    free (self->shard_dirty);
    free (self->dirty);
    free (self);
    *self_p = NULL;
}

static int
s_grow_twins (tm_twins_t *self)
{
    size_t nslots = self->nslots * 2;
    tm_twin_t **slots = calloc (nslots, sizeof (tm_twin_t *));
    if (!slots)
        return -1;
    for (size_t i = 0; i < self->nslots; i++) {
        tm_twin_t *t = self->slots[i];
        if (!t)
            continue;
        size_t j = s_twin_hash (t) & (nslots - 1);
        while (slots[j])
            j = (j + 1) & (nslots - 1);
        slots[j] = t;
    }
    free (self->slots);
    self->slots = slots;
    self->nslots = nslots;
    return 0;
}

static int
s_grow_names (tm_twins_t *self)
{
    size_t nslots = self->nnames_slots * 2;
    s_name_t *names = calloc (nslots, sizeof (s_name_t));
    if (!names)
        return -1;
    for (size_t i = 0; i < self->nnames_slots; i++) {
        if (!self->names[i].name)
            continue;
        size_t j = self->names[i].hash & (nslots - 1);
        while (names[j].name)
            j = (j + 1) & (nslots - 1);
        names[j] = self->names[i];
    }
    free (self->names);
    self->names = names;
    self->nnames_slots = nslots;
    return 0;
}

//  The interned copy of a property name, interning it if new; NULL if over
//  the limit or out of memory.
static const char *
s_intern (tm_twins_t *self, const char *name, size_t len)
{
    uint64_t h = s_hash (name, len);
    size_t j = h & (self->nnames_slots - 1);
    while (self->names[j].name) {
        if (self->names[j].hash == h && self->names[j].len == len
            && memcmp (self->names[j].name, name, len) == 0)
            return self->names[j].name;
        j = (j + 1) & (self->nnames_slots - 1);
    }
    if (self->nnames >= TM_TWINS_MAX_NAMES)
        return NULL;
    if (self->nnames == self->by_id_cap) {
        size_t cap = self->by_id_cap * 2;
        const char **grown = realloc (self->by_id, cap * sizeof *grown);
        if (!grown)
            return NULL;
        self->by_id = grown;
        self->by_id_cap = cap;
    }
    char *block = malloc (S_NAME_HEAD + len + 1);
    if (!block)
        return NULL;
    uint16_t id = (uint16_t) self->nnames;
    block[0] = (char) (id & 0xff);
    block[1] = (char) (id >> 8);
    block[2] = (char) len;
    char *copy = block + S_NAME_HEAD;
    memcpy (copy, name, len);
    copy[len] = 0;
    self->names[j] = (s_name_t) {.hash = h, .name = copy, .len = (uint32_t) len};
    self->by_id[id] = copy;
    self->nnames++;
    if (self->nnames * 10 > self->nnames_slots * 7)
        s_grow_names (self);   //  on failure the table stays usable, just fuller
    return copy;
}

const char *
tm_twins_name_find (tm_twins_t *self, const char *name, size_t len)
{
    uint64_t h = s_hash (name, len);
    size_t j = h & (self->nnames_slots - 1);
    while (self->names[j].name) {
        if (self->names[j].hash == h && self->names[j].len == len
            && memcmp (self->names[j].name, name, len) == 0)
            return self->names[j].name;
        j = (j + 1) & (self->nnames_slots - 1);
    }
    return NULL;
}

//  The id of an interned name, from the bytes before it.
static inline uint16_t
s_name_id (const char *interned)
{
    const unsigned char *head = (const unsigned char *) interned - S_NAME_HEAD;
    return (uint16_t) (head[0] | head[1] << 8);
}

static inline const char *
s_prop_name (const tm_twins_t *self, const tm_prop_t *p)
{
    return self->by_id[p->id];
}

const char *
tm_twins_prop_name (const tm_twins_t *self, const tm_prop_t *prop)
{
    return s_prop_name (self, prop);
}

const tm_prop_t *
tm_twins_prop (const tm_twin_t *twin, const char *interned)
{
    uint16_t id = s_name_id (interned);
    for (uint16_t i = 0; i < twin->nprops; i++)
        if (twin->props[i].id == id)
            return &twin->props[i];
    return NULL;
}

const tm_prop_t *
tm_twins_prop_named (tm_twins_t *self, const tm_twin_t *twin, const char *name)
{
    const char *interned = tm_twins_name_find (self, name, strlen (name));
    return twin && interned? tm_twins_prop (twin, interned): NULL;
}

const tm_attr_t *
tm_twins_attr (const tm_twin_t *twin, const char *interned)
{
    for (uint8_t i = 0; i < twin->nattrs; i++)
        if (twin->attrs[i].name == interned)
            return &twin->attrs[i];
    return NULL;
}

tm_twin_t *const *
tm_twins_slots (tm_twins_t *self, size_t *nslots)
{
    *nslots = self->nslots;
    return self->slots;
}

tm_twin_t *
tm_twins_shard_first (tm_twins_t *self, uint32_t shard)
{
    return self->shard_heads[shard % TM_SHARDMAP_MAX_SHARDS];
}

uint64_t
tm_twins_attrs_refused (tm_twins_t *self)
{
    return self->attrs_refused;
}

//  Point a string value at the shared copy when there can be one.
static void
s_attr_share (tm_twins_t *self, tm_attr_t *a)
{
    if (a->type != TM_EXPR_STRING || a->shared)
        return;
    char *shared = s_value_intern (self, a->str, a->len);
    if (shared) {
        free (a->str);
        a->str = shared;
        a->shared = true;
    }
}

//  Add an attribute the twin does not have yet (consumed in every case);
//  0, or -1 over the limit or out of memory.
static int
s_attr_append (tm_twins_t *self, tm_twin_t *t, tm_attr_t *a)
{
    //  Exact-size growth: attributes change rarely and memory per twin counts.
    tm_attr_t *grown = t->nattrs < TM_ATTR_MAX_PER_TWIN?
                       realloc (t->attrs, (t->nattrs + 1u) * sizeof *grown): NULL;
    if (!grown) {
        s_attr_drop (self, a);
        return -1;
    }
    t->attrs = grown;
    t->attrs[t->nattrs++] = *a;
    return 0;
}

//  Set (or, for a null value, remove) one attribute from its JSON text.
//  Attributes apply in log order: the newest reading that sets one wins.
//  A value whose type contradicts the twin's model is refused and counted
//  (the gateway cannot know the model's types; docs/models.md says so).
static int
s_set_attr (tm_twins_t *self, tm_twin_t *t, const char *name, size_t name_len,
            const char *json, size_t json_len, bool check_model)
{
    const char *interned = s_intern (self, name, name_len);
    if (!interned)
        return -1;
    tm_attr_t value;
    int rc = tm_attr_parse (json, json_len, &value, NULL, 0);
    if (rc < 0)
        return -1;
    if (rc == 0 && check_model && t->model && self->models) {
        const tm_model_t *m = tm_models_find (self->models, t->model, tm_twins_name_len (t->model));
        const tm_model_attribute_t *decl = m? tm_model_attribute_find (m, interned): NULL;
        if (decl) {
            bool fits = decl->type == TM_MODEL_ATTR_STRING? value.type == TM_EXPR_STRING && !value.tags:
                        decl->type == TM_MODEL_ATTR_NUMBER? value.type == TM_EXPR_NUMBER:
                        decl->type == TM_MODEL_ATTR_LOCATION? value.type == TM_EXPR_LOCATION:
                        value.tags;
            if (!fits) {
                tm_attr_fini (&value);
                return -1;
            }
        }
    }
    value.name = interned;
    if (rc == 0)
        s_attr_share (self, &value);
    for (uint8_t i = 0; i < t->nattrs; i++) {
        if (t->attrs[i].name != interned)
            continue;
        s_attr_drop (self, &t->attrs[i]);
        if (rc == 1)
            t->attrs[i] = t->attrs[--t->nattrs];
        else
            t->attrs[i] = value;
        return 0;
    }
    return rc == 1? 0: s_attr_append (self, t, &value);
}

static void s_mark_dirty (tm_twins_t *self, tm_twin_t *t);

static void
s_apply_attrs (tm_twins_t *self, tm_twin_t *t, const tm_reading_t *r)
{
    size_t offset = 0;
    tm_wire_attr_t a;
    while (tm_wire_attr_next (r, &offset, &a) == 1)
        if (s_set_attr (self, t, a.name, a.name_len, a.value, a.value_len, true) != 0)
            self->attrs_refused++;
    s_mark_dirty (self, t);
}

static tm_twin_t *s_reactivate (tm_twins_t *self, const char *entity, size_t len);

tm_twin_t *
tm_twins_find (tm_twins_t *self, const char *entity, size_t len)
{
    tm_twin_t *t = tm_twins_find_active (self, entity, len);
    if (!t && self->passive.total)
        t = s_reactivate (self, entity, len);
    return t;
}

uint64_t
tm_twins_hash (const char *entity, size_t len)
{
    return s_hash (entity, len);
}

void
tm_twins_prefetch (tm_twins_t *self, uint64_t hash)
{
    __builtin_prefetch (&self->slots[hash & (self->nslots - 1)]);
}

void
tm_twins_prefetch_twin (tm_twins_t *self, uint64_t hash)
{
    //  The slot's line came in at tm_twins_prefetch; the twin it names is
    //  most often the one (reading its fields here would wait for it).
    const tm_twin_t *t = self->slots[hash & (self->nslots - 1)];
    if (t) {
        //  An apply reads all of it: 112 bytes and the entity id after them.
        __builtin_prefetch (t);
        __builtin_prefetch ((const char *) t + 64);
        __builtin_prefetch ((const char *) t + 128);
    }
}

void
tm_twins_prefetch_props (tm_twins_t *self, uint64_t hash)
{
    const tm_twin_t *t = self->slots[hash & (self->nslots - 1)];
    if (t)
        __builtin_prefetch (t->props);
}

static tm_twin_t *
s_find_hashed (tm_twins_t *self, const char *entity, size_t len, uint64_t h)
{
    size_t j = h & (self->nslots - 1);
    tm_twin_t *t;
    while ((t = self->slots[j])) {
        if (t->entity_len == len && memcmp (t->entity, entity, len) == 0)
            return t;
        j = (j + 1) & (self->nslots - 1);
    }
    return NULL;
}

tm_twin_t *
tm_twins_find_active (tm_twins_t *self, const char *entity, size_t len)
{
    return s_find_hashed (self, entity, len, s_hash (entity, len));
}

//  Note the twin's row as changed, once until the next clear. When the
//  list cannot grow, every flag stays set and the list is dropped: the
//  scan then takes the next changed list as "everything" (overflow).
static void
s_changed (tm_twins_t *self, tm_twin_t *t)
{
    if (t->changed)
        return;
    t->changed = 1;
    if (self->nchanged == self->changed_cap) {
        size_t cap = self->changed_cap? self->changed_cap * 2: 1024;
        uint32_t *grown = realloc (self->changed, cap * sizeof *grown);
        if (!grown) {
            self->changed_overflow = true;
            return;
        }
        self->changed = grown;
        self->changed_cap = cap;
    }
    self->changed[self->nchanged++] = t->row;
}

//  Insert a new twin; NULL on allocation failure.
static tm_twin_t *
s_insert (tm_twins_t *self, const char *entity, size_t len, uint32_t shard)
{
    if ((self->count + 1) * 10 > self->nslots * 7 && s_grow_twins (self) != 0)
        return NULL;
    if (self->count == self->rows_cap) {
        size_t cap = self->rows_cap? self->rows_cap * 2: 1024;
        tm_twin_t **grown = realloc (self->rows, cap * sizeof *grown);
        if (!grown)
            return NULL;
        self->rows = grown;
        self->rows_cap = cap;
    }
    if (self->count >= UINT32_MAX)
        return NULL;
    //  The entity id just after the twin, in one allocation: a malloc
    //  header and a rounding less per twin, and no second cache miss.
    assert (len <= TM_WIRE_MAX_ENTITY);
    tm_twin_t *t = calloc (1, offsetof (tm_twin_t, entity) + len + 1);
    if (!t)
        return NULL;
    memcpy (t->entity, entity, len);
    t->entity[len] = 0;
    t->entity_len = (uint8_t) len;
    t->shard = (uint16_t) (shard % TM_SHARDMAP_MAX_SHARDS);
    t->next_in_shard = self->shard_heads[t->shard];
    self->shard_heads[t->shard] = t;
    tm_analytics_sync_init (&t->sync);
    t->models_gen = TM_TWINS_GEN_NONE;    //  No table resolved yet
    if (self->on_created)          //  Its desired values, if it has some (tm_commands)
        self->on_created (self->hooks_arg, t, NULL);
    self->in_state[t->sync.state]++;
    size_t j = s_hash (entity, len) & (self->nslots - 1);
    while (self->slots[j])
        j = (j + 1) & (self->nslots - 1);
    self->slots[j] = t;
    t->row = (uint32_t) self->count;
    self->rows[self->count++] = t;
    s_changed (self, t);
    return t;
}

static void
s_mark_dirty (tm_twins_t *self, tm_twin_t *t)
{
    t->version++;
    s_changed (self, t);
    tm_twins_mark_dirty (self, t->shard);
}

void
tm_twins_mark_dirty (tm_twins_t *self, uint32_t shard)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    uint8_t bit = (uint8_t) (1u << (shard & 7));
    if (self->shard_dirty[shard >> 3] & bit)
        return;
    self->shard_dirty[shard >> 3] |= bit;
    self->dirty[self->ndirty++] = shard;
}

static tm_prop_t *
s_prop (tm_twins_t *self, tm_twin_t *t, const char *name, size_t len, bool create)
{
    const char *interned = s_intern (self, name, len);
    if (!interned)
        return NULL;
    uint16_t id = s_name_id (interned);
    for (uint16_t i = 0; i < t->nprops; i++)
        if (t->props[i].id == id)
            return &t->props[i];
    if (!create || t->nprops >= TM_TWINS_MAX_PROPS)
        return NULL;
    if (t->nprops == t->cap) {
        uint16_t cap = t->cap? (uint16_t) (t->cap * 2): 4;
        tm_prop_t *grown = realloc (t->props, cap * sizeof *grown);
        if (!grown)
            return NULL;
        t->props = grown;
        t->cap = cap;
    }
    tm_prop_t *p = &t->props[t->nprops++];
    *p = (tm_prop_t) {.id = id, .sidx = TM_TWINS_SIDX_UNRESOLVED};
    tm_analytics_init (&p->an);
    return p;
}

//  -------------------------------------------------------------------------
//  Model settings

void
tm_twins_set_models (tm_twins_t *self, const tm_models_t *models)
{
    self->models = models;
    self->models_seen = false;     //  rebuild current at the next lookup
    //  Twins resolved against another registry must look again.
    for (size_t i = 0; i < self->nslots; i++)
        if (self->slots[i])
            self->slots[i]->models_gen = TM_TWINS_GEN_NONE;
}

void
tm_twins_set_hooks (tm_twins_t *self, tm_twins_hook_fn *created, tm_twins_hook_fn *reported,
                    void *arg)
{
    self->on_created = created;
    self->on_reported = reported;
    self->hooks_arg = arg;
}

const tm_models_t *
tm_twins_models (tm_twins_t *self)
{
    return self->models;
}

//  A model property's settings, mapped as docs/models.md describes. 0, or
//  -1 if tm_analytics rejects them (the caller keeps the defaults).
static int
s_settings_from (const tm_analytics_settings_t *defaults, const tm_model_property_t *mp,
                 tm_analytics_settings_t *out)
{
    *out = *defaults;
    out->valid_min = mp->valid_min;
    out->valid_max = mp->valid_max;
    out->limit_lower = mp->limit_lower;
    out->limit_upper = mp->limit_upper;
    out->interval_ms = mp->expected_interval_ms > 0? mp->expected_interval_ms: 60000;
    out->stale_factor = mp->stale_factor;
    out->ewma_alpha = mp->ewma_alpha;
    out->holt_alpha = mp->forecast_alpha;
    out->holt_beta = mp->forecast_beta;
    //  The horizon is in steps of the expected interval; saturate rather
    //  than overflow on a silly model.
    if (mp->forecast_horizon && out->interval_ms > INT64_MAX / mp->forecast_horizon)
        out->horizon_ms = INT64_MAX;
    else
        out->horizon_ms = (int64_t) mp->forecast_horizon * out->interval_ms;
    out->anomaly_sigmas = mp->anomaly_enabled? mp->anomaly_threshold_sigma: INFINITY;
    out->warmup = mp->anomaly_warmup;
    out->stuck_run = (uint8_t) (mp->stuck_run > 255? 255: mp->stuck_run);
    return tm_analytics_settings_check (out) == 0? 0: -1;
}

//  FNV-1a over a model's canonical text: tells two contents of one version apart.
static uint64_t
s_text_hash (const tm_model_t *model)
{
    size_t len = 0;
    const unsigned char *p = (const unsigned char *) tm_model_canonical (model, &len);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

//  The settings table of a model, built if this version and content has
//  none yet; NULL if memory is short (its twins use the defaults).
static tm_twins_table_t *
s_table_for (tm_twins_t *self, const tm_model_t *model)
{
    uint64_t text_hash = s_text_hash (model);
    for (tm_twins_table_t *tb = self->tables; tb; tb = tb->next)
        if (tb->version == model->version && tb->text_hash == text_hash
            && strcmp (tb->model, model->name) == 0)
            return tb;
    tm_twins_table_t *tb = calloc (1, sizeof *tb);
    uint32_t n = model->nproperties;
    if (tb) {
        tb->names = calloc (n? n: 1, sizeof *tb->names);
        tb->settings = calloc (n? n: 1, sizeof *tb->settings);
        tb->types = calloc (n? n: 1, 1);
    }
    if (!tb || !tb->names || !tb->settings || !tb->types) {
        if (tb) {
            free (tb->names);
            free (tb->settings);
            free (tb->types);
        }
        free (tb);
        return NULL;
    }
    snprintf (tb->model, sizeof tb->model, "%s", model->name);
    tb->version = model->version;
    tb->text_hash = text_hash;
    tb->nprops = n;
    for (uint32_t i = 0; i < n; i++) {
        const tm_model_property_t *mp = &model->properties[i];
        snprintf (tb->names[i], sizeof tb->names[i], "%s", mp->name);
        tb->types[i] = (uint8_t) mp->type;
        if (s_settings_from (&self->defaults, mp, &tb->settings[i]) != 0) {
            tm_warn ("twins: model=%s version=%u property=%s: settings rejected by the "
                     "analytics; using the defaults", model->name, model->version, mp->name);
            tb->settings[i] = self->defaults;
        }
    }
    tb->next = self->tables;
    self->tables = tb;
    return tb;
}

//  Bring current up to the registry's generation: once per change, not
//  per twin.
static void
s_refresh_current (tm_twins_t *self)
{
    uint64_t gen = tm_models_generation (self->models);
    if (self->models_seen && gen == self->models_gen)
        return;
    size_t n = tm_models_size (self->models);
    tm_twins_table_t **current = calloc (n? n: 1, sizeof *current);
    if (!current)
        return;    //  keep the old list; try again at the next lookup
    for (size_t i = 0; i < n; i++)
        current[i] = s_table_for (self, tm_models_at (self->models, i));
    free (self->current);
    self->current = current;
    self->ncurrent = n;
    self->models_gen = gen;
    self->models_seen = true;
}

const tm_analytics_settings_t *
tm_twins_settings (tm_twins_t *self, const tm_twin_t *twin, const tm_prop_t *prop)
{
    if (!self->models || !twin->model)
        return &self->defaults;
    //  The caches are ours, not the caller's: twins and properties are
    //  allocated mutable, so writing through them is well defined.
    tm_twin_t *t = (tm_twin_t *) twin;
    tm_prop_t *p = (tm_prop_t *) prop;
    //  Its low 32 bits (never the "not resolved" value): a twin's table
    //  could be taken for current only after exactly 2^32 model loads.
    uint32_t gen = (uint32_t) tm_models_generation (self->models);
    if (gen == TM_TWINS_GEN_NONE)
        gen = 0;
    if (t->models_gen != gen) {
        s_refresh_current (self);
        t->table = NULL;
        for (size_t i = 0; i < self->ncurrent; i++)
            if (self->current[i] && strcmp (self->current[i]->model, t->model) == 0) {
                t->table = self->current[i];
                break;
            }
        t->models_gen = gen;
        for (uint16_t i = 0; i < t->nprops; i++)
            t->props[i].sidx = TM_TWINS_SIDX_UNRESOLVED;
    }
    const tm_twins_table_t *tb = t->table;
    if (!tb)
        return &self->defaults;
    if (p->sidx == TM_TWINS_SIDX_UNRESOLVED) {
        p->sidx = TM_TWINS_SIDX_NONE;
        for (uint32_t i = 0; i < tb->nprops && i < TM_TWINS_SIDX_NONE; i++)
            if (strcmp (tb->names[i], s_prop_name (self, p)) == 0) {
                p->sidx = (uint8_t) i;
                break;
            }
    }
    return p->sidx < tb->nprops? &tb->settings[p->sidx]: &self->defaults;
}

//  Queue history for the shard's next checkpoint; NULL if memory is short.
static tm_twins_pending_t *
s_pending_new (tm_twins_t *self, const tm_twin_t *t, const tm_prop_t *p, size_t size)
{
    tm_twins_pending_t *item = malloc (sizeof *item + size);
    if (!item)
        return NULL;
    *item = (tm_twins_pending_t) {.twin = t, .property = s_prop_name (self, p), .size = size};
    item->next = self->pending[t->shard];
    self->pending[t->shard] = item;
    self->npending++;
    return item;
}

//  A late reading cannot enter the time-ordered chunk: it waits on its own
//  and is written under its own key, which a repeat of it overwrites with
//  the same value (so a retried late reading is stored once). A repeat of
//  a reading the chunk holds is stored too (the chunk's bytes are mostly in
//  the store, not here); queries keep one reading per timestamp, the
//  in-order one. Replays of what a checkpoint holds never get here
//  (tm_twins_replaying).
static void
s_late (tm_twins_t *self, tm_twin_t *t, const tm_prop_t *p, int64_t ts_ms, double value)
{
    tm_twins_pending_t *item = s_pending_new (self, t, p, 0);
    if (!item)
        return;
    item->late = true;
    item->first_ts = item->last_ts = ts_ms;
    item->value = value;
    tm_twins_mark_dirty (self, t->shard);
}

//  Close the series' open chunk, whose last point is at last_ts: its last
//  segment (all of it if no checkpoint stored a part) waits for the next
//  checkpoint. False if memory is short: the chunk stays open.
static bool
s_hist_close (tm_twins_t *self, tm_twin_t *t, tm_prop_t *p, int64_t last_ts)
{
    uint32_t start;
    size_t size;
    const uint8_t *data = tm_gorilla_open_pending (&p->hist, &start, &size);
    tm_twins_pending_t *item = s_pending_new (self, t, p, size);
    if (!item)
        return false;
    if (size)
        memcpy (item->data, data, size);
    item->start = start;
    item->bits = tm_gorilla_open_bits (&p->hist);
    item->count = tm_gorilla_open_count (&p->hist);
    item->first_ts = tm_gorilla_open_first_ts (&p->hist, last_ts);
    item->last_ts = last_ts;
    tm_gorilla_open_fini (&p->hist);
    return true;
}

//  Append an applied reading to the series' open chunk, whose last point
//  is the series' latest before it (last_ts, last), closing the chunk at
//  TM_TWINS_CHUNK_POINTS (or at a limit of the codec's, when the point goes
//  into the next one). The chunk holds no last point of its own: the
//  property's latest value is it (tm_gorilla_open_t), so the point must go
//  in, or the chunk must end before it. When it cannot (memory is short),
//  the chunk closes and the point starts the next one; if even that fails,
//  the chunk's points not yet stored are dropped and counted
//  (history_dropped) rather than left to go on from a wrong point.
static void
s_hist_append (tm_twins_t *self, tm_twin_t *t, tm_prop_t *p, int64_t last_ts, double last,
               int64_t ts_ms, double value)
{
    int rc = tm_gorilla_open_append (&p->hist, last_ts, last, ts_ms, value);
    if (rc != 0 && tm_gorilla_open_count (&p->hist) > 0) {
        if (!s_hist_close (self, t, p, last_ts)) {
            self->history_dropped += tm_gorilla_open_count (&p->hist);
            tm_gorilla_open_fini (&p->hist);
        }
        rc = tm_gorilla_open_append (&p->hist, last_ts, last, ts_ms, value);
    }
    if (rc != 0) {
        self->history_dropped++;
        return;
    }
    if (tm_gorilla_open_count (&p->hist) >= TM_TWINS_CHUNK_POINTS)
        s_hist_close (self, t, p, ts_ms);
}

const tm_twins_pending_t *
tm_twins_pending (tm_twins_t *self, uint32_t shard)
{
    return self->pending[shard % TM_SHARDMAP_MAX_SHARDS];
}

void
tm_twins_pending_drop (tm_twins_t *self, uint32_t shard)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    tm_twins_pending_t *item = self->pending[shard];
    while (item) {
        tm_twins_pending_t *next = item->next;
        free (item);
        self->npending--;
        item = next;
    }
    self->pending[shard] = NULL;
}

size_t
tm_twins_pending_count (tm_twins_t *self)
{
    return self->npending;
}

void
tm_twins_open_history (tm_twins_t *self, uint64_t *points, uint64_t *bytes)
{
    *points = *bytes = 0;
    for (size_t i = 0; i < self->nslots; i++) {
        const tm_twin_t *t = self->slots[i];
        for (uint16_t k = 0; t && k < t->nprops; k++) {
            *points += tm_gorilla_open_count (&t->props[k].hist);
            *bytes += (tm_gorilla_open_bits (&t->props[k].hist) + 7) / 8;
        }
    }
}

size_t
tm_twins_name_len (const char *interned)
{
    return (unsigned char) interned[-1];
}

static void
s_state_moved (tm_twins_t *self, int before, int after)
{
    if (before != after) {
        self->in_state[before]--;
        self->in_state[after]++;
    }
}

//  The quality class of a reading (tm_twins_settings has resolved the
//  twin's table and the property's index). Out of range is the analytics'
//  own verdict (flags), not decided here.
static tm_model_quality_t
s_quality (const tm_twin_t *t, const tm_prop_t *p, double value)
{
    const tm_twins_table_t *tb = t->table;
    if (!tb)
        return TM_MODEL_Q_UNMODELLED;
    if (p->sidx >= tb->nprops)
        return TM_MODEL_Q_UNKNOWN_PROPERTY;
    if ((tb->types[p->sidx] == TM_MODEL_INTEGER && value != floor (value))
        || (tb->types[p->sidx] == TM_MODEL_BOOLEAN && value != 0 && value != 1))
        return TM_MODEL_Q_INVALID_TYPE;
    return TM_MODEL_Q_GOOD;
}

void
tm_twins_set_touch (tm_twins_t *self, tm_twins_touch_fn *touch, void *arg)
{
    self->touch = touch;
    self->touch_arg = arg;
}

//  The hierarchy's hook: a twin known to have no parent pays one compare;
//  a change of model or attributes makes it look again.
static inline void
s_touch (tm_twins_t *self, tm_twin_t *t, int prop)
{
    if (!self->touch)
        return;
    if (t->hier == TM_TWINS_NO_PARENT) {
        if (prop >= 0)
            return;
        t->hier = NULL;
    }
    self->touch (self->touch_arg, t, prop);
}

void
tm_twins_mark_changed (tm_twins_t *self, tm_twin_t *twin)
{
    s_mark_dirty (self, twin);
}

tm_twin_t *
tm_twins_ensure (tm_twins_t *self, const char *entity, size_t len, const char *model,
                 const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards)
{
    tm_twin_t *t = tm_twins_find (self, entity, len);
    if (!t) {
        t = s_insert (self, entity, len, tm_shardmap_hash (key, num_shards, entity, len));
        if (!t)
            return NULL;
        s_mark_dirty (self, t);
    }
    if (model && *model && !t->model) {
        t->model = s_intern (self, model, strlen (model));
        t->models_gen = TM_TWINS_GEN_NONE;
        s_mark_dirty (self, t);
        s_touch (self, t, -1);
    }
    return t;
}

//  True while replaying a record the shard's stored blob holds already.
static inline bool
s_covered (const tm_twins_t *self, uint32_t shard)
{
    return self->replay_seq && self->covered
           && self->replay_seq <= self->covered[shard % TM_SHARDMAP_MAX_SHARDS];
}

void
tm_twins_set_log_seq (tm_twins_t *self, uint64_t seq)
{
    self->log_seq = seq;
}

void
tm_twins_replaying (tm_twins_t *self, uint64_t seq)
{
    self->replay_seq = seq;
}

uint64_t
tm_twins_covered (const tm_twins_t *self, uint32_t shard)
{
    return self->covered? self->covered[shard % TM_SHARDMAP_MAX_SHARDS]: 0;
}

const uint64_t *
tm_twins_covered_all (const tm_twins_t *self)
{
    return self->covered;
}

//  A restored blob covers the log up to seq. -1 if memory is short (then
//  nothing is skipped at replay: what the blob holds comes back as late
//  readings, stored again, which queries drop as duplicates).
static int
s_cover (tm_twins_t *self, uint32_t shard, uint64_t seq)
{
    if (seq == 0)
        return 0;
    if (!self->covered) {
        self->covered = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof *self->covered);
        if (!self->covered)
            return -1;
    }
    uint64_t *c = &self->covered[shard % TM_SHARDMAP_MAX_SHARDS];
    if (seq > *c)
        *c = seq;
    return 0;
}

bool
tm_twins_flush_due (const tm_prop_t *p)
{
    if (!tm_gorilla_open_dirty (&p->hist))
        return false;
    uint32_t start;
    size_t size;
    tm_gorilla_open_pending (&p->hist, &start, &size);
    //  Two bytes of room left is a reading or two more inline.
    return tm_gorilla_open_heap (&p->hist) > 0 || size + 2 > TM_GORILLA_INLINE;
}

void
tm_twins_due_clear (tm_twins_t *self)
{
    self->ndue = 0;
}

const tm_twins_due_t *
tm_twins_due (const tm_twins_t *self, size_t *n)
{
    *n = self->ndue;
    return self->due;
}

//  Note a due series; false if memory is short.
static bool
s_note_due (tm_twins_t *self, const tm_twin_t *t, uint16_t prop)
{
    if (self->ndue == self->due_cap) {
        size_t cap = self->due_cap? 2 * self->due_cap: 1024;
        tm_twins_due_t *grown = realloc (self->due, cap * sizeof *grown);
        if (!grown)
            return false;
        self->due = grown;
        self->due_cap = cap;
    }
    self->due[self->ndue++] = (tm_twins_due_t) {.twin = (tm_twin_t *) t, .prop = prop};
    return true;
}

void
tm_twins_history_flushed (tm_twins_t *self, uint32_t shard)
{
    for (size_t i = 0; i < self->ndue; i++) {
        tm_twins_due_t *d = &self->due[i];
        if (d->twin && d->twin->shard == shard) {
            tm_gorilla_open_flushed (&d->twin->props[d->prop].hist);
            d->twin = NULL;    //  once
        }
    }
}

//  The reading's property in the twin, made if new. Readings of one model
//  come with their properties in one order, and batches hold either one
//  property of many twins in a row or every property of one twin: the
//  index the last reading's property had, or the one after it, is most
//  often this one's, and comparing its bytes costs less than interning
//  the name (a hash and a probe) and scanning for the pointer.
static tm_prop_t *
s_prop_of (tm_twins_t *self, tm_twin_t *t, const tm_reading_t *r)
{
    for (unsigned k = 0; k < 2; k++) {
        unsigned i = self->last_prop + k;
        if (i < t->nprops) {
            const char *name = s_prop_name (self, &t->props[i]);
            if (tm_twins_name_len (name) == r->property_len
                && memcmp (name, r->property, r->property_len) == 0) {
                self->last_prop = (uint16_t) i;
                return &t->props[i];
            }
        }
    }
    tm_prop_t *p = s_prop (self, t, r->property, r->property_len, true);
    if (p)
        self->last_prop = (uint16_t) (p - t->props);
    return p;
}

tm_apply_t
tm_twins_apply (tm_twins_t *self, const tm_reading_t *r,
                const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards, int64_t now_ms)
{
    return tm_twins_apply_hashed (self, r, s_hash (r->entity, r->entity_len), key, num_shards,
                                  now_ms);
}

tm_apply_t
tm_twins_apply_hashed (tm_twins_t *self, const tm_reading_t *r, uint64_t hash,
                       const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards,
                       int64_t now_ms)
{
    tm_twin_t *t = s_find_hashed (self, r->entity, r->entity_len, hash);
    if (!t && self->passive.total)
        t = s_reactivate (self, r->entity, r->entity_len);
    if (!t) {
        uint32_t shard = tm_shardmap_hash (key, num_shards, r->entity, r->entity_len);
        if (s_covered (self, shard))
            return TM_APPLY_DUPLICATE;
        t = s_insert (self, r->entity, r->entity_len, shard);
        if (!t)
            return TM_APPLY_REJECTED;
    }
    if (s_covered (self, t->shard)) {
        //  Its shard's blob holds this reading (tm_twins_replaying); as for
        //  any duplicate, it may be what clears a desired value.
        tm_prop_t *p = t->commands && self->on_reported? s_prop_of (self, t, r): NULL;
        if (p && p->count && r->ts_ms == p->an.ts_ms)
            self->on_reported (self->hooks_arg, t, p);
        return TM_APPLY_DUPLICATE;
    }
    if (r->model_len && !t->model) {
        //  Interned: a million twins of a few models share a few copies, and
        //  its length is at hand (queries read it per twin).
        t->model = s_intern (self, r->model, r->model_len);
        t->models_gen = TM_TWINS_GEN_NONE;    //  resolve its settings at the next lookup
        s_mark_dirty (self, t);
        s_touch (self, t, -1);
    }
    if (r->nattrs) {
        s_apply_attrs (self, t, r);
        s_touch (self, t, -1);
    }
    tm_prop_t *p = s_prop_of (self, t, r);
    if (!p)
        return TM_APPLY_REJECTED;
    if (p->count && r->ts_ms == p->an.ts_ms) {
        //  A replayed record whose reading the checkpoint already holds
        //  may be what clears a desired value (docs/commands.md).
        if (t->commands && self->on_reported)
            self->on_reported (self->hooks_arg, t, p);
        return TM_APPLY_DUPLICATE;
    }
    if (p->count && r->ts_ms < p->an.ts_ms) {
        s_late (self, t, p, r->ts_ms, r->value);
        return TM_APPLY_LATE;
    }
    const tm_analytics_settings_t *settings = tm_twins_settings (self, t, p);
    //  docs/models.md, "Readings for unknown models and properties": kept
    //  always, flagged, counted; a property the model lacks and a value of
    //  the wrong type stay out of the statistics.
    int64_t last_ts = p->an.ts_ms;     //  the open chunk's last point, until updated
    double last = p->an.value;
    tm_model_quality_t q = s_quality (t, p, r->value);
    p->quality = (uint8_t) q;
    self->quality[q]++;
    unsigned flags = 0;
    if (q == TM_MODEL_Q_UNKNOWN_PROPERTY || q == TM_MODEL_Q_INVALID_TYPE) {
        p->an.same_run = p->count && r->value == p->an.value && p->an.same_run < UINT8_MAX?
                         (uint8_t) (p->an.same_run + 1): 1;
        p->an.value = r->value;
        p->an.ts_ms = r->ts_ms;
    }
    else {
        flags = tm_analytics_update (&p->an, settings, r->ts_ms, r->value);
        if (q == TM_MODEL_Q_GOOD && (flags & TM_ANALYTICS_OUT_OF_RANGE))
            p->quality = TM_MODEL_Q_OUT_OF_RANGE;
    }
    s_hist_append (self, t, p, last_ts, last, r->ts_ms, r->value);
    p->count += p->count < UINT32_MAX;
    self->anomalies += (flags & TM_ANALYTICS_ANOMALOUS) != 0;
    self->out_of_range += (flags & TM_ANALYTICS_OUT_OF_RANGE) != 0;
    int before = t->sync.state;
    tm_analytics_sync_reading (&t->sync, settings, (unsigned) (p - t->props), flags, now_ms);
    s_state_moved (self, before, t->sync.state);
    s_mark_dirty (self, t);
    if (t->commands && self->on_reported)
        self->on_reported (self->hooks_arg, t, p);
    if (p->quality == TM_MODEL_Q_GOOD)
        s_touch (self, t, (int) (p - t->props));
    return TM_APPLY_APPLIED;
}

//  Tick the twins of rows [from, to).
static size_t
s_tick_rows (tm_twins_t *self, int64_t now_ms, size_t from, size_t to)
{
    size_t moved = 0;
    for (size_t r = from; r < to; r++) {
        tm_twin_t *t = self->rows[r];
        if (r + 8 < to)
            __builtin_prefetch (&self->rows[r + 8]->sync);
        int before = t->sync.state;
        tm_analytics_sync_tick (&t->sync, now_ms);
        if (t->sync.state != before) {
            s_state_moved (self, before, t->sync.state);
            moved++;
        }
    }
    return moved;
}

size_t
tm_twins_tick (tm_twins_t *self, int64_t now_ms)
{
    self->tick_next = 0;
    return s_tick_rows (self, now_ms, 0, self->count);
}

size_t
tm_twins_tick_part (tm_twins_t *self, int64_t now_ms, size_t max, bool *wrapped)
{
    if (self->tick_next >= self->count)
        self->tick_next = 0;
    size_t from = self->tick_next;
    size_t to = self->count - from < max? self->count: from + max;
    size_t moved = s_tick_rows (self, now_ms, from, to);
    self->tick_next = to;
    *wrapped = to >= self->count;
    return moved;
}

void
tm_twins_stats (tm_twins_t *self, tm_twins_stats_t *stats)
{
    stats->anomalies = self->anomalies;
    stats->out_of_range = self->out_of_range;
    stats->stale = self->in_state[TM_SYNC_STALE];
    stats->error = self->in_state[TM_SYNC_ERROR];
    stats->unmodelled = self->quality[TM_MODEL_Q_UNMODELLED];
    stats->unknown_property = self->quality[TM_MODEL_Q_UNKNOWN_PROPERTY];
    stats->invalid_type = self->quality[TM_MODEL_Q_INVALID_TYPE];
    stats->history_dropped = self->history_dropped;
}

size_t
tm_twins_size (tm_twins_t *self)
{
    return self->count;
}

uint32_t *
tm_twins_take_dirty (tm_twins_t *self, size_t *count)
{
    *count = 0;
    if (self->ndirty == 0)
        return NULL;
    uint32_t *list = malloc (self->ndirty * sizeof (uint32_t));
    if (!list)
        return NULL;
    memcpy (list, self->dirty, self->ndirty * sizeof (uint32_t));
    for (size_t i = 0; i < self->ndirty; i++)
        self->shard_dirty[self->dirty[i] >> 3] &= (uint8_t) ~(1u << (self->dirty[i] & 7));
    *count = self->ndirty;
    self->ndirty = 0;
    return list;
}

//  Length of an interned name, from the byte before it.
static inline size_t
s_name_len (const char *interned)
{
    return (unsigned char) interned[-1];
}

//  The checkpoint format, version 2 (integers are base-128 varints, f64 and
//  f32 little-endian IEEE):
//    version(1 byte) ntwins { elen entity mlen model twin_version
//      sync { zigzag(heard_ms) faults window_ms interval_ms f32(quality)
//             state good_run nquality }
//      nprops { nlen name count
//        analytics { f64(value) zigzag(ts_ms) f64(mean) f64(m2) f64(min) f64(max)
//                    f64(ewma) f64(level) f32(trend) f32(resid_sd) in_range
//                    zigzag(score_cs) same_run oor_run } } }
//  Version 3 adds, after each property's analytics, its open history chunk:
//    hlen hbytes (tm_gorilla chunk; hlen 0 = none)
//  so that the readings since the chunk opened survive a restart without a
//  write per reading. Version 2 is version 3 without the chunks.
//  Version 1 (issue #2's workers) had no sync and, per property, only
//  f64(value) zigzag(ts_ms) count; it is still read, with fresh analytics.
//  Version 4 added attributes as JSON text, version 5 as binary (below).
//  Version 6 puts log_seq after the version byte (the last log record the
//  blob holds: tm_twins_replaying) and, instead of the open chunk's bytes,
//  the chunk's encoder state (tm_gorilla_open_save, as flushed: its bytes
//  are in the store, as segments written in the same batch). Versions 3 to
//  5 are still read: their chunks are converted (tm_gorilla_open_resume).
#define S_SHARD_FORMAT 6

static size_t
s_put_f64 (uint8_t *p, double v)
{
    uint64_t bits;
    memcpy (&bits, &v, 8);
    for (int b = 0; b < 8; b++)
        p[b] = (uint8_t) (bits >> (8 * b));
    return 8;
}

static size_t
s_put_f32 (uint8_t *p, float v)
{
    uint32_t bits;
    memcpy (&bits, &v, 4);
    for (int b = 0; b < 4; b++)
        p[b] = (uint8_t) (bits >> (8 * b));
    return 4;
}

static int
s_get_f64 (const uint8_t **p, const uint8_t *end, double *out)
{
    if (end - *p < 8)
        return -1;
    uint64_t bits = 0;
    for (int b = 7; b >= 0; b--)
        bits = bits << 8 | (*p)[b];
    memcpy (out, &bits, 8);
    *p += 8;
    return 0;
}

static int
s_get_f32 (const uint8_t **p, const uint8_t *end, float *out)
{
    if (end - *p < 4)
        return -1;
    uint32_t bits = 0;
    for (int b = 3; b >= 0; b--)
        bits = bits << 8 | (*p)[b];
    memcpy (out, &bits, 4);
    *p += 4;
    return 0;
}



static bool
s_reserve (uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap? *cap: 4096;
    while (ncap < need)
        ncap *= 2;
    uint8_t *grown = realloc (*buf, ncap);
    if (!grown)
        return false;
    *buf = grown;
    *cap = ncap;
    return true;
}



//  One twin of a shard blob at *buf + *n. False on allocation failure.
static bool
s_encode_twin (tm_twins_t *self, const tm_twin_t *t, uint8_t **buf, size_t *cap, size_t *n_p)
{
    size_t n = *n_p;
    size_t mlen = t->model? s_name_len (t->model): 0;
    //  Upper bound of this twin's bytes: 10 per varint.
    size_t need = n + 120 + t->entity_len + mlen;
    for (uint16_t i = 0; i < t->nprops; i++)
        need += 150 + s_name_len (s_prop_name (self, &t->props[i]))
                + tm_gorilla_open_save_size (&t->props[i].hist, false);
    if (!s_reserve (buf, cap, need))
        return false;
    uint8_t *p = *buf;
    n += tm_varint_put (p + n, t->entity_len);
    memcpy (p + n, t->entity, t->entity_len);
    n += t->entity_len;
    n += tm_varint_put (p + n, mlen);
    memcpy (p + n, t->model? t->model: "", mlen);
    n += mlen;
    n += tm_varint_put (p + n, t->version);
    const tm_analytics_sync_t *sy = &t->sync;
    n += tm_varint_put (p + n, tm_zigzag (sy->heard_ms));
    n += tm_varint_put (p + n, sy->faults);
    n += tm_varint_put (p + n, sy->window_ms);
    n += tm_varint_put (p + n, sy->interval_ms);
    n += s_put_f32 (p + n, sy->quality);
    p[n++] = sy->state;
    p[n++] = sy->good_run;
    p[n++] = sy->nquality;
    n += tm_varint_put (p + n, t->nprops);
    for (uint16_t i = 0; i < t->nprops; i++) {
        const tm_prop_t *pr = &t->props[i];
        const tm_analytics_t *a = &pr->an;
        const char *name = s_prop_name (self, pr);
        size_t nlen = s_name_len (name);
        n += tm_varint_put (p + n, nlen);
        memcpy (p + n, name, nlen);
        n += nlen;
        n += tm_varint_put (p + n, pr->count);
        n += s_put_f64 (p + n, a->value);
        n += tm_varint_put (p + n, tm_zigzag (a->ts_ms));
        n += s_put_f64 (p + n, a->mean);
        n += s_put_f64 (p + n, a->m2);
        n += s_put_f64 (p + n, a->min);
        n += s_put_f64 (p + n, a->max);
        n += s_put_f64 (p + n, tm_analytics_ewma (a));
        n += s_put_f64 (p + n, tm_analytics_level (a));
        n += s_put_f32 (p + n, a->trend);
        n += s_put_f32 (p + n, a->resid_sd);
        n += tm_varint_put (p + n, a->count);
        n += tm_varint_put (p + n, tm_zigzag (a->score_cs));
        p[n++] = a->same_run;
        p[n++] = a->oor_run;
        //  The encoder, as if flushed when this blob goes in the batch
        //  that stores its pending bytes (tm_history_stage), else with them.
        if (tm_gorilla_open_count (&pr->hist)) {
            uint8_t *at = p + n + 1;
            bool due = tm_twins_flush_due (pr);
            if (due && !s_note_due (self, t, i))
                return false;
            size_t hlen = tm_gorilla_open_save (&pr->hist, pr->an.ts_ms, due, at);
            //  Nearly always one varint byte; else make room for more.
            size_t vl = tm_varint_len (hlen);
            if (vl > 1)
                memmove (at + vl - 1, at, hlen);
            n += tm_varint_put (p + n, hlen) + hlen;
        }
        else
            p[n++] = 0;
    }
    //  Format 5: attributes, binary: name, type, value. (Format 4 had
    //  their JSON text: printing and re-parsing every location at each
    //  checkpoint and restart cost more than the rest of the twin.)
    size_t need_attrs = n + 10;
    for (uint8_t i = 0; i < t->nattrs; i++)
        need_attrs += 40 + s_name_len (t->attrs[i].name) + t->attrs[i].len;
    if (!s_reserve (buf, cap, need_attrs))
        return false;
    p = *buf;
    n += tm_varint_put (p + n, t->nattrs);
    for (uint8_t i = 0; i < t->nattrs; i++) {
        const tm_attr_t *a = &t->attrs[i];
        size_t nlen = s_name_len (a->name);
        n += tm_varint_put (p + n, nlen);
        memcpy (p + n, a->name, nlen);
        n += nlen;
        p[n++] = (uint8_t) (a->type | (a->tags? 0x80: 0));
        if (a->type == TM_EXPR_NUMBER)
            n += s_put_f64 (p + n, a->num);
        else
        if (a->type == TM_EXPR_BOOL)
            p[n++] = a->b;
        else
        if (a->type == TM_EXPR_LOCATION) {
            n += s_put_f64 (p + n, a->loc.lat);
            n += s_put_f64 (p + n, a->loc.lon);
        }
        else {
            n += tm_varint_put (p + n, a->len);
            memcpy (p + n, a->str, a->len);
            n += a->len;
        }
    }
    *n_p = n;
    return true;
}

size_t
tm_twins_encode_shard (tm_twins_t *self, uint32_t shard, uint8_t **buf, size_t *cap)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    size_t ntwins = 0;
    //  Twins marked to passivate are written to their own keys instead.
    for (tm_twin_t *t = self->shard_heads[shard]; t; t = t->next_in_shard)
        ntwins += !(t->flags & TM_TWIN_PASSIVATING);
    if (!s_reserve (buf, cap, 24))
        return 0;
    size_t n = 0;
    (*buf)[n++] = S_SHARD_FORMAT;
    n += tm_varint_put (*buf + n, self->log_seq);
    n += tm_varint_put (*buf + n, ntwins);
    for (tm_twin_t *t = self->shard_heads[shard]; t; t = t->next_in_shard)
        if (!(t->flags & TM_TWIN_PASSIVATING) && !s_encode_twin (self, t, buf, cap, &n))
            return 0;
    return n;
}

size_t
tm_twins_encode_twin (tm_twins_t *self, const tm_twin_t *twin, uint8_t **buf, size_t *cap)
{
    if (!s_reserve (buf, cap, 24))
        return 0;
    size_t n = 0;
    (*buf)[n++] = S_SHARD_FORMAT;
    n += tm_varint_put (*buf + n, self->log_seq);
    n += tm_varint_put (*buf + n, 1);
    return s_encode_twin (self, twin, buf, cap, &n)? n: 0;
}

//  One property of a version-2 blob into pr (fields bounded by the caller).
static int
s_get_prop_v2 (const uint8_t **p, const uint8_t *end, tm_prop_t *pr)
{
    tm_analytics_t *a = &pr->an;
    uint64_t count, zts, in_range, zscore;
    double ewma, level;
    if (tm_varint_get (p, end, &count) != 0 || s_get_f64 (p, end, &a->value) != 0
        || tm_varint_get (p, end, &zts) != 0 || s_get_f64 (p, end, &a->mean) != 0
        || s_get_f64 (p, end, &a->m2) != 0 || s_get_f64 (p, end, &a->min) != 0
        || s_get_f64 (p, end, &a->max) != 0 || s_get_f64 (p, end, &ewma) != 0
        || s_get_f64 (p, end, &level) != 0 || s_get_f32 (p, end, &a->trend) != 0
        || s_get_f32 (p, end, &a->resid_sd) != 0 || tm_varint_get (p, end, &in_range) != 0
        || tm_varint_get (p, end, &zscore) != 0 || end - *p < 2)
        return -1;
    int64_t score = tm_unzigzag (zscore);
    if (in_range > UINT32_MAX || score < INT16_MIN || score > INT16_MAX)
        return -1;
    pr->count = count < UINT32_MAX? (uint32_t) count: UINT32_MAX;
    a->ts_ms = tm_unzigzag (zts);
    a->count = (uint32_t) in_range;
    a->score_cs = (int16_t) score;
    a->same_run = *(*p)++;
    a->oor_run = *(*p)++;
    tm_analytics_restore (a, ewma, level);
    return 0;
}

//  A property's open chunk from a version-3 blob into pr: a whole version-1
//  chunk up to format 5 (it becomes a version-2 chunk not yet stored: the
//  next checkpoint writes it), the encoder's state from format 6.
static int
s_get_hist (int format, const uint8_t **p, const uint8_t *end, tm_prop_t *pr, bool skip)
{
    uint64_t hlen;
    if (tm_varint_get (p, end, &hlen) != 0 || hlen > (uint64_t) (end - *p)
        || hlen > TM_GORILLA_MAX_BYTES)
        return -1;
    if (hlen == 0 || skip) {
        *p += hlen;
        return 0;
    }
    const char *error = NULL;
    size_t used = 0;
    //  An empty chunk is never written (hlen 0 says none): one would not
    //  encode back to the same bytes.
    const tm_analytics_t *an = &pr->an;
    int rc = format >= 6? tm_gorilla_open_load (&pr->hist, an->ts_ms, an->value, *p,
                                                (size_t) hlen, &used, &error):
                          tm_gorilla_open_resume (&pr->hist, an->ts_ms, an->value, *p,
                                                  (size_t) hlen, &error);
    if (rc != 0 || (format >= 6 && used != hlen) || tm_gorilla_open_count (&pr->hist) == 0) {
        tm_gorilla_open_fini (&pr->hist);
        return -1;
    }
    *p += hlen;
    return 0;
}

//  The name of an attribute in a blob, checked; NULL if invalid or the
//  twin has it already (a blob we did not write).
static const char *
s_get_attr_name (tm_twins_t *self, const tm_twin_t *t, const uint8_t **p, const uint8_t *end,
                 size_t *len)
{
    uint64_t nlen;
    if (tm_varint_get (p, end, &nlen) != 0 || nlen > (uint64_t) (end - *p)
        || !tm_attr_name_valid ((const char *) *p, (size_t) nlen))
        return NULL;
    const char *name = (const char *) *p;
    *p += nlen;
    *len = (size_t) nlen;
    const char *known = tm_twins_name_find (self, name, (size_t) nlen);
    return known && tm_twins_attr (t, known)? NULL: name;
}

//  One attribute of a format-4 blob: its JSON text.
static int
s_get_attr_v4 (tm_twins_t *self, tm_twin_t *t, const uint8_t **p, const uint8_t *end)
{
    size_t nlen;
    const char *name = s_get_attr_name (self, t, p, end, &nlen);
    uint64_t jlen;
    if (!name || tm_varint_get (p, end, &jlen) != 0 || jlen > (uint64_t) (end - *p))
        return -1;
    const char *json = (const char *) *p;
    *p += jlen;
    return s_set_attr (self, t, name, nlen, json, (size_t) jlen, false);
}

//  One attribute of a format-5 blob: type and binary value.
static int
s_get_attr (tm_twins_t *self, tm_twin_t *t, const uint8_t **p, const uint8_t *end)
{
    size_t nlen;
    const char *name = s_get_attr_name (self, t, p, end, &nlen);
    if (!name || end - *p < 1 || t->nattrs >= TM_ATTR_MAX_PER_TWIN)
        return -1;
    uint8_t tag = *(*p)++;
    tm_attr_t a = {.name = s_intern (self, name, nlen), .type = tag & 0x7f,
                   .tags = (tag & 0x80) != 0};
    if (!a.name || (a.tags && a.type != TM_EXPR_STRING))
        return -1;
    if (a.type == TM_EXPR_NUMBER) {
        if (s_get_f64 (p, end, &a.num) != 0 || !isfinite (a.num))
            return -1;
    }
    else
    if (a.type == TM_EXPR_BOOL) {
        if (end - *p < 1 || **p > 1)
            return -1;
        a.b = *(*p)++;
    }
    else
    if (a.type == TM_EXPR_LOCATION) {
        if (s_get_f64 (p, end, &a.loc.lat) != 0 || s_get_f64 (p, end, &a.loc.lon) != 0
            || !(a.loc.lat >= -90 && a.loc.lat <= 90) || !(a.loc.lon >= -180 && a.loc.lon <= 180))
            return -1;
    }
    else
    if (a.type == TM_EXPR_STRING) {
        uint64_t slen;
        if (tm_varint_get (p, end, &slen) != 0 || slen > (uint64_t) (end - *p)
            || slen > TM_ATTR_MAX_VALUE)
            return -1;
        const char *str = (const char *) *p;
        *p += slen;
        char *copy = malloc ((size_t) slen + 1);
        if (!copy)
            return -1;
        memcpy (copy, str, (size_t) slen);
        copy[slen] = 0;
        a.len = (uint32_t) slen;
        a.str = copy;
        s_attr_share (self, &a);
    }
    else
        return -1;
    return s_attr_append (self, t, &a);
}

void
tm_twins_restore_begin (tm_twins_t *self, const uint8_t key[TM_SHARDMAP_KEY_BYTES],
                        uint32_t num_shards, uint32_t owned)
{
    tm_twins_restore_end (self);
    if (self->count || num_shards == 0 || num_shards > TM_SHARDMAP_MAX_SHARDS)
        return;
    self->bulk.on = true;
    memcpy (self->bulk.key, key, TM_SHARDMAP_KEY_BYTES);
    self->bulk.num_shards = num_shards;
    self->bulk.owned = owned <= num_shards? owned: num_shards;
}

//  Before the first blob of a bulk restore: size the table for what the
//  worker's shards hold, judged by this one (the shard hash spreads twins
//  evenly), so that it does not double again and again as twins arrive.
//  Each doubling rehashes every twin, a cache miss each: at a million
//  twins that was a tenth of the recovery.
static void
s_restore_reserve (tm_twins_t *self, uint64_t ntwins)
{
    uint64_t target = ntwins * self->bulk.owned;
    target += target / 4;
    if (target > (1u << 26))
        target = 1u << 26;
    while (target * 10 > self->nslots * 7)
        if (s_grow_twins (self) != 0)
            return;        //  it grows as usual, then
}

void
tm_twins_restore_end (tm_twins_t *self)
{
    free (self->bulk.seen);
    memset (&self->bulk, 0, sizeof self->bulk);
}

//  Make the per-blob set of twins empty, with room for ntwins (at most
//  half full). -1 if memory is short: the caller looks in the table.
static int
s_seen_reset (tm_twins_t *self, uint64_t ntwins)
{
    size_t want = 64;
    while (want < 2 * ntwins)
        want *= 2;
    if (want > self->bulk.nseen) {
        tm_twin_t **grown = realloc (self->bulk.seen, want * sizeof *grown);
        if (!grown)
            return -1;
        self->bulk.seen = grown;
        self->bulk.nseen = want;
    }
    memset (self->bulk.seen, 0, self->bulk.nseen * sizeof *self->bulk.seen);
    return 0;
}

//  True if the entity is already a twin: in bulk mode (recovery into an
//  empty table), a twin can only be where its shard's blob put it, so the
//  entity must hash to this shard and appear once in this blob, which a
//  small set that stays in cache tells; else look in the table, where an
//  unsuccessful search costs a cache miss per slot probed (a fifth of a
//  million-twin recovery's time went there).
static bool
s_restore_seen (tm_twins_t *self, uint32_t shard, bool local, const char *entity, size_t len,
                uint64_t h)
{
    if (!local)
        return tm_twins_find_active (self, entity, len) != NULL;
    if (tm_shardmap_hash (self->bulk.key, self->bulk.num_shards, entity, len) != shard)
        return true;       //  not this shard's: the blob is not ours
    size_t mask = self->bulk.nseen - 1;
    for (size_t j = h & mask;; j = (j + 1) & mask) {
        tm_twin_t *t = self->bulk.seen[j];
        if (!t)
            return false;
        if (t->entity_len == len && memcmp (t->entity, entity, len) == 0)
            return true;
    }
}

static void
s_restore_note (tm_twins_t *self, tm_twin_t *t)
{
    size_t mask = self->bulk.nseen - 1;
    size_t j = s_twin_hash (t) & mask;
    while (self->bulk.seen[j])
        j = (j + 1) & mask;
    self->bulk.seen[j] = t;
}

//  Restoring runs in two phases, so that recovery can spread a million
//  twins over two threads without breaking the one-writer rule: decoding
//  (tm_twins_decode_shard) parses a blob and builds each twin's properties
//  (analytics, open chunks: most of the allocations and the byte work)
//  touching no table, on any thread; restoring (tm_twins_restore_decoded)
//  makes the twins in the table on its thread: the twin, its entry, its
//  interned names and its attributes (which share the table's values).
//  tm_twins_restore_shard is both in a row.

//  One twin of a blob, decoded but not in a table. Names point into the
//  blob, at the name's bytes: a name is at most 64 bytes, so the varint
//  before it is its length in one byte, as for interned names. A decoded
//  property has no id yet (ids belong to the table), so its name waits in
//  the blob's list of names, not in the property.
typedef struct {
    const char *entity;            //  Into the blob, elen bytes
    uint32_t elen;
    uint64_t hash;                 //  s_hash of the entity (computed while decoding)
    uint32_t mlen;                 //  Model name's length, 0 if none
    const char *model;             //  Into the blob
    uint64_t version;              //  Twin version
    tm_analytics_sync_t sync;      //  Sync state
    uint16_t nprops;               //  Entries in props
    tm_prop_t *props;              //  Owned until restored; ids not set
    size_t names_at;               //  Its properties' names: names[names_at ..] of
                                   //  the decoded blob, in props order
    uint64_t nattrs;               //  Attributes, encoded at attrs .. attrs_end
    const uint8_t *attrs;
    const uint8_t *attrs_end;
} s_decoded_twin_t;

struct _tm_twins_decoded_t {
    uint8_t *owned;                //  The blob, if ours to free
    int format;                    //  Blob format
    s_decoded_twin_t *twins;       //  Decoded in blob order
    size_t n;                      //  Entries in twins
    size_t cap;                    //  Allocated
    bool bad;                      //  The bytes after twins[n - 1] do not decode
    bool skip_hist;                //  Leave the open chunks out (tm_twins_restore_latest)
    uint64_t log_seq;              //  Log record the blob covers (format 6), else 0
    const char **names;            //  Every decoded property's name, into the blob:
                                   //  one array per blob, not one per twin
    size_t nnames;                 //  Entries in names
    size_t names_cap;              //  Allocated
};

static void
s_free_props (tm_prop_t *props, uint16_t nprops)
{
    if (!props)
        return;
    for (uint16_t i = 0; i < nprops; i++)
        tm_gorilla_open_fini (&props[i].hist);
    free (props);
}

//  Skip one attribute of a blob, checking its shape (restoring checks the
//  rest): 0, or -1 if it does not fit.
static int
s_skip_attr (int format, const uint8_t **p, const uint8_t *end)
{
    uint64_t nlen, len;
    if (tm_varint_get (p, end, &nlen) != 0 || nlen > (uint64_t) (end - *p))
        return -1;
    *p += nlen;
    if (format == 4) {
        if (tm_varint_get (p, end, &len) != 0 || len > (uint64_t) (end - *p))
            return -1;
        *p += len;
        return 0;
    }
    if (end - *p < 1)
        return -1;
    uint8_t type = *(*p)++ & 0x7f;
    len = type == TM_EXPR_NUMBER? 8: type == TM_EXPR_BOOL? 1: type == TM_EXPR_LOCATION? 16: 0;
    if (type == TM_EXPR_STRING && tm_varint_get (p, end, &len) != 0)
        return -1;
    if ((len == 0 && type != TM_EXPR_STRING) || len > (uint64_t) (end - *p))
        return -1;
    *p += len;
    return 0;
}

//  Decode one twin at *p into d (props owned by d on success, their names
//  appended to dec's). 0 or -1.
static int
s_decode_twin (tm_twins_decoded_t *dec, const uint8_t **pp, const uint8_t *end,
               s_decoded_twin_t *d)
{
    int format = dec->format;
    bool skip_hist = dec->skip_hist;
    const uint8_t *p = *pp;
    uint64_t elen, mlen, version, nprops;
    memset (d, 0, sizeof *d);
    if (tm_varint_get (&p, end, &elen) != 0 || elen == 0 || elen > TM_WIRE_MAX_ENTITY
        || elen > (uint64_t) (end - p))
        return -1;
    d->entity = (const char *) p;
    d->elen = (uint32_t) elen;
    d->hash = s_hash (p, (size_t) elen);
    p += elen;
    if (tm_varint_get (&p, end, &mlen) != 0 || mlen > TM_WIRE_MAX_MODEL
        || mlen > (uint64_t) (end - p))
        return -1;
    d->model = (const char *) p;
    d->mlen = (uint32_t) mlen;
    p += mlen;
    if (tm_varint_get (&p, end, &version) != 0)
        return -1;
    d->version = version;
    tm_analytics_sync_init (&d->sync);
    if (format >= 2) {
        uint64_t zheard, faults, window, interval;
        if (tm_varint_get (&p, end, &zheard) != 0 || tm_varint_get (&p, end, &faults) != 0
            || tm_varint_get (&p, end, &window) != 0
            || tm_varint_get (&p, end, &interval) != 0
            || s_get_f32 (&p, end, &d->sync.quality) != 0 || end - p < 3
            || window > UINT32_MAX || interval > UINT32_MAX || p[0] >= TM_SYNC_NSTATES)
            return -1;
        d->sync.heard_ms = tm_unzigzag (zheard);
        d->sync.faults = faults;
        d->sync.window_ms = (uint32_t) window;
        d->sync.interval_ms = (uint32_t) interval;
        d->sync.state = p[0];
        d->sync.good_run = p[1];
        d->sync.nquality = p[2];
        p += 3;
    }
    if (tm_varint_get (&p, end, &nprops) != 0 || nprops > TM_TWINS_MAX_PROPS)
        return -1;
    //  Exactly as many as the twin has (growing from 4 took a realloc for
    //  every twin of five properties).
    if (nprops) {
        d->props = calloc ((size_t) nprops, sizeof *d->props);
        if (!d->props)
            return -1;
    }
    if (dec->nnames + nprops > dec->names_cap) {
        size_t cap = dec->names_cap? dec->names_cap: 1024;
        while (cap < dec->nnames + nprops)
            cap *= 2;
        const char **grown = realloc (dec->names, cap * sizeof *grown);
        if (!grown)
            goto fail;
        dec->names = grown;
        dec->names_cap = cap;
    }
    d->names_at = dec->nnames;
    for (uint64_t i = 0; i < nprops; i++) {
        uint64_t nlen;
        if (tm_varint_get (&p, end, &nlen) != 0 || nlen == 0 || nlen > TM_WIRE_MAX_PROPERTY
            || nlen > (uint64_t) (end - p))
            goto fail;
        tm_prop_t *pr = &d->props[i];
        *pr = (tm_prop_t) {.sidx = TM_TWINS_SIDX_UNRESOLVED};
        dec->names[dec->nnames++] = (const char *) p;
        d->nprops++;
        tm_analytics_init (&pr->an);
        p += nlen;
        if (format >= 2) {
            if (s_get_prop_v2 (&p, end, pr) != 0)
                goto fail;
            if (format >= 3 && s_get_hist (format, &p, end, pr, skip_hist) != 0)
                goto fail;
            continue;
        }
        uint64_t zts, count;
        double value;
        if (s_get_f64 (&p, end, &value) != 0 || tm_varint_get (&p, end, &zts) != 0
            || tm_varint_get (&p, end, &count) != 0)
            goto fail;
        //  Version 1 kept no analytics: the latest value only.
        pr->an.value = value;
        pr->an.ts_ms = tm_unzigzag (zts);
        pr->count = count < UINT32_MAX? (uint32_t) count: UINT32_MAX;
    }
    if (format >= 4) {
        if (tm_varint_get (&p, end, &d->nattrs) != 0 || d->nattrs > TM_ATTR_MAX_PER_TWIN)
            goto fail;
        d->attrs = p;
        for (uint64_t i = 0; i < d->nattrs; i++)
            if (s_skip_attr (format, &p, end) != 0)
                goto fail;
        d->attrs_end = p;
    }
    *pp = p;
    return 0;
fail:
    s_free_props (d->props, d->nprops);
    d->props = NULL;
    return -1;
}

//  Phase one over data (borrowed; dec->owned says whether it is ours).
static void
s_decode (const uint8_t *data, size_t size, tm_twins_decoded_t *dec)
{
    const uint8_t *p = data, *end = data + size;
    uint64_t ntwins;
    dec->bad = true;
    if (size < 1 || *p < 1 || *p > S_SHARD_FORMAT)
        return;
    dec->format = *p++;
    if ((dec->format >= 6 && tm_varint_get (&p, end, &dec->log_seq) != 0)
        || tm_varint_get (&p, end, &ntwins) != 0)
        return;
    for (uint64_t k = 0; k < ntwins; k++) {
        if (dec->n == dec->cap) {
            size_t cap = dec->cap? dec->cap * 2: (ntwins < 1024? (size_t) ntwins: 1024);
            s_decoded_twin_t *grown = realloc (dec->twins, cap * sizeof *grown);
            if (!grown)
                return;
            dec->twins = grown;
            dec->cap = cap;
        }
        if (s_decode_twin (dec, &p, end, &dec->twins[dec->n]) != 0)
            return;
        dec->n++;
    }
    dec->bad = p != end;
}

static void
s_decoded_fini (tm_twins_decoded_t *dec)
{
    for (size_t i = 0; i < dec->n; i++)
        s_free_props (dec->twins[i].props, dec->twins[i].nprops);
    free (dec->twins);
    free (dec->names);
    free (dec->owned);
}

tm_twins_decoded_t *
tm_twins_decode_shard (uint8_t **data_p, size_t size)
{
    tm_twins_decoded_t *dec = calloc (1, sizeof *dec);
    if (!dec)
        return NULL;
    dec->owned = *data_p;
    *data_p = NULL;
    s_decode (dec->owned, size, dec);
    return dec;
}

void
tm_twins_decoded_destroy (tm_twins_decoded_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_decoded_fini (*self_p);
    free (*self_p);
    *self_p = NULL;
}

size_t
tm_twins_decoded_count (const tm_twins_decoded_t *self)
{
    return self->n;
}

#define S_RESTORE_AHEAD 8           //  Twins ahead whose slot is prefetched

//  Phase two: the decoded twins into the table, in blob order, stopping at
//  the first that does not fit (the twins before it are kept).
static long
s_restore (tm_twins_t *self, uint32_t shard, tm_twins_decoded_t *dec)
{
    //  A twin takes at least 4 bytes of blob, so n bounds what the set needs.
    bool local = self->bulk.on && s_seen_reset (self, dec->n) == 0;
    if (local && self->count == 0)
        s_restore_reserve (self, dec->n);
    long restored = 0;
    for (size_t k = 0; k < dec->n; k++) {
        s_decoded_twin_t *d = &dec->twins[k];
        //  The slot a few twins ahead will take: at a million twins the
        //  slot array is far bigger than the caches, and waiting for each
        //  slot's line was the largest cost left here. (A prefetch never
        //  faults, even if the array grows meanwhile.)
        if (k + S_RESTORE_AHEAD < dec->n) {
            const s_decoded_twin_t *a = &dec->twins[k + S_RESTORE_AHEAD];
            __builtin_prefetch (&self->slots[a->hash & (self->nslots - 1)], 1);
        }
        if (s_restore_seen (self, shard, local, d->entity, d->elen, d->hash))
            return -1;     //  the same entity twice: not a blob we wrote
        tm_twin_t *t = s_insert (self, d->entity, d->elen, shard);
        if (!t)
            return -1;
        if (local)
            s_restore_note (self, t);
        s_state_moved (self, t->sync.state, d->sync.state);
        t->sync = d->sync;
        if (d->mlen)
            t->model = s_intern (self, d->model, d->mlen);
        for (uint16_t i = 0; i < d->nprops; i++) {
            const char *name = dec->names[d->names_at + i];
            const char *interned = s_intern (self, name, s_name_len (name));
            if (!interned)
                return -1;
            uint16_t id = s_name_id (interned);
            for (uint16_t j = 0; j < i; j++)
                if (d->props[j].id == id)
                    return -1;     //  the same property twice
            d->props[i].id = id;
        }
        //  The properties move to the twin: the table frees them now.
        t->props = d->props;
        t->nprops = t->cap = d->nprops;
        d->props = NULL;
        const uint8_t *p = d->attrs;
        for (uint64_t i = 0; i < d->nattrs; i++)
            if ((dec->format == 4? s_get_attr_v4 (self, t, &p, d->attrs_end):
                                   s_get_attr (self, t, &p, d->attrs_end)) != 0)
                return -1;
        if (p != d->attrs_end)
            return -1;
        t->version = d->version;
        restored++;
    }
    return dec->bad? -1: restored;
}

long
tm_twins_restore_decoded (tm_twins_t *self, uint32_t shard, tm_twins_decoded_t **decoded_p)
{
    long rc = s_restore (self, shard, *decoded_p);
    //  Only a blob that restored whole covers its log records.
    if (rc >= 0)
        s_cover (self, shard, (*decoded_p)->log_seq);
    tm_twins_decoded_destroy (decoded_p);
    return rc;
}

long
tm_twins_restore_latest (tm_twins_t *self, uint32_t shard, const uint8_t *data, size_t size)
{
    tm_twins_decoded_t dec = {.skip_hist = true};
    s_decode (data, size, &dec);
    long rc = s_restore (self, shard, &dec);
    s_decoded_fini (&dec);
    return rc;
}

long
tm_twins_restore_shard (tm_twins_t *self, uint32_t shard, const uint8_t *data, size_t size)
{
    tm_twins_decoded_t dec = {0};
    s_decode (data, size, &dec);
    long rc = s_restore (self, shard, &dec);
    if (rc >= 0)
        s_cover (self, shard, dec.log_seq);
    s_decoded_fini (&dec);
    return rc;
}

uint8_t *
tm_twins_encode (tm_twins_t *self, const tm_twin_t *twin, const char *worker_id, int64_t now_ms,
                 const char *const *derived_names, const tm_expr_value_t *derived_values,
                 size_t nderived, size_t *size)
{
    Twinmesh__TwinState st = TWINMESH__TWIN_STATE__INIT;
    st.entity = (char *) twin->entity;
    st.model = (char *) (twin->model? twin->model: "");
    st.shard = twin->shard;
    st.worker = (char *) (worker_id? worker_id: "");
    st.version = twin->version;
    st.sync = (char *) tm_analytics_sync_state_name (twin->sync.state);
    st.confidence = tm_analytics_sync_confidence (&twin->sync, now_ms);
    Twinmesh__PropertyState props[TM_TWINS_MAX_PROPS + TM_MODEL_MAX_DERIVED];
    Twinmesh__PropertyState *ptrs[TM_TWINS_MAX_PROPS + TM_MODEL_MAX_DERIVED];
    for (uint16_t i = 0; i < twin->nprops; i++) {
        const tm_prop_t *pr = &twin->props[i];
        const tm_analytics_t *a = &pr->an;
        twinmesh__property_state__init (&props[i]);
        props[i].name = (char *) s_prop_name (self, pr);
        props[i].value = a->value;
        props[i].ts_ms = a->ts_ms;
        props[i].count = pr->count;
        props[i].in_range = a->count;
        props[i].mean = a->mean;
        props[i].stddev = tm_analytics_stddev (a);
        props[i].min = a->min;
        props[i].max = a->max;
        props[i].ewma = tm_analytics_ewma (a);
        props[i].level = tm_analytics_level (a);
        props[i].trend_per_s = (double) a->trend * 1000.0;
        props[i].anomaly = tm_analytics_score (a);
        props[i].quality = tm_analytics_flags (a, tm_twins_settings (self, twin, pr));
        props[i].quality |= pr->quality == TM_MODEL_Q_UNMODELLED? 16u:
                            pr->quality == TM_MODEL_Q_UNKNOWN_PROPERTY? 32u:
                            pr->quality == TM_MODEL_Q_INVALID_TYPE? 64u: 0u;
        ptrs[i] = &props[i];
    }
    size_t np = twin->nprops;
    //  Derived properties: computed now from the latest values; their time
    //  is the newest of the twin's readings.
    int64_t newest = 0;
    for (uint16_t i = 0; i < twin->nprops; i++)
        if (twin->props[i].an.ts_ms > newest)
            newest = twin->props[i].an.ts_ms;
    for (size_t i = 0; i < nderived && i < TM_MODEL_MAX_DERIVED; i++) {
        if (derived_values[i].type != TM_EXPR_NUMBER)
            continue;
        twinmesh__property_state__init (&props[np]);
        props[np].name = (char *) derived_names[i];
        props[np].value = derived_values[i].num;
        props[np].ts_ms = newest;
        props[np].derived = true;
        ptrs[np] = &props[np];
        np++;
    }
    st.n_properties = np;
    st.properties = ptrs;
    Twinmesh__Attribute attrs[TM_ATTR_MAX_PER_TWIN];
    Twinmesh__Attribute *aptrs[TM_ATTR_MAX_PER_TWIN];
    uint8_t *out = NULL;
    size_t na = 0;
    for (; na < twin->nattrs; na++) {
        twinmesh__attribute__init (&attrs[na]);
        attrs[na].name = (char *) twin->attrs[na].name;
        attrs[na].value = tm_attr_json (&twin->attrs[na]);
        if (!attrs[na].value)
            goto done;
        aptrs[na] = &attrs[na];
    }
    st.n_attributes = na;
    st.attributes = aptrs;
    out = tm_codec_pack_buf (&st.base, size);
done:
    for (size_t i = 0; i < na; i++)
        free (attrs[i].value);
    return out;
}

tm_twin_t *const *
tm_twins_rows (tm_twins_t *self, size_t *nrows)
{
    *nrows = self->count;
    return self->rows;
}

const uint32_t *
tm_twins_changed (tm_twins_t *self, size_t *count)
{
    *count = self->nchanged;
    return self->changed;
}

bool
tm_twins_changed_overflow (tm_twins_t *self)
{
    return self->changed_overflow;
}

void
tm_twins_changed_clear (tm_twins_t *self)
{
    if (self->changed_overflow) {
        for (size_t r = 0; r < self->count; r++)
            self->rows[r]->changed = 0;
        self->changed_overflow = false;
    }
    else
        for (size_t i = 0; i < self->nchanged; i++)
            self->rows[self->changed[i]]->changed = 0;
    self->nchanged = 0;
}

//  -------------------------------------------------------------------------
//  Passivation

//  The per-shard sets, allocated when first needed (a megabyte of heads
//  for the largest cluster; a worker that never passivates pays nothing).
static int
s_passive_init (tm_twins_t *self)
{
    if (self->passive.set)
        return 0;
    self->passive.set = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof *self->passive.set);
    self->passive.n = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof *self->passive.n);
    self->passive.cap = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof *self->passive.cap);
    self->passive.changed = calloc (TM_SHARDMAP_MAX_SHARDS / 8, 1);
    if (!self->passive.set || !self->passive.n || !self->passive.cap
        || !self->passive.changed) {
        free (self->passive.set);
        free (self->passive.n);
        free (self->passive.cap);
        free (self->passive.changed);
        self->passive.set = NULL;
        self->passive.n = self->passive.cap = NULL;
        self->passive.changed = NULL;
        return -1;
    }
    return 0;
}

static void
s_passive_changed (tm_twins_t *self, uint32_t shard, bool on)
{
    uint8_t bit = (uint8_t) (1u << (shard & 7));
    if (on)
        self->passive.changed[shard >> 3] |= bit;
    else
        self->passive.changed[shard >> 3] &= (uint8_t) ~bit;
}

static int
s_cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y? -1: x > y;
}

//  Index of h in the shard's sorted set, or -1.
static long
s_passive_find (tm_twins_t *self, uint32_t shard, uint64_t h)
{
    if (!self->passive.set || !self->passive.n[shard])
        return -1;
    const uint64_t *set = self->passive.set[shard];
    size_t lo = 0, hi = self->passive.n[shard];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (set[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < self->passive.n[shard] && set[lo] == h? (long) lo: -1;
}

static void
s_passive_remove (tm_twins_t *self, uint32_t shard, long at)
{
    uint64_t *set = self->passive.set[shard];
    uint32_t n = self->passive.n[shard];
    memmove (set + at, set + at + 1, (n - (size_t) at - 1) * sizeof *set);
    self->passive.n[shard]--;
    self->passive.total--;
    s_passive_changed (self, shard, true);
}

void
tm_twins_set_passivation (tm_twins_t *self, const uint8_t key[TM_SHARDMAP_KEY_BYTES],
                          uint32_t num_shards, tm_twins_load_fn *load, tm_twins_may_fn *may,
                          void *arg)
{
    memcpy (self->passive.key, key, TM_SHARDMAP_KEY_BYTES);
    self->passive.num_shards = num_shards <= TM_SHARDMAP_MAX_SHARDS? num_shards: 0;
    self->passive.load = load;
    self->passive.may = may;
    self->passive.arg = arg;
}

//  A miss in the table: the entity's twin may be passive. Its stored copy
//  is decoded and checked to be this entity's before it enters the table.
static tm_twin_t *
s_reactivate (tm_twins_t *self, const char *entity, size_t len)
{
    if (!self->passive.load || !self->passive.num_shards || len == 0)
        return NULL;
    uint32_t shard = tm_shardmap_hash (self->passive.key, self->passive.num_shards, entity, len)
                   % TM_SHARDMAP_MAX_SHARDS;
    long at = s_passive_find (self, shard, s_hash (entity, len));
    if (at < 0)
        return NULL;
    uint8_t *val = NULL;
    size_t vlen = 0;
    int rc = self->passive.load (self->passive.arg, shard, entity, len, &val, &vlen);
    if (rc == 0)
        return NULL;       //  another passive entity with the same table hash
    if (rc < 0) {
        self->passive.stats.failed++;
        return NULL;       //  a store error: stays passive, asked again next time
    }
    tm_twins_decoded_t dec = {0};
    s_decode (val, vlen, &dec);
    tm_twin_t *t = NULL;
    if (!dec.bad && dec.n == 1 && dec.twins[0].elen == len
        && memcmp (dec.twins[0].entity, entity, len) == 0 && s_restore (self, shard, &dec) == 1)
        t = tm_twins_find_active (self, entity, len);
    s_decoded_fini (&dec);
    free (val);
    s_passive_remove (self, shard, at);
    if (!t) {
        //  Nothing better can be had: the log since has only newer readings.
        tm_warn ("twins: the passive copy of entity=%.*s does not decode; it starts empty",
                 (int) len, entity);
        self->passive.stats.failed++;
        return NULL;
    }
    t->flags |= TM_TWIN_REACTIVATED;
    self->passive.stats.reactivated++;
    s_mark_dirty (self, t);
    return t;
}

size_t
tm_twins_passivate_mark (tm_twins_t *self, uint32_t shard, int64_t idle_before_ms)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    if (s_passive_init (self) != 0)
        return 0;
    size_t marked = 0;
    for (tm_twin_t *t = self->shard_heads[shard]; t; t = t->next_in_shard) {
        if (t->flags & (TM_TWIN_PINNED | TM_TWIN_PASSIVATING) || t->commands
            || t->sync.heard_ms >= idle_before_ms)
            continue;
        if (self->passive.may && !self->passive.may (self->passive.arg, t))
            continue;
        t->flags |= TM_TWIN_PASSIVATING;
        marked++;
    }
    if (marked)
        s_passive_changed (self, shard, true);
    return marked;
}

bool
tm_twins_passive_changed (tm_twins_t *self, uint32_t shard)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    return self->passive.changed
           && (self->passive.changed[shard >> 3] >> (shard & 7)) & 1;
}

uint8_t *
tm_twins_passive_encode (tm_twins_t *self, uint32_t shard, size_t *size, bool *ok)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    *size = 0;
    *ok = true;
    size_t n = self->passive.set? self->passive.n[shard]: 0;
    for (tm_twin_t *t = self->shard_heads[shard]; t; t = t->next_in_shard)
        n += (t->flags & TM_TWIN_PASSIVATING) != 0;
    if (n == 0)
        return NULL;
    uint8_t *out = malloc (n * 8);
    if (!out) {
        *ok = false;
        return NULL;
    }
    size_t k = 0;
    for (uint32_t i = 0; self->passive.set && i < self->passive.n[shard]; i++)
        tm_be64_put (out + 8 * k++, self->passive.set[shard][i]);
    for (tm_twin_t *t = self->shard_heads[shard]; t; t = t->next_in_shard)
        if (t->flags & TM_TWIN_PASSIVATING)
            tm_be64_put (out + 8 * k++, s_twin_hash (t));
    *size = n * 8;
    return out;
}

//  Take a twin out of the table: its slot (linear probing: the entries
//  after it that it displaced move back), its row (the last row's twin
//  takes it) and its sync state count. Not its shard list (the caller).
static void
s_remove (tm_twins_t *self, tm_twin_t *t)
{
    size_t mask = self->nslots - 1;
    size_t i = s_twin_hash (t) & mask;
    while (self->slots[i] != t)
        i = (i + 1) & mask;
    self->slots[i] = NULL;
    for (size_t j = (i + 1) & mask; self->slots[j]; j = (j + 1) & mask) {
        size_t home = s_twin_hash (self->slots[j]) & mask;
        //  Stays if its home is cyclically in (i, j]: the hole is not on its probe path.
        bool stays = i <= j? (home > i && home <= j): (home > i || home <= j);
        if (stays)
            continue;
        self->slots[i] = self->slots[j];
        self->slots[j] = NULL;
        i = j;
    }
    tm_twin_t *last = self->rows[self->count - 1];
    self->rows[t->row] = last;
    last->row = t->row;
    self->count--;
    self->in_state[t->sync.state]--;
}

size_t
tm_twins_passivate_commit (tm_twins_t *self, uint32_t shard)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    if (!tm_twins_passive_changed (self, shard))
        return 0;
    size_t gone = 0;
    for (tm_twin_t **pp = &self->shard_heads[shard]; *pp;) {
        tm_twin_t *t = *pp;
        t->flags &= (uint8_t) ~TM_TWIN_REACTIVATED;
        if (!(t->flags & TM_TWIN_PASSIVATING)) {
            pp = &t->next_in_shard;
            continue;
        }
        uint32_t n = self->passive.n[shard];
        if (n == self->passive.cap[shard]) {
            uint32_t cap = n? n * 2: 64;
            uint64_t *grown = realloc (self->passive.set[shard], cap * sizeof *grown);
            if (!grown) {
                //  Its copy is written but it stays: the copy is stale
                //  and unlisted in the set, so nothing reads it.
                t->flags &= (uint8_t) ~TM_TWIN_PASSIVATING;
                pp = &t->next_in_shard;
                continue;
            }
            self->passive.set[shard] = grown;
            self->passive.cap[shard] = cap;
        }
        self->passive.set[shard][self->passive.n[shard]++] = s_twin_hash (t);
        *pp = t->next_in_shard;
        s_remove (self, t);
        s_twin_free (self, t);
        gone++;
    }
    if (gone) {
        qsort (self->passive.set[shard], self->passive.n[shard], sizeof (uint64_t), s_cmp_u64);
        self->passive.total += gone;
        self->passive.stats.passivated += gone;
        //  Rows moved: whatever keeps per-row data must look at every row.
        self->changed_overflow = true;
    }
    s_passive_changed (self, shard, false);
    return gone;
}

void
tm_twins_passivate_abort (tm_twins_t *self, uint32_t shard)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    for (tm_twin_t *t = self->shard_heads[shard]; t; t = t->next_in_shard)
        t->flags &= (uint8_t) ~TM_TWIN_PASSIVATING;
}

int
tm_twins_passive_load (tm_twins_t *self, uint32_t shard, const uint8_t *data, size_t size)
{
    shard %= TM_SHARDMAP_MAX_SHARDS;
    if (size % 8 || size / 8 > UINT32_MAX || s_passive_init (self) != 0)
        return -1;
    uint32_t n = (uint32_t) (size / 8);
    uint64_t *set = malloc ((n? n: 1) * sizeof *set);
    if (!set)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        set[i] = tm_be64_get (data + 8 * i);
    qsort (set, n, sizeof *set, s_cmp_u64);
    self->passive.total -= self->passive.n[shard];
    free (self->passive.set[shard]);
    self->passive.set[shard] = set;
    self->passive.n[shard] = self->passive.cap[shard] = n;
    self->passive.total += n;
    return 0;
}

bool
tm_twins_passive_has (tm_twins_t *self, uint32_t shard, const char *entity, size_t len)
{
    return s_passive_find (self, shard % TM_SHARDMAP_MAX_SHARDS, s_hash (entity, len)) >= 0;
}

size_t
tm_twins_passive_count (tm_twins_t *self, uint32_t shard)
{
    return self->passive.set? self->passive.n[shard % TM_SHARDMAP_MAX_SHARDS]: 0;
}

size_t
tm_twins_passive_total (tm_twins_t *self)
{
    return self->passive.total;
}

void
tm_twins_passive_stats (tm_twins_t *self, tm_twins_passive_stats_t *stats)
{
    *stats = self->passive.stats;
}
