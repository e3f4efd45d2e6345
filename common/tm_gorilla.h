/*  tm_gorilla - compressed chunks of one series' history (ts_ms, value)

    Every accepted reading is kept in its series' history, so a worker
    holds one open chunk per series: millions of them, each appended to a
    few times a minute and read back by range queries. A chunk must be
    small on disk (the goal is at most 2 bytes per reading on smooth sensor
    data; raw points are 16) and the open encoder small in memory. The
    encoder is therefore a stream: it writes a chunk's bytes once, in
    order, and never goes back to change one (no count in the chunk), so
    once a checkpoint has stored the bytes written so far it forgets them
    (tm_gorilla_enc_pending, tm_gorilla_enc_flushed) and keeps only its
    continuation state, 32 bytes and the last point (which a twin keeps
    anyway, for its analytics), plus the bytes not yet stored. Those stay
    inside the state while they fit in TM_GORILLA_INLINE bytes (a few
    points), so a series flushed at every checkpoint allocates nothing,
    but for a chunk's first point (its header takes 9 bytes or more) until
    the next checkpoint; past that they go to the heap, which grows by
    about a quarter at a time with the bytes each point takes (no room for
    the largest point is kept). Appending is O(1) and allocates only when
    that buffer grows.

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

    Chunk layout, version 2 (what the encoder writes):

        version:u8 = 2   first   then (count - 1) x (tcode vcode)

    first, tcode and vcode exactly as in version 1 below; the bits run on
    to the chunk's last point and the last byte is zero-padded. The chunk
    holds neither its count nor its length in bits: its container stores
    both, and the decoder is given them (tm_gorilla_dec_init_stream). An
    empty chunk has no bytes (count 0, bits 0). A v2 chunk holds at most
    TM_GORILLA_STREAM_MAX_POINTS points in TM_GORILLA_STREAM_MAX_BYTES
    bytes and its span (last - first timestamp) is at most
    TM_GORILLA_STREAM_MAX_SPAN (2^36 - 1 ms, about 2.2 years); the encoder
    appends no point more than TM_GORILLA_STREAM_MAX_DELTA (2^32 - 1 ms,
    about 49 days) after the one before. At those limits it returns
    TM_GORILLA_E_FULL, and the caller starts another chunk. (They let the
    state fit in 32 bytes.) The decoder accepts any delta, as in v1.

    A chunk stored in pieces: after n points the chunk has bits b; a
    checkpoint stores bytes [s, ceil(b / 8)) with s = floor(b' / 8),
    where b' is the bits stored by the previous checkpoint, so the piece's
    first byte is the previous piece's last byte again, now with more bits
    in it. Laying each piece over the previous ones at its offset s gives
    the whole chunk.

    Chunk layout, version 1 (read only: stores written before version 2;
    all multi-byte header fields little-endian):

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

    A v1 chunk is a v2 chunk with its count inserted after the version
    byte (every header field is whole bytes): the bit stream is the same.

    The encoder's state as bytes (tm_gorilla_enc_save, for a checkpoint
    blob; varints as in tm_varint.h):

        format:u8   flags:u8 (bit 0 xor_only, bit 1 not empty, bit 2 dirty)
        if not empty:
            count  bits  start  [zigzag (last_ts)]  span  last_delta  (varints)
            scale:u8  hint:u8  lead:u8  trail:u8  rice_n:u8  rice_sum (varint)
            [last: zigzag-varint n (decimal mode) or 8 bytes LE (XOR mode)]
            the pending bytes: chunk bytes [start, ceil (bits / 8))

    Format 1 (a whole encoder's, tm_gorilla_enc_save) has the bracketed
    fields, the last point; format 2 (an open chunk's, tm_gorilla_open_save)
    has not: its caller stores the point and gives it back to load.

    The decoder reads untrusted bytes (from disk or another worker): it
    never reads past the end, does O(count) work with count bounded by the
    size, checks that timestamps strictly increase, and returns an error
    with a reason instead of asserting; loading a saved state checks every
    field the same way. Assumes IEEE-754 doubles evaluated without excess
    precision (FLT_EVAL_METHOD 0: x86-64, aarch64).
*/
#ifndef TM_GORILLA_H_INCLUDED
#define TM_GORILLA_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_GORILLA_VERSION 1           //  v1 chunks: read only (stores written before v2)
#define TM_GORILLA_STREAM_VERSION 2    //  What the encoder writes

