/*
 * harness_adapter.c - the gateway in front of the core (see harness_adapter.h).
 *
 * The id map is linear probing over a power-of-two table at most half full
 * (sized for the flow's peak of open orders plus a batch), a multiplicative
 * hash's top bits choosing the slot, deletion by backward shift so no
 * tombstones build up. Key 0 is the empty slot (caller ids are never 0).
 *
 * The batch paths: the ids a batch creates are only known once it has run,
 * yet most cancels here follow their order within two messages, so mostly
 * in the same batch. HADAPT_BATCH predicts them: the core gives each accepted
 * new order the next id of its counter, and every new order of this flow is
 * accepted, so the k-th new order of a batch gets the counter + k. Each
 * ACCEPTED event is checked against the prediction, and the counter at the
 * end against the count of new orders; a mismatch fails the replay rather
 * than going on with wrong ids.
 * HADAPT_BATCH_SPLIT predicts nothing: a new order's id enters the map as
 * pending, and a message that needs a pending id ends the batch there, so
 * the ACCEPTED events fill it in first. It shows what the batch path gives a
 * gateway that cannot rely on the counter.
 */
#include "harness_adapter.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH = 1024 };

struct hadapt {
    const struct hflow *f;
    int path;
    struct eng *e;
    uint64_t *keys;    /* caller ids, 0 = empty */
    uint64_t *vals;    /* the core's ids, 0 = pending (HADAPT_BATCH_SPLIT) */
    size_t mask;
    int shift;
    uint64_t *to_caller; /* the core's id -> caller id */
    size_t max_eid;
    uint64_t next_seq;   /* the seq the core gives the next command */
    struct eng_cmd *cmds;
    uint64_t *callers;   /* the caller id of each new order in cmds */
    uint64_t *expect;    /* HADAPT_BATCH: the core's id predicted for each */
    struct hadapt_sums sums;
};

const char *hadapt_path_name(int path)
{
    static const char *const names[HADAPT__COUNT] = {"cmd", "batch", "batch_split", "ids_cmd",
                                                     "ids_batch"};
    return path >= 0 && path < HADAPT__COUNT ? names[path] : "?";
}

static size_t home(const struct hadapt *a, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> a->shift);
}

/* The slot holding `key`, or the empty slot where it would go. */
static size_t slot(const struct hadapt *a, uint64_t key)
{
    size_t i = home(a, key);
    while (a->keys[i] && a->keys[i] != key)
        i = (i + 1) & a->mask;
    return i;
}

static void erase_at(struct hadapt *a, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & a->mask;
        if (!a->keys[j])
            break;
        /* Move the entry at j back to i unless its home lies in (i, j]. */
        if (((j - home(a, a->keys[j])) & a->mask) >= ((j - i) & a->mask)) {
            a->keys[i] = a->keys[j];
            a->vals[i] = a->vals[j];
            i = j;
        }
    }
    a->keys[i] = 0;
}

static void map_erase(struct hadapt *a, uint64_t key)
{
    size_t i = slot(a, key);
    if (a->keys[i])
        erase_at(a, i);
}

static bool caller_ids(int path)
{
    return path == HADAPT_IDS_CMD || path == HADAPT_IDS_BATCH;
}

struct hadapt *hadapt_create(const struct hflow *f, int path)
{
    struct hadapt *a = calloc(1, sizeof(*a));
    size_t cap = 1024;
    uint32_t inst;

    if (!a)
        return NULL;
    while (cap < 2 * (f->peak_open + BATCH + 1))
        cap *= 2;
    a->f = f;
    a->path = path;
    a->mask = cap - 1;
    a->shift = 64;
    for (size_t c = cap; c > 1; c >>= 1)
        a->shift--;
    a->max_eid = f->nnew;
    a->next_seq = 1;
    a->e = eng_create(&(struct eng_config){.expected_orders = (uint32_t)f->peak_open,
                                           .caller_order_ids = caller_ids(path)});
    a->keys = calloc(cap, sizeof(*a->keys));
    a->vals = calloc(cap, sizeof(*a->vals));
    a->to_caller = calloc(f->nnew + 1, sizeof(*a->to_caller));
    a->cmds = aligned_alloc(64, BATCH * sizeof(*a->cmds));
    a->callers = malloc(BATCH * sizeof(*a->callers));
    a->expect = malloc(BATCH * sizeof(*a->expect));
    if (!a->e || !a->keys || !a->vals || !a->to_caller || !a->cmds || !a->callers || !a->expect ||
        eng_add_instrument(a->e, &hflow_instrument, &inst) != ENG_OK) {
        hadapt_destroy(a);
        return NULL;
    }
    return a;
}

