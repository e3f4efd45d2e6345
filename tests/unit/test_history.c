/*  test_history - series history: chunks, checkpoints, recovery, late
    readings, retention and queries

    The invariant under test: every applied reading is in its series'
    history exactly once, whether its chunk is open, closed and waiting,
    written, or lost with a crash before it was written (then the log and
    the stored open chunk bring it back); late readings are kept apart and
    once; retention drops only what is old.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tm_history.h"
#include "tm_segment.h"
#include "tm_store.h"
#include "tm_twins.h"
#include "tm_util.h"
#include "tm_wire.h"
#include "tm_wlog.h"

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";

//  The value of reading i: a decimal, as sensors send.
static double
s_value (int64_t ts)
{
    return (double) (ts % 997) / 10;
}

static tm_apply_t
s_apply (tm_twins_t *twins, const char *entity, int64_t ts, double value)
{
    uint8_t buf[256];
    size_t n = tm_wire_encode (buf, sizeof buf, entity, "pm25", value, ts, NULL);
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    return tm_twins_apply (twins, &r, s_key, 64, 1000);
}

static const tm_prop_t *
s_prop (tm_twins_t *twins, const char *entity, tm_twin_t **twin)
{
    *twin = tm_twins_find (twins, entity, strlen (entity));
    assert_non_null (*twin);
    return &(*twin)->props[0];
}

//  Query everything raw and check it is ts = step, 2 step, .. n step.
static void
s_check_all (tm_store_t *store, tm_twins_t *twins, const char *entity, int n, int64_t step)
{
    tm_twin_t *twin;
    const tm_prop_t *prop = s_prop (twins, entity, &twin);
    tm_history_result_t res;
    assert_int_equal (tm_history_query (store, twins, twin, prop, 0, 0, 0, TM_HISTORY_AVG, 0,
                                        &res), 0);
    assert_int_equal (res.n, n);
    assert_false (res.truncated);
    for (int i = 0; i < n; i++) {
        assert_int_equal (res.ts_ms[i], (i + 1) * step);
        assert_true (res.values[i] == s_value ((i + 1) * step));
    }
    tm_history_result_fini (&res);
}

static void
test_chunks_close_and_query (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    for (int i = 1; i <= 250; i++)
        assert_int_equal (s_apply (twins, "e-1", i * 1000, s_value (i * 1000)),
                          TM_APPLY_APPLIED);
    tm_twin_t *twin;
    const tm_prop_t *prop = s_prop (twins, "e-1", &twin);
    //  Two chunks closed at 120 points, 10 points open.
    assert_int_equal (tm_twins_pending_count (twins), 2);
    assert_true (tm_gorilla_open_count (&prop->hist) > 0);
    assert_int_equal (tm_gorilla_open_count (&prop->hist), 10);
    char dir[] = "/tmp/tm-test-history-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    s_check_all (store, twins, "e-1", 250, 1000);

    //  Ranges and steps: [10 s, 20 s) holds 10 readings.
    tm_history_result_t res;
    assert_int_equal (tm_history_query (store, twins, twin, prop, 10000, 20000, 0,
                                        TM_HISTORY_AVG, 0, &res), 0);
    assert_int_equal (res.n, 10);
    assert_int_equal (res.ts_ms[0], 10000);
    tm_history_result_fini (&res);
    assert_int_equal (tm_history_query (store, twins, twin, prop, 0, 0, 60000,
                                        TM_HISTORY_COUNT, 0, &res), 0);
    assert_int_equal (res.n, 5);   //  0-59 s .. 240-250 s
    assert_true (res.values[0] == 59);
    assert_int_equal (res.counts[0], 59);
    assert_true (res.values[4] == 11);
    tm_history_result_fini (&res);
    assert_int_equal (tm_history_query (store, twins, twin, prop, 0, 0, 60000,
                                        TM_HISTORY_MAX, 0, &res), 0);
    assert_true (res.values[1] == s_value (119000));
    tm_history_result_fini (&res);
    //  The limit truncates.
    assert_int_equal (tm_history_query (store, twins, twin, prop, 0, 0, 0, TM_HISTORY_AVG, 7,
                                        &res), 0);
    assert_int_equal (res.n, 7);
    assert_true (res.truncated);
    tm_history_result_fini (&res);
    tm_store_destroy (&store);
    tm_twins_destroy (&twins);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

static void
test_blob_round_trip (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    for (int i = 1; i <= 130; i++)
        s_apply (twins, "e-1", i * 1000, s_value (i * 1000));
    tm_twin_t *twin;
    uint32_t shard = tm_gorilla_open_count (&s_prop (twins, "e-1", &twin)->hist)? twin->shard: 0;
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t cap = 0, cap2 = 0;
    size_t len = tm_twins_encode_shard (twins, shard, &buf, &cap);
    assert_true (len > 0);
    assert_int_equal (buf[0], 6);
    tm_twins_t *again = tm_twins_new ();
    assert_int_equal (tm_twins_restore_shard (again, shard, buf, len), 1);
    const tm_prop_t *prop = s_prop (again, "e-1", &twin);
    assert_true (tm_gorilla_open_count (&prop->hist) > 0);
    assert_int_equal (tm_gorilla_open_count (&prop->hist), 10);
    assert_int_equal (tm_gorilla_open_first_ts (&prop->hist, prop->an.ts_ms), 121000);
    assert_int_equal (tm_twins_encode_shard (again, shard, &buf2, &cap2), len);
    assert_memory_equal (buf, buf2, len);
    //  Appending goes on where it stopped.
    assert_int_equal (s_apply (again, "e-1", 131000, 1.5), TM_APPLY_APPLIED);
    assert_int_equal (tm_gorilla_open_count (&prop->hist), 11);
    //  A damaged chunk is refused, not trusted.
    buf[len - 3] ^= 0xff;
    tm_twins_t *third = tm_twins_new ();
    (void) tm_twins_restore_shard (third, shard, buf, len);
    tm_twins_destroy (&third);
    free (buf);
    free (buf2);
    tm_twins_destroy (&again);
    tm_twins_destroy (&twins);
}

typedef struct {
    tm_twins_t *twins;
} s_replay_t;

static void
s_on_record (void *arg, uint64_t seq, const uint8_t *data, size_t size)
{
    (void) seq;
    s_replay_t *rp = (s_replay_t *) arg;
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    while (tm_wire_next (&it, &r) == 1)
        tm_twins_apply (rp->twins, &r, s_key, 64, 1000);
}

//  Log one reading (as the worker does before it applies) and apply it.
static void
s_log_apply (tm_wlog_t *wlog, tm_twins_t *twins, int64_t ts)
{
    uint8_t buf[256];
    size_t n = tm_wire_encode (buf, sizeof buf, "e-1", "pm25", s_value (ts), ts, NULL);
    tm_wlog_stage (wlog, buf, n);
    assert_int_equal (tm_wlog_commit (wlog), 0);
    s_apply (twins, "e-1", ts, s_value (ts));
}

static void
test_crash_before_write (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-history-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    tm_twins_t *twins = tm_twins_new ();
    //  130 readings and a checkpoint: one chunk written, 10 points in the
    //  stored open chunk.
    for (int i = 1; i <= 130; i++)
        s_log_apply (wlog, twins, i * 1000);
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_twins_pending_count (twins), 0);
    s_check_all (store, twins, "e-1", 130, 1000);
    //  150 more: a chunk closes (pending) and the crash comes before the
    //  next checkpoint writes it.
    for (int i = 131; i <= 280; i++)
        s_log_apply (wlog, twins, i * 1000);
    assert_int_equal (tm_twins_pending_count (twins), 1);
    s_check_all (store, twins, "e-1", 280, 1000);
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&twins);
    tm_store_destroy (&store);

    store = tm_store_open (dir);
    wlog = tm_wlog_new (store, false);
    s_replay_t rp = {.twins = tm_twins_new ()};
    size_t bad = 0;
    uint64_t skipped;
    assert_int_equal (tm_wlog_recover (wlog, rp.twins, s_on_record, &rp, NULL, &bad, &skipped),
                      150);
    assert_int_equal (bad, 0);
    //  Every reading once: 120 stored, 10 from the stored open chunk, 150
    //  from the log (a chunk closes again on the way).
    s_check_all (store, rp.twins, "e-1", 280, 1000);
    assert_int_equal (tm_wlog_checkpoint (wlog, rp.twins), 0);
    s_check_all (store, rp.twins, "e-1", 280, 1000);
    //  A limit over stored chunks: the first 130 in order, and truncated.
    tm_twin_t *twin;
    const tm_prop_t *prop = s_prop (rp.twins, "e-1", &twin);
    tm_history_result_t res;
    assert_int_equal (tm_history_query (store, rp.twins, twin, prop, 0, 0, 0, TM_HISTORY_AVG,
                                        130, &res), 0);
    assert_int_equal (res.n, 130);
    assert_true (res.truncated);
    for (int i = 0; i < 130; i++)
        assert_int_equal (res.ts_ms[i], (i + 1) * 1000);
    tm_history_result_fini (&res);
    //  A range inside the second stored chunk, then one past every point.
    assert_int_equal (tm_history_query (store, rp.twins, twin, prop, 150500, 153000, 0,
                                        TM_HISTORY_AVG, 0, &res), 0);
    assert_int_equal (res.n, 2);
    assert_int_equal (res.ts_ms[0], 151000);
    assert_false (res.truncated);
    tm_history_result_fini (&res);
    assert_int_equal (tm_history_query (store, rp.twins, twin, prop, 281000, 0, 0,
                                        TM_HISTORY_AVG, 0, &res), 0);
    assert_int_equal (res.n, 0);
    tm_history_result_fini (&res);
    //  And once more after a clean restart.
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&rp.twins);
    tm_store_destroy (&store);
    store = tm_store_open (dir);
    wlog = tm_wlog_new (store, false);
    rp.twins = tm_twins_new ();
    assert_int_equal (tm_wlog_recover (wlog, rp.twins, s_on_record, &rp, NULL, &bad, &skipped), 0);
    s_check_all (store, rp.twins, "e-1", 280, 1000);
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&rp.twins);
    tm_store_destroy (&store);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

//  A checkpoint after every reading, restarts on the way (clean ones, and
//  crashes with records after the last checkpoint): the open chunk's bytes
//  are in its segments or in the blob, never lost or doubled, and memory
//  keeps no more of them than the encoder's own room.
static void
test_checkpoint_every_reading (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-history-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    tm_twins_t *twins = tm_twins_new ();
    for (int i = 1; i <= 300; i++) {
        s_log_apply (wlog, twins, i * 1000);
        bool crash = i % 41 == 0;
        if (!crash)
            assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
        tm_twin_t *twin;
        const tm_prop_t *prop = s_prop (twins, "e-1", &twin);
        if (!crash)
            assert_int_equal (tm_gorilla_open_heap (&prop->hist), 0);
        if (i % 11 == 0 || crash) {
            s_check_all (store, twins, "e-1", i, 1000);
            tm_wlog_destroy (&wlog);
            tm_twins_destroy (&twins);
            tm_store_destroy (&store);
            store = tm_store_open (dir);
            assert_non_null (store);
            wlog = tm_wlog_new (store, false);
            s_replay_t rp = {.twins = tm_twins_new ()};
            size_t bad = 0;
            uint64_t skipped;
            assert_int_equal (tm_wlog_recover (wlog, rp.twins, s_on_record, &rp, NULL, &bad,
                                               &skipped), crash? 1: 0);
            assert_int_equal (bad, 0);
            twins = rp.twins;
            s_check_all (store, twins, "e-1", i, 1000);
        }
    }
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&twins);
    tm_store_destroy (&store);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

static void
test_late_and_duplicates (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-history-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    tm_twins_t *twins = tm_twins_new ();
    for (int i = 1; i <= 10; i++)
        s_apply (twins, "e-1", i * 1000, 1.0);
    assert_int_equal (s_apply (twins, "e-1", 10000, 9.0), TM_APPLY_DUPLICATE);
    assert_int_equal (s_apply (twins, "e-1", 5500, 7.0), TM_APPLY_LATE);
    assert_int_equal (s_apply (twins, "e-1", 5500, 7.0), TM_APPLY_LATE);   //  a retry
    //  A late reading at the time of an in-order one is not a second
    //  reading: stored (the chunk's bytes are not all in memory to check),
    //  but queries keep the in-order one.
    assert_int_equal (s_apply (twins, "e-1", 3000, 8.0), TM_APPLY_LATE);
    assert_int_equal (tm_twins_pending_count (twins), 3);
    for (int pass = 0; pass < 2; pass++) {
        tm_twin_t *twin;
        const tm_prop_t *prop = s_prop (twins, "e-1", &twin);
        tm_history_result_t res;
        assert_int_equal (tm_history_query (store, twins, twin, prop, 0, 0, 0,
                                            TM_HISTORY_AVG, 0, &res), 0);
        assert_int_equal (res.n, 11);
        assert_int_equal (res.late, 1);
        assert_int_equal (res.ts_ms[5], 5500);
        assert_true (res.values[5] == 7.0);
        assert_true (res.values[2] == 1.0);
        assert_true (res.values[9] == 1.0);
        tm_history_result_fini (&res);
        //  Written by the checkpoint, the same answer from the store.
        assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
        assert_int_equal (tm_twins_pending_count (twins), 0);
    }
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&twins);
    tm_store_destroy (&store);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

static int64_t s_fake_now;

static int64_t
s_now (void)
{
    return s_fake_now;
}

static void
test_retention (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-history-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_history_retention_t ret = {.retention_ms = 100000, .now_ms = s_now};
    tm_store_options_t so = {.filter = tm_history_filter, .filter_arg = &ret};
    tm_store_t *store = tm_store_open_with (dir, &so);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    tm_twins_t *twins = tm_twins_new ();
    //  Three chunks: points 1..120 s, 121..240 s, 241..360 s; 10 open.
    for (int i = 1; i <= 370; i++)
        s_apply (twins, "e-1", i * 1000, s_value (i * 1000));
    s_apply (twins, "e-1", 500, 3.0);   //  late, and old
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    //  At 340 s, with 100 s kept: the first chunk (last point 120 s) and
    //  the late reading go, the second (last 240 s) stays.
    s_fake_now = 340000;
    assert_int_equal (tm_store_compact (store), 0);
    tm_twin_t *twin;
    const tm_prop_t *prop = s_prop (twins, "e-1", &twin);
    tm_history_result_t res;
    assert_int_equal (tm_history_query (store, twins, twin, prop, 0, 0, 0, TM_HISTORY_AVG, 0,
                                        &res), 0);
    assert_int_equal (res.n, 250);
    assert_int_equal (res.ts_ms[0], 121000);
    assert_int_equal (res.late, 0);
    tm_history_result_fini (&res);
    //  A range starting inside a stored chunk finds it (seek to the chunk
    //  starting before it).
    assert_int_equal (tm_history_query (store, twins, twin, prop, 200500, 202000, 0,
                                        TM_HISTORY_AVG, 0, &res), 0);
    assert_int_equal (res.n, 1);
    assert_int_equal (res.ts_ms[0], 201000);
    tm_history_result_fini (&res);
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&twins);
    tm_store_destroy (&store);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

//  ---------------------------------------------------------------------
//  Retention per model

static tm_apply_t
s_apply_model (tm_twins_t *twins, const char *entity, const char *property,
               const char *model, int64_t ts, double value)
{
    uint8_t buf[256];
    size_t n = tm_wire_encode (buf, sizeof buf, entity, property, value, ts, model);
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    return tm_twins_apply (twins, &r, s_key, 64, 1000);
}

static void
s_put_model (tm_models_t *models, const char *json)
{
    char err[TM_MODEL_ERR_SIZE];
    tm_model_t *m = tm_model_parse (json, strlen (json), "t.json", err, sizeof err);
    if (!m)
        fail_msg ("%s", err);
    assert_int_equal (tm_models_put (models, &m, NULL, err, sizeof err), 0);
}

//  A key of kind 'H' or 'L' for shard 7, e 0 p 0, ts.
static size_t
s_key_of (uint8_t *key, char kind, int64_t ts)
{
    memcpy (key, "S\0\0\0\7", 5);
    key[5] = (uint8_t) kind;
    memcpy (key + 6, "e\0p\0", 4);
    uint64_t v = (uint64_t) ts ^ (1ULL << 63);
    for (int i = 7; i >= 0; i--, v >>= 8)
        key[10 + i] = (uint8_t) v;
    return 18;
}

//  A closed chunk's value, joined: format 0 (expires NO_EXPIRY) or 1.
static size_t
s_chunk_value (uint8_t *val, int64_t last, int64_t expires)
{
    tm_gorilla_enc_t enc;
    tm_gorilla_enc_init (&enc);
    assert_int_equal (tm_gorilla_enc_append (&enc, last - 1000, 1.5), 0);
    assert_int_equal (tm_gorilla_enc_append (&enc, last, 2.5), 0);
    tm_segment_t seg = {.last_ts = last, .kind = TM_SEGMENT_JOINED, .flags = TM_SEGMENT_CLOSED,
                        .count = 2, .bits = tm_gorilla_enc_bits (&enc),
                        .expires = expires == TM_HISTORY_NO_EXPIRY? TM_SEGMENT_NO_EXPIRY: expires};
    seg.bytes = tm_gorilla_enc_data (&enc, &seg.size);
    size_t n = tm_segment_put (val, &seg);
    tm_gorilla_enc_fini (&enc);
    return n;
}

//  The filter by itself: values of format 0 (the worker's retention, at
//  the clock of the compaction) and format 1 (their own expiry), at
//  several clocks, and bytes that are not values.
static void
test_filter_direct (void **state)
{
    (void) state;
    tm_history_retention_t ret = {.retention_ms = 100000, .now_ms = s_now};
    uint8_t key[32];
    //  Chunks ending at 50 s: one unstamped, one stamped to expire at 60 s
    //  (a model keeping 10 s), one at 1000 s (a model keeping 950 s).
    size_t kl = s_key_of (key, 'H', 49000);
    uint8_t v0[128], v60[128], v1000[128];
    size_t n0 = s_chunk_value (v0, 50000, TM_HISTORY_NO_EXPIRY);
    size_t n60 = s_chunk_value (v60, 50000, 60000);
    size_t n1000 = s_chunk_value (v1000, 50000, 1000000);
    struct {
        int64_t now;
        bool drop0, drop60, drop1000;
    } clocks[] = {
        {55000, false, false, false},
        {60000, false, false, false},  //  expiry is inclusive: kept at 60 s
        {60001, false, true, false},
        {150000, false, true, false},  //  now - 100 s == last: kept
        {150001, true, true, false},
        {1000001, true, true, true},
    };
    for (size_t i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
        s_fake_now = clocks[i].now;
        assert_int_equal (tm_history_filter (&ret, key, kl, v0, n0), clocks[i].drop0);
        assert_int_equal (tm_history_filter (&ret, key, kl, v60, n60), clocks[i].drop60);
        assert_int_equal (tm_history_filter (&ret, key, kl, v1000, n1000), clocks[i].drop1000);
    }
    //  The worker keeping everything (0) does not keep stamped values.
    ret.retention_ms = 0;
    s_fake_now = 200000;
    assert_false (tm_history_filter (&ret, key, kl, v0, n0));
    assert_true (tm_history_filter (&ret, key, kl, v60, n60));
    ret.retention_ms = 100000;
    //  A late reading at 10 s: format 0 (8 bytes), format 1 (17 bytes).
    kl = s_key_of (key, 'L', 10000);
    uint8_t l0[8] = {0}, l1[17] = {0};
    l1[8] = TM_HISTORY_VALUE_STAMPED;
    uint64_t e = (uint64_t) 500000 ^ (1ULL << 63);
    for (int i = 7; i >= 0; i--, e >>= 8)
        l1[9 + i] = (uint8_t) e;
    s_fake_now = 110000;
    assert_false (tm_history_filter (&ret, key, kl, l0, 8));
    assert_false (tm_history_filter (&ret, key, kl, l1, 17));
    s_fake_now = 110001;
    assert_true (tm_history_filter (&ret, key, kl, l0, 8));
    assert_false (tm_history_filter (&ret, key, kl, l1, 17));
    s_fake_now = 500001;
    assert_true (tm_history_filter (&ret, key, kl, l1, 17));
    //  Bytes that are no value, and keys that are not history, stay.
    s_fake_now = INT64_MAX / 2;
    assert_false (tm_history_filter (&ret, key, kl, l1, 16));
    l1[8] = 0;
    assert_false (tm_history_filter (&ret, key, kl, l1, 17));
    kl = s_key_of (key, 'H', 49000);
    assert_false (tm_history_filter (&ret, key, kl, v60, 12));
    assert_false (tm_history_filter (&ret, key, kl, v60, 8 + 9));
    key[5] = 'T';
    assert_false (tm_history_filter (&ret, key, kl, v0, n0));
    assert_false (tm_history_filter (&ret, "WLxxxxxxxxxxxxxx", 16, v0, n0));
    assert_false (tm_history_filter (NULL, key, kl, v0, n0));
    //  Decoding: both formats give back what was written.
    tm_history_value_t hv;
    assert_int_equal (tm_history_value_decode ('H', v60, n60, &hv), 0);
    assert_int_equal (hv.format, 1);
    assert_int_equal (hv.expires, 60000);
    assert_int_equal (hv.last_ts, 50000);
    assert_int_equal (hv.chunk_size, n60 - 17 - 10);      //  joined: flags, count, bits
    assert_true (hv.closed);
    assert_int_equal (hv.count, 2);
    assert_int_equal (tm_history_value_decode ('H', v0, n0, &hv), 0);
    assert_int_equal (hv.format, 0);
    assert_int_equal (hv.expires, TM_HISTORY_NO_EXPIRY);
    assert_int_equal (hv.chunk_size, n0 - 8 - 10);
    assert_int_equal (tm_history_value_decode ('X', v0, n0, &hv), -1);
}

//  Twins of three models and of none, written by a checkpoint and compacted
//  at several clocks: each series goes when its own retention says.
static void
test_retention_per_model (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-history-XXXXXX";
    assert_non_null (mkdtemp (dir));
    s_fake_now = 0;
    tm_history_retention_t ret = {.retention_ms = 300000, .now_ms = s_now};
    tm_store_options_t so = {.filter = tm_history_filter, .filter_arg = &ret};
    tm_store_t *store = tm_store_open_with (dir, &so);
    assert_non_null (store);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    tm_twins_t *twins = tm_twins_new ();
    tm_models_t *models = tm_models_new ();
    //  short keeps 100 s; long keeps 1000 s but its property fast 50 s;
    //  inherit says nothing (the worker's 300 s).
    s_put_model (models, "{\"name\": \"short\", \"version\": 1, \"retention_ms\": 100000,"
                         " \"properties\": {\"p\": {}}}");
    s_put_model (models, "{\"name\": \"long\", \"version\": 1, \"retention_ms\": 1000000,"
                         " \"properties\": {\"p\": {}, \"fast\": {\"retention_ms\": 50000}}}");
    s_put_model (models, "{\"name\": \"inherit\", \"version\": 1, \"properties\": {\"p\": {}}}");
    tm_twins_set_models (twins, models);
    struct {
        const char *entity, *property, *model;
        int64_t keep;              //  What the series keeps after its last point
    } series[] = {
        {"e-short", "p", "short", 100000},
        {"e-long", "p", "long", 1000000},
        {"e-long", "fast", "long", 50000},
        {"e-long", "other", "long", 1000000},   //  not in the model: the model's
        {"e-inherit", "p", "inherit", 300000},
        {"e-none", "p", NULL, 300000},           //  no model: the worker's
        {"e-absent", "p", "absent", 300000},     //  a model not loaded: the worker's
    };
    size_t nseries = sizeof series / sizeof series[0];
    //  One closed chunk each (points 1..120 s, last 120 s) and 5 open
    //  points, and a late reading at 0.5 s.
    for (size_t s = 0; s < nseries; s++) {
        for (int i = 1; i <= 125; i++)
            assert_int_equal (s_apply_model (twins, series[s].entity, series[s].property,
                                             series[s].model, i * 1000, s_value (i * 1000)),
                              TM_APPLY_APPLIED);
        assert_int_equal (s_apply_model (twins, series[s].entity, series[s].property,
                                         series[s].model, 500, 3.0),
                          TM_APPLY_LATE);
        tm_twin_t *twin = tm_twins_find (twins, series[s].entity, strlen (series[s].entity));
        assert_non_null (twin);
        assert_int_equal (tm_history_series_retention (twins, twin, series[s].property,
                                                       strlen (series[s].property)),
                          series[s].keep == 300000? 0: series[s].keep);
    }
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    //  Clocks between the expiries: the late reading (0.5 s) goes 120 s
    //  before the chunk's last point (120 s) would.
    int64_t clocks[] = {50000, 50501, 170001, 300501, 420001, 1000501, 1120001};
    for (size_t c = 0; c < sizeof clocks / sizeof clocks[0]; c++) {
        s_fake_now = clocks[c];
        assert_int_equal (tm_store_compact (store), 0);
        for (size_t s = 0; s < nseries; s++) {
            tm_twin_t *twin = tm_twins_find (twins, series[s].entity, strlen (series[s].entity));
            const tm_prop_t *prop = NULL;
            for (uint16_t i = 0; i < twin->nprops; i++)
                if (strcmp (tm_twins_prop_name (twins, &twin->props[i]), series[s].property) == 0)
                    prop = &twin->props[i];
            assert_non_null (prop);
            tm_history_result_t res;
            assert_int_equal (tm_history_query (store, twins, twin, prop, 0, 0, 0,
                                                TM_HISTORY_AVG, 0, &res),
                              0);
            bool late_kept = s_fake_now <= 500 + series[s].keep;
            bool chunk_kept = s_fake_now <= 120000 + series[s].keep;
            size_t expect = 5 + (chunk_kept? 120: 0) + (late_kept? 1: 0);
            if (res.n != expect)
                fail_msg ("now=%lld series %s.%s: %zu points, expected %zu",
                          (long long) s_fake_now, series[s].entity, series[s].property, res.n,
                          expect);
            assert_int_equal (res.late, late_kept? 1: 0);
            //  Whatever is left is the newest points, in order.
            assert_int_equal (res.ts_ms[res.n - 1], 125000);
            tm_history_result_fini (&res);
        }
    }
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&twins);
    tm_models_destroy (&models);
    tm_store_destroy (&store);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

//  A store written before retention stamps (format 0 values) still reads,
//  and its values keep the worker's retention.
static void
test_format0_values_read (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-history-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_history_retention_t ret = {.retention_ms = 100000, .now_ms = s_now};
    tm_store_options_t so = {.filter = tm_history_filter, .filter_arg = &ret};
    tm_store_t *store = tm_store_open_with (dir, &so);
    tm_twins_t *twins = tm_twins_new ();
    s_apply (twins, "e", 200000, 1.0);
    tm_twin_t *twin = tm_twins_find (twins, "e", 1);
    //  Written by hand as the previous build did, for shard and entity "e".
    uint8_t key[64], val[128];
    uint32_t shard = twin->shard;
    s_key_of (key, 'H', 49000);
    key[1] = (uint8_t) (shard >> 24);
    key[2] = (uint8_t) (shard >> 16);
    key[3] = (uint8_t) (shard >> 8);
    key[4] = (uint8_t) shard;
    memcpy (key + 6, "e\0pm25\0", 7);
    size_t kl = 21;
    uint64_t v = (uint64_t) 49000 ^ (1ULL << 63);
    for (int i = 7; i >= 0; i--, v >>= 8)
        key[13 + i] = (uint8_t) v;
    size_t vl = s_chunk_value (val, 50000, TM_HISTORY_NO_EXPIRY);
    assert_int_equal (tm_store_put (store, key, kl, val, vl, false), 0);
    key[5] = 'L';
    v = (uint64_t) 10000 ^ (1ULL << 63);
    for (int i = 7; i >= 0; i--, v >>= 8)
        key[13 + i] = (uint8_t) v;
    double late = 7.25;
    uint64_t bits;
    memcpy (&bits, &late, 8);
    for (int b = 0; b < 8; b++)
        val[b] = (uint8_t) (bits >> (8 * b));
    assert_int_equal (tm_store_put (store, key, kl, val, 8, false), 0);
    tm_history_result_t res;
    assert_int_equal (tm_history_query (store, twins, twin, &twin->props[0], 0, 0, 0,
                                        TM_HISTORY_AVG, 0, &res), 0);
    assert_int_equal (res.n, 4);
    assert_int_equal (res.ts_ms[0], 10000);
    assert_true (res.values[0] == 7.25);
    assert_int_equal (res.ts_ms[1], 49000);
    assert_true (res.values[2] == 2.5);
    assert_int_equal (res.ts_ms[3], 200000);
    tm_history_result_fini (&res);
    s_fake_now = 120000;           //  late reading older than 100 s: gone; chunk stays
    assert_int_equal (tm_store_compact (store), 0);
    assert_int_equal (tm_history_query (store, twins, twin, &twin->props[0], 0, 0, 0,
                                        TM_HISTORY_AVG, 0, &res), 0);
    assert_int_equal (res.n, 3);
    assert_int_equal (res.late, 0);
    tm_history_result_fini (&res);
    tm_twins_destroy (&twins);
    tm_store_destroy (&store);
    char cmd[128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_chunks_close_and_query),
        cmocka_unit_test (test_blob_round_trip),
        cmocka_unit_test (test_crash_before_write),
        cmocka_unit_test (test_checkpoint_every_reading),
        cmocka_unit_test (test_late_and_duplicates),
        cmocka_unit_test (test_retention),
        cmocka_unit_test (test_filter_direct),
        cmocka_unit_test (test_retention_per_model),
        cmocka_unit_test (test_format0_values_read),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
