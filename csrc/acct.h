/*
 * acct.h - the resting orders of the accounts that cancel all their orders,
 * for a CANCEL_ALL of one account: it takes the account's orders, not a walk
 * of every order of the books.
 *
 * An account is tracked from its first CANCEL_ALL on: that one walks the
 * books (as every one did before), gathers the account's orders into a
 * list, and from then on each of its orders joining or leaving a level is
 * kept in it. An account that never cancels all pays nothing: an engine
 * with no tracked account tests one count per order joining a level, and
 * an order of an untracked account carries ACCT_NONE (one test on leaving).
 * So a client that sends CANCEL_ALL after CANCEL_ALL costs the engine its
 * own orders each time, after the first, whatever the books hold.
 *
 * Per account an array of slots, each an order's handle and its join number
 * (the account's count of orders that joined a level, this one included).
 * An order joining a level takes a slot (the one freed last, or a new one)
 * and keeps its index (order.acct_slot); one leaving frees it. Nothing
 * moves, so no order is ever written to but the one joining or leaving
 * (and, once, every order of an account that stops being tracked).
 *
 * An account's orders on one level joined it in the order they stand
 * there: sorted by (instrument, side, price, join number), an account's
 * orders are in book order. (The first walk adds them in book order.)
 *
 * A list whose orders are all gone starts again, join numbers too. Join
 * numbers are 32 bits: when they run out, the list numbers its orders again
 * 1, 2, ... in their order. A list holds at most ACCT_MAX_SLOTS orders
 * (order.acct_slot has 24 bits, one value of them ACCT_NONE): an account
 * with one more order to rest stops being tracked (its orders carry
 * ACCT_NONE again, and its next CANCEL_ALL walks the books), so that the
 * lists change no outcome, as snapshots, which leave them out, require.
 *
 * The lists are found by account through open addressing with linear
 * probing, grown at half full; a list is never removed. The table remembers
 * the account it looked up last, and whether it found a list, so a flow of
 * one account's orders finds it (or that there is none) without a probe.
 */
#ifndef ENG_ACCT_H
#define ENG_ACCT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "book.h"
#include "common.h"
#include "pool.h"

enum {
    ACCT_NONE = (1 << 24) - 1,      /* order.acct_slot of an order of an untracked account */
    ACCT_MAX_SLOTS = ACCT_NONE,
};

struct acct_slot {
    uint32_t handle; /* 0: a free slot */
    uint32_t seq;    /* the order's join number; of a free slot, the next free one + 1 (0: none) */
};

struct acct_list {
    struct acct_slot *slots; /* cap of them, the first len handed out at least once */
    uint32_t account;
    uint32_t len;
    uint32_t cap;
    uint32_t live;     /* slots in use: the account's resting orders */
    uint32_t free;     /* the free slot to take next + 1; 0: none below len */
    uint32_t seq;      /* the last join number given */
    bool used;         /* a slot of the table that holds an account */
    bool tracked;      /* false: it had too many orders; no slots then */
};

struct acct {
    struct acct_list *slots; /* NULL until the first list */
    uint32_t mask;           /* capacity - 1 */
    uint32_t count;          /* lists */
    uint32_t max_seq;        /* UINT32_MAX; lower in tests, to reach it */
    uint32_t max_slots;      /* ACCT_MAX_SLOTS; lower in tests, to reach it */
    uint64_t live;           /* tracked resting orders, every list's live */
    bool cached;             /* last_account was looked up: */
    uint32_t last_account;
    struct acct_list *last;  /* its list, NULL when it has none */
};

void acct_init(struct acct *t);
void acct_destroy(struct acct *t);

/* The list of `account`, or NULL when it is not tracked. */
const struct acct_list *acct_find(const struct acct *t, uint32_t account);

/* acct_find(), through the account looked up last. */
static inline struct acct_list *acct_list_of(struct acct *t, uint32_t account)
{
    if (ENG_LIKELY(t->cached && t->last_account == account))
        return t->last;
    t->last = (struct acct_list *)acct_find(t, account);
    t->last_account = account;
    t->cached = true;
    return t->last;
}

/* acct_room() when the list is full, or its join numbers ran out. */
int acct_make_room(struct acct *t, struct pool *orders, struct acct_list *l, struct acct_list **out);

/*
 * Before an order of `account` joins a level: *out is the account's list,
 * with a slot and a join number to give (grown or numbered again if need
 * be), or NULL when the account is not tracked (or stops being tracked
 * now: it has max_slots orders resting; its orders, in `orders`, lose their
 * slots). Returns 0, or -1 when out of memory; no slot is taken then. *out
 * stays valid until the next call.
 */
static inline int acct_room(struct acct *t, struct pool *orders, uint32_t account, struct acct_list **out)
{
    struct acct_list *l;

    *out = NULL;
    if (ENG_LIKELY(t->count == 0))
        return 0;
    l = acct_list_of(t, account);
    if (!l)
        return 0;
    *out = l;
    if (ENG_LIKELY((l->free || l->len < l->cap) && l->seq < t->max_seq))
        return 0;
    return acct_make_room(t, orders, l, out);
}

/* `o` has just joined a level: a slot of `l` (acct_room()'s), or none
   (l NULL: an order is made with acct_slot ACCT_NONE, and an account once
   tracked stays tracked). */
static inline void acct_add(struct acct *t, struct acct_list *l, struct order *o)
{
    uint32_t i;

    if (!l)
        return;
    if (l->free) {
        i = l->free - 1;
        l->free = l->slots[i].seq;
    } else {
        i = l->len++;
    }
    l->slots[i] = (struct acct_slot){o->handle, ++l->seq};
    o->acct_slot = i;
    l->live++;
    t->live++;
}

/* `o` is leaving its level: its slot, if it has one, is free, and it has
   none (a modify may rest it again where its account is no longer tracked). */
static inline void acct_remove(struct acct *t, struct order *o)
{
    struct acct_list *l;
    uint32_t i = o->acct_slot;

    if (ENG_LIKELY(i == ACCT_NONE))
        return;
    o->acct_slot = ACCT_NONE;
    l = acct_list_of(t, o->account);
    t->live--;
    if (--l->live == 0) {
        l->len = 0;
        l->free = 0;
        l->seq = 0;
        return;
    }
    l->slots[i] = (struct acct_slot){0, l->free};
    l->free = i + 1;
}

/*
 * Start tracking `account` (untracked), with room for `n` orders, which the
 * caller then adds with acct_add() in book order. NULL when out of memory
 * or n is over max_slots; nothing changes then.
 */
struct acct_list *acct_track(struct acct *t, uint32_t account, uint32_t n);

/* Is `o` in its account's list, in its own slot? */
bool acct_holds(const struct acct *t, const struct order *o);

/* Bytes the lists and the table take. */
size_t acct_bytes(const struct acct *t);

/*
 * Check every list: every slot in use names an order of the account that
 * names it back, the free slots are a chain of the rest, and the counts add
 * up. Returns true, or false with a static description in *why.
 */
bool acct_verify(const struct acct *t, const struct pool *orders, const char **why);

#endif /* ENG_ACCT_H */
