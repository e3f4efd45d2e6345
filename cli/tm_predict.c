/*  tm_predict - twinctl twin forecast / twin simulate  */
#include "tm_predict.h"
#include "tm_cli.h"
#include "tm_codec.h"
#include "tm_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const tm_setting_t s_settings[] = {
    {"horizon", TM_CFG_DURATION, "1h", "how far ahead to forecast (at most 366d)"},
    {"step", TM_CFG_DURATION, NULL, "one forecast point every step (default horizon/12)"},
    {"limit", TM_CFG_STR, NULL,
     "time-to-limit against this value instead of the model's limits"},
    {"set", TM_CFG_STR, NULL, "simulate only: PROP=VALUE, the what-if reading"},
};

//  "3h10m", "45s", "2d4h": a duration for people, at its two largest units.
static void
s_human_duration (int64_t ms, char *buf, size_t size)
{
    int64_t s = ms / 1000;
    int64_t d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60, sec = s % 60;
    if (d)
        snprintf (buf, size, "%lldd%lldh", (long long) d, (long long) h);
    else
    if (h)
        snprintf (buf, size, "%lldh%02lldm", (long long) h, (long long) m);
    else
    if (m)
        snprintf (buf, size, "%lldm%02llds", (long long) m, (long long) sec);
    else
        snprintf (buf, size, "%llds", (long long) sec);
}

static const char *
s_limit_status_name (uint32_t status)
{
    static const char *names[] = {"within_horizon", "beyond_horizon", "never", "no_data",
                                  "no_limit"};
    return status < 5? names[status]: "unknown";
}

static void
s_print_json (const Twinmesh__Forecast *fc)
{
    fputs ("{\"entity\": ", stdout);
    tm_cli_json_string (stdout, fc->entity);
    fputs (", \"property\": ", stdout);
    tm_cli_json_string (stdout, fc->property);
    fprintf (stdout, ", \"simulated\": %s, \"from_ms\": %lld, \"points\": [",
             fc->simulated? "true": "false", (long long) fc->from_ms);
    for (size_t i = 0; i < fc->n_at_ms && i < fc->n_value && i < fc->n_stddev; i++) {
        fprintf (stdout, "%s{\"at_ms\": %lld, \"value\": ", i? ", ": "", (long long) fc->at_ms[i]);
        tm_cli_json_number (stdout, fc->value[i]);
        fputs (", \"stddev\": ", stdout);
        tm_cli_json_number (stdout, fc->stddev[i]);
        fputc ('}', stdout);
    }
    fputs ("], \"limit\": {\"status\": ", stdout);
    tm_cli_json_string (stdout, s_limit_status_name (fc->limit_status));
    if (fc->limit_status <= 1) {
        fputs (", \"value\": ", stdout);
        tm_cli_json_number (stdout, fc->limit);
        fprintf (stdout, ", \"in_ms\": %lld", (long long) fc->time_to_limit_ms);
    }
    fputs ("}}\n", stdout);
}

static void
s_print_text (const Twinmesh__Forecast *fc)
{
    char when[40];
    tm_cli_iso8601 (fc->from_ms, when, sizeof when);
    printf ("%s of %s on %s, from its latest reading at %s%s\n\n",
            fc->simulated? "what-if forecast": "forecast", fc->property, fc->entity, when,
            fc->simulated? " (on a copy: the twin is unchanged)": "");
    if (fc->n_value == 0)
        printf ("(no forecast: the property has no in-range readings yet)\n");
    else {
        printf ("%-26s %14s %12s\n", "TIME (UTC)", "FORECAST", "± STDDEV");
        for (size_t i = 0; i < fc->n_at_ms && i < fc->n_value && i < fc->n_stddev; i++) {
            tm_cli_iso8601 (fc->at_ms[i], when, sizeof when);
            printf ("%-26s %14.6g %12.3g\n", when, fc->value[i], fc->stddev[i]);
        }
    }
    char in[32];
    s_human_duration (fc->time_to_limit_ms, in, sizeof in);
    printf ("\n");
    switch (fc->limit_status) {
        case 0:
            printf ("%s reaches %g in about %s\n", fc->property, fc->limit, in);
            break;
        case 1:
            printf ("%s reaches %g in about %s, beyond the horizon\n", fc->property, fc->limit,
                    in);
            break;
        case 2:
            printf ("%s does not reach its limit: its trend is flat or points away\n",
                    fc->property);
            break;
        case 3:
            printf ("time to limit: not enough readings for a trend yet\n");
            break;
        default:
            printf ("time to limit: no limit set (give --limit VALUE)\n");
    }
}

