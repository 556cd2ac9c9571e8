/*
 * The account-wide commands: CANCEL_ALL (with the dead-man switch's reason)
 * and market-maker protection (SET_MMP, RESET_MMP, tripping); an
 * instrument's order limits (SET_LIMITS). Through the public API only;
 * eng_verify() runs after every command (see run()).
 */
#include "test.h"

enum { ES = 0, NQ = 1 };
enum { MAKER = 7, OTHER = 8, TAKER = 9 };

static struct eng *make_engine_with(uint32_t level_events)
{
    struct eng *e = eng_create(&(struct eng_config){.level_events = level_events});
    struct eng_instrument_spec es = {.symbol = "ES", .tick_size = 1, .lot_size = 1,
                                     .market_protection = -1};
    struct eng_instrument_spec nq = {.symbol = "NQ", .tick_size = 1, .lot_size = 1,
                                     .market_protection = -1};
    uint32_t id;
    ASSERT_TRUE(e != NULL);
    ASSERT_EQ(eng_add_instrument(e, &es, &id), ENG_OK);
    ASSERT_EQ(eng_add_instrument(e, &nq, &id), ENG_OK);
    return e;
}

static struct eng_cmd limit_at(uint32_t inst, uint8_t side, int64_t qty, int64_t price,
                               uint32_t account, int64_t ts)
{
    return (struct eng_cmd){.type = ENG_CMD_NEW, .side = side, .order_type = ENG_LIMIT,
                            .tif = ENG_GTC, .instrument = inst, .account = account,
                            .price = price, .qty = qty, .ts = ts};
}

static uint64_t rest(struct eng *e, uint32_t inst, uint8_t side, int64_t qty, int64_t price,
                     uint32_t account)
{
    size_t n;
    const struct eng_event *ev = run(e, limit_at(inst, side, qty, price, account, 0), &n);
    ASSERT_TRUE(n >= 1);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    ASSERT_NE(ev[n - 1].type, ENG_EV_TRADE);
    return ev[0].order_id;
}

static struct eng_cmd cancel_all(uint32_t inst, uint32_t account, uint8_t flags)
{
    return (struct eng_cmd){.type = ENG_CMD_CANCEL_ALL, .instrument = inst, .account = account,
                            .flags = flags};
}

static struct eng_cmd set_mmp(uint32_t inst, uint32_t account, int64_t limit, int64_t window)
{
    return (struct eng_cmd){.type = ENG_CMD_SET_MMP, .instrument = inst, .account = account,
                            .qty = limit, .price = window};
}

static void expect_cancelled(const struct eng_event *ev, uint64_t id, int reason)
{
    ASSERT_EQ(ev->type, ENG_EV_CANCELLED);
    ASSERT_EQ(ev->order_id, id);
    ASSERT_EQ(ev->reason, reason);
}

static void expect_rejected(struct eng *e, struct eng_cmd c, int reason)
{
    size_t n;
    const struct eng_event *ev = run(e, c, &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_REJECTED);
    ASSERT_EQ(ev[0].reason, reason);
}

static uint64_t open_orders(struct eng *e);

static int64_t open_qty(struct eng *e, uint64_t id)
{
    struct eng_order_info info;
    return eng_get_order(e, id, &info) ? info.qty : 0;
}

void test_cancel_all_one_instrument_in_book_order(void)
{
    struct eng *e = make_engine_with(0);
    uint64_t b_low = rest(e, ES, ENG_BUY, 1, 99, MAKER);
    uint64_t b_high = rest(e, ES, ENG_BUY, 2, 100, MAKER);
    uint64_t other = rest(e, ES, ENG_BUY, 3, 100, OTHER);
    uint64_t a = rest(e, ES, ENG_SELL, 4, 105, MAKER);
    uint64_t nq = rest(e, NQ, ENG_SELL, 5, 105, MAKER);
    size_t n;
    const struct eng_event *ev = run(e, cancel_all(ES, MAKER, 0), &n);

    /* Bids best first, then asks; each CANCELLED(user), then the summary. */
    ASSERT_EQ(n, 4);
    expect_cancelled(&ev[0], b_high, ENG_CANCEL_USER);
    ASSERT_EQ(ev[0].leaves, 2);
    expect_cancelled(&ev[1], b_low, ENG_CANCEL_USER);
    expect_cancelled(&ev[2], a, ENG_CANCEL_USER);
    ASSERT_EQ(ev[3].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[3].qty, 3);
    ASSERT_EQ(ev[3].account, MAKER);
    ASSERT_EQ(ev[3].instrument, ES);
    ASSERT_EQ(ev[3].reason, ENG_CANCEL_USER);
    ASSERT_EQ(ev[3].flags, 0);
    ASSERT_EQ(open_qty(e, other), 3);
    ASSERT_EQ(open_qty(e, nq), 5);

    /* Nothing left to cancel: the summary alone, count 0. */
    ev = run(e, cancel_all(ES, MAKER, 0), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[0].qty, 0);
    eng_destroy(e);
}

