/*  test_util - unit tests for tm_util: UTF-8, durations, hex, files, clocks

    tm_util_utf8_valid guards every entity id that enters the system, so it
    is checked against a table of the classic ill-formed sequences
    (overlongs, surrogates, code points above U+10FFFF, truncations, NUL).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tm_util.h"

static void
test_utf8 (void **state)
{
    (void) state;
    struct {
        const char *bytes;
        size_t len;
        bool valid;
    } cases[] = {
        {"", 0, true},
        {"plain ascii", 11, true},
        {"\x7F", 1, true},
        {"\xC2\x80", 2, true},                 //  U+0080, smallest 2-byte
        {"\xC3\xA9t\xC3\xA9", 5, true},        //  "été"
        {"\xDF\xBF", 2, true},                 //  U+07FF
        {"\xE0\xA0\x80", 3, true},             //  U+0800, smallest 3-byte
        {"\xED\x9F\xBF", 3, true},             //  U+D7FF, below surrogates
        {"\xEE\x80\x80", 3, true},             //  U+E000, above surrogates
        {"\xEF\xBF\xBF", 3, true},             //  U+FFFF
        {"\xF0\x90\x80\x80", 4, true},         //  U+10000
        {"\xF4\x8F\xBF\xBF", 4, true},         //  U+10FFFF, the last
        {"\xF0\x9F\x9A\x97", 4, true},         //  an emoji
        {"a\0b", 3, false},                    //  NUL
        {"\0", 1, false},
        {"\x80", 1, false},                    //  lone continuation
        {"\xBF", 1, false},
        {"\xC0\x80", 2, false},                //  overlong NUL
        {"\xC0\xAF", 2, false},                //  overlong '/'
        {"\xC1\xBF", 2, false},                //  overlong U+007F
        {"\xE0\x80\xAF", 3, false},            //  overlong '/' in 3 bytes
        {"\xE0\x9F\xBF", 3, false},            //  overlong U+07FF
        {"\xF0\x80\x80\xAF", 4, false},        //  overlong '/' in 4 bytes
        {"\xF0\x8F\xBF\xBF", 4, false},        //  overlong U+FFFF
        {"\xED\xA0\x80", 3, false},            //  U+D800, a surrogate
        {"\xED\xBF\xBF", 3, false},            //  U+DFFF
        {"\xF4\x90\x80\x80", 4, false},        //  U+110000
        {"\xF7\xBF\xBF\xBF", 4, false},        //  U+1FFFFF
        {"\xF8\x88\x80\x80\x80", 5, false},    //  5-byte form
        {"\xFC\x84\x80\x80\x80\x80", 6, false},
        {"\xFE", 1, false},
        {"\xFF", 1, false},
        {"\xC3", 1, false},                    //  truncated 2-byte
        {"\xE2\x82", 2, false},                //  truncated 3-byte
        {"\xF0\x9F\x9A", 3, false},            //  truncated 4-byte
        {"\xC3(", 2, false},                   //  bad continuation
        {"\xE2\x28\xA1", 3, false},
        {"\xF0\x28\x8C\x28", 4, false},
        {"ok\xC3\xA9\xC3", 5, false},          //  good then truncated
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (tm_util_utf8_valid (cases[i].bytes, cases[i].len) != cases[i].valid)
            fail_msg ("case %zu: expected %s", i, cases[i].valid? "valid": "invalid");
    //  The length is respected: bytes past it are not read or judged.
    assert_true (tm_util_utf8_valid ("ab\xFF", 2));
    assert_true (tm_util_utf8_valid ("\xC3\xA9\xFF", 2));
    assert_false (tm_util_utf8_valid ("\xC3\xA9", 1));
}

static void
test_duration (void **state)
{
    (void) state;
    struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"0", 0}, {"250", 250}, {"500ms", 500}, {"5s", 5000}, {"1.5s", 1500}, {"3m", 180000},
        {"1h", 3600000}, {"2d", 172800000}, {"0.5ms", 0}, {"0s", 0},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t ms = -1;
        if (tm_util_parse_duration_ms (good[i].text, &ms) != 0)
            fail_msg ("refused '%s'", good[i].text);
        assert_int_equal (ms, good[i].ms);
    }
    const char *bad[] = {
        "", "s", "ms", "5x", "5 s", "5ss", "5sec", "-1", "-1s", "1e300d", "inf", "infs",
        "nan", "nans", "NaN", "-nan", "5s ", "1h30m",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 1234;
        if (tm_util_parse_duration_ms (bad[i], &ms) == 0)
            fail_msg ("accepted '%s' as %lld", bad[i], (long long) ms);
        assert_int_equal (ms, 1234);        //  untouched on failure
    }
    int64_t ms;
    assert_int_equal (tm_util_parse_duration_ms (NULL, &ms), -1);
}

static void
test_hex (void **state)
{
    (void) state;
    const uint8_t data[] = {0x00, 0x01, 0x7F, 0x80, 0xAB, 0xFF};
    char hex[2 * sizeof data + 1];
    tm_util_hex (data, sizeof data, hex);
    assert_string_equal (hex, "00017f80abff");
    uint8_t back[sizeof data];
    assert_int_equal (tm_util_unhex (hex, back, sizeof back), 0);
    assert_memory_equal (back, data, sizeof data);
    assert_int_equal (tm_util_unhex ("00017F80ABFF", back, sizeof back), 0);
    assert_memory_equal (back, data, sizeof data);
    assert_int_equal (tm_util_unhex ("00017f80abf", back, sizeof back), -1);     //  short
    assert_int_equal (tm_util_unhex ("00017f80abff00", back, sizeof back), -1);  //  long
    assert_int_equal (tm_util_unhex ("00017f80abfg", back, sizeof back), -1);    //  not hex
    assert_int_equal (tm_util_unhex (" 0017f80abff", back, sizeof back), -1);
    assert_int_equal (tm_util_unhex (NULL, back, sizeof back), -1);
    char empty[1];
    tm_util_hex (data, 0, empty);
    assert_string_equal (empty, "");
}

static void
test_files (void **state)
{
    (void) state;
    char base[] = "/tmp/tm_test_util.XXXXXX";
    assert_non_null (mkdtemp (base));
    char deep[256], file[300];
    snprintf (deep, sizeof deep, "%s/a/b/c/d", base);
    assert_int_equal (tm_util_mkdir_p (deep), 0);
    struct stat st;
    assert_int_equal (stat (deep, &st), 0);
    assert_true (S_ISDIR (st.st_mode));
    assert_int_equal (tm_util_mkdir_p (deep), 0);          //  exists: fine
    char slash[300];
    snprintf (slash, sizeof slash, "%s/x/y/", base);       //  trailing slash
    assert_int_equal (tm_util_mkdir_p (slash), 0);
    snprintf (file, sizeof file, "%s/a/b/file", base);
    FILE *f = fopen (file, "w");
    assert_non_null (f);
    fputs ("x", f);
    fclose (f);
    //  A regular file in the way is an error.
    char blocked[320];
    snprintf (blocked, sizeof blocked, "%s/sub", file);
    assert_int_equal (tm_util_mkdir_p (blocked), -1);
    assert_int_equal (tm_util_mkdir_p (""), -1);
    assert_int_equal (tm_util_mkdir_p (NULL), -1);

    assert_int_equal (tm_util_rm_rf (base), 0);
    assert_int_equal (stat (base, &st), -1);
    assert_int_equal (tm_util_rm_rf (base), 0);            //  already gone: fine
    assert_int_equal (tm_util_rm_rf ("/"), -1);
    assert_int_equal (tm_util_rm_rf (""), -1);
    assert_int_equal (tm_util_rm_rf (NULL), -1);
}

static void
test_clocks (void **state)
{
    (void) state;
    int64_t m0 = tm_util_mono_ms (), u0 = tm_util_mono_us ();
    usleep (20000);
    int64_t m1 = tm_util_mono_ms (), u1 = tm_util_mono_us ();
    assert_true (m1 - m0 >= 19 && m1 - m0 < 2000);
    assert_true (u1 - u0 >= 19000);
    //  After 2020-01-01 and before 2100-01-01.
    int64_t wall = tm_util_wall_ms ();
    assert_true (wall > 1577836800000LL && wall < 4102444800000LL);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_utf8),     cmocka_unit_test (test_duration),
        cmocka_unit_test (test_hex),      cmocka_unit_test (test_files),
        cmocka_unit_test (test_clocks),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
