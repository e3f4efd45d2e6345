/*  tm_util - small helpers every module needs: clocks, paths, hex, files

    Kept tiny on purpose; anything bigger than a helper gets its own module.
*/
#ifndef TM_UTIL_H_INCLUDED
#define TM_UTIL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Milliseconds on a monotonic clock (for timeouts and latency).
int64_t tm_util_mono_ms (void);

//  Microseconds on a monotonic clock.
int64_t tm_util_mono_us (void);

//  Milliseconds since the Unix epoch (for reading timestamps).
int64_t tm_util_wall_ms (void);

//  Create a directory and its parents; 0 on success or if it exists.
int tm_util_mkdir_p (const char *path);

//  Remove a directory tree; 0 on success. Refuses "/" and "".
int tm_util_rm_rf (const char *path);

//  Lower-case hex of len bytes into out (2*len+1 bytes).
void tm_util_hex (const uint8_t *data, size_t len, char *out);

//  Parse exactly 2*len hex digits; 0 on success, -1 otherwise.
int tm_util_unhex (const char *hex, uint8_t *out, size_t len);

//  True if the bytes are well-formed UTF-8 without NUL.
bool tm_util_utf8_valid (const char *s, size_t len);

//  Parse a duration like "500ms", "5s", "3m", "1h", "2d", or plain ms.
//  Returns 0 on success.
int tm_util_parse_duration_ms (const char *text, int64_t *out_ms);

#endif
