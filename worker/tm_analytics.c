/*  tm_analytics - per-property analytics and per-twin sync status

    The formulas and the choices behind them are in tm_analytics.h. This
    file is on the ingest hot path: tm_analytics_update and
    tm_analytics_sync_reading run for every accepted reading, so they do a
    fixed amount of arithmetic: no calls but sqrt, plus exp and log1p
    after a gap.

    The twin's sync status is this state machine. Rows are states, columns
    the classified events; each cell is the next state. READING events are
    classified in order: FAULT if any property of the twin is in fault after
    this reading, SUSPECT if the reading is out of range, WARMING if fewer
    than TM_ANALYTICS_SYNC_GOOD good readings came in a row, else OK. TICK
    events are OVERDUE when the twin has been silent for longer than its
    window, else FRESH.

                    READING_OK    READING_WARMING READING_SUSPECT READING_FAULT TICK_FRESH    TICK_OVERDUE
    initializing    synchronized  initializing    initializing    error         initializing  stale
    synchronized    synchronized  synchronized    synchronized    error         synchronized  stale
    stale           synchronized  initializing    initializing    error         stale         stale
    error           synchronized  error           error           error         error         stale

    Why these cells: a synchronized twin tolerates an odd out-of-range
    reading (SUSPECT) until the streak makes it a fault. Leaving error needs
    every faulty property to have read good again and then a run of good
    readings (hysteresis, so a sensor flickering at the edge of its range
    does not flap the status). A stale twin that speaks again is
    synchronized at once if its recent readings were good, else it starts
    over as initializing. Silence wins over everything: a twin in error that
    goes quiet is stale, since its data is no longer current.
*/
#include "tm_analytics.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stddef.h>

#define S_INIT  TM_SYNC_INITIALIZING
#define S_SYNC  TM_SYNC_SYNCHRONIZED
#define S_STALE TM_SYNC_STALE
#define S_ERROR TM_SYNC_ERROR

static const uint8_t s_next[TM_SYNC_NSTATES][TM_SYNC_NEVENTS] = {
    //                OK      WARMING  SUSPECT  FAULT    FRESH    OVERDUE
    [S_INIT]  = {S_SYNC, S_INIT,  S_INIT,  S_ERROR, S_INIT,  S_STALE},
    [S_SYNC]  = {S_SYNC, S_SYNC,  S_SYNC,  S_ERROR, S_SYNC,  S_STALE},
    [S_STALE] = {S_SYNC, S_INIT,  S_INIT,  S_ERROR, S_STALE, S_STALE},
    [S_ERROR] = {S_SYNC, S_ERROR, S_ERROR, S_ERROR, S_ERROR, S_STALE},
};

static const char *s_state_name[] = {
    [S_INIT] = "initializing",
    [S_SYNC] = "synchronized",
    [S_STALE] = "stale",
    [S_ERROR] = "error",
};

static const char *s_event_name[] = {
    [TM_SYNC_READING_OK] = "READING_OK",
    [TM_SYNC_READING_WARMING] = "READING_WARMING",
    [TM_SYNC_READING_SUSPECT] = "READING_SUSPECT",
    [TM_SYNC_READING_FAULT] = "READING_FAULT",
    [TM_SYNC_TICK_FRESH] = "TICK_FRESH",
    [TM_SYNC_TICK_OVERDUE] = "TICK_OVERDUE",
};

//  How much a state lets the data be trusted, for the confidence score.
static const double s_state_weight[] = {
    [S_INIT] = 0.5,
    [S_SYNC] = 1.0,
    [S_STALE] = 0.0,
    [S_ERROR] = 0.5,
};

_Static_assert (sizeof s_state_name / sizeof s_state_name[0] == TM_SYNC_NSTATES,
                "a name per state");
_Static_assert (sizeof s_event_name / sizeof s_event_name[0] == TM_SYNC_NEVENTS,
                "a name per event");
_Static_assert (sizeof s_state_weight / sizeof s_state_weight[0] == TM_SYNC_NSTATES,
                "a weight per state");
