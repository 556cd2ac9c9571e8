/*
 * match.c - the semantics of new order, cancel, modify and set state:
 * validation, price-time matching, self-trade prevention, resting.
 * docs/semantics.md is the specification; this file follows its order of
 * checks and events.
 *
 * A taker is matched from a `struct taker` on the stack: an order that trades
 * completely or does not rest never touches the order pool or the indexes.
 * Only what rests is allocated, appended to its level and indexed.
 *
 * Before producing more than one event, a command reserves room for the most
 * events it can cause (see reserve_match), so no event is ever dropped
 * mid-command; if that reservation fails the command is rejected with
 * no_memory before anything changes.
 */
#include <stdlib.h>

#include "engine_int.h"
#include "shape.h"

struct taker {
    const char *coid;   /* its client order id (ENG_COID_LEN bytes) */
    uint64_t id;
    uint32_t id_key;    /* ids_key() of id, for the order-id index */
    int64_t qty;        /* open quantity */
    int64_t limit;      /* inclusive price limit; INT64_MAX/INT64_MIN = none */
    uint32_t account;
    int side;           /* BOOK_BID for a buy */
    uint8_t stp;
    bool stp_cancelled; /* self-trade prevention cancelled the taker */
    bool hit_limit;     /* matching stopped at a level beyond the limit */
};

static inline uint8_t side_of(int book_side)
{
    return book_side == BOOK_BID ? ENG_BUY : ENG_SELL;
}

/* ---- events --------------------------------------------------------------- */

/*
 * Append an event with every field written. Explicit stores, not a zeroing
 * compound literal: compilers turn the latter into `rep stos`, whose start-up
 * cost is most of the price of a 96-byte event.
 */
static inline struct eng_event *ev_put(struct eng *e, uint8_t type, uint8_t side,
                                       uint8_t reason, uint8_t flags, uint32_t instrument,
                                       uint64_t order_id, int64_t price, int64_t qty,
                                       int64_t leaves, uint32_t account)
{
    struct eng_event *ev;

    ENG_ASSERT(e->ev_len < e->ev_cap);
    ev = &e->ev[e->ev_len++];
    ev->type = type;
    ev->side = side;
    ev->reason = reason;
    ev->flags = flags;
    ev->instrument = instrument;
    ev->seq = e->seq;
    ev->order_id = order_id;
    ev->maker_order_id = 0;
    ev->trade_id = 0;
    ev->price = price;
    ev->qty = qty;
    ev->leaves = leaves;
    ev->maker_leaves = 0;
    ev->account = account;
    ev->maker_account = 0;
    return ev;
}

static inline void ev_set_coid(struct eng_event *ev, const char coid[16])
{
    memcpy(ev->coid, coid, ENG_COID_LEN);
}

static inline void ev_clear_coid(struct eng_event *ev)
{
    memset(ev->coid, 0, ENG_COID_LEN);
}

void eng__reject(struct eng *e, const struct eng_cmd *c, int err)
{
    /* The order it names: a cancel's or modify's target, a new order's own
       id (caller ids) and client order id. Other commands name none, and
       whatever their unused fields hold stays out of the event. */
    bool targets = c->type == ENG_CMD_CANCEL || c->type == ENG_CMD_MODIFY;
    bool names = targets || c->type == ENG_CMD_NEW;
    uint64_t id = targets || (c->type == ENG_CMD_NEW && e->caller_ids) ? c->order_id : 0;
    struct eng_event *ev = ev_put(e, ENG_EV_REJECTED, 0, (uint8_t)err, 0, c->instrument, id, 0,
                                  0, 0, c->account);
    if (names)
        ev_set_coid(ev, c->coid);
    else
        ev_clear_coid(ev);
    e->stats.rejected++;
}

static void emit_accepted(struct eng *e, const struct eng_cmd *c, uint64_t id)
{
    struct eng_event *ev = ev_put(e, ENG_EV_ACCEPTED, c->side, 0, 0, c->instrument, id,
                                  c->order_type == ENG_LIMIT ? c->price : 0, c->qty, 0,
                                  c->account);
    ev_set_coid(ev, c->coid);
    e->stats.accepted++;
}

static void emit_cancelled(struct eng *e, uint64_t id, uint32_t instrument, int side,
                           int64_t price, int64_t leaves, uint32_t account, const char *coid,
                           int reason)
{
    struct eng_event *ev = ev_put(e, ENG_EV_CANCELLED, side_of(side), (uint8_t)reason, 0,
                                  instrument, id, price, 0, leaves, account);
    ev_set_coid(ev, coid);
    e->stats.cancelled++;
}

/* A resting order leaves the book. */
static void emit_order_cancelled(struct eng *e, const struct order *o, const struct level *lv,
                                 int reason)
{
    emit_cancelled(e, o->id, lv->instrument, lv->side, lv->price, o->qty, o->account, o->coid,
                   reason);
}

/* A taker's open quantity leaves without resting. */
static void emit_taker_cancelled(struct eng *e, const struct taker *t, uint32_t instrument,
                                 int64_t price, int reason)
{
    emit_cancelled(e, t->id, instrument, t->side, price, t->qty, t->account, t->coid, reason);
}

static void emit_modified(struct eng *e, const struct order *o, uint32_t instrument, int side,
                          int64_t price, int64_t qty, bool kept)
{
    struct eng_event *ev = ev_put(e, ENG_EV_MODIFIED, side_of(side), 0,
                                  kept ? ENG_EV_F_PRIORITY_KEPT : 0, instrument, o->id, price,
                                  qty, 0, o->account);
    ev_set_coid(ev, o->coid);
    e->stats.modified++;
}

