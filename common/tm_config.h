/*  tm_config - settings from one table: defaults, file, environment, flags

    Every daemon describes its settings once, as a table of name, type,
    default and help. From that one table come loading, validation, --help and
    a printed sample config, so the three can never disagree. Precedence,
    lowest first: default, config file (czmq ZPL), TWINMESH_<NAME>
    environment variable (what Kubernetes passes), --name flag.
*/
#ifndef TM_CONFIG_H_INCLUDED
#define TM_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    TM_CFG_STR,
    TM_CFG_INT,
    TM_CFG_BOOL,
    TM_CFG_DURATION    //  "5s", "250ms", "1h"; read back in milliseconds
} tm_config_type_t;

typedef struct {
    const char *name;          //  snake_case; flag is --name-with-dashes
    tm_config_type_t type;
    const char *dflt;          //  default as text; NULL means "unset"
    const char *help;          //  one line for --help
} tm_setting_t;

typedef struct _tm_config_t tm_config_t;

//  Outcomes of tm_config_load besides 0 (loaded) and -1 (error, printed).
#define TM_CONFIG_E_HELP 1     //  --help was given and printed: exit 0
#define TM_CONFIG_E_SAMPLE 2   //  --print-config was given and printed: exit 0

//  Create a config for a program from its settings table (borrowed: must
//  outlive the config). usage is the one-line synopsis for --help.
tm_config_t *tm_config_new (const char *program, const char *usage,
                            const tm_setting_t *table, size_t count);

//  Destroy; nulls the pointer.
void tm_config_destroy (tm_config_t **self_p);

//  Load from argv (argv[0] skipped), the file named by --config and the
//  environment. Arguments that are not --flags are collected as positional
//  arguments. Errors are printed to stderr with the offending name.
int tm_config_load (tm_config_t *self, int argc, char **argv);

//  Values; names must be in the table (asserts: a typo is a programming
//  error). A string setting whose default is NULL and that was not set
//  returns NULL.
const char *tm_config_str (tm_config_t *self, const char *name);
int64_t tm_config_int (tm_config_t *self, const char *name);
bool tm_config_bool (tm_config_t *self, const char *name);

//  A path setting's value, or when it is unset or empty, the value of
//  dir_setting joined with file ("<keys>/broker.key"). Caller owns.
char *tm_config_path (tm_config_t *self, const char *name, const char *dir_setting,
                      const char *file);

//  Set a value as if from a flag; returns 0, or -1 if it does not parse.
int tm_config_set (tm_config_t *self, const char *name, const char *value);

//  Positional arguments left after the flags.
size_t tm_config_argc (tm_config_t *self);
const char *tm_config_arg (tm_config_t *self, size_t index);

//  Print --help text from the table.
void tm_config_print_help (tm_config_t *self, FILE *out);

//  Print the current values as a ZPL config file.
void tm_config_print (tm_config_t *self, FILE *out);

#endif
