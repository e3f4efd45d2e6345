/*  tm_gateway - the ingest edge: split producer batches by shard owner

    The hot path, per producer batch of ~1,000 readings: one pass over the
    wire bytes validates each reading, hashes its entity to a shard, and
    appends the reading's encoded bytes to its owner's scratch buffer
    (grow-only, reused: no allocation and no syscall per reading). Each
    scratch buffer then becomes one part (one copy into a ZeroMQ frame) and
    is sent as APPEND; a batch whose readings all go to one worker skips the
    copy and forwards the producer's own frame. The part's frame is kept
    (ZeroMQ shares it by reference count, no copy) until the worker acks,
    so a WRONG_SHARD refusal can be re-split under a newer map.

    Batches and parts live in preallocated slot arrays with free lists. A
    part's request id is its slot index plus a generation, so an ack finds
    its part in O(1) and an ack for a part already freed (its batch was
    answered) misses and is counted. Parts wait in one list ordered by send
    time; since the timeout is constant that is also deadline order, and
    expiry looks only at the head.

    A part's life (one APPEND to one worker):

    state    event                          action                           next
    -------  -----------------------------  -------------------------------  ------
    FREE     split of a batch               copy readings, send APPEND       SENT
    SENT     APPEND_ACK OK                  last of its batch: INGEST_ACK OK FREE
    SENT     APPEND_ACK WRONG_SHARD         ask for the map; re-split now    PARKED
                                            if ours is already newer
    SENT     APPEND_ACK other, ERROR        batch RETRY_LATER                FREE
    SENT     deadline passed                batch RETRY_LATER                FREE
    SENT     worker endpoint or key change  batch RETRY_LATER                FREE
    PARKED   newer map, or a heartbeat      re-split into new SENT parts     FREE
             later (worker was behind)      (after 5: batch RETRY_LATER)
    PARKED   deadline passed                batch RETRY_LATER                FREE
    any      its batch answered             freed; late acks are ignored     FREE
*/
#include "tm_gateway.h"
#include "tm_auth.h"
#include "tm_codec.h"
#include "tm_devices.h"
#include "tm_log.h"
#include "tm_mapclient.h"
#include "tm_msg.h"
#include "tm_net.h"
#include "tm_shardmap.h"
#include "tm_util.h"
#include "tm_wire.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#define NIL UINT32_MAX
#define MAX_RESPLITS 5             //  WRONG_SHARD re-splits before RETRY_LATER
#define RECV_BURST 256             //  Messages taken from one socket per poll
#define MAX_BATCH_LIMIT (256u << 20)   //  4x this must fit ZMQ_MAXMSGSIZE (int)
#define SCRATCH_MIN 65536          //  First size of a worker's scratch buffer

typedef enum {
    PART_FREE,
    PART_SENT,
    PART_PARKED
} part_state_t;

static const char *s_state_name[] = {"free", "sent", "parked"};
_Static_assert (sizeof s_state_name / sizeof s_state_name[0] == PART_PARKED + 1,
                "a name for each part state");

typedef struct {
    uint32_t gen;                  //  Bumped on free, so stale acks miss
    part_state_t state;            //  Where it is in its life
    uint32_t batch;                //  Slot of the batch it belongs to
    uint32_t worker;               //  Slot of the worker it went to
    uint32_t nreadings;            //  Readings in this part
    uint32_t tries;                //  Re-splits in this part's lineage
    uint64_t epoch;                //  Map epoch it was sent with
    int64_t deadline_ms;           //  Its batch fails if no ack by then
    int64_t parked_ms;             //  When a WRONG_SHARD parked it
    zframe_t *frame;               //  Its bytes, kept until acked
    uint32_t prev;                 //  Deadline list (free list uses next only)
    uint32_t next;                 //  Deadline list, or next free slot
    uint32_t park_prev;            //  Parked list
    uint32_t park_next;            //  Parked list
    uint32_t batch_prev;           //  Parts of the same batch
    uint32_t batch_next;           //  Parts of the same batch
} s_part_t;

typedef struct {
    bool used;                     //  Holds a batch in flight
    bool marked;                   //  Scratch flag while failing many batches
    zframe_t *routing;             //  Producer's ROUTER identity, owned
    uint64_t request_id;           //  Producer's request id, echoed in the ack
    uint32_t nreadings;            //  Readings in the batch
    uint32_t open_parts;           //  Parts not yet acked OK
    uint32_t parts;                //  First part of the batch, or NIL
    uint32_t next_free;            //  Free list link
} s_batch_t;

typedef struct {
    char *id;                      //  Worker id from the map
    char *endpoint;                //  Where its DEALER connects
    char *public_key;              //  Its Z85 CURVE key
    zsock_t *sock;                 //  DEALER, or NULL if it could not be made
    uint64_t seq;                  //  Our APPEND counter to this worker
    uint8_t *buf;                  //  Scratch part being built, grow-only
    size_t len;                    //  Bytes in buf
    size_t cap;                    //  Capacity of buf
    uint32_t count;                //  Readings in the part being built
    bool touched;                  //  On the touched list of this split
} s_worker_t;

typedef struct {
    int64_t last_ms;               //  When this kind of warning was last logged
    uint64_t suppressed;           //  Warnings of this kind not logged since
} s_ratelimit_t;

typedef struct {
    uint64_t readings;             //  Readings acked OK to producers
    uint64_t batches;              //  Batches acked OK
    uint64_t refused;              //  Batches or requests answered non-OK
    uint64_t malformed;            //  ... of which MALFORMED
    uint64_t unauthorized;         //  ... of which UNAUTHORIZED
    uint64_t too_large;            //  ... of which TOO_LARGE
    uint64_t retry_later;          //  ... of which RETRY_LATER
    uint64_t bad_version;          //  ... of which BAD_VERSION
    uint64_t wrong_shard;          //  WRONG_SHARD acks from workers
    uint64_t resplits;             //  Parts re-split after WRONG_SHARD
    uint64_t timeouts;             //  Parts not acked within ack_timeout
    uint64_t stale_acks;           //  Acks for parts already answered or unknown
    uint64_t reply_failed;         //  Replies the producer was not there for
    uint64_t parts;                //  APPENDs sent
} s_stats_t;

