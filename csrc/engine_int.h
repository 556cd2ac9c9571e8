/*
 * engine_int.h - the engine's internal state, shared by engine.c (lifecycle,
 * dispatch, event buffer), match.c (command semantics), query.c (read-only
 * views and verify).
 */
#ifndef ENG_ENGINE_INT_H
#define ENG_ENGINE_INT_H

#include <string.h>

#include "acct.h"
#include "arena.h"
#include "book.h"
#include "common.h"
#include "idx.h"
#include "ids.h"
#include "mmp.h"
#include "pool.h"
#include "pyengine.h"

/* One order of a CANCEL_ALL of one account, with its place in book order. */
struct eng_cancel_key {
    uint32_t instrument;
    uint32_t side;
    int64_t price;     /* best first: the negated price of a bid */
    uint32_t seq;      /* its join number: time on one level */
    uint32_t handle;
};

struct instrument {
    struct eng_instrument_spec spec;
    int64_t band_lo;    /* effective band: [1, INT64_MAX] when none */
    int64_t band_hi;
    uint8_t state;      /* enum eng_trading_state */
    uint32_t mmp_active; /* accounts with market-maker protection set here */
    struct eng_order_limits limits; /* SET_LIMITS; 0 = none */
    struct book book;
};

struct eng {
    struct arena arena;
    struct pool orders;      /* struct order */
    struct pool levels;      /* struct level */
    struct ids ids;          /* order id -> order handle (resting orders) */
    struct idx coids;        /* (account, coid) -> order handle (resting, with coid) */
    struct mmp mmp;          /* market-maker protection, per (account, instrument) */
    struct acct accounts;    /* account -> its resting orders */
    struct eng_cancel_key *scratch; /* malloc'ed: a CANCEL_ALL's orders, sorted */
    size_t scratch_cap;
    int64_t now;             /* ts of the command running: protection's clock */
    struct instrument *inst; /* malloc'ed; grows only in eng_add_instrument */
    uint32_t ninst;
    uint32_t cap_inst;
    uint64_t seq;            /* last sequence number assigned */
    uint64_t last_order_id;
    uint64_t last_trade_id;
    struct eng_event *ev;    /* event buffer, grows by doubling */
    size_t ev_len;
    size_t ev_cap;
    struct eng_stats stats;  /* counters; the memory fields are filled on demand */
    bool level_events;       /* emit ENG_EV_LEVEL after every level change */
    bool caller_ids;         /* new orders bring their ids (eng_config.caller_order_ids) */
    uint64_t hash_seed;      /* see eng_config.hash_seed */
};

extern const struct idx_ops eng__coid_ops;

static inline uint64_t eng__hash_coid(const struct eng *e, uint32_t account, const char coid[16])
{
    uint64_t w0, w1, h;
    memcpy(&w0, coid, 8);
    memcpy(&w1, coid + 8, 8);
    /* Each step is a bijection of the running value, so distinct keys that
       agree in all but one word never collide; the end folds the high bits
       into the low ones the index uses. The seed, unknown to clients, keeps
       them from choosing ids that share low bits. */
    h = (w0 ^ e->hash_seed) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    h += w1 * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 32;
    h += (uint64_t)account * 0x94d049bb133111ebull;
    h ^= h >> 31;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 32); /* the index uses the low bits */
}

static inline bool eng__coid_empty(const char coid[16])
{
    uint64_t w0, w1;
    memcpy(&w0, coid, 8);
    memcpy(&w1, coid + 8, 8);
    return (w0 | w1) == 0;
}

static inline struct order *eng__order_at(const struct eng *e, uint32_t handle)
{
    return pool_at(&e->orders, handle);
}

/* The open order with this id, or NULL. */
struct order *eng__find_order(const struct eng *e, uint64_t id);

static inline bool eng__same_id(const void *ctx, uint32_t handle, uint64_t id)
{
    return eng__order_at(ctx, handle)->id == id;
}

/* The open order with this id, whose ids_key() is `key`, or NULL; its place
   in the order-id index in *pos when found. Inline: every new order with a
   caller id and every cancel and modify asks, and as a call it saved and
   restored registers around a few compares. */
static inline struct order *eng__lookup_order(const struct eng *e, uint32_t key, uint64_t id,
                                              ids_pos *pos)
{
    uint32_t handle = ids_lookup(&e->ids, key, id, eng__same_id, e, pos);
    return handle ? eng__order_at(e, handle) : NULL;
}

/* The open order of `account` with this client order id, or NULL. */
struct order *eng__find_coid(const struct eng *e, uint32_t account, const char coid[16]);

/*
 * Make room for `n` more events. Returns 0, or -1 when out of memory (the
 * buffer is unchanged then).
 */
int eng__reserve_events(struct eng *e, size_t n);

/* Command semantics (match.c). Each is called with the command's sequence
   number already assigned and room for at least one event; those that look
   an order id up also get `key`, the ids_key() of c->order_id (a batch
   computes it ahead, for its prefetch). */
void eng__new_order(struct eng *e, const struct eng_cmd *c, uint32_t key);
void eng__cancel(struct eng *e, const struct eng_cmd *c, uint32_t key);
void eng__modify(struct eng *e, const struct eng_cmd *c, uint32_t key);
void eng__set_state(struct eng *e, const struct eng_cmd *c);
void eng__cancel_all(struct eng *e, const struct eng_cmd *c);
void eng__set_mmp(struct eng *e, const struct eng_cmd *c);
void eng__reset_mmp(struct eng *e, const struct eng_cmd *c);
void eng__set_limits(struct eng *e, const struct eng_cmd *c);
/* Does `account` have an order resting in book `b`? O(its orders). */
bool eng__account_rests_on(const struct book *b, uint32_t account);
/* Trip the protection of every account that a command's fills took over
   its limit, in the order they went over: after the command's own events. */
void eng__mmp_trip(struct eng *e);
void eng__reject(struct eng *e, const struct eng_cmd *c, int err);

/*
 * Check what the command that produced events `ev[0..n)` may have changed
 * (query.c): like eng_verify, but only the orders, levels and books the
 * events name, and the counts. Returns ENG_OK, or ENG_CORRUPT with the first
 * broken invariant in `why` (may be NULL).
 */
int eng__verify_events(const struct eng *e, const struct eng_event *ev, size_t n, char *why,
                       size_t why_len);

/*
 * Put an order straight into the book, at the back of its level, with no
 * matching and no events: for loading a snapshot. Returns ENG_OK, ENG_CORRUPT
 * for anything a consistent engine could not hold (an unknown instrument, qty
 * <= 0, a duplicate id or client order id, a crossed book, ...), or
 * ENG_NO_MEMORY. On error nothing is added.
 */
int eng__restore_order(struct eng *e, uint32_t instrument, uint8_t side, int64_t price,
                       int64_t qty, uint64_t id, uint32_t account, uint8_t stp, uint8_t flags,
                       const char coid[16]);

#endif /* ENG_ENGINE_INT_H */
