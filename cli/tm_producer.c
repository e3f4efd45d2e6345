/*  tm_producer - a credit-window batch sender to a gateway

    Each in-flight batch lives in a slot: its bytes (capacity kept between
    batches, so steady state allocates nothing), its reading count, the
    request ids it was sent under and its timer. A slot is in one of three
    states:

        FREE     -- submit -->            WAIT_ACK (sent, ack deadline set)
        WAIT_ACK -- INGEST_ACK OK -->     FREE (acked, latency recorded)
        WAIT_ACK -- RETRY_LATER -->       BACKOFF (resend time set, backoff doubles)
        WAIT_ACK -- refusal status -->    FREE (refused, first detail kept)
        WAIT_ACK -- ack deadline -->      WAIT_ACK (same bytes sent again)
        BACKOFF  -- resend time -->       WAIT_ACK (same bytes sent again)
        any      -- max_retries resends   FREE (failed)

    Request ids encode the slot (id = generation * window + slot), so a
    reply finds its slot without a lookup table, and every send of a batch
    gets a fresh id: an OK for any earlier send of the same batch is still a
    valid ack (same bytes), while a reply for a slot's previous batch is
    recognised as stale and ignored.
*/
#include "tm_producer.h"
#include "tm_auth.h"
#include "tm_log.h"
#include "tm_msg.h"
#include "tm_net.h"
#include "tm_util.h"
#include "tm_wire.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define S_BACKOFF_FIRST_MS 10      //  First RETRY_LATER backoff
#define S_BACKOFF_MAX_MS 1000      //  Backoff stops doubling here
#define S_STATUS_MAX 16            //  Twinmesh__Status values we keep counts for
#define S_RECV_BURST 256           //  Replies read per pump before timers run again

//  ---------------------------------------------------------------------
//  Log-linear latency histogram: values below 32 us have a bucket each;
//  above, every power of two is split into 32 sub-buckets, so a bucket is
//  at most ~3% wide relative to its value. 1920 buckets cover 2^64 us.

#define S_SUB_BITS 5
#define S_SUB (1u << S_SUB_BITS)
#define S_BUCKETS ((64 - S_SUB_BITS + 1) * S_SUB)

typedef struct {
    uint64_t counts[S_BUCKETS];    //  Samples per bucket
    uint64_t total;                //  Samples in all buckets
    uint64_t max_us;               //  Largest sample, exact
} s_hist_t;

static size_t
s_hist_bucket (uint64_t v)
{
    if (v < S_SUB)
        return (size_t) v;
    int msb = 63 - __builtin_clzll (v);
    int shift = msb - (int) S_SUB_BITS;
    return (size_t) (shift + 1) * S_SUB + (size_t) ((v >> shift) - S_SUB);
}

//  Midpoint of a bucket, the value reported for its samples.
static double
s_hist_value (size_t index)
{
    if (index < S_SUB)
        return (double) index;
    int shift = (int) (index / S_SUB) - 1;
    double lower = (double) ((uint64_t) (index % S_SUB + S_SUB) << shift);
    return lower + (double) ((uint64_t) 1 << shift) / 2.0;
}

static void
s_hist_add (s_hist_t *h, uint64_t v)
{
    h->counts[s_hist_bucket (v)]++;
    h->total++;
    if (v > h->max_us)
        h->max_us = v;
}

static double
s_hist_quantile (const s_hist_t *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t) ceil (q * (double) h->total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < S_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            double v = s_hist_value (i);
            //  The midpoint may exceed the true maximum in the top bucket.
            return v > (double) h->max_us? (double) h->max_us: v;
        }
    }
    return (double) h->max_us;
}

//  ---------------------------------------------------------------------

typedef enum {
    S_FREE,
    S_WAIT_ACK,
    S_BACKOFF
} s_slot_state_t;

typedef struct {
    uint8_t *data;                 //  Batch bytes, owned; capacity reused
    size_t size;                   //  Bytes of the current batch
    size_t capacity;               //  Allocated bytes of data
    size_t n_readings;             //  Readings in the current batch
    uint64_t gen;                  //  Sends of this slot so far (id generation)
    uint64_t first_id;             //  Request id of the batch's first send
    uint64_t last_id;              //  Request id of its latest send
    int64_t first_sent_us;         //  Monotonic time of the first send (latency base)
    int64_t due_us;                //  Ack deadline (WAIT_ACK) or resend time (BACKOFF)
    int64_t backoff_ms;            //  Next RETRY_LATER backoff
    unsigned resends;              //  Resends of this batch so far
    s_slot_state_t state;          //  Where the slot is in its life
} s_slot_t;

