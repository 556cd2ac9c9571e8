/*
 * replication.c - the runner's replication stage: the seam between one
 * replica's engine thread and the replicated log (a shard's stream in
 * cluster mode).
 *
 *   leader:    engine thread --repl ring--> replication consumer --> log
 *                                                   |
 *              runner_poll releases events <-- `replicated` (runner_repl_done)
 *
 *   follower:  log --> runner_submit_log --in ring--> engine thread
 *
 * Records are the journal's (struct jnl_record, CRC-32C sealed), so the log
 * holds exactly what a journal segment would. The engine thread stages a
 * record for every command it sequences past `replicated` (runner.c); the
 * consumer takes them here, stores them and advances `replicated`, which
 * releases the commands' events. A follower marks the commands it reads from
 * the log as stored before it submits them, so the engine thread hands none
 * of them out again and their events leave at once: the same runner serves
 * both roles, and a follower that becomes the leader only starts taking.
 *
 * Threads: runner_repl_take runs on the one replication consumer thread,
 * runner_submit_log on the producer thread (the one that calls
 * runner_submit); runner_repl_done and runner_repl_snapshot_done on either.
 */
#define _GNU_SOURCE
#include <string.h>

#include "runner_int.h"

/* Copy records out until the ring is empty, `max` are out, or a snapshot is
   next (then taken into *snap when it is the first item). */
static size_t take_records(struct runner *r, struct jnl_record *out, size_t max, struct runner_snapshot *snap)
{
    struct jnl_item it;
    size_t n = 0;

    /* One item at a time: a snapshot must not be popped along with records. */
    while (n < max && ring_pop(&r->repl, &it, 1) == 1) {
        if (it.snapshot) {
            snap->buf = it.snapshot;
            snap->len = it.snapshot_len;
            snap->seq = it.rec.seq;
            if (n == 0)
                return 0;
            /* Records came first: hand them out now, the snapshot next time. */
            r->repl_pending = it;
            r->repl_has_pending = true;
            snap->buf = NULL;
            return n;
        }
        out[n] = it.rec;
        jnl__seal(&out[n]);
        n++;
    }
    return n;
}

size_t runner_repl_take(struct runner *r, struct jnl_record *out, size_t max, struct runner_snapshot *snap)
{
    size_t n;

    snap->buf = NULL;
    if (r->repl_has_pending) {
        r->repl_has_pending = false;
        snap->buf = r->repl_pending.snapshot;
        snap->len = r->repl_pending.snapshot_len;
        snap->seq = r->repl_pending.rec.seq;
        return 0;
    }
    n = take_records(r, out, max, snap);
    if (n || snap->buf || max == 0)
        return n;
    /* Nothing: arm the wake-up, then look once more (see runner_poll). */
    atomic_store_explicit(&r->repl_waiting, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    n = take_records(r, out, max, snap);
    if (n || snap->buf)
        atomic_store_explicit(&r->repl_waiting, 0, memory_order_relaxed);
    return n;
}

int runner_repl_fd(const struct runner *r)
{
    return r->repl_fd;
}

void runner_repl_done(struct runner *r, uint64_t seq)
{
    uint64_t cur = atomic_load_explicit(&r->replicated, memory_order_relaxed);

    /* Release: the consumer that sees the new mark may send the effects. */
    while (cur < seq &&
           !atomic_compare_exchange_weak_explicit(&r->replicated, &cur, seq, memory_order_release,
                                                  memory_order_relaxed))
        ;
    if (cur < seq)
        wake_if_sleeping(&r->consumer_waiting, r->out_fd);
}

void runner_repl_snapshot_done(struct runner *r, uint64_t seq)
{
    atomic_store_explicit(&r->snapshot_seq, seq, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->snapshots, 1, memory_order_release);
    wake_if_sleeping(&r->consumer_waiting, r->out_fd);
}

/* The seq a record asks the engine to be at: a command's own, or for a
   checkpoint, the one after the command it follows. */
static uint64_t record_next(const struct jnl_record *rec)
{
    return rec->cmd.type == RUNNER_CTL_STATE_HASH ? rec->seq + 1 : rec->seq;
}

int runner_submit_log(struct runner *r, const struct jnl_record *recs, size_t n, uint64_t tag, size_t *taken,
                      uint64_t *next_seq)
{
    enum { STAGE = 64 };
    struct runner_cmd batch[STAGE];
    size_t from[STAGE]; /* the record each staged command came from */
    size_t i = 0, staged = 0, pushed;
    uint64_t next = *next_seq;
    int rc = ENG_OK;

    *taken = 0;
    for (;;) {
        if (i < n && staged < STAGE && rc == ENG_OK) {
            const struct jnl_record *rec = &recs[i];
            uint64_t at = record_next(rec);

            if (!jnl__record_valid(rec) || at > next || (at < next && staged)) {
                rc = ENG_CORRUPT;
            } else if (at < next) {
                *taken = ++i; /* applied before */
            } else {
                batch[staged].cmd = rec->cmd;
                if (rec->cmd.type == RUNNER_CTL_STATE_HASH)
                    batch[staged].cmd.qty = 1; /* a check of the hash in order_id */
                else
                    next++;
                batch[staged].tag = tag;
                from[staged++] = i++;
            }
            continue;
        }
        if (staged == 0)
            break;
        runner_repl_done(r, next - 1);
        pushed = runner_submit(r, batch, staged);
        if (pushed < staged) {
            /* The input ring is full: the rest another time. */
            *taken = from[pushed];
            *next_seq = record_next(&recs[from[pushed]]);
            return ENG_OK;
        }
        *taken = from[staged - 1] + 1;
        staged = 0;
    }
    *next_seq = next;
    return rc;
}
