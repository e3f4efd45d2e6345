/*  tm_model - twin models: the file format, its in-memory form, a registry

    A model says what a kind of twin is (DESIGN.md, "A twin"): its
    properties with unit, type, valid range, expected update interval,
    statistics, anomaly and forecast settings and limits; its attributes
    (location, district, tags); its relationships (a station's parent is a
    district); properties derived by expressions; and, for a parent, which
    aggregates it keeps over its children. Users write models as JSON files
    (docs/models.md is the reference) and load them into the cluster.

    Model files are untrusted input that an operator typed: parsing never
    aborts, every mistake is reported once with the JSON path that holds it
    ("models/air_station.json: properties.pm25.valid.min: expected a
    number, found string"), and unknown fields are errors so that a typo
    cannot silently fall back to a default. Fields under an "x-" prefix are
    ignored, for comments and tooling.

    A parsed model carries its canonical form: compact JSON with every
    field in a fixed order and every default written out. That text is what
    the broker stores and ships and what workers re-parse, so every process
    agrees on a model even if a later build changes a default, and
    parse (canonical (m)) gives back m exactly.

    The ingest path looks a property up by name for readings of a twin,
    so tm_model_property_find is a 128-slot open-addressing table (at most
    64 properties, load <= 1/2): one FNV-1a hash of the name and usually
    one memcmp. Callers that intern property names (the worker does) can go
    further and cache the property's index per series, re-resolving only
    when the registry's generation changes.

    A model is immutable once parsed and may be read from any thread. The
    registry is not thread-safe: each owner (a worker's apply thread, the
    broker) keeps its own, built from the same canonical bytes.
*/
#ifndef TM_MODEL_H_INCLUDED
#define TM_MODEL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Limits. Names match the wire's limit on property and model names.
#define TM_MODEL_NAME_MAX 64           //  Bytes of any name
#define TM_MODEL_MAX_PROPERTIES 64     //  Same as the worker's TM_TWINS_MAX_PROPS
#define TM_MODEL_MAX_ATTRIBUTES 64     //  Attributes per model
#define TM_MODEL_MAX_RELATIONSHIPS 16  //  Relationships per model
#define TM_MODEL_MAX_DERIVED 64        //  Derived properties per model
#define TM_MODEL_MAX_AGGREGATES 64     //  Aggregated child properties per model
#define TM_MODEL_MAX_TAGS 32           //  Tags in a tags attribute value
#define TM_MODEL_MAX_EXPR 1024         //  Bytes of a derived property's expression
#define TM_MODEL_MAX_TEXT (1 << 20)    //  Bytes of a model file
#define TM_MODEL_ERR_SIZE 512          //  A good size for error buffers
#define TM_MODEL_FORMAT 1              //  The file format this build reads

//  The built-in behaviour for twins whose model is not loaded (or absent);
//  no model may take this name.
#define TM_MODEL_GENERIC "generic"

//  Outcomes of tm_models_put besides 0 (stored: added or replaced).
#define TM_MODELS_E_UNCHANGED 1        //  Same version, identical content: nothing done
#define TM_MODELS_E_OLDER 2            //  Refused: the registry holds a higher version
#define TM_MODELS_E_CONFLICT 3         //  Refused: same version, different content

typedef enum {
    TM_MODEL_NUMBER = 0,               //  Any finite value
    TM_MODEL_INTEGER,                  //  Whole numbers only
    TM_MODEL_BOOLEAN                   //  0 or 1
} tm_model_type_t;

typedef enum {
    TM_MODEL_ATTR_STRING = 0,          //  UTF-8 text, at most 256 bytes
    TM_MODEL_ATTR_NUMBER,              //  A finite number
    TM_MODEL_ATTR_LOCATION,            //  WGS84 lat/lon in decimal degrees
    TM_MODEL_ATTR_TAGS                 //  A set of short strings
} tm_model_attr_type_t;

