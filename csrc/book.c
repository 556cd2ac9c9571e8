/*
 * book.c - price levels in red-black trees, orders in FIFO lists.
 *
 * Invariants (checked by book_verify):
 *   - each side's tree is a valid red-black tree whose in-order sequence is
 *     strictly best-to-worst (bids descending, asks ascending) with no two
 *     levels at one price, and whose cached leftmost is its first level;
 *   - every level holds at least one order; its total_qty and count equal the
 *     sum of its orders' qty and their number; every order has qty > 0 and
 *     names its level by handle;
 *   - side counters (levels, orders) match;
 *   - the book is not crossed: best bid < best ask;
 *   - the price index (by_price) holds exactly the levels of both trees, each
 *     under its own side and price.
 *
 * An add at a price that has a level finds it in O(1): the cached leftmost
 * at the best price, else one probe of by_price. Only a new level descends
 * the tree, and not a new best one, which hangs off the leftmost node.
 */
#include "book.h"

#include "common.h"

/* Seeded: clients choose prices, and with a hash they could compute, prices
   sharing a home would make one long probe that every level of the book
   walks (65,536 levels in one eighth of the table took 46.6 µs an add). */
static inline uint64_t price_hash(const struct book *b, int s, int64_t price)
{
    return eng_mix64(((uint64_t)price * 2 + (uint64_t)s) ^ b->hash_seed);
}

static uint64_t level_hash_of(const void *ctx, uint32_t handle)
{
    const struct book *b = ctx;
    const struct level *lv = pool_at(b->level_pool, handle);
    return price_hash(b, lv->side, lv->price);
}

static const struct idx_ops level_ops = {level_hash_of};

struct price_key {
    int side;
    int64_t price;
};

static bool level_match(const void *ctx, uint32_t handle, const void *key)
{
    const struct level *lv = pool_at(((const struct book *)ctx)->level_pool, handle);
    const struct price_key *k = key;
    return lv->price == k->price && lv->side == k->side;
}

int book_init(struct book *b, struct pool *level_pool, uint32_t instrument, uint64_t hash_seed)
{
    for (int s = 0; s < 2; s++) {
        b->side[s].levels = RB_ROOT_CACHED;
        b->side[s].nlevels = 0;
        b->side[s].norders = 0;
    }
    b->level_pool = level_pool;
    b->instrument = instrument;
    b->hash_seed = hash_seed;
    return idx_init(&b->by_price, 64);
}

/* Does `a` come strictly before `b` on side `s`? Caller guarantees a != b;
   branch-free, so the tree descent does not mispredict on every step. */
static inline bool better(int s, int64_t a, int64_t b)
{
    return (a > b) ^ (s == BOOK_ASK);
}

/* better() for prices that may be equal: for checks, not the descent. */
static bool strictly_better(int s, int64_t a, int64_t b)
{
    return s == BOOK_BID ? a > b : a < b;
}

struct level *book_level_get(struct book *b, int s, int64_t price)
{
    struct book_side *side = &b->side[s];
    struct rb_node **link = &side->levels.rb_root.rb_node;
    struct rb_node *parent = NULL;
    struct level *lv, *best = book_best(b, s);
    struct price_key key = {s, price};
    bool leftmost = true;
    uint32_t handle;
    int64_t pos;

    if (best && best->price == price)
        return best;
    pos = idx_find(&b->by_price, price_hash(b, s, price), level_match, b, &key);
    if (pos >= 0)
        return pool_at(b->level_pool, b->by_price.slots[pos]);
    if (idx_reserve_one(&b->by_price, &level_ops, b) != 0)
        return NULL;
    if (best) {
        if (better(s, price, best->price)) {
            /* A new best level hangs off the leftmost node, which has no left
               child: no descent. */
            parent = &best->node;
            link = &parent->rb_left;
            goto insert;
        }
    }
    /* No level has this price (the index said so): descend to the leaf. */
    while (*link) {
        bool left;
        parent = *link;
        lv = book_level_of_node(parent);
        left = better(s, price, lv->price);
        leftmost &= left;
        link = left ? &parent->rb_left : &parent->rb_right;
    }
insert:
    lv = pool_alloc(b->level_pool, &handle);
    if (!lv)
        return NULL;
    list_init(&lv->orders);
    lv->price = price;
    lv->total_qty = 0;
    lv->count = 0;
    lv->handle = handle;
    lv->instrument = b->instrument;
    lv->side = (uint8_t)s;
    rb_link_node(&lv->node, parent, link);
    rb_insert_color_cached(&lv->node, &side->levels, leftmost);
    idx_insert(&b->by_price, price_hash(b, s, price), handle);
    side->nlevels++;
    return lv;
}

