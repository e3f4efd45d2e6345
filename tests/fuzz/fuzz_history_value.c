/*  fuzz_history_value - stored history values (closed chunks, late
    readings) over arbitrary bytes, as the compaction filter and queries
    read them

    The values come from disk and are read on RocksDB's compaction threads
    by tm_history_filter, where a crash takes the worker down and a wrong
    answer deletes history. Input: byte 0 picks the key kind ('H' if even,
    'L' if odd), bytes 1..8 the clock, the rest is the value. The decoder
    must not crash; what it accepts must lie within the input and be one of
    the formats; the filter must keep whatever does not decode and every
    open chunk (tm_segment), and agree with the decoded expiry (format 1)
    or the worker's retention (format 0) on what is dropped. An accepted chunk goes through the
    chunk decoder, which must stop within its bytes.
*/
#include "fuzz.h"
#include "tm_history.h"
#include "tm_segment.h"

#include <stdlib.h>
#include <string.h>

static int64_t s_clock;

static int64_t
s_now (void)
{
    return s_clock;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    char kind = data[0] % 2? 'L': 'H';
    uint64_t c = 0;
    for (int i = 1; i <= 8; i++)
        c = c << 8 | data[i];
    s_clock = (int64_t) (c >> 1);          //  non-negative: a wall clock
    const uint8_t *val = data + 9;
    size_t vlen = size - 9;
    //  A key of that kind for shard 7, "e" "p", at ts 1000.
    uint8_t key[18] = {'S', 0, 0, 0, 7, (uint8_t) kind, 'e', 0, 'p', 0};
    uint64_t ts = (uint64_t) 1000 ^ (1ULL << 63);
    for (int i = 7; i >= 0; i--, ts >>= 8)
        key[10 + i] = (uint8_t) ts;
    tm_history_retention_t ret = {.retention_ms = 86400000, .now_ms = s_now};
    tm_history_value_t hv;
    int rc = tm_history_value_decode (kind, val, vlen, &hv);
    bool drop = tm_history_filter (&ret, key, sizeof key, val, vlen);
    if (rc != 0) {
        if (rc != -1 || drop)
            abort ();
        return 0;
    }
    if (hv.format != 0 && hv.format != 1)
        abort ();
    if (hv.format == 0 && hv.expires != TM_HISTORY_NO_EXPIRY)
        abort ();
    //  An open chunk is kept whatever its age (tm_segment).
    if (kind == 'H' && !hv.closed) {
        if (drop || hv.kind != TM_SEGMENT_JOINED)
            abort ();
    }
    else
    if (hv.format == 1) {
        if (drop != (s_clock > hv.expires))
            abort ();
    }
    else {
        int64_t last = kind == 'H'? hv.last_ts: 1000;
        if (drop != (s_clock - ret.retention_ms > last))
            abort ();
    }
    if (kind == 'H' && hv.kind == TM_SEGMENT_BROKEN) {
        if (hv.chunk_size != 0)
            abort ();
    }
    else
    if (kind == 'H') {
        if (!hv.chunk || hv.chunk < val || hv.chunk + hv.chunk_size != val + vlen)
            abort ();
        tm_gorilla_dec_t dec;
        int drc = hv.kind == TM_SEGMENT_JOINED?
                  tm_gorilla_dec_init_stream (&dec, hv.chunk, hv.chunk_size, hv.count, hv.bits):
                  tm_gorilla_dec_init (&dec, hv.chunk, hv.chunk_size);
        if (drc == 0) {
            int64_t t;
            double v;
            uint32_t n = 0;
            while (tm_gorilla_dec_next (&dec, &t, &v) == 1)
                if (++n > tm_gorilla_dec_count (&dec))
                    abort ();
        }
    }
    else
    if (hv.chunk || (vlen != 8 && vlen != 17))
        abort ();
    return 0;
}
