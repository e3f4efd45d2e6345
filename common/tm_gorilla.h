/*  tm_gorilla - compressed chunks of one series' history (ts_ms, value)

    Every accepted reading is kept in its series' history, so a worker
    holds one open chunk per series: millions of them, each appended to a
    few times a minute and read back by range queries. A chunk must be
    small on disk (the goal is at most 2 bytes per reading on smooth sensor
    data; raw points are 16) and the open encoder small in memory: its
    state is 48 bytes, nothing is allocated before the first point, and
    the buffer holds the chunk's bytes and at most a quarter more, or 32
    bytes (each point is encoded aside and then copied in, so no room for
    the largest point is kept). Appending is O(1) and allocates only when
    the buffer grows (every twenty points or so).

    The scheme is the one of Facebook's Gorilla (Pelkonen et al., VLDB
    2015): delta-of-delta timestamps in prefix-coded buckets and values
    XORed with their predecessor, reusing the previous window of
    meaningful bits. Two changes, both measured (tests/bench/bench_history.c):

    - Timestamp buckets are sized for milliseconds. Gorilla's buckets
      assume second timestamps; with milliseconds a regular series still
      costs one bit per point, but jitter is tens to hundreds of
      milliseconds and a missed reading is a whole interval.
    - Values that sensors report as decimals (12.3, 0.7578, 431) are coded
      as integers at a decimal scale (123 at scale 1) whose deltas go
      through an adaptive Rice code. XOR works on binary mantissas: the
      XOR of 12.3 and 12.4 has ~50 meaningful bits, so plain Gorilla
      spends 6-7 bytes per reading on such data, while the deltas of the
      scaled integers take 4-10 bits. A value is coded that way only when
      n / 10^scale gives back exactly the same double (bit for bit);
      anything else (full-precision floats, -0.0, NaN) falls back to XOR
      within the same chunk. Decoding stays lossless.

    Chunk layout, version 1 (all multi-byte header fields little-endian):

        version:u8 = 1   count:u32   (if count >= 1) first
        first  = ts:zigzag-varint  mode:u8  value
                 mode 0..22: value = zigzag-varint n, the value is n / 10^mode
                 mode 255:   value = 8 bytes, IEEE-754 binary64 (XOR mode)
        then (count - 1) x (tcode vcode), bits MSB first, zero-padded

        tcode: dod = (ts - prev_ts) - prev_delta (prev_delta starts at 0)
            0                   dod = 0
            10     + 7 bits     -64 .. 63            (clock jitter)
            110    + 12 bits    -2048 .. 2047        (jitter at 1 s .. 1 min)
            1110   + 20 bits    about +-8.7 minutes  (a missed reading)
            11110  + 32 bits    about +-24 days
            11111  + 64 bits    anything
        vcode in decimal mode (scale s, zz = zigzag (n - prev_n), Rice
        parameter k from the running mean of zz):
            q ones, 0, k bits                  zz = q << k | bits, q < 12
            12 ones, 0, L-1:6, zz:L            a delta too big for Rice
            12 ones, 1, f:5 ...                f <= 22: scale becomes f, then
                                               L-1:6, zigzag (n):L
                                               f = 31: XOR mode, then an
                                               XOR vcode (not a switch)
        vcode in XOR mode (x = bits of value XOR bits of previous):
            0                                  x = 0
            10 + len bits                      x fits the current window
            11 + lead:5 + len-1:6 + len bits   new window (lead + len <= 64)
            11 11111 111111 f:5 L-1:6 zigzag (n):L
                                               decimal mode at scale f

    The decoder reads untrusted bytes (from disk or another worker): it
    never reads past the end, does O(count) work with count bounded by the
    size, checks that timestamps strictly increase, and returns an error
    with a reason instead of asserting. Assumes IEEE-754 doubles evaluated
    without excess precision (FLT_EVAL_METHOD 0: x86-64, aarch64).
*/
#ifndef TM_GORILLA_H_INCLUDED
#define TM_GORILLA_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_GORILLA_VERSION 1

//  Append outcomes the caller must handle (positive, as in CONVENTIONS.md).
#define TM_GORILLA_E_ORDER 1       //  ts_ms <= the last point's: late or duplicate
#define TM_GORILLA_E_FULL 2        //  Chunk at TM_GORILLA_MAX_BYTES: start another

//  Largest chunk an encoder builds (and count fits the header's u32).
#define TM_GORILLA_MAX_BYTES (64u << 20)

//  Header bytes before the first point: version + count.
#define TM_GORILLA_EMPTY_SIZE 5

