/*  tm_commands_cli - twinctl twin set | unset | deltas | watch: commands  */
#include "tm_commands_cli.h"
#include "tm_auth.h"
#include "tm_codec.h"
#include "tm_mapclient.h"
#include "tm_net.h"
#include "tm_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_MAX_CHANGES 64               //  Same as the worker's TM_COMMANDS_MAX_CHANGES
#define S_MAX_WATCH 256                //  Twins one watch follows
#define S_REQUEST_MS 5000              //  Longest wait for one reply within a watch

static const tm_setting_t s_set_settings[] = {
    {"tolerance", TM_CFG_STR, "0",
     "a reading within +-tolerance reports the value, for changes without their own ~TOL"},
};

static const tm_setting_t s_watch_settings[] = {
    {"gateway", TM_CFG_STR, "tcp://127.0.0.1:5570", "the gateway's endpoint (its ROUTER)"},
    {"gateway_key", TM_CFG_STR, NULL,
     "the gateway's public certificate (default: <keys>/gateway-0.key)"},
    {"count", TM_CFG_INT, "0", "exit after this many events (0: at the timeout)"},
    {"timeout", TM_CFG_DURATION, "60s", "exit after this long"},
};

static bool
s_entity_ok (const char *program, const char *id)
{
    size_t len = strlen (id);
    if (len == 0 || len > 128 || !tm_util_utf8_valid (id, len)) {
        fprintf (stderr, "%s: a twin id is 1-128 bytes of UTF-8\n", program);
        return false;
    }
    return true;
}

//  A number, or true/false/on/off for booleans.
static bool
s_parse_value (const char *s, double *out)
{
    if (!strcasecmp (s, "true") || !strcasecmp (s, "on")) {
        *out = 1;
        return true;
    }
    if (!strcasecmp (s, "false") || !strcasecmp (s, "off")) {
        *out = 0;
        return true;
    }
    char *end = NULL;
    *out = strtod (s, &end);
    return end != s && end && *end == 0 && isfinite (*out);
}

static void
s_print_desired_json (FILE *out, const Twinmesh__Desired *d)
{
    fputs ("{\"property\": ", out);
    tm_cli_json_string (out, d->property);
    fputs (", \"desired\": ", out);
    tm_cli_json_number (out, d->value);
    fputs (", \"tolerance\": ", out);
    tm_cli_json_number (out, d->tolerance);
    char when[40];
    tm_cli_iso8601 (d->set_ms, when, sizeof when);
    fprintf (out, ", \"set_ms\": %lld, \"set_time\": \"%s\", \"version\": %llu, \"set_by\": ",
             (long long) d->set_ms, d->set_ms? when: "", (unsigned long long) d->version);
    tm_cli_json_string (out, d->set_by);
    fputs (", \"reported\": ", out);
    if (d->reported)
        tm_cli_json_number (out, d->reported_value);
    else
        fputs ("null", out);
    fprintf (out, ", \"reported_ts_ms\": %lld, \"delta\": ", (long long) d->reported_ts_ms);
    if (d->reported)
        tm_cli_json_number (out, d->delta);
    else
        fputs ("\"pending\"", out);
    fprintf (out, ", \"in_sync\": %s", d->in_sync? "true": "false");
    if (d->outcome && *d->outcome) {
        fputs (", \"outcome\": ", out);
        tm_cli_json_string (out, d->outcome);
    }
    fputc ('}', out);
}

//  "valve=1 (reported 0 at T, delta 1)" or "(never reported: pending)".
static void
s_print_desired_text (FILE *out, const Twinmesh__Desired *d)
{
    fprintf (out, "%s=%.10g", d->property, d->value);
    if (d->tolerance > 0)
        fprintf (out, "~%.10g", d->tolerance);
    if (d->reported)
        fprintf (out, " (reported %.10g, delta %.10g%s)", d->reported_value, d->delta,
                 d->in_sync? ", in sync": "");
    else
        fputs (" (never reported: pending)", out);
}

