/*
 * fileio.h - the pieces of durable file writing the journal, the snapshots
 * and the high-water mark share.
 */
#ifndef ENG_FILEIO_H
#define ENG_FILEIO_H

#include <stddef.h>

/* Write all of `buf` to `fd`, retrying short writes and EINTR. 0 or -1 (errno). */
int fio_write_all(int fd, const void *buf, size_t len);

/* fsync a directory, so a file created or renamed in it survives a crash. 0 or -1. */
int fio_fsync_dir(const char *dir);

/*
 * Replace `dir`/`name` with `len` bytes of `buf` atomically: write
 * `name`.tmp, fsync it, rename it into place, fsync the directory. 0, or -1
 * with errno set (no temporary file is left behind then).
 */
int fio_replace_file(const char *dir, const char *name, const void *buf, size_t len);

#endif /* ENG_FILEIO_H */
