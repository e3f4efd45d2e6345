/*  tm_config - settings from one table: defaults, file, environment, flags  */
#include "tm_config.h"
#include "tm_util.h"

#include <assert.h>
#include <czmq.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct _tm_config_t {
    char *program;                 //  Name shown in --help and errors
    char *usage;                   //  Synopsis line for --help
    const tm_setting_t *table;     //  Borrowed settings table
    size_t count;                  //  Entries in table
    char **values;                 //  Current value text per setting, owned
    char **args;                   //  Positional arguments, borrowed from argv
    size_t nargs;                  //  Number of positional arguments
};

tm_config_t *
tm_config_new (const char *program, const char *usage, const tm_setting_t *table,
               size_t count)
{
    tm_config_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->program = strdup (program);
    self->usage = strdup (usage? usage: "");
    self->table = table;
    self->count = count;
    self->values = calloc (count, sizeof (char *));
    self->args = NULL;
    if (!self->program || !self->usage || !self->values) {
        tm_config_destroy (&self);
        return NULL;
    }
    for (size_t i = 0; i < count; i++)
        if (table[i].dflt)
            self->values[i] = strdup (table[i].dflt);
    return self;
}

void
tm_config_destroy (tm_config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_config_t *self = *self_p;
    if (self->values)
        for (size_t i = 0; i < self->count; i++)
            free (self->values[i]);
    free (self->values);
    free (self->args);
    free (self->program);
    free (self->usage);
    free (self);
    *self_p = NULL;
}

static int
s_find (tm_config_t *self, const char *name)
{
    for (size_t i = 0; i < self->count; i++)
        if (strcmp (self->table[i].name, name) == 0)
            return (int) i;
    return -1;
}

static int
s_parse_bool (const char *v, bool *out)
{
    if (!strcasecmp (v, "true") || !strcmp (v, "1") || !strcasecmp (v, "yes")
        || !strcasecmp (v, "on"))
        *out = true;
    else
    if (!strcasecmp (v, "false") || !strcmp (v, "0") || !strcasecmp (v, "no")
        || !strcasecmp (v, "off"))
        *out = false;
    else
        return -1;
    return 0;
}

static int
s_validate (const tm_setting_t *s, const char *value)
{
    if (s->type == TM_CFG_INT) {
        char *end;
        errno = 0;
        (void) strtoll (value, &end, 0);
        return (errno || end == value || *end)? -1: 0;
    }
    if (s->type == TM_CFG_BOOL) {
        bool b;
        return s_parse_bool (value, &b);
    }
    if (s->type == TM_CFG_DURATION) {
        int64_t ms;
        return tm_util_parse_duration_ms (value, &ms);
    }
    return 0;
}

int
tm_config_set (tm_config_t *self, const char *name, const char *value)
{
    int i = s_find (self, name);
    if (i < 0 || !value)
        return -1;
    if (s_validate (&self->table[i], value) != 0)
        return -1;
    char *copy = strdup (value);
    if (!copy)
        return -1;
    free (self->values[i]);
    self->values[i] = copy;
    return 0;
}

static void
s_flag_to_name (const char *flag, char *name, size_t size)
{
    size_t i = 0;
    for (; flag[i] && flag[i] != '=' && i + 1 < size; i++)
        name[i] = flag[i] == '-'? '_': flag[i];
    name[i] = 0;
}

static int
s_load_file (tm_config_t *self, const char *path)
{
    zconfig_t *root = zconfig_load (path);
    if (!root) {
        fprintf (stderr, "%s: cannot read config file '%s'\n", self->program, path);
        return -1;
    }
    int rc = 0;
    //  Keys are top-level; a section named after the program is also read so
    //  one file can configure several components.
    zconfig_t *sections[2] = {root, zconfig_locate (root, self->program)};
    for (int s = 0; s < 2 && rc == 0; s++) {
        if (!sections[s])
            continue;
        for (zconfig_t *item = zconfig_child (sections[s]); item; item = zconfig_next (item)) {
            const char *name = zconfig_name (item);
            const char *value = zconfig_value (item);
            if (zconfig_child (item) && s == 0)
                continue;      //  a section for another component
            if (s_find (self, name) < 0) {
                fprintf (stderr, "%s: %s: unknown setting '%s'\n", self->program, path, name);
                rc = -1;
                break;
            }
            if (tm_config_set (self, name, value? value: "") != 0) {
                fprintf (stderr, "%s: %s: bad value '%s' for '%s'\n", self->program, path,
                         value? value: "", name);
                rc = -1;
                break;
            }
        }
    }
    zconfig_destroy (&root);
    return rc;
}