static uint64_t modify_to(struct eng *e, uint64_t id, int64_t qty, int64_t price)
{
    size_t n;
    const struct eng_event *ev = run(e, (struct eng_cmd){.type = ENG_CMD_MODIFY, .order_id = id,
                                                         .account = MAKER, .qty = qty, .price = price},
                                     &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_MODIFIED);
    return id;
}

void test_cancel_all_of_one_account_in_book_order_after_modifies(void)
{
    struct eng *e = make_engine_with(0);
    size_t n;
    /* From its first cancel-all on, the engine keeps a list of the
       account's orders (acct.h): the orders below go through it. */
    const struct eng_event *ev = run(e, cancel_all(NQ, MAKER, 0), &n);
    uint64_t m1 = rest(e, ES, ENG_BUY, 1, 100, MAKER);
    uint64_t other = rest(e, ES, ENG_BUY, 1, 100, OTHER);
    uint64_t m2 = rest(e, ES, ENG_BUY, 2, 100, MAKER);
    uint64_t m3 = rest(e, ES, ENG_BUY, 3, 101, MAKER);
    uint64_t m4 = rest(e, NQ, ENG_BUY, 1, 50, MAKER);
    uint64_t m5 = rest(e, ES, ENG_BUY, 1, 99, MAKER);
    uint64_t m6 = rest(e, ES, ENG_BUY, 1, 99, MAKER);
    uint64_t m7 = rest(e, ES, ENG_SELL, 1, 110, MAKER);
    uint64_t m8 = rest(e, ES, ENG_SELL, 1, 109, MAKER);
    uint64_t want[] = {m3, m2, m1, m6, m5, m8, m7, m4};

    /* A larger qty loses priority: m1 now stands behind m2. A smaller one
       keeps it. m5 leaves its level and comes back behind m6. */
    modify_to(e, m1, 2, 100);
    modify_to(e, m3, 2, 101);
    modify_to(e, m5, 1, 98);
    modify_to(e, m5, 1, 99);
    ev = run(e, cancel_all(12345, MAKER, ENG_CMD_F_ALL_INSTRUMENTS), &n);
    /* Book order, instrument by instrument: bids best first, then asks;
       on a level, its queue's order. */
    ASSERT_EQ(n, 9);
    for (size_t i = 0; i < 8; i++)
        expect_cancelled(&ev[i], want[i], ENG_CANCEL_USER);
    ASSERT_EQ(ev[8].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[8].qty, 8);
    ASSERT_EQ(open_qty(e, other), 1);
    ASSERT_EQ(open_orders(e), 1);
    eng_destroy(e);
}

void test_cancel_all_of_one_account_lists_every_instrument(void)
{
    struct eng *e = make_engine_with(0);
    uint64_t es = rest(e, ES, ENG_BUY, 1, 100, MAKER);
    uint64_t nq1 = rest(e, NQ, ENG_SELL, 1, 105, MAKER);
    uint64_t nq2 = rest(e, NQ, ENG_SELL, 1, 105, OTHER);
    uint64_t nq3 = rest(e, NQ, ENG_SELL, 2, 105, MAKER);
    uint64_t nq4, nq5;
    size_t n;
    const struct eng_event *ev = run(e, cancel_all(ES, MAKER, 0), &n);

    /* The first cancel-all of ES lists the account's NQ orders too. */
    ASSERT_EQ(n, 2);
    expect_cancelled(&ev[0], es, ENG_CANCEL_USER);
    nq4 = rest(e, NQ, ENG_SELL, 1, 104, MAKER);
    nq5 = rest(e, NQ, ENG_SELL, 1, 105, MAKER);
    modify_to(e, nq1, 3, 105); /* to the back of 105 */
    ev = run(e, cancel_all(NQ, MAKER, 0), &n);
    ASSERT_EQ(n, 5);
    expect_cancelled(&ev[0], nq4, ENG_CANCEL_USER);
    expect_cancelled(&ev[1], nq3, ENG_CANCEL_USER);
    expect_cancelled(&ev[2], nq5, ENG_CANCEL_USER);
    expect_cancelled(&ev[3], nq1, ENG_CANCEL_USER);
    ASSERT_EQ(ev[4].qty, 4);
    ASSERT_EQ(open_qty(e, nq2), 1);
    eng_destroy(e);
}

