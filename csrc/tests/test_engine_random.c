/*
 * Randomized engine tests: long random command streams over several
 * instruments and accounts (orders, cancels and modifies, and now and then
 * the account-wide commands: CANCEL_ALL, SET_MMP and RESET_MMP, on a clock
 * that moves on so that protection's windows open and close, or an
 * instrument's order limits: SET_LIMITS), with eng_verify() after every
 * command and the conservation laws checked from the events alone:
 *   - every accepted quantity ends up traded, cancelled or resting;
 *   - each trade's maker and taker leaves follow from the previous state;
 *   - the open quantity an observer derives equals eng_get_order();
 *   - a MASS_CANCELLED counts the cancels before it; an MMP event that
 *     trips says more has filled than the limit;
 *   - the book is never crossed, and an account whose protection tripped
 *     rests nothing there (eng_verify);
 *   - a SET_LIMITS is refused for the reason the rules give, or sets what
 *     it says; a NEW, or a MODIFY that leaves more than a reduction at its
 *     order's price, is refused for the limits (as the LIMITS events set
 *     them) exactly when they refuse it and the checks before them pass,
 *     and nothing over them is accepted or modified.
 * And determinism: the same stream on two engines gives byte-identical events.
 */
#include "test.h"

enum { NINST = 3, NACCOUNTS = 4, MAX_IDS = 200000 };

/* The account that sets market-maker protection: the others trade freely,
   so a trip leaves most of the flow as it was. */
enum { MAKER = NACCOUNTS - 1 };

struct observer {
    int64_t open[MAX_IDS];     /* open qty per order id, as the events tell */
    int64_t accepted[MAX_IDS]; /* accepted qty */
    int64_t done[MAX_IDS];     /* traded + cancelled */
    uint64_t last_id;
    uint64_t mass_cancelled;   /* orders cancelled by CANCEL_ALL */
    uint64_t mass_every;       /* CANCEL_ALLs of every account */
    uint64_t trips;            /* protection tripped */
    uint64_t mmp_rejects;      /* new orders refused as tripped */
    struct eng_order_limits limits[NINST]; /* as the LIMITS events set them */
    uint64_t limit_rejects[2]; /* refused max_qty_exceeded, max_notional_exceeded */
    uint64_t limit_exempt;     /* reductions that went through limits they are over */
};

/* A fresh engine with the test's instruments, its order-id table small (it
   grows on the way), numbering its own orders or taking the caller's. */
static struct eng *make_engine(int caller_order_ids)
{
    struct eng *e = eng_create(
        &(struct eng_config){.expected_orders = 16, .caller_order_ids = caller_order_ids});
    static const struct eng_instrument_spec specs[NINST] = {
        {.symbol = "A", .tick_size = 1, .lot_size = 1, .market_protection = -1},
        {.symbol = "B", .tick_size = 5, .lot_size = 3, .market_protection = 20},
        {.symbol = "C", .tick_size = 2, .lot_size = 1, .min_price = 900, .max_price = 1100,
         .market_protection = -1},
    };
    uint32_t id;

    ASSERT_TRUE(e != NULL);
    for (int i = 0; i < NINST; i++)
        ASSERT_EQ(eng_add_instrument(e, &specs[i], &id), ENG_OK);
    return e;
}

static struct eng *make(void)
{
    return make_engine(0);
}

static struct eng *make_caller_ids(void)
{
    return make_engine(1);
}

/* A CANCEL_ALL of `c`'s account (one in eight of every account), or MAKER's
   SET_MMP or RESET_MMP, on `inst` (lot `lot`); one in ten with a field spoilt
   (flags, instrument, or the limit or window, which only SET_MMP reads). */