typedef enum {
    TM_MODEL_REL_PARENT = 0            //  The related twin aggregates this one
} tm_model_rel_kind_t;

//  Aggregate functions, as bits of tm_model_aggregate_t.functions.
#define TM_MODEL_AGG_MEAN 0x1          //  Mean of the children's latest values
#define TM_MODEL_AGG_MIN 0x2           //  Smallest latest value
#define TM_MODEL_AGG_MAX 0x4           //  Largest latest value
#define TM_MODEL_AGG_COUNT_ANOMALOUS 0x8   //  Children whose property is anomalous now

//  Data quality of one reading, as the model classifies it. The worker
//  stores every reading and keeps the quality with it; only GOOD readings
//  feed statistics, forecasts, anomaly scores and parents' aggregates.
typedef enum {
    TM_MODEL_Q_GOOD = 0,               //  Within the property's type and valid range
    TM_MODEL_Q_OUT_OF_RANGE,           //  Outside valid.min .. valid.max
    TM_MODEL_Q_INVALID_TYPE,           //  Fractional for an integer, not 0/1 for a boolean
    TM_MODEL_Q_UNKNOWN_PROPERTY,       //  The twin's model does not define the property
    TM_MODEL_Q_UNMODELLED,             //  The twin's model is not loaded: generic rules
    TM_MODEL_Q_COUNT
} tm_model_quality_t;

typedef struct {
    char name[TM_MODEL_NAME_MAX + 1];  //  [A-Za-z_][A-Za-z0-9_]*, NUL-terminated
    uint32_t index;                    //  Position in the model's properties array
    tm_model_type_t type;              //  number, integer or boolean
    char *unit;                        //  UCUM-style or free text, "" if none; owned
    char *description;                 //  Free text, "" if none; owned
    double valid_min;                  //  Lowest valid value, -INFINITY if unbounded
    double valid_max;                  //  Highest valid value, INFINITY if unbounded
    double limit_lower;                //  Alarm below this, -INFINITY if none
    double limit_upper;                //  Alarm above this, INFINITY if none
    int64_t expected_interval_ms;      //  Normal time between readings, 0 if unknown
    double stale_factor;               //  Stale after stale_factor * expected interval
    double ewma_alpha;                 //  Weight of the newest value in the EWMA
    uint32_t stuck_run;                //  Identical values in a row that mean "stuck", 0 off
    bool anomaly_enabled;              //  Score readings against the running statistics
    double anomaly_threshold_sigma;    //  Anomalous beyond this many standard deviations
    uint32_t anomaly_warmup;           //  Readings before scoring starts
    bool forecast_enabled;             //  Keep a Holt (level + trend) forecast
    double forecast_alpha;             //  Level smoothing, 0 < alpha <= 1
    double forecast_beta;              //  Trend smoothing, 0 <= beta <= 1
    uint32_t forecast_horizon;         //  Steps ahead the forecast is published for
    int64_t retention_ms;              //  History kept, 0 = the model's retention_ms
} tm_model_property_t;

typedef struct {
    bool set;                          //  False: no value (optional, no default)
    char *string;                      //  TM_MODEL_ATTR_STRING; owned
    double number;                     //  TM_MODEL_ATTR_NUMBER
    double lat;                        //  TM_MODEL_ATTR_LOCATION, -90 .. 90
    double lon;                        //  TM_MODEL_ATTR_LOCATION, -180 .. 180
    char **tags;                       //  TM_MODEL_ATTR_TAGS, ntags strings; owned
    uint32_t ntags;                    //  Entries in tags
} tm_model_value_t;

typedef struct {
    char name[TM_MODEL_NAME_MAX + 1];  //  Attribute name
    tm_model_attr_type_t type;         //  string, number, location or tags
    bool required;                     //  A twin must give a value (no default then)
    char *description;                 //  Free text, "" if none; owned
    tm_model_value_t dflt;             //  Default value, dflt.set false if none
} tm_model_attribute_t;