struct _tm_gateway_t {
    char *id;                      //  Our node id
    char *endpoint;                //  Bound producer endpoint
    zcert_t *cert;                 //  Our certificate, borrowed
    int64_t heartbeat_ms;          //  HELLO / MAP_GET interval
    int64_t ack_timeout_ms;        //  Part deadline after sending
    uint32_t max_inflight;         //  Batch slots
    size_t max_batch_bytes;        //  Larger bodies get TOO_LARGE
    zsock_t *router;               //  Producers' ROUTER
    zsock_t *pipe;                 //  Actor pipe, borrowed, or NULL
    tm_mapclient_t *mapclient;     //  Follows the broker's shard map
    const tm_shardmap_t *map;      //  Current map, owned by mapclient, or NULL
    uint64_t epoch;                //  Its epoch, 0 if none
    uint32_t *shard_slot;          //  Shard -> our worker slot, or NIL
    uint32_t num_shards;           //  Entries in shard_slot
    s_worker_t *workers;           //  Every worker we have seen in a map
    uint32_t nworkers;             //  Entries used in workers
    uint32_t workers_cap;          //  Entries allocated in workers and touched
    uint32_t *touched;             //  Workers with readings in this split
    uint32_t ntouched;             //  Entries in touched
    bool split_whole;              //  This split went to one worker: forward as is
    s_batch_t *batches;            //  max_inflight slots
    uint32_t batch_free;           //  Free batch slots
    uint32_t inflight;             //  Batches in flight
    s_part_t *parts;               //  Part slots, grown on demand
    uint32_t parts_cap;            //  Entries in parts
    uint32_t part_free;            //  Free part slots
    uint32_t dl_head;              //  Oldest part (first deadline), or NIL
    uint32_t dl_tail;              //  Newest part
    uint32_t park_head;            //  Oldest parked part, or NIL
    uint32_t park_tail;            //  Newest parked part
    zmq_pollitem_t *items;         //  Poll set: pipe, router, broker, workers
    uint32_t *item_worker;         //  items[i] -> worker slot, NIL for the others
    size_t nitems;                 //  Entries used in items
    size_t items_cap;              //  Entries allocated in items
    bool items_dirty;              //  Worker sockets changed: rebuild items
    bool draining;                 //  Refusing new batches, finishing old ones
    int64_t drain_deadline;        //  When draining gives up on the rest
    bool terminated;               //  $TERM: stop now
    int64_t next_heartbeat;        //  When to send HELLO and MAP_GET next
    int exit_code;                 //  Result of the last run
    s_stats_t stats;               //  Counters for HELLO and the final log line
    s_ratelimit_t rl_input;        //  Warnings about bad producer input
    s_ratelimit_t rl_worker;       //  Warnings about worker refusals and timeouts
    s_ratelimit_t rl_reply;        //  Warnings about replies that could not go
    tm_devices_t *devices;         //  Delta events relayed to devices (tm_devices)
};

