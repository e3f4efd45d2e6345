/*  tm_coord - the broker's query coordinator: parse, scatter, gather, merge  */
#include "tm_coord.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_model.h"
#include "tm_net.h"
#include "tm_qexec.h"
#include "tm_query.h"
#include "tm_util.h"

#include <stdlib.h>
#include <string.h>

#define S_MAX_POLLERS 2
#define S_MAX_PEERS TM_QUERY_MAX_SITES
#define S_PEER_MARGIN_MS 250           //  A peer answers this much before our deadline
#define S_DEFAULT_SITE "local"

typedef struct {
    char *id;                      //  Worker id, owned
    char *endpoint;                //  Where its ROUTER listens, owned
    char *public_key;              //  Its Z85 key, owned
    zsock_t *sock;                 //  Our DEALER to it, owned
} s_link_t;

typedef struct {
    char *name;                    //  Peer site name, owned
    char *endpoint;                //  Its broker's ROUTER, owned
    zsock_t *sock;                 //  Our DEALER to it (site key), owned
} s_peer_t;

typedef enum {
    S_SITE_WAITING = 0,
    S_SITE_DONE,
    S_SITE_FAILED
} s_site_state_t;

//  One site of a federated query.
typedef struct {
    const char *name;              //  Borrowed from the peer or the coordinator
    int peer;                      //  Index in peers; -1 = this site (the workers)
    s_site_state_t state;
    char detail[320];              //  Why it failed, or the policy it applied
    tm_qpartial_t *partial;        //  Its answer (peers), owned; local: NULL (merged)
    uint32_t shards_total;         //  The site's shards
    uint32_t shards_missing;       //  Of which no answer
} s_site_t;

typedef struct {
    uint64_t id;                   //  Our request id towards workers and peers
    bool for_peer;                 //  A peer's SITE_QUERY: answer SITE_PARTIAL
    tm_query_t *query;             //  Parsed query, owned
    tm_qpartial_t *merged;         //  This site's workers' partials, owned
    zframe_t *client;              //  Requester's routing frame, owned
    uint64_t client_request;       //  Requester's request id, echoed
    uint64_t epoch;                //  Map epoch the query was scattered at
    uint32_t num_shards;           //  Shards in that map (0: local part not run)
    uint32_t *owner;               //  owner[shard]: link index, UINT32_MAX none; owned
    uint8_t *answered;             //  answered[shard]: 1 once merged; owned
    uint32_t outstanding;          //  Workers and peers not heard from
    s_site_t *sites;               //  Federated: every site named; owned
    size_t nsites;
    int64_t started_us;            //  Monotonic, for elapsed
    int64_t deadline_ms;           //  Monotonic
    zlistx_t *warnings;            //  char *, owned
} s_pending_t;

struct _tm_coord_t {
    zcert_t *cert;                 //  Broker's certificate, borrowed
    zsock_t *router;               //  Clients' socket, borrowed
    int64_t deadline_ms;           //  Default deadline
    char site[TM_MODEL_NAME_MAX + 1];  //  This site's name
    tm_coord_policy_t policy;      //  What this site exports
    s_link_t *links;               //  One per worker seen in a map
    size_t nlinks;
    s_peer_t peers[S_MAX_PEERS];   //  Peer sites
    size_t npeers;
    zpoller_t *pollers[S_MAX_POLLERS];  //  Borrowed
    size_t npollers;
    s_pending_t *pending[TM_COORD_MAX_PENDING];  //  Queries in flight, owned; NULL free
    uint64_t next_id;              //  Request ids towards workers and peers
    tm_coord_stats_t stats;
};

static void
s_pending_destroy (s_pending_t **self_p)
{
    if (!*self_p)
        return;
    s_pending_t *p = *self_p;
    for (size_t i = 0; i < p->nsites; i++)
        tm_qpartial_destroy (&p->sites[i].partial);
    free (p->sites);
    tm_qpartial_destroy (&p->merged);
    tm_query_destroy (&p->query);
    zframe_destroy (&p->client);
    free (p->owner);
    free (p->answered);
    zlistx_destroy (&p->warnings);
    free (p);
    *self_p = NULL;
}

static void
s_unpoll (tm_coord_t *self, zsock_t *sock)
{
    if (sock)
        for (size_t i = 0; i < self->npollers; i++)
            zpoller_remove (self->pollers[i], sock);
}

static void
s_poll (tm_coord_t *self, zsock_t *sock)
{
    for (size_t i = 0; i < self->npollers; i++)
        zpoller_add (self->pollers[i], sock);
}

