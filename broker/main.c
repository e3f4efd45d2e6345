/*  twinmesh-broker - the control plane daemon

    Thin on purpose: settings, logging, signals, then tm_broker does the
    work. SIGINT and SIGTERM stop it cleanly (czmq's handler sets
    zsys_interrupted); SIGHUP re-reads the allow-list.
*/
#include "tm_auth.h"
#include "tm_broker.h"
#include "tm_config.h"
#include "tm_log.h"
#include "tm_query.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const tm_setting_t s_settings[] = {
    {"log_level", TM_CFG_STR, "info", "log level: error, warn, info or debug"},
    {"keys", TM_CFG_STR, "./keys", "directory the key file defaults are taken from"},
    {"cert", TM_CFG_STR, NULL, "the broker's secret certificate file (default: "
                               "<keys>/broker.key_secret)"},
    {"allow", TM_CFG_STR, NULL, "allow-list directory of public certificates *.key "
                                "(default: <keys>)"},
    {"bind", TM_CFG_STR, "tcp://127.0.0.1:5550", "request endpoint (HELLO, MAP_GET, STATUS)"},
    {"pub_bind", TM_CFG_STR, "tcp://127.0.0.1:5551", "endpoint where each new shard map "
                                                     "epoch is published"},
    {"data_dir", TM_CFG_STR, "./data/broker", "RocksDB directory that holds the shard map and "
                                                "the models"},
    {"num_shards", TM_CFG_INT, "1024", "shards of a new cluster, 1-65536 (fixed at creation: "
                                       "a stored map keeps its own)"},
    {"expect_workers", TM_CFG_INT, "1", "live workers the first shard assignment waits for"},
    {"assign_grace", TM_CFG_DURATION, "10s", "after this long, assign shards to the live "
                                             "workers even if fewer"},
    {"node_timeout", TM_CFG_DURATION, "5s", "a node silent this long is shown down"},
    {"site", TM_CFG_STR, "local", "this site's name, as federated queries name it "
                                  "(AT SITES (...))"},
    {"peers", TM_CFG_STR, "", "peer sites: NAME=ENDPOINT,... (their brokers' request "
                              "endpoints)"},
    {"peer_keys", TM_CFG_STR, NULL, "directory of peer brokers' public keys, NAME.key "
                                    "(default <keys>/peers)"},
    {"site_cert", TM_CFG_STR, NULL, "our secret key of role site, presented to peers "
                                    "(default <keys>/site-SITE.key_secret)"},
    {"export_policy", TM_CFG_STR, "aggregates", "what peers may receive: raw (rows and "
                                                "aggregates), aggregates, none"},
    {"export_min_group", TM_CFG_INT, "5", "aggregates policy: groups of fewer twins are "
                                          "not sent"},
    {"export_noise", TM_CFG_STR, "0", "> 0: Laplace noise of scale 1/EPSILON on exported "
                                      "counts and sums (0 = off)"},
    {"export_sum_bound", TM_CFG_STR, "1000", "with noise: the largest value one twin adds "
                                             "to a sum"},
    {"query_deadline", TM_CFG_DURATION, "3s", "a query answers by then, partial if some "
                                              "workers have not (a client may ask for up to 60s)"},
};

static const char s_usage[] =
    "twinmesh-broker [options]\n"
    "\n"
    "The twinmesh control plane. Keeps the shard map in its RocksDB (data_dir),\n"
    "assigns every shard once expect_workers workers have said HELLO (or\n"
    "assign_grace has passed with at least one), publishes each new epoch on\n"
    "pub_bind, and answers HELLO (workers, gateways), MAP_GET (any allow-listed\n"
    "key), STATUS, MODEL_LIST and MODEL_GET (analyst, operator, admin, components)\n"
    "and MODEL_PUT (operator, admin) on bind. QUERY (analyst, operator, admin):\n"
    "parses, scatters to the workers, merges, answers by the deadline. Models\n"
    "loaded with twinctl model load are kept in data_dir too; a stored model that\n"
    "does not parse stops the start.\n"
    "Federation: with peers set, QUERY ... AT SITES (a, b) also asks the peer sites'\n"
    "brokers (presenting site_cert, a key of role site that each peer allow-lists);\n"
    "SITE_QUERY from a peer (role site) is answered under export_policy.\n"
    "\n"
    "Signals: SIGTERM or SIGINT stop it (exit 0); SIGHUP re-reads the allow-list.\n"
    "Exit status 1: missing keys or allow-list, unreadable data_dir or stored model,\n"
    "bind failed; 2: bad settings.";

