/*
 * runner.c - the engine thread, the consumer's side and the wake protocol.
 * The journal thread is journal_writer.c's, the replication stage
 * replication.c's.
 *
 * Threads: the producer (submit), the consumer (poll), the engine thread and,
 * with a journal directory, the journal thread. The engine is touched only by
 * the engine thread once it runs.
 *
 *   producer --in ring--> engine thread --out ring--> consumer
 *                              |                         ^
 *                         jnl ring                       | (events released
 *                              v                         |  once journaled)
 *                        journal thread ---- journaled seq
 *
 * Durability: the engine thread hands each command it has sequenced to the
 * journal thread and goes on with the next; it never waits for the disk. The
 * journal thread writes whatever has gathered as one batch, fsyncs once (per
 * policy) and advances `journaled`. runner_poll releases an event only when
 * the command that caused it is journaled, so no effect of a command (ack,
 * fill, market data) leaves before the command is in the journal. Before it
 * writes records whose seq, order ids or trade ids pass the high-water mark,
 * the journal thread moves the mark a block beyond them (see eng_mark_read),
 * so nothing that leaves is above the mark on disk (journal_writer.c).
 *
 * Idle strategy: with no commands the engine thread polls its input ring for
 * `spin_us`, then sleeps in a blocking read of an eventfd that the producer
 * writes only when it sees the thread asleep. The journal thread sleeps the
 * same way at once (it waits for the disk anyway). The consumer arms a flag
 * before it waits on its own eventfd, and the engine and journal threads
 * write that eventfd only when they publish to an armed (idle) consumer:
 * under load, nobody makes a system call per command or per event.
 *
 * Replication (cluster mode, replication.c): instead of a journal, the
 * engine thread hands each command it sequences to a replication consumer
 * (the thread that stores it in the shard's replicated log), and an event is
 * released once the log holds its command (`replicated`).
 *
 * Batch stamps (runner_stamp_batches, for the server's latency breakdown):
 * the engine thread reads the clock when it takes a batch and when the
 * batch's events first leave, and publishes both as one RUNNER_EV_BATCH
 * after the batch's events. Off, they cost a relaxed load per batch.
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
#include "journal_writer.h"
#include "runner_int.h"

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
    if (cfg) {
        r->cfg = *cfg;
    } else {
        r->cfg.cpu = -1;
        r->cfg.spin_us = RUNNER_DEFAULT_SPIN_US;
    }
    in_cap = r->cfg.in_capacity ? r->cfg.in_capacity : RUNNER_DEFAULT_IN;
    out_cap = r->cfg.out_capacity ? r->cfg.out_capacity : RUNNER_DEFAULT_OUT;
    r->eng = e;
    r->out_fd = r->repl_fd = r->engine_sleep.fd = r->jw.fd = r->jw.sleep.fd = -1;
    atomic_init(&r->cpu, -1);
    atomic_init(&r->jw.journaled, eng_seq(e));
    atomic_init(&r->replicated, eng_seq(e));
    atomic_init(&r->seq, eng_seq(e));
    /* One durable log: a journal or the replicated log, not both. */
    if (!is_pow2(in_cap) || !is_pow2(out_cap) || r->cfg.fsync > JNL_FSYNC_ALWAYS ||
        (r->cfg.journal_dir && r->cfg.replicate)) {
        errno = EINVAL;
        goto fail;
    }
    r->in_buf = malloc((size_t)in_cap * sizeof(struct runner_cmd));
    r->out_buf = malloc((size_t)out_cap * sizeof(struct runner_event));
    if (!r->in_buf || !r->out_buf)
        goto fail;
    ring_init(&r->in, r->in_buf, in_cap, sizeof(struct runner_cmd));
    ring_init(&r->out, r->out_buf, out_cap, sizeof(struct runner_event));
    r->engine_sleep.fd = eventfd(0, EFD_CLOEXEC);
    r->out_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->engine_sleep.fd < 0 || r->out_fd < 0)
        goto fail;
    if (r->cfg.journal_dir && jw_open(r, r->cfg.journal_dir) != 0)
        goto fail;
    if (r->cfg.replicate) {
        r->repl_buf = malloc(REPL_RING * sizeof(struct jnl_item));
        r->repl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (!r->repl_buf || r->repl_fd < 0)
            goto fail;
        ring_init(&r->repl, r->repl_buf, REPL_RING, sizeof(struct jnl_item));
    }
    r->cfg.journal_dir = NULL; /* the caller's string; we keep our copy */
    return r;
