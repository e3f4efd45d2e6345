/*  tm_hier - a parent twin's children and their aggregates

    Issue #3, item 8: a twin may have a parent (its model's parent
    relationship names the attribute that holds the parent's entity id),
    and the parent keeps aggregates of its children's latest good values:
    per property the number of children reporting it, their mean, min and
    max, and how many of them are anomalous now. This module is the
    parent's side: for every parent this worker owns, a table keyed by
    child id holding each child's latest contribution per property, and
    the aggregates computed from it. It also holds the codec of the
    CHILD_UPDATE body, the one decoder of contributions that come from
    other workers (docs/hierarchy.md).

    Why a table of contributions rather than running sums: a child's value
    is replaced, not added, on each update, and min and max must stay exact
    when the child holding the minimum goes up. Keeping the latest value of
    every child makes an update O(1) (two hash lookups and a scan of at most
    64 properties) and a replayed or repeated update a no-op (idempotent by
    child and timestamp: an update not newer than the value held changes
    nothing). The aggregates are computed when read, in one pass over the
    parent's children, with compensated summation so that the mean equals
    a naive recomputation to the last bits; reads (twinctl twin get) are
    rare next to updates.

    Load: updates arrive coalesced (the latest contribution of each child
    per flush, docs/hierarchy.md), so at most one update per child property
    per flush interval, not one per reading.

    Not thread-safe: owned by the worker's apply thread.
*/
#ifndef TM_HIER_H_INCLUDED
#define TM_HIER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_HIER_MAX_ID 128             //  Bytes of an entity id (the wire's limit)
#define TM_HIER_MAX_NAME 64            //  Bytes of a property or model name
#define TM_HIER_MAX_VALUES 64          //  Properties per child (a twin's limit)
#define TM_HIER_MAX_PROPS 64           //  Distinct properties aggregated per parent
#define TM_HIER_DEFAULT_MAX_CHILDREN 100000    //  Children per parent by default
#define TM_HIER_MAX_ENTRIES 2048       //  Entries in one ChildUpdate
#define TM_HIER_MAX_MSG_VALUES 8192    //  Values in one ChildUpdate (about 400 KB)

//  One property's latest good value of one child.
typedef struct {
    const char *property;          //  Property name, NUL-terminated (borrowed)
    double value;                  //  Finite
    int64_t ts_ms;                 //  The child's reading's timestamp
    bool anomalous;                //  That reading was flagged anomalous
} tm_hier_value_t;

//  One child's contribution to one parent: values, or a detachment.
typedef struct {
    const char *parent;            //  Parent entity id, NUL-terminated
    const char *child;             //  Child entity id, NUL-terminated
    const char *child_model;       //  The child's model, "" if none
    const char *parent_model;      //  Model the relationship names, "" if none
    const tm_hier_value_t *values; //  nvalues entries (borrowed)
    size_t nvalues;
    bool detached;                 //  The child left this parent: forget it
} tm_hier_entry_t;

//  What applying entries did, value by value.
typedef struct {
    uint32_t applied;              //  New, or newer than the value held
    uint32_t ignored;              //  Not newer than the value held (a repeat)
    uint32_t refused;              //  Over a limit (children per parent, values per child)
} tm_hier_counts_t;

//  One property's aggregate over a parent's children.
typedef struct {
    const char *property;          //  Interned by the table (valid while it lives)
    uint32_t children;             //  Children reporting the property
    double mean;                   //  Of their latest good values
    double min;
    double max;
    uint32_t anomalous;            //  Children whose latest value is anomalous
    int64_t newest_ts_ms;          //  Newest timestamp among those values
} tm_hier_agg_t;

//  Which contributions count in a parent's aggregates (its model's
//  "aggregates" section); NULL counts everything.
typedef bool (tm_hier_filter_fn) (void *arg, const char *child_model, const char *property);

//  One child as listed by tm_hier_children.
typedef struct {
    const char *child;             //  Entity id (borrowed)
    const char *model;             //  Its model, "" if none (borrowed)
    const tm_hier_value_t *values; //  Its contributions (borrowed)
    size_t nvalues;
} tm_hier_child_t;

typedef struct _tm_hier_t tm_hier_t;

//  New empty set of parents keeping at most max_children children each
//  (0: TM_HIER_DEFAULT_MAX_CHILDREN). NULL on allocation failure.
tm_hier_t *tm_hier_new (size_t max_children);

//  Destroy; accepts NULL, nulls the pointer.
void tm_hier_destroy (tm_hier_t **self_p);

