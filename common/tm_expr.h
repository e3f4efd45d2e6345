/*  tm_expr - the expression language of query filters and derived properties

    One evaluator serves two users (DESIGN.md, "A twin" and "Queries"): the
    WHERE clause of a query (`model = 'air_station' AND pm25 > 35 AND
    within(location, 45.4642, 9.19, 2000)`) and a model's derived
    properties (`temperature + 0.33 * humidity - 4`). docs/expressions.md
    is the reference for the language: grammar, types, null semantics,
    every operator and function.

    The load it is built for: a query scans up to a million twins per
    worker, so an expression is compiled once and evaluated many times.
    Compiling parses to a tree, checks types where they are known, folds
    constants and emits a compact stack program. Identifiers are resolved
    to slots at compile time by the caller; evaluation reads a caller's
    array of values, allocates nothing, never recurses and never fails: a
    run-time problem (null operand, division by zero, a value of the wrong
    type) gives null, as in SQL. A compiled expression is immutable, so any
    number of threads may evaluate it at once.

    Text and bytes come from the network and from model files: the parser
    and the deserialiser refuse anything malformed, too deep or too big
    with an error that says where and what was expected, and never abort.
    Recursion is bounded by TM_EXPR_MAX_NESTING in the parser and by
    TM_EXPR_MAX_DEPTH everywhere else, whatever the input. The nesting
    limit is twice the height limit because printed text may spend two
    levels on one node ("(x IN (...))", "(-x)"): whatever compiles must
    print as text that compiles again. At the nesting limit the parser
    uses under 256 KB of stack (measured, -O2): fine on default 8 MB
    thread stacks, not on tiny ones.

    Numbers are read and printed with strtod and snprintf, so a process
    that calls setlocale must keep LC_NUMERIC as "C".
*/
#ifndef TM_EXPR_H_INCLUDED
#define TM_EXPR_H_INCLUDED

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Limits. Hostile input past any of them gets TM_EXPR_E_LIMIT.
#define TM_EXPR_MAX_DEPTH 128          //  Tree height
#define TM_EXPR_MAX_NESTING 256        //  Nesting of (), calls, IN lists, NOT and -
#define TM_EXPR_MAX_NODES 4096         //  Tree nodes, literals and names included
#define TM_EXPR_MAX_ARGS 1024          //  Items of an IN list, arguments of a call
#define TM_EXPR_MAX_STACK 256          //  Evaluation stack, in values
#define TM_EXPR_MAX_NAME 128           //  Bytes of an identifier
#define TM_EXPR_MAX_STRING 4096        //  Bytes of a string literal
#define TM_EXPR_MAX_SLOTS 65536        //  Slot indexes are below this
#define TM_EXPR_MAX_BYTES (1 << 22)    //  Bytes of a serialised expression

//  Mean Earth radius (IUGG), for within() and distance().
#define TM_EXPR_EARTH_RADIUS_M 6371008.8

//  Outcomes (dbus-broker's rule: positive = documented, handle it).
#define TM_EXPR_E_SYNTAX 1             //  Text does not follow the grammar
#define TM_EXPR_E_TYPE 2               //  Operand types known at compile time do not fit
#define TM_EXPR_E_UNKNOWN_NAME 3       //  The resolver does not know an identifier
#define TM_EXPR_E_UNKNOWN_FUNCTION 4   //  name( with a name no one handles
#define TM_EXPR_E_LIMIT 5              //  Too deep, too many nodes, too long
#define TM_EXPR_E_MALFORMED 6          //  Serialised bytes are not a valid expression
#define TM_EXPR_E_NOMEM 7              //  Out of memory

typedef enum {
    TM_EXPR_NULL = 0,                  //  No value (unknown, missing, undefined)
    TM_EXPR_NUMBER = 1,                //  A finite double
    TM_EXPR_STRING = 2,                //  UTF-8 bytes, not NUL-terminated
    TM_EXPR_BOOL = 3,                  //  true or false
    TM_EXPR_LOCATION = 4,              //  WGS84 lat/lon in decimal degrees
    TM_EXPR_ANY = 5                    //  Static type only: known at run time
} tm_expr_type_t;

