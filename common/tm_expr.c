/*  tm_expr - the expression language of query filters and derived properties

    Text goes through four stages: a lexer, a recursive-descent parser that
    builds a tree of nodes (type-checking and folding each node as it is
    made), a code generator that flattens the tree into a postfix program
    for a value stack, and the evaluator that runs the program. The tree is
    kept after compiling: the printer and the serialiser walk it.

    The evaluator is the part that runs a million times per query, so it
    is a flat loop over 8-byte instructions with the common operators
    inline and everything else in one function shared with the constant
    folder (so folding and evaluation cannot disagree). AND and OR jump
    over their remaining operands once the answer is known.

    Every recursive function here (parser, folder, code generator, printer,
    serialiser) recurses at most once per tree level or nesting level, and
    both are capped (TM_EXPR_MAX_DEPTH, TM_EXPR_MAX_NESTING) while the tree
    is built.
*/
#include "tm_expr.h"
#include "tm_util.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_NONE UINT32_MAX
#define S_PI 3.14159265358979323846

//  Node operators and functions. The numbers are part of the serialised
//  form: append only.
typedef enum {
    S_NEG = 0,
    S_NOT,
    S_MUL,
    S_DIV,
    S_MOD,
    S_ADD,
    S_SUB,
    S_EQ,
    S_NE,
    S_LT,
    S_LE,
    S_GT,
    S_GE,
    S_IN,
    S_BETWEEN,
    S_ISNULL,
    S_AND,
    S_OR,
    S_ABS,                             //  First function
    S_MIN,
    S_MAX,
    S_ROUND,
    S_FLOOR,
    S_CEIL,
    S_SQRT,
    S_POW,
    S_LN,
    S_EXP,
    S_COALESCE,
    S_CLAMP,
    S_WITHIN,
    S_BBOX,
    S_DISTANCE,                        //  Last function
    S_OP_COUNT,
    //  Instructions only the code generator emits
    S_CONST = S_OP_COUNT,              //  Push consts[arg]
    S_LOAD,                            //  Push values[arg]
    S_JUMP_FALSE,                      //  If the top is false, go to arg (AND)
    S_JUMP_TRUE,                       //  If the top is true, go to arg (OR)
    S_IN_CONST,                        //  top IN (consts[arg .. arg+n-1])
    S_CMP_CONST,                       //  top <cmp> consts[arg]
    S_SLOT_CMP,                        //  Push values[arg] <cmp> consts[n]
    S_RETURN                           //  The top is the result
} s_op_t;

//  Printing precedence, lowest first.
enum {
    P_OR = 1,
    P_AND,
    P_NOT,
    P_CMP,
    P_ADD,
    P_MUL,
    P_NEG,
    P_PRIMARY
};

typedef struct {
    const char *name;                  //  Operator text or function name
    const char *sig;                   //  Argument types, see s_check_types
    uint16_t min_args;                 //  Fewest arguments
    uint16_t max_args;                 //  Most; the last letter of sig repeats
    char result;                       //  'n', 'b', or 'c' (the shared type)
    uint8_t prec;                      //  Printing precedence; 0 = function call
} s_opinfo_t;

//  sig letters: n number, b boolean, l location, * anything; '=' all of
//  these arguments share one type that can be tested for equality, '<' one
//  type that can be ordered, 'c' one type of any kind.
static const s_opinfo_t s_ops[S_OP_COUNT] = {
    [S_NEG] = {"-", "n", 1, 1, 'n', P_NEG},
    [S_NOT] = {"NOT", "b", 1, 1, 'b', P_NOT},
    [S_MUL] = {"*", "n", 2, 2, 'n', P_MUL},
    [S_DIV] = {"/", "n", 2, 2, 'n', P_MUL},
    [S_MOD] = {"%", "n", 2, 2, 'n', P_MUL},
    [S_ADD] = {"+", "n", 2, 2, 'n', P_ADD},
    [S_SUB] = {"-", "n", 2, 2, 'n', P_ADD},
    [S_EQ] = {"=", "=", 2, 2, 'b', P_CMP},
    [S_NE] = {"!=", "=", 2, 2, 'b', P_CMP},
    [S_LT] = {"<", "<", 2, 2, 'b', P_CMP},
    [S_LE] = {"<=", "<", 2, 2, 'b', P_CMP},
    [S_GT] = {">", "<", 2, 2, 'b', P_CMP},
    [S_GE] = {">=", "<", 2, 2, 'b', P_CMP},
    [S_IN] = {"IN", "=", 2, TM_EXPR_MAX_ARGS + 1, 'b', P_CMP},
    [S_BETWEEN] = {"BETWEEN", "<", 3, 3, 'b', P_CMP},
    [S_ISNULL] = {"IS NULL", "*", 1, 1, 'b', P_CMP},
    [S_AND] = {"AND", "b", 2, TM_EXPR_MAX_ARGS, 'b', P_AND},
    [S_OR] = {"OR", "b", 2, TM_EXPR_MAX_ARGS, 'b', P_OR},
    [S_ABS] = {"abs", "n", 1, 1, 'n', 0},
    [S_MIN] = {"min", "n", 1, TM_EXPR_MAX_ARGS, 'n', 0},
    [S_MAX] = {"max", "n", 1, TM_EXPR_MAX_ARGS, 'n', 0},
    [S_ROUND] = {"round", "n", 1, 2, 'n', 0},
    [S_FLOOR] = {"floor", "n", 1, 1, 'n', 0},
    [S_CEIL] = {"ceil", "n", 1, 1, 'n', 0},
    [S_SQRT] = {"sqrt", "n", 1, 1, 'n', 0},
    [S_POW] = {"pow", "n", 2, 2, 'n', 0},
    [S_LN] = {"ln", "n", 1, 1, 'n', 0},
    [S_EXP] = {"exp", "n", 1, 1, 'n', 0},
    [S_COALESCE] = {"coalesce", "c", 1, TM_EXPR_MAX_ARGS, 'c', 0},
    [S_CLAMP] = {"clamp", "n", 3, 3, 'n', 0},
    [S_WITHIN] = {"within", "ln", 4, 4, 'b', 0},
    [S_BBOX] = {"bbox", "ln", 5, 5, 'b', 0},
    [S_DISTANCE] = {"distance", "ln", 3, 3, 'n', 0},
};

enum {
    S_LIT = 0,                         //  A constant
    S_SLOT,                            //  An identifier, resolved
    S_OPNODE                           //  An operator or function call
};

typedef struct {
    uint8_t kind;                      //  S_LIT, S_SLOT or S_OPNODE
    uint8_t op;                        //  s_op_t of an S_OPNODE
    uint8_t type;                      //  Static type (tm_expr_type_t)
    uint8_t raw;                       //  S_SLOT: name is a call hook's canonical text
    uint16_t height;                   //  1 for a leaf
    uint16_t nkids;                    //  Children of an S_OPNODE
    uint32_t kid;                      //  First child, S_NONE if none
    uint32_t next;                     //  Next sibling, S_NONE if last
    uint32_t pos;                      //  Offset of the operator, name or literal
    uint32_t start;                    //  Offset where the node's text starts
    uint32_t slot;                     //  S_SLOT: the resolver's slot
    tm_expr_value_t value;             //  S_LIT: the constant; S_SLOT: the name
} s_node_t;

typedef struct {
    uint8_t op;                        //  s_op_t
    uint8_t cmp;                       //  S_CMP_CONST, S_SLOT_CMP: which comparison
    uint16_t n;                        //  Operands taken from the stack, or list length
    uint32_t arg;                      //  Slot, constant index or jump target
} s_insn_t;

typedef struct s_chunk_t {
    struct s_chunk_t *next;            //  Older chunk
    size_t used;                       //  Bytes handed out
    size_t cap;                        //  Bytes in data
    char data[];                       //  The strings, each NUL-terminated
} s_chunk_t;

struct _tm_expr_t {
    s_node_t *nodes;                   //  The tree; children come before parents
    uint32_t nnodes;                   //  Nodes in use
    uint32_t cap;                      //  Nodes allocated
    uint32_t cost;                     //  Nodes charged against TM_EXPR_MAX_NODES
    uint32_t root;                     //  The root node
    s_chunk_t *strings;                //  Names and string literals; pointers stay valid
    s_insn_t *code;                    //  The program, ending with S_RETURN
    uint32_t ncode;                    //  Instructions in code
    tm_expr_value_t *consts;           //  Constants the program pushes
    uint32_t nconsts;                  //  Entries in consts
    uint32_t max_stack;                //  Deepest the value stack gets
    uint32_t slots;                    //  One past the highest slot read
    tm_expr_type_t type;               //  Static type of the result
};

//  Tokens.
enum {
    T_END = 0,                         //  End of the text
    T_NUMBER,                          //  num holds the value
    T_STRING,                          //  buf holds the decoded bytes
    T_NAME,                            //  Bare identifier, maybe dotted; buf holds it
    T_QNAME,                           //  "Quoted" identifier; buf holds it
    T_LPAREN,
    T_RPAREN,
    T_COMMA,
    T_PLUS,
    T_MINUS,
    T_STAR,
    T_SLASH,
    T_PERCENT,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_OTHER,                           //  A character the language does not use
    T_ERROR                            //  A malformed token; lex_error says why
};

//  Keywords of bare names (case-insensitive). The clause words of the
//  query language are reserved too, so an expression stops before them
//  and a property named like one must be quoted.
enum {
    K_NONE = 0,
    K_AND,
    K_OR,
    K_NOT,
    K_IN,
    K_IS,
    K_NULL,
    K_TRUE,
    K_FALSE,
    K_BETWEEN,
    K_RESERVED
};

static const struct {
    const char *word;                  //  Upper case
    int kw;                            //  K_*
} s_keywords[] = {
    {"AND", K_AND}, {"OR", K_OR}, {"NOT", K_NOT}, {"IN", K_IN}, {"IS", K_IS},
    {"NULL", K_NULL}, {"TRUE", K_TRUE}, {"FALSE", K_FALSE}, {"BETWEEN", K_BETWEEN},
    {"SELECT", K_RESERVED}, {"FROM", K_RESERVED}, {"WHERE", K_RESERVED},
    {"GROUP", K_RESERVED}, {"BY", K_RESERVED}, {"ORDER", K_RESERVED},
    {"HAVING", K_RESERVED}, {"LIMIT", K_RESERVED}, {"ASC", K_RESERVED},
    {"DESC", K_RESERVED}, {"AS", K_RESERVED},
};

//  State of one compile or deserialise.
typedef struct {
    tm_expr_t *self;                   //  Expression being built
    const tm_expr_options_t *opts;     //  Caller's options (never NULL here)
    tm_expr_error_t *err;              //  Where the first error goes
    bool bytes;                        //  Positions are into serialised bytes
    const char *text;                  //  Whole text
    size_t len;                        //  Bytes of text
    size_t pos;                        //  Lexer: first byte after the current token
    int tok;                           //  Current token
    int kw;                            //  K_* of a T_NAME
    size_t tok_pos;                    //  Offset of the current token
    size_t tok_len;                    //  Bytes of the current token
    size_t prev_pos;                   //  Offset of the previous token, or SIZE_MAX
    size_t prev_len;                   //  Bytes of the previous token
    double num;                        //  T_NUMBER's value
    const char *lex_error;             //  T_ERROR's reason
    int lex_code;                      //  T_ERROR's TM_EXPR_E_*
    unsigned nesting;                  //  Open (), calls, NOT and unary minus
    size_t buf_len;                    //  Bytes in buf
    char buf[TM_EXPR_MAX_STRING + 1];  //  Decoded string or name, NUL-terminated
} s_ctx_t;

//  ---------------------------------------------------------------------
//  Errors

const char *
tm_expr_type_name (tm_expr_type_t type)
{
    static const char *names[] = {"null", "number", "string", "boolean", "location", "any"};
    return (unsigned) type < 6? names[type]: "invalid";
}

static const char *
s_type_a (int type)
{
    static const char *names[] = {"null", "a number", "a string", "a boolean", "a location",
                                  "a value of any type"};
    return (unsigned) type < 6? names[type]: "an invalid type";
}

//  Record the first error: code, where, and a message prefixed with the
//  position. Returns S_NONE so callers can `return s_fail (...)`.
static uint32_t
s_fail (s_ctx_t *c, int code, size_t pos, size_t len, const char *fmt, ...)
    __attribute__ ((format (printf, 5, 6)));

static uint32_t
s_fail (s_ctx_t *c, int code, size_t pos, size_t len, const char *fmt, ...)
{
    tm_expr_error_t *err = c->err;
    if (err->code)
        return S_NONE;
    err->code = code;
    err->offset = pos;
    err->length = len;
    int n;
    if (c->bytes) {
        err->line = 0;
        err->column = 0;
        n = snprintf (err->message, sizeof err->message, "at byte %zu: ", pos);
    }
    else {
        unsigned line = 1, column = 1;
        for (size_t i = 0; i < pos && i < c->len; i++) {
            unsigned char ch = (unsigned char) c->text[i];
            if (ch == '\n') {
                line++;
                column = 1;
            }
            else
            if ((ch & 0xC0) != 0x80)
                column++;
        }
        err->line = line;
        err->column = column;
        if (line > 1)
            n = snprintf (err->message, sizeof err->message, "at line %u, column %u: ", line,
                          column);
        else
            n = snprintf (err->message, sizeof err->message, "at column %u: ", column);
    }
    if (n < 0 || (size_t) n >= sizeof err->message)
        n = 0;
    va_list args;
    va_start (args, fmt);
    vsnprintf (err->message + n, sizeof err->message - (size_t) n, fmt, args);
    va_end (args);
    return S_NONE;
}

static bool
s_failed (const s_ctx_t *c)
{
    return c->err->code != 0;
}

//  Quote a span of text for a message: 'FROM', at most 32 bytes of it
//  and "..." after a cut. Messages travel in protobuf strings and logs, so
//  control characters and bytes that are not UTF-8 show as '?'.
static const char *
s_quote (char *out, size_t cap, const char *text, size_t len)
{
    size_t o = 0, i = 0;
    if (cap < 8)
        return "''";
    out[o++] = '\'';
    while (i < len && i < 32 && o + 6 < cap) {
        unsigned char ch = (unsigned char) text[i];
        size_t n = ch < 0x80? 1: ch >= 0xF0? 4: ch >= 0xE0? 3: 2;
        if (ch < 0x20 || ch == 0x7F || i + n > len || !tm_util_utf8_valid (text + i, n)) {
            out[o++] = '?';
            i++;
            continue;
        }
        if (i + n > 32)
            break;
        memcpy (out + o, text + i, n);
        o += n;
        i += n;
    }
    if (i < len && o + 5 < cap) {
        memcpy (out + o, "...", 3);
        o += 3;
    }
    out[o++] = '\'';
    out[o] = 0;
    return out;
}

