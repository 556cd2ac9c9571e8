/*
 * list.h - intrusive, sentinel-headed, doubly-linked circular list.
 *
 * A `struct list_node` is embedded in the element; the list head is a bare
 * node that is its own neighbour when the list is empty, so insertion and
 * removal never branch on "first" or "last". Removing a node is O(1) given
 * only the node. Debug builds poison the links of a removed node so a second
 * removal or a stale traversal faults at once.
 */
#ifndef ENG_LIST_H
#define ENG_LIST_H

#include <stdbool.h>

#include "common.h"

struct list_node {
    struct list_node *next;
    struct list_node *prev;
};

#define LIST_POISON_NEXT ((struct list_node *)0x100)
#define LIST_POISON_PREV ((struct list_node *)0x200)

static inline void list_init(struct list_node *head)
{
    head->next = head;
    head->prev = head;
}

static inline bool list_empty(const struct list_node *head)
{
    return head->next == head;
}

/* Append `node` at the tail (the newest end) of the list headed by `head`. */
static inline void list_add_tail(struct list_node *node, struct list_node *head)
{
    struct list_node *prev = head->prev;
    node->next = head;
    node->prev = prev;
    prev->next = node;
    head->prev = node;
}

/* Unlink `node`; caller guarantees it is on a list. */
static inline void list_del(struct list_node *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
#if ENG_DEBUG >= 1
    node->next = LIST_POISON_NEXT;
    node->prev = LIST_POISON_PREV;
#endif
}

#endif /* ENG_LIST_H */