void
tm_commands_cli_print (FILE *out, const Twinmesh__DeltaList *list, bool json)
{
    size_t n = 0;
    for (size_t t = 0; list && t < list->n_twins; t++)
        n += list->twins[t]->n_desired;
    if (json) {
        fputs (", \"desired\": [", out);
        size_t k = 0;
        for (size_t t = 0; list && t < list->n_twins; t++)
            for (size_t i = 0; i < list->twins[t]->n_desired; i++) {
                fputs (k++? ",\n  ": "\n  ", out);
                s_print_desired_json (out, list->twins[t]->desired[i]);
            }
        fputs (k? "\n]": "]", out);
        return;
    }
    if (n == 0)
        return;
    fprintf (out, "\ndesired (not yet reported):\n");
    fprintf (out, "  %-20s %12s %10s %-24s %-14s %12s %12s\n", "PROPERTY", "DESIRED", "TOLERANCE",
             "SET", "BY", "REPORTED", "DELTA");
    for (size_t t = 0; t < list->n_twins; t++)
        for (size_t i = 0; i < list->twins[t]->n_desired; i++) {
            const Twinmesh__Desired *d = list->twins[t]->desired[i];
            char when[40], rep[32], delta[32];
            tm_cli_iso8601 (d->set_ms, when, sizeof when);
            snprintf (rep, sizeof rep, d->reported? "%.10g": "-", d->reported_value);
            snprintf (delta, sizeof delta, d->reported? "%.10g": "pending", d->delta);
            fprintf (out, "  %-20s %12.10g %10.10g %-24s %-14s %12s %12s\n", d->property,
                     d->value, d->tolerance, when, d->set_by, rep, delta);
        }
}

//  DELTAS_GET for one twin from its owner; the reply's list, or NULL (said
//  why on stderr).
static Twinmesh__DeltaList *
s_fetch (tm_cli_t *cli, const char *id)
{
    Twinmesh__DeltasGet get = TWINMESH__DELTAS_GET__INIT;
    char *ids[1] = {(char *) id};
    get.n_entities = 1;
    get.entities = ids;
    size_t size;
    uint8_t *body = tm_codec_pack_buf (&get.base, &size);
    tm_msg_t reply;
    tm_cli_owner_t owner;
    Twinmesh__DeltaList *list = NULL;
    if (body && tm_cli_twin_request (cli, id, TWINMESH__MSG_TYPE__DELTAS_GET, body, size,
                                     "DELTAS_GET", &reply, &owner) == 0) {
        list = TM_UNPACK (DeltaList, delta_list, zframe_data (reply.body),
                          zframe_size (reply.body));
        if (!list || reply.hdr.type != TWINMESH__MSG_TYPE__DELTAS)
            fprintf (stderr, "twinctl: worker %s sent deltas that do not decode\n", owner.worker);
        tm_msg_fini (&reply);
    }
    free (body);
    return list;
}

Twinmesh__DeltaList *
tm_commands_cli_fetch (tm_cli_t *cli, const char *id)
{
    return s_fetch (cli, id);
}

