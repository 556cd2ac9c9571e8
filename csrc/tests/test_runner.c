#define _GNU_SOURCE
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static struct eng *make_engine(int level_events)
{
    struct eng_config cfg = {.level_events = (uint32_t)level_events};
    struct eng *e = eng_create(&cfg);
    struct eng_instrument_spec s = {.symbol = "X", .tick_size = 1, .lot_size = 1, .market_protection = -1};
    uint32_t id;
    ASSERT_TRUE(e != NULL);
    ASSERT_EQ(eng_add_instrument(e, &s, &id), ENG_OK);
    return e;
}

static struct runner_cmd limit(uint64_t tag, uint8_t side, int64_t qty, int64_t price)
{
    return (struct runner_cmd){
        .cmd = {.type = ENG_CMD_NEW, .side = side, .order_type = ENG_LIMIT, .tif = ENG_GTC,
                .account = 1, .price = price, .qty = qty},
        .tag = tag};
}

/* Wait until the consumer's eventfd is readable, then reset it. */
static void wait_fd(struct runner *r)
{
    struct pollfd p = {.fd = runner_event_fd(r), .events = POLLIN};
    uint64_t v;
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ASSERT_EQ(read(p.fd, &v, sizeof(v)), (long long)sizeof(v));
}

/* Poll until `want` events have arrived, waiting on the fd when idle. */
static size_t collect(struct runner *r, struct runner_event *out, size_t want)
{
    size_t got = 0;
    while (got < want) {
        size_t n = runner_poll(r, out + got, want - got);
        if (n == 0)
            wait_fd(r);
        got += n;
    }
    return got;
}

void test_runner_round_trip_with_tags(void)
{
    struct eng *e = make_engine(0);
    struct runner_config cfg = {.cpu = -1, .spin_us = 20, .in_capacity = 64, .out_capacity = 64};
    struct runner *r = runner_create(e, &cfg);
    struct runner_cmd cmds[3] = {limit(101, ENG_SELL, 5, 100), limit(102, ENG_BUY, 3, 100),
                                 limit(103, ENG_BUY, 1, 0)};
    struct runner_event ev[8];
    struct runner_stats st;

    ASSERT_TRUE(r != NULL);
    ASSERT_EQ(runner_start(r), 0);
    ASSERT_EQ(runner_submit(r, cmds, 3), 3);
    collect(r, ev, 4);
    ASSERT_EQ(ev[0].tag, 101);
    ASSERT_EQ(ev[0].ev.type, ENG_EV_ACCEPTED);
    ASSERT_EQ(ev[1].tag, 102);
    ASSERT_EQ(ev[2].tag, 102);
    ASSERT_EQ(ev[2].ev.type, ENG_EV_TRADE);
    ASSERT_EQ(ev[2].ev.qty, 3);
    ASSERT_EQ(ev[3].tag, 103);
    ASSERT_EQ(ev[3].ev.reason, ENG_BAD_PRICE);
    /* The last event of each command is marked, and only that one. */
    ASSERT_TRUE(ev[0].ev.flags & RUNNER_EV_F_LAST);
    ASSERT_TRUE(!(ev[1].ev.flags & RUNNER_EV_F_LAST));
    ASSERT_TRUE(ev[2].ev.flags & RUNNER_EV_F_LAST);
    ASSERT_TRUE(ev[3].ev.flags & RUNNER_EV_F_LAST);
    runner_get_stats(r, &st);
    ASSERT_EQ(st.commands, 3);
    ASSERT_EQ(st.events, 4);
    ASSERT_EQ(st.cpu, -1);
    ASSERT_EQ(st.running, 1);
    runner_request_stop(r);
    runner_destroy(r);
    ASSERT_VERIFY(e);
    ASSERT_EQ(eng_seq(e), 3);
    eng_destroy(e);
}

