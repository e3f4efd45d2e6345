/*  fuzz_segment - history values and their join (RocksDB's merge
    operator) over arbitrary bytes

    tm_segment_join and tm_segment_combine run on RocksDB's read and
    compaction paths with bytes from disk: a crash there takes the worker
    down, and a join that invents bytes corrupts history. Input: byte 0 is
    how many values follow (1..8), then each value as a 16-bit little-endian
    length and its bytes; the first is the base when byte 0 is odd.

    Checked: parse stays within its input and what it accepts is
    consistent (size = ceil(bits / 8) - start); a join always parses as
    joined or broken; a joined result's bytes are exactly what the
    segments put there; when the segments combine, joining the combination
    gives the same value as joining them one by one.
*/
#include "fuzz.h"
#include "tm_segment.h"

#include <stdlib.h>
#include <string.h>

#define S_MAX_OPS 8

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int n = data[0] % S_MAX_OPS + 1;
    bool with_base = data[0] & 0x10;
    const char *ops[S_MAX_OPS];
    size_t lens[S_MAX_OPS];
    size_t at = 1;
    int m = 0;
    for (; m < n && at + 2 <= size; m++) {
        size_t len = (size_t) data[at] | (size_t) data[at + 1] << 8;
        at += 2;
        if (len > size - at)
            len = size - at;
        ops[m] = (const char *) data + at;
        lens[m] = len;
        at += len;
        tm_segment_t seg;
        if (tm_segment_parse (ops[m], len, &seg) == 0) {
            if (seg.kind != TM_SEGMENT_BROKEN
                && (seg.size != ((size_t) seg.bits + 7) / 8 - seg.start
                    || seg.bytes + seg.size != (const uint8_t *) ops[m] + len))
                abort ();
        }
    }
    if (m == 0)
        return 0;
    const uint8_t *base = with_base? (const uint8_t *) ops[0]: NULL;
    size_t blen = with_base? lens[0]: 0;
    int first = with_base? 1: 0;
    size_t jlen;
    uint8_t *joined = tm_segment_join (base, blen, ops + first, lens + first, m - first, &jlen);
    if (!joined)
        return 0;
    tm_segment_t j;
    if (tm_segment_parse (joined, jlen, &j) != 0
        || (j.kind != TM_SEGMENT_JOINED && j.kind != TM_SEGMENT_BROKEN))
        abort ();
    //  Joined bytes: the newest segment's bytes end the chunk.
    if (j.kind == TM_SEGMENT_JOINED && m - first > 0) {
        tm_segment_t last;
        if (tm_segment_parse (ops[m - 1], lens[m - 1], &last) != 0 || last.bits != j.bits
            || memcmp (j.bytes + last.start, last.bytes, last.size) != 0)
            abort ();
    }
    if (m - first > 1) {
        size_t clen;
        uint8_t *combined = tm_segment_combine (ops + first, lens + first, m - first, &clen);
        if (combined) {
            const char *one[] = {(const char *) combined};
            size_t onelen[] = {clen};
            size_t vlen;
            uint8_t *via = tm_segment_join (base, blen, one, onelen, 1, &vlen);
            if (via && (vlen != jlen || memcmp (via, joined, jlen) != 0))
                abort ();
            free (via);
            free (combined);
        }
    }
    free (joined);
    return 0;
}
