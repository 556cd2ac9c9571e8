/*
 * fileio.h - the two pieces of durable file writing the journal and the
 * snapshots share.
 */
#ifndef ENG_FILEIO_H
#define ENG_FILEIO_H

#include <stddef.h>

/* Write all of `buf` to `fd`, retrying short writes and EINTR. 0 or -1 (errno). */
int fio_write_all(int fd, const void *buf, size_t len);

/* fsync a directory, so a file created or renamed in it survives a crash. 0 or -1. */
int fio_fsync_dir(const char *dir);

#endif /* ENG_FILEIO_H */