static volatile sig_atomic_t s_reload;     //  Set by SIGHUP, cleared by the main loop

static void
s_on_sighup (int sig)
{
    (void) sig;
    s_reload = 1;
}

//  Keep the signals we act on away from the threads that libzmq, the ZAP
//  handler and RocksDB start: a signal landing in the ZAP thread would
//  interrupt its poll and stop it, and every later handshake would fail.
static void
s_block_signals (sigset_t *set, int how)
{
    sigemptyset (set);
    sigaddset (set, SIGHUP);
    sigaddset (set, SIGINT);
    sigaddset (set, SIGTERM);
    pthread_sigmask (how, set, NULL);
}

int
main (int argc, char **argv)
{
    tm_config_t *config = tm_config_new ("twinmesh-broker", s_usage, s_settings,
                                         sizeof s_settings / sizeof s_settings[0]);
    if (!config)
        return 1;
    int rc = tm_config_load (config, argc, argv);
    if (rc != 0) {
        tm_config_destroy (&config);
        return rc > 0? 0: 2;
    }
    int exit_code = 1;
    tm_auth_t *auth = NULL;
    zcert_t *cert = NULL;
    tm_broker_t *broker = NULL;
    zcert_t *site_cert_keep = NULL;
    char *cert_path = tm_config_path (config, "cert", "keys", "broker.key_secret");
    const char *allow_set = tm_config_str (config, "allow");
    char *allow = strdup (allow_set && *allow_set? allow_set: tm_config_str (config, "keys"));
    int level = tm_log_level_parse (tm_config_str (config, "log_level"));
    int64_t num_shards = tm_config_int (config, "num_shards");
    int64_t expect = tm_config_int (config, "expect_workers");
    int64_t grace = tm_config_int (config, "assign_grace");
    int64_t timeout = tm_config_int (config, "node_timeout");
    if (level < 0) {
        fprintf (stderr, "twinmesh-broker: log_level must be error, warn, info or debug\n");
        exit_code = 2;
        goto done;
    }
    if (tm_config_argc (config) > 0) {
        fprintf (stderr, "twinmesh-broker: unexpected argument '%s' (see --help)\n",
                 tm_config_arg (config, 0));
        exit_code = 2;
        goto done;
    }
    if (num_shards < 1 || num_shards > 65536 || expect < 0 || expect > 4096 || grace < 0
        || timeout <= 0) {
        fprintf (stderr, "twinmesh-broker: num_shards must be 1-65536, expect_workers 0-4096, "
                         "assign_grace >= 0 and node_timeout > 0\n");
        exit_code = 2;
        goto done;
    }
    tm_log_init ("twinmesh-broker", (tm_log_level_t) level);

    sigset_t blocked;
    s_block_signals (&blocked, SIG_BLOCK);
    struct sigaction sa = {.sa_handler = s_on_sighup};
    sigemptyset (&sa.sa_mask);
    sigaction (SIGHUP, &sa, NULL);

    cert = tm_auth_load_secret (cert_path);
    if (!cert) {
        fprintf (stderr, "twinmesh-broker: cannot load the broker's secret certificate '%s' "
                         "(make it with: twinctl keygen broker --role broker; or set --cert)\n",
                 cert_path);
        goto done;
    }
    //  The ZAP handler must run before any CURVE server socket is bound.
    auth = tm_auth_new (allow);
    if (!auth) {
        fprintf (stderr, "twinmesh-broker: cannot read the allow-list directory '%s' "
                         "(set --allow or --keys)\n", allow);
        goto done;
    }
    //  Federation: peers and what we export.
    tm_broker_peer_t peers[TM_QUERY_MAX_SITES];
    size_t npeers = 0;
    char *peer_list = strdup (tm_config_str (config, "peers"));
    zcert_t *peer_certs[TM_QUERY_MAX_SITES] = {NULL};
    tm_coord_policy_t policy = {0};
    const char *site = tm_config_str (config, "site");
    char *end = NULL;
    policy.min_group = (uint64_t) tm_config_int (config, "export_min_group");
    policy.epsilon = strtod (tm_config_str (config, "export_noise"), &end);
    bool bad = !end || *end || !(policy.epsilon >= 0);
    policy.sum_bound = strtod (tm_config_str (config, "export_sum_bound"), &end);
    bad = bad || !end || *end || !(policy.sum_bound > 0)
       || tm_config_int (config, "export_min_group") < 1
       || tm_coord_export_parse (tm_config_str (config, "export_policy"), &policy.mode) != 0;
    if (bad || !peer_list) {
        fprintf (stderr, "twinmesh-broker: export_policy is raw, aggregates or none; "
                         "export_min_group >= 1; export_noise >= 0; export_sum_bound > 0\n");
        exit_code = 2;
        free (peer_list);
        goto done;
    }
    char *keydir = tm_config_path (config, "peer_keys", "keys", "peers");
    char *save = NULL;
    for (char *item = strtok_r (peer_list, ",", &save); item; item = strtok_r (NULL, ",", &save)) {
        char *eq = strchr (item, '=');
        if (!eq || eq == item || !eq[1] || npeers >= TM_QUERY_MAX_SITES) {
            fprintf (stderr, "twinmesh-broker: peers: expected NAME=ENDPOINT,... (at most %d), "
                             "found '%s'\n", TM_QUERY_MAX_SITES, item);
            exit_code = 2;
            break;
        }
        *eq = 0;
        char path[PATH_MAX];
        snprintf (path, sizeof path, "%s/%s.key", keydir? keydir: ".", item);
        peer_certs[npeers] = zcert_load (path);
        if (!peer_certs[npeers]) {
            fprintf (stderr, "twinmesh-broker: no public key for peer site %s: copy its "
                             "broker.key to %s\n", item, path);
            exit_code = 2;
            break;
        }
        peers[npeers] = (tm_broker_peer_t) {item, eq + 1, zcert_public_txt (peer_certs[npeers])};
        npeers++;
    }
    free (keydir);
    zcert_t *site_cert = NULL;
    if (exit_code != 2 && npeers) {
        char file[128];
        snprintf (file, sizeof file, "site-%s.key_secret", site);
        char *path = tm_config_path (config, "site_cert", "keys", file);
        site_cert = path? tm_auth_load_secret (path): NULL;
        if (!site_cert)
            fprintf (stderr, "twinmesh-broker: cannot load our site key '%s' (make it with: "
                             "twinctl keygen site-%s --role site; peers allow-list its .key)\n",
                     path? path: file, site);
        free (path);
        if (!site_cert)
            exit_code = 2;
    }
    if (exit_code == 2) {
        for (size_t i = 0; i < TM_QUERY_MAX_SITES; i++)
            zcert_destroy (&peer_certs[i]);
        free (peer_list);
        goto done;
    }
    site_cert_keep = site_cert;
    tm_broker_config_t bc = {
        .bind = tm_config_str (config, "bind"),
        .pub_bind = tm_config_str (config, "pub_bind"),
        .data_dir = tm_config_str (config, "data_dir"),
        .cert = cert,
        .num_shards = (uint32_t) num_shards,
        .expect_workers = (uint32_t) expect,
        .assign_grace_ms = grace,
        .node_timeout_ms = timeout,
        .query_deadline_ms = tm_config_int (config, "query_deadline"),
        .site = site,
        .policy = policy,
        .site_cert = site_cert,
        .peers = peers,
        .npeers = npeers,
    };
    broker = tm_broker_new (&bc);
    //  The coordinator copied what it keeps; the peer sockets hold their keys.
    for (size_t i = 0; i < TM_QUERY_MAX_SITES; i++)
        zcert_destroy (&peer_certs[i]);
    free (peer_list);
    if (!broker) {
        fprintf (stderr, "twinmesh-broker: cannot start (see the log above)\n");
        goto done;
    }
    //  Every helper thread exists now: only this one takes our signals.
    s_block_signals (&blocked, SIG_UNBLOCK);
    while (tm_broker_poll (broker, 1000) == 0) {
        if (s_reload) {
            s_reload = 0;
            int keys = tm_auth_reload (auth);
            if (keys < 0)
                tm_error ("broker: allow-list reload failed dir=%s; the old list stays", allow);
        }
    }
    tm_info ("broker: stopping epoch=%llu", (unsigned long long) tm_broker_epoch (broker));
    exit_code = 0;
done:
    tm_broker_destroy (&broker);
    tm_auth_destroy (&auth);
    zcert_destroy (&cert);
    zcert_destroy (&site_cert_keep);
    free (cert_path);
    free (allow);
    tm_config_destroy (&config);
    return exit_code;
}
