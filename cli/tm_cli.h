/*  tm_cli - twinctl: the admin and user command line

    tm_cli_main dispatches a subcommand. The helpers below are what every
    client subcommand shares (sim and replay included): one settings table
    for the keys and the broker, loading the caller's certificate with a
    message that says what to do when it is missing, one request/reply
    exchange with a deadline, and JSON and time formatting.

    Exit codes: 0 done, 1 failed (the message says what to check), 2 usage.
*/
#ifndef TM_CLI_H_INCLUDED
#define TM_CLI_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tm_config.h"
#include "tm_msg.h"

//  Run twinctl; argv[1] names the subcommand. Returns the exit code.
int tm_cli_main (int argc, char **argv);

typedef struct _tm_cli_t tm_cli_t;

//  Settings of a client subcommand: the shared ones (log_level, keys,
//  cert, broker, broker_key, timeout, json) and extra (borrowed; an extra
//  setting with a shared name replaces it, e.g. a longer timeout). The
//  cert defaults to <keys>/<cert_name>.key_secret ("admin", "producer").
//  program is e.g. "twinctl status". NULL on allocation failure.
tm_cli_t *tm_cli_new (const char *program, const char *usage, const char *cert_name,
                      const tm_setting_t *extra, size_t nextra);

//  Destroy; nulls the pointer.
void tm_cli_destroy (tm_cli_t **self_p);

//  Load from argv (argv[0] is the subcommand) and set up logging. Returns
//  0, TM_CONFIG_E_HELP or TM_CONFIG_E_SAMPLE (printed: exit 0), or -1
//  (message printed: exit 2).
int tm_cli_load (tm_cli_t *self, int argc, char **argv);

//  The loaded settings (borrowed).
tm_config_t *tm_cli_config (tm_cli_t *self);

//  The timeout setting in milliseconds, and as the user wrote it ("5s").
int64_t tm_cli_timeout_ms (tm_cli_t *self);
const char *tm_cli_timeout_text (tm_cli_t *self);

//  The json setting.
bool tm_cli_json (tm_cli_t *self);

//  Our secret certificate, loaded on first call (borrowed). NULL with a
//  message on stderr saying which file and how to make one.
zcert_t *tm_cli_cert (tm_cli_t *self);

//  The broker's Z85 public key, loaded on first call (borrowed). NULL with
//  a message on stderr.
const char *tm_cli_broker_key (tm_cli_t *self);

//  A DEALER connected to the broker with our key (caller destroys). Linger
//  is 0, so an unanswered request never delays exit. NULL with a message.
zsock_t *tm_cli_broker_connect (tm_cli_t *self);

//  Outcomes of tm_cli_request besides 0 (reply received).
#define TM_CLI_E_TIMEOUT 1         //  no reply within the timeout
#define TM_CLI_E_MALFORMED 2       //  something came back that is not a message

//  Send one request on a DEALER and wait up to timeout_ms for its reply
//  (replies to earlier requests are skipped). On 0, *reply holds the reply
//  (an ERROR answer counts): call tm_msg_fini. -1 if sending failed or the
//  wait was interrupted.
int tm_cli_request (zsock_t *sock, int type, uint64_t epoch, const void *body, size_t size,
                    int64_t timeout_ms, tm_msg_t *reply);

//  Which worker answered for a twin.
typedef struct {
    uint32_t shard;                //  The twin's shard
    char worker[132];              //  Owner worker id
    char endpoint[264];            //  Its endpoint
} tm_cli_owner_t;

//  Send a request of type about twin id (body borrowed) to the worker that
//  owns it, found through the broker's shard map. Returns 0 with an OK
//  *reply (caller calls tm_msg_fini) and *owner filled, or 1 after printing
//  why not to stderr (what names the request in messages, e.g. "TWIN_GET").
int tm_cli_twin_request (tm_cli_t *cli, const char *id, int type, const void *body, size_t size,
                         const char *what, tm_msg_t *reply, tm_cli_owner_t *owner);

//  Write s as a JSON string literal: quotes, escapes, invalid UTF-8 as
//  U+FFFD, so the output is valid JSON whatever s holds. NULL writes "".
void tm_cli_json_string (FILE *out, const char *s);

//  Write a double as a JSON number, or null if it is not finite.
void tm_cli_json_number (FILE *out, double value);

//  Unix milliseconds as ISO-8601 UTC with milliseconds
//  ("2024-05-01T12:00:00.250Z") into buf (32 bytes are enough).
void tm_cli_iso8601 (int64_t ts_ms, char *buf, size_t size);

#endif
