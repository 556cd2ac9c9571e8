/*
 * bench.c - the C micro-benchmark of the matching core, single thread.
 *
 * Each case builds its book untimed, then times a run of commands through
 * eng_process_batch() in batches of 1024, draining the event buffer after
 * each as a consumer would. Each case runs `reps` times on a fresh engine; the median is
 * reported.
 *
 * The harness cases (harness_<scenario>, or all five as CASE "harness")
 * replay the harness-shaped flow (harness_flow.h) of N messages through a
 * gateway that maps the caller's order ids (harness_adapter.h), per command
 * and in batches, with the map's time counted in, and straight into an engine
 * that takes the caller's ids (ids_cmd, ids_batch); they also give the
 * outcome (trades, traded qty, a hash of the trades), the same on every path.
 * The dispatch case (dispatch_bench.h) sets one command at a time against
 * batches on flows whose command types do or do not follow a pattern.
 * Usage: pyengine_bench [N [REPS [CASE[,CASE...]]]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "dispatch_bench.h"
#include "flow.h"
#include "harness_adapter.h"
#include "harness_flow.h"
#include "pyengine.h"

static struct eng *fresh(uint32_t expected)
{
    struct eng *e = eng_create(&(struct eng_config){.expected_orders = expected});
    uint32_t id;
    if (!e || eng_add_instrument(e, &flow_instrument, &id) != ENG_OK) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return e;
}

/* In batches of 1024, as the engine thread takes them from its ring. */
static void feed(struct eng *e, const struct eng_cmd *cmds, size_t n)
{
    for (size_t i = 0; i < n; i += 1024) {
        eng_process_batch(e, cmds + i, n - i < 1024 ? n - i : 1024);
        eng_clear_events(e);
    }
}

/* Returns ns per command of `run` on a book built by `setup`. */
static double time_run(const struct eng_cmd *setup, size_t nsetup, const struct eng_cmd *run,
                       size_t nrun, uint32_t expected)
{
    struct eng *e = fresh(expected);
    double t0, t1;
    feed(e, setup, nsetup);
    t0 = bench_now_ns();
    feed(e, run, nrun);
    t1 = bench_now_ns();
    eng_destroy(e);
    return (t1 - t0) / (double)nrun;
}

static const char *only; /* run just these cases (comma-separated), if set */

/* Whether case `name` runs; "harness" stands for every harness_ case. */
static int selected(const char *name)
{
    size_t len = strlen(name);
    for (const char *p = only; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        size_t n = strcspn(p, ",");
        if ((n == len && strncmp(p, name, n) == 0) ||
            (n == 7 && strncmp(p, "harness", 7) == 0 && strncmp(name, "harness_", 8) == 0))
            return 1;
    }
    return !only;
}

/* `expected`: open orders to size the engine's order index for. */
static void report(const char *name, const char *what, const struct eng_cmd *setup,
                   size_t nsetup, const struct eng_cmd *run, size_t nrun, uint32_t expected,
                   int reps)
{
    double ns[32];
    if (!selected(name))
        return;
    for (int r = 0; r < reps; r++)
        ns[r] = time_run(setup, nsetup, run, nrun, expected);
    qsort(ns, (size_t)reps, sizeof(ns[0]), bench_cmp_double);
    printf("%-22s %9.1f ns/op %12.0f ops/s   %s\n", name, ns[reps / 2], 1e9 / ns[reps / 2],
           what);
    fflush(stdout);
}

/*
 * The median ns/message of each path over `reps` replays on fresh engines,
 * the paths interleaved so that a noisy stretch hits them alike. `sums` gets
 * each path's outcome; every replay of a path must give the same.
 */
static int time_harness(const struct hflow *f, int reps, double med[HADAPT__COUNT],
                        struct hadapt_sums sums[HADAPT__COUNT])
{
    double ns[HADAPT__COUNT][32];
    for (int r = 0; r < reps; r++) {
        for (int p = 0; p < HADAPT__COUNT; p++) {
            struct hadapt *a = hadapt_create(f, p);
            struct hadapt_sums s;
            double t0, t1;
            int rc;
            if (!a)
                return -1;
            t0 = bench_now_ns();
            rc = hadapt_replay(a);
            t1 = bench_now_ns();
            hadapt_get_sums(a, &s);
            hadapt_destroy(a);
            if (rc != 0 || (r > 0 && memcmp(&s, &sums[p], sizeof(s)) != 0))
                return -1;
            sums[p] = s;
            ns[p][r] = (t1 - t0) / (double)f->n;
        }
    }
    for (int p = 0; p < HADAPT__COUNT; p++) {
        qsort(ns[p], (size_t)reps, sizeof(ns[p][0]), bench_cmp_double);
        med[p] = ns[p][reps / 2];
    }
    return 0;
}