tm_coord_t *
tm_coord_new (zcert_t *cert, zsock_t *router, int64_t deadline_ms)
{
    tm_coord_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->cert = cert;
    self->router = router;
    self->deadline_ms = deadline_ms > 0? deadline_ms: 3000;
    self->next_id = 1;
    snprintf (self->site, sizeof self->site, "%s", S_DEFAULT_SITE);
    self->policy.mode = TM_COORD_EXPORT_AGGREGATES;
    self->policy.min_group = 5;
    return self;
}

void
tm_coord_destroy (tm_coord_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_coord_t *self = *self_p;
    for (size_t i = 0; i < TM_COORD_MAX_PENDING; i++)
        s_pending_destroy (&self->pending[i]);
    for (size_t i = 0; i < self->nlinks; i++) {
        s_unpoll (self, self->links[i].sock);
        zsock_destroy (&self->links[i].sock);
        free (self->links[i].id);
        free (self->links[i].endpoint);
        free (self->links[i].public_key);
    }
    free (self->links);
    for (size_t i = 0; i < self->npeers; i++) {
        s_unpoll (self, self->peers[i].sock);
        zsock_destroy (&self->peers[i].sock);
        free (self->peers[i].name);
        free (self->peers[i].endpoint);
    }
    free (self);
    *self_p = NULL;
}

int
tm_coord_attach (tm_coord_t *self, zpoller_t *poller)
{
    if (self->npollers >= S_MAX_POLLERS)
        return -1;
    self->pollers[self->npollers++] = poller;
    for (size_t i = 0; i < self->nlinks; i++)
        if (self->links[i].sock)
            zpoller_add (poller, self->links[i].sock);
    for (size_t i = 0; i < self->npeers; i++)
        zpoller_add (poller, self->peers[i].sock);
    return 0;
}

int
tm_coord_export_parse (const char *text, tm_coord_export_t *mode)
{
    if (text && streq (text, "raw"))
        *mode = TM_COORD_EXPORT_RAW;
    else
    if (text && streq (text, "aggregates"))
        *mode = TM_COORD_EXPORT_AGGREGATES;
    else
    if (text && streq (text, "none"))
        *mode = TM_COORD_EXPORT_NONE;
    else
        return -1;
    return 0;
}

int
tm_coord_set_site (tm_coord_t *self, const char *site, const tm_coord_policy_t *policy)
{
    if (!site || !*site || strlen (site) > TM_MODEL_NAME_MAX)
        return -1;
    snprintf (self->site, sizeof self->site, "%s", site);
    if (policy)
        self->policy = *policy;
    return 0;
}

int
tm_coord_add_peer (tm_coord_t *self, const char *name, const char *endpoint,
                   const char *public_z85, zcert_t *site_cert)
{
    if (self->npeers >= S_MAX_PEERS || !name || !*name || streq (name, self->site))
        return -1;
    for (size_t i = 0; i < self->npeers; i++)
        if (streq (self->peers[i].name, name))
            return -1;
    s_peer_t *peer = &self->peers[self->npeers];
    peer->sock = tm_net_client (ZMQ_DEALER, endpoint, site_cert, public_z85);
    if (!peer->sock)
        return -1;
    //  A site that is down must not collect a backlog of old queries.
    zsock_set_sndhwm (peer->sock, 64);
    zsock_set_sndtimeo (peer->sock, 0);
    peer->name = strdup (name);
    peer->endpoint = strdup (endpoint);
    if (!peer->name || !peer->endpoint) {
        zsock_destroy (&peer->sock);
        free (peer->name);
        free (peer->endpoint);
        return -1;
    }
    s_poll (self, peer->sock);
    self->npeers++;
    tm_info ("broker: peer site=%s endpoint=%s", name, endpoint);
    return 0;
}

bool
tm_coord_owns (tm_coord_t *self, void *sock)
{
    if (!sock)
        return false;
    for (size_t i = 0; i < self->nlinks; i++)
        if (self->links[i].sock == sock)
            return true;
    for (size_t i = 0; i < self->npeers; i++)
        if (self->peers[i].sock == sock)
            return true;
    return false;
}

