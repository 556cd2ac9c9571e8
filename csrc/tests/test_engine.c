/*
 * Engine tests through the public API only; eng_verify() runs after every
 * command (see run()).
 */
#include "test.h"

enum { ES = 0, BTC = 1 }; /* instruments made by make_engine() */

static struct eng *make_engine_with(const struct eng_config *cfg)
{
    struct eng *e = eng_create(cfg);
    struct eng_instrument_spec es = {.symbol = "ESZ6", .tick_size = 25, .lot_size = 1,
                                     .market_protection = -1};
    struct eng_instrument_spec btc = {.symbol = "BTCUSD", .tick_size = 1, .lot_size = 10,
                                      .min_price = 1000, .max_price = 2000,
                                      .market_protection = 50};
    uint32_t id;
    ASSERT_TRUE(e != NULL);
    ASSERT_EQ(eng_add_instrument(e, &es, &id), ENG_OK);
    ASSERT_EQ(id, ES);
    ASSERT_EQ(eng_add_instrument(e, &btc, &id), ENG_OK);
    ASSERT_EQ(id, BTC);
    return e;
}

static struct eng *make_engine(void)
{
    return make_engine_with(NULL);
}

static struct eng_cmd new_limit(uint32_t inst, uint8_t side, int64_t qty, int64_t price,
                                uint32_t account)
{
    return (struct eng_cmd){.type = ENG_CMD_NEW, .side = side, .order_type = ENG_LIMIT,
                            .tif = ENG_GTC, .instrument = inst, .account = account,
                            .price = price, .qty = qty};
}

static struct eng_cmd new_market(uint32_t inst, uint8_t side, int64_t qty, uint32_t account)
{
    return (struct eng_cmd){.type = ENG_CMD_NEW, .side = side, .order_type = ENG_MARKET,
                            .tif = ENG_IOC, .instrument = inst, .account = account, .qty = qty};
}

static struct eng_cmd cancel_cmd(uint64_t id, uint32_t account)
{
    return (struct eng_cmd){.type = ENG_CMD_CANCEL, .order_id = id, .account = account};
}

static struct eng_cmd modify_cmd(uint64_t id, uint32_t account, int64_t qty, int64_t price)
{
    return (struct eng_cmd){.type = ENG_CMD_MODIFY, .order_id = id, .account = account,
                            .qty = qty, .price = price,
                            .flags = price ? 0 : ENG_CMD_F_KEEP_PRICE};
}

/* Rest a limit order that must not trade; returns its id. */
static uint64_t rest(struct eng *e, uint32_t inst, uint8_t side, int64_t qty, int64_t price,
                     uint32_t account)
{
    size_t n;
    const struct eng_event *ev = run(e, new_limit(inst, side, qty, price, account), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    return ev[0].order_id;
}

static void expect_trade(const struct eng_event *ev, uint64_t taker, uint64_t maker,
                         int64_t price, int64_t qty, int64_t taker_leaves, int64_t maker_leaves)
{
    ASSERT_EQ(ev->type, ENG_EV_TRADE);
    ASSERT_EQ(ev->order_id, taker);
    ASSERT_EQ(ev->maker_order_id, maker);
    ASSERT_EQ(ev->price, price);
    ASSERT_EQ(ev->qty, qty);
    ASSERT_EQ(ev->leaves, taker_leaves);
    ASSERT_EQ(ev->maker_leaves, maker_leaves);
}

static void expect_cancel(const struct eng_event *ev, uint64_t id, int reason, int64_t leaves)
{
    ASSERT_EQ(ev->type, ENG_EV_CANCELLED);
    ASSERT_EQ(ev->order_id, id);
    ASSERT_EQ(ev->reason, reason);
    ASSERT_EQ(ev->leaves, leaves);
}

static void expect_reject(const struct eng_event *ev, int reason)
{
    ASSERT_EQ(ev->type, ENG_EV_REJECTED);
    ASSERT_EQ(ev->reason, reason);
}

static int64_t level_qty(struct eng *e, uint32_t inst, uint8_t side, size_t i)
{
    struct eng_level_info lv[16];
    int64_t n = eng_book_levels(e, inst, side, lv, 16);
    return (int64_t)i < n ? lv[i].total_qty : -1;
}

void test_engine_rest_and_query(void)
{
    struct eng *e = make_engine();
    struct eng_level_info lv[4];
    struct eng_order_info oi;
    size_t n;

    uint64_t a = rest(e, ES, ENG_BUY, 10, 4500, 7);
    uint64_t b = rest(e, ES, ENG_BUY, 5, 4500, 8);
    uint64_t c = rest(e, ES, ENG_BUY, 3, 4475, 7);
    uint64_t d = rest(e, ES, ENG_SELL, 4, 4550, 9);
    ASSERT_EQ(a, 1);
    ASSERT_EQ(d, 4);
    ASSERT_EQ(eng_seq(e), 4);
    ASSERT_EQ(eng_book_levels(e, ES, ENG_BUY, lv, 4), 2);
    ASSERT_EQ(lv[0].price, 4500);
    ASSERT_EQ(lv[0].total_qty, 15);
    ASSERT_EQ(lv[0].order_count, 2);
    ASSERT_EQ(lv[1].price, 4475);
    ASSERT_EQ(eng_book_levels(e, ES, ENG_SELL, lv, 4), 1);
    ASSERT_EQ(eng_book_levels(e, ES, ENG_BUY, lv, 1), 1); /* depth limit */
    ASSERT_EQ(eng_book_levels(e, 9, ENG_BUY, lv, 4), -1);
    ASSERT_EQ(eng_book_levels(e, ES, 0, lv, 4), -1);

    ASSERT_EQ(eng_get_order(e, b, &oi), 1);
    ASSERT_EQ(oi.price, 4500);
    ASSERT_EQ(oi.qty, 5);
    ASSERT_EQ(oi.account, 8);
    ASSERT_EQ(oi.side, ENG_BUY);
    ASSERT_EQ(eng_get_order(e, 99, &oi), 0);

    /* Book order listing: best level first, oldest first, with skip. */
    struct eng_order_info all[8];
    ASSERT_EQ(eng_book_orders(e, ES, ENG_BUY, 0, all, 8), 3);
    ASSERT_EQ(all[0].order_id, a);
    ASSERT_EQ(all[1].order_id, b);
    ASSERT_EQ(all[2].order_id, c);
    ASSERT_EQ(eng_book_orders(e, ES, ENG_BUY, 2, all, 8), 1);
    ASSERT_EQ(all[0].order_id, c);
    ASSERT_EQ(eng_book_orders(e, ES, ENG_BUY, 1, all, 1), 1);
    ASSERT_EQ(all[0].order_id, b);

    const struct eng_event *ev = run(e, cancel_cmd(a, 7), &n);
    ASSERT_EQ(n, 1);
    expect_cancel(&ev[0], a, ENG_CANCEL_USER, 10);
    ASSERT_EQ(ev[0].price, 4500);
    ASSERT_EQ(ev[0].side, ENG_BUY);
    ASSERT_EQ(ev[0].seq, 5);
    ASSERT_EQ(level_qty(e, ES, ENG_BUY, 0), 5);
    eng_destroy(e);
}

void test_engine_trade_at_maker_price(void)
{
    struct eng *e = make_engine();
    size_t n;
    uint64_t ask = rest(e, ES, ENG_SELL, 10, 4500, 1);
    /* A buy at a higher price trades at the resting (maker) price. */
    const struct eng_event *ev = run(e, new_limit(ES, ENG_BUY, 4, 4600, 2), &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    expect_trade(&ev[1], ev[0].order_id, ask, 4500, 4, 0, 6);
    ASSERT_EQ(ev[1].side, ENG_BUY);
    ASSERT_EQ(ev[1].account, 2);
    ASSERT_EQ(ev[1].maker_account, 1);
    ASSERT_EQ(ev[1].trade_id, 1);
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 0), 6);
    /* A sell below the best bid trades at the bid. */
    uint64_t bid = rest(e, ES, ENG_BUY, 3, 4400, 3);
    ev = run(e, new_limit(ES, ENG_SELL, 5, 4300, 4), &n);
    ASSERT_EQ(n, 2);
    expect_trade(&ev[1], ev[0].order_id, bid, 4400, 3, 2, 0);
    ASSERT_EQ(ev[1].trade_id, 2);
    /* Its rest (2) now rests at 4300 on the ask side, ahead of 4500. */
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 0), 2);
    ASSERT_EQ(level_qty(e, ES, ENG_BUY, 0), -1);
    eng_destroy(e);
}