static void random_account_wide(uint64_t *rng, struct eng_cmd *c, uint32_t inst, int64_t lot)
{
    uint64_t r = test_rand(rng) % 20;

    c->instrument = inst;
    if (r < 2) {
        c->type = ENG_CMD_CANCEL_ALL;
        if (test_rand(rng) % 3 == 0)
            c->flags |= ENG_CMD_F_DEAD_MAN;
        if (test_rand(rng) % 4 == 0) {
            c->flags |= ENG_CMD_F_ALL_INSTRUMENTS;
            c->instrument = (uint32_t)test_rand(rng); /* ignored */
        }
        if (test_rand(rng) % 8 == 0) {
            /* With DEAD_MAN: bad_flags; with an account but one in four
               times: bad_command, unless the account is 0. */
            c->flags |= ENG_CMD_F_ALL_ACCOUNTS;
            if (test_rand(rng) % 4)
                c->account = 0;
        }
    } else if (r < 10) {
        /* Limits of a few orders' fills; windows of a few steps' ts, or
           none (until a reset); now and then protection off. */
        c->type = ENG_CMD_SET_MMP;
        c->account = MAKER;
        c->qty = test_rand(rng) % 5 == 0 ? 0 : lot * (int64_t)(5 + test_rand(rng) % 60);
        c->price = test_rand(rng) % 16 == 0 ? 0 : (int64_t)(1 + test_rand(rng) % 30);
    } else {
        c->type = ENG_CMD_RESET_MMP;
        c->account = MAKER;
    }
    switch (test_rand(rng) % 40) {
    case 0:
        c->flags |= ENG_CMD_F_POST_ONLY; /* bad_flags */
        break;
    case 1:
        c->instrument = NINST + 1; /* unknown_instrument, unless every instrument */
        break;
    case 2:
        c->qty = -c->qty - 1; /* SET_MMP: bad_mmp */
        break;
    case 3:
        c->price = -1; /* SET_MMP: bad_mmp */
        break;
    default:
        break;
    }
}

/* A SET_LIMITS of `inst` (lot `lot`): each limit none two times in three,
   else about what the orders come to (1-20 lots at prices near 1000), so
   that it refuses some of them; one in eight with a field spoilt. */
static void random_limits(uint64_t *rng, struct eng_cmd *c, uint32_t inst, int64_t lot)
{
    c->type = ENG_CMD_SET_LIMITS;
    c->instrument = inst;
    c->qty = test_rand(rng) % 3 ? 0 : lot * (int64_t)(1 + test_rand(rng) % 20);
    c->price = test_rand(rng) % 3 ? 0 : 1000 * lot * (int64_t)(1 + test_rand(rng) % 20);
    switch (test_rand(rng) % 40) {
    case 0:
        c->flags = ENG_CMD_F_ANY_ACCOUNT; /* bad_flags */
        break;
    case 1:
        c->reserved = 1; /* bad_command */
        break;
    case 2:
        c->instrument = NINST + 1; /* unknown_instrument */
        break;
    case 3:
        c->qty = -c->qty - 1; /* bad_order_limits */
        break;
    case 4:
        c->price = -c->price - 1; /* bad_order_limits */
        break;
    default:
        break;
    }
}

/* The next command; the clock (its ts) moves on by 0-2. */
static struct eng_cmd random_cmd(uint64_t *rng, uint64_t last_id, int64_t *mid, int64_t *clock)
{
    struct eng_cmd c = {0};
    uint64_t r = test_rand(rng);
    uint32_t inst = (uint32_t)(r % NINST);
    int64_t tick = inst == 1 ? 5 : inst == 2 ? 2 : 1;
    int64_t lot = inst == 1 ? 3 : 1;