//  Log at most one warning per second of a kind, saying how many were held
//  back, so a hostile producer cannot turn our log into its amplifier.
static bool
s_ratelimit (s_ratelimit_t *rl, uint64_t *suppressed)
{
    int64_t now = tm_util_mono_ms ();
    if (rl->last_ms && now - rl->last_ms < 1000) {
        rl->suppressed++;
        return false;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->last_ms = now;
    return true;
}

static uint64_t
s_part_id (tm_gateway_t *self, uint32_t slot)
{
    return (uint64_t) self->parts[slot].gen << 32 | slot;
}

//  ---------------------------------------------------------------------
//  Part lists: deadline order, parked order, per batch

static void
s_dl_append (tm_gateway_t *self, uint32_t pi)
{
    s_part_t *p = &self->parts[pi];
    p->next = NIL;
    p->prev = self->dl_tail;
    if (self->dl_tail != NIL)
        self->parts[self->dl_tail].next = pi;
    else
        self->dl_head = pi;
    self->dl_tail = pi;
}

static void
s_dl_unlink (tm_gateway_t *self, uint32_t pi)
{
    s_part_t *p = &self->parts[pi];
    if (p->prev != NIL)
        self->parts[p->prev].next = p->next;
    else
        self->dl_head = p->next;
    if (p->next != NIL)
        self->parts[p->next].prev = p->prev;
    else
        self->dl_tail = p->prev;
    p->prev = p->next = NIL;
}

static void
s_park_append (tm_gateway_t *self, uint32_t pi)
{
    s_part_t *p = &self->parts[pi];
    p->park_next = NIL;
    p->park_prev = self->park_tail;
    if (self->park_tail != NIL)
        self->parts[self->park_tail].park_next = pi;
    else
        self->park_head = pi;
    self->park_tail = pi;
}

static void
s_park_unlink (tm_gateway_t *self, uint32_t pi)
{
    s_part_t *p = &self->parts[pi];
    if (p->park_prev != NIL)
        self->parts[p->park_prev].park_next = p->park_next;
    else
        self->park_head = p->park_next;
    if (p->park_next != NIL)
        self->parts[p->park_next].park_prev = p->park_prev;
    else
        self->park_tail = p->park_prev;
    p->park_prev = p->park_next = NIL;
}

//  Take a free part slot, growing the array when all are in use (amortised:
//  the array settles at the working set and stays there).
static uint32_t
s_part_alloc (tm_gateway_t *self)
{
    if (self->part_free == NIL) {
        uint32_t cap = self->parts_cap * 2;
        if (cap <= self->parts_cap || cap > (NIL >> 1))
            return NIL;
        s_part_t *parts = (s_part_t *) realloc (self->parts, cap * sizeof *parts);
        if (!parts)
            return NIL;
        memset (parts + self->parts_cap, 0, (cap - self->parts_cap) * sizeof *parts);
        for (uint32_t i = self->parts_cap; i < cap; i++) {
            parts[i].gen = 1;
            parts[i].next = i + 1 < cap? i + 1: NIL;
        }
        self->part_free = self->parts_cap;
        self->parts = parts;
        self->parts_cap = cap;
    }
    uint32_t pi = self->part_free;
    s_part_t *p = &self->parts[pi];
    self->part_free = p->next;
    p->state = PART_SENT;
    p->prev = p->next = NIL;
    p->park_prev = p->park_next = NIL;
    p->batch_prev = p->batch_next = NIL;
    p->frame = NULL;
    return pi;
}

//  Release a part: out of every list, bytes dropped, generation bumped so a
//  late ack for it is recognised as stale.
static void
s_part_free (tm_gateway_t *self, uint32_t pi)
{
    s_part_t *p = &self->parts[pi];
    assert (p->state != PART_FREE);
    s_dl_unlink (self, pi);
    if (p->state == PART_PARKED)
        s_park_unlink (self, pi);
    s_batch_t *b = &self->batches[p->batch];
    if (p->batch_prev != NIL)
        self->parts[p->batch_prev].batch_next = p->batch_next;
    else
        b->parts = p->batch_next;
    if (p->batch_next != NIL)
        self->parts[p->batch_next].batch_prev = p->batch_prev;
    b->open_parts--;
    zframe_destroy (&p->frame);
    p->state = PART_FREE;
    p->gen = p->gen + 1? p->gen + 1: 1;
    p->next = self->part_free;
    self->part_free = pi;
}

//  ---------------------------------------------------------------------
//  Replies to producers

//  Send one reply on the producer ROUTER without blocking: a producer that
//  does not read its replies must not stall every other producer.
static int
s_send_reply (tm_gateway_t *self, zframe_t *routing, uint64_t request_id, int type, int status,
              const char *detail, uint32_t accepted)
{
    tm_header_t hdr;
    tm_header_init (&hdr, type, request_id, self->epoch);
    hdr.status = status;
    if (detail)
        snprintf (hdr.detail, sizeof hdr.detail, "%s", detail);
    zframe_t *head = tm_header_encode (&hdr);
    zframe_t *body = NULL;
    if (type == TWINMESH__MSG_TYPE__INGEST_ACK) {
        Twinmesh__IngestAck ack = TWINMESH__INGEST_ACK__INIT;
        ack.accepted = accepted;
        body = tm_codec_pack (&ack.base);
    }
    else
        body = zframe_new_empty ();

    switch (status) {
        case TWINMESH__STATUS__OK:
            break;
        case TWINMESH__STATUS__MALFORMED:
            self->stats.malformed++;
            break;
        case TWINMESH__STATUS__UNAUTHORIZED:
            self->stats.unauthorized++;
            break;
        case TWINMESH__STATUS__TOO_LARGE:
            self->stats.too_large++;
            break;
        case TWINMESH__STATUS__RETRY_LATER:
            self->stats.retry_later++;
            break;
        case TWINMESH__STATUS__BAD_VERSION:
            self->stats.bad_version++;
            break;
        default:
            break;
    }
    if (status != TWINMESH__STATUS__OK)
        self->stats.refused++;

    int rc = -1;
    if (head && body && routing
        && zframe_send (&routing, self->router, ZFRAME_MORE | ZFRAME_REUSE | ZFRAME_DONTWAIT)
               == 0) {
        //  Once the first frame is queued the rest of the message always is.
        if (zframe_send (&head, self->router, ZFRAME_MORE | ZFRAME_DONTWAIT) == 0
            && zframe_send (&body, self->router, ZFRAME_DONTWAIT) == 0)
            rc = 0;
    }
    if (rc != 0) {
        self->stats.reply_failed++;
        uint64_t held;
        if (s_ratelimit (&self->rl_reply, &held))
            tm_warn ("gateway: cannot reply to producer request_id=%llu status=%s reason=%s "
                     "suppressed=%llu",
                     (unsigned long long) request_id, tm_status_name (status),
                     zmq_strerror (zmq_errno ()), (unsigned long long) held);
    }
    zframe_destroy (&head);
    zframe_destroy (&body);
    return rc;
}

//  Refuse a producer request; the warning says why, at most once a second.
static void
s_refuse (tm_gateway_t *self, tm_msg_t *msg, int type, int status, const char *fmt, ...)
    __attribute__ ((format (printf, 5, 6)));

static void
s_refuse (tm_gateway_t *self, tm_msg_t *msg, int type, int status, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (detail, sizeof detail, fmt, ap);
    va_end (ap);
    //  Overload and "no map yet" are the system's state, not the producer's
    //  fault: debug, not a warning per batch.
    if (status == TWINMESH__STATUS__RETRY_LATER)
        tm_debug ("gateway: refused request_id=%llu status=%s detail=%s",
                  (unsigned long long) msg->hdr.request_id, tm_status_name (status), detail);
    else {
        uint64_t held;
        if (s_ratelimit (&self->rl_input, &held))
            tm_warn ("gateway: refused peer=%s request_id=%llu status=%s detail=%s "
                     "suppressed=%llu",
                     *msg->peer? msg->peer: "?", (unsigned long long) msg->hdr.request_id,
                     tm_status_name (status), detail, (unsigned long long) held);
    }
    s_send_reply (self, msg->routing, msg->hdr.request_id, type, status, detail, 0);
}

//  Answer a batch once and free it with all its parts; later acks for those
//  parts miss on the generation and are counted as stale.
static void
s_batch_answer (tm_gateway_t *self, uint32_t bi, int status, const char *detail)
{
    s_batch_t *b = &self->batches[bi];
    assert (b->used);
    if (status == TWINMESH__STATUS__OK) {
        self->stats.batches++;
        self->stats.readings += b->nreadings;
    }
    s_send_reply (self, b->routing, b->request_id, TWINMESH__MSG_TYPE__INGEST_ACK, status,
                  detail, status == TWINMESH__STATUS__OK? b->nreadings: 0);
    while (b->parts != NIL)
        s_part_free (self, b->parts);
    zframe_destroy (&b->routing);
    b->used = false;
    b->marked = false;
    b->next_free = self->batch_free;
    self->batch_free = bi;
    self->inflight--;
}

static void
s_batch_fail (tm_gateway_t *self, uint32_t bi, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_batch_fail (tm_gateway_t *self, uint32_t bi, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (detail, sizeof detail, fmt, ap);
    va_end (ap);
    s_batch_answer (self, bi, TWINMESH__STATUS__RETRY_LATER, detail);
}

//  ---------------------------------------------------------------------
//  Splitting and sending

static void
s_split_reset (tm_gateway_t *self)
{
    for (uint32_t i = 0; i < self->ntouched; i++) {
        s_worker_t *w = &self->workers[self->touched[i]];
        w->len = 0;
        w->count = 0;
        w->touched = false;
    }
    self->ntouched = 0;
}

static int
s_scratch_append (s_worker_t *w, const uint8_t *data, size_t size)
{
    if (w->len + size > w->cap) {
        size_t cap = w->cap? w->cap: SCRATCH_MIN;
        while (cap < w->len + size)
            cap *= 2;
        uint8_t *buf = (uint8_t *) realloc (w->buf, cap);
        if (!buf)
            return -1;
        w->buf = buf;
        w->cap = cap;
    }
    memcpy (w->buf + w->len, data, size);
    w->len += size;
    return 0;
}

static void
s_touch (tm_gateway_t *self, uint32_t wi)
{
    self->workers[wi].touched = true;
    self->touched[self->ntouched++] = wi;
}

//  Validate an encoded IngestBatch and split its readings by owner under the
//  current map into the workers' scratch buffers. While every reading has
//  gone to one worker nothing is copied; if that holds to the end,
//  split_whole says "forward the input as it is". Returns 0 with
//  *nreadings set, or a non-OK status with detail filled in.
static int
s_split (tm_gateway_t *self, const uint8_t *data, size_t size, uint32_t *nreadings,
         char *detail, size_t detail_size)
{
    assert (self->ntouched == 0);
    self->split_whole = true;
    *nreadings = 0;
    uint32_t first = NIL;
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    int rc;
    while ((rc = tm_wire_next (&it, &r)) == 1) {
        uint32_t shard = tm_shardmap_shard_of (self->map, r.entity, r.entity_len);
        uint32_t wi = self->shard_slot[shard];
        if (wi == NIL) {
            snprintf (detail, detail_size, "shard %u has no owner", shard);
            s_split_reset (self);
            return TWINMESH__STATUS__RETRY_LATER;
        }
        s_worker_t *w = &self->workers[wi];
        if (self->split_whole) {
            if (first == NIL) {
                first = wi;
                s_touch (self, wi);
            }
            else
            if (wi != first) {
                //  Everything before this reading belongs to the first
                //  worker, so it is one contiguous copy.
                if (s_scratch_append (&self->workers[first], data, (size_t) (r.raw - data))
                    != 0)
                    goto nomem;
                self->split_whole = false;
            }
        }
        if (!self->split_whole) {
            if (!w->touched)
                s_touch (self, wi);
            if (s_scratch_append (w, r.raw, r.raw_len) != 0)
                goto nomem;
        }
        w->count++;
        (*nreadings)++;
    }
    if (rc < 0) {
        snprintf (detail, detail_size, "reading %zu: %s", it.index, it.error);
        s_split_reset (self);
        return TWINMESH__STATUS__MALFORMED;
    }
    return TWINMESH__STATUS__OK;
nomem:
    snprintf (detail, detail_size, "gateway out of memory");
    s_split_reset (self);
    return TWINMESH__STATUS__RETRY_LATER;
}

//  Send one part as APPEND. Never blocks: a worker whose queue is full (it
//  is gone or far behind) fails the batch rather than stalling us.
static int
s_send_part (tm_gateway_t *self, uint32_t pi)
{
    s_part_t *p = &self->parts[pi];
    s_worker_t *w = &self->workers[p->worker];
    if (!w->sock)
        return -1;
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__APPEND, s_part_id (self, pi), self->epoch);
    hdr.seq = w->seq + 1;
    zframe_t *head = tm_header_encode (&hdr);
    if (!head)
        return -1;
    if (zframe_send (&head, w->sock, ZFRAME_MORE | ZFRAME_DONTWAIT) != 0) {
        zframe_destroy (&head);
        return -1;
    }
    //  REUSE: libzmq takes a reference to the bytes, we keep ours for a
    //  re-split.
    if (zframe_send (&p->frame, w->sock, ZFRAME_REUSE | ZFRAME_DONTWAIT) != 0)
        return -1;
    w->seq++;
    p->epoch = self->epoch;
    self->stats.parts++;
    return 0;
}

//  Turn the current split into parts of batch bi and send them. *source_p
//  is the split input; it is consumed when the split went to one worker.
//  Returns 0, or -1 if the batch failed and was answered.
static int
s_emit (tm_gateway_t *self, uint32_t bi, zframe_t **source_p, uint32_t tries)
{
    s_batch_t *b = &self->batches[bi];
    int64_t deadline = tm_util_mono_ms () + self->ack_timeout_ms;
    for (uint32_t i = 0; i < self->ntouched; i++) {
        uint32_t wi = self->touched[i];
        s_worker_t *w = &self->workers[wi];
        uint32_t pi = s_part_alloc (self);
        if (pi == NIL) {
            s_split_reset (self);
            s_batch_fail (self, bi, "gateway out of memory");
            return -1;
        }
        s_part_t *p = &self->parts[pi];
        p->batch = bi;
        p->worker = wi;
        p->nreadings = w->count;
        p->tries = tries;
        p->deadline_ms = deadline;
        if (self->split_whole) {
            p->frame = *source_p;
            *source_p = NULL;
        }
        else
            p->frame = zframe_new (w->buf, w->len);
        p->batch_next = b->parts;
        if (b->parts != NIL)
            self->parts[b->parts].batch_prev = pi;
        b->parts = pi;
        b->open_parts++;
        s_dl_append (self, pi);
        if (!p->frame || s_send_part (self, pi) != 0) {
            const char *id = w->id;
            int err = zmq_errno ();
            s_split_reset (self);
            uint64_t held;
            if (s_ratelimit (&self->rl_worker, &held))
                tm_warn ("gateway: cannot send to worker=%s reason=%s suppressed=%llu", id,
                         w->sock? zmq_strerror (err): "no socket", (unsigned long long) held);
            s_batch_fail (self, bi, "worker %s unreachable", id);
            return -1;
        }
    }
    s_split_reset (self);
    return 0;
}

//  Re-split a part that a worker refused with WRONG_SHARD, under our
//  current map, into new parts of the same batch.
static void
s_resplit (tm_gateway_t *self, uint32_t pi)
{
    s_part_t *p = &self->parts[pi];
    uint32_t bi = p->batch;
    uint32_t tries = p->tries + 1;
    if (tries > MAX_RESPLITS) {
        s_batch_fail (self, bi, "worker %s still answers WRONG_SHARD after %d re-splits",
                      self->workers[p->worker].id, MAX_RESPLITS);
        return;
    }
    zframe_t *frame = p->frame;
    p->frame = NULL;
    s_part_free (self, pi);
    self->stats.resplits++;
    uint32_t n;
    char detail[256];
    int status = s_split (self, zframe_data (frame), zframe_size (frame), &n, detail,
                          sizeof detail);
    if (status != TWINMESH__STATUS__OK)
        s_batch_answer (self, bi, status, detail);
    else
        s_emit (self, bi, &frame, tries);
    zframe_destroy (&frame);
}

//  ---------------------------------------------------------------------
//  Workers and the map

static uint32_t
s_worker_find (tm_gateway_t *self, const char *id)
{
    for (uint32_t i = 0; i < self->nworkers; i++)
        if (strcmp (self->workers[i].id, id) == 0)
            return i;
    return NIL;
}

static void
s_worker_connect (tm_gateway_t *self, s_worker_t *w)
{
    zsock_destroy (&w->sock);
    w->sock = tm_net_client (ZMQ_DEALER, w->endpoint, self->cert, w->public_key);
    w->seq = 0;
    self->items_dirty = true;
    if (self->devices)
        tm_devices_ask (self->devices, w->sock);
    tm_info ("gateway: worker socket worker=%s endpoint=%s%s", w->id, w->endpoint,
             w->sock? "": " failed=yes");
}

static uint32_t
s_worker_add (tm_gateway_t *self, const tm_shardmap_worker_t *mw)
{
    if (self->nworkers == self->workers_cap) {
        uint32_t cap = self->workers_cap? self->workers_cap * 2: 8;
        s_worker_t *workers = (s_worker_t *) realloc (self->workers, cap * sizeof *workers);
        if (!workers)
            return NIL;
        self->workers = workers;
        uint32_t *touched = (uint32_t *) realloc (self->touched, cap * sizeof *touched);
        if (!touched)
            return NIL;
        self->touched = touched;
        self->workers_cap = cap;
    }
    s_worker_t *w = &self->workers[self->nworkers];
    memset (w, 0, sizeof *w);
    w->id = strdup (mw->id);
    w->endpoint = strdup (mw->endpoint);
    w->public_key = strdup (mw->public_key);
    if (!w->id || !w->endpoint || !w->public_key) {
        free (w->id);
        free (w->endpoint);
        free (w->public_key);
        return NIL;
    }
    s_worker_connect (self, w);
    return self->nworkers++;
}

//  A worker moved (new endpoint or key): parts sent on its old socket may
//  never be acked, so their batches are answered RETRY_LATER now.
static void
s_worker_moved (tm_gateway_t *self, uint32_t wi)
{
    for (uint32_t pi = self->dl_head; pi != NIL; pi = self->parts[pi].next)
        if (self->parts[pi].worker == wi)
            self->batches[self->parts[pi].batch].marked = true;
    for (uint32_t bi = 0; bi < self->max_inflight; bi++)
        if (self->batches[bi].used && self->batches[bi].marked)
            s_batch_fail (self, bi, "worker %s moved to a new endpoint or key",
                          self->workers[wi].id);
}

//  Follow a newer map: sockets for new or moved workers, the shard routing
//  table, then parked parts re-split under it.
static void
s_install_map (tm_gateway_t *self)
{
    const tm_shardmap_t *map = tm_mapclient_map (self->mapclient);
    if (!map)
        return;
    uint32_t *slot_of = (uint32_t *) calloc (map->nworkers? map->nworkers: 1, sizeof *slot_of);
    if (slot_of && map->num_shards != self->num_shards) {
        uint32_t *shard_slot = (uint32_t *) realloc (self->shard_slot,
                                                     map->num_shards * sizeof *shard_slot);
        if (shard_slot) {
            self->shard_slot = shard_slot;
            self->num_shards = map->num_shards;
        }
    }
    if (!slot_of || self->num_shards != map->num_shards) {
        //  The old map is gone (mapclient replaced it): route nothing
        //  rather than route with a dangling map.
        tm_error ("gateway: out of memory installing map epoch=%llu",
                  (unsigned long long) map->epoch);
        free (slot_of);
        self->map = NULL;
        self->epoch = 0;
        return;
    }
    for (size_t i = 0; i < map->nworkers; i++) {
        const tm_shardmap_worker_t *mw = &map->workers[i];
        uint32_t wi = s_worker_find (self, mw->id);
        if (wi == NIL)
            wi = s_worker_add (self, mw);
        else {
            s_worker_t *w = &self->workers[wi];
            if (strcmp (w->endpoint, mw->endpoint) != 0
                || strcmp (w->public_key, mw->public_key) != 0) {
                char *endpoint = strdup (mw->endpoint);
                char *key = strdup (mw->public_key);
                if (endpoint && key) {
                    s_worker_moved (self, wi);
                    free (w->endpoint);
                    free (w->public_key);
                    w->endpoint = endpoint;
                    w->public_key = key;
                    s_worker_connect (self, w);
                }
                else {
                    free (endpoint);
                    free (key);
                }
            }
        }
        slot_of[i] = wi;
    }
    for (uint32_t s = 0; s < map->num_shards; s++) {
        uint32_t owner = map->owners[s];
        self->shard_slot[s] = owner < map->nworkers? slot_of[owner]: NIL;
    }
    free (slot_of);
    self->map = map;
    self->epoch = map->epoch;
    tm_info ("gateway: routing with map epoch=%llu shards=%u workers=%zu",
             (unsigned long long) map->epoch, map->num_shards, map->nworkers);
    while (self->park_head != NIL)
        s_resplit (self, self->park_head);
}

//  ---------------------------------------------------------------------
//  Events

static void
s_handle_ingest (tm_gateway_t *self, tm_msg_t *msg, int rc)
{
    if (!tm_role_may_ingest (msg->role)) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__INGEST_ACK, TWINMESH__STATUS__UNAUTHORIZED,
                  "role %s may not ingest", tm_role_name (msg->role));
        return;
    }
    if (rc == TM_MSG_E_MALFORMED) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__ERROR, TWINMESH__STATUS__MALFORMED,
                  "cannot decode message header");
        return;
    }
    if (rc == TM_MSG_E_VERSION) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__ERROR, TWINMESH__STATUS__BAD_VERSION,
                  "protocol version %u not supported (want %d)", msg->hdr.version,
                  TM_PROTOCOL_VERSION);
        return;
    }
    if (msg->hdr.type != TWINMESH__MSG_TYPE__INGEST) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__ERROR, TWINMESH__STATUS__MALFORMED,
                  "unexpected message type %s", tm_msg_type_name (msg->hdr.type));
        return;
    }
    size_t size = zframe_size (msg->body);
    if (size > self->max_batch_bytes) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__INGEST_ACK, TWINMESH__STATUS__TOO_LARGE,
                  "batch of %zu bytes is over max_batch_bytes=%zu", size,
                  self->max_batch_bytes);
        return;
    }
    if (self->epoch == 0 || !self->map) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__INGEST_ACK, TWINMESH__STATUS__RETRY_LATER,
                  "no shard map yet");
        return;
    }
    if (self->draining) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__INGEST_ACK, TWINMESH__STATUS__RETRY_LATER,
                  "draining");
        return;
    }
    if (self->inflight >= self->max_inflight) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__INGEST_ACK, TWINMESH__STATUS__RETRY_LATER,
                  "%u batches in flight, the most this gateway takes", self->inflight);
        return;
    }
    uint32_t n;
    char detail[256];
    int status = s_split (self, zframe_data (msg->body), size, &n, detail, sizeof detail);
    if (status != TWINMESH__STATUS__OK) {
        s_refuse (self, msg, TWINMESH__MSG_TYPE__INGEST_ACK, status, "%s", detail);
        return;
    }
    if (n == 0) {
        s_split_reset (self);
        self->stats.batches++;
        s_send_reply (self, msg->routing, msg->hdr.request_id, TWINMESH__MSG_TYPE__INGEST_ACK,
                      TWINMESH__STATUS__OK, NULL, 0);
        return;
    }
    uint32_t bi = self->batch_free;
    assert (bi != NIL);     //  inflight < max_inflight was checked
    s_batch_t *b = &self->batches[bi];
    self->batch_free = b->next_free;
    self->inflight++;
    b->used = true;
    b->marked = false;
    b->routing = msg->routing;
    msg->routing = NULL;
    b->request_id = msg->hdr.request_id;
    b->nreadings = n;
    b->open_parts = 0;
    b->parts = NIL;
    s_emit (self, bi, &msg->body, 0);
}