/* The same outcome, however the messages were fed. */
static int same_outcome(const struct hadapt_sums *x, const struct hadapt_sums *y)
{
    return x->trades == y->trades && x->traded_qty == y->traded_qty &&
           x->cancelled == y->cancelled && x->rejected == y->rejected &&
           x->trade_hash == y->trade_hash;
}

/* The harness cases: every scenario through every path, then the worst. */
static int run_harness(size_t n, int reps)
{
    double worst[HADAPT__COUNT] = {0};
    int worst_at[HADAPT__COUNT];
    int ran = 0;

    for (int scn = 0; scn < HFLOW__COUNT; scn++) {
        char name[40];
        struct hflow f;
        double med[HADAPT__COUNT];
        struct hadapt_sums sums[HADAPT__COUNT];
        const struct hadapt_sums *s = &sums[0];

        snprintf(name, sizeof(name), "harness_%s", hflow_scenario_name(scn));
        if (!selected(name))
            continue;
        if (hflow_generate(&f, scn, n, 17) != 0) {
            fprintf(stderr, "out of memory\n");
            return -1;
        }
        printf("%s: %zu limit, %zu ioc, %zu cancel, %zu modify; cancels 1/2/3/more messages "
               "after their order: %zu/%zu/%zu/%zu; at most %zu open\n",
               name, f.count[HFLOW_LIMIT], f.count[HFLOW_IOC], f.count[HFLOW_CANCEL],
               f.count[HFLOW_MODIFY], f.cancel_dist[0], f.cancel_dist[1], f.cancel_dist[2],
               f.cancel_dist[3], f.peak_open);
        if (time_harness(&f, reps, med, sums) != 0) {
            fprintf(stderr, "%s: a replay failed (out of memory or ids not as predicted)\n",
                    name);
            hflow_free(&f);
            return -1;
        }
        for (int p = 0; p < HADAPT__COUNT; p++) {
            char row[64];
            if (!same_outcome(&sums[p], s)) {
                fprintf(stderr, "%s: %s gives another outcome than %s\n", name,
                        hadapt_path_name(p), hadapt_path_name(0));
                hflow_free(&f);
                return -1;
            }
            snprintf(row, sizeof(row), "%s/%s", name, hadapt_path_name(p));
            printf("%-28s %9.1f ns/msg %12.0f msg/s", row, med[p], 1e9 / med[p]);
            if (sums[p].batches)
                printf("   %.1f messages a batch", (double)n / (double)sums[p].batches);
            printf("\n");
            if (med[p] > worst[p]) {
                worst[p] = med[p];
                worst_at[p] = scn;
            }
        }
        printf("%-28s %llu trades, qty %llu, %llu cancelled, %llu rejected, hash %016llx\n",
               "  outcome", (unsigned long long)s->trades, (unsigned long long)s->traded_qty,
               (unsigned long long)s->cancelled, (unsigned long long)s->rejected,
               (unsigned long long)s->trade_hash);
        fflush(stdout);
        hflow_free(&f);
        ran = 1;
    }
    for (int p = 0; ran && p < HADAPT__COUNT; p++) {
        char row[64];
        snprintf(row, sizeof(row), "harness_worst/%s", hadapt_path_name(p));
        printf("%-28s %9.1f ns/msg %12.0f msg/s   %s\n", row, worst[p], 1e9 / worst[p],
               hflow_scenario_name(worst_at[p]));
    }
    return 0;
}

static struct eng_cmd limit(uint8_t side, int64_t qty, int64_t price)
{
    return (struct eng_cmd){.type = ENG_CMD_NEW, .side = side, .order_type = ENG_LIMIT,
                            .tif = ENG_GTC, .account = 1, .price = price, .qty = qty};
}

