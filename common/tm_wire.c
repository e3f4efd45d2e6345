/*  tm_wire - readings straight from protobuf wire bytes, without allocation  */
#include "tm_wire.h"
#include "tm_attr.h"
#include "tm_util.h"
#include "tm_varint.h"

#include <math.h>
#include <string.h>


//  Skip one field's value of the given wire type.
static int
s_skip (const uint8_t **pos, const uint8_t *end, unsigned wire_type)
{
    uint64_t v;
    switch (wire_type) {
        case 0:
            return tm_varint_get (pos, end, &v);
        case 1:
            if (end - *pos < 8)
                return -1;
            *pos += 8;
            return 0;
        case 2:
            if (tm_varint_get (pos, end, &v) != 0 || v > (uint64_t) (end - *pos))
                return -1;
            *pos += v;
            return 0;
        case 5:
            if (end - *pos < 4)
                return -1;
            *pos += 4;
            return 0;
        default:
            return -1;     //  groups (3, 4) are not used by proto3
    }
}

void
tm_wire_iter_init (tm_wire_iter_t *it, const uint8_t *data, size_t size)
{
    it->pos = data;
    it->end = data + size;
    it->index = 0;
    it->error = NULL;
    it->trusted = false;
}

void
tm_wire_iter_init_trusted (tm_wire_iter_t *it, const uint8_t *data, size_t size)
{
    tm_wire_iter_init (it, data, size);
    it->trusted = true;
}

static int
s_fail (tm_wire_iter_t *it, const char *why)
{
    it->error = why;
    it->pos = it->end;
    return -1;
}

//  An Attribute sub-message: name and value spans; -1 if malformed.
static int
s_parse_attr (const uint8_t *p, const uint8_t *end, tm_wire_attr_t *a)
{
    memset (a, 0, sizeof *a);
    while (p < end) {
        uint64_t key, v;
        if (tm_varint_get (&p, end, &key) != 0)
            return -1;
        unsigned field = (unsigned) (key >> 3), wt = (unsigned) (key & 7);
        if ((field == 1 || field == 2) && wt == 2) {
            if (tm_varint_get (&p, end, &v) != 0 || v > (uint64_t) (end - p))
                return -1;
            if (field == 1) {
                a->name = (const char *) p;
                a->name_len = (size_t) v;
            }
            else {
                a->value = (const char *) p;
                a->value_len = (size_t) v;
            }
            p += v;
        }
        else
        if (field == 1 || field == 2 || field == 0 || s_skip (&p, end, wt) != 0)
            return -1;
    }
    return 0;
}

//  Check an attribute the first time its bytes are seen: a name queries
//  can use and JSON the worker can type (tm_attr), so that nothing acked
//  carries an attribute the worker would have to drop.
static const char *
s_check_attr (const tm_wire_attr_t *a)
{
    if (!tm_attr_name_valid (a->name, a->name_len))
        return "attribute name must be 1 to 64 bytes of [A-Za-z0-9_], not starting with a digit";
    if (a->value_len == 0 || a->value_len > TM_WIRE_MAX_ATTR_VALUE)
        return "attribute value must be 1 to 1024 bytes of JSON";
    tm_attr_t attr;
    if (tm_attr_parse (a->value, a->value_len, &attr, NULL, 0) < 0)
        return "attribute value is not a string, number, boolean, location, tags or null";
    tm_attr_fini (&attr);
    return NULL;
}