static void
s_handle_ack (tm_gateway_t *self, uint32_t wi, tm_msg_t *msg)
{
    s_worker_t *w = &self->workers[wi];
    uint64_t id = msg->hdr.request_id;
    uint32_t pi = (uint32_t) id;
    if (pi >= self->parts_cap || self->parts[pi].gen != (uint32_t) (id >> 32)
        || self->parts[pi].state == PART_FREE || self->parts[pi].worker != wi) {
        //  Its batch was answered already (timeout, another part failed).
        self->stats.stale_acks++;
        tm_debug ("gateway: ignored ack for an answered part worker=%s request_id=%llu", w->id,
                  (unsigned long long) id);
        return;
    }
    s_part_t *p = &self->parts[pi];
    if (p->state != PART_SENT) {
        self->stats.stale_acks++;
        tm_debug ("gateway: ignored ack worker=%s state=%s event=%s", w->id,
                  s_state_name[p->state], tm_msg_type_name (msg->hdr.type));
        return;
    }
    uint32_t bi = p->batch;
    int status = msg->hdr.status;
    if (msg->hdr.type == TWINMESH__MSG_TYPE__APPEND_ACK && status == TWINMESH__STATUS__OK) {
        s_part_free (self, pi);
        if (self->batches[bi].open_parts == 0)
            s_batch_answer (self, bi, TWINMESH__STATUS__OK, NULL);
        return;
    }
    if (msg->hdr.type == TWINMESH__MSG_TYPE__APPEND_ACK
        && status == TWINMESH__STATUS__WRONG_SHARD) {
        self->stats.wrong_shard++;
        tm_debug ("gateway: wrong shard worker=%s worker_epoch=%llu part_epoch=%llu epoch=%llu",
                  w->id, (unsigned long long) msg->hdr.epoch, (unsigned long long) p->epoch,
                  (unsigned long long) self->epoch);
        if (self->epoch > p->epoch)
            s_resplit (self, pi);      //  We moved on since sending it
        else {
            p->state = PART_PARKED;
            p->parked_ms = tm_util_mono_ms ();
            s_park_append (self, pi);
            tm_mapclient_request (self->mapclient);
        }
        return;
    }
    uint64_t held;
    if (s_ratelimit (&self->rl_worker, &held))
        tm_warn ("gateway: worker refused part worker=%s type=%s status=%s detail=%s "
                 "suppressed=%llu",
                 w->id, tm_msg_type_name (msg->hdr.type), tm_status_name (status),
                 msg->hdr.detail, (unsigned long long) held);
    s_batch_fail (self, bi, "worker %s answered %s: %s", w->id, tm_status_name (status),
                  msg->hdr.detail);
}

