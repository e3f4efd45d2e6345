/*  tm_log - one-line structured logging to stderr

    Every event is one line, "component: event key=value ...", so logs can be
    grepped and parsed without a schema. The level is checked before any
    formatting, so a debug line on a hot path costs one branch when off.
*/
#ifndef TM_LOG_H_INCLUDED
#define TM_LOG_H_INCLUDED

#include <stdbool.h>

typedef enum {
    TM_LOG_ERROR = 0,
    TM_LOG_WARN = 1,
    TM_LOG_INFO = 2,
    TM_LOG_DEBUG = 3
} tm_log_level_t;

//  Set the process-wide level and component name (copied). Not thread-safe:
//  call once at start-up, before threads exist.
void tm_log_init (const char *component, tm_log_level_t level);

//  Parse "error|warn|info|debug"; returns -1 if unknown.
int tm_log_level_parse (const char *name);

//  Current level; cheap.
tm_log_level_t tm_log_level (void);

//  Write one line; use the macros, which skip formatting when filtered out.
void tm_log_write (tm_log_level_t level, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

#define TM_LOG(lvl, ...)                                                       \
    do {                                                                       \
        if ((lvl) <= tm_log_level ())                                          \
            tm_log_write ((lvl), __VA_ARGS__);                                 \
    } while (0)
#define tm_error(...) TM_LOG (TM_LOG_ERROR, __VA_ARGS__)
#define tm_warn(...) TM_LOG (TM_LOG_WARN, __VA_ARGS__)
#define tm_info(...) TM_LOG (TM_LOG_INFO, __VA_ARGS__)
#define tm_debug(...) TM_LOG (TM_LOG_DEBUG, __VA_ARGS__)

#endif
