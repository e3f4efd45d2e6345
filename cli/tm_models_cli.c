/*  tm_models_cli - twinctl model load / list / show

    Three short exchanges with the broker (MODEL_PUT, MODEL_LIST,
    MODEL_GET). The care goes into the messages: a file with a mistake is
    refused here, naming the file and the JSON path, without a round trip;
    a refusal by the broker (a conflicting or older version, a role that
    may not load) says what to do next. Text from the broker is cleaned of
    control characters before it reaches a terminal.
*/
#include "tm_models_cli.h"
#include "tm_cli.h"
#include "tm_codec.h"
#include "tm_model.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define TM_MODELS_CLI_DESC_MAX 60      //  list: description columns shown, first line only

static const char s_load_usage[] =
    "twinctl model load FILE [FILE...]\n"
    "\n"
    "Check each model file (docs/models.md) locally, then send it to the broker,\n"
    "which keeps one version of each model by name. Prints NAME vVERSION: stored\n"
    "(new, or a higher version replaced the one held) or unchanged (same version,\n"
    "same content). Refused: a file with a mistake (the message gives the file and\n"
    "the JSON path), the same version with different content, or an older version;\n"
    "the other files are still sent. Needs a key with role operator or admin.\n"
    "--json prints one line per file: {\"file\", \"outcome\": \"stored\" or \"unchanged\",\n"
    "\"name\", \"version\"} or {\"file\", \"outcome\": \"refused\", \"error\"}; errors that\n"
    "stop the command (no broker, a key that may not load) still go to stderr.\n"
    "Exit status 0 if every file was stored or unchanged, 1 otherwise, 2 usage.";

static const char s_list_usage[] =
    "twinctl model list [--json]\n"
    "\n"
    "List the broker's models in name order: NAME VERSION PROPERTIES DESCRIPTION\n"
    "(the description's first line, cut to 60 characters). --json prints\n"
    "{\"generation\": N, \"models\": [{\"name\", \"version\", \"properties\",\n"
    "\"description\"}, ...]}. Needs a key with role analyst, operator or admin.";

static const char s_show_usage[] =
    "twinctl model show NAME [--json]\n"
    "\n"
    "Print a model as the broker holds it: its canonical form (every default written\n"
    "out, x- fields dropped), indented by 2; --json prints the compact canonical text\n"
    "on one line. Exit status 1 if there is no model of that name. Needs a key with\n"
    "role analyst, operator or admin.";

// -------------------------------------------------------------------------
//  Helpers

//  Replace control characters in text from the network, in place, so a
//  detail line cannot move the cursor or forge output.
static void
s_clean (char *s)
{
    for (unsigned char *p = (unsigned char *) s; p && *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
}

//  Read a whole file of at most TM_MODEL_MAX_TEXT bytes (one more is read
//  so the parser can say "too large"). 0 with *text (caller frees), or -1
//  with a message in err.
static int
s_read_file (const char *path, char **text, size_t *len, char *err, size_t err_size)
{
    *text = NULL;
    FILE *f = fopen (path, "rb");
    if (!f) {
        snprintf (err, err_size, "%s: %s", path, strerror (errno));
        return -1;
    }
    char *buf = malloc (TM_MODEL_MAX_TEXT + 1);
    size_t n = buf? fread (buf, 1, TM_MODEL_MAX_TEXT + 1, f): 0;
    bool bad = !buf || ferror (f);
    fclose (f);
    if (bad) {
        snprintf (err, err_size, "%s: %s", path, buf? "read error": "out of memory");
        free (buf);
        return -1;
    }
    *text = buf;
    *len = n;
    return 0;
}

//  Print why the broker did not answer a request as hoped. role_hint
//  names the roles that may make it.
static void
s_print_failure (tm_cli_t *cli, const char *program, const char *what, const char *role_hint,
                 int rc, tm_msg_t *reply)
{
    const char *endpoint = tm_config_str (tm_cli_config (cli), "broker");
    if (rc == TM_CLI_E_TIMEOUT)
        fprintf (stderr, "%s: no reply from broker at %s within %s (is it running? is this "
                         "key on its allow-list?)\n",
                 program, endpoint, tm_cli_timeout_text (cli));
    else
    if (rc != 0)
        fprintf (stderr, "%s: %s from broker at %s\n", program,
                 rc == TM_CLI_E_MALFORMED? "malformed reply": "request failed", endpoint);
    else {
        s_clean (reply->hdr.detail);
        const char *detail = *reply->hdr.detail? reply->hdr.detail: "(no detail)";
        if (reply->hdr.status == TWINMESH__STATUS__UNAUTHORIZED)
            fprintf (stderr, "%s: the broker at %s refused %s: unauthorized (%s); use a key "
                             "with role %s (--cert)\n",
                     program, endpoint, what, detail, role_hint);
        else
            fprintf (stderr, "%s: the broker at %s answered %s status %s: %s\n", program,
                     endpoint, tm_msg_type_name (reply->hdr.type),
                     tm_status_name (reply->hdr.status), detail);
    }
}

//  Common start of a subcommand: load settings, check the argument count
//  (at least min, at most max). 0 to go on, else *exit_code is set.
static int
s_start (tm_cli_t *cli, const char *program, int argc, char **argv, size_t min, size_t max,
         int *exit_code)
{
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        *exit_code = rc > 0? 0: 2;
        return -1;
    }
    size_t n = tm_config_argc (tm_cli_config (cli));
    if (n < min || n > max) {
        fprintf (stderr, "%s: %s (see --help)\n", program,
                 n < min? "missing argument": "too many arguments");
        *exit_code = 2;
        return -1;
    }
    return 0;
}

