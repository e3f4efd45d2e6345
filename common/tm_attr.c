/*  tm_attr - a twin's attribute values, typed from JSON text  */
#include "tm_attr.h"
#include "tm_util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool
tm_attr_name_valid (const char *name, size_t len)
{
    if (len == 0 || len > TM_ATTR_MAX_NAME || (name[0] >= '0' && name[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '_'))
            return false;
    }
    return true;
}

static int
s_fail (char *err, size_t err_size, const char *why)
{
    if (err && err_size)
        snprintf (err, err_size, "%s", why);
    return -1;
}

//  The common shapes without jansson: a million twins' first readings
//  each carry a district and a location, and jansson (allocating a hash
//  table for a two-key object, strtod through localeconv) was half of a
//  worker's time while they arrived (perf, 1M twins). Anything this does not
//  recognise goes to jansson, which decides.

static const char *
s_ws (const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

//  A JSON number at p: its end, with *v, or NULL if not the JSON grammar.
static const char *
s_number (const char *p, const char *end, double *v)
{
    const char *q = p;
    if (q < end && *q == '-')
        q++;
    if (q >= end || *q < '0' || *q > '9')
        return NULL;
    if (*q == '0')
        q++;
    else
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    if (q < end && *q == '.') {
        q++;
        if (q >= end || *q < '0' || *q > '9')
            return NULL;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        if (q >= end || *q < '0' || *q > '9')
            return NULL;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    }
    char buf[64];
    if (q - p >= (long) sizeof buf)
        return NULL;
    memcpy (buf, p, (size_t) (q - p));
    buf[q - p] = 0;
    *v = strtod (buf, NULL);
    return isfinite (*v)? q: NULL;
}

//  A plain string at p ('"', no escapes, no control characters): its
//  content's start and length, and the end; NULL otherwise.
static const char *
s_plain_string (const char *p, const char *end, const char **str, size_t *len)
{
    if (p >= end || *p != '"')
        return NULL;
    const char *q = ++p;
    while (q < end && *q != '"') {
        if (*q == '\\' || (unsigned char) *q < 0x20)
            return NULL;
        q++;
    }
    if (q >= end || !tm_util_utf8_valid (p, (size_t) (q - p)))
        return NULL;
    *str = p;
    *len = (size_t) (q - p);
    return q + 1;
}

//  1 if handled (out filled, or -1 returned in *rc), 0 to ask jansson.
static int
s_fast (const char *json, size_t len, tm_attr_t *out, int *rc)
{
    const char *p = s_ws (json, json + len), *end = json + len;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    if (p >= end)
        return 0;
    const char *str;
    size_t slen;
    double v;
    if (*p == '"') {
        if (s_plain_string (p, end, &str, &slen) != end)
            return 0;
        out->str = malloc (slen + 1);
        if (!out->str)
            return 0;
        memcpy (out->str, str, slen);
        out->str[slen] = 0;
        out->len = (uint32_t) slen;
        out->type = TM_EXPR_STRING;
        *rc = 0;
        return 1;
    }
    if ((*p == '-' || (*p >= '0' && *p <= '9'))) {
        if (s_number (p, end, &v) != end)
            return 0;
        out->num = v;
        out->type = TM_EXPR_NUMBER;
        *rc = 0;
        return 1;
    }
    size_t n = (size_t) (end - p);
    if ((n == 4 && !memcmp (p, "true", 4)) || (n == 5 && !memcmp (p, "false", 5))) {
        out->b = n == 4;
        out->type = TM_EXPR_BOOL;
        *rc = 0;
        return 1;
    }
    if (n == 4 && !memcmp (p, "null", 4)) {
        *rc = 1;
        return 1;
    }
    if (*p != '{')
        return 0;
    //  {"lat": N, "lon": N} in either order.
    double lat = 0, lon = 0;
    bool have_lat = false, have_lon = false;
    p = s_ws (p + 1, end);
    for (int k = 0; k < 2; k++) {
        if (!(p = s_plain_string (p, end, &str, &slen)))
            return 0;
        bool is_lat = slen == 3 && !memcmp (str, "lat", 3);
        bool is_lon = slen == 3 && !memcmp (str, "lon", 3);
        if ((!is_lat && !is_lon) || (is_lat && have_lat) || (is_lon && have_lon))
            return 0;
        p = s_ws (p, end);
        if (p >= end || *p != ':')
            return 0;
        if (!(p = s_number (s_ws (p + 1, end), end, is_lat? &lat: &lon)))
            return 0;
        have_lat = have_lat || is_lat;
        have_lon = have_lon || is_lon;
        p = s_ws (p, end);
        if (p >= end || *p != (k == 0? ',': '}'))
            return 0;
        p = s_ws (p + 1, end);
    }
    if (p != end)
        return 0;
    if (!(lat >= -90 && lat <= 90) || !(lon >= -180 && lon <= 180))
        return 0;          //  jansson's path says why
    out->loc.lat = lat;
    out->loc.lon = lon;
    out->type = TM_EXPR_LOCATION;
    *rc = 0;
    return 1;
}

int
tm_attr_parse (const char *json, size_t len, tm_attr_t *out, char *err, size_t err_size)
{
    out->type = TM_EXPR_NULL;
    out->tags = false;
    out->shared = false;
    out->len = 0;
    out->str = NULL;
    if (len == 0 || len > TM_ATTR_MAX_VALUE)
        return s_fail (err, err_size, "attribute value must be 1 to 1024 bytes of JSON");
    int fast_rc;
    if (s_fast (json, len, out, &fast_rc))
        return fast_rc;
    json_error_t jerr;
    json_t *v = json_loadb (json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return s_fail (err, err_size, "attribute value is not JSON");
    int rc = 0;
    if (json_is_null (v))
        rc = 1;
    else
    if (json_is_string (v)) {
        size_t n = json_string_length (v);
        out->str = malloc (n + 1);
        if (!out->str)
            rc = s_fail (err, err_size, "out of memory");
        else {
            memcpy (out->str, json_string_value (v), n);
            out->str[n] = 0;
            out->len = (uint32_t) n;
            out->type = TM_EXPR_STRING;
        }
    }
    else
    if (json_is_number (v)) {
        out->num = json_number_value (v);
        out->type = TM_EXPR_NUMBER;
        if (!isfinite (out->num))
            rc = s_fail (err, err_size, "attribute number is not finite");
    }
    else
    if (json_is_boolean (v)) {
        out->b = json_is_true (v);
        out->type = TM_EXPR_BOOL;
    }
    else
    if (json_is_object (v)) {
        json_t *lat = json_object_get (v, "lat"), *lon = json_object_get (v, "lon");
        if (json_object_size (v) != 2 || !json_is_number (lat) || !json_is_number (lon))
            rc = s_fail (err, err_size, "an object attribute must be {\"lat\": .., \"lon\": ..}");
        else {
            double a = json_number_value (lat), o = json_number_value (lon);
            if (!(a >= -90 && a <= 90) || !(o >= -180 && o <= 180))
                rc = s_fail (err, err_size, "location out of range (lat -90..90, lon -180..180)");
            else {
                out->loc.lat = a;
                out->loc.lon = o;
                out->type = TM_EXPR_LOCATION;
            }
        }
    }
    else
    if (json_is_array (v)) {
        //  Tags: strings, kept as compact JSON text.
        size_t i;
        json_t *item;
        json_array_foreach (v, i, item) {
            if (!json_is_string (item) || json_string_length (item) == 0
                || json_string_length (item) > 64) {
                rc = s_fail (err, err_size, "tags must be strings of 1 to 64 bytes");
                break;
            }
        }
        if (rc == 0 && json_array_size (v) > 32)
            rc = s_fail (err, err_size, "at most 32 tags");
        if (rc == 0) {
            out->str = json_dumps (v, JSON_COMPACT);
            if (!out->str)
                rc = s_fail (err, err_size, "out of memory");
            else {
                out->len = (uint32_t) strlen (out->str);
                out->type = TM_EXPR_STRING;
                out->tags = true;
            }
        }
    }
    json_decref (v);
    return rc;
}

void
tm_attr_fini (tm_attr_t *attr)
{
    if (attr->type == TM_EXPR_STRING && !attr->shared)
        free (attr->str);
    attr->str = NULL;
    attr->len = 0;
    attr->type = TM_EXPR_NULL;
    attr->tags = false;
    attr->shared = false;
}

tm_expr_value_t
tm_attr_value (const tm_attr_t *attr)
{
    switch (attr->type) {
        case TM_EXPR_STRING:
            return tm_expr_string (attr->str, attr->len);
        case TM_EXPR_NUMBER:
            return tm_expr_number (attr->num);
        case TM_EXPR_BOOL:
            return tm_expr_bool (attr->b);
        case TM_EXPR_LOCATION:
            return tm_expr_location (attr->loc.lat, attr->loc.lon);
        default:
            return tm_expr_null ();
    }
}

//  The shortest of %.15g .. %.17g that reads back as the same double: exact
//  in checkpoints, and 45.4878 rather than 45.487878000000002 on screens.
static void
s_shortest (char *buf, size_t size, double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf (buf, size, "%.*g", prec, v);
        if (strtod (buf, NULL) == v)
            return;
    }
}

char *
tm_attr_json (const tm_attr_t *attr)
{
    char a[32], b[32], loc[80];
    if (attr->type == TM_EXPR_NUMBER) {
        s_shortest (a, sizeof a, attr->num);
        return strdup (a);
    }
    if (attr->type == TM_EXPR_LOCATION) {
        s_shortest (a, sizeof a, attr->loc.lat);
        s_shortest (b, sizeof b, attr->loc.lon);
        snprintf (loc, sizeof loc, "{\"lat\":%s,\"lon\":%s}", a, b);
        return strdup (loc);
    }
    json_t *v = NULL;
    switch (attr->type) {
        case TM_EXPR_STRING:
            //  Tags were kept as their JSON text: give it back as it came.
            if (attr->tags) {
                json_t *arr = json_loadb (attr->str, attr->len, 0, NULL);
                if (arr && json_is_array (arr))
                    v = arr;
                else
                    json_decref (arr);
            }
            if (!v)
                v = json_stringn (attr->str, attr->len);
            break;
        case TM_EXPR_NUMBER:
            v = json_real (attr->num);
            break;
        case TM_EXPR_BOOL:
            v = json_boolean (attr->b);
            break;
        case TM_EXPR_LOCATION:
            v = json_pack ("{s:f,s:f}", "lat", attr->loc.lat, "lon", attr->loc.lon);
            break;
        default:
            v = json_null ();
    }
    if (!v)
        return NULL;
    char *text = json_dumps (v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION (17));
    json_decref (v);
    return text;
}