//  The memory budget (1 KiB per twin of 8 properties) was planned with these.
_Static_assert (sizeof (tm_analytics_t) <= 72, "per-property state is at most 72 bytes");
_Static_assert (sizeof (tm_analytics_sync_t) == 32, "per-twin sync state is 32 bytes");

//  Readings whose goodness the confidence's quality averages over.
#define S_QUALITY_WINDOW 16

//  Largest stored anomaly score, in hundredths of a sigma.
#define S_SCORE_MAX_CS 32767

void
tm_analytics_settings_defaults (tm_analytics_settings_t *settings)
{
    assert (settings);
    *settings = (tm_analytics_settings_t) {
        .valid_min = -INFINITY,
        .valid_max = INFINITY,
        .limit_lower = -INFINITY,
        .limit_upper = INFINITY,
        .ewma_alpha = 0.1,
        .holt_alpha = 0.3,
        .holt_beta = 0.1,
        .anomaly_sigmas = 4.0,
        .stale_factor = 3.0,
        .interval_ms = 60000,
        .horizon_ms = 24 * 3600 * 1000LL,
        .warmup = 20,
        .stuck_run = 0,
        .oor_streak = 3,
    };
}

int
tm_analytics_settings_check (const tm_analytics_settings_t *s)
{
    //  Written so that NaN fails every test.
    bool ok = s->valid_min <= s->valid_max && !isnan (s->limit_lower)
              && !isnan (s->limit_upper) && s->ewma_alpha > 0 && s->ewma_alpha <= 1
              && s->holt_alpha > 0 && s->holt_alpha <= 1 && s->holt_beta >= 0
              && s->holt_beta <= 1 && s->anomaly_sigmas > 0 && s->stale_factor >= 1
              && s->stale_factor <= 1e6 && s->interval_ms > 0
              && s->interval_ms <= UINT32_MAX && s->horizon_ms >= 0 && s->warmup >= 1
              && s->stuck_run != 1;
    return ok? 0: TM_ANALYTICS_E_INVALID;
}

void
tm_analytics_init (tm_analytics_t *self)
{
    assert (self);
    *self = (tm_analytics_t) {.ts_ms = INT64_MIN};
}

//  fmin/fmax are library calls at -O2 (they must order NaNs); these are
//  one instruction each. s_clamp sends NaN to lo, so a NaN never reaches an
//  integer conversion.
static inline double
s_min (double a, double b)
{
    return a < b? a: b;
}

static inline double
s_max (double a, double b)
{
    return a > b? a: b;
}

static inline double
s_clamp (double v, double lo, double hi)
{
    return v > lo? (v < hi? v: hi): lo;
}

//  Milliseconds from a to b (b >= a) as a double, without the signed
//  overflow that b - a could hit for timestamps far apart.
static inline double
s_ms_between (int64_t a, int64_t b)
{
    uint64_t ms = (uint64_t) b - (uint64_t) a;
    //  A signed conversion is one instruction, an unsigned one a sequence.
    return ms <= INT64_MAX? (double) (int64_t) ms: (double) ms;
}

//  The EWMA is stored as its offset from the nearer of min and max (it
//  lies between them, see "Storage" in the header), and the offset's sign
//  says which: +0 and up from min, -0 and down from max. The level is
//  stored as its offset from that EWMA, anchor + ewma_off exactly.
static inline double
s_anchor (const tm_analytics_t *self)
{
    return signbit (self->ewma_off)? self->max: self->min;
}

//  An offset saturated at the float range, where a float would be
//  infinite and turn the next update into inf - inf. NaN stays NaN.
static inline float
s_offset (double d)
{
    return (float) (d > FLT_MAX? FLT_MAX: d < -FLT_MAX? -FLT_MAX: d);
}

