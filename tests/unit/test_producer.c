/*  test_producer - runs tm_producer's selftest (a fake gateway over inproc:
    OK, RETRY_LATER, MALFORMED, ack timeout, stale acks, giving up). The
    selftest asserts; an assertion failure fails this test.  */
#include <stdbool.h>
#include <stdio.h>

#include "tm_producer.h"

int
main (void)
{
    tm_producer_test (true);
    printf ("producer selftest: OK\n");
    return 0;
}