    *clock += (int64_t)(test_rand(rng) % 3);
    c.ts = *clock;
    if (test_rand(rng) % 8 == 0)
        mid[inst] += (int64_t)(test_rand(rng) % 3) - 1;
    r = test_rand(rng) % 100;
    c.account = (uint32_t)(test_rand(rng) % NACCOUNTS);
    if (r >= 96 && last_id > 0) {
        random_account_wide(rng, &c, inst, lot);
    } else if (r >= 94 && last_id > 0) {
        random_limits(rng, &c, inst, lot);
    } else if (r < 56 || last_id == 0) {
        c.type = ENG_CMD_NEW;
        c.instrument = inst;
        c.side = test_rand(rng) % 2 ? ENG_BUY : ENG_SELL;
        c.order_type = test_rand(rng) % 12 == 0 ? ENG_MARKET : ENG_LIMIT;
        c.tif = c.order_type == ENG_MARKET ? ENG_IOC + test_rand(rng) % 2
                                           : ENG_GTC + (test_rand(rng) % 10 < 7 ? 0 : 1 + test_rand(rng) % 2);
        c.stp = (uint8_t)(test_rand(rng) % 4);
        c.qty = lot * (int64_t)(1 + test_rand(rng) % 20);
        if (test_rand(rng) % 50 == 0)
            c.qty += 1; /* sometimes off-lot */
        if (c.order_type == ENG_LIMIT) {
            /* Mostly behind the mid (resting), sometimes through it. */
            int64_t off = (int64_t)(test_rand(rng) % 11) - 2;
            c.price = (c.side == ENG_BUY ? mid[inst] - off : mid[inst] + off) * tick;
            if (c.tif == ENG_GTC && test_rand(rng) % 5 == 0)
                c.flags = ENG_CMD_F_POST_ONLY;
            if (test_rand(rng) % 50 == 0)
                c.price += 1; /* sometimes off-tick */
        }
        if (test_rand(rng) % 3 == 0)
            snprintf(c.coid, sizeof(c.coid), "k%u", (unsigned)(test_rand(rng) % 6));
    } else {
        c.type = r < 78 ? ENG_CMD_CANCEL : ENG_CMD_MODIFY;
        /* Mostly recent orders (often still open), sometimes any id. */
        if (test_rand(rng) % 4 == 0)
            c.order_id = 1 + test_rand(rng) % (last_id + 2);
        else
            c.order_id = last_id - test_rand(rng) % (last_id < 40 ? last_id : 40);
        if (test_rand(rng) % 2 == 0)
            c.flags |= ENG_CMD_F_ANY_ACCOUNT;
        if (c.type == ENG_CMD_MODIFY) {
            /* Multiples of 3 suit every lot size here; sometimes not, or < 0. */
            c.qty = test_rand(rng) % 10 ? 3 * (int64_t)(test_rand(rng) % 9)
                                        : (int64_t)(test_rand(rng) % 4) - 2;
            if (test_rand(rng) % 10 < 7) {
                c.flags |= ENG_CMD_F_KEEP_PRICE;
            } else {
                int64_t off = (int64_t)(test_rand(rng) % 11) - 5;
                c.price = (mid[inst] + off) * tick; /* instrument may differ: off-tick */
            }
        }
    }
    return c;
}

/* What `limits` say of `qty` at `price` (0: a market order, held to its
   quantity only); a notional past int64 is over any limit. */
static int limits_say(const struct eng_order_limits *limits, int64_t price, int64_t qty)
{
    if (limits->max_qty && qty > limits->max_qty)
        return ENG_MAX_QTY_EXCEEDED;
    if (limits->max_notional && price && (__int128)price * qty > limits->max_notional)
        return ENG_MAX_NOTIONAL_EXCEEDED;
    return ENG_OK;
}

/*
 * Before `c` runs: the reject the observer's limits give it (a NEW, or a
 * MODIFY of an open order that raises its quantity or moves its price; else
 * ENG_OK), and in *decides whether every check before the limits passes, so
 * that a reject must be theirs. random_cmd()'s NEWs and MODIFYs are well
 * formed and no instrument halts: what comes first is protection (a NEW),
 * the owner (a MODIFY), and the quantity and price.
 */
static int limits_verdict(struct eng *e, const struct observer *ob, const struct eng_cmd *c,
                          bool *decides)
{
    const struct eng_instrument_spec *s;
    struct eng_order_info o;
    struct eng_mmp_info m;
    uint32_t inst;
    int64_t price, qty;
    bool market = false;

    *decides = false;
    if (c->type == ENG_CMD_NEW && c->instrument < NINST) {
        inst = c->instrument;
        market = c->order_type == ENG_MARKET;
        price = market ? 0 : c->price;
        qty = c->qty;
        *decides = !(eng_get_mmp(e, c->account, inst, &m) == 1 && m.tripped);
    } else if (c->type == ENG_CMD_MODIFY && eng_get_order(e, c->order_id, &o) == 1) {
        inst = o.instrument;
        price = (c->flags & ENG_CMD_F_KEEP_PRICE) ? o.price : c->price;
        qty = (c->flags & ENG_CMD_F_KEEP_QTY) ? o.qty : c->qty;
        if (qty <= 0 || (price == o.price && qty <= o.qty))
            return ENG_OK; /* a cancel, a bad qty or a reduction: never theirs */
        *decides = (c->flags & ENG_CMD_F_ANY_ACCOUNT) || o.account == c->account;
    } else {
        return ENG_OK;
    }
    s = eng_instrument(e, inst);
    *decides = *decides && qty > 0 && qty % s->lot_size == 0 &&
               (market || (price > 0 && price % s->tick_size == 0 &&
                           (!s->min_price || price >= s->min_price) &&
                           (!s->max_price || price <= s->max_price)));
    return limits_say(&ob->limits[inst], price, qty);
}

