/*  tm_log - one-line structured logging to stderr  */
#include "tm_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static char s_component[32] = "twinmesh";
static tm_log_level_t s_level = TM_LOG_INFO;
static const char *s_level_name[] = {"error", "warn", "info", "debug"};

void
tm_log_init (const char *component, tm_log_level_t level)
{
    if (component)
        snprintf (s_component, sizeof s_component, "%s", component);
    s_level = level;
}

int
tm_log_level_parse (const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcasecmp (name, s_level_name[i]) == 0)
            return i;
    return -1;
}

tm_log_level_t
tm_log_level (void)
{
    return s_level;
}

void
tm_log_write (tm_log_level_t level, const char *fmt, ...)
{
    //  One buffer and one write per line, so lines from threads never
    //  interleave mid-line.
    char line[2048];
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    struct tm tmv;
    gmtime_r (&ts.tv_sec, &tmv);
    int n = snprintf (line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                      tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday, tmv.tm_hour,
                      tmv.tm_min, tmv.tm_sec, ts.tv_nsec / 1000000,
                      s_level_name[level], s_component);
    va_list ap;
    va_start (ap, fmt);
    if (n > 0 && (size_t) n < sizeof line)
        n += vsnprintf (line + n, sizeof line - (size_t) n, fmt, ap);
    va_end (ap);
    if (n < 0)
        return;
    if ((size_t) n >= sizeof line - 1)
        n = (int) sizeof line - 2;
    line[n++] = '\n';
    fwrite (line, 1, (size_t) n, stderr);
}
