/*  tm_devices - the gateway's relay of delta events to devices  */
#include "tm_devices.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_net.h"

#include <string.h>

#define S_BURST 256                    //  Messages relayed per call, per direction
#define S_TOPIC_MAX 256                //  Bytes of a subscription echoed in its event

#define S_PENDING_MAX 64               //  Snapshots in flight through this gateway
#define S_PARTS_MAX 64                 //  Owners one snapshot asks at most
#define S_ENTITIES_MAX 1024            //  Entities in one DELTAS_GET (the worker's limit)

//  A device's snapshot waiting for its owners' answers.
typedef struct {
    bool used;                     //  Waiting
    uint32_t gen;                  //  Bumped when freed, so late answers miss
    zframe_t *routing;             //  The device, owned
    uint64_t request_id;           //  The device's request id
    int64_t deadline_ms;           //  Answered RETRY_LATER if not complete by then
    uint32_t open;                 //  Owners not answered yet
    Twinmesh__DeltaList *parts[S_PARTS_MAX];  //  Their answers, owned
    size_t nparts;                 //  Entries in parts
    int status;                    //  OK, or the first failure of an owner
    char detail[160];              //  Its reason
} s_pending_t;

typedef struct {
    char *endpoint;                //  Where we are connected to its events
    char *public_key;              //  With this key
} s_upstream_t;

struct _tm_devices_t {
    char *id;                      //  Our node id, in "subscribed" events
    zsock_t *xpub;                 //  Devices subscribe here (ingest, operator, admin)
    zsock_t *sub;                  //  Connected to every worker's events, subscribed to all
    char *endpoint;                //  XPUB endpoint for EVENTS_INFO
    char *public_key;              //  Our key
    zhashx_t *upstream;            //  worker id -> s_upstream_t
    uint64_t seq;                  //  Events we originated ("subscribed")
    uint64_t relayed;
    uint64_t subscriptions;
    s_pending_t pending[S_PENDING_MAX];   //  Snapshots in flight
};

static void
s_upstream_destructor (void **item)
{
    s_upstream_t *u = (s_upstream_t *) *item;
    if (u) {
        free (u->endpoint);
        free (u->public_key);
        free (u);
    }
    *item = NULL;
}

tm_devices_t *
tm_devices_new (const char *gateway_id, const char *bind, const char *advertise, zcert_t *cert)
{
    tm_devices_t *self = (tm_devices_t *) zmalloc (sizeof *self);
    self->id = strdup (gateway_id? gateway_id: "");
    self->upstream = zhashx_new ();
    if (self->upstream)
        zhashx_set_destructor (self->upstream, s_upstream_destructor);
    self->xpub = tm_net_server_roles (ZMQ_XPUB, bind && *bind? bind: "tcp://127.0.0.1:*", cert,
                                      65536, "ingest,operator,admin");
    self->sub = tm_net_client_new (ZMQ_SUB, cert);
    if (!self->id || !self->upstream || !self->xpub || !self->sub) {
        tm_devices_destroy (&self);
        return NULL;
    }
    //  Every subscription reaches us, not only the first of a topic, so
    //  each device gets its own "subscribed" event.
    zsock_set_xpub_verbose (self->xpub, 1);
    zsock_set_subscribe (self->sub, "");
    self->endpoint = advertise && *advertise? strdup (advertise): tm_net_bound_endpoint (self->xpub);
    self->public_key = strdup (zcert_public_txt (cert));
    tm_info ("gateway: device events endpoint=%s", self->endpoint? self->endpoint: "?");
    return self;
}

void
tm_devices_destroy (tm_devices_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_devices_t *self = *self_p;
    if (self->xpub)
        tm_info ("gateway: device events relayed=%llu subscriptions=%llu workers_followed=%zu",
                 (unsigned long long) self->relayed, (unsigned long long) self->subscriptions,
                 self->upstream? zhashx_size (self->upstream): 0);
    for (size_t i = 0; i < S_PENDING_MAX; i++) {
        zframe_destroy (&self->pending[i].routing);
        for (size_t k = 0; k < self->pending[i].nparts; k++)
            tm_codec_free (&self->pending[i].parts[k]);
    }
    zsock_destroy (&self->xpub);
    zsock_destroy (&self->sub);
    zhashx_destroy (&self->upstream);
    free (self->id);
    free (self->endpoint);
    free (self->public_key);
    free (self);
    *self_p = NULL;
}

zsock_t *
tm_devices_xpub (tm_devices_t *self)
{
    return self->xpub;
}

zsock_t *
tm_devices_sub (tm_devices_t *self)
{
    return self->sub;
}

uint64_t
tm_devices_relayed (tm_devices_t *self)
{
    return self->relayed;
}

