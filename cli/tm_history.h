/*  tm_history - twinctl twin history: a series' readings over a range

    Asks the worker that owns the twin (HISTORY_GET through
    tm_cli_twin_request, as twin forecast does) and prints the points, raw
    or one per step, as a table or JSON.
*/
#ifndef TM_CLI_HISTORY_H_INCLUDED
#define TM_CLI_HISTORY_H_INCLUDED

#include <stdint.h>

//  "twinctl twin history ID PROP ..."; argv[0] is "history". Exit code.
int tm_history_main (int argc, char **argv);

//  Parse a time for --from/--to: ISO-8601 UTC ("2026-11-22T10:00:00Z",
//  optionally with .mmm), epoch milliseconds, "now", or a duration before
//  now_ms ("-1h"). 0 with *out_ms, or -1.
int tm_history_parse_time (const char *text, int64_t now_ms, int64_t *out_ms);

#endif
