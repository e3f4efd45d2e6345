/*  twinctl - the twinmesh command line

    Thin on purpose: everything is in tm_cli (and tm_sim, tm_replay), so
    tests can call the same code without a process.
*/
#include "tm_cli.h"

int
main (int argc, char **argv)
{
    return tm_cli_main (argc, argv);
}
