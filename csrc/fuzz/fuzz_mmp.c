/*
 * fuzz_mmp.c - the harness's model of market-maker protection (see
 * fuzz_mmp.h for the rules it follows). A fixed table, one entry per account
 * and instrument the harness uses, and a queue of pointers into it; the
 * queue is empty between commands.
 */
#include "fuzz_mmp.h"

#include <string.h>

void fzm_init(struct fzm *m)
{
    memset(m, 0, sizeof(*m));
    for (unsigned a = 0; a < FZM_ACCOUNTS; a++)
        for (unsigned i = 0; i < FZM_INSTRUMENTS; i++) {
            m->entry[a][i].account = a < 4 ? a : UINT32_MAX - (a - 4);
            m->entry[a][i].instrument = i;
        }
}

struct fzm_entry *fzm_entry(struct fzm *m, uint32_t account, uint32_t instrument)
{
    unsigned a;

    if (account < 4)
        a = account;
    else if (account >= UINT32_MAX - 3)
        a = 4 + (UINT32_MAX - account);
    else
        return NULL;
    return instrument < FZM_INSTRUMENTS ? &m->entry[a][instrument] : NULL;
}

static void fzm_clear(struct fzm_entry *en)
{
    en->filled = 0;
    en->start = 0;
    en->tripped = false;
}

void fzm_set(struct fzm_entry *en, int64_t limit, int64_t window)
{
    fzm_clear(en);
    en->limit = limit;
    en->window = limit > 0 ? window : 0;
}

void fzm_reset(struct fzm_entry *en)
{
    if (en->limit > 0)
        fzm_clear(en);
}

/* Has the window that opened at `start` ended at `now`? Exact arithmetic:
   a clock that went back (or jumped across the range) never wraps. */
static bool fzm_window_over(const struct fzm_entry *en, int64_t now)
{
    return en->window > 0 && (__int128)now - en->start >= en->window;
}

void fzm_fill(struct fzm *m, struct fzm_entry *en, int64_t qty, int64_t now)
{
    if (en->limit <= 0)
        return;
    if (en->filled == 0 || fzm_window_over(en, now)) {
        en->filled = 0;
        en->start = now;
    }
    en->filled = en->filled > INT64_MAX - qty ? INT64_MAX : en->filled + qty;
    if (en->filled > en->limit && !en->tripped && !en->queued) {
        en->queued = true;
        m->queue[m->queue_head + m->queue_len++] = en;
    }
}

struct fzm_entry *fzm_next_trip(const struct fzm *m)
{
    return m->queue_len ? m->queue[m->queue_head] : NULL;
}

void fzm_trip(struct fzm *m)
{
    struct fzm_entry *en = m->queue[m->queue_head];

    en->tripped = true;
    en->queued = false;
    m->queue_len--;
    m->queue_head = m->queue_len ? m->queue_head + 1 : 0;
}

bool fzm_any_tripped(const struct fzm *m)
{
    for (unsigned a = 0; a < FZM_ACCOUNTS; a++)
        for (unsigned i = 0; i < FZM_INSTRUMENTS; i++)
            if (m->entry[a][i].tripped)
                return true;
    return false;
}