//  The link to a map worker, made or remade as its endpoint and key say;
//  its index, or -1 if no socket could be made.
static int
s_link (tm_coord_t *self, const tm_shardmap_worker_t *w)
{
    size_t i = 0;
    for (; i < self->nlinks; i++)
        if (streq (self->links[i].id, w->id))
            break;
    if (i == self->nlinks) {
        s_link_t *grown = realloc (self->links, (self->nlinks + 1) * sizeof *grown);
        if (!grown)
            return -1;
        self->links = grown;
        memset (&self->links[i], 0, sizeof self->links[i]);
        self->links[i].id = strdup (w->id);
        if (!self->links[i].id)
            return -1;
        self->nlinks++;
    }
    s_link_t *link = &self->links[i];
    bool same = link->sock && link->endpoint && link->public_key
             && streq (link->endpoint, w->endpoint) && streq (link->public_key, w->public_key);
    if (same)
        return (int) i;
    s_unpoll (self, link->sock);
    zsock_destroy (&link->sock);
    free (link->endpoint);
    free (link->public_key);
    link->endpoint = strdup (w->endpoint);
    link->public_key = strdup (w->public_key);
    if (!link->endpoint || !link->public_key)
        return -1;
    link->sock = tm_net_client (ZMQ_DEALER, w->endpoint, self->cert, w->public_key);
    if (!link->sock)
        return -1;
    //  A query to a worker that is down must not queue up for its return:
    //  the answer has gone out partial long before. Sends never block the
    //  broker: with the queue full the worker is too slow for this query.
    zsock_set_sndhwm (link->sock, 64);
    zsock_set_sndtimeo (link->sock, 0);
    s_poll (self, link->sock);
    tm_info ("broker: query link to worker=%s endpoint=%s", w->id, w->endpoint);
    return (int) i;
}

static void
s_refuse (tm_coord_t *self, const tm_msg_t *msg, int type, int status, const char *detail)
{
    self->stats.refused++;
    tm_msg_reply (self->router, msg, type, status, 0, detail, NULL, 0);
}

static void
s_warn (s_pending_t *p, const char *fmt, ...)
{
    char text[300];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    if (zlistx_size (p->warnings) < 32) {
        char *copy = strdup (text);
        if (copy)
            zlistx_add_end (p->warnings, copy);
    }
}

static uint32_t
s_missing_count (const s_pending_t *p)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < p->num_shards; s++)
        n += !p->answered[s];
    return n;
}

//  The export policy applied to this site's partial before it leaves;
//  what was done goes in detail.
static void
s_apply_policy (tm_coord_t *self, tm_qpartial_t *partial, char *detail, size_t size)
{
    const tm_coord_policy_t *pol = &self->policy;
    size_t dropped = 0;
    if (pol->mode == TM_COORD_EXPORT_AGGREGATES) {
        tm_qpartial_drop_rows (partial);
        dropped = tm_qpartial_suppress_small (partial, pol->min_group);
    }
    if (pol->epsilon > 0)
        tm_qpartial_add_noise (partial, pol->epsilon, pol->sum_bound);
    int n = snprintf (detail, size, "%s",
                      pol->mode == TM_COORD_EXPORT_RAW? "raw rows allowed":
                      "aggregates only");
    if (pol->mode == TM_COORD_EXPORT_AGGREGATES && n > 0 && (size_t) n < size)
        n += snprintf (detail + n, size - (size_t) n, ", groups under %llu twins suppressed (%zu)",
                       (unsigned long long) pol->min_group, dropped);
    if (pol->epsilon > 0 && n > 0 && (size_t) n < size)
        snprintf (detail + n, size - (size_t) n, ", noise epsilon %g", pol->epsilon);
}

//  Answer a peer's SITE_QUERY with this site's partial.
static void
s_finish_peer (tm_coord_t *self, s_pending_t *p)
{
    Twinmesh__SitePartial sp = TWINMESH__SITE_PARTIAL__INIT;
    char policy[200];
    s_apply_policy (self, p->merged, policy, sizeof policy);
    size_t psize = 0, size = 0;
    uint8_t *pbytes = tm_qpartial_encode (p->merged, &psize);
    uint8_t *bytes = NULL;
    if (pbytes) {
        sp.site = self->site;
        sp.partial.data = pbytes;
        sp.partial.len = psize;
        sp.policy = policy;
        sp.shards_total = p->num_shards;
        sp.shards_missing = s_missing_count (p);
        bytes = tm_codec_pack_buf (&sp.base, &size);
    }
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__SITE_PARTIAL, p->client_request, p->epoch);
    if (!bytes) {
        hdr.status = TWINMESH__STATUS__RETRY_LATER;
        snprintf (hdr.detail, sizeof hdr.detail, "out of memory building the answer");
    }
    if (tm_msg_send (self->router, p->client, &hdr, bytes, size) != 0)
        tm_debug ("broker: site answer not sent (peer gone)");
    free (bytes);
    free (pbytes);
}

