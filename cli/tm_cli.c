/*  tm_cli - twinctl: the admin and user command line

    The commands people and scripts run against a cluster: make keys, look
    at the cluster (status), read one twin, and wait until a fresh cluster
    is ready (what every test and start-up script does first). sim and
    replay live in their own modules and are dispatched from here.

    Each command is a short request/reply exchange with a deadline, so the
    care goes into the failure cases: every message names what failed
    (which file, which endpoint, which key) and what to check. Output is a
    plain table for people or, with --json, JSON for scripts; the JSON is
    written by hand, so every string goes through one escaping function.
*/
#include "tm_cli.h"
#include "tm_commands_cli.h"
#include "tm_predict.h"
#include "tm_history.h"
#include "tm_hier_cli.h"
#include "tm_auth.h"
#include "tm_codec.h"
#include "tm_log.h"
#include "tm_mapclient.h"
#include "tm_models_cli.h"
#include "tm_query_cli.h"
#include "tm_net.h"
#include "tm_replay.h"
#include "tm_shardmap.h"
#include "tm_sim.h"
#include "tm_util.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TM_CLI_MAX_CLIENT_SETTINGS 7
#define TM_CLI_WAIT_POLL_MS 500        //  wait-ready: interval between STATUS requests
#define TM_CLI_WAIT_REQUEST_MS 2000    //  wait-ready: longest wait for one reply

static const tm_setting_t s_client_settings[TM_CLI_MAX_CLIENT_SETTINGS] = {
    {"log_level", TM_CFG_STR, "warn", "log level: error, warn, info or debug"},
    {"keys", TM_CFG_STR, "./keys", "directory the key file defaults are taken from"},
    {"cert", TM_CFG_STR, NULL, NULL},  //  help is made per command (cert_name)
    {"broker", TM_CFG_STR, "tcp://127.0.0.1:5550", "the broker's request endpoint"},
    {"broker_key", TM_CFG_STR, NULL,
     "the broker's public certificate file (default: <keys>/broker.key)"},
    {"timeout", TM_CFG_DURATION, "5s", "how long to wait for a reply"},
    {"json", TM_CFG_BOOL, "false", "print JSON instead of text"},
};

struct _tm_cli_t {
    tm_config_t *config;           //  The loaded settings
    tm_setting_t *table;           //  Shared and extra settings, owned array
    char *cert_name;               //  Default key name: <keys>/<cert_name>.key_secret
    char *cert_help;               //  Help line of the cert setting, owned
    zcert_t *cert;                 //  Our secret certificate, loaded on first use
    char *broker_key;              //  Broker's Z85 public key, loaded on first use
};

// -------------------------------------------------------------------------
//  Shared client helpers

tm_cli_t *
tm_cli_new (const char *program, const char *usage, const char *cert_name,
            const tm_setting_t *extra, size_t nextra)
{
    tm_cli_t *self = (tm_cli_t *) zmalloc (sizeof *self);
    self->cert_name = strdup (cert_name? cert_name: "admin");
    self->table = calloc (TM_CLI_MAX_CLIENT_SETTINGS + nextra, sizeof *self->table);
    if (!self->cert_name || !self->table
        || asprintf (&self->cert_help,
                     "your secret certificate file (default: <keys>/%s.key_secret)",
                     self->cert_name) < 0) {
        self->cert_help = NULL;
        tm_cli_destroy (&self);
        return NULL;
    }
    size_t count = 0;
    for (size_t i = 0; i < TM_CLI_MAX_CLIENT_SETTINGS; i++) {
        self->table[count] = s_client_settings[i];
        if (strcmp (s_client_settings[i].name, "cert") == 0)
            self->table[count].help = self->cert_help;
        for (size_t j = 0; j < nextra; j++)
            if (strcmp (extra[j].name, s_client_settings[i].name) == 0)
                self->table[count] = extra[j];
        count++;
    }
    for (size_t j = 0; j < nextra; j++) {
        bool shared = false;
        for (size_t i = 0; i < TM_CLI_MAX_CLIENT_SETTINGS; i++)
            shared |= strcmp (extra[j].name, s_client_settings[i].name) == 0;
        if (!shared)
            self->table[count++] = extra[j];
    }
    self->config = tm_config_new (program, usage, self->table, count);
    if (!self->config)
        tm_cli_destroy (&self);
    return self;
}

void
tm_cli_destroy (tm_cli_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_cli_t *self = *self_p;
    tm_config_destroy (&self->config);
    zcert_destroy (&self->cert);
    free (self->broker_key);
    free (self->cert_help);
    free (self->cert_name);
    free (self->table);
    free (self);
    *self_p = NULL;
}

int
tm_cli_load (tm_cli_t *self, int argc, char **argv)
{
    int rc = tm_config_load (self->config, argc, argv);
    if (rc != 0)
        return rc;
    int level = tm_log_level_parse (tm_config_str (self->config, "log_level"));
    if (level < 0) {
        fprintf (stderr, "twinctl: log_level must be error, warn, info or debug\n");
        return -1;
    }
    tm_log_init ("twinctl", (tm_log_level_t) level);
    return 0;
}

tm_config_t *
tm_cli_config (tm_cli_t *self)
{
    return self->config;
}

int64_t
tm_cli_timeout_ms (tm_cli_t *self)
{
    return tm_config_int (self->config, "timeout");
}

const char *
tm_cli_timeout_text (tm_cli_t *self)
{
    return tm_config_str (self->config, "timeout");
}

bool
tm_cli_json (tm_cli_t *self)
{
    return tm_config_bool (self->config, "json");
}

zcert_t *
tm_cli_cert (tm_cli_t *self)
{
    if (self->cert)
        return self->cert;
    char file[256];
    snprintf (file, sizeof file, "%s.key_secret", self->cert_name);
    char *path = tm_config_path (self->config, "cert", "keys", file);
    if (!path)
        return NULL;
    if (access (path, R_OK) != 0)
        fprintf (stderr,
                 "twinctl: cannot read your secret key '%s': %s (make one with 'twinctl keygen "
                 "%s --role ROLE' and add its .key to the servers' allow-list, or set --cert "
                 "or --keys)\n",
                 path, strerror (errno), self->cert_name);
    else {
        self->cert = tm_auth_load_secret (path);
        if (!self->cert)
            fprintf (stderr, "twinctl: '%s' is not a secret certificate (use the NAME.key_secret "
                             "file made by twinctl keygen)\n", path);
    }
    free (path);
    return self->cert;
}

const char *
tm_cli_broker_key (tm_cli_t *self)
{
    if (self->broker_key)
        return self->broker_key;
    char *path = tm_config_path (self->config, "broker_key", "keys", "broker.key");
    if (!path)
        return NULL;
    if (access (path, R_OK) != 0)
        fprintf (stderr, "twinctl: cannot read the broker's public key '%s': %s (copy broker.key "
                         "from the broker's keys, or set --broker-key or --keys)\n",
                 path, strerror (errno));
    else {
        self->broker_key = tm_auth_load_public_key (path);
        if (!self->broker_key)
            fprintf (stderr, "twinctl: '%s' is not a certificate file\n", path);
    }
    free (path);
    return self->broker_key;
}

