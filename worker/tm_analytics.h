/*  tm_analytics - per-property analytics and per-twin sync status

    Issue #3 asks twins to "think": every reading updates running statistics,
    a forecast and an anomaly score, flags bad data, and moves the twin
    through a sync status. This module is that thinking, and nothing else: it
    does no I/O, takes no locks and allocates nothing. The twin table embeds
    one tm_analytics_t per property and one tm_analytics_sync_t per twin, and
    the actor that owns the twin calls the update functions.

    The load it is built for: the worker applies about 1.5 million readings a
    second on two cores, and the analytics may cost at most a quarter of that,
    so every update is O(1), branch-light and well under 100 ns (a couple of
    divisions and one square root). Memory is the other budget: a twin with
    eight properties must fit in 1 KiB all included, so the per-property
    state is 72 bytes; doubles where the value's precision matters (values
    near 1e9 must keep their low digits), floats for quantities that are
    estimates anyway (trend, residual scale) and for the EWMA and the level,
    which are stored as distances to doubles (see "Storage" below), small
    saturating counters for streaks. Quality flags are not stored: they
    follow from the streaks and the score (tm_analytics_flags).

    Settings (tm_analytics_settings_t) come from a model file and are shared
    by every twin of the model through a pointer; never copy them per twin.

    The formulas, one paragraph each:

    Running mean and variance (Welford's online algorithm). For the n-th
    in-range reading x: d = x - mean; mean += d / n; M2 += d * (x - mean).
    The sample variance is M2 / (n - 1). Unlike sum and sum-of-squares this
    does not cancel catastrophically: a series near 1e9 with a spread of
    1e-3 (a condition number of 1e12) keeps its variance to about five
    significant digits, where sum-of-squares keeps none. The count
    saturates at 2^32 - 1; past that the mean becomes a moving average with
    a window of four billion readings, which is indistinguishable.

    Min, max and EWMA. Min and max are over in-range readings. The
    exponentially weighted moving average starts at the first reading and
    then follows ewma += alpha * (x - ewma), one step per reading whatever
    the time between readings, so alpha is "weight of the newest reading".

    Forecast (Holt's linear trend method, double exponential smoothing),
    adapted to irregular time steps. The level L is the smoothed value at
    the latest reading's time and the trend b is in value units per
    millisecond, so a forecast at any time t is L + b * (t - ts). For a
    reading x after dt ms: the one-step forecast is F = L + b * dt and the
    residual r = x - F; then L = F + alpha * r (the same as alpha * x +
    (1 - alpha) * F) and b += beta * alpha * r / max(dt, I), where I is the
    expected update interval. With regular readings (dt = I) this is
    exactly Holt's recurrence b = beta * (L - L_prev) + (1 - beta) * b_prev
    expressed per millisecond. A burst of readings 1 ms apart moves the
    trend by dt/I of a normal step instead of reading noise/1ms as a steep
    slope. After a gap (dt > I) the past decays per interval elapsed:
    alpha becomes 1 - (1 - alpha)^(dt / I), and the slope is measured over
    the whole gap; with per-reading weights a trend learnt over short steps
    and extrapolated across a long gap feeds its error back into the level,
    and mixed 1 ms / 60 s steps were seen to diverge. The first
    reading sets L = x, b = 0; the second sets L = x and b = (x - x1) /
    max(dt, I), so a linear series is forecast exactly from then on (unless
    its first two readings came closer than I, when Holt converges to it;
    see "Storage" for what the float level costs it).
    A reading out of range does not correct the model: L is only advanced
    to its time along the trend, keeping "L is the level at ts".

    Anomaly score. The residual scale s is the root of a running mean of
    squared one-step residuals: an equal-weight mean over the first
    `warmup` residuals, then exponential with weight 1 / warmup, so the
    scale always reflects about `warmup` recent readings. The score of a
    reading is r / s, computed before s learns from r (a spike is judged
    against the past, not against itself), stored in hundredths of a sigma
    (saturating at +-327.67). The reading is flagged anomalous when
    |score| > anomaly_sigmas once `warmup` residuals have been seen. After
    a gap the forecast is h = dt / I steps ahead, so r is judged against
    s times the h-step widening of the next paragraph, and enters s divided
    by it (s stays a one-step scale). Past
    warm-up the residual is clipped at anomaly_sigmas * s before it updates
    L, b and s (Huber's psi, as in the robust Holt-Winters of Gelper, Fried
    and Croux): a spike neither drags the forecast, which would flag the
    next readings as its echo, nor inflates the scale and masks the next
    spike, yet a genuine level shift widens s geometrically and is
    followed within a few readings. s never goes below the rounding noise
    of the arithmetic (a few ulps of the forecast, and for the score those
    of the float level, see "Storage"), so a constant or perfectly linear
    series scores about 0, not rounding noise / 0.

    Storage of the EWMA and the level, and what it costs in precision. Both
    are floats, offsets from references that cost no memory: the EWMA,
    which lies between min and max, from the nearer of the two (the
    offset's sign says which), and the level from the EWMA (read them with
    tm_analytics_ewma and tm_analytics_level). A float keeps 24 bits of a
    distance that is at most half the spread (max - min) for the EWMA, and
    for the level a one-step residual plus the EWMA's lag behind the data,
    where a double spends its 53 bits on the magnitude of the values. The
    update works in these distances (reading minus reference, never 1e9
    plus 1e-3) and rounds each offset once, by at most 2^-24 (6e-8) of its
    size; the recurrences damp earlier roundings. Hence, against the same
    recurrences computed exactly:
    - the EWMA is within 2^-25 (max - min) / ewma_alpha (a spread of 2e6
      with alpha 0.1: within 0.6; 100k random readings came within 0.2);
    - the level, with regular steps and no clipping, is within 2^-23 /
      holt_alpha times its largest distance to the EWMA (the magnitudes of
      Holt's impulse response sum to less than 2 / alpha for any beta); a
      clipped reading passes earlier errors on undamped, and so does an
      out-of-range reading, which adds one rounding of its own;
    - tm_analytics_ewma, tm_analytics_level and the forecast add the half
      ulp of their double result.
    So values near 1e9 with a spread of 1e-3 keep every digit a double
    holds: the offsets are good to 1e-11 where the doubles' grid is 1.2e-7
    (the double recurrences this replaced drifted there, by 2.5 ulps with
    alpha 0.1 and 8 with alpha 0.01 over 100k readings). The level depends
    on its distance to the EWMA, not on the history's spread: after an
    in-range glitch of 1e6 on data with 1e-3 of noise, or a meter reset
    from 1e6 to 0, flags, scales and forecasts are those of a double level
    (to 2^-24 of the jump in the readings just after it, while the EWMA
    still remembers it). The EWMA itself keeps the bound above, relative
    to the spread, and does much better while the data sit near min or
    max. A constant is exact, and a linear series is forecast exactly once
    its EWMA is nearer its latest reading than its first (the level's
    offset is then the EWMA's, negated). Before that, in its first ~2 /
    ewma_alpha readings and after a gap, its level rounds to 2^-24 of the
    EWMA's lag, and its residual scale, 0 with exact arithmetic, learns
    that rounding. A rounding is never flagged: a residual is judged
    against at least 4 ulps (2^-21) of the level's offset; the model still
    learns from it clipped at the residual scale alone, as with a double
    level, so that a level shift is followed as fast as before. Offsets
    beyond FLT_MAX (3.4e38) saturate, where a float would be infinite and
    poison the next update; the update checks for that only when the
    spread exceeds FLT_MAX, as it must for an in-range offset to, and a
    level drifting that far along the trend over out-of-range readings
    would need a trend near the float's own limit. Offsets below FLT_MIN
    (1.2e-38) are subnormal, with an absolute error of at most 7e-46. A
    checkpoint stores the EWMA and the level as doubles. Reading it back
    gives the same offsets, unless an offset is below about 2^-29 of its
    reference or the EWMA lies within a rounding of the middle of [min,
    max]; then they round once more.

    Forecast uncertainty. For a forecast h = (t - ts) / I steps ahead the
    standard deviation is s * sqrt(1 + alpha^2 * sum_{j=1..h-1} (1 + beta
    j)^2), the h-step variance of the additive-trend exponential smoothing
    model (Hyndman et al., ETS(A,A,N)), evaluated in closed form with h
    rounded up. It is a simple guide, not a calibrated interval.

    Time to limit. The forecast line L + b * (t - ts) is solved for the
    upper limit when the trend rises and the lower limit when it falls; a
    flat trend, or one pointing away from every configured limit, never
    crosses. A forecast already beyond its limit at `now` crosses in 0 ms.

    Data quality. A reading is out of range when it is not finite or lies
    outside [valid_min, valid_max]; it is kept as the latest value and
    flagged, but does not enter any statistic. It is stuck when it is the
    stuck_run-th reading in a row with exactly the same value. A property
    is in fault when it is stuck or has had oor_streak out-of-range
    readings in a row.

    Sync status, per twin: a table-driven state machine (states x events,
    at the top of tm_analytics.c). Readings are classified FAULT (some
    property of the twin is in fault), SUSPECT (out of range, streak not
    reached), WARMING (good, but fewer than TM_ANALYTICS_SYNC_GOOD good
    readings in a row) or OK; timer ticks are FRESH or OVERDUE. Staleness
    uses the worker's clock at arrival, not device timestamps (a skewed
    device clock must not make a twin stale or immortal), and the window is
    the smallest interval x stale_factor among the twin's properties: a
    twin is one device on one uplink, so silence is a device-level fact and
    is detected as soon as the fastest promised report is overdue.

    Confidence, computed on demand: quality x freshness x state weight.
    Quality is the running mean of per-reading goodness (1 good, 0.5
    anomalous, 0 out of range or stuck) over the last 16 readings.
    Freshness is 1 until the expected interval has passed since the last
    reading, then falls linearly to 0 at the stale window. The state weight
    is 1 when synchronized, 0.5 when initializing or in error.

    Not thread-safe: the state belongs to the actor that owns the twin.
*/
#ifndef TM_ANALYTICS_H_INCLUDED
#define TM_ANALYTICS_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

