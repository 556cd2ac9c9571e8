/*
 * journal.c - the journal segment format: writing and scanning.
 *
 * A segment is a header (struct jnl_header, then the instrument specs), then
 * fixed-size records, one per sequenced command, with consecutive sequence
 * numbers starting at the header's first_seq. A record is valid when its
 * length field is right, its CRC-32C matches and its seq is the next one; a
 * scan stops at the first record that is not, and says why (a file that ends
 * part-way through a record is a torn write; a whole record that fails its
 * checksum is damage). Nothing after that point is ever applied, but the
 * rest of the file is searched for valid records, so that the caller can
 * tell a write cut short (nothing valid after it) from damage with records
 * after it.
 *
 * The high-water mark (HIGHWATER) is a small file of its own, replaced
 * whole, never appended to: damage to a segment cannot lower it.
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "engine_int.h"
#include "fileio.h"

_Static_assert(sizeof(struct jnl_record) == 88, "journal record layout");
_Static_assert(sizeof(struct jnl_header) == 32, "journal header layout");
_Static_assert(sizeof(struct jnl_mark) == 40, "high-water mark layout");

enum { SCAN_CHUNK = 4096 /* records read at a time */ };

void jnl__seal(struct jnl_record *r)
{
    r->len = sizeof(*r);
    r->crc = crc32c(0, (const char *)r + 8, sizeof(*r) - 8);
}

int jnl__open_segment(const char *dir, uint64_t first_seq, const struct eng *e)
{
    char path[4096];
    struct jnl_header h;
    size_t specs = e->ninst * sizeof(struct eng_instrument_spec);
    char *buf = malloc(sizeof(h) + specs);
    int fd, saved;

    if (!buf)
        return -1;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, JNL_MAGIC, 8);
    h.version = JNL_VERSION;
    h.record_size = sizeof(struct jnl_record);
    h.first_seq = first_seq;
    h.ninstruments = e->ninst;
    for (uint32_t i = 0; i < e->ninst; i++)
        memcpy(buf + sizeof(h) + i * sizeof(struct eng_instrument_spec), &e->inst[i].spec,
               sizeof(struct eng_instrument_spec));
    memcpy(buf, &h, sizeof(h));
    h.crc = crc32c(0, buf, sizeof(h) + specs);
    memcpy(buf, &h, sizeof(h));
    snprintf(path, sizeof(path), "%s/journal-%020llu.log", dir, (unsigned long long)first_seq);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || fio_write_all(fd, buf, sizeof(h) + specs) != 0 || fsync(fd) != 0 ||
        fio_fsync_dir(dir) != 0) {
        saved = errno;
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        free(buf);
        errno = saved;
        return -1;
    }
    free(buf);
    return fd;
}

/* Read exactly `len` bytes (fewer only at end of file). Returns the count, or -1. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t k = read(fd, (char *)buf + got, len - got);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

/* Read and check a segment header; leaves `fd` just after it. Returns the
   number of instruments, or -1 (stop set). */
static int64_t read_header(int fd, struct jnl_header *h, struct eng_instrument_spec *specs,
                           size_t max, int32_t *stop)
{
    char *buf;
    size_t specs_len;
    uint32_t want;

    if (read_full(fd, h, sizeof(*h)) != (ssize_t)sizeof(*h) || memcmp(h->magic, JNL_MAGIC, 8) ||
        h->version != JNL_VERSION || h->record_size != sizeof(struct jnl_record) ||
        h->ninstruments > ENG_MAX_INSTRUMENTS) {
        *stop = JNL_BAD_HEADER;
        return -1;
    }
    specs_len = h->ninstruments * sizeof(struct eng_instrument_spec);
    buf = malloc(sizeof(*h) + specs_len);
    if (!buf) {
        *stop = JNL_IO_ERROR;
        return -1;
    }
    want = h->crc;
    h->crc = 0;
    memcpy(buf, h, sizeof(*h));
    if (read_full(fd, buf + sizeof(*h), specs_len) != (ssize_t)specs_len ||
        crc32c(0, buf, sizeof(*h) + specs_len) != want) {
        free(buf);
        *stop = JNL_BAD_HEADER;
        return -1;
    }
    h->crc = want;
    if (specs)
        memcpy(specs, buf + sizeof(*h),
               (h->ninstruments < max ? h->ninstruments : max) * sizeof(*specs));
    free(buf);
    return h->ninstruments;
}