zsock_t *
tm_cli_broker_connect (tm_cli_t *self)
{
    zcert_t *cert = tm_cli_cert (self);
    const char *key = cert? tm_cli_broker_key (self): NULL;
    if (!key)
        return NULL;
    const char *endpoint = tm_config_str (self->config, "broker");
    zsock_t *sock = tm_net_client (ZMQ_DEALER, endpoint, cert, key);
    if (!sock) {
        fprintf (stderr, "twinctl: cannot connect to the broker at '%s' (check --broker)\n",
                 endpoint? endpoint: "");
        return NULL;
    }
    zsock_set_linger (sock, 0);
    return sock;
}

int
tm_cli_request (zsock_t *sock, int type, uint64_t epoch, const void *body, size_t size,
                int64_t timeout_ms, tm_msg_t *reply)
{
    //  Ids start from the clock so that replies meant for an earlier run
    //  on a reused identity can never match.
    static uint64_t s_next_id;
    static uint64_t s_seq;
    if (s_next_id == 0)
        s_next_id = (uint64_t) tm_util_wall_ms () << 8;
    uint64_t id = ++s_next_id;
    tm_header_t hdr;
    tm_header_init (&hdr, type, id, epoch);
    hdr.seq = ++s_seq;
    memset (reply, 0, sizeof *reply);
    zsock_set_sndtimeo (sock, (int) timeout_ms);
    if (tm_msg_send (sock, NULL, &hdr, body, size) != 0)
        return -1;
    int64_t deadline = tm_util_mono_ms () + timeout_ms;
    while (true) {
        int64_t left = deadline - tm_util_mono_ms ();
        if (left <= 0)
            return TM_CLI_E_TIMEOUT;
        zmq_pollitem_t item = {zsock_resolve (sock), 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll (&item, 1, (long) left);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return TM_CLI_E_TIMEOUT;
        rc = tm_msg_recv (sock, false, reply);
        if (rc < 0) {
            tm_msg_fini (reply);
            return -1;
        }
        if (rc == TM_MSG_E_MALFORMED) {
            tm_msg_fini (reply);
            return TM_CLI_E_MALFORMED;
        }
        //  A BAD_VERSION or ERROR with request_id 0 is the server telling
        //  us our own request was unreadable: it answers this request.
        if (reply->hdr.request_id == id
            || (reply->hdr.type == TWINMESH__MSG_TYPE__ERROR && reply->hdr.request_id == 0))
            return 0;
        tm_msg_fini (reply);
    }
}

//  Length of the valid UTF-8 sequence at p (2-4), or 0 if invalid.
static size_t
s_utf8_seq (const unsigned char *p)
{
    size_t n = (p[0] & 0xE0) == 0xC0? 2: (p[0] & 0xF0) == 0xE0? 3: (p[0] & 0xF8) == 0xF0? 4: 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;          //  stops at the terminating NUL too
    return n && tm_util_utf8_valid ((const char *) p, n)? n: 0;
}

void
tm_cli_json_string (FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *) (s? s: "");
    fputc ('"', out);
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            fputc ('\\', out);
            fputc (c, out);
            p++;
        }
        else
        if (c < 0x20) {
            const char *esc = c == '\n'? "\\n": c == '\r'? "\\r": c == '\t'? "\\t":
                              c == '\b'? "\\b": c == '\f'? "\\f": NULL;
            if (esc)
                fputs (esc, out);
            else
                fprintf (out, "\\u%04x", c);
            p++;
        }
        else
        if (c < 0x80) {
            fputc (c, out);
            p++;
        }
        else {
            size_t n = s_utf8_seq (p);
            if (n) {
                fwrite (p, 1, n, out);
                p += n;
            }
            else {
                fputs ("\\ufffd", out);
                p++;
            }
        }
    }
    fputc ('"', out);
}

void
tm_cli_json_number (FILE *out, double value)
{
    if (!isfinite (value)) {
        fputs ("null", out);
        return;
    }
    //  The shortest form that reads back as the same double.
    char buf[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf (buf, sizeof buf, "%.*g", digits, value);
        if (strtod (buf, NULL) == value)
            break;
    }
    fputs (buf, out);
}

void
tm_cli_iso8601 (int64_t ts_ms, char *buf, size_t size)
{
    int64_t secs = ts_ms / 1000;
    int ms = (int) (ts_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs--;
    }
    time_t t = (time_t) secs;
    struct tm tmv;
    if (!gmtime_r (&t, &tmv)) {
        snprintf (buf, size, "%lld", (long long) ts_ms);
        return;
    }
    snprintf (buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tmv.tm_year + 1900,
              tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour, tmv.tm_min, tmv.tm_sec, ms);
}

// -------------------------------------------------------------------------
//  A text table: cells collected first, widths measured, then printed

typedef struct {
    size_t ncols;                  //  Columns per row
    size_t nrows;                  //  Rows so far, the header included
    size_t cap;                    //  Rows allocated
    char **cells;                  //  nrows * ncols strings, owned
    const bool *right;             //  Per column: right-align (numbers), borrowed
} s_table_t;

static void
s_table_init (s_table_t *self, size_t ncols, const bool *right)
{
    memset (self, 0, sizeof *self);
    self->ncols = ncols;
    self->right = right;
}

static void
s_table_fini (s_table_t *self)
{
    for (size_t i = 0; i < self->nrows * self->ncols; i++)
        free (self->cells[i]);
    free (self->cells);
    self->cells = NULL;
}

//  A copy of s that is safe to print on a terminal: control characters
//  and invalid UTF-8 from the network become '?'. Caller frees.
static char *
s_printable (const char *s)
{
    char *copy = strdup (s);
    if (!copy)
        return NULL;
    unsigned char *p = (unsigned char *) copy;
    while (*p) {
        size_t n = *p < 0x80? 1: s_utf8_seq (p);
        if (n == 0 || *p < 0x20 || *p == 0x7f) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
    return copy;
}

//  Columns a printable UTF-8 string takes (one per code point).
static size_t
s_display_width (const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *) s; *p; p++)
        n += (*p & 0xC0) != 0x80;
    return n;
}

//  Append a row of ncols strings (copied; NULL prints as "-").
static int
s_table_row (s_table_t *self, const char *const *values)
{
    if (self->nrows == self->cap) {
        size_t cap = self->cap? self->cap * 2: 16;
        char **grown = realloc (self->cells, cap * self->ncols * sizeof *grown);
        if (!grown)
            return -1;
        self->cells = grown;
        self->cap = cap;
    }
    char **row = self->cells + self->nrows * self->ncols;
    for (size_t c = 0; c < self->ncols; c++)
        row[c] = s_printable (values[c]? values[c]: "-");
    self->nrows++;
    return 0;
}

static void
s_table_print (s_table_t *self, FILE *out)
{
    size_t width[32] = {0};
    assert (self->ncols <= 32);
    for (size_t i = 0; i < self->nrows * self->ncols; i++) {
        size_t len = self->cells[i]? s_display_width (self->cells[i]): 0;
        if (len > width[i % self->ncols])
            width[i % self->ncols] = len;
    }
    for (size_t r = 0; r < self->nrows; r++) {
        for (size_t c = 0; c < self->ncols; c++) {
            const char *cell = self->cells[r * self->ncols + c];
            if (!cell)
                cell = "";
            bool last = c + 1 == self->ncols;
            //  Pad by display width: printf counts bytes, not characters.
            size_t pad = width[c] - s_display_width (cell);
            if (self->right[c])
                fprintf (out, "%*s%s", (int) pad, "", cell);
            else
                fprintf (out, "%s%*s", cell, last? 0: (int) pad, "");
            fputs (last? "\n": "  ", out);
        }
    }
}

