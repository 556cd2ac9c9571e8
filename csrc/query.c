/*
 * query.c - read-only views of the engine (book depth, open orders, stats)
 * and the checks: eng_verify(), which checks every invariant of every
 * structure, and eng__verify_events(), which checks what one command changed.
 *
 * Nothing here changes state, so these may be called between any two
 * commands. eng_verify() is O(open orders) plus the index sizes: meant for
 * tests and debug builds, not for the hot path. eng__verify_events() runs
 * after every command in builds with ENG_DEBUG >= 3 (eng_process).
 */
#include <stdio.h>

#include "engine_int.h"

static void order_info(const struct eng *e, const struct order *o, struct eng_order_info *out)
{
    const struct level *lv = pool_at(&e->levels, o->level);

    *out = (struct eng_order_info){.order_id = o->id,
                                   .price = lv->price,
                                   .qty = o->qty,
                                   .instrument = lv->instrument,
                                   .account = o->account,
                                   .side = lv->side == BOOK_BID ? ENG_BUY : ENG_SELL,
                                   .stp = o->stp,
                                   .post_only = (o->flags & ORDER_F_POST_ONLY) != 0};
    memcpy(out->coid, o->coid, ENG_COID_LEN);
}

static const struct book *book_side_of(const struct eng *e, uint32_t instrument, uint8_t side,
                                       int *s)
{
    if (instrument >= e->ninst || (side != ENG_BUY && side != ENG_SELL))
        return NULL;
    *s = side == ENG_BUY ? BOOK_BID : BOOK_ASK;
    return &e->inst[instrument].book;
}

int64_t eng_book_levels(const struct eng *e, uint32_t instrument, uint8_t side,
                        struct eng_level_info *out, size_t max)
{
    int s;
    const struct book *b = book_side_of(e, instrument, side, &s);
    size_t n = 0;

    if (!b)
        return -1;
    for (const struct level *lv = book_best(b, s); lv && n < max; lv = book_next_level(lv))
        out[n++] = (struct eng_level_info){lv->price, lv->total_qty, lv->count, 0};
    return (int64_t)n;
}

int eng_get_order(const struct eng *e, uint64_t order_id, struct eng_order_info *out)
{
    const struct order *o = eng__find_order(e, order_id);
    if (!o)
        return 0;
    order_info(e, o, out);
    return 1;
}

int eng_get_order_by_coid(const struct eng *e, uint32_t account, const char *coid,
                          struct eng_order_info *out)
{
    const struct order *o;

    if (!coid || eng__coid_empty(coid))
        return 0;
    o = eng__find_coid(e, account, coid);
    if (!o)
        return 0;
    order_info(e, o, out);
    return 1;
}

int64_t eng_book_orders(const struct eng *e, uint32_t instrument, uint8_t side, size_t skip,
                        struct eng_order_info *out, size_t max)
{
    int s;
    const struct book *b = book_side_of(e, instrument, side, &s);
    size_t n = 0;

    if (!b)
        return -1;
    for (const struct level *lv = book_best(b, s); lv && n < max; lv = book_next_level(lv)) {
        if (skip >= lv->count) {
            skip -= lv->count; /* whole level skipped without walking it */
            continue;
        }
        for (const struct list_node *it = lv->orders.next; it != &lv->orders && n < max;
             it = it->next) {
            if (skip) {
                skip--;
                continue;
            }
            order_info(e, eng_container_of(it, struct order, link), &out[n++]);
        }
    }
    return (int64_t)n;
}

void eng_get_stats(const struct eng *e, struct eng_stats *out)
{
    uint64_t levels = 0;

    for (uint32_t i = 0; i < e->ninst; i++)
        levels += e->inst[i].book.side[0].nlevels + e->inst[i].book.side[1].nlevels;
    *out = e->stats;
    out->open_orders = e->ids.count;
    out->levels = levels;
    out->bytes_per_order_node = e->orders.node_size;
    out->index_bytes = ids_bytes(&e->ids) + idx_bytes(&e->coids) + acct_bytes(&e->accounts);
    out->bytes_reserved = e->arena.bytes_reserved + out->index_bytes + e->ev_cap * sizeof(*e->ev) +
                          e->scratch_cap * sizeof(*e->scratch) +
                          e->cap_inst * sizeof(*e->inst) + sizeof(*e);
}

