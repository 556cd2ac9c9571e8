/*
 * mmp.h - market-maker protection: per (account, instrument) a fill limit, a
 * window, what has filled in the window, and whether protection has tripped.
 *
 * The semantics (docs/semantics.md) live in match.c; this is the table. It is
 * consulted only where protection is set: the engine keeps a count of active
 * entries (and of tripped ones), so an engine without protection pays one
 * test of a counter per trade and per new order.
 *
 * Open addressing with linear probing over (account, instrument); entries are
 * never removed (a limit of 0 turns one off), so there are no tombstones, and
 * the table grows at half full. Entries do not move except when it grows, and
 * it grows only in mmp_get, which a SET_MMP calls before any trade: an entry
 * pointer or index taken while a command matches stays valid to its end.
 */
#ifndef ENG_MMP_H
#define ENG_MMP_H

#include <stdbool.h>
#include <stdint.h>

struct mmp_entry {
    uint32_t account;
    uint32_t instrument;
    int64_t limit;        /* fill limit; 0 = off */
    int64_t window;       /* in ts units; 0 = until a reset */
    int64_t filled;       /* quantity filled in the current window; 0 = none open */
    int64_t start;        /* ts of the fill that opened the window */
    uint32_t next_trip;   /* the trip queue: index + 1 of the next entry; 0 = last */
    uint8_t used;
    uint8_t tripped;
    uint8_t queued;       /* over its limit in this command, in the trip queue */
    uint8_t reserved;
};

struct mmp {
    struct mmp_entry *slots; /* NULL until the first entry */
    uint32_t mask;           /* capacity - 1 */
    uint32_t count;          /* slots used */
    uint32_t active;         /* entries with limit > 0 */
    uint32_t tripped;        /* entries tripped */
    uint32_t trip_head;      /* index + 1 of the first entry to trip; 0 = none */
    uint32_t trip_tail;
};

void mmp_init(struct mmp *m);
void mmp_destroy(struct mmp *m);

/* The entry of (account, instrument), or NULL. */
struct mmp_entry *mmp_find(const struct mmp *m, uint32_t account, uint32_t instrument);

/* The entry of (account, instrument), added (off, untripped) when missing.
   NULL when out of memory; nothing changes then. */
struct mmp_entry *mmp_get(struct mmp *m, uint32_t account, uint32_t instrument);

/* Put `en`, just over its limit, at the back of the trip queue. */
void mmp_queue_trip(struct mmp *m, struct mmp_entry *en);

/* Take the first entry off the trip queue, or NULL when it is empty. */
struct mmp_entry *mmp_next_trip(struct mmp *m);

/*
 * Count a fill of `qty` at time `now` against `en` (limit > 0): a fill that
 * finds no window open, or the window over, opens a new one at `now`.
 * Returns true when the fill takes the window over the limit for the first
 * time (the entry then belongs in the trip queue).
 */
bool mmp_fill(struct mmp_entry *en, int64_t qty, int64_t now);

/* Copy every used entry to `out` (room for m->count) ordered by
   (account, instrument), for snapshots and the state hash. */
void mmp_sorted(const struct mmp *m, struct mmp_entry *out);

/* Check the counts and the placement of every entry. Returns true, or false
   with a static description in *why. */
bool mmp_verify(const struct mmp *m, const char **why);

#endif /* ENG_MMP_H */
