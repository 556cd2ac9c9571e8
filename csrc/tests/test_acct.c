/*
 * test_acct.c - each account's list of resting orders (acct.h), against a
 * model: per account, its orders in the order they joined. acct_verify()
 * runs after every step.
 */
#include "acct.h"
#include "engine_int.h"
#include "test.h"

enum { ACCOUNTS = 5, MAX_ORDERS = 4000, MAKER_ACCOUNT = 7 };

struct model {
    struct arena arena;
    struct pool pool;
    struct acct t;
    /* Per account, the handles of its orders in the order they joined. */
    uint32_t joined[ACCOUNTS][MAX_ORDERS];
    uint32_t n[ACCOUNTS];
    uint32_t most[ACCOUNTS]; /* the most it ever had */
    uint32_t renumbered;     /* joins that found their list's join numbers run out */
};

static void model_init(struct model *m)
{
    memset(m, 0, sizeof(*m));
    arena_init(&m->arena, NULL, 0, 1 << 16);
    ASSERT_EQ(pool_init(&m->pool, &m->arena, sizeof(struct order), 6), 0);
    acct_init(&m->t);
    for (uint32_t a = 0; a < ACCOUNTS; a++)
        ASSERT_TRUE(acct_track(&m->t, a, 0) != NULL);
}

static void model_destroy(struct model *m)
{
    for (uint32_t a = 0; a < ACCOUNTS; a++)
        for (uint32_t k = 0; k < m->n[a]; k++)
            pool_free(&m->pool, pool_at(&m->pool, m->joined[a][k]), m->joined[a][k]);
    ASSERT_EQ(pool_destroy(&m->pool), 0);
    acct_destroy(&m->t);
    arena_destroy(&m->arena);
}

static int by_join(const void *pa, const void *pb)
{
    const struct acct_slot *a = pa, *b = pb;

    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* The account's orders, sorted by join number, are the model's. */
static void model_check(const struct model *m)
{
    static struct acct_slot in_use[MAX_ORDERS];
    const char *why = NULL;
    uint64_t live = 0;

    if (!acct_verify(&m->t, &m->pool, &why))
        TEST_FAIL_("acct_verify: %s", why);
    for (uint32_t a = 0; a < ACCOUNTS; a++) {
        const struct acct_list *l = acct_find(&m->t, a);
        uint32_t k = 0;

        live += m->n[a];
        ASSERT_TRUE(l != NULL);
        ASSERT_EQ(l->live, m->n[a]);
        for (uint32_t i = 0; i < l->len; i++) {
            if (!l->slots[i].handle)
                continue;
            ASSERT_TRUE(k < m->n[a]);
            ASSERT_TRUE(acct_holds(&m->t, pool_at(&m->pool, l->slots[i].handle)));
            in_use[k++] = l->slots[i];
        }
        ASSERT_EQ(k, m->n[a]);
        qsort(in_use, k, sizeof(in_use[0]), by_join);
        for (uint32_t i = 0; i < k; i++) {
            ASSERT_EQ(in_use[i].handle, m->joined[a][i]);
            ASSERT_TRUE(i == 0 || in_use[i].seq > in_use[i - 1].seq);
        }
        /* Slots are taken again before new ones: never more than the most
           orders it ever had (nor room for more than twice those). */
        ASSERT_TRUE(l->len <= m->most[a]);
        ASSERT_TRUE(l->cap <= 16 || l->cap < 2 * m->most[a]);
    }
    ASSERT_EQ(m->t.live, live);
}

static void join(struct model *m, struct order *o)
{
    const struct acct_list *before = acct_find(&m->t, o->account);
    struct acct_list *l;

    m->renumbered += before->seq >= m->t.max_seq;
    ASSERT_EQ(acct_room(&m->t, &m->pool, o->account, &l), 0);
    ASSERT_TRUE(l != NULL);
    ASSERT_EQ(l->account, o->account);
    acct_add(&m->t, l, o);
    m->joined[o->account][m->n[o->account]++] = o->handle;
    if (m->n[o->account] > m->most[o->account])
        m->most[o->account] = m->n[o->account];
}

static void leave(struct model *m, uint32_t account, uint32_t k)
{
    struct order *o = pool_at(&m->pool, m->joined[account][k]);

    acct_remove(&m->t, o);
    ASSERT_TRUE(!acct_holds(&m->t, o));
    memmove(&m->joined[account][k], &m->joined[account][k + 1],
            (m->n[account] - k - 1) * sizeof(uint32_t));
    m->n[account]--;
}

static struct order *new_order(struct model *m, uint32_t account)
{
    uint32_t handle;
    struct order *o = pool_alloc(&m->pool, &handle);

    ASSERT_TRUE(o != NULL);
    memset(o, 0, sizeof(*o));
    o->handle = handle;
    o->account = account;
    return o;
}

static void churn(struct model *m, int steps, uint32_t most)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;

    for (int step = 0; step < steps; step++) {
        uint32_t a = (uint32_t)(rng % ACCOUNTS), roll;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        roll = (uint32_t)(rng >> 33) % 100;
        /* The first thousand steps mostly join, the rest mostly churn. */
        if (m->n[a] < most && (m->n[a] == 0 || roll < (step < 1000 ? 80u : 45u))) {
            join(m, new_order(m, a));
        } else if (m->n[a] > 0 && roll < 90) {
            uint32_t k = (uint32_t)(rng >> 17) % m->n[a];
            struct order *o = pool_at(&m->pool, m->joined[a][k]);
            leave(m, a, k);
            pool_free(&m->pool, o, o->handle);
        } else if (m->n[a] > 0) {
            /* A modify that loses priority: out, then in again at the back. */
            uint32_t k = (uint32_t)(rng >> 17) % m->n[a];
            struct order *o = pool_at(&m->pool, m->joined[a][k]);
            leave(m, a, k);
            join(m, o);
        }
        model_check(m);
    }
}

