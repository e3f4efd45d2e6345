/*  redis_ingest - the ingest benchmark's baseline: the same job, done with Redis

    What a user would build with Redis instead of twinmesh to keep the latest
    value of every sensed property and its history: per reading

        HSET twin:<entity> <prop> <value> <prop>_ts <ts>     (latest value)
        XADD hist:<entity>:<prop> <ts>-1 v <value>           (history)

    The stream id is the reading's own timestamp, so a repeated reading is
    refused by XADD (an id not above the stream's top) instead of stored
    twice: the closest plain Redis commands get to our idempotency per
    series and timestamp. A refusal is counted in "errors"; a clean run has
    none, since every series' timestamps increase. HSET still overwrites
    unconditionally: a late reading would replace a newer latest value,
    which twinmesh does not do (a Lua script could, at a further cost).

    The readings are `twinctl sim`'s (cli/tm_sim.c) in all but their values:
    the same twins for the same --seed (ids "<city>/<kind>-NNNNNN", the same
    kind for each index: air stations with 5 properties, traffic counters
    with 2, parking bays with 1), the same round robin (a round gives every
    series one reading, property-major, then the clock advances one --step),
    the same start time rule, the model stored with the twin's first
    reading (as a "model" field of its hash). The values are a plain daily
    cosine with noise, not the simulator's. Commands are pipelined in
    batches of --batch readings (2 commands each) with up to --window
    batches in flight on one connection, as sim keeps up to --window
    batches in flight on one producer socket. A batch's latency runs from
    the moment its last byte was handed to the socket to the moment its
    last reply was read (sim: from send to ack).

    Prints one JSON object with the same names as `twinctl sim --json`
    (readings_acked, rate_per_s, p50_ms, p99_ms, p999_ms, ...).

    Load: one thread, one connection; it is meant to saturate a single
    Redis server (itself single-threaded) on the same two cores.
*/
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define S_MAX_PROPS 5            //  properties of the richest kind

//  A kind of twin, as the simulator makes them.
typedef struct {
    const char *name;            //  kind, in entity ids: "<city>/<name>-<index>"
    const char *model;           //  model name, stored with the first reading
    int nprops;                  //  properties per twin of this kind
    const char *props[S_MAX_PROPS];  //  property names
    double base[S_MAX_PROPS];    //  daily mean per property
    double amp[S_MAX_PROPS];     //  daily amplitude per property
} s_kind_t;

//  Mirrors the kinds table of cli/tm_sim.c: names, models, properties.
enum { S_AIR, S_TRAFFIC, S_PARKING, S_KINDS };
static const s_kind_t s_kinds[S_KINDS] = {
    {"air", "air_station", 5, {"pm25", "pm10", "no2", "temperature", "humidity"},
     {18, 28, 40, 14, 65}, {8, 10, 15, 6, -15}},
    {"traffic", "traffic_counter", 2, {"vehicles", "speed_kmh"}, {300, 40}, {250, -12}},
    {"parking", "parking_bay", 1, {"occupied"}, {0.5}, {0.5}},
};

#define S_MAX_WINDOW 1024
#define S_MAX_BATCH 100000
#define S_MAX_TWINS 10000000
#define S_MAX_CITY 64
#define S_ARGS 8                 //  longest command: HSET key f v f_ts ts model m

typedef struct {
    char id[S_MAX_CITY + 32];    //  entity id
    uint8_t kind;                //  index into s_kinds
    bool announced;              //  model already stored
    double phase;                //  per-twin offset of its daily curve
} s_twin_t;

typedef struct {
    uint32_t twin;               //  index into twins
    uint32_t prop;               //  index into the twin's kind's props
} s_series_t;

typedef struct {
    //  Settings
    const char *host;            //  Redis host (127.0.0.1 only, by policy)
    int port;                    //  Redis port
    const char *city;            //  entity id prefix, as sim's --city
    long twins;                  //  number of twins
    long batch;                  //  readings per batch
    long window;                 //  batches in flight
    double duration_s;           //  sending time
    int64_t step_ms;             //  simulated time per round
    uint64_t seed;               //  seeds the twins, as sim's --seed
    bool json;                   //  JSON summary (else a text line)
    //  State
    redisContext *redis;         //  the connection
    s_twin_t *twin;              //  the twins, twins entries
    s_series_t *schedule;        //  one round: every series once, property-major
    size_t round_len;            //  entries in schedule (= series)
    size_t cursor;               //  next schedule entry
    int64_t sim_ts;              //  simulated time of the current round
    uint64_t rng;                //  value noise
    double *lat_ms;              //  per-batch latency samples
    size_t nlat;                 //  samples used
    size_t lat_cap;              //  samples allocated
    uint64_t errors;             //  error replies (e.g. XADD id not above top)
    char first_error[200];       //  text of the first error reply
} s_bench_t;

