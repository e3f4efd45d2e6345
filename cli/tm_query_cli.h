/*  tm_query_cli - twinctl query: a query to the broker, the answer printed  */
#ifndef TM_QUERY_CLI_H_INCLUDED
#define TM_QUERY_CLI_H_INCLUDED

//  twinctl query 'SELECT ...' [--format table|json|csv] [--deadline D].
//  Exit status 0 complete answer, 3 partial answer, 1 failed, 2 usage.
int tm_query_cli_main (int argc, char **argv);

#endif
