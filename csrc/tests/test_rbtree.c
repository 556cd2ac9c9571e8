#include "common.h"
#include "rbtree.h"
#include "test.h"

struct item {
    struct rb_node node;
    int64_t key;
    bool in_tree;
};

static bool item_less(const struct rb_node *a, const struct rb_node *b)
{
    return eng_container_of(a, struct item, node)->key < eng_container_of(b, struct item, node)->key;
}

static struct item *item_of(struct rb_node *n)
{
    return n ? eng_container_of(n, struct item, node) : NULL;
}

/* Insert with the caller-side descent the tree expects; keys are unique. */
static void insert(struct rb_root_cached *root, struct item *it)
{
    struct rb_node **link = &root->rb_root.rb_node, *parent = NULL;
    bool leftmost = true;
    while (*link) {
        parent = *link;
        if (it->key < item_of(parent)->key) {
            link = &parent->rb_left;
        } else {
            link = &parent->rb_right;
            leftmost = false;
        }
    }
    rb_link_node(&it->node, parent, link);
    rb_insert_color_cached(&it->node, root, leftmost);
    it->in_tree = true;
}

static void check(const struct rb_root_cached *root, const struct item *items, size_t n)
{
    const char *why = NULL;
    size_t count = 0, expect = 0;
    int64_t prev = INT64_MIN;
    struct rb_node *first = NULL;

    if (!rb_verify(&root->rb_root, item_less, &count, &why))
        TEST_FAIL_("rb_verify: %s", why);
    for (size_t i = 0; i < n; i++)
        if (items[i].in_tree) {
            expect++;
            if (!first || items[i].key < item_of(first)->key)
                first = (struct rb_node *)&items[i].node;
        }
    ASSERT_EQ(count, expect);
    ASSERT_TRUE(rb_first_cached(root) == first);
    ASSERT_TRUE(rb_first(&root->rb_root) == first);
    /* Forward and backward walks agree with each other and are sorted. */
    count = 0;
    for (struct rb_node *it = rb_first(&root->rb_root); it; it = rb_next(it)) {
        ASSERT_TRUE(item_of(it)->key > prev);
        prev = item_of(it)->key;
        count++;
    }
    ASSERT_EQ(count, expect);
    count = 0;
    for (struct rb_node *it = rb_last(&root->rb_root); it; it = rb_prev(it))
        count++;
    ASSERT_EQ(count, expect);
}

void test_rbtree_sequential_insert_erase(void)
{
    enum { N = 300 };
    static struct item items[N];
    struct rb_root_cached root = RB_ROOT_CACHED;

    for (int i = 0; i < N; i++) {
        items[i].key = i;
        insert(&root, &items[i]);
        check(&root, items, N);
    }
    /* Erase from the front (the cached leftmost moves every time). */
    for (int i = 0; i < N; i += 2) {
        rb_erase_cached(&items[i].node, &root);
        items[i].in_tree = false;
        check(&root, items, N);
    }
    for (int i = N - 1; i >= 0; i -= 2) {
        rb_erase_cached(&items[i].node, &root);
        items[i].in_tree = false;
        check(&root, items, N);
    }
    ASSERT_TRUE(root.rb_root.rb_node == NULL && root.rb_leftmost == NULL);
}

void test_rbtree_random_insert_erase(void)
{
    enum { N = 2000, STEPS = 20000 };
    static struct item items[N];
    struct rb_root_cached root = RB_ROOT_CACHED;
    uint64_t rng = 0x9E3779B97F4A7C15ull;

    /* Distinct keys: a permutation of 0..N-1 spread out. */
    for (int i = 0; i < N; i++) {
        items[i].key = (int64_t)i * 7919 % N * 3 - N;
        items[i].in_tree = false;
    }
    for (int step = 0; step < STEPS; step++) {
        struct item *it = &items[test_rand(&rng) % N];
        if (it->in_tree) {
            rb_erase_cached(&it->node, &root);
            it->in_tree = false;
        } else {
            insert(&root, it);
        }
        /* Full check often early, then periodically (it is O(n)). */
        if (step < 3000 || step % 97 == 0)
            check(&root, items, N);
    }
    check(&root, items, N);
}

void test_rbtree_cached_leftmost(void)
{
    struct item a = {.key = 10}, b = {.key = 5}, c = {.key = 20};
    struct rb_root_cached root = RB_ROOT_CACHED;

    ASSERT_TRUE(rb_first_cached(&root) == NULL);
    insert(&root, &a);
    ASSERT_TRUE(rb_first_cached(&root) == &a.node);
    insert(&root, &c);
    ASSERT_TRUE(rb_first_cached(&root) == &a.node);
    insert(&root, &b);
    ASSERT_TRUE(rb_first_cached(&root) == &b.node);
    rb_erase_cached(&b.node, &root);
    ASSERT_TRUE(rb_first_cached(&root) == &a.node);
    rb_erase_cached(&c.node, &root);
    ASSERT_TRUE(rb_first_cached(&root) == &a.node);
    rb_erase_cached(&a.node, &root);
    ASSERT_TRUE(rb_first_cached(&root) == NULL);
}
