/*  test_msg - unit tests for tm_msg: the header codec and message framing

    Every message crosses tm_header_decode before anything else looks at
    it, so it must turn anything odd into MALFORMED or BAD_VERSION rather
    than a crash or a half-filled header. Framing is checked over inproc
    (no CURVE needed there): routing frame, header, body, and the malformed
    shapes a server must still be able to answer.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tm_msg.h"

static void
test_header_round_trip (void **state)
{
    (void) state;
    tm_header_t in, out;
    tm_header_init (&in, TWINMESH__MSG_TYPE__APPEND_ACK, 77, 12);
    assert_int_equal (in.version, TM_PROTOCOL_VERSION);
    in.seq = UINT64_MAX;
    in.status = TWINMESH__STATUS__WRONG_SHARD;
    snprintf (in.detail, sizeof in.detail, "shard 5 moved, détail");
    zframe_t *frame = tm_header_encode (&in);
    assert_non_null (frame);
    assert_int_equal (tm_header_decode (zframe_data (frame), zframe_size (frame), &out), 0);
    assert_int_equal (out.version, TM_PROTOCOL_VERSION);
    assert_int_equal (out.type, TWINMESH__MSG_TYPE__APPEND_ACK);
    assert_int_equal (out.seq, UINT64_MAX);
    assert_int_equal (out.request_id, 77);
    assert_int_equal (out.epoch, 12);
    assert_int_equal (out.status, TWINMESH__STATUS__WRONG_SHARD);
    assert_string_equal (out.detail, "shard 5 moved, détail");
    zframe_destroy (&frame);

    //  The longest detail that fits survives whole and NUL-terminated.
    memset (in.detail, 'd', sizeof in.detail - 1);
    in.detail[sizeof in.detail - 1] = 0;
    frame = tm_header_encode (&in);
    assert_int_equal (tm_header_decode (zframe_data (frame), zframe_size (frame), &out), 0);
    assert_int_equal (strlen (out.detail), sizeof out.detail - 1);
    zframe_destroy (&frame);
}

static void
test_header_version (void **state)
{
    (void) state;
    tm_header_t in, out;
    tm_header_init (&in, TWINMESH__MSG_TYPE__INGEST, 1, 0);
    in.version = 2;
    zframe_t *frame = tm_header_encode (&in);
    assert_int_equal (tm_header_decode (zframe_data (frame), zframe_size (frame), &out),
                      TM_MSG_E_VERSION);
    //  The rest is still decoded, so the reply can echo the request id.
    assert_int_equal (out.request_id, 1);
    zframe_destroy (&frame);
    //  A header without a version (proto3 default 0) is not version 1.
    in.version = 0;
    frame = tm_header_encode (&in);
    assert_int_equal (tm_header_decode (zframe_data (frame), zframe_size (frame), &out),
                      TM_MSG_E_VERSION);
    zframe_destroy (&frame);
}

static void
test_header_malformed (void **state)
{
    (void) state;
    tm_header_t out;
    const uint8_t garbage[] = {0xFF, 0xFF, 0xFF, 0xFF};
    assert_int_equal (tm_header_decode (garbage, sizeof garbage, &out), TM_MSG_E_MALFORMED);
    const uint8_t truncated[] = {0x08, 0x01, 0x3A, 0x10, 'x'};     //  detail runs past end
    assert_int_equal (tm_header_decode (truncated, sizeof truncated, &out),
                      TM_MSG_E_MALFORMED);
    const uint8_t group[] = {0x0B};                                //  group start
    assert_int_equal (tm_header_decode (group, sizeof group, &out), TM_MSG_E_MALFORMED);
    assert_int_equal (tm_header_decode (NULL, 0, &out), TM_MSG_E_MALFORMED);
    assert_int_equal (tm_header_decode (garbage, 0, &out), TM_MSG_E_MALFORMED);
    //  Over the 1 KiB cap, even if it would decode.
    uint8_t big[1100];
    memset (big, 0, sizeof big);
    big[0] = 0x08;
    big[1] = 0x01;
    big[2] = 0x3A;
    big[3] = 0xC4;     //  detail of 1092 bytes: 0xC4 0x08
    big[4] = 0x08;
    memset (big + 5, 'a', 1092);
    assert_int_equal (tm_header_decode (big, 1097, &out), TM_MSG_E_MALFORMED);
    //  A failed decode leaves no stale values behind.
    assert_int_equal (out.request_id, 0);
    assert_string_equal (out.detail, "");
}

static void
test_names (void **state)
{
    (void) state;
    assert_string_equal (tm_msg_type_name (TWINMESH__MSG_TYPE__INGEST), "INGEST");
    assert_string_equal (tm_msg_type_name (TWINMESH__MSG_TYPE__MAP_GET), "MAP_GET");
    assert_string_equal (tm_msg_type_name (TWINMESH__MSG_TYPE__ERROR), "ERROR");
    assert_string_equal (tm_msg_type_name (999), "UNKNOWN");
    assert_string_equal (tm_msg_type_name (-1), "UNKNOWN");
    assert_string_equal (tm_status_name (TWINMESH__STATUS__OK), "OK");
    assert_string_equal (tm_status_name (TWINMESH__STATUS__RETRY_LATER), "RETRY_LATER");
    assert_string_equal (tm_status_name (TWINMESH__STATUS__NOT_READY), "NOT_READY");
    assert_string_equal (tm_status_name (42), "UNKNOWN");
}

static void
test_send_recv_inproc (void **state)
{
    (void) state;
    zsock_t *server = zsock_new_router ("inproc://test_msg");
    zsock_t *client = zsock_new_dealer (">inproc://test_msg");
    assert_non_null (server);
    assert_non_null (client);
    zsock_set_rcvtimeo (server, 2000);
    zsock_set_rcvtimeo (client, 2000);

    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__TWIN_GET, 5, 9);
    hdr.seq = 1;
    assert_int_equal (tm_msg_send (client, NULL, &hdr, "body", 4), 0);
    tm_msg_t req;
    assert_int_equal (tm_msg_recv (server, true, &req), 0);
    assert_non_null (req.routing);
    assert_int_equal (req.hdr.type, TWINMESH__MSG_TYPE__TWIN_GET);
    assert_int_equal (req.hdr.request_id, 5);
    assert_int_equal (req.hdr.seq, 1);
    assert_int_equal (zframe_size (req.body), 4);
    assert_memory_equal (zframe_data (req.body), "body", 4);
    assert_int_equal (req.role, TM_ROLE_NONE);          //  no ZAP on inproc

    //  The reply echoes the request id and carries the status.
    assert_int_equal (tm_msg_reply (server, &req, TWINMESH__MSG_TYPE__TWIN,
                                    TWINMESH__STATUS__NOT_FOUND, 9, "no such twin", NULL, 0),
                      0);
    tm_msg_fini (&req);
    assert_null (req.routing);
    tm_msg_t rep;
    assert_int_equal (tm_msg_recv (client, false, &rep), 0);
    assert_null (rep.routing);
    assert_int_equal (rep.hdr.request_id, 5);
    assert_int_equal (rep.hdr.status, TWINMESH__STATUS__NOT_FOUND);
    assert_string_equal (rep.hdr.detail, "no such twin");
    assert_non_null (rep.body);
    assert_int_equal (zframe_size (rep.body), 0);
    tm_msg_fini (&rep);

    //  Body frame consumed without a copy.
    zframe_t *body = zframe_new ("xyz", 3);
    assert_int_equal (tm_msg_send_frame (client, NULL, &hdr, &body), 0);
    assert_null (body);
    assert_int_equal (tm_msg_recv (server, true, &req), 0);
    assert_int_equal (zframe_size (req.body), 3);
    tm_msg_fini (&req);

    //  Malformed shapes: garbage header, too many frames, header only.
    zstr_sendm (client, "not a header");
    zstr_send (client, "");
    assert_int_equal (tm_msg_recv (server, true, &req), TM_MSG_E_MALFORMED);
    assert_non_null (req.routing);      //  kept, so the server can answer ERROR
    assert_non_null (req.body);
    tm_msg_fini (&req);
    zframe_t *head = tm_header_encode (&hdr);
    zframe_send (&head, client, ZFRAME_MORE);
    zstr_sendm (client, "a");
    zstr_send (client, "b");
    assert_int_equal (tm_msg_recv (server, true, &req), TM_MSG_E_MALFORMED);
    tm_msg_fini (&req);
    //  A header with no body frame is malformed too (an empty body is an
    //  empty frame), and the body is still never NULL for the caller.
    head = tm_header_encode (&hdr);
    zframe_send (&head, client, 0);
    assert_int_equal (tm_msg_recv (server, true, &req), TM_MSG_E_MALFORMED);
    assert_non_null (req.routing);
    assert_non_null (req.body);
    tm_msg_fini (&req);
    head = tm_header_encode (&hdr);
    zframe_send (&head, client, ZFRAME_MORE);
    zstr_send (client, "");
    assert_int_equal (tm_msg_recv (server, true, &req), 0);
    assert_non_null (req.body);
    assert_int_equal (zframe_size (req.body), 0);
    tm_msg_fini (&req);

    zsock_destroy (&client);
    zsock_destroy (&server);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_header_round_trip),
        cmocka_unit_test (test_header_version),
        cmocka_unit_test (test_header_malformed),
        cmocka_unit_test (test_names),
        cmocka_unit_test (test_send_recv_inproc),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
