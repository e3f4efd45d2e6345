/*  tm_hier_cli - twinctl's view of the hierarchy  */
#include "tm_hier_cli.h"
#include "tm_cli.h"
#include "tm_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const tm_setting_t s_settings[] = {
    {"limit", TM_CFG_INT, "1000", "children listed at most (1 .. 10000)"},
};

//  Control characters out of names that came from the network.
static void
s_safe (char *buf, size_t size, const char *s)
{
    snprintf (buf, size, "%s", s? s: "");
    for (char *p = buf; *p; p++)
        if ((unsigned char) *p < 0x20 || *p == 0x7f)
            *p = '?';
}

void
tm_hier_cli_print_text (FILE *out, const Twinmesh__TwinState *ts)
{
    if (ts->children == 0 && ts->n_child_aggregates == 0)
        return;
    fprintf (out, "\nchildren    %u\n\n", ts->children);
    fprintf (out, "%-24s %8s %12s %12s %12s %9s  %s\n", "CHILDREN'S PROPERTY", "CHILDREN",
             "MEAN", "MIN", "MAX", "ANOMALOUS", "NEWEST (UTC)");
    for (size_t i = 0; i < ts->n_child_aggregates; i++) {
        const Twinmesh__ChildAggregate *a = ts->child_aggregates[i];
        char name[80], when[40];
        s_safe (name, sizeof name, a->property);
        tm_cli_iso8601 (a->newest_ts_ms, when, sizeof when);
        fprintf (out, "%-24s %8u %12.6g %12.6g %12.6g %9u  %s\n", name, a->children, a->mean,
                 a->min, a->max, a->anomalous, when);
    }
}

void
tm_hier_cli_print_json (FILE *out, const Twinmesh__TwinState *ts)
{
    fprintf (out, ", \"children\": %u, \"child_aggregates\": [", ts->children);
    for (size_t i = 0; i < ts->n_child_aggregates; i++) {
        const Twinmesh__ChildAggregate *a = ts->child_aggregates[i];
        fputs (i? ",\n  {\"property\": ": "\n  {\"property\": ", out);
        tm_cli_json_string (out, a->property);
        fprintf (out, ", \"children\": %u, \"mean\": ", a->children);
        tm_cli_json_number (out, a->mean);
        fputs (", \"min\": ", out);
        tm_cli_json_number (out, a->min);
        fputs (", \"max\": ", out);
        tm_cli_json_number (out, a->max);
        fprintf (out, ", \"anomalous\": %u, \"newest_ts_ms\": %lld}", a->anomalous,
                 (long long) a->newest_ts_ms);
    }
    fputs (ts->n_child_aggregates? "\n]": "]", out);
}

void
tm_hier_cli_print_stats_json (FILE *out, const Twinmesh__NodeStats *st)
{
    const Twinmesh__HierStats *h = st? st->hier: NULL;
    if (!h)
        return;
    fprintf (out,
             ", \"hierarchy\": {\"sent\": %llu, \"acked\": %llu, \"resent\": %llu, "
             "\"local_values\": %llu, \"received\": %llu, \"applied\": %llu, \"ignored\": "
             "%llu, \"refused\": %llu, \"malformed\": %llu, \"unauthorized\": %llu, "
             "\"resyncs\": %llu, \"parents\": %llu, \"children\": %llu, \"queued\": %llu}",
             (unsigned long long) h->sent, (unsigned long long) h->acked,
             (unsigned long long) h->resent, (unsigned long long) h->local_values,
             (unsigned long long) h->received, (unsigned long long) h->applied,
             (unsigned long long) h->ignored, (unsigned long long) h->refused,
             (unsigned long long) h->malformed, (unsigned long long) h->unauthorized,
             (unsigned long long) h->resyncs, (unsigned long long) h->parents,
             (unsigned long long) h->children, (unsigned long long) h->queued);
}

static void
s_print_json (FILE *out, const Twinmesh__ChildrenReply *rep)
{
    fputs ("{\"entity\": ", out);
    tm_cli_json_string (out, rep->entity);
    fprintf (out, ", \"total\": %u, \"truncated\": %s, \"children\": [", rep->total,
             rep->truncated? "true": "false");
    for (size_t i = 0; i < rep->n_children; i++) {
        const Twinmesh__ChildInfo *c = rep->children[i];
        fputs (i? ",\n  {\"entity\": ": "\n  {\"entity\": ", out);
        tm_cli_json_string (out, c->entity);
        fputs (", \"model\": ", out);
        tm_cli_json_string (out, c->model);
        fputs (", \"values\": {", out);
        for (size_t k = 0; k < c->n_values; k++) {
            const Twinmesh__ChildValue *v = c->values[k];
            fputs (k? ", ": "", out);
            tm_cli_json_string (out, v->property);
            fputs (": {\"value\": ", out);
            tm_cli_json_number (out, v->value);
            fprintf (out, ", \"ts_ms\": %lld, \"anomalous\": %s}", (long long) v->ts_ms,
                     v->anomalous? "true": "false");
        }
        fputs ("}}", out);
    }
    fputs (rep->n_children? "\n]}\n": "]}\n", out);
}

