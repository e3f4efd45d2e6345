/*  tm_commands_cli - twinctl twin set | unset | deltas | watch: commands

    set and unset go to the worker that owns the twin (found through the
    broker's shard map, like twin get), which answers once the change is
    durable. deltas prints the outstanding desired values of twins (a
    snapshot). watch is the device side: it subscribes to the twins' delta
    events at a gateway, waits until the gateway confirms the subscription,
    takes the snapshot through the same gateway (which asks the owners),
    and then prints every event newer
    than the snapshot, one line each (docs/commands.md, the Clone pattern).
*/
#ifndef TM_COMMANDS_CLI_H_INCLUDED
#define TM_COMMANDS_CLI_H_INCLUDED

#include <stdio.h>

#include "tm_cli.h"

//  "twinctl twin set ID PROP=VALUE[~TOL] ..."; argv[0] is "set". Exit code.
int tm_commands_cli_set_main (int argc, char **argv);

//  "twinctl twin unset ID PROP ..."; argv[0] is "unset". Exit code.
int tm_commands_cli_unset_main (int argc, char **argv);

//  "twinctl twin deltas ID ..."; argv[0] is "deltas". Exit code.
int tm_commands_cli_deltas_main (int argc, char **argv);

//  "twinctl twin watch ID ... [--count N] [--timeout T]"; argv[0] is
//  "watch". Exit code: 0 done (count reached, or timeout without --count),
//  1 failed or the timeout came first with --count.
int tm_commands_cli_watch_main (int argc, char **argv);

//  The twin's outstanding desired values from its owner, for twin get: a
//  DeltaList (caller frees with tm_codec_free), or NULL (none, or no answer:
//  twin get shows the twin without them and says so on stderr).
Twinmesh__DeltaList *tm_commands_cli_fetch (tm_cli_t *cli, const char *id);

//  Print the desired values of a twin get: a table (text), or
//  ", \"desired\": [...]" to splice into the twin's JSON object.
void tm_commands_cli_print (FILE *out, const Twinmesh__DeltaList *list, bool json);

#endif
