/*  tm_commands - desired values of twins, their deltas, and delta events  */
#include "tm_commands.h"
#include "tm_varint.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_util.h"

#include <math.h>
#include <string.h>

#define S_FORMAT 1                     //  Record format written by this build
#define S_KEY_MAX (6 + 128 + 1 + TM_MODEL_NAME_MAX)
#define S_ENTITY_MAX 128               //  Bytes of an entity id (DESIGN.md)

struct _tm_commands_t {
    tm_store_t *store;             //  Borrowed
    tm_twins_t *twins;             //  Borrowed
    const tm_models_t *models;     //  Borrowed, may be NULL
    char *worker_id;               //  For events and logs
    zhashx_t *by_entity;           //  entity -> tm_commands_twin_t, owned
    size_t count;                  //  Desired values outstanding
    tm_store_batch_t *pending;     //  Clears staged for the next flush
    uint64_t applying_seq;         //  Record being replayed, UINT64_MAX live
    uint64_t clock;                //  Command clock: last version given
    zsock_t *pub;                  //  Events out, borrowed, or NULL
    uint64_t pub_seq;              //  Events published
    char *endpoint;                //  PUB endpoint for EVENTS_INFO
    char *public_key;              //  Its key
};

//  -------------------------------------------------------------------------
//  Records and keys

static void
s_put_f64 (uint8_t *p, double d)
{
    uint64_t v;
    memcpy (&v, &d, 8);
    tm_be64_put (p, v);
}

static double
s_get_f64 (const uint8_t *p)
{
    uint64_t v = tm_be64_get (p);
    double d;
    memcpy (&d, &v, 8);
    return d;
}

size_t
tm_commands_record_encode (const tm_desired_t *d, uint8_t *buf)
{
    size_t who = strnlen (d->set_by, TM_COMMANDS_WHO_MAX);
    buf[0] = S_FORMAT;
    s_put_f64 (buf + 1, d->value);
    s_put_f64 (buf + 9, d->tolerance);
    tm_be64_put (buf + 17, (uint64_t) d->set_ms);
    tm_be64_put (buf + 25, d->version);
    tm_be64_put (buf + 33, d->set_seq);
    buf[41] = (uint8_t) who;
    memcpy (buf + 42, d->set_by, who);
    return 42 + who;
}

size_t
tm_commands_key_encode (uint32_t shard, const char *entity, size_t len, const char *property,
                        uint8_t *buf)
{
    size_t plen = strnlen (property, TM_MODEL_NAME_MAX);
    if (len > S_ENTITY_MAX)
        len = S_ENTITY_MAX;
    buf[0] = 'S';
    buf[1] = (uint8_t) (shard >> 24);
    buf[2] = (uint8_t) (shard >> 16);
    buf[3] = (uint8_t) (shard >> 8);
    buf[4] = (uint8_t) shard;
    buf[5] = 'D';
    memcpy (buf + 6, entity, len);
    buf[6 + len] = 0;
    memcpy (buf + 7 + len, property, plen);
    return 7 + len + plen;
}

//  A name we accept for a property: what a reading may carry (1..64 bytes
//  of UTF-8, no NUL), since a desired value is compared with readings.
static bool
s_name_valid (const char *s, size_t len, size_t max)
{
    return len > 0 && len <= max && !memchr (s, 0, len) && tm_util_utf8_valid (s, len);
}

int
tm_commands_record_decode (const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen,
                           uint32_t *shard, char *entity, size_t esize, tm_desired_t *d)
{
    if (!key || !val || klen < 9 || key[0] != 'S' || key[5] != 'D' || esize < S_ENTITY_MAX + 1)
        return -1;
    const uint8_t *nul = memchr (key + 6, 0, klen - 6);
    if (!nul)
        return -1;
    size_t elen = (size_t) (nul - (key + 6));
    size_t plen = klen - 7 - elen;
    if (!s_name_valid ((const char *) key + 6, elen, S_ENTITY_MAX)
        || !s_name_valid ((const char *) nul + 1, plen, TM_MODEL_NAME_MAX))
        return -1;
    //  The setter is a key name: any bytes but NUL (not checked as UTF-8:
    //  a long name cut at TM_COMMANDS_WHO_MAX may end mid-character).
    if (vlen < 42 || val[0] != S_FORMAT || val[41] > TM_COMMANDS_WHO_MAX
        || vlen != 42u + val[41] || memchr (val + 42, 0, val[41]))
        return -1;
    memset (d, 0, sizeof *d);
    d->value = s_get_f64 (val + 1);
    d->tolerance = s_get_f64 (val + 9);
    if (!isfinite (d->value) || !isfinite (d->tolerance) || d->tolerance < 0)
        return -1;
    d->set_ms = (int64_t) tm_be64_get (val + 17);
    d->version = tm_be64_get (val + 25);
    d->set_seq = tm_be64_get (val + 33);
    memcpy (d->set_by, val + 42, val[41]);
    d->set_by[val[41]] = 0;
    memcpy (d->property, nul + 1, plen);
    d->property[plen] = 0;
    *shard = (uint32_t) key[1] << 24 | (uint32_t) key[2] << 16 | (uint32_t) key[3] << 8 | key[4];
    memcpy (entity, key + 6, elen);
    entity[elen] = 0;
    return 0;
}