// -------------------------------------------------------------------------
//  load

//  Report one file's outcome: text (refusals on stderr) or a JSON line.
static void
s_load_report (bool json, const char *path, const char *outcome, const char *name,
               uint32_t version, const char *error)
{
    if (json) {
        fputs ("{\"file\": ", stdout);
        tm_cli_json_string (stdout, path);
        fputs (", \"outcome\": ", stdout);
        tm_cli_json_string (stdout, outcome);
        if (error) {
            fputs (", \"error\": ", stdout);
            tm_cli_json_string (stdout, error);
        }
        else {
            fputs (", \"name\": ", stdout);
            tm_cli_json_string (stdout, name);
            printf (", \"version\": %u", version);
        }
        fputs ("}\n", stdout);
    }
    else
    if (error)
        fprintf (stderr, "twinctl model load: %s\n", error);
    else
        printf ("%s v%u: %s\n", name, version, outcome);
}

//  Send one checked file. 0 stored or unchanged; 1 refused (printed, go on
//  with the next file); -1 the broker cannot be asked (printed, stop).
static int
s_load_one (tm_cli_t *cli, zsock_t *sock, const char *path, const char *text, size_t len)
{
    const char *program = "twinctl model load";
    Twinmesh__ModelPut put = TWINMESH__MODEL_PUT__INIT;
    put.json.data = (uint8_t *) text;
    put.json.len = len;
    size_t size = 0;
    uint8_t *body = tm_codec_pack_buf (&put.base, &size);
    if (!body) {
        fprintf (stderr, "%s: %s: out of memory\n", program, path);
        return -1;
    }
    tm_msg_t reply;
    int rc = tm_cli_request (sock, TWINMESH__MSG_TYPE__MODEL_PUT, 0, body, size,
                             tm_cli_timeout_ms (cli), &reply);
    free (body);
    int result = -1;
    Twinmesh__ModelAck *ack = NULL;
    if (rc == 0 && reply.hdr.type == TWINMESH__MSG_TYPE__MODEL_ACK
        && reply.hdr.status == TWINMESH__STATUS__OK) {
        ack = TM_UNPACK (ModelAck, model_ack, zframe_data (reply.body),
                         zframe_size (reply.body));
        if (ack) {
            s_clean (ack->name);
            s_load_report (tm_cli_json (cli), path, ack->unchanged? "unchanged": "stored",
                           ack->name, ack->version, NULL);
            result = 0;
        }
        else
            fprintf (stderr, "%s: %s: the broker's answer does not decode\n", program, path);
    }
    else
    if (rc == 0 && reply.hdr.type == TWINMESH__MSG_TYPE__MODEL_ACK
        && (reply.hdr.status == TWINMESH__STATUS__CONFLICT
            || reply.hdr.status == TWINMESH__STATUS__MALFORMED
            || reply.hdr.status == TWINMESH__STATUS__TOO_LARGE)) {
        s_clean (reply.hdr.detail);
        char error[TM_MODEL_ERR_SIZE];
        snprintf (error, sizeof error, "%s: refused: %s", path,
                  *reply.hdr.detail? reply.hdr.detail: tm_status_name (reply.hdr.status));
        s_load_report (tm_cli_json (cli), path, "refused", NULL, 0, error);
        result = 1;
    }
    else
        s_print_failure (cli, program, "MODEL_PUT", "operator or admin", rc, &reply);
    tm_codec_free (&ack);
    tm_msg_fini (&reply);
    return result;
}

