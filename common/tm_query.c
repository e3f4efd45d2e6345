/*  tm_query - the twin query language: text to plan, plan to bytes

    A query is parsed once per request by the broker, so parsing is built
    for clear errors rather than speed; what must be fast is evaluating
    the plan per twin, which is tm_qexec's job over the expressions built
    here. docs/queries.md is the reference for the language.

    Every expression of a query is compiled by tm_expr (compile_at, so
    positions count from the start of the whole text). Identifiers become
    columns through one of three resolvers: a probe (anything goes, used
    to find where SELECT items end and whether they hold aggregates, before
    GROUP BY is known), the row resolver (every name is a column the
    workers fill) and the final resolver (only GROUP BY keys that are bare
    names). Aggregates come through tm_expr's call hook. tm_expr's own
    scalar min(a, b) and max(a, b) are built-ins that never reach the hook,
    so one-argument min(x) and max(x) (SQL's aggregates) are renamed in a
    shadow copy of the text of the same length before compiling: positions
    stay exact and messages are mapped back to the original words.
*/
#include "tm_query.h"
#include "tm_codec.h"
#include "tm_util.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

//  One aggregate the workers accumulate.
typedef struct {
    tm_query_agg_t func;               //  What it computes
    double q;                          //  Quantile, for TM_QUERY_AGG_QUANTILE
    tm_expr_t *arg;                    //  Argument over the columns; NULL for count(*)
    char *canon;                       //  Canonical call text; equal texts share a slot
} s_agg_t;

//  One column the workers fill per twin.
typedef struct {
    char *name;                        //  Property, attribute or built-in name
    tm_expr_type_t type;               //  tm_query_builtin_type (name)
} s_column_t;

struct _tm_query_t {
    char *text;                        //  As written (parsed) or as carried (decoded)
    bool final;                        //  Parsed: has the final phase
    bool aggregate;                    //  Groups and aggregates, not rows
    size_t ncolumns;                   //  Columns in use
    s_column_t columns[TM_QUERY_MAX_COLUMNS];      //  Slot order
    tm_expr_t *where;                  //  Filter over the columns, NULL = every twin
    size_t nkeys;                      //  GROUP BY keys
    tm_expr_t *keys[TM_QUERY_MAX_GROUP_KEYS];      //  Over the columns
    char *key_canon[TM_QUERY_MAX_GROUP_KEYS];      //  Canonical text (parsed only)
    char *key_name[TM_QUERY_MAX_GROUP_KEYS];       //  The name if the key is a bare name
    size_t naggs;                      //  Distinct aggregates
    s_agg_t aggs[TM_QUERY_MAX_AGGREGATES];         //  Final slot nkeys + index
    size_t noutputs;                   //  Output columns
    tm_expr_t *outputs[TM_QUERY_MAX_SELECT];       //  Rows: over columns; groups: final slots
    char *titles[TM_QUERY_MAX_SELECT]; //  Alias or canonical text
    size_t norder;                     //  ORDER BY keys
    tm_expr_t *order[TM_QUERY_MAX_ORDER];          //  Own expression, or NULL with a ref
    int order_ref[TM_QUERY_MAX_ORDER]; //  Output index the key repeats, or -1
    bool desc[TM_QUERY_MAX_ORDER];     //  Descending
    tm_expr_t *having;                 //  Over the final slots, or NULL
    uint32_t limit;                    //  0 = none
    size_t nsites;                     //  Sites named by AT SITES
    char *sites[TM_QUERY_MAX_SITES];   //  Their names
    bool all_sites;                    //  AT ALL SITES
};

//  ---------------------------------------------------------------------
//  Built-in columns

tm_expr_type_t
tm_query_builtin_type (const char *name)
{
    static const struct {
        const char *name;              //  Built-in column
        tm_expr_type_t type;           //  Its type
    } builtins[] = {
        {"entity", TM_EXPR_STRING},  {"model", TM_EXPR_STRING},     {"status", TM_EXPR_STRING},
        {"parent", TM_EXPR_STRING},  {"stale", TM_EXPR_BOOL},       {"anomalous", TM_EXPR_BOOL},
        {"confidence", TM_EXPR_NUMBER}, {"updated", TM_EXPR_NUMBER},
    };
    static const struct {
        const char *name;              //  Analytics field of a property
        tm_expr_type_t type;           //  Its type
    } fields[] = {
        {"value", TM_EXPR_NUMBER},  {"ts", TM_EXPR_NUMBER},     {"count", TM_EXPR_NUMBER},
        {"mean", TM_EXPR_NUMBER},   {"stddev", TM_EXPR_NUMBER}, {"min", TM_EXPR_NUMBER},
        {"max", TM_EXPR_NUMBER},    {"ewma", TM_EXPR_NUMBER},   {"score", TM_EXPR_NUMBER},
        {"anomalous", TM_EXPR_BOOL}, {"out_of_range", TM_EXPR_BOOL},
        {"quality", TM_EXPR_STRING},
    };
    if (!name)
        return TM_EXPR_ANY;
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (strcmp (name, builtins[i].name) == 0)
            return builtins[i].type;
    const char *dot = strrchr (name, '.');
    if (dot && dot > name)
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
            if (strcmp (dot + 1, fields[i].name) == 0)
                return fields[i].type;
    return TM_EXPR_ANY;
}

//  ---------------------------------------------------------------------
//  Errors

//  Fill err (unless it already holds an error) with a positioned message,
//  as tm_expr does: "at column 8: ..." or "at line 2, column 3: ...".
static void
s_fail (tm_expr_error_t *err, const char *text, size_t len, int code, size_t pos,
        size_t tok_len, const char *fmt, ...) __attribute__ ((format (printf, 7, 8)));

static void
s_fail (tm_expr_error_t *err, const char *text, size_t len, int code, size_t pos,
        size_t tok_len, const char *fmt, ...)
{
    if (err->code)
        return;
    unsigned line = 1, column = 1;
    for (size_t i = 0; i < pos && i < len; i++) {
        unsigned char ch = (unsigned char) text[i];
        if (ch == '\n') {
            line++;
            column = 1;
        }
        else
        if ((ch & 0xC0) != 0x80)
            column++;
    }
    err->code = code;
    err->offset = pos;
    err->length = tok_len;
    err->line = line;
    err->column = column;
    int n;
    if (line > 1)
        n = snprintf (err->message, sizeof err->message, "at line %u, column %u: ", line, column);
    else
        n = snprintf (err->message, sizeof err->message, "at column %u: ", column);
    if (n < 0 || (size_t) n >= sizeof err->message)
        n = 0;
    va_list args;
    va_start (args, fmt);
    vsnprintf (err->message + n, sizeof err->message - (size_t) n, fmt, args);
    va_end (args);
}