fail:
    runner_destroy(r);
    return NULL;
}

/* ---- engine thread -------------------------------------------------------- */

/*
 * Push all `n` records of `items` into `ring`, waking its consumer (which
 * says it sleeps in `asleep` and waits on `fd`); when the ring is full the
 * consumer is behind (the dispatcher, the disk, the log): back off without
 * burning a core until there is room, or the consumer is gone.
 */
static void push_all(struct runner *r, struct ring *ring, const void *items, size_t n, _Atomic int *asleep,
                     int fd)
{
    const char *p = items;

    while (n) {
        size_t k = ring_push(ring, p, n);
        p += k * ring->elem;
        n -= k;
        wake_if_sleeping(asleep, fd);
        if (n) {
            if (atomic_load_explicit(&r->abandon, memory_order_relaxed))
                return;
            nap_us(20);
        }
    }
}

static void publish(struct runner *r, const struct runner_event *evs, size_t n)
{
    push_all(r, &r->out, evs, n, &r->consumer_waiting, r->out_fd);
}

static void journal_push(struct runner *r, const struct jnl_item *items, size_t n)
{
    push_all(r, &r->jw.ring, items, n, &r->jw.sleep.asleep, r->jw.sleep.fd);
}

static void repl_push(struct runner *r, const struct jnl_item *items, size_t n)
{
    push_all(r, &r->repl, items, n, &r->repl_waiting, r->repl_fd);
}

/* Hand the staged items to the journal thread and the replication stage. */
static void flush_stages(struct runner *r)
{
    if (r->jused) {
        journal_push(r, r->jstage, r->jused);
        r->jused = 0;
    }
    if (r->rused) {
        repl_push(r, r->rstage, r->rused);
        r->rused = 0;
    }
}

/* Stage command `c`, just sequenced, for the durable log. */
static void stage_record(struct runner *r, const struct eng_cmd *c)
{
    struct jnl_item *it;

    /* None once the log failed: a log with a gap would replay later commands under other seqs. */
    if (atomic_load_explicit(&r->journal_errno, memory_order_relaxed))
        return;
    if (runner__journaling(r)) {
        it = &r->jstage[r->jused++];
    } else if (runner__replicating(r) &&
               /* Acquire: a command that came from the log is marked stored before it is submitted. */
               eng_seq(r->eng) > atomic_load_explicit(&r->replicated, memory_order_acquire)) {
        it = &r->rstage[r->rused++];
    } else {
        return;
    }
    eng_get_counters(r->eng, &it->counters);
    it->rec.seq = it->counters.seq;
    it->rec.ts = c->ts;
    it->rec.cmd = *c;
    it->snapshot = NULL;
}

/*
 * Append one event to the staging array, publishing it first when full. The
 * journal (or replication) items staged so far go first: the consumer can
 * only take events whose records are stored, so publishing events whose
 * records were still here could fill the output ring with events nobody can
 * take, while we wait for room in it with the records in hand.
 */
static inline void stage_part(struct runner *r, size_t *used, const struct eng_event *ev, uint64_t tag, bool last)
{
    if (*used == RUNNER_STAGING) {
        if (r->batch_start_ns && !r->batch_end_ns)
            r->batch_end_ns = stamp_ns(); /* the batch's first events leave now */
        flush_stages(r);
        publish(r, r->staging, *used);
        *used = 0;
    }
    r->staging[*used].ev = *ev;
    if (last)
        r->staging[*used].ev.flags |= RUNNER_EV_F_LAST;
    r->staging[*used].tag = tag;
    (*used)++;
}