//  Apply one entry (values replace the child's older ones; a detachment
//  forgets the child), adding what happened to *counts. Returns 0, or -1
//  on allocation failure (counted as refused).
int tm_hier_apply (tm_hier_t *self, const tm_hier_entry_t *entry, tm_hier_counts_t *counts);

//  As tm_hier_apply; *tag_p (if tag_p is not NULL) gets the address of
//  the parent's tag, a pointer the caller may keep there (the worker keeps
//  the parent's twin: no lookup per entry), or NULL if the parent is not
//  held afterwards (a detachment of its last child, a refused entry).
int tm_hier_apply_tag (tm_hier_t *self, const tm_hier_entry_t *entry, tm_hier_counts_t *counts,
                       void ***tag_p);

//  True if the worker holds contributions for this parent.
bool tm_hier_has_parent (tm_hier_t *self, const char *parent);

//  Children held for a parent (0 if none).
size_t tm_hier_nchildren (tm_hier_t *self, const char *parent);

//  The parent's aggregates, one per property that passes filter, in
//  property-name order, into out (at most max). Returns how many.
size_t tm_hier_aggregates (tm_hier_t *self, const char *parent, tm_hier_filter_fn *filter,
                           void *arg, tm_hier_agg_t *out, size_t max);

//  The parent's children in entity-id order, into out (at most max; the
//  entries borrow from the table until its next change). Returns how many;
//  *total gets the number held.
size_t tm_hier_children (tm_hier_t *self, const char *parent, tm_hier_child_t *out, size_t max,
                         size_t *total);

//  Forget every parent for which drop returns true (shards no longer
//  ours). Returns how many were forgotten.
size_t tm_hier_drop (tm_hier_t *self, bool (*drop) (void *arg, const char *parent), void *arg);

//  Counters since the table was made.
typedef struct {
    uint64_t parents;              //  Parents held now
    uint64_t children;             //  Children held now, over all parents
    uint64_t children_refused;     //  Values refused: the parent was full
    uint64_t values_refused;       //  Values refused: the child had 64 properties
} tm_hier_stats_t;
void tm_hier_stats (tm_hier_t *self, tm_hier_stats_t *stats);

//  ---------------------------------------------------------------------
//  The CHILD_UPDATE body (proto/twinmesh.proto, ChildUpdate)

//  Called once per entry of a decoded update (borrowed: valid during the
//  call). Return 0 to go on.
typedef int (tm_hier_entry_fn) (void *arg, const tm_hier_entry_t *entry);

//  Decode a ChildUpdate from bytes that came from the network and check
//  every field (ids 1..128 bytes of UTF-8, names 1..64, values finite, at
//  most TM_HIER_MAX_ENTRIES entries and TM_HIER_MAX_MSG_VALUES values, no
//  values on a detachment) before calling fn for any entry: a message is
//  used whole or not at all. Returns the number of entries, or -1 with a
//  reason in err (err may be NULL).
long tm_hier_decode_update (const uint8_t *data, size_t size, tm_hier_entry_fn *fn, void *arg,
                            char *err, size_t err_size);

//  Builds a ChildUpdate body entry by entry.
typedef struct _tm_hier_msg_t tm_hier_msg_t;

tm_hier_msg_t *tm_hier_msg_new (void);
void tm_hier_msg_destroy (tm_hier_msg_t **self_p);

//  Add an entry (strings and values are copied, into one arena). Returns
//  0, or 1 if the message is full (entries or values at their cap: send it
//  first), or -1 on allocation failure (the message is left as it was).
int tm_hier_msg_add (tm_hier_msg_t *self, const tm_hier_entry_t *entry);

//  Entries and values added since the last reset.
size_t tm_hier_msg_entries (const tm_hier_msg_t *self);
size_t tm_hier_msg_values (const tm_hier_msg_t *self);

//  The encoded body (caller frees with free); NULL on allocation failure.
uint8_t *tm_hier_msg_encode (const tm_hier_msg_t *self, size_t *size);

//  Empty the message for reuse.
void tm_hier_msg_reset (tm_hier_msg_t *self);

//  A TwinState fragment holding only the parent's aggregates (fields 40 and
//  41): protobuf lets it be appended to the bytes of a TwinState, so a TWIN
//  reply gains the aggregates without re-encoding. Caller frees; NULL with
//  *size 0 if the parent has no children (or on allocation failure).
uint8_t *tm_hier_encode_twin_extra (tm_hier_t *self, const char *parent,
                                    tm_hier_filter_fn *filter, void *arg, size_t *size);

//  A ChildrenReply listing at most limit children of the parent (caller
//  frees); NULL on allocation failure.
uint8_t *tm_hier_encode_children (tm_hier_t *self, const char *parent, size_t limit,
                                  size_t *size);

#endif
