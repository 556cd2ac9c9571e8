/*
 * rbtree.h - intrusive red-black tree, shaped like the Linux kernel's.
 *
 * A `struct rb_node` is embedded in the element (here: a price level). The
 * tree never compares keys itself: the caller walks down from the root to find
 * the link where a new node belongs, then calls rb_link_node() and
 * rb_insert_color(). That keeps the comparison inline in the caller and the
 * tree free of callbacks. The parent pointer and the colour share one word
 * (nodes are at least 4-byte aligned, colour is bit 0).
 *
 * `struct rb_root_cached` also keeps the leftmost node, so the minimum (for
 * us: the best price of a book side) is O(1).
 */
#ifndef ENG_RBTREE_H
#define ENG_RBTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rb_node {
    uintptr_t rb_parent_color; /* parent pointer | colour (bit 0: 1 = black) */
    struct rb_node *rb_right;
    struct rb_node *rb_left;
};

struct rb_root {
    struct rb_node *rb_node;
};

struct rb_root_cached {
    struct rb_root rb_root;
    struct rb_node *rb_leftmost;
};

#define RB_RED 0u
#define RB_BLACK 1u

#define RB_ROOT ((struct rb_root){NULL})
#define RB_ROOT_CACHED ((struct rb_root_cached){{NULL}, NULL})

static inline struct rb_node *rb_parent(const struct rb_node *n)
{
    return (struct rb_node *)(n->rb_parent_color & ~(uintptr_t)3);
}

static inline unsigned rb_color(const struct rb_node *n)
{
    return (unsigned)(n->rb_parent_color & 1u);
}

/*
 * Attach `node` as a red leaf at `*link`, a child pointer of `parent` found
 * by the caller's descent (or the root pointer, with parent NULL). The caller
 * must then call rb_insert_color() to restore the red-black properties.
 */
static inline void rb_link_node(struct rb_node *node, struct rb_node *parent,
                                struct rb_node **link)
{
    node->rb_parent_color = (uintptr_t)parent; /* red */
    node->rb_left = NULL;
    node->rb_right = NULL;
    *link = node;
}

/* Rebalance after rb_link_node(). Can't fail. */
void rb_insert_color(struct rb_node *node, struct rb_root *root);
/* Remove `node`, which must be in the tree. Can't fail. */
void rb_erase(struct rb_node *node, struct rb_root *root);

struct rb_node *rb_first(const struct rb_root *root);
struct rb_node *rb_last(const struct rb_root *root);
struct rb_node *rb_next(const struct rb_node *node);
struct rb_node *rb_prev(const struct rb_node *node);

/* As rb_insert_color(); `leftmost` says whether the caller's descent only ever
   went left, i.e. the new node is the new minimum. */
static inline void rb_insert_color_cached(struct rb_node *node, struct rb_root_cached *root,
                                          bool leftmost)
{
    if (leftmost)
        root->rb_leftmost = node;
    rb_insert_color(node, &root->rb_root);
}

static inline void rb_erase_cached(struct rb_node *node, struct rb_root_cached *root)
{
    if (root->rb_leftmost == node)
        root->rb_leftmost = rb_next(node);
    rb_erase(node, &root->rb_root);
}

static inline struct rb_node *rb_first_cached(const struct rb_root_cached *root)
{
    return root->rb_leftmost;
}

/* Strict "a sorts before b" for rb_verify(). */
typedef bool (*rb_less_fn)(const struct rb_node *a, const struct rb_node *b);

/*
 * Check the red-black properties: parent links consistent, root black, no red
 * node with a red child, the same number of black nodes on every root-to-leaf
 * path, keys strictly increasing in order (when `less` is not NULL). Stores
 * the node count in *count (may be NULL). Returns true if all hold; otherwise
 * false with a static description in *why (may be NULL).
 */
bool rb_verify(const struct rb_root *root, rb_less_fn less, size_t *count, const char **why);

#endif /* ENG_RBTREE_H */
