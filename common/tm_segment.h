/*  tm_segment - an open history chunk stored a piece at a time, joined by
    RocksDB's merge operator

    A worker keeps one open history chunk per series: millions of them.
    Keeping each one's bytes in memory until it closes cost about 1,100
    bytes of a twin of eight properties (issue #3 wants the whole twin in
    1 KiB), and writing them whole into the shard's checkpoint blob at every
    round rewrote every open chunk once a second. Instead a checkpoint
    writes, for each series that grew, only the bytes added since the last
    one, as a merge operand (a "segment") on the chunk's own key, in the
    batch that writes the shard; memory then keeps just the encoder's state
    and the bytes not yet written (tm_gorilla_enc_pending). RocksDB joins a
    key's segments when it reads the key and when compactions pass by, with
    the functions below, so a reader always sees one value per chunk.

    Value formats of a history chunk key ('S' shard 'H' entity 0 property
    0 first_ts, see tm_history.h). All start with the same head, which is
    what the retention filter reads:

      head    = last_ts(8) [0xE1 expires(8)]    (tm_history's formats 0, 1)
      v1      = head chunk                      a whole chunk of version 1,
                                                written before segments existed
      joined  = head 0xE2 flags:u8 count:u32 bits:u32 bytes
                bytes: the chunk (tm_gorilla version 2) from byte 0, its
                ceil(bits / 8) bytes; count points in exactly bits bits
      segment = head 0xE3 flags:u8 count:u32 bits:u32 start:u32 bytes
                bytes [start, ceil(bits / 8)) of the chunk, which then has
                count points in bits bits (start is the byte where the last
                segment's bits ended, so its partial last byte comes again,
                completed)
      broken  = head 0xE4                      segments that did not join
                (a gap, or one after a v1 value): the reader reports it

    Integers little-endian. flags: TM_SEGMENT_CLOSED once the chunk's last
    segment is written; an open chunk is never expired by retention (its
    next segment needs the bytes before it), so a series that stops keeps
    at most one open chunk past its retention.

    Joining is a byte copy: a segment's bits continue the chunk's at bit
    `bits` of the joined value, which the encoder guarantees by starting
    each segment at the byte its predecessor ended in. A segment that
    starts past the joined bytes (a gap) makes the value broken rather than
    a chunk that decodes to the wrong points.

    The functions read untrusted bytes (the store) on RocksDB's threads:
    every length is checked, nothing is assumed, nothing is logged.
*/
#ifndef TM_SEGMENT_H_INCLUDED
#define TM_SEGMENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_SEGMENT_STAMPED 0xE1    //  Byte 8 of a head that carries an expiry
#define TM_SEGMENT_JOINED 0xE2
#define TM_SEGMENT_PIECE 0xE3
#define TM_SEGMENT_BROKEN 0xE4
#define TM_SEGMENT_NO_EXPIRY INT64_MIN

#define TM_SEGMENT_CLOSED 0x01     //  flags: no segment follows

//  Largest value bytes a chunk may have (tm_gorilla's stream limit).
#define TM_SEGMENT_MAX_BYTES 65535u

//  A joined, segment or broken value, parsed: bytes point into the value.
typedef struct {
    int64_t last_ts;               //  The chunk's last point, as of this value
    int64_t expires;               //  TM_SEGMENT_NO_EXPIRY, or the stamped expiry
    uint8_t kind;                  //  TM_SEGMENT_JOINED, _PIECE or _BROKEN
    uint8_t flags;                 //  TM_SEGMENT_CLOSED
    uint32_t count;                //  Points in the chunk (not broken)
    uint32_t bits;                 //  Its bits (not broken)
    uint32_t start;                //  Piece: offset of bytes in the chunk; else 0
    const uint8_t *bytes;          //  Chunk bytes [start, ceil(bits / 8))
    size_t size;                   //  ceil(bits / 8) - start
} tm_segment_t;

//  A timestamp as history keys and heads hold it: 8 bytes big-endian with
//  the sign bit flipped, so that byte order is time order.
void tm_segment_put_ts (uint8_t *p, int64_t ts);
int64_t tm_segment_get_ts (const uint8_t *p);

//  Bytes tm_segment_put writes for seg (its kind, expires and size).
size_t tm_segment_size (const tm_segment_t *seg);

//  Write seg as a value of its kind into out (tm_segment_size bytes).
//  Returns the bytes written.
size_t tm_segment_put (uint8_t *out, const tm_segment_t *seg);

//  Parse a joined, segment or broken value: 0, or -1 if the bytes are none
//  of them (v1 values among them). Checks that size is what bits and start
//  say and that the chunk stays within TM_SEGMENT_MAX_BYTES.
int tm_segment_parse (const void *val, size_t vlen, tm_segment_t *out);

//  RocksDB's full merge: the key's value (NULL: none) followed by its
//  segments, oldest first, as one joined value (broken if they do not
//  join). Returns malloc'd bytes with *size, or NULL if memory is short.
uint8_t *tm_segment_join (const uint8_t *base, size_t blen, const char *const *ops,
                          const size_t *lens, int n, size_t *size);

//  RocksDB's partial merge: consecutive segments as one segment; NULL if
//  they do not combine (RocksDB then keeps them apart) or memory is short.
uint8_t *tm_segment_combine (const char *const *ops, const size_t *lens, int n, size_t *size);

#endif
