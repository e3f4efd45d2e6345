/*  fuzz_model - tm_model parsing a model file written by anyone

    Model files come from operators' editors and, through the broker, from
    other processes: whatever the bytes, parsing must return a model or an
    error, never crash or leak. What parses must also keep the promises the
    rest of the system relies on: its canonical text parses back to the
    same model (same canonical bytes), every property is found by name,
    and offering it to a registry twice is a no-op. The same bytes are also
    checked as an attribute value, the other JSON that comes from outside.
*/
#include "fuzz.h"
#include "tm_model.h"

#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err[TM_MODEL_ERR_SIZE];
    tm_model_t *m = tm_model_parse ((const char *) data, size, "fuzz", err, sizeof err);
    if (!m) {
        //  A refusal always says why.
        if (err[0] == 0)
            abort ();
    }
    else {
        size_t len = 0;
        const char *text = tm_model_canonical (m, &len);
        if (!text || strlen (text) != len)
            abort ();
        tm_model_t *again = tm_model_parse (text, len, "canonical", err, sizeof err);
        if (!again || !tm_model_equal (m, again))
            abort ();
        tm_model_destroy (&again);
        for (uint32_t i = 0; i < m->nproperties; i++) {
            const tm_model_property_t *p = &m->properties[i];
            if (tm_model_property_find (m, p->name, strlen (p->name)) != p)
                abort ();
            if (tm_model_check_value (p, 0) >= TM_MODEL_Q_COUNT
                || tm_model_retention_ms (m, p) < 0)
                abort ();
        }
        tm_models_t *reg = tm_models_new ();
        if (!reg)
            abort ();
        tm_model_t *copy = tm_model_parse (text, len, "copy", err, sizeof err);
        if (!copy)
            abort ();
        if (tm_models_put (reg, &m, NULL, err, sizeof err) != 0
            || tm_models_put (reg, &copy, NULL, err, sizeof err) != TM_MODELS_E_UNCHANGED
            || m || copy)
            abort ();
        tm_models_destroy (&reg);
    }
    tm_model_attribute_t loc = {.name = "location", .type = TM_MODEL_ATTR_LOCATION};
    tm_model_attribute_t tags = {.name = "tags", .type = TM_MODEL_ATTR_TAGS};
    if (tm_model_attribute_check (&loc, (const char *) data, size, err, sizeof err) != 0
        && err[0] == 0)
        abort ();
    (void) tm_model_attribute_check (&tags, (const char *) data, size, err, sizeof err);
    return 0;
}
