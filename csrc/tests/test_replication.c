/*
 * The replication stage: a leader's runner hands out sealed records and
 * releases events only as far as the log holds them; a follower's runner,
 * fed those records, reaches the same state and checks the leader's
 * checkpoints.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

enum { N = 200 };

static struct eng *make_engine(void)
{
    struct eng_config cfg = {.level_events = 1};
    struct eng *e = eng_create(&cfg);
    struct eng_instrument_spec s = {.symbol = "X", .tick_size = 1, .lot_size = 1, .market_protection = -1};
    uint32_t id;
    ASSERT_TRUE(e != NULL);
    ASSERT_EQ(eng_add_instrument(e, &s, &id), ENG_OK);
    return e;
}

static struct runner *start(struct eng *e)
{
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 1024, .out_capacity = 4096,
                                .replicate = 1};
    struct runner *r = runner_create(e, &cfg);
    ASSERT_TRUE(r != NULL);
    ASSERT_EQ(runner_start(r), 0);
    return r;
}

/* A flow that rests, trades and cancels: order i alternates sides around 100. */
static struct runner_cmd flow_cmd(int i)
{
    struct runner_cmd c = {.tag = (uint64_t)i + 1};
    if (i % 5 == 4) {
        c.cmd = (struct eng_cmd){.type = ENG_CMD_CANCEL, .account = 1, .order_id = (uint64_t)i - 2};
    } else {
        c.cmd = (struct eng_cmd){.type = ENG_CMD_NEW, .side = (uint8_t)(1 + i % 2), .order_type = ENG_LIMIT,
                                 .tif = ENG_GTC, .account = 1 + (uint32_t)(i % 3), .price = 98 + i % 5,
                                 .qty = 1 + i % 4, .ts = i};
    }
    return c;
}

static void wait_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint64_t v;
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ASSERT_EQ(read(fd, &v, sizeof(v)), (long long)sizeof(v));
}

/* Take `want` records from the leader's replication stage. */
static void take_records(struct runner *r, struct jnl_record *out, size_t want)
{
    struct runner_snapshot snap;
    size_t got = 0;
    while (got < want) {
        size_t n = runner_repl_take(r, out + got, want - got, &snap);
        ASSERT_TRUE(snap.buf == NULL);
        if (n == 0)
            wait_readable(runner_repl_fd(r));
        got += n;
    }
}

/* Events polled until the runner has none to release for `ms` milliseconds. */
static size_t drain(struct runner *r, struct runner_event *out, size_t max, int ms)
{
    struct pollfd p = {.fd = runner_event_fd(r), .events = POLLIN};
    size_t got = 0;
    uint64_t v;
    for (;;) {
        size_t n = runner_poll(r, out + got, max - got);
        got += n;
        if (n)
            continue;
        if (poll(&p, 1, ms) != 1)
            return got;
        ASSERT_EQ(read(p.fd, &v, sizeof(v)), (long long)sizeof(v));
    }
}

static void stop(struct runner *r, struct eng *e)
{
    runner_request_stop(r);
    runner_destroy(r);
    ASSERT_VERIFY(e);
}