//  Store the EWMA and the level, given as ewma_x and level_x (each minus
//  x) with min and max already covering x. Rounding may make the EWMA's
//  distance to the nearer end a hair negative: that is 0, never an EWMA
//  outside the readings. The offsets can overflow a float only when the
//  spread does, so only then are they saturated: testing is cheaper than
//  saturating every store.
static inline void
s_store (tm_analytics_t *self, double ewma_x, double level_x, double x)
{
    double below = x - self->min, above = self->max - x;
    double lo = ewma_x + below, hi = above - ewma_x;
    if (below + above > FLT_MAX) {
        self->ewma_off = lo <= hi? s_offset (s_max (lo, 0)): -s_offset (s_max (hi, 0));
        double stored_x = (s_anchor (self) - x) + self->ewma_off;
        self->level_off = s_offset (level_x - stored_x);
        return;
    }
    double stored_x;
    if (lo <= hi) {
        float d = (float) s_max (lo, 0);
        self->ewma_off = d;
        stored_x = d - below;
    }
    else {
        float d = (float) s_max (hi, 0);
        self->ewma_off = -d;
        stored_x = above - d;
    }
    self->level_off = (float) (level_x - stored_x);
}

static inline uint8_t
s_inc8 (uint8_t n)
{
    return n < UINT8_MAX? (uint8_t) (n + 1): n;
}

static inline bool
s_is_stuck (const tm_analytics_t *self, const tm_analytics_settings_t *s)
{
    return s->stuck_run >= 2 && self->same_run >= s->stuck_run;
}

static inline bool
s_is_anomalous (const tm_analytics_t *self, const tm_analytics_settings_t *s)
{
    //  The score of the n-th reading is judged against n - 3 earlier
    //  residuals (readings 1 and 2 only initialise the model).
    return self->count >= 3 && self->count - 2 > s->warmup
           && fabs (self->score_cs * 0.01) > s->anomaly_sigmas;
}

static inline unsigned
s_flags (const tm_analytics_t *self, const tm_analytics_settings_t *s)
{
    unsigned flags = 0;
    bool stuck = s_is_stuck (self, s);
    if (self->oor_run)
        flags |= TM_ANALYTICS_OUT_OF_RANGE;
    else
    if (s_is_anomalous (self, s))
        flags |= TM_ANALYTICS_ANOMALOUS;
    if (stuck)
        flags |= TM_ANALYTICS_STUCK;
    if (stuck || (s->oor_streak && self->oor_run >= s->oor_streak))
        flags |= TM_ANALYTICS_FAULT;
    return flags;
}

//  How much wider the residual of a forecast `steps` intervals ahead is
//  than a one-step residual: the ETS(A,A,N) h-step variance ratio,
//  1 + alpha^2 sum_{j=1..h-1} (1 + beta j)^2 in closed form, h rounded up.
static double
s_horizon_factor (double steps, double alpha, double beta)
{
    double m = steps > 1? ceil (steps) - 1: 0;
    double sum = m + beta * m * (m + 1) + beta * beta * m * (m + 1) * (2 * m + 1) / 6;
    return sqrt (1 + alpha * alpha * sum);
}

//  Holt's update for the third and later in-range readings, with the
//  residual scale and the anomaly score (see the header for the formulas).
//  It works relative to the reading x: level_x is the level minus x, and
//  the new level minus x is returned (the caller stores it as an offset).
static inline double
s_holt_update (tm_analytics_t *self, const tm_analytics_settings_t *s, double dt, double x,
               double level_x, double alpha, double widen)
{
    double trend = self->trend;
    double forecast_x = level_x + trend * dt;  //  The forecast minus x
    double resid = -forecast_x;
    double interval = (double) s->interval_ms;

    //  Residuals below the rounding of the forecast itself (a few ulps of a
    //  double, and of the float trend times the step) are not evidence.
    double noise = 4 * DBL_EPSILON * fabs (x + forecast_x) + 2 * FLT_EPSILON * fabs (trend * dt)
                   + DBL_MIN;
    double sd = s_max (self->resid_sd, noise);
    uint32_t nres = self->count - 2;
    //  The rounding of the level's float offset from the EWMA (2^-24 of it
    //  per store; a perfectly linear series has it at its first readings
    //  and after a gap, when the scale may be 0) is not evidence either,
    //  but only for judging: the model still learns from the residual
    //  clipped at the scale alone, as with a double level, so that a level
    //  shift of a billion noise scales, which makes that offset huge for a
    //  while, is followed as fast as before.
    double judge = s_max (sd, 4 * FLT_EPSILON * fabs (self->level_off));
    //  The first residual has no scale to be judged against.
    double score = nres > 1? resid / (judge * widen) * 100.0: 0;
    score = s_clamp (score, -S_SCORE_MAX_CS, S_SCORE_MAX_CS);
    self->score_cs = (int16_t) (score < 0? score - 0.5: score + 0.5);

    //  Past warm-up the model learns from the residual clipped at
    //  anomaly_sigmas (Huber's psi, as in Gelper, Fried and Croux's robust
    //  Holt-Winters): a spike neither drags the forecast nor inflates the
    //  scale, so the readings after it are not flagged as its echo.
    double clipped = resid;
    uint32_t window = nres;
    if (nres > s->warmup) {
        window = s->warmup;
        double cap = s->anomaly_sigmas * sd * widen;
        clipped = s_clamp (resid, -cap, cap);
    }
    self->trend = (float) (trend + s->holt_beta * alpha * clipped / s_max (dt, interval));

    //  The scale stays a one-step scale: a gap's residual enters it
    //  standardised back to one step.
    double one_step = clipped / widen;
    double var = (double) self->resid_sd * self->resid_sd;
    var += (one_step * one_step - var) / window;
    self->resid_sd = (float) s_min (sqrt (var), FLT_MAX);
    return forecast_x + alpha * clipped;
}

