/*
 * runner_int.h - the runner's insides, shared by runner.c (the engine thread,
 * the consumer, the wake protocol), journal_writer.c (the journal thread) and
 * replication.c (the replication stage).
 */
#ifndef ENG_RUNNER_INT_H
#define ENG_RUNNER_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "pyengine_runner.h"
#include "ring.h"

enum {
    RUNNER_BATCH = 256,           /* commands taken from the ring at a time */
    RUNNER_STAGING = 1024,        /* events gathered before they are published */
    RUNNER_DEFAULT_IN = 1 << 16,  /* commands */
    RUNNER_DEFAULT_OUT = 1 << 18, /* events */
    RUNNER_DEFAULT_SPIN_US = 50,
    RUNNER_SPIN_MIN_COMMANDS = 8, /* a burst this long makes an idle thread poll */
    JNL_RING = 1 << 16,           /* journal items */
    JNL_BATCH = 8192,             /* records written with one write() */
    REPL_RING = 1 << 16           /* items of the replication stage */
};

/* What the engine thread hands the journal thread (or the replication
   stage): a sequenced command and the engine's counters after it, or (with
   `snapshot` set) a snapshot of the state after record `rec.seq`. */
struct jnl_item {
    struct jnl_record rec;
    struct eng_counters counters;
    void *snapshot;
    size_t snapshot_len;
};

struct sleeper {
    _Atomic int asleep;
    int fd; /* eventfd the sleeper blocks reading */
};

/* The journal thread's (journal_writer.c). The engine thread pushes into
   `ring` and wakes `sleep`, the consumer reads `journaled`; the rest is the
   journal thread's alone once it runs. */
struct jw {
    struct ring ring;           /* struct jnl_item */
    void *ring_buf;
    struct sleeper sleep;
    char *dir;                  /* NULL: no journal */
    int fd;                     /* the open segment */
    uint64_t first;             /* the seq its first record has or will have */
    uint64_t run_first;         /* the first seq of the first segment this run opened */
    struct eng_counters mark;   /* the high-water mark on disk */
    pthread_t thread;
    _Atomic int stop;           /* the engine thread is done: drain and end */
    _Atomic uint64_t journaled; /* highest seq written (and synced per policy) */
    _Atomic uint64_t syncs;
    _Atomic uint64_t sync_ns;   /* time spent in them, all together */
    struct jnl_item batch[JNL_BATCH];
    struct jnl_record write[JNL_BATCH];
};

struct runner {
    struct ring in;  /* struct runner_cmd */
    struct ring out; /* struct runner_event */
    struct ring repl; /* struct jnl_item: the replication stage */
    struct eng *eng;
    struct runner_config cfg;
    int out_fd;          /* the consumer waits for it to be readable */
    struct sleeper engine_sleep;
    _Atomic int consumer_waiting;
    int repl_fd;                /* the replication consumer waits for it */
    _Atomic int repl_waiting;   /* ... and has said so */
    _Atomic uint64_t replicated; /* highest seq the log holds (replication) */
    struct jnl_item repl_pending; /* a snapshot taken out after records (consumer) */
    bool repl_has_pending;
    pthread_t thread;
    bool started;
    bool joined; /* runner_join: the engine and journal threads have ended */
    _Atomic int stop;
    _Atomic int abandon;      /* the consumer is gone: drop what cannot be published */
    _Atomic int running;
    _Atomic int32_t cpu;
    _Atomic uint64_t commands;
    _Atomic uint64_t seq;       /* the engine's last seq, as of its last batch */
    _Atomic uint64_t events;
    _Atomic uint64_t batches;
    _Atomic uint64_t sleeps;
    _Atomic uint64_t snapshots;    /* written (journal) or stored (replication) */
    _Atomic uint64_t snapshot_seq;
    _Atomic uint64_t snapshot_failures; /* not serialized: out of memory */
    _Atomic int32_t journal_errno; /* the durable log failed: nothing more leaves */
    _Atomic int stamp_batches;     /* publish RUNNER_EV_BATCH after each batch */
    /* Engine thread only. */
    uint64_t since_snapshot;
    uint64_t snapshots_taken; /* serialized and handed to the journal thread */
    size_t jused;             /* items in jstage */
    size_t rused;             /* items in rstage */
    int64_t batch_start_ns;   /* with stamps on: the batch taken; 0: stamps off */
    int64_t batch_end_ns;     /* ... its events first published; 0: not yet */
    struct runner_cmd batch[RUNNER_BATCH];
    struct runner_event staging[RUNNER_STAGING];
    struct jnl_item jstage[RUNNER_BATCH];
    struct jnl_item rstage[RUNNER_BATCH];
    void *in_buf;
    void *out_buf;
    void *repl_buf;
    struct jw jw; /* the journal thread */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* CLOCK_MONOTONIC in nanoseconds: the batch stamps. */
static inline int64_t stamp_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void nap_us(long us)
{
    struct timespec pause = {0, us * 1000};
    nanosleep(&pause, NULL);
}

static inline void signal_fd(int fd)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the reader will wake. */
    while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* Wake `flag`'s owner if it has said it sleeps. Caller has just published. */
static inline void wake_if_sleeping(_Atomic int *flag, int fd)
{
    /* Full fence: our ring store is visible before we read the flag. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(flag, memory_order_relaxed) &&
        atomic_exchange_explicit(flag, 0, memory_order_relaxed))
        signal_fd(fd);
}

/* Sleep until `ring` has work or `quit` is set: say so first, then look
   again (see runner.c). `sleeps`, if given, counts the sleeps as they begin. */
static inline void sleep_until_work(struct sleeper *s, struct ring *ring, _Atomic int *quit,
                             _Atomic uint64_t *sleeps)
{
    atomic_store_explicit(&s->asleep, 1, memory_order_relaxed);
    /* Full fence: the flag is visible before we look at the ring again. */
    atomic_thread_fence(memory_order_seq_cst);
    if (!ring_count(ring) && !atomic_load_explicit(quit, memory_order_relaxed)) {
        uint64_t v;
        if (sleeps)
            atomic_fetch_add_explicit(sleeps, 1, memory_order_relaxed);
        while (read(s->fd, &v, sizeof(v)) < 0 && errno == EINTR)
            ;
    }
    atomic_store_explicit(&s->asleep, 0, memory_order_relaxed);
}

static inline bool runner__replicating(const struct runner *r)
{
    return r->repl_buf != NULL;
}

static inline bool runner__journaling(const struct runner *r)
{
    return r->jw.dir != NULL;
}

/* The durable log failed (or a replica could not apply a command): no event
   is released from here on; the consumer is woken to find out. */
static inline void runner__fail(struct runner *r, int err)
{
    atomic_store_explicit(&r->journal_errno, err ? err : EIO, memory_order_release);
    wake_if_sleeping(&r->consumer_waiting, r->out_fd);
}

/* The last of the runner's threads is done: wake the consumer to see it. */
static inline void runner__ended(struct runner *r)
{
    atomic_store_explicit(&r->running, 0, memory_order_release);
    atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed);
    signal_fd(r->out_fd);
}

#endif /* ENG_RUNNER_INT_H */
