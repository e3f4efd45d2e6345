/*  tm_net - ZeroMQ sockets set up the one way twinmesh allows  */
#include "tm_net.h"
#include "tm_log.h"

#include <string.h>

#define TM_NET_HWM 100000          //  Far above any credit window we grant
#define TM_NET_BACKLOG 4096
#define TM_NET_HEARTBEAT_MS 2000
#define TM_NET_HEARTBEAT_TTL_MS 10000
#define TM_NET_LINGER_MS 1000

static void
s_common (zsock_t *sock)
{
    zsock_set_linger (sock, TM_NET_LINGER_MS);
    zsock_set_sndhwm (sock, TM_NET_HWM);
    zsock_set_rcvhwm (sock, TM_NET_HWM);
    zsock_set_heartbeat_ivl (sock, TM_NET_HEARTBEAT_MS);
    zsock_set_heartbeat_ttl (sock, TM_NET_HEARTBEAT_TTL_MS);
    zsock_set_heartbeat_timeout (sock, TM_NET_HEARTBEAT_TTL_MS);
}

//  A bound CURVE server; domain is its ZAP domain, which must be set before
//  the bind (libzmq copies a listener's options when it binds).
static zsock_t *
s_server (int type, const char *endpoint, zcert_t *cert, int64_t max_msg_bytes,
          const char *domain)
{
    if (!cert || !endpoint) {
        tm_error ("net: server needs a certificate and an endpoint");
        return NULL;
    }
    zsock_t *sock = zsock_new (type);
    if (!sock)
        return NULL;
    s_common (sock);
    zsock_set_backlog (sock, TM_NET_BACKLOG);
    if (type == ZMQ_ROUTER)
        zsock_set_router_mandatory (sock, 1);
    if (max_msg_bytes > 0)
        zsock_set_maxmsgsize (sock, (int) max_msg_bytes);
    zcert_apply (cert, sock);
    zsock_set_curve_server (sock, 1);
    //  Refuse connections if no ZAP handler answers, instead of libzmq's
    //  default of letting them through.
    zsock_set_zap_domain (sock, domain);
    zsock_set_zap_enforce_domain (sock, 1);
    if (zsock_bind (sock, "%s", endpoint) < 0) {
        tm_error ("net: cannot bind endpoint=%s reason=%s", endpoint, zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

zsock_t *
tm_net_server (int type, const char *endpoint, zcert_t *cert, int64_t max_msg_bytes)
{
    return s_server (type, endpoint, cert, max_msg_bytes, "twinmesh");
}

zsock_t *
tm_net_server_roles (int type, const char *endpoint, zcert_t *cert, int64_t max_msg_bytes,
                     const char *roles)
{
    //  The ZAP handler reads the roles it lets in from the domain (tm_auth).
    char domain[256];
    snprintf (domain, sizeof domain, "twinmesh/%s", roles? roles: "");
    return s_server (type, endpoint, cert, max_msg_bytes, roles? domain: "twinmesh");
}

zsock_t *
tm_net_client_new (int type, zcert_t *cert)
{
    if (!cert) {
        tm_error ("net: client needs a certificate");
        return NULL;
    }
    zsock_t *sock = zsock_new (type);
    if (!sock)
        return NULL;
    s_common (sock);
    zcert_apply (cert, sock);
    return sock;
}

int
tm_net_client_connect (zsock_t *sock, const char *endpoint, const char *server_public_z85)
{
    if (!endpoint || !server_public_z85 || strlen (server_public_z85) != 40)
        return -1;
    //  libzmq copies the socket's options into each connection when it is
    //  made, so one socket can reach servers with different keys.
    zsock_set_curve_serverkey (sock, server_public_z85);
    if (zsock_connect (sock, "%s", endpoint) < 0) {
        tm_error ("net: cannot connect endpoint=%s reason=%s", endpoint,
                  zmq_strerror (zmq_errno ()));
        return -1;
    }
    return 0;
}

zsock_t *
tm_net_client (int type, const char *endpoint, zcert_t *cert, const char *server_public_z85)
{
    if (!cert || !endpoint || !server_public_z85 || strlen (server_public_z85) != 40) {
        tm_error ("net: client needs a certificate, an endpoint and a server key");
        return NULL;
    }
    zsock_t *sock = zsock_new (type);
    if (!sock)
        return NULL;
    s_common (sock);
    zcert_apply (cert, sock);
    zsock_set_curve_serverkey (sock, server_public_z85);
    if (zsock_connect (sock, "%s", endpoint) < 0) {
        tm_error ("net: cannot connect endpoint=%s reason=%s", endpoint,
                  zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

char *
tm_net_bound_endpoint (zsock_t *sock)
{
    return zsock_last_endpoint (sock);
}