static void
s_handle_worker (tm_gateway_t *self, uint32_t wi)
{
    for (int i = 0; i < RECV_BURST; i++) {
        //  Re-read each time: the socket can be replaced while handling a
        //  message (a new map moved the worker).
        zsock_t *sock = self->workers[wi].sock;
        if (!sock || !(zsock_events (sock) & ZMQ_POLLIN))
            return;
        tm_msg_t msg;
        int rc = tm_msg_recv (sock, false, &msg);
        if (rc == 0 && msg.hdr.type == TWINMESH__MSG_TYPE__EVENTS_INFO_REPLY)
            tm_devices_worker_info (self->devices, self->workers[wi].id,
                                    self->workers[wi].public_key, &msg);
        else
        if (rc == 0 && msg.hdr.type == TWINMESH__MSG_TYPE__DELTAS)
            tm_devices_deltas_reply (self->devices, self->router, &msg);
        else
        if (rc == 0)
            s_handle_ack (self, wi, &msg);
        else
        if (rc > 0) {
            self->stats.stale_acks++;
            uint64_t held;
            if (s_ratelimit (&self->rl_worker, &held))
                tm_warn ("gateway: undecodable reply worker=%s suppressed=%llu",
                         self->workers[wi].id, (unsigned long long) held);
        }
        tm_msg_fini (&msg);
        if (rc < 0)
            return;
    }
}