static void
s_format_ago (uint64_t ms, char *buf, size_t size)
{
    unsigned long long s = ms / 1000;
    if (ms < 60000)
        snprintf (buf, size, "%.1fs ago", (double) ms / 1000.0);
    else
    if (s < 3600)
        snprintf (buf, size, "%llum%02llus ago", s / 60, s % 60);
    else
    if (s < 86400)
        snprintf (buf, size, "%lluh%02llum ago", s / 3600, s % 3600 / 60);
    else
        snprintf (buf, size, "%llud%02lluh ago", s / 86400, s % 86400 / 3600);
}

// -------------------------------------------------------------------------
//  STATUS, shared by status and wait-ready

//  Ask the broker for its status. 0 with *status (free with
//  tm_codec_free); TM_CLI_E_TIMEOUT if no reply came (printed unless
//  quiet_timeout); -1 if the broker refused or the reply is broken
//  (printed: asking again will not help).
static int
s_fetch_status (tm_cli_t *cli, zsock_t *sock, int64_t timeout_ms, bool quiet_timeout,
                Twinmesh__ClusterStatus **status)
{
    const char *endpoint = tm_config_str (cli->config, "broker");
    tm_msg_t reply;
    *status = NULL;
    int rc = tm_cli_request (sock, TWINMESH__MSG_TYPE__STATUS, 0, NULL, 0, timeout_ms, &reply);
    if (rc == TM_CLI_E_TIMEOUT) {
        if (!quiet_timeout)
            fprintf (stderr, "twinctl: no reply from broker at %s within %s (is it running? is "
                             "this key on its allow-list?)\n",
                     endpoint, tm_cli_timeout_text (cli));
        return TM_CLI_E_TIMEOUT;
    }
    if (rc != 0) {
        fprintf (stderr, "twinctl: %s from broker at %s\n",
                 rc == TM_CLI_E_MALFORMED? "malformed reply": "request failed", endpoint);
        return -1;
    }
    int result = -1;
    if (reply.hdr.status == TWINMESH__STATUS__UNAUTHORIZED)
        fprintf (stderr, "twinctl: the broker at %s refused STATUS: unauthorized (%s); use a key "
                         "with role analyst, operator or admin (--cert)\n",
                 endpoint, *reply.hdr.detail? reply.hdr.detail: "role may not read status");
    else
    if (reply.hdr.status != TWINMESH__STATUS__OK || reply.hdr.type != TWINMESH__MSG_TYPE__STATUS_REPLY)
        fprintf (stderr, "twinctl: the broker at %s answered %s status %s: %s\n", endpoint,
                 tm_msg_type_name (reply.hdr.type), tm_status_name (reply.hdr.status),
                 *reply.hdr.detail? reply.hdr.detail: "(no detail)");
    else {
        *status = TM_UNPACK (ClusterStatus, cluster_status, zframe_data (reply.body),
                             zframe_size (reply.body));
        if (*status)
            result = 0;
        else
            fprintf (stderr, "twinctl: the broker at %s sent a status that does not decode "
                             "(version mismatch?)\n", endpoint);
    }
    tm_msg_fini (&reply);
    return result;
}

static const char *
s_info_str (const char *s)
{
    return s && *s? s: NULL;
}

typedef struct {
    size_t count;                  //  Nodes of this role
    size_t up;                     //  Of which up
    uint64_t shards;               //  Shards owned
    uint64_t twins;                //  Twins hosted
    uint64_t readings;             //  Readings accepted or applied
    uint64_t refused;              //  Requests refused
    uint64_t malformed;            //  Malformed requests
    uint64_t wrong_shard;          //  WRONG_SHARD refusals
} s_totals_t;

static void
s_totals_add (s_totals_t *t, const Twinmesh__NodeStatus *n)
{
    t->count++;
    t->up += n->up;
    t->shards += n->shards;
    const Twinmesh__NodeStats *st = n->info->stats;
    if (st) {
        t->twins += st->twins;
        t->readings += st->readings;
        t->refused += st->refused;
        t->malformed += st->malformed;
        t->wrong_shard += st->wrong_shard;
    }
}

static void
s_json_totals (FILE *out, const s_totals_t *t)
{
    fprintf (out,
             "{\"count\": %zu, \"up\": %zu, \"shards\": %llu, \"twins\": %llu, \"readings\": "
             "%llu, \"refused\": %llu, \"malformed\": %llu, \"wrong_shard\": %llu}",
             t->count, t->up, (unsigned long long) t->shards, (unsigned long long) t->twins,
             (unsigned long long) t->readings, (unsigned long long) t->refused,
             (unsigned long long) t->malformed, (unsigned long long) t->wrong_shard);
}

static void
s_print_status_json (FILE *out, const char *endpoint, const Twinmesh__ClusterStatus *cs,
                     const s_totals_t *workers, const s_totals_t *gateways)
{
    fputs ("{\"broker\": ", out);
    tm_cli_json_string (out, endpoint);
    fprintf (out, ", \"epoch\": %llu, \"num_shards\": %u, \"unassigned_shards\": %u, "
                  "\"nodes\": [",
             (unsigned long long) cs->epoch, cs->num_shards, cs->unassigned_shards);
    for (size_t i = 0; i < cs->n_nodes; i++) {
        const Twinmesh__NodeStatus *n = cs->nodes[i];
        const Twinmesh__NodeStats *st = n->info->stats;
        fputs (i? ",\n  {\"id\": ": "\n  {\"id\": ", out);
        tm_cli_json_string (out, n->info->id);
        fputs (", \"role\": ", out);
        tm_cli_json_string (out, n->info->role);
        fputs (", \"endpoint\": ", out);
        tm_cli_json_string (out, n->info->endpoint);
        fputs (", \"public_key\": ", out);
        tm_cli_json_string (out, n->info->public_key);
        fprintf (out, ", \"up\": %s, \"last_seen_ms_ago\": %llu, \"shards\": %u, \"stats\": ",
                 n->up? "true": "false", (unsigned long long) n->last_seen_ms_ago, n->shards);
        if (st)
            fprintf (out,
                     "{\"readings\": %llu, \"batches\": %llu, \"refused\": %llu, \"malformed\": "
                     "%llu, \"wrong_shard\": %llu, \"retry_later\": %llu, \"twins\": %llu, "
                     "\"duplicates\": %llu, \"late\": %llu, \"shards\": %llu, \"map_epoch\": "
                     "%llu, \"anomalies\": %llu, \"out_of_range\": %llu, \"stale_twins\": "
                     "%llu, \"error_twins\": %llu, \"unmodelled\": %llu, "
                     "\"unknown_property\": %llu, \"invalid_type\": %llu, "
                     "\"passive_twins\": %llu, \"passivated\": %llu, \"reactivated\": %llu, "
                     "\"heap_bytes\": %llu, \"history_dropped\": %llu",
                     (unsigned long long) st->readings, (unsigned long long) st->batches,
                     (unsigned long long) st->refused, (unsigned long long) st->malformed,
                     (unsigned long long) st->wrong_shard, (unsigned long long) st->retry_later,
                     (unsigned long long) st->twins, (unsigned long long) st->duplicates,
                     (unsigned long long) st->late, (unsigned long long) st->shards,
                     (unsigned long long) st->map_epoch, (unsigned long long) st->anomalies,
                     (unsigned long long) st->out_of_range, (unsigned long long) st->stale_twins,
                     (unsigned long long) st->error_twins, (unsigned long long) st->unmodelled,
                     (unsigned long long) st->unknown_property,
                     (unsigned long long) st->invalid_type,
                     (unsigned long long) st->passive_twins, (unsigned long long) st->passivated,
                     (unsigned long long) st->reactivated, (unsigned long long) st->heap_bytes,
                     (unsigned long long) st->history_dropped);
        if (st) {
            tm_hier_cli_print_stats_json (out, st);
            fputs ("}}", out);
        }
        else
            fputs ("null}", out);
    }
    fputs ("\n], \"totals\": {\"workers\": ", out);
    s_json_totals (out, workers);
    fputs (", \"gateways\": ", out);
    s_json_totals (out, gateways);
    fputs ("}}\n", out);
}

