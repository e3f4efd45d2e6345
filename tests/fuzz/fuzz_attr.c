/*  fuzz_attr - attribute values from arbitrary JSON text

    Besides not crashing: whatever parses prints (tm_attr_json) as text that
    parses again to the same type and value, so a checkpoint or a reply can
    never carry an attribute the worker cannot read back.
*/
#include "fuzz.h"
#include "tm_attr.h"

#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    tm_attr_t a;
    if (tm_attr_parse ((const char *) data, size, &a, NULL, 0) != 0)
        return 0;
    char *text = tm_attr_json (&a);
    if (!text)
        abort ();
    tm_attr_t b;
    if (tm_attr_parse (text, strlen (text), &b, NULL, 0) != 0 || b.type != a.type)
        abort ();
    if (a.type == TM_EXPR_STRING
        && (a.len != b.len || memcmp (a.str, b.str, a.len) != 0 || a.tags != b.tags))
        abort ();
    if (a.type == TM_EXPR_NUMBER && a.num != b.num)
        abort ();
    if (a.type == TM_EXPR_LOCATION && (a.loc.lat != b.loc.lat || a.loc.lon != b.loc.lon))
        abort ();
    free (text);
    tm_attr_fini (&a);
    tm_attr_fini (&b);
    return 0;
}