void book_append(struct book *b, struct level *lv, struct order *o)
{
    ENG_ASSERT(o->qty > 0);
    list_add_tail(&o->link, &lv->orders);
    o->level = lv->handle;
    lv->total_qty += o->qty;
    lv->count++;
    b->side[lv->side].norders++;
}

void book_unlink(struct book *b, struct order *o)
{
    struct level *lv = book_order_level(b, o);
    struct book_side *side = &b->side[lv->side];

    list_del(&o->link);
    lv->total_qty -= o->qty;
    lv->count--;
    side->norders--;
    if (lv->count == 0) {
        ENG_ASSERT_INTERNAL(list_empty(&lv->orders) && lv->total_qty == 0);
        rb_erase_cached(&lv->node, &side->levels);
        idx_erase_at(&b->by_price,
                     idx_slot_of(&b->by_price, price_hash(b, lv->side, lv->price), lv->handle),
                     &level_ops, b);
        side->nlevels--;
        pool_free(b->level_pool, lv, lv->handle);
    }
}

static bool bid_less(const struct rb_node *a, const struct rb_node *b)
{
    return book_level_of_node((struct rb_node *)a)->price >
           book_level_of_node((struct rb_node *)b)->price;
}

static bool ask_less(const struct rb_node *a, const struct rb_node *b)
{
    return book_level_of_node((struct rb_node *)a)->price <
           book_level_of_node((struct rb_node *)b)->price;
}

static bool verify_level(const struct book *b, const struct level *lv, int s,
                         bool (*order_ok)(const void *, const struct order *), const void *ctx,
                         uint64_t *norders, const char **why)
{
    int64_t total = 0;
    uint32_t count = 0;

    if (lv->side != s || lv->instrument != b->instrument) {
        *why = "book: level is on the wrong side or book";
        return false;
    }
    if (pool_at(b->level_pool, lv->handle) != lv) {
        *why = "book: level handle does not map back to it";
        return false;
    }
    if (list_empty(&lv->orders)) {
        *why = "book: empty level in the tree";
        return false;
    }
    {
        struct price_key key = {s, lv->price};
        int64_t pos = idx_find(&b->by_price, price_hash(b, s, lv->price), level_match, b, &key);
        if (pos < 0 || b->by_price.slots[pos] != lv->handle) {
            *why = "book: level not found by its price";
            return false;
        }
    }
    for (const struct list_node *it = lv->orders.next; it != &lv->orders; it = it->next) {
        const struct order *o = eng_container_of(it, struct order, link);
        if (it->next->prev != it) {
            *why = "book: broken order list links";
            return false;
        }
        if (o->qty <= 0) {
            *why = "book: resting order with qty <= 0";
            return false;
        }
        if (o->level != lv->handle) {
            *why = "book: order does not name its level";
            return false;
        }
        if (total > INT64_MAX - o->qty) {
            *why = "book: level total overflows";
            return false;
        }
        if (order_ok && !order_ok(ctx, o)) {
            *why = "book: order disagrees with the indexes";
            return false;
        }
        total += o->qty;
        count++;
    }
    if (total != lv->total_qty || count != lv->count) {
        *why = "book: level total or count does not match its orders";
        return false;
    }
    *norders += count;
    return true;
}

