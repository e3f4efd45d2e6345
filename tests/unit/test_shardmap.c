/*  test_shardmap - unit tests for tm_shardmap: hashing, map edits, codec

    Every gateway and worker must compute the same shard for an entity, or
    writes land on the wrong owner; the hash is therefore pinned to known
    values, besides being checked for spread and for depending on the key.
    The decoder takes maps from the network, so each validation rule has a
    crafted map that breaks it.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_codec.h"
#include "tm_shardmap.h"

#define KEY_A "0123456789abcdef"
#define KEY_B "fedcba9876543210"
//  Computed once with libsodium crypto_shorthash (siphash-2-4).
#define PIN_STATION_1 612
#define PIN_BAY_42 31739
#define PK1 "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define PK2 "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"

static void
test_hash_deterministic_and_pinned (void **state)
{
    (void) state;
    const uint8_t *key = (const uint8_t *) KEY_A;
    uint32_t s1 = tm_shardmap_hash (key, 1024, "station-1", 9);
    for (int i = 0; i < 10; i++)
        assert_int_equal (tm_shardmap_hash (key, 1024, "station-1", 9), s1);

    //  The definition: little-endian 64-bit siphash-2-4, modulo N.
    const char *ids[] = {"station-1", "bay-42", "pump/7", "", "é"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        uint8_t out[crypto_shorthash_BYTES];
        crypto_shorthash (out, (const unsigned char *) ids[i], strlen (ids[i]), key);
        uint64_t h = 0;
        for (int b = 7; b >= 0; b--)
            h = h << 8 | out[b];
        assert_int_equal (tm_shardmap_hash (key, 1024, ids[i], strlen (ids[i])), h % 1024);
        assert_int_equal (tm_shardmap_hash (key, 7, ids[i], strlen (ids[i])), h % 7);
    }
    //  Pinned values: persisted data is laid out by shard, so the mapping
    //  must never change between releases.
    assert_int_equal (tm_shardmap_hash (key, 1024, "station-1", 9), PIN_STATION_1);
    assert_int_equal (tm_shardmap_hash (key, 65536, "bay-42", 6), PIN_BAY_42);
    //  Only the given length is hashed.
    assert_int_equal (tm_shardmap_hash (key, 1024, "station-1xyz", 9), s1);
    assert_int_equal (tm_shardmap_hash (key, 1, "anything", 8), 0);
}

static void
test_hash_spread_and_keyed (void **state)
{
    (void) state;
    enum { SHARDS = 1024, N = 102400 };
    uint32_t *count_a = calloc (SHARDS, sizeof (uint32_t));
    uint32_t *count_b = calloc (SHARDS, sizeof (uint32_t));
    assert_non_null (count_a);
    assert_non_null (count_b);
    size_t same = 0;
    for (int i = 0; i < N; i++) {
        char id[32];
        int len = snprintf (id, sizeof id, "sensor-%d", i);
        uint32_t a = tm_shardmap_hash ((const uint8_t *) KEY_A, SHARDS, id, (size_t) len);
        uint32_t b = tm_shardmap_hash ((const uint8_t *) KEY_B, SHARDS, id, (size_t) len);
        assert_true (a < SHARDS && b < SHARDS);
        count_a[a]++;
        count_b[b]++;
        same += a == b;
    }
    //  Chi-square over 1023 degrees of freedom: mean 1023, sd ~45. A bound
    //  at about +6 sd fails only for a broken hash (sequential ids would
    //  give 0, a constant hash ~N*1023).
    double expect = (double) N / SHARDS, chi_a = 0, chi_b = 0;
    for (int s = 0; s < SHARDS; s++) {
        chi_a += (count_a[s] - expect) * (count_a[s] - expect) / expect;
        chi_b += (count_b[s] - expect) * (count_b[s] - expect) / expect;
        assert_true (count_a[s] > expect / 2 && count_a[s] < expect * 2);
    }
    assert_true (chi_a > 700 && chi_a < 1300);
    assert_true (chi_b > 700 && chi_b < 1300);
    //  A different key gives an unrelated placement: ~N/1024 coincide.
    assert_true (same < 3 * N / SHARDS);
    free (count_a);
    free (count_b);
}

static tm_shardmap_t *
s_sample_map (void)
{
    tm_shardmap_t *map = tm_shardmap_new (1024, (const uint8_t *) KEY_A);
    assert_non_null (map);
    map->epoch = 42;
    assert_int_equal (tm_shardmap_set_worker (map, "worker-0", "tcp://w0:5560", PK1), 0);
    assert_int_equal (tm_shardmap_set_worker (map, "worker-1", "tcp://w1:5560", PK2), 1);
    assert_int_equal (tm_shardmap_set_worker (map, "worker-2", "tcp://w2:5560", PK1), 2);
    for (uint32_t s = 0; s < 1024; s++)
        map->owners[s] = s % 10 == 9? TM_SHARDMAP_UNASSIGNED: s % 3;
    return map;
}

static void
s_assert_maps_equal (const tm_shardmap_t *a, const tm_shardmap_t *b)
{
    assert_int_equal (a->epoch, b->epoch);
    assert_int_equal (a->num_shards, b->num_shards);
    assert_memory_equal (a->key, b->key, TM_SHARDMAP_KEY_BYTES);
    assert_int_equal (a->nworkers, b->nworkers);
    for (size_t i = 0; i < a->nworkers; i++) {
        assert_string_equal (a->workers[i].id, b->workers[i].id);
        assert_string_equal (a->workers[i].endpoint, b->workers[i].endpoint);
        assert_string_equal (a->workers[i].public_key, b->workers[i].public_key);
    }
    assert_memory_equal (a->owners, b->owners, a->num_shards * sizeof (uint32_t));
}

static void
test_new_and_owners (void **state)
{
    (void) state;
    const uint8_t *key = (const uint8_t *) KEY_A;
    assert_null (tm_shardmap_new (0, key));
    assert_null (tm_shardmap_new (TM_SHARDMAP_MAX_SHARDS + 1, key));
    tm_shardmap_t *map = tm_shardmap_new (TM_SHARDMAP_MAX_SHARDS, key);
    assert_non_null (map);
    assert_int_equal (map->epoch, 0);
    assert_int_equal (map->nworkers, 0);
    for (uint32_t s = 0; s < map->num_shards; s++)
        assert_int_equal (tm_shardmap_owner (map, s), TM_SHARDMAP_UNASSIGNED);
    tm_shardmap_destroy (&map);
    assert_null (map);
    tm_shardmap_destroy (&map);
    tm_shardmap_destroy (NULL);

    map = s_sample_map ();
    assert_int_equal (tm_shardmap_owner (map, 4), 1);
    assert_int_equal (tm_shardmap_owner (map, 9), TM_SHARDMAP_UNASSIGNED);
    assert_int_equal (tm_shardmap_owner (map, 1024), TM_SHARDMAP_UNASSIGNED);
    assert_int_equal (tm_shardmap_owner (map, UINT32_MAX), TM_SHARDMAP_UNASSIGNED);
    uint32_t total = 0;
    for (uint32_t w = 0; w < 3; w++)
        total += tm_shardmap_count_owned (map, w);
    assert_int_equal (total, 1024 - 102);   //  102 shards s%10==9 unassigned
    assert_int_equal (tm_shardmap_count_owned (map, 7), 0);
    assert_int_equal (tm_shardmap_shard_of (map, "station-1", 9),
                      tm_shardmap_hash (map->key, 1024, "station-1", 9));
    tm_shardmap_destroy (&map);
}

static void
test_set_worker (void **state)
{
    (void) state;
    tm_shardmap_t *map = s_sample_map ();
    assert_int_equal (tm_shardmap_find_worker (map, "worker-1"), 1);
    assert_int_equal (tm_shardmap_find_worker (map, "worker-9"), -1);
    //  Updating keeps the index, so owners stay valid.
    assert_int_equal (tm_shardmap_set_worker (map, "worker-1", "tcp://new:1", PK1), 1);
    assert_int_equal (map->nworkers, 3);
    assert_string_equal (map->workers[1].endpoint, "tcp://new:1");
    assert_string_equal (map->workers[1].public_key, PK1);
    assert_int_equal (tm_shardmap_set_worker (map, "worker-3", "tcp://w3:1", PK2), 3);
    assert_int_equal (map->nworkers, 4);
    assert_int_equal (tm_shardmap_set_worker (map, NULL, "tcp://x:1", PK2), -1);
    assert_int_equal (tm_shardmap_set_worker (map, "w", NULL, PK2), -1);
    assert_int_equal (tm_shardmap_set_worker (map, "w", "tcp://x:1", NULL), -1);
    assert_int_equal (map->nworkers, 4);
    tm_shardmap_destroy (&map);
}

static void
test_dup (void **state)
{
    (void) state;
    tm_shardmap_t *map = s_sample_map ();
    tm_shardmap_t *copy = tm_shardmap_dup (map);
    assert_non_null (copy);
    s_assert_maps_equal (map, copy);
    //  Deep: changing the original leaves the copy alone.
    assert_ptr_not_equal (copy->owners, map->owners);
    assert_ptr_not_equal (copy->workers[0].id, map->workers[0].id);
    map->owners[0] = 2;
    tm_shardmap_set_worker (map, "worker-0", "tcp://moved:1", PK2);
    assert_int_equal (copy->owners[0], 0);
    assert_string_equal (copy->workers[0].endpoint, "tcp://w0:5560");
    tm_shardmap_destroy (&map);
    tm_shardmap_destroy (&copy);
}

static void
test_codec_round_trip (void **state)
{
    (void) state;
    tm_shardmap_t *map = s_sample_map ();
    size_t size = 0;
    uint8_t *buf = tm_shardmap_encode (map, &size);
    assert_non_null (buf);
    assert_true (size > 1024);
    tm_shardmap_t *back = tm_shardmap_decode (buf, size);
    assert_non_null (back);
    s_assert_maps_equal (map, back);
    free (buf);
    tm_shardmap_destroy (&back);

    //  A map with no workers and every shard unassigned (epoch 0).
    tm_shardmap_t *empty = tm_shardmap_new (16, (const uint8_t *) KEY_B);
    buf = tm_shardmap_encode (empty, &size);
    assert_non_null (buf);
    back = tm_shardmap_decode (buf, size);
    assert_non_null (back);
    s_assert_maps_equal (empty, back);
    free (buf);
    tm_shardmap_destroy (&back);
    tm_shardmap_destroy (&empty);
    tm_shardmap_destroy (&map);
}

//  Encode a hand-made ShardMap message and try to decode it.
static tm_shardmap_t *
s_decode_crafted (uint64_t epoch, uint32_t num_shards, const uint8_t *key, size_t key_len,
                  Twinmesh__WorkerEntry **workers, size_t nworkers, uint32_t *owners,
                  size_t nowners)
{
    Twinmesh__ShardMap m = TWINMESH__SHARD_MAP__INIT;
    m.epoch = epoch;
    m.num_shards = num_shards;
    m.cluster_key.data = (uint8_t *) key;
    m.cluster_key.len = key_len;
    m.workers = workers;
    m.n_workers = nworkers;
    m.owners = owners;
    m.n_owners = nowners;
    size_t size;
    uint8_t *buf = tm_codec_pack_buf (&m.base, &size);
    assert_non_null (buf);
    tm_shardmap_t *map = tm_shardmap_decode (buf, size);
    free (buf);
    return map;
}

static void
test_decode_rejects (void **state)
{
    (void) state;
    const uint8_t *key = (const uint8_t *) KEY_A;
    Twinmesh__WorkerEntry w0 = TWINMESH__WORKER_ENTRY__INIT;
    Twinmesh__WorkerEntry w1 = TWINMESH__WORKER_ENTRY__INIT;
    w0.id = "worker-0";
    w0.endpoint = "tcp://w0:1";
    w0.public_key = PK1;
    w1.id = "worker-1";
    w1.endpoint = "tcp://w1:1";
    w1.public_key = PK2;
    Twinmesh__WorkerEntry *two[] = {&w0, &w1};
    uint32_t owners[8] = {0, 1, 0, 1, TM_SHARDMAP_UNASSIGNED, 1, 0, 1};

    //  The well-formed baseline decodes.
    tm_shardmap_t *map = s_decode_crafted (3, 8, key, 16, two, 2, owners, 8);
    assert_non_null (map);
    assert_int_equal (map->epoch, 3);
    assert_int_equal (tm_shardmap_owner (map, 4), TM_SHARDMAP_UNASSIGNED);
    assert_int_equal (tm_shardmap_owner (map, 5), 1);
    tm_shardmap_destroy (&map);

    //  Owner index out of range (2 workers: 2 is one past the end).
    owners[3] = 2;
    assert_null (s_decode_crafted (3, 8, key, 16, two, 2, owners, 8));
    owners[3] = UINT32_MAX - 1;
    assert_null (s_decode_crafted (3, 8, key, 16, two, 2, owners, 8));
    owners[3] = 1;
    //  Owners with no workers at all.
    assert_null (s_decode_crafted (3, 8, key, 16, NULL, 0, owners, 8));

    //  Wrong key sizes.
    assert_null (s_decode_crafted (3, 8, key, 8, two, 2, owners, 8));
    assert_null (s_decode_crafted (3, 8, key, 0, two, 2, owners, 8));
    assert_null (s_decode_crafted (3, 8, (const uint8_t *) KEY_A KEY_B, 17, two, 2, owners, 8));

    //  Owners count disagreeing with num_shards.
    assert_null (s_decode_crafted (3, 8, key, 16, two, 2, owners, 7));
    assert_null (s_decode_crafted (3, 7, key, 16, two, 2, owners, 8));

    //  num_shards 0, and above the maximum (with a matching owners array).
    assert_null (s_decode_crafted (3, 0, key, 16, two, 2, NULL, 0));
    size_t big = TM_SHARDMAP_MAX_SHARDS + 1;
    uint32_t *many = calloc (big, sizeof (uint32_t));
    assert_non_null (many);
    assert_null (s_decode_crafted (3, (uint32_t) big, key, 16, two, 2, many, big));
    free (many);

    //  Duplicate worker ids.
    Twinmesh__WorkerEntry dup = w1;
    dup.id = "worker-0";
    Twinmesh__WorkerEntry *dups[] = {&w0, &dup};
    assert_null (s_decode_crafted (3, 8, key, 16, dups, 2, owners, 8));

    //  Worker entries missing an id, an endpoint, or with a bad key.
    Twinmesh__WorkerEntry bad = w1;
    Twinmesh__WorkerEntry *one_bad[] = {&w0, &bad};
    bad.id = "";
    assert_null (s_decode_crafted (3, 8, key, 16, one_bad, 2, owners, 8));
    bad = w1;
    bad.endpoint = "";
    assert_null (s_decode_crafted (3, 8, key, 16, one_bad, 2, owners, 8));
    bad = w1;
    bad.public_key = "short";
    assert_null (s_decode_crafted (3, 8, key, 16, one_bad, 2, owners, 8));

    //  Bytes that are not a ShardMap at all.
    const uint8_t garbage[] = {0xFF, 0xFF, 0xFF, 0x0A, 0x7F};
    assert_null (tm_shardmap_decode (garbage, sizeof garbage));
    assert_null (tm_shardmap_decode (NULL, 0));
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_hash_deterministic_and_pinned),
        cmocka_unit_test (test_hash_spread_and_keyed),
        cmocka_unit_test (test_new_and_owners),
        cmocka_unit_test (test_set_worker),
        cmocka_unit_test (test_dup),
        cmocka_unit_test (test_codec_round_trip),
        cmocka_unit_test (test_decode_rejects),
    };
    if (sodium_init () < 0)
        return 1;
    return cmocka_run_group_tests (tests, NULL, NULL);
}