void hadapt_destroy(struct hadapt *a)
{
    if (!a)
        return;
    eng_destroy(a->e);
    free(a->keys);
    free(a->vals);
    free(a->to_caller);
    free(a->cmds);
    free(a->callers);
    free(a->expect);
    free(a);
}

void hadapt_get_sums(const struct hadapt *a, struct hadapt_sums *out)
{
    *out = a->sums;
}

static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

static void sum_trade(struct hadapt_sums *s, uint64_t taker, uint64_t maker, int64_t price,
                      int64_t qty)
{
    s->trades++;
    s->traded_qty += (uint64_t)qty;
    s->trade_hash = mix(mix(mix(mix(s->trade_hash, taker), maker), (uint64_t)price),
                        (uint64_t)qty);
}

/* The new order (or, for a cancel or modify, everything but its target). */
static void to_cmd(const struct hflow_msg *m, struct eng_cmd *c)
{
    *c = (struct eng_cmd){.account = 1, .price = m->price, .qty = m->qty};
    if (m->kind == HFLOW_CANCEL) {
        c->type = ENG_CMD_CANCEL;
    } else if (m->kind == HFLOW_MODIFY) {
        c->type = ENG_CMD_MODIFY;
    } else {
        c->type = ENG_CMD_NEW;
        c->side = m->side;
        c->order_type = ENG_LIMIT;
        c->tif = m->kind == HFLOW_IOC ? ENG_IOC : ENG_GTC;
    }
}

/*
 * Takes in the events of the commands sent since `seq0`, whose new orders'
 * caller ids are callers[seq - seq0]: maps the ids of accepted orders (or,
 * with `predicted`, checks them against expect[seq - seq0], already mapped),
 * forgets finished orders, sums up.
 */
static int drain(struct hadapt *a, uint64_t seq0, const uint64_t *callers, size_t ncmds,
                 int predicted)
{
    size_t n;
    const struct eng_event *ev = eng_events(a->e, &n);
    struct hadapt_sums *s = &a->sums;

    for (size_t k = 0; k < n; k++) {
        switch (ev[k].type) {
        case ENG_EV_ACCEPTED: {
            uint64_t caller, id = ev[k].order_id;
            size_t i;
            if (ev[k].seq - seq0 >= ncmds || id > a->max_eid)
                return -1;
            if (predicted) {
                if (a->expect[ev[k].seq - seq0] != id)
                    return -1;
                break;
            }
            caller = callers[ev[k].seq - seq0];
            i = slot(a, caller);
            a->keys[i] = caller;
            a->vals[i] = id;
            a->to_caller[id] = caller;
            break;
        }
        case ENG_EV_TRADE: {
            uint64_t taker = a->to_caller[ev[k].order_id];
            uint64_t maker = a->to_caller[ev[k].maker_order_id];
            sum_trade(s, taker, maker, ev[k].price, ev[k].qty);
            if (ev[k].maker_leaves == 0)
                map_erase(a, maker);
            if (ev[k].leaves == 0)
                map_erase(a, taker);
            break;
        }
        case ENG_EV_CANCELLED:
            /* A user's cancel forgot its id when it was sent (see target). */
            s->cancelled++;
            if (ev[k].reason != ENG_CANCEL_USER)
                map_erase(a, a->to_caller[ev[k].order_id]);
            break;
        case ENG_EV_REJECTED:
            s->rejected++;
            break;
        default:
            break;
        }
    }
    eng_clear_events(a->e);
    return 0;
}

/*
 * The core's id of a cancel's or modify's target, 0 if it is not open (we
 * reject it ourselves), or HADAPT_PENDING if it is not known yet. A cancel
 * forgets the id as it goes out: once the core has run it the order is gone,
 * cancelled or finished before, and the slot is hot now, not once its events
 * come back. (This flow's modifies never cancel: their qty is at least 2.)
 */
static const uint64_t HADAPT_PENDING = ~0ull;

static uint64_t target(struct hadapt *a, const struct hflow_msg *m)
{
    size_t i = slot(a, m->id);
    uint64_t id = a->vals[i];
    if (!a->keys[i])
        return 0;
    if (!id)
        return HADAPT_PENDING;
    if (m->kind == HFLOW_CANCEL)
        erase_at(a, i);
    return id;
}