/* An event that is all its command's (or the runner's own). */
static inline void stage(struct runner *r, size_t *used, const struct eng_event *ev, uint64_t tag)
{
    stage_part(r, used, ev, tag, true);
}

/*
 * Snapshot the engine's state now (after command eng_seq) for the journal
 * thread to write. Returns 0 or an errno: ENOTSUP without a durable log, the
 * log's errno once it failed, ENOMEM when the state could not be serialized
 * (counted in snapshot_failures; the log goes on without this snapshot).
 */
static int take_snapshot(struct runner *r)
{
    struct jnl_item it;
    size_t len;
    void *buf;
    int err;

    if (!runner__journaling(r) && !runner__replicating(r))
        return ENOTSUP;
    /* Nor a snapshot: it could hold commands whose records the log lacks. */
    err = atomic_load_explicit(&r->journal_errno, memory_order_relaxed);
    if (err)
        return err;
    buf = eng_snapshot_serialize(r->eng, &len);
    if (!buf) {
        atomic_fetch_add_explicit(&r->snapshot_failures, 1, memory_order_relaxed);
        return ENOMEM;
    }
    /* Items ahead of it in the batch go first: the snapshot follows them. */
    flush_stages(r);
    memset(&it, 0, sizeof(it));
    it.rec.seq = eng_seq(r->eng);
    it.snapshot = buf;
    it.snapshot_len = len;
    if (runner__journaling(r))
        journal_push(r, &it, 1);
    else
        repl_push(r, &it, 1);
    r->since_snapshot = 0;
    r->snapshots_taken++;
    return 0;
}

/*
 * The snapshot due every cfg.snapshot_every commands. It is due again an
 * interval later whether it was taken or not: one that could not be
 * serialized (out of memory) is tried again then, not at every command while
 * memory is short. Returns that failure's errno, for the consumer to hear of,
 * or 0 (also when there is no durable log, or it failed: that failure is
 * reported as such).
 */
static int take_due_snapshot(struct runner *r)
{
    int err;

    r->since_snapshot = 0;
    if (!runner__journaling(r) && !runner__replicating(r))
        return 0;
    err = take_snapshot(r);
    return err && !atomic_load_explicit(&r->journal_errno, memory_order_relaxed) ? err : 0;
}

/*
 * RUNNER_CTL_STATE_HASH: hash the state after the last command into `out`
 * (RUNNER_EV_STATE_HASH). A check (qty nonzero) compares it with order_id;
 * otherwise it is a checkpoint: with replication it goes into the log, right
 * after the record of the command it follows, for the other replicas to
 * check against.
 */
static void hash_state(struct runner *r, const struct eng_cmd *c, struct eng_event *out)
{
    uint64_t hash = eng_state_hash(r->eng);

    memset(out, 0, sizeof(*out));
    out->type = RUNNER_EV_STATE_HASH;
    out->seq = eng_seq(r->eng);
    out->order_id = hash;
    out->qty = c->qty != 0;
    out->maker_order_id = c->qty ? c->order_id : 0;
    if (!c->qty && runner__replicating(r)) {
        struct jnl_item *it = &r->rstage[r->rused++];
        memset(it, 0, sizeof(*it));
        it->rec.seq = out->seq;
        it->rec.cmd.type = RUNNER_CTL_STATE_HASH;
        it->rec.cmd.order_id = hash;
        eng_get_counters(r->eng, &it->counters);
    }
}

/* With stamps on, stage RUNNER_EV_BATCH for the batch whose commands
   took seqs from `first_seq` on (none: nothing staged). */
