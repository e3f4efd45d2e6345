/*  tm_util - small helpers every module needs  */
#include "tm_util.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t
tm_util_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
tm_util_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
tm_util_wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
tm_util_mkdir_p (const char *path)
{
    char buf[4096];
    if (!path || !*path || strlen (path) >= sizeof buf)
        return -1;
    snprintf (buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir (buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir (buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int
s_unlink_cb (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    return remove (path);
}

int
tm_util_rm_rf (const char *path)
{
    if (!path || !*path || strcmp (path, "/") == 0)
        return -1;
    struct stat st;
    if (stat (path, &st) != 0)
        return errno == ENOENT? 0: -1;
    return nftw (path, s_unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
}

void
tm_util_hex (const uint8_t *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * len] = 0;
}

static int
s_hexval (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
tm_util_unhex (const char *hex, uint8_t *out, size_t len)
{
    if (!hex || strlen (hex) != 2 * len)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int hi = s_hexval (hex[2 * i]), lo = s_hexval (hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t) (hi << 4 | lo);
    }
    return 0;
}

bool
tm_util_utf8_valid (const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s, *end = p + len;
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            if (c == 0)
                return false;
            p++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        }
        else
        if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        }
        else
        if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        }
        else
            return false;
        if ((size_t) (end - p) <= n)
            return false;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        //  Overlong forms, surrogates and out-of-range code points.
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)
            || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        p += n + 1;
    }
    return true;
}

int
tm_util_parse_duration_ms (const char *text, int64_t *out_ms)
{
    if (!text || !*text)
        return -1;
    char *end;
    errno = 0;
    double v = strtod (text, &end);
    //  !(v >= 0) also refuses NaN ("nan" parses), whose conversion to an
    //  integer below would be undefined.
    if (errno || end == text || !(v >= 0))
        return -1;
    double mult;
    if (*end == 0 || strcmp (end, "ms") == 0)
        mult = 1;
    else
    if (strcmp (end, "s") == 0)
        mult = 1000;
    else
    if (strcmp (end, "m") == 0)
        mult = 60000;
    else
    if (strcmp (end, "h") == 0)
        mult = 3600000;
    else
    if (strcmp (end, "d") == 0)
        mult = 86400000;
    else
        return -1;
    double ms = v * mult;
    if (ms > 9.2e18)
        return -1;
    *out_ms = (int64_t) ms;
    return 0;
}