void test_replication_releases_only_what_the_log_holds(void)
{
    static struct jnl_record recs[N];
    static struct runner_event evs[8 * N];
    struct eng *e = make_engine();
    struct runner *r = start(e);
    struct runner_stats st;
    size_t n;

    for (int i = 0; i < N; i++) {
        struct runner_cmd c = flow_cmd(i);
        ASSERT_EQ(runner_submit(r, &c, 1), 1);
    }
    take_records(r, recs, N);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(recs[i].seq, (uint64_t)i + 1);
        ASSERT_EQ(recs[i].len, sizeof(struct jnl_record));
        ASSERT_EQ(recs[i].cmd.type, flow_cmd(i).cmd.type);
        ASSERT_EQ(recs[i].ts, flow_cmd(i).cmd.ts);
    }
    /* Nothing is stored yet: nothing leaves. */
    ASSERT_EQ(drain(r, evs, 8 * N, 50), 0);
    /* Half is stored: exactly the events of the first half leave. */
    runner_repl_done(r, N / 2);
    n = drain(r, evs, 8 * N, 50);
    ASSERT_TRUE(n > 0);
    for (size_t k = 0; k < n; k++)
        ASSERT_TRUE(evs[k].ev.seq <= N / 2);
    ASSERT_EQ(evs[n - 1].ev.seq, N / 2);
    runner_repl_done(r, N / 4); /* never lowers */
    runner_repl_done(r, N);
    n = drain(r, evs, 8 * N, 50);
    ASSERT_EQ(evs[0].ev.seq, N / 2 + 1);
    ASSERT_EQ(evs[n - 1].ev.seq, N);
    runner_get_stats(r, &st);
    ASSERT_EQ(st.replicated, N);
    stop(r, e);
    eng_destroy(e);
}

/* Records sealed by the leader, in the form a log hands them back. */
static void leader_log(struct jnl_record *recs, size_t n, uint64_t *hash)
{
    struct eng *e = make_engine();
    struct runner *r = start(e);
    struct runner_cmd check = {.cmd = {.type = RUNNER_CTL_STATE_HASH}, .tag = 999};
    struct runner_event evs[16];

    for (size_t i = 0; i + 1 < n; i++) {
        struct runner_cmd c = flow_cmd((int)i);
        if (i == n / 2)
            ASSERT_EQ(runner_submit(r, &check, 1), 1); /* a checkpoint mid-flow */
        ASSERT_EQ(runner_submit(r, &c, 1), 1);
    }
    take_records(r, recs, n);
    ASSERT_EQ(recs[n / 2].cmd.type, RUNNER_CTL_STATE_HASH);
    ASSERT_EQ(recs[n / 2].seq, n / 2);
    runner_repl_done(r, n);
    stop(r, e);
    *hash = eng_state_hash(e);
    (void)evs;
    eng_destroy(e);
}

void test_replication_follower_reaches_the_leaders_state(void)
{
    static struct jnl_record recs[N + 1];
    static struct runner_event evs[8 * N];
    struct eng *f = make_engine();
    struct runner *r = start(f);
    struct runner_snapshot snap;
    struct jnl_record none[1];
    uint64_t leader_hash, next = 1;
    size_t taken, n, checks = 0;

    leader_log(recs, N + 1, &leader_hash);
    /* The first records twice (a redelivery), then all of them. */
    ASSERT_EQ(runner_submit_log(r, recs, 10, 7, &taken, &next), ENG_OK);
    ASSERT_EQ(taken, 10);
    ASSERT_EQ(next, 11);
    ASSERT_EQ(runner_submit_log(r, recs, N + 1, 7, &taken, &next), ENG_OK);
    ASSERT_EQ(taken, N + 1);
    ASSERT_EQ(next, N + 1);
    n = drain(r, evs, 8 * N, 100);
    for (size_t k = 0; k < n; k++) {
        ASSERT_EQ(evs[k].tag, 7);
        if (evs[k].ev.type == RUNNER_EV_STATE_HASH) {
            /* The leader's checkpoint, checked at the same point of the flow. */
            ASSERT_EQ(evs[k].ev.qty, 1);
            ASSERT_EQ(evs[k].ev.seq, N / 2);
            ASSERT_EQ(evs[k].ev.order_id, evs[k].ev.maker_order_id);
            checks++;
        }
    }
    ASSERT_EQ(checks, 1);
    ASSERT_EQ(evs[n - 1].ev.seq, N);
    /* Commands from the log are stored already: none is handed out again. */
    ASSERT_EQ(runner_repl_take(r, none, 1, &snap), 0);
    ASSERT_TRUE(snap.buf == NULL);
    stop(r, f);
    ASSERT_EQ(eng_state_hash(f), leader_hash);
    eng_destroy(f);
}