//  "found" part of a message: the current token.
static const char *
s_found (s_ctx_t *c, char *out, size_t cap)
{
    if (c->tok == T_END)
        return "end of input";
    return s_quote (out, cap, c->text + c->tok_pos, c->tok_len);
}

//  ---------------------------------------------------------------------
//  Memory: nodes and strings

static char *
s_strdup (tm_expr_t *self, const char *s, size_t len)
{
    s_chunk_t *chunk = self->strings;
    if (!chunk || chunk->cap - chunk->used < len + 1) {
        size_t cap = len + 1 > 4096? len + 1: 4096;
        chunk = (s_chunk_t *) malloc (sizeof (s_chunk_t) + cap);
        if (!chunk)
            return NULL;
        chunk->next = self->strings;
        chunk->used = 0;
        chunk->cap = cap;
        self->strings = chunk;
    }
    char *copy = chunk->data + chunk->used;
    if (len)
        memcpy (copy, s, len);
    copy[len] = 0;
    chunk->used += len + 1;
    return copy;
}

//  A new node with the given cost, charged against TM_EXPR_MAX_NODES;
//  S_NONE past the limit or out of memory.
static uint32_t
s_node_new (s_ctx_t *c, int kind, size_t pos, size_t start, uint32_t cost)
{
    tm_expr_t *self = c->self;
    if (self->cost + cost > TM_EXPR_MAX_NODES)
        return s_fail (c, TM_EXPR_E_LIMIT, pos, 0, "expression has more than %d nodes",
                       TM_EXPR_MAX_NODES);
    if (pos > UINT32_MAX || start > UINT32_MAX)
        return s_fail (c, TM_EXPR_E_LIMIT, 0, 0, "expression text is too long");
    if (self->nnodes == self->cap) {
        uint32_t cap = self->cap? self->cap * 2: 32;
        s_node_t *grown = (s_node_t *) realloc (self->nodes, cap * sizeof *grown);
        if (!grown)
            return s_fail (c, TM_EXPR_E_NOMEM, pos, 0, "out of memory");
        self->nodes = grown;
        self->cap = cap;
    }
    uint32_t index = self->nnodes++;
    self->cost += cost;
    s_node_t *node = &self->nodes[index];
    memset (node, 0, sizeof *node);
    node->kind = (uint8_t) kind;
    node->height = 1;
    node->kid = S_NONE;
    node->next = S_NONE;
    node->pos = (uint32_t) pos;
    node->start = (uint32_t) start;
    return index;
}

//  A literal. Text has no negative literals (they are folded from unary
//  minus); a negative one from serialised bytes costs the two nodes its
//  printed form will cost, so that printed text re-parses within limits.
static uint32_t
s_literal (s_ctx_t *c, tm_expr_value_t value, size_t pos)
{
    bool negative = value.type == TM_EXPR_NUMBER && signbit (value.num);
    uint32_t n = s_node_new (c, S_LIT, pos, pos, negative? 2: 1);
    if (n == S_NONE)
        return S_NONE;
    s_node_t *node = &c->self->nodes[n];
    if (value.type == TM_EXPR_STRING) {
        char *copy = s_strdup (c->self, value.str, value.len);
        if (!copy)
            return s_fail (c, TM_EXPR_E_NOMEM, pos, 0, "out of memory");
        value.str = copy;
    }
    node->value = value;
    node->type = (uint8_t) value.type;
    //  A negative number prints as unary minus on its magnitude: one level
    //  more, so that printed text re-parses within the limits.
    node->height = negative? 2: 1;
    return n;
}

static uint32_t
s_slot_node (s_ctx_t *c, const char *name, size_t len, tm_expr_slot_t slot, bool raw,
             size_t pos)
{
    if (slot.slot >= TM_EXPR_MAX_SLOTS || slot.type < TM_EXPR_NUMBER
        || slot.type > TM_EXPR_ANY) {
        char quoted[48];
        return s_fail (c, TM_EXPR_E_UNKNOWN_NAME, pos, len,
                       "the resolver gave an invalid slot or type for %s",
                       s_quote (quoted, sizeof quoted, name, len));
    }
    uint32_t n = s_node_new (c, S_SLOT, pos, pos, 1);
    if (n == S_NONE)
        return S_NONE;
    char *copy = s_strdup (c->self, name, len);
    if (!copy)
        return s_fail (c, TM_EXPR_E_NOMEM, pos, 0, "out of memory");
    s_node_t *node = &c->self->nodes[n];
    node->value = tm_expr_string (copy, (uint32_t) len);
    node->slot = slot.slot;
    node->type = (uint8_t) slot.type;
    node->raw = raw;
    return n;
}

//  ---------------------------------------------------------------------
//  Semantics, shared by the constant folder and the evaluator

static inline tm_expr_value_t
s_null (void)
{
    tm_expr_value_t v;
    v.type = TM_EXPR_NULL;
    v.len = 0;
    v.num = 0;
    return v;
}

//  A number result; not finite (overflow, 0 * inf...) means null, so no
//  NaN or infinity ever leaves the evaluator.
static inline tm_expr_value_t
s_num (double x)
{
    tm_expr_value_t v;
    if (isfinite (x)) {
        v.type = TM_EXPR_NUMBER;
        v.num = x;
    }
    else {
        v.type = TM_EXPR_NULL;
        v.num = 0;
    }
    v.len = 0;
    return v;
}

static inline tm_expr_value_t
s_bool (bool b)
{
    tm_expr_value_t v;
    v.type = TM_EXPR_BOOL;
    v.len = 0;
    v.num = 0;
    v.b = b;
    return v;
}

//  Three-way order of two strings by bytes (code points, for UTF-8).
static inline int
s_strcmp (const tm_expr_value_t *a, const tm_expr_value_t *b)
{
    uint32_t n = a->len < b->len? a->len: b->len;
    int rc = n? memcmp (a->str, b->str, n): 0;
    if (rc)
        return rc;
    return a->len < b->len? -1: a->len > b->len? 1: 0;
}

//  Whether a <op> b holds for two numbers.
static inline bool
s_order_holds (int op, double a, double b)
{
    switch (op) {
        case S_EQ:
            return a == b;
        case S_NE:
            return a != b;
        case S_LT:
            return a < b;
        case S_LE:
            return a <= b;
        case S_GT:
            return a > b;
        default:
            return a >= b;
    }
}

//  a <op> b for the six comparisons; null unless both have the same
//  comparable type (booleans: = and != only).
static inline tm_expr_value_t
s_compare (int op, const tm_expr_value_t *a, const tm_expr_value_t *b)
{
    int order;
    if (a->type == TM_EXPR_NUMBER && b->type == TM_EXPR_NUMBER)
        order = a->num < b->num? -1: a->num > b->num? 1: 0;
    else
    if (a->type == TM_EXPR_STRING && b->type == TM_EXPR_STRING) {
        if (op == S_EQ || op == S_NE) {
            bool same = a->len == b->len && (a->len == 0 || memcmp (a->str, b->str, a->len) == 0);
            return s_bool (same == (op == S_EQ));
        }
        order = s_strcmp (a, b);
    }
    else
    if (a->type == TM_EXPR_BOOL && b->type == TM_EXPR_BOOL && (op == S_EQ || op == S_NE))
        return s_bool ((a->b == b->b) == (op == S_EQ));
    else
        return s_null ();
    switch (op) {
        case S_EQ:
            return s_bool (order == 0);
        case S_NE:
            return s_bool (order != 0);
        case S_LT:
            return s_bool (order < 0);
        case S_LE:
            return s_bool (order <= 0);
        case S_GT:
            return s_bool (order > 0);
        default:
            return s_bool (order >= 0);
    }
}

//  Three-valued AND and OR of n values; anything not a boolean counts as
//  unknown (null).
static tm_expr_value_t
s_and (const tm_expr_value_t *a, uint32_t n)
{
    bool unknown = false;
    for (uint32_t i = 0; i < n; i++) {
        if (a[i].type == TM_EXPR_BOOL) {
            if (!a[i].b)
                return s_bool (false);
        }
        else
            unknown = true;
    }
    return unknown? s_null (): s_bool (true);
}

static tm_expr_value_t
s_or (const tm_expr_value_t *a, uint32_t n)
{
    bool unknown = false;
    for (uint32_t i = 0; i < n; i++) {
        if (a[i].type == TM_EXPR_BOOL) {
            if (a[i].b)
                return s_bool (true);
        }
        else
            unknown = true;
    }
    return unknown? s_null (): s_bool (false);
}

//  x IN (list): true if x equals an item; otherwise null if x or any item
//  is null (SQL: the answer is unknown), else false.
static tm_expr_value_t
s_in (const tm_expr_value_t *x, const tm_expr_value_t *list, uint32_t n)
{
    if (x->type == TM_EXPR_NULL)
        return s_null ();
    bool unknown = false;
    for (uint32_t i = 0; i < n; i++) {
        tm_expr_value_t eq = s_compare (S_EQ, x, &list[i]);
        if (eq.type != TM_EXPR_BOOL)
            unknown = true;
        else
        if (eq.b)
            return s_bool (true);
    }
    return unknown? s_null (): s_bool (false);
}

static bool
s_lat_ok (double lat)
{
    return lat >= -90 && lat <= 90;
}

static bool
s_lon_ok (double lon)
{
    return lon >= -180 && lon <= 180;
}

//  Great-circle distance in metres (haversine, mean Earth radius).
static double
s_haversine (double lat1, double lon1, double lat2, double lon2)
{
    double rad = S_PI / 180;
    double sdlat = sin ((lat2 - lat1) * rad / 2), sdlon = sin ((lon2 - lon1) * rad / 2);
    double h = sdlat * sdlat + cos (lat1 * rad) * cos (lat2 * rad) * sdlon * sdlon;
    if (h > 1)
        h = 1;
    return 2 * TM_EXPR_EARTH_RADIUS_M * asin (sqrt (h));
}

//  round (x, digits): digits a whole number in -15 .. 15; half away from
//  zero. Past 2^52 a double has no fraction left to round.
static tm_expr_value_t
s_round (double x, double digits)
{
    if (digits != floor (digits) || digits < -15 || digits > 15)
        return s_null ();
    double scale = pow (10, fabs (digits));
    if (digits >= 0) {
        if (fabs (x) * scale >= 4503599627370496.0)
            return s_num (x);
        return s_num (round (x * scale) / scale);
    }
    return s_num (round (x / scale) * scale);
}

//  Apply an operator or function to a[0 .. n-1]; *out may alias a[0].
static void
s_apply (int op, const tm_expr_value_t *a, uint32_t n, tm_expr_value_t *out)
{
    tm_expr_value_t r = s_null ();
    //  Every function but coalesce, IS NULL and the logic operators is
    //  null when an argument is not of its type (null included).
    bool nums = true;
    for (uint32_t i = 0; i < n; i++)
        if (a[i].type != TM_EXPR_NUMBER)
            nums = false;
    switch (op) {
        case S_NEG:
            if (nums)
                r = s_num (-a[0].num);
            break;
        case S_NOT:
            if (a[0].type == TM_EXPR_BOOL)
                r = s_bool (!a[0].b);
            break;
        case S_MUL:
            if (nums)
                r = s_num (a[0].num * a[1].num);
            break;
        case S_DIV:
            if (nums && a[1].num != 0)
                r = s_num (a[0].num / a[1].num);
            break;
        case S_MOD:
            if (nums && a[1].num != 0)
                r = s_num (fmod (a[0].num, a[1].num));
            break;
        case S_ADD:
            if (nums)
                r = s_num (a[0].num + a[1].num);
            break;
        case S_SUB:
            if (nums)
                r = s_num (a[0].num - a[1].num);
            break;
        case S_EQ:
        case S_NE:
        case S_LT:
        case S_LE:
        case S_GT:
        case S_GE:
            r = s_compare (op, &a[0], &a[1]);
            break;
        case S_IN:
            r = s_in (&a[0], a + 1, n - 1);
            break;
        case S_BETWEEN: {
            tm_expr_value_t both[2] = {s_compare (S_GE, &a[0], &a[1]),
                                       s_compare (S_LE, &a[0], &a[2])};
            r = s_and (both, 2);
            break;
        }
        case S_ISNULL:
            r = s_bool (a[0].type == TM_EXPR_NULL);
            break;
        case S_AND:
            r = s_and (a, n);
            break;
        case S_OR:
            r = s_or (a, n);
            break;
        case S_ABS:
            if (nums)
                r = s_num (fabs (a[0].num));
            break;
        case S_MIN:
        case S_MAX:
            if (nums) {
                double m = a[0].num;
                for (uint32_t i = 1; i < n; i++)
                    if (op == S_MIN? a[i].num < m: a[i].num > m)
                        m = a[i].num;
                r = s_num (m);
            }
            break;
        case S_ROUND:
            if (nums)
                r = n == 1? s_num (round (a[0].num)): s_round (a[0].num, a[1].num);
            break;
        case S_FLOOR:
            if (nums)
                r = s_num (floor (a[0].num));
            break;
        case S_CEIL:
            if (nums)
                r = s_num (ceil (a[0].num));
            break;
        case S_SQRT:
            if (nums && a[0].num >= 0)
                r = s_num (sqrt (a[0].num));
            break;
        case S_POW:
            if (nums)
                r = s_num (pow (a[0].num, a[1].num));
            break;
        case S_LN:
            if (nums && a[0].num > 0)
                r = s_num (log (a[0].num));
            break;
        case S_EXP:
            if (nums)
                r = s_num (exp (a[0].num));
            break;
        case S_COALESCE:
            for (uint32_t i = 0; i < n; i++)
                if (a[i].type != TM_EXPR_NULL) {
                    r = a[i];
                    break;
                }
            break;
        case S_CLAMP:
            if (nums && a[1].num <= a[2].num)
                r = s_num (fmin (fmax (a[0].num, a[1].num), a[2].num));
            break;
        case S_WITHIN:
        case S_DISTANCE:
        case S_BBOX: {
            if (a[0].type != TM_EXPR_LOCATION)
                break;
            bool args = true;
            for (uint32_t i = 1; i < n; i++)
                if (a[i].type != TM_EXPR_NUMBER)
                    args = false;
            if (!args)
                break;
            if (op == S_BBOX) {
                double lat_min = a[1].num, lon_min = a[2].num;
                double lat_max = a[3].num, lon_max = a[4].num;
                if (!s_lat_ok (lat_min) || !s_lat_ok (lat_max) || !s_lon_ok (lon_min)
                    || !s_lon_ok (lon_max) || lat_min > lat_max)
                    break;
                bool lat_in = a[0].lat >= lat_min && a[0].lat <= lat_max;
                //  lon_min > lon_max: the box crosses the antimeridian.
                bool lon_in = lon_min <= lon_max
                                ? a[0].lon >= lon_min && a[0].lon <= lon_max
                                : a[0].lon >= lon_min || a[0].lon <= lon_max;
                r = s_bool (lat_in && lon_in);
                break;
            }
            if (!s_lat_ok (a[1].num) || !s_lon_ok (a[2].num))
                break;
            if (op == S_WITHIN && a[3].num >= 0
                && fabs (a[0].lat - a[1].num) * (S_PI / 180) * TM_EXPR_EARTH_RADIUS_M
                       > a[3].num) {
                //  Exact shortcut: a great circle is never shorter than
                //  the difference in latitude. Spares most twins the trig.
                r = s_bool (false);
                break;
            }
            double d = s_haversine (a[0].lat, a[0].lon, a[1].num, a[2].num);
            if (op == S_DISTANCE)
                r = s_num (d);
            else
            if (a[3].num >= 0)
                r = s_bool (d <= a[3].num);
            break;
        }
        default:
            break;
    }
    *out = r;
}

