/*  test_catalog - unit tests for tm_catalog, the broker's model catalogue

    What twinctl model load and the workers rely on: each outcome of a put
    (stored, replaced, unchanged, conflict, older, malformed), that an
    acknowledged model survives a reopen of the store with its generation,
    that a refused or failed put leaves the store as it was, and that a
    damaged stored model stops the load instead of vanishing.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_catalog.h"
#include "tm_util.h"

typedef struct {
    char dir[64];                  //  Temporary directory, removed by teardown
    char path[96];                 //  The RocksDB inside it
    tm_store_t *store;             //  Open store
    tm_catalog_t *catalog;         //  Catalogue over store
} fixture_t;

static const char s_station_v1[] =
    "{\"name\": \"station\", \"version\": 1, \"description\": \"a station\","
    " \"properties\": {\"pm25\": {\"unit\": \"ug/m3\"}, \"no2\": {}}}";
//  Same content as v1 written differently (order, spacing, an x- field).
static const char s_station_v1_again[] =
    "{\"version\":1,\"x-note\":\"ignored\",\"name\":\"station\",\"description\":\"a station\","
    "\"properties\":{\"pm25\":{\"unit\":\"ug/m3\"},\"no2\":{}}}";
static const char s_station_v1_other[] =
    "{\"name\": \"station\", \"version\": 1, \"properties\": {\"pm25\": {\"unit\": \"%\"}}}";
static const char s_station_v2[] =
    "{\"name\": \"station\", \"version\": 2, \"properties\": {\"pm25\": {}, \"pm10\": {},"
    " \"no2\": {}}}";
static const char s_counter_v1[] =
    "{\"name\": \"counter\", \"version\": 1, \"properties\": {\"vehicles\": "
    "{\"type\": \"integer\"}}}";

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    snprintf (fx->dir, sizeof fx->dir, "/tmp/tm_test_catalog.XXXXXX");
    if (!mkdtemp (fx->dir))
        return -1;
    snprintf (fx->path, sizeof fx->path, "%s/db", fx->dir);
    fx->store = tm_store_open (fx->path);
    fx->catalog = fx->store? tm_catalog_new (fx->store): NULL;
    *state = fx;
    return fx->catalog? 0: -1;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    tm_catalog_destroy (&fx->catalog);
    tm_store_destroy (&fx->store);
    int rc = tm_util_rm_rf (fx->dir);
    free (fx);
    return rc;
}

//  Close and reopen store and catalogue, as a broker restart does.
static void
s_reopen (fixture_t *fx)
{
    tm_catalog_destroy (&fx->catalog);
    tm_store_destroy (&fx->store);
    fx->store = tm_store_open (fx->path);
    assert_non_null (fx->store);
    fx->catalog = tm_catalog_new (fx->store);
    assert_non_null (fx->catalog);
}

static int
s_put (fixture_t *fx, const char *text, tm_catalog_result_t *result, char *err)
{
    return tm_catalog_put (fx->catalog, text, strlen (text), result, err, TM_MODEL_ERR_SIZE);
}

static void
test_outcomes (void **state)
{
    fixture_t *fx = *state;
    tm_catalog_result_t r;
    char err[TM_MODEL_ERR_SIZE];
    assert_int_equal (tm_catalog_generation (fx->catalog), 0);

    assert_int_equal (s_put (fx, s_station_v1, &r, err), 0);
    assert_string_equal (r.name, "station");
    assert_int_equal (r.version, 1);
    assert_int_equal (r.previous, 0);
    assert_int_equal (r.generation, 1);

    assert_int_equal (s_put (fx, s_station_v1_again, &r, err), TM_CATALOG_E_UNCHANGED);
    assert_int_equal (r.generation, 1);

    assert_int_equal (s_put (fx, s_station_v1_other, &r, err), TM_CATALOG_E_CONFLICT);
    assert_string_equal (err, "station version 1 exists with different content: raise version");
    assert_string_equal (tm_catalog_get (fx->catalog, "station")->properties[0].unit, "ug/m3");

    assert_int_equal (s_put (fx, s_station_v2, &r, err), 0);
    assert_int_equal (r.previous, 1);
    assert_int_equal (r.generation, 2);
    assert_int_equal (tm_catalog_get (fx->catalog, "station")->nproperties, 3);

    assert_int_equal (s_put (fx, s_station_v1, &r, err), TM_CATALOG_E_OLDER);
    assert_string_equal (err, "station version 1 is older than the stored 2");
    assert_int_equal (tm_catalog_get (fx->catalog, "station")->version, 2);

    assert_int_equal (s_put (fx, s_counter_v1, &r, err), 0);
    const tm_models_t *list = tm_catalog_list (fx->catalog);
    assert_int_equal (tm_models_size (list), 2);
    assert_string_equal (tm_models_at (list, 0)->name, "counter");     //  name order
    assert_string_equal (tm_models_at (list, 1)->name, "station");
    assert_null (tm_catalog_get (fx->catalog, "nothing"));
    assert_int_equal (tm_catalog_generation (fx->catalog), 3);
}

static void
test_refused_input (void **state)
{
    fixture_t *fx = *state;
    tm_catalog_result_t r;
    char err[TM_MODEL_ERR_SIZE];
    const char *bad = "{\"name\": \"station\", \"version\": 1, \"properties\": "
                      "{\"pm25\": {\"valid\": {\"min\": \"zero\"}}}}";
    assert_int_equal (s_put (fx, bad, &r, err), TM_CATALOG_E_MALFORMED);
    assert_string_equal (err, "request: properties.pm25.valid.min: expected a number, "
                              "found string");
    assert_int_equal (s_put (fx, "not json", &r, err), TM_CATALOG_E_MALFORMED);
    assert_int_equal (tm_catalog_put (fx->catalog, NULL, 0, &r, err, sizeof err),
                      TM_CATALOG_E_MALFORMED);
    //  Over the size limit: refused before parsing.
    size_t big = TM_MODEL_MAX_TEXT + 1;
    char *text = malloc (big);
    assert_non_null (text);
    memset (text, ' ', big);
    assert_int_equal (tm_catalog_put (fx->catalog, text, big, &r, err, sizeof err),
                      TM_CATALOG_E_TOO_LARGE);
    free (text);
    assert_int_equal (tm_models_size (tm_catalog_list (fx->catalog)), 0);
    assert_int_equal (tm_catalog_generation (fx->catalog), 0);
}

static void
test_persistence (void **state)
{
    fixture_t *fx = *state;
    tm_catalog_result_t r;
    char err[TM_MODEL_ERR_SIZE];
    assert_int_equal (s_put (fx, s_station_v1, &r, err), 0);
    assert_int_equal (s_put (fx, s_station_v2, &r, err), 0);
    assert_int_equal (s_put (fx, s_counter_v1, &r, err), 0);
    char *canonical = strdup (tm_model_canonical (tm_catalog_get (fx->catalog, "station"), NULL));
    s_reopen (fx);
    assert_int_equal (tm_models_size (tm_catalog_list (fx->catalog)), 2);
    const tm_model_t *station = tm_catalog_get (fx->catalog, "station");
    assert_non_null (station);
    assert_int_equal (station->version, 2);
    assert_string_equal (tm_model_canonical (station, NULL), canonical);
    free (canonical);
    //  The generation goes on from where it was, not from the model count.
    assert_int_equal (tm_catalog_generation (fx->catalog), 3);
    assert_int_equal (s_put (fx, s_station_v2, &r, err), TM_CATALOG_E_UNCHANGED);
    assert_int_equal (s_put (fx, s_station_v1, &r, err), TM_CATALOG_E_OLDER);
}

static void
test_failed_write (void **state)
{
    fixture_t *fx = *state;
    tm_catalog_result_t r;
    char err[TM_MODEL_ERR_SIZE];
    assert_int_equal (s_put (fx, s_station_v1, &r, err), 0);
    tm_store_fail_after (fx->store, 1);
    assert_int_equal (s_put (fx, s_station_v2, &r, err), -1);
    assert_int_equal (tm_catalog_get (fx->catalog, "station")->version, 1);
    assert_int_equal (tm_catalog_generation (fx->catalog), 1);
    tm_store_fail_after (fx->store, 0);
    s_reopen (fx);
    assert_int_equal (tm_catalog_get (fx->catalog, "station")->version, 1);
    assert_int_equal (s_put (fx, s_station_v2, &r, err), 0);
}

static void
test_corrupt_store (void **state)
{
    fixture_t *fx = *state;
    tm_catalog_result_t r;
    char err[TM_MODEL_ERR_SIZE];
    assert_int_equal (s_put (fx, s_station_v1, &r, err), 0);
    tm_catalog_destroy (&fx->catalog);
    //  A damaged value under a model key: the load must refuse.
    const char *key = TM_CATALOG_PREFIX "station";
    assert_int_equal (tm_store_put (fx->store, key, strlen (key), "{\"name\": \"stat", 14, true),
                      0);
    assert_null (tm_catalog_new (fx->store));
    //  A valid model under another model's key is refused too.
    assert_int_equal (tm_store_put (fx->store, key, strlen (key), s_counter_v1,
                                    strlen (s_counter_v1), true), 0);
    assert_null (tm_catalog_new (fx->store));
    //  Put right, it loads again.
    assert_int_equal (tm_store_put (fx->store, key, strlen (key), s_station_v1,
                                    strlen (s_station_v1), true), 0);
    fx->catalog = tm_catalog_new (fx->store);
    assert_non_null (fx->catalog);
    assert_int_equal (tm_catalog_get (fx->catalog, "station")->version, 1);
    //  A damaged generation is refused as well.
    const char *gkey = TM_CATALOG_GENERATION_KEY;
    assert_int_equal (tm_store_put (fx->store, gkey, strlen (gkey), "x", 1, true), 0);
    tm_catalog_destroy (&fx->catalog);
    assert_null (tm_catalog_new (fx->store));
    assert_int_equal (tm_store_put (fx->store, gkey, strlen (gkey), "7", 1, true), 0);
    fx->catalog = tm_catalog_new (fx->store);
    assert_non_null (fx->catalog);
    assert_int_equal (tm_catalog_generation (fx->catalog), 7);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_outcomes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_refused_input, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_persistence, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_failed_write, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_corrupt_store, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
