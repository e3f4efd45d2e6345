/*  fuzz.h - the one entry point every fuzz target defines

    Each fuzz_<decoder>.c defines LLVMFuzzerTestOneInput. It is linked
    either with libFuzzer (-Dfuzz=true, clang) or with driver.c, which
    replays files (the committed seed corpus, or a crash reproducer).
*/
#ifndef TM_FUZZ_H_INCLUDED
#define TM_FUZZ_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

//  Run one input; returns 0 (libFuzzer's contract). A bug shows as a
//  crash, a sanitizer report or an abort().
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#endif