//  An error that is not about a position in text (plan bytes).
static void
s_fail_plan (tm_expr_error_t *err, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_fail_plan (tm_expr_error_t *err, int code, const char *fmt, ...)
{
    if (err->code)
        return;
    memset (err, 0, sizeof *err);
    err->code = code;
    int n = snprintf (err->message, sizeof err->message, "query plan: ");
    va_list args;
    va_start (args, fmt);
    vsnprintf (err->message + n, sizeof err->message - (size_t) n, fmt, args);
    va_end (args);
}

//  ---------------------------------------------------------------------
//  Clause-level lexer (the expressions are tm_expr's)

enum {
    C_END = 0,                         //  End of the text
    C_WORD,                            //  Bare word, dotted path allowed
    C_QNAME,                           //  "quoted name"
    C_STRING,                          //  'string'
    C_NUMBER,                          //  Starts with a digit
    C_LPAREN,
    C_RPAREN,
    C_COMMA,
    C_SEMI,
    C_STAR,
    C_OTHER,                           //  Any other character
    C_BAD                              //  Unterminated string or name
};

typedef struct {
    int kind;                          //  C_*
    size_t pos;                        //  Offset of its first byte
    size_t len;                        //  Bytes
} s_tok_t;

static bool
s_is_space (char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static bool
s_is_alpha (char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static bool
s_is_digit (char ch)
{
    return ch >= '0' && ch <= '9';
}

//  Past a quoted run that starts at text[i] (a quote character doubled
//  inside); returns len if it is not closed.
static size_t
s_skip_quoted (const char *text, size_t len, size_t i, bool *closed)
{
    char quote = text[i++];
    *closed = false;
    while (i < len) {
        if (text[i] == quote) {
            if (i + 1 < len && text[i + 1] == quote)
                i += 2;
            else {
                *closed = true;
                return i + 1;
            }
        }
        else
            i++;
    }
    return len;
}

static s_tok_t
s_lex (const char *text, size_t len, size_t pos)
{
    while (pos < len && s_is_space (text[pos]))
        pos++;
    s_tok_t t = {C_END, pos, 0};
    if (pos >= len)
        return t;
    char ch = text[pos];
    size_t i = pos + 1;
    if (s_is_alpha (ch)) {
        t.kind = C_WORD;
        for (;;) {
            while (i < len && (s_is_alpha (text[i]) || s_is_digit (text[i])))
                i++;
            if (i + 1 < len && text[i] == '.' && s_is_alpha (text[i + 1]))
                i++;
            else
                break;
        }
    }
    else
    if (s_is_digit (ch)) {
        t.kind = C_NUMBER;
        while (i < len && (s_is_alpha (text[i]) || s_is_digit (text[i]) || text[i] == '.'))
            i++;
    }
    else
    if (ch == '\'' || ch == '"') {
        bool closed;
        i = s_skip_quoted (text, len, pos, &closed);
        t.kind = !closed? C_BAD: ch == '"'? C_QNAME: C_STRING;
    }
    else {
        t.kind = ch == '('? C_LPAREN: ch == ')'? C_RPAREN: ch == ','? C_COMMA
               : ch == ';'? C_SEMI: ch == '*'? C_STAR: C_OTHER;
        if (t.kind == C_OTHER)
            while (i < len && ((unsigned char) text[i] & 0xC0) == 0x80)
                i++;
    }
    t.len = i - pos;
    return t;
}

//  'token' for messages, at most 32 bytes of it, or "end of input".
static const char *
s_describe (const char *text, s_tok_t t, char *out, size_t cap)
{
    if (t.kind == C_END)
        return "end of input";
    size_t o = 0;
    out[o++] = '\'';
    for (size_t i = 0; i < t.len && i < 32 && o + 6 < cap; i++) {
        unsigned char ch = (unsigned char) text[t.pos + i];
        out[o++] = ch < 0x20 || ch == 0x7F? '?': (char) ch;
    }
    //  A cut may split a UTF-8 sequence: drop the partial tail.
    size_t keep = o;
    while (keep > 1 && ((unsigned char) out[keep - 1] & 0xC0) == 0x80)
        keep--;
    if (keep > 1 && (unsigned char) out[keep - 1] >= 0xC0) {
        unsigned char lead = (unsigned char) out[keep - 1];
        size_t need = lead >= 0xF0? 4: lead >= 0xE0? 3: 2;
        if (o - (keep - 1) < need)
            o = keep - 1;
    }
    if (t.len > 32 && o + 4 < cap) {
        memcpy (out + o, "...", 3);
        o += 3;
    }
    out[o++] = '\'';
    out[o] = 0;
    return out;
}

static bool
s_is_word (const char *text, s_tok_t t, const char *word)
{
    return t.kind == C_WORD && t.len == strlen (word) && strncasecmp (text + t.pos, word, t.len) == 0;
}

//  The name a word, "quoted name" or 'string' token stands for (new
//  string, caller frees), or NULL.
static char *
s_token_name (const char *text, s_tok_t t)
{
    if (t.kind == C_WORD)
        return strndup (text + t.pos, t.len);
    if (t.kind != C_QNAME && t.kind != C_STRING)
        return NULL;
    char quote = text[t.pos];
    char *out = (char *) malloc (t.len);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = t.pos + 1; i + 1 < t.pos + t.len; i++) {
        out[o++] = text[i];
        if (text[i] == quote)
            i++;
    }
    out[o] = 0;
    return out;
}

//  ---------------------------------------------------------------------
//  The shadow text: one-argument min( and max( become _mn( and _mx(, so
//  that tm_expr offers them to the call hook instead of its built-ins.

#define S_SHADOW_MIN "_mn"
#define S_SHADOW_MAX "_mx"

typedef struct {
    size_t name;                       //  Offset of min/max before this '(', or SIZE_MAX
    bool comma;                        //  A ',' at this level: a scalar call
} s_paren_t;

static char *
s_make_shadow (const char *text, size_t len)
{
    char *shadow = (char *) malloc (len + 1);
    if (!shadow)
        return NULL;
    memcpy (shadow, text, len);
    shadow[len] = 0;
    s_paren_t *stack = NULL;
    size_t depth = 0, cap = 0;
    size_t pending = SIZE_MAX;         //  A min/max word waiting for its '('
    size_t i = 0;
    while (i < len) {
        char ch = text[i];
        if (ch == '\'' || ch == '"') {
            bool closed;
            i = s_skip_quoted (text, len, i, &closed);
            pending = SIZE_MAX;
        }
        else
        if (s_is_alpha (ch)) {
            size_t start = i;
            while (i < len && (s_is_alpha (text[i]) || s_is_digit (text[i])))
                i++;
            bool dotted = (start > 0 && text[start - 1] == '.') || (i < len && text[i] == '.');
            pending = SIZE_MAX;
            if (!dotted && i - start == 3
                && (strncasecmp (text + start, "min", 3) == 0
                    || strncasecmp (text + start, "max", 3) == 0)) {
                size_t k = i;
                while (k < len && s_is_space (text[k]))
                    k++;
                if (k < len && text[k] == '(')
                    pending = start;
            }
        }
        else
        if (s_is_digit (ch)) {
            while (i < len && (s_is_alpha (text[i]) || s_is_digit (text[i]) || text[i] == '.'))
                i++;
            pending = SIZE_MAX;
        }
        else {
            if (ch == '(') {
                if (depth == cap) {
                    size_t grown = cap? cap * 2: 16;
                    s_paren_t *more = (s_paren_t *) realloc (stack, grown * sizeof *more);
                    if (!more) {
                        free (stack);
                        free (shadow);
                        return NULL;
                    }
                    stack = more;
                    cap = grown;
                }
                stack[depth].name = pending;
                stack[depth].comma = false;
                depth++;
            }
            else
            if (ch == ',' && depth)
                stack[depth - 1].comma = true;
            else
            if (ch == ')' && depth) {
                depth--;
                s_paren_t *p = &stack[depth];
                if (p->name != SIZE_MAX && !p->comma)
                    memcpy (shadow + p->name,
                            tolower ((unsigned char) text[p->name + 1]) == 'i'? S_SHADOW_MIN
                                                                              : S_SHADOW_MAX, 3);
            }
            if (!s_is_space (ch))
                pending = SIZE_MAX;
            i++;
        }
    }
    //  Unclosed calls go to the hook, which reports them.
    for (size_t d = 0; d < depth; d++)
        if (stack[d].name != SIZE_MAX && !stack[d].comma)
            memcpy (shadow + stack[d].name,
                    tolower ((unsigned char) text[stack[d].name + 1]) == 'i'? S_SHADOW_MIN
                                                                            : S_SHADOW_MAX, 3);
    free (stack);
    return shadow;
}

//  ---------------------------------------------------------------------
//  Parser state

typedef enum {
    S_HOOK_PROBE,                      //  Aggregates noted, not registered
    S_HOOK_FORBID,                     //  Aggregates are an error (WHERE, GROUP BY, rows)
    S_HOOK_FINAL,                      //  Aggregates registered, slots after the keys
    S_HOOK_ARG,                        //  Inside an aggregate's argument: no nesting
    S_HOOK_TRIAL                       //  Any aggregate fails the compile quietly
} s_hook_mode_t;

enum {
    S_NAME_OK = 0,
    S_NAME_NOT_GROUPED,                //  Final resolver: not a GROUP BY key
    S_NAME_TOO_MANY                    //  Row resolver: column limit
};

typedef struct {
    tm_query_t *q;                     //  Query being built
    const char *text;                  //  Original text
    char *shadow;                      //  Same length, min/max aggregates renamed
    size_t len;                        //  Bytes of text
    size_t pos;                        //  Clause lexer: next unread byte
    tm_expr_error_t *err;              //  Caller's error
    s_hook_mode_t hook_mode;           //  What the call hook does now
    bool row_resolver;                 //  Hook arguments: row resolver (else the probe)
    const char *clause;                //  Clause named in S_HOOK_FORBID errors
    const char *outer;                 //  Aggregate whose argument is being compiled
    bool saw_agg;                      //  Probe or trial met an aggregate
    bool hook_failed;                  //  The hook refused: hook_err says why
    tm_expr_error_t hook_err;          //  The hook's error, reported instead of tm_expr's
    int name_fail;                     //  S_NAME_*: why a resolver refused a name
} s_parser_t;

static void
s_perror (s_parser_t *p, int code, size_t pos, size_t len, const char *fmt, ...)
    __attribute__ ((format (printf, 5, 6)));

static void
s_perror (s_parser_t *p, int code, size_t pos, size_t len, const char *fmt, ...)
{
    char message[256];
    va_list args;
    va_start (args, fmt);
    vsnprintf (message, sizeof message, fmt, args);
    va_end (args);
    s_fail (p->err, p->text, p->len, code, pos, len, "%s", message);
}

//  "expected WHAT, found TOKEN" at the token.
static void
s_expected (s_parser_t *p, s_tok_t t, const char *what)
{
    char found[48];
    s_perror (p, TM_EXPR_E_SYNTAX, t.pos, t.len,
              "expected %s, found %s", what, s_describe (p->text, t, found, sizeof found));
}

static s_tok_t
s_peek (s_parser_t *p)
{
    return s_lex (p->text, p->len, p->pos);
}

static void
s_take (s_parser_t *p, s_tok_t t)
{
    p->pos = t.pos + t.len;
}

//  ---------------------------------------------------------------------
//  Resolvers

static int
s_resolve_probe (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    (void) user;
    (void) name;
    (void) len;
    out->slot = 0;
    out->type = TM_EXPR_ANY;
    return 0;
}

static int
s_find_column (const tm_query_t *q, const char *name, size_t len)
{
    for (size_t i = 0; i < q->ncolumns; i++)
        if (strlen (q->columns[i].name) == len && memcmp (q->columns[i].name, name, len) == 0)
            return (int) i;
    return -1;
}

static int
s_resolve_row (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    s_parser_t *p = (s_parser_t *) user;
    tm_query_t *q = p->q;
    int i = s_find_column (q, name, len);
    if (i < 0) {
        if (q->ncolumns == TM_QUERY_MAX_COLUMNS) {
            p->name_fail = S_NAME_TOO_MANY;
            return -1;
        }
        char *copy = strndup (name, len);
        if (!copy)
            return -1;
        i = (int) q->ncolumns++;
        q->columns[i].name = copy;
        q->columns[i].type = tm_query_builtin_type (copy);
    }
    out->slot = (uint32_t) i;
    out->type = q->columns[i].type;
    return 0;
}

static tm_expr_type_t
s_static_type (const tm_expr_t *e)
{
    tm_expr_type_t t = tm_expr_type (e);
    return t == TM_EXPR_NULL? TM_EXPR_ANY: t;
}

static int
s_resolve_final (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    s_parser_t *p = (s_parser_t *) user;
    const tm_query_t *q = p->q;
    for (size_t i = 0; i < q->nkeys; i++)
        if (q->key_name[i] && strlen (q->key_name[i]) == len
            && memcmp (q->key_name[i], name, len) == 0) {
            out->slot = (uint32_t) i;
            out->type = s_static_type (q->keys[i]);
            return 0;
        }
    p->name_fail = S_NAME_NOT_GROUPED;
    return -1;
}

//  Drop columns added past count (a trial compile's).
static void
s_truncate_columns (tm_query_t *q, size_t count)
{
    while (q->ncolumns > count) {
        q->ncolumns--;
        free (q->columns[q->ncolumns].name);
        q->columns[q->ncolumns].name = NULL;
    }
}

//  ---------------------------------------------------------------------
//  Aggregates: tm_expr's call hook

static const struct {
    const char *name;                  //  As written, case-insensitive
    tm_query_agg_t func;               //  What it computes
    double q;                          //  Quantile
} s_agg_names[] = {
    {"count", TM_QUERY_AGG_COUNT, 0},  {"sum", TM_QUERY_AGG_SUM, 0},
    {"avg", TM_QUERY_AGG_AVG, 0},      {"min", TM_QUERY_AGG_MIN, 0},
    {"max", TM_QUERY_AGG_MAX, 0},      {"p50", TM_QUERY_AGG_QUANTILE, 0.5},
    {"p90", TM_QUERY_AGG_QUANTILE, 0.9}, {"p99", TM_QUERY_AGG_QUANTILE, 0.99},
};

static tm_expr_t *s_compile (s_parser_t *p, size_t at, tm_expr_resolve_fn *resolve,
                             s_hook_mode_t mode, tm_expr_type_t expect, size_t *end,
                             tm_expr_error_t *err);

//  The hook reports through hook_err and declines; the compile that
//  called it then reports hook_err instead of "unknown function".
static int
s_hook_fail (s_parser_t *p, int code, size_t pos, size_t len, const char *fmt, ...)
    __attribute__ ((format (printf, 5, 6)));

static int
s_hook_fail (s_parser_t *p, int code, size_t pos, size_t len, const char *fmt, ...)
{
    char message[256];
    va_list args;
    va_start (args, fmt);
    vsnprintf (message, sizeof message, fmt, args);
    va_end (args);
    memset (&p->hook_err, 0, sizeof p->hook_err);
    s_fail (&p->hook_err, p->text, p->len, code, pos, len, "%s", message);
    p->hook_failed = true;
    return -1;
}

static size_t
s_skip_space (const char *text, size_t len, size_t i)
{
    while (i < len && s_is_space (text[i]))
        i++;
    return i;
}

static int
s_call (void *user, const char *text, size_t len, size_t pos, size_t name_len,
        tm_expr_slot_t *out, size_t *end, char canon[TM_EXPR_MAX_NAME + 1])
{
    s_parser_t *p = (s_parser_t *) user;
    int which = -1;
    for (size_t i = 0; i < sizeof s_agg_names / sizeof s_agg_names[0]; i++)
        if (strlen (s_agg_names[i].name) == name_len
            && strncasecmp (p->text + pos, s_agg_names[i].name, name_len) == 0)
            which = (int) i;
    if (which < 0)
        return -1;                     //  tm_expr: unknown function
    const char *name = s_agg_names[which].name;
    tm_query_agg_t func = s_agg_names[which].func;
    switch (p->hook_mode) {
        case S_HOOK_TRIAL:
            p->saw_agg = true;
            return -1;
        case S_HOOK_FORBID:
            return s_hook_fail (p, TM_EXPR_E_SYNTAX, pos, name_len,
                                "aggregate %s() is not allowed in %s", name, p->clause);
        case S_HOOK_ARG:
            return s_hook_fail (p, TM_EXPR_E_SYNTAX, pos, name_len,
                                "aggregate %s() cannot be nested inside %s()", name, p->outer);
        default:
            break;
    }
    size_t i = s_skip_space (text, len, pos + name_len);
    if (i >= len || text[i] != '(')
        return -1;
    i = s_skip_space (text, len, i + 1);
    tm_expr_t *arg = NULL;
    if (func == TM_QUERY_AGG_COUNT && i < len && text[i] == '*')
        i = s_skip_space (text, len, i + 1);
    else {
        size_t arg_at = i;
        tm_expr_error_t err;
        s_hook_mode_t mode = p->hook_mode;
        const char *outer = p->outer;
        p->outer = name;
        arg = s_compile (p, arg_at, p->row_resolver? s_resolve_row: s_resolve_probe,
                         S_HOOK_ARG, TM_EXPR_ANY, &i, &err);
        p->outer = outer;
        p->hook_mode = mode;
        if (!arg) {
            p->hook_err = err;
            p->hook_failed = true;
            return -1;
        }
        tm_expr_type_t type = tm_expr_type (arg);
        if (func != TM_QUERY_AGG_COUNT && type != TM_EXPR_NUMBER && type != TM_EXPR_ANY
            && type != TM_EXPR_NULL) {
            tm_expr_destroy (&arg);
            //  Here type is string, boolean or location: all take "a".
            return s_hook_fail (p, TM_EXPR_E_TYPE, arg_at, 0, "%s() needs a number, found a %s",
                                name, tm_expr_type_name (type));
        }
    }
    if (i >= len || text[i] != ')') {
        tm_expr_destroy (&arg);
        char what[64], found[48];
        s_tok_t t = s_lex (p->text, len, i);
        snprintf (what, sizeof what, "')' to close %s(", name);
        return s_hook_fail (p, TM_EXPR_E_SYNTAX, t.pos, t.len, "expected %s, found %s", what,
                            s_describe (p->text, t, found, sizeof found));
    }
    *end = i + 1;
    char *inner = arg? tm_expr_print (arg, 0): strdup ("*");
    if (!inner) {
        tm_expr_destroy (&arg);
        return s_hook_fail (p, TM_EXPR_E_NOMEM, pos, name_len, "out of memory");
    }
    int n = snprintf (canon, TM_EXPR_MAX_NAME + 1, "%s(%s)", name, inner);
    free (inner);
    if (n < 0 || n > TM_EXPR_MAX_NAME) {
        tm_expr_destroy (&arg);
        return s_hook_fail (p, TM_EXPR_E_LIMIT, pos, name_len,
                            "the canonical text of %s(...) is longer than %d bytes", name,
                            TM_EXPR_MAX_NAME);
    }
    out->type = TM_EXPR_NUMBER;
    if (p->hook_mode == S_HOOK_PROBE) {
        tm_expr_destroy (&arg);
        p->saw_agg = true;
        out->slot = 0;
        return 0;
    }
    tm_query_t *q = p->q;
    size_t slot = 0;
    while (slot < q->naggs && strcmp (q->aggs[slot].canon, canon) != 0)
        slot++;
    if (slot < q->naggs)
        tm_expr_destroy (&arg);
    else {
        if (q->naggs == TM_QUERY_MAX_AGGREGATES) {
            tm_expr_destroy (&arg);
            return s_hook_fail (p, TM_EXPR_E_LIMIT, pos, name_len,
                                "more than %d distinct aggregates", TM_QUERY_MAX_AGGREGATES);
        }
        char *copy = strdup (canon);
        if (!copy) {
            tm_expr_destroy (&arg);
            return s_hook_fail (p, TM_EXPR_E_NOMEM, pos, name_len, "out of memory");
        }
        s_agg_t *agg = &q->aggs[q->naggs++];
        agg->func = func;
        agg->q = s_agg_names[which].q;
        agg->arg = arg;
        agg->canon = copy;
    }
    out->slot = (uint32_t) (q->nkeys + slot);
    return 0;
}

//  Messages quote tokens of the shadow text: show the words as written.
static void
s_unshadow (const s_parser_t *p, tm_expr_error_t *err)
{
    if (err->offset + 3 > p->len || memcmp (p->shadow + err->offset, p->text + err->offset, 3) == 0)
        return;
    char from[6] = {'\'', 0, 0, 0, '\'', 0}, to[6] = {'\'', 0, 0, 0, '\'', 0};
    memcpy (from + 1, p->shadow + err->offset, 3);
    memcpy (to + 1, p->text + err->offset, 3);
    char *at = strstr (err->message, from);
    if (at)
        memcpy (at, to, 5);
}

//  Compile one expression of the query at offset at: the shadow text goes
//  to tm_expr, errors come back in the words of the original.
static tm_expr_t *
s_compile (s_parser_t *p, size_t at, tm_expr_resolve_fn *resolve, s_hook_mode_t mode,
           tm_expr_type_t expect, size_t *end, tm_expr_error_t *err)
{
    s_hook_mode_t saved = p->hook_mode;
    p->hook_mode = mode;
    p->hook_failed = false;
    p->name_fail = S_NAME_OK;
    tm_expr_options_t opts = {resolve, s_call, p, expect};
    tm_expr_t *e = tm_expr_compile_at (p->shadow, p->len, at, &opts, end, err);
    p->hook_mode = saved;
    if (e)
        return e;
    if (p->hook_failed)
        *err = p->hook_err;
    else
    if (err->code == TM_EXPR_E_UNKNOWN_NAME && p->name_fail != S_NAME_OK) {
        int why = p->name_fail;
        size_t offset = err->offset, length = err->length;
        memset (err, 0, sizeof *err);
        if (why == S_NAME_TOO_MANY)
            s_fail (err, p->text, p->len, TM_EXPR_E_LIMIT, offset, length,
                    "more than %d distinct names in one query", TM_QUERY_MAX_COLUMNS);
        else {
            s_tok_t t = s_lex (p->text, p->len, offset);
            char quoted[48];
            const char *shown = t.kind == C_QNAME? strndup (p->text + t.pos, t.len > 40? 40: t.len)
                                                 : NULL;
            s_fail (err, p->text, p->len, TM_EXPR_E_UNKNOWN_NAME, offset, length,
                    "column %s must appear in GROUP BY or inside an aggregate",
                    shown? shown: s_describe (p->text, t, quoted, sizeof quoted));
            free ((char *) shown);
        }
    }
    s_unshadow (p, err);
    p->hook_failed = false;
    return NULL;
}

//  Compile and report into the parser's error.
static tm_expr_t *
s_compile_or_fail (s_parser_t *p, size_t at, tm_expr_resolve_fn *resolve, s_hook_mode_t mode,
                   tm_expr_type_t expect, size_t *end)
{
    tm_expr_error_t err;
    tm_expr_t *e = s_compile (p, at, resolve, mode, expect, end, &err);
    if (!e && !p->err->code)
        *p->err = err;
    return e;
}

//  An expression that reads one final slot (a SELECT or ORDER BY item
//  that repeats a GROUP BY expression) and prints as that expression:
//  "k()" through a hook that answers with the slot and the key's text.
typedef struct {
    tm_expr_slot_t slot;               //  The key's final slot and type
    const char *canon;                 //  The key's canonical text
} s_fixed_t;

static int
s_call_fixed (void *user, const char *text, size_t len, size_t pos, size_t name_len,
              tm_expr_slot_t *out, size_t *end, char canon[TM_EXPR_MAX_NAME + 1])
{
    (void) text;
    (void) len;
    (void) name_len;
    const s_fixed_t *fixed = (const s_fixed_t *) user;
    *out = fixed->slot;
    *end = pos + 3;
    if (strlen (fixed->canon) <= TM_EXPR_MAX_NAME)
        strcpy (canon, fixed->canon);
    else
        snprintf (canon, TM_EXPR_MAX_NAME + 1, "key%u", fixed->slot.slot + 1);
    return 0;
}

static tm_expr_t *
s_slot_expr (const tm_query_t *q, size_t key)
{
    s_fixed_t fixed = {{(uint32_t) key, s_static_type (q->keys[key])}, q->key_canon[key]};
    tm_expr_options_t opts = {NULL, s_call_fixed, &fixed, TM_EXPR_ANY};
    return tm_expr_compile ("k()", &opts, NULL);
}

//  Canonical text of the quoted form of name, for comparing a printed key
//  with a bare name: `"odd name"`.
static bool
s_prints_as_name (const char *printed, const char *name)
{
    if (strcmp (printed, name) == 0)
        return true;
    size_t n = strlen (printed);
    if (n < 2 || printed[0] != '"' || printed[n - 1] != '"')
        return false;
    const char *s = printed + 1, *stop = printed + n - 1;
    while (s < stop && *name) {
        if (*s != *name)
            return false;
        s += *s == '"'? 2: 1;
        name++;
    }
    return s == stop && !*name;
}

//  ---------------------------------------------------------------------
//  Clauses

typedef struct {
    size_t start;                      //  Offset of the item's expression
    bool has_agg;                      //  Probe met an aggregate in it
    char *alias;                       //  AS name, or NULL
    const char *star;                  //  SELECT *: the column it stands for
} s_item_t;

//  Stages of the clauses after FROM twins, for "expected ..." messages.
enum { S_AFTER_FROM, S_AFTER_WHERE, S_AFTER_GROUP, S_AFTER_HAVING, S_AFTER_ORDER,
       S_AFTER_LIMIT, S_AFTER_AT, S_AFTER_SEMI };

static void
s_expected_clause (s_parser_t *p, s_tok_t t, int stage)
{
    static const char *names[] = {"WHERE", "GROUP BY", "HAVING", "ORDER BY", "LIMIT",
                                  "AT SITES"};
    char what[160];
    size_t n = 0;
    what[0] = 0;
    for (int s = stage; s < 6; s++)
        n += (size_t) snprintf (what + n, sizeof what - n, "%s, ", names[s]);
    if (stage < S_AFTER_SEMI)
        snprintf (what + n, sizeof what - n, "';' or end of input");
    else
        snprintf (what + n, sizeof what - n, "end of input");
    s_expected (p, t, what);
}

static bool
s_is_order_end (const s_parser_t *p, s_tok_t t)
{
    return t.kind == C_COMMA || t.kind == C_SEMI || t.kind == C_END
           || s_is_word (p->text, t, "ASC") || s_is_word (p->text, t, "DESC")
           || s_is_word (p->text, t, "LIMIT") || s_is_word (p->text, t, "AT");
}

static int
s_parse_select_list (s_parser_t *p, s_item_t *items, size_t *nitems)
{
    s_tok_t t = s_peek (p);
    if (!s_is_word (p->text, t, "SELECT")) {
        s_expected (p, t, "SELECT");
        return -1;
    }
    s_take (p, t);
    t = s_peek (p);
    if (t.kind == C_STAR) {
        static const char *star[] = {"entity", "model", "status"};
        s_take (p, t);
        for (size_t i = 0; i < 3; i++) {
            items[i].start = t.pos;
            items[i].star = star[i];
        }
        *nitems = 3;
        t = s_peek (p);
        if (!s_is_word (p->text, t, "FROM")) {
            s_expected (p, t, "FROM after SELECT *");
            return -1;
        }
        return 0;
    }
    for (;;) {
        if (*nitems == TM_QUERY_MAX_SELECT) {
            s_perror (p, TM_EXPR_E_LIMIT, t.pos, t.len, "more than %d select items",
                      TM_QUERY_MAX_SELECT);
            return -1;
        }
        s_item_t *item = &items[(*nitems)++];
        item->start = t.pos;
        size_t end;
        p->saw_agg = false;
        p->row_resolver = false;
        tm_expr_t *probe = s_compile_or_fail (p, t.pos, s_resolve_probe, S_HOOK_PROBE,
                                              TM_EXPR_ANY, &end);
        if (!probe)
            return -1;
        tm_expr_destroy (&probe);
        item->has_agg = p->saw_agg;
        p->pos = end;
        t = s_peek (p);
        if (s_is_word (p->text, t, "AS")) {
            s_take (p, t);
            t = s_peek (p);
            if ((t.kind != C_WORD && t.kind != C_QNAME) || s_is_word (p->text, t, "FROM")) {
                s_expected (p, t, "a name after AS");
                return -1;
            }
            item->alias = s_token_name (p->text, t);
            if (!item->alias || !*item->alias || strlen (item->alias) > TM_EXPR_MAX_NAME) {
                s_perror (p, TM_EXPR_E_SYNTAX, t.pos, t.len, "an alias must be 1 to %d bytes",
                          TM_EXPR_MAX_NAME);
                return -1;
            }
            s_take (p, t);
            t = s_peek (p);
            if (t.kind != C_COMMA && !s_is_word (p->text, t, "FROM")) {
                s_expected (p, t, "',' or FROM after a select item");
                return -1;
            }
        }
        if (t.kind == C_COMMA) {
            s_take (p, t);
            t = s_peek (p);
            continue;
        }
        if (!s_is_word (p->text, t, "FROM")) {
            s_expected (p, t, "',', AS or FROM after a select item");
            return -1;
        }
        return 0;
    }
}

//  SELECT items once GROUP BY is known.
static int
s_finish_select (s_parser_t *p, s_item_t *items, size_t nitems)
{
    tm_query_t *q = p->q;
    for (size_t i = 0; i < nitems; i++) {
        s_item_t *item = &items[i];
        tm_expr_t *e = NULL;
        char *title = NULL;
        size_t end;
        if (item->star) {
            if (q->aggregate) {
                s_perror (p, TM_EXPR_E_SYNTAX, item->start, 1,
                          "SELECT * cannot be used with GROUP BY or aggregates");
                return -1;
            }
            p->hook_mode = S_HOOK_FORBID;
            tm_expr_options_t opts = {s_resolve_row, NULL, p, TM_EXPR_ANY};
            e = tm_expr_compile (item->star, &opts, NULL);
            title = strdup (item->star);
        }
        else
        if (!q->aggregate) {
            p->clause = "SELECT";
            e = s_compile_or_fail (p, item->start, s_resolve_row, S_HOOK_FORBID, TM_EXPR_ANY,
                                   &end);
            if (!e)
                return -1;
            title = item->alias? strdup (item->alias): tm_expr_print (e, 0);
        }
        else {
            if (!item->has_agg) {
                //  An item that repeats a GROUP BY expression is that key.
                size_t before = q->ncolumns;
                tm_expr_error_t ignored;
                tm_expr_t *trial = s_compile (p, item->start, s_resolve_row, S_HOOK_TRIAL,
                                              TM_EXPR_ANY, &end, &ignored);
                char *printed = trial? tm_expr_print (trial, 0): NULL;
                s_truncate_columns (q, before);
                for (size_t k = 0; printed && k < q->nkeys && !e; k++)
                    if (strcmp (printed, q->key_canon[k]) == 0) {
                        e = s_slot_expr (q, k);
                        title = item->alias? strdup (item->alias): strdup (printed);
                    }
                free (printed);
                tm_expr_destroy (&trial);
            }
            if (!e) {
                p->row_resolver = true;
                e = s_compile_or_fail (p, item->start, s_resolve_final, S_HOOK_FINAL,
                                       TM_EXPR_ANY, &end);
                if (!e)
                    return -1;
                title = item->alias? strdup (item->alias): tm_expr_print (e, 0);
            }
        }
        q->outputs[q->noutputs] = e;
        q->titles[q->noutputs++] = title;
        if (!e || !title) {
            s_perror (p, TM_EXPR_E_NOMEM, item->start, 0, "out of memory");
            return -1;
        }
    }
    return 0;
}

static bool
s_is_group_end (const s_parser_t *p, s_tok_t t)
{
    return t.kind == C_COMMA || t.kind == C_SEMI || t.kind == C_END
           || s_is_word (p->text, t, "HAVING") || s_is_word (p->text, t, "ORDER")
           || s_is_word (p->text, t, "LIMIT") || s_is_word (p->text, t, "AT");
}

static int
s_parse_group_by (s_parser_t *p, const s_item_t *items, size_t nitems)
{
    tm_query_t *q = p->q;
    for (;;) {
        s_tok_t t = s_peek (p);
        if (q->nkeys == TM_QUERY_MAX_GROUP_KEYS) {
            s_perror (p, TM_EXPR_E_LIMIT, t.pos, t.len, "more than %d GROUP BY keys",
                      TM_QUERY_MAX_GROUP_KEYS);
            return -1;
        }
        size_t before = q->ncolumns, end;
        p->clause = "GROUP BY";
        //  GROUP BY band, where band is a SELECT item's alias: the key is
        //  that item's expression (as ORDER BY reads aliases). The item
        //  then repeats the key, so it is the key in the answer too.
        size_t at = t.pos, resume = 0;
        s_tok_t next = s_lex (p->text, p->len, t.pos + t.len);
        if ((t.kind == C_WORD || t.kind == C_QNAME) && s_is_group_end (p, next)) {
            char *name = s_token_name (p->text, t);
            for (size_t i = 0; name && i < nitems; i++)
                if (items[i].alias && !items[i].star && strcmp (items[i].alias, name) == 0) {
                    at = items[i].start;
                    resume = t.pos + t.len;
                    break;
                }
            free (name);
        }
        tm_expr_t *key = s_compile_or_fail (p, at, s_resolve_row, S_HOOK_FORBID,
                                            TM_EXPR_ANY, &end);
        if (!key)
            return -1;
        if (resume)
            end = resume;
        size_t k = q->nkeys++;
        q->keys[k] = key;
        q->key_canon[k] = tm_expr_print (key, 0);
        if (!q->key_canon[k]) {
            s_perror (p, TM_EXPR_E_NOMEM, t.pos, 0, "out of memory");
            return -1;
        }
        //  A bare name is exactly one new or existing column printed alone.
        for (size_t c = 0; c < q->ncolumns && !q->key_name[k]; c++)
            if (s_prints_as_name (q->key_canon[k], q->columns[c].name))
                q->key_name[k] = strdup (q->columns[c].name);
        (void) before;
        p->pos = end;
        t = s_peek (p);
        if (t.kind != C_COMMA)
            return 0;
        s_take (p, t);
    }
}

static int
s_parse_order_by (s_parser_t *p, s_item_t *items, size_t nitems)
{
    tm_query_t *q = p->q;
    for (;;) {
        s_tok_t t = s_peek (p);
        if (q->norder == TM_QUERY_MAX_ORDER) {
            s_perror (p, TM_EXPR_E_LIMIT, t.pos, t.len, "more than %d ORDER BY keys",
                      TM_QUERY_MAX_ORDER);
            return -1;
        }
        size_t k = q->norder;
        q->order_ref[k] = -1;
        s_tok_t next = s_lex (p->text, p->len, t.pos + t.len);
        if ((t.kind == C_WORD || t.kind == C_QNAME) && s_is_order_end (p, next)) {
            char *name = s_token_name (p->text, t);
            for (size_t i = 0; name && i < nitems && q->order_ref[k] < 0; i++)
                if (items[i].alias && strcmp (items[i].alias, name) == 0)
                    q->order_ref[k] = (int) i;
            free (name);
        }
        else
        if (t.kind == C_NUMBER && s_is_order_end (p, next)) {
            bool digits = t.len <= 6;
            for (size_t i = 0; i < t.len; i++)
                digits = digits && s_is_digit (p->text[t.pos + i]);
            long n = digits? strtol (p->text + t.pos, NULL, 10): 0;
            if (digits) {
                if (n < 1 || (size_t) n > nitems) {
                    s_perror (p, TM_EXPR_E_SYNTAX, t.pos, t.len,
                              "ORDER BY column number must be from 1 to %zu", nitems);
                    return -1;
                }
                q->order_ref[k] = (int) n - 1;
            }
        }
        size_t end;
        if (q->order_ref[k] >= 0)
            end = t.pos + t.len;
        else
        if (!q->aggregate) {
            p->clause = "ORDER BY of a query without aggregates";
            q->order[k] = s_compile_or_fail (p, t.pos, s_resolve_row, S_HOOK_FORBID,
                                             TM_EXPR_ANY, &end);
            if (!q->order[k])
                return -1;
        }
        else {
            size_t before = q->ncolumns;
            tm_expr_error_t ignored;
            tm_expr_t *trial = s_compile (p, t.pos, s_resolve_row, S_HOOK_TRIAL, TM_EXPR_ANY,
                                          &end, &ignored);
            char *printed = trial? tm_expr_print (trial, 0): NULL;
            s_truncate_columns (q, before);
            for (size_t i = 0; printed && i < q->nkeys && !q->order[k]; i++)
                if (strcmp (printed, q->key_canon[i]) == 0)
                    q->order[k] = s_slot_expr (q, i);
            free (printed);
            tm_expr_destroy (&trial);
            if (!q->order[k]) {
                p->row_resolver = true;
                q->order[k] = s_compile_or_fail (p, t.pos, s_resolve_final, S_HOOK_FINAL,
                                                 TM_EXPR_ANY, &end);
                if (!q->order[k])
                    return -1;
            }
        }
        q->norder++;
        p->pos = end;
        t = s_peek (p);
        if (s_is_word (p->text, t, "ASC") || s_is_word (p->text, t, "DESC")) {
            q->desc[k] = s_is_word (p->text, t, "DESC");
            s_take (p, t);
            t = s_peek (p);
        }
        if (t.kind != C_COMMA)
            return 0;
        s_take (p, t);
    }
}

static int
s_parse_limit (s_parser_t *p)
{
    s_tok_t t = s_peek (p);
    bool digits = t.kind == C_NUMBER && t.len <= 7;
    for (size_t i = 0; digits && i < t.len; i++)
        digits = s_is_digit (p->text[t.pos + i]);
    long n = digits? strtol (p->text + t.pos, NULL, 10): 0;
    if (!digits || n < 1 || n > TM_QUERY_MAX_LIMIT) {
        char found[48];
        s_perror (p, t.kind == C_NUMBER? TM_EXPR_E_LIMIT: TM_EXPR_E_SYNTAX, t.pos, t.len,
                  "expected a whole number from 1 to %d after LIMIT, found %s",
                  TM_QUERY_MAX_LIMIT, s_describe (p->text, t, found, sizeof found));
        return -1;
    }
    p->q->limit = (uint32_t) n;
    s_take (p, t);
    return 0;
}

static int
s_parse_sites (s_parser_t *p)
{
    tm_query_t *q = p->q;
    s_tok_t t = s_peek (p);
    if (s_is_word (p->text, t, "ALL")) {
        s_take (p, t);
        t = s_peek (p);
        if (!s_is_word (p->text, t, "SITES")) {
            s_expected (p, t, "SITES after AT ALL");
            return -1;
        }
        s_take (p, t);
        q->all_sites = true;
        return 0;
    }
    if (!s_is_word (p->text, t, "SITES")) {
        s_expected (p, t, "SITES or ALL SITES after AT");
        return -1;
    }
    s_take (p, t);
    t = s_peek (p);
    if (t.kind != C_LPAREN) {
        s_expected (p, t, "'(' after AT SITES");
        return -1;
    }
    s_take (p, t);
    for (;;) {
        t = s_peek (p);
        char *name = s_token_name (p->text, t);
        if (!name || !*name || strlen (name) > TM_EXPR_MAX_NAME
            || !tm_util_utf8_valid (name, strlen (name))) {
            bool was_name = name != NULL;
            free (name);
            if (was_name)
                s_perror (p, TM_EXPR_E_SYNTAX, t.pos, t.len, "a site name must be 1 to %d bytes",
                          TM_EXPR_MAX_NAME);
            else
                s_expected (p, t, "a site name");
            return -1;
        }
        for (size_t i = 0; i < q->nsites; i++)
            if (strcmp (q->sites[i], name) == 0) {
                free (name);
                s_perror (p, TM_EXPR_E_SYNTAX, t.pos, t.len, "site '%s' is named twice",
                          q->sites[i]);
                return -1;
            }
        if (q->nsites == TM_QUERY_MAX_SITES) {
            free (name);
            s_perror (p, TM_EXPR_E_LIMIT, t.pos, t.len, "more than %d sites",
                      TM_QUERY_MAX_SITES);
            return -1;
        }
        q->sites[q->nsites++] = name;
        s_take (p, t);
        t = s_peek (p);
        s_take (p, t);
        if (t.kind == C_RPAREN)
            return 0;
        if (t.kind != C_COMMA) {
            s_expected (p, t, "',' or ')' after a site name");
            return -1;
        }
    }
}

static int
s_parse (s_parser_t *p)
{
    tm_query_t *q = p->q;
    s_item_t items[TM_QUERY_MAX_SELECT];
    size_t nitems = 0;
    memset (items, 0, sizeof items);
    int rc = -1;
    if (s_parse_select_list (p, items, &nitems) != 0)
        goto done;
    s_take (p, s_peek (p));            //  FROM
    s_tok_t t = s_peek (p);
    if (!s_is_word (p->text, t, "twins")) {
        s_expected (p, t, "'twins' after FROM");
        goto done;
    }
    s_take (p, t);
    t = s_peek (p);
    size_t end;
    if (s_is_word (p->text, t, "WHERE")) {
        s_take (p, t);
        p->clause = "WHERE";
        q->where = s_compile_or_fail (p, p->pos, s_resolve_row, S_HOOK_FORBID, TM_EXPR_BOOL,
                                      &end);
        if (!q->where)
            goto done;
        p->pos = end;
        t = s_peek (p);
    }
    if (s_is_word (p->text, t, "GROUP")) {
        s_take (p, t);
        t = s_peek (p);
        if (!s_is_word (p->text, t, "BY")) {
            s_expected (p, t, "BY after GROUP");
            goto done;
        }
        s_take (p, t);
        if (s_parse_group_by (p, items, nitems) != 0)
            goto done;
        t = s_peek (p);
    }
    for (size_t i = 0; i < nitems; i++)
        q->aggregate = q->aggregate || items[i].has_agg;
    q->aggregate = q->aggregate || q->nkeys > 0;
    if (s_finish_select (p, items, nitems) != 0)
        goto done;
    int stage = q->nkeys? S_AFTER_GROUP: q->where? S_AFTER_WHERE: S_AFTER_FROM;
    if (s_is_word (p->text, t, "HAVING")) {
        if (!q->aggregate) {
            s_perror (p, TM_EXPR_E_SYNTAX, t.pos, t.len,
                      "HAVING needs GROUP BY or an aggregate in SELECT");
            goto done;
        }
        s_take (p, t);
        p->row_resolver = true;
        q->having = s_compile_or_fail (p, p->pos, s_resolve_final, S_HOOK_FINAL, TM_EXPR_BOOL,
                                       &end);
        if (!q->having)
            goto done;
        p->pos = end;
        t = s_peek (p);
        stage = S_AFTER_HAVING;
    }
    if (s_is_word (p->text, t, "ORDER")) {
        s_take (p, t);
        t = s_peek (p);
        if (!s_is_word (p->text, t, "BY")) {
            s_expected (p, t, "BY after ORDER");
            goto done;
        }
        s_take (p, t);
        if (s_parse_order_by (p, items, nitems) != 0)
            goto done;
        t = s_peek (p);
        stage = S_AFTER_ORDER;
    }
    if (s_is_word (p->text, t, "LIMIT")) {
        s_take (p, t);
        if (s_parse_limit (p) != 0)
            goto done;
        t = s_peek (p);
        stage = S_AFTER_LIMIT;
    }
    if (s_is_word (p->text, t, "AT")) {
        s_take (p, t);
        if (s_parse_sites (p) != 0)
            goto done;
        t = s_peek (p);
        stage = S_AFTER_AT;
    }
    if (t.kind == C_SEMI) {
        s_take (p, t);
        t = s_peek (p);
        stage = S_AFTER_SEMI;
    }
    if (t.kind != C_END) {
        s_expected_clause (p, t, stage);
        goto done;
    }
    rc = 0;
done:
    for (size_t i = 0; i < nitems; i++)
        free (items[i].alias);
    return rc;
}

tm_query_t *
tm_query_parse (const char *text, tm_expr_error_t *err)
{
    tm_expr_error_t local;
    if (!err)
        err = &local;
    memset (err, 0, sizeof *err);
    if (!text)
        text = "";
    size_t len = strnlen (text, TM_QUERY_MAX_TEXT + 1);
    if (len > TM_QUERY_MAX_TEXT) {
        s_fail (err, text, 0, TM_EXPR_E_LIMIT, 0, 0, "a query is at most %d bytes",
                TM_QUERY_MAX_TEXT);
        return NULL;
    }
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char) text[i];
        size_t n = ch < 0x80? 1: ch >= 0xF0? 4: ch >= 0xE0? 3: 2;
        if (i + n > len || !tm_util_utf8_valid (text + i, n)) {
            s_fail (err, text, len, TM_EXPR_E_SYNTAX, i, 1, "the text is not valid UTF-8");
            return NULL;
        }
        i += n;
    }
    tm_query_t *q = (tm_query_t *) calloc (1, sizeof *q);
    s_parser_t *p = (s_parser_t *) calloc (1, sizeof *p);
    char *shadow = s_make_shadow (text, len);
    if (!q || !p || !shadow || !(q->text = strndup (text, len))) {
        free (shadow);
        free (p);
        tm_query_destroy (&q);
        s_fail (err, text, len, TM_EXPR_E_NOMEM, 0, 0, "out of memory");
        return NULL;
    }
    q->final = true;
    p->q = q;
    p->text = text;
    p->shadow = shadow;
    p->len = len;
    p->err = err;
    int rc = s_parse (p);
    free (shadow);
    free (p);
    if (rc != 0) {
        if (!err->code)
            s_fail (err, text, len, TM_EXPR_E_SYNTAX, 0, 0, "invalid query");
        tm_query_destroy (&q);
    }
    return q;
}

