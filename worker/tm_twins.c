/*  tm_twins - the worker's twins in memory: one open-addressing table  */
#include "tm_twins.h"
#include "tm_codec.h"

#include <stdlib.h>
#include <string.h>

#define TM_TWINS_INITIAL_SLOTS 1024    //  Power of two

typedef struct {
    uint64_t hash;
    char *name;                    //  Owned, NUL-terminated
    uint32_t len;
} s_name_t;

struct _tm_twins_t {
    tm_twin_t **slots;             //  Open addressing, linear probing; NULL = empty
    size_t nslots;                 //  Power of two
    size_t count;                  //  Twins in the table
    s_name_t *names;               //  Interned property names, open addressing
    size_t nnames_slots;           //  Power of two
    size_t nnames;                 //  Names interned
    tm_twin_t **dirty;             //  Twins changed since the last checkpoint
    size_t ndirty;
    size_t dirty_cap;
};

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
    if (!self->slots || !self->names) {
        tm_twins_destroy (&self);
        return NULL;
    }
    return self;
}

static void
s_twin_free (tm_twin_t *twin)
{
    free (twin->entity);
    free (twin->model);
    free (twin->props);
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
                s_twin_free (self->slots[i]);
    if (self->names)
        for (size_t i = 0; i < self->nnames_slots; i++)
            free (self->names[i].name);
    free (self->slots);
    free (self->names);
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
        size_t j = t->hash & (nslots - 1);
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
    char *copy = malloc (len + 1);
    if (!copy)
        return NULL;
    memcpy (copy, name, len);
    copy[len] = 0;
    self->names[j] = (s_name_t) {.hash = h, .name = copy, .len = (uint32_t) len};
    self->nnames++;
    if (self->nnames * 10 > self->nnames_slots * 7)
        s_grow_names (self);   //  on failure the table stays usable, just fuller
    return copy;
}

tm_twin_t *
tm_twins_find (tm_twins_t *self, const char *entity, size_t len)
{
    uint64_t h = s_hash (entity, len);
    size_t j = h & (self->nslots - 1);
    tm_twin_t *t;
    while ((t = self->slots[j])) {
        if (t->hash == h && t->entity_len == len && memcmp (t->entity, entity, len) == 0)
            return t;
        j = (j + 1) & (self->nslots - 1);
    }
    return NULL;
}

//  Insert a new twin; NULL on allocation failure.
static tm_twin_t *
s_insert (tm_twins_t *self, const char *entity, size_t len, uint32_t shard)
{
    if ((self->count + 1) * 10 > self->nslots * 7 && s_grow_twins (self) != 0)
        return NULL;
    tm_twin_t *t = calloc (1, sizeof *t);
    if (!t)
        return NULL;
    t->entity = malloc (len + 1);
    if (!t->entity) {
        free (t);
        return NULL;
    }
    memcpy (t->entity, entity, len);
    t->entity[len] = 0;
    t->entity_len = (uint32_t) len;
    t->hash = s_hash (entity, len);
    t->shard = shard;
    size_t j = t->hash & (self->nslots - 1);
    while (self->slots[j])
        j = (j + 1) & (self->nslots - 1);
    self->slots[j] = t;
    self->count++;
    return t;
}

static void
s_mark_dirty (tm_twins_t *self, tm_twin_t *t)
{
    t->version++;
    if (t->dirty)
        return;
    if (self->ndirty == self->dirty_cap) {
        size_t cap = self->dirty_cap? self->dirty_cap * 2: 1024;
        tm_twin_t **grown = realloc (self->dirty, cap * sizeof *grown);
        if (!grown)
            return;    //  stays clean in the list; the next change retries
        self->dirty = grown;
        self->dirty_cap = cap;
    }
    t->dirty = true;
    self->dirty[self->ndirty++] = t;
}

static tm_prop_t *
s_prop (tm_twins_t *self, tm_twin_t *t, const char *name, size_t len, bool create)
{
    const char *interned = s_intern (self, name, len);
    if (!interned)
        return NULL;
    for (uint16_t i = 0; i < t->nprops; i++)
        if (t->props[i].name == interned)
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
    *p = (tm_prop_t) {.name = interned};
    return p;
}

