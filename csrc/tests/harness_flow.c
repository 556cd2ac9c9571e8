/*
 * harness_flow.c - the harness-shaped flow (see harness_flow.h).
 *
 * The scratch engine assigns its own ids; the generator knows them from the
 * events, so it keeps its tracker by engine id (dense) and writes the
 * caller's id into each message. Open orders sit in an array with a position
 * map, so picking a random open order is O(1).
 *
 * Most new limit orders are quotes that a cancel follows one or two messages
 * later (the harness's cancel distances: percentiles 10/50/90/99 of 1/1/2/2);
 * the share of quotes is the depth control: more of them while the book is
 * above its target depth, fewer below. IOC orders and crossing limits take
 * liquidity; the mid's path (the scenario) makes new orders sweep stale ones.
 */
#include "harness_flow.h"

#include <stdlib.h>
#include <string.h>

const struct eng_instrument_spec hflow_instrument = {
    .symbol = "HFLOW", .tick_size = 1, .lot_size = 1, .market_protection = -1};

enum {
    ID_BITS = 25,          /* caller ids lie in 1 .. 2^25 */
    SCHED = 8,             /* ring of cancels due, by message index */
    LEVELS = 40,           /* passive orders land within this many ticks of the mid */
    DEPTH = 10000,         /* target open orders */
    SWING_PERIOD = 8000,   /* messages per full swing */
    CRASH_TICKS = 300,     /* the flash crash's drop */
    CRASH_RECOVER = 200    /* and how much of it comes back */
};

static const int64_t BASE_MID = 100000;

struct due {
    uint64_t caller; /* 0 = nothing due */
    uint64_t eid;
    int dist;
};

struct gen {
    int scenario;
    size_t n;
    uint64_t rng;
    int64_t walk;       /* the mid's random-walk part */
    int64_t mid;
    uint64_t *caller;   /* engine id -> caller id */
    uint32_t *pos;      /* engine id -> index in live + 1 (0 = not open) */
    uint64_t *live;     /* open orders' engine ids */
    size_t nlive;
    struct due due[SCHED];
    struct eng *e;
};

const char *hflow_scenario_name(int scenario)
{
    static const char *const names[HFLOW__COUNT] = {"static", "normal", "swing25", "swing40",
                                                    "crash"};
    return scenario >= 0 && scenario < HFLOW__COUNT ? names[scenario] : "?";
}

static uint64_t below(struct gen *g, uint64_t n)
{
    uint64_t x = g->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g->rng = x;
    return x * 0x2545F4914F6CDD1Dull % n;
}

/* The k-th new order's id: an odd multiplier is a bijection modulo 2^ID_BITS,
   so ids are unique and scattered over the whole range. */
static uint64_t caller_id(size_t k)
{
    return 1 + ((uint64_t)k * 0x9E3779B1ull & ((1ull << ID_BITS) - 1));
}

static size_t crash_start(const struct gen *g) { return g->n * 45 / 100; }
static size_t crash_len(const struct gen *g) { return g->n / 500 > 1000 ? g->n / 500 : 1000; }
static size_t recover_len(const struct gen *g) { return g->n / 20 > 5000 ? g->n / 20 : 5000; }

/* The crash's offset from the walk at message i: down CRASH_TICKS over
   crash_len messages, then back up CRASH_RECOVER over recover_len. */
static int64_t crash_offset(const struct gen *g, size_t i)
{
    size_t s = crash_start(g), d = crash_len(g), r = recover_len(g);
    if (i < s)
        return 0;
    if (i < s + d)
        return -(int64_t)((i - s) * CRASH_TICKS / d);
    if (i < s + d + r)
        return -CRASH_TICKS + (int64_t)((i - s - d) * CRASH_RECOVER / r);
    return -CRASH_TICKS + CRASH_RECOVER;
}

static int64_t swing_offset(size_t i, int64_t amplitude)
{
    int64_t half = SWING_PERIOD / 2, phase = (int64_t)(i % SWING_PERIOD);
    int64_t x = phase < half ? phase : SWING_PERIOD - phase; /* 0 .. half */
    return -amplitude + 2 * amplitude * x / half;
}

