/*
 * book.h - one instrument's order book: two sides of price levels, each level
 * a FIFO of resting orders.
 *
 * The book owns the placement of orders in levels and the levels in the
 * trees; it does not own the orders' memory or the engine's indexes (the
 * engine allocates an order, hands it to book_append(), and frees it after
 * book_unlink()). Levels are the book's: created on first append, freed when
 * their last order leaves.
 *
 * Levels are reachable two ways: in price order through one red-black tree
 * per side (for the best level, the next level, depth), and by price through
 * a small hash index (for an add at a price that already has a level, the
 * common case, which then costs one probe instead of a tree descent).
 */
#ifndef ENG_BOOK_H
#define ENG_BOOK_H

#include <stdbool.h>
#include <stdint.h>

#include "idx.h"
#include "list.h"
#include "pool.h"
#include "rbtree.h"

enum { BOOK_BID = 0, BOOK_ASK = 1 };

enum order_flags { ORDER_F_POST_ONLY = 1 };

/* A resting order: exactly one cache line. */
struct order {
    struct list_node link; /* position in its level, oldest at the head */
    uint64_t id;
    int64_t qty;           /* open quantity, > 0 while resting */
    uint32_t handle;       /* its own handle in the order pool */
    uint32_t level;        /* handle of its level in the level pool */
    uint32_t account;
    uint32_t stp : 3;      /* enum eng_stp, used when a modify makes it a taker */
    uint32_t flags : 5;    /* enum order_flags */
    uint32_t acct_slot : 24; /* its slot in its account's list (acct.h) */
    char coid[16];
};

_Static_assert(sizeof(struct order) == 64, "an order is one cache line");

struct level {
    struct rb_node node;   /* in book->side[side].levels */
    struct list_node orders;
    int64_t price;
    int64_t total_qty;     /* sum of the open qty of its orders */
    uint32_t count;        /* number of orders */
    uint32_t handle;       /* its own handle in the level pool */
    uint32_t instrument;   /* the book it belongs to */
    uint8_t side;          /* BOOK_BID or BOOK_ASK */
};

struct book_side {
    /* Levels ordered best first: bids by descending, asks by ascending price;
       the cached leftmost is the best level. */
    struct rb_root_cached levels;
    uint32_t nlevels;
    uint64_t norders;
};

struct book {
    struct book_side side[2];
    struct idx by_price;   /* (side, price) -> level handle, both sides */
    struct pool *level_pool;
    uint32_t instrument;
    uint64_t hash_seed;    /* keys by_price's hash: clients cannot aim prices at one home */
};

/* Returns 0, or -1 when out of memory (nothing to destroy then). */
int book_init(struct book *b, struct pool *level_pool, uint32_t instrument, uint64_t hash_seed);
/* Free every order (through `order_pool`) and level, and the book's own
   memory. Can't fail. */
void book_destroy(struct book *b, struct pool *order_pool);

static inline struct level *book_level_of_node(struct rb_node *n)
{
    return n ? eng_container_of(n, struct level, node) : NULL;
}

/* The best level of side `s`, or NULL if the side is empty. */
static inline struct level *book_best(const struct book *b, int s)
{
    return book_level_of_node(rb_first_cached(&b->side[s].levels));
}

/* The level after `lv` on its side (the next worse price), or NULL. */
static inline struct level *book_next_level(const struct level *lv)
{
    return book_level_of_node(rb_next(&lv->node));
}

static inline struct level *book_order_level(const struct book *b, const struct order *o)
{
    return pool_at(b->level_pool, o->level);
}

static inline struct order *book_level_head(const struct level *lv)
{
    return eng_container_of(lv->orders.next, struct order, link);
}

/* Is `price` at least as good as `than` for side `s` (>= for bids)? */
static inline bool book_at_least(int s, int64_t price, int64_t than)
{
    return s == BOOK_BID ? price >= than : price <= than;
}

/*
 * The level of side `s` at `price`, created (empty) if there is none.
 * Returns NULL only when a new level is needed and the pool is exhausted.
 * An empty level must receive an order before the next book call.
 */
struct level *book_level_get(struct book *b, int s, int64_t price);

/* Append `o` (qty > 0) at the back of `lv`. Can't fail. */
void book_append(struct book *b, struct level *lv, struct order *o);

/* Take `o` out of its level; frees the level if it becomes empty. The order's
   memory stays with the caller. Can't fail. */
void book_unlink(struct book *b, struct order *o);

/* Reduce the open qty of `o`, in level `lv`, by `q` (0 < q <= o->qty) without
   moving it. The caller unlinks it if it reaches 0. Can't fail. */
static inline void book_reduce(struct level *lv, struct order *o, int64_t q)
{
    o->qty -= q;
    lv->total_qty -= q;
}

/*
 * Check every invariant of the book: trees valid and strictly ordered, no
 * empty level, each level's total and count equal to its orders, every order's
 * level handle naming its level, qty > 0, cached best correct, best bid < best
 * ask, per-side counts right. `order_ok(ctx, o)` lets the caller check an
 * order against its indexes (may be NULL). Returns true, or false with a
 * static description in *why.
 */
bool book_verify(const struct book *b, bool (*order_ok)(const void *ctx, const struct order *o),
                 const void *ctx, const char **why);

/*
 * Check one level as book_verify does, and that its neighbours in the tree
 * are strictly better and worse. O(its orders + log levels).
 */
bool book_verify_level(const struct book *b, const struct level *lv,
                       bool (*order_ok)(const void *ctx, const struct order *o), const void *ctx,
                       const char **why);

/*
 * Check the top of the book: each side's cached best level, its counts
 * against an empty or non-empty tree, the best levels (book_verify_level),
 * the price index's count and that the book is not crossed. O(the best
 * levels' orders + log levels).
 */
bool book_verify_top(const struct book *b, bool (*order_ok)(const void *ctx, const struct order *o),
                     const void *ctx, const char **why);

#endif /* ENG_BOOK_H */