/* A fill of `qty` for `account` on `instrument`, counted against its
   protection if it has any; over the limit, it is queued to trip. */
static void count_fill(struct eng *e, uint32_t account, uint32_t instrument, int64_t qty)
{
    struct mmp_entry *en = mmp_find(&e->mmp, account, instrument);

    if (en && en->limit > 0 && mmp_fill(en, qty, e->now))
        mmp_queue_trip(&e->mmp, en);
}

static void emit_trade(struct eng *e, const struct taker *t, const struct level *lv,
                       const struct order *m, int64_t q)
{
    struct eng_event *ev = ev_put(e, ENG_EV_TRADE, side_of(t->side), 0, 0, lv->instrument,
                                  t->id, lv->price, q, t->qty, t->account);
    ev->maker_order_id = m->id;
    ev->trade_id = ++e->last_trade_id;
    ev->maker_leaves = m->qty;
    ev->maker_account = m->account;
    ev_clear_coid(ev);
    e->stats.trades++;
    if (ENG_UNLIKELY(e->mmp.active) && e->inst[lv->instrument].mmp_active) {
        count_fill(e, t->account, lv->instrument, q);
        count_fill(e, m->account, lv->instrument, q);
    }
}

/* The state of a level after a change (total 0: the level is gone). */
static void emit_level(struct eng *e, uint32_t instrument, int side, int64_t price,
                       int64_t total, uint32_t count)
{
    struct eng_event *ev = ev_put(e, ENG_EV_LEVEL, side_of(side), 0, 0, instrument, 0, price,
                                  total, count, 0);
    ev_clear_coid(ev);
}

static inline void note_level(struct eng *e, const struct level *lv)
{
    if (e->level_events)
        emit_level(e, lv->instrument, lv->side, lv->price, lv->total_qty, lv->count);
}

/* ---- order storage -------------------------------------------------------- */

/* Take an order that is out of the book and out of the order-id index out of
   the client-order-id index and back to the pool. Can't fail. */
static void release_order(struct eng *e, struct order *o)
{
    if (!eng__coid_empty(o->coid))
        idx_erase_at(&e->coids,
                     idx_slot_of(&e->coids, eng__hash_coid(e, o->account, o->coid), o->handle),
                     &eng__coid_ops, e);
    pool_free(&e->orders, o, o->handle);
}

/* Take an order that is out of the book out of both indexes and back to the
   pool. Can't fail. */
static void forget_order(struct eng *e, struct order *o)
{
    ids_erase(&e->ids, o->id, o->handle);
    release_order(e, o);
}

/* Take a resting order out of its level (which may go). Can't fail. */
static void unlink_order(struct eng *e, struct book *b, struct order *o)
{
    struct level *lv = book_order_level(b, o);
    bool last = lv->count == 1;
    uint32_t instrument = lv->instrument;
    int side = lv->side;
    int64_t price = lv->price;

    book_unlink(b, o);
    acct_remove(&e->accounts, o);
    if (!e->level_events)
        return;
    if (last)
        emit_level(e, instrument, side, price, 0, 0);
    else
        note_level(e, lv);
}

/* Take a resting order out of its level and forget it. Can't fail. */
static void drop_order(struct eng *e, struct book *b, struct order *o)
{
    unlink_order(e, b, o);
    forget_order(e, o);
}

/* drop_order() of the order at `pos` in the order-id index (no insert or
   erase since it was found there). */
static void drop_order_at(struct eng *e, struct book *b, struct order *o, ids_pos pos)
{
    unlink_order(e, b, o);
    ids_erase_at(&e->ids, pos);
    release_order(e, o);
}

/*
 * Put `o` (qty set, already indexed, in no level) at the back of the level at
 * `price`. On failure the order is forgotten and a Cancelled event says why.
 */
static void rest_order(struct eng *e, struct book *b, struct order *o, int side, int64_t price)
{
    /* The account's room first: a level made must get the order. */
    struct acct_list *al;
    struct level *lv =
        acct_room(&e->accounts, &e->orders, o->account, &al) == 0 ? book_level_get(b, side, price) : NULL;
    int reason;

    if (!lv) {
        reason = ENG_CANCEL_NO_MEMORY;
    } else if (lv->total_qty > INT64_MAX - o->qty) {
        /* Only an existing level can be full: a new one has total 0. */
        reason = ENG_CANCEL_LEVEL_FULL;
    } else {
        book_append(b, lv, o);
        acct_add(&e->accounts, al, o);
        note_level(e, lv);
        return;
    }
    emit_cancelled(e, o->id, b->instrument, side, price, o->qty, o->account, o->coid, reason);
    forget_order(e, o);
}

/* Allocate, index and rest what is left of a new GTC limit order. */
static void rest_new(struct eng *e, struct book *b, const struct taker *t,
                     const struct eng_cmd *c)
{
    bool has_coid = !eng__coid_empty(c->coid);
    struct order *o;
    uint32_t handle;

    if (ids_reserve_one(&e->ids) != 0 ||
        (has_coid && idx_reserve_one(&e->coids, &eng__coid_ops, e) != 0) ||
        (o = pool_alloc(&e->orders, &handle)) == NULL) {
        emit_taker_cancelled(e, t, b->instrument, c->price, ENG_CANCEL_NO_MEMORY);
        return;
    }
    o->id = t->id;
    o->qty = t->qty;
    o->handle = handle;
    o->account = t->account;
    o->stp = t->stp;
    o->flags = (c->flags & ENG_CMD_F_POST_ONLY) ? ORDER_F_POST_ONLY : 0;
    o->acct_slot = ACCT_NONE;
    memcpy(o->coid, c->coid, ENG_COID_LEN);
    ids_insert_key(&e->ids, t->id_key, handle);
    if (has_coid)
        idx_insert(&e->coids, eng__hash_coid(e, o->account, o->coid), handle);
    rest_order(e, b, o, t->side, c->price);
}