//  A value: a slot's content, a constant, a result.
typedef struct _tm_expr_value_t {
    tm_expr_type_t type;               //  Never TM_EXPR_ANY in a value
    uint32_t len;                      //  Bytes of str (TM_EXPR_STRING)
    union {
        double num;                    //  TM_EXPR_NUMBER
        bool b;                        //  TM_EXPR_BOOL
        const char *str;               //  TM_EXPR_STRING; borrowed
        struct {
            double lat;                //  TM_EXPR_LOCATION, -90 .. 90
            double lon;                //  TM_EXPR_LOCATION, -180 .. 180
        };
    };
} tm_expr_value_t;

//  What the resolver says about an identifier.
typedef struct {
    uint32_t slot;                     //  Index into the values array at evaluation
    tm_expr_type_t type;               //  Its type, or TM_EXPR_ANY if only known at run time
} tm_expr_slot_t;

//  Resolve an identifier (name is NUL-terminated, len bytes, case as
//  written; dotted paths like "location.lat" come whole). Return 0 with
//  *out filled, or non-zero if the name is unknown (a compile error).
typedef int (tm_expr_resolve_fn) (void *user, const char *name, size_t len,
                                  tm_expr_slot_t *out);

//  Called when the parser meets `name (` and name is no built-in function,
//  so that a query parser can handle aggregates (`count(*)`, `avg(pm25)`)
//  inside expressions. text/len is the whole text, the name starts at pos
//  and is name_len bytes. To take the call, the hook parses it itself,
//  returns 0 and fills *out (the slot that will hold the call's value),
//  *end (offset just past its closing ')') and canon (NUL-terminated
//  canonical text of the call, at most TM_EXPR_MAX_NAME bytes, printed as
//  is and re-parsed through the hook). Any other return declines: the
//  parser reports TM_EXPR_E_UNKNOWN_FUNCTION.
typedef int (tm_expr_call_fn) (void *user, const char *text, size_t len, size_t pos,
                               size_t name_len, tm_expr_slot_t *out, size_t *end,
                               char canon[TM_EXPR_MAX_NAME + 1]);

typedef struct {
    tm_expr_resolve_fn *resolve;       //  Identifier -> slot; NULL: no identifiers
    tm_expr_call_fn *call;             //  Unknown function hook; NULL: an error
    void *user;                        //  Passed to resolve and call
    tm_expr_type_t expect;             //  Required result type; TM_EXPR_ANY (0 too) = any
} tm_expr_options_t;

//  Where and why compiling failed.
typedef struct {
    int code;                          //  TM_EXPR_E_*, 0 if no error
    size_t offset;                     //  Byte offset in the whole text (or in the bytes)
    size_t length;                     //  Bytes of the offending token (0 at the end)
    unsigned line;                     //  1-based line of offset
    unsigned column;                   //  1-based column of offset, in characters
    char message[256];                 //  "at column 17: expected ')' ..., found 'FROM'"
} tm_expr_error_t;

typedef struct _tm_expr_t tm_expr_t;

//  Compile a whole NUL-terminated expression. Returns the expression, or
//  NULL with *err filled (err may be NULL). opts may be NULL.
tm_expr_t *tm_expr_compile (const char *text, const tm_expr_options_t *opts,
                            tm_expr_error_t *err);

//  Compile the expression that starts at byte offset of text (len bytes,
//  need not be NUL-terminated) and stop before the first token that cannot
//  continue it (a clause keyword, ',', ')', ';'...). *end gets the offset
//  of that token (whitespace skipped); positions in errors count from the
//  start of text, so a query parser's messages stay consistent.
tm_expr_t *tm_expr_compile_at (const char *text, size_t len, size_t offset,
                               const tm_expr_options_t *opts, size_t *end,
                               tm_expr_error_t *err);

//  Destroy; accepts NULL, nulls the pointer.
void tm_expr_destroy (tm_expr_t **self_p);

//  Evaluate against values[0 .. nvalues-1] (a slot at or past nvalues
//  reads as null; numbers that are not finite and locations out of range
//  read as null). *out gets the result; its string, if any, is borrowed
//  from the expression or from values. No allocation, no failure;
//  thread-safe on a shared expression.
void tm_expr_eval (const tm_expr_t *self, const tm_expr_value_t *values, size_t nvalues,
                   tm_expr_value_t *out);

//  WHERE semantics: true only if the result is the boolean true (null and
//  false both reject the row).
bool tm_expr_match (const tm_expr_t *self, const tm_expr_value_t *values, size_t nvalues);

