/*  tm_producer - a credit-window batch sender to a gateway

    The client half of INGEST: it keeps up to `window` IngestBatch requests
    in flight on one CURVE DEALER, each kept (bytes and all) until the
    gateway acks it, and settles every batch one way: acked, refused for
    good, or failed after too many resends. RETRY_LATER is resent after a
    doubling backoff; a batch with no answer within the ack timeout is sent
    again as is, which is safe because a reading is idempotent per entity,
    property and timestamp. Nothing is dropped without being counted.

    Built for `twinctl sim` and `twinctl replay` at about 1.5 million
    readings/s on two cores shared with the whole cluster: the work per
    batch is one copy and one send; nothing here is per reading. Ack
    latencies go into a log-linear histogram (32 sub-buckets per power of
    two, about 3% error) for p50/p99/p99.9 without keeping samples.

    Not thread-safe: one thread drives a producer.
*/
#ifndef TM_PRODUCER_H_INCLUDED
#define TM_PRODUCER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tm_wire.h"

#include "tm_config.h"

//  Outcomes of the blocking calls besides 0.
#define TM_PRODUCER_E_STOPPED 1    //  Interrupted (Ctrl-C) at the stop level
#define TM_PRODUCER_E_TIMEOUT 2    //  drain: batches still in flight at the deadline

#define TM_PRODUCER_MAX_WINDOW 4096

typedef struct _tm_producer_t tm_producer_t;

typedef struct {
    uint64_t batches;              //  Batches submitted
    uint64_t batches_acked;        //  Batches acked OK
    uint64_t readings_sent;        //  Readings in submitted batches
    uint64_t readings_acked;       //  Readings in batches acked OK
    uint64_t retries;              //  Resends after RETRY_LATER or NOT_READY
    uint64_t timeouts;             //  Resends after no ack within the ack timeout
    uint64_t refused;              //  Batches refused for good (not resent)
    uint64_t readings_refused;     //  Readings in refused batches
    uint64_t failed;               //  Batches given up after max_retries resends
    uint64_t readings_failed;      //  Readings in failed batches
    uint64_t stale_acks;           //  Replies for requests no longer in flight
    uint64_t errors;               //  ERROR replies and undecodable messages
    uint64_t short_acks;           //  OK acks whose accepted count differed
    size_t inflight;               //  Batches submitted and not yet settled
} tm_producer_stats_t;

//  Create a producer connected to a gateway endpoint, expecting the
//  gateway's Z85 public key and presenting cert (borrowed; may be destroyed
//  after this call). window is the number of batches in flight (1 to
//  TM_PRODUCER_MAX_WINDOW). Returns NULL with a logged reason.
tm_producer_t *tm_producer_new (const char *endpoint, const char *gateway_key_z85,
                                zcert_t *cert, size_t window);

//  Destroy; batches still in flight are forgotten. Nulls the pointer.
void tm_producer_destroy (tm_producer_t **self_p);

//  Time after which an unanswered batch is sent again (default 10 s).
void tm_producer_set_ack_timeout (tm_producer_t *self, int64_t ms);

//  Resends (RETRY_LATER or timeout) after which a batch counts as failed
//  (default 50).
void tm_producer_set_max_retries (tm_producer_t *self, unsigned max_retries);

//  Blocking calls return TM_PRODUCER_E_STOPPED once the process has seen
//  this many SIGINT/SIGTERM (see tm_producer_catch_signals); 0 = never.
//  Default 1. Raise it to 2 before a final drain so one Ctrl-C stops the
//  input and a second one gives up waiting.
void tm_producer_set_stop_level (tm_producer_t *self, int level);

//  True if a batch can be submitted without blocking.
bool tm_producer_ready (tm_producer_t *self);

//  Send a batch of n_readings readings (data is copied; encoded IngestBatch
//  bytes). Blocks, pumping acks, while the window is full. Returns 0,
//  TM_PRODUCER_E_STOPPED (not submitted), or -1 if the batch is empty.
int tm_producer_submit (tm_producer_t *self, const uint8_t *data, size_t size,
                        size_t n_readings);

//  Process replies and due resends, waiting up to timeout_ms for a reply.
//  Returns the number of batches settled, or -1 on interruption.
int tm_producer_pump (tm_producer_t *self, int timeout_ms);

//  Wait until every batch in flight is settled, pumping; calls progress
//  (if not NULL) about every interval_ms. Returns 0, TM_PRODUCER_E_STOPPED
//  or TM_PRODUCER_E_TIMEOUT.
int tm_producer_drain (tm_producer_t *self, int64_t timeout_ms,
                       void (*progress) (void *arg), void *arg, int64_t interval_ms);

//  True once the gateway refused a batch for a reason no other batch can
//  escape (UNAUTHORIZED, BAD_VERSION): sending more is pointless.
bool tm_producer_fatal (tm_producer_t *self);

