/*  test_analytics - per-property analytics and the twin sync status

    The online recurrences are checked against a naive reference that keeps
    every reading in an array and recomputes from scratch: two-pass mean
    and variance in long double, min and max by scanning, the EWMA and
    Holt's recurrences replayed from the first reading (Holt written in its
    textbook "alpha x + (1 - alpha) forecast" form, not the incremental one
    the module uses). Then the behaviours issue #3 asks for, one test each:
    spikes flagged and smooth data not, streaks into error and back,
    staleness by timer, exact forecasts of linear series, time to limit,
    irregular steps, and values near 1e9 with tiny variances.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_analytics.h"

#define S_MAXN 4000

//  A small deterministic generator, so a failure replays exactly.
static uint64_t s_rng = 88172645463325252ULL;

static double
s_uniform (void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (double) (s_rng >> 11) / 9007199254740992.0;
}

static double
s_gauss (void)
{
    double u = s_uniform (), v = s_uniform ();
    return sqrt (-2 * log (u + 1e-300)) * cos (6.283185307179586 * v);
}

static void
s_assert_close (double got, double want, double rel, double abs_tol, const char *what, int at)
{
    if (fabs (got - want) <= abs_tol + rel * fabs (want))
        return;
    print_error ("%s at %d: got %.17g want %.17g\n", what, at, got, want);
    fail ();
}

//  What the reference recomputes from the whole series.
typedef struct {
    double mean;
    double var;
    double min;
    double max;
    double ewma;
    double level;
    double trend;                  //  Per millisecond, in double
    double resid_sd;
} ref_t;

//  Everything from scratch over in-range readings xs[0..n-1] at ts[].
static void
s_reference (const int64_t *ts, const double *xs, int n, const tm_analytics_settings_t *s,
             ref_t *ref)
{
    long double sum = 0;
    for (int i = 0; i < n; i++)
        sum += xs[i];
    long double mean = sum / n, ss = 0;
    for (int i = 0; i < n; i++)
        ss += (xs[i] - mean) * (xs[i] - mean);
    ref->mean = (double) mean;
    ref->var = n > 1? (double) (ss / (n - 1)): 0;
    ref->min = ref->max = xs[0];
    for (int i = 1; i < n; i++) {
        ref->min = xs[i] < ref->min? xs[i]: ref->min;
        ref->max = xs[i] > ref->max? xs[i]: ref->max;
    }
    ref->ewma = xs[0];
    for (int i = 1; i < n; i++)
        ref->ewma = s->ewma_alpha * xs[i] + (1 - s->ewma_alpha) * ref->ewma;

    double level = xs[0], trend = 0, sd = 0;
    if (n >= 2) {
        double dt = (double) (ts[1] - ts[0]);
        trend = (xs[1] - xs[0]) / (dt > (double) s->interval_ms? dt: (double) s->interval_ms);
        level = xs[1];
    }
    for (int i = 2; i < n; i++) {
        double dt = (double) (ts[i] - ts[i - 1]);
        double forecast = level + trend * dt;
        double resid = xs[i] - forecast;
        int nres = i - 1;
        double floor_sd = 4 * 2.220446049250313e-16 * fabs (forecast)
                          + 2 * 1.1920929e-07 * fabs (trend * dt);
        double use_sd = sd > floor_sd? sd: floor_sd;
        double alpha = s->holt_alpha, step = (double) s->interval_ms, widen = 1;
        if (dt > step) {
            //  h-step widening by summing the ETS(A,A,N) series term by term.
            double series = 0;
            for (int j = 1; j < (int) ceil (dt / step); j++)
                series += (1 + s->holt_beta * j) * (1 + s->holt_beta * j);
            widen = sqrt (1 + alpha * alpha * series);
            alpha = 1 - pow (1 - alpha, dt / step);
            step = dt;
        }
        double cleaned = xs[i], weight = 1.0 / nres;
        if (nres > (int) s->warmup) {
            double cap = s->anomaly_sigmas * use_sd * widen;
            cleaned = forecast + (resid > cap? cap: resid < -cap? -cap: resid);
            weight = 1.0 / s->warmup;
        }
        double new_level = alpha * cleaned + (1 - alpha) * forecast;
        trend += s->holt_beta * (new_level - level - trend * dt) / step;
        level = new_level;
        double c = (cleaned - forecast) / widen;
        sd = sqrt ((1 - weight) * sd * sd + weight * c * c);
    }
    ref->level = level;
    ref->trend = trend;
    ref->resid_sd = sd;
}

static void
s_check_against_reference (const tm_analytics_t *a, const int64_t *ts, const double *xs, int n,
                           const tm_analytics_settings_t *s, double scale)
{
    ref_t ref;
    s_reference (ts, xs, n, s, &ref);
    assert_int_equal (a->count, n);
    assert_true (a->min == ref.min);
    assert_true (a->max == ref.max);
    s_assert_close (a->mean, ref.mean, 1e-12, 1e-12 * scale, "mean", n);
    s_assert_close (tm_analytics_variance (a), ref.var, 1e-9, 1e-12 * scale * scale, "variance",
                    n);
    //  The EWMA is stored as a float offset: within 2^-24 (max - min) /
    //  alpha, the header's bound.
    s_assert_close (tm_analytics_ewma (a), ref.ewma, 1e-12,
                    1e-12 * scale + ldexp (ref.max - ref.min, -24) / s->ewma_alpha, "ewma", n);
    //  The module keeps the trend in a float: agreement to ~1e-6 of scale.
    s_assert_close (tm_analytics_level (a), ref.level, 1e-6, 1e-5 * scale, "level", n);
    s_assert_close (a->trend, ref.trend, 1e-4, 1e-9 * scale, "trend", n);
    s_assert_close (a->resid_sd, ref.resid_sd, 1e-4, 1e-5 * scale, "resid_sd", n);
}

//  Feed a series (all in range) and check against the reference every
//  `every` readings and at the end.
static void
s_run_series (const tm_analytics_settings_t *s, const int64_t *ts, const double *xs, int n,
              int every, double scale)
{
    tm_analytics_t a;
    tm_analytics_init (&a);
    for (int i = 0; i < n; i++) {
        unsigned flags = tm_analytics_update (&a, s, ts[i], xs[i]);
        assert_int_equal (flags & TM_ANALYTICS_OUT_OF_RANGE, 0);
        assert_true (a.value == xs[i]);
        assert_int_equal (a.ts_ms, ts[i]);
        if ((i + 1) % every == 0 || i == n - 1)
            s_check_against_reference (&a, ts, xs, i + 1, s, scale);
    }
}

static int64_t s_ts[S_MAXN];
static double s_xs[S_MAXN];

static void
test_reference_random (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    //  Regular steps, then irregular ones from 1 ms to a minute.
    for (int irregular = 0; irregular < 2; irregular++) {
        int64_t t = 1700000000000LL;
        for (int i = 0; i < S_MAXN; i++) {
            static const int64_t steps[] = {1, 7, 250, 1000, 1000, 3000, 60000};
            t += irregular? steps[(int) (s_uniform () * 7)]: 1000;
            s_ts[i] = t;
            s_xs[i] = s_uniform () * 100 - 20;
        }
        s_run_series (&s, s_ts, s_xs, S_MAXN, 97, 100);
    }
}

static void
test_reference_smooth (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    s.ewma_alpha = 0.05;
    s.holt_alpha = 0.5;
    s.holt_beta = 0.2;
    int64_t t = 0;
    for (int i = 0; i < S_MAXN; i++) {
        t += 900 + (int64_t) (s_uniform () * 200);
        s_ts[i] = t;
        s_xs[i] = 18 + 0.0001 * t / 1000 + 4 * sin (t / 60000.0) + 0.01 * s_gauss ();
    }
    s_run_series (&s, s_ts, s_xs, S_MAXN, 101, 20);
}

//  With regular steps the module is Holt's method as textbooks write it,
//  trend per step: b = beta (L - L_prev) + (1 - beta) b.
static void
test_textbook_holt (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 500;
    s.warmup = 100000;             //  no clipping: plain Holt
    tm_analytics_t a;
    tm_analytics_init (&a);
    double level = 0, trend_step = 0, y_prev = 0;
    for (int i = 0; i < 1000; i++) {
        double y = 50 + 0.2 * i + 5 * s_gauss ();
        tm_analytics_update (&a, &s, 1000 + 500 * (int64_t) i, y);
        if (i == 0)
            level = y;
        else
        if (i == 1) {
            trend_step = y - y_prev;
            level = y;
        }
        else {
            double prev = level;
            level = s.holt_alpha * y + (1 - s.holt_alpha) * (level + trend_step);
            trend_step = s.holt_beta * (level - prev) + (1 - s.holt_beta) * trend_step;
        }
        y_prev = y;
        s_assert_close (tm_analytics_level (&a), level, 1e-9, 1e-4, "level", i);
        s_assert_close (a.trend * 500.0, trend_step, 1e-5, 1e-5, "trend", i);
    }
}

//  During warm-up the residual scale is the plain RMS of the residuals.
static void
test_scale_warmup (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    s.warmup = 50;
    tm_analytics_t a;
    tm_analytics_init (&a);
    double sumsq = 0;
    for (int i = 0; i < 52; i++) {
        double x = 10 + s_gauss ();
        double forecast;
        if (i >= 2) {
            assert_int_equal (tm_analytics_forecast (&a, &s, 1000 * (i + 1), &forecast, NULL),
                              0);
            sumsq += (x - forecast) * (x - forecast);
        }
        tm_analytics_update (&a, &s, 1000 * (i + 1), x);
        if (i >= 2)
            s_assert_close (a.resid_sd, sqrt (sumsq / (i - 1)), 1e-5, 1e-6, "rms", i);
    }
}

static void
s_smooth_settings (tm_analytics_settings_t *s)
{
    tm_analytics_settings_defaults (s);
    s->interval_ms = 1000;
    s->warmup = 20;
    s->anomaly_sigmas = 4;
}

static double
s_smooth (int i)
{
    return 20 + 5 * sin (6.283185307179586 * i / 50.0);
}

static void
test_anomaly (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    s_smooth_settings (&s);
    tm_analytics_t a, clean;
    tm_analytics_init (&a);
    tm_analytics_init (&clean);
    //  Smooth data: never flagged, and scores well inside the threshold
    //  once the scale is known.
    for (int i = 0; i < 1000; i++) {
        unsigned flags = tm_analytics_update (&a, &s, 1000 * (int64_t) i, s_smooth (i));
        tm_analytics_update (&clean, &s, 1000 * (int64_t) i, s_smooth (i));
        assert_int_equal (flags, 0);
        if (i > (int) s.warmup + 2)
            assert_true (fabs (tm_analytics_score (&a)) < s.anomaly_sigmas / 2);
    }
    //  Spikes: flagged on the spike only, not on the readings after it
    //  (the robust update keeps the forecast), and a second spike soon after
    //  is flagged too (the scale was not inflated by the first).
    for (int i = 1000; i < 1100; i++) {
        bool spike = i == 1030 || i == 1035;
        double x = s_smooth (i) + (spike? 12: 0);
        unsigned flags = tm_analytics_update (&a, &s, 1000 * (int64_t) i, x);
        tm_analytics_update (&clean, &s, 1000 * (int64_t) i, s_smooth (i));
        if (spike) {
            assert_int_equal (flags, TM_ANALYTICS_ANOMALOUS);
            assert_true (tm_analytics_score (&a) > s.anomaly_sigmas);
            assert_int_equal (tm_analytics_flags (&a, &s), TM_ANALYTICS_ANOMALOUS);
        }
        else
            assert_int_equal (flags, 0);
    }
    //  A negative spike scores negative.
    unsigned flags = tm_analytics_update (&a, &s, 1100000, s_smooth (1100) - 12);
    tm_analytics_update (&clean, &s, 1100000, s_smooth (1100));
    assert_int_equal (flags, TM_ANALYTICS_ANOMALOUS);
    assert_true (tm_analytics_score (&a) < -s.anomaly_sigmas);

    //  A genuine level shift is followed: flags stop within a few dozen
    //  readings and the forecast becomes the unshifted one plus the shift.
    int last_flag = -1;
    for (int i = 1101; i < 1400; i++) {
        if (tm_analytics_update (&a, &s, 1000 * (int64_t) i, s_smooth (i) + 10)
            & TM_ANALYTICS_ANOMALOUS)
            last_flag = i;
        tm_analytics_update (&clean, &s, 1000 * (int64_t) i, s_smooth (i));
    }
    assert_true (last_flag > 1101 && last_flag < 1140);
    double shifted, unshifted;
    tm_analytics_forecast (&a, &s, 1400000, &shifted, NULL);
    tm_analytics_forecast (&clean, &s, 1400000, &unshifted, NULL);
    s_assert_close (shifted, unshifted + 10, 0, 1e-3, "after shift", 0);

    //  Nothing flagged during warm-up, however wild.
    tm_analytics_init (&a);
    for (int i = 0; i < 22; i++) {
        flags = tm_analytics_update (&a, &s, 1000 * (int64_t) i, i == 15? 1e6: s_smooth (i));
        assert_int_equal (flags, 0);
    }
}

static void
s_sync_settings (tm_analytics_settings_t *s)
{
    tm_analytics_settings_defaults (s);
    s->valid_min = 0;
    s->valid_max = 100;
    s->interval_ms = 1000;
    s->stale_factor = 3;
    s->stuck_run = 5;
    s->oor_streak = 3;
}

//  One reading through analytics and sync, returning the event.
static tm_sync_event_t
s_feed (tm_analytics_t *a, tm_analytics_sync_t *sync, const tm_analytics_settings_t *s,
        unsigned prop, int64_t t, double x)
{
    unsigned flags = tm_analytics_update (a, s, t, x);
    assert_int_equal (flags, tm_analytics_flags (a, s));
    return tm_analytics_sync_reading (sync, s, prop, flags, t);
}

static void
test_streaks_and_recovery (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    s_sync_settings (&s);
    tm_analytics_t a;
    tm_analytics_sync_t sync;
    tm_analytics_init (&a);
    tm_analytics_sync_init (&sync);
    assert_int_equal (sync.state, TM_SYNC_INITIALIZING);
    int64_t t = 1000;
    double v = 10;
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, v += 1), TM_SYNC_READING_WARMING);
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, v += 1), TM_SYNC_READING_WARMING);
    assert_int_equal (sync.state, TM_SYNC_INITIALIZING);
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, v += 1), TM_SYNC_READING_OK);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);

    //  Out of range: kept as the latest value, flagged, not in statistics.
    double mean = a.mean;
    uint32_t count = a.count;
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, 200), TM_SYNC_READING_SUSPECT);
    assert_true (a.value == 200);
    assert_true (a.mean == mean && a.count == count && a.max == 13);
    assert_int_equal (tm_analytics_flags (&a, &s), TM_ANALYTICS_OUT_OF_RANGE);
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, -1), TM_SYNC_READING_SUSPECT);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);
    //  NaN is out of range too; the third in a row is a fault.
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, NAN), TM_SYNC_READING_FAULT);
    assert_int_equal (tm_analytics_flags (&a, &s), TM_ANALYTICS_OUT_OF_RANGE | TM_ANALYTICS_FAULT);
    assert_int_equal (sync.state, TM_SYNC_ERROR);
    assert_true (tm_analytics_sync_confidence (&sync, t) <= 0.5);
    //  Back: good readings, and three in a row before synchronized.
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, v += 1), TM_SYNC_READING_WARMING);
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, v += 1), TM_SYNC_READING_WARMING);
    assert_int_equal (sync.state, TM_SYNC_ERROR);
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, v += 1), TM_SYNC_READING_OK);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);
    assert_true (a.mean > mean && a.count == count + 3);

    //  Stuck: the fifth identical reading is a fault, on one property of two.
    tm_analytics_t b;
    tm_analytics_init (&b);
    for (int i = 0; i < 3; i++) {
        s_feed (&b, &sync, &s, 1, t += 500, 50 + i);
        s_feed (&a, &sync, &s, 0, t += 500, v += 1);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, 42), TM_SYNC_READING_OK);
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, 42), TM_SYNC_READING_FAULT);
    assert_int_equal (tm_analytics_flags (&a, &s), TM_ANALYTICS_STUCK | TM_ANALYTICS_FAULT);
    assert_int_equal (sync.state, TM_SYNC_ERROR);
    //  The other property reading well does not clear property 0's fault.
    for (int i = 0; i < 5; i++)
        assert_int_equal (s_feed (&b, &sync, &s, 1, t += 100, 60 + i), TM_SYNC_READING_FAULT);
    assert_int_equal (sync.state, TM_SYNC_ERROR);
    //  Stuck readings still enter statistics (they are plausible values).
    assert_true (a.min <= 42 && a.max >= 42);
    //  Property 0 moves again: fault cleared; the run of good readings
    //  counts across properties.
    assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, 43), TM_SYNC_READING_OK);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);
    assert_true (tm_analytics_sync_confidence (&sync, t) > 0.5);
    //  Zero disables the streak checks.
    s.stuck_run = 0;
    s.oor_streak = 0;
    for (int i = 0; i < 300; i++)
        assert_int_equal (s_feed (&a, &sync, &s, 0, t += 1000, i % 2? 43: 1e9),
                          i % 2? TM_SYNC_READING_WARMING: TM_SYNC_READING_SUSPECT);
    for (int i = 0; i < 300; i++)
        s_feed (&a, &sync, &s, 0, t += 1000, 43);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);
    assert_int_equal (a.same_run, 255);        //  saturated, not wrapped
}

static void
test_staleness (void **state)
{
    (void) state;
    tm_analytics_settings_t fast, slow;
    s_sync_settings (&fast);
    s_sync_settings (&slow);
    slow.interval_ms = 60000;
    tm_analytics_t a, b;
    tm_analytics_sync_t sync;
    tm_analytics_init (&a);
    tm_analytics_init (&b);
    tm_analytics_sync_init (&sync);
    //  No reading yet: ticks change nothing, confidence is 0.
    assert_int_equal (tm_analytics_sync_tick (&sync, 1000000), TM_SYNC_TICK_FRESH);
    assert_int_equal (sync.state, TM_SYNC_INITIALIZING);
    assert_true (tm_analytics_sync_confidence (&sync, 1000000) == 0);

    //  One reading, then silence: initializing -> stale.
    int64_t t = 1000000;
    s_feed (&b, &sync, &slow, 1, t, 5);
    assert_int_equal (sync.window_ms, 180000);
    assert_int_equal (tm_analytics_sync_tick (&sync, t + 180000), TM_SYNC_TICK_FRESH);
    assert_int_equal (tm_analytics_sync_tick (&sync, t + 180001), TM_SYNC_TICK_OVERDUE);
    assert_int_equal (sync.state, TM_SYNC_STALE);
    assert_int_equal (s_feed (&b, &sync, &slow, 1, t += 200000, 6), TM_SYNC_READING_WARMING);
    assert_int_equal (sync.state, TM_SYNC_INITIALIZING);

    //  The fastest property sets the window: 3 x 1 s.
    s_feed (&a, &sync, &fast, 0, t += 1000, 1);
    s_feed (&a, &sync, &fast, 0, t += 1000, 2);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);
    assert_int_equal (sync.window_ms, 3000);
    s_feed (&b, &sync, &slow, 1, t += 100, 7);
    assert_int_equal (sync.window_ms, 3000);
    //  Confidence: full while on time, falls to 0 at the window.
    assert_true (tm_analytics_sync_confidence (&sync, t) == 1.0);
    assert_true (tm_analytics_sync_confidence (&sync, t + 1000) == 1.0);
    s_assert_close (tm_analytics_sync_confidence (&sync, t + 2000), 0.5, 1e-12, 1e-12, "half", 0);
    assert_true (tm_analytics_sync_confidence (&sync, t + 3000) == 0);
    assert_int_equal (tm_analytics_sync_tick (&sync, t + 2999), TM_SYNC_TICK_FRESH);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);
    assert_int_equal (tm_analytics_sync_tick (&sync, t + 3001), TM_SYNC_TICK_OVERDUE);
    assert_int_equal (sync.state, TM_SYNC_STALE);
    assert_int_equal (tm_analytics_sync_tick (&sync, t + 9000), TM_SYNC_TICK_OVERDUE);
    assert_int_equal (sync.state, TM_SYNC_STALE);
    assert_true (tm_analytics_sync_confidence (&sync, t + 9000) == 0);
    //  A good reading after good ones: synchronized at once.
    assert_int_equal (s_feed (&a, &sync, &fast, 0, t += 10000, 3), TM_SYNC_READING_OK);
    assert_int_equal (sync.state, TM_SYNC_SYNCHRONIZED);

    //  Error, then silence: stale; speaking again with the fault: error.
    for (int i = 0; i < 3; i++)
        s_feed (&a, &sync, &fast, 0, t += 1000, 500);
    assert_int_equal (sync.state, TM_SYNC_ERROR);
    tm_analytics_sync_tick (&sync, t + 5000);
    assert_int_equal (sync.state, TM_SYNC_STALE);
    assert_int_equal (s_feed (&a, &sync, &fast, 0, t += 6000, 500), TM_SYNC_READING_FAULT);
    assert_int_equal (sync.state, TM_SYNC_ERROR);

    //  Names for logs.
    assert_string_equal (tm_analytics_sync_state_name (TM_SYNC_STALE), "stale");
    assert_string_equal (tm_analytics_sync_state_name (TM_SYNC_SYNCHRONIZED), "synchronized");
    assert_string_equal (tm_analytics_sync_event_name (TM_SYNC_TICK_OVERDUE), "TICK_OVERDUE");
    assert_string_equal (tm_analytics_sync_state_name (TM_SYNC_NSTATES), "?");
    assert_string_equal (tm_analytics_sync_event_name (-1), "?");
}

static void
test_forecast_linear (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    tm_analytics_t a;
    double value, sd;
    //  Slope exactly representable: exact, regular or irregular steps.
    tm_analytics_init (&a);
    assert_int_equal (tm_analytics_forecast (&a, &s, 0, &value, &sd), TM_ANALYTICS_E_NO_DATA);
    int64_t t = 1700000000000LL;
    for (int i = 0; i < 500; i++) {
        t += i % 3 == 0? 1: i % 3 == 1? 1000: 37000;
        tm_analytics_update (&a, &s, t, 5 + 0.5 * (double) (t - 1700000000000LL));
    }
    for (int64_t h = 0; h <= 3600000; h += 600000) {
        assert_int_equal (tm_analytics_forecast (&a, &s, t + h, &value, &sd), 0);
        assert_true (value == 5 + 0.5 * (double) (t + h - 1700000000000LL));
    }
    //  Not 0: for its first dozen readings the EWMA was nearer the first
    //  reading than the latest, and the level's float offset from it
    //  rounded (residuals of 1e-3 on steps of up to 18500, see "Storage" in
    //  the header); the scale has all but forgotten them since.
    assert_true (a.resid_sd < 1e-7);
    assert_true (tm_analytics_score (&a) == 0);
    //  Any slope: exact up to the float trend (relative 1e-7).
    tm_analytics_init (&a);
    for (int i = 0; i < 500; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i + (i % 2) * 3, -7 + (1000.0 * i + (i % 2) * 3) / 3.0);
    t = 1000 * 499 + 3;
    assert_int_equal (tm_analytics_forecast (&a, &s, t + 3600000, &value, &sd), 0);
    s_assert_close (value, -7 + (t + 3600000) / 3.0, 1e-7, 0, "forecast 1/3", 0);
    assert_int_equal (tm_analytics_flags (&a, &s), 0);

    //  Uncertainty: one step ahead it is the residual scale; it grows.
    tm_analytics_init (&a);
    for (int i = 0; i < 200; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i, 3 + 0.01 * i + s_gauss ());
    t = 199000;
    tm_analytics_forecast (&a, &s, t + 1000, &value, &sd);
    assert_true (sd == a.resid_sd && sd > 0.5 && sd < 2);
    double prev = sd;
    for (int64_t h = 2000; h <= 3600000; h *= 2) {
        tm_analytics_forecast (&a, &s, t + h, &value, &sd);
        assert_true (sd > prev);
        prev = sd;
    }
}

static void
test_time_to_limit (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    s.limit_upper = 200;
    tm_analytics_t a;
    tm_analytics_init (&a);
    int64_t ms;
    double limit;
    tm_analytics_update (&a, &s, 0, 10);
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 0, &ms, &limit),
                      TM_ANALYTICS_E_NO_DATA);
    //  A ramp of 1 per second: from 109 at t = 99 s, 200 is 91 s away.
    for (int i = 1; i < 100; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i, 10 + 0.001 * 1000 * i);
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 99000, &ms, &limit), 0);
    assert_true (limit == 200);
    s_assert_close ((double) ms, 91000, 1e-4, 1, "ttl", 0);
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 100000, &ms, NULL), 0);
    s_assert_close ((double) ms, 90000, 1e-4, 1, "ttl later", 0);
    s.horizon_ms = 60000;
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 99000, &ms, &limit),
                      TM_ANALYTICS_E_HORIZON);
    s_assert_close ((double) ms, 91000, 1e-4, 1, "ttl beyond horizon", 0);
    s.horizon_ms = 86400000;
    //  Already beyond a limit: 0 ms.
    s.limit_upper = 50;
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 99000, &ms, &limit), 0);
    assert_true (ms == 0 && limit == 50);
    //  The trend points away from the only limit: never.
    s.limit_upper = INFINITY;
    s.limit_lower = 0;
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 99000, &ms, &limit),
                      TM_ANALYTICS_E_NEVER);
    //  A falling ramp reaches the lower limit.
    tm_analytics_init (&a);
    for (int i = 0; i < 50; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i, 100 - 2.0 * i);
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 49000, &ms, &limit), 0);
    assert_true (limit == 0);
    s_assert_close ((double) ms, 1000 * 2.0 / 2, 1e-4, 1, "falling", 0);
    //  Flat: never.
    tm_analytics_init (&a);
    for (int i = 0; i < 50; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i, 30);
    s.limit_upper = 40;
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 49000, &ms, &limit),
                      TM_ANALYTICS_E_NEVER);

    //  Predictive maintenance: vibration_rms rising 1 per hour with noise,
    //  a reading a minute for 10 h; from ~12, 15.1 is ~3.1 h away.
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 60000;
    s.limit_upper = 15.1;
    tm_analytics_init (&a);
    for (int i = 0; i <= 600; i++) {
        int64_t t = 60000 * (int64_t) i;
        tm_analytics_update (&a, &s, t, 2 + t / 3600000.0 + 0.01 * s_gauss ());
    }
    assert_int_equal (tm_analytics_time_to_limit (&a, &s, 36000000, &ms, &limit), 0);
    s_assert_close ((double) ms, 3.1 * 3600000, 0.15, 0, "vibration", 0);
}

//  Irregular steps: a burst of noisy readings 1 ms apart must not read
//  the noise as a steep slope, and a gap is bridged by the trend.
static void
test_irregular (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    tm_analytics_t a;
    tm_analytics_init (&a);
    int64_t t = 0;
    for (int i = 0; i < 100; i++)
        tm_analytics_update (&a, &s, t += 1000, 20 + 0.1 * s_gauss ());
    for (int i = 0; i < 20; i++)
        tm_analytics_update (&a, &s, t += 1, 20 + (i % 2? 1: -1));
    //  Per-step Holt on dt = 1 ms would move the trend by ~0.03 per ms
    //  per reading; here every reading weighs dt / I of a step.
    assert_true (fabs (a.trend) < 1e-3);

    //  A ramp with a 10-minute gap: the forecast across the gap is right.
    tm_analytics_init (&a);
    for (t = 0; t <= 60000; t += 1000)
        tm_analytics_update (&a, &s, t, 0.25 * (double) t);
    t = 660000;
    double value;
    tm_analytics_forecast (&a, &s, t, &value, NULL);
    assert_true (value == 0.25 * (double) t);
    assert_int_equal (tm_analytics_update (&a, &s, t, 0.25 * (double) t), 0);
    //  Out-of-range readings advance the level along the trend.
    s.valid_max = 1e9;
    tm_analytics_update (&a, &s, t + 5000, 2e9);
    //  Up to two roundings of the level's float offset from the EWMA, which
    //  lags the ramp by 1.4e5 after the gap: the reading's and this one's.
    double want = 0.25 * (double) (t + 5000);
    s_assert_close (tm_analytics_level (&a), want, 0,
                    ldexp (fabs (want - tm_analytics_ewma (&a)), -23), "level after gap", 0);
    assert_int_equal (tm_analytics_update (&a, &s, t + 6000, 0.25 * (double) (t + 6000)), 0);
    //  That rounding is all the residual, and is not evidence.
    assert_true (fabs (tm_analytics_score (&a)) < 0.5);

    //  Timestamps far apart do not overflow.
    tm_analytics_init (&a);
    tm_analytics_update (&a, &s, INT64_MIN + 1, 1);
    tm_analytics_update (&a, &s, INT64_MAX - 1, 2);
    assert_true (a.count == 2 && isfinite (tm_analytics_level (&a)));
}

//  Values near 1e9 with a spread of 1e-3: Welford keeps the variance where
//  sum-of-squares loses every digit; constants and tiny noise score right.
static void
test_stability (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    tm_analytics_t a;
    tm_analytics_init (&a);
    double sum = 0, sumsq = 0;
    for (int i = 0; i < S_MAXN; i++) {
        s_ts[i] = 1000 * (int64_t) (i + 1);
        s_xs[i] = 1e9 + 1e-3 * s_gauss ();
        sum += s_xs[i];
        sumsq += s_xs[i] * s_xs[i];
        tm_analytics_update (&a, &s, s_ts[i], s_xs[i]);
    }
    ref_t ref;
    s_reference (s_ts, s_xs, S_MAXN, &s, &ref);
    s_assert_close (tm_analytics_variance (&a), ref.var, 1e-4, 0, "variance near 1e9", 0);
    s_assert_close (ref.var, 1e-6, 0.1, 0, "noise", 0);
    double naive = (sumsq - sum * sum / S_MAXN) / (S_MAXN - 1);
    assert_true (fabs (naive - ref.var) > 10 * ref.var);   //  the test has teeth
    s_assert_close (a.mean, ref.mean, 0, 1e-5, "mean near 1e9", 0);
    s_assert_close (tm_analytics_ewma (&a), ref.ewma, 0, 1e-6, "ewma near 1e9", 0);
    s_assert_close (tm_analytics_level (&a), ref.level, 0, 1e-6, "level near 1e9", 0);
    s_assert_close (a.resid_sd, ref.resid_sd, 1e-3, 0, "scale near 1e9", 0);
    //  A spike of 5e-3 (5 sigma) over 1e9 is seen.
    unsigned flags = tm_analytics_update (&a, &s, 1000 * (S_MAXN + 1), 1e9 + 6e-3);
    assert_int_equal (flags, TM_ANALYTICS_ANOMALOUS);

    //  A constant: variance exactly 0, scores 0, no flags. One ulp off is
    //  rounding, not evidence; 1e-4 off at 1e9 (1e-13 relative) is seen.
    tm_analytics_init (&a);
    for (int i = 0; i < 100; i++)
        assert_int_equal (tm_analytics_update (&a, &s, 1000 * (int64_t) i, 1e9 + 0.5), 0);
    assert_true (tm_analytics_variance (&a) == 0 && tm_analytics_score (&a) == 0);
    assert_int_equal (tm_analytics_update (&a, &s, 100000, nextafter (1e9 + 0.5, 2e9)), 0);
    assert_true (fabs (tm_analytics_score (&a)) < 1);
    flags = tm_analytics_update (&a, &s, 101000, 1e9 + 0.5 + 1e-4);
    assert_int_equal (flags, TM_ANALYTICS_ANOMALOUS);
    //  And a tiny constant far below 1.
    tm_analytics_init (&a);
    for (int i = 0; i < 100; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i, 1e-30 * (1 + 1e-3 * s_gauss ()));
    s_assert_close (tm_analytics_stddev (&a), 1e-33, 0.2, 0, "tiny sd", 0);
    assert_int_equal (tm_analytics_update (&a, &s, 100000, 1.1e-30), TM_ANALYTICS_ANOMALOUS);
}

//  The precision the header promises for the EWMA and the level, which are
//  stored as float offsets: against the same recurrences computed exactly
//  (here in long double, relative to an origin, so that 1e9 costs nothing),
//  the EWMA is within 2^-25 (max - min) / ewma_alpha and the level within
//  2^-23 / holt_alpha of its largest distance to the EWMA, plus the half
//  ulp of the double results. With beta 0 and two equal first readings the
//  trend stays exactly 0 and no residual is clipped, so the level is plain
//  exponential smoothing and the reference is exact. The test has teeth:
//  floats holding the values themselves are off by ~30 near 1e9, where the
//  bound is the doubles' own grid (1.2e-7), and with ewma_alpha 1 the
//  EWMA's bound is a single rounding, which offsets of 23 bits exceed.
static void
s_check_offsets (double origin, double amplitude, bool smooth, double ewma_alpha)
{
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    s.ewma_alpha = ewma_alpha;
    s.holt_alpha = 0.3;
    s.holt_beta = 0;
    s.warmup = UINT32_MAX;
    tm_analytics_t a;
    tm_analytics_init (&a);
    long double ewma = 0, level = 0;
    double lo = INFINITY, hi = -INFINITY, apart = 0, worst_e = 0, worst_l = 0;
    for (int i = 0; i < S_MAXN; i++) {
        double d = smooth? amplitude * sin (i / 40.0) + amplitude * 1e-4 * s_gauss ()
                         : amplitude * s_uniform ();
        double x = origin + (i == 1? s_xs[0] - origin: d);
        s_xs[i] = x;
        tm_analytics_update (&a, &s, 1000 * (int64_t) (i + 1), x);
        long double dx = (long double) x - origin;
        ewma = i == 0? dx: ewma + (long double) s.ewma_alpha * (dx - ewma);
        level = i <= 1? dx: level + (long double) s.holt_alpha * (dx - level);
        lo = x < lo? x: lo;
        hi = x > hi? x: hi;
        apart = fmax (apart, (double) fabsl (level - ewma));
        assert_true (a.trend == 0);
        double got_e = tm_analytics_ewma (&a), got_l = tm_analytics_level (&a);
        //  2^-48 covers the doubles of the offsets' own arithmetic.
        double tol_e = (hi - lo) * (0x1p-25 + 0x1p-48) / s.ewma_alpha + 0x1p-53 * fabs (got_e);
        double tol_l = apart * 0x1p-23 / s.holt_alpha + (hi - lo) * 0x1p-48
                       + 0x1p-53 * fabs (got_l);
        double err_e = (double) fabsl (got_e - (origin + ewma));
        double err_l = (double) fabsl (got_l - (origin + level));
        if (!(err_e <= tol_e) || !(err_l <= tol_l)) {
            print_error ("origin %g amplitude %g alpha %g at %d: ewma off by %.3g (bound %.3g), "
                         "level off by %.3g (bound %.3g)\n",
                         origin, amplitude, ewma_alpha, i, err_e, tol_e, err_l, tol_l);
            fail ();
        }
        worst_e = err_e / tol_e > worst_e? err_e / tol_e: worst_e;
        worst_l = err_l / tol_l > worst_l? err_l / tol_l: worst_l;
    }
    print_message ("offsets: origin %g amplitude %g%s alpha %g: worst error %.2f (ewma), "
                   "%.2f (level) of the bound\n",
                   origin, amplitude, smooth? " smooth": "", ewma_alpha, worst_e, worst_l);
}

static void
test_offset_precision (void **state)
{
    (void) state;
    //  Near 1e9 with a spread of 1e-3, then spreads of 2e6 and 2e12.
    for (int k = 0; k < 2; k++) {
        double alpha = k? 1: 0.1;
        s_check_offsets (1e9, 1e-3, false, alpha);
        s_check_offsets (-1e6, 2e6, false, alpha);
        s_check_offsets (0, 1e12, true, alpha);
    }

    //  A checkpoint's doubles give the offsets back exactly, and a what-if
    //  level is the forecast from the latest reading on, rounded as any
    //  stored level is.
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 1000;
    tm_analytics_t a, b;
    tm_analytics_init (&a);
    for (int i = 0; i < 300; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i, 20 + 0.01 * i + s_gauss ());
    b = a;
    b.ewma_off = b.level_off = NAN;
    tm_analytics_restore (&b, tm_analytics_ewma (&a), tm_analytics_level (&a));
    assert_memory_equal (&a, &b, sizeof a);
    tm_analytics_set_level (&b, 17.25);
    double value;
    assert_int_equal (tm_analytics_forecast (&b, &s, b.ts_ms, &value, NULL), 0);
    assert_true (value == tm_analytics_level (&b));
    s_assert_close (value, 17.25, 0, ldexp (fabs (17.25 - b.max), -24), "what-if", 0);
    assert_true (tm_analytics_ewma (&b) == tm_analytics_ewma (&a));

    //  Spreads beyond the float range saturate instead of overflowing into
    //  inf - inf: wrong, but finite and between the readings.
    tm_analytics_init (&a);
    for (int i = 0; i < 50; i++)
        tm_analytics_update (&a, &s, 1000 * (int64_t) i, i % 2? 1e39: -1e39);
    assert_true (isfinite (tm_analytics_ewma (&a)) && isfinite (tm_analytics_level (&a)));
    assert_true (fabs (tm_analytics_ewma (&a)) <= 1e39);
}

//  Flags recomputed from the state equal those the update returned.
static void
test_flags_consistent (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    s_sync_settings (&s);
    s.stuck_run = 3;
    s.oor_streak = 2;
    tm_analytics_t a;
    tm_analytics_init (&a);
    assert_int_equal (tm_analytics_flags (&a, &s), 0);
    unsigned seen = 0;
    double x = 50;
    for (int i = 0; i < 20000; i++) {
        double u = s_uniform ();
        if (u < 0.05)
            x = 150;
        else
        if (u < 0.1)
            x = 500;
        else
        if (u < 0.5)
            x = 50 + 2 * s_gauss ();
        unsigned flags = tm_analytics_update (&a, &s, 1000 * (int64_t) i, x);
        assert_int_equal (flags, tm_analytics_flags (&a, &s));
        seen |= flags;
    }
    assert_int_equal (seen, TM_ANALYTICS_OUT_OF_RANGE | TM_ANALYTICS_STUCK
                                | TM_ANALYTICS_ANOMALOUS | TM_ANALYTICS_FAULT);
}

static void
test_settings (void **state)
{
    (void) state;
    tm_analytics_settings_t s;
    tm_analytics_settings_defaults (&s);
    assert_int_equal (tm_analytics_settings_check (&s), 0);
    s.holt_alpha = 0;
    assert_int_equal (tm_analytics_settings_check (&s), TM_ANALYTICS_E_INVALID);
    tm_analytics_settings_defaults (&s);
    s.ewma_alpha = NAN;
    assert_int_equal (tm_analytics_settings_check (&s), TM_ANALYTICS_E_INVALID);
    tm_analytics_settings_defaults (&s);
    s.valid_min = 10;
    s.valid_max = 0;
    assert_int_equal (tm_analytics_settings_check (&s), TM_ANALYTICS_E_INVALID);
    tm_analytics_settings_defaults (&s);
    s.interval_ms = 0;
    assert_int_equal (tm_analytics_settings_check (&s), TM_ANALYTICS_E_INVALID);
    tm_analytics_settings_defaults (&s);
    s.stuck_run = 1;               //  every reading would be stuck
    assert_int_equal (tm_analytics_settings_check (&s), TM_ANALYTICS_E_INVALID);
    assert_true (sizeof (tm_analytics_t) <= 72);
    assert_int_equal (sizeof (tm_analytics_sync_t), 32);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_reference_random),
        cmocka_unit_test (test_reference_smooth),
        cmocka_unit_test (test_textbook_holt),
        cmocka_unit_test (test_scale_warmup),
        cmocka_unit_test (test_anomaly),
        cmocka_unit_test (test_streaks_and_recovery),
        cmocka_unit_test (test_staleness),
        cmocka_unit_test (test_forecast_linear),
        cmocka_unit_test (test_time_to_limit),
        cmocka_unit_test (test_irregular),
        cmocka_unit_test (test_stability),
        cmocka_unit_test (test_offset_precision),
        cmocka_unit_test (test_flags_consistent),
        cmocka_unit_test (test_settings),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