void test_cancel_all_of_one_account_takes_its_orders_not_the_book(void)
{
    struct eng *e = make_engine_with(0);
    uint64_t mine;
    struct eng_stats before, after;
    size_t n;
    const struct eng_event *ev;

    /* The first, on an empty book, takes the memory a one-order CANCEL_ALL needs. */
    rest(e, ES, ENG_BUY, 1, 90, MAKER);
    run(e, cancel_all(ES, MAKER, 0), &n);
    /* More than the event buffer's first 1024 events, shrunk or not: room
       for every order of the book would grow it. */
    const int others = 2048 + test_steps(3000);
    for (int i = 0; i < others; i++)
        rest(e, ES, i % 2 ? ENG_BUY : ENG_SELL, 1, i % 2 ? 100 - i % 50 : 200 + i % 50, OTHER);
    mine = rest(e, ES, ENG_BUY, 1, 90, MAKER);
    eng_get_stats(e, &before);
    ev = run(e, cancel_all(ES, MAKER, 0), &n);
    ASSERT_EQ(n, 2);
    expect_cancelled(&ev[0], mine, ENG_CANCEL_USER);
    ASSERT_EQ(ev[1].qty, 1);
    /* Room for its one order's events, not for every order of the book:
       the event buffer (in bytes_reserved) did not grow. */
    eng_get_stats(e, &after);
    ASSERT_EQ(after.bytes_reserved, before.bytes_reserved);
    ASSERT_EQ(after.open_orders, (uint64_t)others);
    eng_destroy(e);
}

void test_cancel_all_instruments_by_dead_man(void)
{
    struct eng *e = make_engine_with(1);
    uint64_t es = rest(e, ES, ENG_BUY, 1, 99, MAKER);
    uint64_t nq = rest(e, NQ, ENG_SELL, 5, 105, MAKER);
    uint64_t other = rest(e, NQ, ENG_SELL, 5, 105, OTHER);
    size_t n;
    const struct eng_event *ev;

    /* While halted too: a mass cancel is a cancel. */
    run(e, (struct eng_cmd){.type = ENG_CMD_SET_STATE, .instrument = NQ, .qty = ENG_STATE_HALTED},
        &n);
    ev = run(e, cancel_all(12345, MAKER, ENG_CMD_F_DEAD_MAN | ENG_CMD_F_ALL_INSTRUMENTS), &n);
    /* With level events each cancel is followed by its level's new state. */
    ASSERT_EQ(n, 5);
    expect_cancelled(&ev[0], es, ENG_CANCEL_DEAD_MAN);
    ASSERT_EQ(ev[1].type, ENG_EV_LEVEL);
    ASSERT_EQ(ev[1].qty, 0);
    expect_cancelled(&ev[2], nq, ENG_CANCEL_DEAD_MAN);
    ASSERT_EQ(ev[3].type, ENG_EV_LEVEL);
    ASSERT_EQ(ev[3].qty, 5);
    ASSERT_EQ(ev[4].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[4].qty, 2);
    ASSERT_EQ(ev[4].instrument, 0);
    ASSERT_EQ(ev[4].flags, ENG_EV_F_ALL_INSTRUMENTS);
    ASSERT_EQ(ev[4].reason, ENG_CANCEL_DEAD_MAN);
    ASSERT_EQ(open_qty(e, other), 5);
    eng_destroy(e);
}

void test_cancel_all_rejects(void)
{
    struct eng *e = make_engine_with(0);
    struct eng_cmd c = cancel_all(ES, MAKER, ENG_CMD_F_ANY_ACCOUNT);

    expect_rejected(e, c, ENG_BAD_FLAGS);
    expect_rejected(e, cancel_all(2, MAKER, 0), ENG_UNKNOWN_INSTRUMENT);
    c = cancel_all(ES, MAKER, 0);
    c.reserved = 1;
    expect_rejected(e, c, ENG_BAD_COMMAND);
    eng_destroy(e);
}

