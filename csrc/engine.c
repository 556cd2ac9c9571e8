/*
 * engine.c - engine lifecycle, instruments, the event buffer, command
 * dispatch and the fast paths.
 *
 * Memory ownership: the engine owns one arena from which its two node pools
 * (orders, levels) take slabs; the order index, the client-order-id index, the
 * instrument table and the event buffer are malloc'ed separately because they
 * are replaced wholesale when they grow (rarely: doubling, never per order).
 * eng_destroy() returns every byte.
 *
 * Determinism: no event and no book depends on time, addresses or hash
 * iteration order. Sequence numbers, order ids and trade ids are plain
 * counters, so the same commands always give the same events and the same
 * books. The one random input, the hash seed, decides only where the
 * indexes place their entries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engine_int.h"

enum {
    /* Bytes per arena chunk: 16 order slabs (or 64 level slabs) and the
       chunk header, so whole slabs fill it with nothing left over. */
    ENG_ARENA_CHUNK = (4u << 20) + 4096,
    ENG_ORDER_SLAB_SHIFT = 12,    /* 4096 orders (256 KiB) per slab */
    ENG_LEVEL_SLAB_SHIFT = 10,    /* 1024 levels per slab */
    ENG_INITIAL_EVENTS = 1024,
    ENG_DEFAULT_EXPECTED_ORDERS = 1024
};

/* ---- indexes -------------------------------------------------------------- */

static uint64_t coid_hash_of(const void *ctx, uint32_t handle)
{
    const struct order *o = eng__order_at(ctx, handle);
    return eng__hash_coid(ctx, o->account, o->coid);
}

const struct idx_ops eng__coid_ops = {coid_hash_of};

struct coid_key {
    uint32_t account;
    const char *coid;
};

static bool coid_match(const void *ctx, uint32_t handle, const void *key)
{
    const struct order *o = eng__order_at(ctx, handle);
    const struct coid_key *k = key;
    return o->account == k->account && memcmp(o->coid, k->coid, ENG_COID_LEN) == 0;
}

struct order *eng__find_order(const struct eng *e, uint64_t id)
{
    ids_pos pos;
    return eng__lookup_order(e, ids_key(&e->ids, id), id, &pos);
}

struct order *eng__find_coid(const struct eng *e, uint32_t account, const char coid[16])
{
    struct coid_key key = {account, coid};
    int64_t pos = idx_find(&e->coids, eng__hash_coid(e, account, coid), coid_match, e, &key);
    return pos < 0 ? NULL : eng__order_at(e, e->coids.slots[pos]);
}

/* ---- lifecycle ------------------------------------------------------------ */

/* A seed nobody outside can guess: the kernel's random bytes, or failing
   that the clock and the address space layout. */
static uint64_t random_seed(const void *salt)
{
    uint64_t seed = 0;
    struct timespec ts;

    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed) && seed)
        return seed;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)salt;
    return seed ? seed : 1;
}

struct eng *eng_create(const struct eng_config *cfg)
{
    uint32_t expected = cfg && cfg->expected_orders ? cfg->expected_orders
                                                     : ENG_DEFAULT_EXPECTED_ORDERS;
    struct eng *e = calloc(1, sizeof(*e));

    if (!e)
        return NULL;
    arena_init(&e->arena, NULL, 0, ENG_ARENA_CHUNK);
    if (pool_init(&e->orders, &e->arena, sizeof(struct order), ENG_ORDER_SLAB_SHIFT) != 0 ||
        pool_init(&e->levels, &e->arena, sizeof(struct level), ENG_LEVEL_SLAB_SHIFT) != 0)
        goto fail;
    e->level_events = cfg && cfg->level_events;
    e->caller_ids = cfg && cfg->caller_order_ids;
    e->hash_seed = cfg && cfg->hash_seed ? cfg->hash_seed : random_seed(e);
    if (ids_init(&e->ids, expected, e->caller_ids, e->hash_seed) != 0)
        goto fail;
    if (idx_init(&e->coids, expected) != 0) {
        ids_destroy(&e->ids);
        goto fail;
    }
    e->ev = malloc(ENG_INITIAL_EVENTS * sizeof(*e->ev));
    if (!e->ev) {
        idx_destroy(&e->coids);
        ids_destroy(&e->ids);
        goto fail;
    }
    e->ev_cap = ENG_INITIAL_EVENTS;
    mmp_init(&e->mmp);
    acct_init(&e->accounts);
    return e;
fail:
    arena_destroy(&e->arena);
    free(e);
    return NULL;
}

