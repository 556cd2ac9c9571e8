/*
 * snapshot.c - the engine's whole state as a file, and back; its hash.
 *
 * Layout (little-endian, no padding):
 *   struct snap_header                         64 bytes
 *   struct snap_instrument x ninstruments      the instruments, by number
 *   struct snap_order x norders                every resting order: per
 *                                              instrument, bids then asks,
 *                                              best level first, oldest first
 *   struct snap_mmp x nmmp                     market-maker protection, by
 *                                              (account, instrument)
 *   struct eng_order_limits x ninstruments     the order limits, by
 *                                              instrument number
 * The header holds a CRC-32C of itself (with that field zero) and one of the
 * body, so a torn or damaged file is refused whole.
 *
 * Loading appends each order at the back of its level in file order, which is
 * the order they had: time priority survives. Order ids, trade ids and the
 * sequence number continue from the counters. Version 2 files (before
 * market-maker protection) load as files with no protection set, version 2
 * and 3 files (before order limits) as files with no limits set.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "engine_int.h"
#include "fileio.h"

#define SNAP_MAGIC "PYENGSN1"
enum { SNAP_VERSION = 4, SNAP_VERSION_NO_LIMITS = 3, SNAP_VERSION_NO_MMP = 2 };

struct snap_header {
    char magic[8];
    uint32_t version;
    uint32_t ninstruments;
    uint64_t seq;
    uint64_t last_order_id;
    uint64_t last_trade_id;
    uint64_t norders;
    uint32_t body_crc;
    uint32_t header_crc;
    uint32_t flags;    /* enum snap_flags */
    uint32_t nmmp;     /* version 3; zero in version 2 */
};

enum snap_flags { SNAP_F_CALLER_IDS = 1 }; /* the engine took its order ids from the caller */

struct snap_instrument {
    struct eng_instrument_spec spec;
    uint32_t state; /* enum eng_trading_state */
    uint32_t reserved;
};

struct snap_order {
    uint64_t id;
    int64_t price;
    int64_t qty;
    uint32_t instrument;
    uint32_t account;
    uint8_t side; /* enum eng_side */
    uint8_t stp;
    uint8_t flags;
    uint8_t reserved[5];
    char coid[16];
};

struct snap_mmp {
    uint32_t account;
    uint32_t instrument;
    int64_t limit;
    int64_t window;
    int64_t filled;
    int64_t start;
    uint32_t tripped;
    uint32_t reserved;
};

_Static_assert(sizeof(struct snap_header) == 64, "snapshot header layout");
_Static_assert(sizeof(struct snap_mmp) == 48, "snapshot protection layout");
_Static_assert(sizeof(struct snap_instrument) == 64, "snapshot instrument layout");
_Static_assert(sizeof(struct snap_order) == 56, "snapshot order layout");
_Static_assert(sizeof(struct eng_order_limits) == 16, "snapshot limits layout");

/* Call `fn` for every resting order in priority order (see the layout). */
static void each_order(const struct eng *e, void (*fn)(void *ctx, const struct order *o,
                                                       const struct level *lv),
                       void *ctx)
{
    for (uint32_t i = 0; i < e->ninst; i++)
        for (int s = 0; s < 2; s++)
            for (const struct level *lv = book_best(&e->inst[i].book, s); lv;
                 lv = book_next_level(lv))
                for (const struct list_node *it = lv->orders.next; it != &lv->orders;
                     it = it->next)
                    fn(ctx, eng_container_of(it, struct order, link), lv);
}

static void put_order(void *ctx, const struct order *o, const struct level *lv)
{
    struct snap_order **out = ctx;
    struct snap_order *so = (*out)++;
    memset(so, 0, sizeof(*so));
    so->id = o->id;
    so->price = lv->price;
    so->qty = o->qty;
    so->instrument = lv->instrument;
    so->account = o->account;
    so->side = lv->side == BOOK_BID ? ENG_BUY : ENG_SELL;
    so->stp = o->stp;
    so->flags = o->flags;
    memcpy(so->coid, o->coid, sizeof(so->coid));
}