bool
tm_commands_matches (const tm_desired_t *d, double reported)
{
    //  Exact unless the command gave a tolerance: an integer or boolean
    //  property (a valve, a mode) reports exactly what it was told.
    return reported == d->value || fabs (reported - d->value) <= d->tolerance;
}

//  -------------------------------------------------------------------------
//  The table

static void
s_twin_destructor (void **item)
{
    tm_commands_twin_t *ct = (tm_commands_twin_t *) *item;
    if (ct) {
        if (ct->twin)
            ct->twin->commands = NULL;
        free (ct->entity);
        free (ct->items);
        free (ct);
    }
    *item = NULL;
}

static tm_commands_twin_t *
s_twin_get (tm_commands_t *self, const char *entity, size_t len, uint32_t shard, bool create)
{
    tm_commands_twin_t *ct = (tm_commands_twin_t *) zhashx_lookup (self->by_entity, entity);
    if (ct || !create)
        return ct;
    ct = (tm_commands_twin_t *) calloc (1, sizeof *ct);
    if (!ct)
        return NULL;
    ct->entity = strndup (entity, len);
    ct->shard = shard;
    if (!ct->entity) {
        free (ct);
        return NULL;
    }
    ct->twin = tm_twins_find (self->twins, entity, len);
    if (ct->twin)
        ct->twin->commands = ct;
    zhashx_insert (self->by_entity, ct->entity, ct);
    return ct;
}

static int
s_find_item (const tm_commands_twin_t *ct, const char *property)
{
    for (uint16_t i = 0; ct && i < ct->n; i++)
        if (strcmp (ct->items[i].property, property) == 0)
            return i;
    return -1;
}

static tm_desired_t *
s_add_item (tm_commands_twin_t *ct)
{
    if (ct->n == ct->cap) {
        if (ct->cap >= TM_COMMANDS_MAX_PER_TWIN)
            return NULL;
        uint16_t cap = ct->cap? (uint16_t) (ct->cap * 2): 2;
        tm_desired_t *grown = (tm_desired_t *) realloc (ct->items, cap * sizeof *grown);
        if (!grown)
            return NULL;
        ct->items = grown;
        ct->cap = cap;
    }
    return &ct->items[ct->n++];
}

//  Remove item i; true if that was the twin's last, and ct is freed.
static bool
s_remove_item (tm_commands_t *self, tm_commands_twin_t *ct, int i)
{
    ct->items[i] = ct->items[ct->n - 1];
    ct->n--;
    self->count--;
    if (ct->n > 0)
        return false;
    zhashx_delete (self->by_entity, ct->entity);
    return true;
}

static uint64_t
s_next_version (tm_commands_t *self, int64_t now_ms)
{
    //  A hybrid clock: microseconds of the wall clock, or one more than the
    //  last version if that is later. It keeps growing across restarts (a
    //  restart takes longer than the versions it could hand out) without a
    //  write of its own, and versions of different workers roughly agree.
    uint64_t wall = now_ms > 0? (uint64_t) now_ms * 1000: 0;
    self->clock = wall > self->clock? wall: self->clock + 1;
    return self->clock;
}

//  The twin's property of that name if it has a reading, else NULL.
static const tm_prop_t *
s_read_prop (const tm_commands_t *self, const tm_twin_t *twin, const char *property)
{
    const tm_prop_t *p = tm_twins_prop_named (self->twins, twin, property);
    return p && p->count? p: NULL;
}

//  The reported side of a desired value, from the twin's latest reading.
static const tm_prop_t *
s_reported (const tm_commands_t *self, const tm_commands_twin_t *ct, const char *property)
{
    return s_read_prop (self, ct? ct->twin: NULL, property);
}

static void
s_fill (const tm_desired_t *d, const tm_prop_t *rep, Twinmesh__Desired *out)
{
    twinmesh__desired__init (out);
    out->property = (char *) d->property;
    out->value = d->value;
    out->tolerance = d->tolerance;
    out->set_ms = d->set_ms;
    out->version = d->version;
    out->set_by = (char *) d->set_by;
    if (rep) {
        out->reported = true;
        out->reported_value = rep->an.value;
        out->reported_ts_ms = rep->an.ts_ms;
        out->delta = d->value - rep->an.value;
        out->in_sync = tm_commands_matches (d, rep->an.value);
    }
}

