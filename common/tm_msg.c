/*  tm_msg - twinmesh messages on ZeroMQ: [routing] Header body  */
#include "tm_msg.h"
#include "tm_log.h"

#include <string.h>

void
tm_header_init (tm_header_t *hdr, int type, uint64_t request_id, uint64_t epoch)
{
    memset (hdr, 0, sizeof *hdr);
    hdr->version = TM_PROTOCOL_VERSION;
    hdr->type = type;
    hdr->request_id = request_id;
    hdr->epoch = epoch;
}

zframe_t *
tm_header_encode (const tm_header_t *hdr)
{
    Twinmesh__Header h = TWINMESH__HEADER__INIT;
    h.version = hdr->version;
    h.type = (Twinmesh__MsgType) hdr->type;
    h.seq = hdr->seq;
    h.request_id = hdr->request_id;
    h.epoch = hdr->epoch;
    h.status = (Twinmesh__Status) hdr->status;
    h.detail = (char *) hdr->detail;
    return tm_codec_pack (&h.base);
}

int
tm_header_decode (const uint8_t *data, size_t size, tm_header_t *hdr)
{
    memset (hdr, 0, sizeof *hdr);
    if (!data || size == 0 || size > 1024)
        return TM_MSG_E_MALFORMED;
    Twinmesh__Header *h = TM_UNPACK (Header, header, data, size);
    if (!h)
        return TM_MSG_E_MALFORMED;
    hdr->version = h->version;
    hdr->type = (int) h->type;
    hdr->seq = h->seq;
    hdr->request_id = h->request_id;
    hdr->epoch = h->epoch;
    hdr->status = (int) h->status;
    if (h->detail)
        snprintf (hdr->detail, sizeof hdr->detail, "%s", h->detail);
    tm_codec_free (&h);
    if (hdr->version != TM_PROTOCOL_VERSION)
        return TM_MSG_E_VERSION;
    return 0;
}

int
tm_msg_recv (zsock_t *sock, bool router, tm_msg_t *msg)
{
    memset (msg, 0, sizeof *msg);
    zmsg_t *zm = zmsg_recv (sock);
    if (!zm)
        return -1;
    if (router)
        msg->routing = zmsg_pop (zm);
    zframe_t *head = zmsg_pop (zm);
    msg->body = zmsg_pop (zm);
    int rc = 0;
    if (head)
        msg->role = tm_auth_frame_role (head, msg->peer, sizeof msg->peer);
    //  Exactly [routing] header body: a missing body frame is as malformed
    //  as an extra one (an empty body is an empty frame).
    if (!head || !msg->body || zmsg_size (zm) != 0 || (router && !msg->routing))
        rc = TM_MSG_E_MALFORMED;
    else
        rc = tm_header_decode (zframe_data (head), zframe_size (head), &msg->hdr);
    if (!msg->body)
        msg->body = zframe_new_empty ();
    zframe_destroy (&head);
    zmsg_destroy (&zm);
    return rc;
}

void
tm_msg_fini (tm_msg_t *msg)
{
    zframe_destroy (&msg->routing);
    zframe_destroy (&msg->body);
}

int
tm_msg_send_frame (zsock_t *sock, zframe_t *routing, const tm_header_t *hdr, zframe_t **body_p)
{
    zframe_t *head = tm_header_encode (hdr);
    zframe_t *body = body_p && *body_p? *body_p: zframe_new_empty ();
    if (body_p)
        *body_p = NULL;
    if (!head || !body) {
        zframe_destroy (&head);
        zframe_destroy (&body);
        return -1;
    }
    //  A reply from a ROUTER never waits: with ROUTER_MANDATORY a peer whose
    //  queue is full would otherwise block the whole server. The reply is
    //  lost to that peer only, which is what it asked for by not reading;
    //  the caller counts the failure. Once the first frame is queued,
    //  ZeroMQ takes the rest of a multipart message atomically.
    int more = routing? ZFRAME_MORE | ZFRAME_DONTWAIT: ZFRAME_MORE;
    int rc = 0;
    if (routing) {
        zframe_t *r = zframe_dup (routing);
        if (!r || zframe_send (&r, sock, more) != 0) {
            zframe_destroy (&r);
            rc = -1;
        }
    }
    if (rc == 0 && zframe_send (&head, sock, ZFRAME_MORE) != 0)
        rc = -1;
    if (rc == 0 && zframe_send (&body, sock, 0) != 0)
        rc = -1;
    zframe_destroy (&head);
    zframe_destroy (&body);
    return rc;
}

int
tm_msg_send (zsock_t *sock, zframe_t *routing, const tm_header_t *hdr, const void *body,
             size_t body_size)
{
    zframe_t *frame = zframe_new (body, body_size);
    if (!frame)
        return -1;
    return tm_msg_send_frame (sock, routing, hdr, &frame);
}

int
tm_msg_reply (zsock_t *sock, const tm_msg_t *req, int type, int status, uint64_t epoch,
              const char *detail, const void *body, size_t body_size)
{
    tm_header_t hdr;
    tm_header_init (&hdr, type, req->hdr.request_id, epoch);
    hdr.status = status;
    if (detail)
        snprintf (hdr.detail, sizeof hdr.detail, "%s", detail);
    return tm_msg_send (sock, req->routing, &hdr, body, body_size);
}

const char *
tm_msg_type_name (int type)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value (&twinmesh__msg_type__descriptor, type);
    return v? v->name: "UNKNOWN";
}

const char *
tm_status_name (int status)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value (&twinmesh__status__descriptor, status);
    return v? v->name: "UNKNOWN";
}