struct _tm_producer_t {
    zsock_t *sock;                 //  DEALER to the gateway
    void *handle;                  //  libzmq socket under sock, for zmq_poll
    s_slot_t *slots;               //  window slots
    size_t window;                 //  Number of slots
    size_t *free_list;             //  Stack of free slot indices
    size_t free_count;             //  Entries in free_list
    uint64_t seq;                  //  Header.seq of our messages to the gateway
    int64_t ack_timeout_us;        //  Resend an unanswered batch after this
    unsigned max_retries;          //  Resends before a batch fails
    int stop_level;                //  Interrupt count that stops blocking calls
    tm_producer_stats_t stats;     //  Cumulative counters (inflight kept live)
    uint64_t status_count[S_STATUS_MAX];  //  Batches answered per non-OK status
    char *status_detail[S_STATUS_MAX];    //  First detail per status, owned
    s_hist_t hist;                 //  Ack latency since start
    s_hist_t interval_hist;        //  Ack latency since the last interval
    uint64_t interval_acked;       //  readings_acked at the interval start
    int64_t interval_start_us;     //  When the interval began
    bool warned_timeout;           //  Logged the first ack timeout already
};

static volatile sig_atomic_t s_interrupts;

static void
s_on_signal (int signum)
{
    (void) signum;
    if (s_interrupts < 100)
        s_interrupts++;
}

void
tm_producer_catch_signals (void)
{
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset (&sa.sa_mask);
    //  No SA_RESTART: zmq_poll must wake with EINTR so Ctrl-C acts at once.
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
}

int
tm_producer_interrupted (void)
{
    return (int) s_interrupts;
}

static bool
s_stopped (tm_producer_t *self)
{
    return self->stop_level > 0 && s_interrupts >= self->stop_level;
}

tm_producer_t *
tm_producer_new (const char *endpoint, const char *gateway_key_z85, zcert_t *cert,
                 size_t window)
{
    if (window < 1 || window > TM_PRODUCER_MAX_WINDOW) {
        tm_error ("producer: window must be 1 to %d window=%zu", TM_PRODUCER_MAX_WINDOW,
                  window);
        return NULL;
    }
    tm_producer_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->window = window;
    self->slots = calloc (window, sizeof *self->slots);
    self->free_list = calloc (window, sizeof *self->free_list);
    if (!self->slots || !self->free_list) {
        tm_producer_destroy (&self);
        return NULL;
    }
    //  Lowest index on top, so a light load keeps reusing the same buffers.
    for (size_t i = 0; i < window; i++)
        self->free_list[i] = window - 1 - i;
    self->free_count = window;
    self->ack_timeout_us = 10 * 1000000LL;
    self->max_retries = 50;
    self->stop_level = 1;
    self->interval_start_us = tm_util_mono_us ();
    self->sock = tm_net_client (ZMQ_DEALER, endpoint, cert, gateway_key_z85);
    if (!self->sock) {
        tm_producer_destroy (&self);
        return NULL;
    }
    self->handle = zsock_resolve (self->sock);
    return self;
}

void
tm_producer_destroy (tm_producer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_producer_t *self = *self_p;
    zsock_destroy (&self->sock);
    if (self->slots)
        for (size_t i = 0; i < self->window; i++)
            free (self->slots[i].data);
    free (self->slots);
    free (self->free_list);
    for (size_t i = 0; i < S_STATUS_MAX; i++)
        free (self->status_detail[i]);
    free (self);
    *self_p = NULL;
}

void
tm_producer_set_ack_timeout (tm_producer_t *self, int64_t ms)
{
    self->ack_timeout_us = (ms > 0? ms: 1) * 1000;
}

void
tm_producer_set_max_retries (tm_producer_t *self, unsigned max_retries)
{
    self->max_retries = max_retries;
}

void
tm_producer_set_stop_level (tm_producer_t *self, int level)
{
    self->stop_level = level;
}

