/*  tm_replay - twinctl replay: send a real data set (CSV) through a gateway

    Real data has the quirks a simulator forgets: quoted fields, ';' and
    decimal commas, sentinel values (-200, -1, "undefined") for "no
    reading", dates and times in separate columns, local time, tables with
    one column per sensor. replay maps a CSV file to readings:

    - long tables: one or more entity columns (joined with '-'), a time
      column (optionally with a separate date column), and value columns;
    - wide tables (--wide): every column from first_col on is an entity,
      and each cell one reading of the single property named by --props.

    Presets carry the mapping for the data sets in shared/data; any flag
    still overrides them. Nothing is dropped silently: rows and cells that
    give no reading are counted by reason and reported, and readings that
    repeat a series and timestamp within the file are sent anyway (the
    worker deduplicates) but counted as duplicates.

    The files are small next to what the cluster takes (10^4-10^5 rows),
    so rows are parsed simply; readings are still encoded into one reused
    batch buffer, as in sim.
*/
#include "tm_replay.h"
#include "tm_config.h"
#include "tm_log.h"
#include "tm_producer.h"
#include "tm_util.h"
#include "tm_wire.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_SHOW_READINGS 10         //  Readings printed by --dry-run
#define S_MAX_COLS 64              //  Columns named by entity_col or props (long tables)

static const tm_setting_t s_settings[] = {
    TM_PRODUCER_SETTINGS,
    {"preset", TM_CFG_STR, "none",
     "column mapping of a known data set: epa-nyc-pm25, uci-air-quality, "
     "melbourne-pedestrian or none (flags still override)"},
    {"entity_col", TM_CFG_STR, NULL,
     "column(s) naming the entity, comma-separated, values joined with '-'"},
    {"entity", TM_CFG_STR, NULL, "fixed entity id when the file has no entity column"},
    {"entity_prefix", TM_CFG_STR, "", "prefix of every entity id, e.g. 'nyc/'"},
    {"time_col", TM_CFG_STR, NULL, "column with the time (the time of day if date_col is set)"},
    {"date_col", TM_CFG_STR, NULL, "column with the date when date and time are split; "
                                   "time_format then parses '<date> <time>'"},
    {"time_format", TM_CFG_STR, "%Y-%m-%dT%H:%M:%S",
     "strptime format of the time, or epoch_s or epoch_ms"},
    {"utc_offset", TM_CFG_STR, "+00:00",
     "offset of the file's times from UTC, e.g. +11:00 (times are taken as UTC by default)"},
    {"props", TM_CFG_STR, NULL,
     "value columns, comma-separated, each 'col' or 'col=name' (default: every other named "
     "column; property = column lower-cased, non-alphanumerics as _); --wide: the property name"},
    {"delim", TM_CFG_STR, ",", "field delimiter, one character ('tab' for a tab)"},
    {"decimal_comma", TM_CFG_BOOL, "false", "numbers use ',' as the decimal mark"},
    {"missing", TM_CFG_STR, NULL,
     "comma-separated cell values meaning no reading, e.g. -200 (empty cells always are)"},
    {"wide", TM_CFG_BOOL, "false",
     "wide table: each column from first_col on is an entity, props names the property"},
    {"first_col", TM_CFG_STR, NULL, "wide: first entity column, by name or 1-based number"},
    {"model", TM_CFG_STR, NULL, "model name sent on each entity's first reading"},
    {"limit", TM_CFG_INT, "0", "data rows to read (0 = all)"},
};

typedef struct {
    const char *name;              //  Preset name for --preset
    const char *values[16][2];     //  Settings it sets, NULL-terminated
} s_preset_t;

//  Each mapping follows the data set's README in shared/data.
static const s_preset_t s_presets[] = {
    //  US EPA daily PM2.5, NYC 2022: one series per monitor (site + POC).
    {"epa-nyc-pm25", {
        {"entity_col", "Site ID,POC"},
        {"entity_prefix", "nyc/epa-"},
        {"time_col", "Date"},
        {"time_format", "%m/%d/%Y"},
        {"props", "Daily Mean PM2.5 Concentration=pm25"},
        {"model", "epa_pm25_monitor"},
        {NULL, NULL}}},
    //  UCI Air Quality: one device, 13 channels, ';' and decimal commas,
    //  -200 for missing, local Italian time without DST (taken as CET).
    {"uci-air-quality", {
        {"entity", "uci/air-quality-device"},
        {"date_col", "Date"},
        {"time_col", "Time"},
        {"time_format", "%d/%m/%Y %H.%M.%S"},
        {"utc_offset", "+01:00"},
        {"delim", ";"},
        {"decimal_comma", "true"},
        {"missing", "-200"},
        {"model", "uci_multisensor"},
        {NULL, NULL}}},
    //  Melbourne pedestrian counts, January 2019: wide, one column per
    //  sensor from the 3rd, hourly, AEDT (+11:00), -1 and "undefined" missing.
    {"melbourne-pedestrian", {
        {"wide", "true"},
        {"first_col", "3"},
        {"date_col", "Date"},
        {"time_col", "Hour"},
        {"time_format", "%d/%m/%Y %H"},
        {"utc_offset", "+11:00"},
        {"props", "count"},
        {"missing", "-1,undefined"},
        {"entity_prefix", "melbourne/"},
        {"model", "melbourne_pedestrian_counter"},
        {NULL, NULL}}},
};
#define S_PRESETS (sizeof s_presets / sizeof s_presets[0])

