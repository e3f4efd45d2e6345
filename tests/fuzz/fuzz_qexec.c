/*  fuzz_qexec - partial and result bytes from hostile peers

    The first byte picks the decoder: 0 merges the rest as a partial of a
    fixed aggregate query (keys, quantiles), 1 as a partial of a fixed row
    query (ORDER BY, LIMIT), anything else decodes it as a result. Besides
    not crashing:
    - a merge that fails leaves the partial as it was (same counts);
    - what merged encodes to bytes that merge again;
    - a decoded result encodes to bytes that decode, and prints.
    A broken promise aborts, which libFuzzer reports as a crash.
*/
#include "fuzz.h"
#include "tm_qexec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_queries[2] = {
    "SELECT district, model, count(*), sum(pm25), avg(pm25), min(pm25), max(pm25), "
    "p90(pm25), count(no2) FROM twins WHERE pm25 > 0 GROUP BY district, model "
    "HAVING count(*) > 1 ORDER BY avg(pm25) DESC LIMIT 50",
    "SELECT entity, pm25, location FROM twins WHERE pm25 IS NOT NULL "
    "ORDER BY pm25 DESC, entity LIMIT 20",
};

static void
s_print_all (const tm_qresult_t *r)
{
    FILE *null = fopen ("/dev/null", "w");
    if (!null)
        return;
    tm_qresult_print (r, TM_QRESULT_TABLE, null, null);
    tm_qresult_print (r, TM_QRESULT_CSV, null, null);
    tm_qresult_print (r, TM_QRESULT_JSON, null, null);
    fclose (null);
}

static void
s_merge (const char *text, const uint8_t *data, size_t size)
{
    tm_query_t *q = tm_query_parse (text, NULL);
    if (!q)
        abort ();
    tm_qpartial_t *p = tm_qpartial_new (q);
    char why[256];
    if (tm_qpartial_merge (p, data, size, why, sizeof why) != 0) {
        if (tm_qpartial_scanned (p) || tm_qpartial_matched (p))
            abort ();
    }
    else {
        size_t n;
        uint8_t *bytes = tm_qpartial_encode (p, &n);
        tm_qpartial_t *again = tm_qpartial_new (q);
        if (bytes && tm_qpartial_merge (again, bytes, n, why, sizeof why) != 0)
            abort ();
        free (bytes);
        tm_qpartial_destroy (&again);
        tm_qpartial_suppress_small (p, 2);
        tm_qresult_t *r = tm_qresult_new (q, p);
        if (r)
            s_print_all (r);
        tm_qresult_destroy (&r);
    }
    tm_qpartial_destroy (&p);
    tm_query_destroy (&q);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] < 2) {
        s_merge (s_queries[data[0]], data + 1, size - 1);
        return 0;
    }
    char why[256];
    tm_qresult_t *r = tm_qresult_decode (data + 1, size - 1, why, sizeof why);
    if (!r)
        return 0;
    size_t n;
    uint8_t *bytes = tm_qresult_encode (r, &n);
    if (bytes) {
        tm_qresult_t *again = tm_qresult_decode (bytes, n, why, sizeof why);
        if (!again)
            abort ();
        tm_qresult_destroy (&again);
    }
    free (bytes);
    s_print_all (r);
    tm_qresult_destroy (&r);
    return 0;
}