/* ---- validation ----------------------------------------------------------- */

static inline bool multiple_of(int64_t v, int64_t d)
{
    /* Most ticks and lots are powers of two (often 1): skip the division. */
    if ((d & (d - 1)) == 0)
        return (v & (d - 1)) == 0;
    return v % d == 0;
}

static bool coid_valid(const char coid[16])
{
    int i = 0;

    if (eng__coid_empty(coid))
        return true;
    while (i < ENG_COID_LEN && coid[i] != 0) {
        if (coid[i] < 0x20 || coid[i] > 0x7e)
            return false;
        i++;
    }
    while (i < ENG_COID_LEN)
        if (coid[i++] != 0)
            return false;
    return true;
}

static int check_qty(const struct instrument *in, int64_t qty, bool zero_ok)
{
    if (qty < 0 || (qty == 0 && !zero_ok))
        return ENG_BAD_QTY;
    if (!multiple_of(qty, in->spec.lot_size))
        return ENG_OFF_LOT;
    return ENG_OK;
}

static int check_price(const struct instrument *in, int64_t price)
{
    if (price <= 0)
        return ENG_BAD_PRICE;
    if (!multiple_of(price, in->spec.tick_size))
        return ENG_OFF_TICK;
    if (price < in->band_lo || price > in->band_hi)
        return ENG_OUTSIDE_BAND;
    return ENG_OK;
}

/*
 * The instrument's order limits on an order of `qty` at `price` (0: a market
 * order, whose notional is not known). An overflowing product is over any
 * limit: both factors are positive here.
 */
static int check_limits(const struct instrument *in, int64_t price, int64_t qty)
{
    int64_t notional;

    if (in->limits.max_qty && qty > in->limits.max_qty)
        return ENG_MAX_QTY_EXCEEDED;
    if (in->limits.max_notional && price &&
        (__builtin_mul_overflow(price, qty, &notional) || notional > in->limits.max_notional))
        return ENG_MAX_NOTIONAL_EXCEEDED;
    return ENG_OK;
}

static inline bool has_limits(const struct instrument *in)
{
    return (in->limits.max_qty | in->limits.max_notional) != 0;
}

/*
 * Fields of a packed NEW command that the Python API never gets wrong. A
 * packed limit order's price is judged by the price check (0 is BAD_PRICE).
 */
static int check_new_shape(const struct eng_cmd *c)
{
    int shape;

    if (c->reserved)
        return ENG_BAD_COMMAND;
    if (c->side != ENG_BUY && c->side != ENG_SELL)
        return ENG_BAD_SIDE;
    if (c->order_type != ENG_LIMIT && c->order_type != ENG_MARKET)
        return ENG_BAD_ORDER_TYPE;
    shape = shape_of(c->order_type, c->tif, c->order_type == ENG_LIMIT || c->price != 0, c->flags);
    if (shape == ENG_SHAPE_MARKET_WITH_PRICE)
        return ENG_BAD_ORDER_TYPE;
    if (c->tif < ENG_GTC || c->tif > ENG_FOK || shape == ENG_SHAPE_MARKET_GTC)
        return ENG_BAD_TIF;
    if (c->stp > ENG_STP_CANCEL_BOTH)
        return ENG_BAD_STP;
    if ((c->flags & ~ENG_CMD_F_POST_ONLY) || shape == ENG_SHAPE_MARKET_POST_ONLY ||
        shape == ENG_SHAPE_POST_ONLY_NOT_GTC)
        return ENG_BAD_FLAGS;
    if (!coid_valid(c->coid))
        return ENG_BAD_CLIENT_ORDER_ID;
    return ENG_OK;
}

/* Would a `side` order at `price` trade against the opposite best level? */
static inline bool would_cross(const struct book *b, int side, int64_t price)
{
    const struct level *best = book_best(b, side ^ 1);
    return best && book_at_least(side, price, best->price);
}

/* ---- matching ------------------------------------------------------------- */

/*
 * The most events a match can cause, besides the one that opens the command:
 * one per maker visited (a trade or a self-trade cancel), at most qty/lot
 * trades (every open quantity is a multiple of the lot), plus a maker and a
 * taker cancel; with level events, one more per maker visited and two for
 * the order's own levels (left and joined); and what protection tripping
 * may cancel.
 */
static int reserve_match_exactly(struct eng *e, const struct instrument *in, int side,
                                 int64_t qty, uint8_t stp)
{
    const struct book *b = &in->book;
    int64_t lot = in->spec.lot_size;
    uint64_t makers = b->side[side ^ 1].norders;
    uint64_t room = e->ev_cap - e->ev_len;
    uint64_t per = e->level_events ? 2 : 1, extra = e->level_events ? 5 : 3;

    /* With market-maker protection here, the fills may trip accounts: each
       trip cancels its account's resting orders (at most all of them, the
       order itself once it rests included) and says so in one event. */
    if (ENG_UNLIKELY(in->mmp_active))
        extra += (b->side[0].norders + b->side[1].norders + 1) * per + in->mmp_active;

    /* qty >= qty / lot: the common small order needs no division. Compared
       as room per maker, so a qty near INT64_MAX cannot wrap the product. */
    if (ENG_LIKELY(room >= extra)) {
        uint64_t fit = (room - extra) >> (per - 1); /* per is 1 or 2 */
        if (makers <= fit || (stp != ENG_STP_CANCEL_OLDEST && (uint64_t)qty <= fit))
            return 0;
    }
    if (stp != ENG_STP_CANCEL_OLDEST && (uint64_t)(qty / lot) < makers)
        makers = (uint64_t)(qty / lot);
    return eng__reserve_events(e, makers * per + extra);
}

