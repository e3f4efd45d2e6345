/*  test_twins - the worker's twin table: apply semantics and growth

    Checked against a naive reference (a plain array of series) so that the
    open-addressing table, interning and dirty tracking cannot drift from
    the rule: newer applies, same timestamp is a duplicate, older is late.
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

#include "tm_twins.h"
#include "tm_wire.h"

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";

static tm_reading_t
s_reading (const char *entity, const char *prop, double value, int64_t ts)
{
    tm_reading_t r = {0};
    r.entity = entity;
    r.entity_len = strlen (entity);
    r.property = prop;
    r.property_len = strlen (prop);
    r.value = value;
    r.ts_ms = ts;
    return r;
}

static void
test_apply_rules (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    assert_non_null (twins);
    tm_reading_t r = s_reading ("milan/air-1", "pm25", 10.0, 1000);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    r.value = 99.0;
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_DUPLICATE);
    r.ts_ms = 999;
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_LATE);
    r.ts_ms = 1001;
    r.value = 11.0;
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);

    tm_twin_t *t = tm_twins_find (twins, "milan/air-1", 11);
    assert_non_null (t);
    //  The twin lives in its entity's shard under the cluster key.
    assert_int_equal (t->shard, tm_shardmap_hash (s_key, 1024, "milan/air-1", 11));
    assert_int_equal (t->nprops, 1);
    assert_string_equal (tm_twins_prop_name (twins, &t->props[0]), "pm25");
    assert_true (t->props[0].an.value == 11.0);
    assert_int_equal (t->props[0].an.ts_ms, 1001);
    assert_int_equal (t->props[0].count, 2);
    assert_null (tm_twins_find (twins, "milan/air-2", 11));
    assert_null (tm_twins_find (twins, "milan/air-", 10));
    tm_twins_destroy (&twins);
    assert_null (twins);
}

//  Decode a reading encoded by tm_wire (so nattrs and body are set).
static tm_reading_t
s_wire_reading (uint8_t *buf, size_t cap, const char *entity, const char *prop, double value,
                int64_t ts, const tm_wire_attr_t *attrs, size_t nattrs)
{
    size_t n = tm_wire_encode_attrs (buf, cap, entity, prop, value, ts, NULL, attrs, nattrs);
    assert_true (n > 0);
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    return r;
}

static tm_wire_attr_t
s_attr (const char *name, const char *json)
{
    return (tm_wire_attr_t) {name, strlen (name), json, strlen (json)};
}

//  Attributes: typed from their JSON, replaced by a later reading, removed
//  by null, kept through a checkpoint blob, and refused when the twin's
//  model gives the attribute another type.
static void
test_attributes (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    uint8_t buf[1024];
    tm_wire_attr_t a[4] = {s_attr ("district", "\"milan/district/Brera\""),
                           s_attr ("location", "{\"lat\": 45.4719, \"lon\": 9.1873}"),
                           s_attr ("tags", "[\"roof\",\"test\"]"), s_attr ("lanes", "2")};
    tm_reading_t r = s_wire_reading (buf, sizeof buf, "s-1", "pm25", 10, 1000, a, 4);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    tm_twin_t *t = tm_twins_find (twins, "s-1", 3);
    assert_int_equal (t->nattrs, 4);
    const tm_attr_t *d = tm_twins_attr (t, tm_twins_name_find (twins, "district", 8));
    assert_non_null (d);
    assert_int_equal (d->type, TM_EXPR_STRING);
    assert_string_equal (d->str, "milan/district/Brera");
    const tm_attr_t *l = tm_twins_attr (t, tm_twins_name_find (twins, "location", 8));
    assert_int_equal (l->type, TM_EXPR_LOCATION);
    assert_true (l->loc.lat == 45.4719 && l->loc.lon == 9.1873);
    assert_null (tm_twins_name_find (twins, "nowhere", 7));
    //  Twins with the same string value share one copy.
    tm_reading_t r2 = s_wire_reading (buf, sizeof buf, "s-9", "pm25", 10, 1000, a, 1);
    assert_int_equal (tm_twins_apply (twins, &r2, s_key, 1024, 1000), TM_APPLY_APPLIED);
    const tm_attr_t *d9 = tm_twins_attr (tm_twins_find (twins, "s-9", 3),
                                         tm_twins_name_find (twins, "district", 8));
    assert_true (d9->shared && d9->str == d->str);
    //  A later reading replaces one attribute and removes another.
    tm_wire_attr_t b[2] = {s_attr ("district", "\"milan/district/Isola\""),
                           s_attr ("lanes", "null")};
    r = s_wire_reading (buf, sizeof buf, "s-1", "pm25", 11, 2000, b, 2);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    assert_int_equal (t->nattrs, 3);
    d = tm_twins_attr (t, tm_twins_name_find (twins, "district", 8));
    assert_string_equal (d->str, "milan/district/Isola");
    assert_null (tm_twins_attr (t, tm_twins_name_find (twins, "lanes", 5)));
    //  Through a checkpoint blob and back.
    uint8_t *blob = NULL;
    size_t cap = 0;
    size_t size = tm_twins_encode_shard (twins, t->shard, &blob, &cap);
    assert_true (size > 0);
    tm_twins_t *back = tm_twins_new ();
    assert_int_equal (tm_twins_restore_shard (back, t->shard, blob, size), 1);
    tm_twin_t *t2 = tm_twins_find (back, "s-1", 3);
    assert_int_equal (t2->nattrs, 3);
    d = tm_twins_attr (t2, tm_twins_name_find (back, "district", 8));
    assert_string_equal (d->str, "milan/district/Isola");
    l = tm_twins_attr (t2, tm_twins_name_find (back, "location", 8));
    assert_true (l->loc.lat == 45.4719 && l->loc.lon == 9.1873);
    const tm_attr_t *tg = tm_twins_attr (t2, tm_twins_name_find (back, "tags", 4));
    assert_true (tg->tags);
    assert_string_equal (tg->str, "[\"roof\",\"test\"]");
    //  The blob re-encodes to the same bytes.
    uint8_t *blob2 = NULL;
    size_t cap2 = 0;
    assert_int_equal (tm_twins_encode_shard (back, t->shard, &blob2, &cap2), size);
    assert_memory_equal (blob, blob2, size);
    free (blob2);
    //  A damaged blob (truncated anywhere) is refused, never crashes.
    for (size_t cut = 1; cut < size; cut++) {
        tm_twins_t *partial = tm_twins_new ();
        assert_int_equal (tm_twins_restore_shard (partial, t->shard, blob, cut), -1);
        tm_twins_destroy (&partial);
    }
    free (blob);
    tm_twins_destroy (&back);

    //  A format-4 blob (attributes as JSON text) still restores: made from
    //  a format-6 blob of a twin of one property without attributes (its
    //  last byte is the attribute count, after the open chunk's saved
    //  state, which format 4 had as a version-1 chunk: written as none)
    //  with no log_seq and one JSON attribute appended.
    {
        tm_twins_t *one = tm_twins_new ();
        tm_reading_t r4 = s_reading ("v4", "pm25", 1, 1000);
        assert_int_equal (tm_twins_apply (one, &r4, s_key, 1024, 1000), TM_APPLY_APPLIED);
        const tm_twin_t *t4 = tm_twins_find (one, "v4", 2);
        uint32_t sh = t4->shard;
        uint8_t saved[64];
        size_t slen = tm_gorilla_open_save (&t4->props[0].hist, t4->props[0].an.ts_ms,
                                            tm_twins_flush_due (&t4->props[0]), saved);
        assert_true (slen < 128);
        uint8_t *b4 = NULL;
        size_t c4 = 0;
        size_t n4 = tm_twins_encode_shard (one, sh, &b4, &c4);
        assert_int_equal (b4[0], 6);
        assert_int_equal (b4[1], 0);
        assert_int_equal (b4[n4 - 1], 0);
        assert_int_equal (b4[n4 - 2 - slen], slen);
        static const uint8_t tail[] = {0, 1, 8, 'd', 'i', 's', 't', 'r', 'i', 'c', 't',
                                       5, '"', 'a', '/', 'b', '"'};
        size_t keep = n4 - 2 - slen - 2;       //  after the version and log_seq bytes
        uint8_t *v4 = malloc (1 + keep + sizeof tail);
        v4[0] = 4;
        memcpy (v4 + 1, b4 + 2, keep);
        memcpy (v4 + 1 + keep, tail, sizeof tail);
        tm_twins_t *back4 = tm_twins_new ();
        assert_int_equal (tm_twins_restore_shard (back4, sh, v4, 1 + keep + sizeof tail), 1);
        const tm_attr_t *da = tm_twins_attr (tm_twins_find (back4, "v4", 2),
                                             tm_twins_name_find (back4, "district", 8));
        assert_non_null (da);
        assert_string_equal (da->str, "a/b");
        free (v4);
        free (b4);
        tm_twins_destroy (&back4);
        tm_twins_destroy (&one);
    }

    //  With a model that says district is a string, a number is refused.
    tm_models_t *models = tm_models_new ();
    const char *text = "{\"format\":1,\"name\":\"m\",\"version\":1,\"properties\":"
                       "{\"pm25\":{}},\"attributes\":{\"district\":{\"type\":\"string\"}}}";
    char err[256];
    tm_model_t *m = tm_model_parse (text, strlen (text), "test", err, sizeof err);
    assert_non_null (m);
    assert_int_equal (tm_models_put (models, &m, NULL, err, sizeof err), 0);
    tm_twins_set_models (twins, models);
    size_t n = tm_wire_encode (buf, sizeof buf, "s-2", "pm25", 1, 1000, "m");
    tm_wire_iter_t it;
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    tm_wire_attr_t c[2] = {s_attr ("district", "7"), s_attr ("free", "7")};
    r = s_wire_reading (buf, sizeof buf, "s-2", "pm25", 2, 2000, c, 2);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    t = tm_twins_find (twins, "s-2", 3);
    assert_int_equal (t->nattrs, 1);   //  undeclared attributes are kept as they come
    assert_int_equal (tm_twins_attrs_refused (twins), 1);
    tm_twins_destroy (&twins);
    tm_models_destroy (&models);
}

//  docs/models.md, "Readings for unknown models and properties": every
//  reading is kept and flagged; unknown properties and wrong types stay out
//  of the statistics, unmodelled twins get the generic rules.
static void
test_quality_classes (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    tm_models_t *models = tm_models_new ();
    const char *text = "{\"name\":\"m\",\"version\":1,\"properties\":{\"pm25\":{},"
                       "\"n\":{\"type\":\"integer\"},\"b\":{\"type\":\"boolean\"}}}";
    char err[256];
    tm_model_t *m = tm_model_parse (text, strlen (text), "test", err, sizeof err);
    assert_non_null (m);
    assert_int_equal (tm_models_put (models, &m, NULL, err, sizeof err), 0);
    tm_twins_set_models (twins, models);
    uint8_t buf[256];
    static const struct {
        const char *entity, *model, *prop;
        double value;
        tm_model_quality_t want;
        uint32_t stats;            //  an.count after: in the statistics or not
    } cases[] = {
        {"t-1", "m", "pm25", 5, TM_MODEL_Q_GOOD, 1},
        {"t-1", NULL, "zz", 7, TM_MODEL_Q_UNKNOWN_PROPERTY, 0},
        {"t-1", NULL, "n", 1.5, TM_MODEL_Q_INVALID_TYPE, 0},
        {"t-1", NULL, "b", 2, TM_MODEL_Q_INVALID_TYPE, 0},
        {"t-2", "nope", "pm25", 5, TM_MODEL_Q_UNMODELLED, 1},
        {"t-3", NULL, "pm25", 5, TM_MODEL_Q_UNMODELLED, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = tm_wire_encode (buf, sizeof buf, cases[i].entity, cases[i].prop,
                                   cases[i].value, 1000, cases[i].model);
        tm_wire_iter_t it;
        tm_reading_t r;
        tm_wire_iter_init (&it, buf, n);
        assert_int_equal (tm_wire_next (&it, &r), 1);
        assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
        tm_twin_t *t = tm_twins_find (twins, cases[i].entity, strlen (cases[i].entity));
        const tm_prop_t *p = NULL;
        for (uint16_t k = 0; k < t->nprops; k++)
            if (!strcmp (tm_twins_prop_name (twins, &t->props[k]), cases[i].prop))
                p = &t->props[k];
        assert_non_null (p);
        assert_int_equal (p->quality, cases[i].want);
        assert_int_equal (p->an.count, cases[i].stats);
        assert_true (p->an.value == cases[i].value);   //  kept as the latest value
        assert_int_equal (p->count, 1);
    }
    tm_twins_stats_t st;
    tm_twins_stats (twins, &st);
    assert_int_equal (st.unknown_property, 1);
    assert_int_equal (st.invalid_type, 2);
    assert_int_equal (st.unmodelled, 2);
    tm_twins_destroy (&twins);
    tm_models_destroy (&models);
}

static void
test_prop_limit (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    char name[16];
    for (int i = 0; i < TM_TWINS_MAX_PROPS; i++) {
        snprintf (name, sizeof name, "p%d", i);
        tm_reading_t r = s_reading ("e", name, 1, 1);
        assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    }
    tm_reading_t r = s_reading ("e", "one-too-many", 1, 1);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_REJECTED);
    tm_twins_destroy (&twins);
}

//  Many twins and properties in a random order against a naive reference.
static void
test_against_reference (void **state)
{
    (void) state;
    enum { N_ENT = 5000, N_PROP = 3, N_OPS = 200000 };
    static int64_t ref_ts[N_ENT][N_PROP];
    static double ref_val[N_ENT][N_PROP];
    static uint64_t ref_count[N_ENT][N_PROP];
    memset (ref_ts, 0, sizeof ref_ts);
    memset (ref_count, 0, sizeof ref_count);
    static const char *props[N_PROP] = {"pm25", "no2", "temperature"};
    tm_twins_t *twins = tm_twins_new ();
    srand (42);
    uint64_t applied = 0, dup = 0, late = 0;
    for (int op = 0; op < N_OPS; op++) {
        int e = rand () % N_ENT, p = rand () % N_PROP;
        int64_t ts = 1 + rand () % 50;
        double v = rand () / 1000.0;
        char ent[32];
        snprintf (ent, sizeof ent, "city/e-%06d", e);
        tm_reading_t r = s_reading (ent, props[p], v, ts);
        tm_apply_t got = tm_twins_apply (twins, &r, s_key, 1024, 1000);
        tm_apply_t want;
        if (ref_count[e][p] && ts == ref_ts[e][p])
            want = TM_APPLY_DUPLICATE;
        else
        if (ref_count[e][p] && ts < ref_ts[e][p])
            want = TM_APPLY_LATE;
        else {
            want = TM_APPLY_APPLIED;
            ref_ts[e][p] = ts;
            ref_val[e][p] = v;
            ref_count[e][p]++;
        }
        assert_int_equal (got, want);
        applied += want == TM_APPLY_APPLIED;
        dup += want == TM_APPLY_DUPLICATE;
        late += want == TM_APPLY_LATE;
    }
    assert_true (applied > 0 && dup > 0 && late > 0);
    for (int e = 0; e < N_ENT; e++) {
        char ent[32];
        snprintf (ent, sizeof ent, "city/e-%06d", e);
        tm_twin_t *t = tm_twins_find (twins, ent, strlen (ent));
        assert_non_null (t);
        for (int p = 0; p < N_PROP; p++) {
            tm_prop_t *found = NULL;
            for (int i = 0; i < t->nprops; i++)
                if (strcmp (tm_twins_prop_name (twins, &t->props[i]), props[p]) == 0)
                    found = &t->props[i];
            if (!ref_count[e][p]) {
                assert_null (found);
                continue;
            }
            assert_non_null (found);
            assert_int_equal (found->an.ts_ms, ref_ts[e][p]);
            assert_true (found->an.value == ref_val[e][p]);
            assert_int_equal (found->count, ref_count[e][p]);
        }
    }
    assert_int_equal (tm_twins_size (twins), N_ENT);
    tm_twins_destroy (&twins);
}

static void
test_dirty_shards_and_roundtrip (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    tm_reading_t r = s_reading ("milan/bay-9", "occupied", 1, 5000);
    r.model = "parking_bay";
    r.model_len = strlen (r.model);
    tm_twins_apply (twins, &r, s_key, 1024, 1000);
    r = s_reading ("milan/bay-9", "battery", 3.3, 5000);
    tm_twins_apply (twins, &r, s_key, 1024, 1000);
    r = s_reading ("milan/bay-10", "occupied", 0, -7);     //  negative ts survives
    tm_twins_apply (twins, &r, s_key, 1024, 1000);
    uint32_t s9 = tm_shardmap_hash (s_key, 1024, "milan/bay-9", 11);
    uint32_t s10 = tm_shardmap_hash (s_key, 1024, "milan/bay-10", 12);
    size_t n;
    uint32_t *dirty = tm_twins_take_dirty (twins, &n);
    assert_int_equal (n, s9 == s10? 1: 2);
    assert_int_equal (dirty[0], s9);
    free (dirty);
    assert_null (tm_twins_take_dirty (twins, &n));
    assert_int_equal (n, 0);
    //  A duplicate changes nothing, so no shard becomes dirty.
    r = s_reading ("milan/bay-9", "battery", 3.3, 5000);
    tm_twins_apply (twins, &r, s_key, 1024, 1000);
    free (tm_twins_take_dirty (twins, &n));
    assert_int_equal (n, 0);

    uint8_t *buf = NULL;
    size_t cap = 0;
    size_t size = tm_twins_encode_shard (twins, s9, &buf, &cap);
    assert_true (size > 0);
    tm_twins_t *copy = tm_twins_new ();
    assert_int_equal (tm_twins_restore_shard (copy, s9, buf, size), s9 == s10? 2: 1);
    //  The same shard twice would duplicate twins: refused.
    assert_int_equal (tm_twins_restore_shard (copy, s9, buf, size), -1);
    tm_twin_t *t = tm_twins_find (copy, "milan/bay-9", 11);
    assert_non_null (t);
    assert_string_equal (t->model, "parking_bay");
    assert_int_equal (t->nprops, 2);
    assert_int_equal (t->shard, s9);
    assert_int_equal (t->version, tm_twins_find (twins, "milan/bay-9", 11)->version);
    assert_true (t->props[1].an.value == 3.3);
    //  Analytics and sync status travel with the checkpoint.
    const tm_twin_t *orig = tm_twins_find (twins, "milan/bay-9", 11);
    assert_memory_equal (&t->props[1].an, &orig->props[1].an, sizeof (tm_analytics_t));
    assert_int_equal (t->sync.state, orig->sync.state);
    assert_int_equal (t->sync.heard_ms, orig->sync.heard_ms);
    //  Restored state keeps idempotency: the same reading is a duplicate.
    assert_int_equal (tm_twins_apply (copy, &r, s_key, 1024, 1000), TM_APPLY_DUPLICATE);
    size = tm_twins_encode_shard (twins, s10, &buf, &cap);
    tm_twins_t *copy2 = tm_twins_new ();
    assert_true (tm_twins_restore_shard (copy2, s10, buf, size) >= 1);
    assert_int_equal (tm_twins_find (copy2, "milan/bay-10", 12)->props[0].an.ts_ms, -7);
    tm_twins_destroy (&copy2);

    //  Every truncation of a valid blob is refused, never read past.
    size = tm_twins_encode_shard (twins, s9, &buf, &cap);
    for (size_t cut = 0; cut < size; cut++) {
        tm_twins_t *t3 = tm_twins_new ();
        uint8_t *part = malloc (cut? cut: 1);
        memcpy (part, buf, cut);
        assert_int_equal (tm_twins_restore_shard (t3, s9, part, cut), -1);
        free (part);
        tm_twins_destroy (&t3);
    }
    uint8_t junk[] = {0x01, 0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal (tm_twins_restore_shard (copy, 0, junk, sizeof junk), -1);
    free (buf);
    tm_twins_destroy (&copy);
    tm_twins_destroy (&twins);
}

//  Recovery skips what a shard's blob holds: a blob encoded after log
//  record 10 makes the replay of records up to 10 change nothing for its
//  shard (not even a late reading), while record 11 applies, and shards
//  restored from no blob replay everything.
static void
test_replay_covered (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    tm_reading_t r = s_reading ("e-1", "p", 1.5, 5000);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    uint32_t shard = tm_shardmap_hash (s_key, 1024, "e-1", 3);
    tm_twins_set_log_seq (twins, 10);
    uint8_t *buf = NULL;
    size_t cap = 0;
    size_t size = tm_twins_encode_shard (twins, shard, &buf, &cap);
    assert_true (size > 0);
    tm_twins_t *copy = tm_twins_new ();
    assert_int_equal (tm_twins_restore_shard (copy, shard, buf, size), 1);
    assert_int_equal (tm_twins_covered (copy, shard), 10);
    assert_int_equal (tm_twins_covered (copy, shard + 1), 0);
    //  Record 9 had an older reading: the blob holds it, nothing changes
    //  (without the skip it would come back as a late reading).
    tm_twins_replaying (copy, 9);
    r = s_reading ("e-1", "p", 1.0, 4000);
    assert_int_equal (tm_twins_apply (copy, &r, s_key, 1024, 1000), TM_APPLY_DUPLICATE);
    assert_int_equal (tm_twins_pending_count (copy), 0);
    tm_twins_replaying (copy, 10);
    r = s_reading ("e-1", "p", 2.0, 6000);
    assert_int_equal (tm_twins_apply (copy, &r, s_key, 1024, 1000), TM_APPLY_DUPLICATE);
    assert_true (tm_twins_find (copy, "e-1", 3)->props[0].an.value == 1.5);
    //  Record 11 came after the blob: applied, and an older reading in it
    //  is late (kept).
    tm_twins_replaying (copy, 11);
    assert_int_equal (tm_twins_apply (copy, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    r = s_reading ("e-1", "p", 1.0, 4000);
    assert_int_equal (tm_twins_apply (copy, &r, s_key, 1024, 1000), TM_APPLY_LATE);
    assert_int_equal (tm_twins_pending_count (copy), 1);
    //  After recovery nothing is skipped.
    tm_twins_replaying (copy, 0);
    r = s_reading ("e-1", "p", 3.0, 7000);
    assert_int_equal (tm_twins_apply (copy, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    free (buf);
    tm_twins_destroy (&copy);
    tm_twins_destroy (&twins);
}

//  The sync timers in parts: every twin is ticked once per pass, in row
//  order, and the pass says when it wrapped; new twins join the next pass.
static void
test_sync_tick_parts (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    char entity[32];
    for (int i = 0; i < 25; i++) {
        snprintf (entity, sizeof entity, "part/%02d", i);
        for (int k = 0; k < 3; k++) {
            tm_reading_t r = s_reading (entity, "pm25", 10 + k, 1000 + k * 60000);
            assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000 + k * 60000),
                              TM_APPLY_APPLIED);
        }
    }
    int64_t late = 1000 + 2 * 60000 + 3 * 60000 + 1;
    bool wrapped = true;
    size_t moved = 0;
    //  Parts of 10: 10, 10, then the last 5 and the wrap.
    moved += tm_twins_tick_part (twins, late, 10, &wrapped);
    assert_false (wrapped);
    assert_int_equal (moved, 10);
    moved += tm_twins_tick_part (twins, late, 10, &wrapped);
    assert_false (wrapped);
    tm_twins_stats_t st;
    tm_twins_stats (twins, &st);
    assert_int_equal (st.stale, 20);
    moved += tm_twins_tick_part (twins, late, 10, &wrapped);
    assert_true (wrapped);
    assert_int_equal (moved, 25);
    tm_twins_stats (twins, &st);
    assert_int_equal (st.stale, 25);
    //  The next pass starts over; nothing moves again.
    assert_int_equal (tm_twins_tick_part (twins, late, 100, &wrapped), 0);
    assert_true (wrapped);
    tm_twins_destroy (&twins);
}

//  Staleness comes from the timer, with no reading; a reading brings the
//  twin back. Counts of stale twins follow.
static void
test_sync_tick (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    for (int i = 0; i < 5; i++) {
        tm_reading_t r = s_reading ("sync/e", "pm25", 10 + i, 1000 + i * 60000);
        assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000 + i * 60000),
                          TM_APPLY_APPLIED);
    }
    tm_twin_t *t = tm_twins_find (twins, "sync/e", 6);
    assert_int_equal (t->sync.state, TM_SYNC_SYNCHRONIZED);
    int64_t last = 1000 + 4 * 60000;
    //  Default settings: 60 s interval, stale after 3 intervals.
    assert_int_equal (tm_twins_tick (twins, last + 3 * 60000 - 1), 0);
    assert_int_equal (tm_twins_tick (twins, last + 3 * 60000 + 1), 1);
    assert_int_equal (t->sync.state, TM_SYNC_STALE);
    tm_twins_stats_t st;
    tm_twins_stats (twins, &st);
    assert_int_equal (st.stale, 1);
    tm_reading_t r = s_reading ("sync/e", "pm25", 15, last + 4 * 60000);
    tm_twins_apply (twins, &r, s_key, 1024, last + 4 * 60000);
    assert_int_not_equal (t->sync.state, TM_SYNC_STALE);
    tm_twins_stats (twins, &st);
    assert_int_equal (st.stale, 0);
    //  An out-of-range value is kept as latest and counted.
    r = s_reading ("sync/e", "pm25", NAN, last + 5 * 60000);
    tm_twins_apply (twins, &r, s_key, 1024, last + 5 * 60000);
    tm_twins_stats (twins, &st);
    assert_int_equal (st.out_of_range, 1);
    tm_twins_destroy (&twins);
}

//  A model's valid range and limits reach the twins of that model, and a
//  higher version of the model replaces the settings used.
static const char s_model_v1[] =
    "{\"format\": 1, \"name\": \"probe\", \"version\": 1, \"properties\": {"
    "\"pm25\": {\"valid\": {\"min\": 0, \"max\": 100}, \"limits\": {\"upper\": 35}}}}";
static const char s_model_v2[] =
    "{\"format\": 1, \"name\": \"probe\", \"version\": 2, \"properties\": {"
    "\"pm25\": {\"valid\": {\"min\": 0, \"max\": 500}, \"limits\": {\"upper\": 50}}}}";

static unsigned
s_apply_flags (tm_twins_t *twins, const char *entity, const char *model, double value,
               int64_t ts)
{
    tm_reading_t r = s_reading (entity, "pm25", value, ts);
    r.model = model;
    r.model_len = model? strlen (model): 0;
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, ts), TM_APPLY_APPLIED);
    tm_twin_t *t = tm_twins_find (twins, entity, strlen (entity));
    assert_non_null (t);
    return tm_analytics_flags (&t->props[0].an, tm_twins_settings (twins, t, &t->props[0]));
}

static void
test_model_settings (void **state)
{
    (void) state;
    char err[TM_MODEL_ERR_SIZE];
    tm_models_t *models = tm_models_new ();
    tm_twins_t *twins = tm_twins_new ();
    assert_non_null (models);
    assert_non_null (twins);
    tm_twins_set_models (twins, models);
    //  Before the model is installed: defaults, nothing is out of range.
    assert_int_equal (s_apply_flags (twins, "m/a", "probe", 150, 1000) & TM_ANALYTICS_OUT_OF_RANGE,
                      0);
    tm_model_t *m = tm_model_parse (s_model_v1, strlen (s_model_v1), "v1", err, sizeof err);
    assert_non_null (m);
    assert_int_equal (tm_models_put (models, &m, NULL, err, sizeof err), 0);
    //  Now the same twin (cached at the old generation) and a new one use it.
    assert_true (s_apply_flags (twins, "m/a", "probe", 150, 2000) & TM_ANALYTICS_OUT_OF_RANGE);
    assert_true (s_apply_flags (twins, "m/b", "probe", 150, 2000) & TM_ANALYTICS_OUT_OF_RANGE);
    assert_int_equal (s_apply_flags (twins, "m/b", "probe", 50, 3000) & TM_ANALYTICS_OUT_OF_RANGE,
                      0);
    //  A twin of another model, or none, keeps the defaults.
    assert_int_equal (s_apply_flags (twins, "m/c", "other", 150, 1000) & TM_ANALYTICS_OUT_OF_RANGE,
                      0);
    assert_int_equal (s_apply_flags (twins, "m/d", NULL, 150, 1000) & TM_ANALYTICS_OUT_OF_RANGE,
                      0);
    tm_twin_t *t = tm_twins_find (twins, "m/b", 3);
    const tm_analytics_settings_t *st = tm_twins_settings (twins, t, &t->props[0]);
    assert_true (st->valid_max == 100);
    assert_true (st->limit_upper == 35);
    assert_int_equal (st->interval_ms, 60000);     //  expected_interval_ms 0 -> 60 s
    //  An unknown property of a modelled twin: defaults.
    tm_reading_t r = s_reading ("m/b", "noise", 1e9, 4000);
    r.model = "probe";
    r.model_len = 5;
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 4000), TM_APPLY_APPLIED);
    assert_true (isinf (tm_twins_settings (twins, t, &t->props[1])->valid_max));

    //  Version 2 widens the range: 150 is good again, and the old settings
    //  are not used once the model is replaced.
    m = tm_model_parse (s_model_v2, strlen (s_model_v2), "v2", err, sizeof err);
    assert_non_null (m);
    uint32_t previous = 0;
    assert_int_equal (tm_models_put (models, &m, &previous, err, sizeof err), 0);
    assert_int_equal (previous, 1);
    assert_int_equal (s_apply_flags (twins, "m/b", "probe", 150, 5000) & TM_ANALYTICS_OUT_OF_RANGE,
                      0);
    st = tm_twins_settings (twins, t, &t->props[0]);
    assert_true (st->valid_max == 500);
    assert_true (st->limit_upper == 50);
    assert_true (s_apply_flags (twins, "m/b", "probe", 600, 6000) & TM_ANALYTICS_OUT_OF_RANGE);
    tm_twins_destroy (&twins);
    tm_models_destroy (&models);
}

//  ---------------------------------------------------------------------
//  Restoring in two phases, and in bulk (a whole worker's recovery)

//  A table of n twins over 64 shards, three properties each, attributes on
//  every other; the encoded blob of every shard in blobs[shard].
static tm_twins_t *
s_make_table (int n, uint8_t *blobs[64], size_t sizes[64])
{
    tm_twins_t *twins = tm_twins_new ();
    for (int i = 0; i < n; i++) {
        char entity[32];
        snprintf (entity, sizeof entity, "bulk/twin-%04d", i);
        for (int k = 0; k < 3; k++) {
            const char *props[] = {"pm25", "no2", "temp"};
            for (int ts = 1; ts <= 3; ts++) {
                tm_wire_attr_t attrs[2] = {
                    {.name = "district", .name_len = 8, .value = "\"Brera\"", .value_len = 7},
                    {.name = "location", .name_len = 8,
                     .value = "{\"lat\": 45.5, \"lon\": 9.2}", .value_len = 25}};
                bool with = i % 2 == 0 && k == 0 && ts == 1;
                uint8_t buf[512];
                size_t len = tm_wire_encode_attrs (buf, sizeof buf, entity, props[k],
                                                   i + k + ts * 0.5, ts * 1000, "air_station",
                                                   attrs, with? 2: 0);
                tm_wire_iter_t it;
                tm_reading_t r;
                tm_wire_iter_init (&it, buf, len);
                assert_int_equal (tm_wire_next (&it, &r), 1);
                assert_int_equal (tm_twins_apply (twins, &r, s_key, 64, 1000),
                                  TM_APPLY_APPLIED);
            }
        }
    }
    for (uint32_t sh = 0; sh < 64; sh++) {
        blobs[sh] = NULL;
        size_t cap = 0;
        sizes[sh] = tm_twins_encode_shard (twins, sh, &blobs[sh], &cap);
    }
    return twins;
}

static void
s_assert_same_twins (tm_twins_t *a, tm_twins_t *b)
{
    assert_int_equal (tm_twins_size (a), tm_twins_size (b));
    size_t nslots;
    tm_twin_t *const *slots = tm_twins_slots (a, &nslots);
    for (size_t i = 0; i < nslots; i++) {
        const tm_twin_t *t = slots[i];
        if (!t)
            continue;
        const tm_twin_t *u = tm_twins_find (b, t->entity, t->entity_len);
        assert_non_null (u);
        assert_int_equal (u->shard, t->shard);
        assert_string_equal (u->model, t->model);
        assert_int_equal (u->version, t->version);
        assert_int_equal (u->nprops, t->nprops);
        assert_int_equal (u->nattrs, t->nattrs);
        for (uint16_t k = 0; k < t->nprops; k++) {
            assert_string_equal (tm_twins_prop_name (b, &u->props[k]),
                                 tm_twins_prop_name (a, &t->props[k]));
            assert_int_equal (u->props[k].count, t->props[k].count);
            assert_memory_equal (&u->props[k].an, &t->props[k].an, sizeof (tm_analytics_t));
            //  The open chunk: the same state, as the blob saved it (as if
            //  its bytes were stored).
            const tm_gorilla_open_t *ha = &t->props[k].hist, *hb = &u->props[k].hist;
            int64_t last_ts = t->props[k].an.ts_ms;
            assert_int_equal (tm_gorilla_open_count (hb), tm_gorilla_open_count (ha));
            assert_int_equal (tm_gorilla_open_bits (hb), tm_gorilla_open_bits (ha));
            assert_int_equal (tm_gorilla_open_first_ts (hb, last_ts),
                              tm_gorilla_open_first_ts (ha, last_ts));
            uint8_t sa[64], sb[64];
            assert_true (tm_gorilla_open_save_size (ha, true) <= sizeof sa);
            size_t na = tm_gorilla_open_save (ha, last_ts, true, sa);
            size_t nb = tm_gorilla_open_save (hb, last_ts, true, sb);
            assert_int_equal (na, nb);
            assert_memory_equal (sa, sb, na);
        }
    }
}

//  A property holds its name as a 16-bit id. Past 256 names (ids with a
//  high byte, the id array grown, the name table rehashed) each property
//  still reads its own name, at the pointer tm_twins_name_find gives for
//  the table's life; and a twin restored into a table that numbered the
//  names otherwise encodes to the same bytes (blobs hold names, not ids).
static void
test_name_ids (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    tm_reading_t r = s_reading ("e-0", "p-000", 0, 1000);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    const char *first = tm_twins_name_find (twins, "p-000", 5);
    assert_non_null (first);
    char ent[16], name[16];
    for (int i = 1; i < 600; i++) {
        snprintf (ent, sizeof ent, "e-%d", i / 60);
        snprintf (name, sizeof name, "p-%03d", i);
        r = s_reading (ent, name, i, 1000);
        assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    }
    for (int i = 0; i < 600; i++) {
        snprintf (ent, sizeof ent, "e-%d", i / 60);
        snprintf (name, sizeof name, "p-%03d", i);
        const tm_twin_t *t = tm_twins_find (twins, ent, strlen (ent));
        const char *interned = tm_twins_name_find (twins, name, strlen (name));
        assert_non_null (interned);
        assert_string_equal (interned, name);
        const tm_prop_t *p = tm_twins_prop (t, interned);
        assert_non_null (p);
        assert_int_equal (p - t->props, i % 60);
        assert_ptr_equal (tm_twins_prop_name (twins, p), interned);
        assert_true (p->an.value == i);
    }
    const tm_twin_t *t0 = tm_twins_find (twins, "e-0", 3);
    assert_ptr_equal (tm_twins_prop_name (twins, &t0->props[0]), first);
    assert_null (tm_twins_prop (t0, tm_twins_name_find (twins, "p-599", 5)));

    tm_twins_t *back = tm_twins_new ();
    r = s_reading ("other", "zz", 1, 1000);
    assert_int_equal (tm_twins_apply (back, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    const tm_twin_t *t9 = tm_twins_find (twins, "e-9", 3);
    uint8_t *buf = NULL, *again = NULL;
    size_t cap = 0, cap2 = 0;
    size_t size = tm_twins_encode_twin (twins, t9, &buf, &cap);
    assert_true (size > 0);
    assert_int_equal (tm_twins_restore_shard (back, t9->shard, buf, size), 1);
    const tm_twin_t *u9 = tm_twins_find (back, "e-9", 3);
    assert_non_null (u9);
    assert_int_equal (u9->nprops, 60);
    assert_int_not_equal (u9->props[0].id, t9->props[0].id);
    for (uint16_t k = 0; k < u9->nprops; k++)
        assert_string_equal (tm_twins_prop_name (back, &u9->props[k]),
                             tm_twins_prop_name (twins, &t9->props[k]));
    assert_int_equal (tm_twins_encode_twin (back, u9, &again, &cap2), size);
    assert_memory_equal (again, buf, size);
    free (buf);
    free (again);
    tm_twins_destroy (&back);
    tm_twins_destroy (&twins);
}

//  Every id is used: TM_TWINS_MAX_NAMES names, the last with id 65535, and
//  a reading that needs one more name is refused.
static void
test_name_limit (void **state)
{
    (void) state;
    tm_twins_t *twins = tm_twins_new ();
    char ent[16], name[16];
    for (int i = 0; i < TM_TWINS_MAX_NAMES; i++) {
        snprintf (ent, sizeof ent, "n-%d", i / TM_TWINS_MAX_PROPS);
        snprintf (name, sizeof name, "q%05d", i);
        tm_reading_t r = s_reading (ent, name, i, 1000);
        assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_APPLIED);
    }
    tm_reading_t r = s_reading ("n-0", "one-too-many", 1, 1000);
    assert_int_equal (tm_twins_apply (twins, &r, s_key, 1024, 1000), TM_APPLY_REJECTED);
    snprintf (ent, sizeof ent, "n-%d", (TM_TWINS_MAX_NAMES - 1) / TM_TWINS_MAX_PROPS);
    snprintf (name, sizeof name, "q%05d", TM_TWINS_MAX_NAMES - 1);
    const tm_twin_t *t = tm_twins_find (twins, ent, strlen (ent));
    const tm_prop_t *p = tm_twins_prop (t, tm_twins_name_find (twins, name, strlen (name)));
    assert_non_null (p);
    assert_int_equal (p->id, TM_TWINS_MAX_NAMES - 1);
    assert_string_equal (tm_twins_prop_name (twins, p), name);
    assert_true (p->an.value == TM_TWINS_MAX_NAMES - 1);
    tm_twins_destroy (&twins);
}

static void
test_restore_two_phases_and_bulk (void **state)
{
    (void) state;
    uint8_t *blobs[64];
    size_t sizes[64];
    tm_twins_t *orig = s_make_table (2000, blobs, sizes);
    //  Decoded apart, restored in bulk: the same table as the original,
    //  and blobs of the same size again (a shard's twins come back in the
    //  other order: restoring prepends, as it always did).
    tm_twins_t *bulk = tm_twins_new ();
    tm_twins_restore_begin (bulk, s_key, 64, 64);
    for (uint32_t sh = 0; sh < 64; sh++) {
        uint8_t *copy = malloc (sizes[sh]);
        memcpy (copy, blobs[sh], sizes[sh]);
        tm_twins_decoded_t *dec = tm_twins_decode_shard (&copy, sizes[sh]);
        assert_null (copy);
        assert_non_null (dec);
        size_t n = tm_twins_decoded_count (dec);
        assert_int_equal (tm_twins_restore_decoded (bulk, sh, &dec), (long) n);
        assert_null (dec);
    }
    tm_twins_restore_end (bulk);
    s_assert_same_twins (orig, bulk);
    for (uint32_t sh = 0; sh < 64; sh++) {
        uint8_t *buf = NULL;
        size_t cap = 0;
        size_t size = tm_twins_encode_shard (bulk, sh, &buf, &cap);
        assert_int_equal (size, sizes[sh]);
        free (buf);
    }
    //  Restored twins take readings as before: a duplicate, then a new one
    //  that needs a fourth property (the properties array grows).
    tm_reading_t r = s_reading ("bulk/twin-0007", "pm25", 7 + 1.5, 3000);
    assert_int_equal (tm_twins_apply (bulk, &r, s_key, 64, 1000), TM_APPLY_DUPLICATE);
    r = s_reading ("bulk/twin-0007", "humidity", 50, 4000);
    assert_int_equal (tm_twins_apply (bulk, &r, s_key, 64, 1000), TM_APPLY_APPLIED);
    assert_int_equal (tm_twins_find (bulk, "bulk/twin-0007", 14)->nprops, 4);
    tm_twins_destroy (&bulk);

    //  In bulk mode a blob whose twin is not of its shard is refused (the
    //  twins before it kept), as is one naming a twin twice; outside bulk
    //  mode the table is searched, and a second copy is refused too.
    uint32_t sh = 5, other = 6;
    tm_twins_t *t1 = tm_twins_new ();
    tm_twins_restore_begin (t1, s_key, 64, 64);
    assert_int_equal (tm_twins_restore_shard (t1, other, blobs[sh], sizes[sh]), -1);
    assert_int_equal (tm_twins_size (t1), 0);
    tm_twins_restore_end (t1);
    tm_twins_destroy (&t1);
    //  The same twin twice in one blob: the shard's blob with its first
    //  twin repeated (count + 1, the twin's bytes once more at the end).
    tm_twins_t *one = tm_twins_new ();
    long n5 = tm_twins_restore_shard (one, sh, blobs[sh], sizes[sh]);
    assert_true (n5 >= 2);
    tm_twins_destroy (&one);
    //  Blob: version, log_seq varint (0 here), ntwins varint, twins. Find
    //  where the second twin starts by decoding a one-twin prefix.
    assert_int_equal (blobs[sh][1], 0);
    size_t head = 2;
    while (blobs[sh][head] & 0x80)
        head++;
    head++;
    size_t first_end = 0;
    for (size_t cut = head + 1; cut <= sizes[sh]; cut++) {
        uint8_t *b = malloc (cut);
        memcpy (b, blobs[sh], cut);
        b[2] = 1;                              //  one twin (n5 < 128 here)
        assert_true (n5 < 128 && head == 3);
        tm_twins_t *probe = tm_twins_new ();
        long got = tm_twins_restore_shard (probe, sh, b, cut);
        tm_twins_destroy (&probe);
        free (b);
        if (got == 1) {
            first_end = cut;
            break;
        }
    }
    assert_true (first_end > head);
    size_t tlen = first_end - head;
    uint8_t *dup = malloc (3 + 2 * tlen);
    dup[0] = blobs[sh][0];
    dup[1] = 0;
    dup[2] = 2;
    memcpy (dup + 3, blobs[sh] + head, tlen);
    memcpy (dup + 3 + tlen, blobs[sh] + head, tlen);
    tm_twins_t *t2 = tm_twins_new ();
    tm_twins_restore_begin (t2, s_key, 64, 64);
    assert_int_equal (tm_twins_restore_shard (t2, sh, dup, 3 + 2 * tlen), -1);
    assert_int_equal (tm_twins_size (t2), 1);
    tm_twins_restore_end (t2);
    tm_twins_destroy (&t2);
    tm_twins_t *t3 = tm_twins_new ();
    assert_int_equal (tm_twins_restore_shard (t3, sh, dup, 3 + 2 * tlen), -1);
    assert_int_equal (tm_twins_size (t3), 1);
    //  Bulk mode is refused on a table that holds twins: searched as usual.
    tm_twins_restore_begin (t3, s_key, 64, 64);
    assert_int_equal (tm_twins_restore_shard (t3, sh, blobs[sh], sizes[sh]), -1);
    tm_twins_restore_end (t3);
    tm_twins_destroy (&t3);
    free (dup);
    //  A decoded blob destroyed without restoring frees what it holds.
    uint8_t *copy = malloc (sizes[sh]);
    memcpy (copy, blobs[sh], sizes[sh]);
    tm_twins_decoded_t *dec = tm_twins_decode_shard (&copy, sizes[sh]);
    tm_twins_decoded_destroy (&dec);
    assert_null (dec);
    tm_twins_decoded_destroy (&dec);
    for (uint32_t i = 0; i < 64; i++)
        free (blobs[i]);
    tm_twins_destroy (&orig);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_apply_rules),
        cmocka_unit_test (test_prop_limit),
        cmocka_unit_test (test_attributes),
        cmocka_unit_test (test_quality_classes),
        cmocka_unit_test (test_against_reference),
        cmocka_unit_test (test_dirty_shards_and_roundtrip),
        cmocka_unit_test (test_replay_covered),
        cmocka_unit_test (test_sync_tick),
        cmocka_unit_test (test_sync_tick_parts),
        cmocka_unit_test (test_model_settings),
        cmocka_unit_test (test_restore_two_phases_and_bulk),
        cmocka_unit_test (test_name_ids),
        cmocka_unit_test (test_name_limit),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
