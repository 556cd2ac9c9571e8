/*
 * runner.c - the engine thread: one engine, fed through an SPSC ring of
 * commands, answering through an SPSC ring of events.
 *
 * Threads: the producer (submit), the consumer (poll) and the engine thread.
 * The engine is touched only by the engine thread once it runs.
 *
 * Idle strategy: with no commands the engine thread polls its input ring for
 * `spin_us`, then sleeps in a blocking read of an eventfd that the producer
 * writes only when it sees the thread asleep. The consumer likewise arms a
 * flag before it waits on its own eventfd, and the engine thread writes that
 * eventfd only when it publishes to an armed (idle) consumer: under load,
 * neither side makes a system call per command or per event.
 *
 * No lost wake-ups: each side stores its "I am asleep" flag and then
 * re-checks the ring, while the other side publishes to the ring and then
 * checks the flag; with a full fence between store and load on both sides,
 * at least one of them sees the other (the Dekker pattern).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "pyengine.h"
#include "ring.h"

enum {
    RUNNER_BATCH = 256,           /* commands taken from the ring at a time */
    RUNNER_STAGING = 1024,        /* events gathered before they are published */
    RUNNER_DEFAULT_IN = 1 << 16,  /* commands */
    RUNNER_DEFAULT_OUT = 1 << 18, /* events */
    RUNNER_DEFAULT_SPIN_US = 50
};

struct runner {
    struct ring in;  /* struct runner_cmd */
    struct ring out; /* struct runner_event */
    struct eng *eng;
    struct runner_config cfg;
    int in_fd;  /* the engine thread sleeps reading it */
    int out_fd; /* the consumer waits for it to be readable */
    pthread_t thread;
    bool started;
    _Atomic int engine_sleeping;
    _Atomic int consumer_waiting;
    _Atomic int stop;
    _Atomic int abandon; /* the consumer is gone: drop what cannot be published */
    _Atomic int running;
    _Atomic int32_t cpu;
    _Atomic uint64_t commands;
    _Atomic uint64_t events;
    _Atomic uint64_t batches;
    _Atomic uint64_t sleeps;
    /* Engine thread only. */
    struct runner_cmd batch[RUNNER_BATCH];
    struct runner_event staging[RUNNER_STAGING];
    void *in_buf;
    void *out_buf;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void signal_fd(int fd)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the reader will wake. */
    while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* Wake `flag`'s owner if it has said it sleeps. Caller has just published. */
static void wake_if_sleeping(_Atomic int *flag, int fd)
{
    /* Full fence: our ring store is visible before we read the flag. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(flag, memory_order_relaxed) &&
        atomic_exchange_explicit(flag, 0, memory_order_relaxed))
        signal_fd(fd);
}

static bool is_pow2(uint32_t v)
{
    return v && (v & (v - 1)) == 0;
}

struct runner *runner_create(struct eng *e, const struct runner_config *cfg)
{
    /* aligned_alloc: the rings' indices sit on their own cache lines. */
    struct runner *r = aligned_alloc(RING_CACHE_LINE, sizeof(struct runner));
    uint32_t in_cap, out_cap;

    if (!r)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->cfg = cfg ? *cfg
                 : (struct runner_config){-1, RUNNER_DEFAULT_SPIN_US, RUNNER_DEFAULT_IN,
                                          RUNNER_DEFAULT_OUT};
    in_cap = r->cfg.in_capacity ? r->cfg.in_capacity : RUNNER_DEFAULT_IN;
    out_cap = r->cfg.out_capacity ? r->cfg.out_capacity : RUNNER_DEFAULT_OUT;
    r->eng = e;
    r->in_fd = r->out_fd = -1;
    atomic_init(&r->cpu, -1);
    if (!is_pow2(in_cap) || !is_pow2(out_cap))
        goto fail;
    r->in_buf = malloc((size_t)in_cap * sizeof(struct runner_cmd));
    r->out_buf = malloc((size_t)out_cap * sizeof(struct runner_event));
    if (!r->in_buf || !r->out_buf)
        goto fail;
    ring_init(&r->in, r->in_buf, in_cap, sizeof(struct runner_cmd));
    ring_init(&r->out, r->out_buf, out_cap, sizeof(struct runner_event));
    r->in_fd = eventfd(0, EFD_CLOEXEC);
    r->out_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->in_fd < 0 || r->out_fd < 0)
        goto fail;
    return r;
fail:
    runner_destroy(r);
    return NULL;
}

