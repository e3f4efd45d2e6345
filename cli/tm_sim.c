/*  tm_sim - twinctl sim: a simulated city feeding a gateway

    The load generator of the embedded cluster and of the benchmarks: N
    twins of three kinds (air-quality stations, traffic counters, parking
    bays), each with a district and a location, whose properties follow a
    diurnal cycle with a per-twin phase and amplitude, noise and rare
    spikes, clamped to physical ranges and rounded to what each sensor
    reports (0.1 for air quality and weather, whole counts). Everything is
    deterministic from the seed, so two runs with the same settings send
    the same readings.

    Readings are generated round-robin: round r gives every series (twin,
    property) one reading at start_time + r * step, property-major so that
    consecutive readings belong to different twins and a batch spreads over
    many shards. Every series' timestamps strictly increase, so no two
    readings of a run are duplicates and "acked" equals "applied" (tests
    rely on it). The model name rides on each twin's first reading.

    It has to outrun the cluster (target 1M readings/s on 2 cores, the
    generator must not be the limit at ~1.5M/s): entity ids are formatted
    once, readings are encoded straight into one reused batch buffer with
    tm_wire_encode, and nothing is allocated per reading.
*/
#include "tm_sim.h"
#include "tm_config.h"
#include "tm_log.h"
#include "tm_producer.h"
#include "tm_util.h"
#include "tm_wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_DAY_MS 86400000LL
#define S_MAX_PROPS 5              //  Properties of the richest kind
#define S_MAX_TWINS 10000000       //  Sanity bound for --twins
#define S_MAX_CITY 64              //  Bytes of --city (entity ids stay under 128)
#define S_SHOW_READINGS 10         //  Readings printed by --dry-run

static const tm_setting_t s_settings[] = {
    TM_PRODUCER_SETTINGS,
    {"twins", TM_CFG_INT, "1000", "number of simulated twins"},
    {"rate", TM_CFG_INT, "0", "target readings/s (0 = as fast as the window allows)"},
    {"duration", TM_CFG_DURATION, "10s", "how long to send (0 = until Ctrl-C)"},
    {"seed", TM_CFG_INT, "1", "seed of the twins and their values (same seed, same readings)"},
    {"start_time", TM_CFG_INT, NULL,
     "timestamp in ms of every series' first reading (default: now minus the history "
     "this run will generate)"},
    {"step", TM_CFG_DURATION, "1s", "simulated time between two readings of one series"},
    {"city", TM_CFG_STR, "milan",
     "city, the entity id prefix (districts and coordinates are Milan's)"},
    {"list_twins", TM_CFG_INT, "0",
     "print the first N twins as CSV (id, kind, model, district, lat, lon) and exit"},
};

//  ---------------------------------------------------------------------
//  The city: kinds, their properties, districts

typedef struct {
    const char *name;              //  Property name on the wire
    double base;                   //  Daily mean
    double amp;                    //  Diurnal amplitude (negative: dips at peak_hour)
    double peak_hour;              //  Hour of the day the cycle peaks (local time)
    double noise;                  //  Standard deviation of the noise
    double spike_prob;             //  Probability of a spike per reading
    double spike;                  //  Spike size (added, times 1-2)
    double min, max;               //  Physical range the value is clamped to
    int decimals;                  //  Digits after the point the sensor reports
} s_prop_t;

typedef struct {
    const char *name;              //  Kind, in entity ids ("air")
    const char *model;             //  Model name sent on the twin's first reading
    size_t nprops;                 //  Properties used
    s_prop_t props[S_MAX_PROPS];   //  Their behaviour
} s_kind_t;

enum { S_AIR, S_TRAFFIC, S_PARKING, S_KINDS };

static const s_kind_t s_kinds[S_KINDS] = {
    {"air", "air_station", 5, {
        {"pm25", 18, 8, 9, 3, 0.002, 60, 0, 500, 1},
        {"pm10", 28, 10, 9, 5, 0.002, 80, 0, 600, 1},
        {"no2", 40, 15, 8, 6, 0.002, 90, 0, 400, 1},
        {"temperature", 14, 6, 15, 0.5, 0, 0, -30, 50, 1},
        {"humidity", 65, -15, 15, 3, 0, 0, 0, 100, 1}}},
    {"traffic", "traffic_counter", 2, {
        {"vehicles", 300, 250, 17, 40, 0.003, 400, 0, 5000, 0},
        {"speed_kmh", 40, -12, 17, 5, 0.001, -25, 0, 130, 0}}},
    {"parking", "parking_bay", 1, {
        {"occupied", 0, 0, 13, 0, 0, 0, 0, 1, 0}}},
};