static void
s_publish (tm_commands_t *self, const char *entity, const char *kind, const tm_desired_t *d,
           const tm_prop_t *rep)
{
    if (!self->pub)
        return;
    Twinmesh__Desired des;
    s_fill (d, rep, &des);
    Twinmesh__DeltaEvent ev = TWINMESH__DELTA_EVENT__INIT;
    ev.entity = (char *) entity;
    ev.kind = (char *) kind;
    ev.desired = &des;
    ev.worker = self->worker_id;
    size_t size;
    uint8_t *body = tm_codec_pack_buf (&ev.base, &size);
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__DELTA_EVENT, 0, 0);
    hdr.seq = ++self->pub_seq;
    zframe_t *header = body? tm_header_encode (&hdr): NULL;
    if (header) {
        //  The topic ends in a NUL so that a device can subscribe to one
        //  twin exactly ("milan/air-1\0" does not match "milan/air-10").
        zframe_t *topic = zframe_new (entity, strlen (entity) + 1);
        zframe_t *payload = zframe_new (body, size);
        //  PUB never blocks: a gateway that cannot keep up loses events
        //  and catches up from the snapshot (docs/commands.md).
        if (topic && payload) {
            zframe_send (&topic, self->pub, ZFRAME_MORE);
            zframe_send (&header, self->pub, ZFRAME_MORE);
            zframe_send (&payload, self->pub, 0);
        }
        zframe_destroy (&topic);
        zframe_destroy (&payload);
    }
    zframe_destroy (&header);
    free (body);
}

//  tm_twins hook: a new twin, from a reading or a checkpoint.
static void
s_on_created (void *arg, tm_twin_t *twin, const tm_prop_t *prop)
{
    (void) prop;
    tm_commands_t *self = (tm_commands_t *) arg;
    if (zhashx_size (self->by_entity) == 0)
        return;
    tm_commands_twin_t *ct = (tm_commands_twin_t *) zhashx_lookup (self->by_entity, twin->entity);
    if (ct) {
        ct->twin = twin;
        twin->commands = ct;
    }
}

//  tm_twins hook: a reading of a twin that has desired values became its
//  series' latest (or repeated its timestamp). The series' latest value is
//  what is compared, so a replayed reading that the checkpoint already
//  holds (a duplicate now) clears what it cleared before the crash.
static void
s_on_reported (void *arg, tm_twin_t *twin, const tm_prop_t *prop)
{
    tm_commands_t *self = (tm_commands_t *) arg;
    tm_commands_twin_t *ct = twin->commands;
    for (int i = ct->n - 1; i >= 0; i--) {
        tm_desired_t *d = &ct->items[i];
        if (self->applying_seq <= d->set_seq
            || strcmp (d->property, tm_twins_prop_name (self->twins, prop)) != 0
            || !tm_commands_matches (d, prop->an.value))
            continue;
        uint8_t key[S_KEY_MAX];
        size_t klen = tm_commands_key_encode (ct->shard, ct->entity, strlen (ct->entity),
                                              d->property, key);
        //  One key deleted: the range [key, key 0x00).
        uint8_t end[S_KEY_MAX + 1];
        memcpy (end, key, klen);
        end[klen] = 0;
        tm_store_batch_delete_range (self->pending, key, klen, end, klen + 1);
        tm_desired_t was = *d;
        was.version = s_next_version (self, tm_util_wall_ms ());
        tm_info ("commands: cleared entity=%s property=%s desired=%.17g reported=%.17g "
                 "reported_ts=%lld set_by=%s version=%llu",
                 ct->entity, d->property, d->value, prop->an.value,
                 (long long) prop->an.ts_ms, d->set_by, (unsigned long long) was.version);
        char entity[S_ENTITY_MAX + 1];
        snprintf (entity, sizeof entity, "%s", ct->entity);
        if (s_remove_item (self, ct, i)) {
            s_publish (self, entity, "cleared", &was, prop);
            return;
        }
        s_publish (self, entity, "cleared", &was, prop);
    }
}

