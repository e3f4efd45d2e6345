/*  fuzz_config - tm_config loading a ZPL file written from the input

    The input is written to a temporary file and loaded as --config, the
    way an operator's file is. This fuzzes czmq's zconfig parser (which we
    do not own) as much as our loader: a crash inside zconfig_load is
    reported as such, not fixed here.
*/
#include "fuzz.h"
#include "tm_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const tm_setting_t s_table[] = {
    {"id", TM_CFG_STR, "worker-0", "node id"},
    {"bind", TM_CFG_STR, "tcp://127.0.0.1:5560", "bind endpoint"},
    {"max_batch_bytes", TM_CFG_INT, "16777216", "largest batch"},
    {"fsync", TM_CFG_BOOL, "true", "fsync every group commit"},
    {"heartbeat", TM_CFG_DURATION, "1s", "heartbeat interval"},
    {"cert", TM_CFG_STR, NULL, "secret certificate"},
};

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static char path[64];
    if (!*path)
        snprintf (path, sizeof path, "/tmp/tm_fuzz_config.%d.cfg", (int) getpid ());
    FILE *f = fopen (path, "wb");
    if (!f)
        return 0;
    fwrite (data, 1, size, f);
    fclose (f);
    tm_config_t *cfg = tm_config_new ("fuzz", "fuzz", s_table,
                                      sizeof s_table / sizeof s_table[0]);
    if (!cfg)
        abort ();
    char *argv[] = {"fuzz", "--config", path, NULL};
    int rc = tm_config_load (cfg, 3, argv);
    if (rc != 0 && rc != -1)
        abort ();
    if (rc == 0) {
        //  Whatever loaded must read back without trouble.
        const char *id = tm_config_str (cfg, "id");
        if (!id)
            abort ();
        (void) tm_config_int (cfg, "max_batch_bytes");
        (void) tm_config_int (cfg, "heartbeat");
        (void) tm_config_bool (cfg, "fsync");
        char *p = tm_config_path (cfg, "cert", "id", "x.key_secret");
        if (!p)
            abort ();
        free (p);
    }
    tm_config_destroy (&cfg);
    unlink (path);
    return 0;
}