static uint64_t open_orders(struct eng *e)
{
    struct eng_stats st;
    eng_get_stats(e, &st);
    return st.open_orders;
}

void test_cancel_all_accounts_in_one_walk(void)
{
    struct eng *e = make_engine_with(0);
    uint64_t b_low = rest(e, ES, ENG_BUY, 1, 99, MAKER);
    uint64_t b_first = rest(e, ES, ENG_BUY, 2, 100, OTHER);
    uint64_t b_second = rest(e, ES, ENG_BUY, 3, 100, MAKER);
    uint64_t a_high = rest(e, ES, ENG_SELL, 4, 106, TAKER);
    uint64_t a_low = rest(e, ES, ENG_SELL, 5, 105, OTHER);
    uint64_t nq = rest(e, NQ, ENG_SELL, 6, 105, MAKER);
    struct eng_level_info lv;
    size_t n;
    const struct eng_event *ev = run(e, cancel_all(ES, 0, ENG_CMD_F_ALL_ACCOUNTS), &n);

    /* Every account's orders on ES in book order, whoever owns them. */
    ASSERT_EQ(n, 6);
    expect_cancelled(&ev[0], b_first, ENG_CANCEL_USER);
    ASSERT_EQ(ev[0].account, OTHER);
    expect_cancelled(&ev[1], b_second, ENG_CANCEL_USER);
    ASSERT_EQ(ev[1].account, MAKER);
    expect_cancelled(&ev[2], b_low, ENG_CANCEL_USER);
    expect_cancelled(&ev[3], a_low, ENG_CANCEL_USER);
    expect_cancelled(&ev[4], a_high, ENG_CANCEL_USER);
    ASSERT_EQ(ev[4].account, TAKER);
    ASSERT_EQ(ev[5].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[5].qty, 5);
    ASSERT_EQ(ev[5].account, 0);
    ASSERT_EQ(ev[5].instrument, ES);
    ASSERT_EQ(ev[5].flags, ENG_EV_F_ALL_ACCOUNTS);
    ASSERT_EQ(ev[5].reason, ENG_CANCEL_USER);
    ASSERT_EQ(eng_book_levels(e, ES, ENG_BUY, &lv, 1), 0);
    ASSERT_EQ(eng_book_levels(e, ES, ENG_SELL, &lv, 1), 0);
    ASSERT_EQ(open_qty(e, nq), 6);
    ASSERT_EQ(open_orders(e), 1);
    eng_destroy(e);
}

void test_cancel_all_accounts_and_instruments(void)
{
    struct eng *e = make_engine_with(1);
    uint64_t es = rest(e, ES, ENG_BUY, 1, 99, OTHER);
    uint64_t nq_bid = rest(e, NQ, ENG_BUY, 2, 100, TAKER);
    uint64_t nq_ask = rest(e, NQ, ENG_SELL, 3, 105, MAKER);
    size_t n;
    const struct eng_event *ev;

    /* While halted too, as any mass cancel. */
    run(e, (struct eng_cmd){.type = ENG_CMD_SET_STATE, .instrument = ES, .qty = ENG_STATE_HALTED},
        &n);
    ev = run(e, cancel_all(12345, 0, ENG_CMD_F_ALL_ACCOUNTS | ENG_CMD_F_ALL_INSTRUMENTS), &n);
    ASSERT_EQ(n, 7);
    expect_cancelled(&ev[0], es, ENG_CANCEL_USER);
    ASSERT_EQ(ev[1].type, ENG_EV_LEVEL);
    expect_cancelled(&ev[2], nq_bid, ENG_CANCEL_USER);
    ASSERT_EQ(ev[3].type, ENG_EV_LEVEL);
    expect_cancelled(&ev[4], nq_ask, ENG_CANCEL_USER);
    ASSERT_EQ(ev[5].type, ENG_EV_LEVEL);
    ASSERT_EQ(ev[5].qty, 0);
    ASSERT_EQ(ev[6].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[6].qty, 3);
    ASSERT_EQ(ev[6].account, 0);
    ASSERT_EQ(ev[6].instrument, 0);
    ASSERT_EQ(ev[6].flags, ENG_EV_F_ALL_ACCOUNTS | ENG_EV_F_ALL_INSTRUMENTS);
    ASSERT_EQ(open_orders(e), 0);

    /* An empty book: the summary alone. */
    ev = run(e, cancel_all(ES, 0, ENG_CMD_F_ALL_ACCOUNTS), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_MASS_CANCELLED);
    ASSERT_EQ(ev[0].qty, 0);
    ASSERT_EQ(ev[0].flags, ENG_EV_F_ALL_ACCOUNTS);
    eng_destroy(e);
}

