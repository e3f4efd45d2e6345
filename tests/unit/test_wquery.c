/*  test_wquery - the worker's half of a query: columns filled per twin

    A real plan (parsed, encoded, decoded as a worker does) over a real
    twin table: properties, analytics fields, attributes, model defaults,
    derived properties, the parent relationship and built-ins come out as
    the query language says; only the shards asked for are scanned.
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
#include "tm_wquery.h"

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";

static const char *s_model =
    "{\"name\": \"air\", \"version\": 1,"
    " \"properties\": {\"pm25\": {}, \"pm10\": {}},"
    " \"attributes\": {\"district\": {\"type\": \"string\"},"
    "                  \"kind\": {\"type\": \"string\", \"default\": \"roadside\"}},"
    " \"relationships\": {\"district\": {\"kind\": \"parent\", \"target\": \"district\","
    "                     \"attribute\": \"district\"}},"
    " \"derived\": {\"coarse\": {\"expression\": \"pm10 - pm25\"},"
    "               \"coarse2\": {\"expression\": \"coarse * 2\"}}}";

static void
s_apply (tm_twins_t *twins, const char *entity, const char *prop, double value, int64_t ts,
         const char *model, const char *district)
{
    uint8_t buf[512];
    char json[128], where[128];
    //  With a district comes a location near it (the district's name and
    //  the entity pick it), so that within() has places to find.
    unsigned h = (unsigned) strlen (entity) * 31u + (unsigned) entity[strlen (entity) - 1];
    tm_wire_attr_t attrs[2] = {{"district", 8, json, 0}, {"location", 8, where, 0}};
    if (district) {
        attrs[0].value_len = (size_t) snprintf (json, sizeof json, "\"%s\"", district);
        attrs[1].value_len = (size_t) snprintf (where, sizeof where,
                                                "{\"lat\": %.4f, \"lon\": %.4f}",
                                                45.44 + (h % 50) * 0.001 + district[2] * 1e-4,
                                                9.17 + (h % 37) * 0.001);
    }
    size_t n = tm_wire_encode_attrs (buf, sizeof buf, entity, prop, value, ts, model, attrs,
                                     district? 2: 0);
    assert_true (n > 0);
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 64, ts), TM_APPLY_APPLIED);
}

//  The columnar scanner of the twins the test uses: kept across queries,
//  as the worker keeps it, so that catching up with changes is tested.
static tm_wquery_t *s_wq;
static tm_twins_t *s_wq_twins;

static void
s_wq_done (void)
{
    tm_wquery_destroy (&s_wq);
    assert_null (s_wq);
    s_wq_twins = NULL;
}

//  Finish a worker's partial of plan into a result of q.
static tm_qresult_t *
s_finish (const tm_query_t *q, tm_qpartial_t *part)
{
    size_t size;
    uint8_t *pb = tm_qpartial_encode (part, &size);
    assert_non_null (pb);
    tm_qpartial_t *merged = tm_qpartial_new (q);
    char why[256];
    assert_int_equal (tm_qpartial_merge (merged, pb, size, why, sizeof why), 0);
    tm_qresult_t *res = tm_qresult_new (q, merged);
    assert_non_null (res);
    free (pb);
    tm_qpartial_destroy (&merged);
    return res;
}

//  Parse text, ship the plan as a worker gets it, scan, finish. Scanned
//  twice: by the columnar scanner and twin by twin; both answers must be
//  the same to the byte.
static tm_qresult_t *
s_run (tm_twins_t *twins, const tm_models_t *models, tm_derived_t *derived, const char *text,
       const uint32_t *shards, size_t nshards, long *scanned)
{
    if (s_wq_twins != twins) {
        tm_wquery_destroy (&s_wq);
        s_wq = tm_wquery_new (twins);
        assert_non_null (s_wq);
        s_wq_twins = twins;
    }
    tm_expr_error_t err;
    tm_query_t *q = tm_query_parse (text, &err);
    if (!q)
        fail_msg ("%s: %s", text, err.message);
    size_t size;
    uint8_t *bytes = tm_query_plan_encode (q, &size);
    tm_query_t *plan = tm_query_plan_decode (bytes, size, &err);
    assert_non_null (plan);
    tm_qpartial_t *part = tm_qpartial_new (plan);
    *scanned = tm_wquery_scan (s_wq, models, derived, plan, shards, nshards, 5000, part);
    tm_qpartial_t *ref = tm_qpartial_new (plan);
    long ref_scanned = tm_wquery_scan_rows (twins, models, derived, plan, shards, nshards, 5000,
                                            ref);
    assert_int_equal (*scanned, ref_scanned);
    tm_qresult_t *res = s_finish (q, part);
    tm_qresult_t *want = s_finish (q, ref);
    size_t a_size, b_size;
    uint8_t *a = tm_qresult_encode (res, &a_size);
    uint8_t *b = tm_qresult_encode (want, &b_size);
    assert_non_null (a);
    assert_non_null (b);
    if (a_size != b_size || memcmp (a, b, a_size) != 0) {
        tm_qresult_print (res, TM_QRESULT_TABLE, stderr, stderr);
        tm_qresult_print (want, TM_QRESULT_TABLE, stderr, stderr);
        fail_msg ("%s: the columnar scan answers otherwise than the twin-at-a-time scan", text);
    }
    free (a);
    free (b);
    tm_qresult_destroy (&want);
    free (bytes);
    tm_qpartial_destroy (&part);
    tm_qpartial_destroy (&ref);
    tm_query_destroy (&plan);
    tm_query_destroy (&q);
    return res;
}

static void
s_expect_num (const tm_qresult_t *res, size_t row, size_t col, double want)
{
    tm_expr_value_t v = tm_qresult_cell (res, row, col);
    assert_int_equal (v.type, TM_EXPR_NUMBER);
    assert_true (fabs (v.num - want) < 1e-9);
}

static void
s_expect_str (const tm_qresult_t *res, size_t row, size_t col, const char *want)
{
    tm_expr_value_t v = tm_qresult_cell (res, row, col);
    if (!want) {
        assert_int_equal (v.type, TM_EXPR_NULL);
        return;
    }
    assert_int_equal (v.type, TM_EXPR_STRING);
    assert_int_equal (v.len, strlen (want));
    assert_memory_equal (v.str, want, v.len);
}

static void
test_columns (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    tm_models_t *models = tm_models_new ();
    char err[256];
    tm_model_t *m = tm_model_parse (s_model, strlen (s_model), "air", err, sizeof err);
    if (!m)
        fail_msg ("%s", err);
    assert_int_equal (tm_models_put (models, &m, NULL, err, sizeof err), 0);
    tm_twins_set_models (twins, models);
    tm_derived_t *derived = tm_derived_new (twins);

    s_apply (twins, "a-1", "pm25", 10, 1000, "air", "d/north");
    s_apply (twins, "a-1", "pm10", 25, 1000, NULL, NULL);
    s_apply (twins, "a-1", "pm25", 14, 2000, NULL, NULL);
    s_apply (twins, "a-2", "pm25", 30, 1000, "air", "d/south");
    s_apply (twins, "g-1", "x", 1, 1000, NULL, NULL);

    uint32_t all[64];
    for (uint32_t i = 0; i < 64; i++)
        all[i] = i;
    long scanned = 0;
    tm_qresult_t *res = s_run (twins, models, derived,
                               "SELECT entity, model, coarse, coarse2, kind, parent, district,"
                               " pm25.count, pm25.mean, pm25.min, x, status"
                               " FROM twins ORDER BY entity", all, 64, &scanned);
    assert_int_equal (scanned, 3);
    assert_int_equal (tm_qresult_rows (res), 3);
    s_expect_str (res, 0, 0, "a-1");
    s_expect_str (res, 0, 1, "air");
    s_expect_num (res, 0, 2, 25 - 14);          //  derived, from the latest values
    s_expect_num (res, 0, 3, 2 * (25 - 14));    //  derived over derived
    s_expect_str (res, 0, 4, "roadside");       //  the model's default
    s_expect_str (res, 0, 5, "d/north");        //  parent via the relationship
    s_expect_str (res, 0, 6, "d/north");
    s_expect_num (res, 0, 7, 2);
    s_expect_num (res, 0, 8, 12);
    s_expect_num (res, 0, 9, 10);
    assert_int_equal (tm_qresult_cell (res, 0, 10).type, TM_EXPR_NULL);
    tm_expr_value_t st = tm_qresult_cell (res, 0, 11);
    assert_int_equal (st.type, TM_EXPR_STRING);
    char status[32] = "";
    snprintf (status, sizeof status, "%.*s", (int) st.len, st.str);
    tm_twin_t *a1 = tm_twins_find (twins, "a-1", 3);
    assert_string_equal (status, tm_analytics_sync_state_name (a1->sync.state));
    //  a-2 has no pm10: its derived properties are null.
    s_expect_str (res, 1, 0, "a-2");
    assert_int_equal (tm_qresult_cell (res, 1, 2).type, TM_EXPR_NULL);
    //  A twin without a model: generic, no defaults, no derived.
    s_expect_str (res, 2, 0, "g-1");
    s_expect_str (res, 2, 1, "generic");
    assert_int_equal (tm_qresult_cell (res, 2, 2).type, TM_EXPR_NULL);
    s_expect_str (res, 2, 4, NULL);
    s_expect_num (res, 2, 10, 1);
    tm_qresult_destroy (&res);

    //  Only the shards asked for are scanned.
    tm_twin_t *t = tm_twins_find (twins, "a-2", 3);
    uint32_t one = t->shard;
    res = s_run (twins, models, derived, "SELECT count(*) FROM twins", &one, 1, &scanned);
    long in_shard = 0;
    for (tm_twin_t *u = tm_twins_shard_first (twins, one); u; u = u->next_in_shard)
        in_shard++;
    assert_int_equal (scanned, in_shard);
    s_expect_num (res, 0, 0, (double) in_shard);
    tm_qresult_destroy (&res);

    //  Filters over attributes and derived values.
    res = s_run (twins, models, derived,
                 "SELECT count(*) FROM twins WHERE coarse > 5 AND kind = 'roadside'", all, 64,
                 &scanned);
    s_expect_num (res, 0, 0, 1);
    tm_qresult_destroy (&res);

    s_wq_done ();
    tm_derived_destroy (&derived);
    tm_twins_destroy (&twins);
    tm_models_destroy (&models);
}

//  A city that keeps changing between queries: new twins, new readings,
//  attributes that move, a model that gains a default and a derived
//  property. After every round a set of queries must give the columnar
//  scanner's answer and the twin-at-a-time answer to the byte, and the
//  scanner must have caught up by filling the changed rows only.
static void
test_columns_follow_changes (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    tm_models_t *models = tm_models_new ();
    tm_twins_set_models (twins, models);
    tm_derived_t *derived = tm_derived_new (twins);
    static const char *districts[] = {"d/north", "d/south", "d/east", "d/west"};
    static const char *queries[] = {
        "SELECT district, count(*), sum(pm25), min(pm25), max(pm25), avg(pm10) FROM twins"
        " WHERE model = 'air' AND pm25 > 10 GROUP BY district",
        "SELECT count(*), sum(pm25) FROM twins WHERE within(location, 45.46, 9.19, 3000)",
        "SELECT entity, pm25, district FROM twins WHERE pm25 IS NOT NULL"
        " ORDER BY pm25 DESC, entity LIMIT 7",
        "SELECT kind, count(*), sum(coarse) FROM twins GROUP BY kind",
        "SELECT status, count(*) FROM twins GROUP BY status",
        "SELECT model, count(*), sum(pm25.count), max(pm25.mean) FROM twins GROUP BY model",
        "SELECT parent, count(*) FROM twins WHERE district IN ('d/north', 'd/east') OR x > 3"
        " GROUP BY parent",
        //  More columns than the scanner keeps: it must still answer right.
        "SELECT entity, model, pm25, pm10, x, district, kind, coarse, parent, pm25.count,"
        " pm25.mean, pm25.min, pm25.max, pm10.mean, x.count, updated, anomalous, location"
        " FROM twins WHERE pm25 > 5 OR x IS NOT NULL ORDER BY entity LIMIT 20",
    };
    uint32_t all[64];
    for (uint32_t i = 0; i < 64; i++)
        all[i] = i;
    uint32_t some[] = {1, 5, 9, 17, 33, 40, 63};
    uint64_t rng = 12345;
    int64_t ts = 1000;
    size_t total_twins = 0;
    for (int round = 0; round < 12; round++) {
        if (round == 6) {
            //  A model arrives: defaults, derived properties, parents.
            char err[256];
            tm_model_t *m = tm_model_parse (s_model, strlen (s_model), "air", err, sizeof err);
            if (!m)
                fail_msg ("%s", err);
            assert_int_equal (tm_models_put (models, &m, NULL, err, sizeof err), 0);
        }
        for (int k = 0; k < 150; k++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            unsigned r = (unsigned) (rng >> 33);
            char entity[32];
            snprintf (entity, sizeof entity, "t-%03u", r % 220);
            bool is_new = !tm_twins_find (twins, entity, strlen (entity));
            const char *district = (is_new || r % 9 == 0)? districts[(r >> 8) % 4]: NULL;
            const char *model = r % 5? "air": NULL;
            const char *prop = (r >> 4) % 3 == 0? "pm10": (r >> 4) % 3 == 1? "pm25": "x";
            s_apply (twins, entity, prop, (double) ((r >> 12) % 160) / 4, ts++,
                     is_new? model: NULL, district);
        }
        total_twins = tm_twins_size (twins);
        for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
            long scanned;
            tm_qresult_t *res = s_run (twins, models, derived, queries[q],
                                       round % 3 == 2? some: all,
                                       round % 3 == 2? sizeof some / sizeof some[0]: 64,
                                       &scanned);
            assert_true (scanned > 0);
            tm_qresult_destroy (&res);
        }
    }
    assert_true (total_twins > 150);
    //  Catching up costs the changed rows, not a refill: with nothing
    //  changed, a query fills nothing.
    uint64_t before = tm_wquery_filled (s_wq);
    long scanned;
    tm_qresult_t *res = s_run (twins, models, derived, queries[0], all, 64, &scanned);
    tm_qresult_destroy (&res);
    assert_int_equal (tm_wquery_filled (s_wq), before);
    size_t bytes;
    assert_true (tm_wquery_cached (s_wq, &bytes) > 3);
    assert_true (bytes > total_twins * sizeof (tm_expr_value_t));
    s_wq_done ();
    tm_derived_destroy (&derived);
    tm_twins_destroy (&twins);
    tm_models_destroy (&models);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_columns),
        cmocka_unit_test (test_columns_follow_changes),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