unsigned
tm_analytics_update (tm_analytics_t *self, const tm_analytics_settings_t *s, int64_t ts_ms,
                     double x)
{
    assert (self && s);
    bool first = self->ts_ms == INT64_MIN;
    assert (first || ts_ms > self->ts_ms);     //  the caller filters duplicates and late
    double dt = first? 0: s_ms_between (self->ts_ms, ts_ms);

    self->same_run = !first && x == self->value? s_inc8 (self->same_run): 1;
    self->value = x;
    self->ts_ms = ts_ms;

    //  Written so that NaN is out of range; infinities fail isfinite.
    if (!(isfinite (x) && x >= s->valid_min && x <= s->valid_max)) {
        self->oor_run = s_inc8 (self->oor_run);
        //  Keep the invariant "level is the level at ts_ms" without
        //  letting the bad value correct the model. The EWMA, the level's
        //  reference, stays.
        self->level_off = (float) (self->level_off + self->trend * dt);
        return s_flags (self, s);
    }
    self->oor_run = 0;
    if (self->count < UINT32_MAX)
        self->count++;
    uint32_t n = self->count;

    //  After a gap the forecast is many steps ahead and its residual is
    //  judged against the wider h-step scale, else every gap would be an
    //  "anomaly" and clipped. The past is also worth less: its weight
    //  decays per interval elapsed, not per reading. Both only on gaps, so
    //  the regular path has no exp() or extra sqrt(); and here, before the
    //  state is read, so that little is live across the calls.
    double alpha = s->holt_alpha;
    double widen = 1;
    if (dt > (double) s->interval_ms) {
        double steps = dt / (double) s->interval_ms;
        widen = s_horizon_factor (steps, alpha, s->holt_beta);
        alpha = 1 - exp (steps * log1p (-alpha));
    }

    double delta = x - self->mean;
    self->mean += delta / n;
    self->m2 += delta * (x - self->mean);

    if (n == 1) {
        self->min = self->max = x;
        self->ewma_off = self->level_off = 0;      //  +0: the EWMA is min
        self->trend = 0;
        self->resid_sd = 0;
        self->score_cs = 0;
        return s_flags (self, s);
    }
    //  The EWMA and the level are computed relative to x, distances of the
    //  order of a residual or of the data's spread, never as doubles the
    //  size of the values (1e9 + 1e-3 would lose the 1e-3), and stored
    //  relative to their new references.
    double ewma_x = (s_anchor (self) - x) + self->ewma_off;
    double level_x = ewma_x + self->level_off;
    self->min = s_min (self->min, x);
    self->max = s_max (self->max, x);
    ewma_x -= s->ewma_alpha * ewma_x;          //  ewma += alpha * (x - ewma)

    if (n == 2) {
        //  Two points give the first slope, so a linear series is exact from
        //  here on (up to the level's float offset, see the header); two
        //  points a millisecond apart are mostly noise, so the step is at
        //  least the expected interval, as in the trend update.
        self->trend = (float) (-level_x / s_max (dt, (double) s->interval_ms));
        level_x = 0;
        self->score_cs = 0;
    }
    else
        level_x = s_holt_update (self, s, dt, x, level_x, alpha, widen);
    s_store (self, ewma_x, level_x, x);
    return s_flags (self, s);
}