//  Why a row or a cell gave no reading.
typedef enum {
    S_SKIP_EMPTY_ROW,              //  Every field empty (e.g. UCI's ';;;;' tail)
    S_SKIP_SHORT_ROW,              //  Fewer fields than the mapping needs
    S_SKIP_BAD_TIME,               //  Time did not parse
    S_SKIP_BAD_ENTITY,             //  Entity id empty or not UTF-8
    S_SKIP_ENTITY_TOO_LONG,        //  Entity id over 128 bytes
    S_SKIP_MISSING,                //  Cell empty or a --missing value
    S_SKIP_BAD_NUMBER,             //  Cell not a finite number
    S_SKIP_COUNT
} s_skip_t;

static const char *s_skip_name[S_SKIP_COUNT] = {
    "empty_row", "short_row", "bad_time", "bad_entity", "entity_too_long", "missing_value",
    "bad_number"};

//  ---------------------------------------------------------------------
//  CSV records: RFC 4180 quoting (embedded delimiters, "" escapes, line
//  breaks inside quotes), LF or CRLF line ends. Fields are NUL-terminated
//  in one reused buffer.

typedef struct {
    FILE *file;                    //  Input, owned
    int delim;                     //  Field delimiter
    char *buf;                     //  Field bytes of the current record
    size_t len, cap;               //  Bytes used and allocated in buf
    size_t *offs;                  //  Start of each field in buf
    size_t nfields, offcap;        //  Fields in the record, slots in offs
    uint64_t line;                 //  Physical line where the next record starts
} s_csv_t;

static int
s_csv_put (s_csv_t *csv, char c)
{
    if (csv->len == csv->cap) {
        size_t cap = csv->cap? csv->cap * 2: 4096;
        char *grown = realloc (csv->buf, cap);
        if (!grown)
            return -1;
        csv->buf = grown;
        csv->cap = cap;
    }
    csv->buf[csv->len++] = c;
    return 0;
}

static int
s_csv_field_start (s_csv_t *csv)
{
    if (csv->nfields == csv->offcap) {
        size_t cap = csv->offcap? csv->offcap * 2: 64;
        size_t *grown = realloc (csv->offs, cap * sizeof *grown);
        if (!grown)
            return -1;
        csv->offs = grown;
        csv->offcap = cap;
    }
    csv->offs[csv->nfields++] = csv->len;
    return 0;
}

//  Read the next record; 1 if read, 0 at the end of the file, -1 out of memory.
static int
s_csv_next (s_csv_t *csv)
{
    csv->len = 0;
    csv->nfields = 0;
    int c = getc_unlocked (csv->file);
    if (c == EOF)
        return 0;
    if (s_csv_field_start (csv) != 0)
        return -1;
    bool quoted = false;
    while (true) {
        if (quoted) {
            if (c == EOF)
                break;     //  unterminated quote: the field runs to the end
            if (c == '"') {
                int next = getc_unlocked (csv->file);
                if (next == '"') {
                    if (s_csv_put (csv, '"') != 0)
                        return -1;
                }
                else {
                    quoted = false;
                    c = next;
                    continue;
                }
            }
            else {
                if (c == '\n')
                    csv->line++;
                if (s_csv_put (csv, (char) c) != 0)
                    return -1;
            }
        }
        else
        if (c == EOF || c == '\n')
            break;
        else
        if (c == '\r') {
            int next = getc_unlocked (csv->file);
            if (next != '\n' && next != EOF)
                ungetc (next, csv->file);
            break;
        }
        else
        if (c == csv->delim) {
            if (s_csv_put (csv, 0) != 0 || s_csv_field_start (csv) != 0)
                return -1;
        }
        else
        if (c == '"' && csv->len == csv->offs[csv->nfields - 1])
            quoted = true;     //  a quote opens a field only at its start
        else
        if (s_csv_put (csv, (char) c) != 0)
            return -1;
        c = getc_unlocked (csv->file);
    }
    csv->line++;
    return s_csv_put (csv, 0) == 0? 1: -1;
}

static const char *
s_csv_field (s_csv_t *csv, size_t index)
{
    return index < csv->nfields? csv->buf + csv->offs[index]: NULL;
}

//  ---------------------------------------------------------------------
//  A set of 64-bit hashes (open addressing, 0 marks an empty slot): which
//  entities have had their model sent, which series+timestamps were seen.

typedef struct {
    uint64_t *keys;                //  Slots; 0 = empty
    size_t cap;                    //  Slots, a power of two
    size_t size;                   //  Keys stored
} s_set_t;

//  Insert; returns 1 if new, 0 if present, -1 out of memory.
static int
s_set_add (s_set_t *set, uint64_t key)
{
    if (key == 0)
        key = 1;
    if ((set->size + 1) * 2 > set->cap) {
        size_t cap = set->cap? set->cap * 2: 1024;
        uint64_t *keys = calloc (cap, sizeof *keys);
        if (!keys)
            return -1;
        for (size_t i = 0; i < set->cap; i++)
            if (set->keys[i])
                for (size_t j = set->keys[i] & (cap - 1);; j = (j + 1) & (cap - 1))
                    if (!keys[j]) {
                        keys[j] = set->keys[i];
                        break;
                    }
        free (set->keys);
        set->keys = keys;
        set->cap = cap;
    }
    for (size_t j = key & (set->cap - 1);; j = (j + 1) & (set->cap - 1)) {
        if (set->keys[j] == key)
            return 0;
        if (!set->keys[j]) {
            set->keys[j] = key;
            set->size++;
            return 1;
        }
    }
}