bool book_verify_level(const struct book *b, const struct level *lv,
                       bool (*order_ok)(const void *ctx, const struct order *o), const void *ctx,
                       const char **why)
{
    const struct level *prev, *next;
    uint64_t norders = 0;

    if (lv->side > BOOK_ASK) {
        *why = "book: level has no side";
        return false;
    }
    if (!verify_level(b, lv, lv->side, order_ok, ctx, &norders, why))
        return false;
    prev = book_level_of_node(rb_prev(&lv->node));
    next = book_next_level(lv);
    if ((prev && !strictly_better(lv->side, prev->price, lv->price)) ||
        (next && !strictly_better(lv->side, lv->price, next->price))) {
        *why = "book: level out of price order with its neighbours";
        return false;
    }
    return true;
}

bool book_verify_top(const struct book *b, bool (*order_ok)(const void *ctx, const struct order *o),
                     const void *ctx, const char **why)
{
    const struct level *best[2];

    for (int s = 0; s < 2; s++) {
        const struct book_side *side = &b->side[s];
        if (side->levels.rb_leftmost != rb_first(&side->levels.rb_root)) {
            *why = "book: cached best level is not the first";
            return false;
        }
        best[s] = book_best(b, s);
        if (!best[s] != (side->nlevels == 0) || !best[s] != (side->norders == 0)) {
            *why = "book: side counts do not match an empty or non-empty tree";
            return false;
        }
        if (best[s] && !book_verify_level(b, best[s], order_ok, ctx, why))
            return false;
    }
    if (b->by_price.count != b->side[0].nlevels + b->side[1].nlevels) {
        *why = "book: price index holds levels that are not in the trees";
        return false;
    }
    if (best[BOOK_BID] && best[BOOK_ASK] && best[BOOK_BID]->price >= best[BOOK_ASK]->price) {
        *why = "book: crossed (best bid >= best ask)";
        return false;
    }
    return true;
}

bool book_verify(const struct book *b, bool (*order_ok)(const void *ctx, const struct order *o),
                 const void *ctx, const char **why)
{
    for (int s = 0; s < 2; s++) {
        const struct book_side *side = &b->side[s];
        uint64_t norders = 0;
        size_t nlevels;

        if (!rb_verify(&side->levels.rb_root, s == BOOK_BID ? bid_less : ask_less, &nlevels,
                       why))
            return false;
        if (side->levels.rb_leftmost != rb_first(&side->levels.rb_root)) {
            *why = "book: cached best level is not the first";
            return false;
        }
        if (nlevels != side->nlevels) {
            *why = "book: level count does not match the tree";
            return false;
        }
        for (const struct level *lv = book_best(b, s); lv; lv = book_next_level(lv))
            if (!verify_level(b, lv, s, order_ok, ctx, &norders, why))
                return false;
        if (norders != side->norders) {
            *why = "book: order count does not match the levels";
            return false;
        }
    }
    if (b->by_price.count != b->side[0].nlevels + b->side[1].nlevels) {
        *why = "book: price index holds levels that are not in the trees";
        return false;
    }
    if (!idx_verify(&b->by_price, &level_ops, b, why))
        return false;
    {
        const struct level *bid = book_best(b, BOOK_BID), *ask = book_best(b, BOOK_ASK);
        if (bid && ask && bid->price >= ask->price) {
            *why = "book: crossed (best bid >= best ask)";
            return false;
        }
    }
    return true;
}

void book_destroy(struct book *b, struct pool *order_pool)
{
    for (int s = 0; s < 2; s++) {
        struct level *lv;
        while ((lv = book_best(b, s)) != NULL) {
            while (!list_empty(&lv->orders)) {
                struct order *o = book_level_head(lv);
                list_del(&o->link);
                pool_free(order_pool, o, o->handle);
            }
            rb_erase_cached(&lv->node, &b->side[s].levels);
            pool_free(b->level_pool, lv, lv->handle);
        }
        b->side[s].nlevels = 0;
        b->side[s].norders = 0;
    }
    idx_destroy(&b->by_price);
}