static void stage_batch_stamp(struct runner *r, size_t *used, uint64_t first_seq, size_t n)
{
    struct eng_event stamp = {.type = RUNNER_EV_BATCH, .seq = eng_seq(r->eng), .order_id = first_seq,
                              .leaves = (int64_t)n};

    if (!r->batch_end_ns)
        r->batch_end_ns = stamp_ns();
    stamp.price = r->batch_start_ns;
    stamp.qty = r->batch_end_ns;
    if (stamp.seq >= first_seq)
        stage(r, used, &stamp, 0);
    r->batch_start_ns = 0;
}

/* Process one batch of commands; returns how many were taken. */
static size_t run_batch(struct runner *r)
{
    size_t n = ring_pop(&r->in, r->batch, RUNNER_BATCH), used = 0, events = 0;
    uint64_t first_seq = eng_seq(r->eng) + 1;

    /* Relaxed: a switch that takes effect a batch later is as good. */
    if (n && atomic_load_explicit(&r->stamp_batches, memory_order_relaxed)) {
        r->batch_start_ns = stamp_ns();
        r->batch_end_ns = 0;
    }

    for (size_t i = 0; i < n; i++) {
        const struct runner_cmd *c = &r->batch[i];
        const struct eng_event *ev;
        size_t count;
        int snapshot_err = 0;

        if (c->cmd.type == RUNNER_CTL_SNAPSHOT) {
            struct eng_event done = {.type = RUNNER_EV_SNAPSHOT, .seq = eng_seq(r->eng)};
            done.leaves = take_snapshot(r);
            done.order_id = r->snapshots_taken; /* released once that many are written */
            stage(r, &used, &done, c->tag);
            events++;
            continue;
        }
        if (c->cmd.type == RUNNER_CTL_STATE_HASH) {
            struct eng_event hashed;
            hash_state(r, &c->cmd, &hashed);
            stage(r, &used, &hashed, c->tag);
            events++;
            continue;
        }
        eng_clear_events(r->eng);
        if (eng_process(r->eng, &c->cmd) < 0) {
            /* A replica cannot pass over a command of its log: its seqs
               would fall behind the log's. It stops releasing anything. */
            if (runner__replicating(r))
                runner__fail(r, ENOMEM);
            /* Not even room for one event: the engine is unchanged and the
               command took no sequence number. Answer it all the same, so
               its sender is not left waiting. */
            struct eng_event reject = {.type = ENG_EV_REJECTED,
                                       .reason = ENG_NO_MEMORY,
                                       .instrument = c->cmd.instrument,
                                       .order_id = c->cmd.order_id,
                                       .account = c->cmd.account};
            memcpy(reject.coid, c->cmd.coid, sizeof(reject.coid));
            stage(r, &used, &reject, c->tag);
            events++;
            continue;
        }
        ev = eng_events(r->eng, &count);
        /* Sequenced, but out of memory: replayed where memory is to spare, the
           command would run otherwise and every later id would shift. The
           durable log fails before its record, as on a write error, so that
           nothing from it on is stored or released (nor what the journal
           thread has not written by the time it sees the failure). */
        if ((runner__journaling(r) || runner__replicating(r)) && jnl__out_of_memory(ev, count))
            runner__fail(r, ENOMEM);
        stage_record(r, &c->cmd);
        if (r->cfg.snapshot_every && ++r->since_snapshot >= r->cfg.snapshot_every)
            snapshot_err = take_due_snapshot(r);
        for (size_t k = 0; k < count; k++)
            stage_part(r, &used, &ev[k], c->tag, k + 1 == count);
        events += count;
        if (snapshot_err) {
            /* Nobody asked for it: tag 0. */
            struct eng_event failed = {.type = RUNNER_EV_SNAPSHOT, .seq = eng_seq(r->eng), .leaves = snapshot_err,
                                       .order_id = r->snapshots_taken};
            stage(r, &used, &failed, 0);
            events++;
        }
    }
    if (r->batch_start_ns)
        stage_batch_stamp(r, &used, first_seq, n);
    /* The log first, so the disk write (or the append) starts before we publish. */
    flush_stages(r);
    if (n) {
        /* Counted before the last publish: a consumer that has seen the
           events sees them counted (the ring's release orders these). */
        atomic_fetch_add_explicit(&r->commands, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->events, events, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->batches, 1, memory_order_relaxed);
        atomic_store_explicit(&r->seq, eng_seq(r->eng), memory_order_relaxed);
    }
    if (used)
        publish(r, r->staging, used);
    return n;
}