//  FNV-1a then a finaliser, so the low bits used for probing are mixed.
static uint64_t
s_hash (uint64_t h, const void *data, size_t size)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < size; i++)
        h = (h ^ p[i]) * 0x100000001B3ULL;
    return h;
}

static uint64_t
s_hash_final (uint64_t h)
{
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    return h;
}

//  ---------------------------------------------------------------------

typedef struct {
    size_t col;                    //  Column index
    char name[TM_WIRE_MAX_PROPERTY + 1];  //  Property name
} s_prop_t;

typedef struct {
    //  Mapping
    bool wide;                     //  Wide table
    size_t entity_cols[S_MAX_COLS];  //  Long: entity columns
    size_t n_entity_cols;          //  How many (0: fixed entity)
    char fixed_entity[TM_WIRE_MAX_ENTITY + 2];  //  prefix + --entity when n_entity_cols is 0
    const char *prefix;            //  --entity_prefix
    long time_col, date_col;       //  Column indices, -1 if none
    const char *time_format;       //  strptime format, "epoch_s" or "epoch_ms"
    int64_t utc_offset_ms;         //  Subtracted from parsed times
    s_prop_t *props;               //  Long: value columns; wide: one per entity column
    size_t nprops;                 //  Entries in props
    char **wide_entities;          //  Wide: entity id per column from first_col (owned)
    size_t first_col;              //  Wide: index of the first entity column
    char wide_prop[TM_WIRE_MAX_PROPERTY + 1];  //  Wide: property name
    bool decimal_comma;            //  ',' is the decimal mark
    char **missing_text;           //  --missing values that are not numbers
    size_t n_missing_text;
    double *missing_num;           //  --missing values that are numbers
    size_t n_missing_num;
    const char *model;             //  Model on each entity's first reading, or NULL
    //  State
    s_set_t announced;             //  Entities whose model was sent
    s_set_t seen;                  //  Series+timestamps sent, for duplicate counts
    uint8_t *buf;                  //  Batch being built
    size_t cap, used, count;       //  Its capacity, bytes and readings
    size_t batch;                  //  Readings per batch
    tm_producer_t *producer;       //  NULL in a dry run
    //  Counters
    uint64_t rows;                 //  Data rows read
    uint64_t readings;             //  Readings encoded
    uint64_t duplicates;           //  Readings repeating a series and timestamp
    uint64_t batches;              //  Batches built
    uint64_t invalid;              //  Dry run: batches that failed validation
    uint64_t skipped[S_SKIP_COUNT];  //  Rows or cells skipped, by reason
    bool stopped;                  //  Interrupted while submitting
    int64_t t0_us;                 //  Start of sending
} s_replay_t;

static void
s_progress (void *arg)
{
    s_replay_t *self = (s_replay_t *) arg;
    double t = (double) (tm_util_mono_us () - self->t0_us) / 1e6;
    if (self->producer)
        tm_producer_print_progress (self->producer, "replay", t, stderr);
    else
        fprintf (stderr, "replay: t=%.1fs rows=%llu readings=%llu (dry run)\n", t,
                 (unsigned long long) self->rows, (unsigned long long) self->readings);
}

//  Send (or in a dry run validate) the batch being built.
static void
s_flush (s_replay_t *self)
{
    if (self->count == 0)
        return;
    self->batches++;
    if (!self->producer) {
        const char *error = NULL;
        size_t bad = 0;
        if (tm_wire_validate (self->buf, self->used, &error, &bad) != (long) self->count) {
            if (self->invalid++ == 0)
                fprintf (stderr, "replay: invalid batch: reading %zu: %s\n", bad, error);
        }
        if (self->batches == 1) {
            tm_wire_iter_t it;
            tm_reading_t r;
            tm_wire_iter_init (&it, self->buf, self->used);
            fprintf (stderr, "replay: first readings:\n");
            for (int i = 0; i < S_SHOW_READINGS && tm_wire_next (&it, &r) == 1; i++)
                tm_producer_print_reading (&r, stderr);
        }
    }
    else
    if (tm_producer_submit (self->producer, self->buf, self->used, self->count) != 0)
        self->stopped = true;
    else {
        tm_producer_pump (self->producer, 0);
        if (tm_producer_fatal (self->producer)) {
            fprintf (stderr, "replay: stopping: the gateway refuses this key or protocol\n");
            self->stopped = true;
        }
    }
    self->used = 0;
    self->count = 0;
}

static void
s_add_reading (s_replay_t *self, const char *entity, const char *property, double value,
               int64_t ts_ms)
{
    size_t elen = strlen (entity), plen = strlen (property);
    uint64_t h = s_hash (0xCBF29CE484222325ULL, entity, elen + 1);
    const char *model = NULL;
    if (self->model && s_set_add (&self->announced, s_hash_final (h)) == 1)
        model = self->model;
    h = s_hash (h, property, plen + 1);
    h = s_hash_final (s_hash (h, &ts_ms, sizeof ts_ms));
    if (s_set_add (&self->seen, h) == 0)
        self->duplicates++;
    size_t wrote = tm_wire_encode (self->buf + self->used, self->cap - self->used, entity,
                                   property, value, ts_ms, model);
    if (wrote == 0) {
        //  Lengths were checked before; the batch buffer is sized for the
        //  worst case, so this is a bug, not input.
        fprintf (stderr, "replay: internal error encoding a reading of %s\n", entity);
        self->skipped[S_SKIP_BAD_ENTITY]++;
        return;
    }
    self->used += wrote;
    self->count++;
    self->readings++;
    if (self->count >= self->batch)
        s_flush (self);
}