typedef struct {
    double sent_at;              //  monotonic seconds when its bytes were written
    long readings;               //  readings in it
} s_flight_t;

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int64_t
s_wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

//  splitmix64: a small deterministic generator for phases and noise
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

//  xorshift64*, uniform in [0, 1): the simulator's per-twin draws
static double
s_uniform (uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (double) ((x * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static int
s_parse_duration_s (const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod (text, &end);
    if (errno || end == text || v < 0)
        return -1;
    //  A bare number is milliseconds, as in twinctl's durations
    if (*end == 0 || strcmp (end, "ms") == 0)
        *out = v / 1000;
    else
    if (strcmp (end, "s") == 0)
        *out = v;
    else
    if (strcmp (end, "m") == 0)
        *out = v * 60;
    else
        return -1;
    return 0;
}

static int
s_parse_long (const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol (text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: redis_ingest [--host 127.0.0.1] --port PORT [--twins 10000] [--city milan]\n"
             "         [--batch 1000] [--window 8] [--duration 10s] [--step 1000ms]\n"
             "         [--seed 1] [--json]\n"
             "Writes simulated readings to Redis (HSET latest + XADD history per reading),\n"
             "pipelined in batches with a window in flight; prints readings/s and per-batch\n"
             "latency. Durations take ms, s or m; a bare number is milliseconds.\n");
}

static int
s_parse_args (s_bench_t *self, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp (a, "--help") || !strcmp (a, "-h")) {
            s_usage (stdout);
            exit (0);
        }
        if (!strcmp (a, "--json")) {
            self->json = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf (stderr, "redis_ingest: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        long n;
        int rc = 0;
        if (!strcmp (a, "--host"))
            self->host = v;
        else
        if (!strcmp (a, "--port")) {
            rc = s_parse_long (v, 1, 65535, &n);
            self->port = (int) n;
        }
        else
        if (!strcmp (a, "--twins"))
            rc = s_parse_long (v, 1, S_MAX_TWINS, &self->twins);
        else
        if (!strcmp (a, "--city")) {
            self->city = v;
            rc = strlen (v) >= 1 && strlen (v) <= S_MAX_CITY? 0: -1;
        }
        else
        if (!strcmp (a, "--batch"))
            rc = s_parse_long (v, 1, S_MAX_BATCH, &self->batch);
        else
        if (!strcmp (a, "--window"))
            rc = s_parse_long (v, 1, S_MAX_WINDOW, &self->window);
        else
        if (!strcmp (a, "--duration"))
            rc = s_parse_duration_s (v, &self->duration_s);
        else
        if (!strcmp (a, "--step")) {
            double s;
            rc = s_parse_duration_s (v, &s);
            self->step_ms = (int64_t) (s * 1000);
            if (rc == 0 && self->step_ms < 1)
                rc = -1;
        }
        else
        if (!strcmp (a, "--seed")) {
            rc = s_parse_long (v, 0, LONG_MAX, &n);
            self->seed = (uint64_t) n;
        }
        else {
            fprintf (stderr, "redis_ingest: unknown option '%s'\n", a);
            s_usage (stderr);
            return -1;
        }
        if (rc != 0) {
            fprintf (stderr, "redis_ingest: bad value '%s' for %s\n", v, a);
            return -1;
        }
    }
    if (self->port == 0) {
        fprintf (stderr, "redis_ingest: --port is required\n");
        return -1;
    }
    return 0;
}

//  The twins and the round's schedule, drawn as tm_sim.c draws them so
//  that the same seed gives the same ids and kinds.
static int
s_make_twins (s_bench_t *self)
{
    self->twin = calloc ((size_t) self->twins, sizeof (s_twin_t));
    if (!self->twin)
        return -1;
    for (long i = 0; i < self->twins; i++) {
        s_twin_t *t = &self->twin[i];
        uint64_t st = self->seed * 0x9E3779B97F4A7C15ULL ^ (uint64_t) i;
        s_rand (&st);
        uint64_t r = s_rand (&st) | 1;
        double u = s_uniform (&r);
        t->kind = u < 0.4? S_AIR: u < 0.7? S_TRAFFIC: S_PARKING;
        t->phase = (s_uniform (&r) - 0.5) * 0.52;
        snprintf (t->id, sizeof t->id, "%s/%s-%06ld", self->city, s_kinds[t->kind].name, i);
        self->round_len += (size_t) s_kinds[t->kind].nprops;
    }
    self->schedule = calloc (self->round_len, sizeof (s_series_t));
    if (!self->schedule)
        return -1;
    size_t n = 0;
    for (uint32_t p = 0; p < S_MAX_PROPS; p++)
        for (long i = 0; i < self->twins; i++)
            if ((int) p < s_kinds[self->twin[i].kind].nprops)
                self->schedule[n++] = (s_series_t) {(uint32_t) i, p};
    self->rng = (self->seed ^ 0xD1B54A32D192ED03ULL) | 1;
    return 0;
}

//  Append the two commands of the next reading in the round robin.
static void
s_append_reading (s_bench_t *self)
{
    const s_series_t *se = &self->schedule[self->cursor];
    s_twin_t *t = &self->twin[se->twin];
    const s_kind_t *kind = &s_kinds[t->kind];
    int p = (int) se->prop;
    const char *prop = kind->props[p];
    int64_t ts = self->sim_ts;
    double day = (double) (ts % 86400000) / 86400000.0 * 2 * M_PI;
    double value = kind->base[p] + kind->amp[p] * cos (day + t->phase)
                   + fabs (kind->amp[p]) * 0.1 * (s_uniform (&self->rng) - 0.5);

    char key[S_MAX_CITY + 128], field_ts[80], val[32], tsbuf[24], id[32];
    int key_len = snprintf (key, sizeof key, "twin:%s", t->id);
    int fts_len = snprintf (field_ts, sizeof field_ts, "%s_ts", prop);
    int val_len = snprintf (val, sizeof val, "%.10g", value);
    int ts_len = snprintf (tsbuf, sizeof tsbuf, "%" PRId64, ts);
    const char *hset[S_ARGS] = {"HSET", key, prop, val, field_ts, tsbuf, "model", kind->model};
    size_t hset_len[S_ARGS] = {4, (size_t) key_len, strlen (prop), (size_t) val_len,
                               (size_t) fts_len, (size_t) ts_len, 5, strlen (kind->model)};
    //  The model rides on the twin's first reading, as in sim.
    redisAppendCommandArgv (self->redis, t->announced? S_ARGS - 2: S_ARGS, hset, hset_len);
    t->announced = true;

    key_len = snprintf (key, sizeof key, "hist:%s:%s", t->id, prop);
    int id_len = snprintf (id, sizeof id, "%" PRId64 "-1", ts);
    const char *xadd[5] = {"XADD", key, id, "v", val};
    size_t xadd_len[5] = {4, (size_t) key_len, (size_t) id_len, 1, (size_t) val_len};
    redisAppendCommandArgv (self->redis, 5, xadd, xadd_len);

    if (++self->cursor == self->round_len) {
        self->cursor = 0;
        self->sim_ts += self->step_ms;
    }
}

//  Write everything appended so far to the socket. 0 or -1.
static int
s_flush (s_bench_t *self)
{
    int done = 0;
    for (int guard = 0; !done; guard++) {
        if (redisBufferWrite (self->redis, &done) != REDIS_OK) {
            fprintf (stderr, "redis_ingest: write failed: %s\n", self->redis->errstr);
            return -1;
        }
        if (guard > 10000000) {
            fprintf (stderr, "redis_ingest: write does not progress\n");
            return -1;
        }
    }
    return 0;
}

//  Read the 2 * readings replies of one batch. 0 or -1.
static int
s_read_batch (s_bench_t *self, long readings)
{
    for (long i = 0; i < 2 * readings; i++) {
        redisReply *reply = NULL;
        if (redisGetReply (self->redis, (void **) &reply) != REDIS_OK || !reply) {
            fprintf (stderr, "redis_ingest: read failed: %s\n", self->redis->errstr);
            return -1;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            if (self->errors++ == 0)
                snprintf (self->first_error, sizeof self->first_error, "%s", reply->str);
        }
        freeReplyObject (reply);
    }
    return 0;
}

static int
s_record_latency (s_bench_t *self, double ms)
{
    if (self->nlat == self->lat_cap) {
        size_t cap = self->lat_cap? self->lat_cap * 2: 4096;
        double *grown = realloc (self->lat_ms, cap * sizeof (double));
        if (!grown)
            return -1;
        self->lat_ms = grown;
        self->lat_cap = cap;
    }
    self->lat_ms[self->nlat++] = ms;
    return 0;
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static double
s_quantile (const double *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t) ceil (q * (double) n);
    if (i > 0)
        i--;
    return sorted[i < n? i: n - 1];
}

int
main (int argc, char **argv)
{
    s_bench_t self = {.host = "127.0.0.1", .twins = 10000, .batch = 1000, .window = 8,
                      .duration_s = 10, .step_ms = 1000, .seed = 1, .city = "milan"};
    int rc = 1;
    s_flight_t *flight = NULL;
    if (s_parse_args (&self, argc, argv) != 0)
        return 2;
    if (s_make_twins (&self) != 0)
        goto cleanup;
    flight = calloc ((size_t) self.window, sizeof (s_flight_t));
    if (!flight)
        goto cleanup;

    struct timeval tv = {10, 0};
    self.redis = redisConnectWithTimeout (self.host, self.port, tv);
    if (!self.redis || self.redis->err) {
        fprintf (stderr, "redis_ingest: cannot connect to %s:%d: %s\n", self.host, self.port,
                 self.redis? self.redis->errstr: "out of memory");
        goto cleanup;
    }
    //  Bounds every blocking read and write: a stuck server fails the run.
    redisSetTimeout (self.redis, tv);

    //  sim's start time rule: enough history that the last reading lands
    //  near now, assuming 1.5 million readings/s.
    int64_t rounds = (int64_t) (1500000.0 * self.duration_s / (double) self.round_len) + 1;
    self.sim_ts = s_wall_ms () - rounds * self.step_ms;
    long head = 0, count = 0;         //  ring of batches in flight
    uint64_t batches = 0, readings_sent = 0, readings_acked = 0;
    double start = s_now ();
    double stop_at = start + self.duration_s;

    //  Send while there is time; then drain. Each turn either sends one
    //  batch (window not full) or settles the oldest one.
    for (uint64_t turn = 0; turn < UINT64_MAX / 2; turn++) {
        bool sending = s_now () < stop_at;
        if (sending && count < self.window) {
            for (long r = 0; r < self.batch; r++)
                s_append_reading (&self);
            if (s_flush (&self) != 0)
                goto cleanup;
            s_flight_t *f = &flight[(head + count) % self.window];
            f->sent_at = s_now ();
            f->readings = self.batch;
            count++;
            batches++;
            readings_sent += (uint64_t) self.batch;
            continue;
        }
        if (count == 0)
            break;
        s_flight_t *f = &flight[head];
        if (s_read_batch (&self, f->readings) != 0)
            goto cleanup;
        if (s_record_latency (&self, (s_now () - f->sent_at) * 1000) != 0)
            goto cleanup;
        readings_acked += (uint64_t) f->readings;
        head = (head + 1) % self.window;
        count--;
    }
    double elapsed = s_now () - start;

    qsort (self.lat_ms, self.nlat, sizeof (double), s_cmp_double);
    double p50 = s_quantile (self.lat_ms, self.nlat, 0.50);
    double p99 = s_quantile (self.lat_ms, self.nlat, 0.99);
    double p999 = s_quantile (self.lat_ms, self.nlat, 0.999);
    double maxl = self.nlat? self.lat_ms[self.nlat - 1]: 0;
    double rate = elapsed > 0? (double) readings_acked / elapsed: 0;
    if (self.json) {
        printf ("{\"readings_sent\": %" PRIu64 ", \"readings_acked\": %" PRIu64
                ", \"batches\": %" PRIu64 ", \"errors\": %" PRIu64
                ", \"elapsed_s\": %.3f, \"rate_per_s\": %.1f"
                ", \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f"
                ", \"twins\": %ld, \"series\": %zu, \"batch\": %ld, \"window\": %ld"
                ", \"commands_per_reading\": 2",
                readings_sent, readings_acked, batches, self.errors, elapsed, rate, p50, p99,
                p999, maxl, self.twins, self.round_len, self.batch, self.window);
        if (self.errors) {
            printf (", \"first_error\": \"");
            for (const char *p = self.first_error; *p; p++)
                if (*p != '"' && *p != '\\' && (unsigned char) *p >= 0x20)
                    putchar (*p);
            printf ("\"");
        }
        printf ("}\n");
    }
    else
        printf ("redis_ingest: acked=%" PRIu64 " in %.2fs rate=%.0f/s p50=%.2fms "
                "p99=%.2fms p99.9=%.2fms max=%.2fms errors=%" PRIu64 "\n",
                readings_acked, elapsed, rate, p50, p99, p999, maxl, self.errors);
    if (self.errors)
        fprintf (stderr, "redis_ingest: %" PRIu64 " error replies, first: %s\n", self.errors,
                 self.first_error);
    rc = 0;

cleanup:
    if (self.redis)
        redisFree (self.redis);
    free (flight);
    free (self.twin);
    free (self.schedule);
    free (self.lat_ms);
    return rc;
}
