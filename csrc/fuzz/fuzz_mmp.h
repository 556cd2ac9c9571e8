/*
 * fuzz_mmp.h - the fuzz harness's own model of market-maker protection, kept
 * apart from the engine's (csrc/mmp.c) and written from the rules alone:
 *
 *   - per (account, instrument) a fill limit (0 = off) and a window in ts
 *     units (0 = until a reset; 0 whenever the limit is 0);
 *   - SET gives both, closes the window and lifts a trip; RESET closes the
 *     window and lifts a trip where protection is on, else changes nothing;
 *   - a fill where protection is on that finds no window open (nothing
 *     filled) or the window over (now - start >= window, window > 0, with
 *     the exact difference: no wrap) opens one at `now`; the filled qty
 *     saturates at INT64_MAX;
 *   - the first fill that takes the filled qty over the limit of an entry
 *     that is not tripped queues the entry; after the command's own events
 *     the queue trips, first queued first.
 *
 * Accounts are the harness's: 0-3 and UINT32_MAX - 0..3 (fzm_account).
 * Everything is plain data in the struct; nothing to free.
 */
#ifndef FUZZ_MMP_H
#define FUZZ_MMP_H

#include <stdbool.h>
#include <stdint.h>

enum { FZM_ACCOUNTS = 8, FZM_INSTRUMENTS = 3, FZM_ENTRIES = FZM_ACCOUNTS * FZM_INSTRUMENTS };

struct fzm_entry {
    uint32_t account;
    uint32_t instrument;
    int64_t limit;  /* 0 = off */
    int64_t window; /* 0 = until a reset */
    int64_t filled; /* in the current window; 0 = none open */
    int64_t start;  /* ts of the fill that opened the window */
    bool tripped;
    bool queued;
};

struct fzm {
    struct fzm_entry entry[FZM_ACCOUNTS][FZM_INSTRUMENTS];
    struct fzm_entry *queue[FZM_ENTRIES]; /* to trip, in the order they went over */
    unsigned queue_head, queue_len;
};

void fzm_init(struct fzm *m);

/* The entry of (account, instrument), or NULL for an account or instrument
   the harness never uses. */
struct fzm_entry *fzm_entry(struct fzm *m, uint32_t account, uint32_t instrument);

/* A SET_MMP (limit >= 0, window >= 0) or a RESET_MMP the engine accepted. */
void fzm_set(struct fzm_entry *en, int64_t limit, int64_t window);
void fzm_reset(struct fzm_entry *en);

/* A fill of `qty` (> 0) for the entry's account at time `now`. */
void fzm_fill(struct fzm *m, struct fzm_entry *en, int64_t qty, int64_t now);

/* The entry that trips next, or NULL when none is queued. */
struct fzm_entry *fzm_next_trip(const struct fzm *m);

/* Trip the entry fzm_next_trip() returned and take it off the queue. */
void fzm_trip(struct fzm *m);

/* Any entry tripped? */
bool fzm_any_tripped(const struct fzm *m);

#endif /* FUZZ_MMP_H */
