/*
 * dispatch_bench.c - one command at a time against batches, when the flow's
 * command types follow no pattern.
 *
 * Two flows on an engine that takes the caller's ids: "one_kind" is new IOC
 * buy orders that cross nothing (one ask rests far above them), "two_kinds"
 * those and cancels of ids that are not open (rejected), in random order.
 * Each is fed one command at a time (eng_process, the events drained after
 * each) and in batches of 1024 (eng_process_batch, drained after each batch),
 * the two in turn, `reps` times; medians. The core does the same work either
 * way. One command at a time, the caller's branch on the message's kind, the
 * core's on the command's type and the drain's on the events' types follow
 * one another, so a branch predictor can learn the later ones from the first;
 * a batch runs each over the whole batch, apart, and with random kinds pays
 * for each.
 */
#include "dispatch_bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "pyengine.h"

enum { DISPATCH_BATCH = 1024, DISPATCH_MAX_REPS = 32 };

/* Events by type, so that the drain does what a consumer's would. */
struct tally {
    uint64_t accepted, cancelled, rejected, other;
};

static void drain(struct eng *e, struct tally *t)
{
    size_t n;
    const struct eng_event *ev = eng_events(e, &n);

    for (size_t k = 0; k < n; k++) {
        switch (ev[k].type) {
        case ENG_EV_ACCEPTED:
            t->accepted++;
            break;
        case ENG_EV_CANCELLED:
            t->cancelled++;
            break;
        case ENG_EV_REJECTED:
            t->rejected++;
            break;
        default:
            t->other++;
            break;
        }
    }
    eng_clear_events(e);
}

static struct eng *dispatch_engine(void)
{
    static const struct eng_instrument_spec spec = {
        .symbol = "DISPATCH", .tick_size = 1, .lot_size = 1, .market_protection = -1};
    struct eng *e = eng_create(&(struct eng_config){.expected_orders = 1024, .caller_order_ids = 1});
    struct eng_cmd ask = {.type = ENG_CMD_NEW, .side = ENG_SELL, .order_type = ENG_LIMIT,
                          .tif = ENG_GTC, .account = 2, .order_id = 1, .price = 100000, .qty = 1};
    uint32_t inst;

    if (!e || eng_add_instrument(e, &spec, &inst) != ENG_OK || eng_process(e, &ask) != 1) {
        eng_destroy(e);
        return NULL;
    }
    eng_clear_events(e);
    return e;
}

/* Message i: a cancel (kind 1) or a new IOC buy (kind 0), with an id of its own. */
static void to_cmd(uint8_t kind, uint64_t id, struct eng_cmd *c)
{
    *c = (struct eng_cmd){.account = 1, .order_id = id};
    if (kind) {
        c->type = ENG_CMD_CANCEL;
    } else {
        c->type = ENG_CMD_NEW;
        c->side = ENG_BUY;
        c->order_type = ENG_LIMIT;
        c->tif = ENG_IOC;
        c->price = 1000;
        c->qty = 1;
    }
}

/* ns per message of one replay; the tally must come out as `want`. */
static double replay(const uint8_t *kinds, size_t n, int batched, struct eng_cmd *cmds,
                     const struct tally *want, int *ok)
{
    struct eng *e = dispatch_engine();
    struct tally t = {0};
    double t0, t1;

    if (!e) {
        *ok = 0;
        return 0;
    }
    t0 = bench_now_ns();
    if (!batched) {
        for (size_t i = 0; i < n; i++) {
            struct eng_cmd c;
            to_cmd(kinds[i], i + 2, &c);
            eng_process(e, &c);
            drain(e, &t);
        }
    } else {
        for (size_t i = 0; i < n;) {
            size_t nb = n - i < DISPATCH_BATCH ? n - i : DISPATCH_BATCH;
            for (size_t k = 0; k < nb; k++)
                to_cmd(kinds[i + k], i + k + 2, &cmds[k]);
            eng_process_batch(e, cmds, nb);
            drain(e, &t);
            i += nb;
        }
    }
    t1 = bench_now_ns();
    eng_destroy(e);
    *ok = *ok && memcmp(&t, want, sizeof(t)) == 0;
    return (t1 - t0) / (double)n;
}

int bench_dispatch(size_t n, int reps)
{
    uint8_t *kinds = malloc(n);
    struct eng_cmd *cmds = malloc(DISPATCH_BATCH * sizeof(*cmds));
    uint64_t s = 88172645463325252ull;
    int ok = kinds && cmds && reps <= DISPATCH_MAX_REPS;

    for (int flow = 0; ok && flow < 2; flow++) {
        const char *name = flow ? "dispatch_two_kinds" : "dispatch_one_kind";
        double ns[2][DISPATCH_MAX_REPS];
        char row[64];
        struct tally want = {0};
        for (size_t i = 0; i < n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            kinds[i] = flow ? (uint8_t)(s & 1) : 0;
            if (kinds[i])
                want.rejected++;
            else
                want.accepted++, want.cancelled++;
        }
        for (int r = 0; r < reps; r++)
            for (int batched = 0; batched < 2; batched++)
                ns[batched][r] = replay(kinds, n, batched, cmds, &want, &ok);
        if (!ok)
            break;
        qsort(ns[0], (size_t)reps, sizeof(double), bench_cmp_double);
        qsort(ns[1], (size_t)reps, sizeof(double), bench_cmp_double);
        snprintf(row, sizeof(row), "%s/cmd", name);
        printf("%-28s %9.1f ns/msg\n", row, ns[0][reps / 2]);
        snprintf(row, sizeof(row), "%s/batch", name);
        printf("%-28s %9.1f ns/msg   the batch's speed: %.2fx one at a time\n", row, ns[1][reps / 2],
               ns[0][reps / 2] / ns[1][reps / 2]);
    }
    free(kinds);
    free(cmds);
    if (!ok)
        fprintf(stderr, "dispatch: out of memory, more than %d reps, or events not as expected\n",
                DISPATCH_MAX_REPS);
    return ok ? 0 : -1;
}