void test_cancel_all_accounts_rejects(void)
{
    struct eng *e = make_engine_with(0);
    uint64_t id = rest(e, ES, ENG_BUY, 1, 99, MAKER);
    struct eng_cmd c;

    /* The dead-man switch is one account's; an account named with every
       account is a malformed command, not a choice of one of them. */
    expect_rejected(e, cancel_all(ES, 0, ENG_CMD_F_ALL_ACCOUNTS | ENG_CMD_F_DEAD_MAN),
                    ENG_BAD_FLAGS);
    expect_rejected(e, cancel_all(ES, MAKER, ENG_CMD_F_ALL_ACCOUNTS), ENG_BAD_COMMAND);
    expect_rejected(e, cancel_all(ES, MAKER, ENG_CMD_F_ALL_ACCOUNTS | ENG_CMD_F_ALL_INSTRUMENTS),
                    ENG_BAD_COMMAND);
    expect_rejected(e, cancel_all(2, 0, ENG_CMD_F_ALL_ACCOUNTS), ENG_UNKNOWN_INSTRUMENT);
    expect_rejected(e, cancel_all(ES, 0, 128), ENG_BAD_FLAGS);
    c = cancel_all(ES, 0, ENG_CMD_F_ALL_ACCOUNTS);
    c.reserved = 1;
    expect_rejected(e, c, ENG_BAD_COMMAND);
    ASSERT_EQ(open_qty(e, id), 1);
    eng_destroy(e);
}

static void expect_mmp(const struct eng_event *ev, uint32_t account, uint32_t inst,
                       int64_t limit, int64_t window, int64_t filled, bool tripped)
{
    ASSERT_EQ(ev->type, ENG_EV_MMP);
    ASSERT_EQ(ev->account, account);
    ASSERT_EQ(ev->instrument, inst);
    ASSERT_EQ(ev->qty, limit);
    ASSERT_EQ(ev->price, window);
    ASSERT_EQ(ev->leaves, filled);
    ASSERT_EQ(ev->flags, tripped ? ENG_EV_F_TRIPPED : 0);
}