//  ---------------------------------------------------------------------
//  Building the tree: arity, types, height, folding

static bool
s_is_function (int op)
{
    return op >= S_ABS && op <= S_DISTANCE;
}

//  How an operator is named in messages: symbols quoted, keywords bare,
//  functions with ().
static const char *
s_op_label (int op, char *out, size_t cap)
{
    const char *name = s_ops[op].name;
    if (s_is_function (op))
        snprintf (out, cap, "%s()", name);
    else
    if (isalpha ((unsigned char) name[0]))
        snprintf (out, cap, "%s", name);
    else
        snprintf (out, cap, "'%s'", name);
    return out;
}

//  Check the children's static types against the operator's signature;
//  *result gets the node's type. Returns 0 or -1 after s_fail.
static int
s_check_types (s_ctx_t *c, int op, size_t pos, uint32_t first, int *result)
{
    const s_opinfo_t *info = &s_ops[op];
    size_t siglen = strlen (info->sig);
    int common = -1;
    bool any = false;
    char label[32];
    uint32_t i = 0;
    for (uint32_t k = first; k != S_NONE; k = c->self->nodes[k].next, i++) {
        const s_node_t *kid = &c->self->nodes[k];
        char letter = info->sig[i < siglen? i: siglen - 1];
        int t = kid->type;
        if (t == TM_EXPR_ANY)
            any = true;
        if (t == TM_EXPR_NULL || t == TM_EXPR_ANY || letter == '*')
            continue;
        if (letter == 'n' || letter == 'b' || letter == 'l') {
            int want = letter == 'n'? TM_EXPR_NUMBER
                     : letter == 'b'? TM_EXPR_BOOL: TM_EXPR_LOCATION;
            if (t == want)
                continue;
            s_op_label (op, label, sizeof label);
            if (s_is_function (op))
                s_fail (c, TM_EXPR_E_TYPE, kid->start, 0,
                        "argument %u of %s must be %s, found %s", i + 1, label,
                        s_type_a (want), s_type_a (t));
            else
                s_fail (c, TM_EXPR_E_TYPE, kid->start, 0, "%s needs %s, found %s", label,
                        s_type_a (want), s_type_a (t));
            return -1;
        }
        //  '=', '<', 'c': one type shared by these arguments.
        if (common < 0) {
            if ((letter == '=' && t == TM_EXPR_LOCATION)
                || (letter == '<' && t != TM_EXPR_NUMBER && t != TM_EXPR_STRING)) {
                s_fail (c, TM_EXPR_E_TYPE, pos, 0, "%s cannot %s %ss", s_op_label (op, label,
                        sizeof label), letter == '='? "compare": "order",
                        tm_expr_type_name ((tm_expr_type_t) t));
                return -1;
            }
            common = t;
        }
        else
        if (t != common) {
            s_op_label (op, label, sizeof label);
            if (letter == 'c')
                s_fail (c, TM_EXPR_E_TYPE, kid->start, 0,
                        "arguments of %s must share one type, found %s and %s", label,
                        s_type_a (common), s_type_a (t));
            else
                s_fail (c, TM_EXPR_E_TYPE, pos, 0, "%s cannot compare %s with %s", label,
                        s_type_a (common), s_type_a (t));
            return -1;
        }
    }
    if (info->result == 'n')
        *result = TM_EXPR_NUMBER;
    else
    if (info->result == 'b')
        *result = TM_EXPR_BOOL;
    else
        //  coalesce (any_slot, 1) may give the slot's string at run time.
        *result = any? TM_EXPR_ANY: common >= 0? common: TM_EXPR_NULL;
    return 0;
}

//  Make an operator node over children already linked through next.
//  Flattens nested AND and OR (they are associative, and flat chains keep
//  long filters shallow), checks arity, types and height, and folds the
//  node to a literal when every child is one.
static uint32_t
s_make_op (s_ctx_t *c, int op, size_t pos, size_t start, uint32_t first, uint32_t nkids)
{
    if (s_failed (c))
        return S_NONE;
    tm_expr_t *self = c->self;
    char label[32];
    if (op == S_AND || op == S_OR) {
        uint32_t head = S_NONE, tail = S_NONE, count = 0;
        uint32_t k = first;
        while (k != S_NONE) {
            uint32_t next = self->nodes[k].next;
            s_node_t *kid = &self->nodes[k];
            uint32_t from = k, to = k;
            uint32_t adds = 1;
            if (kid->kind == S_OPNODE && kid->op == op) {
                from = kid->kid;
                adds = kid->nkids;
                to = from;
                while (self->nodes[to].next != S_NONE)
                    to = self->nodes[to].next;
            }
            if (tail == S_NONE)
                head = from;
            else
                self->nodes[tail].next = from;
            tail = to;
            self->nodes[tail].next = S_NONE;
            count += adds;
            k = next;
        }
        first = head;
        nkids = count;
    }
    const s_opinfo_t *info = &s_ops[op];
    if (nkids > info->max_args && info->max_args >= TM_EXPR_MAX_ARGS)
        return s_fail (c, TM_EXPR_E_LIMIT, pos, 0, "%s has more than %d operands",
                       s_op_label (op, label, sizeof label), TM_EXPR_MAX_ARGS);
    if (nkids < info->min_args || nkids > info->max_args) {
        s_op_label (op, label, sizeof label);
        if (info->min_args == info->max_args)
            return s_fail (c, TM_EXPR_E_SYNTAX, pos, 0, "%s takes %u argument%s, given %u",
                           label, info->min_args, info->min_args == 1? "": "s", nkids);
        return s_fail (c, TM_EXPR_E_SYNTAX, pos, 0, "%s takes %u to %u arguments, given %u",
                       label, info->min_args, info->max_args, nkids);
    }
    int type;
    if (s_check_types (c, op, pos, first, &type) != 0)
        return S_NONE;
    uint32_t height = 0;
    bool constant = true;
    for (uint32_t k = first; k != S_NONE; k = self->nodes[k].next) {
        if (self->nodes[k].height > height)
            height = self->nodes[k].height;
        if (self->nodes[k].kind != S_LIT)
            constant = false;
    }
    height++;
    if (height > TM_EXPR_MAX_DEPTH)
        return s_fail (c, TM_EXPR_E_LIMIT, pos, 0, "expression tree deeper than %d levels",
                       TM_EXPR_MAX_DEPTH);
    if (constant) {
        //  Fold: evaluate now, with the evaluator's own semantics. Long
        //  lists go to the heap: this frame may sit under deep recursion.
        tm_expr_value_t few[8] = {{0}};
        tm_expr_value_t *args = nkids <= 8? few
                              : (tm_expr_value_t *) calloc (nkids, sizeof *args);
        if (!args)
            return s_fail (c, TM_EXPR_E_NOMEM, pos, 0, "out of memory");
        uint32_t i = 0;
        for (uint32_t k = first; k != S_NONE; k = self->nodes[k].next)
            args[i++] = self->nodes[k].value;
        tm_expr_value_t value;
        s_apply (op, args, nkids, &value);
        if (args != few)
            free (args);
        //  Strings in a folded value point into the arena already. The
        //  children stay behind, unused: they were paid for.
        uint32_t n = s_node_new (c, S_LIT, pos, start, 1);
        if (n == S_NONE)
            return S_NONE;
        s_node_t *node = &self->nodes[n];
        node->value = value;
        node->type = (uint8_t) value.type;
        node->height = value.type == TM_EXPR_NUMBER && signbit (value.num)? 2: 1;
        return n;
    }
    uint32_t n = s_node_new (c, S_OPNODE, pos, start, 1);
    if (n == S_NONE)
        return S_NONE;
    s_node_t *node = &self->nodes[n];
    node->op = (uint8_t) op;
    node->type = (uint8_t) type;
    node->height = (uint16_t) height;
    node->nkids = (uint16_t) nkids;
    node->kid = first;
    return n;
}

static uint32_t
s_make_op2 (s_ctx_t *c, int op, size_t pos, size_t start, uint32_t a, uint32_t b)
{
    if (a == S_NONE || b == S_NONE)
        return S_NONE;
    c->self->nodes[a].next = b;
    c->self->nodes[b].next = S_NONE;
    return s_make_op (c, op, pos, start, a, 2);
}

static uint32_t
s_make_op1 (s_ctx_t *c, int op, size_t pos, size_t start, uint32_t a)
{
    if (a == S_NONE)
        return S_NONE;
    c->self->nodes[a].next = S_NONE;
    return s_make_op (c, op, pos, start, a, 1);
}

//  ---------------------------------------------------------------------
//  Lexer