/* The reject of a SET_LIMITS as the rules give it, in their order. */
static int set_limits_reject(const struct eng_cmd *c)
{
    if (c->reserved)
        return ENG_BAD_COMMAND;
    if (c->flags)
        return ENG_BAD_FLAGS;
    if (c->instrument >= NINST)
        return ENG_UNKNOWN_INSTRUMENT;
    if (c->qty < 0 || c->price < 0)
        return ENG_BAD_ORDER_LIMITS;
    return ENG_OK;
}

/* `c`'s events say what limits_verdict() (`want`, `decides`) and, for a
   SET_LIMITS, the rules expect. */
static void check_limits(struct eng *e, const struct eng_cmd *c, int want, bool decides,
                         const struct eng_event *ev, size_t n)
{
    bool rejected = ev[0].type == ENG_EV_REJECTED;
    struct eng_order_limits got;

    if (c->type == ENG_CMD_SET_LIMITS) {
        int reject = set_limits_reject(c);
        ASSERT_EQ(n, 1);
        ASSERT_EQ(ev[0].type, reject ? ENG_EV_REJECTED : ENG_EV_LIMITS);
        if (reject) {
            ASSERT_EQ(ev[0].reason, reject);
            return;
        }
        ASSERT_EQ(ev[0].instrument, c->instrument);
        ASSERT_EQ(ev[0].qty, c->qty);
        ASSERT_EQ(ev[0].price, c->price);
        ASSERT_EQ(eng_get_order_limits(e, c->instrument, &got), 0);
        ASSERT_EQ(got.max_qty, c->qty);
        ASSERT_EQ(got.max_notional, c->price);
        return;
    }
    if (want && decides) {
        ASSERT_EQ(n, 1);
        ASSERT_TRUE(rejected);
        ASSERT_EQ(ev[0].reason, want);
    }
    if (rejected &&
        (ev[0].reason == ENG_MAX_QTY_EXCEEDED || ev[0].reason == ENG_MAX_NOTIONAL_EXCEEDED))
        ASSERT_EQ(ev[0].reason, want);
    if (ev[0].type == ENG_EV_ACCEPTED ||
        (ev[0].type == ENG_EV_MODIFIED && !(ev[0].flags & ENG_EV_F_PRIORITY_KEPT)))
        ASSERT_EQ(want, ENG_OK);
}