void test_mmp_trips_after_the_command_and_refuses_new_orders(void)
{
    struct eng *e = make_engine_with(0);
    struct eng_mmp_info info;
    size_t n;
    const struct eng_event *ev = run(e, set_mmp(ES, MAKER, 5, 1000), &n);
    uint64_t a1, a2, a3, bid, nq;

    ASSERT_EQ(n, 1);
    expect_mmp(&ev[0], MAKER, ES, 5, 1000, 0, false);
    a1 = rest(e, ES, ENG_SELL, 3, 100, MAKER);
    a2 = rest(e, ES, ENG_SELL, 4, 101, MAKER);
    a3 = rest(e, ES, ENG_SELL, 4, 102, MAKER);
    bid = rest(e, ES, ENG_BUY, 2, 90, MAKER);
    nq = rest(e, NQ, ENG_SELL, 1, 100, MAKER);

    /* 3 filled: within the limit of 5. */
    ev = run(e, limit_at(ES, ENG_BUY, 3, 100, TAKER, 10), &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(eng_get_mmp(e, MAKER, ES, &info), 1);
    ASSERT_EQ(info.filled, 3);
    ASSERT_EQ(info.window_start, 10);
    ASSERT_EQ(info.tripped, 0);

    /* One order takes 3 more and then 1 (6, then 7 > 5): the trip comes once
       the command has matched, so both trades happen; then every resting
       order of MAKER on ES goes (reason mmp), and one MMP event says so. */
    ev = run(e, limit_at(ES, ENG_BUY, 5, 102, TAKER, 20), &n);
    ASSERT_EQ(n, 6);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    ASSERT_EQ(ev[1].type, ENG_EV_TRADE);
    ASSERT_EQ(ev[1].maker_order_id, a2);
    ASSERT_EQ(ev[2].type, ENG_EV_TRADE);
    ASSERT_EQ(ev[2].maker_order_id, a3);
    expect_cancelled(&ev[3], bid, ENG_CANCEL_MMP);
    expect_cancelled(&ev[4], a3, ENG_CANCEL_MMP);
    ASSERT_EQ(ev[4].leaves, 3);
    expect_mmp(&ev[5], MAKER, ES, 5, 1000, 8, true);
    ASSERT_EQ(open_qty(e, a1), 0);
    ASSERT_EQ(open_qty(e, nq), 1); /* another instrument: untouched */

    /* New orders on ES are refused; on NQ they are not. */
    expect_rejected(e, limit_at(ES, ENG_SELL, 1, 110, MAKER, 30), ENG_MMP);
    rest(e, NQ, ENG_SELL, 1, 101, MAKER);

    /* A reset lifts it and opens a fresh window. */
    ev = run(e, (struct eng_cmd){.type = ENG_CMD_RESET_MMP, .instrument = ES, .account = MAKER},
             &n);
    ASSERT_EQ(n, 1);
    expect_mmp(&ev[0], MAKER, ES, 5, 1000, 0, false);
    rest(e, ES, ENG_SELL, 1, 110, MAKER);
    eng_destroy(e);
}

void test_mmp_window_and_taker_fills(void)
{
    struct eng *e = make_engine_with(0);
    struct eng_mmp_info info;
    size_t n;
    const struct eng_event *ev;
    uint64_t rested;

    run(e, set_mmp(ES, TAKER, 4, 100), &n);
    rest(e, ES, ENG_SELL, 20, 100, MAKER);
    /* The taker's own fills count: 3 at ts 0, 3 at ts 150 (a new window:
       the first opened at 0 and lasted 100), 1 at ts 200 (same window: 4). */
    run(e, limit_at(ES, ENG_BUY, 3, 100, TAKER, 0), &n);
    run(e, limit_at(ES, ENG_BUY, 3, 100, TAKER, 150), &n);
    ASSERT_EQ(eng_get_mmp(e, TAKER, ES, &info), 1);
    ASSERT_EQ(info.filled, 3);
    ASSERT_EQ(info.window_start, 150);
    run(e, limit_at(ES, ENG_BUY, 1, 100, TAKER, 200), &n);
    ASSERT_EQ(eng_get_mmp(e, TAKER, ES, &info), 1);
    ASSERT_EQ(info.filled, 4);
    ASSERT_EQ(info.tripped, 0);

    /* 2 more at ts 249 (6 > 4), the rest of the order rests, then goes. */
    ev = run(e, limit_at(ES, ENG_BUY, 2 + 13 + 5, 100, TAKER, 249), &n);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    rested = ev[0].order_id;
    ASSERT_EQ(ev[1].type, ENG_EV_TRADE);
    ASSERT_EQ(ev[1].qty, 13);
    expect_cancelled(&ev[2], rested, ENG_CANCEL_MMP);
    ASSERT_EQ(ev[2].leaves, 7);
    expect_mmp(&ev[3], TAKER, ES, 4, 100, 17, true);
    ASSERT_EQ(n, 4);

    /* Turning it off (limit 0) lifts the trip too; off, nothing is counted. */
    ev = run(e, set_mmp(ES, TAKER, 0, 55), &n);
    expect_mmp(&ev[0], TAKER, ES, 0, 0, 0, false);
    ASSERT_EQ(eng_get_mmp(e, TAKER, ES, &info), 0);
    rest(e, ES, ENG_BUY, 1, 99, TAKER);
    eng_destroy(e);
}

void test_mmp_rejects(void)
{
    struct eng *e = make_engine_with(0);
    struct eng_cmd c = set_mmp(ES, MAKER, 5, 10);
    size_t n;
    const struct eng_event *ev;

    expect_rejected(e, set_mmp(ES, MAKER, -1, 10), ENG_BAD_MMP);
    expect_rejected(e, set_mmp(ES, MAKER, 5, -10), ENG_BAD_MMP);
    expect_rejected(e, set_mmp(2, MAKER, 5, 10), ENG_UNKNOWN_INSTRUMENT);
    c.flags = ENG_CMD_F_DEAD_MAN;
    expect_rejected(e, c, ENG_BAD_FLAGS);
    c = (struct eng_cmd){.type = ENG_CMD_RESET_MMP, .instrument = 2, .account = MAKER};
    expect_rejected(e, c, ENG_UNKNOWN_INSTRUMENT);
    /* A reset where nothing is set changes nothing and says so. */
    c.instrument = ES;
    ev = run(e, c, &n);
    expect_mmp(&ev[0], MAKER, ES, 0, 0, 0, false);
    eng_destroy(e);
}

void test_mmp_self_trade_counts_both_sides(void)
{
    struct eng *e = make_engine_with(0);
    size_t n;
    const struct eng_event *ev;

    run(e, set_mmp(ES, MAKER, 3, 0), &n);
    rest(e, ES, ENG_SELL, 2, 100, MAKER);
    /* MAKER buys 2 from itself: 2 as taker and 2 as maker, 4 > 3. */
    ev = run(e, limit_at(ES, ENG_BUY, 2, 100, MAKER, 0), &n);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(ev[1].type, ENG_EV_TRADE);
    expect_mmp(&ev[2], MAKER, ES, 3, 0, 4, true);
    eng_destroy(e);
}

/* ---- order limits ---------------------------------------------------------- */

static struct eng_cmd set_limits(uint32_t inst, int64_t max_qty, int64_t max_notional)
{
    return (struct eng_cmd){.type = ENG_CMD_SET_LIMITS, .instrument = inst, .account = OTHER,
                            .qty = max_qty, .price = max_notional};
}

static void limits_set(struct eng *e, uint32_t inst, int64_t max_qty, int64_t max_notional)
{
    size_t n;
    const struct eng_event *ev = run(e, set_limits(inst, max_qty, max_notional), &n);
    struct eng_order_limits got;

    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_LIMITS);
    ASSERT_EQ(ev[0].instrument, inst);
    ASSERT_EQ(ev[0].qty, max_qty);
    ASSERT_EQ(ev[0].price, max_notional);
    ASSERT_EQ(ev[0].account, OTHER);
    ASSERT_EQ(ev[0].seq, eng_seq(e));
    ASSERT_EQ(eng_get_order_limits(e, inst, &got), 0);
    ASSERT_EQ(got.max_qty, max_qty);
    ASSERT_EQ(got.max_notional, max_notional);
}

