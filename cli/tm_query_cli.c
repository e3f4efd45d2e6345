/*  tm_query_cli - twinctl query

    One QUERY to the broker, one QUERY_RESULT back. The broker answers by
    the query's deadline even when workers are slow or gone, so the
    client's own wait is the deadline plus a margin for the trip; a partial
    answer is printed with a loud trailer and exit status 3, so scripts
    can tell a complete answer from an incomplete one.
*/
#include "tm_query_cli.h"
#include "tm_cli.h"
#include "tm_codec.h"
#include "tm_qexec.h"
#include "tm_query.h"
#include "tm_util.h"

#include <stdlib.h>
#include <string.h>

#define S_EXIT_PARTIAL 3
#define S_MARGIN_MS 2000               //  Wait past the deadline for the reply's trip

static const char s_usage[] =
    "twinctl query 'SELECT ... FROM twins [WHERE ...] [GROUP BY ...] [ORDER BY ...] [LIMIT n]'\n"
    "              [--format table|json|csv] [--deadline 3s]\n"
    "\n"
    "Run a query over every twin of the cluster (docs/queries.md is the language). The\n"
    "broker parses it, sends the plan to every worker, merges their partial answers and\n"
    "answers by the deadline: workers that have not answered by then are named in a\n"
    "PARTIAL ANSWER line (stderr for table and csv, \"partial\" and \"missing_shards\" in\n"
    "json). A syntax error is checked here first and shows the column and what was\n"
    "expected. Needs a key with role analyst, operator or admin (--cert).\n"
    "Exit status 0 complete answer, 3 partial answer, 1 failed, 2 usage.";

static const tm_setting_t s_settings[] = {
    {"format", TM_CFG_STR, "table", "table, json or csv (--json is --format json)"},
    {"deadline", TM_CFG_DURATION, "0", "answer by then, partial if need be (0: the broker's "
                                       "query_deadline, 3s by default; at most 60s)"},
};

//  Show a syntax error under the text, with a caret at the column.
static void
s_print_syntax (const char *program, const char *text, const tm_expr_error_t *err)
{
    fprintf (stderr, "%s: %s\n", program, err->message);
    if (err->line != 1 || strlen (text) > 200 || strchr (text, '\n'))
        return;
    fprintf (stderr, "  %s\n  %*s^\n", text, (int) (err->column > 0? err->column - 1: 0), "");
}

int
tm_query_cli_main (int argc, char **argv)
{
    const char *program = "twinctl query";
    tm_cli_t *cli = tm_cli_new (program, s_usage, "admin", s_settings,
                                sizeof s_settings / sizeof s_settings[0]);
    if (!cli)
        return 1;
    int exit_code = 2;
    zsock_t *sock = NULL;
    uint8_t *body = NULL;
    tm_qresult_t *res = NULL;
    tm_msg_t reply;
    memset (&reply, 0, sizeof reply);
    int rc = tm_cli_load (cli, argc, argv);
    if (rc != 0) {
        exit_code = rc > 0? 0: 2;
        goto done;
    }
    tm_config_t *cfg = tm_cli_config (cli);
    if (tm_config_argc (cfg) != 1) {
        fprintf (stderr, "%s: give the query as one argument (quote it)\n", program);
        goto done;
    }
    const char *text = tm_config_arg (cfg, 0);
    const char *fmt = tm_cli_json (cli)? "json": tm_config_str (cfg, "format");
    tm_qresult_format_t format;
    if (!strcmp (fmt, "table"))
        format = TM_QRESULT_TABLE;
    else
    if (!strcmp (fmt, "json"))
        format = TM_QRESULT_JSON;
    else
    if (!strcmp (fmt, "csv"))
        format = TM_QRESULT_CSV;
    else {
        fprintf (stderr, "%s: --format is table, json or csv\n", program);
        goto done;
    }
    int64_t deadline = tm_config_int (cfg, "deadline");
    if (deadline < 0 || deadline > 60000) {
        fprintf (stderr, "%s: --deadline is 0 .. 60s\n", program);
        goto done;
    }
    //  Parse here first: a typo costs no round trip, and the message can
    //  point at the text.
    tm_expr_error_t err = {0};
    tm_query_t *local = tm_query_parse (text, &err);
    if (!local) {
        s_print_syntax (program, text, &err);
        goto done;
    }
    tm_query_destroy (&local);
    exit_code = 1;
    Twinmesh__QueryRequest req = TWINMESH__QUERY_REQUEST__INIT;
    req.text = (char *) text;
    req.deadline_ms = (uint32_t) deadline;
    size_t size = 0;
    body = tm_codec_pack_buf (&req.base, &size);
    sock = body? tm_cli_broker_connect (cli): NULL;
    if (!sock)
        goto done;
    int64_t wait = (deadline? deadline: 3000) + S_MARGIN_MS;
    if (tm_cli_timeout_ms (cli) > wait)
        wait = tm_cli_timeout_ms (cli);
    rc = tm_cli_request (sock, TWINMESH__MSG_TYPE__QUERY, 0, body, size, wait, &reply);
    const char *endpoint = tm_config_str (cfg, "broker");
    if (rc == TM_CLI_E_TIMEOUT) {
        fprintf (stderr, "%s: no answer from the broker at %s within %lld ms (is it running? "
                         "is this key on its allow-list?)\n",
                 program, endpoint, (long long) wait);
        goto done;
    }
    if (rc != 0) {
        fprintf (stderr, "%s: request to the broker at %s failed\n", program, endpoint);
        goto done;
    }
    for (char *p = reply.hdr.detail; *p; p++)
        if ((unsigned char) *p < 0x20 || *p == 0x7f)
            *p = '?';
    if (reply.hdr.status != TWINMESH__STATUS__OK) {
        const char *hint = reply.hdr.status == TWINMESH__STATUS__UNAUTHORIZED?
                           " (use a key with role analyst, operator or admin: --cert)": "";
        fprintf (stderr, "%s: the broker refused the query: %s: %s%s\n", program,
                 tm_status_name (reply.hdr.status), reply.hdr.detail, hint);
        goto done;
    }
    char why[256] = "";
    res = tm_qresult_decode (zframe_data (reply.body), zframe_size (reply.body), why, sizeof why);
    if (!res) {
        fprintf (stderr, "%s: the broker's answer does not decode: %s\n", program, why);
        goto done;
    }
    if (tm_qresult_print (res, format, stdout, stderr) != 0) {
        fprintf (stderr, "%s: cannot write the answer\n", program);
        goto done;
    }
    fflush (stdout);
    exit_code = tm_qresult_partial (res)? S_EXIT_PARTIAL: 0;
done:
    tm_qresult_destroy (&res);
    tm_msg_fini (&reply);
    zsock_destroy (&sock);
    free (body);
    tm_cli_destroy (&cli);
    return exit_code;
}
