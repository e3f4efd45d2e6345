/*  fuzz_expr - tm_expr's parser over arbitrary text, its deserialiser over
    arbitrary bytes

    Input that starts with the serialised magic "TMX\1" goes to the
    deserialiser, anything else to the parser. Besides not crashing, the
    module must keep its promises on any input:
    - whatever compiles prints, and the printed text compiles and prints
      the same (both the canonical and the fully parenthesised form);
    - the whole-text and the at-offset entry points agree;
    - serialising and deserialising gives the same text and bytes back;
    - evaluation gives a value of the static type (or null), never a
      number that is not finite;
    - a failure carries a code, a UTF-8 message and an offset inside the
      input.
    A broken promise aborts, which libFuzzer reports as a crash.
*/
#include "fuzz.h"
#include "tm_expr.h"
#include "tm_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Slots by type, so that values always match what the resolver
//  declared: numbers 0-3, strings 4-7, booleans 8-11, locations 12-13,
//  any 14-15. The last of each group holds null.
#define NVALUES 16

static int
s_resolve (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    (void) user;
    if (len == 0 || name[0] == 'u')
        return -1;                     //  names starting with u are unknown
    uint32_t h = 0;
    for (size_t i = 0; i < len; i++)
        h = h * 31 + (unsigned char) name[i];
    switch (name[0]) {
        case 's':
        case 'm':
        case 'd':
            out->type = TM_EXPR_STRING;
            out->slot = 4 + h % 4;
            break;
        case 'b':
        case 'a':
            out->type = TM_EXPR_BOOL;
            out->slot = 8 + h % 4;
            break;
        case 'l':
            out->type = TM_EXPR_LOCATION;
            out->slot = 12 + h % 2;
            break;
        case 'v':
            out->type = TM_EXPR_ANY;
            out->slot = 14 + h % 2;
            break;
        default:
            out->type = TM_EXPR_NUMBER;
            out->slot = h % 4;
            break;
    }
    return 0;
}

//  Takes count(*) exactly, as a query parser would take an aggregate.
static int
s_hook (void *user, const char *text, size_t len, size_t pos, size_t name_len,
        tm_expr_slot_t *out, size_t *end, char canon[TM_EXPR_MAX_NAME + 1])
{
    (void) user;
    if (name_len != 5 || len - pos < 8 || memcmp (text + pos, "count(*)", 8) != 0)
        return -1;
    out->slot = 0;
    out->type = TM_EXPR_NUMBER;
    *end = pos + 8;
    strcpy (canon, "count(*)");
    return 0;
}

static const tm_expr_options_t s_opts = {s_resolve, s_hook, NULL, TM_EXPR_ANY};

static void
s_values (tm_expr_value_t *v)
{
    v[0] = tm_expr_number (3);
    v[1] = tm_expr_number (-0.5);
    v[2] = tm_expr_number (1e300);
    v[3] = tm_expr_null ();
    v[4] = tm_expr_string ("air_station", 11);
    v[5] = tm_expr_string ("", 0);
    v[6] = tm_expr_string ("caf\xC3\xA9", 5);
    v[7] = tm_expr_null ();
    v[8] = tm_expr_bool (true);
    v[9] = tm_expr_bool (false);
    v[10] = tm_expr_bool (true);
    v[11] = tm_expr_null ();
    v[12] = tm_expr_location (45.4641, 9.1919);
    v[13] = tm_expr_null ();
    v[14] = tm_expr_number (7);
    v[15] = tm_expr_string ("seven", 5);
}

//  typed: the values are of the types the expression's slots declare (it
//  came from text through s_resolve, whose slots match s_values); bytes
//  declare any type for any slot, so there a result may be of another
//  type than the static one.
static void
s_check_eval (const tm_expr_t *e, bool typed)
{
    tm_expr_value_t v[NVALUES], r;
    s_values (v);
    tm_expr_eval (e, v, NVALUES, &r);
    tm_expr_type_t t = tm_expr_type (e);
    if (r.type > TM_EXPR_LOCATION)
        abort ();
    if (typed && r.type != TM_EXPR_NULL && t != TM_EXPR_ANY && r.type != t)
        abort ();
    if (r.type == TM_EXPR_NUMBER && !isfinite (r.num))
        abort ();
    if (tm_expr_match (e, v, NVALUES) != (r.type == TM_EXPR_BOOL && r.b))
        abort ();
    //  Too few values: everything reads as null, still no crash.
    tm_expr_eval (e, v, 1, &r);
    if (r.type == TM_EXPR_NUMBER && !isfinite (r.num))
        abort ();
    //  In a batch, row by row the same answers: rows i hold the values
    //  rotated by i, so every slot meets every kind of value.
    enum { ROWS = NVALUES };
    static tm_expr_value_t cells[NVALUES][ROWS];
    tm_expr_col_t cols[NVALUES];
    for (int c = 0; c < NVALUES; c++) {
        for (int i = 0; i < ROWS; i++)
            cells[c][i] = v[(c + i) % NVALUES];
        cols[c] = (tm_expr_col_t) {.kind = TM_EXPR_COL_VALUES, .values = cells[c]};
    }
    tm_expr_batch_t *b = tm_expr_batch_new (e);
    if (!b)
        return;
    tm_expr_value_t out[ROWS];
    tm_expr_eval_batch (b, cols, NVALUES, ROWS, out);
    for (int i = 0; i < ROWS; i++) {
        tm_expr_value_t row[NVALUES], want;
        for (int c = 0; c < NVALUES; c++)
            row[c] = cells[c][i];
        tm_expr_eval (e, row, NVALUES, &want);
        if (want.type != out[i].type)
            abort ();
        if (want.type == TM_EXPR_NUMBER && want.num != out[i].num)
            abort ();
        if (want.type == TM_EXPR_BOOL && want.b != out[i].b)
            abort ();
        if (want.type == TM_EXPR_STRING
            && (want.len != out[i].len || (want.len && memcmp (want.str, out[i].str, want.len))))
            abort ();
    }
    tm_expr_batch_destroy (&b);
}