static int
s_parse_reading (tm_wire_iter_t *it, const uint8_t *p, const uint8_t *end, tm_reading_t *r)
{
    memset (r, 0, sizeof *r);
    bool have_value = false, have_ts = false;
    while (p < end) {
        uint64_t key, v;
        if (tm_varint_get (&p, end, &key) != 0)
            return s_fail (it, "truncated field key");
        unsigned field = (unsigned) (key >> 3), wt = (unsigned) (key & 7);
        if ((field == 1 || field == 2 || field == 5) && wt == 2) {
            if (tm_varint_get (&p, end, &v) != 0 || v > (uint64_t) (end - p))
                return s_fail (it, "string runs past the end");
            if (field == 1) {
                r->entity = (const char *) p;
                r->entity_len = (size_t) v;
            }
            else
            if (field == 2) {
                r->property = (const char *) p;
                r->property_len = (size_t) v;
            }
            else {
                r->model = (const char *) p;
                r->model_len = (size_t) v;
            }
            p += v;
        }
        else
        if (field == 3 && wt == 1) {
            if (end - p < 8)
                return s_fail (it, "truncated value");
            uint64_t bits = 0;
            for (int i = 7; i >= 0; i--)
                bits = bits << 8 | p[i];
            memcpy (&r->value, &bits, sizeof bits);
            p += 8;
            have_value = true;
        }
        else
        if (field == 4 && wt == 0) {
            if (tm_varint_get (&p, end, &v) != 0)
                return s_fail (it, "truncated timestamp");
            r->ts_ms = (int64_t) v;
            have_ts = true;
        }
        else
        if (field == 6 && wt == 2) {
            tm_wire_attr_t a;
            if (tm_varint_get (&p, end, &v) != 0 || v > (uint64_t) (end - p)
                || s_parse_attr (p, p + v, &a) != 0)
                return s_fail (it, "attribute runs past the end or is malformed");
            if (++r->nattrs > TM_WIRE_MAX_ATTRS)
                return s_fail (it, "more than 64 attributes on one reading");
            const char *why = it->trusted? NULL: s_check_attr (&a);
            if (why)
                return s_fail (it, why);
            p += v;
        }
        else
        if (field >= 1 && field <= 6)
            return s_fail (it, "field has the wrong wire type");
        else
        if (field == 0 || s_skip (&p, end, wt) != 0)
            return s_fail (it, "unknown field cannot be skipped");
    }
    if (r->entity_len == 0)
        return s_fail (it, "reading has no entity id");
    if (r->entity_len > TM_WIRE_MAX_ENTITY)
        return s_fail (it, "entity id longer than 128 bytes");
    if (!it->trusted && !tm_util_utf8_valid (r->entity, r->entity_len))
        return s_fail (it, "entity id is not UTF-8");
    if (r->property_len == 0)
        return s_fail (it, "reading has no property");
    if (r->property_len > TM_WIRE_MAX_PROPERTY)
        return s_fail (it, "property name longer than 64 bytes");
    if (!it->trusted && !tm_util_utf8_valid (r->property, r->property_len))
        return s_fail (it, "property name is not UTF-8");
    if (r->model_len > TM_WIRE_MAX_MODEL
        || (r->model && !it->trusted && !tm_util_utf8_valid (r->model, r->model_len)))
        return s_fail (it, "model name invalid or longer than 64 bytes");
    if (!have_value || !isfinite (r->value))
        return s_fail (it, "reading has no finite value");
    if (!have_ts || r->ts_ms <= 0)
        return s_fail (it, "reading has no positive timestamp");
    return 1;
}

int
tm_wire_next (tm_wire_iter_t *it, tm_reading_t *r)
{
    while (it->pos < it->end) {
        const uint8_t *start = it->pos;
        uint64_t key, len;
        if (tm_varint_get (&it->pos, it->end, &key) != 0)
            return s_fail (it, "truncated batch field key");
        unsigned field = (unsigned) (key >> 3), wt = (unsigned) (key & 7);
        if (field != 1) {
            if (field == 0 || s_skip (&it->pos, it->end, wt) != 0)
                return s_fail (it, "unknown batch field cannot be skipped");
            continue;
        }
        if (wt != 2)
            return s_fail (it, "readings field has the wrong wire type");
        if (tm_varint_get (&it->pos, it->end, &len) != 0 || len > (uint64_t) (it->end - it->pos))
            return s_fail (it, "reading runs past the end of the batch");
        const uint8_t *body = it->pos;
        it->pos += len;
        int rc = s_parse_reading (it, body, body + len, r);
        if (rc < 0)
            return rc;
        r->raw = start;
        r->raw_len = (size_t) (it->pos - start);
        r->body = body;
        r->body_len = (size_t) len;
        it->index++;
        return 1;
    }
    return 0;
}

int
tm_wire_attr_next (const tm_reading_t *r, size_t *offset, tm_wire_attr_t *a)
{
    if (r->nattrs == 0 || !r->body)
        return 0;
    const uint8_t *p = r->body + *offset, *end = r->body + r->body_len;
    while (p < end) {
        uint64_t key, v;
        if (tm_varint_get (&p, end, &key) != 0)
            return 0;
        unsigned field = (unsigned) (key >> 3), wt = (unsigned) (key & 7);
        if (field == 6 && wt == 2) {
            if (tm_varint_get (&p, end, &v) != 0 || v > (uint64_t) (end - p)
                || s_parse_attr (p, p + v, a) != 0)
                return 0;
            p += v;
            *offset = (size_t) (p - r->body);
            return 1;
        }
        if (s_skip (&p, end, wt) != 0)
            return 0;
    }
    *offset = r->body_len;
    return 0;
}