static void
s_totals_row (s_table_t *table, const char *role, const s_totals_t *t, bool worker)
{
    char up[32], shards[24], twins[24], readings[24], refused[24], malformed[24], wrong[24];
    snprintf (up, sizeof up, "%zu/%zu up", t->up, t->count);
    snprintf (shards, sizeof shards, "%llu", (unsigned long long) t->shards);
    snprintf (twins, sizeof twins, "%llu", (unsigned long long) t->twins);
    snprintf (readings, sizeof readings, "%llu", (unsigned long long) t->readings);
    snprintf (refused, sizeof refused, "%llu", (unsigned long long) t->refused);
    snprintf (malformed, sizeof malformed, "%llu", (unsigned long long) t->malformed);
    snprintf (wrong, sizeof wrong, "%llu", (unsigned long long) t->wrong_shard);
    const char *row[] = {"TOTAL", role, "", up, "", worker? shards: NULL, worker? twins: NULL,
                         readings, refused, malformed, wrong};
    s_table_row (table, row);
}

static void
s_print_status_text (FILE *out, const char *endpoint, const Twinmesh__ClusterStatus *cs,
                     const s_totals_t *workers, const s_totals_t *gateways)
{
    fprintf (out, "broker %s: map epoch %llu, %u shards, %u unassigned%s\n\n", endpoint,
             (unsigned long long) cs->epoch, cs->num_shards, cs->unassigned_shards,
             cs->epoch == 0? " (waiting for workers)": "");
    static const bool right[] = {false, false, false, false, false, true,
                                 true,  true,  true,  true,  true};
    s_table_t table;
    s_table_init (&table, 11, right);
    const char *head[] = {"ID",     "ROLE",     "ENDPOINT", "STATE",     "LAST SEEN",  "SHARDS",
                          "TWINS", "READINGS", "REFUSED",  "MALFORMED", "WRONG SHARD"};
    s_table_row (&table, head);
    for (size_t i = 0; i < cs->n_nodes; i++) {
        const Twinmesh__NodeStatus *n = cs->nodes[i];
        const Twinmesh__NodeStats *st = n->info->stats;
        bool is_worker = n->info->role && strcmp (n->info->role, "worker") == 0;
        bool is_broker = n->info->role && strcmp (n->info->role, "broker") == 0;
        char seen[32], shards[24], twins[24], readings[24], refused[24], malformed[24],
            wrong[24];
        s_format_ago (n->last_seen_ms_ago, seen, sizeof seen);
        snprintf (shards, sizeof shards, "%u", n->shards);
        snprintf (twins, sizeof twins, "%llu", st? (unsigned long long) st->twins: 0ULL);
        snprintf (readings, sizeof readings, "%llu", st? (unsigned long long) st->readings: 0ULL);
        snprintf (refused, sizeof refused, "%llu", st? (unsigned long long) st->refused: 0ULL);
        snprintf (malformed, sizeof malformed, "%llu",
                  st? (unsigned long long) st->malformed: 0ULL);
        snprintf (wrong, sizeof wrong, "%llu", st? (unsigned long long) st->wrong_shard: 0ULL);
        const char *row[] = {s_info_str (n->info->id),
                             s_info_str (n->info->role),
                             s_info_str (n->info->endpoint),
                             n->up? "up": "DOWN",
                             is_broker? NULL: seen,
                             is_worker? shards: NULL,
                             is_worker && st? twins: NULL,
                             is_broker || !st? NULL: readings,
                             st? refused: NULL,
                             st? malformed: NULL,
                             is_broker || !st? NULL: wrong};
        s_table_row (&table, row);
    }
    s_totals_row (&table, "worker", workers, true);
    s_totals_row (&table, "gateway", gateways, false);
    s_table_print (&table, out);
    s_table_fini (&table);
}

static void
s_totals (const Twinmesh__ClusterStatus *cs, s_totals_t *workers, s_totals_t *gateways)
{
    memset (workers, 0, sizeof *workers);
    memset (gateways, 0, sizeof *gateways);
    for (size_t i = 0; i < cs->n_nodes; i++) {
        const Twinmesh__NodeStatus *n = cs->nodes[i];
        if (n->info && n->info->role && strcmp (n->info->role, "worker") == 0)
            s_totals_add (workers, n);
        else
        if (n->info && n->info->role && strcmp (n->info->role, "gateway") == 0)
            s_totals_add (gateways, n);
    }
}

//  A status from the network: fill in what protobuf-c may leave NULL, so
//  the printers need no checks (messages without info are dropped).
static void
s_status_sanitize (Twinmesh__ClusterStatus *cs)
{
    size_t kept = 0;
    for (size_t i = 0; i < cs->n_nodes; i++)
        if (cs->nodes[i]->info)
            cs->nodes[kept++] = cs->nodes[i];
        else
            twinmesh__node_status__free_unpacked (cs->nodes[i], NULL);
    cs->n_nodes = kept;
}

// -------------------------------------------------------------------------
//  Commands

//  Exit code after tm_cli_load did not return 0.
static int
s_load_exit (int rc)
{
    return rc > 0? 0: 2;       //  --help or --print-config printed; else a usage error
}

static int
s_cmd_status (int argc, char **argv)
{
    tm_cli_t *cli = tm_cli_new ("twinctl status", "twinctl status [--json] [--broker EP]",
                                "admin", NULL, 0);
    if (!cli)
        return 1;
    int exit_code = 1;
    zsock_t *sock = NULL;
    Twinmesh__ClusterStatus *cs = NULL;
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = s_load_exit (rc);
        goto done;
    }
    if (tm_config_argc (cli->config) > 0) {
        fprintf (stderr, "twinctl status: unexpected argument '%s' (see --help)\n",
                 tm_config_arg (cli->config, 0));
        exit_code = 2;
        goto done;
    }
    sock = tm_cli_broker_connect (cli);
    if (!sock || s_fetch_status (cli, sock, tm_cli_timeout_ms (cli), false, &cs) != 0)
        goto done;
    s_status_sanitize (cs);
    s_totals_t workers, gateways;
    s_totals (cs, &workers, &gateways);
    const char *endpoint = tm_config_str (cli->config, "broker");
    if (tm_cli_json (cli))
        s_print_status_json (stdout, endpoint, cs, &workers, &gateways);
    else
        s_print_status_text (stdout, endpoint, cs, &workers, &gateways);
    exit_code = 0;
done:
    tm_codec_free (&cs);
    zsock_destroy (&sock);
    tm_cli_destroy (&cli);
    return exit_code;
}

static const tm_setting_t s_wait_settings[] = {
    {"timeout", TM_CFG_DURATION, "30s", "give up after this long"},
    {"workers", TM_CFG_INT, "1", "workers that must be up"},
};