bool
tm_producer_ready (tm_producer_t *self)
{
    return self->free_count > 0;
}

//  Send a slot's bytes under a fresh request id and arm its ack deadline.
//  A failed send is not an error here: the batch waits for its deadline
//  and goes again, like a lost message.
static void
s_send (tm_producer_t *self, size_t index, int64_t now_us)
{
    s_slot_t *slot = &self->slots[index];
    slot->gen++;
    slot->last_id = slot->gen * self->window + index;
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__INGEST, slot->last_id, 0);
    hdr.seq = ++self->seq;
    if (tm_msg_send (self->sock, NULL, &hdr, slot->data, slot->size) != 0)
        tm_warn ("producer: send failed request=%llu reason=%s",
                 (unsigned long long) slot->last_id, zmq_strerror (zmq_errno ()));
    slot->state = S_WAIT_ACK;
    slot->due_us = now_us + self->ack_timeout_us;
}

static void
s_release (tm_producer_t *self, size_t index)
{
    s_slot_t *slot = &self->slots[index];
    slot->state = S_FREE;
    slot->size = 0;
    self->free_list[self->free_count++] = index;
    self->stats.inflight--;
}

//  Count one more resend of a slot; true if it may go again, false if the
//  batch has now failed (and is released).
static bool
s_may_resend (tm_producer_t *self, size_t index)
{
    s_slot_t *slot = &self->slots[index];
    if (slot->resends >= self->max_retries) {
        self->stats.failed++;
        self->stats.readings_failed += slot->n_readings;
        tm_warn ("producer: batch failed request=%llu readings=%zu resends=%u",
                 (unsigned long long) slot->last_id, slot->n_readings, slot->resends);
        s_release (self, index);
        return false;
    }
    slot->resends++;
    return true;
}

int
tm_producer_submit (tm_producer_t *self, const uint8_t *data, size_t size, size_t n_readings)
{
    if (!data || size == 0 || n_readings == 0)
        return -1;
    while (self->free_count == 0) {
        if (s_stopped (self))
            return TM_PRODUCER_E_STOPPED;
        tm_producer_pump (self, 100);
    }
    size_t index = self->free_list[--self->free_count];
    s_slot_t *slot = &self->slots[index];
    if (slot->capacity < size) {
        uint8_t *grown = realloc (slot->data, size);
        if (!grown) {
            self->free_count++;
            tm_error ("producer: out of memory for a batch of bytes=%zu", size);
            return -1;
        }
        slot->data = grown;
        slot->capacity = size;
    }
    memcpy (slot->data, data, size);
    slot->size = size;
    slot->n_readings = n_readings;
    slot->resends = 0;
    slot->backoff_ms = S_BACKOFF_FIRST_MS;
    self->stats.batches++;
    self->stats.readings_sent += n_readings;
    self->stats.inflight++;
    int64_t now = tm_util_mono_us ();
    slot->first_sent_us = now;
    s_send (self, index, now);
    slot->first_id = slot->last_id;
    return 0;
}

//  Resend what is due; returns the earliest pending deadline (INT64_MAX
//  if none).
static int64_t
s_run_timers (tm_producer_t *self, int64_t now_us)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < self->window; i++) {
        s_slot_t *slot = &self->slots[i];
        if (slot->state == S_FREE)
            continue;
        if (slot->due_us <= now_us) {
            if (slot->state == S_WAIT_ACK) {
                if (!s_may_resend (self, i))
                    continue;
                self->stats.timeouts++;
                if (!self->warned_timeout) {
                    tm_warn ("producer: no ack within timeout, sending again request=%llu "
                             "timeout_ms=%lld (further timeouts are counted, not logged)",
                             (unsigned long long) slot->last_id,
                             (long long) (self->ack_timeout_us / 1000));
                    self->warned_timeout = true;
                }
            }
            s_send (self, i, now_us);
        }
        if (slot->due_us < next)
            next = slot->due_us;
    }
    return next;
}

static void
s_note_status (tm_producer_t *self, int status, const char *detail)
{
    if (status < 0 || status >= S_STATUS_MAX)
        status = 0;        //  unknown statuses are kept under slot 0 (never OK here)
    self->status_count[status]++;
    if (!self->status_detail[status])
        self->status_detail[status] = strdup (detail? detail: "");
}