long
tm_wire_validate (const uint8_t *data, size_t size, const char **error, size_t *bad_index)
{
    tm_wire_iter_t it;
    tm_reading_t r;
    tm_wire_iter_init (&it, data, size);
    int rc;
    while ((rc = tm_wire_next (&it, &r)) == 1)
        ;
    if (rc < 0) {
        if (error)
            *error = it.error;
        if (bad_index)
            *bad_index = it.index;
        return -1;
    }
    return (long) it.index;
}



size_t
tm_wire_encoded_max (size_t entity_len, size_t property_len, size_t model_len)
{
    //  outer tag + length varint (<=2 for our sizes) + fields
    return 1 + 2 + (1 + 2 + entity_len) + (1 + 2 + property_len) + 9 + 11
         + (model_len? 1 + 2 + model_len: 0);
}

size_t
tm_wire_encode (uint8_t *buf, size_t cap, const char *entity, const char *property,
                double value, int64_t ts_ms, const char *model)
{
    return tm_wire_encode_attrs (buf, cap, entity, property, value, ts_ms, model, NULL, 0);
}

size_t
tm_wire_encode_attrs (uint8_t *buf, size_t cap, const char *entity, const char *property,
                      double value, int64_t ts_ms, const char *model,
                      const tm_wire_attr_t *attrs, size_t nattrs)
{
    size_t el = entity? strlen (entity): 0, pl = property? strlen (property): 0;
    size_t ml = model? strlen (model): 0;
    if (el == 0 || el > TM_WIRE_MAX_ENTITY || pl == 0 || pl > TM_WIRE_MAX_PROPERTY
        || ml > TM_WIRE_MAX_MODEL)
        return 0;
    if (nattrs > TM_WIRE_MAX_ATTRS)
        return 0;
    size_t inner = 1 + tm_varint_len (el) + el + 1 + tm_varint_len (pl) + pl + 9 + 1
                 + tm_varint_len ((uint64_t) ts_ms) + (ml? 1 + tm_varint_len (ml) + ml: 0);
    for (size_t i = 0; i < nattrs; i++) {
        const tm_wire_attr_t *a = &attrs[i];
        if (a->name_len == 0 || a->name_len > TM_WIRE_MAX_ATTR_NAME || a->value_len == 0
            || a->value_len > TM_WIRE_MAX_ATTR_VALUE)
            return 0;
        size_t sub = 1 + tm_varint_len (a->name_len) + a->name_len + 1
                   + tm_varint_len (a->value_len) + a->value_len;
        inner += 1 + tm_varint_len (sub) + sub;
    }
    size_t total = 1 + tm_varint_len (inner) + inner;
    if (total > cap)
        return 0;
    uint8_t *p = buf;
    *p++ = 0x0A;
    p += tm_varint_put (p, inner);
    *p++ = 0x0A;
    p += tm_varint_put (p, el);
    memcpy (p, entity, el);
    p += el;
    *p++ = 0x12;
    p += tm_varint_put (p, pl);
    memcpy (p, property, pl);
    p += pl;
    *p++ = 0x19;
    uint64_t bits;
    memcpy (&bits, &value, sizeof bits);
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t) (bits >> (8 * i));
    *p++ = 0x20;
    p += tm_varint_put (p, (uint64_t) ts_ms);
    if (ml) {
        *p++ = 0x2A;
        p += tm_varint_put (p, ml);
        memcpy (p, model, ml);
        p += ml;
    }
    for (size_t i = 0; i < nattrs; i++) {
        const tm_wire_attr_t *a = &attrs[i];
        size_t sub = 1 + tm_varint_len (a->name_len) + a->name_len + 1
                   + tm_varint_len (a->value_len) + a->value_len;
        *p++ = 0x32;
        p += tm_varint_put (p, sub);
        *p++ = 0x0A;
        p += tm_varint_put (p, a->name_len);
        memcpy (p, a->name, a->name_len);
        p += a->name_len;
        *p++ = 0x12;
        p += tm_varint_put (p, a->value_len);
        memcpy (p, a->value, a->value_len);
        p += a->value_len;
    }
    return (size_t) (p - buf);
}