/*
 * reserve_match() of the common command: two events per unit of its qty
 * (at least two per lot) plus five bound it, whatever the book holds and
 * level events or not, unless protection may trip or its STP mode cancels
 * makers beyond its qty; when that much room is there, nothing else need be
 * read.
 */
static inline int reserve_match(struct eng *e, const struct instrument *in, int side, int64_t qty,
                                uint8_t stp)
{
    uint64_t room = e->ev_cap - e->ev_len;

    if (ENG_LIKELY(room >= 5 && (uint64_t)qty <= (room - 5) / 2 && !in->mmp_active &&
                   stp != ENG_STP_CANCEL_OLDEST))
        return 0;
    return reserve_match_exactly(e, in, side, qty, stp);
}

static int64_t market_limit(const struct instrument *in, int side)
{
    const struct level *best = book_best(&in->book, side ^ 1);
    int64_t p = in->spec.market_protection;

    if (p < 0 || !best)
        return side == BOOK_BID ? INT64_MAX : INT64_MIN;
    if (side == BOOK_BID)
        return best->price > INT64_MAX - p ? INT64_MAX : best->price + p;
    return best->price - p; /* prices are > 0, so this cannot overflow */
}

/* Can the taker trade its whole quantity right now (FOK pre-check)? */
static bool fok_fillable(const struct book *b, const struct taker *t)
{
    int64_t need = t->qty;

    for (const struct level *lv = book_best(b, t->side ^ 1);
         lv && book_at_least(t->side, t->limit, lv->price); lv = book_next_level(lv)) {
        if (t->stp == ENG_STP_NONE) {
            if (lv->total_qty >= need)
                return true;
            need -= lv->total_qty;
            continue;
        }
        for (const struct list_node *it = lv->orders.next; it != &lv->orders; it = it->next) {
            const struct order *m = eng_container_of(it, struct order, link);
            if (m->account == t->account) {
                if (t->stp == ENG_STP_CANCEL_OLDEST)
                    continue; /* would be cancelled, not traded */
                return false;  /* matching would stop here */
            }
            if (m->qty >= need)
                return true;
            need -= m->qty;
        }
    }
    return false;
}

/* match() once the taker's limit reaches the best opposite level. */
static void trade_through(struct eng *e, struct book *b, struct taker *t)
{
    int opp = t->side ^ 1;

    while (t->qty > 0) {
        struct level *lv = book_best(b, opp);

        if (!lv)
            return;
        if (!book_at_least(t->side, t->limit, lv->price)) {
            t->hit_limit = true;
            return;
        }
        /* Walk the level oldest first; leave the loop when the level has
           been freed (its last order gone) or the taker is done. */
        for (;;) {
            struct order *m = book_level_head(lv);
            bool last = lv->count == 1;

            if (ENG_UNLIKELY(t->stp != ENG_STP_NONE && m->account == t->account)) {
                if (t->stp == ENG_STP_CANCEL_NEWEST) {
                    t->stp_cancelled = true;
                    return;
                }
                emit_order_cancelled(e, m, lv, ENG_CANCEL_STP);
                drop_order(e, b, m);
                if (t->stp == ENG_STP_CANCEL_BOTH) {
                    t->stp_cancelled = true;
                    return;
                }
            } else {
                int64_t q = t->qty < m->qty ? t->qty : m->qty;
                t->qty -= q;
                book_reduce(lv, m, q);
                emit_trade(e, t, lv, m, q);
                if (m->qty > 0) {
                    note_level(e, lv);
                    return; /* the taker is done */
                }
                drop_order(e, b, m);
            }
            if (last)
                break;
            if (t->qty == 0)
                return;
        }
    }
}

/*
 * Trade the taker against the opposite side while it has quantity and the
 * best level is within its limit. Sets t->stp_cancelled or t->hit_limit when
 * those stop it. Inline up to the first price check: most orders cross
 * nothing and need no call.
 */
static inline void match(struct eng *e, struct book *b, struct taker *t)
{
    const struct level *best = book_best(b, t->side ^ 1);

    if (t->qty <= 0 || !best)
        return;
    if (!book_at_least(t->side, t->limit, best->price)) {
        t->hit_limit = true;
        return;
    }
    trade_through(e, b, t);
}

/* ---- commands ------------------------------------------------------------- */

static bool mmp_tripped(const struct eng *e, uint32_t account, uint32_t instrument)
{
    const struct mmp_entry *en = mmp_find(&e->mmp, account, instrument);
    return en && en->tripped;
}

