/*
 * pyengine_runner.h - the runner: an engine on a thread of its own, fed and
 * drained through rings, journaled or replicated. Part of pyengine.h, which
 * is what users include.
 */
#ifndef PYENGINE_RUNNER_H
#define PYENGINE_RUNNER_H

#ifndef PYENGINE_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

#include "pyengine_engine.h"
#include "pyengine_journal.h"

/*
 * ---- The engine thread ---------------------------------------------------
 *
 * A runner runs one engine on a thread of its own, fed commands through a
 * lock-free single-producer/single-consumer ring and answering with events
 * through another. Each command carries a caller's tag that all its events
 * repeat, so a server can route them. One thread submits, one thread polls
 * (they may be the same thread). The engine thread never calls back.
 */
struct runner_cmd {
    struct eng_cmd cmd;
    uint64_t tag;
};

struct runner_event {
    struct eng_event ev;
    uint64_t tag; /* the tag of the command that caused it */
};

/* In ev.flags, beside the engine's enum eng_event_flags (bits it never
   uses): the last event of its command (of a control, or the runner's own
   event). A command's events may be published, and polled, in more than
   one part: a consumer knows from this one that it has them all. */
enum { RUNNER_EV_F_LAST = 0x80 };

struct runner_config {
    int32_t cpu;           /* CPU to pin the engine thread to; -1: do not pin */
    uint32_t spin_us;      /* how long an idle engine thread polls before it sleeps */
    uint32_t in_capacity;  /* commands the input ring holds, a power of two */
    uint32_t out_capacity; /* events the output ring holds, a power of two */
    /* Durability. With a journal directory, every command is journaled by a
       journal thread, and events come out of runner_poll only once the
       command that caused them is in the journal (per `fsync`). */
    const char *journal_dir;   /* NULL: no journal */
    uint32_t fsync;            /* enum jnl_fsync */
    uint32_t keep_segments;    /* nonzero: keep the segments and snapshots a newer
                                  snapshot covers (default: remove them) */
    uint64_t snapshot_every;   /* snapshot after this many commands; 0: never. One
                                  that cannot be taken (out of memory) is tried
                                  again after as many more */
    /* Replication (instead of a journal): every command the engine sequences
       goes to one replication consumer (runner_repl_take), and events come
       out of runner_poll only once the replicated log holds their command
       (runner_repl_done). */
    uint32_t replicate;        /* nonzero: the replication stage */
    uint32_t reserved;
};

/* A command that is not for the engine but for the runner. */
enum runner_control {
    RUNNER_CTL_SNAPSHOT = 128,  /* snapshot now; answers RUNNER_EV_SNAPSHOT */
    RUNNER_CTL_STATE_HASH = 129 /* hash the state now (eng_state_hash); a
                                   check (qty 1) of the hash in order_id, or a
                                   checkpoint (qty 0), which with replication
                                   also goes into the log; answers
                                   RUNNER_EV_STATE_HASH */
};

/* An event that is not the engine's: the runner's answer to a control. */
enum runner_event_type {
    RUNNER_EV_SNAPSHOT = 128,  /* seq: the snapshot's; leaves: 0, or an errno;
                                  order_id: its number, counting every snapshot
                                  the runner has taken. Also, tag 0, for an
                                  automatic one (snapshot_every) that could not
                                  be taken: leaves ENOMEM */
    RUNNER_EV_STATE_HASH = 129 /* seq: the state's; order_id: its hash;
                                  qty: 1 for a check, of maker_order_id */
};

struct runner_stats {
    uint64_t commands; /* processed */
    uint64_t events;   /* published */
    uint64_t batches;  /* command batches taken from the input ring */
    uint64_t sleeps;   /* times the engine thread went to sleep when idle */
    uint64_t in_queued;  /* commands waiting in the input ring */
    uint64_t out_queued; /* events waiting in the output ring */
    int32_t cpu;       /* the CPU the thread is pinned to, or -1 */
    int32_t running;   /* 1 while the engine thread runs */
    uint64_t journaled;      /* seq up to which the journal is written (and synced per policy) */
    uint64_t journal_syncs;  /* fsyncs done */
    uint64_t snapshots;      /* snapshot files written */
    uint64_t snapshot_seq;   /* seq of the last one */
    int32_t journal_errno;   /* nonzero: the journal failed; events are held */
    int32_t reserved;
    uint64_t replicated;     /* seq up to which the replicated log holds the commands */
    uint64_t journal_sync_ns; /* time spent in the journal's fsyncs, all together */
    uint64_t seq;            /* the engine's last seq, as of its last command batch */
    uint64_t snapshot_failures; /* snapshots, requested or automatic, that could not be
                                   taken (out of memory); the journal goes on without them */
};


struct runner;

/*
 * Create a runner for `e`, which must outlive it and which nobody else may use
 * from runner_start() until runner_destroy(). Returns NULL when out of memory,
 * out of file descriptors, or for a capacity that is not a power of two.
 */
struct runner *runner_create(struct eng *e, const struct runner_config *cfg);
/* Start the engine thread. Returns 0, or -1 (errno set). */
int runner_start(struct runner *r);
/*
 * Producer: queue up to `n` commands; returns how many fit. Wakes a sleeping
 * engine thread. Can't block.
 */
size_t runner_submit(struct runner *r, const struct runner_cmd *cmds, size_t n);
/*
 * Consumer: take up to `max` events. When there are none it returns 0 having
 * armed the wake-up: the descriptor of runner_event_fd() then becomes readable
 * as soon as events arrive (read it to reset it, then poll again).
 */
