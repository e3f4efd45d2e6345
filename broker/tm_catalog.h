/*  tm_catalog - the broker's model catalogue: a registry kept in its RocksDB

    The broker is where users load models (twinctl model load) and where
    workers will fetch them, so it holds the cluster's one list of models
    by name and version. Each model is stored as its canonical JSON under
    "model/<name>" and is durable (fsync'd) before anyone is told it was
    stored, the same rule as the shard map: a broker restarted after a
    crash never forgets a model it acknowledged.

    The load is tiny (models change by hand, a few per day; lists and gets
    are occasional), so a put is one synchronous write and the registry is
    tm_models_t. Text offered by a client is never trusted: it is parsed
    and validated here, and only the canonical form is kept.

    Not thread-safe: the broker's one thread owns it.
*/
#ifndef TM_CATALOG_H_INCLUDED
#define TM_CATALOG_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "tm_model.h"
#include "tm_store.h"

//  Outcomes of tm_catalog_put besides 0 (stored: a new name or a higher
//  version) and -1 (the store write failed: nothing changed, try again).
#define TM_CATALOG_E_UNCHANGED 1       //  Same version, same content: nothing to do
#define TM_CATALOG_E_OLDER 2           //  Refused: a higher version is stored
#define TM_CATALOG_E_CONFLICT 3        //  Refused: same version, different content
#define TM_CATALOG_E_MALFORMED 4       //  Refused: the text is not a valid model
#define TM_CATALOG_E_TOO_LARGE 5       //  Refused: over TM_MODEL_MAX_TEXT bytes

//  Keys in the broker's store: one per model, and the generation.
#define TM_CATALOG_PREFIX "model/"
#define TM_CATALOG_GENERATION_KEY "catalog/generation"

typedef struct {
    char name[TM_MODEL_NAME_MAX + 1];  //  The offered model's name ("" if it did not parse)
    uint32_t version;                  //  The offered model's version
    uint32_t previous;                 //  Version it replaced, 0 if none or not stored
    uint64_t generation;               //  The catalogue's generation after the put
} tm_catalog_result_t;

typedef struct _tm_catalog_t tm_catalog_t;

//  Load every stored model from store (borrowed; must outlive the
//  catalogue). NULL with a logged reason if the store cannot be read or a
//  stored model does not parse (the broker then refuses to start rather
//  than silently drop a model the cluster relies on).
tm_catalog_t *tm_catalog_new (tm_store_t *store);

//  Destroy; accepts NULL, nulls the pointer.
void tm_catalog_destroy (tm_catalog_t **self_p);

//  Offer a model's JSON text (len bytes, need not be NUL-terminated; from
//  a client, untrusted; messages name it "request"). Returns 0 if it was
//  persisted with fsync and then made current, a positive TM_CATALOG_E_*
//  outcome (err says why for the refusals), or -1 if the write failed
//  (logged; the catalogue is unchanged). result is filled when not NULL.
int tm_catalog_put (tm_catalog_t *self, const char *text, size_t len,
                    tm_catalog_result_t *result, char *err, size_t err_size);

//  The registry, for listing in name order with tm_models_size and
//  tm_models_at. Borrowed: valid until the next put.
const tm_models_t *tm_catalog_list (const tm_catalog_t *self);

//  A model by NUL-terminated name, NULL if absent. Borrowed: valid until
//  the next put.
const tm_model_t *tm_catalog_get (const tm_catalog_t *self, const char *name);

//  Bumped by every stored put and persisted with it, so it never goes
//  back across restarts: whoever caches models refetches when it changes.
//  0 for a catalogue that never stored anything.
uint64_t tm_catalog_generation (const tm_catalog_t *self);

#endif