static bool
s_blank (const char *s)
{
    while (*s && isspace ((unsigned char) *s))
        s++;
    return *s == 0;
}

//  Parse a number: optional surrounding spaces, decimal comma if asked.
static int
s_parse_number (const char *text, bool decimal_comma, double *out)
{
    char copy[128];
    while (isspace ((unsigned char) *text))
        text++;
    size_t n = strlen (text);
    if (n == 0 || n >= sizeof copy)
        return -1;
    memcpy (copy, text, n + 1);
    if (decimal_comma)
        for (char *p = copy; *p; p++)
            if (*p == ',')
                *p = '.';
    char *end;
    errno = 0;
    double v = strtod (copy, &end);
    if (end == copy || errno == ERANGE)
        return -1;
    while (isspace ((unsigned char) *end))
        end++;
    if (*end || !isfinite (v))
        return -1;
    *out = v;
    return 0;
}

//  Classify a cell: 0 with *value set, or the skip reason.
static int
s_cell (s_replay_t *self, const char *text, double *value)
{
    if (s_blank (text))
        return S_SKIP_MISSING;
    for (size_t i = 0; i < self->n_missing_text; i++)
        if (streq (text, self->missing_text[i]))
            return S_SKIP_MISSING;
    if (s_parse_number (text, self->decimal_comma, value) != 0)
        return S_SKIP_BAD_NUMBER;
    for (size_t i = 0; i < self->n_missing_num; i++)
        if (*value == self->missing_num[i])
            return S_SKIP_MISSING;
    return 0;
}

//  Parse the row's time; 0 with *ts_ms set, or -1.
static int
s_row_time (s_replay_t *self, s_csv_t *csv, int64_t *ts_ms)
{
    const char *time = s_csv_field (csv, (size_t) self->time_col);
    const char *date = self->date_col >= 0? s_csv_field (csv, (size_t) self->date_col): NULL;
    if (!time || (self->date_col >= 0 && !date))
        return -1;
    char text[256];
    if (date)
        snprintf (text, sizeof text, "%s %s", date, time);
    else
        snprintf (text, sizeof text, "%s", time);
    int64_t ms;
    if (streq (self->time_format, "epoch_s") || streq (self->time_format, "epoch_ms")) {
        double v;
        if (s_parse_number (text, false, &v) != 0)
            return -1;
        ms = (int64_t) (streq (self->time_format, "epoch_s")? v * 1000.0: v);
    }
    else {
        struct tm tm;
        memset (&tm, 0, sizeof tm);
        const char *start = text;
        while (isspace ((unsigned char) *start))
            start++;
        const char *end = strptime (start, self->time_format, &tm);
        if (!end || !s_blank (end))
            return -1;
        time_t t = timegm (&tm);
        if (t == (time_t) -1)
            return -1;
        ms = (int64_t) t * 1000;
    }
    ms -= self->utc_offset_ms;
    if (ms <= 0)
        return -1;
    *ts_ms = ms;
    return 0;
}

static void
s_row_long (s_replay_t *self, s_csv_t *csv, int64_t ts_ms)
{
    char entity[TM_WIRE_MAX_ENTITY + 2];
    if (self->n_entity_cols == 0)
        memcpy (entity, self->fixed_entity, sizeof entity);
    else {
        size_t n = (size_t) snprintf (entity, sizeof entity, "%s", self->prefix);
        for (size_t i = 0; i < self->n_entity_cols && n < sizeof entity; i++) {
            const char *part = s_csv_field (csv, self->entity_cols[i]);
            if (!part || !*part) {
                self->skipped[S_SKIP_BAD_ENTITY]++;
                return;
            }
            n += (size_t) snprintf (entity + n, sizeof entity - n, "%s%s", i? "-": "", part);
        }
        if (n > TM_WIRE_MAX_ENTITY) {
            self->skipped[S_SKIP_ENTITY_TOO_LONG]++;
            return;
        }
        if (!tm_util_utf8_valid (entity, n)) {
            self->skipped[S_SKIP_BAD_ENTITY]++;
            return;
        }
    }
    for (size_t i = 0; i < self->nprops; i++) {
        const char *text = s_csv_field (csv, self->props[i].col);
        double v;
        int why = text? s_cell (self, text, &v): S_SKIP_MISSING;
        if (why)
            self->skipped[why]++;
        else
            s_add_reading (self, entity, self->props[i].name, v, ts_ms);
    }
}

static void
s_row_wide (s_replay_t *self, s_csv_t *csv, int64_t ts_ms)
{
    for (size_t i = 0; i < self->nprops; i++) {
        const char *text = s_csv_field (csv, self->props[i].col);
        double v;
        int why = text? s_cell (self, text, &v): S_SKIP_MISSING;
        if (!why && !self->wide_entities[i])
            why = S_SKIP_ENTITY_TOO_LONG;
        if (why)
            self->skipped[why]++;
        else
            s_add_reading (self, self->wide_entities[i], self->wide_prop, v, ts_ms);
    }
}

static void
s_row (s_replay_t *self, s_csv_t *csv, size_t needed_fields)
{
    bool empty = true;
    for (size_t i = 0; i < csv->nfields && empty; i++)
        empty = s_blank (s_csv_field (csv, i));
    if (empty) {
        self->skipped[S_SKIP_EMPTY_ROW]++;
        return;
    }
    if (csv->nfields < needed_fields) {
        self->skipped[S_SKIP_SHORT_ROW]++;
        return;
    }
    int64_t ts_ms;
    if (s_row_time (self, csv, &ts_ms) != 0) {
        self->skipped[S_SKIP_BAD_TIME]++;
        return;
    }
    if (self->wide)
        s_row_wide (self, csv, ts_ms);
    else
        s_row_long (self, csv, ts_ms);
}