/* Push every event to the output ring, waiting for room when it is full. */
static void publish(struct runner *r, const struct runner_event *evs, size_t n)
{
    while (n) {
        size_t k = ring_push(&r->out, evs, n);
        evs += k;
        n -= k;
        wake_if_sleeping(&r->consumer_waiting, r->out_fd);
        if (n) {
            if (atomic_load_explicit(&r->abandon, memory_order_relaxed))
                return;
            /* Full: the consumer is behind. Back off without burning a core. */
            struct timespec pause = {0, 20000};
            nanosleep(&pause, NULL);
        }
    }
}

/* Append one event to the staging array, publishing it first when full. */
static inline void stage(struct runner *r, size_t *used, const struct eng_event *ev, uint64_t tag)
{
    if (*used == RUNNER_STAGING) {
        publish(r, r->staging, *used);
        *used = 0;
    }
    r->staging[*used].ev = *ev;
    r->staging[*used].tag = tag;
    (*used)++;
}

/* Process one batch of commands; returns how many were taken. */
static size_t run_batch(struct runner *r)
{
    size_t n = ring_pop(&r->in, r->batch, RUNNER_BATCH), used = 0, events = 0;

    for (size_t i = 0; i < n; i++) {
        const struct eng_event *ev;
        size_t count;
        eng_clear_events(r->eng);
        if (eng_process(r->eng, &r->batch[i].cmd) < 0) {
            /* Not even room for one event: the engine is unchanged and the
               command took no sequence number. Answer it all the same, so
               its sender is not left waiting. */
            struct eng_event reject = {.type = ENG_EV_REJECTED,
                                       .reason = ENG_NO_MEMORY,
                                       .instrument = r->batch[i].cmd.instrument,
                                       .order_id = r->batch[i].cmd.order_id,
                                       .account = r->batch[i].cmd.account};
            memcpy(reject.coid, r->batch[i].cmd.coid, sizeof(reject.coid));
            stage(r, &used, &reject, r->batch[i].tag);
            events++;
            continue;
        }
        ev = eng_events(r->eng, &count);
        for (size_t k = 0; k < count; k++)
            stage(r, &used, &ev[k], r->batch[i].tag);
        events += count;
    }
    if (n) {
        /* Counted before the last publish: a consumer that has seen the
           events sees them counted (the ring's release orders these). */
        atomic_fetch_add_explicit(&r->commands, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->events, events, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->batches, 1, memory_order_relaxed);
    }
    if (used)
        publish(r, r->staging, used);
    return n;
}

/* Idle: poll for spin_us, then sleep until the producer wakes us. */
static void idle(struct runner *r)
{
    uint64_t until = now_us() + r->cfg.spin_us;

    for (unsigned i = 0;; i++) {
        if (ring_count(&r->in) || atomic_load_explicit(&r->stop, memory_order_relaxed))
            return;
        cpu_relax();
        if ((i & 255) == 255 && now_us() >= until)
            break;
    }
    atomic_store_explicit(&r->engine_sleeping, 1, memory_order_relaxed);
    /* Full fence: the flag is visible before we look at the ring again. */
    atomic_thread_fence(memory_order_seq_cst);
    if (!ring_count(&r->in) && !atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        uint64_t v;
        atomic_fetch_add_explicit(&r->sleeps, 1, memory_order_relaxed);
        while (read(r->in_fd, &v, sizeof(v)) < 0 && errno == EINTR)
            ;
    }
    atomic_store_explicit(&r->engine_sleeping, 0, memory_order_relaxed);
}

