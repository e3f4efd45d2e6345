/*  tm_handoff - a helper thread that makes items and a bounded queue that
    hands them to the apply thread

    Recovery reads the store on helper threads (tm_wrestore: the shards'
    twins; tm_wreplay: the log) a few items ahead of the apply thread,
    which alone changes the twin table. Both need the same thing: start a
    thread, pass fixed-size items (and what they own) through a small ring
    that blocks the helper when full and the apply thread when empty, tell
    "no more" from "failed", and stop a helper early without leaking what
    it made. Items are copied in and out by value; what they point to goes
    with them, and free_fn frees it for items nobody took.
*/
#ifndef TM_HANDOFF_H_INCLUDED
#define TM_HANDOFF_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct _tm_handoff_t tm_handoff_t;

//  The helper: makes items with tm_handoff_put until it has none or put
//  says stop, then returns true, or false if it failed (memory, store).
typedef bool (tm_handoff_helper_fn) (tm_handoff_t *handoff, void *arg);

//  Frees what an item owns (not the item's own bytes, which the queue holds).
typedef void (tm_handoff_free_fn) (void *item);

//  Start helper (fn with arg) and a queue of capacity items of item_size
//  bytes. NULL, with a logged reason, if the thread or memory cannot be had.
tm_handoff_t *tm_handoff_new (size_t item_size, size_t capacity, tm_handoff_helper_fn *fn,
                              void *arg, tm_handoff_free_fn *free_fn);

//  Helper thread: queue a copy of item, waiting while the queue is full.
//  False if the apply thread asked to stop: the item was freed (free_fn),
//  and the helper should return.
bool tm_handoff_put (tm_handoff_t *self, const void *item);

//  Apply thread: the next item, copied to item (the caller now owns what
//  it points to): 1; or 0 once the helper has returned true with every
//  item taken, -1 if it returned false. Blocks until one of those.
int tm_handoff_take (tm_handoff_t *self, void *item);

//  Stop the helper (its next put says stop), join it, free the items
//  nobody took; nulls the pointer.
void tm_handoff_destroy (tm_handoff_t **self_p);

#endif