//  ---------------------------------------------------------------------
//  Setting up the mapping from the header

//  Column index by exact (trimmed) header name, else a 1-based number.
static long
s_column (s_csv_t *header, const char *name)
{
    for (size_t i = 0; i < header->nfields; i++)
        if (streq (s_csv_field (header, i), name))
            return (long) i;
    char *end;
    long n = strtol (name, &end, 10);
    if (*name && !*end && n >= 1 && (size_t) n <= header->nfields)
        return n - 1;
    return -1;
}

//  Property name from a column name: lower case, runs of anything but
//  letters and digits as one '_', none at the ends; "value" if nothing is left.
static void
s_prop_name (const char *column, char *out, size_t size)
{
    size_t n = 0;
    bool gap = false;
    for (const unsigned char *p = (const unsigned char *) column; *p && n + 2 < size; p++) {
        if (isalnum (*p) && *p < 0x80) {
            if (gap && n > 0)
                out[n++] = '_';
            out[n++] = (char) tolower (*p);
            gap = false;
        }
        else
            gap = true;
    }
    out[n] = 0;
    if (n == 0)
        snprintf (out, size, "value");
}

//  Trim spaces in place at both ends; returns s.
static char *
s_trim (char *s)
{
    while (isspace ((unsigned char) *s))
        s++;
    size_t n = strlen (s);
    while (n > 0 && isspace ((unsigned char) s[n - 1]))
        s[--n] = 0;
    return s;
}

//  "+11:00", "-05:30", "+1", "0" -> milliseconds.
static int
s_parse_offset (const char *text, int64_t *ms)
{
    int sign = 1, hours = 0, minutes = 0;
    if (*text == '+' || *text == '-')
        sign = *text++ == '-'? -1: 1;
    char *end;
    hours = (int) strtol (text, &end, 10);
    if (end == text || hours > 14)
        return -1;
    if (*end == ':') {
        text = end + 1;
        minutes = (int) strtol (text, &end, 10);
        if (end == text || minutes > 59)
            return -1;
    }
    if (*end)
        return -1;
    *ms = sign * ((int64_t) hours * 3600000 + (int64_t) minutes * 60000);
    return 0;
}

static void
s_replay_fini (s_replay_t *self)
{
    free (self->props);
    if (self->wide_entities)
        for (size_t i = 0; i < self->nprops; i++)
            free (self->wide_entities[i]);
    free (self->wide_entities);
    for (size_t i = 0; i < self->n_missing_text; i++)
        free (self->missing_text[i]);
    free (self->missing_text);
    free (self->missing_num);
    free (self->announced.keys);
    free (self->seen.keys);
    free (self->buf);
    tm_producer_destroy (&self->producer);
}

