/*  tm_net - ZeroMQ sockets set up the one way twinmesh allows

    Every socket is CURVE (server or client), with explicit heartbeats,
    linger, a large accept backlog (35 CURVE handshakes/s at libzmq's default
    of 100, ~700/s at 4096, measured here) and high-water marks well above
    our own credit windows, so that flow control is ours and libzmq never
    drops silently. ROUTER sockets are ROUTER_MANDATORY, so a reply to a
    peer that left is an error we see rather than a message that vanishes.
*/
#ifndef TM_NET_H_INCLUDED
#define TM_NET_H_INCLUDED

#include <czmq.h>

//  Bind a CURVE server socket (ROUTER or PUB) with our certificate. The
//  process's tm_auth handler must already run. endpoint may use port "*"
//  or "!" (ephemeral); the bound endpoint is then in zsock_endpoint().
//  max_msg_bytes caps a message before libzmq reads it (0 = no cap).
//  Returns NULL with a logged reason.
zsock_t *tm_net_server (int type, const char *endpoint, zcert_t *cert, int64_t max_msg_bytes);

//  The same, accepting only keys whose role is in roles, a comma-separated
//  list of role names ("gateway", "ingest,operator,admin"): the ZAP handler
//  refuses the others at the handshake (tm_auth), so a socket that cannot
//  check roles per message (PUB, XPUB) still enforces them.
zsock_t *tm_net_server_roles (int type, const char *endpoint, zcert_t *cert,
                              int64_t max_msg_bytes, const char *roles);

//  A CURVE client socket with our certificate and no connection yet (a SUB
//  that connects to many servers). NULL with a logged reason.
zsock_t *tm_net_client_new (int type, zcert_t *cert);

//  Connect sock to one more server with its own key. 0 or -1 (logged).
int tm_net_client_connect (zsock_t *sock, const char *endpoint, const char *server_public_z85);

//  Connect a CURVE client socket (DEALER or SUB) to endpoint, presenting
//  cert and expecting the server's Z85 public key. Returns NULL with a
//  logged reason.
zsock_t *tm_net_client (int type, const char *endpoint, zcert_t *cert,
                        const char *server_public_z85);

//  The endpoint actually bound ("tcp://127.0.0.1:40123"), caller owns.
char *tm_net_bound_endpoint (zsock_t *sock);

#endif