unsigned
tm_analytics_flags (const tm_analytics_t *self, const tm_analytics_settings_t *settings)
{
    assert (self && settings);
    if (self->ts_ms == INT64_MIN)
        return 0;
    return s_flags (self, settings);
}

double
tm_analytics_ewma (const tm_analytics_t *self)
{
    assert (self);
    return s_anchor (self) + self->ewma_off;
}

double
tm_analytics_level (const tm_analytics_t *self)
{
    assert (self);
    //  The two floats' sum is exact (unless one is below 2^-29 of the
    //  other), so the level is rounded once.
    return s_anchor (self) + ((double) self->ewma_off + self->level_off);
}

void
tm_analytics_restore (tm_analytics_t *self, double ewma, double level)
{
    assert (self);
    double lo = ewma - self->min, hi = self->max - ewma;
    //  An EWMA outside [min, max] is clamped in; NaN is max.
    self->ewma_off = lo <= hi? s_offset (s_max (lo, 0)): -s_offset (s_max (hi, 0));
    tm_analytics_set_level (self, level);
}

void
tm_analytics_set_level (tm_analytics_t *self, double level)
{
    assert (self);
    self->level_off = s_offset ((level - s_anchor (self)) - self->ewma_off);
}

double
tm_analytics_variance (const tm_analytics_t *self)
{
    assert (self);
    return self->count >= 2? self->m2 / (self->count - 1): 0;
}

double
tm_analytics_stddev (const tm_analytics_t *self)
{
    return sqrt (tm_analytics_variance (self));
}

double
tm_analytics_score (const tm_analytics_t *self)
{
    assert (self);
    return self->score_cs * 0.01;
}

int
tm_analytics_forecast (const tm_analytics_t *self, const tm_analytics_settings_t *s,
                       int64_t at_ms, double *value, double *stddev)
{
    assert (self && s && value);
    if (self->count == 0)
        return TM_ANALYTICS_E_NO_DATA;
    double ahead = at_ms >= self->ts_ms? s_ms_between (self->ts_ms, at_ms)
                                       : -s_ms_between (at_ms, self->ts_ms);
    //  The small terms first, so that the value is rounded once.
    *value = s_anchor (self)
             + (((double) self->ewma_off + self->level_off) + self->trend * ahead);
    if (stddev)
        *stddev = self->resid_sd
                  * s_horizon_factor (ahead / (double) s->interval_ms, s->holt_alpha,
                                      s->holt_beta);
    return 0;
}

int
tm_analytics_time_to_limit (const tm_analytics_t *self, const tm_analytics_settings_t *s,
                            int64_t now_ms, int64_t *ms, double *limit)
{
    assert (self && s && ms);
    if (self->count < 2)
        return TM_ANALYTICS_E_NO_DATA;
    double now_value;
    tm_analytics_forecast (self, s, now_ms, &now_value, NULL);
    double trend = self->trend;
    double target;
    if (now_value >= s->limit_upper || now_value <= s->limit_lower) {
        target = now_value >= s->limit_upper? s->limit_upper: s->limit_lower;
        *ms = 0;
        if (limit)
            *limit = target;
        return 0;
    }
    if (trend > 0 && isfinite (s->limit_upper))
        target = s->limit_upper;
    else
    if (trend < 0 && isfinite (s->limit_lower))
        target = s->limit_lower;
    else
        return TM_ANALYTICS_E_NEVER;
    //  Round up: "reaches it in about" should not promise it early.
    double wait = ceil ((target - now_value) / trend);
    if (limit)
        *limit = target;
    if (!(wait <= (double) s->horizon_ms)) {
        *ms = wait < 9.0e18? (int64_t) wait: INT64_MAX;
        return TM_ANALYTICS_E_HORIZON;
    }
    *ms = (int64_t) wait;
    return 0;
}

