/*
 * failing_alloc.c - an LD_PRELOAD shim for tests: large allocations fail
 * (ENOMEM) while a flag file exists, realloc and malloc each under variables
 * of their own:
 *   - realloc of at least $PYENGINE_FAIL_REALLOC_BYTES bytes while the file
 *     $PYENGINE_FAIL_REALLOC_FLAG exists: the engine grows its event buffer
 *     with realloc, so a test can make one command run out of memory and no
 *     other;
 *   - malloc of at least $PYENGINE_FAIL_MALLOC_BYTES bytes while the file
 *     $PYENGINE_FAIL_MALLOC_FLAG exists: the engine serializes a snapshot
 *     into one malloc'ed buffer (56 bytes an order), so a test can make the
 *     snapshot of a large book fail.
 * Built by tests/conftest.py (failing_realloc, failing_malloc) with the
 * system C compiler.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

/* Must an allocation of `n` bytes fail, by the variables `flag_var` and `bytes_var`? */
static bool failing(size_t n, const char *flag_var, const char *bytes_var)
{
    const char *flag = getenv(flag_var);
    const char *bytes = getenv(bytes_var);
    int saved = errno; /* an allocation that succeeds leaves errno alone */
    bool fail = flag && bytes && n >= strtoull(bytes, NULL, 10) && access(flag, F_OK) == 0;

    errno = saved;
    return fail;
}

void *realloc(void *p, size_t n)
{
    static void *(*real)(void *, size_t);

    if (!real)
        real = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    if (failing(n, "PYENGINE_FAIL_REALLOC_FLAG", "PYENGINE_FAIL_REALLOC_BYTES")) {
        errno = ENOMEM;
        return NULL;
    }
    return real(p, n);
}

void *malloc(size_t n)
{
    static void *(*real)(size_t);

    if (!real)
        real = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    if (failing(n, "PYENGINE_FAIL_MALLOC_FLAG", "PYENGINE_FAIL_MALLOC_BYTES")) {
        errno = ENOMEM;
        return NULL;
    }
    return real(n);
}
