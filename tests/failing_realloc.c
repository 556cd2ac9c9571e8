/*
 * failing_realloc.c - an LD_PRELOAD shim for tests: realloc of at least
 * $PYENGINE_FAIL_REALLOC_BYTES bytes fails (ENOMEM) while the file
 * $PYENGINE_FAIL_REALLOC_FLAG exists. The engine grows its event buffer with
 * realloc, so a test can make one command run out of memory and no other.
 * Built by tests/conftest.py (failing_realloc) with the system C compiler.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

void *realloc(void *p, size_t n)
{
    static void *(*real)(void *, size_t);
    const char *flag = getenv("PYENGINE_FAIL_REALLOC_FLAG");
    const char *bytes = getenv("PYENGINE_FAIL_REALLOC_BYTES");

    if (!real)
        real = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    if (flag && bytes && n >= strtoull(bytes, NULL, 10) && access(flag, F_OK) == 0) {
        errno = ENOMEM;
        return NULL;
    }
    return real(p, n);
}