//  Cumulative counters.
void tm_producer_stats (tm_producer_t *self, tm_producer_stats_t *stats);

//  Ack latency quantile (0 < q <= 1) since start, in milliseconds; 0 if
//  nothing was acked. Reported values are bucket midpoints (about 3%).
double tm_producer_latency_ms (tm_producer_t *self, double q);

//  Largest ack latency seen, in milliseconds (exact).
double tm_producer_latency_max_ms (tm_producer_t *self);

typedef struct {
    double seconds;                //  Length of the interval
    uint64_t readings_acked;       //  Readings acked in it
    double rate;                   //  readings_acked / seconds
    double p50_ms;                 //  Ack latency quantiles of the interval
    double p99_ms;
} tm_producer_interval_t;

//  Figures since the previous call (or creation), then start a new
//  interval: per-second rates and recent latency.
void tm_producer_interval (tm_producer_t *self, tm_producer_interval_t *iv);

//  Number of batches answered with this (non-OK) status, and the detail of
//  the first such answer (borrowed; NULL if none).
uint64_t tm_producer_status_count (tm_producer_t *self, int status);
const char *tm_producer_status_detail (tm_producer_t *self, int status);

//  ---------------------------------------------------------------------
//  Command-line helpers shared by `twinctl sim` and `twinctl replay`.

//  Settings every producing command has; used inside a tm_setting_t table.
#define TM_PRODUCER_SETTINGS                                                   \
    {"log_level", TM_CFG_STR, "warn", "error, warn, info, debug"},             \
    {"keys", TM_CFG_STR, "./keys", "directory the key defaults are taken from"}, \
    {"cert", TM_CFG_STR, NULL,                                                 \
     "secret certificate to present (default <keys>/producer.key_secret)"},   \
    {"gateway", TM_CFG_STR, "tcp://127.0.0.1:5570", "gateway endpoint"},       \
    {"gateway_key", TM_CFG_STR, NULL,                                          \
     "gateway public certificate (default <keys>/gateway-0.key)"},              \
    {"batch", TM_CFG_INT, "1000", "readings per INGEST batch"},                \
    {"window", TM_CFG_INT, "8", "batches in flight (credit window)"},          \
    {"ack_timeout", TM_CFG_DURATION, "10s",                                    \
     "send a batch again when no ack came within this time"},                 \
    {"max_retries", TM_CFG_INT, "50",                                          \
     "resends of one batch (RETRY_LATER or timeout) before it counts as failed"}, \
    {"drain_timeout", TM_CFG_DURATION, "60s",                                  \
     "at the end, wait this long for batches in flight"},                     \
    {"print_interval", TM_CFG_DURATION, "1s", "progress line interval on stderr (0 = none)"}, \
    {"json", TM_CFG_BOOL, "false", "print the final summary as one JSON object on stdout"}, \
    {"dry_run", TM_CFG_BOOL, "false",                                          \
     "encode and validate batches without sending; print counts and first readings"}

//  Set up logging from log_level; returns -1 (printed) if it is unknown.
int tm_producer_log_setup (tm_config_t *cfg, const char *component);

//  Create a producer from the settings above (keys, cert, gateway,
//  gateway_key, window, ack_timeout, max_retries). NULL with a printed
//  reason.
tm_producer_t *tm_producer_from_config (tm_config_t *cfg);

//  Count SIGINT/SIGTERM from now on instead of dying (czmq's handler is
//  replaced). Call after the first socket exists (czmq installs its own on
//  first use). tm_producer_interrupted returns the count.
void tm_producer_catch_signals (void);
int tm_producer_interrupted (void);

//  Print "prefix: t=3.0s acked=... rate=.../s p50=..ms p99=..ms inflight=..
//  retries=.. refused=..", starting a new interval.
void tm_producer_print_progress (tm_producer_t *self, const char *prefix, double t_s,
                                 FILE *out);

//  Print the common summary fields as JSON members (no braces), each
//  followed by ", " except the last: readings_sent ... max_ms.
void tm_producer_print_json_fields (tm_producer_t *self, double elapsed_s, FILE *out);

//  Print why the run is not clean (refusals with their first detail, failed
//  and unacked batches), one line each with prefix. Returns the number of
//  batches not acked (0 = clean).
uint64_t tm_producer_print_problems (tm_producer_t *self, const char *prefix, FILE *out);

//  Write s as a JSON string (with quotes) to out.
void tm_producer_print_json_string (const char *s, FILE *out);

//  Selftest of the latency histogram and the window bookkeeping (offline).
void tm_producer_test (bool verbose);

//  One reading on one line, for --dry-run listings of sim and replay.
void tm_producer_print_reading (const tm_reading_t *r, FILE *out);

#endif