static void expect_accepted(struct eng *e, struct eng_cmd c)
{
    size_t n;
    const struct eng_event *ev = run(e, c, &n);
    ASSERT_TRUE(n >= 1);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
}

static struct eng_cmd market(uint32_t inst, uint8_t side, int64_t qty, uint32_t account)
{
    return (struct eng_cmd){.type = ENG_CMD_NEW, .side = side, .order_type = ENG_MARKET,
                            .tif = ENG_IOC, .instrument = inst, .account = account, .qty = qty};
}

void test_order_limits_on_new_orders(void)
{
    struct eng *e = make_engine_with(0);
    struct eng_order_limits got;

    ASSERT_EQ(eng_get_order_limits(e, ES, &got), 0);
    ASSERT_EQ(got.max_qty, 0);
    ASSERT_EQ(got.max_notional, 0);
    limits_set(e, ES, 10, 1000);
    expect_rejected(e, limit_at(ES, ENG_BUY, 11, 50, MAKER, 0), ENG_MAX_QTY_EXCEEDED);
    expect_rejected(e, limit_at(ES, ENG_BUY, 10, 101, MAKER, 0), ENG_MAX_NOTIONAL_EXCEEDED);
    expect_accepted(e, limit_at(ES, ENG_BUY, 10, 100, MAKER, 0)); /* exactly at both */
    /* A product past int64 is over any notional limit. */
    expect_rejected(e, limit_at(ES, ENG_SELL, 3, INT64_MAX / 2, MAKER, 0), ENG_MAX_NOTIONAL_EXCEEDED);
    /* A market order has no notional here: its quantity only. */
    expect_rejected(e, market(ES, ENG_SELL, 11, TAKER), ENG_MAX_QTY_EXCEEDED);
    expect_accepted(e, market(ES, ENG_SELL, 10, TAKER));
    /* The order's own faults come first; the other instrument has none. */
    expect_rejected(e, limit_at(ES, ENG_BUY, -1, 100, MAKER, 0), ENG_BAD_QTY);
    expect_rejected(e, limit_at(ES, ENG_BUY, 11, 0, MAKER, 0), ENG_BAD_PRICE);
    expect_accepted(e, limit_at(NQ, ENG_BUY, 1000, 1000, MAKER, 0));
    /* Each limit alone, then none. */
    limits_set(e, ES, 0, 1000);
    expect_accepted(e, limit_at(ES, ENG_BUY, 1000, 1, MAKER, 0));
    limits_set(e, ES, 10, 0);
    expect_accepted(e, limit_at(ES, ENG_BUY, 10, 1000000, MAKER, 0));
    expect_rejected(e, limit_at(ES, ENG_BUY, 11, 1, MAKER, 0), ENG_MAX_QTY_EXCEEDED);
    limits_set(e, ES, 0, 0);
    expect_accepted(e, limit_at(ES, ENG_BUY, 1000, 1000000, MAKER, 0));
    eng_destroy(e);
}