static bool
s_is_space (char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static bool
s_is_name_start (char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static bool
s_is_name_char (char ch)
{
    return s_is_name_start (ch) || (ch >= '0' && ch <= '9');
}

static bool
s_is_digit (char ch)
{
    return ch >= '0' && ch <= '9';
}

static int
s_keyword (const char *word, size_t len)
{
    for (size_t i = 0; i < sizeof s_keywords / sizeof s_keywords[0]; i++)
        if (strlen (s_keywords[i].word) == len && strncasecmp (s_keywords[i].word, word, len) == 0)
            return s_keywords[i].kw;
    return K_NONE;
}

//  Mark the current token malformed.
static void
s_lex_error (s_ctx_t *c, int code, const char *why)
{
    c->tok = T_ERROR;
    c->lex_code = code;
    c->lex_error = why;
}

//  A quoted string or name: quote doubled inside. Decodes into buf.
static void
s_lex_quoted (s_ctx_t *c, char quote, size_t limit, const char *what)
{
    size_t i = c->tok_pos + 1;
    c->buf_len = 0;
    for (;;) {
        if (i >= c->len) {
            c->pos = c->len;
            c->tok_len = 1;
            s_lex_error (c, TM_EXPR_E_SYNTAX, quote == '\''? "unterminated string"
                                                            : "unterminated quoted name");
            return;
        }
        char ch = c->text[i++];
        if (ch == quote) {
            if (i < c->len && c->text[i] == quote)
                i++;
            else
                break;
        }
        if (c->buf_len == limit) {
            c->pos = i;
            c->tok_len = 1;
            s_lex_error (c, TM_EXPR_E_LIMIT, what);
            return;
        }
        c->buf[c->buf_len++] = ch;
    }
    c->buf[c->buf_len] = 0;
    c->pos = i;
    c->tok_len = i - c->tok_pos;
    c->tok = quote == '\''? T_STRING: T_QNAME;
    if (!tm_util_utf8_valid (c->buf, c->buf_len))
        s_lex_error (c, TM_EXPR_E_SYNTAX, quote == '\''? "string is not valid UTF-8"
                                                        : "quoted name is not valid UTF-8");
    else
    if (quote == '"' && c->buf_len == 0)
        s_lex_error (c, TM_EXPR_E_SYNTAX, "empty quoted name");
}

//  Read the next token.
static void
s_next (s_ctx_t *c)
{
    if (c->tok != T_END || c->tok_len) {
        c->prev_pos = c->tok_pos;
        c->prev_len = c->tok_len;
    }
    size_t i = c->pos;
    while (i < c->len && s_is_space (c->text[i]))
        i++;
    c->tok_pos = i;
    c->kw = K_NONE;
    if (i >= c->len) {
        c->tok = T_END;
        c->tok_len = 0;
        c->pos = i;
        return;
    }
    const char *t = c->text;
    char ch = t[i];
    c->tok_len = 1;
    c->pos = i + 1;
    char ch2 = i + 1 < c->len? t[i + 1]: 0;
    switch (ch) {
        case '(':
            c->tok = T_LPAREN;
            return;
        case ')':
            c->tok = T_RPAREN;
            return;
        case ',':
            c->tok = T_COMMA;
            return;
        case '+':
            c->tok = T_PLUS;
            return;
        case '-':
            c->tok = T_MINUS;
            return;
        case '*':
            c->tok = T_STAR;
            return;
        case '/':
            c->tok = T_SLASH;
            return;
        case '%':
            c->tok = T_PERCENT;
            return;
        case '=':
            c->tok = T_EQ;
            return;
        case '!':
            if (ch2 == '=') {
                c->tok = T_NE;
                c->tok_len = 2;
                c->pos = i + 2;
                return;
            }
            c->tok = T_OTHER;
            return;
        case '<':
            if (ch2 == '=' || ch2 == '>') {
                c->tok = ch2 == '='? T_LE: T_NE;
                c->tok_len = 2;
                c->pos = i + 2;
                return;
            }
            c->tok = T_LT;
            return;
        case '>':
            if (ch2 == '=') {
                c->tok = T_GE;
                c->tok_len = 2;
                c->pos = i + 2;
                return;
            }
            c->tok = T_GT;
            return;
        case '\'':
            s_lex_quoted (c, '\'', TM_EXPR_MAX_STRING, "string longer than 4096 bytes");
            return;
        case '"':
            s_lex_quoted (c, '"', TM_EXPR_MAX_NAME, "name longer than 128 bytes");
            return;
        default:
            break;
    }
    if (s_is_digit (ch)) {
        //  digits [. digits] [e [+-] digits], and no letter right after.
        size_t j = i;
        while (j < c->len && s_is_digit (t[j]))
            j++;
        bool bad = false;
        if (j < c->len && t[j] == '.') {
            j++;
            if (j >= c->len || !s_is_digit (t[j]))
                bad = true;
            while (j < c->len && s_is_digit (t[j]))
                j++;
        }
        if (!bad && j < c->len && (t[j] == 'e' || t[j] == 'E')) {
            j++;
            if (j < c->len && (t[j] == '+' || t[j] == '-'))
                j++;
            if (j >= c->len || !s_is_digit (t[j]))
                bad = true;
            while (j < c->len && s_is_digit (t[j]))
                j++;
        }
        while (j < c->len && (s_is_name_char (t[j]) || t[j] == '.')) {
            bad = true;
            j++;
        }
        c->pos = j;
        c->tok_len = j - i;
        if (bad) {
            s_lex_error (c, TM_EXPR_E_SYNTAX, "malformed number");
            return;
        }
        if (j - i > 64) {
            s_lex_error (c, TM_EXPR_E_LIMIT, "number longer than 64 characters");
            return;
        }
        char copy[65];
        memcpy (copy, t + i, j - i);
        copy[j - i] = 0;
        c->num = strtod (copy, NULL);
        if (!isfinite (c->num)) {
            s_lex_error (c, TM_EXPR_E_SYNTAX, "number out of range");
            return;
        }
        c->tok = T_NUMBER;
        return;
    }
    if (s_is_name_start (ch)) {
        //  segment ('.' segment)*
        size_t j = i;
        for (;;) {
            while (j < c->len && s_is_name_char (t[j]))
                j++;
            if (j + 1 < c->len && t[j] == '.' && s_is_name_start (t[j + 1]))
                j++;
            else
                break;
        }
        c->pos = j;
        c->tok_len = j - i;
        if (j - i > TM_EXPR_MAX_NAME) {
            s_lex_error (c, TM_EXPR_E_LIMIT, "name longer than 128 bytes");
            return;
        }
        memcpy (c->buf, t + i, j - i);
        c->buf[j - i] = 0;
        c->buf_len = j - i;
        c->tok = T_NAME;
        c->kw = s_keyword (t + i, j - i);
        return;
    }
    //  Anything else: one character (a whole UTF-8 sequence, for messages).
    size_t j = i + 1;
    while (j < c->len && j - i < 4 && ((unsigned char) t[j] & 0xC0) == 0x80)
        j++;
    c->pos = j;
    c->tok_len = j - i;
    c->tok = T_OTHER;
}

//  ---------------------------------------------------------------------
//  Parser

static uint32_t s_parse_or (s_ctx_t *c);

//  "expected X, found Y" at the current token; a malformed token reports
//  its own reason instead.
static uint32_t
s_expected (s_ctx_t *c, const char *what)
{
    if (c->tok == T_ERROR)
        return s_fail (c, c->lex_code, c->tok_pos, c->tok_len, "%s", c->lex_error);
    char found[48], prev[48];
    //  A missing operand reads best with the operator before it.
    if (c->prev_pos != SIZE_MAX && c->prev_len && strstr (what, "operand"))
        return s_fail (c, TM_EXPR_E_SYNTAX, c->tok_pos, c->tok_len,
                       "expected %s after %s, found %s", what,
                       s_quote (prev, sizeof prev, c->text + c->prev_pos, c->prev_len),
                       s_found (c, found, sizeof found));
    return s_fail (c, TM_EXPR_E_SYNTAX, c->tok_pos, c->tok_len, "expected %s, found %s", what,
                   s_found (c, found, sizeof found));
}

//  One more level of parser recursion; false past the limit.
static bool
s_enter (s_ctx_t *c)
{
    if (++c->nesting > TM_EXPR_MAX_NESTING) {
        s_fail (c, TM_EXPR_E_LIMIT, c->tok_pos, c->tok_len,
                "expression nests deeper than %d levels", TM_EXPR_MAX_NESTING);
        return false;
    }
    return true;
}

//  Comma-separated expressions up to ')', the '(' already consumed; links
//  them as siblings. Returns the first, S_NONE on error or if empty.
static uint32_t
s_parse_list (s_ctx_t *c, uint32_t *count, const char *after)
{
    uint32_t head = S_NONE, tail = S_NONE;
    *count = 0;
    if (c->tok == T_RPAREN) {
        s_next (c);
        return S_NONE;
    }
    for (;;) {
        uint32_t item = s_parse_or (c);
        if (item == S_NONE)
            return S_NONE;
        if (*count == TM_EXPR_MAX_ARGS + 1)
            return s_fail (c, TM_EXPR_E_LIMIT, c->self->nodes[item].start, 0,
                           "list has more than %d items", TM_EXPR_MAX_ARGS);
        if (tail == S_NONE)
            head = item;
        else
            c->self->nodes[tail].next = item;
        tail = item;
        c->self->nodes[tail].next = S_NONE;
        (*count)++;
        if (c->tok == T_COMMA)
            s_next (c);
        else
        if (c->tok == T_RPAREN) {
            s_next (c);
            return head;
        }
        else {
            char what[64];
            snprintf (what, sizeof what, "')' or ',' after %s", after);
            return s_expected (c, what);
        }
    }
}

static int
s_find_function (const char *name, size_t len)
{
    for (int op = S_ABS; op <= S_DISTANCE; op++)
        if (strlen (s_ops[op].name) == len && strncasecmp (s_ops[op].name, name, len) == 0)
            return op;
    return -1;
}

//  name '(' args ')' with a built-in name, or the caller's hook.
static uint32_t
s_parse_call (s_ctx_t *c)
{
    size_t pos = c->tok_pos, name_len = c->tok_len;
    int op = s_find_function (c->text + pos, name_len);
    char quoted[48];
    if (op < 0) {
        const tm_expr_options_t *o = c->opts;
        tm_expr_slot_t slot = {0, TM_EXPR_ANY};
        size_t end = 0;
        char canon[TM_EXPR_MAX_NAME + 1];
        canon[0] = 0;
        if (o->call
            && o->call (o->user, c->text, c->len, pos, name_len, &slot, &end, canon) == 0) {
            size_t clen = strnlen (canon, sizeof canon);
            if (end <= pos + name_len || end > c->len || clen == 0 || clen > TM_EXPR_MAX_NAME
                || !tm_util_utf8_valid (canon, clen))
                return s_fail (c, TM_EXPR_E_UNKNOWN_FUNCTION, pos, name_len,
                               "the call hook gave an invalid answer for %s",
                               s_quote (quoted, sizeof quoted, c->text + pos, name_len));
            uint32_t n = s_slot_node (c, canon, clen, slot, true, pos);
            c->pos = end;
            s_next (c);
            return n;
        }
        return s_fail (c, TM_EXPR_E_UNKNOWN_FUNCTION, pos, name_len, "unknown function %s",
                       s_quote (quoted, sizeof quoted, c->text + pos, name_len));
    }
    s_next (c);                        //  name
    s_next (c);                        //  (
    if (!s_enter (c))
        return S_NONE;
    uint32_t count;
    uint32_t first = s_parse_list (c, &count, "argument");
    c->nesting--;
    if (s_failed (c))
        return S_NONE;
    return s_make_op (c, op, pos, pos, first, count);
}

static uint32_t
s_parse_primary (s_ctx_t *c)
{
    size_t pos = c->tok_pos;
    switch (c->tok) {
        case T_NUMBER: {
            double x = c->num;
            s_next (c);
            return s_literal (c, tm_expr_number (x), pos);
        }
        case T_STRING: {
            uint32_t n = s_literal (c, tm_expr_string (c->buf, (uint32_t) c->buf_len), pos);
            s_next (c);
            return n;
        }
        case T_LPAREN: {
            if (!s_enter (c))
                return S_NONE;
            s_next (c);
            uint32_t n = s_parse_or (c);
            c->nesting--;
            if (n == S_NONE)
                return S_NONE;
            if (c->tok != T_RPAREN) {
                char what[64];
                unsigned column = 1;
                for (size_t i = 0; i < pos; i++) {
                    if (c->text[i] == '\n')
                        column = 1;
                    else
                    if (((unsigned char) c->text[i] & 0xC0) != 0x80)
                        column++;
                }
                snprintf (what, sizeof what, "')' to close '(' of column %u", column);
                return s_expected (c, what);
            }
            s_next (c);
            return n;
        }
        case T_QNAME:
        case T_NAME: {
            if (c->tok == T_NAME) {
                if (c->kw == K_TRUE || c->kw == K_FALSE || c->kw == K_NULL) {
                    tm_expr_value_t v = c->kw == K_NULL? tm_expr_null ()
                                                       : tm_expr_bool (c->kw == K_TRUE);
                    s_next (c);
                    return s_literal (c, v, pos);
                }
                if (c->kw != K_NONE)
                    return s_expected (c, "an operand");
                size_t i = c->pos;
                while (i < c->len && s_is_space (c->text[i]))
                    i++;
                if (i < c->len && c->text[i] == '(' && !memchr (c->buf, '.', c->buf_len))
                    return s_parse_call (c);
            }
            const tm_expr_options_t *o = c->opts;
            tm_expr_slot_t slot = {0, TM_EXPR_ANY};
            if (!o->resolve || o->resolve (o->user, c->buf, c->buf_len, &slot) != 0) {
                char quoted[48];
                return s_fail (c, TM_EXPR_E_UNKNOWN_NAME, pos, c->tok_len, "unknown name %s",
                               s_quote (quoted, sizeof quoted, c->buf, c->buf_len));
            }
            uint32_t n = s_slot_node (c, c->buf, c->buf_len, slot, false, pos);
            s_next (c);
            return n;
        }
        default:
            return s_expected (c, "an operand");
    }
}

static uint32_t
s_parse_unary (s_ctx_t *c)
{
    if (c->tok != T_MINUS)
        return s_parse_primary (c);
    size_t pos = c->tok_pos;
    if (!s_enter (c))
        return S_NONE;
    s_next (c);
    uint32_t operand = s_parse_unary (c);
    c->nesting--;
    return s_make_op1 (c, S_NEG, pos, pos, operand);
}

static uint32_t
s_parse_term (s_ctx_t *c)
{
    size_t start = c->tok_pos;
    uint32_t left = s_parse_unary (c);
    while (left != S_NONE
           && (c->tok == T_STAR || c->tok == T_SLASH || c->tok == T_PERCENT)) {
        int op = c->tok == T_STAR? S_MUL: c->tok == T_SLASH? S_DIV: S_MOD;
        size_t pos = c->tok_pos;
        s_next (c);
        uint32_t right = s_parse_unary (c);
        left = s_make_op2 (c, op, pos, start, left, right);
    }
    return left;
}

static uint32_t
s_parse_additive (s_ctx_t *c)
{
    size_t start = c->tok_pos;
    uint32_t left = s_parse_term (c);
    while (left != S_NONE && (c->tok == T_PLUS || c->tok == T_MINUS)) {
        int op = c->tok == T_PLUS? S_ADD: S_SUB;
        size_t pos = c->tok_pos;
        s_next (c);
        uint32_t right = s_parse_term (c);
        left = s_make_op2 (c, op, pos, start, left, right);
    }
    return left;
}

static int
s_cmp_op (int tok)
{
    switch (tok) {
        case T_EQ:
            return S_EQ;
        case T_NE:
            return S_NE;
        case T_LT:
            return S_LT;
        case T_LE:
            return S_LE;
        case T_GT:
            return S_GT;
        case T_GE:
            return S_GE;
        default:
            return -1;
    }
}

//  additive [ cmp additive | [NOT] IN (list) | [NOT] BETWEEN a AND b
//             | IS [NOT] NULL ]; predicates do not chain.
static uint32_t
s_parse_predicate (s_ctx_t *c)
{
    size_t start = c->tok_pos;
    uint32_t left = s_parse_additive (c);
    if (left == S_NONE)
        return S_NONE;
    int op = s_cmp_op (c->tok);
    uint32_t n;
    if (op >= 0) {
        size_t pos = c->tok_pos;
        s_next (c);
        n = s_make_op2 (c, op, pos, start, left, s_parse_additive (c));
    }
    else
    if (c->kw == K_IS) {
        size_t pos = c->tok_pos;
        s_next (c);
        bool negate = c->kw == K_NOT;
        if (negate)
            s_next (c);
        if (c->kw != K_NULL)
            return s_expected (c, negate? "NULL after IS NOT": "NULL or NOT NULL after IS");
        s_next (c);
        n = s_make_op1 (c, S_ISNULL, pos, start, left);
        if (negate)
            n = s_make_op1 (c, S_NOT, pos, start, n);
    }
    else
    if (c->kw == K_NOT || c->kw == K_IN || c->kw == K_BETWEEN) {
        size_t pos = c->tok_pos;
        bool negate = c->kw == K_NOT;
        if (negate) {
            s_next (c);
            if (c->kw != K_IN && c->kw != K_BETWEEN)
                return s_expected (c, "IN or BETWEEN after NOT");
        }
        if (c->kw == K_IN) {
            s_next (c);
            if (c->tok != T_LPAREN)
                return s_expected (c, "'(' after IN");
            s_next (c);
            if (c->tok == T_RPAREN)
                return s_expected (c, "at least one value in the IN list");
            if (!s_enter (c))
                return S_NONE;
            uint32_t count;
            uint32_t items = s_parse_list (c, &count, "IN list item");
            c->nesting--;
            if (items == S_NONE)
                return S_NONE;
            c->self->nodes[left].next = items;
            n = s_make_op (c, S_IN, pos, start, left, count + 1);
        }
        else {
            s_next (c);
            uint32_t low = s_parse_additive (c);
            if (low == S_NONE)
                return S_NONE;
            if (c->kw != K_AND)
                return s_expected (c, "AND in BETWEEN");
            s_next (c);
            uint32_t high = s_parse_additive (c);
            if (high == S_NONE)
                return S_NONE;
            c->self->nodes[left].next = low;
            c->self->nodes[low].next = high;
            c->self->nodes[high].next = S_NONE;
            n = s_make_op (c, S_BETWEEN, pos, start, left, 3);
        }
        if (negate)
            n = s_make_op1 (c, S_NOT, pos, start, n);
    }
    else
        return left;
    if (n != S_NONE
        && (s_cmp_op (c->tok) >= 0 || c->kw == K_IS || c->kw == K_IN || c->kw == K_BETWEEN))
        return s_expected (c, "AND, OR or the end (comparisons do not chain)");
    return n;
}

static uint32_t
s_parse_not (s_ctx_t *c)
{
    if (c->kw != K_NOT)
        return s_parse_predicate (c);
    size_t pos = c->tok_pos;
    if (!s_enter (c))
        return S_NONE;
    s_next (c);
    uint32_t operand = s_parse_not (c);
    c->nesting--;
    return s_make_op1 (c, S_NOT, pos, pos, operand);
}

//  One level of a flat AND or OR chain.
static uint32_t
s_parse_chain (s_ctx_t *c, int kw, int op, uint32_t (*operand) (s_ctx_t *))
{
    size_t start = c->tok_pos;
    uint32_t first = operand (c);
    if (first == S_NONE || c->kw != kw)
        return first;
    size_t pos = c->tok_pos;
    uint32_t tail = first, count = 1;
    c->self->nodes[first].next = S_NONE;
    while (c->kw == kw) {
        s_next (c);
        uint32_t item = operand (c);
        if (item == S_NONE)
            return S_NONE;
        if (count == TM_EXPR_MAX_ARGS)
            return s_fail (c, TM_EXPR_E_LIMIT, pos, 0, "%s chain has more than %d operands",
                           s_ops[op].name, TM_EXPR_MAX_ARGS);
        c->self->nodes[tail].next = item;
        c->self->nodes[item].next = S_NONE;
        tail = item;
        count++;
    }
    return s_make_op (c, op, pos, start, first, count);
}

static uint32_t
s_parse_and (s_ctx_t *c)
{
    return s_parse_chain (c, K_AND, S_AND, s_parse_not);
}

static uint32_t
s_parse_or (s_ctx_t *c)
{
    return s_parse_chain (c, K_OR, S_OR, s_parse_and);
}

//  ---------------------------------------------------------------------
//  Code generation

typedef struct {
    tm_expr_t *self;                   //  Expression whose code is written
    uint32_t depth;                    //  Stack depth after the code so far
    uint32_t cap;                      //  Instructions allocated
} s_gen_t;

static void
s_emit (s_gen_t *g, int op, uint32_t n, uint32_t arg, int delta)
{
    tm_expr_t *self = g->self;
    //  cap is 3 per node + 2: never reached (see s_finish).
    if (self->ncode < g->cap) {
        s_insn_t *insn = &self->code[self->ncode++];
        insn->op = (uint8_t) op;
        insn->cmp = 0;
        insn->n = (uint16_t) n;
        insn->arg = arg;
    }
    g->depth = (uint32_t) ((int) g->depth + delta);
    if (g->depth > self->max_stack)
        self->max_stack = g->depth;
}

static uint32_t
s_const (tm_expr_t *self, tm_expr_value_t value)
{
    self->consts[self->nconsts] = value;
    return self->nconsts++;
}

static void
s_gen (s_gen_t *g, uint32_t n)
{
    tm_expr_t *self = g->self;
    const s_node_t *node = &self->nodes[n];
    if (node->kind == S_LIT) {
        s_emit (g, S_CONST, 0, s_const (self, node->value), 1);
        return;
    }
    if (node->kind == S_SLOT) {
        if (node->slot + 1 > self->slots)
            self->slots = node->slot + 1;
        s_emit (g, S_LOAD, 0, node->slot, 1);
        return;
    }
    int op = node->op;
    if (op == S_AND || op == S_OR) {
        //  k0 JUMP k1 AND JUMP k2 AND ... end: a false (true) operand
        //  skips the rest and is the answer. The jumps are chained
        //  through their arg fields until the end is known.
        uint32_t chain = S_NONE;
        uint32_t k = node->kid;
        s_gen (g, k);
        for (k = self->nodes[k].next; k != S_NONE; k = self->nodes[k].next) {
            uint32_t at = self->ncode;
            s_emit (g, op == S_AND? S_JUMP_FALSE: S_JUMP_TRUE, 0, chain, 0);
            chain = at;
            s_gen (g, k);
            s_emit (g, op, 2, 0, -1);
        }
        while (chain != S_NONE && chain < self->ncode) {
            uint32_t prev = self->code[chain].arg;
            self->code[chain].arg = self->ncode;
            chain = prev;
        }
        return;
    }
    uint32_t first = node->kid;
    if (op == S_IN) {
        //  A list of constants is matched in place, off the stack.
        bool constant = true;
        for (uint32_t k = self->nodes[first].next; k != S_NONE; k = self->nodes[k].next)
            if (self->nodes[k].kind != S_LIT)
                constant = false;
        if (constant) {
            s_gen (g, first);
            uint32_t at = self->nconsts;
            for (uint32_t k = self->nodes[first].next; k != S_NONE; k = self->nodes[k].next)
                s_const (self, self->nodes[k].value);
            s_emit (g, S_IN_CONST, node->nkids - 1u, at, 0);
            return;
        }
    }
    if (op >= S_EQ && op <= S_GE && self->nodes[self->nodes[first].next].kind == S_LIT) {
        //  x <cmp> constant, the commonest filter, in one instruction, and
        //  name <cmp> constant without even a push of the name's value.
        const s_node_t *left = &self->nodes[first];
        uint32_t k = s_const (self, self->nodes[left->next].value);
        if (left->kind == S_SLOT) {
            if (left->slot + 1 > self->slots)
                self->slots = left->slot + 1;
            uint32_t at = self->ncode;
            s_emit (g, S_SLOT_CMP, k, left->slot, 1);
            if (at < self->ncode)
                self->code[at].cmp = (uint8_t) op;
            return;
        }
        s_gen (g, first);
        uint32_t at = self->ncode;
        s_emit (g, S_CMP_CONST, 0, k, 0);
        if (at < self->ncode)
            self->code[at].cmp = (uint8_t) op;
        return;
    }
    for (uint32_t k = first; k != S_NONE; k = self->nodes[k].next)
        s_gen (g, k);
    s_emit (g, op, node->nkids, 0, 1 - (int) node->nkids);
}

//  Last steps of compile and deserialise: the result type the caller
//  wants, then the program. Returns 0 or -1 after s_fail.
static int
s_finish (s_ctx_t *c, uint32_t root)
{
    tm_expr_t *self = c->self;
    const s_node_t *node = &self->nodes[root];
    tm_expr_type_t expect = c->opts->expect;
    if (expect != TM_EXPR_NULL && expect != TM_EXPR_ANY && node->type != expect
        && node->type != TM_EXPR_NULL && node->type != TM_EXPR_ANY) {
        s_fail (c, TM_EXPR_E_TYPE, node->start, 0, "expected %s expression, found %s",
                s_type_a (expect), s_type_a (node->type));
        return -1;
    }
    self->root = root;
    self->type = (tm_expr_type_t) node->type;
    s_gen_t g = {self, 0, 3 * self->nnodes + 2};
    self->code = (s_insn_t *) malloc (g.cap * sizeof (s_insn_t));
    self->consts = (tm_expr_value_t *) malloc (self->nnodes * sizeof (tm_expr_value_t));
    if (!self->code || !self->consts) {
        s_fail (c, TM_EXPR_E_NOMEM, 0, 0, "out of memory");
        return -1;
    }
    s_gen (&g, root);
    s_emit (&g, S_RETURN, 0, 0, 0);
    if (self->max_stack > TM_EXPR_MAX_STACK) {
        s_fail (c, TM_EXPR_E_LIMIT, node->start, 0,
                "expression needs an evaluation stack of %u values, more than %d",
                self->max_stack, TM_EXPR_MAX_STACK);
        return -1;
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Public: compile, destroy

void
tm_expr_destroy (tm_expr_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_expr_t *self = *self_p;
    while (self->strings) {
        s_chunk_t *next = self->strings->next;
        free (self->strings);
        self->strings = next;
    }
    free (self->nodes);
    free (self->code);
    free (self->consts);
    free (self);
    *self_p = NULL;
}

static void
s_ctx_init (s_ctx_t *c, tm_expr_t *self, const tm_expr_options_t *opts,
            const tm_expr_options_t *none, tm_expr_error_t *err)
{
    c->self = self;
    c->opts = opts? opts: none;
    c->err = err;
    c->bytes = false;
    c->text = "";
    c->len = 0;
    c->pos = 0;
    c->tok = T_END;
    c->kw = K_NONE;
    c->tok_pos = 0;
    c->tok_len = 0;
    c->prev_pos = SIZE_MAX;
    c->prev_len = 0;
    c->num = 0;
    c->lex_error = NULL;
    c->lex_code = 0;
    c->nesting = 0;
    c->buf_len = 0;
    c->buf[0] = 0;
}

static tm_expr_t *
s_compile (const char *text, size_t len, size_t offset, const tm_expr_options_t *opts,
           size_t *end, tm_expr_error_t *err, bool whole)
{
    tm_expr_error_t local;
    if (!err)
        err = &local;
    memset (err, 0, sizeof *err);
    tm_expr_t *self = (tm_expr_t *) calloc (1, sizeof *self);
    //  The context holds a string buffer: too big for some thread stacks
    //  when callers nest (a call hook compiling an argument).
    s_ctx_t *c = (s_ctx_t *) malloc (sizeof *c);
    if (!self || !c) {
        free (self);
        free (c);
        err->code = TM_EXPR_E_NOMEM;
        snprintf (err->message, sizeof err->message, "out of memory");
        return NULL;
    }
    const tm_expr_options_t none = {0};
    s_ctx_init (c, self, opts, &none, err);
    c->text = text? text: "";
    c->len = text? len: 0;
    if (offset > c->len)
        offset = c->len;
    c->pos = offset;
    s_next (c);
    c->prev_pos = SIZE_MAX;
    uint32_t root = s_parse_or (c);
    if (root != S_NONE && !s_failed (c)) {
        if (c->tok == T_ERROR)
            s_fail (c, c->lex_code, c->tok_pos, c->tok_len, "%s", c->lex_error);
        else
        if (whole && c->tok != T_END)
            s_expected (c, "an operator or the end of the expression");
    }
    if (!s_failed (c) && root != S_NONE)
        s_finish (c, root);
    if (s_failed (c) || root == S_NONE) {
        if (!s_failed (c))
            s_fail (c, TM_EXPR_E_SYNTAX, c->tok_pos, 0, "invalid expression");
        tm_expr_destroy (&self);
        free (c);
        return NULL;
    }
    if (end)
        *end = c->tok_pos;
    free (c);
    return self;
}

tm_expr_t *
tm_expr_compile (const char *text, const tm_expr_options_t *opts, tm_expr_error_t *err)
{
    return s_compile (text, text? strlen (text): 0, 0, opts, NULL, err, true);
}

tm_expr_t *
tm_expr_compile_at (const char *text, size_t len, size_t offset, const tm_expr_options_t *opts,
                    size_t *end, tm_expr_error_t *err)
{
    return s_compile (text, len, offset, opts, end, err, false);
}

//  ---------------------------------------------------------------------
//  Evaluation

//  A caller's value as the evaluator may use it: numbers that are not
//  finite, locations off the globe and unknown type tags read as null.
static inline void
s_load (tm_expr_value_t *to, const tm_expr_value_t *values, size_t nvalues, uint32_t slot)
{
    if (slot >= nvalues)
        *to = s_null ();
    else
        tm_expr_load (to, &values[slot]);
}

void
tm_expr_eval (const tm_expr_t *self, const tm_expr_value_t *values, size_t nvalues,
              tm_expr_value_t *out)
{
    //  max_stack <= TM_EXPR_MAX_STACK was checked when the code was made,
    //  and the code generator keeps every stack access within it.
    tm_expr_value_t stack[TM_EXPR_MAX_STACK];
    tm_expr_value_t *sp = stack;
    const s_insn_t *code = self->code;
    const s_insn_t *pc = code;
    for (;; pc++) {
        switch (pc->op) {
            case S_CONST:
                *sp++ = self->consts[pc->arg];
                break;
            case S_LOAD:
                s_load (sp++, values, nvalues, pc->arg);
                break;
            case S_CMP_CONST:
                sp[-1] = s_compare (pc->cmp, &sp[-1], &self->consts[pc->arg]);
                break;
            case S_SLOT_CMP: {
                //  Straight from the caller's array when the types match
                //  (the common case); anything else goes the general way.
                const tm_expr_value_t *k = &self->consts[pc->n];
                const tm_expr_value_t *v = pc->arg < nvalues? &values[pc->arg]: NULL;
                if (v && v->type == TM_EXPR_NUMBER && k->type == TM_EXPR_NUMBER
                    && isfinite (v->num))
                    *sp++ = s_bool (s_order_holds (pc->cmp, v->num, k->num));
                else
                if (v && v->type == TM_EXPR_STRING && k->type == TM_EXPR_STRING && v->str
                    && (pc->cmp == S_EQ || pc->cmp == S_NE))
                    *sp++ = s_bool ((v->len == k->len && memcmp (v->str, k->str, k->len) == 0)
                                    == (pc->cmp == S_EQ));
                else {
                    tm_expr_value_t value;
                    s_load (&value, values, nvalues, pc->arg);
                    *sp++ = s_compare (pc->cmp, &value, k);
                }
                break;
            }
            case S_JUMP_FALSE:
                if (sp[-1].type == TM_EXPR_BOOL && !sp[-1].b)
                    pc = code + pc->arg - 1;
                break;
            case S_JUMP_TRUE:
                if (sp[-1].type == TM_EXPR_BOOL && sp[-1].b)
                    pc = code + pc->arg - 1;
                break;
            case S_AND:
                sp--;
                sp[-1] = s_and (sp - 1, 2);
                break;
            case S_OR:
                sp--;
                sp[-1] = s_or (sp - 1, 2);
                break;
            case S_IN_CONST:
                sp[-1] = s_in (&sp[-1], &self->consts[pc->arg], pc->n);
                break;
            case S_EQ:
            case S_NE:
            case S_LT:
            case S_LE:
            case S_GT:
            case S_GE:
                sp--;
                sp[-1] = s_compare (pc->op, &sp[-1], sp);
                break;
            case S_ADD:
            case S_SUB:
            case S_MUL:
            case S_DIV:
                sp--;
                if (sp[-1].type == TM_EXPR_NUMBER && sp->type == TM_EXPR_NUMBER) {
                    double a = sp[-1].num, b = sp->num;
                    sp[-1] = pc->op == S_ADD? s_num (a + b)
                           : pc->op == S_SUB? s_num (a - b)
                           : pc->op == S_MUL? s_num (a * b)
                           : b != 0? s_num (a / b): s_null ();
                }
                else
                    sp[-1] = s_null ();
                break;
            case S_RETURN:
                *out = sp[-1];
                return;
            default:
                sp -= pc->n;
                s_apply (pc->op, sp, pc->n, sp);
                sp++;
                break;
        }
    }
}

bool
tm_expr_match (const tm_expr_t *self, const tm_expr_value_t *values, size_t nvalues)
{
    tm_expr_value_t r;
    tm_expr_eval (self, values, nvalues, &r);
    return r.type == TM_EXPR_BOOL && r.b;
}

tm_expr_type_t
tm_expr_type (const tm_expr_t *self)
{
    return self->type;
}

size_t
tm_expr_slots (const tm_expr_t *self)
{
    return self->slots;
}

bool
tm_expr_is_constant (const tm_expr_t *self)
{
    return self->nodes[self->root].kind == S_LIT;
}

//  ---------------------------------------------------------------------
//  Printer

typedef struct {
    char *data;                        //  Text so far, NUL-terminated
    size_t len;                        //  Bytes in data
    size_t cap;                        //  Bytes allocated
    bool failed;                       //  Out of memory
} s_out_t;

static void
s_put (s_out_t *o, const char *s, size_t len)
{
    if (o->failed)
        return;
    if (o->len + len + 1 > o->cap) {
        size_t cap = o->cap? o->cap: 64;
        while (cap < o->len + len + 1)
            cap *= 2;
        char *grown = (char *) realloc (o->data, cap);
        if (!grown) {
            o->failed = true;
            return;
        }
        o->data = grown;
        o->cap = cap;
    }
    memcpy (o->data + o->len, s, len);
    o->len += len;
    o->data[o->len] = 0;
}

static void
s_puts (s_out_t *o, const char *s)
{
    s_put (o, s, strlen (s));
}

//  Shortest text that reads back as the same double, without an exponent
//  for whole numbers below 1e15 (2000, not 2e+03).
static void
s_format_number (double x, char *buf, size_t cap)
{
    if (x == 0) {
        snprintf (buf, cap, "%s", signbit (x)? "-0": "0");
        return;
    }
    int precision = 1;
    for (; precision < 17; precision++) {
        snprintf (buf, cap, "%.*g", precision, x);
        if (strtod (buf, NULL) == x)
            break;
    }
    double magnitude = fabs (x);
    if (magnitude >= 1 && magnitude < 1e15) {
        int digits = 1;
        for (double power = 10; power <= magnitude; power *= 10)
            digits++;
        if (digits > precision)
            precision = digits;
    }
    snprintf (buf, cap, "%.*g", precision, x);
}

static void
s_put_quoted (s_out_t *o, const char *s, size_t len, char quote)
{
    s_put (o, &quote, 1);
    size_t from = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == quote) {
            s_put (o, s + from, i + 1 - from);
            s_put (o, &quote, 1);
            from = i + 1;
        }
    s_put (o, s + from, len - from);
    s_put (o, &quote, 1);
}

//  A name prints bare if it lexes back as the same bare name.
static bool
s_name_is_bare (const char *s, size_t len)
{
    size_t i = 0;
    for (;;) {
        if (i >= len || !s_is_name_start (s[i]))
            return false;
        while (i < len && s_is_name_char (s[i]))
            i++;
        if (i == len)
            break;
        if (s[i] != '.')
            return false;
        i++;
    }
    return memchr (s, '.', len) || s_keyword (s, len) == K_NONE;
}

static int
s_prec (const tm_expr_t *self, const s_node_t *node)
{
    if (node->kind == S_LIT)
        return node->value.type == TM_EXPR_NUMBER && signbit (node->value.num)? P_NEG
                                                                               : P_PRIMARY;
    if (node->kind == S_SLOT || s_is_function (node->op))
        return P_PRIMARY;
    if (node->op == S_NOT) {
        const s_node_t *kid = &self->nodes[node->kid];
        if (kid->kind == S_OPNODE
            && (kid->op == S_IN || kid->op == S_BETWEEN || kid->op == S_ISNULL))
            return P_CMP;
    }
    return s_ops[node->op].prec;
}

static void s_print (const tm_expr_t *self, s_out_t *o, uint32_t n, int min, bool full);

static void
s_print_kids (const tm_expr_t *self, s_out_t *o, uint32_t k, const char *sep, int min,
              bool full)
{
    for (bool first = true; k != S_NONE; k = self->nodes[k].next, first = false) {
        if (!first)
            s_puts (o, sep);
        s_print (self, o, k, min, full);
    }
}

//  IN, BETWEEN or IS NULL, negated (x NOT IN ...) or not.
static void
s_print_predicate (const tm_expr_t *self, s_out_t *o, const s_node_t *node, bool negate,
                   bool full)
{
    uint32_t x = node->kid;
    s_print (self, o, x, P_ADD, full);
    if (node->op == S_ISNULL) {
        s_puts (o, negate? " IS NOT NULL": " IS NULL");
        return;
    }
    if (negate)
        s_puts (o, " NOT");
    if (node->op == S_IN) {
        s_puts (o, " IN (");
        s_print_kids (self, o, self->nodes[x].next, ", ", P_OR, full);
        s_puts (o, ")");
        return;
    }
    uint32_t low = self->nodes[x].next;
    s_puts (o, " BETWEEN ");
    s_print (self, o, low, P_ADD, full);
    s_puts (o, " AND ");
    s_print (self, o, self->nodes[low].next, P_ADD, full);
}

static void
s_print (const tm_expr_t *self, s_out_t *o, uint32_t n, int min, bool full)
{
    const s_node_t *node = &self->nodes[n];
    int prec = s_prec (self, node);
    bool parens = prec < min || (full && prec < P_NEG);
    if (full && node->kind == S_OPNODE && node->op == S_NEG)
        parens = true;
    if (parens)
        s_puts (o, "(");
    if (node->kind == S_LIT) {
        char buf[40];
        switch (node->value.type) {
            case TM_EXPR_NUMBER:
                s_format_number (node->value.num, buf, sizeof buf);
                s_puts (o, buf);
                break;
            case TM_EXPR_STRING:
                s_put_quoted (o, node->value.str, node->value.len, '\'');
                break;
            case TM_EXPR_BOOL:
                s_puts (o, node->value.b? "TRUE": "FALSE");
                break;
            default:
                s_puts (o, "NULL");
                break;
        }
    }
    else
    if (node->kind == S_SLOT) {
        if (node->raw || s_name_is_bare (node->value.str, node->value.len))
            s_put (o, node->value.str, node->value.len);
        else
            s_put_quoted (o, node->value.str, node->value.len, '"');
    }
    else {
        int op = node->op;
        const s_node_t *kid = &self->nodes[node->kid];
        if (s_is_function (op)) {
            s_puts (o, s_ops[op].name);
            s_puts (o, "(");
            s_print_kids (self, o, node->kid, ", ", P_OR, full);
            s_puts (o, ")");
        }
        else
        if (op == S_NEG) {
            s_puts (o, "-");
            //  "- -x", not "--x": keep the minus signs apart.
            if ((kid->kind == S_OPNODE && kid->op == S_NEG)
                || (kid->kind == S_LIT && kid->value.type == TM_EXPR_NUMBER
                    && signbit (kid->value.num)))
                s_puts (o, " ");
            s_print (self, o, node->kid, P_NEG, full);
        }
        else
        if (op == S_NOT) {
            if (prec == P_CMP)
                s_print_predicate (self, o, kid, true, full);
            else {
                s_puts (o, "NOT ");
                s_print (self, o, node->kid, P_NOT, full);
            }
        }
        else
        if (op == S_AND || op == S_OR)
            s_print_kids (self, o, node->kid, op == S_AND? " AND ": " OR ", prec + 1, full);
        else
        if (op == S_IN || op == S_BETWEEN || op == S_ISNULL)
            s_print_predicate (self, o, node, false, full);
        else {
            //  Binary: arithmetic is left-associative, comparisons do not
            //  associate at all.
            s_print (self, o, node->kid, prec == P_CMP? P_ADD: prec, full);
            s_puts (o, " ");
            s_puts (o, s_ops[op].name);
            s_puts (o, " ");
            s_print (self, o, kid->next, prec == P_CMP? P_ADD: prec + 1, full);
        }
    }
    if (parens)
        s_puts (o, ")");
}

char *
tm_expr_print (const tm_expr_t *self, int flags)
{
    s_out_t o = {NULL, 0, 0, false};
    s_print (self, &o, self->root, P_OR, (flags & TM_EXPR_PRINT_PARENS) != 0);
    if (o.failed) {
        free (o.data);
        return NULL;
    }
    return o.data;
}

//  ---------------------------------------------------------------------
//  Serialised form
//
//  "TMX" 0x01, varint record count, then the tree in postfix order, one
//  record per node:
//      0x00 null | 0x01 true | 0x02 false
//      0x03 number: 8 bytes, IEEE 754 little-endian, finite
//      0x04 string: varint length, UTF-8 bytes
//      0x05 name, 0x06 call text from a hook: varint slot, type byte,
//           varint length, UTF-8 bytes
//      0x10 + op: operator or function over the last varint-count nodes
//  A tree rather than the program: it is checked by the same code that
//  checks parsed text, and the program's format stays private.

#define S_MAGIC "TMX\x01"
#define S_REC_OP 0x10

static void
s_put_varint (s_out_t *o, uint64_t v)
{
    uint8_t buf[10];
    size_t n = 0;
    while (v >= 0x80) {
        buf[n++] = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    buf[n++] = (uint8_t) v;
    s_put (o, (const char *) buf, n);
}

static void
s_put_byte (s_out_t *o, uint8_t b)
{
    s_put (o, (const char *) &b, 1);
}

static void
s_serialise (const tm_expr_t *self, s_out_t *o, uint32_t n, uint32_t *count)
{
    const s_node_t *node = &self->nodes[n];
    (*count)++;
    if (node->kind == S_LIT) {
        switch (node->value.type) {
            case TM_EXPR_NUMBER: {
                s_put_byte (o, 0x03);
                uint64_t bits;
                memcpy (&bits, &node->value.num, sizeof bits);
                for (int i = 0; i < 8; i++)
                    s_put_byte (o, (uint8_t) (bits >> (8 * i)));
                break;
            }
            case TM_EXPR_STRING:
                s_put_byte (o, 0x04);
                s_put_varint (o, node->value.len);
                s_put (o, node->value.str, node->value.len);
                break;
            case TM_EXPR_BOOL:
                s_put_byte (o, node->value.b? 0x01: 0x02);
                break;
            default:
                s_put_byte (o, 0x00);
                break;
        }
        return;
    }
    if (node->kind == S_SLOT) {
        s_put_byte (o, node->raw? 0x06: 0x05);
        s_put_varint (o, node->slot);
        s_put_byte (o, node->type);
        s_put_varint (o, node->value.len);
        s_put (o, node->value.str, node->value.len);
        return;
    }
    for (uint32_t k = node->kid; k != S_NONE; k = self->nodes[k].next)
        s_serialise (self, o, k, count);
    s_put_byte (o, (uint8_t) (S_REC_OP + node->op));
    s_put_varint (o, node->nkids);
}

uint8_t *
tm_expr_serialise (const tm_expr_t *self, size_t *size)
{
    //  The count goes before the records: write them, then prepend.
    s_out_t body = {NULL, 0, 0, false};
    uint32_t count = 0;
    s_serialise (self, &body, self->root, &count);
    s_out_t o = {NULL, 0, 0, false};
    s_put (&o, S_MAGIC, 4);
    s_put_varint (&o, count);
    s_put (&o, body.data, body.len);
    free (body.data);
    if (o.failed || body.failed) {
        free (o.data);
        return NULL;
    }
    *size = o.len;
    return (uint8_t *) o.data;
}

typedef struct {
    const uint8_t *data;               //  Start of the bytes
    size_t size;                       //  Bytes in data
    size_t pos;                        //  Next unread byte
} s_reader_t;

static int
s_get_varint (s_reader_t *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->size)
            return -1;
        uint8_t b = r->data[r->pos++];
        v |= (uint64_t) (b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

//  A length-prefixed UTF-8 field of 1 (0 if allow_empty) .. max bytes.
static const char *
s_get_text (s_reader_t *r, size_t max, bool allow_empty, size_t *len)
{
    uint64_t n;
    if (s_get_varint (r, &n) != 0 || n > r->size - r->pos || n > max || (n == 0 && !allow_empty))
        return NULL;
    const char *s = (const char *) r->data + r->pos;
    if (!tm_util_utf8_valid (s, (size_t) n))
        return NULL;
    r->pos += (size_t) n;
    *len = (size_t) n;
    return s;
}

tm_expr_t *
tm_expr_deserialise (const uint8_t *data, size_t size, const tm_expr_options_t *opts,
                     tm_expr_error_t *err)
{
    tm_expr_error_t local;
    if (!err)
        err = &local;
    memset (err, 0, sizeof *err);
    tm_expr_t *self = (tm_expr_t *) calloc (1, sizeof *self);
    s_ctx_t *c = (s_ctx_t *) malloc (sizeof *c);
    uint32_t *stack = (uint32_t *) malloc (TM_EXPR_MAX_NODES * sizeof (uint32_t));
    if (!self || !c || !stack) {
        free (self);
        free (c);
        free (stack);
        err->code = TM_EXPR_E_NOMEM;
        snprintf (err->message, sizeof err->message, "out of memory");
        return NULL;
    }
    const tm_expr_options_t none = {0};
    s_ctx_init (c, self, opts, &none, err);
    c->bytes = true;
    s_reader_t r = {data, data? size: 0, 0};
    uint32_t depth = 0;
    uint64_t count = 0;
    if (r.size > TM_EXPR_MAX_BYTES)
        s_fail (c, TM_EXPR_E_LIMIT, 0, 0, "more than %d bytes", TM_EXPR_MAX_BYTES);
    else
    if (r.size < 4 || memcmp (data, S_MAGIC, 4) != 0)
        s_fail (c, TM_EXPR_E_MALFORMED, 0, 0, "not a serialised expression (bad magic)");
    else {
        r.pos = 4;
        if (s_get_varint (&r, &count) != 0 || count == 0 || count > TM_EXPR_MAX_NODES)
            s_fail (c, TM_EXPR_E_MALFORMED, 4, 0, "bad record count");
    }
    for (uint64_t i = 0; i < count && !s_failed (c); i++) {
        size_t at = r.pos;
        if (r.pos >= r.size) {
            s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "truncated: %llu of %llu records",
                    (unsigned long long) i, (unsigned long long) count);
            break;
        }
        uint8_t tag = r.data[r.pos++];
        uint32_t n = S_NONE;
        if (tag <= 0x02)
            n = s_literal (c, tag == 0? tm_expr_null (): tm_expr_bool (tag == 1), at);
        else
        if (tag == 0x03) {
            if (r.size - r.pos < 8) {
                s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "truncated number");
                break;
            }
            uint64_t bits = 0;
            for (int b = 7; b >= 0; b--)
                bits = bits << 8 | r.data[r.pos + (size_t) b];
            r.pos += 8;
            double x;
            memcpy (&x, &bits, sizeof x);
            if (!isfinite (x)) {
                s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "number is not finite");
                break;
            }
            n = s_literal (c, tm_expr_number (x), at);
        }
        else
        if (tag == 0x04) {
            size_t len;
            const char *s = s_get_text (&r, TM_EXPR_MAX_STRING, true, &len);
            if (!s) {
                s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "bad string");
                break;
            }
            n = s_literal (c, tm_expr_string (s, (uint32_t) len), at);
        }
        else
        if (tag == 0x05 || tag == 0x06) {
            uint64_t slot;
            size_t len;
            if (s_get_varint (&r, &slot) != 0 || slot >= TM_EXPR_MAX_SLOTS || r.pos >= r.size) {
                s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "bad slot");
                break;
            }
            uint8_t type = r.data[r.pos++];
            const char *name = s_get_text (&r, TM_EXPR_MAX_NAME, false, &len);
            if (!name || type < TM_EXPR_NUMBER || type > TM_EXPR_ANY) {
                s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "bad name or type");
                break;
            }
            tm_expr_slot_t resolved = {(uint32_t) slot, (tm_expr_type_t) type};
            const tm_expr_options_t *o = c->opts;
            if (o->resolve) {
                //  The worker's own layout: resolve the name again.
                char copy[TM_EXPR_MAX_NAME + 1];
                memcpy (copy, name, len);
                copy[len] = 0;
                if (o->resolve (o->user, copy, len, &resolved) != 0) {
                    char quoted[48];
                    s_fail (c, TM_EXPR_E_UNKNOWN_NAME, at, 0, "unknown name %s",
                            s_quote (quoted, sizeof quoted, copy, len));
                    break;
                }
            }
            n = s_slot_node (c, name, len, resolved, tag == 0x06, at);
        }
        else
        if (tag >= S_REC_OP && tag < S_REC_OP + S_OP_COUNT) {
            uint64_t nkids;
            if (s_get_varint (&r, &nkids) != 0 || nkids == 0 || nkids > depth) {
                s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "operator has a bad operand count");
                break;
            }
            depth -= (uint32_t) nkids;
            for (uint32_t k = 0; k + 1 < nkids; k++)
                self->nodes[stack[depth + k]].next = stack[depth + k + 1];
            self->nodes[stack[depth + nkids - 1]].next = S_NONE;
            n = s_make_op (c, tag - S_REC_OP, at, at, stack[depth], (uint32_t) nkids);
        }
        else {
            s_fail (c, TM_EXPR_E_MALFORMED, at, 0, "unknown record 0x%02x", tag);
            break;
        }
        if (n == S_NONE)
            break;
        stack[depth++] = n;
    }
    if (!s_failed (c)) {
        if (depth != 1)
            s_fail (c, TM_EXPR_E_MALFORMED, r.pos, 0, "records leave %u trees, not one", depth);
        else
        if (r.pos != r.size)
            s_fail (c, TM_EXPR_E_MALFORMED, r.pos, 0, "%zu bytes after the last record",
                    r.size - r.pos);
        else
            s_finish (c, stack[0]);
    }
    free (stack);
    free (c);
    if (err->code) {
        tm_expr_destroy (&self);
        return NULL;
    }
    return self;
}