typedef struct {
    const char *name;              //  District name
    double lat, lon;               //  Approximate centre
} s_district_t;

static const s_district_t s_districts[] = {
    {"Centro Storico", 45.4642, 9.1900},
    {"Brera", 45.4719, 9.1873},
    {"Navigli", 45.4515, 9.1760},
    {"Porta Romana", 45.4520, 9.2030},
    {"Isola", 45.4870, 9.1890},
    {"Citta Studi", 45.4780, 9.2270},
    {"San Siro", 45.4780, 9.1240},
    {"Lambrate", 45.4840, 9.2410},
    {"Bicocca", 45.5140, 9.2110},
};
#define S_DISTRICTS (sizeof s_districts / sizeof s_districts[0])

//  Milan is UTC+1 (CET) for the diurnal cycle; DST is ignored.
#define S_CITY_UTC_OFFSET_MS 3600000LL

typedef struct {
    char id[S_MAX_CITY + 32];      //  Entity id, formatted once
    uint8_t kind;                  //  S_AIR, S_TRAFFIC, S_PARKING
    uint8_t district;              //  Index into s_districts
    bool announced;                //  Model already sent on a reading
    bool occupied;                 //  Parking bays: current state
    double lat, lon;               //  Location, WGS84
    double scale;                  //  Per-twin multiplier of the daily means
    double amp;                    //  Per-twin multiplier of the amplitudes
    double phase;                  //  Per-twin shift of the cycle, radians
} s_twin_t;

typedef struct {
    uint32_t twin;                 //  Index into twins
    uint32_t prop;                 //  Index into the twin's kind's props
} s_series_t;

typedef struct {
    s_twin_t *twins;               //  The city
    size_t ntwins;                 //  Number of twins
    s_series_t *schedule;          //  One round: every series once, property-major
    size_t round_len;              //  Entries in schedule
    size_t cursor;                 //  Next schedule entry
    uint64_t round;                //  Rounds completed
    int64_t start_ms;              //  Timestamp of round 0
    int64_t step_ms;               //  Timestamp advance per round
    uint64_t rng;                  //  Value noise generator state
    char name[S_MAX_CITY + 1];     //  City name, the prefix of ids and district ids
} s_city_t;