/*
 * Idle: poll for spin_us, then sleep until the producer wakes us. Only after
 * a burst of at least RUNNER_SPIN_MIN_COMMANDS commands: traffic that dense
 * brings more within microseconds, and a poll catches it without a sleep and
 * a wake-up. Sparser traffic would have the thread poll in vain between
 * commands, taking a CPU that the threads feeding it need on a small machine
 * (on 2 CPUs, polling after every command made the server's latency worse).
 */
static void idle(struct runner *r, size_t burst)
{
    uint64_t until = now_us() + r->cfg.spin_us;

    for (unsigned i = 0; burst >= RUNNER_SPIN_MIN_COMMANDS; i++) {
        if (ring_count(&r->in) || atomic_load_explicit(&r->stop, memory_order_relaxed))
            return;
        cpu_relax();
        if ((i & 255) == 255 && now_us() >= until)
            break;
    }
    sleep_until_work(&r->engine_sleep, &r->in, &r->stop, &r->sleeps);
}

static void *engine_thread(void *arg)
{
    struct runner *r = arg;
    char name[16];

    snprintf(name, sizeof(name), "pyeng-cpu%d", (int)atomic_load(&r->cpu));
    pthread_setname_np(pthread_self(), name);
    size_t burst = 0; /* commands since the thread last went idle */
    for (;;) {
        size_t n = run_batch(r);
        if (n) {
            burst += n;
            continue;
        }
        /* Acquire: a stop request comes after every command it covers. */
        if (atomic_load_explicit(&r->stop, memory_order_acquire) && !ring_count(&r->in))
            break;
        idle(r, burst);
        burst = 0;
    }
    if (runner__journaling(r))
        jw_finish(r); /* the journal thread ends the runner */
    else
        runner__ended(r);
    return NULL;
}

/* ---- lifecycle and the consumer --------------------------------------------- */

/*
 * Start the engine thread pinned to cfg.cpu when that is set and allowed;
 * pinning is a setting, not a requirement, so a CPU we may not use means no
 * pinning (stats report cpu -1). Then the journal thread, unpinned.
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
    if (runner__journaling(r)) {
        rc = jw_start(r);
        if (rc != 0) {
            atomic_store(&r->running, 0);
            errno = rc;
            return -1;
        }
        rc = EINVAL;
    }
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
        if (runner__journaling(r)) {
            jw_finish(r);
            jw_join(r);
        }
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
        wake_if_sleeping(&r->engine_sleep.asleep, r->engine_sleep.fd);
    return k;
}

/* May this event leave? Only once its command is in the durable log (and,
   for a snapshot's answer, the snapshot is written). */
static bool released(const void *record, const void *ctx)
{
    const struct runner_event *x = record;
    const struct runner *r = ctx;
    if (runner__journaling(r) && x->ev.type == RUNNER_EV_SNAPSHOT && x->ev.leaves == 0)
        return atomic_load_explicit(&r->snapshots, memory_order_acquire) >= x->ev.order_id ||
               atomic_load_explicit(&r->journal_errno, memory_order_acquire);
    /* Acquire: pairs with the release of `journaled` (journal thread) or
       `replicated` (replication consumer). A replica's snapshot is stored
       off to the side, by its consumer, and holds up nothing. */
    if (runner__journaling(r))
        return x->ev.seq <= atomic_load_explicit(&r->jw.journaled, memory_order_acquire);
    return x->ev.seq <= atomic_load_explicit(&r->replicated, memory_order_acquire) &&
           !atomic_load_explicit(&r->journal_errno, memory_order_acquire);
}

