/*  tm_catalog - the broker's model catalogue: a registry kept in its RocksDB

    A put decides its outcome against the registry first, writes the model
    and the new generation in one synchronous batch, and only then swaps
    the model in: if the write fails the old model stays and the client is
    told to retry, so what the broker answers and what it reloads after a
    crash never differ.
*/
#include "tm_catalog.h"
#include "tm_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _tm_catalog_t {
    tm_store_t *store;             //  The broker's store, borrowed
    tm_models_t *models;           //  Current models by name, owned
    uint64_t generation;           //  Persisted change counter
};

//  The stored generation: 0 if none, -1 if unreadable.
static int
s_load_generation (tm_catalog_t *self)
{
    char *val = NULL;
    size_t vlen = 0;
    int rc = tm_store_get (self->store, TM_CATALOG_GENERATION_KEY,
                           strlen (TM_CATALOG_GENERATION_KEY), &val, &vlen);
    if (rc == TM_STORE_E_NOT_FOUND)
        return 0;
    if (rc != 0)
        return -1;
    char text[32];
    bool ok = vlen > 0 && vlen < sizeof text;
    if (ok) {
        memcpy (text, val, vlen);
        text[vlen] = 0;
        char *end = NULL;
        self->generation = strtoull (text, &end, 10);
        ok = end && *end == 0 && text[0] >= '0' && text[0] <= '9';
    }
    free (val);
    if (!ok)
        tm_error ("catalog: the stored %s is unreadable", TM_CATALOG_GENERATION_KEY);
    return ok? 0: -1;
}

//  Parse every "model/<name>" entry; any that fails stops the load.
static int
s_load_models (tm_catalog_t *self)
{
    size_t plen = strlen (TM_CATALOG_PREFIX);
    tm_store_iter_t *it = tm_store_iter_new (self->store, TM_CATALOG_PREFIX, plen);
    if (!it) {
        tm_error ("catalog: cannot read the stored models");
        return -1;
    }
    int rc = 0;
    const char *key, *val;
    size_t klen, vlen;
    while (rc == 0 && tm_store_iter_next (it, &key, &klen, &val, &vlen)) {
        //  The key's name part, cut for log lines (a stored key is ours,
        //  but a damaged store may hold anything).
        char name[TM_MODEL_NAME_MAX + 2];
        size_t nlen = klen - plen;
        snprintf (name, sizeof name, "%.*s",
                  (int) (nlen < sizeof name - 1? nlen: sizeof name - 1), key + plen);
        char err[TM_MODEL_ERR_SIZE];
        tm_model_t *model = tm_model_parse (val, vlen, "stored model", err, sizeof err);
        if (!model) {
            tm_error ("catalog: stored model key=%s%s does not parse: %s", TM_CATALOG_PREFIX,
                      name, err);
            rc = -1;
        }
        else
        if (nlen != strlen (model->name) || memcmp (key + plen, model->name, nlen) != 0) {
            tm_error ("catalog: stored model key=%s%s holds a model named %s",
                      TM_CATALOG_PREFIX, name, model->name);
            tm_model_destroy (&model);
            rc = -1;
        }
        else
        if (tm_models_put (self->models, &model, NULL, err, sizeof err) != 0) {
            tm_error ("catalog: cannot keep stored model %s: %s", name, err);
            rc = -1;
        }
    }
    tm_store_iter_destroy (&it);
    return rc;
}

tm_catalog_t *
tm_catalog_new (tm_store_t *store)
{
    if (!store)
        return NULL;
    tm_catalog_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->models = tm_models_new ();
    if (!self->models || s_load_generation (self) != 0 || s_load_models (self) != 0) {
        tm_catalog_destroy (&self);
        return NULL;
    }
    //  A store written before the generation was kept: never report less
    //  than the number of models held.
    if (self->generation < tm_models_size (self->models))
        self->generation = tm_models_size (self->models);
    tm_info ("catalog: loaded models=%zu generation=%" PRIu64, tm_models_size (self->models),
             self->generation);
    return self;
}