static uint64_t rng = 0x1234567;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    size_t depth = 10000; /* resting orders on each side before each case */
    /* Cache-line aligned, as the engine thread's ring will be. */
    struct eng_cmd *setup = aligned_alloc(64, (2 * depth + n) * sizeof(*setup));
    struct eng_cmd *run = aligned_alloc(64, 2 * n * sizeof(*run));
    size_t ns = 0;

    only = argc > 3 ? argv[3] : NULL;
    if (!setup || !run || reps < 1 || reps > 32 || n == 0) {
        fprintf(stderr, "usage: pyengine_bench [N [REPS<=32 [CASE[,CASE...]]]]\n");
        return 2;
    }
    printf("pyengine C core, single thread, median of %d runs, %zu commands per run\n", reps, n);

    /* A two-sided book of `depth` orders a side over 100 levels. */
    for (size_t i = 0; i < depth; i++) {
        setup[ns++] = limit(ENG_BUY, 10, 10000 - 1 - (int64_t)(i % 100));
        setup[ns++] = limit(ENG_SELL, 10, 10000 + 1 + (int64_t)(i % 100));
    }

    /* add resting: n passive orders into that book. */
    for (size_t i = 0; i < n; i++)
        run[i] = limit(i % 2 ? ENG_BUY : ENG_SELL, 1 + (int64_t)(rnd() % 10),
                       i % 2 ? 9999 - (int64_t)(rnd() % 100) : 10001 + (int64_t)(rnd() % 100));
    report("add_resting", "GTC limit that rests, 100 levels a side", setup, ns, run, n,
           (uint32_t)(ns + n), reps);

    /* cancel: the same n orders added in setup, cancelled in random order. */
    {
        size_t nsetup = ns;
        memcpy(setup + nsetup, run, n * sizeof(*run));
        for (size_t i = 0; i < n; i++)
            run[i] = (struct eng_cmd){.type = ENG_CMD_CANCEL, .account = 1,
                                      .order_id = 2 * depth + 1 + i};
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = rnd() % (i + 1);
            struct eng_cmd tmp = run[i];
            run[i] = run[j];
            run[j] = tmp;
        }
        report("cancel", "cancel of an open order, random order", setup, nsetup + n, run, n,
               (uint32_t)(nsetup + n), reps);
    }

    /* aggressive match: each taker fills exactly one resting 1-lot maker. */
    {
        size_t nsetup = 0;
        for (size_t i = 0; i < n; i++)
            setup[nsetup++] = limit(ENG_SELL, 1, 10001 + (int64_t)(i / 1000));
        for (size_t i = 0; i < n; i++)
            run[i] = limit(ENG_BUY, 1, 10001 + (int64_t)(n / 1000));
        report("aggressive_match", "taker fills one maker, 1000 per level", setup, nsetup, run,
               n, (uint32_t)nsetup, reps);
    }

    /* modify: alternately qty down in place and a reprice that loses priority. */
    {
        size_t nsetup = 0;
        for (size_t i = 0; i < n; i++)
            setup[nsetup++] = limit(ENG_BUY, 100, 9000 + (int64_t)(i % 500));
        for (size_t i = 0; i < n; i++) {
            uint64_t id = 1 + rnd() % n;
            run[i] = (struct eng_cmd){.type = ENG_CMD_MODIFY, .account = 1, .order_id = id};
            if (i % 2) {
                run[i].qty = 50 + (int64_t)(rnd() % 40);
                run[i].flags = ENG_CMD_F_KEEP_PRICE;
            } else {
                run[i].qty = 100;
                run[i].price = 9000 + (int64_t)(rnd() % 500);
            }
        }
        report("modify", "half qty-down in place, half reprice", setup, nsetup, run, n,
               (uint32_t)nsetup, reps);
    }

    /* Memory: C bytes per resting order, with and without client order ids. */
    if (selected("memory")) {
        for (int with_coid = 0; with_coid < 2; with_coid++) {
            struct eng *e = fresh(0);
            struct eng_stats st;
            for (size_t i = 0; i < n; i++) {
                struct eng_cmd c = limit(i % 2 ? ENG_BUY : ENG_SELL, 1,
                                         i % 2 ? 9999 - (int64_t)(i % 500) : 10001 + (int64_t)(i % 500));
                if (with_coid)
                    snprintf(c.coid, sizeof(c.coid), "c%u", (unsigned)(i % 1000000000u));
                eng_process(e, &c);
                eng_clear_events(e);
            }
            eng_get_stats(e, &st);
            printf("%-22s %9.1f B/order  %llu orders, %llu levels, %.1f MiB held (%s)\n",
                   with_coid ? "memory_with_coid" : "memory", (double)st.bytes_reserved / (double)st.open_orders,
                   (unsigned long long)st.open_orders, (unsigned long long)st.levels,
                   (double)st.bytes_reserved / (1 << 20),
                   with_coid ? "order node + id index + client-order-id index + levels"
                             : "order node + id index + levels");
            eng_destroy(e);
        }
    }

    /* The mixed flow: see flow.h. */
    if (selected("mixed_flow")) {
        struct flow f;
        struct flow_params p = {.seed = 7, .resting = 50000, .levels = 200, .mid = 100000};
        if (flow_generate(&f, n, &p) != 0) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        report("mixed_flow", "60% add (1/6 crossing), 35% cancel, 5% market, ~50k resting",
               f.warmup, f.nwarmup, f.cmds, f.ncmds, p.resting, reps);
        flow_free(&f);
    }
    if (run_harness(n, reps) != 0)
        return 1;
    if (selected("dispatch") && bench_dispatch(n, reps) != 0)
        return 1;
    free(setup);
    free(run);
    return 0;
}
