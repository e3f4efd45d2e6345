/*  fuzz_twins_shard - a worker's checkpoint blob decoder over arbitrary bytes

    A shard's twins come back from disk (and, with shard moves, from another
    worker) through tm_twins_restore_shard. Whatever it accepts must encode
    again and restore to the same number of twins with the same state.
    Since format 3 the blob carries each series' open history chunk, which
    goes through tm_gorilla_enc_resume: the byte-for-byte comparison below
    covers it too (seed one-twin-v3-history). A passivated twin is a
    one-twin blob of the same format (tm_twins_encode_twin), and the same
    bytes are also fed to the passive set's decoder (a shard's 'Q' value).
*/
#include "fuzz.h"
#include "tm_twins.h"

#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    tm_twins_t *twins = tm_twins_new ();
    if (!twins)
        return 0;
    long n = tm_twins_restore_shard (twins, 7, data, size);
    if (n < -1)
        abort ();
    if (n >= 0) {
        uint8_t *buf = NULL;
        size_t cap = 0;
        size_t len = tm_twins_encode_shard (twins, 7, &buf, &cap);
        tm_twins_t *again = tm_twins_new ();
        if (!buf || !again || tm_twins_restore_shard (again, 7, buf, len) != n
            || tm_twins_size (again) != tm_twins_size (twins))
            abort ();
        //  Restoring reverses a shard's list order, so two round trips give
        //  the first encoding back, byte for byte.
        uint8_t *buf2 = NULL;
        size_t cap2 = 0;
        size_t len2 = tm_twins_encode_shard (again, 7, &buf2, &cap2);
        tm_twins_t *third = tm_twins_new ();
        if (len2 != len || !third || tm_twins_restore_shard (third, 7, buf2, len2) != n)
            abort ();
        uint8_t *buf3 = NULL;
        size_t cap3 = 0;
        size_t len3 = tm_twins_encode_shard (third, 7, &buf3, &cap3);
        if (len3 != len || memcmp (buf, buf3, len) != 0)
            abort ();
        free (buf3);
        tm_twins_destroy (&third);
        //  Each twin alone, as passivation writes it, restores as one twin.
        for (const tm_twin_t *t = tm_twins_shard_first (twins, 7); t; t = t->next_in_shard) {
            uint8_t *one = NULL;
            size_t ocap = 0, olen = tm_twins_encode_twin (twins, t, &one, &ocap);
            tm_twins_t *alone = tm_twins_new ();
            if (!olen || !alone || tm_twins_restore_shard (alone, 7, one, olen) != 1
                || !tm_twins_find_active (alone, t->entity, t->entity_len))
                abort ();
            tm_twins_destroy (&alone);
            free (one);
        }
        free (buf);
        free (buf2);
        tm_twins_destroy (&again);
    }
    //  The passive set: whole big-endian u64s or refused; it encodes back
    //  sorted, the same count.
    if (tm_twins_passive_load (twins, 9, data, size) == 0) {
        size_t qlen;
        bool ok;
        uint8_t *q = tm_twins_passive_encode (twins, 9, &qlen, &ok);
        if (size % 8 || !ok || qlen != size || tm_twins_passive_count (twins, 9) != size / 8)
            abort ();
        for (size_t i = 8; i < qlen; i += 8)
            if (memcmp (q + i - 8, q + i, 8) > 0)
                abort ();
        free (q);
    }
    else
    if (size % 8 == 0)
        abort ();
    tm_twins_destroy (&twins);
    return 0;
}
