/*  twinmesh-worker - hosts twin actors for the shards the broker gives it

    Thin: settings, logging, signals, keys; the actor is in tm_worker.c.
*/
#include "tm_auth.h"
#include "tm_config.h"
#include "tm_log.h"
#include "tm_worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tm_setting_t s_settings[] = {
    {"log_level", TM_CFG_STR, "info", "error, warn, info or debug"},
    {"keys", TM_CFG_STR, "./keys", "directory the key defaults are taken from"},
    {"cert", TM_CFG_STR, NULL, "this worker's secret certificate (default <keys>/<id>.key_secret)"},
    {"allow", TM_CFG_STR, NULL, "allow-list directory of public certificates (default <keys>)"},
    {"broker", TM_CFG_STR, "tcp://127.0.0.1:5550", "broker request endpoint"},
    {"broker_pub", TM_CFG_STR, "tcp://127.0.0.1:5551", "broker shard map publisher"},
    {"broker_key", TM_CFG_STR, NULL, "broker's public certificate (default <keys>/broker.key)"},
    {"heartbeat", TM_CFG_DURATION, "1s", "HELLO and MAP_GET interval"},
    {"id", TM_CFG_STR, "worker-0", "stable worker name; keep it across restarts"},
    {"bind", TM_CFG_STR, "tcp://127.0.0.1:5560", "endpoint for appends and reads"},
    {"advertise", TM_CFG_STR, NULL, "endpoint gateways connect to (default: the bound one)"},
    {"data_dir", TM_CFG_STR, NULL, "RocksDB directory (default ./data/<id>)"},
    {"events_bind", TM_CFG_STR, "tcp://127.0.0.1:*",
     "PUB endpoint of delta events for gateways (docs/commands.md)"},
    {"events_advertise", TM_CFG_STR, NULL,
     "events endpoint gateways connect to (default: the bound one)"},
    {"fsync", TM_CFG_BOOL, "true", "fsync every group commit before acking"},
    {"checkpoint_interval", TM_CFG_DURATION, "5s",
     "how often a round writes changed shards' twins and trims the log (longer: less write "
     "load, more log to replay after a crash)"},
    {"max_batch_bytes", TM_CFG_INT, "16777216", "largest append part accepted"},
    {"history_retention", TM_CFG_DURATION, "30d",
     "how long each series' history is kept after its readings' time (0: forever), for "
     "series whose model (or property) sets no retention_ms"},
    {"memory_budget", TM_CFG_INT, "0",
     "heap bytes over which checkpoints passivate idle twins to the store (0: never; "
     "docs/operations.md)"},
    {"passivate_idle", TM_CFG_DURATION, "10m",
     "how long a twin goes without a reading before it may passivate"},
    {"compact_at_start", TM_CFG_BOOL, "false",
     "compact the whole store once at start, after recovery: expired history is dropped "
     "at once instead of as compactions pass by (slow on a big store)"},
};

static const char s_usage[] =
    "twinmesh-worker [options]\n"
    "\n"
    "Hosts the twins of the shards the broker assigns to it. Takes APPEND parts\n"
    "from gateways (role gateway) only for shards it owns at its newest map epoch,\n"
    "writes every waiting part to its log in one RocksDB batch (fsync'd unless\n"
    "--fsync false), acks, then applies them; answers TWIN_GET (analyst, operator,\n"
    "admin, components) and HISTORY_GET. State is checkpointed every checkpoint_interval; after a\n"
    "crash the worker reloads it and replays its log. Keep id and data_dir\n"
    "across restarts: the shards belong to the id, their data to the directory.\n"
    "\n"
    "Signals: SIGTERM or SIGINT checkpoint and stop (exit 0); SIGHUP re-reads the\n"
    "allow-list. Exit status 1: missing keys, unreadable data_dir, bind failed;\n"
    "2: bad settings.";

static volatile sig_atomic_t s_stop;
static volatile sig_atomic_t s_reload;

static void
s_on_stop (int sig)
{
    (void) sig;
    s_stop = 1;
}