void
tm_analytics_sync_init (tm_analytics_sync_t *self)
{
    assert (self);
    *self = (tm_analytics_sync_t) {
        .heard_ms = INT64_MIN,
        .window_ms = UINT32_MAX,
        .interval_ms = UINT32_MAX,
        .state = TM_SYNC_INITIALIZING,
    };
}

tm_sync_event_t
tm_analytics_sync_reading (tm_analytics_sync_t *self, const tm_analytics_settings_t *s,
                           unsigned prop_index, unsigned flags, int64_t now_ms)
{
    assert (self && s && prop_index < TM_ANALYTICS_SYNC_MAX_PROPS);
    if (now_ms > self->heard_ms)
        self->heard_ms = now_ms;

    //  The fastest property sets the window (see the header for why).
    double window = s_min ((double) s->interval_ms * s->stale_factor, (double) UINT32_MAX);
    if (window < self->window_ms) {
        self->window_ms = (uint32_t) window;
        self->interval_ms = (uint32_t) s_min ((double) s->interval_ms, window);
    }

    uint64_t bit = (uint64_t) 1 << prop_index;
    bool bad = flags & (TM_ANALYTICS_OUT_OF_RANGE | TM_ANALYTICS_STUCK | TM_ANALYTICS_FAULT);
    if (flags & TM_ANALYTICS_FAULT)
        self->faults |= bit;
    else
    if (!bad)
        self->faults &= ~bit;
    //  A lone out-of-range reading of a faulty property keeps its fault.
    self->good_run = bad? 0: s_inc8 (self->good_run);

    double goodness = bad? 0: (flags & TM_ANALYTICS_ANOMALOUS)? 0.5: 1;
    //  A mean over the first readings, then exponential over the window;
    //  the window is a power of two, so the steady state needs no division.
    if (self->nquality < S_QUALITY_WINDOW) {
        self->nquality++;
        self->quality += (float) ((goodness - self->quality) / self->nquality);
    }
    else
        self->quality += (float) ((goodness - self->quality) * (1.0 / S_QUALITY_WINDOW));

    tm_sync_event_t event;
    if (self->faults)
        event = TM_SYNC_READING_FAULT;
    else
    if (bad)
        event = TM_SYNC_READING_SUSPECT;
    else
    if (self->good_run < TM_ANALYTICS_SYNC_GOOD)
        event = TM_SYNC_READING_WARMING;
    else
        event = TM_SYNC_READING_OK;
    self->state = s_next[self->state][event];
    return event;
}

tm_sync_event_t
tm_analytics_sync_tick (tm_analytics_sync_t *self, int64_t now_ms)
{
    assert (self);
    bool overdue = self->heard_ms != INT64_MIN && now_ms > self->heard_ms
                   && s_ms_between (self->heard_ms, now_ms) > self->window_ms;
    tm_sync_event_t event = overdue? TM_SYNC_TICK_OVERDUE: TM_SYNC_TICK_FRESH;
    self->state = s_next[self->state][event];
    return event;
}

double
tm_analytics_sync_confidence (const tm_analytics_sync_t *self, int64_t now_ms)
{
    assert (self && self->state < TM_SYNC_NSTATES);
    if (self->heard_ms == INT64_MIN)
        return 0;
    double age = now_ms > self->heard_ms? s_ms_between (self->heard_ms, now_ms): 0;
    double fresh;
    if (age <= self->interval_ms)
        fresh = 1;
    else
    if (age >= self->window_ms)
        fresh = 0;
    else
        fresh = (self->window_ms - age) / ((double) self->window_ms - self->interval_ms);
    double confidence = self->quality * fresh * s_state_weight[self->state];
    return s_clamp (confidence, 0, 1);
}

const char *
tm_analytics_sync_state_name (int state)
{
    return state >= 0 && state < TM_SYNC_NSTATES? s_state_name[state]: "?";
}

const char *
tm_analytics_sync_event_name (int event)
{
    return event >= 0 && event < TM_SYNC_NEVENTS? s_event_name[event]: "?";
}
