/*
 * journal_writer.c - the runner's journal thread: it writes what the engine
 * thread hands it to the journal (journal.c has the formats).
 *
 * The engine thread pushes a struct jnl_item per command it sequences (the
 * record and the engine's counters after it) into r->jw.ring, and a
 * snapshot's buffer when it takes one. This thread takes whatever has
 * gathered and, per batch:
 *   - moves the high-water mark JNL_MARK_BLOCK beyond the batch's counters
 *     if any of them passes it, before writing (see eng_mark_read), so
 *     nothing that leaves is above the mark on disk;
 *   - writes the records with one write and syncs once (per the fsync
 *     policy; JNL_FSYNC_ALWAYS writes and syncs record by record);
 *   - advances `journaled`, which lets runner_poll release the events of
 *     those commands, and wakes an idle consumer.
 * A snapshot is written in its place in the sequence; a new segment starts
 * after it, and the segments and snapshots it covers are removed unless
 * cfg.keep_segments. The first failure stops the journal for good
 * (runner__fail): no event leaves after it. As it ends, the thread syncs the
 * segment once more when the policy (JNL_FSYNC_OFF) has not, and the
 * segments this run closed and kept (cfg.keep_segments), which with that
 * policy nothing synced when they were closed (see sync_closed_segments).
 *
 * The thread sleeps on r->jw.sleep whenever the ring is empty (it waits for
 * the disk anyway), with the wake protocol of runner.c.
 */
#define _GNU_SOURCE
#include "journal_writer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fileio.h"
#include "runner_int.h"

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/*
 * Before records with counters up to `hi` are written: when any of them
 * passes the high-water mark, move the mark JNL_MARK_BLOCK beyond them (once
 * per block, not per record). Returns 0 or -1 (errno).
 */
static int raise_mark(struct jw *w, const struct eng_counters *hi)
{
    struct eng_counters m;

    if (hi->seq <= w->mark.seq && hi->order_id <= w->mark.order_id &&
        hi->trade_id <= w->mark.trade_id)
        return 0;
    m.seq = max_u64(w->mark.seq, hi->seq + JNL_MARK_BLOCK);
    m.order_id = max_u64(w->mark.order_id, hi->order_id + JNL_MARK_BLOCK);
    m.trade_id = max_u64(w->mark.trade_id, hi->trade_id + JNL_MARK_BLOCK);
    if (eng_mark_write(w->dir, &m) != 0)
        return -1;
    w->mark = m;
    return 0;
}

/* Write (and sync per policy) the gathered records, the last of which has
   the counters `hi`; publish how far the journal now reaches. Returns 0 or -1. */
static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* fdatasync, timed and counted (for the metrics: the clock costs nothing next to it). */
static int timed_sync(struct jw *w, int fd)
{
    uint64_t t0 = now_ns();
    int rc = fdatasync(fd);

    atomic_fetch_add_explicit(&w->sync_ns, now_ns() - t0, memory_order_relaxed);
    if (rc == 0)
        atomic_fetch_add_explicit(&w->syncs, 1, memory_order_relaxed);
    return rc;
}

static int flush(struct runner *r, size_t n, const struct eng_counters *hi)
{
    struct jw *w = &r->jw;

    if (n == 0 || atomic_load_explicit(&r->journal_errno, memory_order_relaxed))
        return n ? -1 : 0;
    if (raise_mark(w, hi) != 0) {
        runner__fail(r, errno);
        return -1;
    }
    if (r->cfg.fsync == JNL_FSYNC_ALWAYS) {
        for (size_t i = 0; i < n; i++) {
            if (fio_write_all(w->fd, &w->write[i], sizeof(w->write[i])) != 0 ||
                timed_sync(w, w->fd) != 0) {
                runner__fail(r, errno);
                return -1;
            }
            atomic_store_explicit(&w->journaled, w->write[i].seq, memory_order_release);
            wake_if_sleeping(&r->consumer_waiting, r->out_fd);
        }
        return 0;
    }
    if (fio_write_all(w->fd, w->write, n * sizeof(w->write[0])) != 0) {
        runner__fail(r, errno);
        return -1;
    }
    if (r->cfg.fsync == JNL_FSYNC_BATCH) {
        if (timed_sync(w, w->fd) != 0) {
            runner__fail(r, errno);
            return -1;
        }
    }
    /* Release: the consumer that sees the new value may send the effects. */
    atomic_store_explicit(&w->journaled, w->write[n - 1].seq, memory_order_release);
    wake_if_sleeping(&r->consumer_waiting, r->out_fd);
    return 0;
}

