/*  test_query - the query language: clauses, errors with positions, plans

    The parser is checked clause by clause against what the workers and
    the broker read back (columns, aggregates, outputs, ORDER BY, LIMIT,
    sites), errors by their exact messages and columns, and the plan by
    an encode / decode round trip and by hostile bytes.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tm_codec.h"
#include "tm_query.h"

static tm_query_t *
s_parse (const char *text)
{
    tm_expr_error_t err;
    tm_query_t *q = tm_query_parse (text, &err);
    if (!q)
        fail_msg ("'%s' did not parse: %s", text, err.message);
    return q;
}

static char *
s_print (const tm_expr_t *e)
{
    return e? tm_expr_print (e, 0): strdup ("(none)");
}

static void
s_assert_prints (const tm_expr_t *e, const char *want)
{
    char *got = s_print (e);
    assert_non_null (got);
    assert_string_equal (got, want);
    free (got);
}

static int
s_column (const tm_query_t *q, const char *name)
{
    for (size_t i = 0; i < tm_query_columns (q); i++)
        if (strcmp (tm_query_column_name (q, i), name) == 0)
            return (int) i;
    return -1;
}

static void
test_aggregate_query (void **state)
{
    (void) state;
    tm_query_t *q = s_parse (
        "select district, COUNT(*), avg(pm25), max(pm25) - min(pm25) AS spread, p90(pm25)\n"
        "FROM twins\n"
        "WHERE model = 'air_station' AND pm25 > 35 AND within(location, 45.4642, 9.19, 2000)\n"
        "GROUP BY district HAVING count(*) >= 2 ORDER BY avg(pm25) DESC, 1 LIMIT 10");
    assert_true (tm_query_is_aggregate (q));
    assert_true (tm_query_has_final (q));
    assert_int_equal (tm_query_limit (q), 10);
    assert_int_equal (tm_query_sites (q), 0);
    assert_false (tm_query_all_sites (q));
    //  Columns: every name once, with its type.
    assert_int_equal (tm_query_columns (q), 4);
    assert_true (s_column (q, "model") >= 0);
    assert_int_equal (tm_query_column_type (q, (size_t) s_column (q, "model")), TM_EXPR_STRING);
    assert_int_equal (tm_query_column_type (q, (size_t) s_column (q, "pm25")), TM_EXPR_ANY);
    assert_true (s_column (q, "location") >= 0);
    assert_true (s_column (q, "district") >= 0);
    assert_null (tm_query_column_name (q, 4));
    s_assert_prints (tm_query_where (q),
                     "model = 'air_station' AND pm25 > 35 AND within(location, 45.4642, 9.19, "
                     "2000)");
    assert_int_equal (tm_query_group_keys (q), 1);
    s_assert_prints (tm_query_group_key (q, 0), "district");
    //  Aggregates in order of appearance, identical ones shared.
    assert_int_equal (tm_query_aggregates (q), 5);
    const tm_expr_t *arg;
    double qq;
    assert_int_equal (tm_query_aggregate (q, 0, &qq, &arg), TM_QUERY_AGG_COUNT);
    assert_null (arg);
    assert_int_equal (tm_query_aggregate (q, 1, &qq, &arg), TM_QUERY_AGG_AVG);
    s_assert_prints (arg, "pm25");
    assert_int_equal (tm_query_aggregate (q, 2, &qq, &arg), TM_QUERY_AGG_MAX);
    assert_int_equal (tm_query_aggregate (q, 3, &qq, &arg), TM_QUERY_AGG_MIN);
    assert_int_equal (tm_query_aggregate (q, 4, &qq, &arg), TM_QUERY_AGG_QUANTILE);
    assert_true (qq == 0.9);
    //  Final phase: titles, expressions over keys and aggregates.
    assert_int_equal (tm_query_outputs (q), 5);
    assert_string_equal (tm_query_output_title (q, 0), "district");
    assert_string_equal (tm_query_output_title (q, 1), "count(*)");
    assert_string_equal (tm_query_output_title (q, 2), "avg(pm25)");
    assert_string_equal (tm_query_output_title (q, 3), "spread");
    assert_string_equal (tm_query_output_title (q, 4), "p90(pm25)");
    s_assert_prints (tm_query_output (q, 3), "max(pm25) - min(pm25)");
    s_assert_prints (tm_query_having (q), "count(*) >= 2");
    assert_int_equal (tm_query_order_keys (q), 2);
    bool desc;
    s_assert_prints (tm_query_order_key (q, 0, &desc), "avg(pm25)");
    assert_true (desc);
    s_assert_prints (tm_query_order_key (q, 1, &desc), "district");
    assert_false (desc);
    assert_string_equal (tm_query_text (q),
                         "select district, COUNT(*), avg(pm25), max(pm25) - min(pm25) AS "
                         "spread, p90(pm25)\nFROM twins\nWHERE model = 'air_station' AND pm25 > "
                         "35 AND within(location, 45.4642, 9.19, 2000)\nGROUP BY district "
                         "HAVING count(*) >= 2 ORDER BY avg(pm25) DESC, 1 LIMIT 10");
    tm_query_destroy (&q);
    assert_null (q);
    tm_query_destroy (&q);
    tm_query_destroy (NULL);
}

static void
test_row_query (void **state)
{
    (void) state;
    tm_query_t *q = s_parse ("SELECT entity, pm25 * 2 AS double, max(pm25, pm10) FROM twins "
                             "WHERE NOT stale ORDER BY double DESC, entity LIMIT 5;");
    assert_false (tm_query_is_aggregate (q));
    assert_int_equal (tm_query_aggregates (q), 0);
    assert_int_equal (tm_query_group_keys (q), 0);
    assert_int_equal (tm_query_limit (q), 5);
    assert_int_equal (tm_query_outputs (q), 3);
    assert_string_equal (tm_query_output_title (q, 1), "double");
    //  Two-argument max is tm_expr's scalar function, not an aggregate.
    s_assert_prints (tm_query_output (q, 2), "max(pm25, pm10)");
    assert_string_equal (tm_query_output_title (q, 2), "max(pm25, pm10)");
    bool desc;
    s_assert_prints (tm_query_order_key (q, 0, &desc), "pm25 * 2");
    assert_true (desc);
    s_assert_prints (tm_query_order_key (q, 1, &desc), "entity");
    assert_false (desc);
    assert_int_equal (tm_query_column_type (q, (size_t) s_column (q, "stale")), TM_EXPR_BOOL);
    tm_query_destroy (&q);

    //  SELECT * is entity, model, status.
    q = s_parse ("SELECT * FROM twins");
    assert_int_equal (tm_query_outputs (q), 3);
    assert_string_equal (tm_query_output_title (q, 0), "entity");
    assert_string_equal (tm_query_output_title (q, 2), "status");
    assert_null (tm_query_where (q));
    assert_int_equal (tm_query_limit (q), 0);
    tm_query_destroy (&q);

    //  Quoted names, keywords in any case, a name that is a clause word.
    q = s_parse ("sElEcT \"odd name\", \"limit\" FrOm twins wHeRe \"odd name\" IS NOT NULL");
    assert_int_equal (tm_query_columns (q), 2);
    assert_true (s_column (q, "odd name") >= 0);
    assert_true (s_column (q, "limit") >= 0);
    assert_string_equal (tm_query_output_title (q, 0), "\"odd name\"");
    tm_query_destroy (&q);
}

static void
test_group_by_forms (void **state)
{
    (void) state;
    //  GROUP BY without aggregates: distinct groups.
    tm_query_t *q = s_parse ("SELECT model FROM twins GROUP BY model");
    assert_true (tm_query_is_aggregate (q));
    assert_int_equal (tm_query_aggregates (q), 0);
    tm_query_destroy (&q);
    //  A select item equal to a GROUP BY expression is that key.
    q = s_parse ("SELECT round(pm25 / 10) * 10 AS band, count(*) FROM twins "
                 "GROUP BY round(pm25/10)*10 ORDER BY round(pm25 / 10) * 10 DESC");
    assert_int_equal (tm_query_group_keys (q), 1);
    assert_string_equal (tm_query_output_title (q, 0), "band");
    assert_int_equal (tm_query_order_keys (q), 1);
    tm_query_destroy (&q);
    //  GROUP BY an alias: the key is the item's expression, and the item
    //  is that key (no "must appear in GROUP BY" error for it).
    q = s_parse ("SELECT round(pm25 / 10) * 10 AS band, count(*) FROM twins "
                 "GROUP BY band ORDER BY band");
    assert_int_equal (tm_query_group_keys (q), 1);
    s_assert_prints (tm_query_group_key (q, 0), "round(pm25 / 10) * 10");
    assert_string_equal (tm_query_output_title (q, 0), "band");
    tm_query_destroy (&q);
    q = s_parse ("SELECT district AS d, model AS m, count(*) FROM twins GROUP BY m, d HAVING "
                 "count(*) > 1");
    assert_int_equal (tm_query_group_keys (q), 2);
    s_assert_prints (tm_query_group_key (q, 0), "model");
    s_assert_prints (tm_query_group_key (q, 1), "district");
    tm_query_destroy (&q);
    //  A name that is no alias is a column, as before.
    q = s_parse ("SELECT pm25 AS p, count(*) FROM twins GROUP BY pm25");
    s_assert_prints (tm_query_group_key (q, 0), "pm25");
    tm_query_destroy (&q);
    //  Keys may be used inside final expressions; ORDER BY by alias and
    //  by an aggregate not selected (it becomes one more aggregate).
    q = s_parse ("SELECT district AS d, model, sum(pm25) / count(pm25) FROM twins "
                 "GROUP BY district, model ORDER BY d, p99(pm25)");
    assert_int_equal (tm_query_group_keys (q), 2);
    assert_int_equal (tm_query_aggregates (q), 3);
    s_assert_prints (tm_query_output (q, 2), "sum(pm25) / count(pm25)");
    tm_query_destroy (&q);
    //  Without GROUP BY: aggregates alone, identical ones shared.
    q = s_parse ("SELECT count(*), COUNT( * ), avg(pm25 + 1), avg(pm25+1) FROM twins");
    assert_int_equal (tm_query_aggregates (q), 2);
    assert_string_equal (tm_query_output_title (q, 1), "count(*)");
    assert_string_equal (tm_query_output_title (q, 3), "avg(pm25 + 1)");
    tm_query_destroy (&q);
}

static void
test_sites (void **state)
{
    (void) state;
    tm_query_t *q = s_parse ("SELECT count(*) FROM twins AT SITES (milan, 'turin', \"rome 2\")");
    assert_int_equal (tm_query_sites (q), 3);
    assert_string_equal (tm_query_site (q, 0), "milan");
    assert_string_equal (tm_query_site (q, 1), "turin");
    assert_string_equal (tm_query_site (q, 2), "rome 2");
    assert_null (tm_query_site (q, 3));
    assert_false (tm_query_all_sites (q));
    tm_query_destroy (&q);
    q = s_parse ("SELECT count(*) FROM twins at all sites ;");
    assert_int_equal (tm_query_sites (q), 0);
    assert_true (tm_query_all_sites (q));
    tm_query_destroy (&q);
}

static void
test_errors (void **state)
{
    (void) state;
    struct {
        const char *text;              //  Query
        int code;                      //  TM_EXPR_E_*
        unsigned line;                 //  Where
        unsigned column;
        const char *message;           //  Exact
    } cases[] = {
        {"", TM_EXPR_E_SYNTAX, 1, 1, "at column 1: expected SELECT, found end of input"},
        {"SELEC x FROM twins", TM_EXPR_E_SYNTAX, 1, 1,
         "at column 1: expected SELECT, found 'SELEC'"},
        {"SELECT x FROM twin", TM_EXPR_E_SYNTAX, 1, 15,
         "at column 15: expected 'twins' after FROM, found 'twin'"},
        {"SELECT x, FROM twins", TM_EXPR_E_SYNTAX, 1, 11,
         "at column 11: expected an operand, found 'FROM'"},
        {"SELECT x y FROM twins", TM_EXPR_E_SYNTAX, 1, 10,
         "at column 10: expected ',', AS or FROM after a select item, found 'y'"},
        {"SELECT x AS FROM twins", TM_EXPR_E_SYNTAX, 1, 13,
         "at column 13: expected a name after AS, found 'FROM'"},
        {"SELECT x FROM twins WHERE x >", TM_EXPR_E_SYNTAX, 1, 30,
         "at column 30: expected an operand after '>', found end of input"},
        {"SELECT x FROM twins\nWHERE y >\n  GROUP BY z", TM_EXPR_E_SYNTAX, 3, 3,
         "at line 3, column 3: expected an operand after '>', found 'GROUP'"},
        {"SELECT x FROM twins WHERE x + 1", TM_EXPR_E_TYPE, 1, 27,
         "at column 27: expected a boolean expression, found a number"},
        {"SELECT x FROM twins GROUP x", TM_EXPR_E_SYNTAX, 1, 27,
         "at column 27: expected BY after GROUP, found 'x'"},
        {"SELECT a FROM twins WHERE a > 1 GROUPBY a", TM_EXPR_E_SYNTAX, 1, 33,
         "at column 33: expected GROUP BY, HAVING, ORDER BY, LIMIT, AT SITES, ';' or end of "
         "input, found 'GROUPBY'"},
        {"SELECT x FROM twins LIMIT 5 WHERE x > 1", TM_EXPR_E_SYNTAX, 1, 29,
         "at column 29: expected AT SITES, ';' or end of input, found 'WHERE'"},
        {"SELECT x FROM twins;;", TM_EXPR_E_SYNTAX, 1, 21,
         "at column 21: expected end of input, found ';'"},
        {"SELECT pm25, count(*) FROM twins", TM_EXPR_E_UNKNOWN_NAME, 1, 8,
         "at column 8: column 'pm25' must appear in GROUP BY or inside an aggregate"},
        {"SELECT count(*) FROM twins GROUP BY y ORDER BY x", TM_EXPR_E_UNKNOWN_NAME, 1, 48,
         "at column 48: column 'x' must appear in GROUP BY or inside an aggregate"},
        {"SELECT max(x) + z FROM twins GROUP BY y", TM_EXPR_E_UNKNOWN_NAME, 1, 17,
         "at column 17: column 'z' must appear in GROUP BY or inside an aggregate"},
        {"SELECT pm25 FROM twins WHERE max(pm25) > 3", TM_EXPR_E_SYNTAX, 1, 30,
         "at column 30: aggregate max() is not allowed in WHERE"},
        {"SELECT x FROM twins GROUP BY count(*)", TM_EXPR_E_SYNTAX, 1, 30,
         "at column 30: aggregate count() is not allowed in GROUP BY"},
        {"SELECT count(*) AS n FROM twins GROUP BY n", TM_EXPR_E_SYNTAX, 1, 8,
         "at column 8: aggregate count() is not allowed in GROUP BY"},
        {"SELECT sum(avg(x)) FROM twins", TM_EXPR_E_SYNTAX, 1, 12,
         "at column 12: aggregate avg() cannot be nested inside sum()"},
        {"SELECT count(x, y) FROM twins", TM_EXPR_E_SYNTAX, 1, 15,
         "at column 15: expected ')' to close count(, found ','"},
        {"SELECT avg(x FROM twins", TM_EXPR_E_SYNTAX, 1, 14,
         "at column 14: expected ')' to close avg(, found 'FROM'"},
        {"SELECT sum('a') FROM twins", TM_EXPR_E_TYPE, 1, 12,
         "at column 12: sum() needs a number, found a string"},
        {"SELECT frob(x) FROM twins", TM_EXPR_E_UNKNOWN_FUNCTION, 1, 8,
         "at column 8: unknown function 'frob'"},
        {"SELECT x FROM twins HAVING x > 1", TM_EXPR_E_SYNTAX, 1, 21,
         "at column 21: HAVING needs GROUP BY or an aggregate in SELECT"},
        {"SELECT * FROM twins GROUP BY model", TM_EXPR_E_SYNTAX, 1, 8,
         "at column 8: SELECT * cannot be used with GROUP BY or aggregates"},
        {"SELECT x FROM twins ORDER BY 2", TM_EXPR_E_SYNTAX, 1, 30,
         "at column 30: ORDER BY column number must be from 1 to 1"},
        {"SELECT x FROM twins ORDER BY count(*)", TM_EXPR_E_SYNTAX, 1, 30,
         "at column 30: aggregate count() is not allowed in ORDER BY of a query without "
         "aggregates"},
        {"SELECT x FROM twins LIMIT 0", TM_EXPR_E_LIMIT, 1, 27,
         "at column 27: expected a whole number from 1 to 100000 after LIMIT, found '0'"},
        {"SELECT x FROM twins LIMIT 100001", TM_EXPR_E_LIMIT, 1, 27,
         "at column 27: expected a whole number from 1 to 100000 after LIMIT, found '100001'"},
        {"SELECT x FROM twins LIMIT ten", TM_EXPR_E_SYNTAX, 1, 27,
         "at column 27: expected a whole number from 1 to 100000 after LIMIT, found 'ten'"},
        {"SELECT x FROM twins AT SITES milan", TM_EXPR_E_SYNTAX, 1, 30,
         "at column 30: expected '(' after AT SITES, found 'milan'"},
        {"SELECT x FROM twins AT SITES (a, a)", TM_EXPR_E_SYNTAX, 1, 34,
         "at column 34: site 'a' is named twice"},
        {"SELECT x FROM twins AT", TM_EXPR_E_SYNTAX, 1, 23,
         "at column 23: expected SITES or ALL SITES after AT, found end of input"},
        {"SELECT x FROM twins AT SITES (a b)", TM_EXPR_E_SYNTAX, 1, 33,
         "at column 33: expected ',' or ')' after a site name, found 'b'"},
        {"SELECT model + 1 FROM twins", TM_EXPR_E_TYPE, 1, 8,
         "at column 8: '+' needs a number, found a string"},
        //  A one-argument max in the wrong place is named as written.
        {"SELECT x FROM twins WHERE x MAX(y)", TM_EXPR_E_SYNTAX, 1, 29,
         "at column 29: expected GROUP BY, HAVING, ORDER BY, LIMIT, AT SITES, ';' or end of "
         "input, found 'MAX'"},
        {"SELECT 'caf\xc3\xa9' AS x, y z FROM twins", TM_EXPR_E_SYNTAX, 1, 23,
         "at column 23: expected ',', AS or FROM after a select item, found 'z'"},
        {"SELECT x AS y z FROM twins", TM_EXPR_E_SYNTAX, 1, 15,
         "at column 15: expected ',' or FROM after a select item, found 'z'"},
        {"SELECT x\xff FROM twins", TM_EXPR_E_SYNTAX, 1, 9, "at column 9: the text is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tm_expr_error_t err;
        tm_query_t *q = tm_query_parse (cases[i].text, &err);
        if (q)
            fail_msg ("case %zu '%s' parsed", i, cases[i].text);
        if (strcmp (err.message, cases[i].message) != 0 || err.code != cases[i].code
            || err.line != cases[i].line || err.column != cases[i].column)
            fail_msg ("case %zu: got code %d %u:%u '%s', want code %d %u:%u '%s'", i, err.code,
                      err.line, err.column, err.message, cases[i].code, cases[i].line,
                      cases[i].column, cases[i].message);
    }
    //  No err: still fine.
    assert_null (tm_query_parse ("SELECT", NULL));
    assert_null (tm_query_parse (NULL, NULL));
}

#define S_TEXT_CAP (TM_QUERY_MAX_TEXT + 64)    //  test_limits' query text buffer

//  Append to test_limits' query text at *n, bounded by the buffer: a test
//  that outgrows it fails instead of writing past it.
static void __attribute__ ((format (printf, 3, 4)))
s_add (char *text, size_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    int rc = vsnprintf (text + *n, S_TEXT_CAP - *n, fmt, ap);
    va_end (ap);
    assert_true (rc >= 0 && (size_t) rc < S_TEXT_CAP - *n);
    *n += (size_t) rc;
}

//  The same at n, which stays where it is (a tail tried more than once).
#define s_add_at(text, n, ...) \
    do { size_t at_ = (n); s_add ((text), &at_, __VA_ARGS__); } while (0)

static void
test_limits (void **state)
{
    (void) state;
    tm_expr_error_t err;
    char *text = (char *) malloc (S_TEXT_CAP);
    assert_non_null (text);
    //  Over the text limit.
    memset (text, ' ', TM_QUERY_MAX_TEXT + 10);
    memcpy (text, "SELECT x FROM twins", 19);
    text[TM_QUERY_MAX_TEXT + 10] = 0;
    assert_null (tm_query_parse (text, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    //  65 select items, 64 fine.
    size_t n = 0;
    s_add (text, &n, "SELECT c0");
    for (int i = 1; i < TM_QUERY_MAX_SELECT; i++)
        s_add (text, &n, ", c%d", i);
    s_add_at (text, n, " FROM twins");
    tm_query_t *q = tm_query_parse (text, &err);
    assert_non_null (q);
    assert_int_equal (tm_query_outputs (q), TM_QUERY_MAX_SELECT);
    tm_query_destroy (&q);
    s_add_at (text, n, ", extra FROM twins");
    assert_null (tm_query_parse (text, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    assert_non_null (strstr (err.message, "more than 64 select items"));
    //  257 distinct names.
    n = 0;
    s_add (text, &n, "SELECT c0 FROM twins WHERE c0 IS NULL");
    for (int i = 1; i <= TM_QUERY_MAX_COLUMNS; i++)
        s_add (text, &n, " OR c%d IS NULL", i);
    assert_null (tm_query_parse (text, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    assert_non_null (strstr (err.message, "more than 256 distinct names"));
    //  17 GROUP BY keys.
    n = 0;
    s_add (text, &n, "SELECT count(*) FROM twins GROUP BY k0");
    for (int i = 1; i <= TM_QUERY_MAX_GROUP_KEYS; i++)
        s_add (text, &n, ", k%d", i);
    assert_null (tm_query_parse (text, &err));
    assert_non_null (strstr (err.message, "more than 16 GROUP BY keys"));
    //  9 ORDER BY keys.
    n = 0;
    s_add (text, &n, "SELECT x FROM twins ORDER BY k0");
    for (int i = 1; i <= TM_QUERY_MAX_ORDER; i++)
        s_add (text, &n, ", k%d", i);
    assert_null (tm_query_parse (text, &err));
    assert_non_null (strstr (err.message, "more than 8 ORDER BY keys"));
    //  65 distinct aggregates.
    n = 0;
    s_add (text, &n, "SELECT sum(a0)");
    for (int i = 1; i <= TM_QUERY_MAX_AGGREGATES; i++)
        s_add (text, &n, " + sum(a%d)", i);
    s_add_at (text, n, " FROM twins");
    assert_null (tm_query_parse (text, &err));
    assert_non_null (strstr (err.message, "more than 64 distinct aggregates"));
    //  17 sites.
    n = 0;
    s_add (text, &n, "SELECT x FROM twins AT SITES (s0");
    for (int i = 1; i <= TM_QUERY_MAX_SITES; i++)
        s_add (text, &n, ", s%d", i);
    s_add_at (text, n, ")");
    assert_null (tm_query_parse (text, &err));
    assert_non_null (strstr (err.message, "more than 16 sites"));
    //  Largest LIMIT.
    q = tm_query_parse ("SELECT x FROM twins LIMIT 100000", &err);
    assert_non_null (q);
    assert_int_equal (tm_query_limit (q), TM_QUERY_MAX_LIMIT);
    tm_query_destroy (&q);
    //  An aggregate's canonical text over 128 bytes.
    n = 0;
    s_add (text, &n, "SELECT sum(a");
    for (int i = 0; i < 40; i++)
        s_add (text, &n, " + b%d", i);
    s_add_at (text, n, ") FROM twins");
    assert_null (tm_query_parse (text, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    //  Deep nesting comes back as tm_expr's limit error, not a crash.
    n = 0;
    s_add (text, &n, "SELECT ");
    for (int i = 0; i < 2000; i++)
        text[n++] = '(';
    s_add_at (text, n, "x");
    assert_null (tm_query_parse (text, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
    free (text);
}

static void
test_builtin_types (void **state)
{
    (void) state;
    assert_int_equal (tm_query_builtin_type ("entity"), TM_EXPR_STRING);
    assert_int_equal (tm_query_builtin_type ("status"), TM_EXPR_STRING);
    assert_int_equal (tm_query_builtin_type ("parent"), TM_EXPR_STRING);
    assert_int_equal (tm_query_builtin_type ("anomalous"), TM_EXPR_BOOL);
    assert_int_equal (tm_query_builtin_type ("confidence"), TM_EXPR_NUMBER);
    assert_int_equal (tm_query_builtin_type ("updated"), TM_EXPR_NUMBER);
    assert_int_equal (tm_query_builtin_type ("pm25.mean"), TM_EXPR_NUMBER);
    assert_int_equal (tm_query_builtin_type ("pm25.out_of_range"), TM_EXPR_BOOL);
    assert_int_equal (tm_query_builtin_type ("pm25"), TM_EXPR_ANY);
    assert_int_equal (tm_query_builtin_type ("location.lat"), TM_EXPR_ANY);
    assert_int_equal (tm_query_builtin_type (".mean"), TM_EXPR_ANY);
    assert_int_equal (tm_query_builtin_type (NULL), TM_EXPR_ANY);
}

//  Encode, decode, compare what a worker sees, encode again.
static void
s_round_trip (const char *text)
{
    tm_query_t *q = s_parse (text);
    size_t size = 0, size2 = 0;
    uint8_t *bytes = tm_query_plan_encode (q, &size);
    assert_non_null (bytes);
    tm_expr_error_t err;
    tm_query_t *d = tm_query_plan_decode (bytes, size, &err);
    if (!d)
        fail_msg ("'%s': plan did not decode: %s", text, err.message);
    assert_false (tm_query_has_final (d));
    assert_string_equal (tm_query_text (d), text);
    assert_int_equal (tm_query_is_aggregate (d), tm_query_is_aggregate (q));
    assert_int_equal (tm_query_columns (d), tm_query_columns (q));
    for (size_t i = 0; i < tm_query_columns (q); i++) {
        assert_string_equal (tm_query_column_name (d, i), tm_query_column_name (q, i));
        assert_int_equal (tm_query_column_type (d, i), tm_query_column_type (q, i));
    }
    char *a = s_print (tm_query_where (q)), *b = s_print (tm_query_where (d));
    assert_string_equal (a, b);
    free (a);
    free (b);
    assert_int_equal (tm_query_group_keys (d), tm_query_group_keys (q));
    for (size_t i = 0; i < tm_query_group_keys (q); i++) {
        a = s_print (tm_query_group_key (q, i));
        b = s_print (tm_query_group_key (d, i));
        assert_string_equal (a, b);
        free (a);
        free (b);
    }
    assert_int_equal (tm_query_aggregates (d), tm_query_aggregates (q));
    for (size_t i = 0; i < tm_query_aggregates (q); i++) {
        const tm_expr_t *qa, *da;
        double qq, dq;
        assert_int_equal (tm_query_aggregate (q, i, &qq, &qa), tm_query_aggregate (d, i, &dq, &da));
        assert_true (qq == dq);
        a = s_print (qa);
        b = s_print (da);
        assert_string_equal (a, b);
        free (a);
        free (b);
    }
    if (!tm_query_is_aggregate (q)) {
        assert_int_equal (tm_query_outputs (d), tm_query_outputs (q));
        for (size_t i = 0; i < tm_query_outputs (q); i++) {
            a = s_print (tm_query_output (q, i));
            b = s_print (tm_query_output (d, i));
            assert_string_equal (a, b);
            free (a);
            free (b);
        }
        assert_int_equal (tm_query_order_keys (d), tm_query_order_keys (q));
        for (size_t i = 0; i < tm_query_order_keys (q); i++) {
            bool qd, dd;
            a = s_print (tm_query_order_key (q, i, &qd));
            b = s_print (tm_query_order_key (d, i, &dd));
            assert_string_equal (a, b);
            assert_int_equal (qd, dd);
            free (a);
            free (b);
        }
        assert_int_equal (tm_query_limit (d), tm_query_limit (q));
    }
    else {
        assert_int_equal (tm_query_outputs (d), 0);
        assert_int_equal (tm_query_limit (d), 0);
    }
    uint8_t *again = tm_query_plan_encode (d, &size2);
    assert_non_null (again);
    assert_int_equal (size2, size);
    assert_memory_equal (again, bytes, size);
    free (again);
    free (bytes);
    tm_query_destroy (&d);
    tm_query_destroy (&q);
}

static void
test_plan_round_trip (void **state)
{
    (void) state;
    s_round_trip ("SELECT district, count(*), avg(pm25), max(pm25) - min(pm25), p99(no2) "
                  "FROM twins WHERE model = 'air_station' AND within(location, 45.46, 9.19, "
                  "2000) GROUP BY district, stale HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 3");
    s_round_trip ("SELECT entity, pm25, pm25.mean FROM twins WHERE pm25 > 35 "
                  "ORDER BY pm25 DESC, entity LIMIT 20");
    s_round_trip ("SELECT * FROM twins");
    s_round_trip ("SELECT count(*) FROM twins");
    s_round_trip ("SELECT model FROM twins GROUP BY model");
    s_round_trip ("SELECT coalesce(\"odd name\", 'x') AS o FROM twins ORDER BY o");
}

//  A plan message with one field changed by mutate.
static uint8_t *
s_mutated_plan (const char *text, void (*mutate) (Twinmesh__QueryPlan *), size_t *size)
{
    tm_query_t *q = s_parse (text);
    size_t n;
    uint8_t *bytes = tm_query_plan_encode (q, &n);
    tm_query_destroy (&q);
    Twinmesh__QueryPlan *plan = TM_UNPACK (QueryPlan, query_plan, bytes, n);
    assert_non_null (plan);
    free (bytes);
    mutate (plan);
    bytes = tm_codec_pack_buf (&plan->base, size);
    tm_codec_free (&plan);
    return bytes;
}

static void
s_bad_func (Twinmesh__QueryPlan *p)
{
    p->aggregates[0]->func = 9;
}

static void
s_bad_limit (Twinmesh__QueryPlan *p)
{
    p->limit = TM_QUERY_MAX_LIMIT + 1;
}

static void
s_bad_type (Twinmesh__QueryPlan *p)
{
    p->columns[0]->type = TM_EXPR_NUMBER;
}

//  The last column renamed: an expression names a column no longer there.
static void
s_drop_column (Twinmesh__QueryPlan *p)
{
    p->columns[p->n_columns - 1]->name[0] = 'z';
}

static void
s_bad_kind (Twinmesh__QueryPlan *p)
{
    p->aggregate = !p->aggregate;
}

static void
s_bad_where (Twinmesh__QueryPlan *p)
{
    p->where.len--;
}

static void
s_bad_quantile (Twinmesh__QueryPlan *p)
{
    p->aggregates[0]->q = 1.5;
}

static void
test_plan_refuses_garbage (void **state)
{
    (void) state;
    tm_expr_error_t err;
    assert_null (tm_query_plan_decode ((const uint8_t *) "\xff\xff\xff", 3, &err));
    assert_int_equal (err.code, TM_EXPR_E_MALFORMED);
    //  Empty bytes decode as an empty plan: a row plan with no outputs.
    assert_null (tm_query_plan_decode (NULL, 0, &err));
    assert_null (tm_query_plan_decode ((const uint8_t *) "", 0, NULL));
    //  Every cut of a valid plan either decodes or is refused cleanly.
    tm_query_t *q = s_parse ("SELECT district, avg(pm25) FROM twins WHERE pm25 > 1 "
                             "GROUP BY district");
    size_t size;
    uint8_t *bytes = tm_query_plan_encode (q, &size);
    tm_query_destroy (&q);
    for (size_t cut = 0; cut < size; cut++) {
        tm_query_t *d = tm_query_plan_decode (bytes, cut, &err);
        tm_query_destroy (&d);
    }
    //  Flipped bytes, likewise.
    for (size_t i = 0; i < size; i++) {
        bytes[i] ^= 0x5A;
        tm_query_t *d = tm_query_plan_decode (bytes, size, &err);
        tm_query_destroy (&d);
        bytes[i] ^= 0x5A;
    }
    free (bytes);
    struct {
        const char *text;              //  Valid query
        void (*mutate) (Twinmesh__QueryPlan *);   //  What breaks its plan
        const char *message;           //  Part of the error
    } cases[] = {
        {"SELECT avg(x) FROM twins", s_bad_func, "unknown function"},
        {"SELECT x FROM twins LIMIT 5", s_bad_limit, "over its bound"},
        {"SELECT entity FROM twins", s_bad_type, "wrong type"},
        {"SELECT x FROM twins WHERE y > 1", s_drop_column, "unknown name"},
        {"SELECT count(*) FROM twins", s_bad_kind, "a row plan"},
        {"SELECT x FROM twins", s_bad_kind, "an aggregate plan"},
        {"SELECT x FROM twins WHERE x > 1", s_bad_where, "WHERE"},
        {"SELECT p50(x) FROM twins", s_bad_quantile, "bad quantile"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes = s_mutated_plan (cases[i].text, cases[i].mutate, &size);
        assert_non_null (bytes);
        tm_query_t *d = tm_query_plan_decode (bytes, size, &err);
        if (d || !strstr (err.message, cases[i].message))
            fail_msg ("case %zu: %s, want '%s'", i, d? "decoded": err.message,
                      cases[i].message);
        free (bytes);
    }
    //  Too big.
    assert_null (tm_query_plan_decode ((const uint8_t *) "", TM_QUERY_MAX_PLAN + 1, &err));
    assert_int_equal (err.code, TM_EXPR_E_LIMIT);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_aggregate_query),
        cmocka_unit_test (test_row_query),
        cmocka_unit_test (test_group_by_forms),
        cmocka_unit_test (test_sites),
        cmocka_unit_test (test_errors),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_builtin_types),
        cmocka_unit_test (test_plan_round_trip),
        cmocka_unit_test (test_plan_refuses_garbage),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