int64_t jnl_read_instruments(const char *path, struct eng_instrument_spec *out, size_t max)
{
    struct jnl_header h;
    int32_t stop;
    int64_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read_header(fd, &h, out, max, &stop);
    close(fd);
    return n;
}

bool jnl__record_valid(const struct jnl_record *r)
{
    return r->len == sizeof(*r) && r->crc == crc32c(0, (const char *)r + 8, sizeof(*r) - 8);
}

/*
 * The records up to after_seq are not to be applied: records have a fixed
 * size, so go straight to the one after. Only when the record just before
 * that point is whole, valid and is after_seq; else read everything (and
 * find out what is wrong on the way).
 */
static void skip_applied(int fd, uint64_t after_seq, struct jnl_scan *out, uint64_t *expect)
{
    uint64_t skip = after_seq - out->first_seq + 1;
    uint64_t target = out->valid_bytes + skip * sizeof(struct jnl_record);
    struct jnl_record last;

    if (target > out->file_bytes ||
        pread(fd, &last, sizeof(last), (off_t)(target - sizeof(last))) != (ssize_t)sizeof(last) ||
        !jnl__record_valid(&last) || last.seq != after_seq || lseek(fd, (off_t)target, SEEK_SET) < 0)
        return;
    out->skipped = skip;
    out->last_seq = after_seq;
    out->valid_bytes = target;
    *expect = after_seq + 1;
}

/*
 * The scan stopped at out->valid_bytes: count the whole, valid records from
 * there to the end of the file, at any byte offset, reading through `buf`.
 */
static void count_following(int fd, char *buf, size_t cap, struct jnl_scan *out)
{
    const size_t size = sizeof(struct jnl_record);
    uint64_t pos = out->valid_bytes; /* the file offset of buf[0] */
    size_t have = 0;

    for (;;) {
        ssize_t got = pread(fd, buf + have, cap - have, (off_t)(pos + have));
        size_t i = 0;
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            out->stop = JNL_IO_ERROR;
            out->err = errno;
            return;
        }
        if (got == 0)
            return;
        have += (size_t)got;
        while (i + size <= have) {
            struct jnl_record r;
            uint32_t len;
            memcpy(&len, buf + i, sizeof(len));
            if (len == size) {
                memcpy(&r, buf + i, size);
                if (jnl__record_valid(&r)) {
                    if (!out->following || r.seq < out->following_min_seq)
                        out->following_min_seq = r.seq;
                    if (r.seq > out->following_max_seq)
                        out->following_max_seq = r.seq;
                    out->following++;
                    i += size;
                    continue;
                }
            }
            i++;
        }
        memmove(buf, buf + i, have - i);
        pos += i;
        have -= i;
    }
}

