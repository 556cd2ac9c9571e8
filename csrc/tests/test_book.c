#include "book.h"
#include "test.h"

struct fixture {
    struct arena arena;
    struct pool orders;
    struct pool levels;
    struct book book;
    uint64_t next_id;
};

static void setup(struct fixture *f)
{
    arena_init(&f->arena, NULL, 0, 1 << 20);
    ASSERT_EQ(pool_init(&f->orders, &f->arena, sizeof(struct order), 6), 0);
    ASSERT_EQ(pool_init(&f->levels, &f->arena, sizeof(struct level), 4), 0);
    ASSERT_EQ(book_init(&f->book, &f->levels, 0, 0x5EEDull), 0);
    f->next_id = 1;
}

static void teardown(struct fixture *f)
{
    book_destroy(&f->book, &f->orders);
    ASSERT_EQ(pool_destroy(&f->orders), 0);
    ASSERT_EQ(pool_destroy(&f->levels), 0);
    arena_destroy(&f->arena);
}

static void verify(const struct fixture *f)
{
    const char *why = NULL;
    if (!book_verify(&f->book, NULL, NULL, &why))
        TEST_FAIL_("book_verify: %s", why);
}

static struct order *add(struct fixture *f, int side, int64_t price, int64_t qty)
{
    uint32_t h;
    struct order *o = pool_alloc(&f->orders, &h);
    struct level *lv = book_level_get(&f->book, side, price);
    ASSERT_TRUE(o && lv);
    memset(o, 0, sizeof(*o));
    o->id = f->next_id++;
    o->qty = qty;
    o->handle = h;
    book_append(&f->book, lv, o);
    verify(f);
    return o;
}

/* Like add(), without the check: for states book_verify must refuse. */
static void add_unchecked(struct fixture *f, int side, int64_t price)
{
    uint32_t h;
    struct order *o = pool_alloc(&f->orders, &h);
    ASSERT_TRUE(o != NULL);
    memset(o, 0, sizeof(*o));
    o->qty = 1;
    o->handle = h;
    book_append(&f->book, book_level_get(&f->book, side, price), o);
}

static void drop(struct fixture *f, struct order *o)
{
    book_unlink(&f->book, o);
    pool_free(&f->orders, o, o->handle);
    verify(f);
}

void test_book_levels_ordered_best_first(void)
{
    struct fixture f;
    int64_t bids[] = {100, 105, 95, 103, 99};
    int64_t asks[] = {110, 107, 120, 108};
    setup(&f);
    for (size_t i = 0; i < 5; i++)
        add(&f, BOOK_BID, bids[i], 1);
    for (size_t i = 0; i < 4; i++)
        add(&f, BOOK_ASK, asks[i], 2);
    ASSERT_EQ(book_best(&f.book, BOOK_BID)->price, 105);
    ASSERT_EQ(book_best(&f.book, BOOK_ASK)->price, 107);
    int64_t expect_bids[] = {105, 103, 100, 99, 95};
    int64_t expect_asks[] = {107, 108, 110, 120};
    size_t n = 0;
    for (struct level *lv = book_best(&f.book, BOOK_BID); lv; lv = book_next_level(lv))
        ASSERT_EQ(lv->price, expect_bids[n++]);
    ASSERT_EQ(n, 5);
    n = 0;
    for (struct level *lv = book_best(&f.book, BOOK_ASK); lv; lv = book_next_level(lv))
        ASSERT_EQ(lv->price, expect_asks[n++]);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(f.book.side[BOOK_BID].nlevels, 5);
    ASSERT_EQ(f.book.side[BOOK_ASK].norders, 4);
    teardown(&f);
}

/* The longest run of occupied slots in an index: a lookup of any key homed
   in it may walk it whole. */
static uint32_t longest_cluster(const struct idx *t)
{
    uint32_t worst = 0, run = 0;

    /* Twice round, for a run across the end of the table. */
    for (uint64_t i = 0; i < 2 * ((uint64_t)t->mask + 1); i++) {
        run = t->slots[i & t->mask] ? run + 1 : 0;
        if (run > worst)
            worst = run;
    }
    return worst;
}

void test_book_prices_sharing_low_bits_stay_spread(void)
{
    enum { LEVELS = 4000 };
    struct fixture f;

    /* Clients choose prices. Multiples of 2^47 agree in every low bit that
       a multiply-and-fold hash of the price keeps (the book's first hash
       gave them all one home: a cluster of every level), and a hash known
       to clients could be inverted for any: the seeded mix spreads them. */
    setup(&f);
    for (int64_t j = 1; j <= LEVELS; j++)
        add(&f, BOOK_BID, j << 47, 1);
    ASSERT_EQ(f.book.by_price.count, LEVELS);
    ASSERT_TRUE(longest_cluster(&f.book.by_price) <= 64);
    teardown(&f);
}