/* ---- verify --------------------------------------------------------------- */

struct verify_ctx {
    const struct eng *e;
    uint64_t with_coid;
    uint64_t tracked; /* orders in their account's list */
};

/* An order in a book must be found through both indexes, as itself, and
   in its account's list. */
static bool order_indexed(const void *ctx, const struct order *o)
{
    struct verify_ctx *v = (struct verify_ctx *)ctx;
    const struct eng *e = v->e;

    if (eng__order_at(e, o->handle) != o || eng__find_order(e, o->id) != o)
        return false;
    /* In its account's list if, and only if, the account is tracked. */
    if (o->acct_slot == ACCT_NONE ? acct_find(&e->accounts, o->account) != NULL
                                  : !acct_holds(&e->accounts, o))
        return false;
    v->tracked += o->acct_slot != ACCT_NONE;
    if (eng__coid_empty(o->coid))
        return true;
    v->with_coid++;
    return eng__find_coid(e, o->account, o->coid) == o;
}

static int fail(char *why, size_t why_len, const char *reason)
{
    if (why && why_len) {
        snprintf(why, why_len, "%s", reason);
    }
    return ENG_CORRUPT;
}

bool eng__account_rests_on(const struct book *b, uint32_t account)
{
    for (int s = 0; s < 2; s++)
        for (const struct level *lv = book_best(b, s); lv; lv = book_next_level(lv))
            for (const struct list_node *it = lv->orders.next; it != &lv->orders; it = it->next)
                if (eng_container_of(it, struct order, link)->account == account)
                    return true;
    return false;
}

/* Market-maker protection against the instruments and the books: the active
   counts per instrument add up, and a tripped account rests nothing there. */
static bool mmp_consistent(const struct eng *e, const char **why)
{
    uint64_t active = 0;

    if (!mmp_verify(&e->mmp, why))
        return false;
    for (uint32_t i = 0; i < e->ninst; i++)
        active += e->inst[i].mmp_active;
    for (uint32_t i = 0; e->mmp.slots && i <= e->mmp.mask; i++) {
        const struct mmp_entry *en = &e->mmp.slots[i];
        if (!en->used)
            continue;
        if (en->instrument >= e->ninst) {
            *why = "mmp: an entry names no instrument";
            return false;
        }
        if (en->tripped && eng__account_rests_on(&e->inst[en->instrument].book, en->account)) {
            *why = "mmp: a tripped account still has resting orders";
            return false;
        }
    }
    if (active != e->mmp.active) {
        *why = "mmp: the instruments' active counts do not add up";
        return false;
    }
    return true;
}

int eng_get_mmp(const struct eng *e, uint32_t account, uint32_t instrument,
                struct eng_mmp_info *out)
{
    const struct mmp_entry *en = mmp_find(&e->mmp, account, instrument);

    if (!en || en->limit == 0)
        return 0;
    memset(out, 0, sizeof(*out));
    out->qty_limit = en->limit;
    out->window = en->window;
    out->filled = en->filled;
    out->window_start = en->start;
    out->tripped = en->tripped;
    return 1;
}

int eng_verify(const struct eng *e, char *why, size_t why_len)
{
    struct verify_ctx v = {e, 0, 0};
    const char *reason = NULL;
    uint64_t orders = 0, levels = 0;

    for (uint32_t i = 0; i < e->ninst; i++) {
        const struct book *b = &e->inst[i].book;
        if (b->instrument != i)
            return fail(why, why_len, "engine: book numbered wrongly");
        if (e->inst[i].state > ENG_STATE_HALTED)
            return fail(why, why_len, "engine: unknown trading state");
        if (!book_verify(b, order_indexed, &v, &reason))
            return fail(why, why_len, reason);
        orders += b->side[0].norders + b->side[1].norders;
        levels += b->side[0].nlevels + b->side[1].nlevels;
    }
    /* Both ways: every indexed order was met in a book exactly once. */
    if (orders != e->ids.count || v.with_coid != e->coids.count || v.tracked != e->accounts.live)
        return fail(why, why_len, "engine: index counts do not match the books");
    if (orders != e->orders.in_use || levels != e->levels.in_use)
        return fail(why, why_len, "engine: pool use does not match the books");
    if (!ids_verify(&e->ids, &reason) ||
        !idx_verify(&e->coids, &eng__coid_ops, e, &reason) ||
        !pool_verify(&e->orders, &reason) || !pool_verify(&e->levels, &reason) ||
        !acct_verify(&e->accounts, &e->orders, &reason))
        return fail(why, why_len, reason);
    if (!mmp_consistent(e, &reason))
        return fail(why, why_len, reason);
    if (e->ev_len > e->ev_cap)
        return fail(why, why_len, "engine: event buffer overrun");
    if (why && why_len)
        why[0] = '\0';
    return ENG_OK;
}

