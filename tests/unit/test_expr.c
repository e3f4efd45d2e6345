/*  test_expr - unit tests for tm_expr, the expression language

    The evaluator is shared by every query filter and every derived
    property, and its text and bytes come from the network, so it is
    checked from both sides: what it must compute (precedence, every
    operator and function, SQL's three-valued logic, geo functions against
    an independent formula) and what it must refuse (type errors, broken
    syntax with the position and the expectation, limits, corrupt bytes).
    Round trips tie the printer, the parser and the serialiser together.
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

#include "tm_expr.h"

//  The test schema: name -> slot and type.
static const struct {
    const char *name;
    uint32_t slot;
    tm_expr_type_t type;
} s_schema[] = {
    {"pm25", 0, TM_EXPR_NUMBER},       {"model", 1, TM_EXPR_STRING},
    {"temperature", 2, TM_EXPR_NUMBER}, {"humidity", 3, TM_EXPR_NUMBER},
    {"occupied", 4, TM_EXPR_NUMBER},   {"capacity", 5, TM_EXPR_NUMBER},
    {"location", 6, TM_EXPR_LOCATION}, {"district", 7, TM_EXPR_STRING},
    {"stale", 8, TM_EXPR_BOOL},        {"anomalous", 9, TM_EXPR_BOOL},
    {"a", 10, TM_EXPR_BOOL},           {"b", 11, TM_EXPR_BOOL},
    {"c", 12, TM_EXPR_BOOL},           {"x", 13, TM_EXPR_NUMBER},
    {"y", 14, TM_EXPR_NUMBER},         {"z", 15, TM_EXPR_NUMBER},
    {"s", 16, TM_EXPR_STRING},         {"any", 17, TM_EXPR_ANY},
    {"location.lat", 18, TM_EXPR_NUMBER}, {"odd name", 19, TM_EXPR_NUMBER},
    {"n", 20, TM_EXPR_NUMBER},         {"from", 21, TM_EXPR_NUMBER},
    {"abs", 22, TM_EXPR_NUMBER},       {"t", 23, TM_EXPR_STRING},
};
#define NSLOTS 24

static int
s_resolve (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    (void) user;
    for (size_t i = 0; i < sizeof s_schema / sizeof s_schema[0]; i++)
        if (strlen (s_schema[i].name) == len && memcmp (s_schema[i].name, name, len) == 0) {
            out->slot = s_schema[i].slot;
            out->type = s_schema[i].type;
            return 0;
        }
    return -1;
}

static const tm_expr_options_t s_opts = {s_resolve, NULL, NULL, TM_EXPR_ANY};

//  Default values: a twin with everything set.
static void
s_values (tm_expr_value_t *v)
{
    for (int i = 0; i < NSLOTS; i++)
        v[i] = tm_expr_null ();
    v[0] = tm_expr_number (42);
    v[1] = tm_expr_string ("air_station", 11);
    v[2] = tm_expr_number (30);
    v[3] = tm_expr_number (60);
    v[4] = tm_expr_number (45);
    v[5] = tm_expr_number (120);
    v[6] = tm_expr_location (45.4641, 9.1919);
    v[7] = tm_expr_string ("Centro", 6);
    v[8] = tm_expr_bool (false);
    v[9] = tm_expr_bool (true);
    v[10] = tm_expr_bool (true);
    v[11] = tm_expr_bool (false);
    v[12] = tm_expr_null ();
    v[13] = tm_expr_number (3);
    v[14] = tm_expr_number (4);
    v[15] = tm_expr_number (-2.5);
    v[16] = tm_expr_string ("it's", 4);
    v[17] = tm_expr_number (7);
    v[18] = tm_expr_number (45.4641);
    v[19] = tm_expr_number (1);
    v[23] = tm_expr_string ("", 0);
}

static tm_expr_t *
s_compile (const char *text)
{
    tm_expr_error_t err;
    tm_expr_t *e = tm_expr_compile (text, &s_opts, &err);
    if (!e)
        fail_msg ("compile '%s': %s", text, err.message);
    return e;
}

static tm_expr_value_t
s_eval_with (const char *text, const tm_expr_value_t *values)
{
    tm_expr_t *e = s_compile (text);
    tm_expr_value_t r;
    tm_expr_eval (e, values, NSLOTS, &r);
    //  Strings in r may borrow from e: callers compare before this test
    //  ends, so keep e alive by leaking it into a small ring.
    static tm_expr_t *keep[16];
    static unsigned next;
    tm_expr_destroy (&keep[next % 16]);
    keep[next++ % 16] = e;
    return r;
}

static tm_expr_value_t
s_eval (const char *text)
{
    tm_expr_value_t v[NSLOTS];
    s_values (v);
    return s_eval_with (text, v);
}

static void
s_expect_num (const char *text, double want)
{
    tm_expr_value_t r = s_eval (text);
    if (r.type != TM_EXPR_NUMBER)
        fail_msg ("'%s': expected number %.17g, got %s", text, want, tm_expr_type_name (r.type));
    if (!(fabs (r.num - want) <= 1e-9 * fmax (1, fabs (want))))
        fail_msg ("'%s': expected %.17g, got %.17g", text, want, r.num);
}

static void
s_expect_bool (const char *text, bool want)
{
    tm_expr_value_t r = s_eval (text);
    if (r.type != TM_EXPR_BOOL || r.b != want)
        fail_msg ("'%s': expected %s, got %s %d", text, want? "true": "false",
                  tm_expr_type_name (r.type), r.type == TM_EXPR_BOOL? r.b: -1);
}

static void
s_expect_null (const char *text)
{
    tm_expr_value_t r = s_eval (text);
    if (r.type != TM_EXPR_NULL)
        fail_msg ("'%s': expected null, got %s", text, tm_expr_type_name (r.type));
}

static void
s_expect_string (const char *text, const char *want)
{
    tm_expr_value_t r = s_eval (text);
    if (r.type != TM_EXPR_STRING || r.len != strlen (want) || memcmp (r.str, want, r.len) != 0)
        fail_msg ("'%s': expected '%s'", text, want);
}

static void
s_expect_print (const char *text, int flags, const char *want)
{
    tm_expr_t *e = s_compile (text);
    char *printed = tm_expr_print (e, flags);
    assert_non_null (printed);
    if (strcmp (printed, want) != 0)
        fail_msg ("'%s': printed '%s', expected '%s'", text, printed, want);
    //  And the printed text reads back as the same expression.
    tm_expr_t *again = s_compile (printed);
    char *reprinted = tm_expr_print (again, flags);
    assert_string_equal (reprinted, printed);
    free (reprinted);
    free (printed);
    tm_expr_destroy (&again);
    tm_expr_destroy (&e);
}

static void
s_expect_error (const char *text, int code, unsigned column, const char *message)
{
    tm_expr_error_t err;
    tm_expr_t *e = tm_expr_compile (text, &s_opts, &err);
    if (e)
        fail_msg ("'%s' compiled, expected an error", text);
    if (err.code != code || err.column != column || strcmp (err.message, message) != 0)
        fail_msg ("'%s':\n   got code %d column %u \"%s\"\n  want code %d column %u \"%s\"", text,
                  err.code, err.column, err.message, code, column, message);
}

//  ---------------------------------------------------------------------

static void
test_precedence (void **state)
{
    (void) state;
    //  How the text groups, shown fully parenthesised.
    const char *table[][2] = {
        {"x + y * z", "(x + (y * z))"},
        {"x * y + z", "((x * y) + z)"},
        {"x - y - z", "((x - y) - z)"},
        {"x - (y - z)", "(x - (y - z))"},
        {"x / y / z", "((x / y) / z)"},
        {"x % y * z", "((x % y) * z)"},
        {"x * y % z", "((x * y) % z)"},
        {"-x * y", "((-x) * y)"},
        {"-x - -y", "((-x) - (-y))"},
        {"-(x + y)", "(-(x + y))"},
        {"x + y > z * 2", "((x + y) > (z * 2))"},
        {"a OR b AND c", "(a OR (b AND c))"},
        {"a AND b OR c", "((a AND b) OR c)"},
        {"NOT a AND b", "((NOT a) AND b)"},
        {"NOT x > 1", "(NOT (x > 1))"},
        {"NOT a OR NOT b", "((NOT a) OR (NOT b))"},
        {"NOT NOT a", "(NOT (NOT a))"},
        {"a OR b OR c", "(a OR b OR c)"},
        {"(a OR b) OR c", "(a OR b OR c)"},
        {"a OR (b OR c)", "(a OR b OR c)"},
        {"a AND (b OR c)", "(a AND (b OR c))"},
        {"x BETWEEN 1 AND 2 AND a", "((x BETWEEN 1 AND 2) AND a)"},
        {"x BETWEEN y - 1 AND y + 1", "(x BETWEEN (y - 1) AND (y + 1))"},
        {"x + 1 IN (1, y * 2)", "((x + 1) IN (1, (y * 2)))"},
        {"x IS NULL OR y IS NOT NULL", "((x IS NULL) OR (y IS NOT NULL))"},
        {"x NOT IN (1, 2)", "(x NOT IN (1, 2))"},
        {"NOT x IN (1, 2)", "(x NOT IN (1, 2))"},
        {"x NOT BETWEEN y AND z", "(x NOT BETWEEN y AND z)"},
        {"s = 'a' AND x <> 2", "((s = 'a') AND (x != 2))"},
        {"(x > 1) = (y > 2)", "((x > 1) = (y > 2))"},
        {"abs(x - y) * 2", "(abs((x - y)) * 2)"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        s_expect_print (table[i][0], TM_EXPR_PRINT_PARENS, table[i][1]);

    //  And by value.
    s_expect_num ("2 + 3 * 4", 14);
    s_expect_num ("(2 + 3) * 4", 20);
    s_expect_num ("10 - 4 - 3", 3);
    s_expect_num ("100 / 10 / 5", 2);
    s_expect_num ("2 * 3 % 4", 2);
    s_expect_num ("7 % 4 * 2", 6);
    s_expect_num ("-2 * 3", -6);
    s_expect_num ("- -2", 2);
    s_expect_num ("x - -y", 7);
    s_expect_bool ("true OR true AND false", true);
    s_expect_bool ("NOT false AND false", false);
    s_expect_bool ("NOT 1 > 2", true);
    s_expect_bool ("1 + 1 = 2 AND 2 * 2 = 4", true);
}

static void
test_canonical_print (void **state)
{
    (void) state;
    const char *table[][2] = {
        {"x+y*z", "x + y * z"},
        {"(x+y)*z", "(x + y) * z"},
        {"x - (y - z)", "x - (y - z)"},
        {"(x - y) - z", "x - y - z"},
        {"x / (y * z)", "x / (y * z)"},
        {"not (a and b)", "NOT (a AND b)"},
        {"(a and b) and c", "a AND b AND c"},
        {"a and (b or c)", "a AND (b OR c)"},
        {"x in (1,2,3)", "x IN (1, 2, 3)"},
        {"ABS(x)", "abs(x)"},
        {"Min(x, y, 3)", "min(x, y, 3)"},
        {"s = 'it''s'", "s = 'it''s'"},
        {"\"odd name\" > 1", "\"odd name\" > 1"},
        {"\"from\" + 1", "\"from\" + 1"},
        {"\"x\" + abs", "x + abs"},
        {"location.lat > 45", "location.lat > 45"},
        {"\"location.lat\" > 45", "location.lat > 45"},
        {"x > 1e-3", "x > 0.001"},
        {"x > 1E3", "x > 1000"},
        {"x > 1.5e300", "x > 1.5e+300"},
        {"x * -2", "x * -2"},
        {"- -x", "- -x"},
        {"-(-x)", "- -x"},
        {"2 * 3 + x", "6 + x"},
        {"x + 2 * 3", "x + 6"},
        {"1 / 0", "NULL"},
        {"x < 0.1 + 0.2", "x < 0.30000000000000004"},
        {"(x > 1) = true", "(x > 1) = TRUE"},
        {"x <> 1", "x != 1"},
        {"x IS NOT NULL", "x IS NOT NULL"},
        {"NOT (x IS NULL)", "x IS NOT NULL"},
        {"x is not null and not a", "x IS NOT NULL AND NOT a"},
        {"-0", "-0"},
        {"x - 0 * -1", "x - -0"},
        {"s IN ('a', 'b''c')", "s IN ('a', 'b''c')"},
        {"coalesce(x, 0)", "coalesce(x, 0)"},
        {"model = 'air_station' AND pm25 > 35 AND within(location, 45.4642, 9.1900, 2000)",
         "model = 'air_station' AND pm25 > 35 AND within(location, 45.4642, 9.19, 2000)"},
        {"temperature + 0.33 * humidity - 4", "temperature + 0.33 * humidity - 4"},
        {"100 * occupied / capacity", "100 * occupied / capacity"},
        {"  x\n>\t1  ", "x > 1"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        s_expect_print (table[i][0], 0, table[i][1]);
}

static void
test_operators (void **state)
{
    (void) state;
    s_expect_num ("x + y", 7);
    s_expect_num ("x - y", -1);
    s_expect_num ("x * y", 12);
    s_expect_num ("y / x", 4.0 / 3);
    s_expect_num ("7 % 3", 1);
    s_expect_num ("-7 % 3", -1);
    s_expect_num ("7.5 % 2", 1.5);
    s_expect_num ("-x", -3);
    s_expect_num ("1e-3 * 1000", 1);
    s_expect_bool ("x = 3", true);
    s_expect_bool ("x != 3", false);
    s_expect_bool ("x <> 4", true);
    s_expect_bool ("x < 4", true);
    s_expect_bool ("x <= 3", true);
    s_expect_bool ("x > 3", false);
    s_expect_bool ("x >= 3", true);
    s_expect_bool ("s = 'it''s'", true);
    s_expect_bool ("model < 'b'", true);
    s_expect_bool ("'abc' < 'abd'", true);
    s_expect_bool ("'ab' < 'abc'", true);
    s_expect_bool ("'B' < 'a'", true);
    s_expect_bool ("'é' > 'z'", true);
    s_expect_bool ("t = ''", true);
    s_expect_bool ("a = true", true);
    s_expect_bool ("a != b", true);
    s_expect_bool ("x IN (1, 2, 3)", true);
    s_expect_bool ("x IN (1, 2)", false);
    s_expect_bool ("x IN (y - 1, 9)", true);
    s_expect_bool ("x NOT IN (1, 2)", true);
    s_expect_bool ("district IN ('Centro', 'Navigli')", true);
    s_expect_bool ("x BETWEEN 3 AND 4", true);
    s_expect_bool ("x BETWEEN 4 AND 3", false);
    s_expect_bool ("x NOT BETWEEN 1 AND 2", true);
    s_expect_bool ("s BETWEEN 'a' AND 'j'", true);
    s_expect_bool ("x IS NULL", false);
    s_expect_bool ("n IS NULL", true);
    s_expect_bool ("n IS NOT NULL", false);
    s_expect_bool ("a AND NOT b", true);
    s_expect_bool ("b OR a", true);
    s_expect_bool ("stale OR anomalous", true);
    //  Functions.
    s_expect_num ("abs(z)", 2.5);
    s_expect_num ("min(x, y, z)", -2.5);
    s_expect_num ("min(x)", 3);
    s_expect_num ("max(x, y, z)", 4);
    s_expect_num ("round(2.5)", 3);
    s_expect_num ("round(-2.5)", -3);
    s_expect_num ("round(z)", -3);
    s_expect_num ("round(3.14159, 2)", 3.14);
    s_expect_num ("round(1234, -2)", 1200);
    s_expect_num ("round(1e300, 2)", 1e300);
    s_expect_null ("round(1, 0.5)");
    s_expect_null ("round(1, 16)");
    s_expect_num ("floor(z)", -3);
    s_expect_num ("ceil(z)", -2);
    s_expect_num ("sqrt(16)", 4);
    s_expect_num ("pow(2, 10)", 1024);
    s_expect_num ("pow(x, 0.5)", sqrt (3));
    s_expect_num ("ln(exp(2))", 2);
    s_expect_num ("exp(0)", 1);
    s_expect_num ("coalesce(n, x)", 3);
    s_expect_num ("coalesce(n, n, 5)", 5);
    s_expect_string ("coalesce(s, 'none')", "it's");
    s_expect_null ("coalesce(n)");
    s_expect_num ("clamp(x, 0, 2)", 2);
    s_expect_num ("clamp(z, 0, 2)", 0);
    s_expect_num ("clamp(1, 0, 2)", 1);
    s_expect_null ("clamp(1, 2, 0)");
    s_expect_bool ("within(location, 45.4641, 9.1919, 0)", true);
    s_expect_num ("distance(location, 45.4641, 9.1919)", 0);
    s_expect_bool ("bbox(location, 45, 9, 46, 10)", true);
    //  The two derived properties of issue #3.
    s_expect_num ("temperature + 0.33 * humidity - 4", 30 + 0.33 * 60 - 4);
    s_expect_num ("100 * occupied / capacity", 37.5);
    //  Keywords and function names are case-insensitive, names are not.
    s_expect_bool ("x Between 1 and 5 aNd NoT (s iS nUlL)", true);
    s_expect_num ("ABS(z) + Max(1, 2)", 4.5);
    s_expect_error ("X > 1", TM_EXPR_E_UNKNOWN_NAME, 1, "at column 1: unknown name 'X'");
}

//  SQL's three-valued logic: T, F and N (null).
static void
test_null_logic (void **state)
{
    (void) state;
    tm_expr_value_t tfn[3] = {tm_expr_bool (true), tm_expr_bool (false), tm_expr_null ()};
    //  Expected results indexed [a][b]: 0 true, 1 false, 2 null.
    const int and_table[3][3] = {{0, 1, 2}, {1, 1, 1}, {2, 1, 2}};
    const int or_table[3][3] = {{0, 0, 0}, {0, 1, 2}, {0, 2, 2}};
    const int not_table[3] = {1, 0, 2};
    tm_expr_t *e_and = s_compile ("a AND b");
    tm_expr_t *e_or = s_compile ("a OR b");
    tm_expr_t *e_not = s_compile ("NOT a");
    tm_expr_t *e_and3 = s_compile ("a AND b AND c");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            tm_expr_value_t v[NSLOTS];
            s_values (v);
            v[10] = tfn[i];
            v[11] = tfn[j];
            v[12] = tm_expr_bool (true);
            tm_expr_value_t r;
            tm_expr_eval (e_and, v, NSLOTS, &r);
            assert_int_equal (r.type, tfn[and_table[i][j]].type);
            if (r.type == TM_EXPR_BOOL)
                assert_int_equal (r.b, tfn[and_table[i][j]].b);
            tm_expr_eval (e_and3, v, NSLOTS, &r);
            assert_int_equal (r.type, tfn[and_table[i][j]].type);
            if (r.type == TM_EXPR_BOOL)
                assert_int_equal (r.b, tfn[and_table[i][j]].b);
            tm_expr_eval (e_or, v, NSLOTS, &r);
            assert_int_equal (r.type, tfn[or_table[i][j]].type);
            if (r.type == TM_EXPR_BOOL)
                assert_int_equal (r.b, tfn[or_table[i][j]].b);
            //  WHERE: only true selects.
            assert_int_equal (tm_expr_match (e_and, v, NSLOTS), and_table[i][j] == 0);
        }
    for (int i = 0; i < 3; i++) {
        tm_expr_value_t v[NSLOTS];
        s_values (v);
        v[10] = tfn[i];
        tm_expr_value_t r;
        tm_expr_eval (e_not, v, NSLOTS, &r);
        assert_int_equal (r.type, tfn[not_table[i]].type);
        if (r.type == TM_EXPR_BOOL)
            assert_int_equal (r.b, tfn[not_table[i]].b);
    }
    tm_expr_destroy (&e_and);
    tm_expr_destroy (&e_or);
    tm_expr_destroy (&e_not);
    tm_expr_destroy (&e_and3);

    //  Literal forms fold with the same rules.
    s_expect_bool ("NULL AND FALSE", false);
    s_expect_null ("NULL AND TRUE");
    s_expect_bool ("NULL OR TRUE", true);
    s_expect_null ("NULL OR FALSE");
    s_expect_null ("NOT NULL");
    //  Comparisons and arithmetic with null give null.
    const char *nulls[] = {
        "n = 1", "n != 1", "n < 1", "n <= 1", "n > 1", "n >= 1", "1 = n", "n = n",
        "NULL = NULL", "n + 1", "1 - n", "n * 0", "n / 1", "n % 2", "-n",
        "n IN (1, 2)", "x IN (1, n)", "x NOT IN (1, n)", "n BETWEEN 1 AND 2",
        "x BETWEEN n AND 5", "x BETWEEN 1 AND n AND TRUE", "abs(n)", "min(x, n)",
        "max(n, x)", "round(n)", "round(x, n)", "floor(n)", "ceil(n)", "sqrt(n)",
        "pow(n, 2)", "ln(n)", "exp(n)", "clamp(n, 0, 1)", "clamp(x, n, 1)",
        "within(location, n, 9, 10)", "distance(location, 45, n)",
        "bbox(location, 45, 9, n, 10)", "c", "c AND a", "a AND c OR c",
    };
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        s_expect_null (nulls[i]);
    //  ... except where the answer does not depend on the unknown.
    s_expect_bool ("x IN (3, n)", true);
    s_expect_bool ("x BETWEEN 4 AND n", false);
    s_expect_bool ("n IS NULL", true);
    s_expect_bool ("c AND b", false);
    s_expect_bool ("c OR a", true);
    s_expect_num ("coalesce(n, 1)", 1);
    //  Division by zero and results that are not finite are null.
    s_expect_null ("x / 0");
    s_expect_null ("x / (y - 4)");
    s_expect_null ("x % 0");
    s_expect_null ("sqrt(-1)");
    s_expect_null ("ln(0)");
    s_expect_null ("ln(-1)");
    s_expect_null ("exp(1000)");
    s_expect_null ("pow(0, -1)");
    s_expect_null ("pow(-8, 1 / 3)");
    s_expect_null ("1e308 * 10");
    s_expect_null ("x * 1e308 * 10");
    s_expect_bool ("(x / 0) IS NULL", true);
}

static void
test_type_errors (void **state)
{
    (void) state;
    const struct {
        const char *text;
        unsigned column;
        const char *message;
    } cases[] = {
        {"s + 1", 1, "at column 1: '+' needs a number, found a string"},
        {"x * 'a'", 5, "at column 5: '*' needs a number, found a string"},
        {"-s", 2, "at column 2: '-' needs a number, found a string"},
        {"NOT x", 5, "at column 5: NOT needs a boolean, found a number"},
        {"x AND a", 1, "at column 1: AND needs a boolean, found a number"},
        {"a OR 'yes'", 6, "at column 6: OR needs a boolean, found a string"},
        {"x = 'a'", 3, "at column 3: '=' cannot compare a number with a string"},
        {"model = 3", 7, "at column 7: '=' cannot compare a string with a number"},
        {"a < b", 3, "at column 3: '<' cannot order booleans"},
        {"location = location", 10, "at column 10: '=' cannot compare locations"},
        {"x IN (1, 'a')", 3, "at column 3: IN cannot compare a number with a string"},
        {"x BETWEEN 1 AND 'z'", 3, "at column 3: BETWEEN cannot compare a number with a string"},
        {"abs(s)", 5, "at column 5: argument 1 of abs() must be a number, found a string"},
        {"within(x, 45, 9, 100)", 8,
         "at column 8: argument 1 of within() must be a location, found a number"},
        {"within(location, 45, 9, '100')", 25,
         "at column 25: argument 4 of within() must be a number, found a string"},
        {"distance(location, s, 9)", 20,
         "at column 20: argument 2 of distance() must be a number, found a string"},
        {"coalesce(x, 'a')", 13,
         "at column 13: arguments of coalesce() must share one type, found a number and a "
         "string"},
        {"min(x, a)", 8, "at column 8: argument 2 of min() must be a number, found a boolean"},
        {"location + 1", 1, "at column 1: '+' needs a number, found a location"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_expect_error (cases[i].text, TM_EXPR_E_TYPE, cases[i].column, cases[i].message);

    //  A slot of type any is checked at run time: a mismatch gives null.
    s_expect_null ("any + 1 = 1 OR any = 's'");
    s_expect_num ("any + 1", 8);
    s_expect_bool ("any > 6 AND any < 8", true);
    tm_expr_value_t v[NSLOTS];
    s_values (v);
    v[17] = tm_expr_string ("seven", 5);
    tm_expr_value_t r = s_eval_with ("any + 1", v);
    assert_int_equal (r.type, TM_EXPR_NULL);
    r = s_eval_with ("any = 'seven'", v);
    assert_int_equal (r.type, TM_EXPR_BOOL);
    assert_true (r.b);

    //  The caller can demand a result type (WHERE needs a boolean).
    tm_expr_options_t opts = s_opts;
    opts.expect = TM_EXPR_BOOL;
    tm_expr_error_t err;
    assert_null (tm_expr_compile ("x + 1", &opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_TYPE);
    assert_string_equal (err.message, "at column 1: expected a boolean expression, found a number");
    tm_expr_t *e = tm_expr_compile ("x > 1", &opts, &err);
    assert_non_null (e);
    assert_int_equal (tm_expr_type (e), TM_EXPR_BOOL);
    tm_expr_destroy (&e);
    e = tm_expr_compile ("any", &opts, &err);
    assert_non_null (e);
    assert_int_equal (tm_expr_type (e), TM_EXPR_ANY);
    tm_expr_destroy (&e);
    e = tm_expr_compile ("NULL", &opts, &err);
    assert_non_null (e);
    assert_true (tm_expr_is_constant (e));
    assert_false (tm_expr_match (e, NULL, 0));
    tm_expr_destroy (&e);
}

static void
test_syntax_errors (void **state)
{
    (void) state;
    const struct {
        const char *text;
        int code;
        unsigned column;
        const char *message;
    } cases[] = {
        {"", TM_EXPR_E_SYNTAX, 1, "at column 1: expected an operand, found end of input"},
        {"x >", TM_EXPR_E_SYNTAX, 4,
         "at column 4: expected an operand after '>', found end of input"},
        {"x > 35 FROM twins", TM_EXPR_E_SYNTAX, 8,
         "at column 8: expected an operator or the end of the expression, found 'FROM'"},
        {"pm25 > FROM", TM_EXPR_E_SYNTAX, 8,
         "at column 8: expected an operand after '>', found 'FROM'"},
        {"max(x, y FROM twins", TM_EXPR_E_SYNTAX, 10,
         "at column 10: expected ')' or ',' after argument, found 'FROM'"},
        {"abs(x", TM_EXPR_E_SYNTAX, 6,
         "at column 6: expected ')' or ',' after argument, found end of input"},
        {"(x + 1", TM_EXPR_E_SYNTAX, 7,
         "at column 7: expected ')' to close '(' of column 1, found end of input"},
        {"x + 1)", TM_EXPR_E_SYNTAX, 6,
         "at column 6: expected an operator or the end of the expression, found ')'"},
        {"x IN 1", TM_EXPR_E_SYNTAX, 6, "at column 6: expected '(' after IN, found '1'"},
        {"x IN ()", TM_EXPR_E_SYNTAX, 7,
         "at column 7: expected at least one value in the IN list, found ')'"},
        {"x IN (1 2)", TM_EXPR_E_SYNTAX, 9,
         "at column 9: expected ')' or ',' after IN list item, found '2'"},
        {"x BETWEEN 1 OR 2", TM_EXPR_E_SYNTAX, 13,
         "at column 13: expected AND in BETWEEN, found 'OR'"},
        {"x IS 3", TM_EXPR_E_SYNTAX, 6,
         "at column 6: expected NULL or NOT NULL after IS, found '3'"},
        {"x NOT 3", TM_EXPR_E_SYNTAX, 7,
         "at column 7: expected IN or BETWEEN after NOT, found '3'"},
        {"x < y < z", TM_EXPR_E_SYNTAX, 7,
         "at column 7: expected AND, OR or the end (comparisons do not chain), found '<'"},
        {"x = 'abc", TM_EXPR_E_SYNTAX, 5, "at column 5: unterminated string"},
        {"\"x", TM_EXPR_E_SYNTAX, 1, "at column 1: unterminated quoted name"},
        {"\"\" = 1", TM_EXPR_E_SYNTAX, 1, "at column 1: empty quoted name"},
        {"x > 35abc", TM_EXPR_E_SYNTAX, 5, "at column 5: malformed number"},
        {"x > 1.", TM_EXPR_E_SYNTAX, 5, "at column 5: malformed number"},
        {"x > 1e", TM_EXPR_E_SYNTAX, 5, "at column 5: malformed number"},
        {"x > 1e999", TM_EXPR_E_SYNTAX, 5, "at column 5: number out of range"},
        {"x > .5", TM_EXPR_E_SYNTAX, 5, "at column 5: expected an operand after '>', found '.'"},
        {"x # 1", TM_EXPR_E_SYNTAX, 3,
         "at column 3: expected an operator or the end of the expression, found '#'"},
        {"s = 'caf\xC3'", TM_EXPR_E_SYNTAX, 5, "at column 5: string is not valid UTF-8"},
        {"é = 1", TM_EXPR_E_SYNTAX, 1, "at column 1: expected an operand, found 'é'"},
        //  Control characters and broken UTF-8 never reach a message.
        {"x \x01 1", TM_EXPR_E_SYNTAX, 3,
         "at column 3: expected an operator or the end of the expression, found '?'"},
        {"x > \xC3", TM_EXPR_E_SYNTAX, 5, "at column 5: expected an operand after '>', found '?'"},
        {"\"a\tb\" > 1", TM_EXPR_E_UNKNOWN_NAME, 1, "at column 1: unknown name 'a?b'"},
        {"x = 1 AND\n  y == 2", TM_EXPR_E_SYNTAX, 6,
         "at line 2, column 6: expected an operand after '=', found '='"},
        {"avg(pm25) > 3", TM_EXPR_E_UNKNOWN_FUNCTION, 1, "at column 1: unknown function 'avg'"},
        {"pm52 > 3", TM_EXPR_E_UNKNOWN_NAME, 1, "at column 1: unknown name 'pm52'"},
        {"location.lon > 3", TM_EXPR_E_UNKNOWN_NAME, 1,
         "at column 1: unknown name 'location.lon'"},
        {"abs(x, y)", TM_EXPR_E_SYNTAX, 1, "at column 1: abs() takes 1 argument, given 2"},
        {"round()", TM_EXPR_E_SYNTAX, 1, "at column 1: round() takes 1 to 2 arguments, given 0"},
        {"within(location, 1, 2)", TM_EXPR_E_SYNTAX, 1,
         "at column 1: within() takes 4 arguments, given 3"},
        {"x AND", TM_EXPR_E_SYNTAX, 6,
         "at column 6: expected an operand after 'AND', found end of input"},
        {"x > 1 AND AND", TM_EXPR_E_SYNTAX, 11,
         "at column 11: expected an operand after 'AND', found 'AND'"},
        {"(x + 1) * (y", TM_EXPR_E_SYNTAX, 13,
         "at column 13: expected ')' to close '(' of column 11, found end of input"},
        {"x.", TM_EXPR_E_SYNTAX, 2,
         "at column 2: expected an operator or the end of the expression, found '.'"},
        {"\"a\"(1)", TM_EXPR_E_SYNTAX, 4,
         "at column 4: expected an operator or the end of the expression, found '('"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_expect_error (cases[i].text, cases[i].code, cases[i].column, cases[i].message);

    //  The error says where the offending token is, for a caret.
    tm_expr_error_t err;
    assert_null (tm_expr_compile ("x > 35 GROUP BY district", &s_opts, &err));
    assert_int_equal (err.offset, 7);
    assert_int_equal (err.length, 5);
    assert_int_equal (err.line, 1);
    //  Columns count characters, not bytes.
    assert_null (tm_expr_compile ("s = 'été' AND", &s_opts, &err));
    assert_int_equal (err.column, 14);
    assert_int_equal (err.offset, 15);
    //  Errors without an error struct are fine too.
    assert_null (tm_expr_compile ("x >", &s_opts, NULL));
    assert_null (tm_expr_compile (NULL, &s_opts, &err));
}

static void
test_limits (void **state)
{
    (void) state;
    size_t cap = 1 << 20;
    char *text = (char *) malloc (cap);
    assert_non_null (text);
    tm_expr_error_t err;

    //  Nesting: 256 levels of parentheses pass, 257 do not.
    for (int depth = 255; depth <= 257; depth++) {
        size_t n = 0;
        for (int i = 0; i < depth; i++)
            text[n++] = '(';
        text[n++] = 'x';
        for (int i = 0; i < depth; i++)
            text[n++] = ')';
        text[n] = 0;
        tm_expr_t *e = tm_expr_compile (text, &s_opts, &err);
        if (depth <= 256)
            assert_non_null (e);
        else {
            assert_null (e);
            assert_int_equal (err.code, TM_EXPR_E_LIMIT);
            assert_string_equal (err.message,
                                 "at column 257: expression nests deeper than 256 levels");
        }
        tm_expr_destroy (&e);
    }
    //  A million open parentheses: a clean error, no deep recursion.
    memset (text, '(', cap - 1);
    text[cap - 1] = 0;
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    //  Same for unary minus and NOT chains.
    for (size_t i = 0; i < cap - 3; i += 2)
        text[i] = '-', text[i + 1] = ' ';
    strcpy (text + cap - 3, "x");
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    size_t n = 0;
    while (n + 10 < cap)
        n += (size_t) sprintf (text + n, "NOT ");
    strcpy (text + n, "a");
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    //  Left-deep chains grow the tree's height without any nesting.
    n = 0;
    n += (size_t) sprintf (text + n, "x");
    for (int i = 0; i < 127; i++)
        n += (size_t) sprintf (text + n, " + x");
    tm_expr_t *e = tm_expr_compile (text, &s_opts, &err);
    assert_non_null (e);
    tm_expr_destroy (&e);
    n += (size_t) sprintf (text + n, " + x");
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    assert_string_equal (err.message, "at column 511: expression tree deeper than 128 levels");
    //  Whatever compiles prints as text that compiles: 127 minus signs
    //  print fully parenthesised as 254 levels of nesting.
    n = 0;
    for (int i = 0; i < 127; i++)
        text[n++] = '-';
    strcpy (text + n, "x");
    e = tm_expr_compile (text, &s_opts, &err);
    assert_non_null (e);
    char *full = tm_expr_print (e, TM_EXPR_PRINT_PARENS);
    tm_expr_t *again = tm_expr_compile (full, &s_opts, &err);
    assert_non_null (again);
    free (full);
    tm_expr_destroy (&again);
    tm_expr_destroy (&e);
    //  AND chains are flat: 1000 conditions are fine.
    n = 0;
    n += (size_t) sprintf (text + n, "x > 0");
    for (int i = 1; i < 1000; i++)
        n += (size_t) sprintf (text + n, " AND x > %d", -i);
    e = tm_expr_compile (text, &s_opts, &err);
    assert_non_null (e);
    assert_true (tm_expr_match (e, (tm_expr_value_t[NSLOTS]) {[13] = tm_expr_number (1)},
                                NSLOTS));
    tm_expr_destroy (&e);
    //  ... but not 1100 (more than TM_EXPR_MAX_ARGS operands).
    for (int i = 1000; i < 1100; i++)
        n += (size_t) sprintf (text + n, " AND x > %d", -i);
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    //  Node count.
    n = 0;
    n += (size_t) sprintf (text + n, "x IN (0");
    for (int i = 1; i < 1024; i++)
        n += (size_t) sprintf (text + n, ", %d", i);
    n += (size_t) sprintf (text + n, ")");
    e = tm_expr_compile (text, &s_opts, &err);
    assert_non_null (e);
    tm_expr_destroy (&e);
    n -= 1;
    n += (size_t) sprintf (text + n, ", 1024)");
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    n = 0;
    n += (size_t) sprintf (text + n, "x > 0");
    for (int i = 0; i < 1000; i++)
        n += (size_t) sprintf (text + n, " AND x + %d > x", i);
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    assert_non_null (strstr (err.message, "more than 4096 nodes"));
    //  Evaluation stack: a call with 300 non-constant arguments.
    n = 0;
    n += (size_t) sprintf (text + n, "max(x");
    for (int i = 0; i < 300; i++)
        n += (size_t) sprintf (text + n, ", x");
    n += (size_t) sprintf (text + n, ")");
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    assert_non_null (strstr (err.message, "evaluation stack"));
    //  Long strings, names and numbers.
    n = (size_t) sprintf (text, "s = '");
    memset (text + n, 'a', 4096);
    strcpy (text + n + 4096, "'");
    e = tm_expr_compile (text, &s_opts, &err);
    assert_non_null (e);
    tm_expr_destroy (&e);
    strcpy (text + n + 4096, "a'");
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    memset (text, 'n', 129);
    text[129] = 0;
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    memset (text, '1', 65);
    text[65] = 0;
    assert_null (tm_expr_compile (text, &s_opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    free (text);
}

//  Reference distance, computed differently from the library's haversine:
//  the chord between the two points as unit vectors, then the arc.
static double
s_reference_distance (double lat1, double lon1, double lat2, double lon2)
{
    double r = 3.14159265358979323846 / 180;
    double p1[3] = {cos (lat1 * r) * cos (lon1 * r), cos (lat1 * r) * sin (lon1 * r),
                    sin (lat1 * r)};
    double p2[3] = {cos (lat2 * r) * cos (lon2 * r), cos (lat2 * r) * sin (lon2 * r),
                    sin (lat2 * r)};
    double dx = p1[0] - p2[0], dy = p1[1] - p2[1], dz = p1[2] - p2[2];
    double chord = sqrt (dx * dx + dy * dy + dz * dz);
    return 2 * 6371008.8 * asin (fmin (1, chord / 2));
}

static void
test_geo (void **state)
{
    (void) state;
    //  Milan: the Duomo (slot 6 by default) and the Castello Sforzesco.
    const double castello_lat = 45.4705, castello_lon = 9.1794;
    double want = s_reference_distance (45.4641, 9.1919, castello_lat, castello_lon);
    assert_true (want > 1000 && want < 1300);
    char text[256];
    snprintf (text, sizeof text, "distance(location, %.17g, %.17g)", castello_lat, castello_lon);
    tm_expr_value_t r = s_eval (text);
    assert_int_equal (r.type, TM_EXPR_NUMBER);
    assert_true (fabs (r.num - want) < 1e-6);
    snprintf (text, sizeof text, "within(location, %.17g, %.17g, %.17g)", castello_lat,
              castello_lon, want + 0.01);
    s_expect_bool (text, true);
    snprintf (text, sizeof text, "within(location, %.17g, %.17g, %.17g)", castello_lat,
              castello_lon, want - 0.01);
    s_expect_bool (text, false);
    //  The query of issue #4: 2 km around a point near the Duomo.
    s_expect_bool ("within(location, 45.4642, 9.1900, 2000)", true);
    s_expect_bool ("within(location, 45.4642, 9.1900, 100)", false);

    //  Far, polar, antimeridian and antipodal pairs.
    const double pairs[][4] = {
        {45.4641, 9.1919, 48.8584, 2.2945},    //  Milan - Paris
        {51.5007, -0.1246, 40.6892, -74.0445}, //  London - New York
        {-33.8568, 151.2153, 35.6586, 139.7454},   //  Sydney - Tokyo
        {89.9, 0, 89.9, 180},                  //  Across the pole
        {0, 179.9, 0, -179.9},                 //  Across the antimeridian
        {10, 20, -10, -160},                   //  Antipodes
        {0, 0, 0, 0},
    };
    tm_expr_t *e = s_compile ("distance(location, x, y)");
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        tm_expr_value_t v[NSLOTS];
        s_values (v);
        v[6] = tm_expr_location (pairs[i][0], pairs[i][1]);
        v[13] = tm_expr_number (pairs[i][2]);
        v[14] = tm_expr_number (pairs[i][3]);
        tm_expr_eval (e, v, NSLOTS, &r);
        assert_int_equal (r.type, TM_EXPR_NUMBER);
        double ref = s_reference_distance (pairs[i][0], pairs[i][1], pairs[i][2], pairs[i][3]);
        if (fabs (r.num - ref) > 1e-3 + 1e-9 * ref)
            fail_msg ("pair %zu: %.6f vs reference %.6f", i, r.num, ref);
    }
    tm_expr_destroy (&e);
    //  Antipodes: half the circumference.
    s_expect_bool ("abs(distance(location, -45.4641, 9.1919 - 180) - 3.14159265358979 * "
                   "6371008.8) < 0.01",
                   true);

    //  Far in latitude (the shortcut) and across the globe.
    s_expect_bool ("within(location, 50, 9.1919, 100000)", false);
    s_expect_bool ("within(location, 50, 9.1919, 600000)", true);
    s_expect_bool ("within(location, -45.4641, 9.1919 - 180, 20015116)", true);
    s_expect_bool ("within(location, -45.4641, 9.1919 - 180, 20015114)", false);

    //  Bounding boxes, including one across the antimeridian.
    s_expect_bool ("bbox(location, 45.46, 9.19, 45.47, 9.20)", true);
    s_expect_bool ("bbox(location, 45.465, 9.19, 45.47, 9.20)", false);
    s_expect_bool ("bbox(location, 45.4641, 9.1919, 45.4641, 9.1919)", true);
    s_expect_bool ("bbox(location, 40, 170, 50, -170)", false);
    tm_expr_value_t v[NSLOTS];
    s_values (v);
    v[6] = tm_expr_location (45, 179.5);
    r = s_eval_with ("bbox(location, 40, 170, 50, -170)", v);
    assert_true (r.type == TM_EXPR_BOOL && r.b);
    v[6] = tm_expr_location (45, -175);
    r = s_eval_with ("bbox(location, 40, 170, 50, -170)", v);
    assert_true (r.type == TM_EXPR_BOOL && r.b);
    //  Invalid arguments give null.
    s_expect_null ("bbox(location, 46, 9, 45, 10)");
    s_expect_null ("bbox(location, -91, 9, 45, 10)");
    s_expect_null ("within(location, 45, 9, -1)");
    s_expect_null ("within(location, 95, 9, 10)");
    s_expect_null ("distance(location, 45, 181)");
    //  Locations off the globe read as null.
    v[6] = tm_expr_location (91, 0);
    r = s_eval_with ("location IS NULL", v);
    assert_true (r.type == TM_EXPR_BOOL && r.b);
    v[6] = tm_expr_location (NAN, 0);
    r = s_eval_with ("distance(location, 0, 0)", v);
    assert_int_equal (r.type, TM_EXPR_NULL);
}

//  Expressions that must print, re-parse and print the same; and
//  serialise, deserialise and print the same.
static const char *s_round_trips[] = {
    "model = 'air_station' AND pm25 > 35 AND within(location, 45.4642, 9.19, 2000)",
    "temperature + 0.33 * humidity - 4",
    "100 * occupied / capacity",
    "x - (y - z) * -(x / y) % 3",
    "NOT (a OR b) AND (c OR NOT a)",
    "x NOT IN (1, 2.5, y) OR s IN ('a', 'it''s', '')",
    "x NOT BETWEEN -1 AND y + 1 AND x IS NOT NULL AND n IS NULL",
    "coalesce(n, x, 0) > clamp(y, 0, 1e+300)",
    "round(x, 2) + floor(y) + ceil(z) + sqrt(x) + pow(x, y) + ln(x) + exp(z) + abs(z)",
    "min(x, y, z) = max(x)",
    "bbox(location, 45, 9, 46, 10) OR distance(location, 0, 0) < 10000000",
    "\"odd name\" > 1 AND \"from\" < 2 AND location.lat > -0.5",
    "(x > 1) = (y > 2) AND a = TRUE AND b != FALSE",
    "- -x + - -y",
    "s < 'caf\xC3\xA9' AND s > '\xE2\x82\xAC'",
    "any = 1 OR any = 'one'",
    "NULL",
    "'just a string'",
    "x",
    "-0.000123",
    "1.7976931348623157e+308 > x",
    "5e-324 < x",
};

static void
test_print_round_trip (void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_round_trips / sizeof s_round_trips[0]; i++) {
        for (int flags = 0; flags <= TM_EXPR_PRINT_PARENS; flags++) {
            tm_expr_t *e = s_compile (s_round_trips[i]);
            char *one = tm_expr_print (e, flags);
            tm_expr_t *again = s_compile (one);
            char *two = tm_expr_print (again, flags);
            if (strcmp (one, two) != 0)
                fail_msg ("'%s' printed '%s' then '%s'", s_round_trips[i], one, two);
            if (flags == 0 && strcmp (one, s_round_trips[i]) != 0)
                fail_msg ("'%s' is not canonical: printed '%s'", s_round_trips[i], one);
            //  Same evaluation too.
            tm_expr_value_t v[NSLOTS], r1, r2;
            s_values (v);
            tm_expr_eval (e, v, NSLOTS, &r1);
            tm_expr_eval (again, v, NSLOTS, &r2);
            assert_int_equal (r1.type, r2.type);
            if (r1.type == TM_EXPR_NUMBER)
                assert_true (r1.num == r2.num);
            free (one);
            free (two);
            tm_expr_destroy (&e);
            tm_expr_destroy (&again);
        }
    }
}

static void
test_serialise (void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_round_trips / sizeof s_round_trips[0]; i++) {
        tm_expr_t *e = s_compile (s_round_trips[i]);
        size_t size = 0;
        uint8_t *bytes = tm_expr_serialise (e, &size);
        assert_non_null (bytes);
        tm_expr_error_t err;
        //  Without a resolver: the slots and types in the bytes.
        tm_expr_t *copy = tm_expr_deserialise (bytes, size, NULL, &err);
        if (!copy)
            fail_msg ("'%s': %s", s_round_trips[i], err.message);
        char *p1 = tm_expr_print (e, 0), *p2 = tm_expr_print (copy, 0);
        assert_string_equal (p1, p2);
        assert_int_equal (tm_expr_type (e), tm_expr_type (copy));
        assert_int_equal (tm_expr_slots (e), tm_expr_slots (copy));
        size_t size2 = 0;
        uint8_t *bytes2 = tm_expr_serialise (copy, &size2);
        assert_int_equal (size, size2);
        assert_memory_equal (bytes, bytes2, size);
        tm_expr_value_t v[NSLOTS], r1, r2;
        s_values (v);
        tm_expr_eval (e, v, NSLOTS, &r1);
        tm_expr_eval (copy, v, NSLOTS, &r2);
        assert_int_equal (r1.type, r2.type);

        //  Every truncation and every single-byte change is refused
        //  cleanly or yields a valid expression; never a crash.
        for (size_t cut = 0; cut < size; cut++) {
            tm_expr_t *bad = tm_expr_deserialise (bytes, cut, NULL, &err);
            assert_null (bad);
            assert_true (err.code == TM_EXPR_E_MALFORMED || err.code == TM_EXPR_E_TYPE
                         || err.code == TM_EXPR_E_SYNTAX);
        }
        for (size_t at = 0; at < size; at++) {
            uint8_t saved = bytes[at];
            for (int delta = 1; delta < 256; delta += 37) {
                bytes[at] = (uint8_t) (saved + delta);
                tm_expr_t *maybe = tm_expr_deserialise (bytes, size, NULL, &err);
                if (maybe) {
                    char *text = tm_expr_print (maybe, 0);
                    assert_non_null (text);
                    free (text);
                    tm_expr_eval (maybe, v, NSLOTS, &r1);
                }
                else
                    assert_true (err.code > 0 && err.message[0]);
                tm_expr_destroy (&maybe);
            }
            bytes[at] = saved;
        }
        free (p1);
        free (p2);
        free (bytes);
        free (bytes2);
        tm_expr_destroy (&e);
        tm_expr_destroy (&copy);
    }

    //  With a resolver, names are resolved again: a worker's own layout.
    tm_expr_t *e = s_compile ("pm25 > 35 AND model = 'air_station'");
    size_t size;
    uint8_t *bytes = tm_expr_serialise (e, &size);
    tm_expr_destroy (&e);
    tm_expr_options_t none = {0};
    tm_expr_error_t err;
    assert_null (tm_expr_deserialise (bytes, size, &(tm_expr_options_t) {
                                          .resolve = s_resolve, .expect = TM_EXPR_NUMBER},
                                      &err));
    assert_int_equal (err.code, TM_EXPR_E_TYPE);
    e = tm_expr_deserialise (bytes, size, &none, &err);
    assert_non_null (e);
    tm_expr_value_t v[NSLOTS];
    s_values (v);
    assert_true (tm_expr_match (e, v, NSLOTS));
    tm_expr_destroy (&e);
    free (bytes);

    //  Hand-made hostile bytes.
    const struct {
        const char *bytes;
        size_t size;
        const char *message;
    } cases[] = {
        {"", 0, "at byte 0: not a serialised expression (bad magic)"},
        {"TMX\x02\x01\x00", 6, "at byte 0: not a serialised expression (bad magic)"},
        {"TMX\x01", 4, "at byte 4: bad record count"},
        {"TMX\x01\x00", 5, "at byte 4: bad record count"},
        {"TMX\x01\x01", 5, "at byte 5: truncated: 0 of 1 records"},
        {"TMX\x01\x01\x07", 6, "at byte 5: unknown record 0x07"},
        {"TMX\x01\x01\x03\x00\x00\x00\x00\x00\x00\xF0\x7F", 14, "at byte 5: number is not finite"},
        {"TMX\x01\x01\x03\x00\x00", 8, "at byte 5: truncated number"},
        {"TMX\x01\x01\x04\x05" "ab", 9, "at byte 5: bad string"},
        {"TMX\x01\x01\x04\x02\xC3\x28", 9, "at byte 5: bad string"},
        {"TMX\x01\x01\x05\x00\x00\x01x", 9, "at byte 5: bad name or type"},
        {"TMX\x01\x01\x05\x00\x06\x01x", 9, "at byte 5: bad name or type"},
        {"TMX\x01\x01\x05\x00\x01\x00", 8, "at byte 5: bad name or type"},
        {"TMX\x01\x01\x05\x80\x80\x04\x01\x01x", 11, "at byte 5: bad slot"},
        {"TMX\x01\x01\x15\x01", 7, "at byte 5: operator has a bad operand count"},
        {"TMX\x01\x02\x00\x00", 7, "at byte 7: records leave 2 trees, not one"},
        {"TMX\x01\x01\x00\x00", 7, "at byte 6: 1 bytes after the last record"},
        {"TMX\x01\x03\x01\x01\x15\x02", 9, "at byte 5: '+' needs a number, found a boolean"},
        {"TMX\x01\x03\x01\x01\x22\x02", 9, "at byte 7: abs() takes 1 argument, given 2"},
        {"TMX\x01\x02\x01\x10\x01", 8, "at byte 5: '-' needs a number, found a boolean"},
        {"TMX\x01\x02\x01\x55\x01", 8, "at byte 6: unknown record 0x55"},
        {"TMX\x01\x02\x01\x1D\x01", 8, "at byte 6: IN takes 2 to 1025 arguments, given 1"},
        {"TMX\x01\x01\x01\xff", 7, "at byte 6: 1 bytes after the last record"},
        {"TMX\x01\xff\xff\xff\xff\x0f", 10, "at byte 4: bad record count"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tm_expr_t *bad = tm_expr_deserialise ((const uint8_t *) cases[i].bytes, cases[i].size,
                                              NULL, &err);
        if (bad || strcmp (err.message, cases[i].message) != 0)
            fail_msg ("case %zu: got '%s', want '%s'", i, bad? "(accepted)": err.message,
                      cases[i].message);
    }
    assert_null (tm_expr_deserialise (NULL, 0, NULL, NULL));
}

//  The query parser of issue #4 calls the expression parser for each
//  expression of a query and continues after it.
static void
test_compile_at (void **state)
{
    (void) state;
    const char *query = "SELECT district, count(*), avg(pm25) FROM twins WHERE model = "
                        "'air_station' AND pm25 > 35 AND within(location, 45.4642, 9.1900, "
                        "2000) GROUP BY district ORDER BY avg(pm25) DESC LIMIT 10";
    size_t len = strlen (query);
    size_t where = (size_t) (strstr (query, "WHERE") - query) + 5;
    size_t end = 0;
    tm_expr_error_t err;
    tm_expr_options_t opts = s_opts;
    opts.expect = TM_EXPR_BOOL;
    tm_expr_t *e = tm_expr_compile_at (query, len, where, &opts, &end, &err);
    assert_non_null (e);
    assert_int_equal (end, (size_t) (strstr (query, "GROUP") - query));
    tm_expr_destroy (&e);
    //  The first select item stops at its comma.
    e = tm_expr_compile_at (query, len, 6, &opts, &end, &err);
    assert_null (e);
    assert_int_equal (err.code, TM_EXPR_E_TYPE);
    opts.expect = TM_EXPR_ANY;
    e = tm_expr_compile_at (query, len, 6, &opts, &end, &err);
    assert_non_null (e);
    assert_int_equal (end, 15);
    assert_int_equal (query[end], ',');
    tm_expr_destroy (&e);
    //  Without a hook, an aggregate is an unknown function, named with its
    //  position: the query parser can take over there.
    e = tm_expr_compile_at (query, len, 16, &opts, &end, &err);
    assert_null (e);
    assert_int_equal (err.code, TM_EXPR_E_UNKNOWN_FUNCTION);
    assert_int_equal (err.offset, 17);
    assert_int_equal (err.length, 5);
    assert_string_equal (err.message, "at column 18: unknown function 'count'");
    //  Errors count columns from the start of the whole text.
    const char *broken = "SELECT x FROM twins WHERE pm25 > AND x";
    e = tm_expr_compile_at (broken, strlen (broken), 25, &opts, &end, &err);
    assert_null (e);
    assert_string_equal (err.message, "at column 34: expected an operand after '>', found 'AND'");
    //  Only the given length is read: no NUL needed.
    char buf[8] = {'x', ' ', '>', ' ', '1', '9', '9', '9'};
    e = tm_expr_compile_at (buf, 5, 0, &opts, &end, &err);
    assert_non_null (e);
    assert_int_equal (end, 5);
    char *printed = tm_expr_print (e, 0);
    assert_string_equal (printed, "x > 1");
    free (printed);
    tm_expr_destroy (&e);
    //  Offsets past the end parse nothing.
    assert_null (tm_expr_compile_at (buf, 5, 99, &opts, &end, &err));
    assert_int_equal (err.code, TM_EXPR_E_SYNTAX);
}

//  A call hook standing in for the query parser's aggregates: it takes
//  count(*) and avg(<name>), giving each a slot after the schema.
static int
s_hook (void *user, const char *text, size_t len, size_t pos, size_t name_len,
        tm_expr_slot_t *out, size_t *end, char canon[TM_EXPR_MAX_NAME + 1])
{
    int *calls = (int *) user;
    (*calls)++;
    const char *p = text + pos;
    if (name_len == 5 && strncasecmp (p, "count", 5) == 0 && len - pos >= 8
        && memcmp (p + 5, "(*)", 3) == 0) {
        out->slot = 30;
        out->type = TM_EXPR_NUMBER;
        *end = pos + 8;
        strcpy (canon, "count(*)");
        return 0;
    }
    if (name_len == 3 && strncasecmp (p, "avg", 3) == 0) {
        //  The argument is an expression: compile it with the row resolver.
        size_t arg_end;
        tm_expr_error_t err;
        tm_expr_t *arg = tm_expr_compile_at (text, len, pos + 4, &s_opts, &arg_end, &err);
        if (!arg || arg_end >= len || text[arg_end] != ')') {
            tm_expr_destroy (&arg);
            return -1;
        }
        char *inner = tm_expr_print (arg, 0);
        snprintf (canon, TM_EXPR_MAX_NAME + 1, "avg(%s)", inner);
        free (inner);
        tm_expr_destroy (&arg);
        out->slot = 31;
        out->type = TM_EXPR_NUMBER;
        *end = arg_end + 1;
        return 0;
    }
    return -1;
}

static void
test_call_hook (void **state)
{
    (void) state;
    int calls = 0;
    tm_expr_options_t opts = {s_resolve, s_hook, &calls, TM_EXPR_ANY};
    tm_expr_error_t err;
    tm_expr_t *e = tm_expr_compile ("COUNT(*) > 5 AND AVG( pm25+1 ) * 2 > 70", &opts, &err);
    assert_non_null (e);
    assert_int_equal (calls, 2);
    char *printed = tm_expr_print (e, 0);
    assert_string_equal (printed, "count(*) > 5 AND avg(pm25 + 1) * 2 > 70");
    tm_expr_t *again = tm_expr_compile (printed, &opts, &err);
    assert_non_null (again);
    char *reprinted = tm_expr_print (again, 0);
    assert_string_equal (printed, reprinted);
    assert_int_equal (tm_expr_slots (e), 32);
    tm_expr_value_t v[32];
    s_values (v);
    v[30] = tm_expr_number (6);
    v[31] = tm_expr_number (36);
    assert_true (tm_expr_match (e, v, 32));
    v[31] = tm_expr_number (34);
    assert_false (tm_expr_match (e, v, 32));
    //  The call text survives serialisation.
    size_t size;
    uint8_t *bytes = tm_expr_serialise (e, &size);
    tm_expr_t *copy = tm_expr_deserialise (bytes, size, NULL, &err);
    assert_non_null (copy);
    char *p3 = tm_expr_print (copy, 0);
    assert_string_equal (p3, printed);
    free (p3);
    free (bytes);
    free (printed);
    free (reprinted);
    tm_expr_destroy (&e);
    tm_expr_destroy (&again);
    tm_expr_destroy (&copy);
    //  A hook that declines leaves an unknown-function error.
    assert_null (tm_expr_compile ("sum(x) > 1", &opts, &err));
    assert_int_equal (err.code, TM_EXPR_E_UNKNOWN_FUNCTION);
    assert_string_equal (err.message, "at column 1: unknown function 'sum'");
    //  Built-in names never reach the hook.
    calls = 0;
    e = tm_expr_compile ("max(x, 1)", &opts, &err);
    assert_non_null (e);
    assert_int_equal (calls, 0);
    tm_expr_destroy (&e);
}

static void
test_runtime_safety (void **state)
{
    (void) state;
    tm_expr_t *e = s_compile ("x + y");
    tm_expr_value_t r;
    //  Fewer values than slots: the missing ones are null.
    tm_expr_eval (e, NULL, 0, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    tm_expr_value_t v[NSLOTS];
    s_values (v);
    tm_expr_eval (e, v, 14, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    assert_int_equal (tm_expr_slots (e), 15);
    //  Values that are not finite read as null; so do unknown type tags.
    v[13] = tm_expr_number (NAN);
    tm_expr_eval (e, v, NSLOTS, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    v[13] = tm_expr_number (INFINITY);
    tm_expr_eval (e, v, NSLOTS, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    v[13].type = (tm_expr_type_t) 77;
    tm_expr_eval (e, v, NSLOTS, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    v[13] = tm_expr_number (1);
    v[14] = tm_expr_string ("2", 1);
    tm_expr_eval (e, v, NSLOTS, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    tm_expr_destroy (&e);
    //  The fused name-versus-constant comparison takes the same care.
    e = s_compile ("x > 1");
    tm_expr_eval (e, NULL, 0, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    s_values (v);
    v[13] = tm_expr_number (NAN);
    tm_expr_eval (e, v, NSLOTS, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    v[13] = tm_expr_string ("2", 1);
    tm_expr_eval (e, v, NSLOTS, &r);
    assert_int_equal (r.type, TM_EXPR_NULL);
    v[13] = tm_expr_number (2);
    tm_expr_eval (e, v, NSLOTS, &r);
    assert_true (r.type == TM_EXPR_BOOL && r.b);
    tm_expr_destroy (&e);
    s_values (v);
    v[17] = tm_expr_string ("seven", 5);
    r = s_eval_with ("any > 6", v);
    assert_int_equal (r.type, TM_EXPR_NULL);
    r = s_eval_with ("any <= 'z'", v);
    assert_true (r.type == TM_EXPR_BOOL && r.b);
    v[17] = tm_expr_number (7);
    r = s_eval_with ("any = 'seven'", v);
    assert_int_equal (r.type, TM_EXPR_NULL);
    r = s_eval_with ("any != 7", v);
    assert_true (r.type == TM_EXPR_BOOL && !r.b);
    //  And the general one, with an expression on the left.
    r = s_eval_with ("x + 1 >= 4 AND x * 2 != 6", v);
    assert_true (r.type == TM_EXPR_BOOL && !r.b);
    //  A NULL string pointer reads as ''.
    s_values (v);
    v[16] = tm_expr_string (NULL, 0);
    r = s_eval_with ("s = ''", v);
    assert_true (r.type == TM_EXPR_BOOL && r.b);
    //  Constants.
    e = s_compile ("2 * 3");
    assert_true (tm_expr_is_constant (e));
    assert_int_equal (tm_expr_slots (e), 0);
    tm_expr_eval (e, NULL, 0, &r);
    assert_true (r.type == TM_EXPR_NUMBER && r.num == 6);
    tm_expr_destroy (&e);
    tm_expr_destroy (&e);
    tm_expr_destroy (NULL);
    assert_string_equal (tm_expr_type_name (TM_EXPR_LOCATION), "location");
    assert_string_equal (tm_expr_type_name ((tm_expr_type_t) 9), "invalid");
}


//  ---------------------------------------------------------------------
//  Batches: tm_expr_eval_batch must give, row for row, what tm_expr_eval
//  gives. Random expressions over untyped slots (so nothing is refused at
//  compile time and every operator meets every kind of value) and random
//  rows with nulls, non-finite numbers, off-globe locations and shared
//  string pointers.

#define B_SLOTS 6

static int
s_resolve_any (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    (void) user;
    if (len == 2 && name[0] == 'v' && name[1] >= '0' && name[1] < '0' + B_SLOTS) {
        out->slot = (uint32_t) (name[1] - '0');
        out->type = TM_EXPR_ANY;
        return 0;
    }
    return -1;
}

static uint64_t s_rng = 88172645463325252ULL;

static uint32_t
s_rand (uint32_t n)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t) (s_rng % n);
}

static const char *s_words[] = {"air", "traffic", "air_station", "", "Brera"};

//  Append a random expression of at most depth levels to buf.
static void
s_gen_expr (char *buf, size_t cap, int depth)
{
    size_t len = strlen (buf);
    char *p = buf + len;
    size_t room = cap - len;
    if (room < 64)
        return;
    uint32_t pick = depth <= 0? s_rand (3): s_rand (14);
    switch (pick) {
        case 0:
            snprintf (p, room, "v%u", s_rand (B_SLOTS));
            return;
        case 1: {
            static const char *lits[] = {"1", "20", "-3.5", "'air'", "'air_station'", "''",
                                         "TRUE", "FALSE", "NULL", "45.46", "0"};
            snprintf (p, room, "%s", lits[s_rand (sizeof lits / sizeof lits[0])]);
            return;
        }
        case 2:
            snprintf (p, room, "v%u", s_rand (B_SLOTS));
            return;
        case 3: case 4: {
            static const char *cmp[] = {"=", "!=", "<", "<=", ">", ">="};
            snprintf (p, room, "(v%u %s ", s_rand (B_SLOTS), cmp[s_rand (6)]);
            s_gen_expr (buf, cap, 0);
            strncat (buf, ")", cap - strlen (buf) - 1);
            return;
        }
        case 5: case 6: {
            static const char *ops[] = {" AND ", " OR ", " + ", " - ", " * ", " / ", " % ",
                                        " = ", " < "};
            const char *op = ops[s_rand (sizeof ops / sizeof ops[0])];
            strncat (buf, "(", cap - strlen (buf) - 1);
            uint32_t terms = 2 + s_rand (3);
            for (uint32_t t = 0; t < terms; t++) {
                if (t)
                    strncat (buf, op, cap - strlen (buf) - 1);
                s_gen_expr (buf, cap, depth - 1);
            }
            strncat (buf, ")", cap - strlen (buf) - 1);
            return;
        }
        case 7:
            strncat (buf, "NOT (", cap - strlen (buf) - 1);
            s_gen_expr (buf, cap, depth - 1);
            strncat (buf, ")", cap - strlen (buf) - 1);
            return;
        case 8:
            snprintf (p, room, "within(v%u, 45.46, 9.19, %s)", s_rand (B_SLOTS),
                      s_rand (4)? "2000": "-1");
            return;
        case 9:
            snprintf (p, room, "(v%u IN ('air', 1, %s))", s_rand (B_SLOTS),
                      s_rand (2)? "NULL": "'Brera'");
            return;
        case 10: {
            static const char *fns[] = {"abs", "round", "coalesce", "min", "max", "sqrt"};
            snprintf (p, room, "%s(", fns[s_rand (sizeof fns / sizeof fns[0])]);
            s_gen_expr (buf, cap, depth - 1);
            strncat (buf, ")", cap - strlen (buf) - 1);
            return;
        }
        case 11:
            snprintf (p, room, "(v%u IS NULL)", s_rand (B_SLOTS));
            return;
        case 12:
            snprintf (p, room, "(v%u BETWEEN 1 AND 30)", s_rand (B_SLOTS));
            return;
        default:
            snprintf (p, room, "(distance(v%u, 45.46, 9.19) < 1500)", s_rand (B_SLOTS));
            return;
    }
}

static tm_expr_value_t
s_rand_value (void)
{
    switch (s_rand (9)) {
        case 0: return tm_expr_null ();
        case 1: return tm_expr_number ((double) s_rand (40) - 5);
        case 2: return tm_expr_number (s_rand (2)? NAN: INFINITY);
        case 3: {
            const char *w = s_words[s_rand (sizeof s_words / sizeof s_words[0])];
            return tm_expr_string (w, (uint32_t) strlen (w));
        }
        case 4: return tm_expr_bool (s_rand (2));
        case 5: return tm_expr_location (45.46 + ((double) s_rand (200) - 100) / 5000,
                                         9.19 + ((double) s_rand (200) - 100) / 5000);
        case 6: return tm_expr_location (95, 9.19);
        case 7: {
            tm_expr_value_t v = tm_expr_string (NULL, 0);
            return v;
        }
        default: return tm_expr_number (((double) s_rand (1000)) / 10);
    }
}

static bool
s_same (const tm_expr_value_t *a, const tm_expr_value_t *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
        case TM_EXPR_NUMBER: return a->num == b->num;
        case TM_EXPR_BOOL: return a->b == b->b;
        case TM_EXPR_STRING:
            return a->len == b->len && (a->len == 0 || memcmp (a->str, b->str, a->len) == 0);
        case TM_EXPR_LOCATION: return a->lat == b->lat && a->lon == b->lon;
        default: return true;
    }
}

static const tm_expr_value_t s_dict[] = {
    {.type = TM_EXPR_NULL},
    {.type = TM_EXPR_STRING, .len = 3, .str = "air"},
    {.type = TM_EXPR_STRING, .len = 11, .str = "air_station"},
    {.type = TM_EXPR_STRING, .len = 0, .str = ""},
    {.type = TM_EXPR_STRING, .len = 5, .str = "Brera"},
    {.type = TM_EXPR_STRING, .len = 7, .str = "traffic"},
};

static void
test_batch_matches_scalar (void **state)
{
    (void) state;
    const tm_expr_options_t opts = {s_resolve_any, NULL, NULL, TM_EXPR_ANY};
    enum { ROWS = 2500 };          //  More than one pass
    tm_expr_value_t *raw[B_SLOTS];     //  What the scalar evaluator is given
    tm_expr_value_t *vals[B_SLOTS];
    double *nums[B_SLOTS], *pairs[B_SLOTS];
    uint32_t *ids[B_SLOTS];
    for (int c = 0; c < B_SLOTS; c++) {
        raw[c] = calloc (ROWS, sizeof (tm_expr_value_t));
        vals[c] = calloc (ROWS, sizeof (tm_expr_value_t));
        nums[c] = calloc (ROWS, sizeof (double));
        pairs[c] = calloc (2 * ROWS, sizeof (double));
        ids[c] = calloc (ROWS, sizeof (uint32_t));
        assert_true (raw[c] && vals[c] && nums[c] && pairs[c] && ids[c]);
    }
    tm_expr_value_t *out = calloc (ROWS, sizeof *out);
    uint8_t *match = calloc (ROWS, 1);
    assert_true (out && match);
    size_t compiled = 0, checked = 0, typed = 0;
    for (int round = 0; round < 600; round++) {
        char text[2048] = "";
        s_gen_expr (text, sizeof text, 1 + s_rand (4));
        tm_expr_error_t err;
        tm_expr_t *e = tm_expr_compile (text, &opts, &err);
        if (!e)
            continue;
        compiled++;
        //  Each slot a column of a kind picked at random, with the values
        //  that kind can hold; slot 5 past ncols: null in every row.
        tm_expr_col_t cols[B_SLOTS - 1];
        for (int c = 0; c < B_SLOTS - 1; c++) {
            int kind = (int) s_rand (5);
            cols[c].kind = kind == 0? TM_EXPR_COL_VALUES: kind == 1? TM_EXPR_COL_NUMBERS
                         : kind == 2? TM_EXPR_COL_STRINGS: kind == 3? TM_EXPR_COL_LOCATIONS
                         : s_rand (4)? TM_EXPR_COL_VALUES: TM_EXPR_COL_NULL;
            typed += cols[c].kind != TM_EXPR_COL_VALUES;
            cols[c].dict = s_dict;
            cols[c].ndict = sizeof s_dict / sizeof s_dict[0];
            for (int i = 0; i < ROWS; i++) {
                switch (cols[c].kind) {
                    case TM_EXPR_COL_VALUES:
                        raw[c][i] = vals[c][i] = s_rand_value ();
                        break;
                    case TM_EXPR_COL_NUMBERS:
                        nums[c][i] = s_rand (6) == 0? NAN: s_rand (9) == 0? -INFINITY
                                   : (double) s_rand (160) / 4 - 5;
                        raw[c][i] = tm_expr_number (nums[c][i]);
                        break;
                    case TM_EXPR_COL_STRINGS:
                        ids[c][i] = s_rand (8);    //  6 and 7: past the dictionary
                        raw[c][i] = ids[c][i] < cols[c].ndict? s_dict[ids[c][i]]
                                                             : tm_expr_null ();
                        break;
                    case TM_EXPR_COL_LOCATIONS:
                        pairs[c][2 * i] = s_rand (7) == 0? NAN: s_rand (11) == 0? 91
                                        : 45.46 + ((double) s_rand (400) - 200) / 10000;
                        pairs[c][2 * i + 1] = 9.19 + ((double) s_rand (400) - 200) / 7000;
                        raw[c][i] = tm_expr_location (pairs[c][2 * i], pairs[c][2 * i + 1]);
                        break;
                    default:
                        raw[c][i] = tm_expr_null ();
                        break;
                }
            }
            if (cols[c].kind == TM_EXPR_COL_VALUES)
                cols[c].values = vals[c];
            else
            if (cols[c].kind == TM_EXPR_COL_NUMBERS)
                cols[c].nums = nums[c];
            else
            if (cols[c].kind == TM_EXPR_COL_STRINGS)
                cols[c].ids = ids[c];
            else
                cols[c].latlon = pairs[c];
        }
        tm_expr_batch_t *b = tm_expr_batch_new (e);
        assert_non_null (b);
        //  Twice with the same scratch: what it caches must not change answers.
        for (int twice = 0; twice < 2; twice++) {
            tm_expr_eval_batch (b, cols, B_SLOTS - 1, ROWS, out);
            tm_expr_match_batch (b, cols, B_SLOTS - 1, ROWS, match);
            tm_expr_value_t row[B_SLOTS];
            for (int i = 0; i < ROWS; i++) {
                for (int c = 0; c < B_SLOTS - 1; c++)
                    row[c] = raw[c][i];
                tm_expr_value_t want;
                tm_expr_eval (e, row, B_SLOTS - 1, &want);
                if (!s_same (&want, &out[i]))
                    fail_msg ("%s: row %d: batch gives type %d, scalar type %d", text, i,
                              out[i].type, want.type);
                if (match[i] != tm_expr_match (e, row, B_SLOTS - 1))
                    fail_msg ("%s: row %d: match_batch differs", text, i);
                checked++;
            }
        }
        tm_expr_batch_destroy (&b);
        assert_null (b);
        tm_expr_destroy (&e);
    }
    //  The generator must really produce expressions, over typed columns too.
    assert_true (compiled > 300);
    assert_true (typed > 300);
    assert_true (checked > 300 * ROWS);
    for (int c = 0; c < B_SLOTS; c++) {
        free (raw[c]);
        free (vals[c]);
        free (nums[c]);
        free (pairs[c]);
        free (ids[c]);
    }
    free (out);
    free (match);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_precedence),
        cmocka_unit_test (test_canonical_print),
        cmocka_unit_test (test_operators),
        cmocka_unit_test (test_null_logic),
        cmocka_unit_test (test_type_errors),
        cmocka_unit_test (test_syntax_errors),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_geo),
        cmocka_unit_test (test_print_round_trip),
        cmocka_unit_test (test_serialise),
        cmocka_unit_test (test_compile_at),
        cmocka_unit_test (test_call_hook),
        cmocka_unit_test (test_runtime_safety),
        cmocka_unit_test (test_batch_matches_scalar),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