static int
s_cmd_wait_ready (int argc, char **argv)
{
    tm_cli_t *cli = tm_cli_new ("twinctl wait-ready",
                                "twinctl wait-ready [--workers N] [--timeout 30s]", "admin",
                                s_wait_settings,
                                sizeof s_wait_settings / sizeof s_wait_settings[0]);
    if (!cli)
        return 1;
    int exit_code = 1;
    zsock_t *sock = NULL;
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = s_load_exit (rc);
        goto done;
    }
    int64_t want = tm_config_int (cli->config, "workers");
    if (tm_config_argc (cli->config) > 0 || want < 0) {
        fprintf (stderr, "twinctl wait-ready: %s (see --help)\n",
                 want < 0? "--workers must be 0 or more": "unexpected argument");
        exit_code = 2;
        goto done;
    }
    sock = tm_cli_broker_connect (cli);
    if (!sock)
        goto done;
    const char *endpoint = tm_config_str (cli->config, "broker");
    int64_t deadline = tm_util_mono_ms () + tm_cli_timeout_ms (cli);
    char missing[512];
    snprintf (missing, sizeof missing, "no reply from broker at %s (is it running? is this key "
                                       "on its allow-list?)", endpoint);
    while (!zsys_interrupted) {
        int64_t start = tm_util_mono_ms ();
        int64_t left = deadline - start;
        if (left <= 0)
            break;
        Twinmesh__ClusterStatus *cs = NULL;
        int64_t wait = left < TM_CLI_WAIT_REQUEST_MS? left: TM_CLI_WAIT_REQUEST_MS;
        rc = s_fetch_status (cli, sock, wait, true, &cs);
        if (rc == 0) {
            s_status_sanitize (cs);
            s_totals_t workers, gateways;
            s_totals (cs, &workers, &gateways);
            //  A node routes with its own copy of the map: until every live
            //  worker and gateway reports the broker's epoch (in its next
            //  heartbeat), a first write can still meet "no shard map yet".
            size_t lagging = 0;
            for (size_t i = 0; i < cs->n_nodes; i++) {
                const Twinmesh__NodeStatus *n = cs->nodes[i];
                const char *role = n->info && n->info->role? n->info->role: "";
                if (n->up && (!strcmp (role, "worker") || !strcmp (role, "gateway"))
                    && (!n->info->stats || n->info->stats->map_epoch < cs->epoch))
                    lagging++;
            }
            bool ready = cs->epoch > 0 && cs->unassigned_shards == 0
                      && (int64_t) workers.up >= want && lagging == 0;
            if (ready) {
                if (tm_cli_json (cli))
                    printf ("{\"ready\": true, \"epoch\": %llu, \"num_shards\": %u, "
                            "\"workers_up\": %zu, \"gateways_up\": %zu}\n",
                            (unsigned long long) cs->epoch, cs->num_shards, workers.up,
                            gateways.up);
                else
                    printf ("ready: map epoch %llu, %u shards assigned, %zu of %zu workers up, "
                            "%zu gateways up\n",
                            (unsigned long long) cs->epoch, cs->num_shards, workers.up,
                            workers.count, gateways.up);
                tm_codec_free (&cs);
                exit_code = 0;
                goto done;
            }
            char unassigned[64] = "";
            if (cs->epoch > 0 && cs->unassigned_shards)
                snprintf (unassigned, sizeof unassigned, "%u shards unassigned; ",
                          cs->unassigned_shards);
            snprintf (missing, sizeof missing,
                      "%s%s%zu of %lld workers up (%zu known); %zu nodes behind map epoch %llu",
                      cs->epoch == 0? "map epoch 0 (no shards assigned yet); ": "", unassigned,
                      workers.up, (long long) want, workers.count, lagging,
                      (unsigned long long) cs->epoch);
            tm_codec_free (&cs);
        }
        else
        if (rc < 0)
            goto done;         //  refused or broken reply: printed, waiting will not help
        int64_t now = tm_util_mono_ms ();
        int64_t pause = start + TM_CLI_WAIT_POLL_MS - now;
        if (pause > deadline - now)
            pause = deadline - now;
        if (pause > 0)
            zclock_sleep ((int) pause);
    }
    fprintf (stderr, "twinctl: cluster not ready after %s: %s\n", tm_cli_timeout_text (cli),
             missing);
done:
    zsock_destroy (&sock);
    tm_cli_destroy (&cli);
    return exit_code;
}

//  The latest reading's quality flags as words (worker/tm_analytics.h).
static const char *
s_quality_text (uint32_t q)
{
    static char buf[128];
    if (q == 0)
        return "ok";
    snprintf (buf, sizeof buf, "%s%s%s%s%s%s%s", q & 1? "out_of_range ": "",
              q & 2? "stuck ": "", q & 4? "anomalous ": "", q & 8? "fault ": "",
              q & 16? "unmodelled ": "", q & 32? "unknown_property ": "",
              q & 64? "invalid_type ": "");
    size_t n = strlen (buf);
    if (n && buf[n - 1] == ' ')
        buf[n - 1] = 0;
    return buf;
}

static void
s_print_twin_json (const Twinmesh__TwinState *ts, const char *entity, uint32_t shard,
                   const char *worker, const char *worker_endpoint,
                   const Twinmesh__DeltaList *desired)
{
    fputs ("{\"entity\": ", stdout);
    tm_cli_json_string (stdout, entity);
    fputs (", \"model\": ", stdout);
    tm_cli_json_string (stdout, ts->model);
    fprintf (stdout, ", \"shard\": %u, \"worker\": ", shard);
    tm_cli_json_string (stdout, worker);
    fputs (", \"worker_endpoint\": ", stdout);
    tm_cli_json_string (stdout, worker_endpoint);
    fprintf (stdout, ", \"version\": %llu, \"sync\": ", (unsigned long long) ts->version);
    tm_cli_json_string (stdout, ts->sync && *ts->sync? ts->sync: "unknown");
    fputs (", \"confidence\": ", stdout);
    tm_cli_json_number (stdout, ts->confidence);
    //  Attribute values are JSON text the gateway checked and the worker
    //  re-printed with jansson: they go in as they are.
    fputs (", \"attributes\": {", stdout);
    for (size_t i = 0; i < ts->n_attributes; i++) {
        fputs (i? ", ": "", stdout);
        tm_cli_json_string (stdout, ts->attributes[i]->name);
        fputs (": ", stdout);
        fputs (ts->attributes[i]->value && *ts->attributes[i]->value?
               ts->attributes[i]->value: "null", stdout);
    }
    fputs ("}, \"properties\": [", stdout);
    for (size_t i = 0; i < ts->n_properties; i++) {
        const Twinmesh__PropertyState *p = ts->properties[i];
        char when[40];
        tm_cli_iso8601 (p->ts_ms, when, sizeof when);
        fputs (i? ",\n  {\"name\": ": "\n  {\"name\": ", stdout);
        tm_cli_json_string (stdout, p->name);
        fputs (", \"value\": ", stdout);
        tm_cli_json_number (stdout, p->value);
        fprintf (stdout, ", \"ts_ms\": %lld, \"time\": \"%s\", \"count\": %llu",
                 (long long) p->ts_ms, when, (unsigned long long) p->count);
        fprintf (stdout, ", \"in_range\": %llu", (unsigned long long) p->in_range);
        const struct {
            const char *name;
            double v;
        } stats[] = {{"mean", p->mean},   {"stddev", p->stddev}, {"min", p->min},
                     {"max", p->max},     {"ewma", p->ewma},     {"level", p->level},
                     {"trend_per_s", p->trend_per_s}, {"anomaly", p->anomaly}};
        for (size_t k = 0; k < sizeof stats / sizeof stats[0]; k++) {
            fprintf (stdout, ", \"%s\": ", stats[k].name);
            //  No in-range reading yet: the statistics do not exist.
            if (p->in_range == 0)
                fputs ("null", stdout);
            else
                tm_cli_json_number (stdout, stats[k].v);
        }
        if (p->derived)
            fputs (", \"derived\": true", stdout);
        fprintf (stdout, ", \"quality\": %u, \"flags\": ", p->quality);
        tm_cli_json_string (stdout, s_quality_text (p->quality));
        fputc ('}', stdout);
    }
    fputs (ts->n_properties? "\n]": "]", stdout);
    tm_commands_cli_print (stdout, desired, true);
    tm_hier_cli_print_json (stdout, ts);
    fputs ("}\n", stdout);
}