void eng__new_order(struct eng *e, const struct eng_cmd *c, uint32_t key)
{
    const struct instrument *in = NULL;
    struct book *b;
    struct taker t;
    ids_pos pos;
    int err = check_new_shape(c);
    bool limit = c->order_type == ENG_LIMIT;
    int64_t event_price = limit ? c->price : 0;

    if (!err && e->caller_ids && c->order_id == 0)
        err = ENG_BAD_ORDER_ID;
    if (!err) {
        if (c->instrument >= e->ninst)
            err = ENG_UNKNOWN_INSTRUMENT;
        else if (e->inst[c->instrument].state == ENG_STATE_HALTED)
            err = ENG_HALTED;
        else if (ENG_UNLIKELY(e->mmp.tripped) && mmp_tripped(e, c->account, c->instrument))
            err = ENG_MMP;
        else if (!(err = check_qty(in = &e->inst[c->instrument], c->qty, false)) && limit)
            err = check_price(in, c->price);
        if (!err && ENG_UNLIKELY(has_limits(in)))
            err = check_limits(in, event_price, c->qty);
    }
    if (err) {
        eng__reject(e, c, err);
        return;
    }
    b = &e->inst[c->instrument].book;
    t = (struct taker){.coid = c->coid,
                       .qty = c->qty,
                       .account = c->account,
                       .side = c->side == ENG_BUY ? BOOK_BID : BOOK_ASK,
                       .stp = c->stp};
    t.id_key = key;
    if (e->caller_ids && eng__lookup_order(e, key, c->order_id, &pos))
        err = ENG_DUPLICATE_ORDER_ID;
    else if (!eng__coid_empty(c->coid) && eng__find_coid(e, c->account, c->coid))
        err = ENG_DUPLICATE_CLIENT_ORDER_ID;
    else if ((c->flags & ENG_CMD_F_POST_ONLY) && would_cross(b, t.side, c->price))
        err = ENG_POST_ONLY_WOULD_CROSS;
    else if (reserve_match(e, in, t.side, c->qty, c->stp) != 0)
        err = ENG_NO_MEMORY;
    if (err) {
        eng__reject(e, c, err);
        return;
    }

    if (e->caller_ids) {
        t.id = c->order_id;
    } else {
        t.id = ++e->last_order_id;
        t.id_key = ids_key(&e->ids, t.id);
    }
    t.limit = limit ? c->price : market_limit(in, t.side);
    emit_accepted(e, c, t.id);
    if (c->tif == ENG_FOK && !fok_fillable(b, &t)) {
        emit_taker_cancelled(e, &t, c->instrument, event_price, ENG_CANCEL_FOK);
        return;
    }
    match(e, b, &t);
    if (t.stp_cancelled)
        emit_taker_cancelled(e, &t, c->instrument, event_price, ENG_CANCEL_STP);
    else if (t.qty == 0)
        return;
    else if (!limit)
        emit_taker_cancelled(e, &t, c->instrument, 0,
                             t.hit_limit ? ENG_CANCEL_BAND : ENG_CANCEL_MARKET_REMAINDER);
    else if (c->tif == ENG_IOC)
        emit_taker_cancelled(e, &t, c->instrument, c->price, ENG_CANCEL_IOC);
    else if (ENG_NEVER(c->tif == ENG_FOK))
        emit_taker_cancelled(e, &t, c->instrument, c->price, ENG_CANCEL_FOK);
    else
        rest_new(e, b, &t, c);
}

/* A MODIFY that keeps both its order's price and its qty changes nothing:
   it is not a modify. */
#define KEEP_BOTH (ENG_CMD_F_KEEP_PRICE | ENG_CMD_F_KEEP_QTY)

/*
 * The open order a CANCEL or MODIFY addresses, checked for shape and
 * ownership, or NULL with the reject code in *err; its place in the order-id
 * index in *pos.
 */
static ENG_ALWAYS_INLINE struct order *target_order(const struct eng *e, const struct eng_cmd *c,
                                                    uint32_t key, uint8_t allowed_flags, int *err,
                                                    ids_pos *pos)
{
    struct order *o = NULL;

    if (c->reserved)
        *err = ENG_BAD_COMMAND;
    else if ((c->flags & ~allowed_flags) || (c->flags & KEEP_BOTH) == KEEP_BOTH)
        *err = ENG_BAD_FLAGS;
    else if (!coid_valid(c->coid))
        *err = ENG_BAD_CLIENT_ORDER_ID;
    else if (c->order_id)
        o = eng__lookup_order(e, key, c->order_id, pos);
    else if (!eng__coid_empty(c->coid) && (o = eng__find_coid(e, c->account, c->coid)) &&
             ENG_NEVER(!eng__lookup_order(e, ids_key(&e->ids, o->id), o->id, pos)))
        o = NULL; /* the two indexes disagree: better unknown than a wild erase */
    if (!o) {
        if (*err == ENG_OK)
            *err = ENG_UNKNOWN_ORDER;
        return NULL;
    }
    if (!(c->flags & ENG_CMD_F_ANY_ACCOUNT) && o->account != c->account) {
        *err = ENG_NOT_OWNER;
        return NULL;
    }
    return o;
}

void eng__cancel(struct eng *e, const struct eng_cmd *c, uint32_t key)
{
    int err = ENG_OK;
    ids_pos pos;
    struct order *o = target_order(e, c, key, ENG_CMD_F_ANY_ACCOUNT, &err, &pos);
    struct level *lv;

    if (!o) {
        eng__reject(e, c, err);
        return;
    }
    lv = pool_at(&e->levels, o->level);
    emit_order_cancelled(e, o, lv, ENG_CANCEL_USER);
    drop_order_at(e, &e->inst[lv->instrument].book, o, pos);
}

