/*  test_commands - desired values: set, clear, replay, persistence, hostile bytes

    The worker's tm_commands over a real RocksDB in a temporary directory and
    a real twin table: a reading that reports the desired value clears it
    (durably), another value does not, a repeated set changes nothing, a
    replayed log record at or before the set never clears it while one after
    it does (also when the checkpoint holds the reading already), the store
    gives back what was set, and records from a damaged disk are refused
    without harm. Events are read from an inproc SUB.
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

#include "tm_commands.h"
#include "tm_util.h"

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";
#define S_SHARDS 64

typedef struct {
    char dir[256];
    tm_store_t *store;
    tm_twins_t *twins;
    tm_models_t *models;
    tm_commands_t *cmds;
    int64_t ts;
} s_fix_t;

static void
s_open (s_fix_t *f)
{
    f->store = tm_store_open (f->dir);
    assert_non_null (f->store);
    f->twins = tm_twins_new ();
    assert_non_null (f->twins);
    tm_twins_set_models (f->twins, f->models);
    f->cmds = tm_commands_new (f->store, f->twins, f->models, "worker-t");
    assert_non_null (f->cmds);
}

static void
s_close (s_fix_t *f)
{
    tm_commands_destroy (&f->cmds);
    assert_null (f->cmds);
    tm_twins_destroy (&f->twins);
    tm_store_destroy (&f->store);
}

static int
s_setup (void **state)
{
    s_fix_t *f = (s_fix_t *) calloc (1, sizeof *f);
    snprintf (f->dir, sizeof f->dir, "/tmp/test_commands-XXXXXX");
    assert_non_null (mkdtemp (f->dir));
    f->models = tm_models_new ();
    const char *text = "{\"format\": 1, \"name\": \"valve\", \"version\": 1, \"properties\": {"
                       "\"setpoint\": {\"type\": \"number\", \"valid\": {\"min\": 0, \"max\": 100}},"
                       "\"open\": {\"type\": \"boolean\"},"
                       "\"mode\": {\"type\": \"integer\"}}}";
    char err[256];
    tm_model_t *m = tm_model_parse (text, strlen (text), "test", err, sizeof err);
    assert_non_null (m);
    assert_int_equal (tm_models_put (f->models, &m, NULL, err, sizeof err), 0);
    f->ts = 1000;
    s_open (f);
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    s_close (f);
    tm_models_destroy (&f->models);
    tm_util_rm_rf (f->dir);
    free (f);
    return 0;
}

static uint32_t
s_shard (const char *entity)
{
    return tm_shardmap_hash (s_key, S_SHARDS, entity, strlen (entity));
}

static tm_apply_t
s_read (s_fix_t *f, const char *entity, const char *prop, double value, int64_t ts)
{
    tm_reading_t r = {0};
    r.entity = entity;
    r.entity_len = strlen (entity);
    r.property = prop;
    r.property_len = strlen (prop);
    r.value = value;
    r.ts_ms = ts;
    r.model = "valve";
    r.model_len = 5;
    return tm_twins_apply (f->twins, &r, s_key, S_SHARDS, 1000);
}

static int
s_set (s_fix_t *f, const char *entity, const char *prop, double value, double tol,
       uint64_t log_seq, tm_command_outcome_t *outcome)
{
    tm_command_change_t c = {.property = prop, .value = value, .tolerance = tol};
    char detail[256];
    return tm_commands_set (f->cmds, entity, strlen (entity), s_shard (entity), &c, 1, log_seq,
                            5000, "op", outcome, detail, sizeof detail);
}

static const tm_desired_t *
s_desired (s_fix_t *f, const char *entity, const char *prop)
{
    const tm_commands_twin_t *ct = tm_commands_find (f->cmds, entity);
    for (uint16_t i = 0; ct && i < ct->n; i++)
        if (strcmp (ct->items[i].property, prop) == 0)
            return &ct->items[i];
    return NULL;
}

static void
s_reopen (s_fix_t *f)
{
    s_close (f);
    s_open (f);
    size_t bad = 99;
    assert_true (tm_commands_load (f->cmds, S_SHARDS, &bad) >= 0);
    assert_int_equal (bad, 0);
}

static void
test_set_repeat_and_clear (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    tm_command_outcome_t out;
    assert_int_equal (s_read (f, "v/1", "setpoint", 20, 100), TM_APPLY_APPLIED);
    assert_int_equal (s_set (f, "v/1", "setpoint", 42, 0, 7, &out), 0);
    assert_int_equal (out, TM_COMMAND_SET);
    const tm_desired_t *d = s_desired (f, "v/1", "setpoint");
    assert_non_null (d);
    uint64_t version = d->version;
    assert_true (version > 0);
    assert_int_equal (d->set_seq, 7);
    assert_string_equal (d->set_by, "op");
    assert_int_equal (tm_commands_count (f->cmds), 1);
    tm_twin_t *t = tm_twins_find (f->twins, "v/1", 3);
    assert_non_null (t->commands);

    //  Again: nothing changes, not even the version.
    assert_int_equal (s_set (f, "v/1", "setpoint", 42, 0, 9, &out), 0);
    assert_int_equal (out, TM_COMMAND_UNCHANGED);
    assert_int_equal (s_desired (f, "v/1", "setpoint")->version, version);
    assert_int_equal (tm_commands_count (f->cmds), 1);

    //  Another value, a late reading, another property: not cleared.
    assert_int_equal (s_read (f, "v/1", "setpoint", 41.9, 200), TM_APPLY_APPLIED);
    assert_int_equal (s_read (f, "v/1", "setpoint", 42, 150), TM_APPLY_LATE);
    assert_int_equal (s_read (f, "v/1", "mode", 42, 210), TM_APPLY_APPLIED);
    assert_non_null (s_desired (f, "v/1", "setpoint"));
    //  The value: cleared, and the twin goes back to no commands at all.
    assert_int_equal (s_read (f, "v/1", "setpoint", 42, 300), TM_APPLY_APPLIED);
    assert_null (s_desired (f, "v/1", "setpoint"));
    assert_null (t->commands);
    assert_int_equal (tm_commands_count (f->cmds), 0);
    assert_true (tm_commands_clock (f->cmds) > version);
    //  Durably, once flushed.
    assert_int_equal (tm_commands_flush (f->cmds), 0);
    s_reopen (f);
    assert_null (tm_commands_find (f->cmds, "v/1"));
}

static void
test_in_sync_unset_and_tolerance (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    tm_command_outcome_t out;
    s_read (f, "v/2", "setpoint", 30, 100);
    //  Reported already: nothing outstanding.
    assert_int_equal (s_set (f, "v/2", "setpoint", 30, 0, 1, &out), 0);
    assert_int_equal (out, TM_COMMAND_IN_SYNC);
    assert_null (tm_commands_find (f->cmds, "v/2"));
    //  Tolerance: 59.6 reports 60~0.5, 59.4 does not.
    assert_int_equal (s_set (f, "v/2", "setpoint", 60, 0.5, 1, &out), 0);
    assert_int_equal (out, TM_COMMAND_SET);
    s_read (f, "v/2", "setpoint", 59.4, 200);
    assert_non_null (s_desired (f, "v/2", "setpoint"));
    s_read (f, "v/2", "setpoint", 59.6, 300);
    assert_null (s_desired (f, "v/2", "setpoint"));
    //  Unset: withdrawn; unset again: nothing to withdraw.
    assert_int_equal (s_set (f, "v/2", "setpoint", 70, 0, 1, &out), 0);
    tm_command_change_t c = {.property = "setpoint", .unset = true};
    char detail[256];
    assert_int_equal (tm_commands_set (f->cmds, "v/2", 3, s_shard ("v/2"), &c, 1, 1, 6000, "op",
                                       &out, detail, sizeof detail), 0);
    assert_int_equal (out, TM_COMMAND_UNSET);
    assert_null (tm_commands_find (f->cmds, "v/2"));
    assert_int_equal (tm_commands_set (f->cmds, "v/2", 3, s_shard ("v/2"), &c, 1, 1, 6000, "op",
                                       &out, detail, sizeof detail), 0);
    assert_int_equal (out, TM_COMMAND_NOT_SET);
    s_reopen (f);
    assert_null (tm_commands_find (f->cmds, "v/2"));
}

static void
test_model_checks (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    tm_command_outcome_t out[3];
    char detail[256];
    s_read (f, "v/3", "setpoint", 10, 100);
    assert_int_equal (s_set (f, "v/3", "setpoint", 101, 0, 1, out), TM_COMMANDS_E_INVALID);
    tm_command_change_t c[3] = {{.property = "open", .value = 0.5},
                                {.property = "mode", .value = 1.5},
                                {.property = "nosuch", .value = 1}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal (tm_commands_set (f->cmds, "v/3", 3, s_shard ("v/3"), &c[i], 1, 1, 1,
                                           "op", out, detail, sizeof detail),
                          TM_COMMANDS_E_INVALID);
        assert_true (strlen (detail) > 0);
    }
    assert_non_null (strstr (detail, "no property nosuch"));
    //  All or none: a good change with a bad one stores nothing.
    tm_command_change_t mixed[2] = {{.property = "setpoint", .value = 50},
                                    {.property = "open", .value = 2}};
    assert_int_equal (tm_commands_set (f->cmds, "v/3", 3, s_shard ("v/3"), mixed, 2, 1, 1, "op",
                                       out, detail, sizeof detail), TM_COMMANDS_E_INVALID);
    assert_null (tm_commands_find (f->cmds, "v/3"));
    //  Non-finite values, negative tolerance, a property twice.
    assert_int_equal (s_set (f, "v/3", "setpoint", NAN, 0, 1, out), TM_COMMANDS_E_INVALID);
    assert_int_equal (s_set (f, "v/3", "setpoint", 5, -1, 1, out), TM_COMMANDS_E_INVALID);
    tm_command_change_t twice[2] = {{.property = "setpoint", .value = 5},
                                    {.property = "setpoint", .value = 6}};
    assert_int_equal (tm_commands_set (f->cmds, "v/3", 3, s_shard ("v/3"), twice, 2, 1, 1, "op",
                                       out, detail, sizeof detail), TM_COMMANDS_E_INVALID);
    //  A twin never seen: no model to check, accepted, and attached when
    //  its first reading makes the twin.
    assert_int_equal (s_set (f, "v/new", "anything", 1e6, 0, 1, out), 0);
    assert_int_equal (out[0], TM_COMMAND_SET);
    s_read (f, "v/new", "anything", 3, 100);
    tm_twin_t *t = tm_twins_find (f->twins, "v/new", 5);
    assert_non_null (t);
    assert_ptr_equal (t->commands, tm_commands_find (f->cmds, "v/new"));
    s_read (f, "v/new", "anything", 1e6, 200);
    assert_null (tm_commands_find (f->cmds, "v/new"));
}

static void
test_replay_idempotent (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    tm_command_outcome_t out;
    //  Before the crash: 77 at record 5, 10 at record 6, the set of 77
    //  after record 6, then 50 at record 7. Outstanding at the crash.
    s_read (f, "v/4", "setpoint", 77, 100);
    s_read (f, "v/4", "setpoint", 10, 200);
    assert_int_equal (s_set (f, "v/4", "setpoint", 77, 0, 6, &out), 0);
    s_read (f, "v/4", "setpoint", 50, 300);
    assert_non_null (s_desired (f, "v/4", "setpoint"));

    //  Recovery with no checkpoint: every record replays. 77 at record 5
    //  is before the set and must not clear it.
    s_reopen (f);
    assert_non_null (s_desired (f, "v/4", "setpoint"));
    tm_commands_replaying (f->cmds, 5);
    s_read (f, "v/4", "setpoint", 77, 100);
    tm_commands_replaying (f->cmds, 6);
    s_read (f, "v/4", "setpoint", 10, 200);
    tm_commands_replaying (f->cmds, 7);
    s_read (f, "v/4", "setpoint", 50, 300);
    tm_commands_replaying (f->cmds, UINT64_MAX);
    assert_non_null (s_desired (f, "v/4", "setpoint"));

    //  Live: 77 at record 8 clears it, but the crash comes before the
    //  clear is flushed. The checkpoint holds the reading already, so the
    //  replay finds it a duplicate: still cleared, as before the crash.
    s_read (f, "v/4", "setpoint", 77, 400);
    assert_null (s_desired (f, "v/4", "setpoint"));
    uint8_t *blob = NULL;
    size_t cap = 0;
    size_t n = tm_twins_encode_shard (f->twins, s_shard ("v/4"), &blob, &cap);
    assert_true (n > 0);
    s_close (f);      //  the clear was never flushed
    s_open (f);
    assert_true (tm_commands_load (f->cmds, S_SHARDS, NULL) == 1);
    assert_true (tm_twins_restore_shard (f->twins, s_shard ("v/4"), blob, n) >= 1);
    free (blob);
    tm_twin_t *t = tm_twins_find (f->twins, "v/4", 3);
    assert_non_null (t);
    assert_non_null (t->commands);     //  attached when the checkpoint made the twin
    tm_commands_replaying (f->cmds, 8);
    assert_int_equal (s_read (f, "v/4", "setpoint", 77, 400), TM_APPLY_DUPLICATE);
    tm_commands_replaying (f->cmds, UINT64_MAX);
    assert_null (s_desired (f, "v/4", "setpoint"));
    assert_int_equal (tm_commands_flush (f->cmds), 0);
    s_reopen (f);
    assert_null (tm_commands_find (f->cmds, "v/4"));
}

static void
test_persistence_round_trip (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    tm_command_outcome_t out[2];
    char detail[256];
    tm_command_change_t c[2] = {{.property = "setpoint", .value = 12.25, .tolerance = 0.125},
                                {.property = "open", .value = 1}};
    s_read (f, "v/5", "setpoint", 1, 100);
    assert_int_equal (tm_commands_set (f->cmds, "v/5", 3, s_shard ("v/5"), c, 2, 42, 123456,
                                       "operator-7", out, detail, sizeof detail), 0);
    tm_desired_t before[2] = {*s_desired (f, "v/5", "setpoint"), *s_desired (f, "v/5", "open")};
    uint64_t clock = tm_commands_clock (f->cmds);
    s_reopen (f);
    assert_int_equal (tm_commands_count (f->cmds), 2);
    for (int i = 0; i < 2; i++) {
        const tm_desired_t *d = s_desired (f, "v/5", before[i].property);
        assert_non_null (d);
        assert_memory_equal (d, &before[i], sizeof *d);
    }
    assert_true (tm_commands_clock (f->cmds) >= clock);
    //  The record codec alone.
    uint8_t rec[TM_COMMANDS_RECORD_MAX], key[256];
    size_t rlen = tm_commands_record_encode (&before[0], rec);
    size_t klen = tm_commands_key_encode (77, "v/5", 3, "setpoint", key);
    uint32_t shard;
    char entity[129];
    tm_desired_t d;
    assert_int_equal (tm_commands_record_decode (key, klen, rec, rlen, &shard, entity,
                                                 sizeof entity, &d), 0);
    assert_int_equal (shard, 77);
    assert_string_equal (entity, "v/5");
    assert_memory_equal (&d, &before[0], sizeof d);
}

static void
test_hostile_bytes (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    tm_desired_t good = {.value = 1, .tolerance = 0, .set_ms = 5, .version = 9, .set_seq = 3};
    snprintf (good.property, sizeof good.property, "setpoint");
    snprintf (good.set_by, sizeof good.set_by, "op");
    uint8_t rec[TM_COMMANDS_RECORD_MAX], key[256];
    size_t rlen = tm_commands_record_encode (&good, rec);
    size_t klen = tm_commands_key_encode (1, "v/6", 3, "setpoint", key);
    uint32_t shard;
    char entity[129];
    tm_desired_t d;
    //  Every truncation of the record and of the key is refused.
    for (size_t n = 0; n < rlen; n++)
        assert_int_equal (tm_commands_record_decode (key, klen, rec, n, &shard, entity,
                                                     sizeof entity, &d), -1);
    for (size_t n = 0; n < 9; n++)
        assert_int_equal (tm_commands_record_decode (key, n, rec, rlen, &shard, entity,
                                                     sizeof entity, &d), -1);
    //  Wrong format, a setter longer than the record, NaN, negative tolerance.
    uint8_t bad[TM_COMMANDS_RECORD_MAX];
    memcpy (bad, rec, rlen);
    bad[0] = 2;
    assert_int_equal (tm_commands_record_decode (key, klen, bad, rlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    memcpy (bad, rec, rlen);
    bad[42] = 0;        //  a NUL in the setter (found by the fuzzer)
    assert_int_equal (tm_commands_record_decode (key, klen, bad, rlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    memcpy (bad, rec, rlen);
    bad[41] = 200;
    assert_int_equal (tm_commands_record_decode (key, klen, bad, rlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    tm_desired_t nan = good;
    nan.value = NAN;
    size_t nlen = tm_commands_record_encode (&nan, bad);
    assert_int_equal (tm_commands_record_decode (key, klen, bad, nlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    nan = good;
    nan.tolerance = -1;
    nlen = tm_commands_record_encode (&nan, bad);
    assert_int_equal (tm_commands_record_decode (key, klen, bad, nlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    //  A key without its NUL, with an empty entity or property, with bad UTF-8.
    uint8_t k2[64] = {'S', 0, 0, 0, 1, 'D', 'a', 'b', 'c'};
    assert_int_equal (tm_commands_record_decode (k2, 9, rec, rlen, &shard, entity, sizeof entity,
                                                 &d), -1);
    uint8_t k3[] = {'S', 0, 0, 0, 1, 'D', 0, 'p'};
    assert_int_equal (tm_commands_record_decode (k3, sizeof k3, rec, rlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    uint8_t k4[] = {'S', 0, 0, 0, 1, 'D', 'e', 0};
    assert_int_equal (tm_commands_record_decode (k4, sizeof k4, rec, rlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    uint8_t k5[] = {'S', 0, 0, 0, 1, 'D', 0xff, 0xfe, 0, 'p'};
    assert_int_equal (tm_commands_record_decode (k5, sizeof k5, rec, rlen, &shard, entity,
                                                 sizeof entity, &d), -1);
    //  Random bytes never crash it.
    srand (7);
    for (int i = 0; i < 20000; i++) {
        uint8_t rk[80], rv[120];
        size_t kl = (size_t) rand () % sizeof rk, vl = (size_t) rand () % sizeof rv;
        for (size_t j = 0; j < kl; j++)
            rk[j] = (uint8_t) rand ();
        for (size_t j = 0; j < vl; j++)
            rv[j] = (uint8_t) rand ();
        if (kl > 6) {
            rk[0] = 'S';
            rk[5] = 'D';
        }
        if (vl > 0)
            rv[0] = 1;
        if (tm_commands_record_decode (rk, kl, rv, vl, &shard, entity, sizeof entity, &d) == 0) {
            assert_true (isfinite (d.value) && d.tolerance >= 0);
            assert_true (strlen (entity) > 0 && strlen (d.property) > 0);
        }
    }
    //  A damaged record on disk is skipped at load, counted, and the good
    //  one next to it still loads.
    assert_int_equal (tm_store_put (f->store, key, klen, rec, rlen, true), 0);
    size_t k6len = tm_commands_key_encode (1, "v/7", 3, "setpoint", k2);
    assert_int_equal (tm_store_put (f->store, k2, k6len, rec, 10, true), 0);
    s_close (f);
    s_open (f);
    size_t nbad = 0;
    assert_int_equal (tm_commands_load (f->cmds, S_SHARDS, &nbad), 1);
    assert_int_equal (nbad, 1);
    assert_non_null (tm_commands_find (f->cmds, "v/6"));
    assert_null (tm_commands_find (f->cmds, "v/7"));
    //  Without a map: one pass over every shard finds the same.
    s_close (f);
    s_open (f);
    assert_int_equal (tm_commands_load (f->cmds, 0, &nbad), 1);
    assert_int_equal (nbad, 1);
    assert_non_null (tm_commands_find (f->cmds, "v/6"));
}

static void
test_events (void **state)
{
    s_fix_t *f = (s_fix_t *) *state;
    zsock_t *pub = zsock_new_pub ("inproc://test-commands-events");
    zsock_t *sub = zsock_new_sub ("inproc://test-commands-events", NULL);
    assert_non_null (pub);
    assert_non_null (sub);
    //  Subscribed to v/8 exactly: v/80 is not ours.
    zmq_setsockopt (zsock_resolve (sub), ZMQ_SUBSCRIBE, "v/8", 4);
    zsock_set_rcvtimeo (sub, 2000);
    tm_commands_set_pub (f->cmds, pub);
    tm_command_outcome_t out;
    s_read (f, "v/8", "setpoint", 1, 100);
    assert_int_equal (s_set (f, "v/80", "setpoint", 5, 0, 1, &out), 0);
    assert_int_equal (s_set (f, "v/8", "setpoint", 5, 0, 1, &out), 0);
    s_read (f, "v/8", "setpoint", 5, 200);
    const char *kinds[] = {"set", "cleared"};
    uint64_t last = 0;
    for (int i = 0; i < 2; i++) {
        zmsg_t *msg = zmsg_recv (sub);
        assert_non_null (msg);
        assert_int_equal (zmsg_size (msg), 3);
        zframe_t *topic = zmsg_pop (msg);
        zframe_t *hdr_f = zmsg_pop (msg);
        zframe_t *body = zmsg_pop (msg);
        assert_int_equal (zframe_size (topic), 4);
        tm_header_t hdr;
        assert_int_equal (tm_header_decode (zframe_data (hdr_f), zframe_size (hdr_f), &hdr), 0);
        assert_int_equal (hdr.type, TWINMESH__MSG_TYPE__DELTA_EVENT);
        Twinmesh__DeltaEvent *ev =
            TM_UNPACK (DeltaEvent, delta_event, zframe_data (body), zframe_size (body));
        assert_non_null (ev);
        assert_string_equal (ev->kind, kinds[i]);
        assert_string_equal (ev->entity, "v/8");
        assert_non_null (ev->desired);
        assert_true (ev->desired->version > last);
        last = ev->desired->version;
        if (i == 1) {
            assert_true (ev->desired->reported);
            assert_true (ev->desired->in_sync);
        }
        tm_codec_free (&ev);
        zframe_destroy (&topic);
        zframe_destroy (&hdr_f);
        zframe_destroy (&body);
        zmsg_destroy (&msg);
    }
    tm_commands_set_pub (f->cmds, NULL);
    zsock_destroy (&sub);
    zsock_destroy (&pub);
}

int
main (void)
{
    zsys_init ();
    zsys_set_logstream (NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_set_repeat_and_clear, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_in_sync_unset_and_tolerance, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_model_checks, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_replay_idempotent, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_persistence_round_trip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_hostile_bytes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_events, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