static void
s_print_twin_text (const Twinmesh__TwinState *ts, const char *entity, uint32_t shard,
                   const char *worker)
{
    char *safe_entity = s_printable (entity);
    char *safe_model = s_printable (ts->model && *ts->model? ts->model: "-");
    char *safe_worker = s_printable (worker);
    printf ("entity      %s\nmodel       %s\nshard       %u\nworker      %s\nversion     %llu\n"
            "sync        %s\nconfidence  %.2f\n\n",
            safe_entity? safe_entity: "?", safe_model? safe_model: "?", shard,
            safe_worker? safe_worker: "?", (unsigned long long) ts->version,
            ts->sync && *ts->sync? ts->sync: "unknown", ts->confidence);
    free (safe_entity);
    free (safe_model);
    free (safe_worker);
    for (size_t i = 0; i < ts->n_attributes; i++) {
        char *name = s_printable (ts->attributes[i]->name);
        char *value = s_printable (ts->attributes[i]->value);
        printf ("%-11s %s\n", name? name: "?", value? value: "?");
        free (name);
        free (value);
    }
    if (ts->n_attributes)
        printf ("\n");
    if (ts->n_properties == 0) {
        printf ("(no properties yet)\n");
        tm_hier_cli_print_text (stdout, ts);
        return;
    }
    static const bool right[] = {false, true, false, true, true, true, true, true, true, true,
                                 false};
    s_table_t table;
    s_table_init (&table, 11, right);
    const char *head[] = {"PROPERTY", "VALUE", "TIMESTAMP (UTC)", "COUNT", "MEAN", "STDDEV",
                          "MIN", "MAX", "TREND/H", "ANOMALY", "FLAGS"};
    s_table_row (&table, head);
    for (size_t i = 0; i < ts->n_properties; i++) {
        const Twinmesh__PropertyState *p = ts->properties[i];
        char value[48], when[40], count[24], mean[32], sd[32], mn[32], mx[32], trend[32],
            anomaly[32];
        if (isnan (p->value))
            snprintf (value, sizeof value, "NaN");
        else
            snprintf (value, sizeof value, "%.6g", p->value);
        tm_cli_iso8601 (p->ts_ms, when, sizeof when);
        snprintf (count, sizeof count, p->derived? "-": "%llu", (unsigned long long) p->count);
        bool have = p->in_range > 0;
        snprintf (mean, sizeof mean, have? "%.4g": "-", p->mean);
        snprintf (sd, sizeof sd, have? "%.3g": "-", p->stddev);
        snprintf (mn, sizeof mn, have? "%.4g": "-", p->min);
        snprintf (mx, sizeof mx, have? "%.4g": "-", p->max);
        snprintf (trend, sizeof trend, have? "%+.3g": "-", p->trend_per_s * 3600.0);
        snprintf (anomaly, sizeof anomaly, have? "%.1f": "-", p->anomaly);
        const char *row[] = {p->name, value, when,  count,   mean,
                             sd,      mn,    mx,    trend,   anomaly,
                             p->derived? "derived": s_quality_text (p->quality)};
        s_table_row (&table, row);
    }
    s_table_print (&table, stdout);
    s_table_fini (&table);
    tm_hier_cli_print_text (stdout, ts);
}

int
tm_cli_twin_request (tm_cli_t *cli, const char *id, int type, const void *body, size_t size,
                     const char *what, tm_msg_t *reply, tm_cli_owner_t *owner)
{
    memset (reply, 0, sizeof *reply);
    memset (owner, 0, sizeof *owner);
    int result = 1;
    tm_mapclient_t *mc = NULL;
    zsock_t *sock = NULL;
    zcert_t *cert = tm_cli_cert (cli);
    const char *broker_key = cert? tm_cli_broker_key (cli): NULL;
    if (!broker_key)
        return 1;
    const char *endpoint = tm_config_str (cli->config, "broker");
    int64_t timeout = tm_cli_timeout_ms (cli);
    size_t id_len = strlen (id);
    mc = tm_mapclient_new (endpoint, NULL, broker_key, cert);
    if (!mc) {
        fprintf (stderr, "twinctl: cannot connect to the broker at '%s' (check --broker)\n",
                 endpoint);
        goto done;
    }
    zsock_set_linger (tm_mapclient_req_sock (mc), 0);
    const tm_shardmap_t *map = tm_mapclient_fetch (mc, (int) timeout);
    if (!map) {
        if (tm_mapclient_last_reply_ms (mc) > 0)
            fprintf (stderr, "twinctl: the broker at %s has no shard map yet (no workers have "
                             "registered; see twinctl status)\n", endpoint);
        else
            fprintf (stderr, "twinctl: no reply from broker at %s within %s (is it running? is "
                             "this key on its allow-list?)\n",
                     endpoint, tm_cli_timeout_text (cli));
        goto done;
    }
    uint32_t shard = tm_shardmap_shard_of (map, id, id_len);
    uint32_t index = tm_shardmap_owner (map, shard);
    owner->shard = shard;
    if (index == TM_SHARDMAP_UNASSIGNED || index >= map->nworkers) {
        fprintf (stderr, "twinctl: shard %u of twin '%s' has no owner in map epoch %llu (see "
                         "twinctl status)\n",
                 shard, id, (unsigned long long) map->epoch);
        goto done;
    }
    const tm_shardmap_worker_t *w = &map->workers[index];
    snprintf (owner->worker, sizeof owner->worker, "%s", w->id);
    snprintf (owner->endpoint, sizeof owner->endpoint, "%s", w->endpoint);
    sock = tm_net_client (ZMQ_DEALER, w->endpoint, cert, w->public_key);
    if (!sock) {
        fprintf (stderr, "twinctl: cannot connect to worker %s at '%s'\n", w->id, w->endpoint);
        goto done;
    }
    zsock_set_linger (sock, 0);
    int rc = tm_cli_request (sock, type, map->epoch, body, size, timeout, reply);
    if (rc == TM_CLI_E_TIMEOUT) {
        fprintf (stderr, "twinctl: no reply from worker %s at %s within %s (is it up? see "
                         "twinctl status; is this key on its allow-list?)\n",
                 w->id, w->endpoint, tm_cli_timeout_text (cli));
        goto done;
    }
    if (rc != 0) {
        fprintf (stderr, "twinctl: %s from worker %s at %s\n",
                 rc == TM_CLI_E_MALFORMED? "malformed reply": "request failed", w->id,
                 w->endpoint);
        goto done;
    }
    int status = reply->hdr.status;
    const char *detail = *reply->hdr.detail? reply->hdr.detail: "no detail";
    if (status == TWINMESH__STATUS__NOT_FOUND)
        fprintf (stderr, "twinctl: twin '%s' not found: %s (shard %u, worker %s)\n", id, detail,
                 shard, w->id);
    else
    if (status == TWINMESH__STATUS__UNAUTHORIZED)
        fprintf (stderr, "twinctl: worker %s refused %s: unauthorized (%s); use a key with "
                         "role %s (--cert)\n", w->id, what, detail,
                 type == TWINMESH__MSG_TYPE__TWIN_SET? "operator or admin":
                                                     "analyst, operator or admin");
    else
    if (status == TWINMESH__STATUS__WRONG_SHARD)
        fprintf (stderr, "twinctl: worker %s does not own shard %u at its epoch %llu (map epoch "
                         "%llu): the map is changing, try again\n",
                 w->id, shard, (unsigned long long) reply->hdr.epoch,
                 (unsigned long long) map->epoch);
    else
    if (status != TWINMESH__STATUS__OK)
        fprintf (stderr, "twinctl: worker %s answered %s status %s: %s\n", w->id,
                 tm_msg_type_name (reply->hdr.type), tm_status_name (status), detail);
    else
        result = 0;
done:
    if (result != 0)
        tm_msg_fini (reply);
    zsock_destroy (&sock);
    tm_mapclient_destroy (&mc);
    return result;
}

