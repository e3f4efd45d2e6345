/*  fuzz_shardmap - tm_shardmap_decode over arbitrary bytes

    A decoded map must be internally consistent (every owner in range), and
    encoding it and decoding again must give an equal map.
*/
#include "fuzz.h"
#include "tm_shardmap.h"

#include <stdlib.h>
#include <string.h>

static void
s_check_equal (const tm_shardmap_t *a, const tm_shardmap_t *b)
{
    if (a->epoch != b->epoch || a->num_shards != b->num_shards
        || memcmp (a->key, b->key, TM_SHARDMAP_KEY_BYTES) != 0 || a->nworkers != b->nworkers
        || memcmp (a->owners, b->owners, a->num_shards * sizeof (uint32_t)) != 0)
        abort ();
    for (size_t i = 0; i < a->nworkers; i++)
        if (strcmp (a->workers[i].id, b->workers[i].id) != 0
            || strcmp (a->workers[i].endpoint, b->workers[i].endpoint) != 0
            || strcmp (a->workers[i].public_key, b->workers[i].public_key) != 0)
            abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    tm_shardmap_t *map = tm_shardmap_decode (data, size);
    if (!map)
        return 0;
    if (map->num_shards == 0 || map->num_shards > TM_SHARDMAP_MAX_SHARDS)
        abort ();
    for (uint32_t s = 0; s < map->num_shards; s++) {
        uint32_t owner = tm_shardmap_owner (map, s);
        if (owner != TM_SHARDMAP_UNASSIGNED && owner >= map->nworkers)
            abort ();
    }
    size_t len = 0;
    uint8_t *buf = tm_shardmap_encode (map, &len);
    if (!buf)
        abort ();
    tm_shardmap_t *again = tm_shardmap_decode (buf, len);
    if (!again)
        abort ();
    s_check_equal (map, again);
    //  The hash must stay in range for any map that decodes.
    if (tm_shardmap_shard_of (map, (const char *) data, size) >= map->num_shards)
        abort ();
    free (buf);
    tm_shardmap_destroy (&again);
    tm_shardmap_destroy (&map);
    return 0;
}
