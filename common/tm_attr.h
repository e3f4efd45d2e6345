/*  tm_attr - a twin's attribute values, typed from the JSON text readings carry

    Attributes (docs/models.md) are the descriptive values of a twin that
    are not time series: its location, its district, free tags. Producers
    send them on a twin's first reading, or when they change, as JSON text
    (Reading.attributes); queries read them as typed values
    (`within(location, ...)`, `GROUP BY district`). The gateway checks the
    text before acking, so the worker never holds an acked reading whose
    attributes it cannot read; the worker converts once per change, not
    per query.

    The type comes from the JSON: a string, a number, a boolean, an object
    {"lat": .., "lon": ..} (a location), an array of strings (tags, kept as
    their compact JSON text, which queries see as a string). null removes
    the attribute.
*/
#ifndef TM_ATTR_H_INCLUDED
#define TM_ATTR_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tm_expr.h"

#define TM_ATTR_MAX_NAME 64            //  Bytes of an attribute name
#define TM_ATTR_MAX_VALUE 1024         //  Bytes of its JSON text
#define TM_ATTR_MAX_PER_TWIN 64        //  Attributes a twin keeps (a model's limit)

typedef struct {
    const char *name;              //  Interned by the owner (the worker's twins), borrowed
    uint8_t type;                  //  TM_EXPR_STRING, _NUMBER, _BOOL or _LOCATION
    bool tags;                     //  A string holding tags as JSON text
    bool shared;                   //  str belongs to the owner's table of values
                                   //  (tm_attr_fini leaves it alone)
    uint32_t len;                  //  Bytes of str
    union {
        double num;                //  TM_EXPR_NUMBER
        bool b;                    //  TM_EXPR_BOOL
        char *str;                 //  TM_EXPR_STRING: NUL-terminated; owned unless shared
        struct {
            double lat, lon;       //  TM_EXPR_LOCATION: doubles, so a radius test
        } loc;                     //  agrees with the producer's own arithmetic
    };
} tm_attr_t;

//  Parse len bytes of JSON text into a value (name untouched). Returns 0,
//  1 if the text is null (remove the attribute), or -1 with a message in
//  err if it is not one of the accepted shapes.
int tm_attr_parse (const char *json, size_t len, tm_attr_t *out, char *err, size_t err_size);

//  True if name is 1..64 bytes of [A-Za-z0-9_] not starting with a digit.
bool tm_attr_name_valid (const char *name, size_t len);

//  Free what a value owns (its string) and mark it null.
void tm_attr_fini (tm_attr_t *attr);

//  The value as an expression value (strings borrowed from attr).
tm_expr_value_t tm_attr_value (const tm_attr_t *attr);

//  Compact JSON text of the value (caller frees), for replies and checkpoints.
char *tm_attr_json (const tm_attr_t *attr);

#endif
