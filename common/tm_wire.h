/*  tm_wire - readings straight from protobuf wire bytes, without allocation

    Ingest is the hot path: a million readings a second on two cores leaves
    about a microsecond per reading for everything. A generic protobuf-c
    unpack allocates per reading and per string; this scanner walks an
    IngestBatch in place and hands out pointers into the buffer. The gateway
    uses each reading's raw span to build per-worker parts by concatenation
    (protobuf lets repeated fields be concatenated), the worker uses the
    decoded fields to apply. Field numbers are fixed in proto/twinmesh.proto.

    It is a decoder of untrusted bytes: every length is checked against the
    end of the buffer, and it is fuzzed (tests/fuzz/fuzz_wire.c).
*/
#ifndef TM_WIRE_H_INCLUDED
#define TM_WIRE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TM_WIRE_MAX_ENTITY 128
#define TM_WIRE_MAX_PROPERTY 64
#define TM_WIRE_MAX_MODEL 64
#define TM_WIRE_MAX_ATTRS 64           //  Attributes on one reading
#define TM_WIRE_MAX_ATTR_NAME 64
#define TM_WIRE_MAX_ATTR_VALUE 1024    //  Bytes of an attribute's JSON text

typedef struct {
    const char *entity;            //  Points into the batch; not NUL-terminated
    size_t entity_len;
    const char *property;
    size_t property_len;
    const char *model;             //  NULL if absent
    size_t model_len;
    double value;
    int64_t ts_ms;
    const uint8_t *raw;            //  The whole repeated field: tag, length, bytes
    size_t raw_len;
    const uint8_t *body;           //  The Reading message's bytes (inside raw)
    size_t body_len;
    uint32_t nattrs;               //  Attributes it carries (tm_wire_attr_next)
} tm_reading_t;

//  One attribute of a reading: name and JSON text, pointing into the batch.
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} tm_wire_attr_t;

typedef struct {
    const uint8_t *pos;            //  Next unread byte
    const uint8_t *end;            //  One past the last byte
    size_t index;                  //  Readings returned so far
    const char *error;             //  Why the last call returned -1 (static text)
    bool trusted;                  //  Bytes validated before: skip UTF-8 checks
} tm_wire_iter_t;

//  Start iterating over an encoded IngestBatch (borrowed).
void tm_wire_iter_init (tm_wire_iter_t *it, const uint8_t *data, size_t size);

//  The same for bytes this process has already validated with
//  tm_wire_next (e.g. a worker applying a part it checked and logged):
//  structure is still checked, the UTF-8 scans are skipped.
void tm_wire_iter_init_trusted (tm_wire_iter_t *it, const uint8_t *data, size_t size);

//  Next reading: 1 with *r filled, 0 at the end, -1 if malformed or
//  invalid (it->error says why; stop iterating). Fields of the batch other
//  than readings are skipped.
int tm_wire_next (tm_wire_iter_t *it, tm_reading_t *r);

//  The reading's next attribute after *offset (start at 0): 1 with *a
//  filled, 0 when there are no more. Only for readings tm_wire_next
//  returned (their attributes are checked already).
int tm_wire_attr_next (const tm_reading_t *r, size_t *offset, tm_wire_attr_t *a);

//  Check a whole batch; returns the number of readings, or -1 with *error
//  set and *bad_index the failing reading.
long tm_wire_validate (const uint8_t *data, size_t size, const char **error, size_t *bad_index);

//  Encode one reading as a repeated IngestBatch field into buf. Returns the
//  bytes written, or 0 if cap is too small or a field is invalid.
size_t tm_wire_encode (uint8_t *buf, size_t cap, const char *entity, const char *property,
                       double value, int64_t ts_ms, const char *model);

//  tm_wire_encode with attributes (nattrs entries of attrs; may be 0).
size_t tm_wire_encode_attrs (uint8_t *buf, size_t cap, const char *entity,
                             const char *property, double value, int64_t ts_ms,
                             const char *model, const tm_wire_attr_t *attrs, size_t nattrs);

//  Upper bound of tm_wire_encode's output for these string lengths.
size_t tm_wire_encoded_max (size_t entity_len, size_t property_len, size_t model_len);

#endif
