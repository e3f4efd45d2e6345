/*  tm_peers - worker-to-worker messaging for the hierarchy

    A twin's hier pointer moves through these states:

        NULL ----touch----> S_PENDING (in the resolve list)
        S_PENDING --flush, no parent--> TM_TWINS_NO_PARENT --model/attrs change--> NULL
        S_PENDING --flush, a parent---> link (never freed before tm_peers_destroy;
                                         a twin that loses its parent keeps a link
                                         with no parent, so no list can point at
                                         freed memory)

    A link's changed properties are bits: pending (to send), inflight (in
    the CHILD_UPDATE not yet acked). A link sits in at most one peer's queue
    (queued) and one peer's in-flight list (flying) at a time.
*/
#include "tm_peers.h"
#include "tm_analytics.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_net.h"
#include "tm_util.h"

#include <string.h>

typedef struct {
    char parent[TM_HIER_MAX_ID + 1];   //  Parent entity id; "" = no parent now
    uint32_t parent_len;
    uint32_t parent_shard;         //  Shard of the parent (fixed per cluster)
    char parent_model[TM_MODEL_NAME_MAX + 1];  //  The relationship's target model
    uint64_t pending;              //  Properties (bit = index in the twin) to send
    uint64_t inflight;             //  Properties in the unacked message
    int32_t queued;                //  Peer whose queue holds the twin, -1 none
    bool touched;                  //  In the touched list
    bool recheck;                  //  Model or attributes changed: look again
} s_link_t;

typedef struct {
    char parent[TM_HIER_MAX_ID + 1];   //  Parent the child left
    uint32_t parent_shard;
    const tm_twin_t *child;        //  Twins live as long as the table
} s_detach_t;

//  A growable array of pointers or records.
typedef struct {
    void *items;
    size_t n, cap, size;
} s_vec_t;

typedef struct {
    char *id;                      //  Worker id, owned
    char *endpoint;                //  Its ROUTER, owned
    char *key;                     //  Its public key, Z85, owned
    zsock_t *sock;                 //  DEALER, created on first use
    s_vec_t queue;                 //  tm_twin_t * queued for this worker
    s_vec_t flying;                //  tm_twin_t * in the unacked message
    s_vec_t detach;                //  s_detach_t to send
    s_vec_t detach_flying;         //  s_detach_t in the unacked message
    uint64_t next_id;              //  Request ids, from 1
    uint64_t seq;                  //  Header seq
    uint64_t inflight_id;          //  Unacked CHILD_UPDATE, 0 none
    int64_t sent_ms;               //  When it left
    int64_t retry_ms;              //  Its timeout (backs off)
    int64_t not_before_ms;         //  No send before this (after a failure)
    bool resync_wanted;            //  We still need its HIER_RESYNC_ACK
    uint64_t resync_id;            //  Outstanding HIER_RESYNC, 0 none
    int64_t resync_sent_ms;
} s_peer_t;

struct _tm_peers_t {
    char *id;                      //  Our worker id
    zcert_t *cert;                 //  Borrowed
    tm_twins_t *twins;             //  Borrowed
    const tm_models_t *models;     //  Borrowed
    zpoller_t *poller;             //  Borrowed
    tm_hier_t *hier;               //  Parents we own, owned
    tm_hier_msg_t *msg;            //  Reused for every CHILD_UPDATE
    const tm_shardmap_t *map;      //  Borrowed, NULL until known
    int my_index;                  //  Ours in the map, -1 if absent
    s_peer_t *peers;               //  One per map worker (ours unused)
    size_t npeers;
    s_vec_t resolve;               //  tm_twin_t * whose hier is S_PENDING
    s_vec_t touched;               //  tm_twin_t * whose link is touched
    s_vec_t detach_route;          //  s_detach_t waiting for a map
    bool rescan;                   //  A list could not grow: walk every twin
    bool started;                  //  tm_peers_start ran
    zhashx_t *resync_acked;        //  Ids of workers that acked our HIER_RESYNC
    uint8_t *owned;                //  Bitmap of the shards we owned at the last map
    bool want_map;                 //  A peer answered WRONG_SHARD
    uint64_t models_gen;           //  Registry generation links were resolved at
    int64_t last_flush_ms;
    int64_t flush_gap_ms;          //  Between two routings: TM_PEERS_FLUSH_MS or more
    int64_t last_warn_ms;          //  Refusal warnings: at most one a second
    uint64_t warns_suppressed;     //  Not logged since the last one
    tm_peers_stats_t stats;
};

#define S_RESYNC_EVERY_MS 2000        //  HIER_RESYNC asked again until acked
#define S_FLUSH_GAP_MAX_MS 1000       //  Longest gap between routings, however slow

static const char s_pending_mark = 0;
#define S_PENDING ((void *) &s_pending_mark)

static bool
s_is_link (const tm_twin_t *t)
{
    return t->hier && t->hier != S_PENDING && t->hier != TM_TWINS_NO_PARENT;
}

static void
s_vec_init (s_vec_t *v, size_t size)
{
    *v = (s_vec_t) {.size = size};
}

static void
s_vec_fini (s_vec_t *v)
{
    free (v->items);
    v->items = NULL;
    v->n = v->cap = 0;
}

static int
s_vec_push (s_vec_t *v, const void *item)
{
    if (v->n == v->cap) {
        size_t cap = v->cap? v->cap * 2: 64;
        void *grown = realloc (v->items, cap * v->size);
        if (!grown)
            return -1;
        v->items = grown;
        v->cap = cap;
    }
    memcpy ((char *) v->items + v->n * v->size, item, v->size);
    v->n++;
    return 0;
}

static void *
s_vec_at (s_vec_t *v, size_t i)
{
    return (char *) v->items + i * v->size;
}

static tm_twin_t *
s_twin_at (s_vec_t *v, size_t i)
{
    return *(tm_twin_t **) s_vec_at (v, i);
}

//  Drop the first n items.
static void
s_vec_shift (s_vec_t *v, size_t n)
{
    if (n >= v->n) {
        v->n = 0;
        return;
    }
    memmove (v->items, (char *) v->items + n * v->size, (v->n - n) * v->size);
    v->n -= n;
}