/* Fold one command's events into the observer and check them. */
static void observe(struct observer *ob, const struct eng_event *ev, size_t n)
{
    int64_t cancels = 0;

    for (size_t i = 0; i < n; i++) {
        const struct eng_event *x = &ev[i];
        switch (x->type) {
        case ENG_EV_ACCEPTED:
            ASSERT_EQ(x->order_id, ob->last_id + 1);
            ob->last_id = x->order_id;
            ASSERT_TRUE(x->order_id < MAX_IDS);
            ob->open[x->order_id] = x->qty;
            ob->accepted[x->order_id] = x->qty;
            break;
        case ENG_EV_TRADE:
            ASSERT_TRUE(x->qty > 0);
            ASSERT_EQ(ob->open[x->order_id] - x->qty, x->leaves);
            ASSERT_EQ(ob->open[x->maker_order_id] - x->qty, x->maker_leaves);
            ob->open[x->order_id] -= x->qty;
            ob->open[x->maker_order_id] -= x->qty;
            ob->done[x->order_id] += x->qty;
            ob->done[x->maker_order_id] += x->qty;
            break;
        case ENG_EV_CANCELLED:
            ASSERT_EQ(ob->open[x->order_id], x->leaves);
            ASSERT_TRUE(x->leaves > 0);
            ob->done[x->order_id] += x->leaves;
            ob->open[x->order_id] = 0;
            cancels++;
            break;
        case ENG_EV_MASS_CANCELLED:
            /* A CANCEL_ALL's events are its cancels, then this. */
            ASSERT_EQ(i, n - 1);
            ASSERT_EQ(x->qty, cancels);
            ob->mass_cancelled += (uint64_t)x->qty;
            ob->mass_every += (x->flags & ENG_EV_F_ALL_ACCOUNTS) != 0;
            break;
        case ENG_EV_MMP:
            if (x->flags & ENG_EV_F_TRIPPED) {
                ASSERT_TRUE(x->qty > 0 && x->leaves > x->qty);
                ob->trips++;
            } else {
                ASSERT_EQ(x->leaves, 0); /* a SET_MMP or RESET_MMP: no window open */
                ASSERT_EQ(n, 1);
            }
            break;
        case ENG_EV_MODIFIED:
            if ((x->flags & ENG_EV_F_PRIORITY_KEPT) &&
                limits_say(&ob->limits[x->instrument], x->price, x->qty) != ENG_OK)
                ob->limit_exempt++;
            /* The new open quantity replaces the old: count the difference
               as accepted (up) or done (down). */
            if (x->qty > ob->open[x->order_id])
                ob->accepted[x->order_id] += x->qty - ob->open[x->order_id];
            else
                ob->done[x->order_id] += ob->open[x->order_id] - x->qty;
            ob->open[x->order_id] = x->qty;
            break;
        case ENG_EV_REJECTED:
            ob->mmp_rejects += x->reason == ENG_MMP;
            if (x->reason == ENG_MAX_QTY_EXCEEDED || x->reason == ENG_MAX_NOTIONAL_EXCEEDED)
                ob->limit_rejects[x->reason - ENG_MAX_QTY_EXCEEDED]++;
            break;
        case ENG_EV_LIMITS:
            ASSERT_EQ(n, 1);
            ASSERT_TRUE(x->instrument < NINST && x->qty >= 0 && x->price >= 0);
            ob->limits[x->instrument] = (struct eng_order_limits){x->qty, x->price};
            break;
        default:
            TEST_FAIL_("unknown event type %d", x->type);
        }
    }
}

/* After a CANCEL_ALL: refused for the reason the rules give, or no order
   of its scope (its account, or every account, on its instruments) rests,
   and its MASS_CANCELLED says that scope. */
static void check_mass_cancel(struct eng *e, const struct eng_cmd *c, const struct eng_event *ev,
                              size_t n)
{
    const uint8_t allowed = ENG_CMD_F_DEAD_MAN | ENG_CMD_F_ALL_INSTRUMENTS | ENG_CMD_F_ALL_ACCOUNTS;
    bool all = c->flags & ENG_CMD_F_ALL_INSTRUMENTS, every = c->flags & ENG_CMD_F_ALL_ACCOUNTS;
    int reject = ENG_OK;
    struct eng_order_info page[64];

    if (c->type != ENG_CMD_CANCEL_ALL)
        return;
    if ((c->flags & ~allowed) || (every && (c->flags & ENG_CMD_F_DEAD_MAN)))
        reject = ENG_BAD_FLAGS;
    else if (every && c->account)
        reject = ENG_BAD_COMMAND;
    else if (!all && c->instrument >= NINST)
        reject = ENG_UNKNOWN_INSTRUMENT;
    if (reject) {
        ASSERT_EQ(n, 1);
        ASSERT_EQ(ev[0].type, ENG_EV_REJECTED);
        ASSERT_EQ(ev[0].reason, reject);
        return;
    }
    ASSERT_EQ(ev[n - 1].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[n - 1].flags, (all ? ENG_EV_F_ALL_INSTRUMENTS : 0) | (every ? ENG_EV_F_ALL_ACCOUNTS : 0));
    ASSERT_EQ(ev[n - 1].account, c->account);
    for (uint32_t i = all ? 0 : c->instrument; i < (all ? NINST : c->instrument + 1); i++) {
        for (uint8_t side = ENG_BUY; side <= ENG_SELL; side++) {
            int64_t got;
            for (size_t skip = 0; (got = eng_book_orders(e, i, side, skip, page, 64)) > 0; skip += 64)
                for (int64_t k = 0; k < got; k++)
                    ASSERT_TRUE(!every && page[k].account != c->account);
        }
    }
}

