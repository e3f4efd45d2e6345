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
    assert_non_null (prop->hist);
    assert_int_equal (tm_gorilla_enc_count (prop->hist), 10);
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
    uint32_t shard = s_prop (twins, "e-1", &twin)->hist? twin->shard: 0;
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t cap = 0, cap2 = 0;
    size_t len = tm_twins_encode_shard (twins, shard, &buf, &cap);
    assert_true (len > 0);
    assert_int_equal (buf[0], 5);
    //  A format-3 blob (before attributes: the same bytes without the
    //  twin's attribute count, its last byte here) still restores.
    assert_int_equal (buf[len - 1], 0);
    buf[0] = 3;
    tm_twins_t *old = tm_twins_new ();
    assert_int_equal (tm_twins_restore_shard (old, shard, buf, len - 1), 1);
    assert_non_null (s_prop (old, "e-1", &twin)->hist);
    tm_twins_destroy (&old);
    buf[0] = 5;
    tm_twins_t *again = tm_twins_new ();
    assert_int_equal (tm_twins_restore_shard (again, shard, buf, len), 1);
    const tm_prop_t *prop = s_prop (again, "e-1", &twin);
    assert_non_null (prop->hist);
    assert_int_equal (tm_gorilla_enc_count (prop->hist), 10);
    assert_int_equal (tm_gorilla_enc_first_ts (prop->hist), 121000);
    assert_int_equal (tm_twins_encode_shard (again, shard, &buf2, &cap2), len);
    assert_memory_equal (buf, buf2, len);
    //  Appending goes on where it stopped.
    assert_int_equal (s_apply (again, "e-1", 131000, 1.5), TM_APPLY_APPLIED);
    assert_int_equal (tm_gorilla_enc_count (prop->hist), 11);
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
    assert_int_equal (tm_wlog_recover (wlog, rp.twins, s_on_record, &rp, &bad), 150);
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
    assert_int_equal (tm_wlog_recover (wlog, rp.twins, s_on_record, &rp, &bad), 0);
    s_check_all (store, rp.twins, "e-1", 280, 1000);
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&rp.twins);
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
    //  A late reading at the time of an in-order one is not a second reading.
    assert_int_equal (s_apply (twins, "e-1", 3000, 8.0), TM_APPLY_LATE);
    //  Two pending (the retry is written to the same key), not three: a
    //  reading the open chunk already has (a replayed log record) is not new.
    assert_int_equal (tm_twins_pending_count (twins), 2);
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

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_chunks_close_and_query),
        cmocka_unit_test (test_blob_round_trip),
        cmocka_unit_test (test_crash_before_write),
        cmocka_unit_test (test_late_and_duplicates),
        cmocka_unit_test (test_retention),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