//  Answer a client: this site's workers and, federated, every site.
static void
s_finish_client (tm_coord_t *self, s_pending_t *p)
{
    tm_qpartial_t *all = p->merged;
    tm_qpartial_t *federated = NULL;
    bool partial = s_missing_count (p) > 0;
    if (p->nsites) {
        //  The sites' partials merged into one: the local one is re-read
        //  from its encoding, the peers' were checked when they came.
        federated = tm_qpartial_new (p->query);
        for (size_t i = 0; federated && i < p->nsites; i++) {
            s_site_t *s = &p->sites[i];
            tm_qpartial_t *part = s->peer < 0? p->merged: s->partial;
            if (s->state != S_SITE_DONE || !part) {
                partial = true;
                continue;
            }
            size_t size = 0;
            uint8_t *bytes = tm_qpartial_encode (part, &size);
            char err[256];
            if (!bytes || tm_qpartial_merge (federated, bytes, size, err, sizeof err) != 0)
                s_warn (p, "site %s: its answer could not be merged", s->name);
            free (bytes);
        }
        all = federated;
    }
    uint32_t *missing = malloc ((p->num_shards? p->num_shards: 1) * sizeof *missing);
    size_t nmissing = 0;
    for (uint32_t s = 0; missing && s < p->num_shards; s++)
        if (!p->answered[s])
            missing[nmissing++] = s;
    tm_qresult_t *res = all? tm_qresult_new (p->query, all): NULL;
    size_t size = 0;
    uint8_t *bytes = NULL;
    if (res && missing) {
        tm_qresult_set_shards (res, p->num_shards, missing, nmissing);
        int64_t us = tm_util_mono_us () - p->started_us;
        tm_qresult_set_elapsed_us (res, us > UINT32_MAX? UINT32_MAX: (uint32_t) us);
        for (size_t i = 0; i < p->nsites; i++) {
            s_site_t *s = &p->sites[i];
            tm_qpartial_t *part = s->peer < 0? p->merged: s->partial;
            tm_qresult_t *own = s->state == S_SITE_DONE && part?
                                tm_qresult_new (p->query, part): NULL;
            if (s->peer < 0 && s->state == S_SITE_DONE) {
                s->shards_total = p->num_shards;
                s->shards_missing = (uint32_t) nmissing;
                snprintf (s->detail, sizeof s->detail, "this site");
            }
            if (s->state == S_SITE_WAITING)
                snprintf (s->detail, sizeof s->detail, "no answer within the deadline");
            if (s->shards_missing)
                partial = true;
            tm_qresult_add_site_answer (res, s->name, s->state == S_SITE_DONE, s->detail,
                                        part? tm_qpartial_matched (part): 0, own,
                                        s->shards_missing);
            tm_qresult_destroy (&own);
        }
        for (char *w = zlistx_first (p->warnings); w; w = zlistx_next (p->warnings))
            tm_qresult_add_warning (res, w);
        bytes = tm_qresult_encode (res, &size);
    }
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__QUERY_RESULT, p->client_request, p->epoch);
    if (!bytes) {
        hdr.status = TWINMESH__STATUS__RETRY_LATER;
        snprintf (hdr.detail, sizeof hdr.detail, "out of memory building the answer");
    }
    if (tm_msg_send (self->router, p->client, &hdr, bytes, size) != 0)
        tm_debug ("broker: query answer not sent (client gone)");
    if (partial)
        self->stats.partial++;
    else
        self->stats.answered++;
    tm_info ("broker: query id=%llu answered shards=%u missing=%zu sites=%zu matched=%llu us=%lld",
             (unsigned long long) p->id, p->num_shards, nmissing, p->nsites,
             (unsigned long long) (all? tm_qpartial_matched (all): 0),
             (long long) (tm_util_mono_us () - p->started_us));
    tm_qresult_destroy (&res);
    tm_qpartial_destroy (&federated);
    free (bytes);
    free (missing);
}

static void
s_finish (tm_coord_t *self, size_t slot)
{
    s_pending_t *p = self->pending[slot];
    if (p->for_peer)
        s_finish_peer (self, p);
    else
        s_finish_client (self, p);
    s_pending_destroy (&self->pending[slot]);
}