void
tm_catalog_destroy (tm_catalog_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_catalog_t *self = *self_p;
    tm_models_destroy (&self->models);
    free (self);
    *self_p = NULL;
}

int
tm_catalog_put (tm_catalog_t *self, const char *text, size_t len,
                tm_catalog_result_t *result, char *err, size_t err_size)
{
    tm_catalog_result_t local;
    if (!result)
        result = &local;
    memset (result, 0, sizeof *result);
    result->generation = self->generation;
    if (err && err_size)
        *err = 0;
    if (len > TM_MODEL_MAX_TEXT) {
        if (err && err_size)
            snprintf (err, err_size, "a model is at most %d bytes, this one is %zu",
                      TM_MODEL_MAX_TEXT, len);
        return TM_CATALOG_E_TOO_LARGE;
    }
    tm_model_t *model = tm_model_parse (text? text: "", text? len: 0, "request", err,
                                        err_size);
    if (!model)
        return TM_CATALOG_E_MALFORMED;
    snprintf (result->name, sizeof result->name, "%s", model->name);
    result->version = model->version;

    //  Decide first: a refusal or a no-op must not touch the store.
    const tm_model_t *held = tm_models_find (self->models, model->name, strlen (model->name));
    int rc = 0;
    if (held && model->version < held->version) {
        if (err && err_size)
            snprintf (err, err_size, "%s version %u is older than the stored %u", model->name,
                      model->version, held->version);
        rc = TM_CATALOG_E_OLDER;
    }
    else
    if (held && model->version == held->version)
        rc = tm_model_equal (model, held)? TM_CATALOG_E_UNCHANGED: TM_CATALOG_E_CONFLICT;
    if (rc == TM_CATALOG_E_CONFLICT && err && err_size)
        snprintf (err, err_size, "%s version %u exists with different content: raise version",
                  model->name, model->version);
    if (rc) {
        tm_model_destroy (&model);
        return rc;
    }
    //  Persist the model and the new generation together, then swap in.
    char key[sizeof TM_CATALOG_PREFIX + TM_MODEL_NAME_MAX];
    int klen = snprintf (key, sizeof key, "%s%s", TM_CATALOG_PREFIX, model->name);
    char gen[32];
    int glen = snprintf (gen, sizeof gen, "%" PRIu64, self->generation + 1);
    size_t clen;
    const char *canonical = tm_model_canonical (model, &clen);
    tm_store_batch_t *batch = tm_store_batch_new ();
    if (batch) {
        tm_store_batch_put (batch, key, (size_t) klen, canonical, clen);
        tm_store_batch_put (batch, TM_CATALOG_GENERATION_KEY,
                            strlen (TM_CATALOG_GENERATION_KEY), gen, (size_t) glen);
    }
    if (!batch || tm_store_write (self->store, batch, true) != 0) {
        tm_error ("catalog: cannot persist model name=%s version=%u (check the data_dir disk)",
                  model->name, model->version);
        if (err && err_size)
            snprintf (err, err_size, "the broker cannot write its store; try again later");
        tm_store_batch_destroy (&batch);
        tm_model_destroy (&model);
        return -1;
    }
    tm_store_batch_destroy (&batch);
    rc = tm_models_put (self->models, &model, &result->previous, err, err_size);
    //  The checks above make this a store; anything else is a broken invariant.
    if (rc != 0) {
        tm_error ("catalog: registry refused a checked model name=%s rc=%d", result->name, rc);
        return -1;
    }
    self->generation++;
    result->generation = self->generation;
    return 0;
}

const tm_models_t *
tm_catalog_list (const tm_catalog_t *self)
{
    return self->models;
}

const tm_model_t *
tm_catalog_get (const tm_catalog_t *self, const char *name)
{
    return name? tm_models_find (self->models, name, strlen (name)): NULL;
}

uint64_t
tm_catalog_generation (const tm_catalog_t *self)
{
    return self->generation;
}