uint64_t
tm_devices_subscriptions (tm_devices_t *self)
{
    return self->subscriptions;
}

//  Tell the subscribers of topic that the subscription is live.
static void
s_subscribed (tm_devices_t *self, const uint8_t *topic, size_t size)
{
    char text[S_TOPIC_MAX + 1];
    size_t n = size < S_TOPIC_MAX? size: S_TOPIC_MAX;
    memcpy (text, topic, n);
    text[n] = 0;
    //  The entity is the topic up to its NUL (a prefix has none).
    Twinmesh__DeltaEvent ev = TWINMESH__DELTA_EVENT__INIT;
    ev.entity = text;
    ev.kind = (char *) "subscribed";
    ev.worker = self->id;
    ev.topic = text;
    size_t bsize;
    uint8_t *body = tm_codec_pack_buf (&ev.base, &bsize);
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__DELTA_EVENT, 0, 0);
    hdr.seq = ++self->seq;
    zframe_t *header = body? tm_header_encode (&hdr): NULL;
    zframe_t *tf = zframe_new (topic, size);
    zframe_t *bf = body? zframe_new (body, bsize): NULL;
    if (header && tf && bf) {
        zframe_send (&tf, self->xpub, ZFRAME_MORE);
        zframe_send (&header, self->xpub, ZFRAME_MORE);
        zframe_send (&bf, self->xpub, 0);
    }
    zframe_destroy (&tf);
    zframe_destroy (&header);
    zframe_destroy (&bf);
    free (body);
}

void
tm_devices_handle (tm_devices_t *self)
{
    for (int i = 0; i < S_BURST && (zsock_events (self->sub) & ZMQ_POLLIN); i++) {
        zmsg_t *msg = zmsg_recv (self->sub);
        if (!msg)
            break;
        //  Relayed as they came: the frames are the worker's, topic first.
        //  XPUB drops for a device that does not keep up; it recovers with
        //  a snapshot (docs/commands.md).
        if (zmsg_size (msg) >= 3) {
            self->relayed++;
            zmsg_send (&msg, self->xpub);
        }
        zmsg_destroy (&msg);
    }
    for (int i = 0; i < S_BURST && (zsock_events (self->xpub) & ZMQ_POLLIN); i++) {
        zframe_t *f = zframe_recv (self->xpub);
        if (!f)
            break;
        //  Subscriptions only (1 + topic); unsubscriptions (0 + topic)
        //  need nothing: upstream stays subscribed to everything.
        if (zframe_size (f) >= 1 && zframe_data (f)[0] == 1) {
            self->subscriptions++;
            s_subscribed (self, zframe_data (f) + 1, zframe_size (f) - 1);
        }
        zframe_destroy (&f);
    }
}

void
tm_devices_ask (tm_devices_t *self, zsock_t *worker_sock)
{
    (void) self;
    if (!worker_sock)
        return;
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__EVENTS_INFO, 0, 0);
    //  Never blocks: a DEALER to a worker that is down queues up to its
    //  high-water mark, and one more question a second is nothing.
    tm_msg_send (worker_sock, NULL, &hdr, NULL, 0);
}

void
tm_devices_worker_info (tm_devices_t *self, const char *worker_id, const char *public_key,
                        const tm_msg_t *reply)
{
    if (reply->hdr.status != TWINMESH__STATUS__OK)
        return;
    Twinmesh__EventsInfo *info =
        TM_UNPACK (EventsInfo, events_info, zframe_data (reply->body), zframe_size (reply->body));
    if (!info || !info->endpoint || !*info->endpoint || strlen (info->endpoint) > 256) {
        tm_warn ("gateway: worker sent an EventsInfo that does not decode worker=%s", worker_id);
        tm_codec_free (&info);
        return;
    }
    s_upstream_t *u = (s_upstream_t *) zhashx_lookup (self->upstream, worker_id);
    if (u && strcmp (u->endpoint, info->endpoint) == 0 && strcmp (u->public_key, public_key) == 0) {
        tm_codec_free (&info);
        return;
    }
    if (u) {
        zsock_disconnect (self->sub, "%s", u->endpoint);
        zhashx_delete (self->upstream, worker_id);
    }
    if (tm_net_client_connect (self->sub, info->endpoint, public_key) == 0) {
        s_upstream_t *nu = (s_upstream_t *) calloc (1, sizeof *nu);
        if (nu) {
            nu->endpoint = strdup (info->endpoint);
            nu->public_key = strdup (public_key);
            zhashx_insert (self->upstream, worker_id, nu);
        }
        tm_info ("gateway: following delta events worker=%s endpoint=%s", worker_id,
                 info->endpoint);
    }
    tm_codec_free (&info);
}