static int
s_cmd_load (int argc, char **argv)
{
    const char *program = "twinctl model load";
    tm_cli_t *cli = tm_cli_new (program, s_load_usage, "admin", NULL, 0);
    if (!cli)
        return 1;
    int exit_code = 1;
    zsock_t *sock = NULL;
    if (s_start (cli, program, argc, argv, 1, SIZE_MAX, &exit_code) != 0)
        goto done;
    tm_config_t *cfg = tm_cli_config (cli);
    bool failed = false;
    for (size_t i = 0; i < tm_config_argc (cfg); i++) {
        const char *path = tm_config_arg (cfg, i);
        char err[TM_MODEL_ERR_SIZE];
        char *text = NULL;
        size_t len = 0;
        tm_model_t *model = NULL;
        //  The same read and parse as tm_model_load_file, keeping the text
        //  to send: the broker canonicalises the file itself.
        if (s_read_file (path, &text, &len, err, sizeof err) == 0)
            model = tm_model_parse (text, len, path, err, sizeof err);
        if (!model) {
            s_load_report (tm_cli_json (cli), path, "refused", NULL, 0, err);
            failed = true;
            free (text);
            continue;
        }
        tm_model_destroy (&model);
        if (!sock)
            sock = tm_cli_broker_connect (cli);
        int rc = sock? s_load_one (cli, sock, path, text, len): -1;
        free (text);
        if (rc != 0)
            failed = true;
        if (rc < 0)
            break;             //  no broker, or this key may not load: the rest would fail too
    }
    exit_code = failed? 1: 0;
done:
    zsock_destroy (&sock);
    tm_cli_destroy (&cli);
    return exit_code;
}

// -------------------------------------------------------------------------
//  list

//  The description's first line, control characters cleaned, cut after
//  TM_MODELS_CLI_DESC_MAX code points ("..." then). Caller frees.
static char *
s_short_description (const char *s)
{
    if (!s)
        s = "";
    size_t cut = strcspn (s, "\r\n");
    char *out = malloc (cut + 4);
    if (!out)
        return NULL;
    size_t n = 0, points = 0;
    bool more = false;
    for (size_t i = 0; i < cut; i++) {
        unsigned char c = (unsigned char) s[i];
        bool lead = (c & 0xC0) != 0x80;
        if (lead && points == TM_MODELS_CLI_DESC_MAX) {
            more = true;
            break;
        }
        points += lead;
        out[n++] = c < 0x20 || c == 0x7f? '?': (char) c;
    }
    if (more || s[cut]) {
        memcpy (out + n, "...", 3);
        n += 3;
    }
    out[n] = 0;
    return out;
}

static size_t
s_width (const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *) s; *p; p++)
        n += (*p & 0xC0) != 0x80;
    return n;
}

static void
s_print_list_text (const Twinmesh__ModelList *list)
{
    if (list->n_models == 0) {
        printf ("no models loaded (twinctl model load FILE)\n");
        return;
    }
    size_t wname = strlen ("NAME");
    for (size_t i = 0; i < list->n_models; i++) {
        s_clean (list->models[i]->name);
        if (s_width (list->models[i]->name) > wname)
            wname = s_width (list->models[i]->name);
    }
    printf ("%-*s  %10s  %10s  %s\n", (int) wname, "NAME", "VERSION", "PROPERTIES",
            "DESCRIPTION");
    for (size_t i = 0; i < list->n_models; i++) {
        const Twinmesh__ModelInfo *m = list->models[i];
        char *desc = s_short_description (m->description);
        size_t pad = wname - s_width (m->name);
        printf ("%s%*s  %10u  %10u  %s\n", m->name, (int) pad, "", m->version, m->properties,
                desc? desc: "");
        free (desc);
    }
}

