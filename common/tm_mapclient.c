/*  tm_mapclient - follow the broker's shard map  */
#include "tm_mapclient.h"
#include "tm_log.h"
#include "tm_msg.h"
#include "tm_net.h"
#include "tm_util.h"

#include <string.h>

struct _tm_mapclient_t {
    zsock_t *req;                  //  DEALER to the broker's ROUTER
    zsock_t *sub;                  //  SUB to the broker's PUB, or NULL
    tm_shardmap_t *map;            //  Newest map seen, or NULL
    uint64_t next_request_id;      //  For MAP_GET and HELLO
    int64_t last_request_ms;       //  Rate limit for tm_mapclient_request
    int64_t last_reply_ms;         //  When the broker last answered
    uint64_t seq;                  //  Our per-peer message counter
};

tm_mapclient_t *
tm_mapclient_new (const char *endpoint, const char *pub_endpoint,
                  const char *broker_public_z85, zcert_t *cert)
{
    tm_mapclient_t *self = (tm_mapclient_t *) zmalloc (sizeof *self);
    self->req = tm_net_client (ZMQ_DEALER, endpoint, cert, broker_public_z85);
    if (pub_endpoint && *pub_endpoint) {
        self->sub = tm_net_client (ZMQ_SUB, pub_endpoint, cert, broker_public_z85);
        if (self->sub)
            zsock_set_subscribe (self->sub, "MAP");
    }
    if (!self->req || (pub_endpoint && *pub_endpoint && !self->sub)) {
        tm_mapclient_destroy (&self);
        return NULL;
    }
    self->next_request_id = 1;
    return self;
}

void
tm_mapclient_destroy (tm_mapclient_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_mapclient_t *self = *self_p;
    zsock_destroy (&self->req);
    zsock_destroy (&self->sub);
    tm_shardmap_destroy (&self->map);
    free (self);
    *self_p = NULL;
}

zsock_t *
tm_mapclient_req_sock (tm_mapclient_t *self)
{
    return self->req;
}

zsock_t *
tm_mapclient_sub_sock (tm_mapclient_t *self)
{
    return self->sub;
}

//  Install a map if it is newer than ours; takes ownership of *map_p.
static int
s_install (tm_mapclient_t *self, tm_shardmap_t **map_p)
{
    tm_shardmap_t *map = *map_p;
    *map_p = NULL;
    if (self->map && map->epoch <= self->map->epoch) {
        tm_shardmap_destroy (&map);
        return 0;
    }
    if (self->map && (map->num_shards != self->map->num_shards
                      || memcmp (map->key, self->map->key, TM_SHARDMAP_KEY_BYTES) != 0))
        tm_warn ("mapclient: cluster shape changed epoch=%llu num_shards=%u",
                 (unsigned long long) map->epoch, map->num_shards);
    tm_info ("mapclient: installed shard map epoch=%llu workers=%zu",
             (unsigned long long) map->epoch, map->nworkers);
    tm_shardmap_destroy (&self->map);
    self->map = map;
    return 1;
}

int
tm_mapclient_handle (tm_mapclient_t *self, zsock_t *which)
{
    if (which == self->req) {
        tm_msg_t msg;
        int rc = tm_msg_recv (self->req, false, &msg);
        int changed = 0;
        if (rc == 0) {
            self->last_reply_ms = tm_util_mono_ms ();
            if (msg.hdr.type == TWINMESH__MSG_TYPE__MAP && msg.hdr.status == TWINMESH__STATUS__OK
                && zframe_size (msg.body) > 0) {
                tm_shardmap_t *map = tm_shardmap_decode (zframe_data (msg.body),
                                                         zframe_size (msg.body));
                if (map)
                    changed = s_install (self, &map);
                else
                    tm_warn ("mapclient: broker sent an invalid shard map");
            }
            else
            if (msg.hdr.status != TWINMESH__STATUS__OK)
                tm_warn ("mapclient: broker refused type=%s status=%s detail=%s",
                         tm_msg_type_name (msg.hdr.type), tm_status_name (msg.hdr.status),
                         msg.hdr.detail);
        }
        else
        if (rc > 0)
            tm_warn ("mapclient: malformed reply from broker");
        tm_msg_fini (&msg);
        return changed;
    }
    if (self->sub && which == self->sub) {
        zmsg_t *zm = zmsg_recv (self->sub);
        int changed = 0;
        if (zm && zmsg_size (zm) == 3) {
            zframe_t *topic = zmsg_pop (zm);
            zframe_t *head = zmsg_pop (zm);
            zframe_t *body = zmsg_pop (zm);
            tm_header_t hdr;
            if (tm_header_decode (zframe_data (head), zframe_size (head), &hdr) == 0
                && hdr.type == TWINMESH__MSG_TYPE__MAP) {
                tm_shardmap_t *map = tm_shardmap_decode (zframe_data (body), zframe_size (body));
                if (map)
                    changed = s_install (self, &map);
            }
            zframe_destroy (&topic);
            zframe_destroy (&head);
            zframe_destroy (&body);
        }
        zmsg_destroy (&zm);
        return changed;
    }
    return -1;
}