//  tm_devices: the DEALER of the worker that owns an entity's shard.
static zsock_t *
s_owner_of (void *arg, const char *entity, size_t len, uint32_t *slot)
{
    tm_gateway_t *self = (tm_gateway_t *) arg;
    if (!self->map || self->epoch == 0)
        return NULL;
    uint32_t shard = tm_shardmap_shard_of (self->map, entity, len);
    *slot = shard < self->num_shards? self->shard_slot[shard]: NIL;
    return *slot != NIL? self->workers[*slot].sock: NULL;
}

static void
s_handle_producers (tm_gateway_t *self)
{
    for (int i = 0; i < RECV_BURST; i++) {
        if (!(zsock_events (self->router) & ZMQ_POLLIN))
            return;
        tm_msg_t msg;
        int rc = tm_msg_recv (self->router, true, &msg);
        if (rc == 0 && msg.routing && msg.hdr.type == TWINMESH__MSG_TYPE__EVENTS_INFO)
            tm_devices_answer (self->devices, self->router, &msg);
        else
        if (rc == 0 && msg.routing && msg.hdr.type == TWINMESH__MSG_TYPE__DELTAS_GET)
            tm_devices_deltas_get (self->devices, self->router, &msg, s_owner_of, self,
                                   self->epoch, tm_util_mono_ms (), self->ack_timeout_ms);
        else
        if (rc >= 0 && msg.routing)
            s_handle_ingest (self, &msg, rc);
        tm_msg_fini (&msg);
        if (rc < 0)
            return;
    }
}