//  splitmix64: seeds and per-twin streams.
static uint64_t
s_mix (uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

//  xorshift64*: the hot-path generator, uniform in [0, 1).
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

//  Roughly normal, unit variance (Irwin-Hall of four): cheaper than
//  Box-Muller and smooth enough for sensor noise.
static double
s_gauss (uint64_t *state)
{
    double sum = s_uniform (state) + s_uniform (state) + s_uniform (state) + s_uniform (state);
    return (sum - 2.0) * 1.7320508075688772;
}

static void
s_city_destroy (s_city_t *city)
{
    free (city->twins);
    free (city->schedule);
    memset (city, 0, sizeof *city);
}

static int
s_city_init (s_city_t *city, const char *name, size_t ntwins, uint64_t seed)
{
    memset (city, 0, sizeof *city);
    snprintf (city->name, sizeof city->name, "%s", name);
    city->twins = calloc (ntwins, sizeof *city->twins);
    if (!city->twins)
        return -1;
    city->ntwins = ntwins;
    for (size_t i = 0; i < ntwins; i++) {
        s_twin_t *tw = &city->twins[i];
        uint64_t st = seed * 0x9E3779B97F4A7C15ULL ^ (uint64_t) i;
        s_mix (&st);
        uint64_t r = s_mix (&st) | 1;
        double u = s_uniform (&r);
        tw->kind = u < 0.4? S_AIR: u < 0.7? S_TRAFFIC: S_PARKING;
        tw->district = (uint8_t) (s_uniform (&r) * S_DISTRICTS);
        //  About 600 m of scatter around the district centre (1 deg lat ~ 111 km).
        tw->lat = s_districts[tw->district].lat + s_gauss (&r) * 0.0055;
        tw->lon = s_districts[tw->district].lon + s_gauss (&r) * 0.0078;
        tw->scale = 0.7 + 0.6 * s_uniform (&r);
        tw->amp = 0.8 + 0.4 * s_uniform (&r);
        tw->phase = (s_uniform (&r) - 0.5) * 0.52;      //  +-1 hour
        tw->occupied = s_uniform (&r) < 0.5;
        snprintf (tw->id, sizeof tw->id, "%s/%s-%06zu", name, s_kinds[tw->kind].name, i);
    }
    for (size_t i = 0; i < ntwins; i++)
        city->round_len += s_kinds[city->twins[i].kind].nprops;
    city->schedule = calloc (city->round_len, sizeof *city->schedule);
    if (!city->schedule)
        return -1;
    size_t n = 0;
    for (uint32_t p = 0; p < S_MAX_PROPS; p++)
        for (size_t i = 0; i < ntwins; i++)
            if (p < s_kinds[city->twins[i].kind].nprops)
                city->schedule[n++] = (s_series_t) {(uint32_t) i, p};
    city->rng = seed ^ 0xD1B54A32D192ED03ULL;
    s_mix (&city->rng);
    city->rng |= 1;
    return 0;
}

//  The value of one series at one time.
static double
s_value (s_city_t *city, s_twin_t *tw, const s_prop_t *pr, int64_t ts_ms)
{
    double tod = (double) ((ts_ms + S_CITY_UTC_OFFSET_MS) % S_DAY_MS) / (double) S_DAY_MS;
    double angle = 2 * M_PI * (tod - pr->peak_hour / 24.0) + tw->phase;
    if (tw->kind == S_PARKING) {
        //  Bays change hands most around midday and least at night.
        double busy = 0.5 + 0.5 * cos (angle);
        if (s_uniform (&city->rng) < 0.03 + 0.25 * busy)
            tw->occupied = !tw->occupied;
        return tw->occupied? 1: 0;
    }
    double v = pr->base * tw->scale + pr->amp * tw->amp * cos (angle)
             + pr->noise * s_gauss (&city->rng);
    if (pr->spike_prob > 0 && s_uniform (&city->rng) < pr->spike_prob)
        v += pr->spike * (1 + s_uniform (&city->rng));
    v = v < pr->min? pr->min: v > pr->max? pr->max: v;
    //  Round as the sensor reports (pm25 to 0.1 ug/m3, counts to 1): the
    //  result is the double nearest the decimal, as a parsed "12.3" is,
    //  which is what history compression and real feeds see.
    static const double scale[] = {1, 10, 100};
    double f = scale[pr->decimals < 0? 0: pr->decimals > 2? 2: pr->decimals];
    return floor (v * f + 0.5) / f;
}

//  Encode the next n readings into buf; returns the bytes used (0 if the
//  buffer is too small, which the sizing in tm_sim_main rules out).
static size_t
s_city_fill (s_city_t *city, uint8_t *buf, size_t cap, size_t n)
{
    size_t used = 0;
    int64_t ts = city->start_ms + (int64_t) city->round * city->step_ms;
    for (size_t i = 0; i < n; i++) {
        const s_series_t *se = &city->schedule[city->cursor];
        s_twin_t *tw = &city->twins[se->twin];
        const s_kind_t *kind = &s_kinds[tw->kind];
        const s_prop_t *pr = &kind->props[se->prop];
        double v = s_value (city, tw, pr, ts);
        const char *model = NULL;
        //  The model and the attributes (district, location) ride on the
        //  twin's first reading only: queries group and filter on them.
        char district[S_MAX_CITY + 64], location[96];
        tm_wire_attr_t attrs[2];
        size_t nattrs = 0;
        if (!tw->announced) {
            model = kind->model;
            tw->announced = true;
            int dl = snprintf (district, sizeof district, "\"%s/district/%s\"", city->name,
                               s_districts[tw->district].name);
            int ll = snprintf (location, sizeof location, "{\"lat\":%.6f,\"lon\":%.6f}",
                               tw->lat, tw->lon);
            attrs[0] = (tm_wire_attr_t) {"district", 8, district, (size_t) dl};
            attrs[1] = (tm_wire_attr_t) {"location", 8, location, (size_t) ll};
            nattrs = 2;
        }
        size_t wrote = tm_wire_encode_attrs (buf + used, cap - used, tw->id, pr->name, v, ts,
                                             model, attrs, nattrs);
        if (wrote == 0)
            return 0;
        used += wrote;
        if (++city->cursor == city->round_len) {
            city->cursor = 0;
            city->round++;
            ts += city->step_ms;
        }
    }
    return used;
}

//  ---------------------------------------------------------------------

typedef struct {
    tm_producer_t *producer;       //  NULL in a dry run
    int64_t t0_us;                 //  Start of sending
    uint64_t encoded;              //  Readings encoded (dry run progress)
    uint64_t last_encoded;         //  encoded at the previous progress line
    int64_t last_print_us;         //  Time of the previous progress line
} s_run_t;

static void
s_progress (void *arg)
{
    s_run_t *run = (s_run_t *) arg;
    int64_t now = tm_util_mono_us ();
    double t = (double) (now - run->t0_us) / 1e6;
    if (run->producer)
        tm_producer_print_progress (run->producer, "sim", t, stderr);
    else {
        double dt = (double) (now - run->last_print_us) / 1e6;
        fprintf (stderr, "sim: t=%.1fs encoded=%llu rate=%.0f/s (dry run)\n", t,
                 (unsigned long long) run->encoded,
                 dt > 0? (double) (run->encoded - run->last_encoded) / dt: 0.0);
        run->last_encoded = run->encoded;
    }
    run->last_print_us = now;
}

static void
s_list_twins (s_city_t *city, size_t count)
{
    printf ("id,kind,model,district,lat,lon\n");
    for (size_t i = 0; i < count && i < city->ntwins; i++) {
        const s_twin_t *tw = &city->twins[i];
        printf ("%s,%s,%s,%s,%.6f,%.6f\n", tw->id, s_kinds[tw->kind].name,
                s_kinds[tw->kind].model, s_districts[tw->district].name, tw->lat, tw->lon);
    }
}

int
tm_sim_main (int argc, char **argv)
{
    int exit_code = 2;
    s_city_t city = {0};
    uint8_t *buf = NULL;
    s_run_t run = {0};
    tm_config_t *cfg = tm_config_new ("twinctl sim", "twinctl sim [options]", s_settings,
                                      sizeof s_settings / sizeof s_settings[0]);
    if (!cfg)
        return 2;
    int rc = tm_config_load (cfg, argc, argv);
    if (rc == TM_CONFIG_E_HELP || rc == TM_CONFIG_E_SAMPLE) {
        exit_code = 0;
        goto done;
    }
    if (rc != 0)
        goto done;
    if (tm_config_argc (cfg) > 0) {
        fprintf (stderr, "twinctl sim: unexpected argument '%s' (see --help)\n",
                 tm_config_arg (cfg, 0));
        goto done;
    }
    if (tm_producer_log_setup (cfg, "twinctl") != 0)
        goto done;

    int64_t ntwins = tm_config_int (cfg, "twins");
    int64_t rate = tm_config_int (cfg, "rate");
    int64_t duration_ms = tm_config_int (cfg, "duration");
    int64_t batch = tm_config_int (cfg, "batch");
    int64_t step_ms = tm_config_int (cfg, "step");
    int64_t list = tm_config_int (cfg, "list_twins");
    int64_t print_ms = tm_config_int (cfg, "print_interval");
    const char *city_name = tm_config_str (cfg, "city");
    bool dry_run = tm_config_bool (cfg, "dry_run");
    bool json = tm_config_bool (cfg, "json");
    if (ntwins < 1 || ntwins > S_MAX_TWINS) {
        fprintf (stderr, "twinctl sim: --twins must be 1 to %d\n", S_MAX_TWINS);
        goto done;
    }
    if (rate < 0 || batch < 1 || batch > 1000000 || step_ms < 1 || duration_ms < 0
        || list < 0) {
        fprintf (stderr, "twinctl sim: --rate, --duration, --list-twins must be >= 0, --batch "
                         "1 to 1000000, --step at least 1ms\n");
        goto done;
    }
    if (!city_name || !*city_name || strlen (city_name) > S_MAX_CITY
        || !tm_util_utf8_valid (city_name, strlen (city_name))) {
        fprintf (stderr, "twinctl sim: --city must be 1 to %d bytes of UTF-8\n", S_MAX_CITY);
        goto done;
    }
    if (s_city_init (&city, city_name, (size_t) ntwins, (uint64_t) tm_config_int (cfg, "seed"))
        != 0) {
        fprintf (stderr, "twinctl sim: out of memory for %lld twins\n", (long long) ntwins);
        goto done;
    }
    if (list > 0) {
        s_list_twins (&city, (size_t) list);
        exit_code = 0;
        goto done;
    }
    city.step_ms = step_ms;
    if (tm_config_str (cfg, "start_time"))
        city.start_ms = tm_config_int (cfg, "start_time");
    else {
        //  Enough history that the last reading lands near now: assume
        //  1.5M/s when unthrottled and an hour when unbounded.
        double expected = (double) (rate > 0? rate: 1500000)
                        * (duration_ms > 0? (double) duration_ms / 1000.0: 3600.0);
        int64_t rounds = (int64_t) (expected / (double) city.round_len) + 1;
        city.start_ms = tm_util_wall_ms () - rounds * step_ms;
    }
    if (city.start_ms <= 0) {
        fprintf (stderr, "twinctl sim: --start-time must be positive (ms since 1970)\n");
        goto done;
    }

    //  Each reading may be a twin's first, with its two attributes.
    size_t cap = (size_t) batch * (tm_wire_encoded_max (strlen (city.twins[0].id) + 8, 16, 16)
                                   + 2 * S_MAX_CITY + 200);
    buf = malloc (cap);
    if (!buf) {
        fprintf (stderr, "twinctl sim: out of memory for the batch buffer\n");
        goto done;
    }
    if (!dry_run) {
        run.producer = tm_producer_from_config (cfg);
        if (!run.producer) {
            exit_code = 1;
            goto done;
        }
    }
    tm_producer_catch_signals ();
    tm_info ("sim: start twins=%zu series=%zu rate=%lld batch=%lld start_time=%lld dry_run=%d",
             city.ntwins, city.round_len, (long long) rate, (long long) batch,
             (long long) city.start_ms, dry_run);

    //  The send loop: a token bucket of readings (refilled at `rate`,
    //  holding up to two batches) gates each batch; the producer's window
    //  gates it again. Waiting always pumps acks.
    uint64_t invalid = 0, bytes = 0, batches = 0;
    int64_t t0 = tm_util_mono_us ();
    int64_t end = duration_ms > 0? t0 + duration_ms * 1000: INT64_MAX;
    int64_t print_us = print_ms > 0? print_ms * 1000: INT64_MAX / 4;
    int64_t next_print = t0 + print_us;
    double tokens = (double) batch, bucket = 2.0 * (double) batch;
    int64_t refilled = t0;
    run.t0_us = run.last_print_us = t0;
    while (tm_producer_interrupted () == 0) {
        int64_t now = tm_util_mono_us ();
        if (now >= end)
            break;
        if (now >= next_print) {
            s_progress (&run);
            next_print += print_us;
            if (next_print <= now)
                next_print = now + print_us;
        }
        int64_t wake = next_print < end? next_print: end;
        if (rate > 0) {
            tokens += (double) rate * (double) (now - refilled) / 1e6;
            refilled = now;
            if (tokens > bucket)
                tokens = bucket;
            if (tokens < (double) batch) {
                int64_t need = now + (int64_t) (((double) batch - tokens) * 1e6 / (double) rate);
                if (need < wake)
                    wake = need;
                int wait_ms = (int) ((wake - now + 999) / 1000);
                if (run.producer)
                    tm_producer_pump (run.producer, wait_ms);
                else
                    nanosleep (&(struct timespec) {wait_ms / 1000, (wait_ms % 1000) * 1000000L},
                               NULL);
                continue;
            }
        }
        if (run.producer && !tm_producer_ready (run.producer)) {
            int64_t wait_ms = (wake - now + 999) / 1000;
            tm_producer_pump (run.producer, (int) (wait_ms < 100? wait_ms: 100));
            continue;
        }
        size_t size = s_city_fill (&city, buf, cap, (size_t) batch);
        if (size == 0) {
            fprintf (stderr, "twinctl sim: internal error: batch buffer too small\n");
            exit_code = 1;
            goto done;
        }
        tokens -= (double) batch;
        batches++;
        bytes += size;
        run.encoded += (uint64_t) batch;
        if (dry_run) {
            const char *error = NULL;
            size_t bad = 0;
            if (tm_wire_validate (buf, size, &error, &bad) != batch) {
                if (invalid++ == 0)
                    fprintf (stderr, "sim: invalid batch: reading %zu: %s\n", bad, error);
            }
            if (batches == 1) {
                tm_wire_iter_t it;
                tm_reading_t r;
                tm_wire_iter_init (&it, buf, size);
                fprintf (stderr, "sim: first readings:\n");
                for (int i = 0; i < S_SHOW_READINGS && tm_wire_next (&it, &r) == 1; i++)
                    tm_producer_print_reading (&r, stderr);
            }
        }
        else {
            if (tm_producer_submit (run.producer, buf, size, (size_t) batch) != 0)
                break;
            tm_producer_pump (run.producer, 0);
            //  Every batch comes from the same generator: once one is
            //  refused, the rest would be too.
            tm_producer_stats_t st;
            tm_producer_stats (run.producer, &st);
            if (st.refused > 0) {
                fprintf (stderr, "sim: stopping: the gateway refused a batch\n");
                break;
            }
        }
    }

    //  One Ctrl-C stopped the input; a second one gives up the drain.
    if (run.producer) {
        tm_producer_set_stop_level (run.producer, 2);
        int drc = tm_producer_drain (run.producer, tm_config_int (cfg, "drain_timeout"),
                                     s_progress, &run, print_ms);
        if (drc == TM_PRODUCER_E_TIMEOUT)
            fprintf (stderr, "sim: drain timed out with batches in flight\n");
        else
        if (drc == TM_PRODUCER_E_STOPPED)
            fprintf (stderr, "sim: drain interrupted with batches in flight\n");
    }
    double elapsed = (double) (tm_util_mono_us () - t0) / 1e6;

    if (dry_run) {
        fprintf (stderr,
                 "sim: dry run: twins=%zu readings=%llu batches=%llu bytes=%llu "
                 "(%.1f per reading) invalid_batches=%llu t=%.1fs encode_rate=%.0f/s\n",
                 city.ntwins, (unsigned long long) run.encoded, (unsigned long long) batches,
                 (unsigned long long) bytes, run.encoded? (double) bytes / run.encoded: 0.0,
                 (unsigned long long) invalid, elapsed,
                 elapsed > 0? (double) run.encoded / elapsed: 0.0);
        if (json)
            printf ("{\"dry_run\": true, \"twins\": %zu, \"readings_sent\": 0, "
                    "\"readings_encoded\": %llu, \"batches\": %llu, \"bytes\": %llu, "
                    "\"invalid_batches\": %llu, \"duration_s\": %.3f, \"rate_per_s\": %.0f}\n",
                    city.ntwins, (unsigned long long) run.encoded, (unsigned long long) batches,
                    (unsigned long long) bytes, (unsigned long long) invalid, elapsed,
                    elapsed > 0? (double) run.encoded / elapsed: 0.0);
        exit_code = invalid? 1: 0;
        goto done;
    }

    tm_producer_stats_t st;
    tm_producer_stats (run.producer, &st);
    fprintf (stderr,
             "sim: done t=%.1fs twins=%zu sent=%llu acked=%llu rate=%.0f/s p50=%.1fms "
             "p99=%.1fms p999=%.1fms max=%.1fms batches=%llu retries=%llu timeouts=%llu "
             "refused=%llu failed=%llu\n",
             elapsed, city.ntwins, (unsigned long long) st.readings_sent,
             (unsigned long long) st.readings_acked,
             elapsed > 0? (double) st.readings_acked / elapsed: 0.0,
             tm_producer_latency_ms (run.producer, 0.50),
             tm_producer_latency_ms (run.producer, 0.99),
             tm_producer_latency_ms (run.producer, 0.999),
             tm_producer_latency_max_ms (run.producer), (unsigned long long) st.batches,
             (unsigned long long) st.retries, (unsigned long long) st.timeouts,
             (unsigned long long) st.refused, (unsigned long long) st.failed);
    uint64_t problems = tm_producer_print_problems (run.producer, "sim", stderr);
    if (json) {
        printf ("{\"twins\": %zu, \"series\": %zu, \"start_time\": %lld, ", city.ntwins,
                city.round_len, (long long) city.start_ms);
        tm_producer_print_json_fields (run.producer, elapsed, stdout);
        printf ("}\n");
    }
    exit_code = problems? 1: 0;

done:
    tm_producer_destroy (&run.producer);
    free (buf);
    s_city_destroy (&city);
    tm_config_destroy (&cfg);
    return exit_code;
}