//  Build the mapping from settings and the header row; returns 0, or -1
//  with a printed reason (a usage error).
static int
s_replay_setup (s_replay_t *self, tm_config_t *cfg, s_csv_t *header, size_t *needed)
{
    int rc = -1;
    char *list = NULL;
    self->wide = tm_config_bool (cfg, "wide");
    self->prefix = tm_config_str (cfg, "entity_prefix");
    if (!self->prefix)
        self->prefix = "";
    self->decimal_comma = tm_config_bool (cfg, "decimal_comma");
    self->model = tm_config_str (cfg, "model");
    if (self->model && (!*self->model || strlen (self->model) > TM_WIRE_MAX_MODEL)) {
        fprintf (stderr, "twinctl replay: --model must be 1 to %d bytes\n", TM_WIRE_MAX_MODEL);
        goto done;
    }
    self->time_format = tm_config_str (cfg, "time_format");
    if (s_parse_offset (tm_config_str (cfg, "utc_offset"), &self->utc_offset_ms) != 0) {
        fprintf (stderr, "twinctl replay: --utc-offset must look like +11:00\n");
        goto done;
    }
    *needed = 0;
    const char *time_name = tm_config_str (cfg, "time_col");
    if (!time_name) {
        fprintf (stderr, "twinctl replay: --time-col is required (or a --preset)\n");
        goto done;
    }
    self->time_col = s_column (header, time_name);
    if (self->time_col < 0) {
        fprintf (stderr, "twinctl replay: no column '%s' (--time-col)\n", time_name);
        goto done;
    }
    *needed = (size_t) self->time_col + 1;
    self->date_col = -1;
    const char *date_name = tm_config_str (cfg, "date_col");
    if (date_name) {
        self->date_col = s_column (header, date_name);
        if (self->date_col < 0) {
            fprintf (stderr, "twinctl replay: no column '%s' (--date-col)\n", date_name);
            goto done;
        }
        if ((size_t) self->date_col + 1 > *needed)
            *needed = (size_t) self->date_col + 1;
    }

    //  Missing markers: numbers compare by value (so -200 also matches
    //  "-200,0"), anything else by text.
    const char *missing = tm_config_str (cfg, "missing");
    if (missing && *missing) {
        list = strdup (missing);
        size_t n = 1;
        for (const char *p = missing; *p; p++)
            n += *p == ',';
        self->missing_text = calloc (n, sizeof (char *));
        self->missing_num = calloc (n, sizeof (double));
        if (!list || !self->missing_text || !self->missing_num)
            goto done;
        char *save = NULL;
        for (char *tok = strtok_r (list, ",", &save); tok; tok = strtok_r (NULL, ",", &save)) {
            tok = s_trim (tok);
            double v;
            if (s_parse_number (tok, false, &v) == 0)
                self->missing_num[self->n_missing_num++] = v;
            else
                self->missing_text[self->n_missing_text++] = strdup (tok);
        }
        free (list);
        list = NULL;
    }

    const char *props = tm_config_str (cfg, "props");
    if (self->wide) {
        const char *first = tm_config_str (cfg, "first_col");
        long fc = first? s_column (header, first): -1;
        if (fc < 0) {
            fprintf (stderr, "twinctl replay: --wide needs --first-col, a column name or number\n");
            goto done;
        }
        if (!props || !*props || strchr (props, ',') || strlen (props) > TM_WIRE_MAX_PROPERTY) {
            fprintf (stderr, "twinctl replay: --wide needs --props, one property name\n");
            goto done;
        }
        snprintf (self->wide_prop, sizeof self->wide_prop, "%s", props);
        self->first_col = (size_t) fc;
        self->nprops = header->nfields - (size_t) fc;
        self->props = calloc (self->nprops? self->nprops: 1, sizeof *self->props);
        self->wide_entities = calloc (self->nprops? self->nprops: 1, sizeof (char *));
        if (!self->props || !self->wide_entities)
            goto done;
        for (size_t i = 0; i < self->nprops; i++) {
            self->props[i].col = (size_t) fc + i;
            const char *name = s_csv_field (header, (size_t) fc + i);
            char *id = NULL;
            //  An entity id that cannot be sent stays NULL: its cells are
            //  counted as entity_too_long rather than refused by the gateway.
            if (asprintf (&id, "%s%s", self->prefix, name) > 0 && strlen (id) <= TM_WIRE_MAX_ENTITY
                && tm_util_utf8_valid (id, strlen (id)) && *name)
                self->wide_entities[i] = id;
            else {
                tm_warn ("replay: column cannot be an entity id column=\"%s\"", name);
                free (id);
            }
        }
        *needed = *needed > (size_t) fc + 1? *needed: (size_t) fc + 1;
        rc = 0;
        goto done;
    }

    //  Long table: entity columns, or a fixed entity.
    const char *entity_cols = tm_config_str (cfg, "entity_col");
    const char *fixed = tm_config_str (cfg, "entity");
    if (entity_cols && *entity_cols) {
        list = strdup (entity_cols);
        char *save = NULL;
        for (char *tok = strtok_r (list, ",", &save); tok; tok = strtok_r (NULL, ",", &save)) {
            tok = s_trim (tok);
            long col = s_column (header, tok);
            if (col < 0 || self->n_entity_cols == S_MAX_COLS) {
                fprintf (stderr, "twinctl replay: no column '%s' (--entity-col)\n", tok);
                goto done;
            }
            self->entity_cols[self->n_entity_cols++] = (size_t) col;
            if ((size_t) col + 1 > *needed)
                *needed = (size_t) col + 1;
        }
        free (list);
        list = NULL;
    }
    else
    if (fixed && *fixed) {
        int n = snprintf (self->fixed_entity, sizeof self->fixed_entity, "%s%s", self->prefix,
                          fixed);
        if (n > TM_WIRE_MAX_ENTITY || !tm_util_utf8_valid (self->fixed_entity, (size_t) n)) {
            fprintf (stderr, "twinctl replay: --entity-prefix + --entity over %d bytes\n",
                     TM_WIRE_MAX_ENTITY);
            goto done;
        }
    }
    else {
        fprintf (stderr, "twinctl replay: give --entity-col (or --entity for one device)\n");
        goto done;
    }

    //  Value columns: as listed, or every other column with a name.
    self->props = calloc (header->nfields + S_MAX_COLS, sizeof *self->props);
    if (!self->props)
        goto done;
    if (props && *props) {
        list = strdup (props);
        char *save = NULL;
        for (char *tok = strtok_r (list, ",", &save); tok; tok = strtok_r (NULL, ",", &save)) {
            char *eq = strrchr (tok, '=');
            if (eq)
                *eq = 0;
            char *col_name = s_trim (tok);
            long col = s_column (header, col_name);
            if (col < 0 || self->nprops == header->nfields + S_MAX_COLS) {
                fprintf (stderr, "twinctl replay: no column '%s' (--props)\n", col_name);
                goto done;
            }
            s_prop_t *prop = &self->props[self->nprops++];
            prop->col = (size_t) col;
            if (eq) {
                char *name = s_trim (eq + 1);
                if (!*name || strlen (name) > TM_WIRE_MAX_PROPERTY) {
                    fprintf (stderr, "twinctl replay: bad property name '%s' (--props)\n", name);
                    goto done;
                }
                snprintf (prop->name, sizeof prop->name, "%s", name);
            }
            else
                s_prop_name (col_name, prop->name, sizeof prop->name);
        }
    }
    else
        for (size_t i = 0; i < header->nfields; i++) {
            bool used = (long) i == self->time_col || (long) i == self->date_col
                     || s_blank (s_csv_field (header, i));
            for (size_t j = 0; j < self->n_entity_cols; j++)
                used |= self->entity_cols[j] == i;
            if (used)
                continue;
            s_prop_t *prop = &self->props[self->nprops++];
            prop->col = i;
            s_prop_name (s_csv_field (header, i), prop->name, sizeof prop->name);
        }
    if (self->nprops == 0) {
        fprintf (stderr, "twinctl replay: no value columns (see --props)\n");
        goto done;
    }
    //  Rows missing a trailing value column are still read: the cell counts
    //  as missing. Only the entity and time columns are required.
    rc = 0;
done:
    free (list);
    return rc;
}