static void move_mid(struct gen *g, size_t i)
{
    switch (g->scenario) {
    case HFLOW_STATIC:
        g->mid = BASE_MID;
        break;
    case HFLOW_SWING25:
        g->mid = BASE_MID + swing_offset(i, 25);
        break;
    case HFLOW_SWING40:
        g->mid = BASE_MID + swing_offset(i, 40);
        break;
    default: /* normal and crash: a random walk, the crash on top */
        if (below(g, 50) == 0)
            g->walk += below(g, 2) ? 1 : -1;
        g->mid = BASE_MID + g->walk + (g->scenario == HFLOW_CRASH ? crash_offset(g, i) : 0);
    }
}

/* The book thins out to a fifth while the market crashes and recovers. */
static size_t target_depth(const struct gen *g, size_t i)
{
    size_t s = crash_start(g);
    if (g->scenario == HFLOW_CRASH && i >= s && i < s + crash_len(g) + recover_len(g))
        return DEPTH / 5;
    return DEPTH;
}

static void track_open(struct gen *g, uint64_t eid)
{
    if (g->pos[eid])
        return;
    g->live[g->nlive] = eid;
    g->pos[eid] = (uint32_t)++g->nlive;
}

static void track_done(struct gen *g, uint64_t eid)
{
    uint32_t p = g->pos[eid];
    if (!p)
        return;
    g->live[p - 1] = g->live[--g->nlive];
    g->pos[g->live[p - 1]] = p;
    g->pos[eid] = 0;
}

/* Follows the events of one message; returns the engine id it accepted, or 0. */
static uint64_t observe(struct gen *g)
{
    size_t n;
    const struct eng_event *ev = eng_events(g->e, &n);
    uint64_t accepted = 0;
    struct eng_order_info oi;

    for (size_t i = 0; i < n; i++) {
        if (ev[i].type == ENG_EV_ACCEPTED)
            accepted = ev[i].order_id;
        else if (ev[i].type == ENG_EV_TRADE) {
            if (ev[i].maker_leaves == 0)
                track_done(g, ev[i].maker_order_id);
            if (ev[i].leaves == 0)
                track_done(g, ev[i].order_id);
        } else if (ev[i].type == ENG_EV_CANCELLED)
            track_done(g, ev[i].order_id);
    }
    if (accepted && eng_get_order(g->e, accepted, &oi))
        track_open(g, accepted);
    eng_clear_events(g->e);
    return accepted;
}

/* Skewed towards the touch: the product of two uniforms. */
static int64_t passive_price(struct gen *g, uint8_t side)
{
    int64_t a = (int64_t)below(g, LEVELS), b = (int64_t)below(g, LEVELS);
    int64_t depth = 1 + a * b / LEVELS;
    return side == ENG_BUY ? g->mid - depth : g->mid + depth;
}

static uint8_t any_side(struct gen *g)
{
    return below(g, 2) ? ENG_BUY : ENG_SELL;
}

/* Schedules a cancel of a quote one or two messages after message i. */
static void schedule(struct gen *g, size_t i, uint64_t caller, uint64_t eid)
{
    int first = below(g, 10) < 7 ? 1 : 2;
    int order[SCHED - 1] = {first, 3 - first, 3, 4, 5, 6, 7};
    for (int k = 0; k < SCHED - 1; k++) {
        struct due *d = &g->due[(i + (size_t)order[k]) % SCHED];
        if (!d->caller) {
            *d = (struct due){.caller = caller, .eid = eid, .dist = order[k]};
            return;
        }
    }
}

/* The next message and the engine command it is for the scratch engine.
   Returns 1 if it is a quote that needs its cancel scheduled. */
static int next_msg(struct gen *g, struct hflow *f, size_t i, struct hflow_msg *m,
                    struct eng_cmd *c)
{
    struct due *d = &g->due[i % SCHED];
    uint64_t r;

