/*  tm_auth - keys, roles and the ZAP handler that enforces the allow-list  */
#include "tm_auth.h"
#include "tm_log.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>

static const char *s_role_name[TM_ROLE_COUNT_] = {
    "none", "ingest", "analyst", "operator", "admin", "site", "broker", "gateway", "worker",
};
_Static_assert (sizeof s_role_name / sizeof s_role_name[0] == TM_ROLE_COUNT_,
                "a name for each role");

const char *
tm_role_name (tm_role_t role)
{
    return (unsigned) role < TM_ROLE_COUNT_? s_role_name[role]: "none";
}

tm_role_t
tm_role_parse (const char *name)
{
    for (int i = 1; name && i < TM_ROLE_COUNT_; i++)
        if (strcmp (name, s_role_name[i]) == 0)
            return (tm_role_t) i;
    return TM_ROLE_NONE;
}

bool
tm_role_may_ingest (tm_role_t role)
{
    return role == TM_ROLE_INGEST || role == TM_ROLE_OPERATOR || role == TM_ROLE_ADMIN;
}

bool
tm_role_may_read (tm_role_t role)
{
    return role == TM_ROLE_ANALYST || role == TM_ROLE_OPERATOR || role == TM_ROLE_ADMIN
        || role == TM_ROLE_BROKER || role == TM_ROLE_GATEWAY || role == TM_ROLE_WORKER;
}

struct _tm_auth_t {
    char *dir;                     //  Allow-list directory
    zhashx_t *keys;                //  Z85 public key -> "role:name"; guarded by lock
    pthread_mutex_t lock;          //  Reload from main thread vs lookups in ZAP thread
    zactor_t *handler;             //  ZAP REP socket on inproc://zeromq.zap.01
    atomic_uint_fast64_t accepted; //  Handshakes let through
    atomic_uint_fast64_t refused;  //  Handshakes refused
};

static atomic_int s_running;       //  One handler per process

//  A server made with tm_net_server_roles names the roles it takes in its
//  ZAP domain, "twinmesh/ROLE,ROLE"; plain "twinmesh" takes every role
//  (those servers check the role of each request). user is "role:name".
static bool
s_domain_allows (const char *domain, const char *user)
{
    if (!domain || strncmp (domain, "twinmesh/", 9) != 0)
        return true;
    const char *colon = strchr (user, ':');
    size_t rlen = colon? (size_t) (colon - user): strlen (user);
    for (const char *p = domain + 9; *p;) {
        const char *comma = strchr (p, ',');
        size_t n = comma? (size_t) (comma - p): strlen (p);
        if (n == rlen && strncmp (p, user, n) == 0)
            return true;
        if (!comma)
            break;
        p = comma + 1;
    }
    return false;
}

static zhashx_t *
s_load_dir (const char *dir)
{
    DIR *d = opendir (dir);
    if (!d) {
        tm_error ("auth: cannot open allow-list dir=%s", dir);
        return NULL;
    }
    zhashx_t *keys = zhashx_new ();
    zhashx_set_destructor (keys, (zhashx_destructor_fn *) zstr_free);
    zhashx_set_duplicator (keys, (zhashx_duplicator_fn *) strdup);
    struct dirent *e;
    while ((e = readdir (d))) {
        size_t len = strlen (e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp (e->d_name + len - 4, ".key") != 0)
            continue;
        char path[4096];
        snprintf (path, sizeof path, "%s/%s", dir, e->d_name);
        zcert_t *cert = zcert_load (path);
        if (!cert) {
            tm_warn ("auth: skipping unreadable certificate file=%s", path);
            continue;
        }
        const char *role = zcert_meta (cert, "role");
        const char *name = zcert_meta (cert, "name");
        if (tm_role_parse (role) == TM_ROLE_NONE) {
            tm_warn ("auth: skipping certificate without a valid role file=%s", path);
            zcert_destroy (&cert);
            continue;
        }
        //  A truncated name could collide with another key's: refuse it.
        char entry[256];
        int n = snprintf (entry, sizeof entry, "%s:%s", role, name? name: e->d_name);
        if (n < 0 || (size_t) n >= sizeof entry) {
            tm_warn ("auth: skipping certificate with a name over 240 bytes file=%s", path);
            zcert_destroy (&cert);
            continue;
        }
        zhashx_update (keys, zcert_public_txt (cert), entry);
        zcert_destroy (&cert);
    }
    closedir (d);
    return keys;
}

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"   //  Where libzmq asks (RFC 27)