size_t runner_poll(struct runner *r, struct runner_event *out, size_t max);
/* The eventfd the consumer waits on (non-blocking, close-on-exec). */
int runner_event_fd(const struct runner *r);
/*
 * 0 while the journal works; once a write, sync or snapshot has failed, its
 * errno. From then on no event is released (nothing after the failure is
 * durable): the consumer should stop the service. Check it after a
 * runner_poll that returned 0 and before waiting: a failure after that wakes
 * the consumer.
 */
int runner_journal_error(const struct runner *r);
/*
 * Ask the engine thread to stop once every queued command is processed and
 * its events published; the consumer must keep polling until
 * runner_stats().running is 0 and no events are left. Can't fail.
 */
void runner_request_stop(struct runner *r);
/*
 * Stop and join the engine thread and the journal's (whose last sync, at the
 * stop, may fail: runner_journal_error says so after this); events that no
 * longer fit in a full output ring are dropped (call it after draining).
 * Commands submitted after it are never run. Can't fail; a second call does
 * nothing.
 */
void runner_join(struct runner *r);
/* runner_join, then free the runner, not the engine. `r` may be NULL. */
void runner_destroy(struct runner *r);
void runner_get_stats(struct runner *r, struct runner_stats *out);

/*
 * The producer's and the consumer's fast paths as a table of function
 * pointers, for a second binding in the same process (the CPython extension
 * pyengine._server feeds the input ring and drains the output ring through
 * it instead of carrying a copy of the runner). `size` is
 * sizeof(struct runner_api); fields are only ever appended.
 */
struct runner_api {
    size_t size;
    size_t (*submit)(struct runner *r, const struct runner_cmd *cmds, size_t n);
    size_t (*poll)(struct runner *r, struct runner_event *out, size_t max);
    int (*journal_error)(const struct runner *r);
    int (*event_fd)(const struct runner *r);
};
const struct runner_api *runner_api(void);

/*
 * ---- Replication ---------------------------------------------------------
 *
 * With runner_config.replicate the runner is one replica of a replicated log
 * (a shard's stream in cluster mode). The leader's commands go out: every
 * command the engine sequences past `replicated` is handed, as a sealed
 * struct jnl_record (the journal's record format), to one consumer thread,
 * which stores it in the log and then says so; events are released only
 * then. A follower's commands come in: runner_submit_log feeds records read
 * from the log, which are stored already and are not handed out again.
 */

/* A snapshot the replication stage took (consumer-owned buffer). */
struct runner_snapshot {
    void *buf;    /* eng_snapshot_serialize's; free it with eng_free_buffer */
    size_t len;
    uint64_t seq; /* the state after this command */
};
/*
 * Replication consumer: copy up to `max` sealed records out, in seq order. A
 * snapshot stops the copy: when it is next, returns 0 with snap->buf set (the
 * caller owns it, and calls runner_repl_snapshot_done once it is stored).
 * Returns 0 with snap->buf NULL when nothing waits, having armed the wake-up:
 * runner_repl_fd() becomes readable when more arrives.
 */
size_t runner_repl_take(struct runner *r, struct jnl_record *out, size_t max, struct runner_snapshot *snap);
/* The eventfd the replication consumer waits on (non-blocking, close-on-exec). */
int runner_repl_fd(const struct runner *r);
/* The log holds every command up to `seq`: release their events. Never lowers
   the mark; any thread. Can't fail. */
void runner_repl_done(struct runner *r, uint64_t seq);
/* A snapshot from runner_repl_take has been dealt with (stored, or not: the
   consumer reports that); releases the answer to whoever asked for it. */
void runner_repl_snapshot_done(struct runner *r, uint64_t seq);
/*
 * Producer: submit `n` records read from the log, in order, tagged `tag`.
 * *next_seq is the seq the next command must have: records below it were
 * applied before and are skipped; a checkpoint record (cmd.type
 * RUNNER_CTL_STATE_HASH) carries the seq of the command before it and becomes
 * a hash check. The commands are marked stored (runner_repl_done) before they
 * go in. Stores in *taken how many records were consumed (fewer than `n` when
 * the input ring is full: submit the rest later) and advances *next_seq.
 * Returns ENG_OK, or ENG_CORRUPT when record *taken is not whole and valid or
 * not the next in sequence (nothing from it on is taken).
 */
int runner_submit_log(struct runner *r, const struct jnl_record *recs, size_t n, uint64_t tag, size_t *taken,
                      uint64_t *next_seq);

/*
 * ---- Batch stamps --------------------------------------------------------
 *
 * For a latency breakdown (the server's --trace-latency): with stamps on,
 * the engine thread reads CLOCK_MONOTONIC when it takes a batch of commands
 * from the input ring and when it first publishes the batch's events (at
 * the end of the batch, or earlier when they fill its staging), and after
 * the batch's events publishes one event of its own carrying both:
 *
 *   RUNNER_EV_BATCH  seq: the batch's last command's (it is released with
 *                    that command's events); order_id: its first command's;
 *                    price: the batch taken (ns); qty: its events first
 *                    published (ns); leaves: commands taken; tag 0
 *
 * A batch that sequenced no command (controls alone) publishes none. The
 * event is not counted in runner_stats.events. Off by default; on, it costs
 * two clock readings and one event per batch.
 */
enum runner_stamp_event {
    RUNNER_EV_BATCH = 130
};
/* Turn the batch stamps on (nonzero) or off; any thread, from the next batch on. */
void runner_stamp_batches(struct runner *r, int on);

#endif /* PYENGINE_RUNNER_H */