tm_commands_t *
tm_commands_new (tm_store_t *store, tm_twins_t *twins, const tm_models_t *models,
                 const char *worker_id)
{
    tm_commands_t *self = (tm_commands_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->twins = twins;
    self->models = models;
    self->worker_id = strdup (worker_id? worker_id: "");
    self->by_entity = zhashx_new ();
    self->pending = tm_store_batch_new ();
    self->applying_seq = UINT64_MAX;
    if (!self->worker_id || !self->by_entity || !self->pending) {
        tm_commands_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->by_entity, s_twin_destructor);
    tm_twins_set_hooks (twins, s_on_created, s_on_reported, self);
    return self;
}

void
tm_commands_destroy (tm_commands_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_commands_t *self = *self_p;
    if (self->by_entity)
        tm_info ("commands: stopping desired=%zu twins=%zu events=%llu", self->count,
                 zhashx_size (self->by_entity), (unsigned long long) self->pub_seq);
    if (self->twins)
        tm_twins_set_hooks (self->twins, NULL, NULL, NULL);
    zhashx_destroy (&self->by_entity);
    tm_store_batch_destroy (&self->pending);
    free (self->worker_id);
    free (self->endpoint);
    free (self->public_key);
    free (self);
    *self_p = NULL;
}

void
tm_commands_set_pub (tm_commands_t *self, zsock_t *pub)
{
    self->pub = pub;
}

void
tm_commands_set_endpoint (tm_commands_t *self, const char *endpoint, const char *public_key)
{
    free (self->endpoint);
    free (self->public_key);
    self->endpoint = endpoint? strdup (endpoint): NULL;
    self->public_key = public_key? strdup (public_key): NULL;
}

long
tm_commands_load (tm_commands_t *self, uint32_t num_shards, size_t *bad)
{
    size_t none = 0;
    if (!bad)
        bad = &none;
    *bad = 0;
    long loaded = 0;
    //  One seek per shard: a shard's desired values are one small range
    //  next to its history. Without a map (a fresh worker: its store is
    //  empty) one pass over every shard's keys instead.
    bool whole = num_shards == 0 || num_shards > TM_SHARDMAP_MAX_SHARDS;
    for (uint32_t shard = 0; shard < (whole? 1: num_shards); shard++) {
        uint8_t prefix[6] = {'S', (uint8_t) (shard >> 24), (uint8_t) (shard >> 16),
                             (uint8_t) (shard >> 8), (uint8_t) shard, 'D'};
        tm_store_iter_t *it = tm_store_iter_new (self->store, prefix, whole? 1: sizeof prefix);
        if (!it)
            return -1;
        const char *k, *v;
        size_t kl, vl;
        while (tm_store_iter_next (it, &k, &kl, &v, &vl)) {
            if (whole && (kl < 6 || k[5] != 'D'))
                continue;
            uint32_t s;
            char entity[S_ENTITY_MAX + 1];
            tm_desired_t d;
            if (tm_commands_record_decode ((const uint8_t *) k, kl, (const uint8_t *) v, vl, &s,
                                           entity, sizeof entity, &d) != 0) {
                if ((*bad)++ == 0)
                    tm_warn ("commands: a desired value record does not decode shard=%u; "
                             "skipped", shard);
                continue;
            }
            tm_commands_twin_t *ct = s_twin_get (self, entity, strlen (entity), s, true);
            int i = ct? s_find_item (ct, d.property): -1;
            tm_desired_t *slot = !ct? NULL: i >= 0? &ct->items[i]: s_add_item (ct);
            if (!slot) {
                (*bad)++;
                continue;
            }
            if (i < 0)
                self->count++;
            *slot = d;
            if (d.version > self->clock)
                self->clock = d.version;
            loaded++;
        }
        tm_store_iter_destroy (&it);
    }
    if (loaded || *bad)
        tm_info ("commands: loaded desired=%ld twins=%zu bad=%zu", loaded,
                 zhashx_size (self->by_entity), *bad);
    return loaded;
}

void
tm_commands_replaying (tm_commands_t *self, uint64_t seq)
{
    if (self)
        self->applying_seq = seq;
}

int
tm_commands_flush (tm_commands_t *self)
{
    if (!self || tm_store_batch_count (self->pending) == 0)
        return 0;
    if (tm_store_write (self->store, self->pending, true) != 0) {
        tm_warn ("commands: writing cleared desired values failed; will retry");
        return -1;
    }
    tm_store_batch_clear (self->pending);
    return 0;
}

const tm_commands_twin_t *
tm_commands_find (tm_commands_t *self, const char *entity)
{
    return (const tm_commands_twin_t *) zhashx_lookup (self->by_entity, entity);
}

size_t
tm_commands_count (tm_commands_t *self)
{
    return self->count;
}

uint64_t
tm_commands_clock (tm_commands_t *self)
{
    return self->clock;
}

//  A change checked against the twin's model: 0, or E_INVALID with detail.
static int
s_check_model (tm_commands_t *self, const tm_twin_t *twin, const tm_command_change_t *c,
               char *detail, size_t detail_size)
{
    if (!twin || !twin->model || !self->models)
        return 0;
    const tm_model_t *model =
        tm_models_find (self->models, twin->model, tm_twins_name_len (twin->model));
    if (!model)
        return 0;       //  Not loaded (yet): nothing to check against (docs/commands.md)
    const tm_model_property_t *mp = tm_model_property_find (model, c->property,
                                                            strlen (c->property));
    if (!mp) {
        snprintf (detail, detail_size, "model %s has no property %s", twin->model, c->property);
        return TM_COMMANDS_E_INVALID;
    }
    if (c->value < mp->valid_min || c->value > mp->valid_max) {
        snprintf (detail, detail_size, "%s=%g is outside the valid range %g..%g of model %s",
                  c->property, c->value, mp->valid_min, mp->valid_max, twin->model);
        return TM_COMMANDS_E_INVALID;
    }
    if (mp->type == TM_MODEL_INTEGER && c->value != floor (c->value)) {
        snprintf (detail, detail_size, "%s=%g: model %s says %s is an integer", c->property,
                  c->value, twin->model, c->property);
        return TM_COMMANDS_E_INVALID;
    }
    if (mp->type == TM_MODEL_BOOLEAN && c->value != 0 && c->value != 1) {
        snprintf (detail, detail_size, "%s=%g: model %s says %s is a boolean (0 or 1)",
                  c->property, c->value, twin->model, c->property);
        return TM_COMMANDS_E_INVALID;
    }
    return 0;
}

int
tm_commands_set (tm_commands_t *self, const char *entity, size_t len, uint32_t shard,
                 const tm_command_change_t *changes, size_t n, uint64_t log_seq, int64_t now_ms,
                 const char *who, tm_command_outcome_t *outcomes, char *detail,
                 size_t detail_size)
{
    *detail = 0;
    if (!s_name_valid (entity, len, S_ENTITY_MAX) || n == 0 || n > TM_COMMANDS_MAX_CHANGES) {
        snprintf (detail, detail_size, "a command names a twin (1-128 bytes of UTF-8) and 1-%d "
                  "properties", TM_COMMANDS_MAX_CHANGES);
        return TM_COMMANDS_E_INVALID;
    }
    char name[S_ENTITY_MAX + 1];
    memcpy (name, entity, len);
    name[len] = 0;
    tm_commands_twin_t *ct = s_twin_get (self, name, len, shard, false);
    tm_twin_t *twin = ct? ct->twin: tm_twins_find (self->twins, name, len);
    size_t adds = 0;
    for (size_t i = 0; i < n; i++) {
        const tm_command_change_t *c = &changes[i];
        if (!c->property || !s_name_valid (c->property, strlen (c->property), TM_MODEL_NAME_MAX)) {
            snprintf (detail, detail_size, "change %zu: a property name is 1-%d bytes of UTF-8",
                      i + 1, TM_MODEL_NAME_MAX);
            return TM_COMMANDS_E_INVALID;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp (changes[j].property, c->property) == 0) {
                snprintf (detail, detail_size, "%s is named twice", c->property);
                return TM_COMMANDS_E_INVALID;
            }
        if (c->unset)
            continue;
        if (!isfinite (c->value) || !isfinite (c->tolerance) || c->tolerance < 0) {
            snprintf (detail, detail_size, "%s: the value must be finite and the tolerance "
                      "finite and >= 0", c->property);
            return TM_COMMANDS_E_INVALID;
        }
        int rc = s_check_model (self, twin, c, detail, detail_size);
        if (rc)
            return rc;
        adds += s_find_item (ct, c->property) < 0;
    }
    if ((ct? ct->n: 0) + adds > TM_COMMANDS_MAX_PER_TWIN) {
        snprintf (detail, detail_size, "a twin has at most %d desired values",
                  TM_COMMANDS_MAX_PER_TWIN);
        return TM_COMMANDS_E_INVALID;
    }
    //  A clear staged by an earlier reading must reach the store before
    //  a new value for the same key does, or it would delete it.
    if (tm_commands_flush (self) != 0)
        return -1;

    //  Decide every outcome, stage every write, write once; memory and
    //  events only after the write, so a failed write changes nothing.
    tm_desired_t fresh[TM_COMMANDS_MAX_CHANGES];
    tm_store_batch_t *batch = tm_store_batch_new ();
    if (!batch)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const tm_command_change_t *c = &changes[i];
        int at = s_find_item (ct, c->property);
        const tm_desired_t *old = at >= 0? &ct->items[at]: NULL;
        const tm_prop_t *rep = s_read_prop (self, twin, c->property);
        tm_desired_t *d = &fresh[i];
        memset (d, 0, sizeof *d);
        snprintf (d->property, sizeof d->property, "%s", c->property);
        d->value = c->value;
        d->tolerance = c->tolerance;
        d->set_ms = now_ms;
        d->set_seq = log_seq;
        snprintf (d->set_by, sizeof d->set_by, "%s", who? who: "");
        uint8_t key[S_KEY_MAX];
        size_t klen = tm_commands_key_encode (shard, name, len, c->property, key);
        uint8_t end[S_KEY_MAX + 1];
        memcpy (end, key, klen);
        end[klen] = 0;
        if (c->unset)
            outcomes[i] = old? TM_COMMAND_UNSET: TM_COMMAND_NOT_SET;
        else
        if (old && old->value == c->value && old->tolerance == c->tolerance)
            outcomes[i] = TM_COMMAND_UNCHANGED;
        else
        if (rep && tm_commands_matches (d, rep->an.value))
            outcomes[i] = TM_COMMAND_IN_SYNC;
        else
            outcomes[i] = TM_COMMAND_SET;
        if (outcomes[i] != TM_COMMAND_UNCHANGED && outcomes[i] != TM_COMMAND_NOT_SET)
            d->version = s_next_version (self, now_ms);     //  stored with the record
        if (outcomes[i] == TM_COMMAND_SET) {
            uint8_t rec[TM_COMMANDS_RECORD_MAX];
            size_t rlen = tm_commands_record_encode (d, rec);
            tm_store_batch_put (batch, key, klen, rec, rlen);
        }
        else
        if (old && (outcomes[i] == TM_COMMAND_UNSET || outcomes[i] == TM_COMMAND_IN_SYNC))
            tm_store_batch_delete_range (batch, key, klen, end, klen + 1);
    }
    int rc = tm_store_batch_count (batch) > 0? tm_store_write (self->store, batch, true): 0;
    tm_store_batch_destroy (&batch);
    if (rc != 0) {
        snprintf (detail, detail_size, "the worker could not write its store");
        tm_error ("commands: store write failed entity=%s", name);
        return -1;
    }
    static const char *outcome_name[] = {"set", "unchanged", "in_sync", "unset", "not_set"};
    for (size_t i = 0; i < n; i++) {
        tm_desired_t *d = &fresh[i];
        ct = s_twin_get (self, name, len, shard, outcomes[i] == TM_COMMAND_SET);
        int at = s_find_item (ct, d->property);
        const tm_prop_t *rep = s_reported (self, ct, d->property);
        if (!rep)
            rep = s_read_prop (self, twin, d->property);
        const char *event = NULL;
        if (outcomes[i] == TM_COMMAND_SET) {
            tm_desired_t *slot = at >= 0? &ct->items[at]: ct? s_add_item (ct): NULL;
            //  Checked above: the twin has room, so only memory can fail.
            if (!slot) {
                tm_error ("commands: out of memory entity=%s property=%s; the value is "
                          "stored and comes back at restart", name, d->property);
                continue;
            }
            if (at < 0)
                self->count++;
            *slot = *d;
            event = "set";
        }
        else
        if (outcomes[i] == TM_COMMAND_UNCHANGED)
            *d = ct->items[at];
        else
        if (at >= 0) {
            //  Unset, or a new value the twin reports already: withdrawn.
            if (outcomes[i] == TM_COMMAND_UNSET)
                d->value = ct->items[at].value;
            event = outcomes[i] == TM_COMMAND_UNSET? "unset": "cleared";
            s_remove_item (self, ct, at);
        }
        //  The audit trail: who asked what of which twin (DESIGN.md wants
        //  a hash-chained audit log; until it exists, the worker's log).
        tm_info ("commands: %s entity=%s property=%s value=%.17g tolerance=%g by=%s "
                 "version=%llu outcome=%s",
                 changes[i].unset? "unset": "set", name, d->property, changes[i].value,
                 changes[i].tolerance, d->set_by, (unsigned long long) d->version,
                 outcome_name[outcomes[i]]);
        if (event)
            s_publish (self, name, event, d, rep);
    }
    return 0;
}