tm_apply_t
tm_twins_apply (tm_twins_t *self, const tm_reading_t *r,
                const uint8_t key[TM_SHARDMAP_KEY_BYTES], uint32_t num_shards)
{
    tm_twin_t *t = tm_twins_find (self, r->entity, r->entity_len);
    if (!t) {
        uint32_t shard = tm_shardmap_hash (key, num_shards, r->entity, r->entity_len);
        t = s_insert (self, r->entity, r->entity_len, shard);
        if (!t)
            return TM_APPLY_REJECTED;
    }
    if (r->model_len && !t->model) {
        t->model = strndup (r->model, r->model_len);
        s_mark_dirty (self, t);
    }
    tm_prop_t *p = s_prop (self, t, r->property, r->property_len, true);
    if (!p)
        return TM_APPLY_REJECTED;
    if (p->count && r->ts_ms == p->ts_ms)
        return TM_APPLY_DUPLICATE;
    if (p->count && r->ts_ms < p->ts_ms)
        return TM_APPLY_LATE;
    p->value = r->value;
    p->ts_ms = r->ts_ms;
    p->count++;
    s_mark_dirty (self, t);
    return TM_APPLY_APPLIED;
}

size_t
tm_twins_size (tm_twins_t *self)
{
    return self->count;
}

tm_twin_t **
tm_twins_dirty (tm_twins_t *self, size_t *count)
{
    *count = self->ndirty;
    return self->dirty;
}

void
tm_twins_clear_dirty (tm_twins_t *self)
{
    for (size_t i = 0; i < self->ndirty; i++)
        self->dirty[i]->dirty = false;
    self->ndirty = 0;
}

uint8_t *
tm_twins_encode (const tm_twin_t *twin, const char *worker_id, size_t *size)
{
    Twinmesh__TwinState st = TWINMESH__TWIN_STATE__INIT;
    st.entity = twin->entity;
    st.model = twin->model? twin->model: (char *) "";
    st.shard = twin->shard;
    st.worker = (char *) (worker_id? worker_id: "");
    st.version = twin->version;
    Twinmesh__PropertyState props[TM_TWINS_MAX_PROPS];
    Twinmesh__PropertyState *ptrs[TM_TWINS_MAX_PROPS];
    for (uint16_t i = 0; i < twin->nprops; i++) {
        twinmesh__property_state__init (&props[i]);
        props[i].name = (char *) twin->props[i].name;
        props[i].value = twin->props[i].value;
        props[i].ts_ms = twin->props[i].ts_ms;
        props[i].count = twin->props[i].count;
        ptrs[i] = &props[i];
    }
    st.n_properties = twin->nprops;
    st.properties = ptrs;
    return tm_codec_pack_buf (&st.base, size);
}

int
tm_twins_restore (tm_twins_t *self, const uint8_t *data, size_t size, uint32_t shard)
{
    Twinmesh__TwinState *st = TM_UNPACK (TwinState, twin_state, data, size);
    if (!st)
        return -1;
    int rc = -1;
    size_t elen = st->entity? strlen (st->entity): 0;
    if (elen == 0 || elen > TM_WIRE_MAX_ENTITY || st->n_properties > TM_TWINS_MAX_PROPS
        || tm_twins_find (self, st->entity, elen))
        goto done;
    tm_twin_t *t = s_insert (self, st->entity, elen, shard);
    if (!t)
        goto done;
    if (st->model && *st->model)
        t->model = strdup (st->model);
    for (size_t i = 0; i < st->n_properties; i++) {
        Twinmesh__PropertyState *ps = st->properties[i];
        size_t plen = ps->name? strlen (ps->name): 0;
        if (plen == 0 || plen > TM_WIRE_MAX_PROPERTY)
            continue;
        tm_prop_t *p = s_prop (self, t, ps->name, plen, true);
        if (!p)
            continue;
        p->value = ps->value;
        p->ts_ms = ps->ts_ms;
        p->count = ps->count;
    }
    t->version = st->version;
    rc = 0;
done:
    tm_codec_free (&st);
    return rc;
}