static void expect_modified(struct eng *e, struct eng_cmd c, uint64_t id, int64_t price, int64_t qty)
{
    size_t n;
    const struct eng_event *ev = run(e, c, &n);
    struct eng_order_info info;

    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_MODIFIED);
    ASSERT_EQ(ev[0].order_id, id);
    ASSERT_EQ(eng_get_order(e, id, &info), 1);
    ASSERT_EQ(info.price, price);
    ASSERT_EQ(info.qty, qty);
}

static struct eng_cmd modify(uint64_t id, uint8_t flags, int64_t qty, int64_t price)
{
    return (struct eng_cmd){.type = ENG_CMD_MODIFY, .order_id = id, .account = MAKER, .flags = flags,
                            .qty = qty, .price = price};
}

void test_order_limits_on_modifies(void)
{
    struct eng *e = make_engine_with(0);
    uint64_t id;
    struct eng_order_info info;

    limits_set(e, ES, 10, 1000);
    id = rest(e, ES, ENG_BUY, 10, 100, MAKER);
    /* What a modify leaves is held to the limits, the field kept included;
       a refused modify changes nothing. */
    expect_rejected(e, modify(id, ENG_CMD_F_KEEP_PRICE, 11, 0), ENG_MAX_QTY_EXCEEDED);
    expect_rejected(e, modify(id, ENG_CMD_F_KEEP_QTY, 0, 101), ENG_MAX_NOTIONAL_EXCEEDED);
    expect_rejected(e, modify(id, 0, 11, 90), ENG_MAX_QTY_EXCEEDED);
    ASSERT_EQ(eng_get_order(e, id, &info), 1);
    ASSERT_EQ(info.price, 100);
    ASSERT_EQ(info.qty, 10);
    expect_modified(e, modify(id, 0, 5, 200), id, 200, 5);
    expect_rejected(e, modify(id, ENG_CMD_F_KEEP_PRICE, 6, 0), ENG_MAX_NOTIONAL_EXCEEDED);
    /* Limits lowered under a resting order: lowering its quantity at its
       price is always allowed, anything else is held to them. */
    limits_set(e, ES, 3, 0);
    expect_modified(e, modify(id, ENG_CMD_F_KEEP_PRICE, 4, 0), id, 200, 4);
    expect_rejected(e, modify(id, ENG_CMD_F_KEEP_QTY, 0, 199), ENG_MAX_QTY_EXCEEDED);
    expect_modified(e, modify(id, 0, 3, 199), id, 199, 3);
    /* Quantity 0 cancels, whatever the limits. */
    limits_set(e, ES, 1, 1);
    {
        size_t n;
        const struct eng_event *ev = run(e, modify(id, ENG_CMD_F_KEEP_PRICE, 0, 0), &n);
        ASSERT_EQ(n, 1);
        expect_cancelled(&ev[0], id, ENG_CANCEL_USER);
    }
    eng_destroy(e);
}

void test_order_limits_rejects(void)
{
    struct eng *e = make_engine_with(0);
    struct eng_cmd c = set_limits(ES, 5, 5);
    struct eng_order_limits got;

    expect_rejected(e, set_limits(ES, -1, 0), ENG_BAD_ORDER_LIMITS);
    expect_rejected(e, set_limits(ES, 0, -1), ENG_BAD_ORDER_LIMITS);
    expect_rejected(e, set_limits(2, 5, 5), ENG_UNKNOWN_INSTRUMENT);
    c.flags = ENG_CMD_F_ANY_ACCOUNT;
    expect_rejected(e, c, ENG_BAD_FLAGS);
    c.flags = 0;
    c.reserved = 1;
    expect_rejected(e, c, ENG_BAD_COMMAND);
    ASSERT_EQ(eng_get_order_limits(e, ES, &got), 0);
    ASSERT_EQ(got.max_qty, 0);
    ASSERT_EQ(eng_get_order_limits(e, 2, &got), -1);
    eng_destroy(e);
}