//  A failure names a code and a place inside the input, and its message
//  is UTF-8 (it travels in protobuf strings), whatever the input held.
static void
s_check_error (const tm_expr_error_t *err, size_t size)
{
    if (err->code < TM_EXPR_E_SYNTAX || err->code > TM_EXPR_E_NOMEM || !err->message[0]
        || err->offset > size || !tm_util_utf8_valid (err->message, strlen (err->message)))
        abort ();
}

//  Serialise, deserialise, and expect the same text and bytes.
static void
s_check_bytes (const tm_expr_t *e, const char *printed)
{
    size_t size = 0, size2 = 0;
    uint8_t *bytes = tm_expr_serialise (e, &size);
    if (!bytes)
        abort ();
    tm_expr_error_t err;
    tm_expr_t *copy = tm_expr_deserialise (bytes, size, NULL, &err);
    if (!copy)
        abort ();
    char *text = tm_expr_print (copy, 0);
    uint8_t *bytes2 = tm_expr_serialise (copy, &size2);
    if (!text || strcmp (text, printed) != 0 || !bytes2 || size2 != size
        || memcmp (bytes, bytes2, size) != 0 || tm_expr_type (copy) != tm_expr_type (e))
        abort ();
    free (text);
    free (bytes);
    free (bytes2);
    tm_expr_destroy (&copy);
}

static void
s_text (const uint8_t *data, size_t size)
{
    char *text = (char *) malloc (size + 1);
    if (!text)
        return;
    memcpy (text, data, size);
    text[size] = 0;
    size_t len = strlen (text);
    tm_expr_error_t err;
    tm_expr_t *e = tm_expr_compile (text, &s_opts, &err);
    size_t end = 0;
    tm_expr_error_t err_at;
    tm_expr_t *at = tm_expr_compile_at (text, len, 0, &s_opts, &end, &err_at);
    if (at && end > len)
        abort ();
    if (!e) {
        s_check_error (&err, len);
        //  The at-offset parse fails the same way, or stops where the
        //  whole-text parse found something it could not continue with.
        if (!at && (err_at.code != err.code || err_at.offset != err.offset))
            abort ();
        if (at && (err.code != TM_EXPR_E_SYNTAX || err.offset != end))
            abort ();
        tm_expr_destroy (&at);
        free (text);
        return;
    }
    if (!at || end != len)
        abort ();
    tm_expr_destroy (&at);
    s_check_eval (e, true);

    char *printed = tm_expr_print (e, 0);
    char *full = tm_expr_print (e, TM_EXPR_PRINT_PARENS);
    if (!printed || !full)
        abort ();
    tm_expr_t *again = tm_expr_compile (printed, &s_opts, &err);
    tm_expr_t *again_full = tm_expr_compile (full, &s_opts, &err);
    if (!again || !again_full)
        abort ();
    char *reprinted = tm_expr_print (again, 0);
    char *reprinted_full = tm_expr_print (again_full, TM_EXPR_PRINT_PARENS);
    char *canonical_of_full = tm_expr_print (again_full, 0);
    if (!reprinted || strcmp (reprinted, printed) != 0 || !reprinted_full
        || strcmp (reprinted_full, full) != 0 || !canonical_of_full
        || strcmp (canonical_of_full, printed) != 0)
        abort ();
    if (tm_expr_type (again) != tm_expr_type (e) || tm_expr_slots (again) != tm_expr_slots (e))
        abort ();
    s_check_bytes (e, printed);
    free (printed);
    free (full);
    free (reprinted);
    free (reprinted_full);
    free (canonical_of_full);
    tm_expr_destroy (&again);
    tm_expr_destroy (&again_full);
    tm_expr_destroy (&e);
    free (text);
}

static void
s_bytes (const uint8_t *data, size_t size)
{
    tm_expr_error_t err;
    tm_expr_t *e = tm_expr_deserialise (data, size, NULL, &err);
    if (!e) {
        s_check_error (&err, size);
        return;
    }
    s_check_eval (e, false);
    char *printed = tm_expr_print (e, 0);
    if (!printed)
        abort ();
    s_check_bytes (e, printed);
    free (printed);
    tm_expr_destroy (&e);
    //  Resolving the names again may fail (unknown, or types that no
    //  longer fit) but must stay clean.
    e = tm_expr_deserialise (data, size, &s_opts, &err);
    if (e)
        s_check_eval (e, true);
    else
        s_check_error (&err, size);
    tm_expr_destroy (&e);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size >= 4 && memcmp (data, "TMX\x01", 4) == 0)
        s_bytes (data, size);
    else
        s_text (data, size);
    return 0;
}