//  Append outcomes the caller must handle (positive, as in CONVENTIONS.md).
#define TM_GORILLA_E_ORDER 1           //  ts_ms <= the last point's: late or duplicate
#define TM_GORILLA_E_FULL 2            //  At a limit: the caller closes the chunk, starts another

//  Limits of a v2 chunk (the encoder returns TM_GORILLA_E_FULL at them).
#define TM_GORILLA_STREAM_MAX_BYTES 65535
#define TM_GORILLA_STREAM_MAX_POINTS 65535
#define TM_GORILLA_STREAM_MAX_DELTA 0xFFFFFFFFLL       //  ms between two points
#define TM_GORILLA_STREAM_MAX_SPAN ((1LL << 36) - 1)   //  ms from the first point to the last

//  Pending bytes kept inside the encoder state, without allocating.
#define TM_GORILLA_INLINE 8

//  v1 chunks: the header before the first point (version + count), and
//  the largest chunk the v1 encoder built.
#define TM_GORILLA_EMPTY_SIZE 5
#define TM_GORILLA_MAX_BYTES (64u << 20)

//  An open chunk's state without its last point: 32 bytes, for a caller
//  that keeps the series' last point itself (a twin's property does, for
//  its analytics: holding it twice cost 16 bytes a series) and passes it
//  to the calls that need it. Embed it (init/fini). The chunk's first
//  start bytes are stored elsewhere and forgotten; the rest, bytes
//  [start, ceil (bits / 8)), are pending, here. The first timestamp is
//  the last one less (last - first_lo) mod 2^36, so no field changes with
//  the span at every point. (uint64_t bit-fields: an implementation-defined
//  type in C11, which gcc and clang take; the size is asserted.)
typedef struct {
    union {
        uint8_t *heap;                 //  Pending bytes, when more than TM_GORILLA_INLINE
        uint8_t inl[TM_GORILLA_INLINE];  //  Pending bytes, while they fit
    } pend;
    uint64_t first_lo : 36;            //  First timestamp mod 2^36 (the span is shorter)
    uint64_t dirty : 1;                //  Points appended since the last flushed()
    uint64_t rice_n : 5;               //  Rice statistics: deltas in rice_sum, 1..31
    uint64_t scale : 5;                //  Decimal scale 0..22, or 31 in XOR mode
    uint64_t hint : 5;                 //  XOR mode: the scale to try first, 0..22
    uint64_t lead : 5;                 //  XOR window: leading zero bits
    uint64_t trail : 6;                //  XOR window: trailing zero bits
    uint64_t xor_only : 1;             //  Never use decimal mode (benchmarks)
    uint32_t bits;                     //  Bits of the whole chunk, header included
    uint32_t last_delta;               //  Last point's distance to the one before (0 if one)
    uint32_t rice_sum;                 //  Rice statistics: sum of recent zigzag deltas
    uint16_t start;                    //  Chunk bytes before the pending ones (stored)
    uint16_t count;                    //  Points in the chunk
} tm_gorilla_open_t;

//  The encoder of one open chunk, with its last point: 48 bytes, for
//  callers that hold nothing else of the series (tests, benchmarks, tools).
typedef struct {
    tm_gorilla_open_t open;
    int64_t last_ts;                   //  Timestamp of the last point
    double last;                       //  Value of the last point
} tm_gorilla_enc_t;

//  The decoder of one chunk; the bytes are borrowed, not copied.
typedef struct {
    const uint8_t *data;               //  The chunk
    uint64_t pos;                      //  Next bit to read
    uint64_t end;                      //  Bits in the chunk
    uint32_t count;                    //  Points in the chunk
    uint32_t index;                    //  Points returned so far
    int64_t last_ts;                   //  Last point's timestamp
    int64_t last_delta;                //  Its distance to the one before
    uint64_t last;                     //  Last value: bits (XOR mode) or n (decimal)
    double first_value;                //  Value of point 0, from the header
    uint32_t rice_sum;                 //  Rice statistics, as in the encoder
    unsigned rice_n;                   //  Rice statistics, as in the encoder
    unsigned scale;                    //  Decimal scale, or 31 in XOR mode
    unsigned last_scale;               //  Last decimal scale entered (the encoder's hint)
    unsigned lead;                     //  XOR window: leading zero bits
    unsigned trail;                    //  XOR window: trailing zero bits
    unsigned version;                  //  Chunk version, 1 or 2
    const char *error;                 //  Why the chunk is malformed (static text)
} tm_gorilla_dec_t;