static void
s_on_hup (int sig)
{
    (void) sig;
    s_reload = 1;
}

int
main (int argc, char **argv)
{
    tm_config_t *cfg = tm_config_new ("twinmesh-worker", s_usage, s_settings,
                                      sizeof s_settings / sizeof s_settings[0]);
    if (!cfg)
        return 1;
    int rc = tm_config_load (cfg, argc, argv);
    if (rc != 0 || tm_config_argc (cfg) > 0) {
        if (rc == 0)
            fprintf (stderr, "twinmesh-worker: unexpected argument '%s' (see --help)\n",
                     tm_config_arg (cfg, 0));
        tm_config_destroy (&cfg);
        return rc > 0? 0: 2;
    }
    int level = tm_log_level_parse (tm_config_str (cfg, "log_level"));
    if (level < 0) {
        fprintf (stderr, "twinmesh-worker: bad log_level\n");
        tm_config_destroy (&cfg);
        return 2;
    }
    const char *id = tm_config_str (cfg, "id");
    tm_log_init (id, (tm_log_level_t) level);
    //  czmq would install its own SIGINT handler; we drain on our own.
    zsys_handler_set (NULL);
    struct sigaction sa = {.sa_handler = s_on_stop};
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    struct sigaction hup = {.sa_handler = s_on_hup};
    sigaction (SIGHUP, &hup, NULL);

    char cert_file[512], data_dir[512];
    snprintf (cert_file, sizeof cert_file, "%s.key_secret", id);
    snprintf (data_dir, sizeof data_dir, "./data/%s", id);
    char *cert_path = tm_config_path (cfg, "cert", "keys", cert_file);
    char *allow = tm_config_path (cfg, "allow", "keys", "");
    char *broker_key_path = tm_config_path (cfg, "broker_key", "keys", "broker.key");
    const char *dd = tm_config_str (cfg, "data_dir");
    zcert_t *cert = tm_auth_load_secret (cert_path);
    char *broker_key = tm_auth_load_public_key (broker_key_path);
    tm_auth_t *auth = NULL;
    tm_worker_t *worker = NULL;
    int exit_code = 1;
    if (!cert || !broker_key)
        goto done;
    auth = tm_auth_new (allow);
    if (!auth)
        goto done;
    tm_worker_config_t wc = {
        .id = id,
        .bind = tm_config_str (cfg, "bind"),
        .advertise = tm_config_str (cfg, "advertise"),
        .data_dir = dd && *dd? dd: data_dir,
        .broker = tm_config_str (cfg, "broker"),
        .broker_pub = tm_config_str (cfg, "broker_pub"),
        .broker_key = broker_key,
        .cert = cert,
        .fsync = tm_config_bool (cfg, "fsync"),
        .heartbeat_ms = tm_config_int (cfg, "heartbeat"),
        .checkpoint_ms = tm_config_int (cfg, "checkpoint_interval"),
        .max_batch_bytes = tm_config_int (cfg, "max_batch_bytes"),
        .history_retention_ms = tm_config_int (cfg, "history_retention"),
        .events_bind = tm_config_str (cfg, "events_bind"),
        .events_advertise = tm_config_str (cfg, "events_advertise"),
        .compact_at_start = tm_config_bool (cfg, "compact_at_start"),
        .memory_budget = tm_config_int (cfg, "memory_budget"),
        .passivate_idle_ms = tm_config_int (cfg, "passivate_idle"),
        .stop = &s_stop,
        .reload = &s_reload,
    };
    worker = tm_worker_new (&wc);
    if (!worker)
        goto done;
    while (!s_stop) {
        tm_worker_run (worker);
        if (s_reload) {
            s_reload = 0;
            tm_auth_reload (auth);
        }
    }
    exit_code = 0;
done:
    tm_worker_destroy (&worker);
    tm_auth_destroy (&auth);
    zcert_destroy (&cert);
    free (broker_key);
    free (cert_path);
    free (allow);
    free (broker_key_path);
    tm_config_destroy (&cfg);
    return exit_code;
}