void eng__modify(struct eng *e, const struct eng_cmd *c, uint32_t key)
{
    int err = ENG_OK;
    ids_pos pos;
    struct order *o = target_order(e, c, key, ENG_CMD_F_ANY_ACCOUNT | KEEP_BOTH, &err, &pos);
    const struct instrument *in;
    struct level *lv;
    struct book *b;
    int64_t price, qty;
    int side;
    struct taker t;

    if (!o) {
        eng__reject(e, c, err);
        return;
    }
    lv = pool_at(&e->levels, o->level);
    in = &e->inst[lv->instrument];
    b = &e->inst[lv->instrument].book;
    side = lv->side;
    price = (c->flags & ENG_CMD_F_KEEP_PRICE) ? lv->price : c->price;
    qty = (c->flags & ENG_CMD_F_KEEP_QTY) ? o->qty : c->qty;
    err = in->state == ENG_STATE_HALTED ? ENG_HALTED : check_qty(in, qty, true);
    if (!err && !(c->flags & ENG_CMD_F_KEEP_PRICE))
        err = check_price(in, price);
    if (err) {
        eng__reject(e, c, err);
        return;
    }

    if (qty == 0) {
        emit_order_cancelled(e, o, lv, ENG_CANCEL_USER);
        drop_order_at(e, b, o, pos);
        return;
    }
    if (price == lv->price && qty <= o->qty) {
        book_reduce(lv, o, o->qty - qty);
        emit_modified(e, o, lv->instrument, side, price, qty, true);
        note_level(e, lv);
        return;
    }
    /* Past here the modify raises the quantity or moves the price: held to
       the limits as a new order would be (a mere reduction never is). */
    err = ENG_UNLIKELY(has_limits(in)) ? check_limits(in, price, qty) : ENG_OK;
    if (!err && (o->flags & ORDER_F_POST_ONLY) && would_cross(b, side, price))
        err = ENG_POST_ONLY_WOULD_CROSS;
    else if (!err && reserve_match(e, in, side, qty, o->stp) != 0)
        err = ENG_NO_MEMORY;
    if (err) {
        eng__reject(e, c, err);
        return;
    }

    /* Losing priority: out of the book, matched like a new GTC limit order
       with the same id, then back at the end of its (new) level. */
    emit_modified(e, o, b->instrument, side, price, qty, false);
    unlink_order(e, b, o);
    t = (struct taker){.coid = o->coid,
                       .id = o->id,
                       .qty = qty,
                       .limit = price,
                       .account = o->account,
                       .side = side,
                       .stp = o->stp};
    match(e, b, &t);
    if (t.stp_cancelled) {
        emit_taker_cancelled(e, &t, b->instrument, price, ENG_CANCEL_STP);
        forget_order(e, o);
    } else if (t.qty == 0) {
        forget_order(e, o);
    } else {
        o->qty = t.qty;
        rest_order(e, b, o, side, price);
    }
}

/* The checks the commands on one instrument that take no flags share:
   SET_STATE, SET_LIMITS, SET_MMP and RESET_MMP. */
static int check_instrument_command(const struct eng *e, const struct eng_cmd *c)
{
    if (c->reserved)
        return ENG_BAD_COMMAND;
    if (c->flags)
        return ENG_BAD_FLAGS;
    if (c->instrument >= e->ninst)
        return ENG_UNKNOWN_INSTRUMENT;
    return ENG_OK;
}

void eng__set_state(struct eng *e, const struct eng_cmd *c)
{
    int err = check_instrument_command(e, c);

    if (!err && c->qty != ENG_STATE_OPEN && c->qty != ENG_STATE_HALTED)
        err = ENG_BAD_STATE;
    if (err) {
        eng__reject(e, c, err);
        return;
    }
    e->inst[c->instrument].state = (uint8_t)c->qty;
    ev_clear_coid(ev_put(e, ENG_EV_STATE, 0, 0, 0, c->instrument, 0, 0, c->qty, 0, c->account));
}

void eng__set_limits(struct eng *e, const struct eng_cmd *c)
{
    int err = check_instrument_command(e, c);

    if (!err && (c->qty < 0 || c->price < 0))
        err = ENG_BAD_ORDER_LIMITS;
    if (err) {
        eng__reject(e, c, err);
        return;
    }
    e->inst[c->instrument].limits = (struct eng_order_limits){.max_qty = c->qty, .max_notional = c->price};
    ev_clear_coid(ev_put(e, ENG_EV_LIMITS, 0, 0, 0, c->instrument, 0, c->price, c->qty, 0, c->account));
}

/* ---- account-wide commands and market-maker protection -------------------- */

/*
 * Cancel every resting order of `account` on instrument `i` (of every
 * account with `every`), in book order (bids, then asks; best level first;
 * oldest first), with `reason`, walking the book. Returns how many. The
 * caller has reserved an event (two with level events) per resting order of
 * the instrument.
 */
static int64_t cancel_account(struct eng *e, uint32_t i, uint32_t account, bool every, int reason)
{
    struct book *b = &e->inst[i].book;
    int64_t n = 0;

    for (int s = 0; s < 2; s++) {
        struct level *lv = book_best(b, s);
        while (lv) {
            /* Both read before anything goes: a level leaves with its last
               order, and the walk must not look at it after that. */
            struct level *next = book_next_level(lv);
            struct list_node *it = lv->orders.next;
            for (uint32_t left = lv->count; left > 0; left--) {
                struct order *o = eng_container_of(it, struct order, link);
                it = it->next;
                if (every || o->account == account) {
                    emit_order_cancelled(e, o, lv, reason);
                    drop_order(e, b, o);
                    n++;
                }
            }
            lv = next;
        }
    }
    return n;
}

