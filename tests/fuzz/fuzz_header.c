/*  fuzz_header - tm_header_decode over arbitrary bytes

    Every message's first frame goes through this decoder. On success the
    header must re-encode and decode to the same values (the detail is
    always NUL-terminated within its buffer).
*/
#include "fuzz.h"
#include "tm_msg.h"

#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    tm_header_t hdr;
    int rc = tm_header_decode (data, size, &hdr);
    if (rc != 0 && rc != TM_MSG_E_MALFORMED && rc != TM_MSG_E_VERSION)
        abort ();
    if (memchr (hdr.detail, 0, sizeof hdr.detail) == NULL)
        abort ();
    if (rc != 0)
        return 0;
    zframe_t *frame = tm_header_encode (&hdr);
    if (!frame)
        abort ();
    tm_header_t again;
    //  A detail cut at 255 bytes may end inside a UTF-8 sequence, which
    //  protobuf-c refuses to unpack; that is not a round-trip failure.
    int rc2 = tm_header_decode (zframe_data (frame), zframe_size (frame), &again);
    if (rc2 == 0
        && (again.version != hdr.version || again.type != hdr.type || again.seq != hdr.seq
            || again.request_id != hdr.request_id || again.epoch != hdr.epoch
            || again.status != hdr.status || strcmp (again.detail, hdr.detail) != 0))
        abort ();
    zframe_destroy (&frame);
    return 0;
}