static void
s_push_twin (tm_peers_t *self, s_vec_t *v, tm_twin_t *t)
{
    if (s_vec_push (v, &t) != 0)
        self->rescan = true;
}

//  The apply path's hook (tm_twins_touch_fn): a bit and, once per flush
//  interval, a push. Nothing else may happen here: it runs per reading.
static void
s_touch (void *arg, tm_twin_t *t, int prop)
{
    tm_peers_t *self = (tm_peers_t *) arg;
    if (t->hier == NULL) {
        t->hier = S_PENDING;
        s_push_twin (self, &self->resolve, t);
        return;
    }
    if (t->hier == S_PENDING)
        return;
    s_link_t *l = (s_link_t *) t->hier;
    if (prop >= 0)
        l->pending |= 1ULL << prop;
    else
        l->recheck = true;
    if (!l->touched) {
        l->touched = true;
        s_push_twin (self, &self->touched, t);
    }
}

static void
s_peer_fini (tm_peers_t *self, s_peer_t *p)
{
    if (p->sock && self->poller)
        zpoller_remove (self->poller, p->sock);
    zsock_destroy (&p->sock);
    free (p->id);
    free (p->endpoint);
    free (p->key);
    s_vec_fini (&p->queue);
    s_vec_fini (&p->flying);
    s_vec_fini (&p->detach);
    s_vec_fini (&p->detach_flying);
}