static void
s_print_list_json (const Twinmesh__ModelList *list)
{
    printf ("{\"generation\": %llu, \"models\": [", (unsigned long long) list->generation);
    for (size_t i = 0; i < list->n_models; i++) {
        const Twinmesh__ModelInfo *m = list->models[i];
        fputs (i? ", {\"name\": ": "{\"name\": ", stdout);
        tm_cli_json_string (stdout, m->name);
        printf (", \"version\": %u, \"properties\": %u, \"description\": ", m->version,
                m->properties);
        tm_cli_json_string (stdout, m->description);
        fputc ('}', stdout);
    }
    fputs ("]}\n", stdout);
}

static int
s_cmd_list (int argc, char **argv)
{
    const char *program = "twinctl model list";
    tm_cli_t *cli = tm_cli_new (program, s_list_usage, "admin", NULL, 0);
    if (!cli)
        return 1;
    int exit_code = 1;
    zsock_t *sock = NULL;
    Twinmesh__ModelList *list = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    if (s_start (cli, program, argc, argv, 0, 0, &exit_code) != 0)
        goto done;
    sock = tm_cli_broker_connect (cli);
    if (!sock)
        goto done;
    int rc = tm_cli_request (sock, TWINMESH__MSG_TYPE__MODEL_LIST, 0, NULL, 0,
                             tm_cli_timeout_ms (cli), &reply);
    if (rc != 0 || reply.hdr.status != TWINMESH__STATUS__OK
        || reply.hdr.type != TWINMESH__MSG_TYPE__MODEL_LIST_REPLY) {
        s_print_failure (cli, program, "MODEL_LIST", "analyst, operator or admin", rc, &reply);
        goto done;
    }
    list = TM_UNPACK (ModelList, model_list, zframe_data (reply.body), zframe_size (reply.body));
    if (!list) {
        fprintf (stderr, "%s: the broker sent a list that does not decode\n", program);
        goto done;
    }
    if (tm_cli_json (cli))
        s_print_list_json (list);
    else
        s_print_list_text (list);
    exit_code = 0;
done:
    tm_codec_free (&list);
    tm_msg_fini (&reply);
    zsock_destroy (&sock);
    tm_cli_destroy (&cli);
    return exit_code;
}

// -------------------------------------------------------------------------
//  show

static void
s_indent (FILE *out, int depth)
{
    fputc ('\n', out);
    for (int i = 0; i < depth; i++)
        fputs ("  ", out);
}

//  Indent valid compact JSON by 2, as json_dumps (JSON_INDENT (2)) lays
//  it out. Not json_dumps itself: jansson re-prints reals with %.17g, so
//  0.1 would show as 0.10000000000000001; this keeps the canonical
//  number text as it is.
static void
s_print_pretty (FILE *out, const char *text, size_t len)
{
    bool in_string = false, escaped = false;
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == 0x7f)
                fputs ("\\u007f", out);     //  valid in JSON, not on a terminal
            else
                fputc (c, out);
            if (escaped)
                escaped = false;
            else
            if (c == '\\')
                escaped = true;
            else
            if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
            case '"':
                in_string = true;
                fputc (c, out);
                break;
            case '{':
            case '[':
                if (i + 1 < len && text[i + 1] == (c == '{'? '}': ']')) {
                    fputc (c, out);
                    fputc (text[++i], out);
                    break;
                }
                fputc (c, out);
                s_indent (out, ++depth);
                break;
            case '}':
            case ']':
                s_indent (out, --depth);
                fputc (c, out);
                break;
            case ',':
                fputc (c, out);
                s_indent (out, depth);
                break;
            case ':':
                fputs (": ", out);
                break;
            case ' ':
            case '\t':
            case '\r':
            case '\n':
                break;
            default:
                fputc (c, out);
        }
    }
    fputc ('\n', out);
}