static void check_orders(struct eng *e, const struct observer *ob, const struct eng_event *ev,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t ids[2] = {ev[i].order_id, ev[i].type == ENG_EV_TRADE ? ev[i].maker_order_id : 0};
        for (int k = 0; k < 2; k++) {
            struct eng_order_info oi;
            uint64_t id = ids[k];
            if (!id || ev[i].type == ENG_EV_REJECTED)
                continue;
            int open = eng_get_order(e, id, &oi);
            ASSERT_EQ(open ? oi.qty : 0, ob->open[id]);
            ASSERT_EQ(ob->accepted[id], ob->done[id] + ob->open[id]);
        }
    }
}

void test_engine_random_flow_invariants(void)
{
    static struct observer ob;
    struct eng *e = make();
    uint64_t rng = 0xC0FFEE;
    int64_t mid[NINST] = {1000, 200, 500}, clock = 0;
    struct eng_stats st;
    int64_t resting = 0;
    const int steps = test_steps(60000);

    memset(&ob, 0, sizeof(ob));
    for (int step = 0; step < steps; step++) {
        struct eng_cmd c = random_cmd(&rng, ob.last_id, mid, &clock);
        bool decides;
        int want = limits_verdict(e, &ob, &c, &decides);
        size_t n;
        eng_clear_events(e);
        ASSERT_TRUE(eng_process(e, &c) >= 1);
        const struct eng_event *ev = eng_events(e, &n);
        for (size_t i = 0; i < n; i++)
            ASSERT_EQ(ev[i].seq, (uint64_t)step + 1);
        check_limits(e, &c, want, decides, ev, n);
        check_mass_cancel(e, &c, ev, n);
        observe(&ob, ev, n);
        check_orders(e, &ob, ev, n);
        ASSERT_VERIFY(e);
    }
    for (uint64_t id = 1; id <= ob.last_id; id++) {
        ASSERT_EQ(ob.accepted[id], ob.done[id] + ob.open[id]);
        resting += ob.open[id] > 0;
    }
    eng_get_stats(e, &st);
    ASSERT_EQ(st.open_orders, resting);
    ASSERT_EQ(st.accepted, ob.last_id);
    ASSERT_TRUE(st.trades > (uint64_t)steps / 60); /* the stream really trades */
    printf("[%llu trades, %llu rejects, %llu modified, %llu cancelled, %llu open] ",
           (unsigned long long)st.trades, (unsigned long long)st.rejected,
           (unsigned long long)st.modified, (unsigned long long)st.cancelled,
           (unsigned long long)st.open_orders);
    printf("[%llu mass-cancelled (%llu of every account), %llu trips, %llu refused as tripped] ",
           (unsigned long long)ob.mass_cancelled, (unsigned long long)ob.mass_every,
           (unsigned long long)ob.trips, (unsigned long long)ob.mmp_rejects);
    printf("[%llu over max_qty, %llu over max_notional, %llu reductions over the limits] ",
           (unsigned long long)ob.limit_rejects[0], (unsigned long long)ob.limit_rejects[1],
           (unsigned long long)ob.limit_exempt);
    ASSERT_TRUE(st.rejected > (uint64_t)steps / 60 && st.modified > (uint64_t)steps / 60 &&
                st.cancelled > (uint64_t)steps / 60);
    ASSERT_TRUE(ob.mass_cancelled > 0 && ob.mass_every > 0 && ob.trips > 0 && ob.mmp_rejects > 0);
    ASSERT_TRUE(ob.limit_rejects[0] > 0 && ob.limit_rejects[1] > 0 && ob.limit_exempt > 0);
    eng_destroy(e);
}

/*
 * Feed `cmds` to the fresh engine `e` in batches of 1 to 19 commands (fewer
 * than the batch path's look-ahead, and more) and check that the events are
 * `events`, those of the same commands one at a time. Destroys `e`.
 */
static void same_as_batches(const struct eng_cmd *cmds, size_t n, const struct eng_event *events,
                            size_t nevents, struct eng *e, const char *where)
{
    const struct eng_event *got;
    size_t ngot;

    for (size_t i = 0, size = 1; i < n; i += size, size = size % 19 + 1) {
        size_t k = n - i < size ? n - i : size;
        if (eng_process_batch(e, cmds + i, k) != k)
            TEST_FAIL_("%s: a batch stopped short at command %zu", where, i);
    }
    got = eng_events(e, &ngot);
    if (ngot != nevents || memcmp(got, events, nevents * sizeof(*got)) != 0)
        TEST_FAIL_("%s: small batches gave other events than one command at a time", where);
    ASSERT_VERIFY(e);
    eng_destroy(e);
}
#define ASSERT_SAME_AS_BATCHES(cmds, n, events, nevents, e) \
    same_as_batches(cmds, n, events, nevents, e, __func__)

