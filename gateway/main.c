/*  twinmesh-gateway - the ingest edge daemon

    Thin on purpose: settings, logging, keys, the allow-list and signals.
    The gateway itself is the tm_gateway actor, so tests run the same code
    in-process.

    Signals are blocked in every thread (before any is created) and taken
    here with sigtimedwait, so no handler ever runs inside ZeroMQ or czmq
    and the actor's loop is never interrupted: SIGTERM and SIGINT ask the
    actor to drain, a second one stops it at once, SIGHUP re-reads the
    allow-list.
*/
#include "tm_auth.h"
#include "tm_config.h"
#include "tm_gateway.h"
#include "tm_log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tm_setting_t s_settings[] = {
    {"log_level", TM_CFG_STR, "info", "log level: error, warn, info, debug"},
    {"keys", TM_CFG_STR, "./keys", "directory the key defaults below are taken from"},
    {"cert", TM_CFG_STR, NULL, "this gateway's secret certificate (default <keys>/<id>.key_secret)"},
    {"allow", TM_CFG_STR, NULL, "allow-list directory of public certificates (default <keys>)"},
    {"broker", TM_CFG_STR, "tcp://127.0.0.1:5550", "the broker's request endpoint"},
    {"broker_pub", TM_CFG_STR, "tcp://127.0.0.1:5551", "the broker's shard map publisher"},
    {"broker_key", TM_CFG_STR, NULL, "the broker's public certificate (default <keys>/broker.key)"},
    {"heartbeat", TM_CFG_DURATION, "1s", "HELLO and MAP_GET interval to the broker"},
    {"id", TM_CFG_STR, "gateway-0", "this gateway's node id"},
    {"bind", TM_CFG_STR, "tcp://127.0.0.1:5570", "endpoint producers send INGEST to"},
    {"max_inflight", TM_CFG_INT, "512",
     "producer batches in flight before answering RETRY_LATER"},
    {"max_batch_bytes", TM_CFG_INT, "4194304", "larger batches are answered TOO_LARGE"},
    {"events_bind", TM_CFG_STR, "tcp://127.0.0.1:*",
     "XPUB endpoint where devices subscribe to their twins' deltas (docs/commands.md)"},
    {"events_advertise", TM_CFG_STR, NULL,
     "events endpoint told to devices in EVENTS_INFO (default: the bound one)"},
    {"ack_timeout", TM_CFG_DURATION, "5s",
     "a worker part not acked by then fails its batch with RETRY_LATER; also the drain limit"},
};

static const char *s_usage =
    "twinmesh-gateway [options]\n"
    "\n"
    "The twinmesh ingest edge. Takes INGEST batches from producers (roles ingest,\n"
    "operator, admin), routes every reading to the worker that owns its shard, and\n"
    "acks a batch only when every reading is durable on its worker. Follows the\n"
    "broker's shard map; keeps routing with the last map while the broker is down.\n"
    "\n"
    "Signals: SIGTERM or SIGINT drains (new batches get RETRY_LATER, batches in\n"
    "flight are waited for up to ack_timeout, then exit 0; a second signal stops at\n"
    "once); SIGHUP re-reads the allow-list. Exit status 1: missing keys, bad\n"
    "settings or the bind failed.";