//  set and unset: one TWIN_SET.
static int
s_run_set (bool unset, int argc, char **argv)
{
    const char *program = unset? "twinctl twin unset": "twinctl twin set";
    const char *usage = unset? "twinctl twin unset ID PROP [PROP ...] [--json]":
                               "twinctl twin set ID PROP=VALUE[~TOL] [PROP=VALUE ...] "
                               "[--tolerance T] [--json]";
    tm_cli_t *cli = tm_cli_new (program, usage, "admin", unset? NULL: s_set_settings,
                                unset? 0: sizeof s_set_settings / sizeof s_set_settings[0]);
    if (!cli)
        return 1;
    int exit_code = 2;
    uint8_t *body = NULL;
    Twinmesh__TwinSetAck *ack = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    char names[S_MAX_CHANGES][80];
    Twinmesh__DesiredChange changes[S_MAX_CHANGES];
    Twinmesh__DesiredChange *ptrs[S_MAX_CHANGES];
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    tm_config_t *cfg = tm_cli_config (cli);
    size_t nargs = tm_config_argc (cfg);
    if (nargs < 2 || nargs - 1 > S_MAX_CHANGES) {
        fprintf (stderr, "%s: usage: %s (1-%d properties)\n", program, usage, S_MAX_CHANGES);
        goto done;
    }
    const char *id = tm_config_arg (cfg, 0);
    if (!s_entity_ok (program, id))
        goto done;
    double tolerance = 0;
    if (!unset && (!s_parse_value (tm_config_str (cfg, "tolerance"), &tolerance) || tolerance < 0)) {
        fprintf (stderr, "%s: --tolerance needs a finite number >= 0\n", program);
        goto done;
    }
    for (size_t i = 0; i + 1 < nargs; i++) {
        const char *arg = tm_config_arg (cfg, i + 1);
        twinmesh__desired_change__init (&changes[i]);
        ptrs[i] = &changes[i];
        changes[i].unset = unset;
        changes[i].tolerance = tolerance;
        const char *eq = unset? arg + strlen (arg): strchr (arg, '=');
        if (!eq || eq == arg || (size_t) (eq - arg) >= sizeof names[i]) {
            fprintf (stderr, "%s: '%s': give PROP=VALUE (a property name of 1-64 bytes)\n",
                     program, arg);
            goto done;
        }
        memcpy (names[i], arg, (size_t) (eq - arg));
        names[i][eq - arg] = 0;
        changes[i].property = names[i];
        if (unset)
            continue;
        char value[80];
        snprintf (value, sizeof value, "%s", eq + 1);
        char *tilde = strchr (value, '~');
        if (tilde) {
            *tilde = 0;
            if (!s_parse_value (tilde + 1, &changes[i].tolerance) || changes[i].tolerance < 0) {
                fprintf (stderr, "%s: '%s': the tolerance after ~ must be a number >= 0\n",
                         program, arg);
                goto done;
            }
        }
        if (!s_parse_value (value, &changes[i].value)) {
            fprintf (stderr, "%s: '%s': the value must be a finite number (or true/false)\n",
                     program, arg);
            goto done;
        }
    }
    exit_code = 1;
    Twinmesh__TwinSet req = TWINMESH__TWIN_SET__INIT;
    req.entity = (char *) id;
    req.n_changes = nargs - 1;
    req.changes = ptrs;
    size_t size;
    body = tm_codec_pack_buf (&req.base, &size);
    tm_cli_owner_t owner;
    if (!body || tm_cli_twin_request (cli, id, TWINMESH__MSG_TYPE__TWIN_SET, body, size,
                                      "TWIN_SET", &reply, &owner) != 0)
        goto done;
    ack = TM_UNPACK (TwinSetAck, twin_set_ack, zframe_data (reply.body), zframe_size (reply.body));
    if (!ack || reply.hdr.type != TWINMESH__MSG_TYPE__TWIN_SET_ACK) {
        fprintf (stderr, "%s: worker %s sent an answer that does not decode\n", program,
                 owner.worker);
        goto done;
    }
    if (tm_cli_json (cli)) {
        fputs ("{\"entity\": ", stdout);
        tm_cli_json_string (stdout, id);
        fprintf (stdout, ", \"shard\": %u, \"worker\": ", owner.shard);
        tm_cli_json_string (stdout, owner.worker);
        fputs (", \"results\": [", stdout);
        for (size_t i = 0; i < ack->n_results; i++) {
            fputs (i? ", ": "", stdout);
            s_print_desired_json (stdout, ack->results[i]);
        }
        fputs ("]}\n", stdout);
    }
    else
        for (size_t i = 0; i < ack->n_results; i++) {
            const Twinmesh__Desired *d = ack->results[i];
            printf ("%s ", id);
            if (unset)
                printf ("%s", d->property);
            else
                s_print_desired_text (stdout, d);
            printf (": %s", d->outcome);
            if (d->version)
                printf (" (version %llu)", (unsigned long long) d->version);
            printf ("\n");
        }
    exit_code = 0;
done:
    tm_codec_free (&ack);
    tm_msg_fini (&reply);
    free (body);
    tm_cli_destroy (&cli);
    return exit_code;
}