static size_t take(struct runner *r, struct runner_event *out, size_t max)
{
    if (!runner__journaling(r) && !runner__replicating(r))
        return ring_pop(&r->out, out, max);
    return ring_pop_if(&r->out, out, max, released, r);
}

size_t runner_poll(struct runner *r, struct runner_event *out, size_t max)
{
    size_t n = take(r, out, max);
    if (n || max == 0)
        return n;
    /* Nothing (to release): arm the wake-up, then look once more, so that
       events published or journaled between the first look and the arming
       are not slept through. */
    atomic_store_explicit(&r->consumer_waiting, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    n = take(r, out, max);
    if (n)
        atomic_store_explicit(&r->consumer_waiting, 0, memory_order_relaxed);
    return n;
}

void runner_stamp_batches(struct runner *r, int on)
{
    atomic_store_explicit(&r->stamp_batches, on != 0, memory_order_relaxed);
}

int runner_event_fd(const struct runner *r)
{
    return r->out_fd;
}

int runner_journal_error(const struct runner *r)
{
    return atomic_load_explicit(&r->journal_errno, memory_order_acquire);
}

const struct runner_api *runner_api(void)
{
    static const struct runner_api api = {
        .size = sizeof(api),
        .submit = runner_submit,
        .poll = runner_poll,
        .journal_error = runner_journal_error,
        .event_fd = runner_event_fd,
    };
    return &api;
}

void runner_request_stop(struct runner *r)
{
    /* Release: every command submitted before is in the ring first. */
    atomic_store_explicit(&r->stop, 1, memory_order_release);
    signal_fd(r->engine_sleep.fd);
}

void runner_join(struct runner *r)
{
    if (!r->started || r->joined)
        return;
    /* Whoever joins the runner no longer polls: a thread waiting for room in
       a full output ring must not wait for ever. */
    atomic_store_explicit(&r->abandon, 1, memory_order_relaxed);
    runner_request_stop(r);
    pthread_join(r->thread, NULL);
    if (runner__journaling(r))
        jw_join(r);
    r->joined = true;
}

void runner_destroy(struct runner *r)
{
    if (!r)
        return;
    runner_join(r);
    jw_close(r);
    if (r->engine_sleep.fd >= 0)
        close(r->engine_sleep.fd);
    if (r->out_fd >= 0)
        close(r->out_fd);
    if (r->repl_fd >= 0)
        close(r->repl_fd);
    if (r->repl_buf) {
        /* Snapshots nobody took are ours to free. */
        struct jnl_item it;
        while (ring_pop(&r->repl, &it, 1))
            eng_free_buffer(it.snapshot);
        if (r->repl_has_pending)
            eng_free_buffer(r->repl_pending.snapshot);
    }
    free(r->in_buf);
    free(r->out_buf);
    free(r->repl_buf);
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
        .journaled = atomic_load_explicit(&r->jw.journaled, memory_order_relaxed),
        .journal_syncs = atomic_load_explicit(&r->jw.syncs, memory_order_relaxed),
        .journal_sync_ns = atomic_load_explicit(&r->jw.sync_ns, memory_order_relaxed),
        .seq = atomic_load_explicit(&r->seq, memory_order_relaxed),
        .snapshots = atomic_load_explicit(&r->snapshots, memory_order_relaxed),
        .snapshot_seq = atomic_load_explicit(&r->snapshot_seq, memory_order_relaxed),
        .snapshot_failures = atomic_load_explicit(&r->snapshot_failures, memory_order_relaxed),
        .journal_errno = atomic_load_explicit(&r->journal_errno, memory_order_relaxed),
        .replicated = atomic_load_explicit(&r->replicated, memory_order_relaxed),
    };
}