//  Send the plan to every worker that owns shards in map. The answer
//  waits for each one sent to.
static void
s_scatter (tm_coord_t *self, s_pending_t *p, const tm_shardmap_t *map)
{
    p->epoch = map->epoch;
    p->num_shards = map->num_shards;
    p->owner = malloc (map->num_shards * sizeof *p->owner);
    p->answered = calloc (map->num_shards, 1);
    size_t plan_size = 0;
    uint8_t *plan = tm_query_plan_encode (p->query, &plan_size);
    int *link_of = malloc ((map->nworkers? map->nworkers: 1) * sizeof *link_of);
    uint32_t *shards = malloc (map->num_shards * sizeof *shards);
    if (!p->owner || !p->answered || !plan || !link_of || !shards) {
        //  Every shard stays unanswered: the answer says so.
        if (p->owner && p->answered)
            s_warn (p, "out of memory scattering the query");
        else
            p->num_shards = 0;
        goto done;
    }
    for (size_t w = 0; w < map->nworkers; w++)
        link_of[w] = -2;       //  not needed (owns nothing) until seen
    for (uint32_t s = 0; s < map->num_shards; s++) {
        uint32_t w = map->owners[s];
        p->owner[s] = UINT32_MAX;
        if (w == TM_SHARDMAP_UNASSIGNED || w >= map->nworkers)
            continue;
        if (link_of[w] == -2)
            link_of[w] = s_link (self, &map->workers[w]);
        if (link_of[w] >= 0)
            p->owner[s] = (uint32_t) link_of[w];
    }
    for (size_t w = 0; w < map->nworkers; w++) {
        if (link_of[w] < 0) {
            if (link_of[w] == -1)
                s_warn (p, "no connection to worker %s", map->workers[w].id);
            continue;
        }
        size_t n = 0;
        for (uint32_t s = 0; s < map->num_shards; s++)
            if (p->owner[s] == (uint32_t) link_of[w])
                shards[n++] = s;
        Twinmesh__QueryScan scan = TWINMESH__QUERY_SCAN__INIT;
        scan.plan.data = plan;
        scan.plan.len = plan_size;
        scan.n_shards = n;
        scan.shards = shards;
        scan.epoch = map->epoch;
        size_t size = 0;
        uint8_t *body = tm_codec_pack_buf (&scan.base, &size);
        tm_header_t hdr;
        tm_header_init (&hdr, TWINMESH__MSG_TYPE__QUERY_SCAN, p->id, map->epoch);
        s_link_t *link = &self->links[link_of[w]];
        if (body && tm_msg_send (link->sock, NULL, &hdr, body, size) == 0)
            p->outstanding++;
        else
            s_warn (p, "could not send the query to worker %s", link->id);
        free (body);
    }
done:
    free (plan);
    free (link_of);
    free (shards);
}

//  A new pending query in a free slot; NULL (answered) if none or no memory.
static s_pending_t *
s_pending_new (tm_coord_t *self, const tm_msg_t *msg, int type, tm_query_t **query_p,
               int64_t deadline, size_t *slot_out)
{
    size_t slot = 0;
    while (slot < TM_COORD_MAX_PENDING && self->pending[slot])
        slot++;
    if (slot == TM_COORD_MAX_PENDING) {
        tm_query_destroy (query_p);
        s_refuse (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "too many queries in flight");
        return NULL;
    }
    s_pending_t *p = calloc (1, sizeof *p);
    if (p) {
        p->id = self->next_id++;
        p->query = *query_p;
        *query_p = NULL;
        p->merged = tm_qpartial_new (p->query);
        p->client = zframe_dup (msg->routing);
        p->client_request = msg->hdr.request_id;
        p->warnings = zlistx_new ();
        p->started_us = tm_util_mono_us ();
        p->deadline_ms = tm_util_mono_ms () + deadline;
    }
    if (!p || !p->merged || !p->client || !p->warnings) {
        tm_query_destroy (query_p);
        s_pending_destroy (&p);
        s_refuse (self, msg, type, TWINMESH__STATUS__RETRY_LATER, "out of memory");
        return NULL;
    }
    zlistx_set_destructor (p->warnings, (zlistx_destructor_fn *) zstr_free);
    self->pending[slot] = p;
    *slot_out = slot;
    return p;
}