void test_book_fifo_within_level(void)
{
    struct fixture f;
    setup(&f);
    struct order *a = add(&f, BOOK_ASK, 50, 3);
    struct order *b = add(&f, BOOK_ASK, 50, 4);
    struct order *c = add(&f, BOOK_ASK, 50, 5);
    struct level *lv = book_best(&f.book, BOOK_ASK);
    ASSERT_EQ(lv->count, 3);
    ASSERT_EQ(lv->total_qty, 12);
    ASSERT_TRUE(book_level_head(lv) == a);
    drop(&f, b); /* O(1) removal from the middle */
    ASSERT_TRUE(book_level_head(lv) == a);
    ASSERT_EQ(lv->total_qty, 8);
    book_reduce(lv, a, 1);
    verify(&f);
    ASSERT_EQ(lv->total_qty, 7);
    drop(&f, a);
    ASSERT_TRUE(book_level_head(lv) == c);
    teardown(&f);
}

void test_book_unlink_frees_empty_level(void)
{
    struct fixture f;
    setup(&f);
    struct order *a = add(&f, BOOK_BID, 10, 1);
    struct order *b = add(&f, BOOK_BID, 11, 1);
    ASSERT_EQ(f.levels.in_use, 2);
    drop(&f, b);
    ASSERT_EQ(f.levels.in_use, 1);
    ASSERT_EQ(book_best(&f.book, BOOK_BID)->price, 10);
    drop(&f, a);
    ASSERT_EQ(f.levels.in_use, 0);
    ASSERT_TRUE(book_best(&f.book, BOOK_BID) == NULL);
    ASSERT_EQ(f.book.side[BOOK_BID].nlevels, 0);
    teardown(&f);
}

void test_book_verify_catches_corruption(void)
{
    struct fixture f;
    const char *why = NULL;
    setup(&f);
    struct order *a = add(&f, BOOK_BID, 10, 5);
    add(&f, BOOK_ASK, 12, 5);
    struct level *lv = book_best(&f.book, BOOK_BID);

    lv->total_qty += 1;
    ASSERT_TRUE(!book_verify(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: level total or count does not match its orders");
    lv->total_qty -= 1;

    a->qty = 0;
    lv->total_qty -= 5;
    ASSERT_TRUE(!book_verify(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: resting order with qty <= 0");
    a->qty = 5;
    lv->total_qty += 5;

    /* A level whose price changed behind the price index's back. */
    lv->price = 11;
    ASSERT_TRUE(!book_verify(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: level not found by its price");
    lv->price = 10;

    f.book.side[BOOK_ASK].norders++;
    ASSERT_TRUE(!book_verify(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: order count does not match the levels");
    f.book.side[BOOK_ASK].norders--;
    verify(&f);

    /* The book itself does not stop crossing (the engine matches first);
       verify notices. */
    add_unchecked(&f, BOOK_ASK, 10);
    ASSERT_TRUE(!book_verify(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: crossed (best bid >= best ask)");
    teardown(&f);
}

void test_book_local_checks_catch_corruption(void)
{
    struct fixture f;
    const char *why = NULL;
    setup(&f);
    add(&f, BOOK_BID, 10, 5);
    add(&f, BOOK_BID, 9, 5);
    add(&f, BOOK_ASK, 12, 5);
    struct level *best = book_best(&f.book, BOOK_BID);
    struct level *behind = book_next_level(best);
    ASSERT_TRUE(book_verify_level(&f.book, behind, NULL, NULL, &why));
    ASSERT_TRUE(book_verify_top(&f.book, NULL, NULL, &why));

    /* Damage behind the best level: the level's own check sees it, the top's
       does not look there. */
    behind->total_qty += 1;
    ASSERT_TRUE(!book_verify_level(&f.book, behind, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: level total or count does not match its orders");
    ASSERT_TRUE(book_verify_top(&f.book, NULL, NULL, &why));
    behind->total_qty -= 1;

    best->count += 1;
    ASSERT_TRUE(!book_verify_top(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: level total or count does not match its orders");
    best->count -= 1;

    f.book.side[BOOK_ASK].nlevels = 0;
    ASSERT_TRUE(!book_verify_top(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: side counts do not match an empty or non-empty tree");
    f.book.side[BOOK_ASK].nlevels = 1;
    verify(&f);

    add_unchecked(&f, BOOK_ASK, 10);
    ASSERT_TRUE(!book_verify_top(&f.book, NULL, NULL, &why));
    ASSERT_STREQ(why, "book: crossed (best bid >= best ask)");
    teardown(&f);
}
