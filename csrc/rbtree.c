/*
 * rbtree.c - red-black tree rebalancing.
 *
 * The red-black properties this file maintains:
 *   1. every node is red or black;
 *   2. the root is black;
 *   3. all leaves (the NULL children) are black;
 *   4. both children of a red node are black;
 *   5. every path from a node to its descendant leaves has the same number of
 *      black nodes.
 * Together they bound the height by 2*log2(n+1), so descent, insertion and
 * erase are O(log n). Insertion and erase follow the classic algorithms
 * (Cormen et al., chapter 13) with explicit parent pointers and NULL leaves,
 * so erase carries the parent of the (possibly NULL) node being fixed up.
 * Rotations and recolourings never move keys, so pointers to the elements
 * stay valid.
 */
#include "rbtree.h"

static inline bool is_red(const struct rb_node *n)
{
    return n && rb_color(n) == RB_RED;
}

static inline bool is_black(const struct rb_node *n)
{
    return !is_red(n);
}

static inline void set_parent(struct rb_node *n, struct rb_node *parent)
{
    n->rb_parent_color = (uintptr_t)parent | (n->rb_parent_color & 1u);
}

static inline void set_color(struct rb_node *n, unsigned color)
{
    n->rb_parent_color = (n->rb_parent_color & ~(uintptr_t)1) | color;
}

static inline void set_parent_color(struct rb_node *n, struct rb_node *parent, unsigned color)
{
    n->rb_parent_color = (uintptr_t)parent | color;
}

/* Make `new` take `old`'s place as the child of `parent` (or as the root). */
static inline void change_child(struct rb_node *old, struct rb_node *new,
                                struct rb_node *parent, struct rb_root *root)
{
    if (!parent)
        root->rb_node = new;
    else if (parent->rb_left == old)
        parent->rb_left = new;
    else
        parent->rb_right = new;
}

/*
 *     x              y
 *    / \            / \
 *   a   y    ->    x   c
 *      / \        / \
 *     b   c      a   b
 */
static void rotate_left(struct rb_node *x, struct rb_root *root)
{
    struct rb_node *y = x->rb_right;
    struct rb_node *parent = rb_parent(x);

    x->rb_right = y->rb_left;
    if (y->rb_left)
        set_parent(y->rb_left, x);
    set_parent(y, parent);
    change_child(x, y, parent, root);
    y->rb_left = x;
    set_parent(x, y);
}

/* The mirror image of rotate_left. */
static void rotate_right(struct rb_node *x, struct rb_root *root)
{
    struct rb_node *y = x->rb_left;
    struct rb_node *parent = rb_parent(x);

    x->rb_left = y->rb_right;
    if (y->rb_right)
        set_parent(y->rb_right, x);
    set_parent(y, parent);
    change_child(x, y, parent, root);
    y->rb_right = x;
    set_parent(x, y);
}

void rb_insert_color(struct rb_node *node, struct rb_root *root)
{
    struct rb_node *parent;

    /* The new node is red; the only property that can break is 4 (red
       parent), and the loop moves the violation up until it disappears. */
    while ((parent = rb_parent(node)) && is_red(parent)) {
        /* A red parent is never the root, so the grandparent exists. */
        struct rb_node *gparent = rb_parent(parent);

        if (parent == gparent->rb_left) {
            struct rb_node *uncle = gparent->rb_right;
            if (is_red(uncle)) {
                /* Recolour and continue from the grandparent. */
                set_color(parent, RB_BLACK);
                set_color(uncle, RB_BLACK);
                set_color(gparent, RB_RED);
                node = gparent;
                continue;
            }
            if (node == parent->rb_right) {
                /* Turn the inner case into the outer one. */
                rotate_left(parent, root);
                node = parent;
                parent = rb_parent(node);
            }
            set_color(parent, RB_BLACK);
            set_color(gparent, RB_RED);
            rotate_right(gparent, root);
        } else {
            struct rb_node *uncle = gparent->rb_left;
            if (is_red(uncle)) {
                set_color(parent, RB_BLACK);
                set_color(uncle, RB_BLACK);
                set_color(gparent, RB_RED);
                node = gparent;
                continue;
            }
            if (node == parent->rb_left) {
                rotate_right(parent, root);
                node = parent;
                parent = rb_parent(node);
            }
            set_color(parent, RB_BLACK);
            set_color(gparent, RB_RED);
            rotate_left(gparent, root);
        }
    }
    set_color(root->rb_node, RB_BLACK);
}

/*
 * Restore property 5 after a black node was removed from the paths through
 * `node` (which may be NULL), a child of `parent`: `node` carries an "extra
 * black" that is pushed up or absorbed by rotations.
 */