/* Also across hash seeds: make() leaves each engine to draw its own, and
   the client-order-id index's layout must never show in the events. */
void test_engine_random_determinism(void)
{
    enum { N = 20000 };
    static struct eng_cmd cmds[N];
    struct eng *a = make(), *b = make();
    uint64_t rng = 42;
    int64_t mid[NINST] = {1000, 200, 500}, clock = 0;
    size_t na, nb;

    /* Ids for cancels come from a first engine's view of the stream. */
    for (int i = 0; i < N; i++) {
        struct eng_stats st;
        eng_get_stats(a, &st);
        cmds[i] = random_cmd(&rng, st.accepted, mid, &clock);
        eng_process(a, &cmds[i]);
    }
    eng_clear_events(a);
    eng_destroy(a);
    a = make();
    ASSERT_EQ(eng_process_batch(a, cmds, N), N);
    for (int i = 0; i < N; i++)
        eng_process(b, &cmds[i]); /* one at a time vs one batch */
    const struct eng_event *ea = eng_events(a, &na);
    const struct eng_event *eb = eng_events(b, &nb);
    ASSERT_EQ(na, nb);
    ASSERT_TRUE(memcmp(ea, eb, na * sizeof(*ea)) == 0);
    ASSERT_SAME_AS_BATCHES(cmds, N, eb, nb, make());
    for (uint32_t inst = 0; inst < NINST; inst++)
        for (uint8_t side = ENG_BUY; side <= ENG_SELL; side++) {
            static struct eng_order_info oa[N], ob[N];
            int64_t ka = eng_book_orders(a, inst, side, 0, oa, N);
            int64_t kb = eng_book_orders(b, inst, side, 0, ob, N);
            ASSERT_EQ(ka, kb);
            ASSERT_TRUE(memcmp(oa, ob, (size_t)ka * sizeof(*oa)) == 0);
        }
    ASSERT_VERIFY(a);
    eng_destroy(a);
    eng_destroy(b);
}

/* With level events on, the book rebuilt from LEVEL events alone equals the
   engine's book after every command. */
void test_engine_random_level_events(void)
{
    enum { MAXP = 4096 };
    static int64_t total[NINST][2][MAXP];
    static uint32_t count[NINST][2][MAXP];
    struct eng_config cfg = {.level_events = 1};
    struct eng *e = eng_create(&cfg);
    static const struct eng_instrument_spec specs[NINST] = {
        {.symbol = "A", .tick_size = 1, .lot_size = 1, .market_protection = -1},
        {.symbol = "B", .tick_size = 5, .lot_size = 3, .market_protection = 20},
        {.symbol = "C", .tick_size = 2, .lot_size = 1, .min_price = 900, .max_price = 1100,
         .market_protection = -1},
    };
    uint64_t rng = 77, accepted = 0;
    int64_t mid[NINST] = {1000, 200, 500}, clock = 0;
    uint32_t id;

    memset(total, 0, sizeof(total));
    memset(count, 0, sizeof(count));
    for (int i = 0; i < NINST; i++)
        ASSERT_EQ(eng_add_instrument(e, &specs[i], &id), ENG_OK);
    for (int step = 0, steps = test_steps(30000); step < steps; step++) {
        struct eng_cmd c = random_cmd(&rng, accepted, mid, &clock);
        size_t n;
        eng_clear_events(e);
        ASSERT_TRUE(eng_process(e, &c) >= 1);
        const struct eng_event *ev = eng_events(e, &n);
        for (size_t i = 0; i < n; i++) {
            if (ev[i].type == ENG_EV_ACCEPTED)
                accepted++;
            if (ev[i].type != ENG_EV_LEVEL)
                continue;
            ASSERT_TRUE(ev[i].price > 0 && ev[i].price < MAXP);
            total[ev[i].instrument][ev[i].side - 1][ev[i].price] = ev[i].qty;
            count[ev[i].instrument][ev[i].side - 1][ev[i].price] = (uint32_t)ev[i].leaves;
            ASSERT_EQ(ev[i].qty == 0, ev[i].leaves == 0);
        }
        if (step % 7)
            continue;
        for (uint32_t inst = 0; inst < NINST; inst++)
            for (uint8_t side = ENG_BUY; side <= ENG_SELL; side++) {
                static struct eng_level_info lv[MAXP];
                int64_t k = eng_book_levels(e, inst, side, lv, MAXP), seen = 0;
                for (int64_t i = 0; i < k; i++) {
                    ASSERT_EQ(total[inst][side - 1][lv[i].price], lv[i].total_qty);
                    ASSERT_EQ(count[inst][side - 1][lv[i].price], lv[i].order_count);
                }
                for (int p = 0; p < MAXP; p++)
                    seen += total[inst][side - 1][p] != 0;
                ASSERT_EQ(seen, k); /* no level the engine does not have */
            }
        ASSERT_VERIFY(e);
    }
    eng_destroy(e);
}