//  Start an empty chunk. Allocates nothing.
void tm_gorilla_enc_init (tm_gorilla_enc_t *self);

//  Encode every value with Gorilla's XOR scheme, never as a decimal;
//  for benchmarks and tests. Call before the first append.
void tm_gorilla_enc_set_xor_only (tm_gorilla_enc_t *self, bool xor_only);

//  Append a point. Returns 0; TM_GORILLA_E_ORDER if ts_ms is not after
//  the last point's; TM_GORILLA_E_FULL at a limit of a v2 chunk (points,
//  bytes, a delta or the span: see the top of this file); -1 if the
//  pending bytes cannot grow. Nothing changes unless it returns 0.
int tm_gorilla_enc_append (tm_gorilla_enc_t *self, int64_t ts_ms, double value);

//  Points in the chunk (0 if empty).
uint32_t tm_gorilla_enc_count (const tm_gorilla_enc_t *self);

//  Timestamp of the first and last point (0 if the chunk is empty).
int64_t tm_gorilla_enc_first_ts (const tm_gorilla_enc_t *self);
int64_t tm_gorilla_enc_last_ts (const tm_gorilla_enc_t *self);

//  Bits of the whole chunk, header included (0 if empty): what the
//  container stores with the chunk's count.
uint32_t tm_gorilla_enc_bits (const tm_gorilla_enc_t *self);

//  Bytes of heap the pending bytes hold (0 while inline), for memory
//  accounting.
size_t tm_gorilla_enc_heap (const tm_gorilla_enc_t *self);

//  The part of the chunk not stored yet: bytes [*start, ceil (bits / 8))
//  of the chunk, where *start = floor (stored bits / 8), so the first byte
//  repeats the partial last byte that was stored (now with more bits in
//  it). Borrowed, valid until the next call that changes self. NULL, *start
//  0 and *size 0 if the chunk is empty. Right after tm_gorilla_enc_flushed
//  (nothing appended since), *size is 1 if bits is not a multiple of 8
//  (the partial byte again, unchanged) and 0 if it is; to skip such a
//  flush, compare tm_gorilla_enc_bits with the bits stored.
const uint8_t *tm_gorilla_enc_pending (const tm_gorilla_enc_t *self, uint32_t *start,
                                       size_t *size);

//  Everything up to the current bits is stored: forget it but the last
//  partial byte (back inline, the heap freed). O(1). No-op if empty.
void tm_gorilla_enc_flushed (tm_gorilla_enc_t *self);

//  True if points were appended since the last flushed() (or since init,
//  resume, or a load of a state saved not as flushed): the pending bytes
//  hold something no segment has stored.
bool tm_gorilla_enc_dirty (const tm_gorilla_enc_t *self);

//  The whole chunk while nothing has been flushed (tests, benchmarks):
//  borrowed as pending is, *size its bytes. NULL once something was
//  flushed, and NULL with *size 0 if the chunk is empty.
const uint8_t *tm_gorilla_enc_data (const tm_gorilla_enc_t *self, size_t *size);

//  The state as bytes, for a checkpoint blob (format at the top of this
//  file): the continuation fields and the pending bytes. With as_flushed,
//  as if tm_gorilla_enc_flushed had just been called (for a blob written
//  in the same batch as the piece holding the pending bytes); self does
//  not change. save_size is an upper bound of what save writes; save
//  returns the bytes written at out.
size_t tm_gorilla_enc_save_size (const tm_gorilla_enc_t *self, bool as_flushed);
size_t tm_gorilla_enc_save (const tm_gorilla_enc_t *self, bool as_flushed, uint8_t *out);

//  Restore a saved state from untrusted bytes into self, initialised and
//  empty: checks every field so that later appends never read or write
//  out of bounds or hit undefined behaviour, whatever the bytes. Returns
//  0 with *used the bytes read (the state may be followed by other data),
//  or -1 with *error the reason (static text; error may be NULL) and self
//  still empty. The xor_only setting comes from the bytes.
int tm_gorilla_enc_load (tm_gorilla_enc_t *self, const uint8_t *data, size_t size, size_t *used,
                         const char **error);

