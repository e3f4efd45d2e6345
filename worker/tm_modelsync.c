/*  tm_modelsync - bring the broker's models to a worker  */
#include "tm_modelsync.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_msg.h"
#include "tm_net.h"

#include <string.h>

struct _tm_modelsync_t {
    zsock_t *req;                  //  DEALER to the broker's ROUTER
    tm_models_t *models;           //  Models received; owned
    uint64_t next_request_id;      //  Ids of our requests, from 1
    uint64_t seq;                  //  Header seq, per peer
    uint64_t first_id;             //  First id of the outstanding exchange
    uint64_t last_id;              //  Last id of the outstanding exchange
    size_t npending;               //  Replies still expected; 0: idle
    int64_t sent_ms;               //  Monotonic time the outstanding exchange began
    uint64_t list_gen;             //  Generation of the list being fetched
    bool failed;                   //  A MODEL_GET of this exchange did not install
    uint64_t have_gen;             //  Generation whose models we hold
    bool have_any;                 //  have_gen is meaningful
};

tm_modelsync_t *
tm_modelsync_new (const char *endpoint, const char *broker_public_z85, zcert_t *cert)
{
    tm_modelsync_t *self = (tm_modelsync_t *) zmalloc (sizeof *self);
    self->next_request_id = 1;
    self->models = tm_models_new ();
    self->req = tm_net_client (ZMQ_DEALER, endpoint, cert, broker_public_z85);
    if (!self->models || !self->req) {
        tm_modelsync_destroy (&self);
        return NULL;
    }
    return self;
}

void
tm_modelsync_destroy (tm_modelsync_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_modelsync_t *self = *self_p;
    zsock_destroy (&self->req);
    tm_models_destroy (&self->models);
    free (self);
    *self_p = NULL;
}

zsock_t *
tm_modelsync_sock (tm_modelsync_t *self)
{
    return self->req;
}

tm_models_t *
tm_modelsync_models (tm_modelsync_t *self)
{
    return self->models;
}

//  Send one request without waiting: a broker that is away must not stall
//  the worker's loop. Returns its request id, or 0 if it was not sent.
static uint64_t
s_send (tm_modelsync_t *self, int type, const void *body, size_t size)
{
    tm_header_t hdr;
    uint64_t id = self->next_request_id++;
    tm_header_init (&hdr, type, id, 0);
    hdr.seq = ++self->seq;
    zframe_t *head = tm_header_encode (&hdr);
    zframe_t *frame = zframe_new (body, size);
    if (!head || !frame) {
        zframe_destroy (&head);
        zframe_destroy (&frame);
        return 0;
    }
    if (zframe_send (&head, self->req, ZFRAME_MORE | ZFRAME_DONTWAIT) != 0) {
        zframe_destroy (&head);
        zframe_destroy (&frame);
        return 0;
    }
    if (zframe_send (&frame, self->req, ZFRAME_DONTWAIT) != 0) {
        zframe_destroy (&frame);
        return 0;
    }
    return id;
}

void
tm_modelsync_tick (tm_modelsync_t *self, int64_t now_ms)
{
    if (self->npending && now_ms - self->sent_ms < TM_MODELSYNC_TIMEOUT_MS)
        return;
    if (self->npending)
        tm_debug ("modelsync: no reply from the broker within %d ms; asking again",
                  TM_MODELSYNC_TIMEOUT_MS);
    self->npending = 0;            //  late replies to it are now ignored
    uint64_t id = s_send (self, TWINMESH__MSG_TYPE__MODEL_LIST, NULL, 0);
    if (!id)
        return;
    self->first_id = self->last_id = id;
    self->npending = 1;
    self->sent_ms = now_ms;
}

//  A name from the wire we are willing to ask for: the model grammar's
//  length (tm_model_parse checks the rest when the text comes).
static bool
s_name_ok (const char *name)
{
    size_t len = name? strnlen (name, TM_MODEL_NAME_MAX + 1): 0;
    return len > 0 && len <= TM_MODEL_NAME_MAX;
}