void test_runner_sleeps_and_wakes(void)
{
    struct eng *e = make_engine(0);
    struct runner_config cfg = {.cpu = 0, .spin_us = 0, .in_capacity = 64, .out_capacity = 64};
    struct runner *r = runner_create(e, &cfg);
    struct runner_event ev[2];
    struct runner_stats st;
    struct timespec nap = {0, 1000 * 1000};
    uint64_t slept = 0;

    ASSERT_EQ(runner_start(r), 0);
    for (int round = 0; round < 5; round++) {
        struct runner_cmd c = limit((uint64_t)round, ENG_BUY, 1, 50 + round);
        /* With nothing to do the engine thread goes to sleep (within 10 s
           even on a slow, busy machine); a busy wait never would. */
        for (int waited = 0;; waited++) {
            runner_get_stats(r, &st);
            if (st.sleeps > slept)
                break;
            ASSERT_TRUE(waited < 10000);
            nanosleep(&nap, NULL);
        }
        slept = st.sleeps;
        ASSERT_EQ(runner_poll(r, ev, 2), 0); /* nothing: arms the wake-up */
        ASSERT_EQ(runner_submit(r, &c, 1), 1);
        wait_fd(r);
        ASSERT_EQ(runner_poll(r, ev, 2), 1);
        ASSERT_EQ(ev[0].tag, round);
    }
    runner_get_stats(r, &st);
    ASSERT_TRUE(st.sleeps >= 5); /* it slept between rounds, no busy wait */
    {
        cpu_set_t allowed;
        if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_ISSET(0, &allowed))
            ASSERT_EQ(st.cpu, 0); /* pinned to CPU 0 */
    }
    runner_destroy(r);
    eng_destroy(e);
}

/* Wait (up to 10 s) until the engine thread has slept more than `slept`
   times; returns whether it did. */
static bool slept_since(struct runner *r, uint64_t slept)
{
    struct timespec nap = {0, 1000 * 1000};
    struct runner_stats st;
    for (int waited = 0; waited < 10000; waited++) {
        runner_get_stats(r, &st);
        if (st.sleeps > slept)
            return true;
        nanosleep(&nap, NULL);
    }
    return false;
}

void test_runner_polls_only_after_a_burst(void)
{
    struct eng *e = make_engine(0);
    /* An hour of polling: if the thread polled, it would not sleep in this test. */
    struct runner_config cfg = {.cpu = -1, .spin_us = 3600u * 1000000u, .in_capacity = 64, .out_capacity = 64};
    struct runner *r = runner_create(e, &cfg);
    struct runner_cmd burst[16];
    struct runner_event ev[16];
    struct runner_stats st;

    ASSERT_EQ(runner_start(r), 0);
    ASSERT_TRUE(slept_since(r, 0)); /* nothing to do at start: it sleeps at once */
    runner_get_stats(r, &st);
    /* A lone command: the thread sleeps again right after it. */
    burst[0] = limit(1, ENG_BUY, 1, 10);
    ASSERT_EQ(runner_submit(r, burst, 1), 1);
    collect(r, ev, 1);
    ASSERT_TRUE(slept_since(r, st.sleeps));
    /* A burst: the thread polls (for the hour) instead of sleeping. */
    for (int i = 0; i < 16; i++)
        burst[i] = limit(100 + (uint64_t)i, ENG_BUY, 1, 20 + i);
    runner_get_stats(r, &st);
    ASSERT_EQ(runner_submit(r, burst, 16), 16);
    collect(r, ev, 16);
    {
        struct timespec settle = {0, 200 * 1000 * 1000};
        struct runner_stats after;
        nanosleep(&settle, NULL);
        runner_get_stats(r, &after);
        ASSERT_EQ(after.sleeps, st.sleeps);
    }
    runner_request_stop(r); /* ends the poll */
    runner_destroy(r);
    ASSERT_VERIFY(e);
    eng_destroy(e);
}

void test_runner_backpressure_keeps_order(void)
{
    struct eng *e = make_engine(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 5, .in_capacity = 16, .out_capacity = 8};
    struct runner *r = runner_create(e, &cfg);
    const size_t orders = (size_t)test_steps(3000);
    size_t sent = 0, got = 0;
    uint64_t last_seq = 0;
    static struct runner_event ev[64];

    ASSERT_EQ(runner_start(r), 0);
    /* Tiny rings: the engine thread waits on a full output ring, the producer
       on a full input ring; every event still arrives once, in order. */
    for (;;) {
        if (sent < orders) {
            struct runner_cmd c = limit(sent, sent % 2 ? ENG_BUY : ENG_SELL, 1, 100 + (int64_t)(sent % 3));
            sent += runner_submit(r, &c, 1);
        }
        size_t n = runner_poll(r, ev, 64);
        for (size_t i = 0; i < n; i++) {
            ASSERT_TRUE(ev[i].ev.seq >= last_seq);
            last_seq = ev[i].ev.seq;
            ASSERT_EQ(ev[i].tag, ev[i].ev.seq - 1);
        }
        got += n;
        if (sent == orders && n == 0) {
            runner_request_stop(r);
            struct runner_stats st;
            runner_get_stats(r, &st);
            if (!st.running && !st.out_queued)
                break;
        }
    }
    ASSERT_EQ(eng_seq(e), orders);
    {
        struct eng_stats es;
        eng_get_stats(e, &es);
        ASSERT_EQ(got, es.events); /* every event arrived, once */
    }
    runner_destroy(r);
    ASSERT_VERIFY(e);
    eng_destroy(e);
}