static void
s_zap_actor (zsock_t *pipe, void *args)
{
    tm_auth_t *self = (tm_auth_t *) args;
    zsock_t *rep = zsock_new (ZMQ_REP);
    //  A handler just destroyed may still hold the name: closing a socket
    //  is finished by libzmq's reaper thread, later under load (seen in
    //  test_mapclient, a new handler per test). Wait for it, a while.
    int rc = rep? zsock_bind (rep, S_ZAP_ENDPOINT): -1;
    for (int tries = 0; rep && rc != 0 && zmq_errno () == EADDRINUSE && tries < 200; tries++) {
        zclock_sleep (10);
        rc = zsock_bind (rep, S_ZAP_ENDPOINT);
    }
    if (rc != 0) {
        tm_error ("auth: cannot bind ZAP handler");
        zsock_destroy (&rep);
        zsock_signal (pipe, 1);
        return;
    }
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, rep, NULL);
    while (true) {
        zsock_t *which = (zsock_t *) zpoller_wait (poller, -1);
        if (!which) {
            //  A signal delivered to this thread interrupts the poll; only a
            //  terminated context ends the handler, else every later
            //  handshake in the process would be refused.
            if (zmq_errno () == ETERM)
                break;
            continue;
        }
        if (which == pipe)
            break;      //  $TERM
        //  ZAP request (RFC 27): version, request id, domain, address,
        //  routing id, mechanism, credentials...
        zmsg_t *req = zmsg_recv (rep);
        if (!req)
            break;
        char *version = zmsg_popstr (req);
        char *request_id = zmsg_popstr (req);
        char *domain = zmsg_popstr (req);
        char *address = zmsg_popstr (req);
        char *routing = zmsg_popstr (req);
        char *mechanism = zmsg_popstr (req);
        zframe_t *cred = zmsg_pop (req);
        const char *status = "400", *text = "not allowed";
        char user[256] = "";
        if (mechanism && strcmp (mechanism, "CURVE") == 0 && cred && zframe_size (cred) == 32) {
            char z85[41];
            zmq_z85_encode (z85, zframe_data (cred), 32);
            pthread_mutex_lock (&self->lock);
            const char *entry = (const char *) zhashx_lookup (self->keys, z85);
            if (entry)
                snprintf (user, sizeof user, "%s", entry);
            pthread_mutex_unlock (&self->lock);
            if (*user && !s_domain_allows (domain, user)) {
                tm_warn ("auth: refused key=%.8s... user=%s domain=%s: role not allowed here",
                         z85, user, domain);
                text = "role not allowed on this socket";
                *user = 0;
            }
            else
            if (*user) {
                status = "200";
                text = "OK";
            }
            else
                tm_warn ("auth: refused unknown key=%.8s... address=%s", z85,
                         address? address: "?");
        }
        else
            tm_warn ("auth: refused mechanism=%s address=%s", mechanism? mechanism: "?",
                     address? address: "?");
        if (*status == '2')
            atomic_fetch_add (&self->accepted, 1);
        else
            atomic_fetch_add (&self->refused, 1);
        zmsg_t *reply = zmsg_new ();
        zmsg_addstr (reply, "1.0");
        zmsg_addstr (reply, request_id? request_id: "");
        zmsg_addstr (reply, status);
        zmsg_addstr (reply, text);
        zmsg_addstr (reply, user);
        zmsg_addmem (reply, NULL, 0);
        zmsg_send (&reply, rep);
        zstr_free (&version);
        zstr_free (&request_id);
        zstr_free (&domain);
        zstr_free (&address);
        zstr_free (&routing);
        zstr_free (&mechanism);
        zframe_destroy (&cred);
        zmsg_destroy (&req);
    }
    zpoller_destroy (&poller);
    //  Unbinding frees the inproc name now; a close alone frees it when
    //  the reaper gets to it, and the next handler's bind could fail.
    zsock_unbind (rep, S_ZAP_ENDPOINT);
    zsock_destroy (&rep);
}