//  ---------------------------------------------------------------------
//  Evaluating a batch of rows
//
//  The scalar evaluator costs tens of nanoseconds a row, most of it the
//  interpreter's dispatch and the copies of tagged values; a scan of a
//  million twins pays that a million times per expression. Here the tree
//  is walked once per pass of up to S_BATCH_ROWS rows, each operator node
//  filling a vector of results for the rows of the pass (kids before
//  parents, so no recursion). Operators whose result is always a boolean
//  or null (comparisons, IN, BETWEEN, IS NULL, AND, OR, NOT, within,
//  bbox) keep a byte per row (S_FALSE, S_TRUE, S_UNKNOWN) instead of a
//  24-byte value: filters are mostly these, and a byte is what a scan
//  over a million rows can afford to write and read back. The common
//  shapes (a slot compared with a constant, AND/OR/NOT, IN a constant
//  list, within() a constant circle) have loops of their own; every other
//  operator goes through s_apply row by row, the function the scalar
//  evaluator and the folder use, so the answers are the same by
//  construction (tests/unit/test_expr.c and fuzz_expr check it).

#define S_BATCH_ROWS 1024              //  Rows per pass at most
#define S_BATCH_BYTES (1u << 22)       //  Scratch vectors, all nodes, at most

//  Bit patterns chosen so that three-valued AND is the bitwise AND of its
//  operands and OR the bitwise OR (false 00 < unknown 01 < true 11, and
//  AND / OR are the minimum / maximum in that order), eight rows to a
//  machine word. NOT swaps the two bits and complements them.
enum { S_FALSE = 0, S_UNKNOWN = 1, S_TRUE = 3 };