void test_engine_price_time_priority(void)
{
    struct eng *e = make_engine();
    size_t n;
    uint64_t a = rest(e, ES, ENG_SELL, 2, 4525, 1);
    uint64_t b = rest(e, ES, ENG_SELL, 3, 4500, 2);
    uint64_t c = rest(e, ES, ENG_SELL, 4, 4500, 3);
    /* Best price first (b, c at 4500, oldest first), then a at 4525. */
    const struct eng_event *ev = run(e, new_limit(ES, ENG_BUY, 8, 4525, 9), &n);
    ASSERT_EQ(n, 4);
    uint64_t t = ev[0].order_id;
    expect_trade(&ev[1], t, b, 4500, 3, 5, 0);
    expect_trade(&ev[2], t, c, 4500, 4, 1, 0);
    expect_trade(&ev[3], t, a, 4525, 1, 0, 1);
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 0), 1);
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 1), -1);
    eng_destroy(e);
}

void test_engine_ioc_fok_market(void)
{
    struct eng *e = make_engine();
    size_t n;
    uint64_t a = rest(e, ES, ENG_SELL, 5, 4500, 1);
    rest(e, ES, ENG_SELL, 5, 4550, 1);

    struct eng_cmd ioc = new_limit(ES, ENG_BUY, 8, 4500, 2);
    ioc.tif = ENG_IOC;
    const struct eng_event *ev = run(e, ioc, &n);
    ASSERT_EQ(n, 3);
    expect_trade(&ev[1], ev[0].order_id, a, 4500, 5, 3, 0);
    expect_cancel(&ev[2], ev[0].order_id, ENG_CANCEL_IOC, 3);
    ASSERT_EQ(level_qty(e, ES, ENG_BUY, 0), -1); /* never rests */

    /* FOK that cannot fill: cancelled, no trade, book untouched. */
    struct eng_cmd fok = new_limit(ES, ENG_BUY, 6, 4550, 2);
    fok.tif = ENG_FOK;
    ev = run(e, fok, &n);
    ASSERT_EQ(n, 2);
    expect_cancel(&ev[1], ev[0].order_id, ENG_CANCEL_FOK, 6);
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 0), 5);
    /* FOK that can: fills completely. */
    fok.qty = 5;
    ev = run(e, fok, &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[1].type, ENG_EV_TRADE);
    ASSERT_EQ(ev[1].leaves, 0);

    /* Market order on an empty side: the whole qty is the remainder. */
    ev = run(e, new_market(ES, ENG_BUY, 3, 2), &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[0].price, 0);
    expect_cancel(&ev[1], ev[0].order_id, ENG_CANCEL_MARKET_REMAINDER, 3);
    /* Market sweeps any price and never rests. */
    uint64_t b1 = rest(e, ES, ENG_BUY, 2, 4000, 3);
    uint64_t b2 = rest(e, ES, ENG_BUY, 2, 100, 3);
    ev = run(e, new_market(ES, ENG_SELL, 5, 4), &n);
    ASSERT_EQ(n, 4);
    expect_trade(&ev[1], ev[0].order_id, b1, 4000, 2, 3, 0);
    expect_trade(&ev[2], ev[0].order_id, b2, 100, 2, 1, 0);
    expect_cancel(&ev[3], ev[0].order_id, ENG_CANCEL_MARKET_REMAINDER, 1);
    eng_destroy(e);
}

void test_engine_market_protection_band(void)
{
    struct eng *e = make_engine(); /* BTC: protection 50, lot 10 */
    size_t n;
    uint64_t a = rest(e, BTC, ENG_SELL, 10, 1500, 1);
    uint64_t b = rest(e, BTC, ENG_SELL, 10, 1550, 1);
    rest(e, BTC, ENG_SELL, 10, 1551, 1);
    const struct eng_event *ev = run(e, new_market(BTC, ENG_BUY, 40, 2), &n);
    ASSERT_EQ(n, 4);
    expect_trade(&ev[1], ev[0].order_id, a, 1500, 10, 30, 0);
    expect_trade(&ev[2], ev[0].order_id, b, 1550, 10, 20, 0);
    expect_cancel(&ev[3], ev[0].order_id, ENG_CANCEL_BAND, 20);
    ASSERT_EQ(level_qty(e, BTC, ENG_SELL, 0), 10);
    /* Within the band and the side runs dry: market_remainder, not band. */
    ev = run(e, new_market(BTC, ENG_BUY, 20, 2), &n);
    ASSERT_EQ(n, 3);
    expect_cancel(&ev[2], ev[0].order_id, ENG_CANCEL_MARKET_REMAINDER, 10);
    /* Sell side: bids >= best bid - 50. */
    uint64_t c = rest(e, BTC, ENG_BUY, 10, 1200, 1);
    rest(e, BTC, ENG_BUY, 10, 1149, 1);
    ev = run(e, new_market(BTC, ENG_SELL, 20, 2), &n);
    ASSERT_EQ(n, 3);
    expect_trade(&ev[1], ev[0].order_id, c, 1200, 10, 10, 0);
    expect_cancel(&ev[2], ev[0].order_id, ENG_CANCEL_BAND, 10);
    eng_destroy(e);
}

void test_engine_post_only(void)
{
    struct eng *e = make_engine();
    size_t n;
    rest(e, ES, ENG_SELL, 5, 4500, 1);
    struct eng_cmd po = new_limit(ES, ENG_BUY, 5, 4500, 2);
    po.flags = ENG_CMD_F_POST_ONLY;
    const struct eng_event *ev = run(e, po, &n);
    ASSERT_EQ(n, 1);
    expect_reject(&ev[0], ENG_POST_ONLY_WOULD_CROSS);
    ASSERT_EQ(ev[0].order_id, 0);
    po.price = 4475;
    ev = run(e, po, &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    ASSERT_EQ(ev[0].order_id, 2); /* the reject took no id */
    eng_destroy(e);
}

void test_engine_self_trade_prevention(void)
{
    struct eng *e = make_engine();
    size_t n;
    const struct eng_event *ev;

    /* none: self-trade allowed. */
    uint64_t m = rest(e, ES, ENG_SELL, 5, 4500, 1);
    ev = run(e, new_limit(ES, ENG_BUY, 2, 4500, 1), &n);
    ASSERT_EQ(n, 2);
    expect_trade(&ev[1], ev[0].order_id, m, 4500, 2, 0, 3);

    /* cancel_newest: the taker stops at its own order, earlier fills stay. */
    uint64_t other = rest(e, ES, ENG_SELL, 1, 4500, 2); /* behind m (3 left) */
    struct eng_cmd buy = new_limit(ES, ENG_BUY, 4, 4500, 2);
    buy.stp = ENG_STP_CANCEL_NEWEST;
    ev = run(e, buy, &n);
    /* m belongs to account 1, other to account 2: trades m (3), then stops at other. */
    ASSERT_EQ(n, 3);
    expect_trade(&ev[1], ev[0].order_id, m, 4500, 3, 1, 0);
    expect_cancel(&ev[2], ev[0].order_id, ENG_CANCEL_STP, 1);
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 0), 1);

    /* cancel_oldest: the maker goes, matching continues behind it. */
    uint64_t behind = rest(e, ES, ENG_SELL, 2, 4500, 3);
    buy.stp = ENG_STP_CANCEL_OLDEST;
    buy.qty = 2;
    ev = run(e, buy, &n);
    ASSERT_EQ(n, 3);
    expect_cancel(&ev[1], other, ENG_CANCEL_STP, 1);
    expect_trade(&ev[2], ev[0].order_id, behind, 4500, 2, 0, 0);

    /* cancel_both: maker then taker cancelled. */
    uint64_t mine = rest(e, ES, ENG_SELL, 2, 4500, 2);
    buy.stp = ENG_STP_CANCEL_BOTH;
    ev = run(e, buy, &n);
    ASSERT_EQ(n, 3);
    expect_cancel(&ev[1], mine, ENG_CANCEL_STP, 2);
    expect_cancel(&ev[2], ev[0].order_id, ENG_CANCEL_STP, 2);
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 0), -1);
    ASSERT_EQ(level_qty(e, ES, ENG_BUY, 0), -1);
    eng_destroy(e);
}

