/*  test_handoff - the helper thread's bounded queue to the apply thread

    Items arrive in order and whole; the end and a failure are told apart;
    a helper blocked on a full queue is stopped by destroy, and every item
    nobody took is freed once (what the recovery loaders rely on not to
    hang or leak when the apply thread gives up early).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>

#include "tm_handoff.h"

typedef struct {
    uint64_t n;
    uint64_t *owned;               //  Something the item owns, freed by s_free
} item_t;

typedef struct {
    uint64_t make;                 //  Items the helper makes
    bool fail;                     //  Then return false
    atomic_ulong made;             //  Items put (the put that said stop included)
} plan_t;

static atomic_ulong s_freed;

static void
s_free (void *item)
{
    item_t *it = (item_t *) item;
    free (it->owned);
    it->owned = NULL;
    atomic_fetch_add (&s_freed, 1);
}

static bool
s_helper (tm_handoff_t *handoff, void *arg)
{
    plan_t *plan = (plan_t *) arg;
    for (uint64_t i = 0; i < plan->make; i++) {
        item_t item = {.n = i, .owned = malloc (sizeof (uint64_t))};
        if (!item.owned)
            return false;
        *item.owned = i * 7;
        atomic_fetch_add (&plan->made, 1);
        if (!tm_handoff_put (handoff, &item))
            return true;
    }
    return !plan->fail;
}

static void
test_in_order_then_end (void **state)
{
    (void) state;
    for (int fail = 0; fail < 2; fail++) {
        plan_t plan = {.make = 1000, .fail = fail};
        tm_handoff_t *h = tm_handoff_new (sizeof (item_t), 4, s_helper, &plan, s_free);
        assert_non_null (h);
        item_t item;
        for (uint64_t i = 0; i < plan.make; i++) {
            assert_int_equal (tm_handoff_take (h, &item), 1);
            assert_int_equal (item.n, i);
            assert_int_equal (*item.owned, i * 7);
            free (item.owned);
        }
        assert_int_equal (tm_handoff_take (h, &item), fail? -1: 0);
        assert_int_equal (tm_handoff_take (h, &item), fail? -1: 0);   //  and stays so
        tm_handoff_destroy (&h);
        assert_null (h);
    }
}

static void
test_destroy_early (void **state)
{
    (void) state;
    atomic_store (&s_freed, 0);
    plan_t plan = {.make = 1000};
    tm_handoff_t *h = tm_handoff_new (sizeof (item_t), 4, s_helper, &plan, s_free);
    assert_non_null (h);
    item_t item;
    for (int i = 0; i < 3; i++) {
        assert_int_equal (tm_handoff_take (h, &item), 1);
        free (item.owned);
    }
    //  The helper fills the queue and waits on it: destroy must stop it.
    tm_handoff_destroy (&h);
    assert_null (h);
    uint64_t made = atomic_load (&plan.made);
    assert_true (made < plan.make);
    assert_int_equal (atomic_load (&s_freed), made - 3);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_in_order_then_end),
        cmocka_unit_test (test_destroy_early),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