void test_acct_lists_follow_joins_and_leaves(void)
{
    struct model m;

    model_init(&m);
    churn(&m, test_steps(30000), MAX_ORDERS);
    model_destroy(&m);
}

void test_acct_join_numbers_run_out_and_start_again(void)
{
    struct model m;

    model_init(&m);
    m.t.max_seq = 300; /* a few hundred joins an account, not four thousand million */
    churn(&m, 10000, 100);
    ASSERT_TRUE(m.renumbered > 5);
    model_destroy(&m);
}

void test_acct_list_empties_and_starts_again(void)
{
    struct model m;
    struct order *o[3];
    const struct acct_list *l;

    model_init(&m);
    for (int i = 0; i < 3; i++)
        join(&m, o[i] = new_order(&m, 2));
    l = acct_find(&m.t, 2);
    ASSERT_EQ(l->len, 3);
    ASSERT_EQ(l->seq, 3);
    /* An order leaving frees its slot; the next to join takes it, with
       the next join number. */
    leave(&m, 2, 1);
    ASSERT_EQ(l->slots[1].handle, 0);
    ASSERT_EQ(l->free, 2);
    model_check(&m);
    join(&m, o[1]);
    ASSERT_EQ(l->len, 3);
    ASSERT_EQ(o[1]->acct_slot, 1);
    ASSERT_EQ(l->slots[1].seq, 4);
    model_check(&m);
    /* The last order leaving empties the list, join numbers too. */
    for (int i = 0; i < 3; i++)
        leave(&m, 2, 0);
    ASSERT_EQ(l->len, 0);
    ASSERT_EQ(l->seq, 0);
    ASSERT_EQ(l->free, 0);
    model_check(&m);
    for (int i = 0; i < 3; i++)
        pool_free(&m.pool, o[i], o[i]->handle);
    model_destroy(&m);
}