static int
s_apply_preset (tm_config_t *cfg, const char *name)
{
    if (streq (name, "none"))
        return 0;
    for (size_t i = 0; i < S_PRESETS; i++)
        if (streq (s_presets[i].name, name)) {
            for (size_t j = 0; s_presets[i].values[j][0]; j++) {
                int rc = tm_config_set (cfg, s_presets[i].values[j][0], s_presets[i].values[j][1]);
                assert (rc == 0);
            }
            return 0;
        }
    fprintf (stderr, "twinctl replay: unknown preset '%s' (epa-nyc-pm25, uci-air-quality, "
                     "melbourne-pedestrian, none)\n", name);
    return -1;
}

int
tm_replay_main (int argc, char **argv)
{
    int exit_code = 2;
    s_replay_t self = {0};
    s_csv_t csv = {0};
    s_csv_t header = {0};
    char *preset = NULL;               //  --preset as first loaded, owned
    const char *usage = "twinctl replay FILE [--preset NAME] [options]";
    size_t nsettings = sizeof s_settings / sizeof s_settings[0];
    tm_config_t *cfg = tm_config_new ("twinctl replay", usage, s_settings, nsettings);
    if (!cfg)
        return 2;
    //  A preset supplies defaults that the file, environment and flags
    //  override: read it first, then load everything again on top of it.
    int rc = tm_config_load (cfg, argc, argv);
    if (rc == TM_CONFIG_E_HELP || rc == TM_CONFIG_E_SAMPLE) {
        exit_code = 0;
        goto done;
    }
    if (rc != 0)
        goto done;
    preset = strdup (tm_config_str (cfg, "preset"));
    tm_config_destroy (&cfg);
    cfg = tm_config_new ("twinctl replay", usage, s_settings, nsettings);
    rc = !preset || !cfg? -1: s_apply_preset (cfg, preset);
    if (rc == 0)
        rc = tm_config_load (cfg, argc, argv);
    if (rc != 0) {
        goto done;
    }
    if (tm_config_argc (cfg) != 1) {
        fprintf (stderr, "usage: %s (see --help)\n", usage);
        goto done;
    }
    if (tm_producer_log_setup (cfg, "twinctl") != 0) {
        goto done;
    }
    const char *path = tm_config_arg (cfg, 0);
    const char *delim = tm_config_str (cfg, "delim");
    int64_t batch = tm_config_int (cfg, "batch");
    int64_t limit = tm_config_int (cfg, "limit");
    int64_t print_ms = tm_config_int (cfg, "print_interval");
    bool dry_run = tm_config_bool (cfg, "dry_run");
    bool json = tm_config_bool (cfg, "json");
    if (!delim || (strlen (delim) != 1 && !streq (delim, "tab"))) {
        fprintf (stderr, "twinctl replay: --delim must be one character or 'tab'\n");
        goto done;
    }
    if (batch < 1 || batch > 1000000 || limit < 0) {
        fprintf (stderr, "twinctl replay: --batch must be 1 to 1000000, --limit >= 0\n");
        goto done;
    }
    csv.delim = streq (delim, "tab")? '\t': (unsigned char) delim[0];
    csv.file = fopen (path, "r");
    if (!csv.file) {
        fprintf (stderr, "twinctl replay: cannot open %s: %s\n", path, strerror (errno));
        exit_code = 1;
        goto done;
    }
    if (s_csv_next (&csv) != 1) {
        fprintf (stderr, "twinctl replay: %s has no header row\n", path);
        exit_code = 1;
        goto done;
    }
    //  Keep the header (names trimmed, a UTF-8 byte order mark dropped).
    header = csv;
    header.file = NULL;
    header.buf = malloc (csv.len);
    header.offs = malloc (csv.nfields * sizeof *header.offs);
    if (!header.buf || !header.offs) {
        goto done;
    }
    memcpy (header.buf, csv.buf, csv.len);
    memcpy (header.offs, csv.offs, csv.nfields * sizeof *header.offs);
    if (header.nfields && memcmp (header.buf, "\xEF\xBB\xBF", 3) == 0)
        header.offs[0] += 3;
    for (size_t i = 0; i < header.nfields; i++) {
        char *name = header.buf + header.offs[i];
        char *trimmed = s_trim (name);
        header.offs[i] += (size_t) (trimmed - name);
    }
    size_t needed = 0;
    if (s_replay_setup (&self, cfg, &header, &needed) != 0) {
        goto done;
    }
    self.batch = (size_t) batch;
    self.cap = (size_t) batch * tm_wire_encoded_max (TM_WIRE_MAX_ENTITY, TM_WIRE_MAX_PROPERTY,
                                                     TM_WIRE_MAX_MODEL);
    self.buf = malloc (self.cap);
    if (!self.buf) {
        fprintf (stderr, "twinctl replay: out of memory for the batch buffer\n");
        goto done;
    }
    if (!dry_run) {
        self.producer = tm_producer_from_config (cfg);
        if (!self.producer) {
            exit_code = 1;
            goto done;
        }
    }
    tm_producer_catch_signals ();
    tm_info ("replay: start file=%s preset=%s columns=%zu props=%zu wide=%d dry_run=%d", path,
             preset, header.nfields, self.nprops, self.wide, dry_run);

    int64_t t0 = tm_util_mono_us ();
    int64_t print_us = print_ms > 0? print_ms * 1000: INT64_MAX / 4;
    int64_t next_print = t0 + print_us;
    self.t0_us = t0;
    bool read_error = false;
    while (!self.stopped && tm_producer_interrupted () == 0
           && (limit == 0 || self.rows < (uint64_t) limit)) {
        rc = s_csv_next (&csv);
        if (rc <= 0) {
            read_error = rc < 0 || ferror (csv.file);
            break;
        }
        self.rows++;
        s_row (&self, &csv, needed);
        int64_t now = tm_util_mono_us ();
        if (now >= next_print) {
            s_progress (&self);
            next_print = now + print_us;
        }
    }
    if (!self.stopped && tm_producer_interrupted () == 0)
        s_flush (&self);
    if (read_error)
        fprintf (stderr, "replay: error reading %s after row %llu\n", path,
                 (unsigned long long) self.rows);
    if (self.producer) {
        tm_producer_set_stop_level (self.producer, 2);
        int drc = tm_producer_drain (self.producer, tm_config_int (cfg, "drain_timeout"),
                                     s_progress, &self, print_ms);
        if (drc == TM_PRODUCER_E_TIMEOUT)
            fprintf (stderr, "replay: drain timed out with batches in flight\n");
        else
        if (drc == TM_PRODUCER_E_STOPPED)
            fprintf (stderr, "replay: drain interrupted with batches in flight\n");
    }
    double elapsed = (double) (tm_util_mono_us () - t0) / 1e6;

    //  Summary: what was read, what was skipped and why, what was acked.
    uint64_t skipped_rows = 0, skipped_cells = 0;
    for (int i = 0; i < S_SKIP_COUNT; i++)
        if (i == S_SKIP_MISSING || i == S_SKIP_BAD_NUMBER || (self.wide && i == S_SKIP_ENTITY_TOO_LONG))
            skipped_cells += self.skipped[i];
        else
            skipped_rows += self.skipped[i];
    fprintf (stderr, "replay: %s rows=%llu readings=%llu duplicates=%llu skipped_rows=%llu "
                     "skipped_cells=%llu",
             path, (unsigned long long) self.rows, (unsigned long long) self.readings,
             (unsigned long long) self.duplicates, (unsigned long long) skipped_rows,
             (unsigned long long) skipped_cells);
    for (int i = 0; i < S_SKIP_COUNT; i++)
        if (self.skipped[i])
            fprintf (stderr, " %s=%llu", s_skip_name[i], (unsigned long long) self.skipped[i]);
    fprintf (stderr, "\n");
    uint64_t problems = 0;
    if (self.producer) {
        tm_producer_stats_t st;
        tm_producer_stats (self.producer, &st);
        fprintf (stderr,
                 "replay: done t=%.1fs sent=%llu acked=%llu rate=%.0f/s p50=%.1fms p99=%.1fms "
                 "p999=%.1fms max=%.1fms batches=%llu retries=%llu timeouts=%llu refused=%llu "
                 "failed=%llu\n",
                 elapsed, (unsigned long long) st.readings_sent,
                 (unsigned long long) st.readings_acked,
                 elapsed > 0? (double) st.readings_acked / elapsed: 0.0,
                 tm_producer_latency_ms (self.producer, 0.50),
                 tm_producer_latency_ms (self.producer, 0.99),
                 tm_producer_latency_ms (self.producer, 0.999),
                 tm_producer_latency_max_ms (self.producer), (unsigned long long) st.batches,
                 (unsigned long long) st.retries, (unsigned long long) st.timeouts,
                 (unsigned long long) st.refused, (unsigned long long) st.failed);
        problems = tm_producer_print_problems (self.producer, "replay", stderr);
        //  Readings encoded but never submitted (interrupted mid-batch).
        if (st.readings_sent != self.readings) {
            fprintf (stderr, "replay: %llu readings read but not sent (interrupted)\n",
                     (unsigned long long) (self.readings - st.readings_sent));
            problems++;
        }
    }
    else {
        fprintf (stderr, "replay: dry run: batches=%llu invalid_batches=%llu t=%.1fs\n",
                 (unsigned long long) self.batches, (unsigned long long) self.invalid, elapsed);
        problems = self.invalid;
    }
    if (json) {
        printf ("{\"file\": ");
        tm_producer_print_json_string (path, stdout);
        printf (", \"preset\": ");
        tm_producer_print_json_string (preset, stdout);
        printf (", \"dry_run\": %s, \"rows\": %llu, \"readings\": %llu, \"duplicates\": %llu, "
                "\"skipped_rows\": %llu, \"skipped_cells\": %llu, \"skipped\": {",
                dry_run? "true": "false", (unsigned long long) self.rows,
                (unsigned long long) self.readings, (unsigned long long) self.duplicates,
                (unsigned long long) skipped_rows, (unsigned long long) skipped_cells);
        for (int i = 0; i < S_SKIP_COUNT; i++)
            printf ("%s\"%s\": %llu", i? ", ": "", s_skip_name[i],
                    (unsigned long long) self.skipped[i]);
        printf ("}, ");
        if (self.producer)
            tm_producer_print_json_fields (self.producer, elapsed, stdout);
        else
            printf ("\"readings_sent\": 0, \"batches\": %llu, \"invalid_batches\": %llu, "
                    "\"duration_s\": %.3f",
                    (unsigned long long) self.batches, (unsigned long long) self.invalid, elapsed);
        printf ("}\n");
    }
    exit_code = problems || read_error? 1: 0;

done:
    free (preset);
    if (csv.file)
        fclose (csv.file);
    free (csv.buf);
    free (csv.offs);
    free (header.buf);
    free (header.offs);
    s_replay_fini (&self);
    tm_config_destroy (&cfg);
    return exit_code;
}