static int
s_run (const char *program, const char *usage, bool simulate, int argc, char **argv)
{
    tm_cli_t *cli = tm_cli_new (program, usage, "admin", s_settings,
                                sizeof s_settings / sizeof s_settings[0]);
    if (!cli)
        return 1;
    int exit_code = 2;
    uint8_t *body = NULL;
    Twinmesh__Forecast *fc = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    tm_config_t *cfg = tm_cli_config (cli);
    size_t want = simulate? 1: 2;
    if (tm_config_argc (cfg) != want) {
        fprintf (stderr, "%s: usage: %s\n", program, usage);
        goto done;
    }
    Twinmesh__ForecastGet req = TWINMESH__FORECAST_GET__INIT;
    req.entity = (char *) tm_config_arg (cfg, 0);
    char prop[80] = "";
    if (simulate) {
        const char *set = tm_config_str (cfg, "set");
        const char *eq = set? strchr (set, '='): NULL;
        char *end = NULL;
        if (eq)
            req.set_value = strtod (eq + 1, &end);
        if (!eq || eq == set || (size_t) (eq - set) >= sizeof prop || !end || end == eq + 1
            || *end || !isfinite (req.set_value)) {
            fprintf (stderr, "%s: give --set PROP=VALUE with a finite number\n", program);
            goto done;
        }
        memcpy (prop, set, (size_t) (eq - set));
        req.what_if = true;
    }
    else
        snprintf (prop, sizeof prop, "%s", tm_config_arg (cfg, 1));
    req.property = prop;
    req.horizon_ms = tm_config_int (cfg, "horizon");
    req.step_ms = tm_config_str (cfg, "step")? tm_config_int (cfg, "step"): 0;
    const char *limit = tm_config_str (cfg, "limit");
    if (limit) {
        char *end;
        req.limit = strtod (limit, &end);
        if (end == limit || *end || !isfinite (req.limit)) {
            fprintf (stderr, "%s: --limit needs a finite number\n", program);
            goto done;
        }
        req.has_limit = true;
    }
    if (req.horizon_ms <= 0) {
        fprintf (stderr, "%s: --horizon must be positive\n", program);
        goto done;
    }
    exit_code = 1;
    size_t size;
    body = tm_codec_pack_buf (&req.base, &size);
    tm_cli_owner_t owner;
    if (!body || tm_cli_twin_request (cli, req.entity, TWINMESH__MSG_TYPE__FORECAST_GET, body,
                                      size, "FORECAST_GET", &reply, &owner) != 0)
        goto done;
    fc = TM_UNPACK (Forecast, forecast, zframe_data (reply.body), zframe_size (reply.body));
    if (!fc || reply.hdr.type != TWINMESH__MSG_TYPE__FORECAST) {
        fprintf (stderr, "%s: worker %s sent a forecast that does not decode\n", program,
                 owner.worker);
        goto done;
    }
    if (tm_cli_json (cli))
        s_print_json (fc);
    else
        s_print_text (fc);
    exit_code = 0;
done:
    tm_codec_free (&fc);
    tm_msg_fini (&reply);
    free (body);
    tm_cli_destroy (&cli);
    return exit_code;
}

int
tm_predict_forecast_main (int argc, char **argv)
{
    return s_run ("twinctl twin forecast",
                  "twinctl twin forecast ID PROP [--horizon 1h] [--step D] [--limit V] [--json]",
                  false, argc, argv);
}

int
tm_predict_simulate_main (int argc, char **argv)
{
    return s_run ("twinctl twin simulate",
                  "twinctl twin simulate ID --set PROP=VALUE [--horizon 1h] [--step D] "
                  "[--limit V] [--json]",
                  true, argc, argv);
}
