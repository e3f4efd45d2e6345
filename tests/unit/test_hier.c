/*  test_hier - a parent's children and their aggregates (worker/tm_hier)

    The aggregates are checked against a naive reference: a plain array of
    (parent, child, property) -> newest (ts, value, anomalous), recomputed
    from scratch after random sequences of updates that repeat, arrive out
    of order, go down as well as up, detach children and hit the limits.
    The CHILD_UPDATE codec is checked both ways and against hostile bytes:
    every truncation and many bit flips of valid messages, and hand-made
    messages that break each rule.
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

#include "tm_codec.h"
#include "tm_hier.h"

#define S_PARENTS 3
#define S_CHILDREN 12
#define S_PROPS 4

static const char *s_props[S_PROPS] = {"pm25", "no2", "temperature", "humidity"};

//  The reference: one slot per (parent, child, property).
typedef struct {
    bool set;
    int64_t ts;
    double value;
    bool anomalous;
} s_ref_t;

typedef struct {
    s_ref_t v[S_PARENTS][S_CHILDREN][S_PROPS];
    bool member[S_PARENTS][S_CHILDREN];    //  The parent holds the child
} s_model_t;

static uint64_t s_rng = 0x9E3779B97F4A7C15ULL;

static uint32_t
s_rand (void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t) (s_rng >> 11);
}

static void
s_names (int parent, int child, char *pname, char *cname)
{
    sprintf (pname, "city/district/%d", parent);
    sprintf (cname, "city/air-%03d", child);
}

//  Compare every parent's aggregates with a recomputation of the model.
static void
s_check (tm_hier_t *h, const s_model_t *m)
{
    for (int pi = 0; pi < S_PARENTS; pi++) {
        char pname[64], cname[64];
        s_names (pi, 0, pname, cname);
        size_t members = 0;
        for (int c = 0; c < S_CHILDREN; c++)
            members += m->member[pi][c];
        assert_int_equal (tm_hier_nchildren (h, pname), members);
        tm_hier_agg_t aggs[TM_HIER_MAX_PROPS];
        size_t n = tm_hier_aggregates (h, pname, NULL, NULL, aggs, TM_HIER_MAX_PROPS);
        size_t want_props = 0;
        for (int p = 0; p < S_PROPS; p++) {
            uint32_t count = 0, anomalous = 0;
            double sum = 0, mn = INFINITY, mx = -INFINITY;
            for (int c = 0; c < S_CHILDREN; c++) {
                const s_ref_t *r = &m->v[pi][c][p];
                if (!m->member[pi][c] || !r->set)
                    continue;
                count++;
                sum += r->value;
                mn = r->value < mn? r->value: mn;
                mx = r->value > mx? r->value: mx;
                anomalous += r->anomalous;
            }
            if (!count)
                continue;
            want_props++;
            const tm_hier_agg_t *a = NULL;
            for (size_t i = 0; i < n; i++)
                if (strcmp (aggs[i].property, s_props[p]) == 0)
                    a = &aggs[i];
            assert_non_null (a);
            assert_int_equal (a->children, count);
            assert_true (a->min == mn);
            assert_true (a->max == mx);
            assert_int_equal (a->anomalous, anomalous);
            //  Compensated summation: equal to the naive mean to rounding.
            assert_true (fabs (a->mean - sum / count) <= 1e-12 * (1 + fabs (sum / count)));
        }
        assert_int_equal (n, want_props);
        for (size_t i = 1; i < n; i++)
            assert_true (strcmp (aggs[i - 1].property, aggs[i].property) < 0);
    }
}

static void
test_random_sequences (void **state)
{
    (void) state;
    for (int round = 0; round < 20; round++) {
        tm_hier_t *h = tm_hier_new (0);
        assert_non_null (h);
        s_model_t *m = calloc (1, sizeof *m);
        assert_non_null (m);
        for (int step = 0; step < 3000; step++) {
            int pi = (int) (s_rand () % S_PARENTS), c = (int) (s_rand () % S_CHILDREN);
            char pname[64], cname[64];
            s_names (pi, c, pname, cname);
            tm_hier_counts_t counts = {0};
            if (s_rand () % 40 == 0) {
                tm_hier_entry_t e = {.parent = pname, .child = cname, .detached = true};
                assert_int_equal (tm_hier_apply (h, &e, &counts), 0);
                assert_int_equal (counts.applied, m->member[pi][c]? 1: 0);
                m->member[pi][c] = false;
                memset (m->v[pi][c], 0, sizeof m->v[pi][c]);
            }
            else {
                //  A few properties at once, timestamps in a narrow window
                //  so that repeats and older updates are common; values go
                //  down as often as up, and may be negative.
                tm_hier_value_t vals[S_PROPS];
                size_t nv = 1 + s_rand () % S_PROPS;
                int expect_applied = 0;
                for (size_t k = 0; k < nv; k++) {
                    int p = (int) (s_rand () % S_PROPS);
                    int64_t ts = 1000 + (int64_t) (s_rand () % 50);
                    double v = (double) ((int) (s_rand () % 2001) - 1000) / 8.0;
                    bool an = s_rand () % 5 == 0;
                    //  A repeat: the update the parent already holds, or
                    //  another value at its timestamp (ignored just the same).
                    s_ref_t *r = &m->v[pi][c][p];
                    if (r->set && s_rand () % 4 == 0) {
                        ts = r->ts;
                        if (s_rand () % 2) {
                            v = r->value;
                            an = r->anomalous;
                        }
                    }
                    vals[k] = (tm_hier_value_t) {.property = s_props[p], .value = v,
                                                 .ts_ms = ts, .anomalous = an};
                    if (!r->set || ts > r->ts) {
                        *r = (s_ref_t) {.set = true, .ts = ts, .value = v, .anomalous = an};
                        expect_applied++;
                    }
                }
                tm_hier_entry_t e = {.parent = pname, .child = cname, .child_model = "air",
                                     .values = vals, .nvalues = nv};
                assert_int_equal (tm_hier_apply (h, &e, &counts), 0);
                assert_int_equal (counts.applied, expect_applied);
                assert_int_equal (counts.applied + counts.ignored, nv);
                m->member[pi][c] = true;
            }
            if (step % 97 == 0)
                s_check (h, m);
        }
        s_check (h, m);
        tm_hier_destroy (&h);
        assert_null (h);
        free (m);
    }
}

static void
test_replay_changes_nothing (void **state)
{
    (void) state;
    tm_hier_t *h = tm_hier_new (0);
    tm_hier_value_t v[2] = {{.property = "pm25", .value = 30, .ts_ms = 2000},
                            {.property = "no2", .value = 10, .ts_ms = 2000}};
    tm_hier_entry_t e = {.parent = "d/1", .child = "a/1", .values = v, .nvalues = 2};
    tm_hier_counts_t c = {0};
    tm_hier_apply (h, &e, &c);
    assert_int_equal (c.applied, 2);
    //  The same update again, and an older one with other values.
    memset (&c, 0, sizeof c);
    tm_hier_apply (h, &e, &c);
    assert_int_equal (c.ignored, 2);
    tm_hier_value_t old = {.property = "pm25", .value = 99, .ts_ms = 1999};
    tm_hier_entry_t eo = {.parent = "d/1", .child = "a/1", .values = &old, .nvalues = 1};
    tm_hier_apply (h, &eo, &c);
    assert_int_equal (c.ignored, 3);
    //  The minimum child goes up: min follows exactly.
    tm_hier_value_t b = {.property = "pm25", .value = 20, .ts_ms = 2000};
    tm_hier_entry_t eb = {.parent = "d/1", .child = "a/2", .values = &b, .nvalues = 1};
    tm_hier_apply (h, &eb, &c);
    tm_hier_agg_t a[4];
    size_t n = tm_hier_aggregates (h, "d/1", NULL, NULL, a, 4);
    assert_int_equal (n, 2);
    assert_string_equal (a[1].property, "pm25");
    assert_true (a[1].min == 20 && a[1].max == 30 && a[1].mean == 25);
    b.value = 50;
    b.ts_ms = 2001;
    tm_hier_apply (h, &eb, &c);
    n = tm_hier_aggregates (h, "d/1", NULL, NULL, a, 4);
    assert_true (a[1].min == 30 && a[1].max == 50 && a[1].mean == 40);
    assert_int_equal (a[1].newest_ts_ms, 2001);
    tm_hier_destroy (&h);
}

static bool
s_only_pm25_of_air (void *arg, const char *model, const char *property)
{
    (void) arg;
    return strcmp (property, "pm25") == 0 && strcmp (model, "air") == 0;
}

static void
test_filter_and_children (void **state)
{
    (void) state;
    tm_hier_t *h = tm_hier_new (0);
    tm_hier_counts_t c = {0};
    const char *kids[] = {"k/3", "k/1", "k/2"};
    const char *models[] = {"air", "air", "traffic"};
    for (int i = 0; i < 3; i++) {
        tm_hier_value_t v[2] = {{.property = "pm25", .value = i, .ts_ms = 1},
                                {.property = "no2", .value = 10 + i, .ts_ms = 1}};
        tm_hier_entry_t e = {.parent = "d", .child = kids[i], .child_model = models[i],
                             .values = v, .nvalues = 2};
        tm_hier_apply (h, &e, &c);
    }
    tm_hier_agg_t a[4];
    size_t n = tm_hier_aggregates (h, "d", s_only_pm25_of_air, NULL, a, 4);
    assert_int_equal (n, 1);
    assert_int_equal (a[0].children, 2);
    assert_true (a[0].mean == 0.5);
    tm_hier_child_t list[8];
    size_t total = 0;
    size_t shown = tm_hier_children (h, "d", list, 2, &total);
    assert_int_equal (shown, 2);
    assert_int_equal (total, 3);
    assert_string_equal (list[0].child, "k/1");
    assert_string_equal (list[1].child, "k/2");
    assert_string_equal (list[1].model, "traffic");
    assert_int_equal (list[1].nvalues, 2);
    //  The children reply and the TwinState fragment decode.
    size_t size = 0;
    uint8_t *buf = tm_hier_encode_children (h, "d", 10, &size);
    assert_non_null (buf);
    Twinmesh__ChildrenReply *rep = TM_UNPACK (ChildrenReply, children_reply, buf, size);
    assert_non_null (rep);
    assert_int_equal (rep->n_children, 3);
    assert_int_equal (rep->total, 3);
    assert_false (rep->truncated);
    assert_string_equal (rep->children[2]->entity, "k/3");
    tm_codec_free (&rep);
    free (buf);
    buf = tm_hier_encode_twin_extra (h, "d", NULL, NULL, &size);
    assert_non_null (buf);
    Twinmesh__TwinState *ts = TM_UNPACK (TwinState, twin_state, buf, size);
    assert_non_null (ts);
    assert_int_equal (ts->children, 3);
    assert_int_equal (ts->n_child_aggregates, 2);
    assert_string_equal (ts->child_aggregates[0]->property, "no2");
    assert_true (ts->child_aggregates[0]->max == 12);
    tm_codec_free (&ts);
    free (buf);
    assert_null (tm_hier_encode_twin_extra (h, "nobody", NULL, NULL, &size));
    assert_int_equal (size, 0);
    tm_hier_destroy (&h);
}

static bool
s_drop_odd (void *arg, const char *parent)
{
    (void) arg;
    return (parent[strlen (parent) - 1] - '0') % 2 == 1;
}

static void
test_limits_and_drop (void **state)
{
    (void) state;
    tm_hier_t *h = tm_hier_new (5);
    tm_hier_counts_t c = {0};
    char name[32];
    tm_hier_value_t v = {.property = "pm25", .value = 1, .ts_ms = 1};
    for (int i = 0; i < 8; i++) {
        sprintf (name, "k/%d", i);
        tm_hier_entry_t e = {.parent = "p/1", .child = name, .values = &v, .nvalues = 1};
        assert_int_equal (tm_hier_apply (h, &e, &c), 0);
    }
    assert_int_equal (c.applied, 5);
    assert_int_equal (c.refused, 3);
    assert_int_equal (tm_hier_nchildren (h, "p/1"), 5);
    tm_hier_stats_t st;
    tm_hier_stats (h, &st);
    assert_int_equal (st.children_refused, 3);
    //  64 properties per child, then refused.
    memset (&c, 0, sizeof c);
    for (int i = 0; i < 70; i++) {
        sprintf (name, "prop_%d", i);
        tm_hier_value_t pv = {.property = name, .value = i, .ts_ms = 1};
        tm_hier_entry_t e = {.parent = "p/2", .child = "k", .values = &pv, .nvalues = 1};
        tm_hier_apply (h, &e, &c);
    }
    assert_int_equal (c.applied, TM_HIER_MAX_VALUES);
    assert_int_equal (c.refused, 70 - TM_HIER_MAX_VALUES);
    tm_hier_stats (h, &st);
    assert_int_equal (st.values_refused, 70 - TM_HIER_MAX_VALUES);
    assert_int_equal (st.parents, 2);
    assert_int_equal (st.children, 6);
    //  Dropping parents (shards moved away) forgets their children.
    assert_int_equal (tm_hier_drop (h, s_drop_odd, NULL), 1);
    assert_false (tm_hier_has_parent (h, "p/1"));
    assert_true (tm_hier_has_parent (h, "p/2"));
    tm_hier_stats (h, &st);
    assert_int_equal (st.children, 1);
    //  Detaching the last child forgets the parent.
    tm_hier_entry_t d = {.parent = "p/2", .child = "k", .detached = true};
    tm_hier_apply (h, &d, &c);
    assert_false (tm_hier_has_parent (h, "p/2"));
    tm_hier_destroy (&h);
    tm_hier_destroy (&h);      //  idempotent
}

//  Decoding collects entries so a test can compare them.
typedef struct {
    size_t n;
    tm_hier_counts_t counts;
    tm_hier_t *h;
} s_collect_t;

static int
s_collect (void *arg, const tm_hier_entry_t *e)
{
    s_collect_t *c = (s_collect_t *) arg;
    c->n++;
    if (c->h)
        tm_hier_apply (c->h, e, &c->counts);
    return 0;
}

static uint8_t *
s_sample (size_t *size, size_t entries)
{
    tm_hier_msg_t *msg = tm_hier_msg_new ();
    assert_non_null (msg);
    for (size_t i = 0; i < entries; i++) {
        char parent[32], child[32];
        sprintf (parent, "d/%zu", i % 3);
        sprintf (child, "c/%zu", i);
        tm_hier_value_t v[3] = {{.property = "pm25", .value = (double) i, .ts_ms = 10},
                                {.property = "no2", .value = -1.5, .ts_ms = 11,
                                 .anomalous = true},
                                {.property = "t", .value = 1e300, .ts_ms = -5}};
        tm_hier_entry_t e = {.parent = parent, .child = child, .child_model = "air_station",
                             .parent_model = "district", .values = v, .nvalues = 3,
                             .detached = i == 2};
        if (i == 2)
            e.nvalues = 0;
        assert_int_equal (tm_hier_msg_add (msg, &e), 0);
    }
    uint8_t *buf = tm_hier_msg_encode (msg, size);
    assert_non_null (buf);
    tm_hier_msg_destroy (&msg);
    assert_null (msg);
    return buf;
}

static void
test_codec_round_trip (void **state)
{
    (void) state;
    size_t size;
    uint8_t *buf = s_sample (&size, 5);
    tm_hier_t *h = tm_hier_new (0);
    s_collect_t c = {.h = h};
    char err[160];
    assert_int_equal (tm_hier_decode_update (buf, size, s_collect, &c, err, sizeof err), 5);
    assert_int_equal (c.n, 5);
    assert_int_equal (c.counts.applied, 12);   //  4 entries x 3 values
    tm_hier_agg_t a[4];
    size_t n = tm_hier_aggregates (h, "d/0", NULL, NULL, a, 4);
    assert_int_equal (n, 3);
    assert_string_equal (a[0].property, "no2");
    assert_int_equal (a[0].anomalous, 2);
    assert_true (a[2].max == 1e300);
    //  Decoding the same bytes again is a replay: nothing changes.
    memset (&c.counts, 0, sizeof c.counts);
    assert_int_equal (tm_hier_decode_update (buf, size, s_collect, &c, err, sizeof err), 5);
    assert_int_equal (c.counts.applied, 0);
    assert_int_equal (c.counts.ignored, 13);   //  and the detachment of a child not held
    //  An empty body is an empty update.
    assert_int_equal (tm_hier_decode_update (NULL, 0, s_collect, &c, err, sizeof err), 0);
    free (buf);
    tm_hier_destroy (&h);
}

static void
test_codec_full_message (void **state)
{
    (void) state;
    tm_hier_msg_t *msg = tm_hier_msg_new ();
    tm_hier_value_t v[TM_HIER_MAX_VALUES];
    char names[TM_HIER_MAX_VALUES][16];
    for (int i = 0; i < TM_HIER_MAX_VALUES; i++) {
        sprintf (names[i], "p%d", i);
        v[i] = (tm_hier_value_t) {.property = names[i], .value = i, .ts_ms = 1};
    }
    tm_hier_entry_t e = {.parent = "d", .child = "c", .values = v, .nvalues = 64};
    size_t added = 0;
    while (tm_hier_msg_add (msg, &e) == 0)
        added++;
    assert_int_equal (added, TM_HIER_MAX_MSG_VALUES / 64);
    assert_int_equal (tm_hier_msg_values (msg), TM_HIER_MAX_MSG_VALUES);
    size_t size;
    uint8_t *buf = tm_hier_msg_encode (msg, &size);
    assert_true (size < 1024 * 1024);
    s_collect_t c = {0};
    assert_int_equal (tm_hier_decode_update (buf, size, s_collect, &c, NULL, 0), (long) added);
    free (buf);
    //  Entries cap: small entries until the message is full.
    tm_hier_msg_reset (msg);
    e.nvalues = 1;
    added = 0;
    while (tm_hier_msg_add (msg, &e) == 0)
        added++;
    assert_int_equal (added, TM_HIER_MAX_ENTRIES);
    tm_hier_msg_destroy (&msg);
}

//  A hand-made ChildUpdate with one entry built from the given fields.
static uint8_t *
s_packed (const char *parent, const char *child, const char *prop, double value, bool detached,
          size_t nvalues, size_t *size)
{
    Twinmesh__ChildValue v = TWINMESH__CHILD_VALUE__INIT;
    v.property = (char *) prop;
    v.value = value;
    Twinmesh__ChildValue *vp[TM_HIER_MAX_VALUES + 2];
    for (size_t i = 0; i < nvalues; i++)
        vp[i] = &v;
    Twinmesh__ChildEntry e = TWINMESH__CHILD_ENTRY__INIT;
    e.parent = (char *) parent;
    e.child = (char *) child;
    e.detached = detached;
    e.n_values = nvalues;
    e.values = vp;
    Twinmesh__ChildEntry *ep = &e;
    Twinmesh__ChildUpdate u = TWINMESH__CHILD_UPDATE__INIT;
    u.n_entries = 1;
    u.entries = &ep;
    return tm_codec_pack_buf (&u.base, size);
}

static void
test_codec_hostile (void **state)
{
    (void) state;
    size_t size;
    char err[160];
    s_collect_t c = {0};
    char long_id[200];
    memset (long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    struct {
        const char *parent, *child, *prop;
        double value;
        bool detached;
        size_t nvalues;
    } bad[] = {
        {"", "c", "pm25", 1, false, 1},              //  empty parent
        {"d", "", "pm25", 1, false, 1},              //  empty child
        {long_id, "c", "pm25", 1, false, 1},         //  parent over 128 bytes
        {"d", long_id, "pm25", 1, false, 1},         //  child over 128 bytes
        {"d", "c", "", 1, false, 1},                 //  empty property
        {"d", "c", long_id, 1, false, 1},            //  property over 64 bytes
        {"d", "c", "pm25", NAN, false, 1},           //  not finite
        {"d", "c", "pm25", INFINITY, false, 1},
        {"d", "c", "pm25", 1, true, 1},              //  values on a detachment
        {"d", "c", "pm25", 1, false, TM_HIER_MAX_VALUES + 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *buf = s_packed (bad[i].parent, bad[i].child, bad[i].prop, bad[i].value,
                                 bad[i].detached, bad[i].nvalues, &size);
        assert_non_null (buf);
        c.n = 0;
        err[0] = 0;
        assert_int_equal (tm_hier_decode_update (buf, size, s_collect, &c, err, sizeof err), -1);
        assert_int_equal (c.n, 0);     //  nothing of a refused message is used
        assert_true (strlen (err) > 0);
        free (buf);
    }
    //  Invalid UTF-8 in an id (protobuf-c may refuse it first; either way -1).
    uint8_t *buf = s_packed ("d\xff", "c", "pm25", 1, false, 1, &size);
    assert_int_equal (tm_hier_decode_update (buf, size, s_collect, &c, err, sizeof err), -1);
    free (buf);
    //  Every truncation and many single-byte changes of a valid message:
    //  decoded whole or refused, never a crash, and a refused one calls
    //  nothing.
    buf = s_sample (&size, 6);
    for (size_t cut = 0; cut < size; cut++) {
        c.n = 0;
        long n = tm_hier_decode_update (buf, cut, s_collect, &c, NULL, 0);
        assert_true (n == -1 || (size_t) n == c.n);
        if (n < 0)
            assert_int_equal (c.n, 0);
    }
    uint8_t *copy = malloc (size);
    for (int round = 0; round < 4000; round++) {
        memcpy (copy, buf, size);
        copy[s_rand () % size] = (uint8_t) s_rand ();
        if (round % 3 == 0)
            copy[s_rand () % size] ^= 0x80;
        c.n = 0;
        long n = tm_hier_decode_update (copy, size, s_collect, &c, NULL, 0);
        assert_true (n == -1 || (size_t) n == c.n);
        if (n < 0)
            assert_int_equal (c.n, 0);
    }
    free (copy);
    free (buf);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_random_sequences),
        cmocka_unit_test (test_replay_changes_nothing),
        cmocka_unit_test (test_filter_and_children),
        cmocka_unit_test (test_limits_and_drop),
        cmocka_unit_test (test_codec_round_trip),
        cmocka_unit_test (test_codec_full_message),
        cmocka_unit_test (test_codec_hostile),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