void test_engine_fok_counts_stp(void)
{
    struct eng *e = make_engine();
    size_t n;
    rest(e, ES, ENG_SELL, 5, 4500, 1);
    uint64_t own = rest(e, ES, ENG_SELL, 5, 4500, 2);
    rest(e, ES, ENG_SELL, 5, 4500, 1);
    struct eng_cmd fok = new_limit(ES, ENG_BUY, 10, 4500, 2);
    fok.tif = ENG_FOK;

    /* cancel_newest: matching would stop at the own order after 5. */
    fok.stp = ENG_STP_CANCEL_NEWEST;
    const struct eng_event *ev = run(e, fok, &n);
    ASSERT_EQ(n, 2);
    expect_cancel(&ev[1], ev[0].order_id, ENG_CANCEL_FOK, 10);
    ASSERT_EQ(level_qty(e, ES, ENG_SELL, 0), 15); /* no side effect */

    /* cancel_oldest: the own order counts as nothing, 10 available. */
    fok.stp = ENG_STP_CANCEL_OLDEST;
    ev = run(e, fok, &n);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(ev[1].type, ENG_EV_TRADE);
    expect_cancel(&ev[2], own, ENG_CANCEL_STP, 5);
    ASSERT_EQ(ev[3].type, ENG_EV_TRADE);
    ASSERT_EQ(ev[3].leaves, 0);
    eng_destroy(e);
}

void test_engine_modify(void)
{
    struct eng *e = make_engine();
    size_t n;
    struct eng_order_info all[4];
    uint64_t a = rest(e, ES, ENG_BUY, 10, 4500, 1);
    uint64_t b = rest(e, ES, ENG_BUY, 10, 4500, 2);

    /* qty down at the same price keeps priority. */
    const struct eng_event *ev = run(e, modify_cmd(a, 1, 4, 0), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_MODIFIED);
    ASSERT_EQ(ev[0].flags, ENG_EV_F_PRIORITY_KEPT);
    ASSERT_EQ(ev[0].qty, 4);
    ASSERT_EQ(ev[0].price, 4500);
    eng_book_orders(e, ES, ENG_BUY, 0, all, 4);
    ASSERT_EQ(all[0].order_id, a);
    ASSERT_EQ(level_qty(e, ES, ENG_BUY, 0), 14);

    /* qty up loses priority. */
    ev = run(e, modify_cmd(a, 1, 6, 4500), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].flags, 0);
    eng_book_orders(e, ES, ENG_BUY, 0, all, 4);
    ASSERT_EQ(all[0].order_id, b);
    ASSERT_EQ(all[1].order_id, a);
    ASSERT_EQ(all[1].qty, 6);

    /* A price change across the book trades at once, with the same id. */
    uint64_t s = rest(e, ES, ENG_SELL, 3, 4600, 3);
    ev = run(e, modify_cmd(a, 1, 6, 4600), &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[0].type, ENG_EV_MODIFIED);
    ASSERT_EQ(ev[0].price, 4600);
    expect_trade(&ev[1], a, s, 4600, 3, 3, 0);
    ASSERT_EQ(level_qty(e, ES, ENG_BUY, 0), 3); /* rests at 4600 */

    /* Zero cancels. */
    ev = run(e, modify_cmd(a, 1, 0, 0), &n);
    ASSERT_EQ(n, 1);
    expect_cancel(&ev[0], a, ENG_CANCEL_USER, 3);

    /* Post-only: a modify that would cross is rejected, order unchanged. */
    rest(e, ES, ENG_SELL, 1, 4700, 3);
    struct eng_cmd po = new_limit(ES, ENG_BUY, 2, 4650, 4);
    po.flags = ENG_CMD_F_POST_ONLY;
    uint64_t p = run(e, po, &n)[0].order_id;
    ev = run(e, modify_cmd(p, 4, 2, 4700), &n);
    ASSERT_EQ(n, 1);
    expect_reject(&ev[0], ENG_POST_ONLY_WOULD_CROSS);
    ASSERT_EQ(ev[0].order_id, p);
    struct eng_order_info oi;
    ASSERT_EQ(eng_get_order(e, p, &oi), 1);
    ASSERT_EQ(oi.price, 4650);
    ASSERT_EQ(oi.post_only, 1);

    /* Modify validation. */
    expect_reject(&run(e, modify_cmd(p, 4, -1, 0), &n)[0], ENG_BAD_QTY);
    expect_reject(&run(e, modify_cmd(p, 4, 2, 4610), &n)[0], ENG_OFF_TICK);
    expect_reject(&run(e, modify_cmd(p, 5, 2, 0), &n)[0], ENG_NOT_OWNER);
    expect_reject(&run(e, modify_cmd(999, 4, 2, 0), &n)[0], ENG_UNKNOWN_ORDER);
    eng_destroy(e);
}

/* KEEP_QTY: the open qty as it is when the modify runs, exactly as if given. */
void test_engine_modify_keep_qty(void)
{
    struct eng *e = make_engine();
    size_t n;
    struct eng_order_info all[4];
    uint64_t a = rest(e, ES, ENG_BUY, 10, 4500, 1);
    uint64_t b = rest(e, ES, ENG_BUY, 10, 4500, 2);
    struct eng_cmd c;
    const struct eng_event *ev;

    /* A partial fill first: the open qty is 7, not the 10 entered. */
    run(e, new_limit(ES, ENG_SELL, 3, 4500, 3), &n);
    ASSERT_EQ(n, 2);

    /* A price change alone: qty 7, priority lost, like an explicit 7. */
    c = modify_cmd(a, 1, 0, 4475);
    c.flags |= ENG_CMD_F_KEEP_QTY;
    ev = run(e, c, &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_MODIFIED);
    ASSERT_EQ(ev[0].qty, 7);
    ASSERT_EQ(ev[0].price, 4475);
    ASSERT_EQ(ev[0].flags, 0);
    ASSERT_EQ(level_qty(e, ES, ENG_BUY, 1), 7);

    /* Back to 4500: behind b, and it may trade at once like any reprice. */
    c.price = 4500;
    c.qty = 12345; /* ignored */
    ev = run(e, c, &n);
    ASSERT_EQ(ev[0].qty, 7);
    eng_book_orders(e, ES, ENG_BUY, 0, all, 4);
    ASSERT_EQ(all[0].order_id, b);
    ASSERT_EQ(all[1].order_id, a);
    ASSERT_EQ(all[1].qty, 7);
    ASSERT_EQ(eng_modify_order(e, b, 2, ENG_CMD_F_KEEP_QTY, 0, 4400, NULL),
              -(int64_t)ENG_ERR__COUNT - 1);
    ASSERT_EQ(eng_get_order(e, b, &all[0]), 1);
    ASSERT_EQ(all[0].qty, 10);
    ASSERT_EQ(all[0].price, 4400);

    /* Keeping both price and qty is no modify at all; KEEP_QTY is not for a cancel. */
    c.flags = ENG_CMD_F_KEEP_QTY | ENG_CMD_F_KEEP_PRICE;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_FLAGS);
    c = cancel_cmd(a, 1);
    c.flags = ENG_CMD_F_KEEP_QTY;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_FLAGS);
    ASSERT_EQ(eng_get_order(e, a, &all[0]), 1);
    ASSERT_EQ(all[0].qty, 7);
    eng_destroy(e);
}

