/*  tm_msg - twinmesh messages on ZeroMQ: [routing] Header body

    Receiving splits a ZeroMQ message into its routing frame (ROUTER only),
    its decoded Header and its body frame, and reads the sender's role from
    the ZAP User-Id. Sending builds the same shape. A message that does not
    decode is reported as TM_MSG_E_MALFORMED with the routing frame kept, so
    the server can still answer ERROR and carry on.
*/
#ifndef TM_MSG_H_INCLUDED
#define TM_MSG_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "tm_auth.h"
#include "tm_codec.h"

#define TM_PROTOCOL_VERSION 1

//  Outcomes of tm_msg_recv besides 0.
#define TM_MSG_E_MALFORMED 1       //  frames present but not a valid message
#define TM_MSG_E_VERSION 2         //  valid header of a version we do not speak

typedef struct {
    uint32_t version;
    int type;                      //  Twinmesh__MsgType
    uint64_t seq;
    uint64_t request_id;
    uint64_t epoch;
    int status;                    //  Twinmesh__Status
    char detail[256];
} tm_header_t;

typedef struct {
    zframe_t *routing;             //  ROUTER peer id, owned; NULL on other sockets
    tm_header_t hdr;               //  Decoded header
    zframe_t *body;                //  Body frame, owned; never NULL after success
    tm_role_t role;                //  Sender's role from ZAP (NONE on inproc)
    char peer[64];                 //  Sender's key name from ZAP
} tm_msg_t;

//  Receive one message from sock (blocking: poll first). Returns 0, a
//  positive TM_MSG_E_* outcome (msg->routing still set for a reply), or -1
//  if interrupted. Call tm_msg_fini afterwards in every case.
int tm_msg_recv (zsock_t *sock, bool router, tm_msg_t *msg);

//  Release the frames a received message owns.
void tm_msg_fini (tm_msg_t *msg);

//  Send [routing] header [body]. routing is borrowed (NULL for DEALER);
//  body may be NULL (empty frame). Returns 0 or -1 (peer gone, with
//  ROUTER_MANDATORY: EHOSTUNREACH; or, on a ROUTER, the peer's queue is
//  full: replies never block a server).
int tm_msg_send (zsock_t *sock, zframe_t *routing, const tm_header_t *hdr,
                 const void *body, size_t body_size);

//  Send with the body frame consumed (no copy): *body_p is nulled.
int tm_msg_send_frame (zsock_t *sock, zframe_t *routing, const tm_header_t *hdr,
                       zframe_t **body_p);

//  Answer a request: echoes its request_id, type and status as given.
int tm_msg_reply (zsock_t *sock, const tm_msg_t *req, int type, int status, uint64_t epoch,
                  const char *detail, const void *body, size_t body_size);

//  Fill a header for sending.
void tm_header_init (tm_header_t *hdr, int type, uint64_t request_id, uint64_t epoch);

//  Encode/decode a header (exposed for tests and fuzzing). Decode returns 0
//  or TM_MSG_E_MALFORMED / TM_MSG_E_VERSION.
zframe_t *tm_header_encode (const tm_header_t *hdr);
int tm_header_decode (const uint8_t *data, size_t size, tm_header_t *hdr);

//  Name of a message type or status, for logs.
const char *tm_msg_type_name (int type);
const char *tm_status_name (int status);

#endif