static void
s_handle_broker (tm_gateway_t *self, zsock_t *sock)
{
    for (int i = 0; sock && i < RECV_BURST; i++) {
        if (!(zsock_events (sock) & ZMQ_POLLIN))
            return;
        if (tm_mapclient_handle (self->mapclient, sock) == 1)
            s_install_map (self);
    }
}

static void
s_handle_pipe (tm_gateway_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command) {
        self->terminated = true;
        return;
    }
    if (streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "DRAIN")) {
        if (!self->draining) {
            self->draining = true;
            self->drain_deadline = tm_util_mono_ms () + self->ack_timeout_ms;
            tm_info ("gateway: draining inflight=%u timeout_ms=%lld", self->inflight,
                     (long long) self->ack_timeout_ms);
        }
    }
    else
        tm_warn ("gateway: unknown actor command=%s", command);
    zstr_free (&command);
}

static void
s_expire (tm_gateway_t *self, int64_t now)
{
    while (self->dl_head != NIL && self->parts[self->dl_head].deadline_ms <= now) {
        s_part_t *p = &self->parts[self->dl_head];
        const char *id = self->workers[p->worker].id;
        self->stats.timeouts++;
        uint64_t held;
        if (s_ratelimit (&self->rl_worker, &held))
            tm_warn ("gateway: part timed out worker=%s state=%s timeout_ms=%lld "
                     "suppressed=%llu",
                     id, s_state_name[p->state], (long long) self->ack_timeout_ms,
                     (unsigned long long) held);
        if (p->state == PART_PARKED)
            s_batch_fail (self, p->batch, "worker %s refused with WRONG_SHARD and no newer "
                          "map came within %lldms", id, (long long) self->ack_timeout_ms);
        else
            s_batch_fail (self, p->batch, "worker %s did not ack within %lldms", id,
                          (long long) self->ack_timeout_ms);
    }
}

static void
s_heartbeat (tm_gateway_t *self, int64_t now)
{
    Twinmesh__NodeStats stats = TWINMESH__NODE_STATS__INIT;
    stats.readings = self->stats.readings;
    stats.batches = self->stats.batches;
    stats.refused = self->stats.refused;
    stats.malformed = self->stats.malformed;
    stats.wrong_shard = self->stats.wrong_shard;
    stats.retry_later = self->stats.retry_later;
    stats.map_epoch = self->epoch;
    Twinmesh__NodeInfo info = TWINMESH__NODE_INFO__INIT;
    info.id = self->id;
    info.role = (char *) "gateway";
    info.endpoint = self->endpoint;
    info.public_key = (char *) zcert_public_txt (self->cert);
    info.stats = &stats;
    tm_mapclient_tick (self->mapclient, &info);
    self->next_heartbeat = now + self->heartbeat_ms;
    //  Where each worker publishes deltas: asked every heartbeat, so a
    //  restarted worker on a new port is followed (tm_devices).
    for (uint32_t wi = 0; wi < self->nworkers; wi++)
        tm_devices_ask (self->devices, self->workers[wi].sock);
    //  A worker behind on the map refuses until it catches up; give parked
    //  parts another try at the first heartbeat that finds them parked for
    //  half an interval without a newer map.
    while (self->park_head != NIL
           && self->parts[self->park_head].parked_ms + self->heartbeat_ms / 2 <= now)
        s_resplit (self, self->park_head);
}

static int
s_rebuild_items (tm_gateway_t *self)
{
    size_t want = 6 + self->nworkers;
    if (want > self->items_cap) {
        zmq_pollitem_t *items = (zmq_pollitem_t *) realloc (self->items, want * sizeof *items);
        if (!items)
            return -1;
        self->items = items;
        uint32_t *map = (uint32_t *) realloc (self->item_worker, want * sizeof *map);
        if (!map)
            return -1;
        self->item_worker = map;
        self->items_cap = want;
    }
    size_t n = 0;
    zsock_t *fixed[6] = {self->pipe, self->router, tm_mapclient_req_sock (self->mapclient),
                         tm_mapclient_sub_sock (self->mapclient),
                         tm_devices_xpub (self->devices), tm_devices_sub (self->devices)};
    for (int i = 0; i < 6; i++)
        if (fixed[i]) {
            self->items[n] = (zmq_pollitem_t) {zsock_resolve (fixed[i]), 0, ZMQ_POLLIN, 0};
            self->item_worker[n++] = NIL;
        }
    for (uint32_t wi = 0; wi < self->nworkers; wi++)
        if (self->workers[wi].sock) {
            self->items[n] = (zmq_pollitem_t) {zsock_resolve (self->workers[wi].sock), 0,
                                               ZMQ_POLLIN, 0};
            self->item_worker[n++] = wi;
        }
    self->nitems = n;
    self->items_dirty = false;
    return 0;
}

//  ---------------------------------------------------------------------
//  Public API

tm_gateway_t *
tm_gateway_new (const tm_gateway_config_t *config)
{
    if (!config || !config->id || !*config->id || !config->bind || !config->broker
        || !config->broker_key || !config->cert) {
        tm_error ("gateway: id, bind, broker, broker key and certificate are required");
        return NULL;
    }
    if (config->max_inflight == 0 || config->max_inflight > 1000000
        || config->max_batch_bytes == 0 || config->max_batch_bytes > MAX_BATCH_LIMIT
        || config->heartbeat_ms <= 0 || config->ack_timeout_ms <= 0) {
        tm_error ("gateway: settings out of range: max_inflight 1..1000000, "
                  "max_batch_bytes 1..%u, heartbeat and ack_timeout > 0", MAX_BATCH_LIMIT);
        return NULL;
    }
    tm_gateway_t *self = (tm_gateway_t *) zmalloc (sizeof *self);
    self->id = strdup (config->id);
    self->cert = config->cert;
    self->heartbeat_ms = config->heartbeat_ms;
    self->ack_timeout_ms = config->ack_timeout_ms;
    self->max_inflight = config->max_inflight;
    self->max_batch_bytes = config->max_batch_bytes;
    self->dl_head = self->dl_tail = NIL;
    self->park_head = self->park_tail = NIL;
    self->items_dirty = true;

    self->batches = (s_batch_t *) calloc (self->max_inflight, sizeof *self->batches);
    self->parts_cap = self->max_inflight * 2 < 64? 64: self->max_inflight * 2;
    self->parts = (s_part_t *) calloc (self->parts_cap, sizeof *self->parts);
    if (!self->id || !self->batches || !self->parts)
        goto fail;
    for (uint32_t i = 0; i < self->max_inflight; i++)
        self->batches[i].next_free = i + 1 < self->max_inflight? i + 1: NIL;
    self->batch_free = 0;
    for (uint32_t i = 0; i < self->parts_cap; i++) {
        self->parts[i].gen = 1;
        self->parts[i].next = i + 1 < self->parts_cap? i + 1: NIL;
    }
    self->part_free = 0;

    //  libzmq drops a message over ZMQ_MAXMSGSIZE by disconnecting the
    //  peer, which tells it nothing. The hard cap is set well above our
    //  limit so an oversized batch arrives and gets a TOO_LARGE answer.
    int64_t hard_cap = (int64_t) self->max_batch_bytes * 4 + 65536;
    self->router = tm_net_server (ZMQ_ROUTER, config->bind, self->cert, hard_cap);
    if (!self->router)
        goto fail;
    self->endpoint = tm_net_bound_endpoint (self->router);
    if (!self->endpoint)
        goto fail;
    self->mapclient = tm_mapclient_new (config->broker, config->broker_pub, config->broker_key,
                                        self->cert);
    if (!self->mapclient)
        goto fail;
    self->devices = tm_devices_new (self->id, config->events_bind, config->events_advertise,
                                    self->cert);
    if (!self->devices)
        goto fail;
    return self;
fail:
    tm_error ("gateway: cannot start id=%s bind=%s", config->id, config->bind);
    tm_gateway_destroy (&self);
    return NULL;
}