//  -------------------------------------------------------------------------
//  Protocol

bool
tm_commands_serves (int type)
{
    return type == TWINMESH__MSG_TYPE__TWIN_SET || type == TWINMESH__MSG_TYPE__DELTAS_GET
        || type == TWINMESH__MSG_TYPE__EVENTS_INFO;
}

static void
s_reply (zsock_t *router, const tm_msg_t *msg, int type, int status, const tm_shardmap_t *map,
         const char *detail, const ProtobufCMessage *body)
{
    size_t size = 0;
    uint8_t *buf = body? tm_codec_pack_buf (body, &size): NULL;
    if (body && !buf) {
        status = TWINMESH__STATUS__RETRY_LATER;
        detail = "out of memory";
    }
    if (status != TWINMESH__STATUS__OK)
        tm_warn ("commands: refused %s status=%s peer=%s detail=\"%s\"",
                 tm_msg_type_name (msg->hdr.type), tm_status_name (status),
                 *msg->peer? msg->peer: "?", detail? detail: "");
    if (msg->routing)
        tm_msg_reply (router, msg, type, status, map? map->epoch: 0, detail, buf, buf? size: 0);
    free (buf);
}

static bool
s_owned (const tm_shardmap_t *map, int my_index, const char *entity, size_t len,
         uint32_t *shard)
{
    *shard = tm_shardmap_shard_of (map, entity, len);
    return my_index >= 0 && map->owners[*shard] == (uint32_t) my_index;
}