static int cancel_key_cmp(const void *pa, const void *pb)
{
    const struct eng_cancel_key *a = pa, *b = pb;

    if (a->instrument != b->instrument)
        return a->instrument < b->instrument ? -1 : 1;
    if (a->side != b->side)
        return a->side < b->side ? -1 : 1;
    if (a->price != b->price)
        return a->price < b->price ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/*
 * Visit the resting orders of `account` on every instrument in book order:
 * add each to `l`, or only count them when `l` is NULL. Returns how many.
 */
static uint64_t walk_account(struct eng *e, uint32_t account, struct acct_list *l)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < e->ninst; i++)
        for (int s = 0; s < 2; s++)
            for (struct level *lv = book_best(&e->inst[i].book, s); lv; lv = book_next_level(lv))
                for (struct list_node *it = lv->orders.next; it != &lv->orders; it = it->next) {
                    struct order *o = eng_container_of(it, struct order, link);
                    if (o->account != account)
                        continue;
                    if (l)
                        acct_add(&e->accounts, l, o);
                    n++;
                }
    return n;
}

/* Track `account` from now on (acct.h): one walk of the books to count its
   orders, one to add them. -1 when it has too many orders for a list, or out
   of memory (nothing changes then). */
static int track_account(struct eng *e, uint32_t account)
{
    uint64_t n = walk_account(e, account, NULL);
    struct acct_list *l = n <= e->accounts.max_slots ? acct_track(&e->accounts, account, (uint32_t)n) : NULL;

    if (!l)
        return -1;
    walk_account(e, account, l);
    return 0;
}

/*
 * The resting orders of `account` on instruments [first, end) into
 * e->scratch, in the order cancel_account() meets them: from the account's
 * list (acct.h), O(its orders), not the books' (but for the account's first
 * time, which starts its list). Returns how many, or -1 when it has no list
 * (too many orders for one, or out of memory): its orders are the books' then.
 */
static int64_t collect_account(struct eng *e, uint32_t account, uint32_t first, uint32_t end)
{
    const struct acct_list *l = acct_find(&e->accounts, account);
    size_t n = 0;

    if (!l) {
        if (track_account(e, account) != 0)
            return -1;
        l = acct_find(&e->accounts, account);
    }
    if (!l->live)
        return 0;
    if (l->live > e->scratch_cap) {
        struct eng_cancel_key *keys = malloc((size_t)l->live * sizeof(*keys));
        if (!keys)
            return -1;
        free(e->scratch);
        e->scratch = keys;
        e->scratch_cap = l->live;
    }
    for (uint32_t k = 0; k < l->len; k++) {
        const struct order *o;
        const struct level *lv;
        if (!l->slots[k].handle)
            continue;
        o = eng__order_at(e, l->slots[k].handle);
        lv = pool_at(&e->levels, o->level);
        if (lv->instrument < first || lv->instrument >= end)
            continue;
        e->scratch[n++] = (struct eng_cancel_key){.instrument = lv->instrument,
                                                  .side = lv->side,
                                                  .price = lv->side == BOOK_BID ? -lv->price : lv->price,
                                                  .seq = l->slots[k].seq,
                                                  .handle = o->handle};
    }
    qsort(e->scratch, n, sizeof(*e->scratch), cancel_key_cmp);
    return (int64_t)n;
}

static inline uint64_t resting_orders(const struct instrument *in)
{
    return in->book.side[0].norders + in->book.side[1].norders;
}

void eng__cancel_all(struct eng *e, const struct eng_cmd *c)
{
    const uint8_t allowed = ENG_CMD_F_DEAD_MAN | ENG_CMD_F_ALL_INSTRUMENTS | ENG_CMD_F_ALL_ACCOUNTS;
    bool all = c->flags & ENG_CMD_F_ALL_INSTRUMENTS;
    bool every = c->flags & ENG_CMD_F_ALL_ACCOUNTS;
    int reason = (c->flags & ENG_CMD_F_DEAD_MAN) ? ENG_CANCEL_DEAD_MAN : ENG_CANCEL_USER;
    uint32_t first = 0, end = e->ninst;
    uint64_t most = 0;
    int64_t n = 0;
    int err = ENG_OK;
    bool listed = false;

    if (c->reserved)
        err = ENG_BAD_COMMAND;
    else if ((c->flags & ~allowed) || (every && (c->flags & ENG_CMD_F_DEAD_MAN)))
        err = ENG_BAD_FLAGS; /* the dead-man switch is one account's */
    else if (every && c->account)
        err = ENG_BAD_COMMAND;
    else if (!all && c->instrument >= e->ninst)
        err = ENG_UNKNOWN_INSTRUMENT;
    if (!err && !all) {
        first = c->instrument;
        end = first + 1;
    }
    if (!err && !every) {
        /* One account's orders: its list, not the books (but when it has none). */
        int64_t found = collect_account(e, c->account, first, end);
        listed = found >= 0;
        most = listed ? (uint64_t)found : 0;
    }
    for (uint32_t i = first; !err && !listed && i < end; i++)
        most += resting_orders(&e->inst[i]);
    if (!err && eng__reserve_events(e, most * (e->level_events ? 2 : 1) + 1) != 0)
        err = ENG_NO_MEMORY;
    if (err) {
        eng__reject(e, c, err);
        return;
    }
    for (uint32_t i = first; !listed && i < end; i++)
        n += cancel_account(e, i, c->account, every, reason);
    for (uint64_t k = 0; listed && k < most; k++) {
        struct order *o = eng__order_at(e, e->scratch[k].handle);
        struct level *lv = pool_at(&e->levels, o->level);
        emit_order_cancelled(e, o, lv, reason);
        drop_order(e, &e->inst[lv->instrument].book, o);
        n++;
    }
    ev_clear_coid(ev_put(e, ENG_EV_MASS_CANCELLED, 0, (uint8_t)reason,
                         (all ? ENG_EV_F_ALL_INSTRUMENTS : 0) | (every ? ENG_EV_F_ALL_ACCOUNTS : 0),
                         all ? 0 : c->instrument, 0, 0, n, 0, c->account));
}