static void erase_fixup(struct rb_node *node, struct rb_node *parent, struct rb_root *root)
{
    while (node != root->rb_node && is_black(node)) {
        if (node == parent->rb_left) {
            /* The sibling exists: its subtree has black height >= 1. */
            struct rb_node *sibling = parent->rb_right;
            if (is_red(sibling)) {
                set_color(sibling, RB_BLACK);
                set_color(parent, RB_RED);
                rotate_left(parent, root);
                sibling = parent->rb_right;
            }
            if (is_black(sibling->rb_left) && is_black(sibling->rb_right)) {
                set_color(sibling, RB_RED);
                node = parent;
                parent = rb_parent(node);
                continue;
            }
            if (is_black(sibling->rb_right)) {
                set_color(sibling->rb_left, RB_BLACK);
                set_color(sibling, RB_RED);
                rotate_right(sibling, root);
                sibling = parent->rb_right;
            }
            set_color(sibling, rb_color(parent));
            set_color(parent, RB_BLACK);
            set_color(sibling->rb_right, RB_BLACK);
            rotate_left(parent, root);
            node = root->rb_node;
            break;
        } else {
            struct rb_node *sibling = parent->rb_left;
            if (is_red(sibling)) {
                set_color(sibling, RB_BLACK);
                set_color(parent, RB_RED);
                rotate_right(parent, root);
                sibling = parent->rb_left;
            }
            if (is_black(sibling->rb_left) && is_black(sibling->rb_right)) {
                set_color(sibling, RB_RED);
                node = parent;
                parent = rb_parent(node);
                continue;
            }
            if (is_black(sibling->rb_left)) {
                set_color(sibling->rb_right, RB_BLACK);
                set_color(sibling, RB_RED);
                rotate_left(sibling, root);
                sibling = parent->rb_left;
            }
            set_color(sibling, rb_color(parent));
            set_color(parent, RB_BLACK);
            set_color(sibling->rb_left, RB_BLACK);
            rotate_right(parent, root);
            node = root->rb_node;
            break;
        }
    }
    if (node)
        set_color(node, RB_BLACK);
}

/* Put `replacement` (may be NULL) where `old` hangs in the tree. */
static void transplant(struct rb_node *old, struct rb_node *replacement, struct rb_root *root)
{
    struct rb_node *parent = rb_parent(old);
    change_child(old, replacement, parent, root);
    if (replacement)
        set_parent(replacement, parent);
}

void rb_erase(struct rb_node *node, struct rb_root *root)
{
    struct rb_node *child, *parent;
    unsigned removed_color;

    if (!node->rb_left || !node->rb_right) {
        /* At most one child: it takes the node's place. */
        child = node->rb_left ? node->rb_left : node->rb_right;
        parent = rb_parent(node);
        removed_color = rb_color(node);
        transplant(node, child, root);
    } else {
        /* Two children: the in-order successor (leftmost of the right
           subtree, which has no left child) takes the node's place and
           colour; the successor's old position is the one that loses a
           node. */
        struct rb_node *succ = node->rb_right;
        while (succ->rb_left)
            succ = succ->rb_left;
        removed_color = rb_color(succ);
        child = succ->rb_right;
        if (rb_parent(succ) == node) {
            parent = succ;
        } else {
            parent = rb_parent(succ);
            transplant(succ, child, root);
            succ->rb_right = node->rb_right;
            set_parent(succ->rb_right, succ);
        }
        change_child(node, succ, rb_parent(node), root);
        set_parent_color(succ, rb_parent(node), rb_color(node));
        succ->rb_left = node->rb_left;
        set_parent(succ->rb_left, succ);
    }
    if (removed_color == RB_BLACK)
        erase_fixup(child, parent, root);
}

struct rb_node *rb_first(const struct rb_root *root)
{
    struct rb_node *n = root->rb_node;
    if (!n)
        return NULL;
    while (n->rb_left)
        n = n->rb_left;
    return n;
}

struct rb_node *rb_last(const struct rb_root *root)
{
    struct rb_node *n = root->rb_node;
    if (!n)
        return NULL;
    while (n->rb_right)
        n = n->rb_right;
    return n;
}

struct rb_node *rb_next(const struct rb_node *node)
{
    struct rb_node *parent;

    if (node->rb_right) {
        node = node->rb_right;
        while (node->rb_left)
            node = node->rb_left;
        return (struct rb_node *)node;
    }
    /* Climb until we come up from a left child. */
    while ((parent = rb_parent(node)) && node == parent->rb_right)
        node = parent;
    return parent;
}

struct rb_node *rb_prev(const struct rb_node *node)
{
    struct rb_node *parent;

    if (node->rb_left) {
        node = node->rb_left;
        while (node->rb_right)
            node = node->rb_right;
        return (struct rb_node *)node;
    }
    while ((parent = rb_parent(node)) && node == parent->rb_left)
        node = parent;
    return parent;
}

/* Returns the black height of the subtree, or -1 on a broken property. */
static int verify_subtree(const struct rb_node *n, const struct rb_node *parent,
                          size_t *count, const char **why)
{
    int lh, rh;

    if (!n)
        return 1;
    if (rb_parent(n) != parent) {
        *why = "rbtree: parent link does not match";
        return -1;
    }
    if (is_red(n) && (is_red(n->rb_left) || is_red(n->rb_right))) {
        *why = "rbtree: red node with a red child";
        return -1;
    }
    (*count)++;
    lh = verify_subtree(n->rb_left, n, count, why);
    if (lh < 0)
        return -1;
    rh = verify_subtree(n->rb_right, n, count, why);
    if (rh < 0)
        return -1;
    if (lh != rh) {
        *why = "rbtree: black heights differ";
        return -1;
    }
    return lh + (is_black(n) ? 1 : 0);
}

bool rb_verify(const struct rb_root *root, rb_less_fn less, size_t *count, const char **why)
{
    const char *reason = NULL;
    size_t n = 0;
    bool ok = true;

    if (is_red(root->rb_node)) {
        reason = "rbtree: root is red";
        ok = false;
    } else if (verify_subtree(root->rb_node, NULL, &n, &reason) < 0) {
        ok = false;
    } else if (less) {
        const struct rb_node *prev = NULL;
        for (const struct rb_node *it = rb_first(root); it; it = rb_next(it)) {
            if (prev && !less(prev, it)) {
                reason = "rbtree: keys out of order";
                ok = false;
                break;
            }
            prev = it;
        }
    }
    if (count)
        *count = n;
    if (why)
        *why = reason;
    return ok;
}