//  Resolve the sites a query names into p->sites; 0, or -1 with why.
static int
s_resolve_sites (tm_coord_t *self, s_pending_t *p, bool *local, char *why, size_t why_size)
{
    const tm_query_t *q = p->query;
    size_t named = tm_query_all_sites (q)? self->npeers + 1: tm_query_sites (q);
    *local = !named;
    if (!named)
        return 0;
    p->sites = calloc (named, sizeof *p->sites);
    if (!p->sites) {
        snprintf (why, why_size, "out of memory");
        return -1;
    }
    if (tm_query_all_sites (q)) {
        p->sites[p->nsites++] = (s_site_t) {.name = self->site, .peer = -1};
        for (size_t i = 0; i < self->npeers; i++)
            p->sites[p->nsites++] = (s_site_t) {.name = self->peers[i].name, .peer = (int) i};
    }
    else
        for (size_t k = 0; k < named; k++) {
            const char *name = tm_query_site (q, k);
            int peer = -2;
            if (streq (name, self->site))
                peer = -1;
            for (size_t i = 0; peer == -2 && i < self->npeers; i++)
                if (streq (self->peers[i].name, name))
                    peer = (int) i;
            if (peer == -2) {
                int n = snprintf (why, why_size, "unknown site '%s' (this site is %s; peers:",
                                  name, self->site);
                for (size_t i = 0; i < self->npeers && n > 0 && (size_t) n < why_size; i++)
                    n += snprintf (why + n, why_size - (size_t) n, " %s", self->peers[i].name);
                if (n > 0 && (size_t) n < why_size)
                    snprintf (why + n, why_size - (size_t) n, "%s)", self->npeers? "": " none");
                return -1;
            }
            bool dup = false;
            for (size_t i = 0; i < p->nsites; i++)
                dup = dup || p->sites[i].peer == peer;
            if (!dup)
                p->sites[p->nsites++] = (s_site_t) {.name = name, .peer = peer};
        }
    for (size_t i = 0; i < p->nsites; i++)
        if (p->sites[i].peer < 0) {
            *local = true;
            p->sites[i].name = self->site;
        }
    //  Names from the query are borrowed from it; it lives as long as p.
    return 0;
}

static void
s_send_to_peers (tm_coord_t *self, s_pending_t *p, int64_t deadline)
{
    for (size_t i = 0; i < p->nsites; i++) {
        s_site_t *s = &p->sites[i];
        if (s->peer < 0)
            continue;
        Twinmesh__SiteQuery sq = TWINMESH__SITE_QUERY__INIT;
        sq.text = (char *) tm_query_text (p->query);
        sq.deadline_ms = (uint32_t) (deadline > 2 * S_PEER_MARGIN_MS?
                                     deadline - S_PEER_MARGIN_MS: deadline / 2);
        sq.from_site = self->site;
        size_t size = 0;
        uint8_t *body = tm_codec_pack_buf (&sq.base, &size);
        tm_header_t hdr;
        tm_header_init (&hdr, TWINMESH__MSG_TYPE__SITE_QUERY, p->id, 0);
        if (body && tm_msg_send (self->peers[s->peer].sock, NULL, &hdr, body, size) == 0)
            p->outstanding++;
        else {
            s->state = S_SITE_FAILED;
            snprintf (s->detail, sizeof s->detail, "could not send the query (site unreachable)");
        }
        free (body);
    }
}

//  Parse a request's query text and clamp its deadline; NULL (answered
//  MALFORMED with the position and what was expected) if it does not parse.
static tm_query_t *
s_parse (tm_coord_t *self, const tm_msg_t *msg, int type, const char *text, uint32_t asked_ms,
         int64_t *deadline)
{
    tm_expr_error_t err = {0};
    tm_query_t *query = tm_query_parse (text, &err);
    *deadline = asked_ms? asked_ms: self->deadline_ms;
    if (*deadline > TM_COORD_MAX_DEADLINE_MS)
        *deadline = TM_COORD_MAX_DEADLINE_MS;
    if (!query)
        s_refuse (self, msg, type, TWINMESH__STATUS__MALFORMED, err.message);
    return query;
}

void
tm_coord_query (tm_coord_t *self, const tm_shardmap_t *map, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__QUERY_RESULT;
    self->stats.queries++;
    if (msg->role != TM_ROLE_ANALYST && msg->role != TM_ROLE_OPERATOR
        && msg->role != TM_ROLE_ADMIN) {
        char detail[96];
        snprintf (detail, sizeof detail, "role %s may not query (analyst, operator or admin)",
                  tm_role_name (msg->role));
        s_refuse (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED, detail);
        return;
    }
    Twinmesh__QueryRequest *req =
        TM_UNPACK (QueryRequest, query_request, zframe_data (msg->body), zframe_size (msg->body));
    if (!req || !req->text || !*req->text) {
        tm_codec_free (&req);
        s_refuse (self, msg, type, TWINMESH__STATUS__MALFORMED, "QueryRequest needs a text");
        return;
    }
    int64_t deadline;
    tm_query_t *query = s_parse (self, msg, type, req->text, req->deadline_ms, &deadline);
    tm_codec_free (&req);
    if (!query)
        return;
    size_t slot;
    s_pending_t *p = s_pending_new (self, msg, type, &query, deadline, &slot);
    if (!p)
        return;
    bool local;
    char why[256];
    if (s_resolve_sites (self, p, &local, why, sizeof why) != 0) {
        s_pending_destroy (&self->pending[slot]);
        s_refuse (self, msg, type, TWINMESH__STATUS__MALFORMED, why);
        return;
    }
    if (local && (!map || map->epoch == 0) && p->nsites <= 1) {
        s_pending_destroy (&self->pending[slot]);
        s_refuse (self, msg, type, TWINMESH__STATUS__NOT_READY, "no shard map yet");
        return;
    }
    for (size_t i = 0; i < p->nsites; i++)
        if (p->sites[i].peer < 0) {
            p->sites[i].state = map && map->epoch > 0? S_SITE_DONE: S_SITE_FAILED;
            snprintf (p->sites[i].detail, sizeof p->sites[i].detail, "no shard map yet");
        }
    if (local && map && map->epoch > 0)
        s_scatter (self, p, map);
    s_send_to_peers (self, p, deadline);
    tm_info ("broker: query id=%llu peer=%s workers+sites=%u deadline_ms=%lld text=%s",
             (unsigned long long) p->id, msg->peer, p->outstanding, (long long) deadline,
             tm_query_text (p->query));
    if (p->outstanding == 0)
        s_finish (self, slot);
}

