/*  tm_coord - the broker's query coordinator: parse, scatter, gather, merge

    A client's QUERY is parsed once (common/tm_query); its plan goes to
    every worker that owns shards in the current map, with the list of
    shards the broker expects it to answer for; the workers' partial
    answers are merged (common/tm_qexec) as they arrive. The answer goes
    back when every worker has answered or at the query's deadline,
    whichever is first: a slow, stopped or dead worker makes the answer
    partial (it lists the shards missing), never late.

    Each twin is counted once: a reply is merged only if every shard it
    claims is, in the broker's map, owned by the worker that sent it and
    not answered yet. A worker answering at another epoch (a shard just
    moved) is refused as a whole and its shards stay missing; a
    double-counted shard would be a wrong answer, a missing one is a
    stated one.

    Each worker has its own DEALER to the worker's CURVE ROUTER (the
    broker's key has the broker role there), made when the worker first
    appears in a map and remade when its endpoint or key changes. Runs on
    the broker's thread; the broker adds the sockets to its poller through
    tm_coord_attach.

    Federation: a site is one cluster. Peer sites' brokers are configured
    (tm_coord_add_peer) and reached over their own DEALERs, presenting this
    site's key of role site. A query `AT SITES (a, b)` (or `AT ALL SITES`)
    goes to the named peers as SITE_QUERY while the local part, if this
    site is named, is scattered as usual; each peer runs it over its own
    twins only and answers with its merged partial after ITS export policy
    (tm_coord_policy_t): raw rows, aggregates only with small groups
    suppressed, or nothing, optionally with Laplace noise. The home broker
    merges what came and keeps each site's own answer; a peer that does not
    answer by the deadline is named in the answer, which is then partial.
*/
#ifndef TM_COORD_H_INCLUDED
#define TM_COORD_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "tm_msg.h"
#include "tm_shardmap.h"

#define TM_COORD_MAX_PENDING 64        //  Queries in flight; more get RETRY_LATER
#define TM_COORD_MAX_DEADLINE_MS 60000 //  Longest deadline a client may ask for

typedef struct _tm_coord_t tm_coord_t;

//  New coordinator. cert (the broker's) and router (where clients' queries
//  come in and answers go out) are borrowed and must outlive it.
//  deadline_ms is the default deadline of a query. NULL on failure.
tm_coord_t *tm_coord_new (zcert_t *cert, zsock_t *router, int64_t deadline_ms);

//  Destroy, dropping queries in flight; nulls the pointer.
void tm_coord_destroy (tm_coord_t **self_p);

//  Add every worker socket, now and later, to poller (borrowed; at most
//  two pollers). Sockets removed later are removed from it too.
int tm_coord_attach (tm_coord_t *self, zpoller_t *poller);

//  Take a client's QUERY (msg is borrowed; its routing frame is copied):
//  answers it at once if it cannot run (role, syntax, no map, too many in
//  flight), else scatters it.
void tm_coord_query (tm_coord_t *self, const tm_shardmap_t *map, const tm_msg_t *msg);

//  What this site lets out to peers.
typedef enum {
    TM_COORD_EXPORT_RAW = 0,           //  Rows and aggregates
    TM_COORD_EXPORT_AGGREGATES,        //  Aggregates only, groups under min_group dropped
    TM_COORD_EXPORT_NONE               //  Nothing: peers' queries are refused
} tm_coord_export_t;

typedef struct {
    tm_coord_export_t mode;
    uint64_t min_group;            //  AGGREGATES: fewer twins than this and a group is dropped
    double epsilon;                //  > 0: Laplace noise on counts and sums (1/epsilon scale)
    double sum_bound;              //  Largest |value| one twin adds to a sum, for the noise
} tm_coord_policy_t;

//  Parse "raw", "aggregates", "none"; -1 if unknown.
int tm_coord_export_parse (const char *text, tm_coord_export_t *mode);

//  This site's name and export policy (copied). Call before serving.
int tm_coord_set_site (tm_coord_t *self, const char *site, const tm_coord_policy_t *policy);

//  A peer site: its name, its broker's endpoint and Z85 public key; we
//  present site_cert (borrowed, role site at the peer). 0 or -1.
int tm_coord_add_peer (tm_coord_t *self, const char *name, const char *endpoint,
                       const char *public_z85, zcert_t *site_cert);

//  Take a peer's SITE_QUERY (role site): run it over the local twins and
//  answer with the partial after the export policy.
void tm_coord_site_query (tm_coord_t *self, const tm_shardmap_t *map, const tm_msg_t *msg);

//  True if sock is one of the coordinator's worker sockets.
bool tm_coord_owns (tm_coord_t *self, void *sock);

//  Read the replies waiting on a worker socket.
void tm_coord_handle (tm_coord_t *self, zsock_t *sock);

//  Answer the queries whose deadline has passed (monotonic ms).
void tm_coord_tick (tm_coord_t *self, int64_t now_ms);

//  Monotonic ms of the earliest deadline in flight; INT64_MAX if none.
int64_t tm_coord_next_deadline (tm_coord_t *self);

//  Counters for status and tests.
typedef struct {
    uint64_t queries;              //  Queries taken
    uint64_t answered;             //  Answered complete
    uint64_t partial;              //  Answered with shards missing
    uint64_t refused;              //  Refused (role, syntax, load)
    uint64_t stale_replies;        //  Worker replies refused (ownership, epoch) or late
    uint64_t site_queries;         //  Peers' queries taken
    uint64_t site_refused;         //  Peers' queries refused (role, policy)
} tm_coord_stats_t;
void tm_coord_stats (tm_coord_t *self, tm_coord_stats_t *stats);

#endif