//  Batches: the same answers as tm_expr_eval, for many rows at a time.
//  A scan of a million twins evaluates its filter a million times; a
//  batch walks the expression once per pass of up to about a thousand
//  rows, so the interpreter's cost is paid per pass, not per row. The
//  scratch (a tm_expr_batch_t) belongs to one expression and one thread.
//
//  A slot's values for the rows come as a column. A scan is bound by the
//  bytes it reads, so a column may be typed: numbers as doubles (NaN for
//  null: the evaluator reads every non-finite number as null anyway),
//  strings as ids into a small dictionary of distinct values (a filter on
//  them is then worked out once per distinct value), locations as lat/lon
//  pairs (NaN latitude for null); or any mix of values, 24 bytes a row.
typedef enum {
    TM_EXPR_COL_NULL = 0,              //  Null in every row (data unused)
    TM_EXPR_COL_VALUES,                //  values[i]: any value
    TM_EXPR_COL_NUMBERS,               //  nums[i]: a number, NaN for null
    TM_EXPR_COL_STRINGS,               //  dict[ids[i]]: each dict entry a string or null
    TM_EXPR_COL_LOCATIONS              //  latlon[2i], latlon[2i+1]; NaN latitude: null
} tm_expr_col_kind_t;

typedef struct {
    tm_expr_col_kind_t kind;
    union {
        const struct _tm_expr_value_t *values;
        const double *nums;
        const uint32_t *ids;
        const double *latlon;
    };
    const struct _tm_expr_value_t *dict;   //  STRINGS: the distinct values
    uint32_t ndict;                    //  Entries in dict; every id is below it
} tm_expr_col_t;

typedef struct _tm_expr_batch_t tm_expr_batch_t;

//  A batch caches what it worked out per dictionary entry of a column of
//  strings: between two calls with the same scratch, a dictionary at the
//  same address with as many entries must hold the same values.

//  Scratch for evaluating expr (borrowed: it must outlive the scratch) in
//  batches; NULL on allocation failure.
tm_expr_batch_t *tm_expr_batch_new (const tm_expr_t *expr);

//  Destroy; accepts NULL, nulls the pointer.
void tm_expr_batch_destroy (tm_expr_batch_t **self_p);

//  True if the whole expression is one identifier, with its slot: a
//  caller holding that slot's values can read them without evaluating.
bool tm_expr_is_slot (const tm_expr_t *self, uint32_t *slot);

//  Rows one pass takes (any n may be given; larger ones take more passes).
size_t tm_expr_batch_rows (const tm_expr_batch_t *self);

//  Evaluate rows 0 .. n-1, where the value of slot s in row i is row i of
//  cols[s] (s >= ncols: null in every row; cols may be NULL). out[i] gets
//  row i's result, exactly what tm_expr_eval gives for that row. Strings
//  in out are borrowed from the expression or the columns.
void tm_expr_eval_batch (tm_expr_batch_t *self, const tm_expr_col_t *cols, size_t ncols,
                         size_t n, tm_expr_value_t *out);

//  The same with WHERE semantics: match[i] is 1 if row i's result is the
//  boolean true, else 0 (tm_expr_match for each row).
void tm_expr_match_batch (tm_expr_batch_t *self, const tm_expr_col_t *cols, size_t ncols,
                          size_t n, uint8_t *match);

//  The static type of the result (TM_EXPR_ANY when only known at run time,
//  TM_EXPR_NULL when the expression folded to null).
tm_expr_type_t tm_expr_type (const tm_expr_t *self);

//  One past the highest slot the expression reads (0 if none): the size
//  of the values array that covers every slot.
size_t tm_expr_slots (const tm_expr_t *self);

//  True if the expression folded to a constant (it reads no slot).
bool tm_expr_is_constant (const tm_expr_t *self);

//  Render canonical text: keywords upper case, functions lower case, the
//  fewest parentheses, constants folded. tm_expr_compile of it gives the
//  same expression back (with the same resolver and hook). With
//  TM_EXPR_PRINT_PARENS every operator is parenthesised, to show how the
//  text was grouped. Returns a new string (caller frees) or NULL.
#define TM_EXPR_PRINT_PARENS 1
char *tm_expr_print (const tm_expr_t *self, int flags);