//  Quality flags of one reading, returned by tm_analytics_update. 0 is ok.
#define TM_ANALYTICS_OUT_OF_RANGE 0x01 //  Not finite or outside the valid range
#define TM_ANALYTICS_STUCK        0x02 //  Same value stuck_run times in a row
#define TM_ANALYTICS_ANOMALOUS    0x04 //  |score| above the threshold after warm-up
#define TM_ANALYTICS_FAULT        0x08 //  The property is in fault (stuck or out-of-range streak)

//  Documented outcomes of the queries (positive: the caller must handle).
#define TM_ANALYTICS_E_NO_DATA 1 //  Not enough in-range readings for an answer
#define TM_ANALYTICS_E_NEVER   2 //  The forecast line does not reach a limit
#define TM_ANALYTICS_E_HORIZON 3 //  It does, but later than the horizon
#define TM_ANALYTICS_E_INVALID 4 //  Settings rejected by tm_analytics_settings_check

//  Good readings in a row before a twin counts as synchronized.
#define TM_ANALYTICS_SYNC_GOOD 3

//  Properties a twin's fault mask can track (tm_twins' TM_TWINS_MAX_PROPS).
#define TM_ANALYTICS_SYNC_MAX_PROPS 64

//  Per-property settings, from the model (shared by all its twins).
typedef struct {
    double valid_min;              //  Readings below are out of range (-INFINITY: no bound)
    double valid_max;              //  Readings above are out of range (INFINITY: no bound)
    double limit_lower;            //  Time-to-limit lower limit (-INFINITY: none)
    double limit_upper;            //  Time-to-limit upper limit (INFINITY: none)
    double ewma_alpha;             //  Weight of the newest reading in the EWMA, (0, 1]
    double holt_alpha;             //  Holt level smoothing, (0, 1]
    double holt_beta;              //  Holt trend smoothing, [0, 1]
    double anomaly_sigmas;         //  Flag residuals beyond this many standard deviations
    double stale_factor;           //  Silence of interval x factor makes the twin stale, >= 1
    int64_t interval_ms;           //  Expected time between readings, > 0
    int64_t horizon_ms;            //  Time-to-limit answers beyond this are "not within horizon"
    uint32_t warmup;               //  Residuals before anomalies are flagged; also the scale's window
    uint8_t stuck_run;             //  Identical readings in a row meaning stuck (0: never, >= 2)
    uint8_t oor_streak;            //  Out-of-range readings in a row meaning fault (0: never)
} tm_analytics_settings_t;

