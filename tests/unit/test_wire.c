/*  test_wire - unit tests for tm_wire, the in-place IngestBatch scanner

    The scanner is the ingest hot path and a decoder of untrusted bytes, so
    it is checked two ways: against protobuf-c itself (a batch packed by
    protobuf-c must scan to the same readings, and a batch built by
    tm_wire_encode must unpack with protobuf-c), and against hand-made
    malformed bytes for every error it reports.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_codec.h"
#include "tm_wire.h"

//  A tiny protobuf writer for hand-made (often invalid) messages.
typedef struct {
    uint8_t data[4096];
    size_t len;
} buf_t;

static void
s_byte (buf_t *b, uint8_t v)
{
    assert_true (b->len < sizeof b->data);
    b->data[b->len++] = v;
}

static void
s_varint (buf_t *b, uint64_t v)
{
    while (v >= 0x80) {
        s_byte (b, (uint8_t) (v | 0x80));
        v >>= 7;
    }
    s_byte (b, (uint8_t) v);
}

static void
s_bytes (buf_t *b, const void *data, size_t len)
{
    assert_true (b->len + len <= sizeof b->data);
    memcpy (b->data + b->len, data, len);
    b->len += len;
}

static void
s_key (buf_t *b, unsigned field, unsigned wire_type)
{
    s_varint (b, (uint64_t) field << 3 | wire_type);
}

static void
s_string (buf_t *b, unsigned field, const void *s, size_t len)
{
    s_key (b, field, 2);
    s_varint (b, len);
    s_bytes (b, s, len);
}

static void
s_double (buf_t *b, unsigned field, double v)
{
    s_key (b, field, 1);
    uint64_t bits;
    memcpy (&bits, &v, sizeof bits);
    for (int i = 0; i < 8; i++)
        s_byte (b, (uint8_t) (bits >> (8 * i)));
}

//  Wrap a reading body as one IngestBatch.readings field.
static void
s_wrap (buf_t *batch, const buf_t *reading)
{
    s_key (batch, 1, 2);
    s_varint (batch, reading->len);
    s_bytes (batch, reading->data, reading->len);
}

//  A valid reading body with the given entity; callers append more fields.
static void
s_reading_body (buf_t *r, const char *entity, size_t entity_len)
{
    memset (r, 0, sizeof *r);
    s_string (r, 1, entity, entity_len);
    s_string (r, 2, "pm25", 4);
    s_double (r, 3, 12.5);
    s_key (r, 4, 0);
    s_varint (r, 1700000000000ULL);
}

//  Expect the batch to fail with this error text at this reading index.
static void
s_expect_error (const buf_t *batch, const char *error, size_t index)
{
    const char *why = NULL;
    size_t bad = 999;
    long n = tm_wire_validate (batch->data, batch->len, &why, &bad);
    assert_int_equal (n, -1);
    assert_non_null (why);
    assert_string_equal (why, error);
    assert_int_equal (bad, index);
}

static void
test_encode_round_trip (void **state)
{
    (void) state;
    uint8_t buf[512];
    size_t n1 = tm_wire_encode (buf, sizeof buf, "station-7", "no2", 41.25, 1700000000123LL,
                                "air_station");
    assert_true (n1 > 0);
    assert_true (n1 <= tm_wire_encoded_max (9, 3, 11));
    size_t n2 = tm_wire_encode (buf + n1, sizeof buf - n1, "bay/é", "occupied", -0.0, 1,
                                NULL);
    assert_true (n2 > 0);

    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n1 + n2);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    assert_int_equal (r.entity_len, 9);
    assert_memory_equal (r.entity, "station-7", 9);
    assert_int_equal (r.property_len, 3);
    assert_memory_equal (r.property, "no2", 3);
    assert_non_null (r.model);
    assert_int_equal (r.model_len, 11);
    assert_memory_equal (r.model, "air_station", 11);
    assert_true (r.value == 41.25);
    assert_int_equal (r.ts_ms, 1700000000123LL);
    //  The raw span is exactly the bytes tm_wire_encode wrote.
    assert_ptr_equal (r.raw, buf);
    assert_int_equal (r.raw_len, n1);

    assert_int_equal (tm_wire_next (&it, &r), 1);
    assert_int_equal (r.entity_len, strlen ("bay/é"));
    assert_memory_equal (r.entity, "bay/é", r.entity_len);
    assert_null (r.model);
    assert_int_equal (r.model_len, 0);
    assert_true (r.value == 0.0 && signbit (r.value));
    assert_int_equal (r.ts_ms, 1);
    assert_ptr_equal (r.raw, buf + n1);
    assert_int_equal (r.raw_len, n2);
    assert_int_equal (it.index, 2);

    assert_int_equal (tm_wire_next (&it, &r), 0);
    assert_int_equal (tm_wire_next (&it, &r), 0);
    assert_int_equal (tm_wire_validate (buf, n1 + n2, NULL, NULL), 2);
    //  An empty batch is valid and has no readings.
    assert_int_equal (tm_wire_validate (buf, 0, NULL, NULL), 0);
}

//  Attributes ride on a reading as sub-messages: encoded, iterated, the
//  same bytes protobuf-c decodes, and checked on the untrusted path only.
static void
test_attributes (void **state)
{
    (void) state;
    uint8_t buf[1024];
    tm_wire_attr_t attrs[3] = {
        {"district", 8, "\"milan/district/Brera\"", 0},
        {"location", 8, "{\"lat\":45.47,\"lon\":9.18}", 0},
        {"lanes", 5, "2", 0},
    };
    for (int i = 0; i < 3; i++)
        attrs[i].value_len = strlen (attrs[i].value);
    size_t n = tm_wire_encode_attrs (buf, sizeof buf, "s-1", "pm25", 12.5, 5, "air_station",
                                     attrs, 3);
    assert_true (n > 0);
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    assert_int_equal (r.nattrs, 3);
    size_t off = 0;
    tm_wire_attr_t a;
    for (int i = 0; i < 3; i++) {
        assert_int_equal (tm_wire_attr_next (&r, &off, &a), 1);
        assert_int_equal (a.name_len, attrs[i].name_len);
        assert_memory_equal (a.name, attrs[i].name, a.name_len);
        assert_int_equal (a.value_len, attrs[i].value_len);
        assert_memory_equal (a.value, attrs[i].value, a.value_len);
    }
    assert_int_equal (tm_wire_attr_next (&r, &off, &a), 0);
    //  protobuf-c reads the same attributes.
    Twinmesh__IngestBatch *b = twinmesh__ingest_batch__unpack (NULL, n, buf);
    assert_non_null (b);
    assert_int_equal (b->readings[0]->n_attributes, 3);
    assert_string_equal (b->readings[0]->attributes[0]->name, "district");
    assert_string_equal (b->readings[0]->attributes[1]->value, "{\"lat\":45.47,\"lon\":9.18}");
    twinmesh__ingest_batch__free_unpacked (b, NULL);
    //  A reading without attributes has none to iterate.
    n = tm_wire_encode (buf, sizeof buf, "s-1", "pm25", 12.5, 5, NULL);
    tm_wire_iter_init (&it, buf, n);
    assert_int_equal (tm_wire_next (&it, &r), 1);
    off = 0;
    assert_int_equal (tm_wire_attr_next (&r, &off, &a), 0);

    //  Refused before anything is acked: bad names, values that are not
    //  JSON of an accepted shape, locations out of range.
    static const struct {
        const char *name;
        const char *value;
    } bad[] = {
        {"9lives", "1"}, {"has space", "1"}, {"ok", "{not json"}, {"ok", "{\"lat\":91,\"lon\":0}"},
        {"ok", "{\"x\":1}"}, {"ok", "[1,2]"}, {"ok", ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tm_wire_attr_t one = {bad[i].name, strlen (bad[i].name), bad[i].value,
                              strlen (bad[i].value)};
        n = tm_wire_encode_attrs (buf, sizeof buf, "s-1", "p", 1, 5, NULL, &one, 1);
        if (n == 0) {
            assert_int_equal (one.value_len, 0);  //  only the empty value is refused here
            continue;
        }
        const char *why = NULL;
        size_t bad_index = 9;
        assert_int_equal (tm_wire_validate (buf, n, &why, &bad_index), -1);
        assert_non_null (strstr (why, "attribute"));
        assert_int_equal (bad_index, 0);
    }
    //  More than 64 attributes on one reading.
    tm_wire_attr_t many[65];
    for (int i = 0; i < 65; i++)
        many[i] = (tm_wire_attr_t) {"a", 1, "1", 1};
    assert_int_equal (tm_wire_encode_attrs (buf, sizeof buf, "s", "p", 1, 5, NULL, many, 65), 0);
    n = tm_wire_encode_attrs (buf, sizeof buf, "s", "p", 1, 5, NULL, many, 64);
    assert_true (n > 0);
    assert_int_equal (tm_wire_validate (buf, n, NULL, NULL), 1);
}

static void
test_encode_limits (void **state)
{
    (void) state;
    uint8_t buf[1024];
    char entity[TM_WIRE_MAX_ENTITY + 2];
    char property[TM_WIRE_MAX_PROPERTY + 2];
    char model[TM_WIRE_MAX_MODEL + 2];
    memset (entity, 'e', sizeof entity);
    memset (property, 'p', sizeof property);
    memset (model, 'm', sizeof model);
    entity[TM_WIRE_MAX_ENTITY] = 0;
    property[TM_WIRE_MAX_PROPERTY] = 0;
    model[TM_WIRE_MAX_MODEL] = 0;

    //  The largest reading, with the largest timestamp varint, fits the bound.
    size_t max = tm_wire_encoded_max (TM_WIRE_MAX_ENTITY, TM_WIRE_MAX_PROPERTY,
                                      TM_WIRE_MAX_MODEL);
    size_t n = tm_wire_encode (buf, sizeof buf, entity, property, 1.0, INT64_MAX, model);
    assert_true (n > 0);
    assert_true (n <= max);
    assert_int_equal (tm_wire_validate (buf, n, NULL, NULL), 1);
    //  One byte short of what it needs: refused, not overrun.
    assert_int_equal (tm_wire_encode (buf, n - 1, entity, property, 1.0, INT64_MAX, model), 0);
    assert_int_equal (tm_wire_encode (buf, n, entity, property, 1.0, INT64_MAX, model), n);

    //  Over-long or empty fields are refused by the encoder.
    entity[TM_WIRE_MAX_ENTITY] = 'e';
    entity[TM_WIRE_MAX_ENTITY + 1] = 0;
    assert_int_equal (tm_wire_encode (buf, sizeof buf, entity, "p", 1.0, 1, NULL), 0);
    property[TM_WIRE_MAX_PROPERTY] = 'p';
    property[TM_WIRE_MAX_PROPERTY + 1] = 0;
    assert_int_equal (tm_wire_encode (buf, sizeof buf, "e", property, 1.0, 1, NULL), 0);
    model[TM_WIRE_MAX_MODEL] = 'm';
    model[TM_WIRE_MAX_MODEL + 1] = 0;
    assert_int_equal (tm_wire_encode (buf, sizeof buf, "e", "p", 1.0, 1, model), 0);
    assert_int_equal (tm_wire_encode (buf, sizeof buf, "", "p", 1.0, 1, NULL), 0);
    assert_int_equal (tm_wire_encode (buf, sizeof buf, NULL, "p", 1.0, 1, NULL), 0);
    assert_int_equal (tm_wire_encode (buf, sizeof buf, "e", "", 1.0, 1, NULL), 0);
}

//  Differential check: protobuf-c packs, the scanner reads.
static void
test_protobuf_c_to_scanner (void **state)
{
    (void) state;
    enum { N = 200 };
    Twinmesh__Reading readings[N];
    Twinmesh__Reading *ptrs[N];
    char names[N][32], props[N][16];
    srand (42);
    for (int i = 0; i < N; i++) {
        twinmesh__reading__init (&readings[i]);
        snprintf (names[i], sizeof names[i], "entity-%d-%d", i, rand ());
        snprintf (props[i], sizeof props[i], "p%d", i % 7);
        readings[i].entity = names[i];
        readings[i].property = props[i];
        readings[i].value = (rand () - RAND_MAX / 2) / 1000.0;
        readings[i].ts_ms = 1600000000000LL + (int64_t) i * 1000 + rand () % 1000;
        readings[i].model = i % 3 == 0? (char *) "air_station": (char *) "";
        ptrs[i] = &readings[i];
    }
    Twinmesh__IngestBatch batch = TWINMESH__INGEST_BATCH__INIT;
    batch.n_readings = N;
    batch.readings = ptrs;
    size_t size = twinmesh__ingest_batch__get_packed_size (&batch);
    uint8_t *data = malloc (size);
    assert_non_null (data);
    assert_int_equal (twinmesh__ingest_batch__pack (&batch, data), size);

    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    const uint8_t *expect_raw = data;
    for (int i = 0; i < N; i++) {
        assert_int_equal (tm_wire_next (&it, &r), 1);
        assert_int_equal (r.entity_len, strlen (names[i]));
        assert_memory_equal (r.entity, names[i], r.entity_len);
        assert_int_equal (r.property_len, strlen (props[i]));
        assert_memory_equal (r.property, props[i], r.property_len);
        assert_true (r.value == readings[i].value);
        assert_int_equal (r.ts_ms, readings[i].ts_ms);
        if (i % 3 == 0) {
            assert_int_equal (r.model_len, 11);
            assert_memory_equal (r.model, "air_station", 11);
        }
        else
            assert_int_equal (r.model_len, 0);  //  proto3 omits empty strings
        //  Raw spans tile the batch exactly: no gap, no overlap.
        assert_ptr_equal (r.raw, expect_raw);
        expect_raw += r.raw_len;
    }
    assert_int_equal (tm_wire_next (&it, &r), 0);
    assert_ptr_equal (expect_raw, data + size);
    free (data);
}

//  Differential check the other way: tm_wire_encode writes, protobuf-c reads.
static void
test_scanner_encode_to_protobuf_c (void **state)
{
    (void) state;
    uint8_t buf[8192];
    size_t len = 0;
    for (int i = 0; i < 50; i++) {
        char entity[32], prop[16];
        snprintf (entity, sizeof entity, "pump-%03d", i);
        snprintf (prop, sizeof prop, "flow%d", i % 4);
        size_t n = tm_wire_encode (buf + len, sizeof buf - len, entity, prop, i * 1.5 - 20,
                                   1700000000000LL + i, i % 2? "pump": NULL);
        assert_true (n > 0);
        len += n;
    }
    Twinmesh__IngestBatch *batch = TM_UNPACK (IngestBatch, ingest_batch, buf, len);
    assert_non_null (batch);
    assert_int_equal (batch->n_readings, 50);
    for (int i = 0; i < 50; i++) {
        char entity[32], prop[16];
        snprintf (entity, sizeof entity, "pump-%03d", i);
        snprintf (prop, sizeof prop, "flow%d", i % 4);
        Twinmesh__Reading *r = batch->readings[i];
        assert_string_equal (r->entity, entity);
        assert_string_equal (r->property, prop);
        assert_true (r->value == i * 1.5 - 20);
        assert_int_equal (r->ts_ms, 1700000000000LL + i);
        assert_string_equal (r->model, i % 2? "pump": "");
    }
    tm_codec_free (&batch);
}

//  A gateway's per-worker part is a concatenation of raw spans; so is a
//  concatenation of whole batches. Both must be valid IngestBatches.
static void
test_concatenation (void **state)
{
    (void) state;
    uint8_t a[256], b[256], both[512], part[512];
    size_t na = 0, nb = 0;
    na += tm_wire_encode (a + na, sizeof a - na, "a1", "x", 1, 10, NULL);
    na += tm_wire_encode (a + na, sizeof a - na, "a2", "x", 2, 20, NULL);
    nb += tm_wire_encode (b + nb, sizeof b - nb, "b1", "y", 3, 30, "m");
    memcpy (both, a, na);
    memcpy (both + na, b, nb);
    assert_int_equal (tm_wire_validate (both, na + nb, NULL, NULL), 3);
    Twinmesh__IngestBatch *batch = TM_UNPACK (IngestBatch, ingest_batch, both, na + nb);
    assert_non_null (batch);
    assert_int_equal (batch->n_readings, 3);
    assert_string_equal (batch->readings[2]->entity, "b1");
    tm_codec_free (&batch);

    //  Pick readings 0 and 2 by raw span, in reverse order.
    tm_wire_iter_t it;
    tm_reading_t r[3];
    tm_wire_iter_init (&it, both, na + nb);
    for (int i = 0; i < 3; i++)
        assert_int_equal (tm_wire_next (&it, &r[i]), 1);
    size_t np = 0;
    memcpy (part + np, r[2].raw, r[2].raw_len);
    np += r[2].raw_len;
    memcpy (part + np, r[0].raw, r[0].raw_len);
    np += r[0].raw_len;
    tm_wire_iter_init (&it, part, np);
    tm_reading_t q;
    assert_int_equal (tm_wire_next (&it, &q), 1);
    assert_memory_equal (q.entity, "b1", 2);
    assert_int_equal (q.ts_ms, 30);
    assert_int_equal (tm_wire_next (&it, &q), 1);
    assert_memory_equal (q.entity, "a1", 2);
    assert_int_equal (tm_wire_next (&it, &q), 0);
}

static void
test_unknown_fields_skipped (void **state)
{
    (void) state;
    buf_t r, batch;
    s_reading_body (&r, "e1", 2);
    //  Unknown reading fields of every non-group wire type.
    s_key (&r, 16, 0);
    s_varint (&r, 300);
    s_key (&r, 7, 1);
    s_bytes (&r, "12345678", 8);
    s_string (&r, 8, "ignored", 7);
    s_key (&r, 9, 5);
    s_bytes (&r, "1234", 4);
    s_key (&r, 1000, 0);
    s_varint (&r, 1);
    memset (&batch, 0, sizeof batch);
    //  Unknown batch fields before and after the reading.
    s_key (&batch, 2, 0);
    s_varint (&batch, UINT64_MAX);
    s_key (&batch, 3, 1);
    s_bytes (&batch, "abcdefgh", 8);
    size_t start = batch.len;
    s_wrap (&batch, &r);
    size_t stop = batch.len;
    s_string (&batch, 4, "tail", 4);
    s_key (&batch, 5, 5);
    s_bytes (&batch, "wxyz", 4);

    tm_wire_iter_t it;
    tm_reading_t out;
    tm_wire_iter_init (&it, batch.data, batch.len);
    assert_int_equal (tm_wire_next (&it, &out), 1);
    assert_memory_equal (out.entity, "e1", 2);
    assert_memory_equal (out.property, "pm25", 4);
    assert_true (out.value == 12.5);
    assert_int_equal (out.ts_ms, 1700000000000LL);
    //  The raw span covers the reading field only, not its neighbours.
    assert_ptr_equal (out.raw, batch.data + start);
    assert_int_equal (out.raw_len, stop - start);
    assert_int_equal (tm_wire_next (&it, &out), 0);

    //  protobuf-c agrees that this batch is valid and has one reading.
    Twinmesh__IngestBatch *pb = TM_UNPACK (IngestBatch, ingest_batch, batch.data, batch.len);
    assert_non_null (pb);
    assert_int_equal (pb->n_readings, 1);
    tm_codec_free (&pb);
}

static void
test_entity_errors (void **state)
{
    (void) state;
    buf_t r, batch;
    char big[TM_WIRE_MAX_ENTITY + 1];
    memset (big, 'x', sizeof big);

    //  Absent entity.
    memset (&r, 0, sizeof r);
    s_string (&r, 2, "pm25", 4);
    s_double (&r, 3, 1.0);
    s_key (&r, 4, 0);
    s_varint (&r, 5);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "reading has no entity id", 0);

    //  Empty entity.
    s_reading_body (&r, "", 0);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "reading has no entity id", 0);

    //  128 bytes is the limit; 129 is refused.
    s_reading_body (&r, big, TM_WIRE_MAX_ENTITY);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    assert_int_equal (tm_wire_validate (batch.data, batch.len, NULL, NULL), 1);
    s_reading_body (&r, big, TM_WIRE_MAX_ENTITY + 1);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "entity id longer than 128 bytes", 0);

    //  Bad UTF-8 in the entity, after two good readings: index 2.
    buf_t good;
    s_reading_body (&good, "ok", 2);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &good);
    s_wrap (&batch, &good);
    s_reading_body (&r, "bad\xC0\xAF", 5);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "entity id is not UTF-8", 2);

    //  NUL is not allowed inside an entity id.
    s_reading_body (&r, "a\0b", 3);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "entity id is not UTF-8", 0);
}

static void
test_property_and_model_errors (void **state)
{
    (void) state;
    buf_t r, batch;
    char big[TM_WIRE_MAX_PROPERTY + 1];
    memset (big, 'p', sizeof big);

    memset (&r, 0, sizeof r);
    s_string (&r, 1, "e", 1);
    s_double (&r, 3, 1.0);
    s_key (&r, 4, 0);
    s_varint (&r, 5);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "reading has no property", 0);

    //  Later fields win (protobuf's rule): an over-long property appended.
    s_reading_body (&r, "e", 1);
    s_string (&r, 2, big, sizeof big);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "property name longer than 64 bytes", 0);

    s_reading_body (&r, "e", 1);
    s_string (&r, 2, "\xED\xA0\x80", 3);    //  a UTF-16 surrogate
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "property name is not UTF-8", 0);

    s_reading_body (&r, "e", 1);
    s_string (&r, 5, "\xFF", 1);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "model name invalid or longer than 64 bytes", 0);

    char model[TM_WIRE_MAX_MODEL + 1];
    memset (model, 'm', sizeof model);
    s_reading_body (&r, "e", 1);
    s_string (&r, 5, model, sizeof model);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "model name invalid or longer than 64 bytes", 0);
}

static void
test_value_and_timestamp_errors (void **state)
{
    (void) state;
    buf_t r, batch;

    //  No value.
    memset (&r, 0, sizeof r);
    s_string (&r, 1, "e", 1);
    s_string (&r, 2, "p", 1);
    s_key (&r, 4, 0);
    s_varint (&r, 5);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "reading has no finite value", 0);

    double bad_values[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        s_reading_body (&r, "e", 1);
        s_double (&r, 3, bad_values[i]);
        memset (&batch, 0, sizeof batch);
        s_wrap (&batch, &r);
        s_expect_error (&batch, "reading has no finite value", 0);
    }

    //  No timestamp, zero, and negative (a 10-byte varint).
    memset (&r, 0, sizeof r);
    s_string (&r, 1, "e", 1);
    s_string (&r, 2, "p", 1);
    s_double (&r, 3, 1.0);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "reading has no positive timestamp", 0);

    int64_t bad_ts[] = {0, -1, INT64_MIN};
    for (size_t i = 0; i < 3; i++) {
        s_reading_body (&r, "e", 1);
        s_key (&r, 4, 0);
        s_varint (&r, (uint64_t) bad_ts[i]);
        memset (&batch, 0, sizeof batch);
        s_wrap (&batch, &r);
        s_expect_error (&batch, "reading has no positive timestamp", 0);
    }
    //  The encoder writes a negative timestamp as protobuf does; the
    //  scanner refuses it.
    uint8_t buf[128];
    size_t n = tm_wire_encode (buf, sizeof buf, "e", "p", 1.0, -5, NULL);
    assert_true (n > 0);
    assert_int_equal (tm_wire_validate (buf, n, NULL, NULL), -1);
}

static void
test_framing_errors (void **state)
{
    (void) state;
    buf_t b, r;

    //  Truncated batch key (continuation bit, then the end).
    memset (&b, 0, sizeof b);
    s_byte (&b, 0x80);
    s_expect_error (&b, "truncated batch field key", 0);

    //  A varint of 11 bytes is not a varint.
    memset (&b, 0, sizeof b);
    for (int i = 0; i < 10; i++)
        s_byte (&b, 0x80);
    s_byte (&b, 0x00);
    s_expect_error (&b, "truncated batch field key", 0);

    //  Truncated length varint of the readings field.
    memset (&b, 0, sizeof b);
    s_byte (&b, 0x0A);
    s_byte (&b, 0x80);
    s_expect_error (&b, "reading runs past the end of the batch", 0);

    //  Length past the end.
    memset (&b, 0, sizeof b);
    s_byte (&b, 0x0A);
    s_byte (&b, 0x05);
    s_bytes (&b, "\x0A\x01", 2);
    s_expect_error (&b, "reading runs past the end of the batch", 0);

    //  A huge length must not wrap the pointer.
    memset (&b, 0, sizeof b);
    s_byte (&b, 0x0A);
    s_varint (&b, UINT64_MAX);
    s_expect_error (&b, "reading runs past the end of the batch", 0);

    //  A string inside a reading running past the reading's end (though
    //  not past the batch's: the next reading's bytes must not be read).
    memset (&r, 0, sizeof r);
    s_key (&r, 1, 2);
    s_varint (&r, 20);
    s_bytes (&r, "abc", 3);
    memset (&b, 0, sizeof b);
    s_wrap (&b, &r);
    buf_t good;
    s_reading_body (&good, "zzzzzzzzzzzzzzzzzzzz", 20);
    s_wrap (&b, &good);
    s_expect_error (&b, "string runs past the end", 0);

    //  Truncated key inside a reading.
    s_reading_body (&r, "e", 1);
    s_byte (&r, 0x80);
    memset (&b, 0, sizeof b);
    s_wrap (&b, &r);
    s_expect_error (&b, "truncated field key", 0);

    //  Truncated double and truncated timestamp inside a reading.
    memset (&r, 0, sizeof r);
    s_string (&r, 1, "e", 1);
    s_key (&r, 3, 1);
    s_bytes (&r, "1234567", 7);
    memset (&b, 0, sizeof b);
    s_wrap (&b, &r);
    s_expect_error (&b, "truncated value", 0);
    memset (&r, 0, sizeof r);
    s_string (&r, 1, "e", 1);
    s_key (&r, 4, 0);
    s_byte (&r, 0xFF);
    memset (&b, 0, sizeof b);
    s_wrap (&b, &r);
    s_expect_error (&b, "truncated timestamp", 0);

    //  Truncated unknown fields, at batch and reading level.
    memset (&b, 0, sizeof b);
    s_key (&b, 3, 1);
    s_bytes (&b, "1234", 4);
    s_expect_error (&b, "unknown batch field cannot be skipped", 0);
    memset (&b, 0, sizeof b);
    s_key (&b, 3, 5);
    s_bytes (&b, "12", 2);
    s_expect_error (&b, "unknown batch field cannot be skipped", 0);
    memset (&b, 0, sizeof b);
    s_key (&b, 3, 2);
    s_varint (&b, 9);
    s_expect_error (&b, "unknown batch field cannot be skipped", 0);
    s_reading_body (&r, "e", 1);
    s_key (&r, 9, 1);
    s_bytes (&r, "12", 2);
    memset (&b, 0, sizeof b);
    s_wrap (&b, &r);
    s_expect_error (&b, "unknown field cannot be skipped", 0);
}

//  The trusted iterator (for bytes validated before) skips only the UTF-8
//  scans: structure and limits are still checked.
static void
test_trusted_iterator (void **state)
{
    (void) state;
    buf_t r, batch;
    s_reading_body (&r, "\xc3\x28", 2);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    s_expect_error (&batch, "entity id is not UTF-8", 0);
    tm_wire_iter_t it;
    tm_reading_t rd;
    tm_wire_iter_init_trusted (&it, batch.data, batch.len);
    assert_int_equal (tm_wire_next (&it, &rd), 1);
    assert_int_equal (rd.entity_len, 2);
    assert_int_equal (tm_wire_next (&it, &rd), 0);
    //  Still refuses what is structurally wrong.
    tm_wire_iter_init_trusted (&it, batch.data, batch.len - 1);
    assert_int_equal (tm_wire_next (&it, &rd), -1);
    char big[TM_WIRE_MAX_ENTITY + 1];
    memset (big, 'x', sizeof big);
    s_reading_body (&r, big, sizeof big);
    memset (&batch, 0, sizeof batch);
    s_wrap (&batch, &r);
    tm_wire_iter_init_trusted (&it, batch.data, batch.len);
    assert_int_equal (tm_wire_next (&it, &rd), -1);
}

static void
test_wire_type_errors (void **state)
{
    (void) state;
    buf_t b, r;

    //  readings (field 1) as a varint, a fixed64, a fixed32.
    unsigned bad_wt[] = {0, 1, 5};
    for (size_t i = 0; i < 3; i++) {
        memset (&b, 0, sizeof b);
        s_key (&b, 1, bad_wt[i]);
        s_bytes (&b, "\x01\x01\x01\x01\x01\x01\x01\x01", 8);
        s_expect_error (&b, "readings field has the wrong wire type", 0);
    }
    //  Known reading fields with the wrong wire type.
    struct { unsigned field, wt; } cases[] = {
        {1, 0}, {2, 1}, {3, 0}, {3, 2}, {4, 1}, {4, 2}, {5, 0}, {3, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_reading_body (&r, "e", 1);
        s_key (&r, cases[i].field, cases[i].wt);
        s_bytes (&r, "\x01\x01\x01\x01\x01\x01\x01\x01", 8);
        memset (&b, 0, sizeof b);
        s_wrap (&b, &r);
        s_expect_error (&b, "field has the wrong wire type", 0);
    }
    //  Group wire types (3 start, 4 end) and the reserved 6 and 7, at
    //  both levels; field number 0 is never valid.
    unsigned groups[] = {3, 4, 6, 7};
    for (size_t i = 0; i < 4; i++) {
        memset (&b, 0, sizeof b);
        s_key (&b, 2, groups[i]);
        s_expect_error (&b, "unknown batch field cannot be skipped", 0);
        s_reading_body (&r, "e", 1);
        s_key (&r, 7, groups[i]);
        memset (&b, 0, sizeof b);
        s_wrap (&b, &r);
        s_expect_error (&b, "unknown field cannot be skipped", 0);
    }
    memset (&b, 0, sizeof b);
    s_key (&b, 0, 0);
    s_varint (&b, 1);
    s_expect_error (&b, "unknown batch field cannot be skipped", 0);
    s_reading_body (&r, "e", 1);
    s_key (&r, 0, 0);
    s_varint (&r, 1);
    memset (&b, 0, sizeof b);
    s_wrap (&b, &r);
    s_expect_error (&b, "unknown field cannot be skipped", 0);
}

//  After an error the iterator stays stopped: no reading after a bad one
//  can be returned by mistake.
static void
test_error_is_sticky (void **state)
{
    (void) state;
    buf_t b, r, good;
    s_reading_body (&good, "ok", 2);
    s_reading_body (&r, "", 0);
    memset (&b, 0, sizeof b);
    s_wrap (&b, &good);
    s_wrap (&b, &r);
    s_wrap (&b, &good);
    tm_wire_iter_t it;
    tm_reading_t out;
    tm_wire_iter_init (&it, b.data, b.len);
    assert_int_equal (tm_wire_next (&it, &out), 1);
    assert_int_equal (tm_wire_next (&it, &out), -1);
    assert_non_null (it.error);
    assert_int_equal (it.index, 1);
    assert_int_equal (tm_wire_next (&it, &out), 0);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_encode_round_trip),
        cmocka_unit_test (test_attributes),
        cmocka_unit_test (test_encode_limits),
        cmocka_unit_test (test_protobuf_c_to_scanner),
        cmocka_unit_test (test_scanner_encode_to_protobuf_c),
        cmocka_unit_test (test_concatenation),
        cmocka_unit_test (test_unknown_fields_skipped),
        cmocka_unit_test (test_entity_errors),
        cmocka_unit_test (test_property_and_model_errors),
        cmocka_unit_test (test_value_and_timestamp_errors),
        cmocka_unit_test (test_framing_errors),
        cmocka_unit_test (test_wire_type_errors),
        cmocka_unit_test (test_trusted_iterator),
        cmocka_unit_test (test_error_is_sticky),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
