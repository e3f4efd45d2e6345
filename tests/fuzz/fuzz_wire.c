/*  fuzz_wire - tm_wire_next over arbitrary bytes

    Besides not crashing, the scanner must keep its promises on any input:
    every pointer it returns lies inside the input, raw spans are
    contiguous and in order, each accepted reading meets the validation
    rules, and tm_wire_validate agrees with iterating. A broken promise
    aborts, which libFuzzer reports as a crash.
*/
#include "fuzz.h"
#include "tm_util.h"
#include "tm_wire.h"

#include <math.h>
#include <stdlib.h>

static int
s_inside (const uint8_t *data, size_t size, const void *p, size_t len)
{
    const uint8_t *b = (const uint8_t *) p;
    return b >= data && len <= size && b <= data + size - len;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    const uint8_t *last_end = data;
    long count = 0;
    int rc;
    while ((rc = tm_wire_next (&it, &r)) == 1) {
        if (!s_inside (data, size, r.raw, r.raw_len) || r.raw < last_end
            || !s_inside (data, size, r.entity, r.entity_len)
            || !s_inside (data, size, r.property, r.property_len)
            || (r.model && !s_inside (data, size, r.model, r.model_len)))
            abort ();
        if (r.entity_len == 0 || r.entity_len > TM_WIRE_MAX_ENTITY
            || !tm_util_utf8_valid (r.entity, r.entity_len) || r.property_len == 0
            || r.property_len > TM_WIRE_MAX_PROPERTY || !isfinite (r.value) || r.ts_ms <= 0)
            abort ();
        last_end = r.raw + r.raw_len;
        count++;
    }
    if (rc == -1 && !it.error)
        abort ();
    const char *error = NULL;
    size_t bad = 0;
    long n = tm_wire_validate (data, size, &error, &bad);
    if (rc == 0 && n != count)
        abort ();
    if (rc == -1 && (n != -1 || bad != (size_t) count))
        abort ();
    return 0;
}
