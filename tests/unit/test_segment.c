/*  test_segment - unit tests for tm_segment, history chunks written a
    segment at a time and joined by RocksDB's merge operator

    What history relies on: segments written in separate batches read back
    as the one chunk they make, before and after compactions; a gap makes
    the value broken instead of a chunk with other points; combining
    segments (RocksDB's partial merge) joins to the same value as applying
    them one by one; parsing checks every length.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_segment.h"
#include "tm_store.h"
#include "tm_util.h"

//  A pseudo-chunk of n bytes (the bytes are not decoded here).
static void
s_chunk (uint8_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t) (i * 37 + 11);
}

//  The segment of chunk bytes [floor(from_bits / 8), ceil(to_bits / 8)).
static uint8_t *
s_piece (const uint8_t *chunk, uint32_t from_bits, uint32_t to_bits, uint32_t count,
         int64_t expires, uint8_t flags, size_t *size)
{
    tm_segment_t seg = {.last_ts = 1000 + to_bits, .expires = expires,
                        .kind = TM_SEGMENT_PIECE, .flags = flags, .count = count,
                        .bits = to_bits, .start = from_bits / 8};
    seg.bytes = chunk + seg.start;
    seg.size = (to_bits + 7) / 8 - seg.start;
    *size = tm_segment_size (&seg);
    uint8_t *v = malloc (*size);
    assert_non_null (v);
    assert_int_equal (tm_segment_put (v, &seg), *size);
    return v;
}

static void
test_join_pieces (void **state)
{
    (void) state;
    uint8_t chunk[200];
    s_chunk (chunk, sizeof chunk);
    //  Pieces ending mid-byte: each next one rewrites that byte.
    uint32_t ends[] = {13, 13, 40, 77, 1021, 1599};
    const char *ops[6];
    size_t lens[6];
    uint32_t from = 0;
    for (int i = 0; i < 6; i++) {
        ops[i] = (const char *) s_piece (chunk, from, ends[i], (uint32_t) i + 1,
                                         i == 5? 99999: TM_SEGMENT_NO_EXPIRY,
                                         i == 5? TM_SEGMENT_CLOSED: 0, &lens[i]);
        from = ends[i];
    }
    size_t size;
    uint8_t *joined = tm_segment_join (NULL, 0, ops, lens, 6, &size);
    assert_non_null (joined);
    tm_segment_t seg;
    assert_int_equal (tm_segment_parse (joined, size, &seg), 0);
    assert_int_equal (seg.kind, TM_SEGMENT_JOINED);
    assert_int_equal (seg.bits, 1599);
    assert_int_equal (seg.count, 6);
    assert_int_equal (seg.flags, TM_SEGMENT_CLOSED);
    assert_int_equal (seg.expires, 99999);
    assert_int_equal (seg.last_ts, 1000 + 1599);
    assert_int_equal (seg.size, 200);
    assert_memory_equal (seg.bytes, chunk, 200);

    //  Joined in two steps (a compaction between), and with the pieces
    //  combined first (partial merge): the same value.
    size_t s1, s2, sc;
    uint8_t *first = tm_segment_join (NULL, 0, ops, lens, 3, &s1);
    uint8_t *again = tm_segment_join (first, s1, ops + 3, lens + 3, 3, &s2);
    assert_int_equal (s2, size);
    assert_memory_equal (again, joined, size);
    uint8_t *combined = tm_segment_combine (ops + 1, lens + 1, 5, &sc);
    assert_non_null (combined);
    const char *two[] = {ops[0], (const char *) combined};
    size_t twolen[] = {lens[0], sc};
    uint8_t *via = tm_segment_join (NULL, 0, two, twolen, 2, &s2);
    assert_int_equal (s2, size);
    assert_memory_equal (via, joined, size);
    free (first);
    free (again);
    free (combined);
    free (via);
    free (joined);
    for (int i = 0; i < 6; i++)
        free ((void *) ops[i]);
}

static void
test_gap_is_broken (void **state)
{
    (void) state;
    uint8_t chunk[64];
    s_chunk (chunk, sizeof chunk);
    size_t l0, l1;
    uint8_t *p0 = s_piece (chunk, 0, 20, 1, TM_SEGMENT_NO_EXPIRY, 0, &l0);
    uint8_t *p1 = s_piece (chunk, 100, 200, 5, TM_SEGMENT_NO_EXPIRY, 0, &l1);
    const char *ops[] = {(const char *) p0, (const char *) p1};
    size_t lens[] = {l0, l1};
    size_t size;
    uint8_t *v = tm_segment_join (NULL, 0, ops, lens, 2, &size);
    tm_segment_t seg;
    assert_int_equal (tm_segment_parse (v, size, &seg), 0);
    assert_int_equal (seg.kind, TM_SEGMENT_BROKEN);
    //  The head still says when it ends, for retention.
    assert_int_equal (seg.last_ts, 1200);
    free (v);
    //  A piece that does not start at 0 with nothing before it: a gap too.
    v = tm_segment_join (NULL, 0, ops + 1, lens + 1, 1, &size);
    assert_int_equal (tm_segment_parse (v, size, &seg), 0);
    assert_int_equal (seg.kind, TM_SEGMENT_BROKEN);
    free (v);
    //  Pieces that leave a gap do not combine (RocksDB keeps them apart).
    assert_null (tm_segment_combine (ops, lens, 2, &size));
    //  Nothing joins to a v1 chunk value.
    uint8_t v1[8 + 6] = {0x80, 0, 0, 0, 0, 0, 0x10, 0, 1, 1, 0, 0, 0, 0};
    v = tm_segment_join (v1, sizeof v1, ops, lens, 1, &size);
    assert_int_equal (tm_segment_parse (v, size, &seg), 0);
    assert_int_equal (seg.kind, TM_SEGMENT_BROKEN);
    free (v);
    free (p0);
    free (p1);
}

static void
test_parse_checks (void **state)
{
    (void) state;
    uint8_t chunk[32];
    s_chunk (chunk, sizeof chunk);
    size_t len;
    uint8_t *p = s_piece (chunk, 9, 130, 3, 5, 0, &len);
    tm_segment_t seg;
    assert_int_equal (tm_segment_parse (p, len, &seg), 0);
    assert_int_equal (seg.start, 1);
    assert_int_equal (seg.size, 16);
    assert_int_equal (seg.expires, 5);
    //  Every shorter prefix and one more byte are refused.
    for (size_t n = 0; n < len; n++)
        assert_int_equal (tm_segment_parse (p, n, &seg), -1);
    uint8_t *longer = malloc (len + 1);
    memcpy (longer, p, len);
    longer[len] = 0;
    assert_int_equal (tm_segment_parse (longer, len + 1, &seg), -1);
    //  Unknown flags, a start past the end, an unknown marker.
    p[18] = 0x80;
    assert_int_equal (tm_segment_parse (p, len, &seg), -1);
    p[18] = 0;
    p[27] = 200;
    assert_int_equal (tm_segment_parse (p, len, &seg), -1);
    p[27] = 1;
    p[17] = 0xE5;
    assert_int_equal (tm_segment_parse (p, len, &seg), -1);
    free (longer);
    free (p);
}

//  Through RocksDB: segments in separate writes read back joined, before
//  and after a compaction and a reopen.
static void
test_store_merge (void **state)
{
    (void) state;
    char dir[64];
    snprintf (dir, sizeof dir, "/tmp/tm_test_segment.XXXXXX");
    assert_non_null (mkdtemp (dir));
    tm_store_t *store = tm_store_open (dir);
    assert_non_null (store);
    uint8_t chunk[300];
    s_chunk (chunk, sizeof chunk);
    uint32_t from = 0;
    for (uint32_t i = 1; i <= 30; i++) {
        uint32_t to = i * 77 + (i % 3);
        size_t len;
        uint8_t *p = s_piece (chunk, from, to, i, TM_SEGMENT_NO_EXPIRY, 0, &len);
        tm_store_batch_t *b = tm_store_batch_new ();
        tm_store_batch_merge (b, "k", 1, p, len);
        assert_int_equal (tm_store_write (store, b, false), 0);
        tm_store_batch_destroy (&b);
        free (p);
        from = to;
        if (i == 15)
            assert_int_equal (tm_store_compact (store), 0);
    }
    for (int round = 0; round < 3; round++) {
        char *v;
        size_t vlen;
        assert_int_equal (tm_store_get (store, "k", 1, &v, &vlen), 0);
        tm_segment_t seg;
        assert_int_equal (tm_segment_parse (v, vlen, &seg), 0);
        assert_int_equal (seg.kind, TM_SEGMENT_JOINED);
        assert_int_equal (seg.count, 30);
        assert_int_equal (seg.bits, from);
        assert_int_equal (seg.size, (from + 7) / 8);
        assert_memory_equal (seg.bytes, chunk, seg.size);
        free (v);
        if (round == 0)
            assert_int_equal (tm_store_compact (store), 0);
        if (round == 1) {
            tm_store_destroy (&store);
            store = tm_store_open (dir);
            assert_non_null (store);
        }
    }
    tm_store_destroy (&store);
    assert_int_equal (tm_util_rm_rf (dir), 0);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_join_pieces),
        cmocka_unit_test (test_gap_is_broken),
        cmocka_unit_test (test_parse_checks),
        cmocka_unit_test (test_store_merge),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