void *eng_snapshot_serialize(const struct eng *e, size_t *len)
{
    size_t specs = e->ninst * sizeof(struct snap_instrument);
    size_t orders = e->ids.count * sizeof(struct snap_order);
    size_t total = sizeof(struct snap_header) + specs + orders + e->mmp.count * sizeof(struct snap_mmp) +
                   e->ninst * sizeof(struct eng_order_limits);
    char *buf = malloc(total);
    struct mmp_entry *entries = malloc((e->mmp.count + 1) * sizeof(*entries));
    struct snap_header *h = (struct snap_header *)buf;
    struct snap_instrument *si;
    struct snap_order *cursor;
    struct snap_mmp *sm;
    struct eng_order_limits *limits;

    if (!buf || !entries) {
        free(buf);
        free(entries);
        return NULL;
    }
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, SNAP_MAGIC, 8);
    h->version = SNAP_VERSION;
    h->ninstruments = e->ninst;
    h->seq = e->seq;
    h->last_order_id = e->last_order_id;
    h->last_trade_id = e->last_trade_id;
    h->norders = e->ids.count;
    h->flags = e->caller_ids ? SNAP_F_CALLER_IDS : 0;
    h->nmmp = e->mmp.count;
    si = (struct snap_instrument *)(buf + sizeof(*h));
    for (uint32_t i = 0; i < e->ninst; i++, si++) {
        memset(si, 0, sizeof(*si));
        si->spec = e->inst[i].spec;
        si->state = e->inst[i].state;
    }
    cursor = (struct snap_order *)(buf + sizeof(*h) + specs);
    each_order(e, put_order, &cursor);
    sm = (struct snap_mmp *)cursor;
    mmp_sorted(&e->mmp, entries);
    for (uint32_t i = 0; i < e->mmp.count; i++, sm++) {
        memset(sm, 0, sizeof(*sm));
        sm->account = entries[i].account;
        sm->instrument = entries[i].instrument;
        sm->limit = entries[i].limit;
        sm->window = entries[i].window;
        sm->filled = entries[i].filled;
        sm->start = entries[i].start;
        sm->tripped = entries[i].tripped;
    }
    free(entries);
    limits = (struct eng_order_limits *)sm;
    for (uint32_t i = 0; i < e->ninst; i++)
        limits[i] = e->inst[i].limits;
    h->body_crc = crc32c(0, buf + sizeof(*h), total - sizeof(*h));
    h->header_crc = crc32c(0, h, sizeof(*h));
    *len = total;
    return buf;
}

void eng_free_buffer(void *buf)
{
    free(buf);
}

int eng_snapshot_write_file(const char *dir, const void *buf, size_t len)
{
    const struct snap_header *h = buf;
    char name[64];

    snprintf(name, sizeof(name), "snapshot-%020llu.snap", (unsigned long long)h->seq);
    return fio_replace_file(dir, name, buf, len);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc((size_t)size + 1);
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    *len = (size_t)size;
out:
    fclose(f);
    return buf;
}

/* Check header, sizes and checksums of a snapshot image. */
static bool image_valid(const char *buf, size_t len)
{
    struct snap_header h;
    size_t expect;

    if (len < sizeof(h))
        return false;
    memcpy(&h, buf, sizeof(h));
    if (memcmp(h.magic, SNAP_MAGIC, 8) != 0 || h.version < SNAP_VERSION_NO_MMP || h.version > SNAP_VERSION)
        return false;
    {
        uint32_t want = h.header_crc;
        h.header_crc = 0;
        if (crc32c(0, &h, sizeof(h)) != want)
            return false;
    }
    if (h.version == SNAP_VERSION_NO_MMP && h.nmmp != 0)
        return false;
    if (h.ninstruments > ENG_MAX_INSTRUMENTS || h.norders > (len / sizeof(struct snap_order)) ||
        h.nmmp > len / sizeof(struct snap_mmp))
        return false;
    expect = sizeof(h) + h.ninstruments * sizeof(struct snap_instrument) +
             h.norders * sizeof(struct snap_order) + (size_t)h.nmmp * sizeof(struct snap_mmp) +
             (h.version == SNAP_VERSION ? h.ninstruments * sizeof(struct eng_order_limits) : 0);
    return expect == len && crc32c(0, buf + sizeof(h), len - sizeof(h)) == h.body_crc;
}

/* Put one protection entry back, after the orders: ENG_CORRUPT for one a
   consistent engine could not hold (a tripped account with resting orders
   on the instrument: a trip cancels them all, and new ones are refused). */
static int restore_mmp(struct eng *e, const struct snap_mmp *sm)
{
    struct mmp_entry *en;

    if (sm->instrument >= e->ninst || sm->limit < 0 || sm->window < 0 || sm->filled < 0 ||
        sm->tripped > 1 || (sm->limit == 0 && (sm->tripped || sm->filled)) || sm->reserved ||
        mmp_find(&e->mmp, sm->account, sm->instrument) ||
        (sm->tripped && eng__account_rests_on(&e->inst[sm->instrument].book, sm->account)))
        return ENG_CORRUPT;
    en = mmp_get(&e->mmp, sm->account, sm->instrument);
    if (!en)
        return ENG_NO_MEMORY;
    en->limit = sm->limit;
    en->window = sm->window;
    en->filled = sm->filled;
    en->start = sm->start;
    en->tripped = (uint8_t)sm->tripped;
    if (en->limit > 0) {
        e->mmp.active++;
        e->inst[sm->instrument].mmp_active++;
    }
    e->mmp.tripped += en->tripped;
    return ENG_OK;
}