//  Per-property state: 72 bytes, embedded in the twin's property. The EWMA
//  and the level are offsets (see "Storage" above): read them with
//  tm_analytics_ewma and tm_analytics_level, and after writing min or max
//  directly (a checkpoint), set them with tm_analytics_restore.
typedef struct {
    double value;                  //  Latest value, whatever its quality
    int64_t ts_ms;                 //  Its timestamp; INT64_MIN before the first reading
    double mean;                   //  Welford running mean of in-range readings
    double m2;                     //  Welford sum of squared deviations from the mean
    double min;                    //  Smallest in-range reading
    double max;                    //  Largest in-range reading
    float ewma_off;                //  EWMA minus min (sign clear) or max (sign set)
    float level_off;               //  Holt level as of ts_ms, minus the EWMA
    float trend;                   //  Holt trend, value units per millisecond
    float resid_sd;                //  Running scale of one-step forecast residuals
    uint32_t count;                //  In-range readings, saturating at UINT32_MAX
    int16_t score_cs;              //  Anomaly score of the latest in-range reading, 1/100 sigma
    uint8_t same_run;              //  Readings in a row with the same value, saturating
    uint8_t oor_run;               //  Out-of-range readings in a row, saturating
} tm_analytics_t;

//  Sync status of a twin.
typedef enum {
    TM_SYNC_INITIALIZING = 0,      //  Not enough good readings yet
    TM_SYNC_SYNCHRONIZED,          //  Fresh, good data
    TM_SYNC_STALE,                 //  Silent for longer than its stale window
    TM_SYNC_ERROR,                 //  A property is in fault
    TM_SYNC_NSTATES
} tm_sync_state_t;