static void
s_print_text (FILE *out, const Twinmesh__ChildrenReply *rep)
{
    char name[160];
    s_safe (name, sizeof name, rep->entity);
    fprintf (out, "parent      %s\nchildren    %u%s\n\n", name, rep->total,
             rep->truncated? " (list truncated: --limit)": "");
    if (rep->n_children == 0)
        return;
    fprintf (out, "%-40s %-20s %-16s %12s  %-24s %s\n", "CHILD", "MODEL", "PROPERTY", "VALUE",
             "TIMESTAMP (UTC)", "FLAGS");
    for (size_t i = 0; i < rep->n_children; i++) {
        const Twinmesh__ChildInfo *c = rep->children[i];
        char child[160], model[80];
        s_safe (child, sizeof child, c->entity);
        s_safe (model, sizeof model, c->model && *c->model? c->model: "-");
        for (size_t k = 0; k < c->n_values; k++) {
            const Twinmesh__ChildValue *v = c->values[k];
            char prop[80], when[40];
            s_safe (prop, sizeof prop, v->property);
            tm_cli_iso8601 (v->ts_ms, when, sizeof when);
            fprintf (out, "%-40s %-20s %-16s %12.6g  %-24s %s\n", k? "": child, k? "": model,
                     prop, v->value, when, v->anomalous? "anomalous": "ok");
        }
    }
}

int
tm_hier_cli_children_main (int argc, char **argv)
{
    const char *program = "twinctl twin children";
    const char *usage = "twinctl twin children PARENT [--limit N] [--json]";
    tm_cli_t *cli = tm_cli_new (program, usage, "admin", s_settings,
                                sizeof s_settings / sizeof s_settings[0]);
    if (!cli)
        return 1;
    int exit_code = 2;
    uint8_t *body = NULL;
    Twinmesh__ChildrenReply *rep = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    tm_config_t *cfg = tm_cli_config (cli);
    if (tm_config_argc (cfg) != 1) {
        fprintf (stderr, "%s: usage: %s\n", program, usage);
        goto done;
    }
    const char *id = tm_config_arg (cfg, 0);
    size_t id_len = strlen (id);
    if (id_len == 0 || id_len > 128 || !tm_util_utf8_valid (id, id_len)) {
        fprintf (stderr, "%s: a twin id is 1-128 bytes of UTF-8\n", program);
        goto done;
    }
    int64_t limit = tm_config_int (cfg, "limit");
    if (limit < 1 || limit > 10000) {
        fprintf (stderr, "%s: --limit is 1 .. 10000\n", program);
        goto done;
    }
    exit_code = 1;
    Twinmesh__ChildrenGet req = TWINMESH__CHILDREN_GET__INIT;
    req.entity = (char *) id;
    req.limit = (uint32_t) limit;
    size_t size = 0;
    body = tm_codec_pack_buf (&req.base, &size);
    tm_cli_owner_t owner;
    if (!body || tm_cli_twin_request (cli, id, TWINMESH__MSG_TYPE__CHILDREN_GET, body, size,
                                      "CHILDREN_GET", &reply, &owner) != 0)
        goto done;
    rep = TM_UNPACK (ChildrenReply, children_reply, zframe_data (reply.body),
                     zframe_size (reply.body));
    if (!rep || reply.hdr.type != TWINMESH__MSG_TYPE__CHILDREN) {
        fprintf (stderr, "%s: worker %s sent a reply that does not decode\n", program,
                 owner.worker);
        goto done;
    }
    if (!rep->entity || !*rep->entity)
        rep->entity = NULL;
    Twinmesh__ChildrenReply shown = *rep;
    shown.entity = rep->entity? rep->entity: (char *) id;
    if (tm_cli_json (cli))
        s_print_json (stdout, &shown);
    else
        s_print_text (stdout, &shown);
    exit_code = 0;
done:
    tm_codec_free (&rep);
    tm_msg_fini (&reply);
    free (body);
    tm_cli_destroy (&cli);
    return exit_code;
}