//  The encoder of one open chunk; embed it (init/fini), 48 bytes.
typedef struct {
    uint8_t *buf;                  //  Chunk bytes, NULL until the first point
    uint32_t cap;                  //  Bytes allocated at buf
    uint32_t bits;                 //  Bits written, header included
    int64_t last_ts;               //  Timestamp of the last point
    int64_t last_delta;            //  Its distance to the one before (wraps mod 2^64)
    uint64_t last;                 //  Last value: its bits (XOR mode) or n (decimal)
    uint32_t rice_sum;             //  Rice statistics: sum of recent zigzag deltas
    unsigned rice_n : 6;           //  Rice statistics: deltas in rice_sum, 1..31
    unsigned scale : 5;            //  Decimal scale 0..22, or 31 in XOR mode
    unsigned hint : 5;             //  XOR mode: the scale to try first
    unsigned lead : 5;             //  XOR window: leading zero bits
    unsigned trail : 6;            //  XOR window: trailing zero bits
    unsigned xor_only : 1;         //  Never use decimal mode (benchmarks)
} tm_gorilla_enc_t;

//  The decoder of one chunk; the bytes are borrowed, not copied.
typedef struct {
    const uint8_t *data;           //  The chunk
    uint64_t pos;                  //  Next bit to read
    uint64_t end;                  //  Bits in the chunk
    uint32_t count;                //  Points the header announces
    uint32_t index;                //  Points returned so far
    int64_t last_ts;               //  Last point's timestamp
    int64_t last_delta;            //  Its distance to the one before
    uint64_t last;                 //  Last value: bits (XOR mode) or n (decimal)
    double first_value;            //  Value of point 0, from the header
    uint32_t rice_sum;             //  Rice statistics, as in the encoder
    unsigned rice_n;               //  Rice statistics, as in the encoder
    unsigned scale;                //  Decimal scale, or 31 in XOR mode
    unsigned last_scale;           //  Last decimal scale entered (the encoder's hint)
    unsigned lead;                 //  XOR window: leading zero bits
    unsigned trail;                //  XOR window: trailing zero bits
    const char *error;             //  Why the chunk is malformed (static text)
} tm_gorilla_dec_t;

//  Start an empty chunk. Allocates nothing.
void tm_gorilla_enc_init (tm_gorilla_enc_t *self);

//  Encode every value with Gorilla's XOR scheme, never as a decimal;
//  for benchmarks and tests. Call before the first append.
void tm_gorilla_enc_set_xor_only (tm_gorilla_enc_t *self, bool xor_only);

//  Append a point. Returns 0; TM_GORILLA_E_ORDER if ts_ms is not after
//  the last point's (nothing changes); TM_GORILLA_E_FULL at the size
//  limit (nothing changes); -1 if the buffer cannot grow (nothing changes).
int tm_gorilla_enc_append (tm_gorilla_enc_t *self, int64_t ts_ms, double value);

//  The chunk so far, complete and decodable at any moment: borrowed,
//  valid until the next append or fini. *size gets its length.
const uint8_t *tm_gorilla_enc_data (const tm_gorilla_enc_t *self, size_t *size);

//  Points appended.
uint32_t tm_gorilla_enc_count (const tm_gorilla_enc_t *self);

//  Timestamp of the first and last point (0 if the chunk is empty).
int64_t tm_gorilla_enc_first_ts (const tm_gorilla_enc_t *self);
int64_t tm_gorilla_enc_last_ts (const tm_gorilla_enc_t *self);

//  Bytes of heap the encoder's buffer holds, for memory accounting.
size_t tm_gorilla_enc_heap (const tm_gorilla_enc_t *self);

//  Continue a stored chunk (e.g. the open chunk reloaded after a
//  restart): decodes it to rebuild the state and copies the bytes, so
//  appending goes on as if the encoder had never stopped. self must be
//  initialised and empty. Returns 0, -1 if the chunk is malformed (error
//  gets the reason) or memory is short (error = "out of memory").
int tm_gorilla_enc_resume (tm_gorilla_enc_t *self, const uint8_t *data, size_t size,
                           const char **error);

//  Free the buffer; the encoder is empty again, as after init (the
//  xor_only setting is kept).
void tm_gorilla_enc_fini (tm_gorilla_enc_t *self);

//  Start decoding a chunk (borrowed; must outlive the decoder). Returns 0,
//  or -1 if the header is malformed (self->error says why; next returns -1).
int tm_gorilla_dec_init (tm_gorilla_dec_t *self, const uint8_t *data, size_t size);

//  Next point: 1 with *ts_ms and *value set, 0 at the end, -1 if the chunk
//  is malformed (self->error says why, static text; the error is sticky).
//  Points before an error were decoded correctly from the bytes given.
int tm_gorilla_dec_next (tm_gorilla_dec_t *self, int64_t *ts_ms, double *value);

//  Points the header announces (0 if the header is malformed).
uint32_t tm_gorilla_dec_count (const tm_gorilla_dec_t *self);

#endif