//  Events of the sync state machine, as classified from READING and TICK.
typedef enum {
    TM_SYNC_READING_OK = 0,        //  Good reading, enough good in a row, no fault
    TM_SYNC_READING_WARMING,       //  Good reading, not yet enough in a row
    TM_SYNC_READING_SUSPECT,       //  Out of range, streak not reached
    TM_SYNC_READING_FAULT,         //  Some property of the twin is in fault
    TM_SYNC_TICK_FRESH,            //  Timer: heard from within the window
    TM_SYNC_TICK_OVERDUE,          //  Timer: silent for longer than the window
    TM_SYNC_NEVENTS
} tm_sync_event_t;

//  Per-twin sync state: 32 bytes, embedded in the twin.
typedef struct {
    int64_t heard_ms;              //  Worker clock at the latest reading; INT64_MIN before any
    uint64_t faults;               //  Bit i set: property i is in fault
    uint32_t window_ms;            //  Stale after this silence: smallest interval x factor
    uint32_t interval_ms;          //  Expected interval of that property; freshness falls after it
    float quality;                 //  Running mean of per-reading goodness, [0, 1]
    uint8_t state;                 //  A tm_sync_state_t
    uint8_t good_run;              //  Good readings in a row, saturating
    uint8_t nquality;              //  Readings in quality, saturating at its window
    uint8_t spare;                 //  Padding, zero
} tm_analytics_sync_t;

//  Fill settings with the defaults used for a property that has no model:
//  no valid range or limits, 60 s interval, stale after 3 intervals, EWMA
//  alpha 0.1, Holt 0.3/0.1, 4 sigmas after 20 residuals, no stuck check,
//  fault after 3 out-of-range readings, 24 h horizon.
void tm_analytics_settings_defaults (tm_analytics_settings_t *settings);

//  Check settings loaded from a model; 0 if usable, TM_ANALYTICS_E_INVALID
//  otherwise (the model loader reports it; the update functions assert).
int tm_analytics_settings_check (const tm_analytics_settings_t *settings);