void
tm_coord_site_query (tm_coord_t *self, const tm_shardmap_t *map, const tm_msg_t *msg)
{
    int type = TWINMESH__MSG_TYPE__SITE_PARTIAL;
    self->stats.site_queries++;
    if (msg->role != TM_ROLE_SITE) {
        self->stats.site_refused++;
        s_refuse (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED,
                  "only a peer site's key (role site) may send SITE_QUERY");
        return;
    }
    if (self->policy.mode == TM_COORD_EXPORT_NONE) {
        self->stats.site_refused++;
        char detail[128];
        snprintf (detail, sizeof detail, "site %s exports nothing (export_policy none)",
                  self->site);
        s_refuse (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED, detail);
        return;
    }
    Twinmesh__SiteQuery *req =
        TM_UNPACK (SiteQuery, site_query, zframe_data (msg->body), zframe_size (msg->body));
    if (!req || !req->text || !*req->text) {
        tm_codec_free (&req);
        s_refuse (self, msg, type, TWINMESH__STATUS__MALFORMED, "SiteQuery needs a text");
        return;
    }
    tm_info ("broker: site query from site=%s peer=%s", req->from_site? req->from_site: "?",
             msg->peer);
    int64_t deadline;
    tm_query_t *query = s_parse (self, msg, type, req->text, req->deadline_ms, &deadline);
    tm_codec_free (&req);
    if (!query)
        return;
    if (self->policy.mode == TM_COORD_EXPORT_AGGREGATES && !tm_query_is_aggregate (query)) {
        tm_query_destroy (&query);
        self->stats.site_refused++;
        char detail[256];
        snprintf (detail, sizeof detail, "site %s exports aggregates only (groups of at least "
                  "%llu twins): ask for count, sum, avg, ... with GROUP BY", self->site,
                  (unsigned long long) self->policy.min_group);
        s_refuse (self, msg, type, TWINMESH__STATUS__UNAUTHORIZED, detail);
        return;
    }
    if (!map || map->epoch == 0) {
        tm_query_destroy (&query);
        s_refuse (self, msg, type, TWINMESH__STATUS__NOT_READY, "no shard map yet");
        return;
    }
    size_t slot;
    s_pending_t *p = s_pending_new (self, msg, type, &query, deadline, &slot);
    if (!p)
        return;
    p->for_peer = true;
    s_scatter (self, p, map);
    if (p->outstanding == 0)
        s_finish (self, slot);
}

static size_t
s_find (tm_coord_t *self, uint64_t id)
{
    for (size_t i = 0; i < TM_COORD_MAX_PENDING; i++)
        if (self->pending[i] && self->pending[i]->id == id)
            return i;
    return TM_COORD_MAX_PENDING;
}