    move_mid(g, i);
    *c = (struct eng_cmd){.account = 1};
    if (d->caller) {
        *m = (struct hflow_msg){.kind = HFLOW_CANCEL, .id = d->caller};
        c->type = ENG_CMD_CANCEL;
        c->order_id = d->eid;
        f->cancel_dist[d->dist < HFLOW_DIST_BUCKETS ? d->dist - 1 : HFLOW_DIST_BUCKETS - 1]++;
        d->caller = 0;
        return 0;
    }
    r = below(g, 1000);
    if (r < 3 && g->nlive) {
        /* Now and then a cancel of an older order. */
        uint64_t eid = g->live[below(g, g->nlive)];
        *m = (struct hflow_msg){.kind = HFLOW_CANCEL, .id = g->caller[eid]};
        c->type = ENG_CMD_CANCEL;
        c->order_id = eid;
        f->cancel_dist[HFLOW_DIST_BUCKETS - 1]++;
        return 0;
    }
    if (r < 200 && r >= 100 && g->nlive) {
        /* Modify: a new price, qty = open qty + 1. */
        uint64_t eid = g->live[below(g, g->nlive)];
        struct eng_order_info oi;
        int64_t price;
        eng_get_order(g->e, eid, &oi);
        price = passive_price(g, oi.side);
        if (price == oi.price)
            price += oi.side == ENG_BUY ? -1 : 1;
        *m = (struct hflow_msg){
            .kind = HFLOW_MODIFY, .id = g->caller[eid], .price = price, .qty = oi.qty + 1};
        c->type = ENG_CMD_MODIFY;
        c->order_id = eid;
        c->price = m->price;
        c->qty = m->qty;
        return 0;
    }
    *m = (struct hflow_msg){.side = any_side(g), .id = caller_id(f->nnew)};
    c->type = ENG_CMD_NEW;
    c->side = m->side;
    c->order_type = ENG_LIMIT;
    if (r < 100) {
        /* IOC: a few ticks through the mid. */
        int64_t through = 1 + (int64_t)below(g, 5);
        m->kind = HFLOW_IOC;
        m->price = m->side == ENG_BUY ? g->mid + through : g->mid - through;
        m->qty = 1 + (int64_t)below(g, 20);
        c->tif = ENG_IOC;
    } else {
        int crossing = below(g, 10) == 0;
        m->kind = HFLOW_LIMIT;
        m->price = passive_price(g, m->side);
        if (crossing)
            m->price = m->side == ENG_BUY ? g->mid + 1 + (int64_t)below(g, 4)
                                          : g->mid - 1 - (int64_t)below(g, 4);
        m->qty = 1 + (int64_t)below(g, 10);
        c->tif = ENG_GTC;
        if (!crossing) {
            size_t quotes = g->nlive > target_depth(g, i) ? 95 : 45;
            c->price = m->price;
            c->qty = m->qty;
            f->nnew++;
            return below(g, 100) < quotes;
        }
    }
    c->price = m->price;
    c->qty = m->qty;
    f->nnew++;
    return 0;
}

int hflow_generate(struct hflow *f, int scenario, size_t n, uint64_t seed)
{
    struct gen g = {.scenario = scenario, .n = n, .rng = seed | 1, .mid = BASE_MID};
    uint32_t inst;
    int rc = -1;

    memset(f, 0, sizeof(*f));
    if (scenario < 0 || scenario >= HFLOW__COUNT || n >= (1ull << ID_BITS))
        return -1;
    g.e = eng_create(&(struct eng_config){.expected_orders = DEPTH * 2});
    g.caller = malloc((n + 1) * sizeof(*g.caller));
    g.pos = calloc(n + 1, sizeof(*g.pos));
    g.live = malloc((n + 1) * sizeof(*g.live));
    /* aligned_alloc wants a multiple of the alignment: an even count. */
    f->msgs = aligned_alloc(64, (n / 2 + 1) * 2 * sizeof(*f->msgs));
    if (!g.e || !g.caller || !g.pos || !g.live || !f->msgs ||
        eng_add_instrument(g.e, &hflow_instrument, &inst) != ENG_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        struct eng_cmd c;
        int quote = next_msg(&g, f, i, &f->msgs[i], &c);
        uint64_t eid;
        f->count[f->msgs[i].kind]++;
        eng_process(g.e, &c);
        eid = observe(&g);
        if (eid)
            g.caller[eid] = f->msgs[i].id;
        if (quote && eid)
            schedule(&g, i, f->msgs[i].id, eid);
        if (g.nlive > f->peak_open)
            f->peak_open = g.nlive;
    }
    f->n = n;
    rc = 0;
out:
    if (rc)
        hflow_free(f);
    free(g.caller);
    free(g.pos);
    free(g.live);
    eng_destroy(g.e);
    return rc;
}

void hflow_free(struct hflow *f)
{
    free(f->msgs);
    memset(f, 0, sizeof(*f));
}