void eng_destroy(struct eng *e)
{
    if (!e)
        return;
    for (uint32_t i = 0; i < e->ninst; i++)
        book_destroy(&e->inst[i].book, &e->orders);
    /* Both pools are destroyed in every build (`|`, not `&&`, and not
       inside the assertion, which a release build drops). Every node went
       back to its pool: anything else is a leak. */
    int leaked = pool_destroy(&e->orders) | pool_destroy(&e->levels);
    ENG_ASSERT(leaked == 0);
    (void)leaked;
    ids_destroy(&e->ids);
    idx_destroy(&e->coids);
    mmp_destroy(&e->mmp);
    acct_destroy(&e->accounts);
    free(e->scratch);
    free(e->inst);
    free(e->ev);
    arena_destroy(&e->arena);
    free(e);
}

/* ---- instruments ---------------------------------------------------------- */

static bool symbol_valid(const char symbol[ENG_SYMBOL_MAX])
{
    size_t n = strnlen(symbol, ENG_SYMBOL_MAX);
    if (n == 0 || n == ENG_SYMBOL_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (symbol[i] < 0x21 || symbol[i] > 0x7e)
            return false;
    for (size_t i = n; i < ENG_SYMBOL_MAX; i++)
        if (symbol[i] != 0)
            return false;
    return true;
}

static int spec_check(const struct eng_instrument_spec *s)
{
    bool band = s->min_price != 0 || s->max_price != 0;
    if (!symbol_valid(s->symbol) || s->tick_size <= 0 || s->lot_size <= 0)
        return ENG_INVALID_ARGUMENT;
    if (band && (s->min_price <= 0 || s->max_price < s->min_price))
        return ENG_INVALID_ARGUMENT;
    return ENG_OK;
}

int eng_add_instrument(struct eng *e, const struct eng_instrument_spec *spec, uint32_t *id)
{
    struct instrument *in;
    int err = spec_check(spec);

    if (err)
        return err;
    for (uint32_t i = 0; i < e->ninst; i++)
        if (strncmp(e->inst[i].spec.symbol, spec->symbol, ENG_SYMBOL_MAX) == 0)
            return ENG_DUPLICATE_SYMBOL;
    if (e->ninst == ENG_MAX_INSTRUMENTS)
        return ENG_TOO_MANY_INSTRUMENTS;
    if (e->ninst == e->cap_inst) {
        /* Books hold no pointers to themselves, so moving them is safe. */
        uint32_t cap = e->cap_inst ? e->cap_inst * 2 : 8;
        struct instrument *inst = realloc(e->inst, cap * sizeof(*inst));
        if (!inst)
            return ENG_NO_MEMORY;
        e->inst = inst;
        e->cap_inst = cap;
    }
    in = &e->inst[e->ninst];
    if (book_init(&in->book, &e->levels, e->ninst, e->hash_seed) != 0)
        return ENG_NO_MEMORY;
    in->spec = *spec;
    in->band_lo = spec->min_price ? spec->min_price : 1;
    in->band_hi = spec->max_price ? spec->max_price : INT64_MAX;
    in->state = ENG_STATE_OPEN;
    in->mmp_active = 0;
    in->limits = (struct eng_order_limits){0, 0};
    *id = e->ninst++;
    return ENG_OK;
}

uint32_t eng_instrument_count(const struct eng *e)
{
    return e->ninst;
}

const struct eng_instrument_spec *eng_instrument(const struct eng *e, uint32_t id)
{
    return id < e->ninst ? &e->inst[id].spec : NULL;
}

int eng_instrument_state(const struct eng *e, uint32_t id)
{
    return id < e->ninst ? e->inst[id].state : -1;
}

int eng_get_order_limits(const struct eng *e, uint32_t id, struct eng_order_limits *out)
{
    if (id >= e->ninst)
        return -1;
    *out = e->inst[id].limits;
    return 0;
}

/* ---- events --------------------------------------------------------------- */

int eng__reserve_events(struct eng *e, size_t n)
{
    size_t cap = e->ev_cap;
    struct eng_event *ev;

    if (ENG_LIKELY(cap - e->ev_len >= n))
        return 0;
    while (cap - e->ev_len < n) {
        if (cap > SIZE_MAX / 2 / sizeof(*ev))
            return -1;
        cap *= 2;
    }
    ev = realloc(e->ev, cap * sizeof(*ev));
    if (!ev)
        return -1;
    e->ev = ev;
    e->ev_cap = cap;
    return 0;
}

const struct eng_event *eng_events(const struct eng *e, size_t *count)
{
    *count = e->ev_len;
    return e->ev;
}

void eng_clear_events(struct eng *e)
{
    e->ev_len = 0;
}

struct eng_event *eng_take_events(struct eng *e, size_t *count)
{
    struct eng_event *fresh = malloc(ENG_INITIAL_EVENTS * sizeof(*fresh));
    struct eng_event *taken = e->ev;

    if (!fresh)
        return NULL;
    *count = e->ev_len;
    e->ev = fresh;
    e->ev_cap = ENG_INITIAL_EVENTS;
    e->ev_len = 0;
    return taken;
}

void eng_free_events(struct eng_event *events)
{
    free(events);
}

/* ---- processing ----------------------------------------------------------- */

#if ENG_DEBUG >= 3
/* Did the command whose events start at `first` leave the engine sound?
   Says why not on stderr: for ENG_ASSERT_EXPENSIVE. */
static bool verified(const struct eng *e, size_t first)
{
    char why[128];

    if (eng__verify_events(e, e->ev + first, e->ev_len - first, why, sizeof(why)) == ENG_OK)
        return true;
    fprintf(stderr, "after command %llu: %s\n", (unsigned long long)e->seq, why);
    return false;
}
#endif

/* eng_process() of a command whose order_id's ids_key() is `key`. */
static inline int64_t process_keyed(struct eng *e, const struct eng_cmd *cmd, uint32_t key)
{
    size_t before = e->ev_len;

    /* Every command produces at least one event, two with level events (a
       cancel and its level); one that can produce more reserves the rest
       itself, and rejects with no_memory if it can't. */
    if (eng__reserve_events(e, e->level_events ? 2 : 1) != 0)
        return -1;
    e->seq++;
    e->stats.commands++;
    e->now = cmd->ts;
    switch (cmd->type) {
    case ENG_CMD_NEW:
        eng__new_order(e, cmd, key);
        break;
    case ENG_CMD_CANCEL:
        eng__cancel(e, cmd, key);
        break;
    case ENG_CMD_MODIFY:
        eng__modify(e, cmd, key);
        break;
    case ENG_CMD_SET_STATE:
        eng__set_state(e, cmd);
        break;
    case ENG_CMD_CANCEL_ALL:
        eng__cancel_all(e, cmd);
        break;
    case ENG_CMD_SET_MMP:
        eng__set_mmp(e, cmd);
        break;
    case ENG_CMD_RESET_MMP:
        eng__reset_mmp(e, cmd);
        break;
    case ENG_CMD_SET_LIMITS:
        eng__set_limits(e, cmd);
        break;
    default:
        eng__reject(e, cmd, ENG_BAD_COMMAND);
        break;
    }
    if (ENG_UNLIKELY(e->mmp.trip_head))
        eng__mmp_trip(e);
    e->stats.events += e->ev_len - before;
    ENG_ASSERT_EXPENSIVE(verified(e, before));
    return (int64_t)(e->ev_len - before);
}

int64_t eng_process(struct eng *e, const struct eng_cmd *cmd)
{
    return process_keyed(e, cmd, ids_key(&e->ids, cmd->order_id));
}

/*
 * A batch knows its future: while command i runs, the memory later commands
 * will need is fetched, in stages so each stage's load is already cached when
 * the next one reads it: the order-id index bucket that the command's order_id
 * names (PREFETCH_BUCKET ahead) -- a cancel's or modify's target, with caller
 * ids a new order's own id, and for other commands a bucket nobody reads, a
 * fetch cheaper than the branch on the command's type that would skip it
 * (that branch mispredicts on a mixed flow) -- then, for an engine that
 * numbers its orders, the order that a cancel's or modify's bucket names
 * (PREFETCH_ORDER ahead). Caller ids skip that stage: their cancels mostly
 * follow their order within a message or two, so four commands ahead the bucket
 * does not name it yet, and reading it would only wait for a line the
 * prefetch did not bring. The commands themselves are read in order, which
 * the hardware prefetches unasked. Only hints: a bucket that changes in between
 * costs a wasted fetch, nothing else.
 */
enum { PREFETCH_BUCKET = 8, PREFETCH_ORDER = 4 };

static inline bool targets_order(const struct eng_cmd *c)
{
    return (c->type == ENG_CMD_CANCEL || c->type == ENG_CMD_MODIFY) && c->order_id;
}

/* The key of `c`'s order_id, its home bucket asked for. */
static inline uint32_t key_ahead(const struct eng *e, const struct eng_cmd *c)
{
    uint32_t key = ids_key(&e->ids, c->order_id);
    __builtin_prefetch(&e->ids.buckets[ids_home(&e->ids, key)]);
    return key;
}

size_t eng_process_batch(struct eng *e, const struct eng_cmd *cmds, size_t n)
{
    /* The keys of the next PREFETCH_BUCKET commands' order ids, command j's
       at j % PREFETCH_BUCKET: each computed once, for its prefetch and its
       command. */
    uint32_t keys[PREFETCH_BUCKET];

    for (size_t j = 0; j < n && j < PREFETCH_BUCKET; j++)
        keys[j] = key_ahead(e, &cmds[j]);
    for (size_t i = 0; i < n; i++) {
        uint32_t key = keys[i % PREFETCH_BUCKET];
        if (i + PREFETCH_BUCKET < n)
            keys[i % PREFETCH_BUCKET] = key_ahead(e, &cmds[i + PREFETCH_BUCKET]);
        if (!e->caller_ids && i + PREFETCH_ORDER < n && targets_order(&cmds[i + PREFETCH_ORDER])) {
            uint32_t h = ids_guess(&e->ids, keys[(i + PREFETCH_ORDER) % PREFETCH_BUCKET]);
            if (h)
                __builtin_prefetch(eng__order_at(e, h));
        }
        if (process_keyed(e, &cmds[i], key) < 0)
            return i;
    }
    return n;
}

static inline void set_coid(struct eng_cmd *c, const char *coid)
{
    if (coid)
        memcpy(c->coid, coid, ENG_COID_LEN);
}

/*
 * Process one fast-path command and encode where its events are (see
 * pyengine.h): a lone ACCEPTED of a new order returns its id, a lone
 * CANCELLED of a cancel by id its leaves, a lone REJECTED minus its reason.
 */
static int64_t run_fast(struct eng *e, const struct eng_cmd *c)
{
    const struct eng_event *ev;

    e->ev_len = 0;
    if (eng_process(e, c) < 0)
        return 0;
    ev = e->ev;
    if (e->ev_len == 1) {
        if (ev->type == ENG_EV_REJECTED)
            return -(int64_t)ev->reason;
        if (ev->type == ENG_EV_ACCEPTED && c->type == ENG_CMD_NEW)
            return e->caller_ids ? 1 : (int64_t)ev->order_id;
        if (ev->type == ENG_EV_CANCELLED && c->type == ENG_CMD_CANCEL && c->order_id)
            return ev->leaves;
    }
    return -(int64_t)(ENG_ERR__COUNT + e->ev_len);
}

int64_t eng_limit(struct eng *e, uint32_t instrument, uint8_t side, uint32_t account, int64_t qty,
                  int64_t price)
{
    struct eng_cmd c = {.type = ENG_CMD_NEW,
                        .side = side,
                        .order_type = ENG_LIMIT,
                        .tif = ENG_GTC,
                        .instrument = instrument,
                        .account = account,
                        .price = price,
                        .qty = qty};
    return run_fast(e, &c);
}
int64_t eng_new_order(struct eng *e, uint32_t instrument, uint8_t side, uint8_t order_type,
                      uint8_t tif, uint8_t stp, uint8_t flags, uint32_t account, int64_t qty,
                      int64_t price, const char *coid)
{
    struct eng_cmd c = {.type = ENG_CMD_NEW,
                        .side = side,
                        .order_type = order_type,
                        .tif = tif,
                        .stp = stp,
                        .flags = flags,
                        .instrument = instrument,
                        .account = account,
                        .price = price,
                        .qty = qty};

    set_coid(&c, coid);
    return run_fast(e, &c);
}

int64_t eng_cancel(struct eng *e, uint64_t order_id, uint32_t account)
{
    struct eng_cmd c = {.type = ENG_CMD_CANCEL, .account = account, .order_id = order_id};
    return run_fast(e, &c);
}

int64_t eng_cancel_order(struct eng *e, uint64_t order_id, uint32_t account, uint8_t flags,
                         const char *coid)
{
    struct eng_cmd c = {
        .type = ENG_CMD_CANCEL, .flags = flags, .account = account, .order_id = order_id};

    set_coid(&c, coid);
    return run_fast(e, &c);
}

int64_t eng_modify_order(struct eng *e, uint64_t order_id, uint32_t account, uint8_t flags,
                         int64_t qty, int64_t price, const char *coid)
{
    struct eng_cmd c = {.type = ENG_CMD_MODIFY,
                        .flags = flags,
                        .account = account,
                        .order_id = order_id,
                        .price = price,
                        .qty = qty};

    set_coid(&c, coid);
    return run_fast(e, &c);
}

int64_t eng_run(struct eng *e, const struct eng_cmd *cmd)
{
    return run_fast(e, cmd);
}

int eng_caller_order_ids(const struct eng *e)
{
    return e->caller_ids;
}

uint64_t eng_seq(const struct eng *e)
{
    return e->seq;
}

void eng_get_counters(const struct eng *e, struct eng_counters *out)
{
    out->seq = e->seq;
    out->order_id = e->last_order_id;
    out->trade_id = e->last_trade_id;
}

void eng_raise_counters(struct eng *e, const struct eng_counters *c)
{
    if (c->seq > e->seq)
        e->seq = c->seq;
    if (c->order_id > e->last_order_id)
        e->last_order_id = c->order_id;
    if (c->trade_id > e->last_trade_id)
        e->last_trade_id = c->trade_id;
}

const struct eng_api *eng_api(void)
{
    static const struct eng_api api = {
        .size = sizeof(api),
        .limit = eng_limit,
        .new_order = eng_new_order,
        .cancel = eng_cancel,
        .events = eng_events,
        .cancel_order = eng_cancel_order,
        .modify_order = eng_modify_order,
        .book_levels = eng_book_levels,
        .get_order = eng_get_order,
        .get_order_by_coid = eng_get_order_by_coid,
        .order_shape = eng_order_shape,
        .seq = eng_seq,
        .run = eng_run,
        .caller_order_ids = eng_caller_order_ids,
    };
    return &api;
}