static int
s_cmd_twin_get (int argc, char **argv)
{
    tm_cli_t *cli = tm_cli_new ("twinctl twin get", "twinctl twin get ID [--json]", "admin",
                                NULL, 0);
    if (!cli)
        return 1;
    int exit_code = 1;
    uint8_t *body = NULL;
    Twinmesh__TwinState *ts = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = s_load_exit (rc);
        goto done;
    }
    if (tm_config_argc (cli->config) != 1) {
        fprintf (stderr, "twinctl twin get: give exactly one twin id (see --help)\n");
        exit_code = 2;
        goto done;
    }
    const char *id = tm_config_arg (cli->config, 0);
    size_t id_len = strlen (id);
    if (id_len == 0 || id_len > 128 || !tm_util_utf8_valid (id, id_len)) {
        fprintf (stderr, "twinctl twin get: a twin id is 1-128 bytes of UTF-8\n");
        exit_code = 2;
        goto done;
    }
    Twinmesh__TwinGet get = TWINMESH__TWIN_GET__INIT;
    get.entity = (char *) id;
    size_t size = 0;
    body = tm_codec_pack_buf (&get.base, &size);
    tm_cli_owner_t owner;
    if (!body || tm_cli_twin_request (cli, id, TWINMESH__MSG_TYPE__TWIN_GET, body, size,
                                      "TWIN_GET", &reply, &owner) != 0)
        goto done;
    if (reply.hdr.type != TWINMESH__MSG_TYPE__TWIN) {
        fprintf (stderr, "twinctl: worker %s answered %s\n", owner.worker,
                 tm_msg_type_name (reply.hdr.type));
        goto done;
    }
    ts = TM_UNPACK (TwinState, twin_state, zframe_data (reply.body), zframe_size (reply.body));
    if (!ts) {
        fprintf (stderr, "twinctl: worker %s sent a twin that does not decode\n", owner.worker);
        goto done;
    }
    //  Show what we asked for where the worker leaves fields out.
    const char *entity = ts->entity && *ts->entity? ts->entity: id;
    uint32_t shown = ts->shard? ts->shard: owner.shard;
    const char *worker = ts->worker && *ts->worker? ts->worker: owner.worker;
    //  Desired values and their deltas (tm_commands_cli): a second request
    //  to the same owner.
    Twinmesh__DeltaList *desired = tm_commands_cli_fetch (cli, id);
    if (tm_cli_json (cli))
        s_print_twin_json (ts, entity, shown, worker, owner.endpoint, desired);
    else {
        s_print_twin_text (ts, entity, shown, worker);
        tm_commands_cli_print (stdout, desired, false);
    }
    tm_codec_free (&desired);
    exit_code = 0;
done:
    tm_codec_free (&ts);
    tm_msg_fini (&reply);
    free (body);
    tm_cli_destroy (&cli);
    return exit_code;
}

static void
s_twin_usage (FILE *out)
{
    fprintf (out, "usage: twinctl twin SUBCOMMAND ...\n\n"
                  "  get ID [--json]                  show a twin's state, read from the worker "
                  "that owns it\n"
                  "  forecast ID PROP [--horizon 1h] [--limit V]\n"
                  "                                   the property's forecast and time to a limit\n"
                  "  simulate ID --set PROP=VALUE [--horizon 1h] [--limit V]\n"
                  "                                   the same after a what-if value, on a copy\n"
                  "  history ID PROP [--from T] [--to T] [--step 5m] [--agg avg]\n"
                  "                                   the property's readings, raw or per step\n"
                  "  set ID PROP=VALUE[~TOL] ...      record desired values (operator, admin)\n"
                  "  unset ID PROP ...                withdraw desired values\n"
                  "  deltas ID ...                    the twins' outstanding desired values\n"
                  "  watch ID ... [--count N] [--timeout T]\n"
                  "                                   follow the twins' deltas through a gateway\n"
                  "  children PARENT [--limit N]      a parent's children and their latest "
                  "values\n\n"
                  "'twinctl twin SUBCOMMAND --help' lists its settings.\n");
}

static int
s_cmd_twin (int argc, char **argv)
{
    if (argc < 2 || !strcmp (argv[1], "--help") || !strcmp (argv[1], "-h")
        || !strcmp (argv[1], "help")) {
        s_twin_usage (argc < 2? stderr: stdout);
        return argc < 2? 2: 0;
    }
    if (strcmp (argv[1], "get") == 0)
        return s_cmd_twin_get (argc - 1, argv + 1);
    if (strcmp (argv[1], "forecast") == 0)
        return tm_predict_forecast_main (argc - 1, argv + 1);
    if (strcmp (argv[1], "simulate") == 0)
        return tm_predict_simulate_main (argc - 1, argv + 1);
    if (strcmp (argv[1], "history") == 0)
        return tm_history_main (argc - 1, argv + 1);
    if (strcmp (argv[1], "set") == 0)
        return tm_commands_cli_set_main (argc - 1, argv + 1);
    if (strcmp (argv[1], "unset") == 0)
        return tm_commands_cli_unset_main (argc - 1, argv + 1);
    if (strcmp (argv[1], "deltas") == 0)
        return tm_commands_cli_deltas_main (argc - 1, argv + 1);
    if (strcmp (argv[1], "watch") == 0)
        return tm_commands_cli_watch_main (argc - 1, argv + 1);
    if (strcmp (argv[1], "children") == 0)
        return tm_hier_cli_children_main (argc - 1, argv + 1);
    fprintf (stderr, "twinctl twin: unknown subcommand '%s'\n", argv[1]);
    s_twin_usage (stderr);
    return 2;
}

