/*  test_wlog - the worker's log: commit, checkpoint, recovery, failures

    The invariant under test is the one acks rely on: a record is durable
    once commit returns 0, a failed commit leaves nothing behind, and
    recovery = stored twins + exactly the records after the checkpoint.
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

#include "tm_store.h"
#include "tm_twins.h"
#include "tm_util.h"
#include "tm_wire.h"
#include "tm_wlog.h"
#include "tm_wreplay.h"
#include "tm_wrestore.h"

static const uint8_t s_key[TM_SHARDMAP_KEY_BYTES] = "0123456789abcdef";

typedef struct {
    tm_twins_t *twins;
    uint64_t seqs[64];
    size_t nseqs;
} s_replay_t;

static void
s_apply_batch (tm_twins_t *twins, const uint8_t *data, size_t size)
{
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    while (tm_wire_next (&it, &r) == 1)
        tm_twins_apply (twins, &r, s_key, 64, 1000);
}

static void
s_on_record (void *arg, uint64_t seq, const uint8_t *data, size_t size)
{
    s_replay_t *rp = (s_replay_t *) arg;
    if (rp->nseqs < 64)
        rp->seqs[rp->nseqs++] = seq;
    s_apply_batch (rp->twins, data, size);
}

static size_t
s_batch (uint8_t *buf, size_t cap, const char *entity, int64_t ts)
{
    size_t n = tm_wire_encode (buf, cap, entity, "pm25", (double) ts / 10, ts, NULL);
    n += tm_wire_encode (buf + n, cap - n, entity, "no2", 1.5, ts, NULL);
    return n;
}

static void
test_commit_checkpoint_recover (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-wlog-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    assert_non_null (store);
    tm_wlog_t *wlog = tm_wlog_new (store, true);
    tm_twins_t *twins = tm_twins_new ();
    uint8_t buf[512];

    //  Three records, checkpoint, two more records, then "crash".
    for (int i = 1; i <= 3; i++) {
        size_t n = s_batch (buf, sizeof buf, "e-1", i * 1000);
        assert_int_equal (tm_wlog_stage (wlog, buf, n), (uint64_t) i);
    }
    assert_int_equal (tm_wlog_commit (wlog), 0);
    assert_int_equal (tm_wlog_last_seq (wlog), 3);
    for (int i = 1; i <= 3; i++) {
        size_t n = s_batch (buf, sizeof buf, "e-1", i * 1000);
        s_apply_batch (twins, buf, n);
    }
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_wlog_checkpoint_seq (wlog), 3);
    for (int i = 4; i <= 5; i++) {
        size_t n = s_batch (buf, sizeof buf, "e-2", i * 1000);
        tm_wlog_stage (wlog, buf, n);
    }
    assert_int_equal (tm_wlog_commit (wlog), 0);
    //  A commit that fails must leave nothing: numbers are reused.
    tm_store_fail_after (store, 1);
    size_t n = s_batch (buf, sizeof buf, "e-3", 9000);
    assert_int_equal (tm_wlog_stage (wlog, buf, n), 6);
    assert_int_equal (tm_wlog_commit (wlog), -1);
    assert_int_equal (tm_wlog_last_seq (wlog), 5);
    tm_store_fail_after (store, 0);
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&twins);
    tm_store_destroy (&store);

    //  Recovery: e-1 from the checkpoint, e-2 from records 4 and 5 only.
    store = tm_store_open (dir);
    wlog = tm_wlog_new (store, true);
    assert_non_null (wlog);
    assert_int_equal (tm_wlog_last_seq (wlog), 5);
    assert_int_equal (tm_wlog_checkpoint_seq (wlog), 3);
    s_replay_t rp = {.twins = tm_twins_new ()};
    size_t bad = 99;
    uint64_t skipped = 99;
    assert_int_equal (tm_wlog_recover (wlog, rp.twins, s_on_record, &rp, NULL, &bad, &skipped), 2);
    assert_int_equal (bad, 0);
    assert_int_equal (rp.nseqs, 2);
    assert_int_equal (rp.seqs[0], 4);
    assert_int_equal (rp.seqs[1], 5);
    tm_twin_t *e1 = tm_twins_find (rp.twins, "e-1", 3);
    tm_twin_t *e2 = tm_twins_find (rp.twins, "e-2", 3);
    assert_non_null (e1);
    assert_non_null (e2);
    assert_null (tm_twins_find (rp.twins, "e-3", 3));
    assert_int_equal (e1->props[0].count, 3);
    assert_int_equal (e1->props[0].an.ts_ms, 3000);
    assert_int_equal (e2->props[0].count, 2);
    //  Numbering continues after the last record.
    n = s_batch (buf, sizeof buf, "e-4", 10000);
    assert_int_equal (tm_wlog_stage (wlog, buf, n), 6);
    assert_int_equal (tm_wlog_commit (wlog), 0);
    //  A checkpoint trims the log: a second recovery replays nothing.
    s_apply_batch (rp.twins, buf, n);
    assert_int_equal (tm_wlog_checkpoint (wlog, rp.twins), 0);
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&rp.twins);
    tm_store_destroy (&store);

    store = tm_store_open (dir);
    wlog = tm_wlog_new (store, true);
    s_replay_t rp2 = {.twins = tm_twins_new ()};
    assert_int_equal (tm_wlog_recover (wlog, rp2.twins, s_on_record, &rp2, NULL, &bad, &skipped),
                      0);
    assert_int_equal (tm_twins_size (rp2.twins), 3);
    assert_int_equal (tm_wlog_last_seq (wlog), 6);
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&rp2.twins);
    tm_store_destroy (&store);
    assert_int_equal (tm_util_rm_rf (dir), 0);
}

//  A round written in steps, interrupted by a "crash" before its last step,
//  must leave a store from which recovery gives the same twins: shards
//  written early hold state past the old position, and replaying those
//  records again changes nothing.
static void
test_round_in_steps_and_crash (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-wlog-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    tm_twins_t *twins = tm_twins_new ();
    uint8_t buf[512];
    char entity[32];
    //  40 entities over many shards, 3 records each, checkpoint once.
    for (int step = 1; step <= 3; step++) {
        for (int e = 0; e < 40; e++) {
            snprintf (entity, sizeof entity, "round/e-%02d", e);
            size_t n = s_batch (buf, sizeof buf, entity, step * 1000);
            tm_wlog_stage (wlog, buf, n);
            s_apply_batch (twins, buf, n);
        }
        assert_int_equal (tm_wlog_commit (wlog), 0);
    }
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    uint64_t p1 = tm_wlog_checkpoint_seq (wlog);
    assert_int_equal (p1, tm_wlog_last_seq (wlog));
    //  More records; a new round writes one shard per step, and we stop
    //  after two steps, as a SIGKILL would.
    for (int e = 0; e < 40; e++) {
        snprintf (entity, sizeof entity, "round/e-%02d", e);
        size_t n = s_batch (buf, sizeof buf, entity, 4000);
        tm_wlog_stage (wlog, buf, n);
        s_apply_batch (twins, buf, n);
    }
    assert_int_equal (tm_wlog_commit (wlog), 0);
    bool done = true;
    assert_int_equal (tm_wlog_checkpoint_step (wlog, twins, 1, &done), 0);
    assert_false (done);
    assert_true (tm_wlog_checkpointing (wlog));
    assert_int_equal (tm_wlog_checkpoint_step (wlog, twins, 1, &done), 0);
    assert_false (done);
    assert_int_equal (tm_wlog_checkpoint_seq (wlog), p1);   //  not moved yet
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&twins);
    tm_store_destroy (&store);

    store = tm_store_open (dir);
    wlog = tm_wlog_new (store, false);
    //  Twice: as it is, and with the readings of the two shards the
    //  round stored left out by the log reader. The same twins either way;
    //  the second time, the apply path never sees those readings.
    s_replay_t rp = {.twins = tm_twins_new ()};
    size_t bad;
    uint64_t skipped = 99;
    uint8_t *blobs[2] = {NULL, NULL};
    size_t blob_size[2] = {0, 0};
    for (int pass = 0; pass < 2; pass++) {
        if (pass) {
            tm_wlog_destroy (&wlog);
            tm_twins_destroy (&rp.twins);
            wlog = tm_wlog_new (store, false);
            rp = (s_replay_t) {.twins = tm_twins_new ()};
        }
        tm_wreplay_filter_t filter = {.num_shards = 64};
        memcpy (filter.key, s_key, sizeof filter.key);
        assert_int_equal (tm_wlog_recover (wlog, rp.twins, s_on_record, &rp,
                                           pass? &filter: NULL, &bad, &skipped), 40);
        assert_int_equal (bad, 0);
        //  Two readings a record, of one entity: the stored shards' ones.
        size_t twins_covered = 0;
        for (int e = 0; e < 40; e++) {
            snprintf (entity, sizeof entity, "round/e-%02d", e);
            tm_twin_t *t = tm_twins_find (rp.twins, entity, strlen (entity));
            assert_non_null (t);
            assert_int_equal (t->props[0].count, 4);        //  not 5: no double count
            assert_int_equal (t->props[0].an.ts_ms, 4000);
            twins_covered += tm_twins_covered (rp.twins, t->shard) > p1;
        }
        assert_true (twins_covered > 0);
        assert_int_equal (skipped, pass? 2 * twins_covered: 0);
        //  What a checkpoint would store of every shard, to compare.
        size_t cap = 0;
        for (uint32_t sh = 0; sh < 64; sh++) {
            uint8_t *b = NULL;
            size_t bcap = 0;
            size_t n = tm_twins_encode_shard (rp.twins, sh, &b, &bcap);
            uint8_t *grown = realloc (blobs[pass], cap + n + 1);
            assert_non_null (grown);
            blobs[pass] = grown;
            memcpy (blobs[pass] + cap, b, n);
            cap += n;
            free (b);
        }
        blob_size[pass] = cap;
    }
    assert_int_equal (blob_size[1], blob_size[0]);
    assert_memory_equal (blobs[1], blobs[0], blob_size[0]);
    free (blobs[0]);
    free (blobs[1]);
    //  A finished round records its position and trims the log.
    assert_int_equal (tm_wlog_checkpoint (wlog, rp.twins), 0);
    assert_int_equal (tm_wlog_checkpoint_seq (wlog), tm_wlog_last_seq (wlog));
    assert_false (tm_wlog_checkpointing (wlog));
    tm_wlog_destroy (&wlog);
    tm_twins_destroy (&rp.twins);
    tm_store_destroy (&store);
    assert_int_equal (tm_util_rm_rf (dir), 0);
}

//  The log reader leaves out exactly the readings of shards covered up to
//  their record's seq: at the seq itself too, not one below it.
static void
test_replay_reader_filter (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-wlog-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    //  Three records: a, b, c, at seqs 1, 2, 3, each in a shard of its own.
    const char *entities[3] = {"filter/a", "filter/b", "filter/c"};
    uint32_t shards[3];
    uint8_t buf[512];
    for (int i = 0; i < 3; i++) {
        size_t n = s_batch (buf, sizeof buf, entities[i], 1000 * (i + 1));
        assert_int_equal (tm_wlog_stage (wlog, buf, n), (uint64_t) i + 1);
        shards[i] = tm_shardmap_hash (s_key, 64, entities[i], strlen (entities[i]));
    }
    assert_int_equal (tm_wlog_commit (wlog), 0);
    assert_true (shards[0] != shards[1] && shards[1] != shards[2] && shards[0] != shards[2]);
    uint64_t *covered = calloc (TM_SHARDMAP_MAX_SHARDS, sizeof *covered);
    assert_non_null (covered);
    covered[shards[0]] = 1;        //  a's record exactly: left out
    covered[shards[1]] = 1;        //  below b's record: kept
    covered[shards[2]] = 9;        //  past c's: left out
    tm_wreplay_filter_t filter = {.num_shards = 64, .covered = covered};
    memcpy (filter.key, s_key, sizeof filter.key);
    uint8_t start[10] = {'W', 'L', 0, 0, 0, 0, 0, 0, 0, 1};
    tm_wreplay_t *reader = tm_wreplay_new (store, (const uint8_t *) "WL", start, &filter);
    assert_non_null (reader);
    uint64_t seq;
    const uint8_t *data;
    size_t size;
    size_t kept[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal (tm_wreplay_next (reader, &seq, &data, &size), 1);
        assert_int_equal (seq, (uint64_t) i + 1);
        tm_wire_iter_t it;
        tm_reading_t r;
        tm_wire_iter_init (&it, data, size);
        kept[i] = 0;
        while (tm_wire_next (&it, &r) == 1) {
            assert_memory_equal (r.entity, entities[i], r.entity_len);
            kept[i]++;
        }
    }
    assert_int_equal (tm_wreplay_next (reader, &seq, &data, &size), 0);
    assert_int_equal (kept[0], 0);
    assert_int_equal (kept[1], 2);
    assert_int_equal (kept[2], 0);
    assert_int_equal (tm_wreplay_skipped (reader), 4);
    tm_wreplay_destroy (&reader);
    assert_null (reader);
    free (covered);
    tm_wlog_destroy (&wlog);
    tm_store_destroy (&store);
    assert_int_equal (tm_util_rm_rf (dir), 0);
}

//  The recovery loader: every shard's twins, in key order, from a store
//  that also holds history and a key that is neither; and a loader
//  destroyed while its helper waits on a full queue.
static void
test_loader (void **state)
{
    (void) state;
    char dir[] = "/tmp/tm-test-wlog-XXXXXX";
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    tm_wlog_t *wlog = tm_wlog_new (store, false);
    tm_twins_t *twins = tm_twins_new ();
    uint8_t buf[512];
    //  200 twins over the 64 shards, 130 readings for one (a closed chunk:
    //  history keys before its shard's twins).
    for (int i = 0; i < 200; i++) {
        char entity[32];
        snprintf (entity, sizeof entity, "load/e-%03d", i);
        for (int ts = 1; ts <= (i == 7? 130: 1); ts++)
            s_apply_batch (twins, buf, s_batch (buf, sizeof buf, entity, ts * 1000));
    }
    assert_int_equal (tm_wlog_checkpoint (wlog, twins), 0);
    assert_int_equal (tm_store_put (store, "S\0\0\0\3X", 6, "junk", 4, false), 0);
    bool has[64] = {false};
    size_t nshards = 0;
    for (uint32_t sh = 0; sh < 64; sh++)
        if (tm_twins_shard_first (twins, sh)) {
            has[sh] = true;
            nshards++;
        }
    assert_true (nshards > 8);     //  more than the queue holds
    tm_wrestore_t *loader = tm_wrestore_new (store);
    assert_non_null (loader);
    tm_twins_t *back = tm_twins_new ();
    uint32_t shard, last = 0;
    size_t got = 0;
    tm_twins_decoded_t *dec = NULL;
    int rc;
    while ((rc = tm_wrestore_next (loader, &shard, &dec)) == 1) {
        assert_true (shard < 64 && has[shard]);
        assert_true (got == 0 || shard > last);
        last = shard;
        assert_true (tm_twins_restore_decoded (back, shard, &dec) > 0);
        assert_null (dec);
        got++;
    }
    assert_int_equal (rc, 0);
    assert_int_equal (tm_wrestore_next (loader, &shard, &dec), 0);
    assert_int_equal (got, nshards);
    assert_int_equal (tm_wrestore_bad_keys (loader), 1);
    tm_wrestore_destroy (&loader);
    assert_null (loader);
    assert_int_equal (tm_twins_size (back), 200);
    assert_int_equal (tm_twins_find (back, "load/e-007", 10)->props[0].count, 130);
    tm_twins_destroy (&back);
    //  Destroyed early: the helper is stopped, what it decoded is freed.
    loader = tm_wrestore_new (store);
    assert_int_equal (tm_wrestore_next (loader, &shard, &dec), 1);
    tm_twins_decoded_destroy (&dec);
    usleep (50 * 1000);            //  let the helper fill its queue and wait
    tm_wrestore_destroy (&loader);
    tm_wrestore_destroy (&loader);
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
        cmocka_unit_test (test_commit_checkpoint_recover),
        cmocka_unit_test (test_round_in_steps_and_crash),
        cmocka_unit_test (test_loader),
        cmocka_unit_test (test_replay_reader_filter),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