static int replay_cmd(struct hadapt *a)
{
    const struct hflow_msg *m = a->f->msgs;
    for (size_t i = 0; i < a->f->n; i++) {
        struct eng_cmd c;
        to_cmd(&m[i], &c);
        if (c.type != ENG_CMD_NEW && !(c.order_id = target(a, &m[i]))) {
            a->sums.rejected++;
            continue;
        }
        if (eng_process(a->e, &c) < 0 || drain(a, a->next_seq, &m[i].id, 1, 0) != 0)
            return -1;
        a->next_seq++;
    }
    return 0;
}

static int replay_batch(struct hadapt *a, int predict)
{
    const struct hflow_msg *m = a->f->msgs;
    struct eng_counters cnt;
    size_t i = 0;

    while (i < a->f->n) {
        size_t nb = 0;
        eng_get_counters(a->e, &cnt);
        for (uint64_t next = cnt.order_id + 1; nb < BATCH && i < a->f->n; i++) {
            struct eng_cmd *c = &a->cmds[nb];
            to_cmd(&m[i], c);
            if (c->type == ENG_CMD_NEW) {
                size_t s = slot(a, m[i].id);
                a->keys[s] = m[i].id;
                a->vals[s] = predict ? next : 0;
                if (predict) {
                    if (next > a->max_eid)
                        return -1;
                    a->expect[nb] = next;
                    a->to_caller[next++] = m[i].id;
                }
            } else if (!(c->order_id = target(a, &m[i]))) {
                a->sums.rejected++;
                continue;
            } else if (c->order_id == HADAPT_PENDING) {
                break;
            }
            a->callers[nb++] = m[i].id;
        }
        if (nb == 0 && i < a->f->n)
            return -1; /* pending, yet nothing sent that could resolve it */
        if (nb == 0)
            break; /* the last messages were all rejected here */
        if (eng_process_batch(a->e, a->cmds, nb) != nb ||
            drain(a, a->next_seq, a->callers, nb, predict) != 0)
            return -1;
        a->next_seq += nb;
        a->sums.batches++;
    }
    if (predict) {
        eng_get_counters(a->e, &cnt);
        if (cnt.order_id != a->f->nnew)
            return -1;
    }
    return 0;
}

/* The events of the caller-id paths name the caller's ids: only sums. */
static void drain_ids(struct hadapt *a)
{
    size_t n;
    const struct eng_event *ev = eng_events(a->e, &n);
    struct hadapt_sums *s = &a->sums;

    for (size_t k = 0; k < n; k++) {
        if (ev[k].type == ENG_EV_TRADE)
            sum_trade(s, ev[k].order_id, ev[k].maker_order_id, ev[k].price, ev[k].qty);
        else if (ev[k].type == ENG_EV_CANCELLED)
            s->cancelled++;
        else if (ev[k].type == ENG_EV_REJECTED)
            s->rejected++;
    }
    eng_clear_events(a->e);
}

static void to_ids_cmd(const struct hflow_msg *m, struct eng_cmd *c)
{
    to_cmd(m, c);
    c->order_id = m->id;
}

static int replay_ids_cmd(struct hadapt *a)
{
    const struct hflow_msg *m = a->f->msgs;
    for (size_t i = 0; i < a->f->n; i++) {
        struct eng_cmd c;
        to_ids_cmd(&m[i], &c);
        if (eng_process(a->e, &c) < 0)
            return -1;
        drain_ids(a);
    }
    return 0;
}

static int replay_ids_batch(struct hadapt *a)
{
    const struct hflow_msg *m = a->f->msgs;

    for (size_t i = 0; i < a->f->n;) {
        size_t nb = a->f->n - i < BATCH ? a->f->n - i : BATCH;
        for (size_t k = 0; k < nb; k++)
            to_ids_cmd(&m[i + k], &a->cmds[k]);
        if (eng_process_batch(a->e, a->cmds, nb) != nb)
            return -1;
        drain_ids(a);
        a->sums.batches++;
        i += nb;
    }
    return 0;
}

int hadapt_replay(struct hadapt *a)
{
    switch (a->path) {
    case HADAPT_CMD:
        return replay_cmd(a);
    case HADAPT_BATCH:
    case HADAPT_BATCH_SPLIT:
        return replay_batch(a, a->path == HADAPT_BATCH);
    case HADAPT_IDS_CMD:
        return replay_ids_cmd(a);
    case HADAPT_IDS_BATCH:
        return replay_ids_batch(a);
    default:
        return -1;
    }
}
