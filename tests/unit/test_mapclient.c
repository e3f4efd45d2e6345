/*  test_mapclient - unit tests for tm_mapclient against a fake broker

    The fake broker is a ROUTER (and a PUB) in an actor of this process,
    over CURVE on tcp://127.0.0.1 as the real one: it answers each MAP_GET
    with the next map of a script. The client must install the first map,
    ignore an older epoch, take a newer one, and follow the PUB.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tm_auth.h"
#include "tm_log.h"
#include "tm_mapclient.h"
#include "tm_msg.h"
#include "tm_net.h"
#include "tm_util.h"

#define PK "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

//  What the fake broker serves; shared with its actor before it starts.
typedef struct {
    zcert_t *cert;                 //  The broker's certificate, borrowed
    uint64_t epochs[8];            //  Epoch of the map for each MAP_GET
    size_t nepochs;                //  After the script: empty MAP bodies
} script_t;

static uint8_t *
s_map_bytes (uint64_t epoch, size_t *size)
{
    tm_shardmap_t *map = tm_shardmap_new (64, (const uint8_t *) "0123456789abcdef");
    map->epoch = epoch;
    tm_shardmap_set_worker (map, "worker-0", "tcp://127.0.0.1:5560", PK);
    for (uint32_t s = 0; s < 64; s++)
        map->owners[s] = 0;
    uint8_t *buf = tm_shardmap_encode (map, size);
    tm_shardmap_destroy (&map);
    return buf;
}

//  The fake broker. Sends the bound endpoints up the pipe, then serves:
//  MAP_GET -> MAP (next scripted epoch); "PUB" <epoch> on the pipe -> one
//  ["MAP", Header, ShardMap] on the PUB socket.
static void
s_fake_broker (zsock_t *pipe, void *args)
{
    script_t *script = (script_t *) args;
    zsock_t *router = tm_net_server (ZMQ_ROUTER, "tcp://127.0.0.1:*", script->cert, 0);
    zsock_t *pub = tm_net_server (ZMQ_PUB, "tcp://127.0.0.1:*", script->cert, 0);
    //  No cmocka asserts in this thread (they longjmp): a failure to bind
    //  is sent up as empty endpoints, which the test checks.
    zsock_signal (pipe, 0);
    if (!router || !pub) {
        zstr_sendx (pipe, "", "", NULL);
        zsock_destroy (&router);
        zsock_destroy (&pub);
        return;
    }
    char *ep = tm_net_bound_endpoint (router), *pep = tm_net_bound_endpoint (pub);
    zstr_sendx (pipe, ep, pep, NULL);
    zstr_free (&ep);
    zstr_free (&pep);
    size_t served = 0;
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe) {
            char *cmd = NULL, *arg = NULL;
            zstr_recvx (pipe, &cmd, &arg, NULL);
            bool stop = !cmd || streq (cmd, "$TERM");
            if (cmd && streq (cmd, "PUB") && arg) {
                tm_header_t hdr;
                tm_header_init (&hdr, TWINMESH__MSG_TYPE__MAP, 0, strtoull (arg, NULL, 10));
                size_t size;
                uint8_t *buf = s_map_bytes (hdr.epoch, &size);
                zframe_t *head = tm_header_encode (&hdr);
                zstr_sendm (pub, "MAP");
                zframe_send (&head, pub, ZFRAME_MORE);
                zmq_send (zsock_resolve (pub), buf, size, 0);
                free (buf);
            }
            zstr_free (&cmd);
            zstr_free (&arg);
            if (stop)
                break;
            continue;
        }
        if (which != router)
            break;
        tm_msg_t req;
        if (tm_msg_recv (router, true, &req) == 0
            && req.hdr.type == TWINMESH__MSG_TYPE__MAP_GET) {
            size_t size = 0;
            uint8_t *buf = NULL;
            if (served < script->nepochs)
                buf = s_map_bytes (script->epochs[served], &size);
            served++;
            tm_msg_reply (router, &req, TWINMESH__MSG_TYPE__MAP, TWINMESH__STATUS__OK,
                          0, NULL, buf, size);
            free (buf);
        }
        tm_msg_fini (&req);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&pub);
    zsock_destroy (&router);
}

typedef struct {
    char dir[64];
    tm_auth_t *auth;
    zcert_t *broker_cert;
    zcert_t *client_cert;
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    snprintf (fx->dir, sizeof fx->dir, "/tmp/tm_test_mapclient.XXXXXX");
    if (!mkdtemp (fx->dir))
        return -1;
    if (tm_auth_keygen (fx->dir, "broker", TM_ROLE_BROKER)
        || tm_auth_keygen (fx->dir, "gateway-0", TM_ROLE_GATEWAY))
        return -1;
    char path[128];
    snprintf (path, sizeof path, "%s/broker.key_secret", fx->dir);
    fx->broker_cert = tm_auth_load_secret (path);
    snprintf (path, sizeof path, "%s/gateway-0.key_secret", fx->dir);
    fx->client_cert = tm_auth_load_secret (path);
    fx->auth = tm_auth_new (fx->dir);
    *state = fx;
    return fx->auth && fx->broker_cert && fx->client_cert? 0: -1;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    tm_auth_destroy (&fx->auth);
    zcert_destroy (&fx->broker_cert);
    zcert_destroy (&fx->client_cert);
    int rc = tm_util_rm_rf (fx->dir);
    free (fx);
    return rc;
}

//  Wait for one reply on the client's request socket and handle it.
static int
s_handle_one (tm_mapclient_t *client, zsock_t *sock)
{
    zpoller_t *poller = zpoller_new (sock, NULL);
    void *which = zpoller_wait (poller, 5000);
    zpoller_destroy (&poller);
    assert_ptr_equal (which, sock);
    return tm_mapclient_handle (client, sock);
}

static void
test_fetch_and_epochs (void **state)
{
    fixture_t *fx = *state;
    script_t script = {fx->broker_cert, {5, 3, 5, 9}, 4};
    zactor_t *broker = zactor_new (s_fake_broker, &script);
    assert_non_null (broker);
    char *ep = NULL, *pep = NULL;
    assert_int_equal (zstr_recvx (broker, &ep, &pep, NULL), 2);
    assert_true (*ep && *pep);

    tm_mapclient_t *client = tm_mapclient_new (ep, NULL, zcert_public_txt (fx->broker_cert),
                                               fx->client_cert);
    assert_non_null (client);
    assert_null (tm_mapclient_map (client));
    assert_int_equal (tm_mapclient_epoch (client), 0);
    assert_int_equal (tm_mapclient_last_reply_ms (client), 0);
    assert_null (tm_mapclient_sub_sock (client));

    //  fetch installs the first map (epoch 5).
    const tm_shardmap_t *map = tm_mapclient_fetch (client, 5000);
    assert_non_null (map);
    assert_int_equal (map->epoch, 5);
    assert_int_equal (map->num_shards, 64);
    assert_int_equal (map->nworkers, 1);
    assert_string_equal (map->workers[0].id, "worker-0");
    assert_int_equal (tm_mapclient_epoch (client), 5);
    assert_true (tm_mapclient_last_reply_ms (client) > 0);
    assert_ptr_equal (tm_mapclient_map (client), map);

    //  An older epoch (3) and the same epoch (5) are ignored.
    zsock_t *req = tm_mapclient_req_sock (client);
    tm_mapclient_tick (client, NULL);
    assert_int_equal (s_handle_one (client, req), 0);
    assert_int_equal (tm_mapclient_epoch (client), 5);
    tm_mapclient_tick (client, NULL);
    assert_int_equal (s_handle_one (client, req), 0);
    assert_int_equal (tm_mapclient_epoch (client), 5);
    //  A newer one (9) is installed.
    tm_mapclient_tick (client, NULL);
    assert_int_equal (s_handle_one (client, req), 1);
    assert_int_equal (tm_mapclient_epoch (client), 9);
    //  An empty body means "you are current": nothing changes.
    tm_mapclient_tick (client, NULL);
    assert_int_equal (s_handle_one (client, req), 0);
    assert_int_equal (tm_mapclient_epoch (client), 9);
    //  A socket that is not the client's.
    assert_int_equal (tm_mapclient_handle (client, (zsock_t *) broker), -1);

    tm_mapclient_destroy (&client);
    assert_null (client);
    tm_mapclient_destroy (&client);
    zactor_destroy (&broker);
    zstr_free (&ep);
    zstr_free (&pep);
}

static void
test_fetch_times_out (void **state)
{
    fixture_t *fx = *state;
    //  A broker that never has a map: fetch gives up at its deadline.
    script_t script = {fx->broker_cert, {0}, 0};
    zactor_t *broker = zactor_new (s_fake_broker, &script);
    char *ep = NULL, *pep = NULL;
    assert_int_equal (zstr_recvx (broker, &ep, &pep, NULL), 2);
    assert_true (*ep && *pep);
    tm_mapclient_t *client = tm_mapclient_new (ep, NULL, zcert_public_txt (fx->broker_cert),
                                               fx->client_cert);
    int64_t start = tm_util_mono_ms ();
    assert_null (tm_mapclient_fetch (client, 700));
    int64_t took = tm_util_mono_ms () - start;
    assert_true (took >= 650 && took < 3000);
    assert_true (tm_mapclient_last_reply_ms (client) > 0);     //  it did answer
    tm_mapclient_destroy (&client);
    zactor_destroy (&broker);
    zstr_free (&ep);
    zstr_free (&pep);
}

static void
test_follow_pub (void **state)
{
    fixture_t *fx = *state;
    script_t script = {fx->broker_cert, {2}, 1};
    zactor_t *broker = zactor_new (s_fake_broker, &script);
    char *ep = NULL, *pep = NULL;
    assert_int_equal (zstr_recvx (broker, &ep, &pep, NULL), 2);
    assert_true (*ep && *pep);
    tm_mapclient_t *client = tm_mapclient_new (ep, pep, zcert_public_txt (fx->broker_cert),
                                               fx->client_cert);
    assert_non_null (client);
    zsock_t *sub = tm_mapclient_sub_sock (client);
    assert_non_null (sub);
    assert_non_null (tm_mapclient_fetch (client, 5000));
    assert_int_equal (tm_mapclient_epoch (client), 2);

    //  PUB drops messages until the subscription has reached it, so
    //  publish until one arrives (the Clone pattern's snapshot covers the
    //  gap in real life).
    zpoller_t *poller = zpoller_new (sub, NULL);
    int changed = 0;
    for (int i = 0; i < 50 && !changed; i++) {
        zstr_sendx (broker, "PUB", "7", NULL);
        if (zpoller_wait (poller, 100) == sub)
            changed = tm_mapclient_handle (client, sub);
    }
    assert_int_equal (changed, 1);
    assert_int_equal (tm_mapclient_epoch (client), 7);
    //  A stale publication changes nothing.
    while (zpoller_wait (poller, 200) == sub)
        tm_mapclient_handle (client, sub);
    zstr_sendx (broker, "PUB", "4", NULL);
    assert_ptr_equal (zpoller_wait (poller, 3000), sub);
    assert_int_equal (tm_mapclient_handle (client, sub), 0);
    assert_int_equal (tm_mapclient_epoch (client), 7);
    zpoller_destroy (&poller);
    tm_mapclient_destroy (&client);
    zactor_destroy (&broker);
    zstr_free (&ep);
    zstr_free (&pep);
}

int
main (void)
{
    tm_log_init ("test_mapclient", TM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_fetch_and_epochs, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fetch_times_out, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_follow_pub, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return rc;
}
