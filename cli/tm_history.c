/*  tm_history - twinctl twin history  */
#include "tm_history.h"
#include "tm_cli.h"
#include "tm_codec.h"
#include "tm_util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  Simulated and replayed data carry timestamps in the past, so the
//  default range is everything the worker keeps, not "the last day".
static const tm_setting_t s_settings[] = {
    {"from", TM_CFG_STR, NULL,
     "start, inclusive: ISO-8601 UTC (2026-11-22T10:00:00Z), epoch ms, or before now "
     "(-1h); default: the oldest reading kept"},
    {"to", TM_CFG_STR, NULL, "end, exclusive, in the same forms; default: no end"},
    {"step", TM_CFG_STR, NULL, "one point per step (5m, 1h); default: every reading"},
    {"agg", TM_CFG_STR, "avg", "with --step: avg, min, max, last or count"},
    {"limit", TM_CFG_INT, "100000", "most points returned (at most 100000)"},
};

int
tm_history_parse_time (const char *text, int64_t now_ms, int64_t *out_ms)
{
    if (!text || !*text)
        return -1;
    if (strcmp (text, "now") == 0) {
        *out_ms = now_ms;
        return 0;
    }
    if (text[0] == '-') {
        int64_t ago;
        if (tm_util_parse_duration_ms (text + 1, &ago) != 0 || ago < 0)
            return -1;
        *out_ms = now_ms - ago;
        return 0;
    }
    bool digits = true;
    for (const char *p = text; *p; p++)
        digits = digits && isdigit ((unsigned char) *p);
    if (digits) {
        char *end;
        long long v = strtoll (text, &end, 10);
        if (*end || v < 0)
            return -1;
        *out_ms = v;
        return 0;
    }
    struct tm tm;
    memset (&tm, 0, sizeof tm);
    int ms = 0, used = 0;
    if (sscanf (text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
        return -1;
    const char *p = text + used;
    if (*p == '.') {
        int digits_ms = 0;
        for (p++; isdigit ((unsigned char) *p); p++)
            if (digits_ms < 3) {
                ms = ms * 10 + (*p - '0');
                digits_ms++;
            }
        while (digits_ms++ < 3)
            ms *= 10;
    }
    if (strcmp (p, "Z") != 0 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1
        || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm (&tm);
    *out_ms = (int64_t) t * 1000 + ms;
    return 0;
}

static void
s_print_json (const char *entity, const char *property, const Twinmesh__HistoryReply *rep)
{
    fputs ("{\"entity\": ", stdout);
    tm_cli_json_string (stdout, entity);
    fputs (", \"property\": ", stdout);
    tm_cli_json_string (stdout, property);
    fputs (", \"points\": [", stdout);
    char when[40];
    for (size_t i = 0; i < rep->n_ts_ms && i < rep->n_values; i++) {
        tm_cli_iso8601 (rep->ts_ms[i], when, sizeof when);
        fprintf (stdout, "%s{\"ts_ms\": %lld, \"time\": \"%s\", \"value\": ", i? ", ": "",
                 (long long) rep->ts_ms[i], when);
        tm_cli_json_number (stdout, rep->values[i]);
        fprintf (stdout, ", \"count\": %u}", i < rep->n_counts? rep->counts[i]: 1);
    }
    fprintf (stdout, "], \"truncated\": %s, \"late\": %llu}\n", rep->truncated? "true": "false",
             (unsigned long long) rep->late);
}

static void
s_print_text (const char *entity, const char *property, const Twinmesh__HistoryReply *rep)
{
    printf ("history of %s on %s: %zu points\n\n", property, entity, rep->n_ts_ms);
    if (rep->n_ts_ms)
        printf ("%-26s %18s %8s\n", "TIME (UTC)", "VALUE", "COUNT");
    char when[40];
    for (size_t i = 0; i < rep->n_ts_ms && i < rep->n_values; i++) {
        tm_cli_iso8601 (rep->ts_ms[i], when, sizeof when);
        printf ("%-26s %18.17g %8u\n", when, rep->values[i],
                i < rep->n_counts? rep->counts[i]: 1);
    }
    if (rep->late)
        printf ("\n%llu late readings (older than their series' newest when they came) among "
                "these\n", (unsigned long long) rep->late);
    if (rep->truncated)
        printf ("\ntruncated: more points than --limit, or the worker's scan cap; narrow the "
                "range\n");
}

int
tm_history_main (int argc, char **argv)
{
    const char *program = "twinctl twin history";
    const char *usage = "twinctl twin history ID PROP [--from T] [--to T] [--step 5m] "
                        "[--agg avg|min|max|last|count] [--limit N] [--json]";
    tm_cli_t *cli = tm_cli_new (program, usage, "admin", s_settings,
                                sizeof s_settings / sizeof s_settings[0]);
    if (!cli)
        return 1;
    int exit_code = 2;
    uint8_t *body = NULL;
    Twinmesh__HistoryReply *rep = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    tm_config_t *cfg = tm_cli_config (cli);
    if (tm_config_argc (cfg) != 2) {
        fprintf (stderr, "%s: usage: %s\n", program, usage);
        goto done;
    }
    Twinmesh__HistoryGet req = TWINMESH__HISTORY_GET__INIT;
    req.entity = (char *) tm_config_arg (cfg, 0);
    req.property = (char *) tm_config_arg (cfg, 1);
    int64_t now = tm_util_wall_ms ();
    const char *from = tm_config_str (cfg, "from");
    const char *to = tm_config_str (cfg, "to");
    const char *step = tm_config_str (cfg, "step");
    if (from && tm_history_parse_time (from, now, &req.from_ms) != 0) {
        fprintf (stderr, "%s: --from: give ISO-8601 UTC, epoch ms, or -DURATION\n", program);
        goto done;
    }
    if (to && tm_history_parse_time (to, now, &req.to_ms) != 0) {
        fprintf (stderr, "%s: --to: give ISO-8601 UTC, epoch ms, or -DURATION\n", program);
        goto done;
    }
    if (to && req.to_ms <= req.from_ms) {
        fprintf (stderr, "%s: --to must be after --from\n", program);
        goto done;
    }
    if (step && (tm_util_parse_duration_ms (step, &req.step_ms) != 0 || req.step_ms <= 0)) {
        fprintf (stderr, "%s: --step needs a positive duration (5m, 1h)\n", program);
        goto done;
    }
    const char *agg = tm_config_str (cfg, "agg");
    if (strcmp (agg, "avg") && strcmp (agg, "min") && strcmp (agg, "max")
        && strcmp (agg, "last") && strcmp (agg, "count")) {
        fprintf (stderr, "%s: --agg is avg, min, max, last or count\n", program);
        goto done;
    }
    req.agg = (char *) agg;
    int64_t limit = tm_config_int (cfg, "limit");
    if (limit < 1 || limit > 100000) {
        fprintf (stderr, "%s: --limit is 1 .. 100000\n", program);
        goto done;
    }
    req.limit = (uint32_t) limit;
    exit_code = 1;
    size_t size;
    body = tm_codec_pack_buf (&req.base, &size);
    tm_cli_owner_t owner;
    if (!body || tm_cli_twin_request (cli, req.entity, TWINMESH__MSG_TYPE__HISTORY_GET, body,
                                      size, "HISTORY_GET", &reply, &owner) != 0)
        goto done;
    rep = TM_UNPACK (HistoryReply, history_reply, zframe_data (reply.body),
                     zframe_size (reply.body));
    if (!rep || reply.hdr.type != TWINMESH__MSG_TYPE__HISTORY) {
        fprintf (stderr, "%s: worker %s sent a history that does not decode\n", program,
                 owner.worker);
        goto done;
    }
    if (tm_cli_json (cli))
        s_print_json (req.entity, req.property, rep);
    else
        s_print_text (req.entity, req.property, rep);
    exit_code = 0;
done:
    tm_codec_free (&rep);
    tm_msg_fini (&reply);
    free (body);
    tm_cli_destroy (&cli);
    return exit_code;
}
