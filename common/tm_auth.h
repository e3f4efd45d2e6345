/*  tm_auth - keys, roles and the ZAP handler that enforces the allow-list

    Every TCP socket in twinmesh is CURVE. A server accepts a client only if
    the client's public key is on its allow-list; each entry carries a role,
    and the role travels with every message as the ZAP User-Id
    ("role:name"), so a handler can check what the sender may do.

    Keys are czmq certificate files: NAME.key (public, with metadata name
    and role) and NAME.key_secret. The allow-list is a directory of public
    certificate files, read into memory once (czmq's own certificate store
    rescans the directory on every handshake, which is slow under load and
    racy while files are written).
*/
#ifndef TM_AUTH_H_INCLUDED
#define TM_AUTH_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

typedef enum {
    TM_ROLE_NONE = 0,
    TM_ROLE_INGEST,      //  send readings
    TM_ROLE_ANALYST,     //  read twins, run queries
    TM_ROLE_OPERATOR,    //  also send commands, load models
    TM_ROLE_ADMIN,       //  also move shards, manage keys
    TM_ROLE_SITE,        //  a peer broker of another site
    TM_ROLE_BROKER,      //  components
    TM_ROLE_GATEWAY,
    TM_ROLE_WORKER,
    TM_ROLE_COUNT_
} tm_role_t;

//  Role name ("ingest", ...); "none" for TM_ROLE_NONE.
const char *tm_role_name (tm_role_t role);

//  Parse a role name; TM_ROLE_NONE if unknown.
tm_role_t tm_role_parse (const char *name);

//  True for the human roles that may send readings (ingest, operator, admin).
bool tm_role_may_ingest (tm_role_t role);

//  True for roles that may read twins and status (analyst and above, and
//  the components).
bool tm_role_may_read (tm_role_t role);

typedef struct _tm_auth_t tm_auth_t;

//  Start the process's ZAP handler with the allow-list read from a
//  directory of public certificate files. One per process (ZAP is bound per
//  ZeroMQ context); start it before binding any server socket. Returns NULL
//  if the directory cannot be read or a handler already runs.
tm_auth_t *tm_auth_new (const char *allow_dir);

//  Stop the handler; nulls the pointer.
void tm_auth_destroy (tm_auth_t **self_p);

//  Re-read the allow-list directory (e.g. on SIGHUP). Returns the number of
//  keys loaded, or -1 if the directory cannot be read (the old list stays).
int tm_auth_reload (tm_auth_t *self);

//  Number of keys allowed now.
size_t tm_auth_size (tm_auth_t *self);

//  Counters: handshakes accepted and refused since start.
uint64_t tm_auth_accepted (tm_auth_t *self);
uint64_t tm_auth_refused (tm_auth_t *self);

//  Role of the peer that sent this frame, from its ZAP User-Id; name (if
//  not NULL) receives the key's name (truncated to size).
tm_role_t tm_auth_frame_role (zframe_t *frame, char *name, size_t size);

//  Load a secret certificate file (NAME.key_secret); NULL with a logged
//  reason if missing or not a secret certificate.
zcert_t *tm_auth_load_secret (const char *path);

//  Load a public certificate file and return its Z85 public key (caller
//  owns), or NULL.
char *tm_auth_load_public_key (const char *path);

//  Create a new keypair named name with role, saved as dir/name.key and
//  dir/name.key_secret (secret file mode 0600). Returns 0 or -1.
int tm_auth_keygen (const char *dir, const char *name, tm_role_t role);

#endif