/* A bijection of order ids that spreads them over 64 bits (0 stays 0). */
static uint64_t caller_id(uint64_t id)
{
    return id * UINT64_C(0x9E3779B97F4A7C15);
}

/* With caller order ids, the same stream with each engine id x given as
   caller_id(x) gives the same events but for the ids (and a rejected new
   order's REJECTED carries its id). */
void test_engine_random_caller_ids(void)
{
    struct eng *d = make();
    struct eng *c = make_caller_ids();
    uint64_t rng = 0xCA11E2;
    int64_t mid[NINST] = {1000, 200, 500}, clock = 0;
    struct eng_stats st;

    for (int step = 0, steps = test_steps(40000); step < steps; step++) {
        eng_get_stats(d, &st);
        struct eng_cmd cd = random_cmd(&rng, st.accepted, mid, &clock), cc = cd;
        uint64_t next = caller_id(st.accepted + 1);
        size_t nd, nc;

        cc.order_id = cd.type == ENG_CMD_NEW ? next : caller_id(cd.order_id);
        eng_clear_events(d);
        eng_clear_events(c);
        ASSERT_TRUE(eng_process(d, &cd) >= 1);
        ASSERT_TRUE(eng_process(c, &cc) >= 1);
        const struct eng_event *ed = eng_events(d, &nd), *ec = eng_events(c, &nc);
        ASSERT_EQ(nd, nc);
        for (size_t i = 0; i < nd; i++) {
            struct eng_event x = ed[i];
            x.order_id = x.type == ENG_EV_REJECTED && cd.type == ENG_CMD_NEW
                             ? next
                             : caller_id(x.order_id);
            x.maker_order_id = caller_id(x.maker_order_id);
            ASSERT_TRUE(memcmp(&x, &ec[i], sizeof(x)) == 0);
        }
        if (step % 16 == 0)
            ASSERT_VERIFY(c);
    }
    ASSERT_VERIFY(c);
    eng_get_stats(c, &st);
    ASSERT_TRUE(st.open_orders > 0 && st.trades > 0 && st.cancelled > 0);
    eng_destroy(d);
    eng_destroy(c);
}

/* With caller order ids, batches of any size give the events of the same
   commands one at a time (the batch path hashes each order id ahead). */
void test_engine_random_caller_ids_in_batches(void)
{
    enum { N = 20000 };
    static struct eng_cmd cmds[N];
    struct eng *d = make(), *one = make_caller_ids();
    uint64_t rng = 0xBA7C4;
    int64_t mid[NINST] = {1000, 200, 500}, clock = 0;
    const struct eng_event *ev;
    size_t nev;

    /* The engine-id stream's cancels and modifies name ids it gave out:
       mapped to caller ids, they hit open, finished and unknown orders. */
    for (int i = 0; i < N; i++) {
        struct eng_stats st;
        eng_get_stats(d, &st);
        cmds[i] = random_cmd(&rng, st.accepted, mid, &clock);
        eng_process(d, &cmds[i]);
        eng_clear_events(d);
        cmds[i].order_id = cmds[i].type == ENG_CMD_NEW ? caller_id(st.accepted + 1)
                                                         : caller_id(cmds[i].order_id);
    }
    for (int i = 0; i < N; i++)
        eng_process(one, &cmds[i]);
    ev = eng_events(one, &nev);
    ASSERT_SAME_AS_BATCHES(cmds, N, ev, nev, make_caller_ids());
    eng_destroy(one);
    eng_destroy(d);
}