//  Handle one reply; returns 1 if it settled a batch.
static int
s_on_reply (tm_producer_t *self, tm_msg_t *msg, int64_t now_us)
{
    const tm_header_t *hdr = &msg->hdr;
    if (hdr->type == TWINMESH__MSG_TYPE__ERROR || hdr->type != TWINMESH__MSG_TYPE__INGEST_ACK) {
        self->stats.errors++;
        tm_warn ("producer: unexpected reply type=%s status=%s detail=\"%s\"",
                 tm_msg_type_name (hdr->type), tm_status_name (hdr->status), hdr->detail);
        return 0;
    }
    size_t index = (size_t) (hdr->request_id % self->window);
    s_slot_t *slot = &self->slots[index];
    if (slot->state == S_FREE || hdr->request_id < slot->first_id
        || hdr->request_id > slot->last_id) {
        self->stats.stale_acks++;
        return 0;
    }
    int status = hdr->status;
    if (status == TWINMESH__STATUS__OK) {
        //  An OK for any send of this batch means the same bytes are durable.
        Twinmesh__IngestAck *ack = TM_UNPACK (IngestAck, ingest_ack,
                                              zframe_data (msg->body), zframe_size (msg->body));
        if (ack && ack->accepted != slot->n_readings) {
            self->stats.short_acks++;
            tm_debug ("producer: ack count differs request=%llu accepted=%u readings=%zu",
                      (unsigned long long) hdr->request_id, ack->accepted, slot->n_readings);
        }
        tm_codec_free (&ack);
        uint64_t latency = (uint64_t) (now_us - slot->first_sent_us);
        s_hist_add (&self->hist, latency);
        s_hist_add (&self->interval_hist, latency);
        self->stats.batches_acked++;
        self->stats.readings_acked += slot->n_readings;
        s_release (self, index);
        return 1;
    }
    if (status == TWINMESH__STATUS__RETRY_LATER || status == TWINMESH__STATUS__NOT_READY) {
        //  Only the answer to the latest send decides; an older send's
        //  RETRY_LATER is superseded by the resend already on its way.
        if (hdr->request_id != slot->last_id || slot->state != S_WAIT_ACK) {
            self->stats.stale_acks++;
            return 0;
        }
        s_note_status (self, status, hdr->detail);
        if (!s_may_resend (self, index))
            return 1;
        self->stats.retries++;
        slot->state = S_BACKOFF;
        slot->due_us = now_us + slot->backoff_ms * 1000;
        slot->backoff_ms *= 2;
        if (slot->backoff_ms > S_BACKOFF_MAX_MS)
            slot->backoff_ms = S_BACKOFF_MAX_MS;
        tm_debug ("producer: retry later request=%llu detail=\"%s\"",
                  (unsigned long long) hdr->request_id, hdr->detail);
        return 0;
    }
    //  MALFORMED, TOO_LARGE, UNAUTHORIZED, BAD_VERSION, anything else:
    //  sending the same bytes again cannot help.
    s_note_status (self, status, hdr->detail);
    self->stats.refused++;
    self->stats.readings_refused += slot->n_readings;
    if (self->status_count[status < S_STATUS_MAX? status: 0] == 1)
        tm_warn ("producer: batch refused status=%s detail=\"%s\"", tm_status_name (status),
                 hdr->detail);
    s_release (self, index);
    return 1;
}