void
tm_query_destroy (tm_query_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_query_t *self = *self_p;
    free (self->text);
    for (size_t i = 0; i < self->ncolumns; i++)
        free (self->columns[i].name);
    tm_expr_destroy (&self->where);
    for (size_t i = 0; i < self->nkeys; i++) {
        tm_expr_destroy (&self->keys[i]);
        free (self->key_canon[i]);
        free (self->key_name[i]);
    }
    for (size_t i = 0; i < self->naggs; i++) {
        tm_expr_destroy (&self->aggs[i].arg);
        free (self->aggs[i].canon);
    }
    for (size_t i = 0; i < self->noutputs; i++) {
        tm_expr_destroy (&self->outputs[i]);
        free (self->titles[i]);
    }
    for (size_t i = 0; i < self->norder; i++)
        tm_expr_destroy (&self->order[i]);
    tm_expr_destroy (&self->having);
    for (size_t i = 0; i < self->nsites; i++)
        free (self->sites[i]);
    free (self);
    *self_p = NULL;
}

//  ---------------------------------------------------------------------
//  Plan bytes

//  Buffers to free once the plan is packed.
typedef struct {
    void *items[8 + 2 * TM_QUERY_MAX_AGGREGATES + TM_QUERY_MAX_GROUP_KEYS + TM_QUERY_MAX_SELECT
                + TM_QUERY_MAX_ORDER];  //  Owned buffers
    size_t count;                      //  Items in use
    bool failed;                       //  An allocation failed
} s_bag_t;

