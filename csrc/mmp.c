/*
 * mmp.c - the market-maker protection table (see mmp.h).
 */
#include "mmp.h"

#include <stdlib.h>
#include <string.h>

enum { MMP_INITIAL_SLOTS = 16 };

static inline uint64_t key_of(uint32_t account, uint32_t instrument)
{
    return ((uint64_t)instrument << 32) | account;
}

static inline uint32_t home_of(const struct mmp *m, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32) & m->mask;
}

void mmp_init(struct mmp *m)
{
    memset(m, 0, sizeof(*m));
}

void mmp_destroy(struct mmp *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static uint32_t slot_for(const struct mmp *m, uint32_t account, uint32_t instrument)
{
    uint32_t i = home_of(m, key_of(account, instrument));

    while (m->slots[i].used &&
           (m->slots[i].account != account || m->slots[i].instrument != instrument))
        i = (i + 1) & m->mask;
    return i;
}

struct mmp_entry *mmp_find(const struct mmp *m, uint32_t account, uint32_t instrument)
{
    struct mmp_entry *en;

    if (!m->slots)
        return NULL;
    en = &m->slots[slot_for(m, account, instrument)];
    return en->used ? en : NULL;
}

static int grow(struct mmp *m)
{
    uint32_t cap = m->slots ? (m->mask + 1) * 2 : MMP_INITIAL_SLOTS;
    struct mmp_entry *old = m->slots;
    uint32_t old_cap = old ? m->mask + 1 : 0;
    struct mmp_entry *slots = calloc(cap, sizeof(*slots));

    if (!slots)
        return -1;
    m->slots = slots;
    m->mask = cap - 1;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].used)
            slots[slot_for(m, old[i].account, old[i].instrument)] = old[i];
    free(old);
    return 0;
}

struct mmp_entry *mmp_get(struct mmp *m, uint32_t account, uint32_t instrument)
{
    struct mmp_entry *en = mmp_find(m, account, instrument);

    if (en)
        return en;
    /* Growing moves entries: the trip queue must be empty (it is, between
       commands). */
    if ((!m->slots || (m->count + 1) * 2 > m->mask + 1) && grow(m) != 0)
        return NULL;
    en = &m->slots[slot_for(m, account, instrument)];
    memset(en, 0, sizeof(*en));
    en->used = 1;
    en->account = account;
    en->instrument = instrument;
    m->count++;
    return en;
}

void mmp_queue_trip(struct mmp *m, struct mmp_entry *en)
{
    uint32_t index = (uint32_t)(en - m->slots) + 1;

    en->queued = 1;
    en->next_trip = 0;
    if (m->trip_tail)
        m->slots[m->trip_tail - 1].next_trip = index;
    else
        m->trip_head = index;
    m->trip_tail = index;
}

struct mmp_entry *mmp_next_trip(struct mmp *m)
{
    struct mmp_entry *en;

    if (!m->trip_head)
        return NULL;
    en = &m->slots[m->trip_head - 1];
    m->trip_head = en->next_trip;
    if (!m->trip_head)
        m->trip_tail = 0;
    en->next_trip = 0;
    en->queued = 0;
    return en;
}

/* Has the window that opened at `start` ended by `now`? A clock that went
   back leaves it open. */
static bool window_over(int64_t now, int64_t start, int64_t window)
{
    int64_t elapsed;

    if (window == 0)
        return false;
    if (__builtin_sub_overflow(now, start, &elapsed))
        return now > start;
    return elapsed >= window;
}

bool mmp_fill(struct mmp_entry *en, int64_t qty, int64_t now)
{
    if (en->filled == 0 || window_over(now, en->start, en->window)) {
        en->filled = 0;
        en->start = now;
    }
    en->filled = en->filled > INT64_MAX - qty ? INT64_MAX : en->filled + qty;
    return en->filled > en->limit && !en->tripped && !en->queued;
}

static int by_key(const void *a, const void *b)
{
    const struct mmp_entry *x = a, *y = b;
    uint64_t kx = ((uint64_t)x->account << 32) | x->instrument;
    uint64_t ky = ((uint64_t)y->account << 32) | y->instrument;
    return kx < ky ? -1 : kx > ky;
}

void mmp_sorted(const struct mmp *m, struct mmp_entry *out)
{
    uint32_t n = 0;

    for (uint32_t i = 0; m->slots && i <= m->mask; i++)
        if (m->slots[i].used)
            out[n++] = m->slots[i];
    qsort(out, n, sizeof(*out), by_key);
}

bool mmp_verify(const struct mmp *m, const char **why)
{
    uint32_t used = 0, active = 0, tripped = 0;

    for (uint32_t i = 0; m->slots && i <= m->mask; i++) {
        const struct mmp_entry *en = &m->slots[i];
        if (!en->used)
            continue;
        used++;
        active += en->limit > 0;
        tripped += en->tripped != 0;
        if (en->limit < 0 || en->window < 0 || en->filled < 0) {
            *why = "mmp: negative limit, window or fill";
            return false;
        }
        if (en->limit == 0 && (en->tripped || en->filled)) {
            *why = "mmp: an entry that is off has fills or has tripped";
            return false;
        }
        if (en->queued) {
            *why = "mmp: an entry is still queued to trip between commands";
            return false;
        }
        if (mmp_find(m, en->account, en->instrument) != en) {
            *why = "mmp: an entry is not where a lookup finds it";
            return false;
        }
    }
    if (used != m->count || active != m->active || tripped != m->tripped) {
        *why = "mmp: the counts disagree with the entries";
        return false;
    }
    if (m->trip_head || m->trip_tail || (m->slots && m->count * 2 > m->mask + 1)) {
        *why = "mmp: trip queue not empty, or the table over half full";
        return false;
    }
    return true;
}