//  A node's answers per dictionary entry (s_batch_lut).
typedef struct {
    const tm_expr_value_t *dict;       //  The dictionary they were worked out for
    uint32_t ndict;
    uint8_t *table;                    //  ndict answers
} s_lut_t;

struct _tm_expr_batch_t {
    const tm_expr_t *expr;             //  Borrowed
    size_t rows;                       //  Rows a pass takes
    uint32_t *order;                   //  Operator nodes reachable from the root,
    uint32_t norder;                   //  kids before parents
    tm_expr_value_t **vec;             //  Per node: its values (other operators)
    uint8_t **tri;                     //  Per node: its truth bytes (boolean operators)
    tm_expr_value_t *store;            //  The value vectors, in one block
    uint8_t *tri_store;                //  The byte vectors, in one block
    tm_expr_value_t *args;             //  One row's operands (the generic path)
    uint32_t max_args;                 //  Entries of args
    s_lut_t *luts;                     //  Per node, made on first use
    size_t base;                       //  This pass's first row in the columns
};

//  Operators whose result is a boolean or null, whatever their operands.
static bool
s_is_truth (int op)
{
    return (op >= S_EQ && op <= S_OR) || op == S_NOT || op == S_WITHIN || op == S_BBOX;
}

static inline uint8_t
s_truth (const tm_expr_value_t *v)
{
    return v->type != TM_EXPR_BOOL? S_UNKNOWN: v->b? S_TRUE: S_FALSE;
}