static void *
s_bag_add (s_bag_t *bag, void *item)
{
    if (!item || bag->count == sizeof bag->items / sizeof bag->items[0])
        bag->failed = true;
    else
        bag->items[bag->count++] = item;
    return item;
}

static ProtobufCBinaryData
s_bag_expr (s_bag_t *bag, const tm_expr_t *e)
{
    ProtobufCBinaryData b = {0, NULL};
    if (!e)
        return b;
    size_t size = 0;
    uint8_t *data = (uint8_t *) s_bag_add (bag, tm_expr_serialise (e, &size));
    if (data) {
        b.data = data;
        b.len = size;
    }
    return b;
}

uint8_t *
tm_query_plan_encode (const tm_query_t *self, size_t *size)
{
    assert (self);
    assert (size);
    s_bag_t *bag = (s_bag_t *) calloc (1, sizeof *bag);
    if (!bag)
        return NULL;
    Twinmesh__QueryPlan plan = TWINMESH__QUERY_PLAN__INIT;
    Twinmesh__QueryColumn columns[TM_QUERY_MAX_COLUMNS];
    Twinmesh__QueryColumn *column_ptrs[TM_QUERY_MAX_COLUMNS];
    Twinmesh__QueryAggregate aggs[TM_QUERY_MAX_AGGREGATES];
    Twinmesh__QueryAggregate *agg_ptrs[TM_QUERY_MAX_AGGREGATES];
    ProtobufCBinaryData keys[TM_QUERY_MAX_GROUP_KEYS];
    ProtobufCBinaryData select[TM_QUERY_MAX_SELECT];
    Twinmesh__QueryOrder order[TM_QUERY_MAX_ORDER];
    Twinmesh__QueryOrder *order_ptrs[TM_QUERY_MAX_ORDER];
    plan.text = self->text;
    plan.aggregate = self->aggregate;
    plan.n_columns = self->ncolumns;
    plan.columns = column_ptrs;
    for (size_t i = 0; i < self->ncolumns; i++) {
        twinmesh__query_column__init (&columns[i]);
        columns[i].name = self->columns[i].name;
        columns[i].type = self->columns[i].type;
        column_ptrs[i] = &columns[i];
    }
    plan.where = s_bag_expr (bag, self->where);
    plan.n_group_keys = self->nkeys;
    plan.group_keys = keys;
    for (size_t i = 0; i < self->nkeys; i++)
        keys[i] = s_bag_expr (bag, self->keys[i]);
    plan.n_aggregates = self->naggs;
    plan.aggregates = agg_ptrs;
    for (size_t i = 0; i < self->naggs; i++) {
        twinmesh__query_aggregate__init (&aggs[i]);
        aggs[i].func = self->aggs[i].func;
        aggs[i].q = self->aggs[i].q;
        aggs[i].arg = s_bag_expr (bag, self->aggs[i].arg);
        agg_ptrs[i] = &aggs[i];
    }
    if (!self->aggregate) {
        plan.n_select = self->noutputs;
        plan.select = select;
        for (size_t i = 0; i < self->noutputs; i++)
            select[i] = s_bag_expr (bag, self->outputs[i]);
        plan.n_order = self->norder;
        plan.order = order_ptrs;
        for (size_t i = 0; i < self->norder; i++) {
            twinmesh__query_order__init (&order[i]);
            bool desc;
            order[i].expr = s_bag_expr (bag, tm_query_order_key (self, i, &desc));
            order[i].desc = desc;
            order_ptrs[i] = &order[i];
        }
        plan.limit = self->limit;
    }
    uint8_t *out = NULL;
    if (!bag->failed)
        out = tm_codec_pack_buf (&plan.base, size);
    for (size_t i = 0; i < bag->count; i++)
        free (bag->items[i]);
    free (bag);
    return out;
}