int
tm_commands_cli_set_main (int argc, char **argv)
{
    return s_run_set (false, argc, argv);
}

int
tm_commands_cli_unset_main (int argc, char **argv)
{
    return s_run_set (true, argc, argv);
}

//  One line of a watch: a snapshot entry or an event.
static void
s_print_event (bool json, const char *kind, const char *entity, const Twinmesh__Desired *d)
{
    char now[40];
    tm_cli_iso8601 (tm_util_wall_ms (), now, sizeof now);
    if (json) {
        fputs ("{\"event\": ", stdout);
        tm_cli_json_string (stdout, kind);
        fputs (", \"entity\": ", stdout);
        tm_cli_json_string (stdout, entity);
        fprintf (stdout, ", \"time\": \"%s\"", now);
        if (d) {
            fputs (", \"desired\": ", stdout);
            s_print_desired_json (stdout, d);
        }
        fputs ("}\n", stdout);
    }
    else {
        printf ("%s %-8s %s", now, kind, entity);
        if (d) {
            printf (" ");
            s_print_desired_text (stdout, d);
            if (d->set_by && *d->set_by)
                printf (" by %s", d->set_by);
            printf (" v%llu", (unsigned long long) d->version);
        }
        printf ("\n");
    }
    fflush (stdout);
}

static int
s_print_snapshot (bool json, const char *id, const Twinmesh__DeltaList *list)
{
    int lines = 0;
    for (size_t t = 0; list && t < list->n_twins; t++)
        for (size_t i = 0; i < list->twins[t]->n_desired; i++, lines++)
            s_print_event (json, "snapshot", list->twins[t]->entity, list->twins[t]->desired[i]);
    (void) id;
    return lines;
}

int
tm_commands_cli_deltas_main (int argc, char **argv)
{
    const char *program = "twinctl twin deltas";
    tm_cli_t *cli = tm_cli_new (program, "twinctl twin deltas ID [ID ...] [--json]", "admin",
                                NULL, 0);
    if (!cli)
        return 1;
    int exit_code = 2;
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    tm_config_t *cfg = tm_cli_config (cli);
    if (tm_config_argc (cfg) < 1) {
        fprintf (stderr, "%s: give one or more twin ids\n", program);
        goto done;
    }
    exit_code = 0;
    for (size_t i = 0; i < tm_config_argc (cfg); i++) {
        const char *id = tm_config_arg (cfg, i);
        if (!s_entity_ok (program, id)) {
            exit_code = 2;
            continue;
        }
        Twinmesh__DeltaList *list = s_fetch (cli, id);
        if (!list)
            exit_code = 1;
        else
            s_print_snapshot (tm_cli_json (cli), id, list);
        tm_codec_free (&list);
    }
done:
    tm_cli_destroy (&cli);
    return exit_code;
}

//  Receive one event from the SUB within timeout_ms: 1 with *ev (caller
//  frees), 0 on timeout, -1 if interrupted. Frames that do not decode are
//  skipped.
static int
s_recv_event (zsock_t *sub, int64_t deadline, Twinmesh__DeltaEvent **ev)
{
    zpoller_t *poller = zpoller_new (sub, NULL);
    int result = 0;
    while (poller) {
        int64_t left = deadline - tm_util_mono_ms ();
        if (left <= 0)
            break;
        if (!zpoller_wait (poller, (int) (left > 1000? 1000: left))) {
            if (zpoller_terminated (poller)) {
                result = -1;
                break;
            }
            continue;
        }
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg) {
            result = -1;
            break;
        }
        zframe_t *topic = zmsg_pop (msg);
        zframe_t *header = zmsg_pop (msg);
        zframe_t *body = zmsg_pop (msg);
        tm_header_t hdr;
        if (body && tm_header_decode (zframe_data (header), zframe_size (header), &hdr) == 0
            && hdr.type == TWINMESH__MSG_TYPE__DELTA_EVENT)
            *ev = TM_UNPACK (DeltaEvent, delta_event, zframe_data (body), zframe_size (body));
        zframe_destroy (&topic);
        zframe_destroy (&header);
        zframe_destroy (&body);
        zmsg_destroy (&msg);
        if (*ev && (*ev)->entity && (*ev)->kind) {
            result = 1;
            break;
        }
        tm_codec_free (ev);
    }
    zpoller_destroy (&poller);
    return result;
}