int
tm_config_load (tm_config_t *self, int argc, char **argv)
{
    free (self->args);
    self->args = calloc ((size_t) (argc > 0? argc: 1), sizeof (char *));
    self->nargs = 0;
    if (!self->args)
        return -1;

    //  First pass: --help, --print-config and --config, since the file
    //  must load before environment and flags override it.
    const char *file = NULL;
    bool print_sample = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp (argv[i], "--help") || !strcmp (argv[i], "-h")) {
            tm_config_print_help (self, stdout);
            return TM_CONFIG_E_HELP;
        }
        if (!strcmp (argv[i], "--print-config"))
            print_sample = true;
        else
        if (!strcmp (argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf (stderr, "%s: --config needs a file\n", self->program);
                return -1;
            }
            file = argv[++i];
        }
        else
        if (!strncmp (argv[i], "--config=", 9))
            file = argv[i] + 9;
    }
    if (!file)
        file = getenv ("TWINMESH_CONFIG");
    if (file && *file && s_load_file (self, file) != 0)
        return -1;

    for (size_t i = 0; i < self->count; i++) {
        char env[128] = "TWINMESH_";
        size_t n = strlen (env);
        for (const char *p = self->table[i].name; *p && n + 1 < sizeof env; p++)
            env[n++] = (char) toupper ((unsigned char) *p);
        env[n] = 0;
        const char *v = getenv (env);
        if (v && tm_config_set (self, self->table[i].name, v) != 0) {
            fprintf (stderr, "%s: bad value '%s' in %s\n", self->program, v, env);
            return -1;
        }
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp (a, "--print-config"))
            continue;
        if (!strcmp (a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp (a, "--config=", 9))
            continue;
        if (strcmp (a, "--") == 0) {
            for (i++; i < argc; i++)
                self->args[self->nargs++] = argv[i];
            break;
        }
        if (strncmp (a, "--", 2) != 0 || a[2] == 0) {
            self->args[self->nargs++] = argv[i];
            continue;
        }
        char name[96];
        s_flag_to_name (a + 2, name, sizeof name);
        int idx = s_find (self, name);
        if (idx < 0 && strncmp (name, "no_", 3) == 0) {
            int neg = s_find (self, name + 3);
            if (neg >= 0 && self->table[neg].type == TM_CFG_BOOL && !strchr (a, '=')) {
                tm_config_set (self, name + 3, "false");
                continue;
            }
        }
        if (idx < 0) {
            fprintf (stderr, "%s: unknown option '%s' (see --help)\n", self->program, a);
            return -1;
        }
        const char *value;
        const char *eq = strchr (a, '=');
        if (eq)
            value = eq + 1;
        else
        if (self->table[idx].type == TM_CFG_BOOL
            && (i + 1 >= argc || s_validate (&self->table[idx], argv[i + 1]) != 0))
            value = "true";
        else {
            if (i + 1 >= argc) {
                fprintf (stderr, "%s: option '%s' needs a value\n", self->program, a);
                return -1;
            }
            value = argv[++i];
        }
        if (tm_config_set (self, name, value) != 0) {
            fprintf (stderr, "%s: bad value '%s' for '%s'\n", self->program, value, a);
            return -1;
        }
    }
    if (print_sample) {
        tm_config_print (self, stdout);
        return TM_CONFIG_E_SAMPLE;
    }
    return 0;
}

const char *
tm_config_str (tm_config_t *self, const char *name)
{
    int i = s_find (self, name);
    assert (i >= 0);
    return self->values[i];
}

int64_t
tm_config_int (tm_config_t *self, const char *name)
{
    int i = s_find (self, name);
    assert (i >= 0);
    const char *v = self->values[i];
    if (!v)
        return 0;
    if (self->table[i].type == TM_CFG_DURATION) {
        int64_t ms = 0;
        tm_util_parse_duration_ms (v, &ms);
        return ms;
    }
    return strtoll (v, NULL, 0);
}

bool
tm_config_bool (tm_config_t *self, const char *name)
{
    int i = s_find (self, name);
    assert (i >= 0);
    bool b = false;
    if (self->values[i])
        s_parse_bool (self->values[i], &b);
    return b;
}

char *
tm_config_path (tm_config_t *self, const char *name, const char *dir_setting, const char *file)
{
    const char *v = tm_config_str (self, name);
    if (v && *v)
        return strdup (v);
    const char *dir = tm_config_str (self, dir_setting);
    char *path = NULL;
    if (asprintf (&path, "%s/%s", dir && *dir? dir: ".", file) < 0)
        return NULL;
    return path;
}

size_t
tm_config_argc (tm_config_t *self)
{
    return self->nargs;
}

const char *
tm_config_arg (tm_config_t *self, size_t index)
{
    return index < self->nargs? self->args[index]: NULL;
}

void
tm_config_print_help (tm_config_t *self, FILE *out)
{
    static const char *type_name[] = {"TEXT", "N", "BOOL", "DURATION"};
    fprintf (out, "usage: %s\n\noptions (flag, TWINMESH_<NAME> environment variable, or "
                  "config file key):\n",
             self->usage);
    for (size_t i = 0; i < self->count; i++) {
        const tm_setting_t *s = &self->table[i];
        char flag[96];
        size_t n = 0;
        for (const char *p = s->name; *p && n + 1 < sizeof flag; p++)
            flag[n++] = *p == '_'? '-': *p;
        flag[n] = 0;
        char left[160];
        snprintf (left, sizeof left, "--%s %s", flag, type_name[s->type]);
        fprintf (out, "  %-34s %s", left, s->help);
        if (s->dflt)
            fprintf (out, " (default: %s)", *s->dflt? s->dflt: "\"\"");
        fprintf (out, "\n");
    }
    fprintf (out, "  %-34s %s\n", "--config FILE",
             "read settings from a ZPL file (also TWINMESH_CONFIG)");
    fprintf (out, "  %-34s %s\n", "--print-config", "print the resulting settings and exit");
    fprintf (out, "  %-34s %s\n", "--help", "show this help and exit");
}

void
tm_config_print (tm_config_t *self, FILE *out)
{
    fprintf (out, "#   %s settings (ZPL: 'name = value', indent 4 for sections)\n",
             self->program);
    for (size_t i = 0; i < self->count; i++) {
        fprintf (out, "#   %s\n", self->table[i].help);
        if (self->values[i])
            fprintf (out, "%s = \"%s\"\n", self->table[i].name, self->values[i]);
        else
            fprintf (out, "#%s = \n", self->table[i].name);
    }
}