static void
s_on_list (tm_modelsync_t *self, const tm_msg_t *msg)
{
    Twinmesh__ModelList *list =
        TM_UNPACK (ModelList, model_list, zframe_data (msg->body), zframe_size (msg->body));
    if (!list) {
        tm_warn ("modelsync: the broker's model list does not decode");
        return;
    }
    if (!(self->have_any && list->generation == self->have_gen)) {
        self->list_gen = list->generation;
        self->failed = false;
        size_t sent = 0;
        uint64_t first = 0, last = 0;
        for (size_t i = 0; i < list->n_models; i++) {
            const Twinmesh__ModelInfo *info = list->models[i];
            if (!info || !s_name_ok (info->name))
                continue;
            const tm_model_t *held = tm_models_find (self->models, info->name,
                                                     strlen (info->name));
            if (held && held->version >= info->version)
                continue;
            Twinmesh__ModelGet get = TWINMESH__MODEL_GET__INIT;
            get.name = info->name;
            size_t size = 0;
            uint8_t *body = tm_codec_pack_buf (&get.base, &size);
            uint64_t id = body? s_send (self, TWINMESH__MSG_TYPE__MODEL_GET, body, size): 0;
            free (body);
            if (!id) {
                self->failed = true;
                continue;
            }
            if (!sent)
                first = id;
            last = id;
            sent++;
        }
        if (sent) {
            self->first_id = first;
            self->last_id = last;
            self->npending = sent;     //  sent_ms stays: the exchange's clock
        }
        else
        if (!self->failed) {
            self->have_gen = self->list_gen;
            self->have_any = true;
        }
    }
    tm_codec_free (&list);
}

//  One MODEL reply: 1 if it installed a model.
static int
s_on_model (tm_modelsync_t *self, const tm_msg_t *msg)
{
    Twinmesh__ModelText *text =
        TM_UNPACK (ModelText, model_text, zframe_data (msg->body), zframe_size (msg->body));
    if (!text) {
        tm_warn ("modelsync: the broker's model text does not decode");
        self->failed = true;
        return 0;
    }
    char err[TM_MODEL_ERR_SIZE];
    tm_model_t *model = tm_model_parse ((const char *) text->json.data, text->json.len,
                                        "broker", err, sizeof err);
    tm_codec_free (&text);
    if (!model) {
        tm_warn ("modelsync: a model from the broker does not parse: %s", err);
        self->failed = true;
        return 0;
    }
    char name[TM_MODEL_NAME_MAX + 1];
    snprintf (name, sizeof name, "%s", model->name);
    uint32_t version = model->version, previous = 0;
    int rc = tm_models_put (self->models, &model, &previous, err, sizeof err);
    if (rc == 0) {
        tm_info ("modelsync: model installed name=%s version=%u previous=%u generation=%llu",
                 name, version, previous,
                 (unsigned long long) tm_models_generation (self->models));
        return 1;
    }
    //  Unchanged or older: nothing to do. A conflict (same version, other
    //  content) is the catalogue's to prevent; keep ours and say so.
    if (rc == TM_MODELS_E_CONFLICT)
        tm_warn ("modelsync: model name=%s version=%u not installed: %s", name, version, err);
    return 0;
}

int
tm_modelsync_handle (tm_modelsync_t *self, zsock_t *which)
{
    if (which != self->req)
        return -1;
    tm_msg_t msg;
    int rc = tm_msg_recv (self->req, false, &msg);
    int installed = 0;
    //  Only replies to the outstanding exchange count: one that comes after
    //  its timeout belongs to an exchange already given up.
    bool ours = rc == 0 && self->npending && msg.hdr.request_id >= self->first_id
                && msg.hdr.request_id <= self->last_id;
    if (rc > 0)
        tm_warn ("modelsync: malformed reply from broker");
    else
    if (ours) {
        self->npending--;
        if (msg.hdr.type == TWINMESH__MSG_TYPE__MODEL_LIST_REPLY
            && msg.hdr.status == TWINMESH__STATUS__OK)
            s_on_list (self, &msg);
        else
        if (msg.hdr.type == TWINMESH__MSG_TYPE__MODEL && msg.hdr.status == TWINMESH__STATUS__OK) {
            installed = s_on_model (self, &msg);
            if (self->npending == 0 && !self->failed) {
                self->have_gen = self->list_gen;
                self->have_any = true;
            }
        }
        else {
            //  Refused (a model removed between list and get, a key the
            //  broker does not know): try the generation again next time.
            self->failed = true;
            tm_debug ("modelsync: broker answered type=%s status=%s detail=%s",
                      tm_msg_type_name (msg.hdr.type), tm_status_name (msg.hdr.status),
                      msg.hdr.detail);
        }
    }
    tm_msg_fini (&msg);
    return installed;
}