static const tm_setting_t s_keygen_settings[] = {
    {"log_level", TM_CFG_STR, "warn", "log level: error, warn, info or debug"},
    {"keys", TM_CFG_STR, "./keys", "key directory, the default of --dir"},
    {"dir", TM_CFG_STR, NULL, "directory to write the key files to (default: <keys>; created "
                              "if missing)"},
    {"role", TM_CFG_STR, NULL, "the key's role: ingest, analyst, operator, admin, site, broker, "
                               "gateway or worker"},
    {"force", TM_CFG_BOOL, "false", "replace existing key files of that name"},
};

//  Key names become file names and appear in logs: keep them plain.
static bool
s_key_name_valid (const char *name)
{
    size_t n = strlen (name);
    if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
                     name[i]))
            return false;
    return true;
}

static int
s_cmd_keygen (int argc, char **argv)
{
    tm_config_t *config = tm_config_new ("twinctl keygen",
                                         "twinctl keygen NAME --role ROLE [--dir DIR] [--force]",
                                         s_keygen_settings,
                                         sizeof s_keygen_settings / sizeof s_keygen_settings[0]);
    if (!config)
        return 1;
    int exit_code = 2;
    char *dir = NULL, *public_path = NULL, *secret_path = NULL;
    int rc = tm_config_load (config, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    int level = tm_log_level_parse (tm_config_str (config, "log_level"));
    tm_log_init ("twinctl", level < 0? TM_LOG_WARN: (tm_log_level_t) level);
    if (tm_config_argc (config) != 1) {
        fprintf (stderr, "twinctl keygen: give exactly one key NAME (see --help)\n");
        goto done;
    }
    const char *name = tm_config_arg (config, 0);
    if (!s_key_name_valid (name)) {
        fprintf (stderr, "twinctl keygen: '%s' is not a usable key name (1-64 of A-Z a-z 0-9 . "
                         "_ -, not starting with '.' or '-')\n", name);
        goto done;
    }
    const char *role_name = tm_config_str (config, "role");
    tm_role_t role = tm_role_parse (role_name);
    if (role == TM_ROLE_NONE) {
        if (role_name)
            fprintf (stderr, "twinctl keygen: unknown role '%s'; ", role_name);
        else
            fprintf (stderr, "twinctl keygen: missing --role; ");
        fprintf (stderr, "give --role ingest, analyst, operator, admin, site, broker, gateway "
                         "or worker\n");
        goto done;
    }
    exit_code = 1;
    const char *dir_set = tm_config_str (config, "dir");
    dir = strdup (dir_set && *dir_set? dir_set: tm_config_str (config, "keys"));
    if (!dir || asprintf (&public_path, "%s/%s.key", dir, name) < 0
        || asprintf (&secret_path, "%s/%s.key_secret", dir, name) < 0) {
        public_path = secret_path = NULL;
        goto done;
    }
    if (tm_util_mkdir_p (dir) != 0 || access (dir, W_OK) != 0) {
        fprintf (stderr, "twinctl keygen: cannot create or write to directory '%s': %s\n", dir,
                 strerror (errno));
        goto done;
    }
    bool force = tm_config_bool (config, "force");
    struct stat st;
    bool exists = stat (public_path, &st) == 0 || stat (secret_path, &st) == 0;
    if (exists && !force) {
        fprintf (stderr, "twinctl keygen: key '%s' already exists in %s (use --force to replace "
                         "it; whoever holds the old key will then be refused)\n", name, dir);
        goto done;
    }
    if (exists) {
        //  Remove first: rewriting in place would keep the old file's mode.
        if ((unlink (public_path) != 0 && errno != ENOENT)
            || (unlink (secret_path) != 0 && errno != ENOENT)) {
            fprintf (stderr, "twinctl keygen: cannot replace the old key files in %s: %s\n", dir,
                     strerror (errno));
            goto done;
        }
    }
    if (tm_auth_keygen (dir, name, role) != 0) {
        fprintf (stderr, "twinctl keygen: cannot write %s and %s (check the directory's "
                         "permissions and free space)\n", public_path, secret_path);
        goto done;
    }
    printf ("%s  public key, role %s: put it in the allow-list of the servers it talks to\n"
            "%s  secret key (mode 0600): keep it on this host only\n",
            public_path, tm_role_name (role), secret_path);
    exit_code = 0;
done:
    free (public_path);
    free (secret_path);
    free (dir);
    tm_config_destroy (&config);
    return exit_code;
}

// -------------------------------------------------------------------------
//  Dispatch

typedef struct {
    const char *name;              //  Subcommand word
    const char *synopsis;          //  Arguments shown in the command list
    const char *summary;           //  One line for the command list
    int (*run) (int argc, char **argv);   //  argv[0] is the subcommand
} s_command_t;

static const s_command_t s_commands[] = {
    {"keygen", "NAME --role ROLE", "make a CURVE keypair (NAME.key, NAME.key_secret)",
     s_cmd_keygen},
    {"status", "[--json]", "show the shard map and every node, as the broker sees them",
     s_cmd_status},
    {"twin", "get|forecast|simulate|history|children|set|unset|deltas|watch ID ...",
     "a twin's state, forecasts and what-ifs, from the worker that owns it",
     s_cmd_twin},
    {"model", "load|list|show ...", "load model files into the broker, list and show them",
     tm_models_cli_main},
    {"query", "'SELECT ...' [--format F]", "query the twins across the cluster (docs/queries.md)",
     tm_query_cli_main},
    {"wait-ready", "[--workers N]",
     "wait until every shard is assigned, N workers are up and all nodes have the map",
     s_cmd_wait_ready},
    {"sim", "...", "feed a gateway with a simulated city", tm_sim_main},
    {"replay", "...", "send a data set (CSV) through a gateway", tm_replay_main},
};

#define TM_CLI_NCOMMANDS (sizeof s_commands / sizeof s_commands[0])

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: twinctl COMMAND [ARGS] [--SETTING VALUE ...]\n\ncommands:\n");
    for (size_t i = 0; i < TM_CLI_NCOMMANDS; i++) {
        char left[64];
        snprintf (left, sizeof left, "%s %s", s_commands[i].name, s_commands[i].synopsis);
        fprintf (out, "  %-30s %s\n", left, s_commands[i].summary);
    }
    fprintf (out, "  %-30s %s\n", "help [COMMAND]", "show this list, or a command's settings");
    fprintf (out, "\n'twinctl COMMAND --help' lists a command's settings; each can also come "
                  "from --config FILE\nor a TWINMESH_<NAME> environment variable.\n");
}

int
tm_cli_main (int argc, char **argv)
{
    const char *cmd = argc < 2? "--help": argv[1];
    if (!strcmp (cmd, "--help") || !strcmp (cmd, "-h")) {
        s_usage (stdout);
        return 0;
    }
    if (!strcmp (cmd, "help")) {
        if (argc < 3) {
            s_usage (stdout);
            return 0;
        }
        //  "help CMD" is "CMD --help".
        for (size_t i = 0; i < TM_CLI_NCOMMANDS; i++)
            if (!strcmp (argv[2], s_commands[i].name)) {
                char *help_argv[] = {argv[2], (char *) "--help", NULL};
                return s_commands[i].run (2, help_argv);
            }
        cmd = argv[2];
    }
    else
        for (size_t i = 0; i < TM_CLI_NCOMMANDS; i++)
            if (!strcmp (cmd, s_commands[i].name))
                return s_commands[i].run (argc - 1, argv + 1);
    fprintf (stderr, "twinctl: unknown command '%s' (see twinctl --help)\n", cmd);
    return 2;
}