/* Remove segments and snapshots older than the snapshot at `seq`. */
static void prune(const struct jw *w, uint64_t seq)
{
    DIR *d = opendir(w->dir);
    struct dirent *de;
    char path[4096];

    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        /* Exact names only: a tail set aside by recovery (".damaged-...",
           ".orphan") is the operator's to look at and remove. */
        unsigned long long n;
        int end = 0;
        bool old_segment = sscanf(de->d_name, "journal-%llu.log%n", &n, &end) == 1 && end &&
                           !de->d_name[end] && n <= seq;
        end = 0;
        bool old_snapshot = !old_segment && sscanf(de->d_name, "snapshot-%llu.snap%n", &n, &end) == 1 &&
                            end && !de->d_name[end] && n < seq;
        if (old_segment || old_snapshot) {
            snprintf(path, sizeof(path), "%s/%s", w->dir, de->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

/*
 * Sync the segments this run closed (from w->run_first up to the open one),
 * for a clean stop with JNL_FSYNC_OFF and cfg.keep_segments: nothing synced
 * them when a snapshot closed them, and doing so then would stall the
 * journal (a whole segment's writes at worst) where the policy asks for no
 * sync. The stop pays instead, reopening them by name: no list to keep, no
 * descriptor held. One the operator moved away meanwhile is not ours to
 * sync. Returns 0 or -1 (errno).
 */
static int sync_closed_segments(struct jw *w)
{
    DIR *d = opendir(w->dir);
    struct dirent *de;
    char path[4096];
    int rc = 0;

    if (!d)
        return -1;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        unsigned long long n;
        int end = 0, fd;

        if (sscanf(de->d_name, "journal-%llu.log%n", &n, &end) != 1 || !end || de->d_name[end] ||
            n < w->run_first || n >= w->first)
            continue;
        snprintf(path, sizeof(path), "%s/%s", w->dir, de->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = errno == ENOENT ? 0 : -1;
            continue;
        }
        rc = timed_sync(w, fd);
        if (close(fd) != 0 && rc == 0)
            rc = -1;
    }
    if (rc != 0) {
        int saved = errno;
        closedir(d);
        errno = saved;
        return -1;
    }
    closedir(d);
    return 0;
}

/*
 * Write a snapshot taken after record `seq` (all records up to it are
 * written by now), then start a new segment at seq + 1.
 */
static void write_snapshot(struct runner *r, struct jnl_item *it)
{
    struct jw *w = &r->jw;
    uint64_t seq = it->rec.seq;
    int fd;

    /* After a failure the engine ran on past what the journal holds: a
       snapshot would keep commands no journal has and nobody was answered,
       and its prune would delete the segment that failed. */
    if (atomic_load_explicit(&r->journal_errno, memory_order_acquire))
        goto out;
    if (eng_snapshot_write_file(w->dir, it->snapshot, it->snapshot_len) != 0) {
        runner__fail(r, errno);
        goto out;
    }
    /* A new segment starts after the snapshot, unless the open one has no
       record yet (a snapshot again at the same seq). The engine is running
       on: the new segment names the same instruments, which never change
       once trading starts. */
    if (w->first != seq + 1) {
        fd = jnl__open_segment(w->dir, seq + 1, r->eng);
        if (fd < 0) {
            runner__fail(r, errno);
            goto out;
        }
        close(w->fd);
        w->fd = fd;
        w->first = seq + 1;
    }
    if (!r->cfg.keep_segments)
        prune(w, seq);
    atomic_store_explicit(&r->snapshot_seq, seq, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->snapshots, 1, memory_order_release);
    wake_if_sleeping(&r->consumer_waiting, r->out_fd);
out:
    eng_free_buffer(it->snapshot);
}

static void *journal_thread(void *arg)
{
    struct runner *r = arg;
    struct jw *w = &r->jw;

    pthread_setname_np(pthread_self(), "pyeng-journal");
    for (;;) {
        size_t n = ring_pop(&w->ring, w->batch, JNL_BATCH), k = 0;
        struct eng_counters hi = {0, 0, 0}; /* the counters after the last record in w->write */
        if (n == 0) {
            if (atomic_load_explicit(&w->stop, memory_order_acquire) && !ring_count(&w->ring))
                break;
            sleep_until_work(&w->sleep, &w->ring, &w->stop, NULL);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            struct jnl_item *it = &w->batch[i];
            if (it->snapshot) {
                flush(r, k, &hi);
                k = 0;
                write_snapshot(r, it);
                continue;
            }
            w->write[k] = it->rec;
            jnl__seal(&w->write[k]);
            hi = it->counters;
            k++;
        }
        flush(r, k, &hi);
    }
    /* With fsync off too, a clean stop leaves the journal on disk, every
       segment this run wrote: a crash of the machine after it loses nothing. */
    if (r->cfg.fsync == JNL_FSYNC_OFF && !atomic_load_explicit(&r->journal_errno, memory_order_acquire)) {
        if ((r->cfg.keep_segments && w->first != w->run_first && sync_closed_segments(w) != 0) ||
            timed_sync(w, w->fd) != 0)
            runner__fail(r, errno);
    }
    /* The engine thread ended first: this is the runner's last thread. */
    runner__ended(r);
    return NULL;
}

int jw_open(struct runner *r, const char *dir)
{
    struct jw *w = &r->jw;
    int rc;

    w->dir = strdup(dir);
    w->ring_buf = malloc(JNL_RING * sizeof(struct jnl_item));
    if (!w->dir || !w->ring_buf)
        return -1;
    ring_init(&w->ring, w->ring_buf, JNL_RING, sizeof(struct jnl_item));
    w->sleep.fd = eventfd(0, EFD_CLOEXEC);
    if (w->sleep.fd < 0)
        return -1;
    rc = eng_mark_read(w->dir, &w->mark);
    if (rc != ENG_OK) {
        if (rc == ENG_CORRUPT)
            errno = EBADMSG;
        return -1;
    }
    w->first = w->run_first = eng_seq(r->eng) + 1;
    w->fd = jnl__open_segment(w->dir, w->first, r->eng);
    return w->fd < 0 ? -1 : 0;
}

int jw_start(struct runner *r)
{
    return pthread_create(&r->jw.thread, NULL, journal_thread, r);
}

void jw_finish(struct runner *r)
{
    /* Release: every item is in the ring before the thread sees it must
       finish. */
    atomic_store_explicit(&r->jw.stop, 1, memory_order_release);
    signal_fd(r->jw.sleep.fd);
}

void jw_join(struct runner *r)
{
    pthread_join(r->jw.thread, NULL);
}

void jw_close(struct runner *r)
{
    struct jw *w = &r->jw;

    if (w->fd >= 0)
        close(w->fd);
    if (w->sleep.fd >= 0)
        close(w->sleep.fd);
    free(w->dir);
    free(w->ring_buf);
    w->fd = w->sleep.fd = -1;
    w->dir = NULL;
    w->ring_buf = NULL;
}