void test_acct_verify_catches_corruption(void)
{
    struct model m;
    struct order *o, *p;
    struct acct_list *l;
    const char *why = NULL;

    model_init(&m);
    join(&m, p = new_order(&m, 1));
    join(&m, o = new_order(&m, 1));
    join(&m, new_order(&m, 1));
    l = (struct acct_list *)acct_find(&m.t, 1);
    ASSERT_TRUE(acct_verify(&m.t, &m.pool, &why));
    o->acct_slot = p->acct_slot; /* the other order's slot */
    ASSERT_TRUE(!acct_verify(&m.t, &m.pool, &why));
    ASSERT_TRUE(!acct_holds(&m.t, o));
    o->acct_slot = 1;
    l->live++;
    ASSERT_TRUE(!acct_verify(&m.t, &m.pool, &why));
    l->live--;
    o->account = 3;
    ASSERT_TRUE(!acct_verify(&m.t, &m.pool, &why));
    o->account = 1;
    l->slots[1].seq = 9; /* past the last join number */
    ASSERT_TRUE(!acct_verify(&m.t, &m.pool, &why));
    l->slots[1].seq = 2;
    ASSERT_TRUE(acct_verify(&m.t, &m.pool, &why));
    /* A free slot out of the chain, and a chain that loops. */
    leave(&m, 1, 0);
    ASSERT_TRUE(acct_verify(&m.t, &m.pool, &why));
    l->free = 0;
    ASSERT_TRUE(!acct_verify(&m.t, &m.pool, &why));
    l->free = 1;
    l->slots[0].seq = 1;
    ASSERT_TRUE(!acct_verify(&m.t, &m.pool, &why));
    l->slots[0].seq = 0;
    ASSERT_TRUE(acct_verify(&m.t, &m.pool, &why));
    pool_free(&m.pool, p, p->handle);
    model_destroy(&m);
}

void test_acct_untracked_accounts_pay_nothing(void)
{
    struct acct t;
    struct acct_list *l = (struct acct_list *)1;
    struct order o = {.handle = 5, .account = 9, .acct_slot = ACCT_NONE};
    const char *why = NULL;
    struct arena a;
    struct pool p;

    arena_init(&a, NULL, 0, 1 << 16);
    ASSERT_EQ(pool_init(&p, &a, sizeof(struct order), 6), 0);
    acct_init(&t);
    /* No account tracked: no list, and the order says so. */
    ASSERT_EQ(acct_room(&t, &p, 9, &l), 0);
    ASSERT_TRUE(l == NULL);
    acct_add(&t, l, &o);
    ASSERT_EQ(o.acct_slot, ACCT_NONE);
    acct_remove(&t, &o);
    ASSERT_EQ(t.live, 0);
    /* Another account tracked: account 9 still is not. */
    ASSERT_TRUE(acct_track(&t, 4, 0) != NULL);
    ASSERT_EQ(acct_room(&t, &p, 9, &l), 0);
    ASSERT_TRUE(l == NULL);
    ASSERT_EQ(acct_room(&t, &p, 4, &l), 0);
    ASSERT_TRUE(l != NULL && l->account == 4);
    ASSERT_TRUE(acct_find(&t, 9) == NULL);
    ASSERT_TRUE(acct_verify(&t, &p, &why));
    acct_destroy(&t);
    ASSERT_EQ(pool_destroy(&p), 0);
    arena_destroy(&a);
}

/* ---- through the engine: the most orders a list holds -------------------- */

enum { LIMIT_SLOTS = 20, OVER_LIMIT = 30 };

static struct eng *make_limited_engine(void)
{
    struct eng *e = eng_create(&(struct eng_config){.level_events = 1});
    struct eng_instrument_spec es = {.symbol = "ES", .tick_size = 1, .lot_size = 1,
                                     .market_protection = -1};
    uint32_t id;

    ASSERT_TRUE(e != NULL);
    ASSERT_EQ(eng_add_instrument(e, &es, &id), ENG_OK);
    e->accounts.max_slots = LIMIT_SLOTS; /* ACCT_MAX_SLOTS orders, in a test's time */
    return e;
}

/* `count` bids of `account` on prices 100..96 in turn: ids[] in book order. */
static void rest_bids(struct eng *e, uint32_t account, int count, uint64_t *ids)
{
    uint64_t placed[OVER_LIMIT];
    size_t n;
    int k = 0;

    for (int i = 0; i < count; i++) {
        const struct eng_event *ev =
            run(e, (struct eng_cmd){.type = ENG_CMD_NEW, .side = ENG_BUY, .order_type = ENG_LIMIT,
                                     .tif = ENG_GTC, .account = account, .price = 100 - i % 5, .qty = 1},
                 &n);
        /* Accepted and resting (its level's event): never cancelled. */
        ASSERT_EQ(n, 2);
        ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
        ASSERT_EQ(ev[1].type, ENG_EV_LEVEL);
        placed[i] = ev[0].order_id;
    }
    for (int p = 0; p < 5; p++)
        for (int i = p; i < count; i += 5)
            ids[k++] = placed[i];
}