int jnl_scan_file(const char *path, struct eng *e, uint64_t after_seq, struct jnl_scan *out,
                  uint64_t *counts)
{
    struct jnl_header h;
    struct jnl_record *chunk;
    uint64_t expect;
    off_t pos;
    int fd;

    memset(out, 0, sizeof(*out));
    if (counts)
        memset(counts, 0, ENG_CMD__COUNT * sizeof(*counts));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        out->stop = JNL_IO_ERROR;
        out->err = errno;
        return ENG_OK;
    }
    chunk = malloc(SCAN_CHUNK * sizeof(*chunk));
    if (!chunk) {
        out->stop = JNL_IO_ERROR;
        out->err = ENOMEM;
        close(fd);
        return ENG_OK;
    }
    out->file_bytes = (uint64_t)lseek(fd, 0, SEEK_END);
    lseek(fd, 0, SEEK_SET);
    if (read_header(fd, &h, NULL, 0, &out->stop) < 0)
        goto done;
    out->first_seq = h.first_seq;
    out->ninstruments = h.ninstruments;
    out->last_seq = h.first_seq - 1;
    pos = lseek(fd, 0, SEEK_CUR);
    out->valid_bytes = (uint64_t)pos;
    expect = h.first_seq;
    if (e && after_seq >= h.first_seq)
        skip_applied(fd, after_seq, out, &expect);
    for (;;) {
        ssize_t got = read_full(fd, chunk, SCAN_CHUNK * sizeof(*chunk));
        size_t whole;
        if (got < 0) {
            out->stop = JNL_IO_ERROR;
            out->err = errno;
            break;
        }
        whole = (size_t)got / sizeof(*chunk);
        for (size_t i = 0; i < whole; i++) {
            const struct jnl_record *r = &chunk[i];
            if (!jnl__record_valid(r)) {
                out->stop = JNL_BAD_CHECKSUM;
                goto done;
            }
            if (r->seq != expect) {
                out->stop = JNL_SEQ_GAP;
                goto done;
            }
            if (e && r->seq > after_seq) {
                if (r->seq != eng_seq(e) + 1) {
                    out->stop = JNL_SEQ_GAP;
                    goto done;
                }
                eng_clear_events(e);
                if (eng_process(e, &r->cmd) < 0 || jnl__out_of_memory(e->ev, e->ev_len)) {
                    out->stop = JNL_APPLY_ERROR;
                    out->err = ENOMEM;
                    goto done;
                }
                out->applied++;
            }
            if (counts && r->cmd.type >= 1 && r->cmd.type < ENG_CMD__COUNT)
                counts[r->cmd.type]++;
            else if (counts)
                counts[0]++;
            out->records++;
            out->last_seq = r->seq;
            out->valid_bytes += sizeof(*r);
            expect++;
        }
        if ((size_t)got < SCAN_CHUNK * sizeof(*chunk)) {
            /* End of file: a part-record left over is a torn write. */
            out->stop = (size_t)got % sizeof(*chunk) ? JNL_TORN : JNL_END;
            break;
        }
    }
done:
    if (out->stop == JNL_TORN || out->stop == JNL_BAD_CHECKSUM || out->stop == JNL_SEQ_GAP ||
        out->stop == JNL_BAD_HEADER)
        count_following(fd, (char *)chunk, SCAN_CHUNK * sizeof(*chunk), out);
    if (e)
        eng_clear_events(e);
    free(chunk);
    close(fd);
    return ENG_OK;
}

size_t jnl_apply_records(struct eng *e, const struct jnl_record *records, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t before = e->ev_len;
        int64_t added = eng_process(e, &records[i].cmd);

        /* As the scan: a command that ran out of memory here did not run as
           it did live (it was journaled), and nothing after it would either. */
        if (added < 0 || jnl__out_of_memory(e->ev + before, (size_t)added))
            return i;
    }
    return n;
}

int eng_mark_read(const char *dir, struct eng_counters *out)
{
    char path[4096];
    unsigned char buf[sizeof(struct jnl_mark) + 1]; /* one more: a longer file is no mark */
    struct jnl_mark m;
    ssize_t got;
    int fd, saved;

    memset(out, 0, sizeof(*out));
    snprintf(path, sizeof(path), "%s/%s", dir, JNL_MARK_FILE);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? ENG_OK : ENG_INVALID_ARGUMENT;
    got = read_full(fd, buf, sizeof(buf));
    saved = errno;
    close(fd);
    if (got < 0) {
        errno = saved;
        return ENG_INVALID_ARGUMENT;
    }
    if (got != (ssize_t)sizeof(m))
        return ENG_CORRUPT;
    memcpy(&m, buf, sizeof(m));
    if (memcmp(m.magic, JNL_MARK_MAGIC, 8) != 0 || m.crc != crc32c(0, &m, offsetof(struct jnl_mark, crc)))
        return ENG_CORRUPT;
    out->seq = m.seq;
    out->order_id = m.order_id;
    out->trade_id = m.trade_id;
    return ENG_OK;
}

int eng_mark_write(const char *dir, const struct eng_counters *mark)
{
    struct jnl_mark m;

    memset(&m, 0, sizeof(m));
    memcpy(m.magic, JNL_MARK_MAGIC, 8);
    m.seq = mark->seq;
    m.order_id = mark->order_id;
    m.trade_id = mark->trade_id;
    m.crc = crc32c(0, &m, offsetof(struct jnl_mark, crc));
    return fio_replace_file(dir, JNL_MARK_FILE, &m, sizeof(m));
}