static void *engine_thread(void *arg)
{
    struct runner *r = arg;
    char name[16];

    snprintf(name, sizeof(name), "pyeng-cpu%d", (int)atomic_load(&r->cpu));
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        if (run_batch(r))
            continue;
        /* Acquire: a stop request comes after every command it covers. */
        if (atomic_load_explicit(&r->stop, memory_order_acquire) && !ring_count(&r->in))
            break;
        idle(r);
    }
    atomic_store_explicit(&r->running, 0, memory_order_release);
    /* The consumer may be waiting for the last events or for us to end. */
    atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed);
    signal_fd(r->out_fd);
    return NULL;
}

/*
 * Start the thread pinned to cfg.cpu when that is set and allowed; pinning is
 * a setting, not a requirement, so a CPU we may not use means no pinning
 * (stats report cpu -1).
 */
int runner_start(struct runner *r)
{
    pthread_attr_t attr;
    int rc = EINVAL;

    if (r->started) {
        errno = EBUSY;
        return -1;
    }
    atomic_store(&r->running, 1);
    if (r->cfg.cpu >= 0 && r->cfg.cpu < CPU_SETSIZE && pthread_attr_init(&attr) == 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(r->cfg.cpu, &set);
        if (pthread_attr_setaffinity_np(&attr, sizeof(set), &set) == 0) {
            atomic_store(&r->cpu, r->cfg.cpu);
            rc = pthread_create(&r->thread, &attr, engine_thread, r);
        }
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        atomic_store(&r->cpu, -1);
        rc = pthread_create(&r->thread, NULL, engine_thread, r);
    }
    if (rc != 0) {
        atomic_store(&r->running, 0);
        errno = rc;
        return -1;
    }
    r->started = true;
    return 0;
}

size_t runner_submit(struct runner *r, const struct runner_cmd *cmds, size_t n)
{
    size_t k = ring_push(&r->in, cmds, n);
    if (k)
        wake_if_sleeping(&r->engine_sleeping, r->in_fd);
    return k;
}

size_t runner_poll(struct runner *r, struct runner_event *out, size_t max)
{
    size_t n = ring_pop(&r->out, out, max);
    if (n || max == 0)
        return n;
    /* Empty: arm the wake-up, then look once more, so that events published
       between the first look and the arming are not slept through. */
    atomic_store_explicit(&r->consumer_waiting, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    n = ring_pop(&r->out, out, max);
    if (n)
        atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed);
    return n;
}

int runner_event_fd(const struct runner *r)
{
    return r->out_fd;
}

void runner_request_stop(struct runner *r)
{
    /* Release: every command submitted before is in the ring first. */
    atomic_store_explicit(&r->stop, 1, memory_order_release);
    signal_fd(r->in_fd);
}

void runner_destroy(struct runner *r)
{
    if (!r)
        return;
    if (r->started) {
        /* Whoever destroys the runner no longer polls: a thread waiting for
           room in a full output ring must not wait for ever. */
        atomic_store_explicit(&r->abandon, 1, memory_order_relaxed);
        runner_request_stop(r);
        pthread_join(r->thread, NULL);
    }
    if (r->in_fd >= 0)
        close(r->in_fd);
    if (r->out_fd >= 0)
        close(r->out_fd);
    free(r->in_buf);
    free(r->out_buf);
    free(r);
}

void runner_get_stats(struct runner *r, struct runner_stats *out)
{
    *out = (struct runner_stats){
        .commands = atomic_load_explicit(&r->commands, memory_order_relaxed),
        .events = atomic_load_explicit(&r->events, memory_order_relaxed),
        .batches = atomic_load_explicit(&r->batches, memory_order_relaxed),
        .sleeps = atomic_load_explicit(&r->sleeps, memory_order_relaxed),
        .in_queued = ring_count(&r->in),
        .out_queued = ring_count(&r->out),
        .cpu = atomic_load_explicit(&r->cpu, memory_order_relaxed),
        .running = atomic_load_explicit(&r->running, memory_order_acquire),
    };
}