static void expect_cancel_all(struct eng *e, uint32_t account, uint8_t flags, int reason,
                              const uint64_t *ids, int count)
{
    size_t n;
    const struct eng_event *ev =
        run(e, (struct eng_cmd){.type = ENG_CMD_CANCEL_ALL, .account = account, .flags = flags}, &n);
    size_t k = 0;

    for (int i = 0; i < count; i++) {
        ASSERT_TRUE(k < n);
        ASSERT_EQ(ev[k].type, ENG_EV_CANCELLED);
        ASSERT_EQ(ev[k].order_id, ids[i]);
        ASSERT_EQ(ev[k].reason, reason);
        for (k++; k < n && ev[k].type == ENG_EV_LEVEL; k++)
            ;
    }
    ASSERT_EQ(k + 1, n);
    ASSERT_EQ(ev[k].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[k].qty, count);
}

void test_acct_too_many_orders_for_a_list_cancel_nothing(void)
{
    struct eng *e = make_limited_engine();
    uint64_t ids[OVER_LIMIT];

    /* Tracked, then more orders than a list holds: each rests as it would
       on an engine that tracks no account (one restored from a snapshot). */
    expect_cancel_all(e, MAKER_ACCOUNT, 0, ENG_CANCEL_USER, ids, 0);
    ASSERT_TRUE(acct_find(&e->accounts, MAKER_ACCOUNT) != NULL);
    rest_bids(e, MAKER_ACCOUNT, OVER_LIMIT, ids);
    ASSERT_TRUE(acct_find(&e->accounts, MAKER_ACCOUNT) == NULL);
    ASSERT_EQ(e->accounts.live, 0);
    expect_cancel_all(e, MAKER_ACCOUNT, 0, ENG_CANCEL_USER, ids, OVER_LIMIT);
    /* Few enough again: its next cancel-all lists it again. */
    rest_bids(e, MAKER_ACCOUNT, 7, ids);
    expect_cancel_all(e, MAKER_ACCOUNT, ENG_CMD_F_DEAD_MAN, ENG_CANCEL_DEAD_MAN, ids, 7);
    ASSERT_TRUE(acct_find(&e->accounts, MAKER_ACCOUNT) != NULL);
    rest_bids(e, MAKER_ACCOUNT, 3, ids);
    ASSERT_EQ(e->accounts.live, 3);
    expect_cancel_all(e, MAKER_ACCOUNT, 0, ENG_CANCEL_USER, ids, 3);
    eng_destroy(e);
}

void test_acct_too_many_orders_for_a_list_still_cancel_all(void)
{
    struct eng *e = make_limited_engine();
    uint64_t ids[OVER_LIMIT];

    /* Untracked, more orders than a list holds: its first cancel-all (the
       dead-man switch's) walks the books as before, not no_memory. */
    rest_bids(e, MAKER_ACCOUNT, OVER_LIMIT, ids);
    expect_cancel_all(e, MAKER_ACCOUNT, ENG_CMD_F_DEAD_MAN, ENG_CANCEL_DEAD_MAN, ids, OVER_LIMIT);
    eng_destroy(e);
}

/* The orders of `account` on instruments [first, end), as a walk of the
   books meets them (what a cancel-all must cancel, in that order). */
static size_t book_order_of(struct eng *e, uint32_t account, uint32_t first, uint32_t end, uint64_t *out)
{
    struct eng_order_info page[64];
    size_t k = 0;

    for (uint32_t i = first; i < end; i++)
        for (uint8_t side = ENG_BUY; side <= ENG_SELL; side++) {
            int64_t got;
            for (size_t skip = 0; (got = eng_book_orders(e, i, side, skip, page, 64)) > 0; skip += 64)
                for (int64_t j = 0; j < got; j++)
                    if (page[j].account == account)
                        out[k++] = page[j].order_id;
        }
    return k;
}