int eng_snapshot_load(struct eng *e, const char *path, uint64_t *seq)
{
    size_t len = 0;
    char *buf;
    const struct snap_header *h;
    const struct snap_instrument *insts;
    const struct snap_order *orders;
    const struct snap_mmp *mmps;
    const struct eng_order_limits *limits;
    int rc = ENG_CORRUPT, err;

    if (e->ninst != 0 || e->ids.count != 0 || e->seq != 0) {
        errno = EINVAL;
        return ENG_INVALID_ARGUMENT;
    }
    buf = read_file(path, &len);
    if (!buf)
        return ENG_INVALID_ARGUMENT;
    if (!image_valid(buf, len))
        goto out;
    h = (const struct snap_header *)buf;
    if (h->flags & ~(uint32_t)SNAP_F_CALLER_IDS)
        goto out;
    if (!(h->flags & SNAP_F_CALLER_IDS) != !e->caller_ids) {
        /* Order ids mean something else in the other mode. */
        errno = EINVAL;
        rc = ENG_INVALID_ARGUMENT;
        goto out;
    }
    insts = (const struct snap_instrument *)(buf + sizeof(*h));
    orders = (const struct snap_order *)(insts + h->ninstruments);
    for (uint32_t i = 0; i < h->ninstruments; i++) {
        uint32_t id;
        if (insts[i].state > ENG_STATE_HALTED)
            goto out;
        if ((err = eng_add_instrument(e, &insts[i].spec, &id)) != ENG_OK)
            goto refused;
        e->inst[id].state = (uint8_t)insts[i].state;
    }
    for (uint64_t i = 0; i < h->norders; i++) {
        const struct snap_order *o = &orders[i];
        if (o->id == 0 || (!e->caller_ids && o->id > h->last_order_id))
            goto out;
        if ((err = eng__restore_order(e, o->instrument, o->side, o->price, o->qty, o->id,
                                      o->account, o->stp, o->flags, o->coid)) != ENG_OK)
            goto refused;
    }
    mmps = (const struct snap_mmp *)(orders + h->norders);
    for (uint32_t i = 0; i < h->nmmp; i++)
        if ((err = restore_mmp(e, &mmps[i])) != ENG_OK)
            goto refused;
    limits = (const struct eng_order_limits *)(mmps + h->nmmp);
    for (uint32_t i = 0; h->version == SNAP_VERSION && i < h->ninstruments; i++) {
        if (limits[i].max_qty < 0 || limits[i].max_notional < 0)
            goto out;
        e->inst[i].limits = limits[i];
    }
    e->seq = h->seq;
    e->last_order_id = h->last_order_id;
    e->last_trade_id = h->last_trade_id;
    *seq = h->seq;
    rc = ENG_OK;
    goto out;
refused:
    /* Out of memory says nothing of the file; anything else a sound file
       could not have made. */
    rc = err == ENG_NO_MEMORY ? ENG_NO_MEMORY : ENG_CORRUPT;
out:
    free(buf);
    return rc;
}

/* ---- state hash ------------------------------------------------------------ */

static inline uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x100000001B3ull; /* FNV-1a's prime, over 64-bit words */
    return h ^ (h >> 29);
}

static void hash_order(void *ctx, const struct order *o, const struct level *lv)
{
    uint64_t *h = ctx, w0, w1;
    memcpy(&w0, o->coid, 8);
    memcpy(&w1, o->coid + 8, 8);
    *h = mix(*h, o->id);
    *h = mix(*h, (uint64_t)lv->price);
    *h = mix(*h, (uint64_t)o->qty);
    *h = mix(*h, ((uint64_t)lv->instrument << 32) | o->account);
    *h = mix(*h, ((uint64_t)lv->side << 16) | ((uint64_t)o->stp << 8) | o->flags);
    *h = mix(*h, w0);
    *h = mix(*h, w1);
}

/* The protection entries: a sum of one hash per entry, so the table's
   placement (which differs between an engine and its restored copy) does not
   count. */
static uint64_t hash_mmp(const struct eng *e)
{
    uint64_t sum = 0;

    for (uint32_t i = 0; e->mmp.slots && i <= e->mmp.mask; i++) {
        const struct mmp_entry *en = &e->mmp.slots[i];
        uint64_t h = 0xcbf29ce484222325ull;
        if (!en->used)
            continue;
        h = mix(h, ((uint64_t)en->account << 32) | en->instrument);
        h = mix(h, (uint64_t)en->limit);
        h = mix(h, (uint64_t)en->window);
        h = mix(h, (uint64_t)en->filled);
        h = mix(h, (uint64_t)en->start);
        sum += mix(h, en->tripped);
    }
    return sum;
}

uint64_t eng_state_hash(const struct eng *e)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = mix(h, e->seq);
    h = mix(h, e->last_order_id);
    h = mix(h, e->last_trade_id);
    h = mix(h, e->ninst);
    for (uint32_t i = 0; i < e->ninst; i++) {
        const struct eng_instrument_spec *s = &e->inst[i].spec;
        h = mix(h, crc32c(0, s, sizeof(*s)));
        h = mix(h, e->inst[i].state);
        if (e->inst[i].limits.max_qty || e->inst[i].limits.max_notional) { /* none: the hash of before limits */
            h = mix(h, (uint64_t)e->inst[i].limits.max_qty);
            h = mix(h, (uint64_t)e->inst[i].limits.max_notional);
        }
    }
    each_order(e, hash_order, &h);
    h = mix(h, hash_mmp(e));
    return h;
}
