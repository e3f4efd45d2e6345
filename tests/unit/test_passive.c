/*  test_passive - idle twins passivate to the store and come back

    What must hold: a checkpoint that passivates writes each idle twin's
    copy and its shard without it in one batch; the table forgets it but
    for its hash; any later find (a reading, a request) brings it back with
    the state it left with; a crash at any point leaves each twin in
    exactly one place, so recovery plus replay counts nothing twice; and
    the columnar query cache stays right when rows move under it.
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

#include "tm_qexec.h"
#include "tm_query.h"
#include "tm_store.h"
#include "tm_twins.h"
#include "tm_util.h"
#include "tm_wire.h"
#include "tm_wlog.h"
#include "tm_wquery.h"

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";
#define S_SHARDS 64

static int
s_load (void *arg, uint32_t shard, const char *entity, size_t len, uint8_t **val, size_t *vlen)
{
    tm_store_t *store = (tm_store_t *) arg;
    uint8_t key[6 + TM_WIRE_MAX_ENTITY];
    size_t klen = tm_wlog_passive_key (key, shard, entity, len);
    char *v = NULL;
    int rc = tm_store_get (store, key, klen, &v, vlen);
    if (rc == TM_STORE_E_NOT_FOUND)
        return 0;
    if (rc != 0)
        return -1;
    *val = (uint8_t *) v;
    return 1;
}

static tm_twins_t *
s_table (tm_store_t *store)
{
    tm_twins_t *twins = tm_twins_new ();
    assert_non_null (twins);
    tm_twins_set_passivation (twins, s_key, S_SHARDS, s_load, NULL, store);
    return twins;
}

//  A worker's store, log and table over dir; s_close drops them (a
//  restart or a crash: nothing is flushed that the code under test did not).
static void
s_open (const char *dir, tm_store_t **store, tm_wlog_t **wlog, tm_twins_t **twins)
{
    *store = tm_store_open (dir);
    assert_non_null (*store);
    *wlog = tm_wlog_new (*store, false);
    assert_non_null (*wlog);
    *twins = s_table (*store);
}

static void
s_close (tm_store_t **store, tm_wlog_t **wlog, tm_twins_t **twins)
{
    tm_wlog_destroy (wlog);
    tm_twins_destroy (twins);
    tm_store_destroy (store);
}

static size_t
s_encode (uint8_t *buf, size_t cap, const char *entity, const char *prop, double value,
          int64_t ts)
{
    size_t n = tm_wire_encode (buf, cap, entity, prop, value, ts, NULL);
    assert_true (n > 0);
    return n;
}

static tm_apply_t
s_apply (tm_twins_t *twins, const char *entity, const char *prop, double value, int64_t ts,
         int64_t now)
{
    uint8_t buf[256];
    size_t n = s_encode (buf, sizeof buf, entity, prop, value, ts);
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    return tm_twins_apply (twins, &r, s_key, S_SHARDS, now);
}

//  n twins prefix-0 .. prefix-(n - 1), one pm25 reading each, heard at 1000.
static void
s_idle_twins (tm_twins_t *twins, const char *prefix, int n)
{
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf (id, sizeof id, "%s-%d", prefix, i);
        assert_int_equal (s_apply (twins, id, "pm25", i, 1000, 1000), TM_APPLY_APPLIED);
    }
}

static const tm_prop_t *
s_prop (const tm_twins_t *twins, const tm_twin_t *t, const char *name)
{
    for (uint16_t i = 0; i < t->nprops; i++)
        if (strcmp (tm_twins_prop_name (twins, &t->props[i]), name) == 0)
            return &t->props[i];
    return NULL;
}

//  Every row and slot agree with each other and with find.
static void
s_check_table (tm_twins_t *twins)
{
    size_t nrows, nslots, inslots = 0;
    tm_twin_t *const *rows = tm_twins_rows (twins, &nrows);
    assert_int_equal (nrows, tm_twins_size (twins));
    for (size_t r = 0; r < nrows; r++) {
        assert_int_equal (rows[r]->row, r);
        assert_ptr_equal (tm_twins_find_active (twins, rows[r]->entity, rows[r]->entity_len),
                          rows[r]);
    }
    tm_twin_t *const *slots = tm_twins_slots (twins, &nslots);
    for (size_t i = 0; i < nslots; i++)
        inslots += slots[i] != NULL;
    assert_int_equal (inslots, nrows);
    size_t inshards = 0;
    for (uint32_t s = 0; s < S_SHARDS; s++)
        for (tm_twin_t *t = tm_twins_shard_first (twins, s); t; t = t->next_in_shard)
            inshards++;
    assert_int_equal (inshards, nrows);
}

static char *
s_tmpdir (void)
{
    char *dir = strdup ("/tmp/tm-test-passive-XXXXXX");
    assert_non_null (mkdtemp (dir));
    return dir;
}

static void
s_rm (char *dir)
{
    assert_int_equal (tm_util_rm_rf (dir), 0);
    free (dir);
}

//  100 idle twins and 10 busy ones; a checkpoint over budget passivates the
//  idle ones only; each comes back, unchanged, when asked for or read.
static void
test_passivate_and_reactivate (void **state)
{
    (void) state;
    char *dir = s_tmpdir ();
    tm_store_t *store;
    tm_wlog_t *wlog;
    tm_twins_t *twins;
    s_open (dir, &store, &wlog, &twins);
    char id[32];
    for (int i = 0; i < 110; i++) {
        snprintf (id, sizeof id, "e-%d", i);
        int64_t now = i < 100? 1000: 9000;
        assert_int_equal (s_apply (twins, id, "pm25", i + 0.5, 1000, now), TM_APPLY_APPLIED);
        assert_int_equal (s_apply (twins, id, "no2", 2 * i, 1000, now), TM_APPLY_APPLIED);
    }
    tm_wlog_passivate (wlog, 5000);
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_wlog_passivated (wlog), 100);
    assert_int_equal (tm_twins_size (twins), 10);
    assert_int_equal (tm_twins_passive_total (twins), 100);
    s_check_table (twins);
    assert_null (tm_twins_find_active (twins, "e-5", 3));
    tm_twins_passive_stats_t ps;
    tm_twins_passive_stats (twins, &ps);
    assert_int_equal (ps.passivated, 100);

    //  A request brings e-5 back as it was.
    tm_twin_t *t = tm_twins_find (twins, "e-5", 3);
    assert_non_null (t);
    assert_true (t->flags & TM_TWIN_REACTIVATED);
    assert_int_equal (tm_twins_size (twins), 11);
    assert_int_equal (tm_twins_passive_total (twins), 99);
    const tm_prop_t *p = s_prop (twins, t, "pm25");
    assert_non_null (p);
    assert_int_equal (p->count, 1);
    assert_true (p->an.value == 5.5);
    assert_int_equal (p->an.ts_ms, 1000);
    s_check_table (twins);

    //  A reading of e-7 brings it back and applies once; a replayed one is
    //  a duplicate.
    assert_int_equal (s_apply (twins, "e-7", "pm25", 99, 2000, 9000), TM_APPLY_APPLIED);
    assert_int_equal (s_apply (twins, "e-7", "pm25", 99, 2000, 9000), TM_APPLY_DUPLICATE);
    t = tm_twins_find_active (twins, "e-7", 3);
    assert_non_null (t);
    assert_int_equal (s_prop (twins, t, "pm25")->count, 2);
    assert_int_equal (s_prop (twins, t, "no2")->count, 1);
    //  An entity never seen is new, not passive.
    assert_null (tm_twins_find (twins, "nobody", 6));
    assert_int_equal (s_apply (twins, "new-1", "pm25", 1, 1000, 9000), TM_APPLY_APPLIED);
    assert_int_equal (tm_twins_size (twins), 13);
    assert_int_equal (tm_twins_passive_total (twins), 98);
    tm_twins_passive_stats (twins, &ps);
    assert_int_equal (ps.reactivated, 2);

    //  The next checkpoint deletes the copies of the twins that came back.
    uint8_t key[64];
    char *v = NULL;
    size_t vl;
    size_t kl = tm_wlog_passive_key (key, tm_twins_find_active (twins, "e-5", 3)->shard, "e-5", 3);
    assert_int_equal (tm_store_get (store, key, kl, &v, &vl), 0);
    free (v);
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_store_get (store, key, kl, &v, &vl), TM_STORE_E_NOT_FOUND);
    assert_false (tm_twins_find_active (twins, "e-5", 3)->flags & TM_TWIN_REACTIVATED);
    s_close (&store, &wlog, &twins);

    //  Recovery: the active twins from their shards, the passive set from
    //  its keys; the passive ones still come back on demand.
    s_open (dir, &store, &wlog, &twins);
    size_t bad = 9;
    uint64_t skipped;
    assert_int_equal (tm_wlog_recover (wlog, twins, NULL, NULL, NULL, &bad, &skipped), 0);
    assert_int_equal (bad, 0);
    assert_int_equal (tm_twins_size (twins), 13);
    assert_int_equal (tm_twins_passive_total (twins), 98);
    t = tm_twins_find (twins, "e-42", 4);
    assert_non_null (t);
    assert_true (s_prop (twins, t, "no2")->an.value == 84);
    assert_int_equal (tm_twins_passive_total (twins), 97);
    s_check_table (twins);
    s_close (&store, &wlog, &twins);
    s_rm (dir);
}

static void
s_on_record (void *arg, uint64_t seq, const uint8_t *data, size_t size)
{
    (void) seq;
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    while (tm_wire_next (&it, &r) == 1)
        tm_twins_apply ((tm_twins_t *) arg, &r, s_key, S_SHARDS, 9000);
}

//  A crash after a passive twin came back (its copy not yet deleted) and
//  after logged readings of passive twins: recovery finds each twin once,
//  the log's readings applied once.
static void
test_crash_after_reactivation (void **state)
{
    (void) state;
    char *dir = s_tmpdir ();
    tm_store_t *store;
    tm_wlog_t *wlog;
    tm_twins_t *twins;
    s_open (dir, &store, &wlog, &twins);
    s_idle_twins (twins, "c", 20);
    tm_wlog_passivate (wlog, 5000);
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_twins_size (twins), 0);
    //  c-1 comes back (a request), c-2 gets a logged reading; crash.
    assert_non_null (tm_twins_find (twins, "c-1", 3));
    uint8_t buf[256];
    size_t n = s_encode (buf, sizeof buf, "c-2", "pm25", 42, 3000);
    tm_wlog_stage (wlog, buf, n);
    assert_int_equal (tm_wlog_commit (wlog), 0);
    s_on_record (twins, 1, buf, n);
    s_close (&store, &wlog, &twins);

    s_open (dir, &store, &wlog, &twins);
    size_t bad;
    uint64_t skipped;
    assert_int_equal (tm_wlog_recover (wlog, twins, s_on_record, twins, NULL, &bad, &skipped), 1);
    assert_int_equal (tm_twins_size (twins), 1);   //  c-2, from its copy and the log
    assert_int_equal (tm_twins_passive_total (twins), 19);
    tm_twin_t *t = tm_twins_find_active (twins, "c-2", 3);
    assert_non_null (t);
    assert_int_equal (s_prop (twins, t, "pm25")->count, 2);
    assert_true (s_prop (twins, t, "pm25")->an.value == 42);
    //  c-1 is passive again (its copy is what it was: nothing changed it).
    t = tm_twins_find (twins, "c-1", 3);
    assert_non_null (t);
    assert_int_equal (s_prop (twins, t, "pm25")->count, 1);
    //  Once written, everything is in one place: 18 passive, 2 active.
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    s_close (&store, &wlog, &twins);
    s_open (dir, &store, &wlog, &twins);
    assert_int_equal (tm_wlog_recover (wlog, twins, s_on_record, twins, NULL, &bad, &skipped), 0);
    assert_int_equal (tm_twins_size (twins), 2);
    assert_int_equal (tm_twins_passive_total (twins), 18);
    s_close (&store, &wlog, &twins);
    s_rm (dir);
}

//  A write that fails leaves the marked twins in the table and nothing
//  passive; the next round passivates them.
static void
test_failed_write_keeps_twins (void **state)
{
    (void) state;
    char *dir = s_tmpdir ();
    tm_store_t *store;
    tm_wlog_t *wlog;
    tm_twins_t *twins;
    s_open (dir, &store, &wlog, &twins);
    s_idle_twins (twins, "f", 30);
    tm_wlog_passivate (wlog, 5000);
    tm_store_fail_after (store, 1);
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), -1);
    tm_store_fail_after (store, 0);
    assert_int_equal (tm_twins_size (twins), 30);
    assert_int_equal (tm_twins_passive_total (twins), 0);
    for (uint32_t s = 0; s < S_SHARDS; s++)
        for (tm_twin_t *t = tm_twins_shard_first (twins, s); t; t = t->next_in_shard)
            assert_false (t->flags & TM_TWIN_PASSIVATING);
    //  The request ended with the failed round: nothing goes until asked again.
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_twins_size (twins), 30);
    tm_wlog_passivate (wlog, 5000);
    for (uint32_t s = 0; s < S_SHARDS; s++)
        tm_twins_mark_dirty (twins, s);
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_twins_size (twins), 0);
    assert_int_equal (tm_twins_passive_total (twins), 30);
    s_close (&store, &wlog, &twins);
    s_rm (dir);
}

static tm_qresult_t *
s_query (tm_wquery_t *wq, const char *text, long *scanned)
{
    tm_expr_error_t err;
    tm_query_t *q = tm_query_parse (text, &err);
    assert_non_null (q);
    size_t size;
    uint8_t *bytes = tm_query_plan_encode (q, &size);
    tm_query_t *plan = tm_query_plan_decode (bytes, size, &err);
    assert_non_null (plan);
    uint32_t shards[S_SHARDS];
    for (uint32_t s = 0; s < S_SHARDS; s++)
        shards[s] = s;
    tm_qpartial_t *part = tm_qpartial_new (plan);
    *scanned = tm_wquery_scan (wq, NULL, NULL, plan, shards, S_SHARDS, 9000, part);
    size_t psize;
    uint8_t *pb = tm_qpartial_encode (part, &psize);
    tm_qpartial_t *merged = tm_qpartial_new (q);
    char why[128];
    assert_int_equal (tm_qpartial_merge (merged, pb, psize, why, sizeof why), 0);
    tm_qresult_t *res = tm_qresult_new (q, merged);
    assert_non_null (res);
    free (pb);
    free (bytes);
    tm_qpartial_destroy (&merged);
    tm_qpartial_destroy (&part);
    tm_query_destroy (&plan);
    tm_query_destroy (&q);
    return res;
}

//  The columnar scan keeps columns by row; passivation moves rows, so its
//  next scan must see the twins that are left, each once.
static void
test_columns_after_rows_move (void **state)
{
    (void) state;
    char *dir = s_tmpdir ();
    tm_store_t *store;
    tm_wlog_t *wlog;
    tm_twins_t *twins;
    s_open (dir, &store, &wlog, &twins);
    tm_wquery_t *wq = tm_wquery_new (twins);
    char id[32];
    double busy_sum = 0;
    for (int i = 0; i < 200; i++) {
        snprintf (id, sizeof id, "q-%d", i);
        bool busy = i % 3 == 0;
        s_apply (twins, id, "pm25", i, 1000, busy? 9000: 1000);
        busy_sum += busy? i: 0;
    }
    long scanned;
    tm_qresult_t *res = s_query (wq, "SELECT count(*), sum(pm25) FROM twins", &scanned);
    assert_int_equal (scanned, 200);
    assert_true (tm_qresult_cell (res, 0, 1).num == 199 * 200 / 2);
    tm_qresult_destroy (&res);
    tm_wlog_passivate (wlog, 5000);
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_twins_size (twins), 67);
    res = s_query (wq, "SELECT count(*), sum(pm25) FROM twins", &scanned);
    assert_int_equal (scanned, 67);
    assert_true (tm_qresult_cell (res, 0, 0).num == 67);
    assert_true (fabs (tm_qresult_cell (res, 0, 1).num - busy_sum) < 1e-9);
    tm_qresult_destroy (&res);
    //  One back, changed: the scan sees it once with its new value.
    assert_int_equal (s_apply (twins, "q-1", "pm25", 1000, 2000, 9000), TM_APPLY_APPLIED);
    res = s_query (wq, "SELECT count(*), sum(pm25) FROM twins", &scanned);
    assert_int_equal (scanned, 68);
    assert_true (fabs (tm_qresult_cell (res, 0, 1).num - (busy_sum + 1000)) < 1e-9);
    tm_qresult_destroy (&res);
    tm_wquery_destroy (&wq);
    s_close (&store, &wlog, &twins);
    s_rm (dir);
}

//  Pinned twins, twins with desired values and twins heard recently stay;
//  a veto from the hierarchy keeps a twin too.
static bool
s_veto (void *arg, tm_twin_t *twin)
{
    (void) arg;
    return strcmp (twin->entity, "v-3") != 0;
}

static void
test_eligibility (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    tm_twins_set_passivation (twins, s_key, S_SHARDS, s_load, s_veto, NULL);
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf (id, sizeof id, "v-%d", i);
        s_apply (twins, id, "pm25", i, 1000, i == 4? 9000: 1000);
    }
    tm_twins_find_active (twins, "v-1", 3)->flags |= TM_TWIN_PINNED;
    size_t marked = 0;
    for (uint32_t s = 0; s < S_SHARDS; s++)
        marked += tm_twins_passivate_mark (twins, s, 5000);
    assert_int_equal (marked, 2);  //  v-0 and v-2
    assert_true (tm_twins_find_active (twins, "v-0", 3)->flags & TM_TWIN_PASSIVATING);
    assert_true (tm_twins_find_active (twins, "v-2", 3)->flags & TM_TWIN_PASSIVATING);
    assert_false (tm_twins_find_active (twins, "v-3", 3)->flags & TM_TWIN_PASSIVATING);
    //  A marked twin is left out of its shard's blob.
    uint32_t shard = tm_twins_find_active (twins, "v-0", 3)->shard;
    uint8_t *buf = NULL;
    size_t cap = 0, size = tm_twins_encode_shard (twins, shard, &buf, &cap);
    tm_twins_t *copy = tm_twins_new ();
    assert_true (tm_twins_restore_shard (copy, shard, buf, size) >= 0);
    assert_null (tm_twins_find_active (copy, "v-0", 3));
    tm_twins_destroy (&copy);
    free (buf);
    //  A passive set that is not one is refused.
    uint8_t junk[7] = {0};
    assert_int_equal (tm_twins_passive_load (twins, 3, junk, sizeof junk), -1);
    tm_twins_destroy (&twins);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_passivate_and_reactivate),
        cmocka_unit_test (test_crash_after_reactivation),
        cmocka_unit_test (test_failed_write_keeps_twins),
        cmocka_unit_test (test_columns_after_rows_move),
        cmocka_unit_test (test_eligibility),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