typedef struct {
    char name[TM_MODEL_NAME_MAX + 1];  //  Relationship name ("district")
    tm_model_rel_kind_t kind;          //  Only parent today
    char target[TM_MODEL_NAME_MAX + 1];    //  Model of the related twin
    char attribute[TM_MODEL_NAME_MAX + 1]; //  String attribute holding its entity id
    char *description;                 //  Free text, "" if none; owned
} tm_model_relationship_t;

typedef struct {
    char name[TM_MODEL_NAME_MAX + 1];  //  Derived property name
    char *unit;                        //  Unit of the result, "" if none; owned
    char *description;                 //  Free text, "" if none; owned
    char *expression;                  //  Source text for tm_expr, 1..1024 bytes; owned
} tm_model_derived_t;

typedef struct {
    char property[TM_MODEL_NAME_MAX + 1];  //  Children's property aggregated
    uint32_t functions;                //  TM_MODEL_AGG_* bits, at least one
    char **models;                     //  Child models counted, NULL = any; owned
    uint32_t nmodels;                  //  Entries in models
} tm_model_aggregate_t;

typedef struct _tm_model_t {
    char name[TM_MODEL_NAME_MAX + 1];  //  Model name, as readings name it
    uint32_t version;                  //  Higher replaces lower in a registry
    char *description;                 //  Free text, "" if none; owned
    int64_t retention_ms;              //  History kept for properties that do not say,
                                       //  0 = the worker's history_retention
    tm_model_property_t *properties;   //  nproperties entries, in file order; owned
    uint32_t nproperties;              //  At most TM_MODEL_MAX_PROPERTIES
    tm_model_attribute_t *attributes;  //  In file order; owned
    uint32_t nattributes;              //  At most TM_MODEL_MAX_ATTRIBUTES
    tm_model_relationship_t *relationships;    //  In file order; owned
    uint32_t nrelationships;           //  At most TM_MODEL_MAX_RELATIONSHIPS
    tm_model_derived_t *derived;       //  In file order; owned
    uint32_t nderived;                 //  At most TM_MODEL_MAX_DERIVED
    tm_model_aggregate_t *aggregates;  //  In file order; owned
    uint32_t naggregates;              //  At most TM_MODEL_MAX_AGGREGATES
    uint8_t slots[2 * TM_MODEL_MAX_PROPERTIES];    //  Name hash -> index + 1, 0 empty
    char *canonical;                   //  Canonical JSON text, NUL-terminated; owned
    size_t canonical_len;              //  Bytes of canonical, without the NUL
} tm_model_t;

typedef struct _tm_models_t tm_models_t;

//  ---------------------------------------------------------------------
//  One model

//  Parse and validate a model from JSON text (need not be NUL-terminated).
//  source names the text in error messages (a file name; NULL: "model").
//  Returns the model, or NULL with a one-line message in err ("source:
//  path: what is wrong"), truncated to err_size. err may be NULL.
tm_model_t *tm_model_parse (const char *text, size_t len, const char *source, char *err,
                            size_t err_size);

//  Read a file (at most TM_MODEL_MAX_TEXT bytes) and parse it, with the
//  path as the source in messages.
tm_model_t *tm_model_load_file (const char *path, char *err, size_t err_size);

//  Destroy; accepts NULL, nulls the pointer.
void tm_model_destroy (tm_model_t **self_p);

//  The canonical compact JSON text (borrowed, NUL-terminated, valid while
//  the model lives); *len gets its length if len is not NULL.
const char *tm_model_canonical (const tm_model_t *self, size_t *len);

//  True if two models have identical content (their canonical texts match).
bool tm_model_equal (const tm_model_t *a, const tm_model_t *b);

//  A property by name (len bytes, not necessarily NUL-terminated); NULL if
//  the model does not define it. O(1): see the banner.
const tm_model_property_t *tm_model_property_find (const tm_model_t *self, const char *name,
                                                   size_t len);