//  Names in plan expressions resolve against the plan's own columns.
static int
s_resolve_plan (void *user, const char *name, size_t len, tm_expr_slot_t *out)
{
    const tm_query_t *q = (const tm_query_t *) user;
    int i = s_find_column (q, name, len);
    if (i < 0)
        return -1;
    out->slot = (uint32_t) i;
    out->type = q->columns[i].type;
    return 0;
}

static tm_expr_t *
s_plan_expr (tm_query_t *q, ProtobufCBinaryData b, tm_expr_type_t expect, const char *what,
             tm_expr_error_t *err)
{
    tm_expr_options_t opts = {s_resolve_plan, NULL, q, expect};
    tm_expr_error_t inner;
    tm_expr_t *e = tm_expr_deserialise (b.data, b.len, &opts, &inner);
    if (!e)
        s_fail_plan (err, inner.code == TM_EXPR_E_NOMEM? TM_EXPR_E_NOMEM: TM_EXPR_E_MALFORMED,
                     "%s: %s", what, inner.message);
    return e;
}

tm_query_t *
tm_query_plan_decode (const uint8_t *data, size_t size, tm_expr_error_t *err)
{
    tm_expr_error_t local;
    if (!err)
        err = &local;
    memset (err, 0, sizeof *err);
    if (size > TM_QUERY_MAX_PLAN) {
        s_fail_plan (err, TM_EXPR_E_LIMIT, "more than %d bytes", TM_QUERY_MAX_PLAN);
        return NULL;
    }
    Twinmesh__QueryPlan *plan = TM_UNPACK (QueryPlan, query_plan, data, size);
    if (!plan) {
        s_fail_plan (err, TM_EXPR_E_MALFORMED, "not a QueryPlan message");
        return NULL;
    }
    tm_query_t *q = (tm_query_t *) calloc (1, sizeof *q);
    if (!q) {
        tm_codec_free (&plan);
        s_fail_plan (err, TM_EXPR_E_NOMEM, "out of memory");
        return NULL;
    }
    const char *text = plan->text? plan->text: "";
    size_t text_len = strlen (text);
    if (text_len > TM_QUERY_MAX_TEXT || !tm_util_utf8_valid (text, text_len))
        s_fail_plan (err, TM_EXPR_E_MALFORMED, "bad query text");
    else
    if (plan->n_columns > TM_QUERY_MAX_COLUMNS)
        s_fail_plan (err, TM_EXPR_E_LIMIT, "more than %d columns", TM_QUERY_MAX_COLUMNS);
    else
    if (plan->n_group_keys > TM_QUERY_MAX_GROUP_KEYS || plan->n_aggregates > TM_QUERY_MAX_AGGREGATES
        || plan->n_select > TM_QUERY_MAX_SELECT || plan->n_order > TM_QUERY_MAX_ORDER
        || plan->limit > TM_QUERY_MAX_LIMIT)
        s_fail_plan (err, TM_EXPR_E_LIMIT, "a list or the limit is over its bound");
    else
    if (plan->aggregate
        && (plan->n_select || plan->n_order || plan->limit
            || plan->n_group_keys + plan->n_aggregates == 0))
        s_fail_plan (err, TM_EXPR_E_MALFORMED,
                     "an aggregate plan has keys or aggregates and no rows");
    else
    if (!plan->aggregate && (plan->n_group_keys || plan->n_aggregates || plan->n_select == 0))
        s_fail_plan (err, TM_EXPR_E_MALFORMED, "a row plan has outputs and no aggregates");
    q->text = strdup (text);
    if (!q->text)
        s_fail_plan (err, TM_EXPR_E_NOMEM, "out of memory");
    q->aggregate = plan->aggregate;
    for (size_t i = 0; i < plan->n_columns && !err->code; i++) {
        const char *name = plan->columns[i]->name? plan->columns[i]->name: "";
        size_t len = strlen (name);
        if (len == 0 || len > TM_EXPR_MAX_NAME || !tm_util_utf8_valid (name, len))
            s_fail_plan (err, TM_EXPR_E_MALFORMED, "column %zu has a bad name", i);
        else
        if (s_find_column (q, name, len) >= 0)
            s_fail_plan (err, TM_EXPR_E_MALFORMED, "column %zu is named twice", i);
        else
        if (plan->columns[i]->type != (uint32_t) tm_query_builtin_type (name))
            s_fail_plan (err, TM_EXPR_E_MALFORMED, "column %zu has the wrong type", i);
        else
        if (!(q->columns[i].name = strdup (name)))
            s_fail_plan (err, TM_EXPR_E_NOMEM, "out of memory");
        else {
            q->columns[i].type = (tm_expr_type_t) plan->columns[i]->type;
            q->ncolumns++;
        }
    }
    if (!err->code && plan->where.len)
        q->where = s_plan_expr (q, plan->where, TM_EXPR_BOOL, "WHERE", err);
    for (size_t i = 0; i < plan->n_group_keys && !err->code; i++)
        if ((q->keys[i] = s_plan_expr (q, plan->group_keys[i], TM_EXPR_ANY, "GROUP BY", err)))
            q->nkeys++;
    for (size_t i = 0; i < plan->n_aggregates && !err->code; i++) {
        const Twinmesh__QueryAggregate *a = plan->aggregates[i];
        s_agg_t *agg = &q->aggs[i];
        if (a->func < TM_QUERY_AGG_COUNT || a->func > TM_QUERY_AGG_QUANTILE)
            s_fail_plan (err, TM_EXPR_E_MALFORMED, "aggregate %zu: unknown function %u", i,
                         a->func);
        else
        if (a->func == TM_QUERY_AGG_QUANTILE? !(a->q >= 0 && a->q <= 1): a->q != 0)
            s_fail_plan (err, TM_EXPR_E_MALFORMED, "aggregate %zu: bad quantile", i);
        else
        if (a->arg.len == 0 && a->func != TM_QUERY_AGG_COUNT)
            s_fail_plan (err, TM_EXPR_E_MALFORMED, "aggregate %zu: no argument", i);
        else
        if (a->arg.len && !(agg->arg = s_plan_expr (q, a->arg, TM_EXPR_ANY, "aggregate", err)))
            break;
        else {
            tm_expr_type_t type = agg->arg? tm_expr_type (agg->arg): TM_EXPR_ANY;
            if (a->func != TM_QUERY_AGG_COUNT && type != TM_EXPR_NUMBER && type != TM_EXPR_ANY
                && type != TM_EXPR_NULL)
                s_fail_plan (err, TM_EXPR_E_TYPE, "aggregate %zu: argument is not a number", i);
            agg->func = (tm_query_agg_t) a->func;
            agg->q = a->q;
            q->naggs++;
        }
    }
    for (size_t i = 0; i < plan->n_select && !err->code; i++) {
        q->outputs[i] = s_plan_expr (q, plan->select[i], TM_EXPR_ANY, "SELECT", err);
        if (q->outputs[i]) {
            q->titles[i] = tm_expr_print (q->outputs[i], 0);
            q->noutputs++;
            if (!q->titles[i])
                s_fail_plan (err, TM_EXPR_E_NOMEM, "out of memory");
        }
    }
    for (size_t i = 0; i < plan->n_order && !err->code; i++) {
        q->order_ref[i] = -1;
        q->desc[i] = plan->order[i]->desc;
        if ((q->order[i] = s_plan_expr (q, plan->order[i]->expr, TM_EXPR_ANY, "ORDER BY", err)))
            q->norder++;
    }
    q->limit = plan->limit;
    tm_codec_free (&plan);
    if (err->code)
        tm_query_destroy (&q);
    return q;
}

