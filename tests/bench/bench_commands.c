/*  bench_commands - what desired values cost tm_twins_apply

    The apply path must stay cheap for twins without commands (one pointer
    test, tm_twin_t.commands). This prints ns per tm_twins_apply over
    10,000 twins x 8 properties, readings in time order, in three set-ups:
    no commands module at all (the hooks unset), the module installed and
    no desired values (every twin pays the pointer test), and every twin
    with a desired value on one property that the readings never report
    (the hook runs on each reading of those twins and compares names).
    The best of 5 rounds each.

    Usage: bench_commands [readings]   (default 4 million per round; ~3 s)
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tm_commands.h"
#include "tm_util.h"

#define S_TWINS 10000
#define S_PROPS 8
#define S_ROUNDS 5

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";
static char s_entity[S_TWINS][32];
static const char *s_props[S_PROPS] = {"pm25", "pm10", "no2", "o3", "temp", "rh", "co", "so2"};

static double
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double
s_round (tm_twins_t *twins, long n, int64_t *ts)
{
    tm_reading_t r = {0};
    double t0 = s_now_ns ();
    for (long i = 0; i < n; i++) {
        long k = i % (S_TWINS * S_PROPS);
        if (k == 0)
            (*ts)++;
        r.entity = s_entity[k / S_PROPS];
        r.entity_len = strlen (r.entity);
        r.property = s_props[k % S_PROPS];
        r.property_len = strlen (r.property);
        r.value = (double) (i & 1023);
        r.ts_ms = *ts;
        tm_twins_apply (twins, &r, s_key, 1024, 1000);
    }
    return (s_now_ns () - t0) / (double) n;
}

int
main (int argc, char *argv[])
{
    long n = argc > 1? atol (argv[1]): 4000000;
    for (int i = 0; i < S_TWINS; i++)
        snprintf (s_entity[i], sizeof s_entity[i], "bench/twin-%05d", i);
    char dir[] = "/tmp/bench_commands-XXXXXX";
    if (!mkdtemp (dir))
        return 1;
    tm_store_t *store = tm_store_open (dir);
    const char *names[] = {"no commands module", "module, no desired values",
                           "every twin has a desired value"};
    for (int setup = 0; setup < 3 && store; setup++) {
        tm_twins_t *twins = tm_twins_new ();
        tm_commands_t *cmds = setup > 0? tm_commands_new (store, twins, NULL, "bench"): NULL;
        int64_t ts = 1000;
        s_round (twins, S_TWINS * S_PROPS, &ts);     //  make every twin and series
        for (int i = 0; setup == 2 && i < S_TWINS; i++) {
            tm_command_change_t c = {.property = "valve", .value = 1};
            tm_command_outcome_t out;
            char detail[128];
            tm_commands_set (cmds, s_entity[i], strlen (s_entity[i]),
                             tm_shardmap_hash (s_key, 1024, s_entity[i], strlen (s_entity[i])),
                             &c, 1, 0, 1000, "bench", &out, detail, sizeof detail);
        }
        double best = 1e9;
        for (int k = 0; k < S_ROUNDS; k++) {
            double ns = s_round (twins, n, &ts);
            best = ns < best? ns: best;
        }
        printf ("%-32s %6.1f ns per tm_twins_apply (best of %d x %ld)\n", names[setup], best,
                S_ROUNDS, n);
        tm_commands_destroy (&cmds);
        tm_twins_destroy (&twins);
    }
    tm_store_destroy (&store);
    tm_util_rm_rf (dir);
    return 0;
}