//  An attribute, derived property or aggregate by NUL-terminated name;
//  NULL if absent. Linear: these are not looked up per reading.
const tm_model_attribute_t *tm_model_attribute_find (const tm_model_t *self, const char *name);
const tm_model_derived_t *tm_model_derived_find (const tm_model_t *self, const char *name);
const tm_model_aggregate_t *tm_model_aggregate_find (const tm_model_t *self, const char *name);

//  The parent relationship, or NULL if the model has none.
const tm_model_relationship_t *tm_model_parent (const tm_model_t *self);

//  The history kept for a property (prop may be NULL: a property the model
//  does not define; self NULL: no model): its own retention, else the
//  model's, else 0, which means the worker's history_retention setting.
int64_t tm_model_retention_ms (const tm_model_t *self, const tm_model_property_t *prop);

//  The settings the worker applies to a property no model describes (a
//  twin of the generic model, or an unknown property): every default of
//  docs/models.md, type number, unbounded. Static, never freed.
const tm_model_property_t *tm_model_default_property (void);

//  The worker's default history_retention (30 days): what series keep
//  when neither their model nor their property sets retention_ms.
#define TM_MODEL_DEFAULT_RETENTION_MS 2592000000LL

//  Classify one value against a property: GOOD, OUT_OF_RANGE or
//  INVALID_TYPE (NaN and infinities are INVALID_TYPE; the wire refuses
//  them before this). Called once per reading; no allocation.
tm_model_quality_t tm_model_check_value (const tm_model_property_t *prop, double value);

//  A quality's name for metrics and replies ("unknown_property").
const char *tm_model_quality_name (tm_model_quality_t quality);

//  Check a twin's attribute value given as JSON text against the
//  attribute's type; 0 if it fits, -1 with a message in err otherwise.
int tm_model_attribute_check (const tm_model_attribute_t *attr, const char *json, size_t len,
                              char *err, size_t err_size);

//  Names for types, kinds and functions, as written in model files.
const char *tm_model_type_name (tm_model_type_t type);
const char *tm_model_attr_type_name (tm_model_attr_type_t type);

//  ---------------------------------------------------------------------
//  The registry: models by name, one version each

//  New empty registry.
tm_models_t *tm_models_new (void);

//  Destroy with every model in it; nulls the pointer.
void tm_models_destroy (tm_models_t **self_p);

//  Offer a model; consumes *model_p (nulled in every case). Returns 0 if
//  it was stored (new name, or a higher version replaced the one held;
//  *previous gets the replaced version or 0 when not NULL), or
//  TM_MODELS_E_UNCHANGED, TM_MODELS_E_OLDER, TM_MODELS_E_CONFLICT (the
//  model held stays; err says why when not NULL).
int tm_models_put (tm_models_t *self, tm_model_t **model_p, uint32_t *previous, char *err,
                   size_t err_size);

//  Load a file and offer it: -1 if the file does not parse (err says
//  where), else as tm_models_put.
int tm_models_load_file (tm_models_t *self, const char *path, char *err, size_t err_size);

//  A model by name (len bytes, as a reading carries it); NULL if absent.
//  Borrowed: valid until the registry's generation changes.
const tm_model_t *tm_models_find (const tm_models_t *self, const char *name, size_t len);

//  Remove a model; 0 if it was there, -1 if not.
int tm_models_remove (tm_models_t *self, const char *name);

//  Number of models, and the index-th in name order (NULL past the end),
//  for listing.
size_t tm_models_size (const tm_models_t *self);
const tm_model_t *tm_models_at (const tm_models_t *self, size_t index);

//  Bumped whenever a model is added, replaced or removed: anything that
//  caches a model or property pointer re-resolves when this changes.
uint64_t tm_models_generation (const tm_models_t *self);

#endif