//  Serialise for shipping inside a query plan: the resolved tree with the
//  names, slots and types of its identifiers. Returns a new buffer (caller
//  frees) with its size in *size, or NULL.
uint8_t *tm_expr_serialise (const tm_expr_t *self, size_t *size);

//  Rebuild an expression from untrusted bytes, checking everything the
//  compiler checks. With opts->resolve, identifiers are resolved again by
//  name (a worker's own slot layout); without, the slots and types in the
//  bytes are kept. Returns NULL with *err (code TM_EXPR_E_MALFORMED, or a
//  type, name or limit error; offset is into the bytes) on failure.
tm_expr_t *tm_expr_deserialise (const uint8_t *data, size_t size,
                                const tm_expr_options_t *opts, tm_expr_error_t *err);

//  Name of a type: "null", "number", "string", "boolean", "location", "any".
const char *tm_expr_type_name (tm_expr_type_t type);

//  Value constructors, for callers filling a values array.
static inline tm_expr_value_t
tm_expr_null (void)
{
    tm_expr_value_t v = {.type = TM_EXPR_NULL};
    return v;
}

static inline tm_expr_value_t
tm_expr_number (double num)
{
    tm_expr_value_t v = {.type = TM_EXPR_NUMBER, .num = num};
    return v;
}

static inline tm_expr_value_t
tm_expr_bool (bool b)
{
    tm_expr_value_t v = {.type = TM_EXPR_BOOL, .b = b};
    return v;
}

static inline tm_expr_value_t
tm_expr_string (const char *str, uint32_t len)
{
    tm_expr_value_t v = {.type = TM_EXPR_STRING, .len = len, .str = str};
    return v;
}

static inline tm_expr_value_t
tm_expr_location (double lat, double lon)
{
    tm_expr_value_t v = {.type = TM_EXPR_LOCATION, .lat = lat, .lon = lon};
    return v;
}

//  A value as the evaluator reads it from a slot (tm_expr_eval's rule):
//  numbers that are not finite, locations off the globe and unknown type
//  tags become null, a string without bytes the empty string.
static inline void
tm_expr_load (tm_expr_value_t *to, const tm_expr_value_t *from)
{
    *to = *from;
    switch (to->type) {
        case TM_EXPR_NUMBER:
            if (!isfinite (to->num))
                *to = tm_expr_null ();
            break;
        case TM_EXPR_STRING:
            if (!to->str) {
                to->str = "";
                to->len = 0;
            }
            break;
        case TM_EXPR_BOOL:
        case TM_EXPR_NULL:
            break;
        case TM_EXPR_LOCATION:
            if (!(to->lat >= -90 && to->lat <= 90 && to->lon >= -180 && to->lon <= 180))
                *to = tm_expr_null ();
            break;
        default:
            *to = tm_expr_null ();
            break;
    }
}

//  Row i of a column as the evaluator reads it (tm_expr_load's rule).
static inline void
tm_expr_col_get (const tm_expr_col_t *col, size_t i, tm_expr_value_t *out)
{
    switch (col->kind) {
        case TM_EXPR_COL_VALUES:
            tm_expr_load (out, &col->values[i]);
            return;
        case TM_EXPR_COL_NUMBERS:
            *out = isfinite (col->nums[i])? tm_expr_number (col->nums[i]): tm_expr_null ();
            return;
        case TM_EXPR_COL_STRINGS:
            if (col->ids[i] < col->ndict)
                tm_expr_load (out, &col->dict[col->ids[i]]);
            else
                *out = tm_expr_null ();
            return;
        case TM_EXPR_COL_LOCATIONS: {
            tm_expr_value_t v = tm_expr_location (col->latlon[2 * i], col->latlon[2 * i + 1]);
            tm_expr_load (out, &v);
            return;
        }
        default:
            *out = tm_expr_null ();
            return;
    }
}

//  The column from row `by` on.
static inline tm_expr_col_t
tm_expr_col_shift (const tm_expr_col_t *col, size_t by)
{
    tm_expr_col_t c = *col;
    switch (c.kind) {
        case TM_EXPR_COL_VALUES: c.values += by; break;
        case TM_EXPR_COL_NUMBERS: c.nums += by; break;
        case TM_EXPR_COL_STRINGS: c.ids += by; break;
        case TM_EXPR_COL_LOCATIONS: c.latlon += 2 * by; break;
        default: break;
    }
    return c;
}

#endif