void test_engine_cancel_rules(void)
{
    struct eng *e = make_engine();
    size_t n;
    uint64_t a = rest(e, ES, ENG_BUY, 10, 4500, 1);
    const struct eng_event *ev = run(e, cancel_cmd(a, 2), &n);
    expect_reject(&ev[0], ENG_NOT_OWNER);
    ASSERT_EQ(ev[0].order_id, a);
    ev = run(e, cancel_cmd(a, 1), &n);
    expect_cancel(&ev[0], a, ENG_CANCEL_USER, 10);
    ev = run(e, cancel_cmd(a, 1), &n); /* already finished */
    expect_reject(&ev[0], ENG_UNKNOWN_ORDER);
    ev = run(e, cancel_cmd(12345, 1), &n);
    expect_reject(&ev[0], ENG_UNKNOWN_ORDER);
    /* Administrator cancel: no owner check. */
    uint64_t b = rest(e, ES, ENG_BUY, 10, 4500, 1);
    struct eng_cmd admin = cancel_cmd(b, 0);
    admin.flags = ENG_CMD_F_ANY_ACCOUNT;
    ev = run(e, admin, &n);
    expect_cancel(&ev[0], b, ENG_CANCEL_USER, 10);
    /* A filled order cannot be cancelled. */
    uint64_t c = rest(e, ES, ENG_SELL, 1, 4500, 1);
    run(e, new_limit(ES, ENG_BUY, 1, 4500, 2), &n);
    expect_reject(&run(e, cancel_cmd(c, 1), &n)[0], ENG_UNKNOWN_ORDER);
    eng_destroy(e);
}

void test_engine_validation_rejects(void)
{
    struct eng *e = make_engine();
    size_t n;
    struct {
        struct eng_cmd cmd;
        int reason;
    } cases[] = {
        {new_limit(7, ENG_BUY, 1, 4500, 1), ENG_UNKNOWN_INSTRUMENT},
        {new_limit(ES, ENG_BUY, 0, 4500, 1), ENG_BAD_QTY},
        {new_limit(ES, ENG_BUY, -5, 4500, 1), ENG_BAD_QTY},
        {new_limit(BTC, ENG_BUY, 15, 1500, 1), ENG_OFF_LOT},
        {new_limit(ES, ENG_BUY, 1, 0, 1), ENG_BAD_PRICE},
        {new_limit(ES, ENG_BUY, 1, -25, 1), ENG_BAD_PRICE},
        {new_limit(ES, ENG_BUY, 1, 4510, 1), ENG_OFF_TICK},
        {new_limit(BTC, ENG_BUY, 10, 999, 1), ENG_OUTSIDE_BAND},
        {new_limit(BTC, ENG_BUY, 10, 2001, 1), ENG_OUTSIDE_BAND},
        /* First failing check wins: bad qty before off tick. */
        {new_limit(ES, ENG_BUY, 0, 4510, 1), ENG_BAD_QTY},
        {new_limit(BTC, ENG_BUY, 15, 5, 1), ENG_OFF_LOT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct eng_event *ev = run(e, cases[i].cmd, &n);
        ASSERT_EQ(n, 1);
        expect_reject(&ev[0], cases[i].reason);
        ASSERT_EQ(ev[0].seq, i + 1);
    }
    /* Band limits are inclusive. */
    rest(e, BTC, ENG_BUY, 10, 1000, 1);
    rest(e, BTC, ENG_SELL, 10, 2000, 1);
    eng_destroy(e);
}

void test_engine_malformed_commands(void)
{
    struct eng *e = make_engine();
    size_t n;
    struct eng_cmd c;

    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    c.type = 9;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_COMMAND);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    c.reserved = 1;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_COMMAND);
    c = new_limit(ES, 3, 1, 4500, 1);
    expect_reject(&run(e, c, &n)[0], ENG_BAD_SIDE);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    c.order_type = 0;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_ORDER_TYPE);
    c = new_market(ES, ENG_BUY, 1, 1);
    c.price = 4500;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_ORDER_TYPE);
    c = new_market(ES, ENG_BUY, 1, 1);
    c.tif = ENG_GTC;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_TIF);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    c.tif = 4;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_TIF);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    c.stp = 4;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_STP);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    c.flags = 0x80;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_FLAGS);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    c.flags = ENG_CMD_F_POST_ONLY;
    c.tif = ENG_IOC;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_FLAGS);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    memcpy(c.coid, "ab\ncd", 5);
    expect_reject(&run(e, c, &n)[0], ENG_BAD_CLIENT_ORDER_ID);
    c = new_limit(ES, ENG_BUY, 1, 4500, 1);
    memcpy(c.coid, "ab\0cd", 5); /* a hole in the padding */
    expect_reject(&run(e, c, &n)[0], ENG_BAD_CLIENT_ORDER_ID);
    c = cancel_cmd(1, 1);
    c.flags = ENG_CMD_F_POST_ONLY;
    expect_reject(&run(e, c, &n)[0], ENG_BAD_FLAGS);
    ASSERT_EQ(eng_seq(e), 13); /* every command took a sequence number */
    eng_destroy(e);
}

void test_engine_rejects_name_no_order_for_commands_without_one(void)
{
    struct eng *e = make_engine();
    const uint8_t types[] = {ENG_CMD_SET_STATE, ENG_CMD_CANCEL_ALL, ENG_CMD_SET_MMP,
                             ENG_CMD_RESET_MMP, ENG_CMD_SET_LIMITS, ENG_CMD__COUNT};
    static const char zero[ENG_COID_LEN];
    size_t n;

    /* Garbage in the fields these commands do not use (an unknown
       instrument rejects each) stays out of the event. */
    for (size_t i = 0; i < sizeof(types); i++) {
        struct eng_cmd c = {.type = types[i], .instrument = 999, .account = 7,
                            .order_id = 0xdeadbeef};
        const struct eng_event *ev;
        memcpy(c.coid, "\x01junk", 5);
        ev = run(e, c, &n);
        ASSERT_EQ(n, 1);
        ASSERT_EQ(ev->type, ENG_EV_REJECTED);
        ASSERT_EQ(ev->order_id, 0);
        ASSERT_EQ(ev->account, 7);
        ASSERT_TRUE(memcmp(ev->coid, zero, ENG_COID_LEN) == 0);
    }
    /* A cancel's target and client order id stay. */
    {
        struct eng_cmd c = cancel_cmd(12345, 7);
        const struct eng_event *ev;
        memcpy(c.coid, "mine", 4);
        ev = run(e, c, &n);
        ASSERT_EQ(n, 1);
        expect_reject(ev, ENG_UNKNOWN_ORDER);
        ASSERT_EQ(ev->order_id, 12345);
        ASSERT_TRUE(memcmp(ev->coid, "mine", 5) == 0);
    }
    eng_destroy(e);
}