static void
s_handle_set (tm_commands_t *self, zsock_t *router, const tm_msg_t *msg,
              const tm_shardmap_t *map, int my_index, uint64_t log_seq)
{
    int type = TWINMESH__MSG_TYPE__TWIN_SET_ACK;
    if (msg->role != TM_ROLE_OPERATOR && msg->role != TM_ROLE_ADMIN) {
        char detail[96];
        snprintf (detail, sizeof detail, "role %s may not set desired values (operator or admin)",
                  tm_role_name (msg->role));
        s_reply (router, msg, type, TWINMESH__STATUS__UNAUTHORIZED, map, detail, NULL);
        return;
    }
    Twinmesh__TwinSet *req =
        TM_UNPACK (TwinSet, twin_set, zframe_data (msg->body), zframe_size (msg->body));
    if (!req || !req->entity || !*req->entity || req->n_changes == 0
        || req->n_changes > TM_COMMANDS_MAX_CHANGES) {
        tm_codec_free (&req);
        s_reply (router, msg, type, TWINMESH__STATUS__MALFORMED, map,
                 "TwinSet needs an entity and 1-64 changes", NULL);
        return;
    }
    if (!map || map->epoch == 0) {
        tm_codec_free (&req);
        s_reply (router, msg, type, TWINMESH__STATUS__RETRY_LATER, map, "no shard map yet", NULL);
        return;
    }
    size_t len = strlen (req->entity);
    uint32_t shard;
    if (!s_owned (map, my_index, req->entity, len, &shard)) {
        char detail[160];
        snprintf (detail, sizeof detail, "shard %u is not owned by %s at epoch %llu", shard,
                  self->worker_id, (unsigned long long) map->epoch);
        tm_codec_free (&req);
        s_reply (router, msg, type, TWINMESH__STATUS__WRONG_SHARD, map, detail, NULL);
        return;
    }
    tm_command_change_t changes[TM_COMMANDS_MAX_CHANGES];
    tm_command_outcome_t outcomes[TM_COMMANDS_MAX_CHANGES];
    for (size_t i = 0; i < req->n_changes; i++) {
        const Twinmesh__DesiredChange *c = req->changes[i];
        changes[i] = (tm_command_change_t) {.property = c->property, .value = c->value,
                                            .tolerance = c->tolerance, .unset = c->unset};
    }
    char detail[256];
    int rc = tm_commands_set (self, req->entity, len, shard, changes, req->n_changes, log_seq,
                              tm_util_wall_ms (), msg->peer, outcomes, detail, sizeof detail);
    if (rc != 0) {
        s_reply (router, msg, type,
                 rc == TM_COMMANDS_E_INVALID? TWINMESH__STATUS__MALFORMED:
                                              TWINMESH__STATUS__RETRY_LATER,
                 map, detail, NULL);
        tm_codec_free (&req);
        return;
    }
    static const char *outcome_name[] = {"set", "unchanged", "in_sync", "unset", "not_set"};
    const tm_commands_twin_t *ct = tm_commands_find (self, req->entity);
    Twinmesh__Desired results[TM_COMMANDS_MAX_CHANGES];
    Twinmesh__Desired *ptrs[TM_COMMANDS_MAX_CHANGES];
    tm_desired_t shown[TM_COMMANDS_MAX_CHANGES];
    tm_twin_t *twin = tm_twins_find (self->twins, req->entity, len);
    for (size_t i = 0; i < req->n_changes; i++) {
        int at = s_find_item (ct, changes[i].property);
        memset (&shown[i], 0, sizeof shown[i]);
        if (at >= 0)
            shown[i] = ct->items[at];
        else {
            snprintf (shown[i].property, sizeof shown[i].property, "%s", changes[i].property);
            shown[i].value = changes[i].value;
            shown[i].tolerance = changes[i].tolerance;
        }
        const tm_prop_t *rep = s_read_prop (self, twin, changes[i].property);
        s_fill (&shown[i], rep, &results[i]);
        results[i].outcome = (char *) outcome_name[outcomes[i]];
        ptrs[i] = &results[i];
    }
    Twinmesh__TwinSetAck ack = TWINMESH__TWIN_SET_ACK__INIT;
    ack.entity = req->entity;
    ack.n_results = req->n_changes;
    ack.results = ptrs;
    ack.shard = shard;
    s_reply (router, msg, type, TWINMESH__STATUS__OK, map, NULL, &ack.base);
    tm_codec_free (&req);
}