/*
 * What one command may have changed, found through its events: every order
 * they name (open: both indexes find it and its level checks out; gone: the
 * client-order-id index does not find it either), the top of every book they
 * name, and the counts that tie the books to the indexes and pools. O(the
 * orders of the levels touched + instruments), unlike eng_verify's walk of
 * everything.
 */
struct touched {
    struct verify_ctx v;
    uint32_t last_level;      /* checked already: events come in runs */
    uint32_t last_instrument;
};

static bool order_touched(struct touched *t, uint64_t id, const struct eng_event *ev,
                          const char **why)
{
    const struct eng *e = t->v.e;
    const struct order *o = eng__find_order(e, id);
    const struct level *lv;

    if (!o) {
        /* The event's coid is the order's own for every type but TRADE. */
        const struct order *by_coid = NULL;
        if (ev->type != ENG_EV_TRADE && !eng__coid_empty(ev->coid))
            by_coid = eng__find_coid(e, ev->account, ev->coid);
        if (by_coid && by_coid->id == id) {
            *why = "engine: a finished order is still indexed by client order id";
            return false;
        }
        return true;
    }
    if (!order_indexed(&t->v, o)) {
        *why = "engine: order disagrees with the indexes";
        return false;
    }
    /* All checks see the state after the command: a handle names one level. */
    if (o->level == t->last_level)
        return true;
    lv = pool_at(&e->levels, o->level);
    if (lv->instrument >= e->ninst) {
        *why = "engine: level of an unknown instrument";
        return false;
    }
    if (!book_verify_level(&e->inst[lv->instrument].book, lv, order_indexed, &t->v, why))
        return false;
    t->last_level = o->level;
    return true;
}

int eng__verify_events(const struct eng *e, const struct eng_event *ev, size_t n, char *why,
                       size_t why_len)
{
    struct touched t = {{e, 0, 0}, 0, UINT32_MAX};
    const char *reason = NULL;
    uint64_t orders = 0, levels = 0;

    for (size_t i = 0; i < n; i++) {
        if ((ev[i].order_id && !order_touched(&t, ev[i].order_id, &ev[i], &reason)) ||
            (ev[i].type == ENG_EV_TRADE && !order_touched(&t, ev[i].maker_order_id, &ev[i], &reason)))
            return fail(why, why_len, reason);
        if (ev[i].type == ENG_EV_MMP && (ev[i].flags & ENG_EV_F_TRIPPED) &&
            ev[i].instrument < e->ninst &&
            eng__account_rests_on(&e->inst[ev[i].instrument].book, ev[i].account))
            return fail(why, why_len, "mmp: a tripped account still has resting orders");
        if (ev[i].type == ENG_EV_REJECTED || ev[i].instrument >= e->ninst ||
            ev[i].instrument == t.last_instrument)
            continue;
        t.last_instrument = ev[i].instrument;
        if (!book_verify_top(&e->inst[ev[i].instrument].book, order_indexed, &t.v, &reason))
            return fail(why, why_len, reason);
    }
    for (uint32_t i = 0; i < e->ninst; i++) {
        const struct book *b = &e->inst[i].book;
        orders += b->side[0].norders + b->side[1].norders;
        levels += b->side[0].nlevels + b->side[1].nlevels;
    }
    if (orders != e->ids.count || e->coids.count > orders || e->accounts.live > orders)
        return fail(why, why_len, "engine: index counts do not match the books");
    if (orders != e->orders.in_use || levels != e->levels.in_use)
        return fail(why, why_len, "engine: pool use does not match the books");
    if (e->ev_len > e->ev_cap)
        return fail(why, why_len, "engine: event buffer overrun");
    if (why && why_len)
        why[0] = '\0';
    return ENG_OK;
}