void test_engine_client_order_ids(void)
{
    struct eng *e = make_engine();
    size_t n;
    struct eng_cmd c = new_limit(ES, ENG_BUY, 1, 4500, 7);
    memcpy(c.coid, "c1", 2);
    const struct eng_event *ev = run(e, c, &n);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    ASSERT_TRUE(memcmp(ev[0].coid, "c1\0\0", 4) == 0);
    uint64_t id = ev[0].order_id;
    /* Looked up by (account, coid): the open order of that account only. */
    static const char c1[ENG_COID_LEN] = "c1", none[ENG_COID_LEN] = "";
    struct eng_order_info oi;
    ASSERT_EQ(eng_get_order_by_coid(e, 7, c1, &oi), 1);
    ASSERT_EQ(oi.order_id, id);
    ASSERT_EQ(oi.account, 7);
    ASSERT_TRUE(memcmp(oi.coid, c1, ENG_COID_LEN) == 0);
    ASSERT_EQ(eng_get_order_by_coid(e, 8, c1, &oi), 0);
    ASSERT_EQ(eng_get_order_by_coid(e, 7, none, &oi), 0);
    ASSERT_EQ(eng_get_order_by_coid(e, 7, NULL, &oi), 0);
    /* Same account, same coid, while open: duplicate. */
    expect_reject(&run(e, c, &n)[0], ENG_DUPLICATE_CLIENT_ORDER_ID);
    /* Another account may use it. */
    c.account = 8;
    ASSERT_EQ(run(e, c, &n)[0].type, ENG_EV_ACCEPTED);
    ASSERT_EQ(eng_get_order_by_coid(e, 8, c1, &oi), 1);
    ASSERT_EQ(oi.order_id, id + 1);
    /* Cancel by (account, coid). */
    struct eng_cmd cc = {.type = ENG_CMD_CANCEL, .account = 7};
    memcpy(cc.coid, "c1", 2);
    ev = run(e, cc, &n);
    expect_cancel(&ev[0], id, ENG_CANCEL_USER, 1);
    ASSERT_EQ(eng_get_order_by_coid(e, 7, c1, &oi), 0);
    /* Once finished, the coid is free again. */
    c.account = 7;
    ASSERT_EQ(run(e, c, &n)[0].type, ENG_EV_ACCEPTED);
    /* A coid of a taker that never rested is never in use. */
    struct eng_cmd ioc = new_limit(ES, ENG_SELL, 1, 4500, 9);
    ioc.tif = ENG_IOC;
    memcpy(ioc.coid, "full-sixteen-chr", 16);
    ASSERT_EQ(run(e, ioc, &n)[0].type, ENG_EV_ACCEPTED);
    ASSERT_EQ(run(e, ioc, &n)[0].type, ENG_EV_ACCEPTED);
    eng_destroy(e);
}

/* With level events a match writes two events a maker; reserving room for
   a qty near INT64_MAX once wrapped to almost nothing and overran the event
   buffer. */
void test_engine_huge_qty_with_level_events(void)
{
    struct eng_config cfg = {.level_events = 1};
    struct eng *e = eng_create(&cfg);
    struct eng_instrument_spec spec = {.symbol = "ONE", .tick_size = 1, .lot_size = 1,
                                       .market_protection = -1};
    uint32_t id;
    size_t n;
    const struct eng_event *ev;
    uint64_t buy;

    ASSERT_EQ(eng_add_instrument(e, &spec, &id), ENG_OK);
    for (int64_t qty = INT64_MAX; qty >= INT64_MAX - 1; qty--) {
        for (int i = 0; i < 600; i++)
            run(e, new_limit(id, ENG_SELL, 1, 100 + i % 7, 1), &n);
        ev = run(e, new_limit(id, ENG_BUY, qty, 200, 2), &n);
        ASSERT_EQ(n, 1 + 600 * 2 + 1); /* accepted, trade + level each, its own level */
        ASSERT_EQ(ev[n - 3].type, ENG_EV_TRADE);
        run(e, cancel_cmd(ev[0].order_id, 2), &n);
    }
    /* The same through a modify that loses priority. */
    for (int i = 0; i < 600; i++)
        run(e, new_limit(id, ENG_SELL, 1, 100 + i % 7, 1), &n);
    buy = run(e, new_limit(id, ENG_BUY, 1, 50, 2), &n)[0].order_id;
    ev = run(e, modify_cmd(buy, 2, INT64_MAX, 200), &n);
    ASSERT_EQ(ev[0].type, ENG_EV_MODIFIED);
    ASSERT_EQ(n, 2 + 600 * 2 + 1); /* modified, its old level, trades and levels, new level */
    eng_destroy(e);
}

void test_engine_level_full(void)
{
    struct eng *e = make_engine();
    size_t n;
    int64_t big = INT64_MAX / 2 - 10;
    rest(e, ES, ENG_BUY, big - big % 25, 4500, 1);
    rest(e, ES, ENG_BUY, big - big % 25, 4500, 1);
    /* The level total would pass 2**63 - 1: cancelled instead of resting. */
    const struct eng_event *ev = run(e, new_limit(ES, ENG_BUY, 100, 4500, 1), &n);
    ASSERT_EQ(n, 2);
    expect_cancel(&ev[1], ev[0].order_id, ENG_CANCEL_LEVEL_FULL, 100);
    ASSERT_EQ(eng_get_order(e, ev[0].order_id, &(struct eng_order_info){0}), 0);
    /* Another level takes it fine. */
    rest(e, ES, ENG_BUY, 100, 4475, 1);
    eng_destroy(e);
}

void test_engine_instruments(void)
{
    struct eng *e = eng_create(NULL);
    uint32_t id;
    struct eng_instrument_spec s = {.symbol = "A", .tick_size = 1, .lot_size = 1};
    ASSERT_EQ(eng_add_instrument(e, &s, &id), ENG_OK);
    ASSERT_EQ(eng_add_instrument(e, &s, &id), ENG_DUPLICATE_SYMBOL);
    struct eng_instrument_spec bad = s;
    bad.tick_size = 0;
    memcpy(bad.symbol, "B", 2);
    ASSERT_EQ(eng_add_instrument(e, &bad, &id), ENG_INVALID_ARGUMENT);
    bad = s;
    memcpy(bad.symbol, "C", 2);
    bad.min_price = 10;
    bad.max_price = 5;
    ASSERT_EQ(eng_add_instrument(e, &bad, &id), ENG_INVALID_ARGUMENT);
    bad = s;
    memcpy(bad.symbol, "has space", 10);
    ASSERT_EQ(eng_add_instrument(e, &bad, &id), ENG_INVALID_ARGUMENT);
    bad = s;
    memset(bad.symbol, 'x', 16); /* not terminated */
    ASSERT_EQ(eng_add_instrument(e, &bad, &id), ENG_INVALID_ARGUMENT);
    /* Many instruments: the table grows and books keep working. */
    for (int i = 0; i < 100; i++) {
        struct eng_instrument_spec t = s;
        snprintf(t.symbol, sizeof(t.symbol), "I%d", i);
        ASSERT_EQ(eng_add_instrument(e, &t, &id), ENG_OK);
        ASSERT_EQ(id, i + 1);
        size_t n;
        run(e, new_limit(id, ENG_BUY, 1, 10 + i, 1), &n);
    }
    ASSERT_EQ(eng_instrument_count(e), 101);
    ASSERT_STREQ(eng_instrument(e, 5)->symbol, "I4");
    ASSERT_TRUE(eng_instrument(e, 101) == NULL);
    ASSERT_STREQ(eng_err_name(ENG_OFF_TICK), "off_tick");
    ASSERT_STREQ(eng_strerror(ENG_BAD_QTY), "quantity must be positive (0 in a modify cancels)");
    ASSERT_STREQ(eng_err_name(-1), "?");
    ASSERT_STREQ(eng_cancel_reason_name(ENG_CANCEL_MARKET_REMAINDER), "market_remainder");
    eng_destroy(e);
}

static struct eng_cmd set_state_cmd(uint32_t inst, int64_t state)
{
    return (struct eng_cmd){.type = ENG_CMD_SET_STATE, .instrument = inst, .qty = state,
                            .account = 99};
}

static void run_rejected(struct eng *e, struct eng_cmd c, int reason)
{
    size_t n;
    const struct eng_event *ev = run(e, c, &n);
    ASSERT_EQ(n, 1);
    expect_reject(ev, reason);
}

