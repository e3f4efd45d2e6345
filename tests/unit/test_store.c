/*  test_store - unit tests for tm_store, the RocksDB wrapper

    The worker acks a reading only after tm_store_write returns 0, so the
    things checked here are the ones acks rely on: what was written reads
    back (also after reopening), a batch is all-or-nothing, prefix scans
    stop at the prefix, and an injected failure stays failed.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_store.h"
#include "tm_util.h"

typedef struct {
    char dir[64];           //  Temporary directory, removed by teardown
    char path[96];          //  The RocksDB inside it
    tm_store_t *store;
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    snprintf (fx->dir, sizeof fx->dir, "/tmp/tm_test_store.XXXXXX");
    if (!mkdtemp (fx->dir))
        return -1;
    snprintf (fx->path, sizeof fx->path, "%s/db", fx->dir);
    fx->store = tm_store_open (fx->path);
    *state = fx;
    return fx->store? 0: -1;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    tm_store_destroy (&fx->store);
    int rc = tm_util_rm_rf (fx->dir);
    free (fx);
    return rc;
}

static void
s_expect (tm_store_t *store, const char *key, const char *value)
{
    char *val = NULL;
    size_t vlen = 0;
    int rc = tm_store_get (store, key, strlen (key), &val, &vlen);
    if (!value) {
        assert_int_equal (rc, TM_STORE_E_NOT_FOUND);
        return;
    }
    assert_int_equal (rc, 0);
    assert_int_equal (vlen, strlen (value));
    assert_memory_equal (val, value, vlen);
    assert_int_equal (val[vlen], 0);        //  NUL-terminated for convenience
    free (val);
}

static void
test_put_get (void **state)
{
    fixture_t *fx = *state;
    s_expect (fx->store, "k1", NULL);
    assert_int_equal (tm_store_put (fx->store, "k1", 2, "v1", 2, false), 0);
    assert_int_equal (tm_store_put (fx->store, "k2", 2, "v2", 2, true), 0);
    s_expect (fx->store, "k1", "v1");
    s_expect (fx->store, "k2", "v2");
    assert_int_equal (tm_store_put (fx->store, "k1", 2, "v1b", 3, false), 0);
    s_expect (fx->store, "k1", "v1b");
    //  Binary keys and values, and an empty value, are fine.
    const uint8_t bkey[] = {0x00, 0xFF, 0x00};
    const uint8_t bval[] = {0x00, 0x01, 0x00, 0x02};
    assert_int_equal (tm_store_put (fx->store, bkey, 3, bval, 4, false), 0);
    char *val = NULL;
    size_t vlen = 0;
    assert_int_equal (tm_store_get (fx->store, bkey, 3, &val, &vlen), 0);
    assert_int_equal (vlen, 4);
    assert_memory_equal (val, bval, 4);
    free (val);
    assert_int_equal (tm_store_put (fx->store, "empty", 5, "", 0, false), 0);
    s_expect (fx->store, "empty", "");
    assert_int_equal (tm_store_writes (fx->store), 5);
}

static void
test_batch_and_delete_range (void **state)
{
    fixture_t *fx = *state;
    tm_store_batch_t *batch = tm_store_batch_new ();
    assert_non_null (batch);
    assert_int_equal (tm_store_batch_count (batch), 0);
    char key[16], val[16];
    for (int i = 0; i < 10; i++) {
        snprintf (key, sizeof key, "s%02d", i);
        snprintf (val, sizeof val, "v%d", i);
        tm_store_batch_put (batch, key, strlen (key), val, strlen (val));
    }
    assert_int_equal (tm_store_batch_count (batch), 10);
    //  Nothing is visible before the write.
    s_expect (fx->store, "s00", NULL);
    assert_int_equal (tm_store_write (fx->store, batch, true), 0);
    s_expect (fx->store, "s00", "v0");
    s_expect (fx->store, "s09", "v9");

    //  Delete [s03, s07): the end is exclusive.
    tm_store_batch_clear (batch);
    assert_int_equal (tm_store_batch_count (batch), 0);
    tm_store_batch_delete_range (batch, "s03", 3, "s07", 3);
    tm_store_batch_put (batch, "s05", 3, "again", 5);    //  after the delete: survives
    assert_int_equal (tm_store_write (fx->store, batch, false), 0);
    s_expect (fx->store, "s02", "v2");
    s_expect (fx->store, "s03", NULL);
    s_expect (fx->store, "s04", NULL);
    s_expect (fx->store, "s05", "again");
    s_expect (fx->store, "s06", NULL);
    s_expect (fx->store, "s07", "v7");
    tm_store_batch_destroy (&batch);
    assert_null (batch);
    tm_store_batch_destroy (&batch);
}

static void
test_iterate_prefix (void **state)
{
    fixture_t *fx = *state;
    const char *keys[] = {"a", "b", "b\x01", "b1", "b2", "b2x", "c", "ba"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_int_equal (tm_store_put (fx->store, keys[i], strlen (keys[i]), keys[i],
                                        strlen (keys[i]), false),
                          0);
    //  Keys starting with "b", in byte order, nothing else.
    const char *want[] = {"b", "b\x01", "b1", "b2", "b2x", "ba"};
    tm_store_iter_t *it = tm_store_iter_new (fx->store, "b", 1);
    assert_non_null (it);
    const char *k, *v;
    size_t klen, vlen, n = 0;
    while (tm_store_iter_next (it, &k, &klen, &v, &vlen)) {
        assert_true (n < 6);
        assert_int_equal (klen, strlen (want[n]));
        assert_memory_equal (k, want[n], klen);
        assert_int_equal (vlen, klen);
        assert_memory_equal (v, want[n], vlen);
        n++;
    }
    assert_int_equal (n, 6);
    assert_false (tm_store_iter_next (it, &k, &klen, &v, &vlen));
    tm_store_iter_destroy (&it);
    assert_null (it);

    it = tm_store_iter_new (fx->store, "b2", 2);
    n = 0;
    while (tm_store_iter_next (it, &k, &klen, &v, &vlen))
        n++;
    assert_int_equal (n, 2);
    tm_store_iter_destroy (&it);

    it = tm_store_iter_new (fx->store, "zz", 2);
    assert_false (tm_store_iter_next (it, &k, &klen, &v, &vlen));
    tm_store_iter_destroy (&it);

    //  The empty prefix is everything.
    it = tm_store_iter_new (fx->store, "", 0);
    n = 0;
    while (tm_store_iter_next (it, &k, &klen, &v, &vlen))
        n++;
    assert_int_equal (n, 8);
    tm_store_iter_destroy (&it);
}

static void
test_fail_after (void **state)
{
    fixture_t *fx = *state;
    tm_store_batch_t *batch = tm_store_batch_new ();
    tm_store_batch_put (batch, "b", 1, "1", 1);
    //  The 3rd write from now fails, and so does every one after it.
    tm_store_fail_after (fx->store, 3);
    assert_int_equal (tm_store_put (fx->store, "w1", 2, "1", 1, false), 0);
    assert_int_equal (tm_store_write (fx->store, batch, false), 0);
    assert_int_equal (tm_store_put (fx->store, "w3", 2, "1", 1, false), -1);
    assert_int_equal (tm_store_write (fx->store, batch, true), -1);
    assert_int_equal (tm_store_put (fx->store, "w5", 2, "1", 1, true), -1);
    //  A failed write wrote nothing; earlier ones are intact.
    s_expect (fx->store, "w1", "1");
    s_expect (fx->store, "w3", NULL);
    s_expect (fx->store, "w5", NULL);
    assert_int_equal (tm_store_writes (fx->store), 2);
    //  Turned off, writes work again.
    tm_store_fail_after (fx->store, 0);
    assert_int_equal (tm_store_put (fx->store, "w6", 2, "1", 1, false), 0);
    s_expect (fx->store, "w6", "1");
    //  n = 1 fails the very next write.
    tm_store_fail_after (fx->store, 1);
    assert_int_equal (tm_store_put (fx->store, "w7", 2, "1", 1, false), -1);
    tm_store_fail_after (fx->store, 0);
    tm_store_batch_destroy (&batch);
}

static void
test_reopen (void **state)
{
    fixture_t *fx = *state;
    tm_store_batch_t *batch = tm_store_batch_new ();
    tm_store_batch_put (batch, "log/1", 5, "first", 5);
    tm_store_batch_put (batch, "log/2", 5, "second", 6);
    assert_int_equal (tm_store_write (fx->store, batch, true), 0);
    assert_int_equal (tm_store_put (fx->store, "latest", 6, "x", 1, false), 0);
    tm_store_batch_destroy (&batch);
    tm_store_destroy (&fx->store);
    assert_null (fx->store);
    tm_store_destroy (&fx->store);

    fx->store = tm_store_open (fx->path);
    assert_non_null (fx->store);
    s_expect (fx->store, "log/1", "first");
    s_expect (fx->store, "log/2", "second");
    s_expect (fx->store, "latest", "x");
    assert_int_equal (tm_store_writes (fx->store), 0);   //  counts since open

    //  A second open of the same path is refused (RocksDB's lock), not
    //  two writers on one log.
    assert_null (tm_store_open (fx->path));
}

//  A store opened holding its compactions reads and writes as any other,
//  and lets them go once (again: nothing to do).
static void
test_hold_compactions (void **state)
{
    fixture_t *fx = *state;
    tm_store_destroy (&fx->store);
    tm_store_options_t opts = {.hold_compactions = true};
    fx->store = tm_store_open_with (fx->path, &opts);
    assert_non_null (fx->store);
    assert_int_equal (tm_store_put (fx->store, "k", 1, "v", 1, false), 0);
    s_expect (fx->store, "k", "v");
    assert_int_equal (tm_store_release_compactions (fx->store), 0);
    assert_int_equal (tm_store_release_compactions (fx->store), 0);
    assert_int_equal (tm_store_compact (fx->store), 0);
    s_expect (fx->store, "k", "v");
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_put_get, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_batch_and_delete_range, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_iterate_prefix, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fail_after, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_reopen, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_hold_compactions, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
