/*  fuzz_child_update - the CHILD_UPDATE body decoder over arbitrary bytes

    Contributions from other workers come in through tm_hier_decode_update
    (worker/tm_hier.h). It must accept a message whole or refuse it whole:
    a refused message calls back nothing. What it accepts is applied to a
    parent table (whose aggregates must then be finite or the children
    counted), encoded again with tm_hier_msg and decoded to the same
    number of entries; applying it a second time is a replay and changes
    nothing.
*/
#include "fuzz.h"
#include "tm_hier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t calls;
    tm_hier_t *hier;
    tm_hier_msg_t *msg;
    tm_hier_counts_t counts;
    const char *first_parent;      //  Copy of the first entry's parent
    char parent[TM_HIER_MAX_ID + 1];
} s_ctx_t;

static int
s_entry (void *arg, const tm_hier_entry_t *e)
{
    s_ctx_t *ctx = (s_ctx_t *) arg;
    ctx->calls++;
    if (strlen (e->parent) > TM_HIER_MAX_ID || strlen (e->child) > TM_HIER_MAX_ID
        || e->nvalues > TM_HIER_MAX_VALUES || (e->detached && e->nvalues))
        abort ();
    for (size_t i = 0; i < e->nvalues; i++)
        if (!isfinite (e->values[i].value) || !*e->values[i].property)
            abort ();
    if (!ctx->first_parent) {
        strcpy (ctx->parent, e->parent);
        ctx->first_parent = ctx->parent;
    }
    tm_hier_apply (ctx->hier, e, &ctx->counts);
    if (ctx->msg && tm_hier_msg_add (ctx->msg, e) != 0)
        abort ();                  //  a decoded message always fits one message
    return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_ctx_t ctx = {0};
    ctx.hier = tm_hier_new (16);
    ctx.msg = tm_hier_msg_new ();
    if (!ctx.hier || !ctx.msg)
        abort ();
    long n = tm_hier_decode_update (data, size, s_entry, &ctx, NULL, 0);
    if (n < -1 || (n == -1 && ctx.calls) || (n >= 0 && (size_t) n != ctx.calls))
        abort ();
    if (n > 0) {
        tm_hier_agg_t aggs[TM_HIER_MAX_PROPS];
        size_t na = tm_hier_aggregates (ctx.hier, ctx.first_parent, NULL, NULL, aggs,
                                        TM_HIER_MAX_PROPS);
        for (size_t i = 0; i < na; i++)
            if (aggs[i].children == 0 || aggs[i].min > aggs[i].max)
                abort ();
        size_t len = 0;
        uint8_t *buf = tm_hier_msg_encode (ctx.msg, &len);
        if (!buf)
            abort ();
        //  The same entries again: a replay, so nothing is applied.
        s_ctx_t again = {.hier = ctx.hier};
        if (tm_hier_decode_update (buf, len, s_entry, &again, NULL, 0) != n
            || again.counts.applied != 0)
            abort ();
        free (buf);
    }
    tm_hier_msg_destroy (&ctx.msg);
    tm_hier_destroy (&ctx.hier);
    return 0;
}