int
tm_producer_pump (tm_producer_t *self, int timeout_ms)
{
    int64_t now = tm_util_mono_us ();
    int64_t next = s_run_timers (self, now);
    long wait = timeout_ms < 0? 0: timeout_ms;
    if (next != INT64_MAX) {
        int64_t until = (next - now + 999) / 1000;
        if (until < wait)
            wait = until < 0? 0: (long) until;
    }
    zmq_pollitem_t item = {self->handle, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll (&item, 1, wait);
    if (rc < 0)
        return -1;     //  EINTR: the caller looks at the interrupt count
    int settled = 0;
    if (item.revents & ZMQ_POLLIN) {
        for (int n = 0; n < S_RECV_BURST; n++) {
            if (n > 0 && !(zsock_events (self->sock) & ZMQ_POLLIN))
                break;
            tm_msg_t msg;
            rc = tm_msg_recv (self->sock, false, &msg);
            if (rc == 0)
                settled += s_on_reply (self, &msg, tm_util_mono_us ());
            else
            if (rc > 0) {
                self->stats.errors++;
                tm_warn ("producer: undecodable reply from gateway outcome=%d", rc);
            }
            tm_msg_fini (&msg);
            if (rc < 0)
                break;
        }
    }
    return settled;
}

int
tm_producer_drain (tm_producer_t *self, int64_t timeout_ms, void (*progress) (void *arg),
                   void *arg, int64_t interval_ms)
{
    int64_t deadline = tm_util_mono_ms () + timeout_ms;
    int64_t next_progress = tm_util_mono_ms () + interval_ms;
    while (self->stats.inflight > 0) {
        if (s_stopped (self))
            return TM_PRODUCER_E_STOPPED;
        int64_t now = tm_util_mono_ms ();
        if (now >= deadline)
            return TM_PRODUCER_E_TIMEOUT;
        if (progress && interval_ms > 0 && now >= next_progress) {
            progress (arg);
            next_progress += interval_ms;
            if (next_progress <= now)
                next_progress = now + interval_ms;
        }
        int64_t wait = deadline - now < 100? deadline - now: 100;
        tm_producer_pump (self, (int) wait);
    }
    return 0;
}

bool
tm_producer_fatal (tm_producer_t *self)
{
    return self->status_count[TWINMESH__STATUS__UNAUTHORIZED] > 0
        || self->status_count[TWINMESH__STATUS__BAD_VERSION] > 0;
}

void
tm_producer_stats (tm_producer_t *self, tm_producer_stats_t *stats)
{
    *stats = self->stats;
}

double
tm_producer_latency_ms (tm_producer_t *self, double q)
{
    return s_hist_quantile (&self->hist, q) / 1000.0;
}

double
tm_producer_latency_max_ms (tm_producer_t *self)
{
    return (double) self->hist.max_us / 1000.0;
}

void
tm_producer_interval (tm_producer_t *self, tm_producer_interval_t *iv)
{
    int64_t now = tm_util_mono_us ();
    iv->seconds = (double) (now - self->interval_start_us) / 1e6;
    iv->readings_acked = self->stats.readings_acked - self->interval_acked;
    iv->rate = iv->seconds > 0? (double) iv->readings_acked / iv->seconds: 0;
    iv->p50_ms = s_hist_quantile (&self->interval_hist, 0.50) / 1000.0;
    iv->p99_ms = s_hist_quantile (&self->interval_hist, 0.99) / 1000.0;
    memset (&self->interval_hist, 0, sizeof self->interval_hist);
    self->interval_acked = self->stats.readings_acked;
    self->interval_start_us = now;
}

uint64_t
tm_producer_status_count (tm_producer_t *self, int status)
{
    return status >= 0 && status < S_STATUS_MAX? self->status_count[status]: 0;
}

const char *
tm_producer_status_detail (tm_producer_t *self, int status)
{
    return status >= 0 && status < S_STATUS_MAX? self->status_detail[status]: NULL;
}

//  ---------------------------------------------------------------------
//  Command-line helpers

int
tm_producer_log_setup (tm_config_t *cfg, const char *component)
{
    int level = tm_log_level_parse (tm_config_str (cfg, "log_level"));
    if (level < 0) {
        fprintf (stderr, "%s: unknown log_level '%s' (error, warn, info, debug)\n", component,
                 tm_config_str (cfg, "log_level"));
        return -1;
    }
    tm_log_init (component, (tm_log_level_t) level);
    return 0;
}

tm_producer_t *
tm_producer_from_config (tm_config_t *cfg)
{
    tm_producer_t *self = NULL;
    zcert_t *cert = NULL;
    char *gateway_key = NULL;
    char *cert_path = tm_config_path (cfg, "cert", "keys", "producer.key_secret");
    char *key_path = tm_config_path (cfg, "gateway_key", "keys", "gateway-0.key");
    int64_t window = tm_config_int (cfg, "window");
    int64_t retries = tm_config_int (cfg, "max_retries");
    if (window < 1 || window > TM_PRODUCER_MAX_WINDOW) {
        fprintf (stderr, "twinctl: --window must be 1 to %d\n", TM_PRODUCER_MAX_WINDOW);
        goto done;
    }
    if (retries < 0) {
        fprintf (stderr, "twinctl: --max-retries must be 0 or more\n");
        goto done;
    }
    cert = tm_auth_load_secret (cert_path);
    if (!cert) {
        fprintf (stderr, "twinctl: cannot load secret certificate %s (see --cert, --keys)\n",
                 cert_path? cert_path: "(none)");
        goto done;
    }
    gateway_key = tm_auth_load_public_key (key_path);
    if (!gateway_key) {
        fprintf (stderr, "twinctl: cannot load gateway certificate %s (see --gateway-key)\n",
                 key_path? key_path: "(none)");
        goto done;
    }
    self = tm_producer_new (tm_config_str (cfg, "gateway"), gateway_key, cert, (size_t) window);
    if (!self) {
        fprintf (stderr, "twinctl: cannot connect to gateway %s\n", tm_config_str (cfg, "gateway"));
        goto done;
    }
    tm_producer_set_ack_timeout (self, tm_config_int (cfg, "ack_timeout"));
    tm_producer_set_max_retries (self, (unsigned) retries);
done:
    zcert_destroy (&cert);
    free (gateway_key);
    free (cert_path);
    free (key_path);
    return self;
}

void
tm_producer_print_progress (tm_producer_t *self, const char *prefix, double t_s, FILE *out)
{
    tm_producer_interval_t iv;
    tm_producer_interval (self, &iv);
    const tm_producer_stats_t *st = &self->stats;
    fprintf (out,
             "%s: t=%.1fs acked=%llu rate=%.0f/s p50=%.1fms p99=%.1fms inflight=%zu "
             "retries=%llu refused=%llu",
             prefix, t_s, (unsigned long long) st->readings_acked, iv.rate, iv.p50_ms,
             iv.p99_ms, st->inflight, (unsigned long long) st->retries,
             (unsigned long long) st->refused);
    if (st->timeouts)
        fprintf (out, " timeouts=%llu", (unsigned long long) st->timeouts);
    if (st->failed)
        fprintf (out, " failed=%llu", (unsigned long long) st->failed);
    fprintf (out, "\n");
    fflush (out);
}

void
tm_producer_print_json_fields (tm_producer_t *self, double elapsed_s, FILE *out)
{
    const tm_producer_stats_t *st = &self->stats;
    fprintf (out,
             "\"readings_sent\": %llu, \"readings_acked\": %llu, \"batches\": %llu, "
             "\"batches_acked\": %llu, \"retries\": %llu, \"timeouts\": %llu, "
             "\"refused\": %llu, \"failed\": %llu, \"unacked\": %zu, "
             "\"duration_s\": %.3f, \"rate_per_s\": %.0f, \"p50_ms\": %.3f, "
             "\"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f",
             (unsigned long long) st->readings_sent, (unsigned long long) st->readings_acked,
             (unsigned long long) st->batches, (unsigned long long) st->batches_acked,
             (unsigned long long) st->retries, (unsigned long long) st->timeouts,
             (unsigned long long) st->refused, (unsigned long long) st->failed, st->inflight,
             elapsed_s, elapsed_s > 0? (double) st->readings_acked / elapsed_s: 0.0,
             tm_producer_latency_ms (self, 0.50), tm_producer_latency_ms (self, 0.99),
             tm_producer_latency_ms (self, 0.999), tm_producer_latency_max_ms (self));
}

uint64_t
tm_producer_print_problems (tm_producer_t *self, const char *prefix, FILE *out)
{
    const tm_producer_stats_t *st = &self->stats;
    for (int status = 0; status < S_STATUS_MAX; status++) {
        if (!self->status_count[status] || status == TWINMESH__STATUS__RETRY_LATER
            || status == TWINMESH__STATUS__NOT_READY)
            continue;
        fprintf (out, "%s: %llu batches refused with %s, first detail: \"%s\"\n", prefix,
                 (unsigned long long) self->status_count[status],
                 status? tm_status_name (status): "an unknown status",
                 self->status_detail[status]? self->status_detail[status]: "");
    }
    if (st->failed) {
        const char *why = self->status_detail[TWINMESH__STATUS__RETRY_LATER];
        fprintf (out, "%s: %llu batches (%llu readings) failed after %u resends%s%s%s\n", prefix,
                 (unsigned long long) st->failed, (unsigned long long) st->readings_failed,
                 self->max_retries, why? ", first RETRY_LATER detail: \"": "", why? why: "",
                 why? "\"": "");
    }
    if ((st->failed || st->inflight) && st->timeouts)
        fprintf (out, "%s: %llu acks never came within the ack timeout: is the gateway up at "
                      "that endpoint, and is --gateway-key its certificate?\n", prefix,
                 (unsigned long long) st->timeouts);
    if (st->inflight)
        fprintf (out, "%s: %zu batches still unacked at exit\n", prefix, st->inflight);
    if (st->errors)
        fprintf (out, "%s: %llu undecodable or unexpected replies from the gateway\n", prefix,
                 (unsigned long long) st->errors);
    return st->refused + st->failed + st->inflight;
}

void
tm_producer_print_json_string (const char *s, FILE *out)
{
    fputc ('"', out);
    for (const unsigned char *p = (const unsigned char *) (s? s: ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf (out, "\\%c", *p);
        else
        if (*p < 0x20)
            fprintf (out, "\\u%04x", *p);
        else
            fputc (*p, out);
    }
    fputc ('"', out);
}

//  ---------------------------------------------------------------------
//  Selftest: the histogram, and the slot life cycle against a fake
//  gateway on inproc (no CURVE handshake happens on inproc).

static void
s_fake_reply (zsock_t *router, tm_msg_t *req, int status, uint32_t accepted)
{
    Twinmesh__IngestAck ack = TWINMESH__INGEST_ACK__INIT;
    ack.accepted = accepted;
    size_t size = 0;
    uint8_t *body = tm_codec_pack_buf (&ack.base, &size);
    int rc = tm_msg_reply (router, req, TWINMESH__MSG_TYPE__INGEST_ACK, status, 0,
                           status? "test detail": NULL, body, size);
    assert (rc == 0);
    free (body);
}

//  Receive the next request at the fake gateway, pumping the producer
//  meanwhile so its timers (backoff, ack timeout) run.
static void
s_fake_recv (zsock_t *router, tm_producer_t *p, tm_msg_t *msg)
{
    int64_t deadline = tm_util_mono_ms () + 2000;
    while (!(zsock_events (router) & ZMQ_POLLIN)) {
        assert (tm_util_mono_ms () < deadline);
        tm_producer_pump (p, 5);
    }
    int rc = tm_msg_recv (router, true, msg);
    assert (rc == 0);
    assert (msg->hdr.type == TWINMESH__MSG_TYPE__INGEST);
}

void
tm_producer_test (bool verbose)
{
    if (verbose)
        printf (" * tm_producer: ");

    //  Histogram: exact below 32 us, within ~3% above.
    s_hist_t *h = calloc (1, sizeof *h);
    assert (h);
    assert (s_hist_quantile (h, 0.5) == 0);
    for (uint64_t v = 1; v <= 100000; v++)
        s_hist_add (h, v);
    double p50 = s_hist_quantile (h, 0.50), p99 = s_hist_quantile (h, 0.99);
    assert (fabs (p50 - 50000) / 50000 < 0.035);
    assert (fabs (p99 - 99000) / 99000 < 0.035);
    assert (s_hist_quantile (h, 1.0) <= 100000);
    assert (h->max_us == 100000);
    for (uint64_t v = 0; v < 40; v++)
        assert (v < S_SUB? s_hist_value (s_hist_bucket (v)) == (double) v: true);
    assert (s_hist_bucket (UINT64_MAX) < S_BUCKETS);
    free (h);

    //  Slot life cycle against a fake gateway.
    zcert_t *cert = zcert_new ();
    zsock_t *router = zsock_new_router ("inproc://tm-producer-test");
    assert (cert && router);
    tm_producer_t *p = tm_producer_new ("inproc://tm-producer-test", zcert_public_txt (cert),
                                        cert, 2);
    assert (p);
    //  Long enough that a slow run (valgrind) never times out by accident;
    //  the timeout phase below shortens it.
    tm_producer_set_ack_timeout (p, 60000);
    uint8_t batch[256];
    size_t size = tm_wire_encode (batch, sizeof batch, "test/e1", "p", 1.5, 1000, "m");
    assert (size > 0);
    assert (tm_producer_submit (p, batch, size, 1) == 0);
    assert (tm_producer_submit (p, batch, size, 1) == 0);
    assert (!tm_producer_ready (p));

    tm_msg_t a, b, b2, c, c2;
    s_fake_recv (router, p, &a);
    s_fake_recv (router, p, &b);
    assert (zframe_size (a.body) == size);
    s_fake_reply (router, &a, TWINMESH__STATUS__OK, 1);
    s_fake_reply (router, &b, TWINMESH__STATUS__RETRY_LATER, 0);
    while (p->stats.batches_acked < 1 || p->stats.retries < 1)
        tm_producer_pump (p, 10);
    //  B comes back after its 10 ms backoff under a new id; refuse it.
    s_fake_recv (router, p, &b2);
    assert (b2.hdr.request_id != b.hdr.request_id);
    s_fake_reply (router, &b2, TWINMESH__STATUS__MALFORMED, 0);
    while (p->stats.refused < 1)
        tm_producer_pump (p, 10);
    assert (tm_producer_status_count (p, TWINMESH__STATUS__MALFORMED) == 1);
    assert (streq (tm_producer_status_detail (p, TWINMESH__STATUS__MALFORMED), "test detail"));

    //  C is not answered: after the ack timeout it is sent again, and an OK
    //  to the first send still settles it; the OK to the second is stale.
    tm_producer_set_ack_timeout (p, 50);
    assert (tm_producer_submit (p, batch, size, 1) == 0);
    s_fake_recv (router, p, &c);
    s_fake_recv (router, p, &c2);
    tm_producer_set_ack_timeout (p, 60000);
    assert (p->stats.timeouts >= 1);
    s_fake_reply (router, &c, TWINMESH__STATUS__OK, 1);
    s_fake_reply (router, &c2, TWINMESH__STATUS__OK, 1);
    assert (tm_producer_drain (p, 2000, NULL, NULL, 0) == 0);
    while (p->stats.stale_acks < 1)
        tm_producer_pump (p, 10);
    //  A slow run may have sent C a third time: drop it at the gateway.
    while (zsock_events (router) & ZMQ_POLLIN) {
        tm_msg_t stray;
        tm_msg_recv (router, true, &stray);
        tm_msg_fini (&stray);
    }

    tm_producer_stats_t st;
    tm_producer_stats (p, &st);
    assert (st.batches == 3 && st.batches_acked == 2 && st.readings_acked == 2);
    assert (st.refused == 1 && st.retries == 1 && st.failed == 0 && st.inflight == 0);
    assert (!tm_producer_fatal (p));
    assert (tm_producer_latency_ms (p, 0.5) > 0);

    //  A batch that always gets RETRY_LATER fails after max_retries.
    tm_producer_set_max_retries (p, 2);
    assert (tm_producer_submit (p, batch, size, 1) == 0);
    for (int i = 0; i < 3; i++) {
        tm_msg_t r;
        s_fake_recv (router, p, &r);
        s_fake_reply (router, &r, TWINMESH__STATUS__RETRY_LATER, 0);
        tm_msg_fini (&r);
    }
    assert (tm_producer_drain (p, 2000, NULL, NULL, 0) == 0);
    assert (p->stats.failed == 1 && p->stats.readings_failed == 1);

    tm_msg_fini (&a);
    tm_msg_fini (&b);
    tm_msg_fini (&b2);
    tm_msg_fini (&c);
    tm_msg_fini (&c2);
    tm_producer_destroy (&p);
    assert (p == NULL);
    zsock_destroy (&router);
    zcert_destroy (&cert);
    if (verbose)
        printf ("OK\n");
}

void
tm_producer_print_reading (const tm_reading_t *r, FILE *out)
{
    fprintf (out, "  %.*s %.*s=%.6g ts_ms=%lld", (int) r->entity_len, r->entity,
             (int) r->property_len, r->property, r->value, (long long) r->ts_ms);
    if (r->model)
        fprintf (out, " model=%.*s", (int) r->model_len, r->model);
    fprintf (out, "\n");
}