static void
s_worker_reply (tm_coord_t *self, size_t link_index, tm_msg_t *msg)
{
    size_t slot = s_find (self, msg->hdr.request_id);
    if (slot == TM_COORD_MAX_PENDING) {
        self->stats.stale_replies++;   //  answered already (deadline) or unknown
        return;
    }
    s_pending_t *p = self->pending[slot];
    const char *wid = self->links[link_index].id;
    if (p->outstanding)
        p->outstanding--;
    if (msg->hdr.status != TWINMESH__STATUS__OK) {
        s_warn (p, "worker %s: %s %s", wid, tm_status_name (msg->hdr.status), msg->hdr.detail);
        goto check;
    }
    Twinmesh__QueryPartialReply *rep = TM_UNPACK (QueryPartialReply, query_partial_reply,
                                                   zframe_data (msg->body), zframe_size (msg->body));
    if (!rep) {
        s_warn (p, "worker %s: reply does not decode", wid);
        goto check;
    }
    //  Every shard claimed must be this worker's in our map and not yet
    //  answered: otherwise merging could count twins twice.
    bool ok = p->owner != NULL;
    for (size_t i = 0; i < rep->n_shards && ok; i++) {
        uint32_t s = rep->shards[i];
        ok = s < p->num_shards && p->owner[s] == link_index && !p->answered[s];
    }
    char err[256] = "";
    if (ok && tm_qpartial_merge (p->merged, rep->partial.data, rep->partial.len, err,
                                 sizeof err) == 0) {
        for (size_t i = 0; i < rep->n_shards; i++)
            p->answered[rep->shards[i]] = 1;
    }
    else {
        self->stats.stale_replies++;
        s_warn (p, "worker %s: answer refused (%s)", wid,
                ok? err: "it claims shards it does not own at this epoch");
    }
    tm_codec_free (&rep);
check:
    if (p->outstanding == 0)
        s_finish (self, slot);
}

static void
s_peer_reply (tm_coord_t *self, size_t peer, tm_msg_t *msg)
{
    size_t slot = s_find (self, msg->hdr.request_id);
    if (slot == TM_COORD_MAX_PENDING) {
        self->stats.stale_replies++;
        return;
    }
    s_pending_t *p = self->pending[slot];
    s_site_t *site = NULL;
    for (size_t i = 0; i < p->nsites; i++)
        if (p->sites[i].peer == (int) peer)
            site = &p->sites[i];
    if (!site || site->state != S_SITE_WAITING) {
        self->stats.stale_replies++;
        return;
    }
    if (p->outstanding)
        p->outstanding--;
    site->state = S_SITE_FAILED;
    if (msg->hdr.status != TWINMESH__STATUS__OK)
        snprintf (site->detail, sizeof site->detail, "%s: %s", tm_status_name (msg->hdr.status),
                  msg->hdr.detail);
    else {
        Twinmesh__SitePartial *sp = TM_UNPACK (SitePartial, site_partial,
                                               zframe_data (msg->body), zframe_size (msg->body));
        char err[256] = "";
        site->partial = sp? tm_qpartial_new (p->query): NULL;
        if (site->partial && tm_qpartial_merge (site->partial, sp->partial.data, sp->partial.len,
                                                err, sizeof err) == 0) {
            site->state = S_SITE_DONE;
            site->shards_total = sp->shards_total;
            site->shards_missing = sp->shards_missing;
            snprintf (site->detail, sizeof site->detail, "%s", sp->policy? sp->policy: "");
        }
        else {
            tm_qpartial_destroy (&site->partial);
            snprintf (site->detail, sizeof site->detail, "its answer was refused: %s",
                      sp? err: "does not decode");
        }
        tm_codec_free (&sp);
    }
    if (p->outstanding == 0)
        s_finish (self, slot);
}

void
tm_coord_handle (tm_coord_t *self, zsock_t *sock)
{
    size_t link = 0, peer = 0;
    while (link < self->nlinks && self->links[link].sock != sock)
        link++;
    while (peer < self->npeers && self->peers[peer].sock != sock)
        peer++;
    if (link == self->nlinks && peer == self->npeers)
        return;
    for (int n = 0; n < 256; n++) {
        if (!(zsock_events (sock) & ZMQ_POLLIN))
            break;
        tm_msg_t msg;
        int rc = tm_msg_recv (sock, false, &msg);
        if (rc == 0 && link < self->nlinks && msg.hdr.type == TWINMESH__MSG_TYPE__QUERY_PARTIAL)
            s_worker_reply (self, link, &msg);
        else
        if (rc == 0 && peer < self->npeers && msg.hdr.type == TWINMESH__MSG_TYPE__SITE_PARTIAL)
            s_peer_reply (self, peer, &msg);
        tm_msg_fini (&msg);
        if (rc < 0)
            break;
    }
}

void
tm_coord_tick (tm_coord_t *self, int64_t now_ms)
{
    for (size_t i = 0; i < TM_COORD_MAX_PENDING; i++)
        if (self->pending[i] && now_ms >= self->pending[i]->deadline_ms)
            s_finish (self, i);
}

int64_t
tm_coord_next_deadline (tm_coord_t *self)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < TM_COORD_MAX_PENDING; i++)
        if (self->pending[i] && self->pending[i]->deadline_ms < next)
            next = self->pending[i]->deadline_ms;
    return next;
}

void
tm_coord_stats (tm_coord_t *self, tm_coord_stats_t *stats)
{
    *stats = self->stats;
}