void test_engine_halt_and_resume(void)
{
    struct eng *e = make_engine();
    size_t n;
    const struct eng_event *ev;
    struct eng_order_info info;
    uint64_t bid = rest(e, ES, ENG_BUY, 10, 4500, 1);
    uint64_t hash_open = eng_state_hash(e);

    ASSERT_EQ(eng_instrument_state(e, ES), ENG_STATE_OPEN);
    ev = run(e, set_state_cmd(ES, ENG_STATE_HALTED), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_STATE);
    ASSERT_EQ(ev[0].instrument, ES);
    ASSERT_EQ(ev[0].qty, ENG_STATE_HALTED);
    ASSERT_EQ(ev[0].account, 99);
    ASSERT_EQ(eng_instrument_state(e, ES), ENG_STATE_HALTED);
    ASSERT_EQ(eng_instrument_state(e, BTC), ENG_STATE_OPEN);
    ASSERT_EQ(eng_instrument_state(e, 7), -1);
    ASSERT_TRUE(eng_state_hash(e) != hash_open);

    /* Halted: new orders (even one that would trade) and modifies are refused,
       the book is untouched; the other instrument trades on. */
    run_rejected(e, new_limit(ES, ENG_SELL, 5, 4500, 2), ENG_HALTED);
    run_rejected(e, new_market(ES, ENG_SELL, 5, 2), ENG_HALTED);
    run_rejected(e, modify_cmd(bid, 1, 5, 0), ENG_HALTED);
    run_rejected(e, modify_cmd(bid, 1, 0, 0), ENG_HALTED);
    ASSERT_EQ(eng_get_order(e, bid, &info), 1);
    ASSERT_EQ(info.qty, 10);
    rest(e, BTC, ENG_BUY, 10, 1500, 1);
    ev = run(e, new_limit(BTC, ENG_SELL, 10, 1500, 2), &n);
    ASSERT_EQ(ev[1].type, ENG_EV_TRADE);
    /* Halting twice is accepted and changes nothing. */
    ev = run(e, set_state_cmd(ES, ENG_STATE_HALTED), &n);
    ASSERT_EQ(ev[0].type, ENG_EV_STATE);
    /* Cancels go through. */
    ev = run(e, cancel_cmd(bid, 1), &n);
    ASSERT_EQ(ev[0].type, ENG_EV_CANCELLED);
    ASSERT_EQ(eng_get_order(e, bid, &info), 0);

    /* Bad commands. */
    run_rejected(e, set_state_cmd(ES, 2), ENG_BAD_STATE);
    run_rejected(e, set_state_cmd(ES, -1), ENG_BAD_STATE);
    run_rejected(e, set_state_cmd(5, ENG_STATE_OPEN), ENG_UNKNOWN_INSTRUMENT);
    struct eng_cmd flagged = set_state_cmd(ES, ENG_STATE_OPEN);
    flagged.flags = ENG_CMD_F_POST_ONLY;
    run_rejected(e, flagged, ENG_BAD_FLAGS);
    ASSERT_EQ(eng_instrument_state(e, ES), ENG_STATE_HALTED);

    /* Resumed: orders are accepted again. */
    ev = run(e, set_state_cmd(ES, ENG_STATE_OPEN), &n);
    ASSERT_EQ(ev[0].qty, ENG_STATE_OPEN);
    rest(e, ES, ENG_BUY, 10, 4500, 1);
    ASSERT_STREQ(eng_err_name(ENG_HALTED), "halted");
    eng_destroy(e);
}

void test_engine_fast_paths(void)
{
    struct eng *e = make_engine();
    const struct eng_event *ev;
    size_t n;
    char coid[16] = "x1";
    const int64_t many = -(int64_t)ENG_ERR__COUNT; /* r = many - n: n events */

    int64_t id = eng_new_order(e, ES, ENG_BUY, ENG_LIMIT, ENG_GTC, ENG_STP_NONE, 0, 3, 5, 4500,
                               coid);
    ASSERT_EQ(id, 1);
    eng_events(e, &n);
    ASSERT_EQ(n, 1);
    /* A reject: minus its reason. */
    ASSERT_EQ(eng_new_order(e, ES, ENG_BUY, ENG_LIMIT, ENG_GTC, 0, 0, 3, 5, 4510, NULL),
              -ENG_OFF_TICK);
    ASSERT_EQ(eng_limit(e, ES, ENG_BUY, 3, 0, 4500), -ENG_BAD_QTY);
    /* A trade: two events, in the engine's buffer. */
    ASSERT_EQ(eng_limit(e, ES, ENG_SELL, 4, 2, 4500), many - 2);
    ev = eng_events(e, &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    ASSERT_EQ(ev[1].type, ENG_EV_TRADE);
    ASSERT_EQ(ev[1].maker_order_id, id);
    ASSERT_EQ(eng_cancel(e, (uint64_t)id, 3), 3);
    ASSERT_EQ(eng_cancel(e, (uint64_t)id, 3), -ENG_UNKNOWN_ORDER);
    ASSERT_EQ(eng_cancel_order(e, 1, 3, 0, NULL), -ENG_UNKNOWN_ORDER);
    id = eng_limit(e, ES, ENG_BUY, 3, 5, 4500);
    ASSERT_TRUE(id > 0);
    ASSERT_EQ(eng_cancel(e, (uint64_t)id, 4), -ENG_NOT_OWNER);
    /* By client order id: the id is not an argument, so the event is in the buffer. */
    char c2[16] = "c2";
    ASSERT_TRUE(eng_new_order(e, ES, ENG_BUY, ENG_LIMIT, ENG_GTC, 0, 0, 3, 5, 4475, c2) > 0);
    ASSERT_EQ(eng_cancel_order(e, 0, 3, 0, c2), many - 1);
    ev = eng_events(e, &n);
    ASSERT_EQ(ev[0].type, ENG_EV_CANCELLED);
    ASSERT_EQ(ev[0].leaves, 5);
    ASSERT_TRUE(memcmp(ev[0].coid, "c2", 3) == 0);
    /* Modify always reports through the buffer. */
    ASSERT_EQ(eng_modify_order(e, (uint64_t)id, 3, ENG_CMD_F_KEEP_PRICE, 2, 0, NULL), many - 1);
    ASSERT_EQ(eng_events(e, &n)[0].type, ENG_EV_MODIFIED);
    ASSERT_EQ(eng_modify_order(e, (uint64_t)id, 3, 0, 2, 4510, NULL), -ENG_OFF_TICK);
    /* A sweep: each fill's trade, in order. */
    for (int i = 0; i < 5; i++)
        eng_limit(e, ES, ENG_SELL, 6, 1, 4600);
    ASSERT_EQ(eng_limit(e, ES, ENG_BUY, 7, 5, 4600), many - 6);
    ASSERT_EQ(eng_events(e, &n)[5].type, ENG_EV_TRADE);
    ASSERT_EQ(eng_seq(e), 19);
    ASSERT_VERIFY(e);
    eng_destroy(e);
}

void test_engine_batch_and_memory_reuse(void)
{
    struct eng *e = make_engine();
    enum { N = 20000 };
    static struct eng_cmd cmds[2 * N];
    const int orders = test_steps(N);
    struct eng_stats st;

    /* Add and cancel in a loop: the pools recycle, memory stays flat. */
    for (int round = 0; round < 3; round++) {
        /* Order ids are assigned in order after the last accepted one. */
        eng_get_stats(e, &st);
        uint64_t first = st.accepted + 1;
        for (int i = 0; i < orders; i++) {
            cmds[i] = new_limit(ES, ENG_BUY, 1 + i % 7, 25 * (100 + i % 50), 1);
            cmds[orders + i] = cancel_cmd(first + (uint64_t)i, 1);
        }
        eng_clear_events(e);
        ASSERT_EQ(eng_process_batch(e, cmds, 2 * (size_t)orders), 2 * (size_t)orders);
        size_t n;
        const struct eng_event *ev = eng_events(e, &n);
        ASSERT_EQ(n, 2 * (size_t)orders);
        ASSERT_EQ(ev[2 * orders - 1].type, ENG_EV_CANCELLED);
        ASSERT_VERIFY(e);
        eng_get_stats(e, &st);
        ASSERT_EQ(st.open_orders, 0);
        ASSERT_EQ(st.levels, 0);
        static uint64_t reserved_after_first;
        if (round == 0)
            reserved_after_first = st.bytes_reserved;
        else
            ASSERT_EQ(st.bytes_reserved, reserved_after_first);
    }
    ASSERT_EQ(st.accepted, 3 * (uint64_t)orders);
    ASSERT_EQ(st.cancelled, 3 * (uint64_t)orders);
    ASSERT_EQ(st.bytes_per_order_node, 64);
    eng_destroy(e);
}

/* ---- caller-chosen order ids (eng_config.caller_order_ids) ---------------- */

static struct eng *make_caller_engine(void)
{
    struct eng_config cfg = {.caller_order_ids = 1};
    struct eng *e = make_engine_with(&cfg);
    ASSERT_EQ(eng_caller_order_ids(e), 1);
    return e;
}

static struct eng_cmd with_id(struct eng_cmd c, uint64_t id)
{
    c.order_id = id;
    return c;
}

/* Rest a limit order with caller id `id` that must not trade. */
static void rest_as(struct eng *e, uint64_t id, uint32_t inst, uint8_t side, int64_t qty,
                    int64_t price, uint32_t account)
{
    size_t n;
    const struct eng_event *ev = run(e, with_id(new_limit(inst, side, qty, price, account), id), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].type, ENG_EV_ACCEPTED);
    ASSERT_EQ(ev[0].order_id, id);
}