//  ---------------------------------------------------------------------
//  Accessors

const char *
tm_query_text (const tm_query_t *self)
{
    assert (self);
    return self->text;
}

size_t
tm_query_columns (const tm_query_t *self)
{
    assert (self);
    return self->ncolumns;
}

const char *
tm_query_column_name (const tm_query_t *self, size_t index)
{
    assert (self);
    return index < self->ncolumns? self->columns[index].name: NULL;
}

tm_expr_type_t
tm_query_column_type (const tm_query_t *self, size_t index)
{
    assert (self);
    return index < self->ncolumns? self->columns[index].type: TM_EXPR_ANY;
}

bool
tm_query_is_aggregate (const tm_query_t *self)
{
    assert (self);
    return self->aggregate;
}

uint32_t
tm_query_limit (const tm_query_t *self)
{
    assert (self);
    return self->limit;
}

size_t
tm_query_sites (const tm_query_t *self)
{
    assert (self);
    return self->nsites;
}

const char *
tm_query_site (const tm_query_t *self, size_t index)
{
    assert (self);
    return index < self->nsites? self->sites[index]: NULL;
}

bool
tm_query_all_sites (const tm_query_t *self)
{
    assert (self);
    return self->all_sites;
}

const tm_expr_t *
tm_query_where (const tm_query_t *self)
{
    assert (self);
    return self->where;
}