static void
s_send (tm_mapclient_t *self, int type, const void *body, size_t size)
{
    tm_header_t hdr;
    tm_header_init (&hdr, type, self->next_request_id++, tm_mapclient_epoch (self));
    hdr.seq = ++self->seq;
    //  DEALER blocks rather than drops when the HWM is hit; the broker
    //  being gone must not stall the data plane, so send without waiting.
    zframe_t *frame = zframe_new (body, size);
    zframe_t *head = tm_header_encode (&hdr);
    if (!frame || !head) {
        zframe_destroy (&frame);
        zframe_destroy (&head);
        return;
    }
    if (zframe_send (&head, self->req, ZFRAME_MORE | ZFRAME_DONTWAIT) != 0) {
        zframe_destroy (&head);
        zframe_destroy (&frame);
        return;
    }
    if (zframe_send (&frame, self->req, ZFRAME_DONTWAIT) != 0)
        zframe_destroy (&frame);
}

void
tm_mapclient_request (tm_mapclient_t *self)
{
    int64_t now = tm_util_mono_ms ();
    if (now - self->last_request_ms < 100)
        return;
    self->last_request_ms = now;
    s_send (self, TWINMESH__MSG_TYPE__MAP_GET, NULL, 0);
}

void
tm_mapclient_tick (tm_mapclient_t *self, const Twinmesh__NodeInfo *hello)
{
    if (hello) {
        size_t size;
        uint8_t *buf = tm_codec_pack_buf (&hello->base, &size);
        if (buf)
            s_send (self, TWINMESH__MSG_TYPE__HELLO, buf, size);
        free (buf);
    }
    self->last_request_ms = tm_util_mono_ms ();
    s_send (self, TWINMESH__MSG_TYPE__MAP_GET, NULL, 0);
}

const tm_shardmap_t *
tm_mapclient_fetch (tm_mapclient_t *self, int timeout_ms)
{
    int64_t deadline = tm_util_mono_ms () + timeout_ms;
    int64_t next_ask = 0;
    while (!self->map || self->map->epoch == 0) {
        int64_t now = tm_util_mono_ms ();
        if (now >= deadline)
            return NULL;
        if (now >= next_ask) {
            tm_mapclient_tick (self, NULL);
            next_ask = now + 500;
        }
        zmq_pollitem_t item = {zsock_resolve (self->req), 0, ZMQ_POLLIN, 0};
        long wait = deadline - now < 100? (long) (deadline - now): 100;
        if (zmq_poll (&item, 1, wait) < 0)
            return NULL;       //  interrupted
        if (item.revents & ZMQ_POLLIN)
            tm_mapclient_handle (self, self->req);
    }
    return self->map;
}

int
tm_mapclient_install (tm_mapclient_t *self, tm_shardmap_t **map_p)
{
    return s_install (self, map_p);
}

const tm_shardmap_t *
tm_mapclient_map (tm_mapclient_t *self)
{
    return self->map;
}

uint64_t
tm_mapclient_epoch (tm_mapclient_t *self)
{
    return self->map? self->map->epoch: 0;
}

int64_t
tm_mapclient_last_reply_ms (tm_mapclient_t *self)
{
    return self->last_reply_ms;
}
