/*  fuzz_query - tm_query's parser over arbitrary text, its plan decoder
    over arbitrary bytes

    Input whose first byte is 0x01 is plan bytes (after that byte) for
    tm_query_plan_decode; anything else is query text for tm_query_parse.
    Besides not crashing, the module must keep its promises:
    - a query that parses encodes a plan that decodes, and the decoded
      plan encodes to the same bytes;
    - a decoded plan encodes to bytes that decode and encode the same;
    - a failure carries a code, a UTF-8 message and an offset inside the
      input;
    - a parsed query can be fed, finished and printed.
    A broken promise aborts, which libFuzzer reports as a crash.
*/
#include "fuzz.h"
#include "tm_qexec.h"
#include "tm_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_PLAN_MAGIC 0x01

static void
s_check_error (const tm_expr_error_t *err, size_t size)
{
    if (err->code == 0 || !tm_util_utf8_valid (err->message, strlen (err->message)))
        abort ();
    if (err->line && err->offset > size)
        abort ();
}

//  Encode, decode, encode: the second encoding is the first.
static void
s_round_trip (const tm_query_t *q)
{
    size_t size = 0, size2 = 0;
    uint8_t *bytes = tm_query_plan_encode (q, &size);
    if (!bytes)
        return;
    tm_expr_error_t err;
    tm_query_t *d = tm_query_plan_decode (bytes, size, &err);
    if (!d)
        abort ();
    uint8_t *again = tm_query_plan_encode (d, &size2);
    if (!again || size2 != size || memcmp (again, bytes, size) != 0)
        abort ();
    free (again);
    free (bytes);
    tm_query_destroy (&d);
}

//  A few twins fed twin by twin and in one batch over typed columns (as a
//  worker's columnar scan feeds them): both partials encode the same.
static void
s_check_batch (const tm_query_t *q)
{
    enum { ROWS = 8 };
    static const tm_expr_value_t dict[] = {
        {.type = TM_EXPR_NULL}, {.type = TM_EXPR_STRING, .len = 1, .str = "x"},
        {.type = TM_EXPR_STRING, .len = 11, .str = "air_station"},
        {.type = TM_EXPR_STRING, .len = 0, .str = ""},
    };
    static double nums[TM_QUERY_MAX_COLUMNS][ROWS], pairs[TM_QUERY_MAX_COLUMNS][2 * ROWS];
    static uint32_t ids[TM_QUERY_MAX_COLUMNS][ROWS];
    static tm_expr_value_t vals[TM_QUERY_MAX_COLUMNS][ROWS];
    static tm_expr_col_t cols[TM_QUERY_MAX_COLUMNS];
    size_t n = tm_query_columns (q);
    for (size_t c = 0; c < n; c++) {
        tm_expr_type_t t = tm_query_column_type (q, c);
        for (size_t i = 0; i < ROWS; i++) {
            double x = (double) ((c * 7 + i * 13) % 40) - 3;
            bool null = (c + i) % 5 == 0;
            nums[c][i] = null? NAN: x;
            ids[c][i] = (uint32_t) ((c + i) % 4);
            pairs[c][2 * i] = null? NAN: 45.46 + x / 1000;
            pairs[c][2 * i + 1] = 9.19 - x / 1000;
            vals[c][i] = null? tm_expr_null (): i % 3 == 0? tm_expr_string ("x", 1)
                       : i % 3 == 1? tm_expr_number (x): tm_expr_bool (i & 4);
        }
        cols[c] = t == TM_EXPR_NUMBER? (tm_expr_col_t) {.kind = TM_EXPR_COL_NUMBERS, .nums = nums[c]}
                : t == TM_EXPR_STRING? (tm_expr_col_t) {.kind = TM_EXPR_COL_STRINGS, .ids = ids[c],
                                                        .dict = dict, .ndict = 4}
                : t == TM_EXPR_LOCATION? (tm_expr_col_t) {.kind = TM_EXPR_COL_LOCATIONS,
                                                          .latlon = pairs[c]}
                : (tm_expr_col_t) {.kind = TM_EXPR_COL_VALUES, .values = vals[c]};
    }
    tm_qpartial_t *one = tm_qpartial_new (q), *batch = tm_qpartial_new (q);
    if (one && batch) {
        tm_expr_value_t row[TM_QUERY_MAX_COLUMNS];
        for (size_t i = 0; i < ROWS; i++) {
            for (size_t c = 0; c < n; c++)
                tm_expr_col_get (&cols[c], i, &row[c]);
            tm_qpartial_feed (one, row, n);
        }
        tm_qpartial_feed_batch (batch, cols, n, ROWS, NULL);
        size_t a_size = 0, b_size = 0;
        uint8_t *a = tm_qpartial_encode (one, &a_size);
        uint8_t *b = tm_qpartial_encode (batch, &b_size);
        if (a && b && (a_size != b_size || memcmp (a, b, a_size) != 0))
            abort ();
        free (a);
        free (b);
    }
    tm_qpartial_destroy (&one);
    tm_qpartial_destroy (&batch);
}

//  One twin of nulls and one of numbers through a partial, then out.
static void
s_exercise (const tm_query_t *q)
{
    s_check_batch (q);
    tm_qpartial_t *p = tm_qpartial_new (q);
    if (!p)
        return;
    tm_expr_value_t values[TM_QUERY_MAX_COLUMNS];
    size_t n = tm_query_columns (q);
    for (size_t i = 0; i < n; i++)
        values[i] = tm_expr_null ();
    tm_qpartial_feed (p, values, n);
    for (size_t i = 0; i < n; i++) {
        tm_expr_type_t t = tm_query_column_type (q, i);
        values[i] = t == TM_EXPR_STRING? tm_expr_string ("x", 1)
                  : t == TM_EXPR_BOOL? tm_expr_bool (true): tm_expr_number ((double) i);
    }
    tm_qpartial_feed (p, values, n);
    size_t size;
    uint8_t *bytes = tm_qpartial_encode (p, &size);
    if (bytes && tm_qpartial_merge (p, bytes, size, NULL, 0) != 0)
        abort ();
    free (bytes);
    if (tm_query_has_final (q)) {
        tm_qresult_t *r = tm_qresult_new (q, p);
        FILE *null = fopen ("/dev/null", "w");
        if (r && null) {
            tm_qresult_print (r, TM_QRESULT_TABLE, null, null);
            tm_qresult_print (r, TM_QRESULT_CSV, null, null);
            tm_qresult_print (r, TM_QRESULT_JSON, null, null);
        }
        if (null)
            fclose (null);
        tm_qresult_destroy (&r);
    }
    tm_qpartial_destroy (&p);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    tm_expr_error_t err;
    if (size && data[0] == S_PLAN_MAGIC) {
        tm_query_t *q = tm_query_plan_decode (data + 1, size - 1, &err);
        if (!q) {
            s_check_error (&err, size);
            return 0;
        }
        s_round_trip (q);
        s_exercise (q);
        tm_query_destroy (&q);
        return 0;
    }
    if (size > TM_QUERY_MAX_TEXT + 1)
        size = TM_QUERY_MAX_TEXT + 1;
    char *text = (char *) malloc (size + 1);
    if (!text)
        return 0;
    memcpy (text, data, size);
    text[size] = 0;
    tm_query_t *q = tm_query_parse (text, &err);
    if (!q)
        s_check_error (&err, size);
    else {
        if (!tm_query_has_final (q) || tm_query_outputs (q) == 0)
            abort ();
        s_round_trip (q);
        s_exercise (q);
        tm_query_destroy (&q);
    }
    free (text);
    return 0;
}