/* `c` is rejected for `reason`, its REJECTED carrying `id`; the books keep
   their orders. */
static void run_rejected_id(struct eng *e, struct eng_cmd c, int reason, uint64_t id)
{
    struct eng_stats before, after;
    size_t n;
    const struct eng_event *ev;

    eng_get_stats(e, &before);
    ev = run(e, c, &n);
    ASSERT_EQ(n, 1);
    expect_reject(ev, reason);
    ASSERT_EQ(ev[0].order_id, id);
    ASSERT_EQ(ev[0].account, c.account);
    eng_get_stats(e, &after);
    ASSERT_EQ(after.open_orders, before.open_orders);
    ASSERT_EQ(after.accepted, before.accepted);
}

void test_engine_caller_ids_trade_cancel_modify(void)
{
    struct eng *e = make_caller_engine();
    const uint64_t top = UINT64_MAX, buyer = 7, mod = UINT64_MAX - 1;
    struct eng_order_info oi;
    struct eng_counters ct;
    const struct eng_event *ev;
    size_t n;

    rest_as(e, top, ES, ENG_SELL, 10, 4500, 1);
    ASSERT_EQ(eng_get_order(e, top, &oi), 1);
    ASSERT_EQ(oi.order_id, top);
    ASSERT_EQ(oi.qty, 10);
    /* A trade names both orders by the caller's ids. */
    ev = run(e, with_id(new_limit(ES, ENG_BUY, 4, 4500, 2), buyer), &n);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ev[0].order_id, buyer);
    expect_trade(&ev[1], buyer, top, 4500, 4, 0, 6);
    ASSERT_EQ(eng_get_order(e, buyer, &oi), 0);
    /* Modify and cancel take the caller's id. */
    rest_as(e, mod, ES, ENG_BUY, 5, 4400, 2);
    ev = run(e, modify_cmd(mod, 2, 8, 4425), &n);
    ASSERT_EQ(ev[0].type, ENG_EV_MODIFIED);
    ASSERT_EQ(ev[0].order_id, mod);
    ASSERT_EQ(eng_get_order(e, mod, &oi), 1);
    ASSERT_EQ(oi.price, 4425);
    ASSERT_EQ(oi.qty, 8);
    ev = run(e, cancel_cmd(top, 1), &n);
    expect_cancel(ev, top, ENG_CANCEL_USER, 6);
    ASSERT_EQ(eng_get_order(e, top, &oi), 0);
    run_rejected_id(e, cancel_cmd(top, 1), ENG_UNKNOWN_ORDER, top);
    run_rejected_id(e, cancel_cmd(mod, 1), ENG_NOT_OWNER, mod);
    /* The engine issues no order ids of its own. */
    eng_get_counters(e, &ct);
    ASSERT_EQ(ct.order_id, 0);
    ASSERT_EQ(ct.trade_id, 1);
    eng_destroy(e);
}