static int
s_cmd_show (int argc, char **argv)
{
    const char *program = "twinctl model show";
    tm_cli_t *cli = tm_cli_new (program, s_show_usage, "admin", NULL, 0);
    if (!cli)
        return 1;
    int exit_code = 1;
    zsock_t *sock = NULL;
    uint8_t *body = NULL;
    Twinmesh__ModelText *mt = NULL;
    json_t *checked = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    if (s_start (cli, program, argc, argv, 1, 1, &exit_code) != 0)
        goto done;
    const char *name = tm_config_arg (tm_cli_config (cli), 0);
    Twinmesh__ModelGet get = TWINMESH__MODEL_GET__INIT;
    get.name = (char *) name;
    size_t size = 0;
    body = tm_codec_pack_buf (&get.base, &size);
    sock = body? tm_cli_broker_connect (cli): NULL;
    if (!sock)
        goto done;
    int rc = tm_cli_request (sock, TWINMESH__MSG_TYPE__MODEL_GET, 0, body, size,
                             tm_cli_timeout_ms (cli), &reply);
    if (rc == 0 && reply.hdr.status == TWINMESH__STATUS__NOT_FOUND) {
        s_clean (reply.hdr.detail);
        fprintf (stderr, "%s: %s (twinctl model list shows the models)\n", program,
                 *reply.hdr.detail? reply.hdr.detail: "no such model");
        goto done;
    }
    if (rc != 0 || reply.hdr.status != TWINMESH__STATUS__OK
        || reply.hdr.type != TWINMESH__MSG_TYPE__MODEL) {
        s_print_failure (cli, program, "MODEL_GET", "analyst, operator or admin", rc, &reply);
        goto done;
    }
    mt = TM_UNPACK (ModelText, model_text, zframe_data (reply.body), zframe_size (reply.body));
    //  The text is printed as JSON: make sure it is JSON first (this also
    //  rules out raw control characters, which JSON strings cannot hold).
    json_error_t jerr;
    if (mt)
        checked = json_loadb ((const char *) mt->json.data, mt->json.len, 0, &jerr);
    if (!checked) {
        fprintf (stderr, "%s: the broker sent a model that is not JSON\n", program);
        goto done;
    }
    if (tm_cli_json (cli)) {
        fwrite (mt->json.data, 1, mt->json.len, stdout);
        fputc ('\n', stdout);
    }
    else
        s_print_pretty (stdout, (const char *) mt->json.data, mt->json.len);
    exit_code = 0;
done:
    json_decref (checked);
    tm_codec_free (&mt);
    tm_msg_fini (&reply);
    free (body);
    zsock_destroy (&sock);
    tm_cli_destroy (&cli);
    return exit_code;
}

// -------------------------------------------------------------------------
//  Dispatch

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: twinctl model SUBCOMMAND ...\n\n"
                  "  load FILE [FILE...]              check model files and load them into "
                  "the broker\n"
                  "  list [--json]                    the broker's models: name, version, "
                  "properties\n"
                  "  show NAME [--json]               one model, as the broker holds it\n\n"
                  "'twinctl model SUBCOMMAND --help' lists its settings; docs/models.md "
                  "describes the format.\n");
}

int
tm_models_cli_main (int argc, char **argv)
{
    if (argc >= 2 && (!strcmp (argv[1], "--help") || !strcmp (argv[1], "-h")
                      || !strcmp (argv[1], "help"))) {
        s_usage (stdout);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') {
        fprintf (stderr, "twinctl model: give a subcommand first\n");
        s_usage (stderr);
        return 2;
    }
    if (strcmp (argv[1], "load") == 0)
        return s_cmd_load (argc - 1, argv + 1);
    if (strcmp (argv[1], "list") == 0)
        return s_cmd_list (argc - 1, argv + 1);
    if (strcmp (argv[1], "show") == 0)
        return s_cmd_show (argc - 1, argv + 1);
    fprintf (stderr, "twinctl model: unknown subcommand '%s'\n", argv[1]);
    s_usage (stderr);
    return 2;
}
