/*
 * flow.c - the synthetic mixed flow (see flow.h).
 *
 * Open orders are tracked from the scratch engine's events in an array with
 * a position map (id -> index), so picking and removing a random open order
 * is O(1). Finished ids go to a ring that cancels of "already traded" orders
 * draw from.
 */
#include "flow.h"

#include <stdlib.h>
#include <string.h>

const struct eng_instrument_spec flow_instrument = {
    .symbol = "FLOW", .tick_size = 1, .lot_size = 1, .market_protection = -1};

enum { DEAD_RING = 4096 };

struct tracker {
    uint64_t *live;   /* open order ids */
    uint32_t *pos;    /* id -> index in live + 1 (0 = not open) */
    size_t nlive;
    size_t max_id;
    uint64_t dead[DEAD_RING];
    size_t ndead;
    uint64_t rng;
    int64_t mid;
};

static uint64_t rnd(struct tracker *t)
{
    uint64_t x = t->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t below(struct tracker *t, uint64_t n)
{
    return rnd(t) % n;
}

static void track_open(struct tracker *t, uint64_t id)
{
    t->live[t->nlive] = id;
    t->pos[id] = (uint32_t)++t->nlive;
}

static void track_done(struct tracker *t, uint64_t id)
{
    uint32_t p = t->pos[id];
    if (!p)
        return;
    t->live[p - 1] = t->live[--t->nlive];
    t->pos[t->live[p - 1]] = p;
    t->pos[id] = 0;
    t->dead[t->ndead++ % DEAD_RING] = id;
}

static void observe(struct tracker *t, struct eng *e)
{
    size_t n;
    const struct eng_event *ev = eng_events(e, &n);
    struct eng_order_info oi;

    for (size_t i = 0; i < n; i++) {
        if (ev[i].type == ENG_EV_TRADE && ev[i].maker_leaves == 0)
            track_done(t, ev[i].maker_order_id);
        else if (ev[i].type == ENG_EV_CANCELLED)
            track_done(t, ev[i].order_id);
    }
    /* An accepted order is open if it rested. */
    if (n && ev[0].type == ENG_EV_ACCEPTED && eng_get_order(e, ev[0].order_id, &oi))
        track_open(t, ev[0].order_id);
    eng_clear_events(e);
}

static struct eng_cmd passive(struct tracker *t, const struct flow_params *p)
{
    /* Skewed towards the touch: the product of two uniforms. */
    int64_t a = (int64_t)below(t, p->levels), b = (int64_t)below(t, p->levels);
    int64_t depth = 1 + a * b / (int64_t)p->levels;
    uint8_t side = below(t, 2) ? ENG_BUY : ENG_SELL;
    return (struct eng_cmd){.type = ENG_CMD_NEW,
                            .side = side,
                            .order_type = ENG_LIMIT,
                            .tif = ENG_GTC,
                            .account = (uint32_t)below(t, 1000),
                            .price = side == ENG_BUY ? t->mid - depth : t->mid + depth,
                            .qty = 1 + (int64_t)below(t, 10)};
}

static struct eng_cmd next_cmd(struct tracker *t, const struct flow_params *p)
{
    uint64_t r = below(t, 100);

    if (below(t, 50) == 0)
        t->mid += below(t, 2) ? 1 : -1;
    if (r < 50)
        return passive(t, p);
    if (r < 60) {
        /* Crossing limit order: a few ticks through the mid, sized like
           the passive ones. */
        struct eng_cmd c = passive(t, p);
        int64_t through = 1 + (int64_t)below(t, 4);
        c.price = c.side == ENG_BUY ? t->mid + through : t->mid - through;
        return c;
    }
    if (r < 95) {
        /* Cancel: an open order while the book is above target, otherwise
           one that is already gone (it traded or was cancelled). */
        struct eng_cmd c = {.type = ENG_CMD_CANCEL, .flags = ENG_CMD_F_ANY_ACCOUNT};
        size_t ndead = t->ndead < DEAD_RING ? t->ndead : DEAD_RING;
        if ((t->nlive > p->resting || ndead == 0) && t->nlive)
            c.order_id = t->live[below(t, t->nlive)];
        else if (ndead)
            c.order_id = t->dead[below(t, ndead)];
        else
            return passive(t, p);
        return c;
    }
    return (struct eng_cmd){.type = ENG_CMD_NEW,
                            .side = below(t, 2) ? ENG_BUY : ENG_SELL,
                            .order_type = ENG_MARKET,
                            .tif = ENG_IOC,
                            .account = (uint32_t)below(t, 1000),
                            .qty = 1 + (int64_t)below(t, 10)};
}

int flow_generate(struct flow *f, size_t n, const struct flow_params *p)
{
    struct tracker t = {.rng = p->seed | 1, .mid = p->mid};
    size_t max_ids = (size_t)p->resting * 2 + n + 1;
    struct eng *e = eng_create(&(struct eng_config){.expected_orders = p->resting});
    uint32_t inst;
    int rc = -1;

    memset(f, 0, sizeof(*f));
    t.live = malloc(max_ids * sizeof(*t.live));
    t.pos = calloc(max_ids, sizeof(*t.pos));
    f->warmup = aligned_alloc(64, (size_t)p->resting * 2 * sizeof(*f->warmup));
    f->cmds = aligned_alloc(64, n * sizeof(*f->cmds));
    if (!e || !t.live || !t.pos || !f->warmup || !f->cmds ||
        eng_add_instrument(e, &flow_instrument, &inst) != ENG_OK)
        goto out;
    while (t.nlive < p->resting && f->nwarmup < (size_t)p->resting * 2) {
        struct eng_cmd c = passive(&t, p);
        f->warmup[f->nwarmup++] = c;
        eng_process(e, &c);
        observe(&t, e);
    }
    for (size_t i = 0; i < n; i++) {
        f->cmds[i] = next_cmd(&t, p);
        eng_process(e, &f->cmds[i]);
        observe(&t, e);
    }
    f->ncmds = n;
    rc = 0;
out:
    if (rc)
        flow_free(f);
    free(t.live);
    free(t.pos);
    eng_destroy(e);
    return rc;
}

void flow_free(struct flow *f)
{
    free(f->warmup);
    free(f->cmds);
    memset(f, 0, sizeof(*f));
}