tm_peers_t *
tm_peers_new (const tm_peers_config_t *config)
{
    tm_peers_t *self = (tm_peers_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->id = strdup (config->id);
    self->cert = config->cert;
    self->twins = config->twins;
    self->models = config->models;
    self->poller = config->poller;
    self->my_index = -1;
    self->flush_gap_ms = TM_PEERS_FLUSH_MS;
    self->hier = tm_hier_new (config->max_children);
    self->msg = tm_hier_msg_new ();
    s_vec_init (&self->resolve, sizeof (tm_twin_t *));
    s_vec_init (&self->touched, sizeof (tm_twin_t *));
    s_vec_init (&self->detach_route, sizeof (s_detach_t));
    self->resync_acked = zhashx_new ();
    if (!self->id || !self->hier || !self->msg || !self->resync_acked) {
        tm_peers_destroy (&self);
        return NULL;
    }
    self->models_gen = self->models? tm_models_generation (self->models): 0;
    tm_twins_set_touch (self->twins, s_touch, self);
    return self;
}

void
tm_peers_destroy (tm_peers_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_peers_t *self = *self_p;
    if (self->twins) {
        tm_twins_set_touch (self->twins, NULL, NULL);
        size_t nslots;
        tm_twin_t *const *slots = tm_twins_slots (self->twins, &nslots);
        for (size_t i = 0; i < nslots; i++)
            if (slots[i]) {
                if (s_is_link (slots[i]))
                    free (slots[i]->hier);
                slots[i]->hier = NULL;
            }
    }
    for (size_t i = 0; i < self->npeers; i++)
        s_peer_fini (self, &self->peers[i]);
    free (self->peers);
    s_vec_fini (&self->resolve);
    s_vec_fini (&self->touched);
    s_vec_fini (&self->detach_route);
    zhashx_destroy (&self->resync_acked);
    free (self->owned);
    tm_hier_msg_destroy (&self->msg);
    tm_hier_destroy (&self->hier);
    free (self->id);
    free (self);
    *self_p = NULL;
}

//  True if d's child is t, for the detachments of a list.
static bool
s_detaching (s_vec_t *v, const tm_twin_t *t)
{
    for (size_t i = 0; i < v->n; i++)
        if (((s_detach_t *) s_vec_at (v, i))->child == t)
            return true;
    return false;
}

bool
tm_peers_may_passivate (void *arg, tm_twin_t *t)
{
    tm_peers_t *self = (tm_peers_t *) arg;
    if (!t->hier || t->hier == TM_TWINS_NO_PARENT)
        return true;
    if (t->hier == S_PENDING)
        return false;      //  in the resolve list
    s_link_t *l = (s_link_t *) t->hier;
    if (l->pending || l->inflight || l->queued >= 0 || l->touched || l->recheck)
        return false;      //  a list holds it, or a message about it is due
    if (s_detaching (&self->detach_route, t))
        return false;
    for (size_t i = 0; i < self->npeers; i++)
        if (s_detaching (&self->peers[i].detach, t)
            || s_detaching (&self->peers[i].detach_flying, t))
            return false;
    //  Quiet: the link goes with the twin. Back in the table, the twin's next
    //  change finds its parent again and sends what it has, which the
    //  parent already holds.
    free (l);
    t->hier = NULL;
    return true;
}

tm_hier_t *
tm_peers_hier (tm_peers_t *self)
{
    return self->hier;
}

void
tm_peers_stats (tm_peers_t *self, tm_peers_stats_t *stats)
{
    *stats = self->stats;
}

void
tm_peers_node_stats (tm_peers_t *self, Twinmesh__HierStats *out)
{
    const tm_peers_stats_t *st = &self->stats;
    out->sent = st->sent;
    out->acked = st->acked;
    out->resent = st->resent;
    out->local_values = st->local_values;
    out->received = st->received;
    out->applied = st->applied;
    out->ignored = st->ignored;
    out->refused = st->refused;
    out->malformed = st->malformed;
    out->unauthorized = st->unauthorized;
    out->resyncs = st->resyncs;
    tm_hier_stats_t hs;
    tm_hier_stats (self->hier, &hs);
    out->parents = hs.parents;
    out->children = hs.children;
    out->queued = 0;
    for (size_t i = 0; i < self->npeers; i++)
        out->queued += self->peers[i].queue.n + self->peers[i].flying.n;
}

bool
tm_peers_want_map (tm_peers_t *self)
{
    bool want = self->want_map;
    self->want_map = false;
    return want;
}

//  Owner (map index) of a shard, or -1.
static int
s_owner (tm_peers_t *self, uint32_t shard)
{
    if (!self->map || shard >= self->map->num_shards)
        return -1;
    uint32_t o = self->map->owners[shard];
    return o == TM_SHARDMAP_UNASSIGNED || o >= self->npeers? -1: (int) o;
}

//  The twin's model, if loaded.
static const tm_model_t *
s_model_of (tm_peers_t *self, const tm_twin_t *t)
{
    if (!t->model || !self->models)
        return NULL;
    return tm_models_find (self->models, t->model, tm_twins_name_len (t->model));
}

//  True if the property's latest value is good by the twin's model now.
//  Not the quality stored at apply time: readings replayed from the log
//  at start are applied before the models arrive (quality unmodelled),
//  and their values are as good as any once the model is there.
static bool
s_good (tm_peers_t *self, const tm_model_t *m, const tm_prop_t *p)
{
    if (!m || !p->count)
        return false;
    const char *name = tm_twins_prop_name (self->twins, p);
    const tm_model_property_t *mp = tm_model_property_find (m, name, tm_twins_name_len (name));
    return mp && tm_model_check_value (mp, p->an.value) == TM_MODEL_Q_GOOD;
}

//  Properties whose latest value is good (the ones a child contributes).
static uint64_t
s_good_props (tm_peers_t *self, const tm_twin_t *t)
{
    const tm_model_t *m = s_model_of (self, t);
    uint64_t mask = 0;
    for (uint16_t i = 0; m && i < t->nprops && i < 64; i++)
        if (s_good (self, m, &t->props[i]))
            mask |= 1ULL << i;
    return mask;
}

//  The twin's parent per its model's parent relationship: the entity id in
//  the relationship's string attribute. Returns its length (0: none) and
//  copies it and the relationship's target model.
static size_t
s_find_parent (tm_peers_t *self, const tm_twin_t *t, char parent[TM_HIER_MAX_ID + 1],
               char model_out[TM_MODEL_NAME_MAX + 1])
{
    const tm_model_t *m = s_model_of (self, t);
    const tm_model_relationship_t *rel = m? tm_model_parent (m): NULL;
    if (!rel)
        return 0;
    const char *name = tm_twins_name_find (self->twins, rel->attribute, strlen (rel->attribute));
    const tm_attr_t *a = name? tm_twins_attr (t, name): NULL;
    if (!a || a->type != TM_EXPR_STRING || a->tags || a->len == 0 || a->len > TM_HIER_MAX_ID)
        return 0;
    //  A twin cannot aggregate itself (the tree would be a loop of one).
    if (a->len == t->entity_len && memcmp (a->str, t->entity, a->len) == 0)
        return 0;
    memcpy (parent, a->str, a->len);
    parent[a->len] = 0;
    snprintf (model_out, TM_MODEL_NAME_MAX + 1, "%s", rel->target);
    return a->len;
}

static void s_detach (tm_peers_t *self, const s_link_t *l, const tm_twin_t *t);

//  Look at a twin's parent again (state S_PENDING or a link to recheck).
//  Needs a map. Returns the link if the twin has a parent.
static s_link_t *
s_resolve (tm_peers_t *self, tm_twin_t *t)
{
    char parent[TM_HIER_MAX_ID + 1], model[TM_MODEL_NAME_MAX + 1];
    size_t len = s_find_parent (self, t, parent, model);
    s_link_t *l = s_is_link (t)? (s_link_t *) t->hier: NULL;
    if (l && l->parent_len && (len != l->parent_len || memcmp (parent, l->parent, len) != 0)) {
        s_detach (self, l, t);
        l->parent[0] = 0;
        l->parent_len = 0;
    }
    if (len == 0) {
        if (!l)
            t->hier = TM_TWINS_NO_PARENT;
        else
            l->pending = 0;
        return NULL;
    }
    if (!l) {
        l = (s_link_t *) calloc (1, sizeof *l);
        if (!l) {
            t->hier = NULL;    //  looked at again on its next change
            return NULL;
        }
        l->queued = -1;
        t->hier = l;
    }
    if (l->parent_len == 0) {
        memcpy (l->parent, parent, len + 1);
        l->parent_len = (uint32_t) len;
        l->parent_shard = tm_shardmap_shard_of (self->map, parent, len);
        //  A new parent gets everything the child has.
        l->pending = s_good_props (self, t);
    }
    snprintf (l->parent_model, sizeof l->parent_model, "%s", model);
    return l;
}

//  The twin's contribution for the properties in mask, into values.
static size_t
s_values (tm_peers_t *self, const tm_twin_t *t, uint64_t mask, tm_hier_value_t *values)
{
    size_t n = 0;
    const tm_model_t *m = s_model_of (self, t);
    for (uint16_t i = 0; m && i < t->nprops && i < 64; i++) {
        if (!(mask & (1ULL << i)))
            continue;
        const tm_prop_t *p = &t->props[i];
        //  Only good values count (docs/models.md): a property whose latest
        //  reading is not good keeps its last good contribution.
        if (!s_good (self, m, p))
            continue;
        const tm_analytics_settings_t *st = tm_twins_settings (self->twins, t, p);
        unsigned flags = tm_analytics_flags (&p->an, st);
        values[n++] = (tm_hier_value_t) {.property = tm_twins_prop_name (self->twins, p),
                                         .value = p->an.value,
                                         .ts_ms = p->an.ts_ms,
                                         .anomalous = (flags & TM_ANALYTICS_ANOMALOUS) != 0};
    }
    return n;
}

//  Apply an entry to a parent we own, creating the parent twin if needed.
//  A parent whose aggregates changed is marked changed like any twin (its
//  version moves, its checkpoint and any cached query column of it are
//  redone), since its derived properties read them.
static void
s_apply_local (tm_peers_t *self, const tm_hier_entry_t *e, tm_hier_counts_t *counts)
{
    uint32_t before = counts->applied;
    void **tag = NULL;
    tm_hier_apply_tag (self->hier, e, counts, &tag);
    tm_twin_t *pt = tag? (tm_twin_t *) *tag: NULL;
    if (tag && !pt && self->map) {
        //  The parent's twin, once per parent (twins are never removed).
        pt = tm_twins_ensure (self->twins, e->parent, strlen (e->parent), e->parent_model,
                              self->map->key, self->map->num_shards);
        if (!pt)
            tm_warn ("peers: cannot create parent twin entity=%s", e->parent);
        else
            pt->flags |= TM_TWIN_PINNED;   //  the tag keeps its pointer for good
        *tag = pt;
    }
    if (counts->applied == before)
        return;
    if (!pt)
        pt = tm_twins_find (self->twins, e->parent, strlen (e->parent));
    if (pt)
        tm_twins_mark_changed (self->twins, pt);
}

static void
s_count (tm_peers_t *self, const tm_hier_counts_t *c)
{
    self->stats.applied += c->applied;
    self->stats.ignored += c->ignored;
    self->stats.refused += c->refused;
}

static void
s_detach (tm_peers_t *self, const s_link_t *l, const tm_twin_t *t)
{
    s_detach_t d = {.parent_shard = l->parent_shard, .child = t};
    memcpy (d.parent, l->parent, l->parent_len + 1);
    int owner = s_owner (self, d.parent_shard);
    if (owner >= 0 && owner == self->my_index) {
        tm_hier_entry_t e = {.parent = d.parent, .child = t->entity, .detached = true};
        tm_hier_counts_t c = {0};
        tm_hier_apply (self->hier, &e, &c);
        s_count (self, &c);
    }
    else
    if (s_vec_push (owner >= 0? &self->peers[owner].detach: &self->detach_route, &d) != 0)
        tm_warn ("peers: out of memory; parent=%s keeps child=%s", d.parent, t->entity);
}

//  Route one touched twin: to a parent here, or into its owner's queue.
static void
s_route (tm_peers_t *self, tm_twin_t *t)
{
    if (!s_is_link (t))
        return;
    s_link_t *l = (s_link_t *) t->hier;
    l->touched = false;
    if (l->recheck) {
        l->recheck = false;
        if (!s_resolve (self, t))
            return;
    }
    if (!l->pending || !l->parent_len)
        return;
    int owner = s_owner (self, l->parent_shard);
    if (owner < 0) {
        //  No owner yet: look again when the map changes.
        l->touched = true;
        s_push_twin (self, &self->touched, t);
        return;
    }
    if (owner == self->my_index) {
        tm_hier_value_t values[TM_HIER_MAX_VALUES];
        size_t n = s_values (self, t, l->pending, values);
        l->pending = 0;
        if (n == 0)
            return;
        tm_hier_entry_t e = {.parent = l->parent, .child = t->entity,
                             .child_model = t->model? t->model: "",
                             .parent_model = l->parent_model, .values = values, .nvalues = n};
        tm_hier_counts_t c = {0};
        s_apply_local (self, &e, &c);
        s_count (self, &c);
        self->stats.local_values += n;
        return;
    }
    if (l->queued < 0) {
        if (s_vec_push (&self->peers[owner].queue, &t) == 0)
            l->queued = owner;
        else
            self->rescan = true;
    }
}

//  Every twin once more: after a list could not grow, when the models
//  changed, and at start.
static void
s_walk_all (tm_peers_t *self)
{
    size_t nslots;
    tm_twin_t *const *slots = tm_twins_slots (self->twins, &nslots);
    self->rescan = false;
    for (size_t i = 0; i < nslots; i++) {
        tm_twin_t *t = slots[i];
        if (!t || t->hier == S_PENDING)
            continue;
        if (t->hier == TM_TWINS_NO_PARENT)
            t->hier = NULL;
        s_touch (self, t, -1);
    }
}

static void
s_requeue_flying (tm_peers_t *self, s_peer_t *p)
{
    for (size_t i = 0; i < p->flying.n; i++) {
        tm_twin_t *t = s_twin_at (&p->flying, i);
        if (!s_is_link (t))
            continue;
        s_link_t *l = (s_link_t *) t->hier;
        l->pending |= l->inflight;
        l->inflight = 0;
        if (!l->touched) {
            l->touched = true;
            s_push_twin (self, &self->touched, t);
        }
    }
    p->flying.n = 0;
    for (size_t i = 0; i < p->detach_flying.n; i++)
        if (s_vec_push (&p->detach, s_vec_at (&p->detach_flying, i)) != 0)
            tm_warn ("peers: out of memory; a detachment is lost");
    p->detach_flying.n = 0;
    p->inflight_id = 0;
}

//  Send one request to a peer without waiting. Returns its id, or 0.
static uint64_t
s_peer_send (tm_peers_t *self, s_peer_t *p, int type, const void *body, size_t size)
{
    if (!p->sock) {
        p->sock = tm_net_client (ZMQ_DEALER, p->endpoint, self->cert, p->key);
        if (!p->sock)
            return 0;
        if (self->poller)
            zpoller_add (self->poller, p->sock);
    }
    tm_header_t hdr;
    uint64_t id = p->next_id++;
    tm_header_init (&hdr, type, id, self->map? self->map->epoch: 0);
    hdr.seq = ++p->seq;
    zframe_t *head = tm_header_encode (&hdr);
    zframe_t *frame = zframe_new (body, size);
    if (!head || !frame || zframe_send (&head, p->sock, ZFRAME_MORE | ZFRAME_DONTWAIT) != 0) {
        zframe_destroy (&head);
        zframe_destroy (&frame);
        return 0;
    }
    if (zframe_send (&frame, p->sock, ZFRAME_DONTWAIT) != 0) {
        zframe_destroy (&frame);
        return 0;
    }
    return id;
}

//  Build and send the peer's next CHILD_UPDATE if none is in flight.
static void
s_peer_pump (tm_peers_t *self, size_t index, int64_t now)
{
    s_peer_t *p = &self->peers[index];
    if (p->inflight_id || now < p->not_before_ms || (!p->queue.n && !p->detach.n))
        return;
    tm_hier_msg_reset (self->msg);
    size_t taken = 0;
    while (taken < p->detach.n) {
        s_detach_t *d = (s_detach_t *) s_vec_at (&p->detach, taken);
        tm_hier_entry_t e = {.parent = d->parent, .child = d->child->entity, .detached = true};
        if (tm_hier_msg_add (self->msg, &e) != 0 || s_vec_push (&p->detach_flying, d) != 0)
            break;
        taken++;
    }
    s_vec_shift (&p->detach, taken);
    taken = 0;
    size_t values_sent = 0;
    while (taken < p->queue.n) {
        tm_twin_t *t = s_twin_at (&p->queue, taken);
        s_link_t *l = s_is_link (t)? (s_link_t *) t->hier: NULL;
        if (!l) {
            taken++;
            continue;
        }
        //  The map may have moved the parent since the twin was queued.
        if (!l->parent_len || s_owner (self, l->parent_shard) != (int) index) {
            l->queued = -1;
            if (l->parent_len && !l->touched) {
                l->touched = true;
                s_push_twin (self, &self->touched, t);
            }
            taken++;
            continue;
        }
        tm_hier_value_t values[TM_HIER_MAX_VALUES];
        size_t n = s_values (self, t, l->pending, values);
        if (n) {
            tm_hier_entry_t e = {.parent = l->parent, .child = t->entity,
                                 .child_model = t->model? t->model: "",
                                 .parent_model = l->parent_model, .values = values,
                                 .nvalues = n};
            int rc = tm_hier_msg_add (self->msg, &e);
            if (rc == 1)
                break;             //  full: the rest go in the next message
            if (rc != 0 || s_vec_push (&p->flying, &t) != 0) {
                //  Out of memory: what was taken goes back to be routed again.
                s_vec_shift (&p->queue, taken);
                tm_hier_msg_reset (self->msg);
                s_requeue_flying (self, p);
                return;
            }
            l->inflight |= l->pending;
            values_sent += n;
        }
        l->pending = 0;
        l->queued = -1;
        taken++;
    }
    s_vec_shift (&p->queue, taken);
    if (tm_hier_msg_entries (self->msg) == 0)
        return;
    size_t size = 0;
    uint8_t *body = tm_hier_msg_encode (self->msg, &size);
    uint64_t id = body? s_peer_send (self, p, TWINMESH__MSG_TYPE__CHILD_UPDATE, body, size): 0;
    free (body);
    if (!id) {
        tm_debug ("peers: could not send CHILD_UPDATE to worker=%s; will retry", p->id);
        s_requeue_flying (self, p);
        p->not_before_ms = now + p->retry_ms;
        return;
    }
    p->inflight_id = id;
    p->sent_ms = now;
    self->stats.sent++;
    self->stats.sent_values += values_sent;
}

static void
s_peer_resync (tm_peers_t *self, s_peer_t *p, int64_t now)
{
    if (!p->resync_wanted || (p->resync_sent_ms && now - p->resync_sent_ms < S_RESYNC_EVERY_MS))
        return;
    Twinmesh__WorkerEntry we = TWINMESH__WORKER_ENTRY__INIT;
    we.id = self->id;
    size_t size = 0;
    uint8_t *body = tm_codec_pack_buf (&we.base, &size);
    p->resync_id = body? s_peer_send (self, p, TWINMESH__MSG_TYPE__HIER_RESYNC, body, size): 0;
    p->resync_sent_ms = now;
    free (body);
}

void
tm_peers_start (tm_peers_t *self)
{
    self->started = true;
    s_walk_all (self);
    if (self->map)
        tm_peers_set_map (self, self->map);
}

static bool
s_not_ours (void *arg, const char *parent)
{
    tm_peers_t *self = (tm_peers_t *) arg;
    return s_owner (self, tm_shardmap_shard_of (self->map, parent, strlen (parent)))
           != self->my_index;
}

void
tm_peers_set_map (tm_peers_t *self, const tm_shardmap_t *map)
{
    //  Everything queued or in flight is routed again: owners may have
    //  changed, and an ack from the old peers no longer matters (the
    //  parent ignores what it already holds).
    for (size_t i = 0; i < self->npeers; i++) {
        s_peer_t *p = &self->peers[i];
        s_requeue_flying (self, p);
        for (size_t k = 0; k < p->queue.n; k++) {
            tm_twin_t *t = s_twin_at (&p->queue, k);
            if (!s_is_link (t))
                continue;
            s_link_t *l = (s_link_t *) t->hier;
            l->queued = -1;
            if (!l->touched) {
                l->touched = true;
                s_push_twin (self, &self->touched, t);
            }
        }
        for (size_t k = 0; k < p->detach.n; k++)
            if (s_vec_push (&self->detach_route, s_vec_at (&p->detach, k)) != 0)
                tm_warn ("peers: out of memory; a detachment is lost");
        s_peer_fini (self, p);
    }
    free (self->peers);
    self->peers = NULL;
    self->npeers = 0;
    self->map = map;
    self->my_index = map? tm_shardmap_find_worker (map, self->id): -1;
    //  A shard that became ours has parents whose children do not know it:
    //  ask every worker to resend (again, if it had answered before).
    if (map && map->num_shards <= TM_SHARDMAP_MAX_SHARDS) {
        uint8_t *owned = (uint8_t *) calloc ((TM_SHARDMAP_MAX_SHARDS + 7) / 8, 1);
        bool gained = false;
        for (uint32_t sh = 0; owned && sh < map->num_shards; sh++)
            if (self->my_index >= 0 && map->owners[sh] == (uint32_t) self->my_index) {
                owned[sh >> 3] |= (uint8_t) (1u << (sh & 7));
                gained = gained || !self->owned || !(self->owned[sh >> 3] & (1u << (sh & 7)));
            }
        if (gained && self->owned) {
            tm_info ("peers: shards gained at map epoch=%llu; asking every worker to resend",
                     (unsigned long long) map->epoch);
            zhashx_purge (self->resync_acked);
        }
        if (owned) {
            free (self->owned);
            self->owned = owned;
        }
    }
    if (map && map->nworkers) {
        self->peers = (s_peer_t *) calloc (map->nworkers, sizeof (s_peer_t));
        if (self->peers)
            self->npeers = map->nworkers;
    }
    for (size_t i = 0; i < self->npeers; i++) {
        s_peer_t *p = &self->peers[i];
        p->id = strdup (map->workers[i].id);
        p->endpoint = strdup (map->workers[i].endpoint);
        p->key = strdup (map->workers[i].public_key);
        p->next_id = 1;
        p->retry_ms = TM_PEERS_RETRY_MS;
        s_vec_init (&p->queue, sizeof (tm_twin_t *));
        s_vec_init (&p->flying, sizeof (tm_twin_t *));
        s_vec_init (&p->detach, sizeof (s_detach_t));
        s_vec_init (&p->detach_flying, sizeof (s_detach_t));
        //  A peer that acked our resync need not be asked again.
        p->resync_wanted = self->started && (int) i != self->my_index && p->id
                           && !zhashx_lookup (self->resync_acked, p->id);
    }
    //  Parents whose shards are no longer ours: their new owner rebuilds
    //  them from the children's resends (shards moved away).
    if (map && self->my_index >= 0) {
        size_t dropped = tm_hier_drop (self->hier, s_not_ours, self);
        if (dropped)
            tm_info ("peers: forgot parents=%zu of shards no longer owned", dropped);
    }
    //  Detachments that waited for an owner.
    s_vec_t waiting = self->detach_route;
    s_vec_init (&self->detach_route, sizeof (s_detach_t));
    for (size_t i = 0; i < waiting.n; i++) {
        s_detach_t *d = (s_detach_t *) s_vec_at (&waiting, i);
        int owner = s_owner (self, d->parent_shard);
        if (owner >= 0 && owner == self->my_index) {
            tm_hier_entry_t e = {.parent = d->parent, .child = d->child->entity,
                                 .detached = true};
            tm_hier_counts_t c = {0};
            tm_hier_apply (self->hier, &e, &c);
        }
        else
        if (s_vec_push (owner >= 0? &self->peers[owner].detach: &self->detach_route, d) != 0)
            tm_warn ("peers: out of memory; a detachment is lost");
    }
    s_vec_fini (&waiting);
}

void
tm_peers_flush (tm_peers_t *self, int64_t now, bool force)
{
    if (!self->map || self->map->num_shards == 0)
        return;
    for (size_t i = 0; i < self->npeers; i++) {
        s_peer_t *p = &self->peers[i];
        if (p->inflight_id && now - p->sent_ms >= p->retry_ms) {
            tm_debug ("peers: no ack from worker=%s in %lld ms; sending again", p->id,
                      (long long) p->retry_ms);
            s_requeue_flying (self, p);
            self->stats.resent++;
            p->retry_ms = p->retry_ms * 2 > TM_PEERS_RETRY_MAX_MS? TM_PEERS_RETRY_MAX_MS:
                                                                   p->retry_ms * 2;
        }
        s_peer_resync (self, p, now);
    }
    if (!force && now - self->last_flush_ms < self->flush_gap_ms)
        return;
    self->last_flush_ms = now;
    int64_t t0 = tm_util_mono_us ();
    if (self->models && tm_models_generation (self->models) != self->models_gen) {
        self->models_gen = tm_models_generation (self->models);
        s_walk_all (self);
    }
    if (self->rescan)
        s_walk_all (self);
    //  Resolve first: a resolved twin joins the touched list.
    s_vec_t list = self->resolve;
    s_vec_init (&self->resolve, sizeof (tm_twin_t *));
    for (size_t i = 0; i < list.n; i++) {
        tm_twin_t *t = s_twin_at (&list, i);
        if (t->hier != S_PENDING)
            continue;
        s_link_t *l = s_resolve (self, t);
        if (l && !l->touched) {
            l->touched = true;
            s_push_twin (self, &self->touched, t);
        }
    }
    s_vec_fini (&list);
    list = self->touched;
    s_vec_init (&self->touched, sizeof (tm_twin_t *));
    for (size_t i = 0; i < list.n; i++)
        s_route (self, s_twin_at (&list, i));
    s_vec_fini (&list);
    for (size_t i = 0; i < self->npeers; i++)
        if ((int) i != self->my_index)
            s_peer_pump (self, i, now);
    //  The hierarchy may take a tenth of the worker's time: under a load
    //  that touches every child between two flushes, routing them all is
    //  work per child, so flush less often rather than slow ingest down.
    int64_t spent_ms = (tm_util_mono_us () - t0) / 1000;
    self->flush_gap_ms = spent_ms * 9 > TM_PEERS_FLUSH_MS? spent_ms * 9: TM_PEERS_FLUSH_MS;
    if (self->flush_gap_ms > S_FLUSH_GAP_MAX_MS)
        self->flush_gap_ms = S_FLUSH_GAP_MAX_MS;
}

int64_t
tm_peers_next_ms (tm_peers_t *self, int64_t now)
{
    if (!self->map)
        return -1;
    int64_t next = -1;
#define S_SOONER(at)                                                           \
    do {                                                                       \
        int64_t at_ = (at) < 0? 0: (at);                                       \
        next = next < 0 || at_ < next? at_: next;                              \
    } while (0)
    if (self->resolve.n || self->touched.n || self->rescan)
        S_SOONER (self->last_flush_ms + self->flush_gap_ms - now);
    for (size_t i = 0; i < self->npeers; i++) {
        s_peer_t *p = &self->peers[i];
        if ((int) i == self->my_index)
            continue;
        if (p->inflight_id)
            S_SOONER (p->sent_ms + p->retry_ms - now);
        else
        if (p->queue.n || p->detach.n)
            S_SOONER (p->not_before_ms - now);
        if (p->resync_wanted)
            S_SOONER (p->resync_sent_ms? p->resync_sent_ms + S_RESYNC_EVERY_MS - now: 0);
    }
#undef S_SOONER
    return next;
}

bool
tm_peers_handle (tm_peers_t *self, zsock_t *which, int64_t now)
{
    size_t index = 0;
    while (index < self->npeers && self->peers[index].sock != which)
        index++;
    if (index == self->npeers)
        return false;
    s_peer_t *p = &self->peers[index];
    for (int n = 0; n < 64 && (zsock_events (p->sock) & ZMQ_POLLIN); n++) {
        tm_msg_t msg;
        int rc = tm_msg_recv (p->sock, false, &msg);
        if (rc < 0) {
            tm_msg_fini (&msg);
            break;
        }
        if (rc > 0)
            tm_warn ("peers: malformed reply from worker=%s", p->id);
        else
        if (msg.hdr.type == TWINMESH__MSG_TYPE__CHILD_UPDATE_ACK && p->inflight_id
            && msg.hdr.request_id == p->inflight_id) {
            if (msg.hdr.status == TWINMESH__STATUS__OK) {
                for (size_t i = 0; i < p->flying.n; i++) {
                    tm_twin_t *t = s_twin_at (&p->flying, i);
                    if (s_is_link (t))
                        ((s_link_t *) t->hier)->inflight = 0;
                }
                p->flying.n = 0;
                p->detach_flying.n = 0;
                p->inflight_id = 0;
                p->retry_ms = TM_PEERS_RETRY_MS;
                self->stats.acked++;
            }
            else {
                tm_debug ("peers: worker=%s refused CHILD_UPDATE status=%s detail=%s", p->id,
                          tm_status_name (msg.hdr.status), msg.hdr.detail);
                if (msg.hdr.status == TWINMESH__STATUS__WRONG_SHARD)
                    self->want_map = true;
                s_requeue_flying (self, p);
                self->stats.resent++;
                p->not_before_ms = now + p->retry_ms;
            }
        }
        else
        if (msg.hdr.type == TWINMESH__MSG_TYPE__HIER_RESYNC_ACK && p->resync_id
            && msg.hdr.request_id == p->resync_id && msg.hdr.status == TWINMESH__STATUS__OK) {
            p->resync_wanted = false;
            p->resync_id = 0;
            zhashx_insert (self->resync_acked, p->id, (void *) 1);
            tm_info ("peers: worker=%s resends our parents' contributions", p->id);
        }
        tm_msg_fini (&msg);
    }
    //  An ack frees the slot: send what waited for it.
    s_peer_pump (self, index, now);
    return true;
}

//  ---------------------------------------------------------------------
//  Server side

static void
s_reply (tm_peers_t *self, zsock_t *router, const tm_msg_t *msg, int type, int status,
         const char *detail, const void *body, size_t size)
{
    tm_msg_reply (router, msg, type, status, self->map? self->map->epoch: 0, detail, body, size);
}

typedef struct {
    tm_peers_t *self;
    tm_hier_counts_t counts;
    uint32_t wrong;                //  Entries for parents we do not own
} s_update_ctx_t;

static int
s_on_entry (void *arg, const tm_hier_entry_t *e)
{
    s_update_ctx_t *ctx = (s_update_ctx_t *) arg;
    tm_peers_t *self = ctx->self;
    uint32_t shard = tm_shardmap_shard_of (self->map, e->parent, strlen (e->parent));
    if (self->my_index < 0 || s_owner (self, shard) != self->my_index) {
        ctx->wrong++;
        return 0;
    }
    s_apply_local (self, e, &ctx->counts);
    return 0;
}

void
tm_peers_on_update (tm_peers_t *self, zsock_t *router, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__CHILD_UPDATE_ACK;
    if (msg->role != TM_ROLE_WORKER) {
        self->stats.unauthorized++;
        s_reply (self, router, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                 "only workers may send CHILD_UPDATE", NULL, 0);
        return;
    }
    if (!self->map || self->map->num_shards == 0) {
        s_reply (self, router, msg, type, TWINMESH__STATUS__RETRY_LATER, "no shard map yet",
                 NULL, 0);
        return;
    }
    s_update_ctx_t ctx = {.self = self};
    char err[160];
    long n = tm_hier_decode_update (zframe_data (msg->body), zframe_size (msg->body), s_on_entry,
                                    &ctx, err, sizeof err);
    if (n < 0) {
        self->stats.malformed++;
        //  A hostile or broken peer must not flood the log: one a second.
        int64_t now = tm_util_mono_ms ();
        if (now - self->last_warn_ms >= 1000) {
            tm_warn ("peers: malformed CHILD_UPDATE peer=%s: %s suppressed=%llu", msg->peer,
                     err, (unsigned long long) self->warns_suppressed);
            self->last_warn_ms = now;
            self->warns_suppressed = 0;
        }
        else
            self->warns_suppressed++;
        s_reply (self, router, msg, type, TWINMESH__STATUS__MALFORMED, err, NULL, 0);
        return;
    }
    self->stats.received++;
    s_count (self, &ctx.counts);
    Twinmesh__ChildUpdateAck ack = TWINMESH__CHILD_UPDATE_ACK__INIT;
    ack.applied = ctx.counts.applied;
    ack.ignored = ctx.counts.ignored;
    ack.refused = ctx.counts.refused;
    size_t size = 0;
    uint8_t *body = tm_codec_pack_buf (&ack.base, &size);
    char detail[96] = "";
    if (ctx.wrong)
        snprintf (detail, sizeof detail, "%u entries name parents %s does not own", ctx.wrong,
                  self->id);
    s_reply (self, router, msg, type,
             ctx.wrong? TWINMESH__STATUS__WRONG_SHARD: TWINMESH__STATUS__OK,
             ctx.wrong? detail: NULL, body, body? size: 0);
    free (body);
}

void
tm_peers_on_resync (tm_peers_t *self, zsock_t *router, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__HIER_RESYNC_ACK;
    if (msg->role != TM_ROLE_WORKER) {
        self->stats.unauthorized++;
        s_reply (self, router, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                 "only workers may send HIER_RESYNC", NULL, 0);
        return;
    }
    Twinmesh__WorkerEntry *we =
        TM_UNPACK (WorkerEntry, worker_entry, zframe_data (msg->body), zframe_size (msg->body));
    int index = we && we->id && self->map? tm_shardmap_find_worker (self->map, we->id): -1;
    tm_codec_free (&we);
    if (index < 0) {
        //  Not in our map yet: it will ask again (we may be behind).
        s_reply (self, router, msg, type, TWINMESH__STATUS__RETRY_LATER,
                 "the requesting worker is not in this worker's shard map", NULL, 0);
        return;
    }
    //  Everything we hold for its parents goes into its queue (the
    //  twins not looked at yet are routed anyway).
    size_t nslots, marked = 0;
    tm_twin_t *const *slots = tm_twins_slots (self->twins, &nslots);
    for (size_t i = 0; i < nslots; i++) {
        tm_twin_t *t = slots[i];
        if (!t || !s_is_link (t))
            continue;
        s_link_t *l = (s_link_t *) t->hier;
        if (!l->parent_len || s_owner (self, l->parent_shard) != index)
            continue;
        l->pending |= s_good_props (self, t);
        if (!l->touched) {
            l->touched = true;
            s_push_twin (self, &self->touched, t);
        }
        marked++;
    }
    self->stats.resyncs++;
    tm_info ("peers: resync for worker=%s children=%zu", self->map->workers[index].id, marked);
    s_reply (self, router, msg, type, TWINMESH__STATUS__OK, NULL, NULL, 0);
}

#define S_CHILDREN_LIMIT 10000         //  Children listed in one reply at most

void
tm_peers_on_children_get (tm_peers_t *self, zsock_t *router, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__CHILDREN;
    if (!tm_role_may_read (msg->role)) {
        self->stats.unauthorized++;
        s_reply (self, router, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                 "this key's role may not read twins", NULL, 0);
        return;
    }
    Twinmesh__ChildrenGet *req =
        TM_UNPACK (ChildrenGet, children_get, zframe_data (msg->body), zframe_size (msg->body));
    size_t len = req && req->entity? strnlen (req->entity, TM_HIER_MAX_ID + 1): 0;
    if (!req || len == 0 || len > TM_HIER_MAX_ID) {
        self->stats.malformed++;
        tm_codec_free (&req);
        s_reply (self, router, msg, type, TWINMESH__STATUS__MALFORMED,
                 "ChildrenGet needs an entity of 1-128 bytes", NULL, 0);
        return;
    }
    size_t limit = req->limit && req->limit < S_CHILDREN_LIMIT? req->limit: S_CHILDREN_LIMIT;
    char detail[256];
    if (!tm_twins_find (self->twins, req->entity, len)) {
        uint32_t shard = self->map? tm_shardmap_shard_of (self->map, req->entity, len): 0;
        bool mine = self->map && self->my_index >= 0 && s_owner (self, shard) == self->my_index;
        snprintf (detail, sizeof detail, "%s shard %u on %s",
                  mine? "no such twin in": "not the owner of", shard, self->id);
        s_reply (self, router, msg, type,
                 mine? TWINMESH__STATUS__NOT_FOUND: TWINMESH__STATUS__WRONG_SHARD, detail, NULL,
                 0);
        tm_codec_free (&req);
        return;
    }
    size_t size = 0;
    uint8_t *body = tm_hier_encode_children (self->hier, req->entity, limit, &size);
    s_reply (self, router, msg, type,
             body? TWINMESH__STATUS__OK: TWINMESH__STATUS__RETRY_LATER, body? NULL: "out of memory",
             body, size);
    free (body);
    tm_codec_free (&req);
}

//  The parent's model's "aggregates" section decides what counts: only
//  the properties it names, from the child models it lists. A parent
//  whose model is not loaded, or names none, counts every property.
static bool
s_filter (void *arg, const char *child_model, const char *property)
{
    const tm_model_t *m = (const tm_model_t *) arg;
    const tm_model_aggregate_t *g = tm_model_aggregate_find (m, property);
    if (!g)
        return false;
    if (g->nmodels == 0)
        return true;
    for (uint32_t i = 0; i < g->nmodels; i++)
        if (strcmp (g->models[i], child_model) == 0)
            return true;
    return false;
}

uint8_t *
tm_peers_twin_extra (tm_peers_t *self, const tm_twin_t *twin, size_t *size)
{
    const tm_model_t *m = twin->model && self->models?
                          tm_models_find (self->models, twin->model,
                                          tm_twins_name_len (twin->model)): NULL;
    bool filtered = m && m->naggregates > 0;
    return tm_hier_encode_twin_extra (self->hier, twin->entity, filtered? s_filter: NULL,
                                      (void *) m, size);
}

bool
tm_peers_series (void *arg, const tm_twin_t *twin, const char *name, double *value)
{
    tm_peers_t *self = (tm_peers_t *) arg;
    static const struct {
        const char *suffix;
        uint32_t function;
    } s_functions[] = {{"_mean", TM_MODEL_AGG_MEAN}, {"_min", TM_MODEL_AGG_MIN},
                       {"_max", TM_MODEL_AGG_MAX},
                       {"_count_anomalous", TM_MODEL_AGG_COUNT_ANOMALOUS}};
    const tm_model_t *m = s_model_of (self, twin);
    if (!m || m->naggregates == 0)
        return false;
    size_t len = strlen (name);
    for (size_t i = 0; i < sizeof s_functions / sizeof s_functions[0]; i++) {
        size_t slen = strlen (s_functions[i].suffix);
        if (len <= slen || len - slen > TM_MODEL_NAME_MAX
            || strcmp (name + len - slen, s_functions[i].suffix) != 0)
            continue;
        char property[TM_MODEL_NAME_MAX + 1];
        memcpy (property, name, len - slen);
        property[len - slen] = 0;
        const tm_model_aggregate_t *g = tm_model_aggregate_find (m, property);
        if (!g || !(g->functions & s_functions[i].function))
            return false;
        //  One pass over the parent's children per series read: reads are
        //  rare (a TWIN_GET, a query's derived column on a parent).
        tm_hier_agg_t aggs[TM_HIER_MAX_PROPS];
        size_t n = tm_hier_aggregates (self->hier, twin->entity, s_filter, (void *) m, aggs,
                                       TM_HIER_MAX_PROPS);
        for (size_t k = 0; k < n; k++) {
            if (strcmp (aggs[k].property, property) != 0)
                continue;
            switch (s_functions[i].function) {
                case TM_MODEL_AGG_MEAN: *value = aggs[k].mean; break;
                case TM_MODEL_AGG_MIN: *value = aggs[k].min; break;
                case TM_MODEL_AGG_MAX: *value = aggs[k].max; break;
                default: *value = aggs[k].anomalous; break;
            }
            return true;
        }
        return false;
    }
    return false;
}
