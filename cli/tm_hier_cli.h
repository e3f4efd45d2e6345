/*  tm_hier_cli - twinctl's view of the hierarchy: a parent's aggregates in
    `twinctl twin get`, and `twinctl twin children PARENT`

    The worker appends a parent's aggregates to its TWIN reply
    (TwinState.child_aggregates, docs/hierarchy.md); these print them, as a
    table for people and as JSON members for scripts, next to the twin's
    own properties. `twin children` asks the parent's worker for its
    children and their latest contributed values.
*/
#ifndef TM_HIER_CLI_H_INCLUDED
#define TM_HIER_CLI_H_INCLUDED

#include <stdio.h>

#include "tm_codec.h"

//  Print a parent's aggregates after the twin's text; nothing if it has
//  no children.
void tm_hier_cli_print_text (FILE *out, const Twinmesh__TwinState *ts);

//  Print `, "children": N, "child_aggregates": [...]` inside the twin's
//  JSON object (always: 0 and [] for a twin without children).
void tm_hier_cli_print_json (FILE *out, const Twinmesh__TwinState *ts);

//  Print `, "hierarchy": {...}` inside a node's stats object in twinctl
//  status --json, when the node sent hierarchy counters (workers).
void tm_hier_cli_print_stats_json (FILE *out, const Twinmesh__NodeStats *st);

//  twinctl twin children PARENT [--limit N] [--json]; argv[0] is "children".
//  Returns the exit code.
int tm_hier_cli_children_main (int argc, char **argv);

#endif