void test_engine_caller_ids_rejects(void)
{
    struct eng *e = make_caller_engine();
    struct eng_cmd c;
    char coid[16] = "dup";
    size_t n;

    /* Order id 0: bad_order_id, after the command's own shape. */
    run_rejected_id(e, new_limit(ES, ENG_BUY, 5, 4500, 1), ENG_BAD_ORDER_ID, 0);
    run_rejected_id(e, new_market(ES, ENG_BUY, 5, 1), ENG_BAD_ORDER_ID, 0);
    c = new_limit(ES, 9, 5, 4500, 1);
    run_rejected_id(e, c, ENG_BAD_SIDE, 0);
    c = new_limit(7, ENG_BUY, 5, 4500, 1);
    run_rejected_id(e, c, ENG_BAD_ORDER_ID, 0);
    /* Any other reject carries the new order's id. */
    run_rejected_id(e, with_id(new_limit(ES, ENG_BUY, 5, 4510, 1), 55), ENG_OFF_TICK, 55);
    run_rejected_id(e, with_id(new_limit(7, ENG_BUY, 5, 4500, 1), 56), ENG_UNKNOWN_INSTRUMENT, 56);

    /* The id of an open order: duplicate_order_id, after the checks of the
       command alone and before the client order id's. */
    c = new_limit(ES, ENG_BUY, 5, 4500, 1);
    memcpy(c.coid, coid, sizeof(coid));
    run(e, with_id(c, 100), &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(eng_events(e, &n)[0].type, ENG_EV_ACCEPTED);
    run_rejected_id(e, with_id(new_limit(ES, ENG_SELL, 5, 4600, 2), 100), ENG_DUPLICATE_ORDER_ID,
                    100);
    run_rejected_id(e, with_id(c, 100), ENG_DUPLICATE_ORDER_ID, 100);
    run_rejected_id(e, with_id(c, 101), ENG_DUPLICATE_CLIENT_ORDER_ID, 101);
    run_rejected_id(e, with_id(new_limit(ES, ENG_SELL, 0, 4600, 2), 100), ENG_BAD_QTY, 100);
    run_rejected_id(e, with_id(new_market(ES, ENG_SELL, 5, 2), 100), ENG_DUPLICATE_ORDER_ID, 100);
    run(e, set_state_cmd(ES, ENG_STATE_HALTED), &n);
    run_rejected_id(e, with_id(new_limit(ES, ENG_SELL, 5, 4600, 2), 100), ENG_HALTED, 100);
    eng_destroy(e);
}

void test_engine_caller_ids_reuse_after_finish(void)
{
    struct eng *e = make_caller_engine();
    const struct eng_event *ev;
    size_t n;

    /* An IOC's id is free once its remainder is cancelled. */
    rest_as(e, 1, ES, ENG_SELL, 3, 4500, 1);
    ev = run(e, with_id((struct eng_cmd){.type = ENG_CMD_NEW, .side = ENG_BUY,
                                         .order_type = ENG_LIMIT, .tif = ENG_IOC,
                                         .instrument = ES, .account = 2, .price = 4500,
                                         .qty = 5},
                        2),
             &n);
    ASSERT_EQ(n, 3);
    expect_trade(&ev[1], 2, 1, 4500, 3, 2, 0);
    expect_cancel(&ev[2], 2, ENG_CANCEL_IOC, 2);
    /* So is a filled order's (1) and the IOC's (2). */
    rest_as(e, 1, ES, ENG_BUY, 4, 4400, 1);
    rest_as(e, 2, ES, ENG_BUY, 4, 4375, 1);
    run_rejected_id(e, with_id(new_limit(ES, ENG_BUY, 1, 4350, 1), 2), ENG_DUPLICATE_ORDER_ID, 2);
    /* And a cancelled one's; the new order is a different one. */
    ev = run(e, cancel_cmd(2, 1), &n);
    expect_cancel(ev, 2, ENG_CANCEL_USER, 4);
    rest_as(e, 2, ES, ENG_SELL, 9, 4600, 3);
    struct eng_order_info oi;
    ASSERT_EQ(eng_get_order(e, 2, &oi), 1);
    ASSERT_EQ(oi.side, ENG_SELL);
    ASSERT_EQ(oi.account, 3);
    ASSERT_EQ(oi.qty, 9);
    /* A market order's id too, and a FOK's that was killed. */
    ev = run(e, with_id(new_market(ES, ENG_SELL, 2, 4), 3), &n);
    expect_trade(&ev[1], 3, 1, 4400, 2, 0, 2);
    ev = run(e, with_id((struct eng_cmd){.type = ENG_CMD_NEW, .side = ENG_BUY,
                                         .order_type = ENG_LIMIT, .tif = ENG_FOK,
                                         .instrument = ES, .account = 4, .price = 4600,
                                         .qty = 50},
                        3),
             &n);
    expect_cancel(&ev[1], 3, ENG_CANCEL_FOK, 50);
    rest_as(e, 3, ES, ENG_BUY, 1, 4300, 4);
    eng_destroy(e);
}

/* Ids that share their low 32 bits (the id index's home) and ids near 2^64. */
void test_engine_caller_ids_low_bits_collide(void)
{
    struct eng *e = make_caller_engine();
    enum { N = 200 };
    const uint64_t low = 0xDEADBEEF;
    struct eng_order_info oi;
    size_t n;

    for (uint64_t i = 0; i < N; i++)
        rest_as(e, (i << 32) | low, ES, ENG_BUY, 1 + (int64_t)i % 5, 25 * (100 + (int64_t)i % 9),
                (uint32_t)i % 3);
    rest_as(e, UINT64_MAX, ES, ENG_SELL, 1, 9000, 1);
    rest_as(e, 0xFFFFFFFF, ES, ENG_SELL, 2, 9000, 1);
    rest_as(e, UINT64_MAX - 0xFFFFFFFF, ES, ENG_SELL, 3, 9000, 1);
    for (uint64_t i = 0; i < N; i++) {
        ASSERT_EQ(eng_get_order(e, (i << 32) | low, &oi), 1);
        ASSERT_EQ(oi.order_id, (i << 32) | low);
        ASSERT_EQ(oi.qty, 1 + (int64_t)i % 5);
    }
    ASSERT_EQ(eng_get_order(e, ((uint64_t)N << 32) | low, &oi), 0);
    ASSERT_EQ(eng_get_order(e, low + 1, &oi), 0);
    ASSERT_EQ(eng_get_order(e, UINT64_MAX, &oi), 1);
    ASSERT_EQ(oi.qty, 1);
    ASSERT_EQ(eng_get_order(e, 0xFFFFFFFF, &oi), 1);
    ASSERT_EQ(oi.qty, 2);
    ASSERT_EQ(eng_get_order(e, UINT64_MAX - 0xFFFFFFFF, &oi), 1);
    ASSERT_EQ(oi.qty, 3);
    /* Each is refused as a duplicate while open, never one of its twins. */
    run_rejected_id(e, with_id(new_limit(ES, ENG_BUY, 1, 2500, 0), (7ULL << 32) | low),
                    ENG_DUPLICATE_ORDER_ID, (7ULL << 32) | low);
    run_rejected_id(e, with_id(new_limit(ES, ENG_SELL, 1, 9000, 0), UINT64_MAX),
                    ENG_DUPLICATE_ORDER_ID, UINT64_MAX);
    /* Cancel every other one (the index deletes among its twins), then the
       rest are still found and the cancelled ids come back. */
    for (uint64_t i = 0; i < N; i += 2)
        expect_cancel(run(e, cancel_cmd((i << 32) | low, (uint32_t)i % 3), &n), (i << 32) | low,
                      ENG_CANCEL_USER, 1 + (int64_t)i % 5);
    run_rejected_id(e, cancel_cmd(low, 0), ENG_UNKNOWN_ORDER, low);
    for (uint64_t i = 0; i < N; i++)
        ASSERT_EQ(eng_get_order(e, (i << 32) | low, &oi), (int)(i % 2));
    for (uint64_t i = 0; i < N; i += 2)
        rest_as(e, (i << 32) | low, ES, ENG_BUY, 7, 2400, 5);
    for (uint64_t i = 0; i < N; i++) {
        ASSERT_EQ(eng_get_order(e, (i << 32) | low, &oi), 1);
        ASSERT_EQ(oi.qty, i % 2 ? 1 + (int64_t)i % 5 : 7);
    }
    expect_cancel(run(e, cancel_cmd(UINT64_MAX, 1), &n), UINT64_MAX, ENG_CANCEL_USER, 1);
    ASSERT_EQ(eng_get_order(e, 0xFFFFFFFF, &oi), 1);
    eng_destroy(e);
}

void test_engine_caller_ids_run(void)
{
    struct eng *e = make_caller_engine(), *d = make_engine();
    const int64_t many = -(int64_t)ENG_ERR__COUNT;
    struct eng_cmd c = with_id(new_limit(ES, ENG_BUY, 5, 4500, 3), 1ULL << 40);
    const struct eng_event *ev;
    size_t n;

    /* A lone ACCEPTED: 1 (the id is the caller's own, in the event). */
    ASSERT_EQ(eng_run(e, &c), 1);
    ev = eng_events(e, &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ev[0].order_id, 1ULL << 40);
    ASSERT_EQ(eng_run(e, &c), -ENG_DUPLICATE_ORDER_ID);
    c.order_id = 0;
    ASSERT_EQ(eng_run(e, &c), -ENG_BAD_ORDER_ID);
    /* The fast paths without an id cannot place an order in this mode. */
    ASSERT_EQ(eng_limit(e, ES, ENG_BUY, 3, 5, 4500), -ENG_BAD_ORDER_ID);
    ASSERT_EQ(eng_new_order(e, ES, ENG_BUY, ENG_LIMIT, ENG_GTC, 0, 0, 3, 5, 4500, NULL),
              -ENG_BAD_ORDER_ID);
    /* A trade: its events in the buffer. */
    c = with_id(new_limit(ES, ENG_SELL, 2, 4500, 4), 9);
    ASSERT_EQ(eng_run(e, &c), many - 2);
    ASSERT_EQ(eng_events(e, &n)[1].maker_order_id, 1ULL << 40);
    /* Cancel and modify by the caller's id, through eng_run and the fast paths. */
    c = cancel_cmd(1ULL << 40, 3);
    ASSERT_EQ(eng_run(e, &c), 3);
    ASSERT_EQ(eng_run(e, &c), -ENG_UNKNOWN_ORDER);
    c = with_id(new_limit(ES, ENG_BUY, 5, 4475, 3), 1ULL << 40);
    ASSERT_EQ(eng_run(e, &c), 1);
    ASSERT_EQ(eng_modify_order(e, 1ULL << 40, 3, ENG_CMD_F_KEEP_PRICE, 2, 0, NULL), many - 1);
    ASSERT_EQ(eng_events(e, &n)[0].order_id, 1ULL << 40);
    ASSERT_EQ(eng_cancel(e, 1ULL << 40, 3), 2);
    c = set_state_cmd(BTC, ENG_STATE_HALTED);
    ASSERT_EQ(eng_run(e, &c), many - 1);
    ASSERT_EQ(eng_events(e, &n)[0].type, ENG_EV_STATE);
    ASSERT_VERIFY(e);

    /* By default eng_run returns the engine's id, and a NEW's order_id is ignored. */
    ASSERT_EQ(eng_caller_order_ids(d), 0);
    c = with_id(new_limit(ES, ENG_BUY, 5, 4500, 3), 77);
    ASSERT_EQ(eng_run(d, &c), 1);
    ASSERT_EQ(eng_run(d, &c), 2);
    c.price = 4510;
    ASSERT_EQ(eng_run(d, &c), -ENG_OFF_TICK);
    ASSERT_EQ(eng_events(d, &n)[0].order_id, 0);
    c = cancel_cmd(2, 3);
    ASSERT_EQ(eng_run(d, &c), 5);
    ASSERT_VERIFY(d);
    eng_destroy(e);
    eng_destroy(d);
}