void test_acct_cancel_all_is_book_order_under_churn(void)
{
    enum { NINST_ = 2, ACCTS = 3, STEPS = 20000, MOST = 4096 };
    struct eng *e = eng_create(&(struct eng_config){.level_events = 1});
    static uint64_t want[MOST], live[MOST];
    uint64_t rng = 12345, nlive = 0;
    uint32_t id;

    ASSERT_TRUE(e != NULL);
    for (int i = 0; i < NINST_; i++) {
        struct eng_instrument_spec spec = {.tick_size = 1, .lot_size = 1, .market_protection = -1};
        snprintf(spec.symbol, sizeof(spec.symbol), "I%d", i);
        ASSERT_EQ(eng_add_instrument(e, &spec, &id), ENG_OK);
    }
    /* Join numbers that run out and lists that overflow, often. */
    e->accounts.max_seq = 97;
    e->accounts.max_slots = 12;
    for (int s = 0; s < test_steps(STEPS); s++) {
        uint64_t r = test_rand(&rng);
        uint32_t account = 1 + (uint32_t)(r % ACCTS), inst = (uint32_t)(r >> 8) % NINST_;
        uint8_t side = (r >> 12) & 1 ? ENG_SELL : ENG_BUY;
        int64_t price = side == ENG_BUY ? 95 + (int64_t)((r >> 16) % 8) : 98 + (int64_t)((r >> 16) % 8);
        uint64_t roll = (r >> 24) % 100;
        struct eng_cmd c = {.account = account, .instrument = inst, .ts = s};
        const struct eng_event *ev;
        size_t n, k;

        if (roll < 4) {
            bool all = roll < 2;
            uint32_t first = all ? 0 : inst, end = all ? NINST_ : inst + 1;
            k = book_order_of(e, account, first, end, want);
            c.type = ENG_CMD_CANCEL_ALL;
            c.flags = all ? ENG_CMD_F_ALL_INSTRUMENTS : 0;
            eng_clear_events(e);
            ASSERT_TRUE(eng_process(e, &c) >= 1);
            ASSERT_VERIFY(e);
            ev = eng_events(e, &n);
            for (size_t j = 0, m = 0; j < n; j++) {
                if (ev[j].type != ENG_EV_CANCELLED)
                    continue;
                ASSERT_TRUE(m < k);
                ASSERT_EQ(ev[j].order_id, want[m++]);
            }
            ASSERT_EQ(ev[n - 1].type, ENG_EV_MASS_CANCELLED);
            ASSERT_EQ(ev[n - 1].qty, (int64_t)k);
            continue;
        }
        if (roll < 40 && nlive > 0) {
            /* A modify (lose or keep priority) or a cancel of some order. */
            c.order_id = live[(r >> 32) % nlive];
            c.flags = ENG_CMD_F_ANY_ACCOUNT;
            c.type = roll < 25 ? ENG_CMD_MODIFY : ENG_CMD_CANCEL;
            c.qty = 1 + (int64_t)((r >> 40) % 4);
            c.price = 95 + (int64_t)((r >> 44) % 11);
            if (roll < 12)
                c.flags |= ENG_CMD_F_KEEP_PRICE;
        } else {
            c.type = ENG_CMD_NEW;
            c.side = side;
            c.order_type = ENG_LIMIT;
            c.tif = roll < 45 ? ENG_IOC : ENG_GTC;
            c.stp = (uint8_t)((r >> 48) % 4);
            c.price = price;
            c.qty = 1 + (int64_t)((r >> 52) % 5);
        }
        eng_clear_events(e);
        ASSERT_TRUE(eng_process(e, &c) >= 1);
        ASSERT_VERIFY(e);
        ev = eng_events(e, &n);
        for (size_t j = 0; j < n; j++)
            if (ev[j].type == ENG_EV_ACCEPTED && nlive < MOST)
                live[nlive++] = ev[j].order_id;
        if (nlive == MOST)
            nlive = 0; /* old ids: most are gone, and an unknown one is refused */
    }
    eng_destroy(e);
}