void test_replication_refuses_a_broken_log(void)
{
    static struct jnl_record recs[N + 1];
    struct jnl_record bad[3];
    struct eng *f = make_engine();
    struct runner *r = start(f);
    uint64_t hash, next = 1;
    size_t taken;

    leader_log(recs, N + 1, &hash);
    memcpy(bad, recs, sizeof(bad));
    bad[1].cmd.price ^= 1; /* the checksum no longer matches */
    ASSERT_EQ(runner_submit_log(r, bad, 3, 0, &taken, &next), ENG_CORRUPT);
    ASSERT_EQ(taken, 1);
    ASSERT_EQ(next, 2);
    /* A gap: record 3 where 2 is due. */
    ASSERT_EQ(runner_submit_log(r, &recs[2], 1, 0, &taken, &next), ENG_CORRUPT);
    ASSERT_EQ(taken, 0);
    ASSERT_EQ(next, 2);
    /* The same record twice in one batch is out of sequence too. */
    memcpy(bad, &recs[1], sizeof(bad[0]));
    memcpy(&bad[1], &recs[1], sizeof(bad[0]));
    ASSERT_EQ(runner_submit_log(r, bad, 2, 0, &taken, &next), ENG_CORRUPT);
    ASSERT_EQ(taken, 1);
    ASSERT_EQ(next, 3);
    stop(r, f);
    ASSERT_EQ(eng_seq(f), 2);
    eng_destroy(f);
}

void test_replication_snapshot_goes_to_the_consumer(void)
{
    struct eng *e = make_engine();
    struct runner *r = start(e);
    struct runner_cmd snapshot = {.cmd = {.type = RUNNER_CTL_SNAPSHOT}, .tag = 5};
    struct runner_snapshot snap;
    struct jnl_record recs[4];
    struct runner_event evs[16];
    struct runner_stats st;
    size_t n;

    for (int i = 0; i < 3; i++) {
        struct runner_cmd c = flow_cmd(i);
        ASSERT_EQ(runner_submit(r, &c, 1), 1);
    }
    ASSERT_EQ(runner_submit(r, &snapshot, 1), 1);
    take_records(r, recs, 3);
    /* Then the snapshot, of the state after the three commands. */
    for (int tries = 0;; tries++) {
        n = runner_repl_take(r, recs, 4, &snap);
        ASSERT_EQ(n, 0);
        if (snap.buf)
            break;
        ASSERT_TRUE(tries < 100);
        wait_readable(runner_repl_fd(r));
    }
    ASSERT_EQ(snap.seq, 3);
    ASSERT_TRUE(snap.len > 0);
    eng_free_buffer(snap.buf);
    /* Its answer leaves with the commands before it, while the consumer
       stores it off to the side: storing holds up no ack. */
    runner_repl_done(r, 3);
    n = drain(r, evs, 16, 50);
    ASSERT_TRUE(n > 0);
    ASSERT_EQ(evs[n - 1].ev.type, RUNNER_EV_SNAPSHOT);
    ASSERT_EQ(evs[n - 1].ev.seq, 3);
    ASSERT_EQ(evs[n - 1].tag, 5);
    runner_get_stats(r, &st);
    ASSERT_EQ(st.snapshots, 0);
    runner_repl_snapshot_done(r, 3);
    runner_get_stats(r, &st);
    ASSERT_EQ(st.snapshots, 1);
    ASSERT_EQ(st.snapshot_seq, 3);
    stop(r, e);
    eng_destroy(e);
}

void test_replication_and_journal_exclude_each_other(void)
{
    struct eng *e = make_engine();
    struct runner_config cfg = {.cpu = -1, .journal_dir = "/tmp", .replicate = 1};
    ASSERT_TRUE(runner_create(e, &cfg) == NULL);
    eng_destroy(e);
}