void
tm_devices_answer (tm_devices_t *self, zsock_t *router, const tm_msg_t *msg)
{
    Twinmesh__EventsInfo info = TWINMESH__EVENTS_INFO__INIT;
    info.endpoint = self->endpoint? self->endpoint: (char *) "";
    info.public_key = self->public_key? self->public_key: (char *) "";
    size_t size;
    uint8_t *buf = tm_codec_pack_buf (&info.base, &size);
    tm_msg_reply (router, msg, TWINMESH__MSG_TYPE__EVENTS_INFO_REPLY,
                  buf? TWINMESH__STATUS__OK: TWINMESH__STATUS__RETRY_LATER, 0, NULL, buf,
                  buf? size: 0);
    free (buf);
}

//  -------------------------------------------------------------------------
//  Snapshots through the gateway

static void
s_reply_to (zsock_t *router, zframe_t *routing, uint64_t request_id, int status,
            const char *detail, const void *body, size_t size)
{
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__DELTAS, request_id, 0);
    hdr.status = status;
    if (detail)
        snprintf (hdr.detail, sizeof hdr.detail, "%s", detail);
    //  A device that left is not an error worth more than a debug line.
    if (tm_msg_send (router, routing, &hdr, body, size) != 0)
        tm_debug ("gateway: a device left before its snapshot");
}

static void
s_pending_free (s_pending_t *p)
{
    zframe_destroy (&p->routing);
    for (size_t k = 0; k < p->nparts; k++)
        tm_codec_free (&p->parts[k]);
    p->nparts = 0;
    p->used = false;
    p->gen++;
}

//  Every owner answered (or one failed): merge and answer the device.
static void
s_pending_finish (tm_devices_t *self, zsock_t *router, s_pending_t *p)
{
    if (p->status != TWINMESH__STATUS__OK) {
        s_reply_to (router, p->routing, p->request_id, p->status, p->detail, NULL, 0);
        s_pending_free (p);
        return;
    }
    size_t ntwins = 0, nnot = 0;
    for (size_t k = 0; k < p->nparts; k++) {
        ntwins += p->parts[k]->n_twins;
        nnot += p->parts[k]->n_not_owned;
    }
    Twinmesh__TwinDeltas **twins = calloc (ntwins + 1, sizeof *twins);
    char **not_owned = calloc (nnot + 1, sizeof *not_owned);
    Twinmesh__DeltaList list = TWINMESH__DELTA_LIST__INIT;
    for (size_t k = 0; twins && not_owned && k < p->nparts; k++) {
        Twinmesh__DeltaList *part = p->parts[k];
        for (size_t i = 0; i < part->n_twins; i++) {
            //  Each twin keeps its owner's clock (workers' clocks differ).
            if (!part->twins[i]->as_of)
                part->twins[i]->as_of = part->as_of;
            twins[list.n_twins++] = part->twins[i];
        }
        for (size_t i = 0; i < part->n_not_owned; i++)
            not_owned[list.n_not_owned++] = part->not_owned[i];
    }
    list.twins = twins;
    list.not_owned = not_owned;
    list.worker = self->id;
    size_t size = 0;
    uint8_t *body = twins && not_owned? tm_codec_pack_buf (&list.base, &size): NULL;
    if (body)
        s_reply_to (router, p->routing, p->request_id, TWINMESH__STATUS__OK, NULL, body, size);
    else
        s_reply_to (router, p->routing, p->request_id, TWINMESH__STATUS__RETRY_LATER,
                    "out of memory", NULL, 0);
    free (body);
    free (twins);
    free (not_owned);
    s_pending_free (p);
}