/* An account's protection on an instrument as it is now (`en` NULL: none). */
static void emit_mmp(struct eng *e, uint32_t account, uint32_t instrument,
                     const struct mmp_entry *en)
{
    bool on = en && en->limit > 0;
    ev_clear_coid(ev_put(e, ENG_EV_MMP, 0, 0, on && en->tripped ? ENG_EV_F_TRIPPED : 0,
                         instrument, 0, on ? en->window : 0, on ? en->limit : 0,
                         on ? en->filled : 0, account));
}

/* Lift a trip and close the window. */
static void mmp_clear(struct eng *e, struct mmp_entry *en)
{
    if (en->tripped)
        e->mmp.tripped--;
    en->tripped = 0;
    en->filled = 0;
    en->start = 0;
}

void eng__set_mmp(struct eng *e, const struct eng_cmd *c)
{
    int err = check_instrument_command(e, c);
    struct mmp_entry *en = NULL;
    struct instrument *in;

    if (!err && (c->qty < 0 || c->price < 0))
        err = ENG_BAD_MMP;
    if (!err && c->qty > 0 && !(en = mmp_get(&e->mmp, c->account, c->instrument)))
        err = ENG_NO_MEMORY;
    if (err) {
        eng__reject(e, c, err);
        return;
    }
    if (!en)
        en = mmp_find(&e->mmp, c->account, c->instrument);
    if (en) {
        in = &e->inst[c->instrument];
        if (en->limit > 0) {
            e->mmp.active--;
            in->mmp_active--;
        }
        mmp_clear(e, en);
        en->limit = c->qty;
        en->window = c->qty > 0 ? c->price : 0;
        if (en->limit > 0) {
            e->mmp.active++;
            in->mmp_active++;
        }
    }
    emit_mmp(e, c->account, c->instrument, en);
}

void eng__reset_mmp(struct eng *e, const struct eng_cmd *c)
{
    int err = check_instrument_command(e, c);
    struct mmp_entry *en;

    if (err) {
        eng__reject(e, c, err);
        return;
    }
    en = mmp_find(&e->mmp, c->account, c->instrument);
    if (en && en->limit > 0)
        mmp_clear(e, en);
    emit_mmp(e, c->account, c->instrument, en);
}

void eng__mmp_trip(struct eng *e)
{
    struct mmp_entry *en;

    while ((en = mmp_next_trip(&e->mmp))) {
        en->tripped = 1;
        e->mmp.tripped++;
        cancel_account(e, en->instrument, en->account, false, ENG_CANCEL_MMP);
        emit_mmp(e, en->account, en->instrument, en);
    }
}

/* ---- snapshots -------------------------------------------------------------- */

int eng__restore_order(struct eng *e, uint32_t instrument, uint8_t side, int64_t price,
                       int64_t qty, uint64_t id, uint32_t account, uint8_t stp, uint8_t flags,
                       const char coid[16])
{
    bool has_coid = !eng__coid_empty(coid);
    int s = side == ENG_BUY ? BOOK_BID : BOOK_ASK;
    struct acct_list *al;
    struct book *b;
    struct level *lv;
    struct order *o;
    uint32_t handle;

    if (instrument >= e->ninst || (side != ENG_BUY && side != ENG_SELL) || qty <= 0 ||
        price <= 0 || stp > ENG_STP_CANCEL_BOTH || (flags & ~ORDER_F_POST_ONLY) ||
        !coid_valid(coid) || eng__find_order(e, id) ||
        (has_coid && eng__find_coid(e, account, coid)))
        return ENG_CORRUPT;
    /* Nothing rests off its lot or tick or outside its band: the spec is the
       snapshot's own, and trades and modifies keep to it. */
    if (check_qty(&e->inst[instrument], qty, false) != ENG_OK || check_price(&e->inst[instrument], price) != ENG_OK)
        return ENG_CORRUPT;
    b = &e->inst[instrument].book;
    if (would_cross(b, s, price))
        return ENG_CORRUPT;
    if (ids_reserve_one(&e->ids) != 0 ||
        (has_coid && idx_reserve_one(&e->coids, &eng__coid_ops, e) != 0))
        return ENG_NO_MEMORY;
    o = acct_room(&e->accounts, &e->orders, account, &al) == 0 ? pool_alloc(&e->orders, &handle) : NULL;
    if (!o)
        return ENG_NO_MEMORY;
    lv = book_level_get(b, s, price);
    if (!lv || lv->total_qty > INT64_MAX - qty) {
        /* Only an existing level can be full; a new one gets this order. */
        pool_free(&e->orders, o, handle);
        return lv ? ENG_CORRUPT : ENG_NO_MEMORY;
    }
    o->id = id;
    o->qty = qty;
    o->handle = handle;
    o->account = account;
    o->stp = stp;
    o->flags = flags;
    o->acct_slot = ACCT_NONE;
    memcpy(o->coid, coid, ENG_COID_LEN);
    ids_insert(&e->ids, id, handle);
    if (has_coid)
        idx_insert(&e->coids, eng__hash_coid(e, account, coid), handle);
    book_append(b, lv, o);
    acct_add(&e->accounts, al, o);
    return ENG_OK;
}
