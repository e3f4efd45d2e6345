/*  fuzz_commands_record - the desired-value record decoder over arbitrary bytes

    A worker reads its desired values back from RocksDB at start
    (tm_commands_load), key and value both from a disk that may be damaged.
    Input: one byte n, then n bytes of key, then the value. Whatever decodes
    must encode again to a key and record that decode to the same thing.
*/
#include "fuzz.h"
#include "tm_commands.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t klen = data[0];
    if (klen > size - 1)
        klen = size - 1;
    const uint8_t *key = data + 1, *val = data + 1 + klen;
    size_t vlen = size - 1 - klen;
    uint32_t shard;
    char entity[129];
    tm_desired_t d;
    if (tm_commands_record_decode (key, klen, val, vlen, &shard, entity, sizeof entity, &d) != 0)
        return 0;
    if (!isfinite (d.value) || !(d.tolerance >= 0) || !*entity || !*d.property)
        abort ();
    uint8_t k2[6 + 128 + 1 + TM_MODEL_NAME_MAX], v2[TM_COMMANDS_RECORD_MAX];
    size_t k2len = tm_commands_key_encode (shard, entity, strlen (entity), d.property, k2);
    size_t v2len = tm_commands_record_encode (&d, v2);
    uint32_t shard2;
    char entity2[129];
    tm_desired_t d2;
    if (tm_commands_record_decode (k2, k2len, v2, v2len, &shard2, entity2, sizeof entity2, &d2)
            != 0
        || shard2 != shard || strcmp (entity, entity2) != 0
        || strcmp (d.property, d2.property) != 0 || strcmp (d.set_by, d2.set_by) != 0
        || memcmp (&d.value, &d2.value, sizeof d.value) != 0 || d.set_ms != d2.set_ms
        || d.version != d2.version || d.set_seq != d2.set_seq
        || k2len != klen || memcmp (k2, key, klen) != 0 || v2len != vlen
        || memcmp (v2, val, vlen) != 0)
        abort ();
    return 0;
}