void
tm_devices_deltas_get (tm_devices_t *self, zsock_t *router, const tm_msg_t *msg,
                       tm_devices_owner_fn *owner, void *arg, uint64_t epoch, int64_t now_ms,
                       int64_t timeout_ms)
{
    uint64_t rid = msg->hdr.request_id;
    if (!tm_role_may_read (msg->role) && msg->role != TM_ROLE_INGEST) {
        s_reply_to (router, msg->routing, rid, TWINMESH__STATUS__UNAUTHORIZED,
                    "this key's role may not read deltas", NULL, 0);
        return;
    }
    Twinmesh__DeltasGet *req =
        TM_UNPACK (DeltasGet, deltas_get, zframe_data (msg->body), zframe_size (msg->body));
    if (!req || req->n_entities == 0 || req->n_entities > S_ENTITIES_MAX) {
        tm_codec_free (&req);
        s_reply_to (router, msg->routing, rid, TWINMESH__STATUS__MALFORMED,
                    "DeltasGet needs 1-1024 entities", NULL, 0);
        return;
    }
    size_t pi = 0;
    while (pi < S_PENDING_MAX && self->pending[pi].used)
        pi++;
    //  Group the entities by owner: at most S_PARTS_MAX owners.
    zsock_t *socks[S_PARTS_MAX];
    uint32_t slots[S_PARTS_MAX];
    size_t nowners = 0;
    uint16_t *which = calloc (req->n_entities, sizeof *which);
    const char *refusal = pi == S_PENDING_MAX? "too many snapshots in flight": !which?
                          "out of memory": NULL;
    for (size_t i = 0; !refusal && i < req->n_entities; i++) {
        const char *e = req->entities[i];
        uint32_t slot;
        zsock_t *sock = e && *e? owner (arg, e, strlen (e), &slot): NULL;
        if (!sock) {
            refusal = "no owner for a twin's shard (no map yet, or the map is changing)";
            break;
        }
        size_t k = 0;
        while (k < nowners && slots[k] != slot)
            k++;
        if (k == nowners) {
            if (nowners == S_PARTS_MAX) {
                refusal = "too many owners in one request";
                break;
            }
            slots[nowners] = slot;
            socks[nowners++] = sock;
        }
        which[i] = (uint16_t) k;
    }
    if (refusal) {
        s_reply_to (router, msg->routing, rid, TWINMESH__STATUS__RETRY_LATER, refusal, NULL, 0);
        free (which);
        tm_codec_free (&req);
        return;
    }
    s_pending_t *p = &self->pending[pi];
    p->used = true;
    p->routing = zframe_dup (msg->routing);
    p->request_id = rid;
    p->deadline_ms = now_ms + timeout_ms;
    p->status = TWINMESH__STATUS__OK;
    p->detail[0] = 0;
    p->open = (uint32_t) nowners;
    char **names = calloc (req->n_entities, sizeof *names);
    for (size_t k = 0; k < nowners; k++) {
        Twinmesh__DeltasGet part = TWINMESH__DELTAS_GET__INIT;
        part.entities = names;
        for (size_t i = 0; names && i < req->n_entities; i++)
            if (which[i] == k)
                names[part.n_entities++] = req->entities[i];
        size_t size = 0;
        uint8_t *body = names? tm_codec_pack_buf (&part.base, &size): NULL;
        tm_header_t hdr;
        //  Our request id: the pending slot and its generation.
        tm_header_init (&hdr, TWINMESH__MSG_TYPE__DELTAS_GET, (uint64_t) p->gen << 16 | pi,
                        epoch);
        if (!body || tm_msg_send (socks[k], NULL, &hdr, body, size) != 0) {
            p->status = TWINMESH__STATUS__RETRY_LATER;
            snprintf (p->detail, sizeof p->detail, "could not ask a twin's owner");
            p->open--;
        }
        free (body);
    }
    free (names);
    free (which);
    tm_codec_free (&req);
    if (p->open == 0)
        s_pending_finish (self, router, p);
}

void
tm_devices_deltas_reply (tm_devices_t *self, zsock_t *router, const tm_msg_t *reply)
{
    uint64_t id = reply->hdr.request_id;
    size_t pi = (size_t) (id & 0xffff);
    if (pi >= S_PENDING_MAX || !self->pending[pi].used
        || self->pending[pi].gen != (uint32_t) (id >> 16)) {
        tm_debug ("gateway: a snapshot answer for a request already answered");
        return;
    }
    s_pending_t *p = &self->pending[pi];
    Twinmesh__DeltaList *list = reply->hdr.status == TWINMESH__STATUS__OK?
        TM_UNPACK (DeltaList, delta_list, zframe_data (reply->body), zframe_size (reply->body)):
        NULL;
    if (!list && p->status == TWINMESH__STATUS__OK) {
        //  A worker behind or ahead on the map, or in trouble: the device
        //  asks again, as a producer does.
        p->status = TWINMESH__STATUS__RETRY_LATER;
        snprintf (p->detail, sizeof p->detail, "a twin's owner answered %s: %.100s",
                  tm_status_name (reply->hdr.status), reply->hdr.detail);
    }
    if (list && p->nparts < S_PARTS_MAX)
        p->parts[p->nparts++] = list;
    else
        tm_codec_free (&list);
    if (p->open > 0 && --p->open == 0)
        s_pending_finish (self, router, p);
}

void
tm_devices_expire (tm_devices_t *self, zsock_t *router, int64_t now_ms)
{
    for (size_t i = 0; i < S_PENDING_MAX; i++) {
        s_pending_t *p = &self->pending[i];
        if (p->used && now_ms >= p->deadline_ms) {
            p->status = TWINMESH__STATUS__RETRY_LATER;
            snprintf (p->detail, sizeof p->detail, "a twin's owner did not answer in time");
            s_pending_finish (self, router, p);
        }
    }
}