size_t
tm_query_group_keys (const tm_query_t *self)
{
    assert (self);
    return self->nkeys;
}

const tm_expr_t *
tm_query_group_key (const tm_query_t *self, size_t index)
{
    assert (self);
    return index < self->nkeys? self->keys[index]: NULL;
}

size_t
tm_query_aggregates (const tm_query_t *self)
{
    assert (self);
    return self->naggs;
}

tm_query_agg_t
tm_query_aggregate (const tm_query_t *self, size_t index, double *q, const tm_expr_t **arg)
{
    assert (self);
    assert (index < self->naggs);
    if (q)
        *q = self->aggs[index].q;
    if (arg)
        *arg = self->aggs[index].arg;
    return self->aggs[index].func;
}

bool
tm_query_has_final (const tm_query_t *self)
{
    assert (self);
    return self->final;
}

size_t
tm_query_outputs (const tm_query_t *self)
{
    assert (self);
    return self->noutputs;
}

const tm_expr_t *
tm_query_output (const tm_query_t *self, size_t index)
{
    assert (self);
    return index < self->noutputs? self->outputs[index]: NULL;
}

const char *
tm_query_output_title (const tm_query_t *self, size_t index)
{
    assert (self);
    return index < self->noutputs? self->titles[index]: NULL;
}

size_t
tm_query_order_keys (const tm_query_t *self)
{
    assert (self);
    return self->norder;
}

const tm_expr_t *
tm_query_order_key (const tm_query_t *self, size_t index, bool *desc)
{
    assert (self);
    if (index >= self->norder)
        return NULL;
    if (desc)
        *desc = self->desc[index];
    int ref = self->order_ref[index];
    return ref >= 0? self->outputs[ref]: self->order[index];
}

const tm_expr_t *
tm_query_having (const tm_query_t *self)
{
    assert (self);
    return self->having;
}
