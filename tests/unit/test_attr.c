/*  test_attr - attribute values from JSON text: the shapes accepted, typed,
    and the same answer from the fast path and from jansson's (inputs that
    differ only in what the fast path declines must agree)
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tm_attr.h"

static void
s_expect (const char *json, int rc, tm_expr_type_t type)
{
    tm_attr_t a;
    int got = tm_attr_parse (json, strlen (json), &a, NULL, 0);
    if (got != rc)
        fail_msg ("%s: rc %d, expected %d", json, got, rc);
    if (rc == 0 && a.type != type)
        fail_msg ("%s: type %d, expected %d", json, a.type, type);
    if (rc == 0) {
        //  What it prints reads back as the same value.
        char *text = tm_attr_json (&a);
        tm_attr_t b;
        assert_int_equal (tm_attr_parse (text, strlen (text), &b, NULL, 0), 0);
        assert_int_equal (b.type, a.type);
        if (a.type == TM_EXPR_STRING) {
            assert_int_equal (a.len, b.len);
            assert_memory_equal (a.str, b.str, a.len);
        }
        if (a.type == TM_EXPR_NUMBER)
            assert_true (a.num == b.num);
        if (a.type == TM_EXPR_LOCATION)
            assert_true (a.loc.lat == b.loc.lat && a.loc.lon == b.loc.lon);
        free (text);
        tm_attr_fini (&b);
    }
    tm_attr_fini (&a);
}

static void
test_shapes (void **state)
{
    (void) state;
    //  Strings: plain (fast path) and with escapes (jansson), the same text.
    s_expect ("\"milan/district/Brera\"", 0, TM_EXPR_STRING);
    s_expect ("  \"x\"  ", 0, TM_EXPR_STRING);
    s_expect ("\"a\\\"b\"", 0, TM_EXPR_STRING);
    s_expect ("\"caf\\u00e9\"", 0, TM_EXPR_STRING);
    s_expect ("\"\"", 0, TM_EXPR_STRING);
    //  Numbers, JSON grammar only.
    s_expect ("12.5", 0, TM_EXPR_NUMBER);
    s_expect ("-0", 0, TM_EXPR_NUMBER);
    s_expect ("1e3", 0, TM_EXPR_NUMBER);
    s_expect ("01", -1, TM_EXPR_NULL);
    s_expect ("0x10", -1, TM_EXPR_NULL);
    s_expect ("1.", -1, TM_EXPR_NULL);
    s_expect ("inf", -1, TM_EXPR_NULL);
    s_expect ("1e999", -1, TM_EXPR_NULL);
    s_expect ("true", 0, TM_EXPR_BOOL);
    s_expect ("false", 0, TM_EXPR_BOOL);
    s_expect ("null", 1, TM_EXPR_NULL);
    //  Locations, either order, in range.
    s_expect ("{\"lat\": 45.4642, \"lon\": 9.19}", 0, TM_EXPR_LOCATION);
    s_expect ("{\"lon\":9.19,\"lat\":45.4642}", 0, TM_EXPR_LOCATION);
    s_expect ("{\"lat\": 91, \"lon\": 0}", -1, TM_EXPR_NULL);
    s_expect ("{\"lat\": 1, \"lat\": 2}", -1, TM_EXPR_NULL);
    s_expect ("{\"lat\": 1}", -1, TM_EXPR_NULL);
    s_expect ("{\"lat\": 1, \"lon\": 2, \"x\": 3}", -1, TM_EXPR_NULL);
    s_expect ("{\"lat\": \"1\", \"lon\": 2}", -1, TM_EXPR_NULL);
    //  Tags.
    s_expect ("[\"roof\", \"test\"]", 0, TM_EXPR_STRING);
    s_expect ("[1]", -1, TM_EXPR_NULL);
    //  Not JSON, trailing garbage, invalid UTF-8.
    s_expect ("\"abc", -1, TM_EXPR_NULL);
    s_expect ("12 13", -1, TM_EXPR_NULL);
    s_expect ("\"\xff\"", -1, TM_EXPR_NULL);
    s_expect ("", -1, TM_EXPR_NULL);
    //  The fast path and jansson agree on a location's value.
    tm_attr_t a;
    assert_int_equal (tm_attr_parse ("{\"lat\":45.4642,\"lon\":9.19}", 26, &a, NULL, 0), 0);
    assert_true (a.loc.lat == 45.4642 && a.loc.lon == 9.19);
    //  Names.
    assert_true (tm_attr_name_valid ("district", 8));
    assert_false (tm_attr_name_valid ("9a", 2));
    assert_false (tm_attr_name_valid ("a-b", 3));
    assert_false (tm_attr_name_valid ("", 0));
}

int
main (void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test (test_shapes)};
    return cmocka_run_group_tests (tests, NULL, NULL);
}