void test_runner_stop_drains_everything(void)
{
    struct eng *e = make_engine(0);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 4096, .out_capacity = 8192};
    struct runner *r = runner_create(e, &cfg);
    static struct runner_cmd cmds[4000];
    static struct runner_event ev[8192];
    struct runner_stats st;
    size_t got = 0;

    for (size_t i = 0; i < 4000; i++)
        cmds[i] = limit(i, ENG_BUY, 1, 1 + (int64_t)(i % 100));
    ASSERT_EQ(runner_start(r), 0);
    ASSERT_EQ(runner_submit(r, cmds, 4000), 4000);
    runner_request_stop(r); /* at once: the queued commands still run */
    do {
        size_t n = runner_poll(r, ev + got, 8192 - got);
        got += n;
        runner_get_stats(r, &st);
        if (n == 0 && st.running)
            wait_fd(r);
    } while (st.running || st.out_queued);
    got += runner_poll(r, ev + got, 8192 - got);
    ASSERT_EQ(got, 4000);
    ASSERT_EQ(ev[3999].tag, 3999);
    runner_destroy(r);
    ASSERT_EQ(eng_seq(e), 4000);
    eng_destroy(e);
}

/* Monotonic ns, as the engine thread stamps. */
static int64_t test_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * With stamps on, every batch that sequenced commands is followed by one
 * RUNNER_EV_BATCH naming its seqs, after all of their events; the batches
 * cover the seqs without a gap; a batch of controls alone has none; and the
 * events are counted without them. Off again, there are none.
 */
void test_runner_stamps_batches(void)
{
    struct eng *e = make_engine(0);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 1024, .out_capacity = 4096};
    struct runner *r = runner_create(e, &cfg);
    static struct runner_cmd cmds[600];
    static struct runner_event ev[4096];
    struct runner_cmd hash = {.cmd = {.type = RUNNER_CTL_STATE_HASH}, .tag = 7};
    struct runner_stats st;
    uint64_t next_first = 1, batch_events = 0;
    size_t got = 0, stamps = 0;

    for (size_t i = 0; i < 600; i++)
        cmds[i] = limit(1000 + i, ENG_BUY, 1, 1 + (int64_t)(i % 50));
    ASSERT_TRUE(r != NULL);
    runner_stamp_batches(r, 1);
    ASSERT_EQ(runner_start(r), 0);
    for (size_t sent = 0; sent < 600; sent += 100)
        ASSERT_EQ(runner_submit(r, cmds + sent, 100), 100);
    while (got == 0 || ev[got - 1].ev.type != RUNNER_EV_BATCH || ev[got - 1].ev.seq != 600) {
        size_t n = runner_poll(r, ev + got, 4096 - got);
        got += n;
        if (n == 0)
            wait_fd(r);
    }
    for (size_t i = 0; i < got; i++) {
        const struct eng_event *x = &ev[i].ev;

        if (x->type != RUNNER_EV_BATCH) {
            ASSERT_TRUE(x->seq >= next_first);
            batch_events++;
            continue;
        }
        ASSERT_EQ(ev[i].tag, 0);
        ASSERT_EQ(x->order_id, next_first); /* no gap, no overlap */
        ASSERT_TRUE(x->seq >= x->order_id);
        ASSERT_TRUE(x->price > 0 && x->price <= x->qty);
        ASSERT_EQ(x->leaves, (int64_t)(x->seq - x->order_id + 1));
        /* Every command of the batch answered before it. */
        ASSERT_EQ(batch_events, x->seq - x->order_id + 1);
        next_first = x->seq + 1;
        batch_events = 0;
        stamps++;
    }
    ASSERT_EQ(got, 600 + stamps);
    runner_get_stats(r, &st);
    ASSERT_EQ(st.events, 600);
    /* A batch of a control alone: its answer and no stamp (one publish). */
    ASSERT_EQ(runner_submit(r, &hash, 1), 1);
    ASSERT_EQ(collect(r, ev, 1), 1);
    ASSERT_EQ(ev[0].ev.type, RUNNER_EV_STATE_HASH);
    ASSERT_EQ(runner_poll(r, ev, 1), 0);

    runner_stamp_batches(r, 0);
    ASSERT_EQ(runner_submit(r, cmds, 1), 1);
    ASSERT_EQ(collect(r, ev, 1), 1);
    ASSERT_EQ(ev[0].tag, 1000);
    ASSERT_EQ(runner_poll(r, ev, 1), 0);
    runner_request_stop(r);
    runner_destroy(r);
    eng_destroy(e);
}

