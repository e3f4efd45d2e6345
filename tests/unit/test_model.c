/*  test_model - unit tests for tm_model: the file format, its rules, the registry

    Models are typed by operators and shipped between processes as
    canonical text, so three things must hold: every example we ship
    loads, the canonical text gives back exactly the model it came from
    (checked field by field, not by re-serialising, which would hide a
    field the writer forgets), and every mistake is refused with the JSON
    path that holds it. The registry's version rules decide which model a
    whole cluster runs, so each outcome is checked.

    The repository root (for models/) is argv[1], else the compile-time
    TM_SOURCE_ROOT, else the current directory.
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
#include <unistd.h>

#include "tm_model.h"

#ifndef TM_SOURCE_ROOT
#define TM_SOURCE_ROOT "."
#endif

static const char *s_root = TM_SOURCE_ROOT;

static const char *s_examples[] = {
    "air_station", "traffic_counter", "parking_bay", "district",
    "epa_pm25_monitor", "uci_multisensor", "melbourne_pedestrian_counter",
};
#define EXAMPLES (sizeof s_examples / sizeof s_examples[0])

static tm_model_t *
s_load_example (const char *name)
{
    char path[1024], err[TM_MODEL_ERR_SIZE];
    snprintf (path, sizeof path, "%s/models/%s.json", s_root, name);
    tm_model_t *m = tm_model_load_file (path, err, sizeof err);
    if (!m)
        fail_msg ("%s", err);
    return m;
}

static tm_model_t *
s_parse (const char *text)
{
    char err[TM_MODEL_ERR_SIZE];
    tm_model_t *m = tm_model_parse (text, strlen (text), "t.json", err, sizeof err);
    if (!m)
        fail_msg ("%s", err);
    return m;
}

//  Parse text that must be refused; returns the message.
static const char *
s_refuse (const char *text)
{
    static char err[TM_MODEL_ERR_SIZE];
    tm_model_t *m = tm_model_parse (text, strlen (text), "t.json", err, sizeof err);
    if (m) {
        tm_model_destroy (&m);
        fail_msg ("accepted: %s", text);
    }
    return err;
}

//  ---------------------------------------------------------------------
//  Field-by-field equality, written against the header, not the writer

static void
s_assert_str (const char *a, const char *b)
{
    assert_non_null (a);
    assert_non_null (b);
    assert_string_equal (a, b);
}

//  Exact equality, infinities included (NaN never appears in a model).
static void
s_assert_num (double a, double b)
{
    assert_true (a == b);
}

static void
s_assert_value_equal (tm_model_attr_type_t type, const tm_model_value_t *a,
                      const tm_model_value_t *b)
{
    assert_int_equal (a->set, b->set);
    if (!a->set)
        return;
    if (type == TM_MODEL_ATTR_STRING)
        s_assert_str (a->string, b->string);
    else
    if (type == TM_MODEL_ATTR_NUMBER)
        s_assert_num (a->number, b->number);
    else
    if (type == TM_MODEL_ATTR_LOCATION) {
        s_assert_num (a->lat, b->lat);
        s_assert_num (a->lon, b->lon);
    }
    else {
        assert_int_equal (a->ntags, b->ntags);
        for (uint32_t i = 0; i < a->ntags; i++)
            s_assert_str (a->tags[i], b->tags[i]);
    }
}

static void
s_assert_model_equal (const tm_model_t *a, const tm_model_t *b)
{
    s_assert_str (a->name, b->name);
    assert_int_equal (a->version, b->version);
    s_assert_str (a->description, b->description);
    assert_int_equal (a->retention_ms, b->retention_ms);
    assert_int_equal (a->nproperties, b->nproperties);
    for (uint32_t i = 0; i < a->nproperties; i++) {
        const tm_model_property_t *p = &a->properties[i], *q = &b->properties[i];
        s_assert_str (p->name, q->name);
        assert_int_equal (p->index, i);
        assert_int_equal (q->index, i);
        assert_int_equal (p->type, q->type);
        s_assert_str (p->unit, q->unit);
        s_assert_str (p->description, q->description);
        s_assert_num (p->valid_min, q->valid_min);
        s_assert_num (p->valid_max, q->valid_max);
        s_assert_num (p->limit_lower, q->limit_lower);
        s_assert_num (p->limit_upper, q->limit_upper);
        assert_int_equal (p->expected_interval_ms, q->expected_interval_ms);
        s_assert_num (p->stale_factor, q->stale_factor);
        s_assert_num (p->ewma_alpha, q->ewma_alpha);
        assert_int_equal (p->stuck_run, q->stuck_run);
        assert_int_equal (p->anomaly_enabled, q->anomaly_enabled);
        s_assert_num (p->anomaly_threshold_sigma, q->anomaly_threshold_sigma);
        assert_int_equal (p->anomaly_warmup, q->anomaly_warmup);
        assert_int_equal (p->forecast_enabled, q->forecast_enabled);
        s_assert_num (p->forecast_alpha, q->forecast_alpha);
        s_assert_num (p->forecast_beta, q->forecast_beta);
        assert_int_equal (p->forecast_horizon, q->forecast_horizon);
        assert_int_equal (p->retention_ms, q->retention_ms);
    }
    assert_int_equal (a->nattributes, b->nattributes);
    for (uint32_t i = 0; i < a->nattributes; i++) {
        const tm_model_attribute_t *p = &a->attributes[i], *q = &b->attributes[i];
        s_assert_str (p->name, q->name);
        assert_int_equal (p->type, q->type);
        assert_int_equal (p->required, q->required);
        s_assert_str (p->description, q->description);
        s_assert_value_equal (p->type, &p->dflt, &q->dflt);
    }
    assert_int_equal (a->nrelationships, b->nrelationships);
    for (uint32_t i = 0; i < a->nrelationships; i++) {
        const tm_model_relationship_t *p = &a->relationships[i], *q = &b->relationships[i];
        s_assert_str (p->name, q->name);
        assert_int_equal (p->kind, q->kind);
        s_assert_str (p->target, q->target);
        s_assert_str (p->attribute, q->attribute);
        s_assert_str (p->description, q->description);
    }
    assert_int_equal (a->nderived, b->nderived);
    for (uint32_t i = 0; i < a->nderived; i++) {
        const tm_model_derived_t *p = &a->derived[i], *q = &b->derived[i];
        s_assert_str (p->name, q->name);
        s_assert_str (p->unit, q->unit);
        s_assert_str (p->description, q->description);
        s_assert_str (p->expression, q->expression);
    }
    assert_int_equal (a->naggregates, b->naggregates);
    for (uint32_t i = 0; i < a->naggregates; i++) {
        const tm_model_aggregate_t *p = &a->aggregates[i], *q = &b->aggregates[i];
        s_assert_str (p->property, q->property);
        assert_int_equal (p->functions, q->functions);
        assert_int_equal (p->nmodels, q->nmodels);
        for (uint32_t j = 0; j < p->nmodels; j++)
            s_assert_str (p->models[j], q->models[j]);
    }
}

//  parse (canonical (m)) == m, and the canonical text is a fixed point.
static void
s_assert_round_trip (const tm_model_t *m)
{
    size_t len = 0;
    const char *text = tm_model_canonical (m, &len);
    assert_non_null (text);
    assert_int_equal (len, strlen (text));
    char err[TM_MODEL_ERR_SIZE];
    tm_model_t *again = tm_model_parse (text, len, "canonical", err, sizeof err);
    if (!again)
        fail_msg ("canonical text does not parse: %s\n%s", err, text);
    s_assert_model_equal (m, again);
    assert_true (tm_model_equal (m, again));
    assert_string_equal (tm_model_canonical (again, NULL), text);
    //  Compact, and in the fixed field order.
    assert_true (strncmp (text, "{\"format\":1,\"name\":\"", 19) == 0);
    assert_null (strchr (text, '\n'));
    tm_model_destroy (&again);
}

//  ---------------------------------------------------------------------

static void
test_examples_load (void **state)
{
    (void) state;
    for (size_t i = 0; i < EXAMPLES; i++) {
        tm_model_t *m = s_load_example (s_examples[i]);
        //  One file per model, named after it.
        assert_string_equal (m->name, s_examples[i]);
        assert_true (m->version >= 1);
        assert_true (m->retention_ms > 0);
        s_assert_round_trip (m);
        tm_model_destroy (&m);
        assert_null (m);
    }
}

//  The shipped models say what the simulated city and the data sets send.
static void
test_examples_content (void **state)
{
    (void) state;
    tm_model_t *m = s_load_example ("air_station");
    const char *sim[] = {"pm25", "pm10", "no2", "temperature", "humidity"};
    assert_int_equal (m->nproperties, 5);
    for (size_t i = 0; i < 5; i++)
        assert_non_null (tm_model_property_find (m, sim[i], strlen (sim[i])));
    const tm_model_property_t *p = tm_model_property_find (m, "pm25", 4);
    assert_string_equal (p->unit, "ug/m3");
    s_assert_num (p->valid_min, 0);
    s_assert_num (p->valid_max, 1000);
    s_assert_num (p->limit_upper, 35);
    s_assert_num (p->limit_lower, -INFINITY);
    assert_int_equal (p->expected_interval_ms, 1000);
    const tm_model_relationship_t *r = tm_model_parent (m);
    assert_non_null (r);
    assert_string_equal (r->target, "district");
    assert_string_equal (r->attribute, "district");
    const tm_model_attribute_t *a = tm_model_attribute_find (m, "location");
    assert_non_null (a);
    assert_int_equal (a->type, TM_MODEL_ATTR_LOCATION);
    assert_true (a->required);
    assert_non_null (tm_model_derived_find (m, "pm_coarse"));
    tm_model_destroy (&m);

    m = s_load_example ("traffic_counter");
    p = tm_model_property_find (m, "vehicles", 8);
    assert_int_equal (p->type, TM_MODEL_INTEGER);
    assert_int_equal (tm_model_retention_ms (m, p), 2592000000LL);
    p = tm_model_property_find (m, "speed_kmh", 9);
    assert_int_equal (tm_model_retention_ms (m, p), m->retention_ms);
    tm_model_destroy (&m);

    m = s_load_example ("parking_bay");
    p = tm_model_property_find (m, "occupied", 8);
    assert_int_equal (p->type, TM_MODEL_BOOLEAN);
    assert_false (p->anomaly_enabled);
    assert_false (p->forecast_enabled);
    tm_model_destroy (&m);

    m = s_load_example ("district");
    assert_int_equal (m->nproperties, 0);
    assert_null (tm_model_parent (m));
    const tm_model_aggregate_t *g = tm_model_aggregate_find (m, "pm25");
    assert_non_null (g);
    assert_int_equal (g->functions, TM_MODEL_AGG_MEAN | TM_MODEL_AGG_MIN | TM_MODEL_AGG_MAX
                                        | TM_MODEL_AGG_COUNT_ANOMALOUS);
    assert_int_equal (g->nmodels, 2);
    g = tm_model_aggregate_find (m, "temperature");
    assert_int_equal (g->nmodels, 0);
    assert_null (g->models);
    tm_model_destroy (&m);

    //  UCI: 13 channels, each with its unit.
    m = s_load_example ("uci_multisensor");
    struct { const char *name, *unit; } uci[] = {
        {"co_gt", "mg/m3"}, {"pt08_s1_co", "1"}, {"nmhc_gt", "ug/m3"}, {"c6h6_gt", "ug/m3"},
        {"pt08_s2_nmhc", "1"}, {"nox_gt", "[ppb]"}, {"pt08_s3_nox", "1"}, {"no2_gt", "ug/m3"},
        {"pt08_s4_no2", "1"}, {"pt08_s5_o3", "1"}, {"t", "Cel"}, {"rh", "%"}, {"ah", "g/m3"},
    };
    assert_int_equal (m->nproperties, 13);
    for (size_t i = 0; i < 13; i++) {
        p = tm_model_property_find (m, uci[i].name, strlen (uci[i].name));
        if (!p)
            fail_msg ("uci_multisensor has no %s", uci[i].name);
        assert_string_equal (p->unit, uci[i].unit);
        assert_int_equal (p->expected_interval_ms, 3600000);
        //  The CSV's missing marker is never a good reading.
        assert_int_equal (tm_model_check_value (p, -200), TM_MODEL_Q_OUT_OF_RANGE);
    }
    tm_model_destroy (&m);

    //  EPA: small negative concentrations are real and good.
    m = s_load_example ("epa_pm25_monitor");
    p = tm_model_property_find (m, "pm25", 4);
    assert_int_equal (tm_model_check_value (p, -1.4), TM_MODEL_Q_GOOD);
    assert_int_equal (p->expected_interval_ms, 86400000);
    a = tm_model_attribute_find (m, "site_id");
    assert_int_equal (a->type, TM_MODEL_ATTR_STRING);
    tm_model_destroy (&m);

    m = s_load_example ("melbourne_pedestrian_counter");
    p = tm_model_property_find (m, "count", 5);
    assert_int_equal (p->type, TM_MODEL_INTEGER);
    assert_int_equal (tm_model_check_value (p, 26969), TM_MODEL_Q_GOOD);
    assert_int_equal (tm_model_check_value (p, -1), TM_MODEL_Q_OUT_OF_RANGE);
    tm_model_destroy (&m);
}

//  Every field given, every attribute type with a default.
static const char *s_full =
    "{\"format\": 1, \"name\": \"pump\", \"version\": 4294967295,\n"
    " \"description\": \"caf\xc3\xa9 \\\"quoted\\\" \\n line\", \"retention_ms\": 1000,\n"
    " \"properties\": {\n"
    "  \"flow\": {\"type\": \"number\", \"unit\": \"m3/h\", \"description\": \"d\",\n"
    "   \"valid\": {\"min\": -0.5, \"max\": 1e300}, \"limits\": {\"lower\": 0.1},\n"
    "   \"expected_interval_ms\": 31622400000, \"stale_factor\": 1, \"ewma_alpha\": 1,\n"
    "   \"stuck_run\": 2, \"anomaly\": {\"enabled\": false, \"threshold_sigma\":\n"
    "   0.30000000000000004,"
    "   \"warmup\": 0}, \"forecast\": {\"enabled\": true, \"alpha\": 0.1234567890123,\n"
    "   \"beta\": 0, \"horizon\": 10000}, \"retention_ms\": 316224000000},\n"
    "  \"running\": {\"type\": \"boolean\", \"anomaly\": {\"enabled\": true}},\n"
    "  \"starts\": {\"type\": \"integer\", \"valid\": {\"max\": 5}, \"limits\": {\"upper\": 4}}\n"
    " },\n"
    " \"attributes\": {\n"
    "  \"site\": {\"type\": \"string\", \"required\": true},\n"
    "  \"owner\": {\"type\": \"string\", \"default\": \"city\"},\n"
    "  \"power\": {\"type\": \"number\", \"default\": 7.5, \"description\": \"kW\"},\n"
    "  \"where\": {\"type\": \"location\", \"default\": {\"lat\": -37.8, \"lon\": 144.9}},\n"
    "  \"labels\": {\"type\": \"tags\", \"default\": [\"a\", \"b\"]},\n"
    "  \"none\": {\"type\": \"tags\", \"default\": []},\n"
    "  \"opt\": {\"type\": \"number\"}\n"
    " },\n"
    " \"relationships\": {\"station\": {\"kind\": \"parent\", \"target\": \"pump\",\n"
    "   \"attribute\": \"site\", \"description\": \"nested\"}},\n"
    " \"derived\": {\"flow_ls\": {\"unit\": \"l/s\", \"expression\": \"flow / 3.6\"}},\n"
    " \"aggregates\": {\"flow\": {\"functions\": [\"count_anomalous\", \"max\"],\n"
    "   \"models\": [\"pump\", \"well\"]}, \"level\": {\"functions\": [\"min\"]}}\n"
    "}";

static void
test_round_trip (void **state)
{
    (void) state;
    tm_model_t *m = s_parse (s_full);
    assert_int_equal (m->version, 4294967295u);
    assert_string_equal (m->description, "caf\xc3\xa9 \"quoted\" \n line");
    const tm_model_property_t *p = tm_model_property_find (m, "flow", 4);
    s_assert_num (p->valid_max, 1e300);
    s_assert_num (p->limit_upper, INFINITY);
    s_assert_num (p->forecast_alpha, 0.1234567890123);
    s_assert_num (p->anomaly_threshold_sigma, 0.1 + 0.2);      //  Needs 17 digits
    assert_false (p->anomaly_enabled);
    p = tm_model_property_find (m, "running", 7);
    assert_true (p->anomaly_enabled);          //  Asked for, though off by default
    assert_false (p->forecast_enabled);
    const tm_model_attribute_t *a = tm_model_attribute_find (m, "where");
    assert_true (a->dflt.set);
    s_assert_num (a->dflt.lat, -37.8);
    a = tm_model_attribute_find (m, "none");
    assert_true (a->dflt.set);
    assert_int_equal (a->dflt.ntags, 0);
    a = tm_model_attribute_find (m, "opt");
    assert_false (a->dflt.set);
    assert_false (a->required);
    const tm_model_aggregate_t *g = tm_model_aggregate_find (m, "flow");
    assert_int_equal (g->functions, TM_MODEL_AGG_MAX | TM_MODEL_AGG_COUNT_ANOMALOUS);
    s_assert_round_trip (m);

    //  Canonical text is deterministic: the same model from a file laid out
    //  differently (whitespace, extensions) gives the same bytes.
    tm_model_t *min = s_parse ("{\"name\":\"m\",\"version\":1}");
    tm_model_t *spaced = s_parse ("  {\n \"x-c\": [1, {\"y\": 2}], \"version\" : 1 ,"
                                  "\"name\" : \"m\", \"properties\": {}}\n");
    assert_true (tm_model_equal (min, spaced));
    s_assert_round_trip (min);
    assert_string_equal (tm_model_canonical (min, NULL),
                         "{\"format\":1,\"name\":\"m\",\"version\":1,\"description\":\"\","
                         "\"properties\":{},\"attributes\":{},"
                         "\"relationships\":{},\"derived\":{},\"aggregates\":{}}");
    assert_false (tm_model_equal (m, min));
    tm_model_destroy (&min);
    tm_model_destroy (&spaced);
    tm_model_destroy (&m);
}

static void
test_defaults (void **state)
{
    (void) state;
    tm_model_t *m = s_parse ("{\"name\": \"m\", \"version\": 1, \"properties\": {\"x\": {},"
                             " \"b\": {\"type\": \"boolean\"}}}");
    const tm_model_property_t *d = tm_model_default_property ();
    const tm_model_property_t *p = tm_model_property_find (m, "x", 1);
    assert_int_equal (p->type, TM_MODEL_NUMBER);
    assert_string_equal (p->unit, "");
    assert_string_equal (p->description, "");
    s_assert_num (p->valid_min, -INFINITY);
    s_assert_num (p->valid_max, INFINITY);
    s_assert_num (p->limit_lower, -INFINITY);
    s_assert_num (p->limit_upper, INFINITY);
    assert_int_equal (p->expected_interval_ms, 0);
    s_assert_num (p->stale_factor, 3);
    s_assert_num (p->ewma_alpha, 0.1);
    assert_int_equal (p->stuck_run, 0);
    assert_true (p->anomaly_enabled);
    s_assert_num (p->anomaly_threshold_sigma, 4);
    assert_int_equal (p->anomaly_warmup, 30);
    assert_true (p->forecast_enabled);
    s_assert_num (p->forecast_alpha, 0.3);
    s_assert_num (p->forecast_beta, 0.1);
    assert_int_equal (p->forecast_horizon, 10);
    assert_int_equal (p->retention_ms, 0);
    //  Neither the model nor the property says: 0, the worker's setting.
    assert_int_equal (m->retention_ms, 0);
    assert_int_equal (tm_model_retention_ms (m, p), 0);
    //  The generic property is the same set of defaults.
    s_assert_num (d->ewma_alpha, p->ewma_alpha);
    s_assert_num (d->anomaly_threshold_sigma, p->anomaly_threshold_sigma);
    assert_int_equal (d->forecast_horizon, p->forecast_horizon);
    assert_int_equal (tm_model_retention_ms (NULL, d), 0);
    p = tm_model_property_find (m, "b", 1);
    assert_false (p->anomaly_enabled);
    assert_false (p->forecast_enabled);
    assert_int_equal (m->nattributes + m->nrelationships + m->nderived + m->naggregates, 0);
    //  Reals are written with as few digits as give them back exactly.
    assert_non_null (strstr (tm_model_canonical (m, NULL),
                             "\"forecast\":{\"enabled\":true,\"alpha\":0.3,\"beta\":0.1,"));
    tm_model_destroy (&m);
}

//  "x-" keys are ignored at every level, including among names.
static void
test_extensions (void **state)
{
    (void) state;
    tm_model_t *m = s_parse (
        "{\"x-top\": 1, \"name\": \"m\", \"version\": 1,"
        " \"properties\": {\"x-not-a-property\": 5, \"p\": {\"x-why\": \"because\","
        "   \"valid\": {\"min\": 0, \"x-note\": null}, \"anomaly\": {\"x-a\": []}}},"
        " \"attributes\": {\"x-a\": {}, \"loc\": {\"type\": \"location\", \"x-b\": 1,"
        "   \"default\": {\"lat\": 1, \"lon\": 2, \"x-datum\": \"WGS84\"}}},"
        " \"relationships\": {\"x-r\": 0}, \"derived\": {\"x-d\": 0},"
        " \"aggregates\": {\"x-g\": 0, \"p\": {\"functions\": [\"mean\"], \"x-h\": 1}}}");
    assert_int_equal (m->nproperties, 1);
    assert_int_equal (m->nattributes, 1);
    assert_int_equal (m->naggregates, 1);
    assert_null (strstr (tm_model_canonical (m, NULL), "x-"));
    s_assert_round_trip (m);
    tm_model_destroy (&m);
}

//  ---------------------------------------------------------------------
//  Every rule, with its exact message

typedef struct {
    const char *json;              //  Model text ('' stands for '"')
    const char *error;             //  Exact message, with t.json as the source
} s_case_t;

#define H "{'name': 'm', 'version': 1, "
#define P(body) H "'properties': {'p': {" body "}}}"

static const s_case_t s_cases[] = {
    //  The document
    {"[]", "t.json: expected an object, found array"},
    {"{'version': 1}", "t.json: name: missing (required)"},
    {"{'name': 'm'}", "t.json: version: missing (required)"},
    {H "'nmae': 1}", "t.json: nmae: unknown field (did you mean \"name\"?)"},
    {H "'colour': 1}", "t.json: colour: unknown field (names starting with \"x-\" are ignored)"},
    {"{'name': 'm', 'version': 0}", "t.json: version: must be in [1, 4294967295], found 0"},
    {"{'name': 'm', 'version': 4294967296}",
     "t.json: version: must be in [1, 4294967295], found 4294967296"},
    {"{'name': 'm', 'version': 1.0}", "t.json: version: expected an integer, found real number"},
    {"{'name': 'm', 'version': '1'}", "t.json: version: expected an integer, found string"},
    {H "'format': 2}", "t.json: format: format 2 is not supported (this build reads format 1)"},
    {"{'name': 7, 'version': 1}", "t.json: name: expected a string, found integer"},
    {"{'name': '', 'version': 1}",
     "t.json: name: invalid name: 1 to 64 bytes of [A-Za-z0-9_], not starting with a digit"},
    {"{'name': 'air-station', 'version': 1}",
     "t.json: name: invalid name: 1 to 64 bytes of [A-Za-z0-9_], not starting with a digit"},
    {"{'name': '2nd', 'version': 1}",
     "t.json: name: invalid name: 1 to 64 bytes of [A-Za-z0-9_], not starting with a digit"},
    {"{'name': 'a12345678901234567890123456789012345678901234567890123456789012345', "
     "'version': 1}",
     "t.json: name: invalid name: 1 to 64 bytes of [A-Za-z0-9_], not starting with a digit"},
    {"{'name': 'generic', 'version': 1}",
     "t.json: name: \"generic\" is the built-in model for twins without one"},
    {H "'retention_ms': 0}", "t.json: retention_ms: must be in [1, 316224000000], found 0"},
    {H "'description': null}", "t.json: description: expected a string, found null"},
    {H "'properties': []}", "t.json: properties: expected an object, found array"},

    //  Properties
    {H "'properties': {'p m': {}}}",
     "t.json: properties.p m: invalid name: 1 to 64 bytes of [A-Za-z0-9_], not starting with "
     "a digit"},
    {H "'properties': {'p': 1}}", "t.json: properties.p: expected an object, found integer"},
    {P ("'unit': 5"), "t.json: properties.p.unit: expected a string, found integer"},
    {P ("'unit': '123456789012345678901234567890123'"),
     "t.json: properties.p.unit: longer than 32 bytes"},
    {P ("'type': 'float'"),
     "t.json: properties.p.type: expected one of number, integer, boolean, found \"float\""},
    {P ("'valid': {'min': 'zero'}"),
     "t.json: properties.p.valid.min: expected a number, found string"},
    {P ("'valid': {'min': 5, 'max': 1}"),
     "t.json: properties.p.valid: min (5) must be less than max (1)"},
    {P ("'valid': {'min': 5, 'max': 5}"),
     "t.json: properties.p.valid: min (5) must be less than max (5)"},
    {P ("'valid': {}"), "t.json: properties.p.valid: give min, max or both"},
    {P ("'valid': {'mni': 0}"),
     "t.json: properties.p.valid.mni: unknown field (did you mean \"min\"?)"},
    {P ("'valid': [0, 1]"), "t.json: properties.p.valid: expected an object, found array"},
    {P ("'type': 'boolean', 'valid': {'max': 1}"),
     "t.json: properties.p.valid: not allowed for a boolean property (always 0 or 1)"},
    {P ("'type': 'boolean', 'limits': {'upper': 1}"),
     "t.json: properties.p.limits: not allowed for a boolean property"},
    {P ("'limits': {'lower': 3, 'upper': 2}"),
     "t.json: properties.p.limits: lower (3) must be less than upper (2)"},
    {P ("'valid': {'min': 0, 'max': 100}, 'limits': {'upper': 200}"),
     "t.json: properties.p.limits.upper: outside the valid range [0, 100], found 200"},
    {P ("'valid': {'min': 0}, 'limits': {'lower': -1}"),
     "t.json: properties.p.limits.lower: outside the valid range [0, inf], found -1"},
    {P ("'expected_interval_ms': 0"),
     "t.json: properties.p.expected_interval_ms: must be in [1, 31622400000], found 0"},
    {P ("'expected_interval_ms': -1000"),
     "t.json: properties.p.expected_interval_ms: must be in [1, 31622400000], found -1000"},
    {P ("'expected_interval_ms': 1.5"),
     "t.json: properties.p.expected_interval_ms: expected an integer, found real number"},
    {P ("'stale_factor': 0.5"),
     "t.json: properties.p.stale_factor: must be in [1, 1000], found 0.5"},
    {P ("'ewma_alpha': 0"), "t.json: properties.p.ewma_alpha: must be in (0, 1], found 0"},
    {P ("'ewma_alpha': 1.01"), "t.json: properties.p.ewma_alpha: must be in (0, 1], found 1.01"},
    {P ("'stuck_run': 1"),
     "t.json: properties.p.stuck_run: must be 0 (off) or at least 2: one value is never a run"},
    {P ("'stuck_run': -2"), "t.json: properties.p.stuck_run: must be in [0, 1000000], found -2"},
    {P ("'anomaly': {'threshold_sigma': 0}"),
     "t.json: properties.p.anomaly.threshold_sigma: must be in (0, 100], found 0"},
    {P ("'anomaly': {'threshold_sigma': 3, 'warmup': -1}"),
     "t.json: properties.p.anomaly.warmup: must be in [0, 1000000], found -1"},
    {P ("'anomaly': {'enabled': 'yes'}"),
     "t.json: properties.p.anomaly.enabled: expected true or false, found string"},
    {P ("'anomaly': {'thresold_sigma': 3}"),
     "t.json: properties.p.anomaly.thresold_sigma: unknown field (did you mean "
     "\"threshold_sigma\"?)"},
    {P ("'anomaly': false"), "t.json: properties.p.anomaly: expected an object, found boolean"},
    {P ("'forecast': {'alpha': 0}"),
     "t.json: properties.p.forecast.alpha: must be in (0, 1], found 0"},
    {P ("'forecast': {'alpha': 1.5}"),
     "t.json: properties.p.forecast.alpha: must be in (0, 1], found 1.5"},
    {P ("'forecast': {'beta': -0.1}"),
     "t.json: properties.p.forecast.beta: must be in [0, 1], found -0.1"},
    {P ("'forecast': {'horizon': 0}"),
     "t.json: properties.p.forecast.horizon: must be in [1, 10000], found 0"},
    {P ("'retention_ms': 0"),
     "t.json: properties.p.retention_ms: must be in [1, 316224000000], found 0"},
    {P ("'units': 'm'"), "t.json: properties.p.units: unknown field (did you mean \"unit\"?)"},

    //  Attributes
    {H "'attributes': {'a': {}}}", "t.json: attributes.a.type: missing (required)"},
    {H "'attributes': {'a': {'type': 'geo'}}}",
     "t.json: attributes.a.type: expected one of string, number, location, tags, found "
     "\"geo\""},
    {H "'attributes': {'a': {'type': 'string', 'required': true, 'default': 'x'}}}",
     "t.json: attributes.a.default: not allowed for a required attribute"},
    {H "'attributes': {'a': {'type': 'string', 'required': 1}}}",
     "t.json: attributes.a.required: expected true or false, found integer"},
    {H "'attributes': {'a': {'type': 'number', 'default': '7'}}}",
     "t.json: attributes.a.default: expected a number, found string"},
    {H "'attributes': {'a': {'type': 'location', 'default': {'lat': 91, 'lon': 0}}}}",
     "t.json: attributes.a.default.lat: must be in [-90, 90], found 91"},
    {H "'attributes': {'a': {'type': 'location', 'default': {'lat': 0}}}}",
     "t.json: attributes.a.default.lon: missing (required)"},
    {H "'attributes': {'a': {'type': 'location', 'default': {'lat': 0, 'long': 0}}}}",
     "t.json: attributes.a.default.long: unknown field (did you mean \"lon\"?)"},
    {H "'attributes': {'a': {'type': 'location', 'default': [45, 9]}}}",
     "t.json: attributes.a.default: expected an object {\"lat\": ..., \"lon\": ...}, found "
     "array"},
    {H "'attributes': {'a': {'type': 'tags', 'default': ['x', 3]}}}",
     "t.json: attributes.a.default[1]: expected a string, found integer"},
    {H "'attributes': {'a': {'type': 'tags', 'default': ['x', 'x']}}}",
     "t.json: attributes.a.default[1]: duplicate tag \"x\""},
    {H "'attributes': {'a': {'type': 'tags', 'default': ['']}}}",
     "t.json: attributes.a.default[0]: a tag is 1 to 64 bytes"},
    {H "'attributes': {'a': {'type': 'tags', 'default': 'x'}}}",
     "t.json: attributes.a.default: expected an array of strings, found string"},

    //  Relationships
    {H "'relationships': {'up': {'kind': 'parent', 'target': 'd'}}}",
     "t.json: relationships.up.attribute: missing (required)"},
    {H "'relationships': {'up': {'kind': 'child', 'target': 'd', 'attribute': 'a'}}}",
     "t.json: relationships.up.kind: expected one of parent, found \"child\""},
    {H "'relationships': {'up': {'kind': 'parent', 'target': 'd-1', 'attribute': 'a'}}}",
     "t.json: relationships.up.target: invalid name: 1 to 64 bytes of [A-Za-z0-9_], not "
     "starting with a digit"},
    {H "'relationships': {'up': {'kind': 'parent', 'target': 'd', 'attribute': 'a'}}}",
     "t.json: relationships.up.attribute: no string attribute \"a\" in attributes"},
    {H "'attributes': {'a': {'type': 'number'}}, "
       "'relationships': {'up': {'kind': 'parent', 'target': 'd', 'attribute': 'a'}}}",
     "t.json: relationships.up.attribute: no string attribute \"a\" in attributes"},
    {H "'attributes': {'a': {'type': 'string'}}, "
       "'relationships': {'up': {'kind': 'parent', 'target': 'd', 'attribute': 'a'}, "
       "'up2': {'kind': 'parent', 'target': 'e', 'attribute': 'a'}}}",
     "t.json: relationships.up2.kind: a model has at most one parent (already "
     "relationships.up)"},

    //  Derived
    {H "'derived': {'d': {'unit': 'x'}}}", "t.json: derived.d.expression: missing (required)"},
    {H "'derived': {'d': {'expression': ''}}}", "t.json: derived.d.expression: must not be empty"},
    {H "'derived': {'d': {'expression': ' \\t\\n'}}}",
     "t.json: derived.d.expression: must not be empty"},
    {H "'properties': {'p': {}}, 'derived': {'p': {'expression': 'p * 2'}}}",
     "t.json: derived.p: name already used in properties"},

    //  Aggregates
    {H "'aggregates': {'p': {}}}", "t.json: aggregates.p.functions: missing (required)"},
    {H "'aggregates': {'p': {'functions': []}}}",
     "t.json: aggregates.p.functions: give at least one of mean, min, max, count_anomalous"},
    {H "'aggregates': {'p': {'functions': ['mean', 'median']}}}",
     "t.json: aggregates.p.functions[1]: expected one of mean, min, max, count_anomalous, "
     "found \"median\""},
    {H "'aggregates': {'p': {'functions': ['max', 'max']}}}",
     "t.json: aggregates.p.functions[1]: \"max\" given twice"},
    {H "'aggregates': {'p': {'functions': 'mean'}}}",
     "t.json: aggregates.p.functions: expected an array of strings, found string"},
    {H "'aggregates': {'p': {'functions': ['mean'], 'models': []}}}",
     "t.json: aggregates.p.models: empty: leave \"models\" out to aggregate children of any "
     "model"},
    {H "'aggregates': {'p': {'functions': ['mean'], 'models': ['a', 'a']}}}",
     "t.json: aggregates.p.models[1]: \"a\" given twice"},
    {H "'aggregates': {'p': {'functions': ['mean'], 'models': ['a b']}}}",
     "t.json: aggregates.p.models[0]: invalid name: 1 to 64 bytes of [A-Za-z0-9_], not "
     "starting with a digit"},
    {H "'properties': {'p_mean': {}}, 'aggregates': {'p': {'functions': ['mean']}}}",
     "t.json: aggregates.p: the series \"p_mean\" is already a name in properties"},
    {H "'aggregates': {'p': {'functions': ['max']}, 'p_max': {'functions': ['min']}},"
       " 'derived': {'p_max_min': {'expression': '1'}}}",
     "t.json: derived.p_max_min: name already used in aggregates"},
    {H "'aggregates': {'a123456789012345678901234567890123456789012345678901': "
       "{'functions': ['count_anomalous']}}}",
     "t.json: aggregates.a123456789012345678901234567890123456789012345678901: the series "
     "\"a123456789012345678901234567890123456789012345678901_count_anomalous\" would be "
     "longer than 64 bytes"},

    //  Syntax, as jansson reports it, with line and column
    {"{'name': 'm',", "t.json:1:13: string or '}' expected near end of file"},
    {H "'name': 'n'}", "t.json:1:34: duplicate object key near '\"name\"'"},
    {"", "t.json:1:0: '[' or '{' expected near end of file"},
    {"{} {}", "t.json:1:4: end of file expected near '{'"},
};

//  The table writes '' for ": JSON with double quotes is unreadable in C.
static char *
s_unquote (const char *text)
{
    char *out = strdup (text);
    assert_non_null (out);
    for (char *p = out; *p; p++)
        if (*p == '\'')
            *p = '"';
    return out;
}

static void
test_rules (void **state)
{
    (void) state;
    int failures = 0;
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        char *text = s_unquote (s_cases[i].json);
        char err[TM_MODEL_ERR_SIZE] = "";
        tm_model_t *m = tm_model_parse (text, strlen (text), "t.json", err, sizeof err);
        if (m) {
            print_error ("accepted: %s\n", text);
            tm_model_destroy (&m);
            failures++;
        }
        else
        if (strcmp (err, s_cases[i].error) != 0) {
            print_error ("case %zu: %s\n  expected: %s\n  got:      %s\n", i, text,
                         s_cases[i].error, err);
            failures++;
        }
        free (text);
    }
    assert_int_equal (failures, 0);
}

//  Limits on counts, built rather than written out.
//  Derived expressions compile at load: names are the model's series
//  (properties, aggregate series, derived properties above), results numbers.
static void
test_derived_expressions (void **state)
{
    (void) state;
    const char *ok = "{\"name\": \"m\", \"version\": 1, \"properties\": {\"a\": {}, \"b\": {}},"
                     " \"aggregates\": {\"a\": {\"functions\": [\"mean\"]}},"
                     " \"derived\": {\"d1\": {\"expression\": \"a - b\"},"
                     " \"d2\": {\"expression\": \"d1 * 2 + a_mean\"}}}";
    tm_model_t *m = s_parse (ok);
    assert_int_equal (m->nderived, 2);
    tm_model_destroy (&m);
    char text[512];
    static const struct {
        const char *expr;
        const char *why;
    } bad[] = {
        {"a - c", "unknown name"},
        {"d2 + 1", "unknown name"},      //  below, not above
        {"a >", "expected"},
        {"a > 1", "number"},             //  a boolean is not a series value
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf (text, sizeof text, "{\"name\": \"m\", \"version\": 1, \"properties\": "
                  "{\"a\": {}}, \"derived\": {\"d1\": {\"expression\": \"%s\"}, "
                  "\"d2\": {\"expression\": \"a\"}}}", bad[i].expr);
        const char *msg = s_refuse (text);
        assert_non_null (strstr (msg, "derived.d1.expression: "));
        if (!strstr (msg, bad[i].why))
            fail_msg ("%s: %s", bad[i].expr, msg);
    }
}

static void
test_limits (void **state)
{
    (void) state;
    char *text = malloc (1 << 16);
    assert_non_null (text);
    for (int n = 64; n <= 65; n++) {
        int used = snprintf (text, 1 << 16, "{\"name\": \"m\", \"version\": 1, \"properties\": {");
        for (int i = 0; i < n; i++)
            used += snprintf (text + used, (size_t) (1 << 16) - (size_t) used, "%s\"p%d\": {}",
                              i? ", ": "", i);
        snprintf (text + used, (size_t) (1 << 16) - (size_t) used, "}}");
        if (n == 64) {
            tm_model_t *m = s_parse (text);
            assert_int_equal (m->nproperties, 64);
            //  Every one of 64 names is found through the hash, and
            //  nothing else is.
            for (int i = 0; i < 64; i++) {
                char name[16];
                snprintf (name, sizeof name, "p%d", i);
                const tm_model_property_t *p = tm_model_property_find (m, name, strlen (name));
                assert_non_null (p);
                assert_string_equal (p->name, name);
                assert_int_equal (p->index, i);
            }
            assert_null (tm_model_property_find (m, "p64", 3));
            s_assert_round_trip (m);
            tm_model_destroy (&m);
        }
        else
            assert_string_equal (s_refuse (text),
                                 "t.json: properties: at most 64 properties, found 65");
    }
    //  The largest expression passes, one byte more does not (a number
    //  padded with spaces: it must also compile).
    for (int n = 1024; n <= 1025; n++) {
        int used = snprintf (text, 1 << 16,
                             "{\"name\": \"m\", \"version\": 1, \"derived\": {\"d\": "
                             "{\"expression\": \"");
        memset (text + used, ' ', (size_t) n);
        text[used] = '1';
        snprintf (text + used + n, 8, "\"}}}");
        if (n == 1024) {
            tm_model_t *m = s_parse (text);
            assert_int_equal (strlen (m->derived[0].expression), 1024);
            tm_model_destroy (&m);
        }
        else
            assert_string_equal (s_refuse (text),
                                 "t.json: derived.d.expression: longer than 1024 bytes");
    }
    //  Seventeen relationships.
    int used = snprintf (text, 1 << 16, "{\"name\": \"m\", \"version\": 1, \"relationships\": {");
    for (int i = 0; i < 17; i++)
        used += snprintf (text + used, (size_t) (1 << 16) - (size_t) used, "%s\"r%d\": {}",
                          i? ", ": "", i);
    snprintf (text + used, (size_t) (1 << 16) - (size_t) used, "}}");
    assert_string_equal (s_refuse (text),
                         "t.json: relationships: at most 16 relationships, found 17");
    free (text);

    //  A long unknown key is cut in the path, not copied whole.
    char key[300];
    memset (key, 'k', sizeof key - 1);
    key[sizeof key - 1] = 0;
    char doc[512];
    snprintf (doc, sizeof doc, "{\"name\": \"m\", \"version\": 1, \"%s\": 0}", key);
    const char *err = s_refuse (doc);
    assert_true (strlen (err) < 200);
    assert_non_null (strstr (err, "kkk...: unknown field"));
}

//  Lookup as the ingest path does it: a span of the reading's bytes.
static void
test_lookup (void **state)
{
    (void) state;
    tm_model_t *m = s_load_example ("air_station");
    const char *wire = "pm25pm10temperatureX";
    const tm_model_property_t *p = tm_model_property_find (m, wire, 4);
    assert_non_null (p);
    assert_string_equal (p->name, "pm25");
    assert_ptr_equal (p, &m->properties[p->index]);
    p = tm_model_property_find (m, wire + 4, 4);
    assert_string_equal (p->name, "pm10");
    p = tm_model_property_find (m, wire + 8, 11);
    assert_string_equal (p->name, "temperature");
    assert_null (tm_model_property_find (m, wire + 8, 12));     //  "temperatureX"
    assert_null (tm_model_property_find (m, "pm2", 3));         //  A prefix is not a match
    assert_null (tm_model_property_find (m, "pm250", 5));
    assert_null (tm_model_property_find (m, "PM25", 4));        //  Names are case-sensitive
    assert_null (tm_model_property_find (m, "", 0));
    char long_name[100];
    memset (long_name, 'a', sizeof long_name);
    assert_null (tm_model_property_find (m, long_name, sizeof long_name));
    //  Derived properties are not readings' properties.
    assert_null (tm_model_property_find (m, "pm_coarse", 9));
    assert_null (tm_model_attribute_find (m, "nosuch"));
    assert_null (tm_model_derived_find (m, "pm25"));
    assert_null (tm_model_aggregate_find (m, "pm25"));
    tm_model_destroy (&m);

    //  A model without properties finds nothing.
    m = s_parse ("{\"name\": \"m\", \"version\": 1}");
    assert_null (tm_model_property_find (m, "pm25", 4));
    assert_null (tm_model_parent (m));
    tm_model_destroy (&m);
}

static void
test_check_value (void **state)
{
    (void) state;
    tm_model_t *m = s_parse ("{\"name\": \"m\", \"version\": 1, \"properties\": {"
                             "\"n\": {\"valid\": {\"min\": -1, \"max\": 1}},"
                             "\"i\": {\"type\": \"integer\", \"valid\": {\"min\": 0}},"
                             "\"b\": {\"type\": \"boolean\"}, \"u\": {}}}");
    const tm_model_property_t *n = tm_model_property_find (m, "n", 1);
    const tm_model_property_t *i = tm_model_property_find (m, "i", 1);
    const tm_model_property_t *b = tm_model_property_find (m, "b", 1);
    const tm_model_property_t *u = tm_model_property_find (m, "u", 1);
    assert_int_equal (tm_model_check_value (n, -1), TM_MODEL_Q_GOOD);     //  Bounds included
    assert_int_equal (tm_model_check_value (n, 1), TM_MODEL_Q_GOOD);
    assert_int_equal (tm_model_check_value (n, 1.0000001), TM_MODEL_Q_OUT_OF_RANGE);
    assert_int_equal (tm_model_check_value (n, -2), TM_MODEL_Q_OUT_OF_RANGE);
    assert_int_equal (tm_model_check_value (n, NAN), TM_MODEL_Q_INVALID_TYPE);
    assert_int_equal (tm_model_check_value (i, 3), TM_MODEL_Q_GOOD);
    assert_int_equal (tm_model_check_value (i, 3.5), TM_MODEL_Q_INVALID_TYPE);
    assert_int_equal (tm_model_check_value (i, -1), TM_MODEL_Q_OUT_OF_RANGE);
    assert_int_equal (tm_model_check_value (b, 0), TM_MODEL_Q_GOOD);
    assert_int_equal (tm_model_check_value (b, 1), TM_MODEL_Q_GOOD);
    assert_int_equal (tm_model_check_value (b, 2), TM_MODEL_Q_INVALID_TYPE);
    assert_int_equal (tm_model_check_value (u, -1e300), TM_MODEL_Q_GOOD);
    assert_int_equal (tm_model_check_value (u, INFINITY), TM_MODEL_Q_INVALID_TYPE);
    assert_int_equal (tm_model_check_value (tm_model_default_property (), 1e300),
                      TM_MODEL_Q_GOOD);
    assert_string_equal (tm_model_quality_name (TM_MODEL_Q_GOOD), "good");
    assert_string_equal (tm_model_quality_name (TM_MODEL_Q_UNKNOWN_PROPERTY),
                         "unknown_property");
    assert_string_equal (tm_model_quality_name (TM_MODEL_Q_UNMODELLED), "unmodelled");
    assert_string_equal (tm_model_quality_name (TM_MODEL_Q_COUNT), "unknown");
    assert_string_equal (tm_model_type_name (TM_MODEL_BOOLEAN), "boolean");
    assert_string_equal (tm_model_attr_type_name (TM_MODEL_ATTR_LOCATION), "location");
    tm_model_destroy (&m);
}

static void
test_attribute_check (void **state)
{
    (void) state;
    tm_model_t *m = s_load_example ("air_station");
    const tm_model_attribute_t *loc = tm_model_attribute_find (m, "location");
    const tm_model_attribute_t *tags = tm_model_attribute_find (m, "tags");
    const tm_model_attribute_t *dist = tm_model_attribute_find (m, "district");
    char err[TM_MODEL_ERR_SIZE];
    const char *ok = "{\"lat\": 45.46, \"lon\": 9.19}";
    assert_int_equal (tm_model_attribute_check (loc, ok, strlen (ok), err, sizeof err), 0);
    const char *bad = "{\"lat\": 45.46, \"lon\": 190}";
    assert_int_equal (tm_model_attribute_check (loc, bad, strlen (bad), err, sizeof err), -1);
    assert_string_equal (err, "attribute: location.lon: must be in [-180, 180], found 190");
    const char *s = "\"milan/district/Brera\"";
    assert_int_equal (tm_model_attribute_check (dist, s, strlen (s), err, sizeof err), 0);
    assert_int_equal (tm_model_attribute_check (tags, s, strlen (s), err, sizeof err), -1);
    assert_string_equal (err, "attribute: tags: expected an array of strings, found string");
    assert_int_equal (tm_model_attribute_check (dist, "{", 1, err, sizeof err), -1);
    assert_non_null (strstr (err, "attribute: district: "));
    tm_model_destroy (&m);
}

//  ---------------------------------------------------------------------
//  The registry's version rules

static tm_model_t *
s_versioned (const char *name, int version, const char *unit)
{
    char text[256];
    snprintf (text, sizeof text,
              "{\"name\": \"%s\", \"version\": %d, \"properties\": {\"p\": {\"unit\": \"%s\"}}}",
              name, version, unit);
    return s_parse (text);
}

static void
test_registry (void **state)
{
    (void) state;
    tm_models_t *reg = tm_models_new ();
    assert_non_null (reg);
    char err[TM_MODEL_ERR_SIZE];
    uint32_t prev = 99;
    uint64_t gen = tm_models_generation (reg);
    assert_int_equal (tm_models_size (reg), 0);
    assert_null (tm_models_find (reg, "a", 1));

    //  New names are stored, listed in name order.
    tm_model_t *m = s_versioned ("zeta", 1, "m");
    assert_int_equal (tm_models_put (reg, &m, &prev, err, sizeof err), 0);
    assert_null (m);
    assert_int_equal (prev, 0);
    m = s_versioned ("alpha", 3, "m");
    assert_int_equal (tm_models_put (reg, &m, NULL, NULL, 0), 0);
    m = s_versioned ("mid", 1, "m");
    assert_int_equal (tm_models_put (reg, &m, NULL, err, sizeof err), 0);
    assert_int_equal (tm_models_size (reg), 3);
    assert_string_equal (tm_models_at (reg, 0)->name, "alpha");
    assert_string_equal (tm_models_at (reg, 1)->name, "mid");
    assert_string_equal (tm_models_at (reg, 2)->name, "zeta");
    assert_null (tm_models_at (reg, 3));
    assert_true (tm_models_generation (reg) > gen);
    gen = tm_models_generation (reg);

    //  Looked up by a span, as a reading carries the name.
    const char *wire = "alphabet";
    assert_null (tm_models_find (reg, wire, 8));
    assert_string_equal (tm_models_find (reg, wire, 5)->name, "alpha");
    assert_null (tm_models_find (reg, wire, 4));

    //  The same version and content again: unchanged, the held one stays.
    const tm_model_t *held = tm_models_find (reg, "alpha", 5);
    m = s_versioned ("alpha", 3, "m");
    assert_int_equal (tm_models_put (reg, &m, &prev, err, sizeof err), TM_MODELS_E_UNCHANGED);
    assert_null (m);
    assert_ptr_equal (tm_models_find (reg, "alpha", 5), held);
    assert_int_equal (tm_models_generation (reg), gen);

    //  The same version, different content: refused, with the remedy.
    m = s_versioned ("alpha", 3, "km");
    assert_int_equal (tm_models_put (reg, &m, &prev, err, sizeof err), TM_MODELS_E_CONFLICT);
    assert_null (m);
    assert_string_equal (err, "alpha: version 3 is already loaded with different content; "
                              "raise \"version\" to replace it");
    assert_string_equal (tm_models_find (reg, "alpha", 5)->properties[0].unit, "m");

    //  An older version: refused.
    m = s_versioned ("alpha", 2, "km");
    assert_int_equal (tm_models_put (reg, &m, &prev, err, sizeof err), TM_MODELS_E_OLDER);
    assert_string_equal (err, "alpha: version 2 is older than the loaded version 3");
    assert_int_equal (tm_models_generation (reg), gen);

    //  A higher version replaces, and says which it replaced.
    m = s_versioned ("alpha", 7, "km");
    assert_int_equal (tm_models_put (reg, &m, &prev, err, sizeof err), 0);
    assert_int_equal (prev, 3);
    assert_string_equal (err, "");
    assert_int_equal (tm_models_find (reg, "alpha", 5)->version, 7);
    assert_string_equal (tm_models_find (reg, "alpha", 5)->properties[0].unit, "km");
    assert_true (tm_models_generation (reg) > gen);
    assert_int_equal (tm_models_size (reg), 3);

    //  Remove.
    gen = tm_models_generation (reg);
    assert_int_equal (tm_models_remove (reg, "mid"), 0);
    assert_int_equal (tm_models_remove (reg, "mid"), -1);
    assert_int_equal (tm_models_size (reg), 2);
    assert_true (tm_models_generation (reg) > gen);
    assert_string_equal (tm_models_at (reg, 1)->name, "zeta");

    //  Many models keep their order and all stay findable.
    for (int i = 99; i >= 0; i--) {
        char name[16];
        snprintf (name, sizeof name, "m%02d", i);
        m = s_versioned (name, 1, "x");
        assert_int_equal (tm_models_put (reg, &m, NULL, NULL, 0), 0);
    }
    assert_int_equal (tm_models_size (reg), 102);
    for (size_t i = 1; i < tm_models_size (reg); i++)
        assert_true (strcmp (tm_models_at (reg, i - 1)->name, tm_models_at (reg, i)->name) < 0);
    assert_non_null (tm_models_find (reg, "m42", 3));

    tm_models_destroy (&reg);
    assert_null (reg);
    tm_models_destroy (&reg);
}

static void
test_registry_files (void **state)
{
    (void) state;
    tm_models_t *reg = tm_models_new ();
    char path[1024], err[TM_MODEL_ERR_SIZE];
    for (size_t i = 0; i < EXAMPLES; i++) {
        snprintf (path, sizeof path, "%s/models/%s.json", s_root, s_examples[i]);
        assert_int_equal (tm_models_load_file (reg, path, err, sizeof err), 0);
        assert_int_equal (tm_models_load_file (reg, path, err, sizeof err),
                          TM_MODELS_E_UNCHANGED);
    }
    assert_int_equal (tm_models_size (reg), EXAMPLES);
    //  Every parent relationship and aggregate names a shipped model.
    for (size_t i = 0; i < EXAMPLES; i++) {
        const tm_model_t *m = tm_models_at (reg, i);
        const tm_model_relationship_t *r = tm_model_parent (m);
        if (r)
            assert_non_null (tm_models_find (reg, r->target, strlen (r->target)));
        for (uint32_t g = 0; g < m->naggregates; g++)
            for (uint32_t j = 0; j < m->aggregates[g].nmodels; j++) {
                const char *child = m->aggregates[g].models[j];
                const tm_model_t *c = tm_models_find (reg, child, strlen (child));
                assert_non_null (c);
                //  ... and that model has the property aggregated.
                const char *prop = m->aggregates[g].property;
                assert_non_null (tm_model_property_find (c, prop, strlen (prop)));
            }
    }
    //  A file that does not parse, or is not there.
    assert_int_equal (tm_models_load_file (reg, "/nonexistent/m.json", err, sizeof err), -1);
    assert_string_equal (err, "/nonexistent/m.json: No such file or directory");
    tm_models_destroy (&reg);
}

//  ---------------------------------------------------------------------
//  Broken files: every one refused with a message, none crashes

static void
test_broken (void **state)
{
    (void) state;
    //  Every proper prefix of a real model is refused.
    char path[1024];
    snprintf (path, sizeof path, "%s/models/district.json", s_root);
    FILE *f = fopen (path, "rb");
    assert_non_null (f);
    static char text[1 << 16];
    size_t len = fread (text, 1, sizeof text, f);
    fclose (f);
    assert_true (len > 100);
    char err[TM_MODEL_ERR_SIZE];
    for (size_t n = 0; n < len; n++) {
        //  Trailing whitespace after the closing brace is still a model.
        if (strspn (text + n, " \t\r\n") == len - n)
            break;
        tm_model_t *m = tm_model_parse (text, n, "district.json", err, sizeof err);
        if (m)
            fail_msg ("prefix of %zu bytes accepted", n);
        assert_true (strncmp (err, "district.json", 13) == 0);
    }

    //  Hostile shapes: deep nesting, huge numbers, NUL, bad UTF-8.
    static char deep[40000];
    size_t d = (size_t) snprintf (deep, sizeof deep, "{\"name\": \"m\", \"version\": 1, \"x-d\": ");
    for (int i = 0; i < 10000; i++)
        deep[d++] = '[';
    for (int i = 0; i < 10000; i++)
        deep[d++] = ']';
    deep[d++] = '}';
    assert_null (tm_model_parse (deep, d, "deep", err, sizeof err));
    assert_string_equal (err, "deep:1:2083: maximum parsing depth reached near '['");
    const struct { const char *text; size_t len; } hostile[] = {
        {"{\"name\": \"m\", \"version\": 99999999999999999999}", 0},
        {"{\"name\": \"m\", \"version\": 1, \"properties\": {\"p\": {\"valid\": {\"min\": 1e999}}}}",
         0},
        {"{\"name\": \"m\\u0000x\", \"version\": 1}", 0},
        {"{\"name\": \"m\x00\", \"version\": 1}", 26},
        {"{\"name\": \"\xff\xfe\", \"version\": 1}", 0},
        {"{\"name\": \"\xed\xa0\x80\", \"version\": 1}", 0},
        {"{\"name\": \"m\", \"version\": 1, \"p\xc3\": 1}", 0},
        {"\xef\xbb\xbf{\"name\": \"m\", \"version\": 1}", 0},
        {"{\"name\": \"m\", \"version\": 1, \"properties\": {\"p\": {\"valid\": {\"min\": NaN}}}}",
         0},
        {"{\"name\": \"m\", \"version\": 1, \"attributes\": {\"a\": {\"type\": \"string\", "
         "\"default\": \"\\ud800\"}}}",
         0},
        {"{\"name\": \"m\", \"version\": -1}", 0},
        {"{\"name\": \"m\", \"version\": 1, \"properties\": {\"p\": {\"stuck_run\": "
         "9223372036854775807}}}",
         0},
        {"null", 0},
        {"\"model\"", 0},
        {"42", 0},
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        size_t n = hostile[i].len? hostile[i].len: strlen (hostile[i].text);
        err[0] = 0;
        tm_model_t *m = tm_model_parse (hostile[i].text, n, "h", err, sizeof err);
        if (m)
            fail_msg ("hostile input %zu accepted", i);
        assert_true (err[0] != 0);
    }
    //  No buffer for the message is fine; a tiny one is cut, not overrun.
    assert_null (tm_model_parse ("[]", 2, NULL, NULL, 0));
    char tiny[8];
    assert_null (tm_model_parse ("[]", 2, NULL, tiny, sizeof tiny));
    assert_string_equal (tiny, "model: ");
    assert_null (tm_model_parse (NULL, 0, "n", err, sizeof err));
    //  Over the size limit, before any parsing.
    assert_null (tm_model_parse ("{}", (size_t) TM_MODEL_MAX_TEXT + 1, "big", err, sizeof err));
    assert_string_equal (err, "big: larger than 1048576 bytes");
}

static void
test_load_file_limits (void **state)
{
    (void) state;
    char path[] = "/tmp/tm_test_model.XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    FILE *f = fdopen (fd, "wb");
    assert_non_null (f);
    //  Valid JSON padded past the limit: refused for size, not parsed.
    fputs ("{\"name\": \"m\", \"version\": 1}", f);
    for (int i = 0; i < TM_MODEL_MAX_TEXT; i++)
        fputc (' ', f);
    fclose (f);
    char err[TM_MODEL_ERR_SIZE];
    assert_null (tm_model_load_file (path, err, sizeof err));
    assert_non_null (strstr (err, ": larger than 1048576 bytes"));
    //  A directory is not a model file.
    assert_null (tm_model_load_file ("/tmp", err, sizeof err));
    assert_true (strncmp (err, "/tmp: ", 6) == 0);
    unlink (path);
}

int
main (int argc, char **argv)
{
    if (argc > 1)
        s_root = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_examples_load),
        cmocka_unit_test (test_examples_content),
        cmocka_unit_test (test_round_trip),
        cmocka_unit_test (test_defaults),
        cmocka_unit_test (test_extensions),
        cmocka_unit_test (test_rules),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_derived_expressions),
        cmocka_unit_test (test_lookup),
        cmocka_unit_test (test_check_value),
        cmocka_unit_test (test_attribute_check),
        cmocka_unit_test (test_registry),
        cmocka_unit_test (test_registry_files),
        cmocka_unit_test (test_broken),
        cmocka_unit_test (test_load_file_limits),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