static void
s_handle_deltas (tm_commands_t *self, zsock_t *router, const tm_msg_t *msg,
                 const tm_shardmap_t *map, int my_index)
{
    int type = TWINMESH__MSG_TYPE__DELTAS;
    //  Devices (ingest keys) read the deltas of their twins; so does
    //  everyone who may read twins.
    if (!tm_role_may_read (msg->role) && msg->role != TM_ROLE_INGEST) {
        s_reply (router, msg, type, TWINMESH__STATUS__UNAUTHORIZED, map,
                 "this key's role may not read deltas", NULL);
        return;
    }
    Twinmesh__DeltasGet *req =
        TM_UNPACK (DeltasGet, deltas_get, zframe_data (msg->body), zframe_size (msg->body));
    if (!req || req->n_entities == 0 || req->n_entities > TM_COMMANDS_MAX_ENTITIES) {
        tm_codec_free (&req);
        s_reply (router, msg, type, TWINMESH__STATUS__MALFORMED, map,
                 "DeltasGet needs 1-1024 entities", NULL);
        return;
    }
    if (!map || map->epoch == 0) {
        tm_codec_free (&req);
        s_reply (router, msg, type, TWINMESH__STATUS__RETRY_LATER, map, "no shard map yet", NULL);
        return;
    }
    size_t n = req->n_entities, total = 0;
    Twinmesh__TwinDeltas *twins = (Twinmesh__TwinDeltas *) calloc (n, sizeof *twins);
    Twinmesh__TwinDeltas **tptrs = (Twinmesh__TwinDeltas **) calloc (n, sizeof *tptrs);
    char **not_owned = (char **) calloc (n, sizeof *not_owned);
    for (size_t i = 0; i < n; i++) {
        const tm_commands_twin_t *ct = req->entities[i]? tm_commands_find (self, req->entities[i])
                                                       : NULL;
        total += ct? ct->n: 0;
    }
    Twinmesh__Desired *des = (Twinmesh__Desired *) calloc (total + 1, sizeof *des);
    Twinmesh__Desired **dptrs = (Twinmesh__Desired **) calloc (total + 1, sizeof *dptrs);
    Twinmesh__DeltaList list = TWINMESH__DELTA_LIST__INIT;
    if (!twins || !tptrs || !not_owned || !des || !dptrs) {
        s_reply (router, msg, type, TWINMESH__STATUS__RETRY_LATER, map, "out of memory", NULL);
        goto done;
    }
    size_t nd = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = req->entities[i];
        size_t len = e? strlen (e): 0;
        uint32_t shard;
        if (!s_name_valid (e? e: "", len, S_ENTITY_MAX))
            continue;
        if (!s_owned (map, my_index, e, len, &shard)) {
            not_owned[list.n_not_owned++] = (char *) e;
            continue;
        }
        //  Every owned twin is answered, with or without desired values:
        //  its as_of tells a device which of its events the snapshot holds.
        const tm_commands_twin_t *ct = tm_commands_find (self, e);
        Twinmesh__TwinDeltas *td = &twins[list.n_twins];
        twinmesh__twin_deltas__init (td);
        td->entity = (char *) e;
        td->as_of = self->clock;
        td->desired = &dptrs[nd];
        for (uint16_t k = 0; ct && k < ct->n; k++) {
            s_fill (&ct->items[k], s_reported (self, ct, ct->items[k].property), &des[nd]);
            dptrs[nd] = &des[nd];
            nd++;
            td->n_desired++;
        }
        tptrs[list.n_twins++] = td;
    }
    list.twins = tptrs;
    list.as_of = self->clock;
    list.worker = self->worker_id;
    list.not_owned = not_owned;
    s_reply (router, msg, type, TWINMESH__STATUS__OK, map, NULL, &list.base);
done:
    free (twins);
    free (tptrs);
    free (not_owned);
    free (des);
    free (dptrs);
    tm_codec_free (&req);
}

void
tm_commands_handle (tm_commands_t *self, zsock_t *router, const tm_msg_t *msg,
                    const tm_shardmap_t *map, int my_index, uint64_t log_seq)
{
    if (msg->hdr.type == TWINMESH__MSG_TYPE__TWIN_SET)
        s_handle_set (self, router, msg, map, my_index, log_seq);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__DELTAS_GET)
        s_handle_deltas (self, router, msg, map, my_index);
    else
    if (msg->hdr.type == TWINMESH__MSG_TYPE__EVENTS_INFO) {
        Twinmesh__EventsInfo info = TWINMESH__EVENTS_INFO__INIT;
        info.endpoint = self->endpoint? self->endpoint: (char *) "";
        info.public_key = self->public_key? self->public_key: (char *) "";
        s_reply (router, msg, TWINMESH__MSG_TYPE__EVENTS_INFO_REPLY,
                 self->endpoint? TWINMESH__STATUS__OK: TWINMESH__STATUS__NOT_READY, map,
                 self->endpoint? NULL: "this worker publishes no events", &info.base);
    }
}