tm_auth_t *
tm_auth_new (const char *allow_dir)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong (&s_running, &expected, 1)) {
        tm_error ("auth: a ZAP handler already runs in this process");
        return NULL;
    }
    tm_auth_t *self = (tm_auth_t *) zmalloc (sizeof *self);
    pthread_mutex_init (&self->lock, NULL);
    self->dir = strdup (allow_dir);
    self->keys = s_load_dir (allow_dir);
    if (!self->keys) {
        tm_auth_destroy (&self);
        return NULL;
    }
    self->handler = zactor_new (s_zap_actor, self);
    if (!self->handler) {
        tm_auth_destroy (&self);
        return NULL;
    }
    tm_info ("auth: allow-list loaded dir=%s keys=%zu", allow_dir, zhashx_size (self->keys));
    return self;
}

void
tm_auth_destroy (tm_auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_auth_t *self = *self_p;
    zactor_destroy (&self->handler);
    zhashx_destroy (&self->keys);
    pthread_mutex_destroy (&self->lock);
    free (self->dir);
    free (self);
    atomic_store (&s_running, 0);
    *self_p = NULL;
}

int
tm_auth_reload (tm_auth_t *self)
{
    zhashx_t *keys = s_load_dir (self->dir);
    if (!keys)
        return -1;
    pthread_mutex_lock (&self->lock);
    zhashx_destroy (&self->keys);
    self->keys = keys;
    size_t n = zhashx_size (keys);
    pthread_mutex_unlock (&self->lock);
    tm_info ("auth: allow-list reloaded keys=%zu", n);
    return (int) n;
}

size_t
tm_auth_size (tm_auth_t *self)
{
    pthread_mutex_lock (&self->lock);
    size_t n = zhashx_size (self->keys);
    pthread_mutex_unlock (&self->lock);
    return n;
}

uint64_t
tm_auth_accepted (tm_auth_t *self)
{
    return atomic_load (&self->accepted);
}

uint64_t
tm_auth_refused (tm_auth_t *self)
{
    return atomic_load (&self->refused);
}

tm_role_t
tm_auth_frame_role (zframe_t *frame, char *name, size_t size)
{
    const char *user = frame? zframe_meta (frame, "User-Id"): NULL;
    if (name && size)
        *name = 0;
    if (!user)
        return TM_ROLE_NONE;
    const char *colon = strchr (user, ':');
    if (!colon)
        return TM_ROLE_NONE;
    char role[32];
    size_t n = (size_t) (colon - user);
    if (n >= sizeof role)
        return TM_ROLE_NONE;
    memcpy (role, user, n);
    role[n] = 0;
    if (name && size)
        snprintf (name, size, "%s", colon + 1);
    return tm_role_parse (role);
}

zcert_t *
tm_auth_load_secret (const char *path)
{
    zcert_t *cert = path? zcert_load (path): NULL;
    if (!cert) {
        tm_error ("auth: cannot load secret certificate file=%s", path? path: "(unset)");
        return NULL;
    }
    static const char zero_key[41] = "0000000000000000000000000000000000000000";
    if (strcmp (zcert_secret_txt (cert), zero_key) == 0) {
        tm_error ("auth: not a secret certificate file=%s", path);
        zcert_destroy (&cert);
        return NULL;
    }
    return cert;
}

char *
tm_auth_load_public_key (const char *path)
{
    zcert_t *cert = path? zcert_load (path): NULL;
    if (!cert) {
        tm_error ("auth: cannot load public certificate file=%s", path? path: "(unset)");
        return NULL;
    }
    char *key = strdup (zcert_public_txt (cert));
    zcert_destroy (&cert);
    return key;
}

int
tm_auth_keygen (const char *dir, const char *name, tm_role_t role)
{
    if (role == TM_ROLE_NONE || !name || !*name || strchr (name, '/'))
        return -1;
    zcert_t *cert = zcert_new ();
    if (!cert)
        return -1;
    zcert_set_meta (cert, "name", "%s", name);
    zcert_set_meta (cert, "role", "%s", tm_role_name (role));
    char path[4096];
    snprintf (path, sizeof path, "%s/%s.key", dir, name);
    //  zcert_save writes path and path_secret; the secret must not be
    //  readable by others, so create it under a tight umask.
    mode_t old = umask (077);
    int rc = zcert_save (cert, path);
    umask (old);
    if (rc == 0)
        chmod (path, 0644);
    zcert_destroy (&cert);
    return rc == 0? 0: -1;
}
