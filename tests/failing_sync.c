/*
 * failing_sync.c - an LD_PRELOAD shim for tests: fdatasync fails (EIO, as
 * on a disk error) while the file $PYENGINE_FAIL_SYNC_FLAG exists, and does
 * nothing else then but wait $PYENGINE_FAIL_SYNC_DELAY_MS milliseconds
 * first when that is set (a dying disk: slow, then an error). The journal syncs its segments with fdatasync (the
 * snapshots, the high-water mark and directories with fsync), so a test can
 * make the journal's sync fail. With $PYENGINE_SYNC_LOG set, each fdatasync
 * that succeeds appends the path of its file and a newline to that file, so
 * a test can see which segments were synced; with $PYENGINE_FSYNC_LOG set,
 * each fsync that succeeds (which never fails here) does the same in that
 * file, so a test can see which directories were synced. Built by
 * tests/conftest.py (failing_sync) with the system C compiler.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void log_synced(int fd, const char *log)
{
    char link[64], path[4097];
    ssize_t n;
    int out;

    if (!log)
        return;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n < 0)
        return;
    path[n++] = '\n';
    out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0)
        return;
    if (write(out, path, (size_t)n) < 0)
        abort();
    close(out);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    const char *flag = getenv("PYENGINE_FAIL_SYNC_FLAG");
    int saved = errno, rc;

    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (flag && access(flag, F_OK) == 0) {
        const char *delay = getenv("PYENGINE_FAIL_SYNC_DELAY_MS");

        if (delay) {
            long ms = atol(delay);
            struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};

            while (nanosleep(&t, &t) < 0 && errno == EINTR)
                ;
        }
        errno = EIO;
        return -1;
    }
    errno = saved;
    rc = real(fd);
    saved = errno;
    if (rc == 0)
        log_synced(fd, getenv("PYENGINE_SYNC_LOG"));
    errno = saved;
    return rc;
}

int fsync(int fd)
{
    static int (*real)(int);
    int rc, saved;

    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    rc = real(fd);
    saved = errno;
    if (rc == 0)
        log_synced(fd, getenv("PYENGINE_FSYNC_LOG"));
    errno = saved;
    return rc;
}
