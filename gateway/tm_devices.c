/*  tm_devices - the gateway's relay of delta events to devices  */
#include "tm_devices.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_net.h"

#include <string.h>

#define S_BURST 256                    //  Messages relayed per call, per direction
#define S_TOPIC_MAX 256                //  Bytes of a subscription echoed in its event

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