/*
 * A batch whose events overflow the staging is published in parts: its
 * stamp's second time is when the first part left, before the consumer
 * could take any of it.
 */
void test_runner_batch_stamp_at_first_publish(void)
{
    struct eng *e = make_engine(1);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 1024, .out_capacity = 8192};
    struct runner *r = runner_create(e, &cfg);
    static struct runner_cmd cmds[600];
    static struct runner_event ev[8192];
    struct runner_cmd sweep = {.cmd = {.type = ENG_CMD_NEW, .side = ENG_BUY, .order_type = ENG_MARKET,
                                       .tif = ENG_IOC, .account = 2, .qty = 600},
                               .tag = 9};
    int64_t first_taken = 0;
    size_t got = 0;

    for (size_t i = 0; i < 600; i++)
        cmds[i] = limit(1000 + i, ENG_SELL, 1, 1 + (int64_t)i);
    ASSERT_TRUE(r != NULL);
    ASSERT_EQ(runner_start(r), 0);
    ASSERT_EQ(runner_submit(r, cmds, 600), 600);
    collect(r, ev, 1200); /* an ack and a level each */
    runner_stamp_batches(r, 1);
    ASSERT_EQ(runner_submit(r, &sweep, 1), 1);
    for (;;) {
        size_t n = runner_poll(r, ev + got, 8192 - got);
        if (n && !first_taken)
            first_taken = test_now_ns();
        got += n;
        if (got && ev[got - 1].ev.type == RUNNER_EV_BATCH)
            break;
        if (n == 0)
            wait_fd(r);
    }
    ASSERT_TRUE(got > 1024); /* more than one staging's worth: published in parts */
    ASSERT_EQ(ev[got - 1].ev.order_id, 601);
    ASSERT_EQ(ev[got - 1].ev.seq, 601);
    ASSERT_TRUE(ev[got - 1].ev.qty <= first_taken);
    runner_request_stop(r);
    runner_destroy(r);
    eng_destroy(e);
}

void test_runner_rejects_bad_config(void)
{
    struct eng *e = make_engine(0);
    struct runner_config cfg = {.cpu = -1, .in_capacity = 100, .out_capacity = 64};
    ASSERT_TRUE(runner_create(e, &cfg) == NULL);
    runner_destroy(NULL);
    struct runner *r = runner_create(e, NULL); /* defaults */
    ASSERT_TRUE(r != NULL);
    runner_destroy(r); /* never started */
    eng_destroy(e);
}

/* The consumer stops polling with the output ring full: destroy still returns. */
void test_runner_destroy_without_consumer(void)
{
    struct eng *e = make_engine(0);
    struct runner_config cfg = {.cpu = -1, .spin_us = 0, .in_capacity = 1024, .out_capacity = 4};
    struct runner *r = runner_create(e, &cfg);
    static struct runner_cmd cmds[1000];
    struct runner_stats st;
    struct timespec nap = {0, 1000 * 1000};

    for (size_t i = 0; i < 1000; i++)
        cmds[i] = limit(i, ENG_BUY, 1, 1 + (int64_t)(i % 50));
    ASSERT_EQ(runner_start(r), 0);
    ASSERT_EQ(runner_submit(r, cmds, 1000), 1000);
    /* Wait (10 s at most: sanitizers and a busy machine are slow) until the
       engine thread has filled the ring and is stuck on it. */
    for (int waited = 0; waited < 10000; waited++) {
        runner_get_stats(r, &st);
        if (st.out_queued == 4)
            break;
        nanosleep(&nap, NULL);
    }
    ASSERT_EQ(st.out_queued, 4); /* full, and nobody reads */
    runner_destroy(r);           /* must not hang */
    ASSERT_VERIFY(e);
    eng_destroy(e);
}