//  Initialise the state of a new property (embedded: no allocation).
void tm_analytics_init (tm_analytics_t *self);

//  Apply one reading, O(1). The caller applies only readings newer than
//  self->ts_ms (duplicates and late readings are its business). Returns the
//  reading's TM_ANALYTICS_* flags.
unsigned tm_analytics_update (tm_analytics_t *self, const tm_analytics_settings_t *settings,
                              int64_t ts_ms, double value);

//  Flags of the latest reading, recomputed from the state (same answer as
//  the update returned, as long as the settings did not change).
unsigned tm_analytics_flags (const tm_analytics_t *self, const tm_analytics_settings_t *settings);

//  Exponentially weighted moving average of the in-range readings (0
//  before the first).
double tm_analytics_ewma (const tm_analytics_t *self);

//  Holt level as of self->ts_ms (0 before the first in-range reading).
double tm_analytics_level (const tm_analytics_t *self);

//  Set the EWMA and the level, as restored from a checkpoint: call it after
//  min and max are set (the offsets are taken from them). An EWMA outside
//  [min, max], which no update makes, is clamped into it.
void tm_analytics_restore (tm_analytics_t *self, double ewma, double level);

//  Move the level to level, keeping everything else (a what-if: "the
//  property is now level"; the forecast goes on from there along the
//  trend). Stored as any level is, to 2^-24 of its distance to the EWMA.
void tm_analytics_set_level (tm_analytics_t *self, double level);

//  Sample variance of the in-range readings (0 with fewer than two).
double tm_analytics_variance (const tm_analytics_t *self);

//  Sample standard deviation of the in-range readings.
double tm_analytics_stddev (const tm_analytics_t *self);

//  Latest anomaly score in standard deviations of the forecast residual.
double tm_analytics_score (const tm_analytics_t *self);

//  Forecast at at_ms: sets *value and, if not NULL, *stddev (an uncertainty
//  that grows with the horizon). Returns 0, or TM_ANALYTICS_E_NO_DATA before
//  the first in-range reading.
int tm_analytics_forecast (const tm_analytics_t *self, const tm_analytics_settings_t *settings,
                           int64_t at_ms, double *value, double *stddev);

//  Milliseconds from now_ms until the forecast line reaches the upper or
//  lower limit: returns 0 and sets *ms and, if not NULL, *limit (the limit
//  reached); TM_ANALYTICS_E_HORIZON with *ms and *limit set when it is
//  beyond settings->horizon_ms; TM_ANALYTICS_E_NEVER when the trend is flat
//  or points away from every limit; TM_ANALYTICS_E_NO_DATA with fewer than
//  two in-range readings (no trend yet).
int tm_analytics_time_to_limit (const tm_analytics_t *self,
                                const tm_analytics_settings_t *settings, int64_t now_ms,
                                int64_t *ms, double *limit);

//  Initialise a twin's sync state (initializing, nothing heard).
void tm_analytics_sync_init (tm_analytics_sync_t *self);

//  READING event: property prop_index (< TM_ANALYTICS_SYNC_MAX_PROPS) with
//  settings got a reading with the given flags, applied at now_ms on the
//  worker's clock. Moves self->state; returns the classified event (for
//  logs: state before, event, state after).
tm_sync_event_t tm_analytics_sync_reading (tm_analytics_sync_t *self,
                                           const tm_analytics_settings_t *settings,
                                           unsigned prop_index, unsigned flags, int64_t now_ms);

//  TICK event at now_ms on the worker's clock: detects staleness when no
//  reading comes. Moves self->state; returns the classified event.
tm_sync_event_t tm_analytics_sync_tick (tm_analytics_sync_t *self, int64_t now_ms);

//  Confidence in the twin's data at now_ms, in [0, 1]; not stored.
double tm_analytics_sync_confidence (const tm_analytics_sync_t *self, int64_t now_ms);

//  Lower-case name of a state ("stale") or event ("TICK_OVERDUE") for logs;
//  "?" if out of range. Static strings.
const char *tm_analytics_sync_state_name (int state);
const char *tm_analytics_sync_event_name (int event);

#endif