int
main (int argc, char **argv)
{
    //  Before any thread exists (czmq's and libzmq's included), so every
    //  thread inherits the mask and only sigtimedwait below sees them.
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    sigaddset (&signals, SIGHUP);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    zsys_handler_set (NULL);

    int exit_code = 1;
    tm_config_t *config = NULL;
    zcert_t *cert = NULL;
    char *cert_path = NULL, *allow_dir = NULL, *broker_key_path = NULL, *broker_key = NULL;
    tm_auth_t *auth = NULL;
    tm_gateway_t *gateway = NULL;
    zactor_t *actor = NULL;

    config = tm_config_new ("twinmesh-gateway", s_usage, s_settings,
                            sizeof s_settings / sizeof s_settings[0]);
    if (!config)
        goto done;
    int rc = tm_config_load (config, argc, argv);
    if (rc == TM_CONFIG_E_HELP || rc == TM_CONFIG_E_SAMPLE) {
        exit_code = 0;
        goto done;
    }
    if (rc != 0)
        goto done;
    if (tm_config_argc (config) > 0) {
        fprintf (stderr, "twinmesh-gateway: unexpected argument '%s' (see --help)\n",
                 tm_config_arg (config, 0));
        goto done;
    }
    int level = tm_log_level_parse (tm_config_str (config, "log_level"));
    if (level < 0) {
        fprintf (stderr, "twinmesh-gateway: bad log_level '%s' (error, warn, info, debug)\n",
                 tm_config_str (config, "log_level"));
        goto done;
    }
    tm_log_init ("twinmesh-gateway", (tm_log_level_t) level);

    const char *id = tm_config_str (config, "id");
    int64_t max_inflight = tm_config_int (config, "max_inflight");
    int64_t max_batch_bytes = tm_config_int (config, "max_batch_bytes");
    if (!id || !*id || max_inflight < 1 || max_inflight > 1000000 || max_batch_bytes < 1
        || max_batch_bytes > (256 << 20)) {
        fprintf (stderr, "twinmesh-gateway: need a non-empty id, max_inflight 1..1000000 and "
                         "max_batch_bytes 1..268435456\n");
        goto done;
    }
    char secret_name[256];
    snprintf (secret_name, sizeof secret_name, "%s.key_secret", id);
    cert_path = tm_config_path (config, "cert", "keys", secret_name);
    const char *allow = tm_config_str (config, "allow");
    allow_dir = strdup (allow && *allow? allow: tm_config_str (config, "keys"));
    broker_key_path = tm_config_path (config, "broker_key", "keys", "broker.key");
    if (!cert_path || !allow_dir || !broker_key_path)
        goto done;

    cert = tm_auth_load_secret (cert_path);
    if (!cert) {
        fprintf (stderr, "twinmesh-gateway: no secret certificate at %s (make one with "
                         "'twinctl keygen %s --role gateway --dir %s', or set --cert)\n",
                 cert_path, id, tm_config_str (config, "keys"));
        goto done;
    }
    broker_key = tm_auth_load_public_key (broker_key_path);
    if (!broker_key) {
        fprintf (stderr, "twinmesh-gateway: no broker public certificate at %s (set "
                         "--broker-key)\n", broker_key_path);
        goto done;
    }
    //  ZAP must answer before the first server socket binds, or early
    //  handshakes would meet no handler.
    auth = tm_auth_new (allow_dir);
    if (!auth) {
        fprintf (stderr, "twinmesh-gateway: cannot read the allow-list directory %s\n",
                 allow_dir);
        goto done;
    }
    tm_gateway_config_t gc = {
        .id = id,
        .bind = tm_config_str (config, "bind"),
        .broker = tm_config_str (config, "broker"),
        .broker_pub = tm_config_str (config, "broker_pub"),
        .broker_key = broker_key,
        .cert = cert,
        .heartbeat_ms = tm_config_int (config, "heartbeat"),
        .events_bind = tm_config_str (config, "events_bind"),
        .events_advertise = tm_config_str (config, "events_advertise"),
        .ack_timeout_ms = tm_config_int (config, "ack_timeout"),
        .max_inflight = (uint32_t) max_inflight,
        .max_batch_bytes = (size_t) max_batch_bytes,
    };
    gateway = tm_gateway_new (&gc);
    if (!gateway) {
        fprintf (stderr, "twinmesh-gateway: cannot start (bind=%s): see the log above\n",
                 gc.bind? gc.bind: "");
        goto done;
    }
    tm_info ("gateway: ready id=%s endpoint=%s broker=%s max_inflight=%u "
             "max_batch_bytes=%zu ack_timeout_ms=%lld",
             id, tm_gateway_endpoint (gateway), gc.broker, gc.max_inflight,
             gc.max_batch_bytes, (long long) gc.ack_timeout_ms);

    actor = zactor_new (tm_gateway_actor, gateway);
    if (!actor)
        goto done;
    bool draining = false;
    while (true) {
        struct timespec wait = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait (&signals, NULL, &wait);
        if (sig == SIGHUP) {
            if (tm_auth_reload (auth) < 0)
                tm_warn ("gateway: allow-list reload failed, keeping the old one dir=%s",
                         allow_dir);
        }
        else
        if (sig == SIGINT || sig == SIGTERM) {
            if (draining) {
                tm_warn ("gateway: second signal, stopping now signal=%d", sig);
                break;  //  zactor_destroy sends $TERM
            }
            draining = true;
            zstr_send (actor, "DRAIN");
        }
        //  The actor's pipe turns readable only when it has stopped.
        if (zsock_events (actor) & ZMQ_POLLIN)
            break;
    }
    zactor_destroy (&actor);
    exit_code = tm_gateway_exit_code (gateway) == 0? 0: 1;
    tm_info ("gateway: exit code=%d", exit_code);

done:
    zactor_destroy (&actor);
    tm_gateway_destroy (&gateway);
    tm_auth_destroy (&auth);
    zcert_destroy (&cert);
    free (broker_key);
    free (broker_key_path);
    free (allow_dir);
    free (cert_path);
    tm_config_destroy (&config);
    return exit_code;
}