//  A v1 chunk (from a blob written before v2) as a fresh v2 chunk with the
//  same points, all pending (nothing flushed), appending going on as if
//  the encoder had never stopped. self must be initialised and empty.
//  Returns 0, or -1 with *error the reason (error may be NULL): the chunk
//  is malformed, is beyond a v2 chunk's limits (keep it as a closed v1
//  chunk), or memory is short.
int tm_gorilla_enc_resume (tm_gorilla_enc_t *self, const uint8_t *data, size_t size,
                           const char **error);

//  Free the pending bytes; the encoder is empty again, as after init (the
//  xor_only setting is kept).
void tm_gorilla_enc_fini (tm_gorilla_enc_t *self);

//  The same, on an open chunk whose caller keeps its last point: last_ts
//  and last are that point (ignored while the chunk is empty), and after
//  an append that returns 0 the appended point is the last one. A value
//  that the chunk codes as a decimal (n at scale s) must come back as the
//  same double, as it does when the caller keeps the value it appended:
//  the encoder finds n again from it. Where a call is not listed, its
//  tm_gorilla_enc_ twin above says what it does.
void tm_gorilla_open_init (tm_gorilla_open_t *self);
void tm_gorilla_open_set_xor_only (tm_gorilla_open_t *self, bool xor_only);
int tm_gorilla_open_append (tm_gorilla_open_t *self, int64_t last_ts, double last,
                            int64_t ts_ms, double value);
uint32_t tm_gorilla_open_count (const tm_gorilla_open_t *self);
int64_t tm_gorilla_open_first_ts (const tm_gorilla_open_t *self, int64_t last_ts);
uint32_t tm_gorilla_open_bits (const tm_gorilla_open_t *self);
size_t tm_gorilla_open_heap (const tm_gorilla_open_t *self);
const uint8_t *tm_gorilla_open_pending (const tm_gorilla_open_t *self, uint32_t *start,
                                        size_t *size);
void tm_gorilla_open_flushed (tm_gorilla_open_t *self);
bool tm_gorilla_open_dirty (const tm_gorilla_open_t *self);
const uint8_t *tm_gorilla_open_data (const tm_gorilla_open_t *self, size_t *size);
void tm_gorilla_open_fini (tm_gorilla_open_t *self);

//  Saved without the last point (format 2: the caller saves that).
size_t tm_gorilla_open_save_size (const tm_gorilla_open_t *self, bool as_flushed);
size_t tm_gorilla_open_save (const tm_gorilla_open_t *self, int64_t last_ts, bool as_flushed,
                             uint8_t *out);

//  Load a state of either format into self (initialised, empty), going on
//  from the last point given: a format-1 state must end at that point,
//  and in a format-2 one that codes values as decimals, last must be one
//  at its scale. Otherwise as tm_gorilla_enc_load.
int tm_gorilla_open_load (tm_gorilla_open_t *self, int64_t last_ts, double last,
                          const uint8_t *data, size_t size, size_t *used, const char **error);

//  As tm_gorilla_enc_resume; the chunk must end at the last point given.
int tm_gorilla_open_resume (tm_gorilla_open_t *self, int64_t last_ts, double last,
                            const uint8_t *data, size_t size, const char **error);

//  Start decoding a v1 chunk (borrowed; must outlive the decoder). Returns
//  0, or -1 if the header is malformed (self->error says why; next returns -1).
int tm_gorilla_dec_init (tm_gorilla_dec_t *self, const uint8_t *data, size_t size);

//  Start decoding a v2 chunk: its bytes from byte 0, which hold exactly
//  bits bits and count points (the container says both; bytes past
//  ceil (bits / 8) are not read). Untrusted: the points must end exactly
//  at bits with the count reached, the padding bits be zero, and nothing
//  is read past size. count 0 with bits 0 is the empty chunk (data may
//  then be NULL). Returns 0, or -1 as dec_init.
int tm_gorilla_dec_init_stream (tm_gorilla_dec_t *self, const uint8_t *data, size_t size,
                                uint32_t count, uint64_t bits);

//  Next point, of either version: 1 with *ts_ms and *value set, 0 at the
//  end, -1 if the chunk is malformed (self->error says why, static text;
//  the error is sticky). Points before an error were decoded correctly
//  from the bytes given.
int tm_gorilla_dec_next (tm_gorilla_dec_t *self, int64_t *ts_ms, double *value);

//  Points in the chunk (0 if the header is malformed).
uint32_t tm_gorilla_dec_count (const tm_gorilla_dec_t *self);

#endif
