/*
 * failing_sync.c - an LD_PRELOAD shim for tests: fdatasync fails (EIO, as
 * on a disk error) while the file $PYENGINE_FAIL_SYNC_FLAG exists, and does
 * nothing else then. The journal syncs its segment with fdatasync (the
 * snapshots, the high-water mark and directories with fsync), so a test can
 * make the journal's sync fail. Built by tests/conftest.py (failing_sync)
 * with the system C compiler.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

int fdatasync(int fd)
{
    static int (*real)(int);
    const char *flag = getenv("PYENGINE_FAIL_SYNC_FLAG");
    int saved = errno;

    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (flag && access(flag, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    errno = saved;
    return real(fd);
}