static inline tm_expr_value_t
s_from_truth (uint8_t t)
{
    return t == S_UNKNOWN? s_null (): s_bool (t == S_TRUE);
}

tm_expr_batch_t *
tm_expr_batch_new (const tm_expr_t *expr)
{
    assert (expr);
    tm_expr_batch_t *self = (tm_expr_batch_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->expr = expr;
    uint32_t n = expr->nnodes;
    self->order = (uint32_t *) malloc ((n? n: 1) * sizeof *self->order);
    self->vec = (tm_expr_value_t **) calloc (n? n: 1, sizeof *self->vec);
    self->tri = (uint8_t **) calloc (n? n: 1, sizeof *self->tri);
    self->luts = (s_lut_t *) calloc (n? n: 1, sizeof *self->luts);
    uint32_t *stack = (uint32_t *) malloc ((n? n: 1) * sizeof *stack);
    uint8_t *seen = (uint8_t *) calloc (n? n: 1, 1);
    if (!self->order || !self->vec || !self->tri || !self->luts || !stack || !seen) {
        free (stack);
        free (seen);
        tm_expr_batch_destroy (&self);
        return NULL;
    }
    //  Post-order walk: a node goes out after all its kids (seen: 1 when
    //  its kids are pushed, 2 when it is out). Each node is pushed once.
    uint32_t depth = 0;
    if (expr->root < n && expr->nodes[expr->root].kind == S_OPNODE)
        stack[depth++] = expr->root;
    while (depth) {
        uint32_t at = stack[depth - 1];
        const s_node_t *node = &expr->nodes[at];
        if (seen[at] == 0) {
            seen[at] = 1;
            if (node->nkids > self->max_args)
                self->max_args = node->nkids;
            for (uint32_t k = node->kid; k != S_NONE && k < n; k = expr->nodes[k].next)
                if (expr->nodes[k].kind == S_OPNODE && !seen[k] && depth < n)
                    stack[depth++] = k;
            continue;
        }
        depth--;
        if (seen[at] == 1) {
            seen[at] = 2;
            self->order[self->norder++] = at;
        }
    }
    free (stack);
    free (seen);
    uint32_t nvec = 0, ntri = 0;
    for (uint32_t i = 0; i < self->norder; i++) {
        if (s_is_truth (expr->nodes[self->order[i]].op))
            ntri++;
        else
            nvec++;
    }
    size_t per_row = (size_t) nvec * sizeof (tm_expr_value_t) + ntri;
    self->rows = per_row? S_BATCH_BYTES / per_row: S_BATCH_ROWS;
    if (self->rows > S_BATCH_ROWS)
        self->rows = S_BATCH_ROWS;
    if (self->rows == 0)
        self->rows = 1;
    self->store = (tm_expr_value_t *) malloc ((nvec? nvec: 1) * self->rows
                                              * sizeof (tm_expr_value_t));
    self->tri_store = (uint8_t *) malloc ((ntri? ntri: 1) * self->rows);
    self->args = (tm_expr_value_t *) malloc ((self->max_args? self->max_args: 1)
                                             * sizeof (tm_expr_value_t));
    if (!self->store || !self->tri_store || !self->args) {
        tm_expr_batch_destroy (&self);
        return NULL;
    }
    uint32_t v = 0, t = 0;
    for (uint32_t i = 0; i < self->norder; i++) {
        uint32_t at = self->order[i];
        if (s_is_truth (expr->nodes[at].op))
            self->tri[at] = self->tri_store + (size_t) t++ * self->rows;
        else
            self->vec[at] = self->store + (size_t) v++ * self->rows;
    }
    return self;
}

void
tm_expr_batch_destroy (tm_expr_batch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_expr_batch_t *self = *self_p;
    free (self->order);
    free (self->vec);
    free (self->tri);
    free (self->store);
    free (self->tri_store);
    free (self->args);
    if (self->luts)
        for (uint32_t i = 0; i < self->expr->nnodes; i++)
            free (self->luts[i].table);
    free (self->luts);
    free (self);
    *self_p = NULL;
}

bool
tm_expr_is_slot (const tm_expr_t *self, uint32_t *slot)
{
    const s_node_t *root = &self->nodes[self->root];
    if (root->kind != S_SLOT)
        return false;
    *slot = root->slot;
    return true;
}

size_t
tm_expr_batch_rows (const tm_expr_batch_t *self)
{
    return self->rows;
}

//  The column of a slot node, or NULL (null in every row). Rows are read
//  at b->base + i: the pass's first row plus the row in the pass.
static inline const tm_expr_col_t *
s_col (const s_node_t *k, const tm_expr_col_t *cols, size_t ncols)
{
    return k->slot < ncols && cols[k->slot].kind != TM_EXPR_COL_NULL? &cols[k->slot]: NULL;
}

//  Row i's value of a kid: a constant, a slot (as s_load reads it) or an
//  operator's result.
static inline void
s_kid_value (const tm_expr_batch_t *b, uint32_t kid, const tm_expr_col_t *cols, size_t ncols,
             size_t i, tm_expr_value_t *out)
{
    const s_node_t *k = &b->expr->nodes[kid];
    if (k->kind == S_LIT)
        *out = k->value;
    else
    if (k->kind == S_SLOT) {
        const tm_expr_col_t *col = s_col (k, cols, ncols);
        if (col)
            tm_expr_col_get (col, b->base + i, out);
        else
            *out = s_null ();
    }
    else
    if (b->tri[kid])
        *out = s_from_truth (b->tri[kid][i]);
    else
        *out = b->vec[kid][i];
}

//  kid <cmp> constant over the rows; the constant is on the right.
static void
s_batch_cmp_const (const tm_expr_batch_t *b, int op, uint32_t kid, const tm_expr_value_t *k,
                   const tm_expr_col_t *cols, size_t ncols, size_t n, uint8_t *out)
{
    const s_node_t *left = &b->expr->nodes[kid];
    const tm_expr_value_t *vals = NULL;
    if (left->kind == S_SLOT) {
        const tm_expr_col_t *col = s_col (left, cols, ncols);
        if (col && col->kind == TM_EXPR_COL_NUMBERS && k->type == TM_EXPR_NUMBER) {
            //  One loop per operator, so that none tests the operator per row.
            const double *x = col->nums + b->base;
            double c = k->num;
#define S_CMP_LOOP(expr) \
            for (size_t i = 0; i < n; i++) \
                out[i] = !isfinite (x[i])? S_UNKNOWN: (expr)? S_TRUE: S_FALSE; \
            return;
            switch (op) {
                case S_EQ: S_CMP_LOOP (x[i] == c)
                case S_NE: S_CMP_LOOP (x[i] != c)
                case S_LT: S_CMP_LOOP (x[i] < c)
                case S_LE: S_CMP_LOOP (x[i] <= c)
                case S_GT: S_CMP_LOOP (x[i] > c)
                default: S_CMP_LOOP (x[i] >= c)
            }
#undef S_CMP_LOOP
        }
        if (col && col->kind == TM_EXPR_COL_VALUES)
            vals = col->values + b->base;
    }
    else
    if (left->kind == S_OPNODE && b->vec[kid])
        vals = b->vec[kid];
    if (vals && k->type == TM_EXPR_NUMBER) {
        double c = k->num;
        for (size_t i = 0; i < n; i++) {
            const tm_expr_value_t *v = &vals[i];
            if (v->type == TM_EXPR_NUMBER && isfinite (v->num))
                out[i] = s_order_holds (op, v->num, c)? S_TRUE: S_FALSE;
            else {
                tm_expr_value_t x, r;
                s_load (&x, v, 1, 0);
                r = s_compare (op, &x, k);
                out[i] = s_truth (&r);
            }
        }
        return;
    }
    if (vals && k->type == TM_EXPR_STRING && (op == S_EQ || op == S_NE)) {
        uint8_t yes = op == S_EQ? S_TRUE: S_FALSE, no = op == S_EQ? S_FALSE: S_TRUE;
        //  Strings are mostly shared (interned models, attribute values):
        //  the last pointer found equal and the last found different
        //  spare the compare of its bytes for the rows after.
        const char *known_same = k->str, *known_other = NULL;
        for (size_t i = 0; i < n; i++) {
            const tm_expr_value_t *v = &vals[i];
            if (v->type == TM_EXPR_STRING && v->str) {
                bool same;
                if (v->len != k->len)
                    same = false;
                else
                if (v->str == known_same || v->len == 0)
                    same = true;
                else
                if (v->str == known_other)
                    same = false;
                else {
                    same = memcmp (v->str, k->str, k->len) == 0;
                    if (same)
                        known_same = v->str;
                    else
                        known_other = v->str;
                }
                out[i] = same? yes: no;
            }
            else {
                tm_expr_value_t x, r;
                s_load (&x, v, 1, 0);
                r = s_compare (op, &x, k);
                out[i] = s_truth (&r);
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        tm_expr_value_t x, r;
        s_kid_value (b, kid, cols, ncols, i, &x);
        r = s_compare (op, &x, k);
        out[i] = s_truth (&r);
    }
}

//  A truth-valued node over one column of strings and constants (model =
//  'x', district IN (...), kind IS NULL): its answer depends only on the
//  row's dictionary entry, so it is worked out once per entry (s_apply,
//  as ever) and each row looks its answer up. The table is kept while the
//  dictionary stays the same. False if the node is not of that shape.
static bool
s_batch_lut (tm_expr_batch_t *b, uint32_t at, const tm_expr_col_t *cols, size_t ncols,
             size_t n)
{
    const tm_expr_t *e = b->expr;
    const s_node_t *node = &e->nodes[at];
    const tm_expr_col_t *col = NULL;
    uint32_t nslots = 0;
    for (uint32_t k = node->kid; k != S_NONE; k = e->nodes[k].next) {
        const s_node_t *kid = &e->nodes[k];
        if (kid->kind == S_SLOT) {
            col = s_col (kid, cols, ncols);
            nslots++;
        }
        else
        if (kid->kind != S_LIT)
            return false;
    }
    if (nslots != 1 || !col || col->kind != TM_EXPR_COL_STRINGS || node->nkids > b->max_args)
        return false;
    s_lut_t *lut = &b->luts[at];
    if (lut->dict != col->dict || lut->ndict != col->ndict || !lut->table) {
        uint8_t *table = (uint8_t *) realloc (lut->table, col->ndict? col->ndict: 1);
        if (!table)
            return false;
        lut->table = table;
        lut->dict = col->dict;
        lut->ndict = col->ndict;
        for (uint32_t d = 0; d < col->ndict; d++) {
            uint32_t m = 0;
            for (uint32_t k = node->kid; k != S_NONE; k = e->nodes[k].next) {
                if (e->nodes[k].kind == S_SLOT)
                    tm_expr_load (&b->args[m++], &col->dict[d]);
                else
                    b->args[m++] = e->nodes[k].value;
            }
            tm_expr_value_t r;
            s_apply (node->op, b->args, m, &r);
            table[d] = s_truth (&r);
        }
    }
    const uint32_t *ids = col->ids + b->base;
    const uint8_t *table = lut->table;
    uint32_t nd = lut->ndict;
    uint8_t *out = b->tri[at];
    //  An id past the dictionary reads null: what s_apply makes of null.
    uint8_t past = S_UNKNOWN;
    {
        uint32_t m = 0;
        for (uint32_t k = node->kid; k != S_NONE; k = e->nodes[k].next)
            b->args[m++] = e->nodes[k].kind == S_SLOT? s_null (): e->nodes[k].value;
        tm_expr_value_t r;
        s_apply (node->op, b->args, m, &r);
        past = s_truth (&r);
    }
    for (size_t i = 0; i < n; i++)
        out[i] = ids[i] < nd? table[ids[i]]: past;
    return true;
}

//  Three-valued AND / OR over the kids, kid by kid: bitwise on the truth
//  bytes, a word of eight rows at a time.
static void
s_batch_logic (tm_expr_batch_t *b, const s_node_t *node, const tm_expr_col_t *cols,
               size_t ncols, size_t n, uint8_t *out)
{
    bool is_and = node->op == S_AND;
    uint8_t *acc = out;
    memset (acc, is_and? S_TRUE: S_FALSE, n);
    for (uint32_t k = node->kid; k != S_NONE; k = b->expr->nodes[k].next) {
        const uint8_t *v = b->tri[k];
        if (v) {
            size_t i = 0;
            for (; i + 8 <= n; i += 8) {
                uint64_t x, y;
                memcpy (&x, acc + i, 8);
                memcpy (&y, v + i, 8);
                x = is_and? x & y: x | y;
                memcpy (acc + i, &x, 8);
            }
            for (; i < n; i++)
                acc[i] = (uint8_t) (is_and? acc[i] & v[i]: acc[i] | v[i]);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            tm_expr_value_t x;
            s_kid_value (b, k, cols, ncols, i, &x);
            uint8_t t = s_truth (&x);
            acc[i] = (uint8_t) (is_and? acc[i] & t: acc[i] | t);
        }
    }
}

//  within (location, lat, lon, metres) with constant lat, lon and metres:
//  s_apply's arithmetic, with the argument checks made once, and a box
//  around the circle that turns most rows away without trigonometry. The
//  latitude side is s_apply's own shortcut. The longitude side: for a row
//  that passed it, |lat - lat0| <= metres / R, so cos (lat) is at least
//  the smaller cosine at the band's edges (cmin), and haversine's
//  h >= cos (lat0) cmin sin^2 (dlon / 2); a row whose dlon makes that
//  bound exceed h at the radius, with a margin far above rounding, is
//  outside whatever the exact arithmetic says. Every other row gets the
//  exact haversine, so the answers stay s_apply's.
static void
s_batch_within (const tm_expr_batch_t *b, const s_node_t *node, const tm_expr_col_t *cols,
                size_t ncols, size_t n, uint8_t *out)
{
    const s_node_t *nodes = b->expr->nodes;
    uint32_t k0 = node->kid, k1 = nodes[k0].next, k2 = nodes[k1].next, k3 = nodes[k2].next;
    const tm_expr_value_t *lat = &nodes[k1].value, *lon = &nodes[k2].value;
    const tm_expr_value_t *radius = &nodes[k3].value;
    bool valid = lat->type == TM_EXPR_NUMBER && lon->type == TM_EXPR_NUMBER
                 && radius->type == TM_EXPR_NUMBER && s_lat_ok (lat->num) && s_lon_ok (lon->num);
    double rad = S_PI / 180;
    double dlon_max = 360;             //  No longitude cut
    //  The inside cut: sin x <= x bounds h from above by
    //  (dlat/2)^2 + cos (lat0) cmax (dlon/2)^2 (cmax: the larger cosine in
    //  the band, 1 if it holds the equator); a row whose bound stays under
    //  h at the radius by the same margin is inside.
    double inner = -1, inner_c = 0;    //  inner < 0: no inside cut
    double outer = INFINITY, outer_c = 0;   //  The corners' cut (INFINITY: none)
    if (valid && radius->num >= 0 && radius->num < S_PI * TM_EXPR_EARTH_RADIUS_M / 4) {
        double band = radius->num / TM_EXPR_EARTH_RADIUS_M / rad;      //  Degrees
        double hi = lat->num + band, lo = lat->num - band;
        if (hi < 89 && lo > -89) {
            double cmin = fmin (cos (hi * rad), cos (lo * rad));
            double cmax = lo <= 0 && hi >= 0? 1: fmax (cos (hi * rad), cos (lo * rad));
            double c0 = cos (lat->num * rad);
            double sr = sin (radius->num / (2 * TM_EXPR_EARTH_RADIUS_M));
            double q = sr * sr * (1 + 1e-6) / (c0 * cmin);
            if (q < 1)
                dlon_max = 2 * asin (sqrt (q)) / rad * (1 + 1e-6) + 1e-9;
            inner = sr * sr * (1 - 1e-6);
            inner_c = c0 * cmax * (1 + 1e-9);
            outer = sr * sr * (1 + 1e-6);
            outer_c = c0 * cmin * (1 - 1e-9);
        }
    }
    const s_node_t *k0n = &nodes[k0];
    const tm_expr_col_t *col = k0n->kind == S_SLOT? s_col (k0n, cols, ncols): NULL;
    const double *pairs = col && col->kind == TM_EXPR_COL_LOCATIONS? col->latlon + 2 * b->base
                        : NULL;
    const tm_expr_value_t *vals = col && col->kind == TM_EXPR_COL_VALUES? col->values + b->base
                                : NULL;
    for (size_t i = 0; i < n; i++) {
        double la, lo;
        if (pairs) {
            la = pairs[2 * i];
            lo = pairs[2 * i + 1];
        }
        else
        if (vals && vals[i].type == TM_EXPR_LOCATION) {
            la = vals[i].lat;
            lo = vals[i].lon;
        }
        else {
            tm_expr_value_t loc;
            s_kid_value (b, k0, cols, ncols, i, &loc);
            if (loc.type != TM_EXPR_LOCATION) {
                out[i] = S_UNKNOWN;
                continue;
            }
            la = loc.lat;
            lo = loc.lon;
        }
        //  s_load's rule: a location off the globe (NaN included) is null.
        if (!valid || !(s_lat_ok (la) && s_lon_ok (lo))) {
            out[i] = S_UNKNOWN;
            continue;
        }
        if (radius->num >= 0
            && fabs (la - lat->num) * (S_PI / 180) * TM_EXPR_EARTH_RADIUS_M > radius->num) {
            out[i] = S_FALSE;
            continue;
        }
        if (dlon_max < 360) {
            double dlon = fabs (lo - lon->num);
            if (dlon > 180)
                dlon = 360 - dlon;
            if (dlon > dlon_max) {
                out[i] = S_FALSE;
                continue;
            }
            double hx = (la - lat->num) * (rad / 2), hy = dlon * (rad / 2);
            if (hx * hx + inner_c * hy * hy <= inner) {
                out[i] = S_TRUE;
                continue;
            }
            //  The box's corners: sin x >= x - x^3/6 bounds h from below.
            double sx = fabs (hx) - fabs (hx) * hx * hx / 6, sy = hy - hy * hy * hy / 6;
            if (sx * sx + outer_c * sy * sy > outer) {
                out[i] = S_FALSE;
                continue;
            }
        }
        double d = s_haversine (la, lo, lat->num, lon->num);
        out[i] = radius->num >= 0? (d <= radius->num? S_TRUE: S_FALSE): S_UNKNOWN;
    }
}

//  True if every kid after the first is a constant.
static bool
s_rest_constant (const tm_expr_t *e, const s_node_t *node)
{
    for (uint32_t k = e->nodes[node->kid].next; k != S_NONE; k = e->nodes[k].next)
        if (e->nodes[k].kind != S_LIT)
            return false;
    return true;
}

static void
s_batch_node (tm_expr_batch_t *b, uint32_t at, const tm_expr_col_t *cols, size_t ncols,
              size_t n)
{
    const tm_expr_t *e = b->expr;
    const s_node_t *node = &e->nodes[at];
    int op = node->op;
    uint32_t first = node->kid;
    uint8_t *tri = b->tri[at];
    if (tri && s_batch_lut (b, at, cols, ncols, n))
        return;
    if (op >= S_EQ && op <= S_GE && node->nkids == 2
        && e->nodes[e->nodes[first].next].kind == S_LIT) {
        s_batch_cmp_const (b, op, first, &e->nodes[e->nodes[first].next].value, cols, ncols,
                           n, tri);
        return;
    }
    if (op == S_AND || op == S_OR) {
        s_batch_logic (b, node, cols, ncols, n, tri);
        return;
    }
    if (op == S_NOT && b->tri[first]) {
        const uint8_t *v = b->tri[first];
        for (size_t i = 0; i < n; i++)
            tri[i] = (uint8_t) (((~v[i] & 1) << 1) | ((~v[i] >> 1) & 1));
        return;
    }
    if (op == S_WITHIN && node->nkids == 4 && s_rest_constant (e, node)) {
        s_batch_within (b, node, cols, ncols, n, tri);
        return;
    }
    if (op == S_IN && s_rest_constant (e, node)) {
        //  The list, gathered once.
        uint32_t m = 0;
        for (uint32_t k = e->nodes[first].next; k != S_NONE; k = e->nodes[k].next)
            b->args[m++] = e->nodes[k].value;
        for (size_t i = 0; i < n; i++) {
            tm_expr_value_t x, r;
            s_kid_value (b, first, cols, ncols, i, &x);
            r = s_in (&x, b->args, m);
            tri[i] = s_truth (&r);
        }
        return;
    }
    //  Any other operator: its operands row by row, then s_apply.
    for (size_t i = 0; i < n; i++) {
        uint32_t m = 0;
        for (uint32_t k = first; k != S_NONE && m < b->max_args; k = e->nodes[k].next)
            s_kid_value (b, k, cols, ncols, i, &b->args[m++]);
        tm_expr_value_t r;
        s_apply (op, b->args, m, &r);
        if (tri)
            tri[i] = s_truth (&r);
        else
            b->vec[at][i] = r;
    }
}

//  Evaluate one pass of rows [from, from + rows); the root's results stay
//  in its vector (or are the constant or the column).
static void
s_batch_pass (tm_expr_batch_t *b, const tm_expr_col_t *cols, size_t ncols, size_t from,
              size_t rows)
{
    b->base = from;
    for (uint32_t k = 0; k < b->norder; k++)
        s_batch_node (b, b->order[k], cols, ncols, rows);
}

void
tm_expr_eval_batch (tm_expr_batch_t *b, const tm_expr_col_t *cols, size_t ncols, size_t n,
                    tm_expr_value_t *out)
{
    assert (b);
    const tm_expr_t *e = b->expr;
    if (!cols)
        ncols = 0;
    for (size_t from = 0; from < n; from += b->rows) {
        size_t rows = n - from < b->rows? n - from: b->rows;
        s_batch_pass (b, cols, ncols, from, rows);
        for (size_t i = 0; i < rows; i++)
            s_kid_value (b, e->root, cols, ncols, i, &out[from + i]);
    }
}

void
tm_expr_match_batch (tm_expr_batch_t *b, const tm_expr_col_t *cols, size_t ncols, size_t n,
                     uint8_t *match)
{
    assert (b);
    const tm_expr_t *e = b->expr;
    if (!cols)
        ncols = 0;
    for (size_t from = 0; from < n; from += b->rows) {
        size_t rows = n - from < b->rows? n - from: b->rows;
        s_batch_pass (b, cols, ncols, from, rows);
        const uint8_t *tri = b->tri[e->root];
        if (tri && e->nodes[e->root].kind == S_OPNODE)
            for (size_t i = 0; i < rows; i++)
                match[from + i] = tri[i] == S_TRUE;
        else
            for (size_t i = 0; i < rows; i++) {
                tm_expr_value_t v;
                s_kid_value (b, e->root, cols, ncols, i, &v);
                match[from + i] = v.type == TM_EXPR_BOOL && v.b;
            }
    }
}