static void
s_answer_all (tm_gateway_t *self, const char *detail)
{
    for (uint32_t bi = 0; self->batches && bi < self->max_inflight; bi++)
        if (self->batches[bi].used)
            s_batch_answer (self, bi, TWINMESH__STATUS__RETRY_LATER, detail);
}

void
tm_gateway_destroy (tm_gateway_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_gateway_t *self = *self_p;
    if (self->router)
        s_answer_all (self, "gateway stopping");
    tm_mapclient_destroy (&self->mapclient);
    tm_devices_destroy (&self->devices);
    zsock_destroy (&self->router);
    for (uint32_t wi = 0; wi < self->nworkers; wi++) {
        s_worker_t *w = &self->workers[wi];
        zsock_destroy (&w->sock);
        free (w->id);
        free (w->endpoint);
        free (w->public_key);
        free (w->buf);
    }
    free (self->workers);
    free (self->touched);
    for (uint32_t pi = 0; self->parts && pi < self->parts_cap; pi++)
        zframe_destroy (&self->parts[pi].frame);
    free (self->parts);
    free (self->batches);
    free (self->shard_slot);
    free (self->items);
    free (self->item_worker);
    free (self->endpoint);
    free (self->id);
    free (self);
    *self_p = NULL;
}

const char *
tm_gateway_endpoint (tm_gateway_t *self)
{
    return self->endpoint;
}

int
tm_gateway_exit_code (tm_gateway_t *self)
{
    return self->exit_code;
}

int
tm_gateway_run (tm_gateway_t *self, zsock_t *pipe)
{
    self->pipe = pipe;
    self->items_dirty = true;
    self->terminated = false;
    self->exit_code = 0;
    s_heartbeat (self, tm_util_mono_ms ());
    while (!self->terminated) {
        if (self->items_dirty && s_rebuild_items (self) != 0) {
            tm_error ("gateway: out of memory building the poll set");
            self->exit_code = -1;
            break;
        }
        int64_t now = tm_util_mono_ms ();
        if (self->draining && (self->inflight == 0 || now >= self->drain_deadline))
            break;
        //  Sleep no longer than the next thing that must happen on time.
        int64_t wake = self->next_heartbeat;
        if (self->dl_head != NIL && self->parts[self->dl_head].deadline_ms < wake)
            wake = self->parts[self->dl_head].deadline_ms;
        if (self->draining && self->drain_deadline < wake)
            wake = self->drain_deadline;
        long timeout = wake > now? (long) (wake - now): 0;
        int rc = zmq_poll (self->items, (int) self->nitems, timeout);
        if (rc < 0) {
            if (zmq_errno () == EINTR)
                continue;
            tm_error ("gateway: poll failed reason=%s", zmq_strerror (zmq_errno ()));
            self->exit_code = -1;
            break;
        }
        if (rc > 0) {
            //  Handle every ready socket each round, acks before new
            //  batches, so a busy producer socket cannot starve the acks
            //  that free its capacity. (czmq's zpoller returns one reader
            //  per wait, first in list order.)
            size_t nitems = self->nitems;
            for (size_t i = 0; i < nitems && !self->terminated; i++) {
                if (!(self->items[i].revents & ZMQ_POLLIN))
                    continue;
                if (self->item_worker[i] != NIL)
                    s_handle_worker (self, self->item_worker[i]);
                else
                if (self->pipe && self->items[i].socket == zsock_resolve (self->pipe))
                    s_handle_pipe (self);
            }
            s_handle_broker (self, tm_mapclient_req_sock (self->mapclient));
            s_handle_broker (self, tm_mapclient_sub_sock (self->mapclient));
            tm_devices_handle (self->devices);
            if (!self->terminated)
                s_handle_producers (self);
        }
        now = tm_util_mono_ms ();
        s_expire (self, now);
        tm_devices_expire (self->devices, self->router, now);
        if (now >= self->next_heartbeat)
            s_heartbeat (self, now);
    }
    if (self->inflight)
        tm_warn ("gateway: stopping with batches in flight inflight=%u", self->inflight);
    s_answer_all (self, self->draining? "draining": "gateway stopping");
    tm_info ("gateway: stopped readings=%llu batches=%llu refused=%llu malformed=%llu "
             "retry_later=%llu too_large=%llu unauthorized=%llu wrong_shard=%llu "
             "resplits=%llu timeouts=%llu stale_acks=%llu reply_failed=%llu parts=%llu",
             (unsigned long long) self->stats.readings, (unsigned long long) self->stats.batches,
             (unsigned long long) self->stats.refused,
             (unsigned long long) self->stats.malformed,
             (unsigned long long) self->stats.retry_later,
             (unsigned long long) self->stats.too_large,
             (unsigned long long) self->stats.unauthorized,
             (unsigned long long) self->stats.wrong_shard,
             (unsigned long long) self->stats.resplits,
             (unsigned long long) self->stats.timeouts,
             (unsigned long long) self->stats.stale_acks,
             (unsigned long long) self->stats.reply_failed,
             (unsigned long long) self->stats.parts);
    self->pipe = NULL;
    self->items_dirty = true;
    return self->exit_code;
}

void
tm_gateway_actor (zsock_t *pipe, void *args)
{
    tm_gateway_t *self = (tm_gateway_t *) args;
    zsock_signal (pipe, 0);
    tm_gateway_run (self, pipe);
}