int
tm_commands_cli_watch_main (int argc, char **argv)
{
    const char *program = "twinctl twin watch";
    tm_cli_t *cli = tm_cli_new (program, "twinctl twin watch ID [ID ...] [--count N] "
                                "[--timeout T] [--gateway EP] [--json]", "producer",
                                s_watch_settings,
                                sizeof s_watch_settings / sizeof s_watch_settings[0]);
    if (!cli)
        return 1;
    int exit_code = 2;
    zsock_t *dealer = NULL, *sub = NULL;
    char *gw_key = NULL, *gw_key_path = NULL;
    Twinmesh__EventsInfo *info = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    uint64_t as_of[S_MAX_WATCH] = {0};
    bool confirmed[S_MAX_WATCH] = {false};
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    tm_config_t *cfg = tm_cli_config (cli);
    size_t nids = tm_config_argc (cfg);
    int64_t count = tm_config_int (cfg, "count");
    int64_t timeout = tm_config_int (cfg, "timeout");
    if (nids < 1 || nids > S_MAX_WATCH || count < 0 || timeout <= 0) {
        fprintf (stderr, "%s: give 1-%d twin ids, --count >= 0 and --timeout > 0\n", program,
                 S_MAX_WATCH);
        goto done;
    }
    for (size_t i = 0; i < nids; i++)
        if (!s_entity_ok (program, tm_config_arg (cfg, i)))
            goto done;
    exit_code = 1;
    int64_t deadline = tm_util_mono_ms () + timeout;
    bool json = tm_cli_json (cli);
    zcert_t *cert = tm_cli_cert (cli);
    if (!cert)
        goto done;
    gw_key_path = tm_config_path (cfg, "gateway_key", "keys", "gateway-0.key");
    gw_key = gw_key_path? tm_auth_load_public_key (gw_key_path): NULL;
    if (!gw_key) {
        fprintf (stderr, "%s: cannot read the gateway's public key '%s' (--gateway-key)\n",
                 program, gw_key_path? gw_key_path: "?");
        goto done;
    }
    const char *gateway = tm_config_str (cfg, "gateway");
    //  1. Where the gateway publishes.
    dealer = tm_net_client (ZMQ_DEALER, gateway, cert, gw_key);
    if (!dealer)
        goto done;
    zsock_set_linger (dealer, 0);
    rc = tm_cli_request (dealer, TWINMESH__MSG_TYPE__EVENTS_INFO, 0, NULL, 0, S_REQUEST_MS,
                         &reply);
    if (rc == 0 && reply.hdr.status == TWINMESH__STATUS__OK)
        info = TM_UNPACK (EventsInfo, events_info, zframe_data (reply.body),
                          zframe_size (reply.body));
    if (!info || !info->endpoint || !*info->endpoint) {
        fprintf (stderr, "%s: the gateway at %s did not say where it publishes deltas (is it "
                         "up? is this key on its allow-list?)\n", program, gateway);
        goto done;
    }
    //  2. Subscribe to each twin exactly (its id and a NUL).
    sub = tm_net_client (ZMQ_SUB, info->endpoint, cert, gw_key);
    if (!sub)
        goto done;
    zsock_set_linger (sub, 0);
    for (size_t i = 0; i < nids; i++) {
        const char *id = tm_config_arg (cfg, i);
        //  zsock_set_subscribe takes a C string: with the NUL, raw.
        zmq_setsockopt (zsock_resolve (sub), ZMQ_SUBSCRIBE, id, strlen (id) + 1);
    }
    //  3. Wait until the gateway confirms every subscription: from then on
    //  it relays every event it gets for them.
    size_t nconfirmed = 0;
    int64_t confirm_deadline = tm_util_mono_ms () + S_REQUEST_MS < deadline?
                               tm_util_mono_ms () + S_REQUEST_MS: deadline;
    while (nconfirmed < nids) {
        Twinmesh__DeltaEvent *ev = NULL;
        rc = s_recv_event (sub, confirm_deadline, &ev);
        if (rc <= 0) {
            tm_codec_free (&ev);
            fprintf (stderr, "%s: the gateway at %s did not confirm the subscription (is this "
                             "key's role ingest, operator or admin?)\n", program,
                     info->endpoint);
            goto done;
        }
        for (size_t i = 0; i < nids; i++)
            if (!confirmed[i] && !strcmp (ev->kind, "subscribed")
                && !strcmp (ev->entity, tm_config_arg (cfg, i))) {
                confirmed[i] = true;
                nconfirmed++;
            }
        tm_codec_free (&ev);
    }
    //  4. The snapshot, through the gateway (it asks each twin's owner):
    //  a device needs nothing but the gateway.
    Twinmesh__DeltasGet get = TWINMESH__DELTAS_GET__INIT;
    char *ids[S_MAX_WATCH];
    for (size_t i = 0; i < nids; i++)
        ids[i] = (char *) tm_config_arg (cfg, i);
    get.n_entities = nids;
    get.entities = ids;
    size_t gsize;
    uint8_t *gbody = tm_codec_pack_buf (&get.base, &gsize);
    tm_msg_fini (&reply);
    rc = gbody? tm_cli_request (dealer, TWINMESH__MSG_TYPE__DELTAS_GET, 0, gbody, gsize,
                                S_REQUEST_MS, &reply): -1;
    free (gbody);
    Twinmesh__DeltaList *list = rc == 0 && reply.hdr.status == TWINMESH__STATUS__OK?
        TM_UNPACK (DeltaList, delta_list, zframe_data (reply.body), zframe_size (reply.body)):
        NULL;
    if (!list) {
        fprintf (stderr, "%s: no snapshot from the gateway at %s: %s\n", program, gateway,
                 rc == 0? (*reply.hdr.detail? reply.hdr.detail: tm_status_name (reply.hdr.status)):
                          "no answer");
        goto done;
    }
    for (size_t t = 0; t < list->n_twins; t++)
        for (size_t i = 0; i < nids; i++)
            if (!strcmp (list->twins[t]->entity, tm_config_arg (cfg, i)))
                as_of[i] = list->twins[t]->as_of;
    s_print_snapshot (json, NULL, list);
    tm_codec_free (&list);
    //  5. Events newer than the snapshot.
    fprintf (stderr, "%s: watching %zu twin%s through %s\n", program, nids, nids == 1? "": "s",
             info->endpoint);
    int64_t seen = 0;
    exit_code = count? 1: 0;
    while (!count || seen < count) {
        Twinmesh__DeltaEvent *ev = NULL;
        rc = s_recv_event (sub, deadline, &ev);
        if (rc <= 0) {
            tm_codec_free (&ev);
            if (count)
                fprintf (stderr, "%s: %lld of %lld events before the timeout\n", program,
                         (long long) seen, (long long) count);
            break;
        }
        size_t which = nids;
        for (size_t i = 0; i < nids && which == nids; i++)
            if (!strcmp (ev->entity, tm_config_arg (cfg, i)))
                which = i;
        if (which < nids && strcmp (ev->kind, "subscribed") != 0 && ev->desired
            && ev->desired->version > as_of[which]) {
            s_print_event (json, ev->kind, ev->entity, ev->desired);
            seen++;
        }
        tm_codec_free (&ev);
    }
    if (count && seen >= count)
        exit_code = 0;
done:
    tm_codec_free (&info);
    tm_msg_fini (&reply);
    zsock_destroy (&sub);
    zsock_destroy (&dealer);
    free (gw_key);
    free (gw_key_path);
    tm_cli_destroy (&cli);
    return exit_code;
}
