/*  test_config - unit tests for tm_config: the four layers and their order

    Operators configure pods through TWINMESH_* variables and laptops
    through files and flags; a setting taken from the wrong layer is a
    silent misconfiguration. Each layer is checked alone, then all four on
    one setting, then every way a value or flag can be refused.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tm_config.h"
#include "tm_util.h"

static const tm_setting_t s_table[] = {
    {"id", TM_CFG_STR, "worker-0", "node id"},
    {"bind", TM_CFG_STR, "tcp://127.0.0.1:5560", "bind endpoint"},
    {"max_batch_bytes", TM_CFG_INT, "16777216", "largest batch"},
    {"fsync", TM_CFG_BOOL, "true", "fsync every group commit"},
    {"verbose", TM_CFG_BOOL, "false", "chatty"},
    {"heartbeat", TM_CFG_DURATION, "1s", "heartbeat interval"},
    {"keys", TM_CFG_STR, "./keys", "key directory"},
    {"cert", TM_CFG_STR, NULL, "secret certificate"},
    {"data_dir", TM_CFG_STR, NULL, "data directory"},
};
#define TABLE_SIZE (sizeof s_table / sizeof s_table[0])

static char s_dir[64];

//  The test must not see settings from the environment it runs in.
static int
s_setup (void **state)
{
    (void) state;
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        char env[64] = "TWINMESH_";
        size_t n = strlen (env);
        for (const char *p = s_table[i].name; *p; p++)
            env[n++] = (char) (*p >= 'a' && *p <= 'z'? *p - 32: *p);
        env[n] = 0;
        unsetenv (env);
    }
    unsetenv ("TWINMESH_CONFIG");
    snprintf (s_dir, sizeof s_dir, "/tmp/tm_test_config.XXXXXX");
    return mkdtemp (s_dir)? 0: -1;
}

static int
s_teardown (void **state)
{
    (void) state;
    unsetenv ("TWINMESH_ID");
    unsetenv ("TWINMESH_MAX_BATCH_BYTES");
    unsetenv ("TWINMESH_HEARTBEAT");
    unsetenv ("TWINMESH_FSYNC");
    unsetenv ("TWINMESH_CONFIG");
    return tm_util_rm_rf (s_dir);
}

static tm_config_t *
s_new (void)
{
    tm_config_t *cfg = tm_config_new ("twinmesh-worker", "twinmesh-worker [options]",
                                      s_table, TABLE_SIZE);
    assert_non_null (cfg);
    return cfg;
}

//  Load with a NULL-terminated argument list.
static int
s_load (tm_config_t *cfg, ...)
{
    char *argv[32] = {"twinmesh-worker"};
    int argc = 1;
    va_list ap;
    va_start (ap, cfg);
    char *a;
    while ((a = va_arg (ap, char *)) && argc < 31)
        argv[argc++] = a;
    va_end (ap);
    argv[argc] = NULL;
    return tm_config_load (cfg, argc, argv);
}

static char *
s_write_file (const char *name, const char *text)
{
    char *path = NULL;
    assert_true (asprintf (&path, "%s/%s", s_dir, name) > 0);
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    fputs (text, f);
    fclose (f);
    return path;
}

static void
test_defaults (void **state)
{
    (void) state;
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, NULL), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "worker-0");
    assert_int_equal (tm_config_int (cfg, "max_batch_bytes"), 16777216);
    assert_true (tm_config_bool (cfg, "fsync"));
    assert_false (tm_config_bool (cfg, "verbose"));
    assert_int_equal (tm_config_int (cfg, "heartbeat"), 1000);
    assert_null (tm_config_str (cfg, "cert"));
    assert_int_equal (tm_config_argc (cfg), 0);
    assert_null (tm_config_arg (cfg, 0));
    tm_config_destroy (&cfg);
    assert_null (cfg);
    tm_config_destroy (&cfg);
}

static void
test_file (void **state)
{
    (void) state;
    char *path = s_write_file ("a.cfg",
                               "#   a comment\n"
                               "id = \"worker-7\"\n"
                               "max_batch_bytes = 4096\n"
                               "fsync = false\n"
                               "heartbeat = 250ms\n"
                               "other-program\n"
                               "    unrelated = 1\n"
                               "twinmesh-worker\n"
                               "    bind = \"tcp://0.0.0.0:6000\"\n");
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, "--config", path, NULL), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "worker-7");
    assert_int_equal (tm_config_int (cfg, "max_batch_bytes"), 4096);
    assert_false (tm_config_bool (cfg, "fsync"));
    assert_int_equal (tm_config_int (cfg, "heartbeat"), 250);
    //  The section named after the program applies; another's does not.
    assert_string_equal (tm_config_str (cfg, "bind"), "tcp://0.0.0.0:6000");
    tm_config_destroy (&cfg);

    //  --config=FILE and TWINMESH_CONFIG name the file too.
    char *flag = NULL;
    assert_true (asprintf (&flag, "--config=%s", path) > 0);
    cfg = s_new ();
    assert_int_equal (s_load (cfg, flag, NULL), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "worker-7");
    tm_config_destroy (&cfg);
    setenv ("TWINMESH_CONFIG", path, 1);
    cfg = s_new ();
    assert_int_equal (s_load (cfg, NULL), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "worker-7");
    tm_config_destroy (&cfg);
    unsetenv ("TWINMESH_CONFIG");
    free (flag);
    free (path);
}

static void
test_file_errors (void **state)
{
    (void) state;
    char *missing = NULL;
    assert_true (asprintf (&missing, "%s/none.cfg", s_dir) > 0);
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, "--config", missing, NULL), -1);
    tm_config_destroy (&cfg);
    free (missing);

    char *path = s_write_file ("unknown.cfg", "nosuch = 1\n");
    cfg = s_new ();
    assert_int_equal (s_load (cfg, "--config", path, NULL), -1);
    tm_config_destroy (&cfg);
    free (path);

    path = s_write_file ("badint.cfg", "max_batch_bytes = lots\n");
    cfg = s_new ();
    assert_int_equal (s_load (cfg, "--config", path, NULL), -1);
    tm_config_destroy (&cfg);
    free (path);

    cfg = s_new ();
    assert_int_equal (s_load (cfg, "--config", NULL), -1);
    tm_config_destroy (&cfg);
}

static void
test_env (void **state)
{
    (void) state;
    setenv ("TWINMESH_ID", "worker-env", 1);
    setenv ("TWINMESH_MAX_BATCH_BYTES", "123", 1);
    setenv ("TWINMESH_HEARTBEAT", "2m", 1);
    setenv ("TWINMESH_FSYNC", "off", 1);
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, NULL), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "worker-env");
    assert_int_equal (tm_config_int (cfg, "max_batch_bytes"), 123);
    assert_int_equal (tm_config_int (cfg, "heartbeat"), 120000);
    assert_false (tm_config_bool (cfg, "fsync"));
    tm_config_destroy (&cfg);

    //  A bad value in the environment is an error, not ignored.
    setenv ("TWINMESH_HEARTBEAT", "soon", 1);
    cfg = s_new ();
    assert_int_equal (s_load (cfg, NULL), -1);
    tm_config_destroy (&cfg);
    unsetenv ("TWINMESH_ID");
    unsetenv ("TWINMESH_MAX_BATCH_BYTES");
    unsetenv ("TWINMESH_HEARTBEAT");
    unsetenv ("TWINMESH_FSYNC");
}

static void
test_flags (void **state)
{
    (void) state;
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, "--id", "worker-3", "--max-batch-bytes=99", "--verbose",
                              "--no-fsync", "--heartbeat", "1.5s", "--data-dir", "/tmp/x",
                              NULL),
                      0);
    assert_string_equal (tm_config_str (cfg, "id"), "worker-3");
    assert_int_equal (tm_config_int (cfg, "max_batch_bytes"), 99);
    assert_true (tm_config_bool (cfg, "verbose"));
    assert_false (tm_config_bool (cfg, "fsync"));
    assert_int_equal (tm_config_int (cfg, "heartbeat"), 1500);
    assert_string_equal (tm_config_str (cfg, "data_dir"), "/tmp/x");
    tm_config_destroy (&cfg);

    //  A bool flag takes a following bool word, else stands alone.
    cfg = s_new ();
    assert_int_equal (s_load (cfg, "--fsync", "false", "--verbose", "file.csv", NULL), 0);
    assert_false (tm_config_bool (cfg, "fsync"));
    assert_true (tm_config_bool (cfg, "verbose"));
    assert_int_equal (tm_config_argc (cfg), 1);
    assert_string_equal (tm_config_arg (cfg, 0), "file.csv");
    tm_config_destroy (&cfg);

    cfg = s_new ();
    assert_int_equal (s_load (cfg, "--fsync=no", "--verbose=yes", NULL), 0);
    assert_false (tm_config_bool (cfg, "fsync"));
    assert_true (tm_config_bool (cfg, "verbose"));
    tm_config_destroy (&cfg);

    //  tm_config_set as the programs' own override.
    cfg = s_new ();
    assert_int_equal (tm_config_set (cfg, "id", "w9"), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "w9");
    assert_int_equal (tm_config_set (cfg, "max_batch_bytes", "12k"), -1);
    assert_int_equal (tm_config_set (cfg, "nosuch", "1"), -1);
    assert_int_equal (tm_config_set (cfg, "id", NULL), -1);
    tm_config_destroy (&cfg);
}

static void
test_positional (void **state)
{
    (void) state;
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, "status", "--id", "w1", "twin", "-", "--", "--id", "x",
                              NULL),
                      0);
    assert_int_equal (tm_config_argc (cfg), 5);
    assert_string_equal (tm_config_arg (cfg, 0), "status");
    assert_string_equal (tm_config_arg (cfg, 1), "twin");
    assert_string_equal (tm_config_arg (cfg, 2), "-");
    //  After "--" everything is positional, even what looks like a flag.
    assert_string_equal (tm_config_arg (cfg, 3), "--id");
    assert_string_equal (tm_config_arg (cfg, 4), "x");
    assert_null (tm_config_arg (cfg, 5));
    assert_string_equal (tm_config_str (cfg, "id"), "w1");
    //  Loading again starts the positional list afresh.
    assert_int_equal (s_load (cfg, "one", NULL), 0);
    assert_int_equal (tm_config_argc (cfg), 1);
    tm_config_destroy (&cfg);
}

static void
test_precedence (void **state)
{
    (void) state;
    char *path = s_write_file ("p.cfg", "id = from-file\nmax_batch_bytes = 2\n"
                                        "heartbeat = 3s\n");
    setenv ("TWINMESH_MAX_BATCH_BYTES", "3", 1);
    setenv ("TWINMESH_ID", "from-env", 1);
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, "--id", "from-flag", "--config", path, NULL), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "from-flag");   //  flag > env
    assert_int_equal (tm_config_int (cfg, "max_batch_bytes"), 3);   //  env > file
    assert_int_equal (tm_config_int (cfg, "heartbeat"), 3000);      //  file > default
    assert_string_equal (tm_config_str (cfg, "bind"), "tcp://127.0.0.1:5560");
    tm_config_destroy (&cfg);
    unsetenv ("TWINMESH_MAX_BATCH_BYTES");
    unsetenv ("TWINMESH_ID");
    free (path);
}

static void
test_refused (void **state)
{
    (void) state;
    const char *bad[][3] = {
        {"--max-batch-bytes", "12abc", NULL},
        {"--max-batch-bytes", "", NULL},
        {"--max-batch-bytes", "99999999999999999999999", NULL},
        {"--heartbeat", "5x", NULL},
        {"--heartbeat", "-1s", NULL},
        {"--heartbeat", "", NULL},
        {"--heartbeat=nan", NULL, NULL},
        {"--fsync=maybe", NULL, NULL},
        {"--nosuch", "1", NULL},
        {"--no-id", NULL, NULL},           //  --no- applies to booleans only
        {"--no-fsync=true", NULL, NULL},
        {"--id", NULL, NULL},              //  needs a value
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tm_config_t *cfg = s_new ();
        int rc = bad[i][1]? s_load (cfg, bad[i][0], bad[i][1], NULL)
                          : s_load (cfg, bad[i][0], NULL);
        if (rc != -1)
            fail_msg ("accepted: %s %s", bad[i][0], bad[i][1]? bad[i][1]: "");
        tm_config_destroy (&cfg);
    }
}

static void
test_help_and_print (void **state)
{
    (void) state;
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, "--id", "x", "--help", NULL), TM_CONFIG_E_HELP);
    tm_config_destroy (&cfg);
    cfg = s_new ();
    assert_int_equal (s_load (cfg, "-h", NULL), TM_CONFIG_E_HELP);
    tm_config_destroy (&cfg);

    //  --help text lists every setting as a flag with its default.
    cfg = s_new ();
    char *text = NULL;
    size_t size = 0;
    FILE *mem = open_memstream (&text, &size);
    assert_non_null (mem);
    tm_config_print_help (cfg, mem);
    fclose (mem);
    assert_non_null (strstr (text, "--max-batch-bytes N"));
    assert_non_null (strstr (text, "(default: 16777216)"));
    assert_non_null (strstr (text, "--data-dir TEXT"));
    free (text);

    //  The printed config, read back as a file, gives the same values.
    assert_int_equal (s_load (cfg, "--id", "printed", "--heartbeat", "7s", NULL), 0);
    char *path = NULL;
    assert_true (asprintf (&path, "%s/printed.cfg", s_dir) > 0);
    FILE *f = fopen (path, "w");
    assert_non_null (f);
    tm_config_print (cfg, f);
    fclose (f);
    tm_config_destroy (&cfg);
    cfg = s_new ();
    assert_int_equal (s_load (cfg, "--config", path, NULL), 0);
    assert_string_equal (tm_config_str (cfg, "id"), "printed");
    assert_int_equal (tm_config_int (cfg, "heartbeat"), 7000);
    assert_null (tm_config_str (cfg, "cert"));
    tm_config_destroy (&cfg);
    free (path);

    cfg = s_new ();
    assert_int_equal (s_load (cfg, "--print-config", NULL), TM_CONFIG_E_SAMPLE);
    tm_config_destroy (&cfg);
}

static void
test_path (void **state)
{
    (void) state;
    tm_config_t *cfg = s_new ();
    assert_int_equal (s_load (cfg, "--keys", "/etc/tm/keys", NULL), 0);
    char *p = tm_config_path (cfg, "cert", "keys", "worker-0.key_secret");
    assert_string_equal (p, "/etc/tm/keys/worker-0.key_secret");
    free (p);
    //  An empty value counts as unset.
    assert_int_equal (tm_config_set (cfg, "cert", ""), 0);
    p = tm_config_path (cfg, "cert", "keys", "a.key");
    assert_string_equal (p, "/etc/tm/keys/a.key");
    free (p);
    assert_int_equal (tm_config_set (cfg, "cert", "/run/secret/c"), 0);
    p = tm_config_path (cfg, "cert", "keys", "a.key");
    assert_string_equal (p, "/run/secret/c");
    free (p);
    //  With an empty directory setting, the current directory.
    assert_int_equal (tm_config_set (cfg, "keys", ""), 0);
    p = tm_config_path (cfg, "data_dir", "keys", "x");
    assert_string_equal (p, "./x");
    free (p);
    tm_config_destroy (&cfg);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_defaults, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_file_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_env, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_flags, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_positional, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_precedence, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_path, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_help_and_print, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
