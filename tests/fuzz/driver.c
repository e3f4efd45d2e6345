/*  driver - replay files through a fuzz target without libFuzzer

    Built with every fuzz target so the seed corpus (and any crash
    reproducer added to it) runs in the ordinary test suite with gcc, under
    valgrind or the sanitizer build. Arguments are files or directories
    (read one level deep, in name order so runs are repeatable).
*/
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

//  Largest input we replay; seeds are small, and libFuzzer's default
//  -max_len is 4096.
#define DRIVER_MAX_INPUT (1 << 20)

static int
s_run_file (const char *path)
{
    FILE *f = fopen (path, "rb");
    if (!f) {
        fprintf (stderr, "driver: cannot open %s\n", path);
        return -1;
    }
    uint8_t *data = malloc (DRIVER_MAX_INPUT);
    if (!data) {
        fclose (f);
        return -1;
    }
    size_t size = fread (data, 1, DRIVER_MAX_INPUT, f);
    fclose (f);
    //  Exactly-sized copy, so reading past the input is caught by
    //  valgrind or ASan as it would be under libFuzzer.
    uint8_t *exact = malloc (size? size: 1);
    if (!exact) {
        free (data);
        return -1;
    }
    memcpy (exact, data, size);
    free (data);
    LLVMFuzzerTestOneInput (exact, size);
    free (exact);
    return 0;
}

static int
s_compare (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

static int
s_run_dir (const char *dir, size_t *count)
{
    DIR *d = opendir (dir);
    if (!d) {
        fprintf (stderr, "driver: cannot open directory %s\n", dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir (d))) {
        if (e->d_name[0] == '.')
            continue;
        char **grown = realloc (names, (n + 1) * sizeof *names);
        if (!grown)
            break;
        names = grown;
        names[n++] = strdup (e->d_name);
    }
    closedir (d);
    qsort (names, n, sizeof *names, s_compare);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf (path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat (path, &st) == 0 && S_ISREG (st.st_mode)) {
            if (s_run_file (path) != 0)
                rc = -1;
            else
                (*count)++;
        }
        free (names[i]);
    }
    free (names);
    return rc;
}

int
main (int argc, char **argv)
{
    size_t count = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat (argv[i], &st) != 0) {
            fprintf (stderr, "driver: no such file or directory: %s\n", argv[i]);
            rc = 1;
        }
        else
        if (S_ISDIR (st.st_mode)) {
            if (s_run_dir (argv[i], &count) != 0)
                rc = 1;
        }
        else
        if (s_run_file (argv[i]) != 0)
            rc = 1;
        else
            count++;
    }
    printf ("driver: %zu inputs run, %s\n", count, rc? "with errors": "no crash");
    //  An empty corpus means a broken test set-up, not a pass.
    return rc || count == 0? 1: 0;
}
