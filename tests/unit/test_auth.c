/*  test_auth - unit tests for tm_auth: keys, roles, and a real CURVE
    handshake through the ZAP allow-list

    The allow-list is the only thing between the network and the cluster
    (invariant 4), so it is tested end to end over tcp://127.0.0.1: a key
    on the list gets through and is seen with its role; a key that is not
    gets nothing at all, and the refusal is counted.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tm_auth.h"
#include "tm_log.h"
#include "tm_msg.h"
#include "tm_net.h"
#include "tm_util.h"

static char s_dir[64];           //  Temporary root, removed at the end
static char s_allow[128];        //  Allow-list directory
static char s_other[128];        //  Keys that are not on the list

static int
s_setup (void **state)
{
    (void) state;
    snprintf (s_dir, sizeof s_dir, "/tmp/tm_test_auth.XXXXXX");
    if (!mkdtemp (s_dir))
        return -1;
    snprintf (s_allow, sizeof s_allow, "%s/allow", s_dir);
    snprintf (s_other, sizeof s_other, "%s/other", s_dir);
    return tm_util_mkdir_p (s_allow) || tm_util_mkdir_p (s_other);
}

static int
s_teardown (void **state)
{
    (void) state;
    return tm_util_rm_rf (s_dir);
}

static void
test_roles (void **state)
{
    (void) state;
    for (int r = 1; r < TM_ROLE_COUNT_; r++) {
        const char *name = tm_role_name ((tm_role_t) r);
        assert_string_not_equal (name, "none");
        assert_int_equal (tm_role_parse (name), r);
    }
    assert_string_equal (tm_role_name (TM_ROLE_INGEST), "ingest");
    assert_string_equal (tm_role_name (TM_ROLE_WORKER), "worker");
    assert_string_equal (tm_role_name (TM_ROLE_NONE), "none");
    assert_string_equal (tm_role_name ((tm_role_t) 99), "none");
    assert_int_equal (tm_role_parse ("none"), TM_ROLE_NONE);
    assert_int_equal (tm_role_parse ("Admin"), TM_ROLE_NONE);
    assert_int_equal (tm_role_parse (""), TM_ROLE_NONE);
    assert_int_equal (tm_role_parse (NULL), TM_ROLE_NONE);

    //  The permission table of docs/operations.md.
    assert_true (tm_role_may_ingest (TM_ROLE_INGEST));
    assert_true (tm_role_may_ingest (TM_ROLE_OPERATOR));
    assert_true (tm_role_may_ingest (TM_ROLE_ADMIN));
    assert_false (tm_role_may_ingest (TM_ROLE_ANALYST));
    assert_false (tm_role_may_ingest (TM_ROLE_GATEWAY));
    assert_false (tm_role_may_ingest (TM_ROLE_SITE));
    assert_false (tm_role_may_ingest (TM_ROLE_NONE));
    assert_true (tm_role_may_read (TM_ROLE_ANALYST));
    assert_true (tm_role_may_read (TM_ROLE_WORKER));
    assert_false (tm_role_may_read (TM_ROLE_INGEST));
    assert_false (tm_role_may_read (TM_ROLE_SITE));
    assert_false (tm_role_may_read (TM_ROLE_NONE));
}

static void
test_keygen (void **state)
{
    (void) state;
    assert_int_equal (tm_auth_keygen (s_other, "alice", TM_ROLE_ANALYST), 0);
    char pub[256], sec[256];
    snprintf (pub, sizeof pub, "%s/alice.key", s_other);
    snprintf (sec, sizeof sec, "%s/alice.key_secret", s_other);
    struct stat st;
    assert_int_equal (stat (pub, &st), 0);
    assert_int_equal (st.st_mode & 0777, 0644);
    assert_int_equal (stat (sec, &st), 0);
    assert_int_equal (st.st_mode & 0777, 0600);

    //  The secret loads, and its public half is the public file's key.
    zcert_t *cert = tm_auth_load_secret (sec);
    assert_non_null (cert);
    char *key = tm_auth_load_public_key (pub);
    assert_non_null (key);
    assert_int_equal (strlen (key), 40);
    assert_string_equal (key, zcert_public_txt (cert));
    assert_string_equal (zcert_meta (cert, "role"), "analyst");
    assert_string_equal (zcert_meta (cert, "name"), "alice");
    free (key);
    zcert_destroy (&cert);

    //  The public file's metadata says the role too (the allow-list reads it).
    zcert_t *pcert = zcert_load (pub);
    assert_non_null (pcert);
    assert_string_equal (zcert_meta (pcert, "role"), "analyst");
    zcert_destroy (&pcert);

    //  A public certificate alone is not a secret one. (czmq's zcert_load
    //  of NAME.key would read NAME.key_secret if it sat beside it, so the
    //  public file is copied alone.)
    char lone_dir[256], lone[300];
    snprintf (lone_dir, sizeof lone_dir, "%s/lone", s_dir);
    assert_int_equal (tm_util_mkdir_p (lone_dir), 0);
    snprintf (lone, sizeof lone, "%s/alice.key", lone_dir);
    FILE *in = fopen (pub, "rb");
    FILE *out = fopen (lone, "wb");
    assert_non_null (in);
    assert_non_null (out);
    char chunk[4096];
    size_t n;
    while ((n = fread (chunk, 1, sizeof chunk, in)) > 0)
        fwrite (chunk, 1, n, out);
    fclose (in);
    fclose (out);
    assert_null (tm_auth_load_secret (lone));
    char *lone_key = tm_auth_load_public_key (lone);
    assert_non_null (lone_key);
    free (lone_key);

    //  Missing files and bad arguments.
    char missing[256];
    snprintf (missing, sizeof missing, "%s/nobody.key_secret", s_other);
    assert_null (tm_auth_load_secret (missing));
    assert_null (tm_auth_load_secret (NULL));
    assert_null (tm_auth_load_public_key (missing));
    assert_int_equal (tm_auth_keygen (s_other, "x", TM_ROLE_NONE), -1);
    assert_int_equal (tm_auth_keygen (s_other, "a/b", TM_ROLE_INGEST), -1);
    assert_int_equal (tm_auth_keygen (s_other, "", TM_ROLE_INGEST), -1);
    assert_int_equal (tm_auth_keygen (s_other, NULL, TM_ROLE_INGEST), -1);

    //  Two keygens give two different keys.
    assert_int_equal (tm_auth_keygen (s_other, "bob", TM_ROLE_ANALYST), 0);
    snprintf (pub, sizeof pub, "%s/bob.key", s_other);
    char *k1 = tm_auth_load_public_key (pub);
    snprintf (pub, sizeof pub, "%s/alice.key", s_other);
    char *k2 = tm_auth_load_public_key (pub);
    assert_string_not_equal (k1, k2);
    free (k1);
    free (k2);
}

static void
test_frame_role_without_zap (void **state)
{
    (void) state;
    zframe_t *frame = zframe_new ("x", 1);
    char name[32] = "junk";
    assert_int_equal (tm_auth_frame_role (frame, name, sizeof name), TM_ROLE_NONE);
    assert_string_equal (name, "");
    assert_int_equal (tm_auth_frame_role (NULL, name, sizeof name), TM_ROLE_NONE);
    zframe_destroy (&frame);
}

static zcert_t *
s_secret (const char *dir, const char *name)
{
    char path[256];
    snprintf (path, sizeof path, "%s/%s.key_secret", dir, name);
    zcert_t *cert = tm_auth_load_secret (path);
    assert_non_null (cert);
    return cert;
}

static void
test_curve_handshake (void **state)
{
    (void) state;
    //  Server and allowed client in the allow-list; the server's secret
    //  file is moved out so the list holds public files only.
    assert_int_equal (tm_auth_keygen (s_allow, "broker", TM_ROLE_BROKER), 0);
    assert_int_equal (tm_auth_keygen (s_allow, "gw-1", TM_ROLE_GATEWAY), 0);
    assert_int_equal (tm_auth_keygen (s_other, "mallory", TM_ROLE_ADMIN), 0);
    //  A certificate without a valid role is skipped by the list.
    zcert_t *norole = zcert_new ();
    char path[256];
    snprintf (path, sizeof path, "%s/norole.key", s_allow);
    assert_int_equal (zcert_save_public (norole, path), 0);
    zcert_destroy (&norole);

    tm_auth_t *auth = tm_auth_new (s_allow);
    assert_non_null (auth);
    assert_int_equal (tm_auth_size (auth), 2);
    //  One handler per process.
    assert_null (tm_auth_new (s_allow));

    zcert_t *server_cert = s_secret (s_allow, "broker");
    zsock_t *server = tm_net_server (ZMQ_ROUTER, "tcp://127.0.0.1:*", server_cert, 1 << 20);
    assert_non_null (server);
    char *endpoint = tm_net_bound_endpoint (server);
    assert_non_null (endpoint);
    assert_non_null (strstr (endpoint, "tcp://127.0.0.1:"));

    //  The allowed client: its message arrives with role and name.
    zcert_t *good_cert = s_secret (s_allow, "gw-1");
    zsock_t *good = tm_net_client (ZMQ_DEALER, endpoint, good_cert,
                                   zcert_public_txt (server_cert));
    assert_non_null (good);
    tm_header_t hdr;
    tm_header_init (&hdr, TWINMESH__MSG_TYPE__HELLO, 1, 0);
    assert_int_equal (tm_msg_send (good, NULL, &hdr, "hi", 2), 0);
    zpoller_t *poller = zpoller_new (server, NULL);
    assert_ptr_equal (zpoller_wait (poller, 5000), server);
    zmsg_t *zm = zmsg_recv (server);
    assert_non_null (zm);
    assert_int_equal (zmsg_size (zm), 3);
    zframe_t *routing = zmsg_pop (zm);
    zframe_t *head = zmsg_pop (zm);
    char name[64];
    assert_int_equal (tm_auth_frame_role (head, name, sizeof name), TM_ROLE_GATEWAY);
    assert_string_equal (name, "gw-1");
    //  A name buffer too small is truncated, not overrun.
    char small[3];
    assert_int_equal (tm_auth_frame_role (head, small, sizeof small), TM_ROLE_GATEWAY);
    assert_string_equal (small, "gw");
    assert_int_equal (tm_auth_frame_role (head, NULL, 0), TM_ROLE_GATEWAY);
    zframe_destroy (&routing);
    zframe_destroy (&head);
    zmsg_destroy (&zm);

    //  The same through tm_msg_recv, and the reply comes back.
    assert_int_equal (tm_msg_send (good, NULL, &hdr, "again", 5), 0);
    assert_ptr_equal (zpoller_wait (poller, 5000), server);
    tm_msg_t msg;
    assert_int_equal (tm_msg_recv (server, true, &msg), 0);
    assert_int_equal (msg.role, TM_ROLE_GATEWAY);
    assert_string_equal (msg.peer, "gw-1");
    assert_int_equal (tm_msg_reply (server, &msg, TWINMESH__MSG_TYPE__HELLO_ACK,
                                    TWINMESH__STATUS__OK, 0, NULL, NULL, 0),
                      0);
    tm_msg_fini (&msg);
    zsock_set_rcvtimeo (good, 5000);
    assert_int_equal (tm_msg_recv (good, false, &msg), 0);
    assert_int_equal (msg.hdr.type, TWINMESH__MSG_TYPE__HELLO_ACK);
    tm_msg_fini (&msg);
    assert_true (tm_auth_accepted (auth) >= 1);
    assert_int_equal (tm_auth_refused (auth), 0);

    //  The client not on the list: nothing arrives, the refusal is counted.
    zcert_t *bad_cert = s_secret (s_other, "mallory");
    zsock_t *bad = tm_net_client (ZMQ_DEALER, endpoint, bad_cert,
                                  zcert_public_txt (server_cert));
    assert_non_null (bad);
    zsock_set_sndtimeo (bad, 0);
    tm_msg_send (bad, NULL, &hdr, "let me in", 9);
    assert_null (zpoller_wait (poller, 1500));
    assert_false (zpoller_terminated (poller));
    int64_t deadline = tm_util_mono_ms () + 3000;
    while (tm_auth_refused (auth) == 0 && tm_util_mono_ms () < deadline)
        zclock_sleep (20);
    assert_true (tm_auth_refused (auth) >= 1);

    //  Reload after adding mallory's key: now it gets through.
    char from[256], to[256];
    snprintf (from, sizeof from, "%s/mallory.key", s_other);
    snprintf (to, sizeof to, "%s/mallory.key", s_allow);
    assert_int_equal (rename (from, to), 0);
    assert_int_equal (tm_auth_reload (auth), 3);
    assert_int_equal (tm_auth_size (auth), 3);
    //  A new connection is needed: the refused one stays refused.
    zsock_destroy (&bad);
    bad = tm_net_client (ZMQ_DEALER, endpoint, bad_cert, zcert_public_txt (server_cert));
    assert_int_equal (tm_msg_send (bad, NULL, &hdr, "now?", 4), 0);
    assert_ptr_equal (zpoller_wait (poller, 5000), server);
    assert_int_equal (tm_msg_recv (server, true, &msg), 0);
    assert_int_equal (msg.role, TM_ROLE_ADMIN);
    assert_string_equal (msg.peer, "mallory");
    tm_msg_fini (&msg);

    //  A server that takes only some roles (tm_net_server_roles): a PUB
    //  for gateways. The gateway's SUB gets what is published; mallory,
    //  allowed now but an admin, is refused at the handshake.
    zsock_t *pub = tm_net_server_roles (ZMQ_PUB, "tcp://127.0.0.1:*", server_cert, 0,
                                        "worker,gateway");
    assert_non_null (pub);
    char *pub_ep = tm_net_bound_endpoint (pub);
    zsock_t *gw_sub = tm_net_client (ZMQ_SUB, pub_ep, good_cert, zcert_public_txt (server_cert));
    zsock_t *admin_sub = tm_net_client (ZMQ_SUB, pub_ep, bad_cert,
                                        zcert_public_txt (server_cert));
    assert_non_null (gw_sub);
    assert_non_null (admin_sub);
    zsock_set_subscribe (gw_sub, "");
    zsock_set_subscribe (admin_sub, "");
    uint64_t refused_before = tm_auth_refused (auth);
    zpoller_t *subs = zpoller_new (gw_sub, admin_sub, NULL);
    bool gw_got = false, admin_got = false;
    deadline = tm_util_mono_ms () + 3000;
    while (tm_util_mono_ms () < deadline) {
        zstr_send (pub, "event");
        zsock_t *which = (zsock_t *) zpoller_wait (subs, 100);
        if (which) {
            char *text = zstr_recv (which);
            gw_got |= which == gw_sub;
            admin_got |= which == admin_sub;
            zstr_free (&text);
        }
        if (gw_got && tm_auth_refused (auth) > refused_before)
            break;
    }
    assert_true (gw_got);
    assert_false (admin_got);
    assert_true (tm_auth_refused (auth) > refused_before);
    zpoller_destroy (&subs);
    zsock_destroy (&gw_sub);
    zsock_destroy (&admin_sub);
    zsock_destroy (&pub);
    zstr_free (&pub_ep);

    //  A reload of a directory that vanished keeps the old list.
    assert_int_equal (tm_util_rm_rf (s_allow), 0);
    assert_int_equal (tm_auth_reload (auth), -1);
    assert_int_equal (tm_auth_size (auth), 3);

    zpoller_destroy (&poller);
    zsock_destroy (&bad);
    zsock_destroy (&good);
    zsock_destroy (&server);
    zstr_free (&endpoint);
    zcert_destroy (&bad_cert);
    zcert_destroy (&good_cert);
    zcert_destroy (&server_cert);
    tm_auth_destroy (&auth);
    assert_null (auth);
    tm_auth_destroy (&auth);
}

static void
test_auth_new_missing_dir (void **state)
{
    (void) state;
    char missing[128];
    snprintf (missing, sizeof missing, "%s/nope", s_dir);
    assert_null (tm_auth_new (missing));
    //  The failed start does not block a later one.
    tm_auth_t *auth = tm_auth_new (s_other);
    assert_non_null (auth);
    tm_auth_destroy (&auth);
}

int
main (void)
{
    tm_log_init ("test_auth", TM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_roles),
        cmocka_unit_test_setup_teardown (test_keygen, s_setup, s_teardown),
        cmocka_unit_test (test_frame_role_without_zap),
        cmocka_unit_test_setup_teardown (test_curve_handshake, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_auth_new_missing_dir, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return rc;
}
