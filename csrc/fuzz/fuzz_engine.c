/*
 * fuzz_engine.c - libFuzzer harness for the matching core.
 *
 * Every input builds a fresh engine with three instruments and four
 * accounts, decodes the bytes into a command stream, runs each command
 * through the engine (eng_process(), a batch or the fast paths, as the
 * input's first byte says) and checks after every one of them:
 *   - eng_verify() (every internal invariant);
 *   - the events against an order-by-order model kept here: ids are
 *     consecutive (with caller order ids: each is the NEW's own, never 0 nor
 *     that of an open order, and a finished order's id may come again),
 *     each trade is at the maker's price, within the taker's
 *     limit, between opposite sides, never a self-trade under STP, never by a
 *     post-only taker, and its leaves follow from the open quantities; a
 *     cancel removes exactly the open quantity; FOK, IOC and market orders
 *     never rest; rejected commands produce one event and change nothing;
 *   - trading states: a halted instrument takes no NEW or MODIFY;
 *   - the account-wide commands: a CANCEL_ALL cancels exactly the account's
 *     (or every account's) open orders in its scope, in book order
 *     (instruments by number, bids then asks, best price first, oldest
 *     first; the model stamps each order with the command that put it at
 *     the back of its level), each with its LEVEL event, then one
 *     MASS_CANCELLED with their count, reason and scope (account 0 for
 *     every account); SET_MMP and RESET_MMP answer with one MMP event as
 *     the model of market-maker protection (fuzz_mmp.c) has it; the reject
 *     reason of these commands (and of an unknown type) is the one the
 *     rules give;
 *   - market-maker protection: every TRADE counts for the taker and the
 *     maker in the model; after the command's own events, each entry that
 *     went over its limit trips in turn: its account's orders on the
 *     instrument go in book order (reason mmp), then one MMP event with
 *     TRIPPED; a NEW of a tripped account is refused (mmp);
 *   - the model against the engine: the open quantity (and fields) of every
 *     order an event names equals eng_get_order(), the open order count
 *     equals eng_get_stats(), eng_book_orders() lists exactly the resting
 *     orders, LEVEL events equal the book, the trading states equal
 *     eng_instrument_state(), each level lists its orders oldest first,
 *     eng_get_mmp() equals the model's protection, and a tripped account
 *     rests nothing where it tripped;
 *   - order limits: a SET_LIMITS answers with one LIMITS event (its reject
 *     reason, as for the account-wide commands, is the one the rules give),
 *     and eng_get_order_limits() equals the model's limits; a NEW, or a
 *     MODIFY that leaves more than a reduction at its order's price, whose
 *     own checks pass is refused max_qty_exceeded or max_notional_exceeded
 *     exactly when those limits say so (a market order by its quantity
 *     only), before any later check; nothing over them is accepted or
 *     modified, and no other command is refused for them;
 *   - conservation per instrument: accepted + modify increases
 *     - traded (both sides) - cancelled - modify decreases equals the
 *     quantity resting in the book, and bought == sold;
 *   - the book is never crossed (best bid < best ask).
 * Any violation prints one line to stderr and aborts.
 *
 * Byte format (bytes past the end read as 0):
 *   byte 0: engine config. bit 0: level_events; bits 1-2: expected_orders
 *           0 (default), 1, 16 or 4096; bits 3-4, how commands go in: 0-1
 *           eng_process(), 2 eng_process_batch() of one and
 *           eng_take_events(), 3 the fast paths (eng_limit, eng_new_order,
 *           eng_cancel, eng_cancel_order, eng_modify_order),
 *           eng_run() for what they cannot carry; bit 5: caller_order_ids.
 *   then records `op a b c`. op bits 0-1: instrument (3 means 0), bits 2-3:
 *   account, bits 4-7: kind:
 *     0-4    NEW limit. a: bit 0 sell, bits 1-4 aggressiveness: the price is
 *            (bits - 8) ticks from the mid toward the other side; bits 5-6
 *            tif (0-1 GTC, 2 IOC, 3 FOK); bit 7 post-only (GTC only).
 *            b: bits 0-3 qty in lots - 1, bits 4-5 stp, bit 7 coid "k<c&7>".
 *            c: bits 0-2 coid number; bits 3-5: 6 off-tick price, 7 off-lot
 *            qty; bits 6-7 qty scale (1, 1, 5, 40).
 *            Without caller order ids, b bit 6 gives the NEW an order id
 *            (which the engine ignores). With them, every NEW record
 *            (kinds 0-4, 6, 7) has a fifth byte `d` for its id: bits 0-2 0-2 a
 *            fresh id (a bijective scramble of a counter, so unique);
 *            3 UINT64_MAX - (d >> 3); 4 zero (bad_order_id); 5 the id of
 *            the (d >> 3)-th open order, newest first (duplicate_order_id);
 *            6 the id of the (d >> 3)-th finished order whose id is free
 *            (reused: accepted); 7 the id of the (d >> 3)-th open order
 *            with its high 32 bits changed (the same low 32 bits). 5-7 take
 *            a fresh id when there is no such order.
 *     5      account-wide, as a bits 0-1 say:
 *            0 CANCEL_ALL: a bit 2 DEAD_MAN, bit 3 ALL_INSTRUMENTS (the
 *              instrument field is then b, which the engine ignores), bit 4
 *              ALL_ACCOUNTS (the account field is then 0, or with bit 5 the
 *              record's: bad_command unless that is 0; with bit 2
 *              bad_flags);
 *            1 SET_MMP: the limit, b bits 0-4 n, bit 5 one more, bits 6-7:
 *              0-2 n lots times 1, 5 or 40 (+1), 3 INT64_MAX - n; the
 *              window, c bits 0-5 w, bits 6-7: w, w << 6, w << 20 or
 *              INT64_MAX - w;
 *            2 RESET_MMP;
 *            3 no command: the clock (every command's ts; it moves on by
 *              one per command, wrapping) moves, a bits 2-3: 0 on by
 *              b + 256c, 1 on by (b + 256c + 1) << 16, 2 back by b + 256c,
 *              3 to INT64_MAX - b (c bit 0 clear) or INT64_MIN + b.
 *     6      NEW market: as NEW limit, without a price; a bit 5: FOK, else IOC.
 *     7      NEW with extreme values: as NEW limit, then b bits 0-3 pick the
 *            qty from fz_extreme_qty (rounded to the lot unless c bit 3);
 *            c bits 4-5: 0 keep the price, 1 the highest on-tick price,
 *            2 one tick, 3 a market order.
 *     8-9    CANCEL by order id; 10 CANCEL by coid "k<c&7>".
 *            a picks the id: bits 6-7 0-1: the (a&63)-th resting order,
 *            newest first; 2: the id (a&63) below the newest; 3: id a&63.
 *            b: bit 0 ANY_ACCOUNT, bit 1 send as the order's owner, bit 6
 *            also set coid "k<c&7>".
 *     11-12  MODIFY by order id; 13 MODIFY by coid. Target as for CANCEL.
 *            b bits 2-3, new qty: 0 open - (c&3) lots, 1 (c&15) lots,
 *            2 open + (c&7)+1 lots, 3 (c&7) - 4 (raw).
 *            b bits 4-5, price: 0-1 KEEP_PRICE, 2 (c>>4) - 8 ticks from the
 *            mid of the order's instrument, 3 its current price given.
 *            b bit 7, with a price given: KEEP_QTY (the qty above is then
 *            ignored).
 *     14     malformed: two more bytes `d e`. A command is decoded from
 *            `a b c` (d bits 0-1: 0 NEW limit, 1 account-wide as kind 5,
 *            where a clock choice gives a CANCEL_ALL, 2 CANCEL, 3 MODIFY
 *            by id),
 *            then field d bits 2-5 gets an odd value from e (fz_corrupt).
 *            With caller order ids the NEW has a fresh id, or 0 if e bit 7.
 *     15     a bits 5-7 0-4: no command, move the instrument's mid by
 *            (a % 5) - 2 ticks, within +/- FZ_MAX_DRIFT; 5: decode and run
 *            the last record that ran a command again, b + 1 times (deep
 *            books, sweeps); 6 or 7 without bit 4: SET_STATE open; 7 with
 *            bit 4: SET_STATE halted; 6 with bit 4: SET_LIMITS. Its
 *            max_qty: b bits 0-5 n, bits 6-7: n, n * 16 lots, INT64_MAX - n
 *            or -1 - n; its max_notional: c bits 0-5 m, bits 6-7: m * 1000,
 *            m * 64000, INT64_MAX - m or -1 - m (0 is none; an order of
 *            q lots at the starting mid is worth q * lot * 1000). a bit 0:
 *            a flag (bad_flags); bit 1: reserved set (bad_command); bits
 *            2-3 k > 0: the unknown instrument FZ_NINST - 1 + k (3:
 *            UINT32_MAX).
 *   An input runs at most FZ_MAX_COMMANDS commands.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_mmp.h"
#include "pyengine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    FZ_NINST = FZM_INSTRUMENTS,
    FZ_MAX_DRIFT = 24,
    FZ_PAGE = 64,
    FZ_MAX_COMMANDS = 4096,
    FZ_MIN_ORDERS = 64
};

/* How commands reach the engine (config bits 3-4). */
enum fz_route { FZ_ROUTE_PROCESS, FZ_ROUTE_BATCH, FZ_ROUTE_FAST };

static const struct eng_instrument_spec fz_specs[FZ_NINST] = {
    {.symbol = "AAA", .tick_size = 1, .lot_size = 1, .market_protection = -1},
    {.symbol = "BBB", .tick_size = 5, .lot_size = 3, .market_protection = 0},
    {.symbol = "CCC", .tick_size = 2, .lot_size = 4, .min_price = 960, .max_price = 1040,
     .market_protection = 6},
};

/* Each instrument's starting mid, in ticks (1000 in price for all three). */
static const int64_t fz_mid0[FZ_NINST] = {1000, 200, 500};

static const int64_t fz_extreme_qty[16] = {
    INT64_MAX,           INT64_MAX - 1,     INT64_MAX / 2 + 1, INT64_MAX / 2,
    INT64_C(1) << 62,    INT64_MAX / 3,     INT64_C(1) << 53,  INT64_C(1) << 32,
    INT64_C(1) << 31,    INT64_MAX - 4,     INT64_MAX / 2 - 1, 2,
    0,                   -1,                -3,                INT64_MIN,
};

/* One record of the input: `op a b c`, and `d e` for kind 14. */
struct fz_rec {
    uint8_t op, a, b, c, d, e;
};

/* One order as the events describe it. */
struct fz_order {
    uint64_t id;
    int64_t open;  /* open quantity */
    int64_t price; /* 0 for a market order */
    uint32_t account;
    uint32_t instrument;
    uint8_t side;
    uint8_t stp;
    bool post_only;
    bool market;
    bool resting; /* open at the end of the last command */
    uint64_t stamp; /* seq of the command that put it at the back of its level */
    char coid[ENG_COID_LEN];
};

/* The order that trades in the current command (the new or repriced one). */
struct fz_taker {
    uint64_t id; /* 0: none (yet) */
    int64_t limit;
    int64_t last_price;
    uint64_t trades;
    uint8_t tif;
    bool fok_cancelled;
};

/* One entry of the model's order-id index: the newest order with an id. */
struct fz_slot_of {
    uint64_t id;
    uint64_t slot; /* 0: an empty entry */
};

struct fz {
    struct eng *e;
    bool level_events;
    bool caller_ids; /* eng_config.caller_order_ids */
    enum fz_route route;
    struct fz_order *orders;       /* by slot: 1, 2, ... in the order accepted */
    size_t cap;                    /* slots are < cap */
    struct fz_slot_of *index;      /* 2 * cap entries, open addressing */
    struct eng_level_info *levels; /* cap entries: scratch for book queries */
    struct fz_rec last;            /* the last record that ran a command */
    bool has_last;
    uint64_t seq;
    uint64_t naccepted;  /* the last slot (= the last order id by default) */
    uint64_t ids_issued; /* fresh caller ids so far */
    uint64_t last_trade_id;
    uint64_t nresting;
    int64_t drift[FZ_NINST];
    int state[FZ_NINST]; /* enum eng_trading_state */
    struct eng_order_limits limits[FZ_NINST]; /* as the LIMITS events set them */
    int64_t clock;       /* the next command's ts */
    struct fzm mmp;      /* market-maker protection as the model has it */
    /* Conservation, mod 2^64 (quantities may be huge). */
    uint64_t qty_in[FZ_NINST];
    uint64_t qty_out[FZ_NINST];
    uint64_t filled[FZ_NINST][2]; /* traded, by the side of the order */
};

/* What the harness knew before the command ran. */
struct fz_expect {
    bool clean;            /* decoded as a well-formed command (not kind 14) */
    bool duplicate_coid;   /* NEW: an open order of the account has its coid */
    bool bad_id;           /* NEW with caller order ids: its order id is 0 */
    bool duplicate_id;     /* NEW with caller order ids: an open order has its id */
    uint64_t target;       /* CANCEL/MODIFY: the slot of the open order addressed,
                              0: none */
    bool halted;           /* NEW/MODIFY: its instrument is halted */
    bool mmp_tripped;      /* NEW: its account's protection there has tripped */
    int64_t market_limit;  /* NEW market: the protection limit */
    int limit_reject;      /* NEW, MODIFY: the reject the instrument's order
                              limits give the order (a MODIFY: what it leaves,
                              unless it cancels or only lowers the qty at the
                              order's price), else ENG_OK */
    bool exact;            /* the model knows the outcome: reject `reject`,
                              or accepted (ENG_OK) */
    int reject;
};

/* The orders a run of cancels covers: those of `account` (of every account
   with `every`) on the instruments [lo, hi]. */
struct fz_scope {
    uint32_t account;
    uint32_t lo, hi;
    bool every;
};

/* A run of cancels that must go in book order: a CANCEL_ALL's, or a trip's. */
struct fz_sweep {
    uint64_t last; /* slot of the order it cancelled last; 0: none yet */
    int64_t count;
};

/* What the events of the command so far have done. */
struct fz_progress {
    struct fz_taker tk;
    struct fz_sweep sweep;
    int64_t now;   /* the command's ts: protection's clock */
    bool tripping; /* the command's own events are over: protection trips */
};

struct fz_in {
    const uint8_t *p;
    size_t n;
};

/* ---- failing -------------------------------------------------------------- */

__attribute__((noreturn)) static void fz_fail(const struct fz *fz, int line, const char *what)
{
    fprintf(stderr, "fuzz_engine.c:%d: %s (command seq %llu)\n", line, what,
            (unsigned long long)fz->seq);
    abort();
}

#define FZ_CHECK(fz, cond, what) ((cond) ? (void)0 : fz_fail((fz), __LINE__, (what)))

/* ---- decoding ------------------------------------------------------------- */

static uint8_t fz_byte(struct fz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static int64_t fz_price(const struct fz *fz, uint32_t inst, int64_t ticks_from_mid)
{
    return (fz_mid0[inst] + fz->drift[inst] + ticks_from_mid) * fz_specs[inst].tick_size;
}

static void fz_set_coid(char coid[ENG_COID_LEN], unsigned k)
{
    memset(coid, 0, ENG_COID_LEN);
    coid[0] = 'k';
    coid[1] = (char)('0' + k);
}

static bool fz_coid_empty(const char coid[ENG_COID_LEN])
{
    for (int i = 0; i < ENG_COID_LEN; i++)
        if (coid[i])
            return false;
    return true;
}

static int64_t fz_sat_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* A bijection of 64-bit values (splitmix64's finalizer): 0 stays 0. */
static uint64_t fz_mix(uint64_t x)
{
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* The slot of the newest order with id `id`, 0 if none was accepted. */
static uint64_t fz_slot(const struct fz *fz, uint64_t id)
{
    size_t mask = 2 * fz->cap - 1;

    for (size_t i = fz_mix(id) & mask; fz->index[i].slot; i = (i + 1) & mask)
        if (fz->index[i].id == id)
            return fz->index[i].slot;
    return 0;
}

/* Order id `id` now names the order in `slot`. */
static void fz_index_put(struct fz *fz, uint64_t id, uint64_t slot)
{
    size_t mask = 2 * fz->cap - 1, i = fz_mix(id) & mask;

    while (fz->index[i].slot && fz->index[i].id != id)
        i = (i + 1) & mask;
    fz->index[i] = (struct fz_slot_of){.id = id, .slot = slot};
}

static struct fz_order *fz_order_at(const struct fz *fz, uint64_t id)
{
    uint64_t slot = fz_slot(fz, id);

    FZ_CHECK(fz, slot != 0, "event names an order id never accepted");
    return &fz->orders[slot];
}

/* The slot of the k-th resting order (mod their count), newest first; 0 if none. */
static uint64_t fz_nth_resting_slot(const struct fz *fz, unsigned k)
{
    if (fz->nresting == 0)
        return 0;
    k %= fz->nresting;
    for (uint64_t s = fz->naccepted; s >= 1; s--)
        if (fz->orders[s].resting && k-- == 0)
            return s;
    fz_fail(fz, __LINE__, "resting count out of step with the orders");
}

/* A fresh caller id: unique, as fz_mix is a bijection and the counter only rises. */
static uint64_t fz_fresh_id(struct fz *fz)
{
    return fz_mix(++fz->ids_issued);
}

/* The id of the k-th resting order, newest first; an id never used if none. */
static uint64_t fz_nth_resting(const struct fz *fz, unsigned k)
{
    uint64_t s = fz_nth_resting_slot(fz, k);

    if (s)
        return fz->orders[s].id;
    return fz->caller_ids ? fz_mix(fz->ids_issued + 1) : fz->naccepted + 1;
}

/* Is `s` a finished order whose id no later order has taken? */
static bool fz_id_free(const struct fz *fz, uint64_t s)
{
    return !fz->orders[s].resting && fz_slot(fz, fz->orders[s].id) == s;
}

/* The slot of the k-th finished order with a free id (mod their count),
   newest first; 0 if none. */
static uint64_t fz_nth_finished_slot(const struct fz *fz, unsigned k)
{
    uint64_t count = 0;

    for (uint64_t s = 1; s <= fz->naccepted; s++)
        count += fz_id_free(fz, s);
    if (count == 0)
        return 0;
    k %= count;
    for (uint64_t s = fz->naccepted; s >= 1; s--)
        if (fz_id_free(fz, s) && k-- == 0)
            return s;
    fz_fail(fz, __LINE__, "finished orders out of step");
}

/* The id a NEW brings with caller order ids, as byte `d` says. */
static uint64_t fz_caller_id(struct fz *fz, uint8_t d)
{
    unsigned k = d >> 3;
    uint64_t s;

    switch (d & 7) {
    case 3:
        return UINT64_MAX - k;
    case 4:
        return 0;
    case 5:
        s = fz_nth_resting_slot(fz, k);
        return s ? fz->orders[s].id : fz_fresh_id(fz);
    case 6:
        s = fz_nth_finished_slot(fz, k);
        return s ? fz->orders[s].id : fz_fresh_id(fz);
    case 7:
        s = fz_nth_resting_slot(fz, k);
        return s ? fz->orders[s].id ^ ((uint64_t)(k + 1) << 32) : fz_fresh_id(fz);
    default:
        return fz_fresh_id(fz);
    }
}

/* The slot of the resting order of `account` with client order id `coid`, or 0. */
static uint64_t fz_find_coid(const struct fz *fz, uint32_t account, const char *coid)
{
    if (fz_coid_empty(coid))
        return 0;
    for (uint64_t s = 1; s <= fz->naccepted; s++) {
        const struct fz_order *o = &fz->orders[s];
        if (o->resting && o->account == account && memcmp(o->coid, coid, ENG_COID_LEN) == 0)
            return s;
    }
    return 0;
}

static struct eng_cmd fz_new_limit(const struct fz *fz, uint32_t inst, uint32_t account,
                                   uint8_t a, uint8_t b, uint8_t c)
{
    static const int64_t scale[4] = {1, 1, 5, 40};
    static const uint8_t tifs[4] = {ENG_GTC, ENG_GTC, ENG_IOC, ENG_FOK};
    int64_t aggr = (int64_t)((a >> 1) & 15) - 8;
    struct eng_cmd cmd = {.type = ENG_CMD_NEW,
                          .side = (a & 1) ? ENG_SELL : ENG_BUY,
                          .order_type = ENG_LIMIT,
                          .tif = tifs[(a >> 5) & 3],
                          .stp = (uint8_t)((b >> 4) & 3),
                          .instrument = inst,
                          .account = account};

    if ((a & 0x80) && cmd.tif == ENG_GTC)
        cmd.flags = ENG_CMD_F_POST_ONLY;
    cmd.price = fz_price(fz, inst, cmd.side == ENG_BUY ? aggr : -aggr);
    cmd.qty = (1 + (b & 15)) * scale[c >> 6] * fz_specs[inst].lot_size;
    if (b & 0x80)
        fz_set_coid(cmd.coid, c & 7);
    if (((c >> 3) & 7) == 6)
        cmd.price += 1;
    else if (((c >> 3) & 7) == 7)
        cmd.qty += 1;
    return cmd;
}

static void fz_make_market(struct eng_cmd *cmd, uint8_t a)
{
    cmd->order_type = ENG_MARKET;
    cmd->tif = (a & 0x20) ? ENG_FOK : ENG_IOC;
    cmd->price = 0;
    cmd->flags = 0;
}

static struct eng_cmd fz_new_extreme(const struct fz *fz, uint32_t inst, uint32_t account,
                                     uint8_t a, uint8_t b, uint8_t c)
{
    struct eng_cmd cmd = fz_new_limit(fz, inst, account, a, b, c);
    int64_t tick = fz_specs[inst].tick_size, lot = fz_specs[inst].lot_size;

    cmd.qty = fz_extreme_qty[b & 15];
    if (!(c & 8))
        cmd.qty -= cmd.qty % lot;
    switch ((c >> 4) & 3) {
    case 1:
        cmd.price = INT64_MAX - INT64_MAX % tick;
        break;
    case 2:
        cmd.price = tick;
        break;
    case 3:
        fz_make_market(&cmd, a);
        break;
    default:
        break;
    }
    return cmd;
}

static uint64_t fz_pick_id(const struct fz *fz, uint8_t a)
{
    unsigned k = a & 63;

    switch (a >> 6) {
    case 0:
    case 1:
        return fz_nth_resting(fz, k);
    case 2:
        return fz->naccepted > k ? fz->orders[fz->naccepted - k].id : 0;
    default:
        return k;
    }
}

/* A CANCEL or MODIFY with its target; *target is the order it addresses. */
static struct eng_cmd fz_target_cmd(const struct fz *fz, uint8_t type, bool by_coid,
                                    uint32_t inst, uint32_t account, uint8_t a, uint8_t b,
                                    uint8_t c, const struct fz_order **target)
{
    struct eng_cmd cmd = {.type = type, .instrument = inst, .account = account};
    uint64_t slot;

    if (b & 1)
        cmd.flags |= ENG_CMD_F_ANY_ACCOUNT;
    if (by_coid || (b & 0x40))
        fz_set_coid(cmd.coid, c & 7);
    if (by_coid) {
        slot = fz_find_coid(fz, account, cmd.coid);
    } else {
        cmd.order_id = fz_pick_id(fz, a);
        slot = fz_slot(fz, cmd.order_id);
        if (slot && (b & 2))
            cmd.account = fz->orders[slot].account;
    }
    *target = slot ? &fz->orders[slot] : NULL;
    return cmd;
}

static struct eng_cmd fz_cancel(const struct fz *fz, bool by_coid, uint32_t inst,
                                uint32_t account, uint8_t a, uint8_t b, uint8_t c)
{
    const struct fz_order *o;
    return fz_target_cmd(fz, ENG_CMD_CANCEL, by_coid, inst, account, a, b, c, &o);
}

static struct eng_cmd fz_modify(const struct fz *fz, bool by_coid, uint32_t inst,
                                uint32_t account, uint8_t a, uint8_t b, uint8_t c)
{
    const struct fz_order *o;
    struct eng_cmd cmd = fz_target_cmd(fz, ENG_CMD_MODIFY, by_coid, inst, account, a, b, c, &o);
    uint32_t oi = o ? o->instrument : inst;
    int64_t open = o ? o->open : 0, lot = fz_specs[oi].lot_size;

    switch ((b >> 2) & 3) {
    case 0:
        cmd.qty = open - (c & 3) * lot;
        break;
    case 1:
        cmd.qty = (c & 15) * lot;
        break;
    case 2:
        cmd.qty = fz_sat_add(open, ((c & 7) + 1) * lot);
        break;
    default:
        cmd.qty = (int64_t)(c & 7) - 4;
        break;
    }
    switch ((b >> 4) & 3) {
    case 2:
        cmd.price = fz_price(fz, oi, (int64_t)(c >> 4) - 8);
        break;
    case 3:
        cmd.price = o ? o->price : fz_price(fz, oi, 0);
        break;
    default:
        cmd.flags |= ENG_CMD_F_KEEP_PRICE;
        break;
    }
    if ((b & 0x80) && !(cmd.flags & ENG_CMD_F_KEEP_PRICE))
        cmd.flags |= ENG_CMD_F_KEEP_QTY;
    return cmd;
}

/* Give field `field` of `cmd` a value derived from `v` that is usually wrong. */
static void fz_corrupt(struct eng_cmd *cmd, unsigned field, uint8_t v)
{
    switch (field) {
    case 0:
        cmd->type = v;
        break;
    case 1:
        cmd->side = v;
        break;
    case 2:
        cmd->order_type = v;
        break;
    case 3:
        cmd->tif = v;
        break;
    case 4:
        cmd->stp = v;
        break;
    case 5:
        cmd->flags = v;
        break;
    case 6:
        cmd->reserved = (uint16_t)(v + 1);
        break;
    case 7:
        cmd->instrument = v == 255 ? UINT32_MAX : (uint32_t)FZ_NINST + v;
        break;
    case 8: /* a byte just outside printable ASCII */
        cmd->coid[v & 15] = (char)((v & 16) ? 0x7f : 0x1f);
        break;
    case 9: /* a printable byte after a NUL: not NUL-padded */
        fz_set_coid(cmd->coid, v & 7);
        cmd->coid[3 + (v % 13)] = 'x';
        break;
    case 10: /* valid: all 16 bytes used */
        memset(cmd->coid, 'A' + v % 26, ENG_COID_LEN);
        break;
    case 11:
        cmd->price = -(int64_t)v;
        break;
    case 12:
        cmd->qty = -(int64_t)v;
        break;
    case 13: /* a market order with a price */
        cmd->order_type = ENG_MARKET;
        cmd->tif = ENG_IOC;
        break;
    case 14: /* post-only on an IOC or FOK order */
        cmd->flags |= ENG_CMD_F_POST_ONLY;
        cmd->tif = (v & 1) ? ENG_IOC : ENG_FOK;
        break;
    default: /* valid: an account far from the others */
        cmd->account = UINT32_MAX - (v & 3);
        break;
    }
}

/* A SET_MMP window from byte `c`. */
static int64_t fz_mmp_window(uint8_t c)
{
    int64_t w = c & 63;

    switch (c >> 6) {
    case 1:
        return w << 6;
    case 2:
        return w << 20;
    case 3:
        return INT64_MAX - w;
    default:
        return w;
    }
}

/* A CANCEL_ALL, SET_MMP or RESET_MMP as `a` bits 0-1 say (3: CANCEL_ALL). */
static struct eng_cmd fz_account_wide(uint32_t inst, uint32_t account, uint8_t a, uint8_t b,
                                      uint8_t c)
{
    static const int64_t scale[3] = {1, 5, 40};
    struct eng_cmd cmd = {.instrument = inst, .account = account};
    int64_t n = b & 31;

    switch (a & 3) {
    case 1:
        cmd.type = ENG_CMD_SET_MMP;
        if (b >> 6 == 3)
            cmd.qty = INT64_MAX - n;
        else
            cmd.qty = n * fz_specs[inst].lot_size * scale[b >> 6] + ((b >> 5) & 1);
        cmd.price = fz_mmp_window(c);
        break;
    case 2:
        cmd.type = ENG_CMD_RESET_MMP;
        break;
    default:
        cmd.type = ENG_CMD_CANCEL_ALL;
        if (a & 4)
            cmd.flags |= ENG_CMD_F_DEAD_MAN;
        if (a & 8) {
            cmd.flags |= ENG_CMD_F_ALL_INSTRUMENTS;
            cmd.instrument = b;
        }
        if (a & 16) {
            cmd.flags |= ENG_CMD_F_ALL_ACCOUNTS;
            cmd.account = (a & 32) ? account : 0;
        }
        break;
    }
    return cmd;
}

/* Move the clock as a clock record says; it wraps (a clock that jumps). */
static void fz_move_clock(struct fz *fz, uint8_t a, uint8_t b, uint8_t c)
{
    uint64_t by = b + 256u * c, now = (uint64_t)fz->clock;

    switch ((a >> 2) & 3) {
    case 0:
        now += by;
        break;
    case 1:
        now += (by + 1) << 16;
        break;
    case 2:
        now -= by;
        break;
    default:
        now = (c & 1) ? (uint64_t)INT64_MIN + b : (uint64_t)INT64_MAX - b;
        break;
    }
    fz->clock = (int64_t)now;
}

static struct eng_cmd fz_malformed(const struct fz *fz, uint32_t inst, uint32_t account,
                                   const struct fz_rec *r)
{
    struct eng_cmd cmd;

    switch (r->d & 3) {
    case 1:
        cmd = fz_account_wide(inst, account, (r->a & 3) == 3 ? r->a & ~3 : r->a, r->b, r->c);
        break;
    case 2:
        cmd = fz_cancel(fz, false, inst, account, r->a, r->b, r->c);
        break;
    case 3:
        cmd = fz_modify(fz, false, inst, account, r->a, r->b, r->c);
        break;
    default:
        cmd = fz_new_limit(fz, inst, account, r->a, r->b, r->c);
        break;
    }
    fz_corrupt(&cmd, (r->d >> 2) & 15, r->e);
    return cmd;
}

static void fz_move_mid(struct fz *fz, uint32_t inst, uint8_t a)
{
    int64_t d = fz->drift[inst] + (int64_t)(a % 5) - 2;
    if (d >= -FZ_MAX_DRIFT && d <= FZ_MAX_DRIFT)
        fz->drift[inst] = d;
}

static struct eng_cmd fz_set_state(uint32_t inst, uint32_t account, uint8_t a)
{
    bool halt = (a >> 5) == 7 && (a & 16);
    return (struct eng_cmd){.type = ENG_CMD_SET_STATE,
                            .instrument = inst,
                            .account = account,
                            .qty = halt ? ENG_STATE_HALTED : ENG_STATE_OPEN};
}

/* A SET_LIMITS limit from byte `v`: small (0 is none), `big` times larger,
   near INT64_MAX, or negative. */
static int64_t fz_limit(uint8_t v, int64_t unit, int64_t big)
{
    int64_t n = v & 63;

    switch (v >> 6) {
    case 1:
        return n * unit * big;
    case 2:
        return INT64_MAX - n;
    case 3:
        return -1 - n;
    default:
        return n * unit;
    }
}

/* A SET_LIMITS (kind 15) as `a b c` say. */
static struct eng_cmd fz_set_limits(uint32_t inst, uint32_t account, uint8_t a, uint8_t b,
                                    uint8_t c)
{
    static const uint32_t unknown[4] = {0, FZ_NINST, FZ_NINST + 1, UINT32_MAX};
    struct eng_cmd cmd = {.type = ENG_CMD_SET_LIMITS,
                          .instrument = (a >> 2) & 3 ? unknown[(a >> 2) & 3] : inst,
                          .account = account,
                          .qty = fz_limit(b, 1, 16 * fz_specs[inst].lot_size),
                          .price = fz_limit(c, 1000, 64)};

    if (a & 1)
        cmd.flags = ENG_CMD_F_ANY_ACCOUNT;
    if (a & 2)
        cmd.reserved = 1;
    return cmd;
}

/* ---- the model: one handler per event type -------------------------------- */

/* Make room for slot `slot` (and as many levels). */
static void fz_reserve(struct fz *fz, uint64_t slot)
{
    size_t cap = fz->cap;

    FZ_CHECK(fz, slot <= FZ_MAX_COMMANDS, "more orders than commands");
    if (slot < cap)
        return;
    while (cap <= slot)
        cap *= 2;
    fz->orders = realloc(fz->orders, cap * sizeof(*fz->orders));
    fz->levels = realloc(fz->levels, cap * sizeof(*fz->levels));
    free(fz->index);
    fz->index = calloc(2 * cap, sizeof(*fz->index));
    FZ_CHECK(fz, fz->orders && fz->levels && fz->index, "out of memory");
    memset(&fz->orders[fz->cap], 0, (cap - fz->cap) * sizeof(*fz->orders));
    fz->cap = cap;
    for (uint64_t s = 1; s <= fz->naccepted; s++)
        fz_index_put(fz, fz->orders[s].id, s);
}

/* Could instrument `inst` accept `qty` at `price` (0: a market order)? */
static bool fz_order_valid(uint32_t inst, int64_t qty, int64_t price)
{
    const struct eng_instrument_spec *s = &fz_specs[inst];
    bool banded = s->min_price || s->max_price;

    if (qty <= 0 || qty % s->lot_size != 0)
        return false;
    if (price == 0)
        return true;
    return price > 0 && price % s->tick_size == 0 &&
           (!banded || (price >= s->min_price && price <= s->max_price));
}

static void fz_on_accepted(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                           size_t i, struct fz_taker *tk, const struct fz_expect *x)
{
    struct fz_order *o;
    bool market = c->order_type == ENG_MARKET;
    uint64_t slot = fz->naccepted + 1;

    FZ_CHECK(fz, i == 0 && c->type == ENG_CMD_NEW, "ACCEPTED not first or not for a NEW");
    if (fz->caller_ids) {
        FZ_CHECK(fz, ev->order_id == c->order_id, "ACCEPTED: not the caller's order id");
        FZ_CHECK(fz, !x->bad_id && !x->duplicate_id, "accepted order id 0 or an open one's");
    } else {
        FZ_CHECK(fz, ev->order_id == slot, "order ids not consecutive");
    }
    fz_reserve(fz, slot);
    FZ_CHECK(fz, ev->instrument < FZ_NINST && ev->instrument == c->instrument,
             "ACCEPTED: wrong instrument");
    FZ_CHECK(fz, ev->qty > 0 && ev->qty == c->qty, "ACCEPTED: wrong qty");
    FZ_CHECK(fz, (ev->side == ENG_BUY || ev->side == ENG_SELL) && ev->side == c->side &&
                     ev->account == c->account,
             "ACCEPTED: wrong side/account");
    FZ_CHECK(fz, ev->price == (market ? 0 : c->price), "ACCEPTED: wrong price");
    FZ_CHECK(fz, memcmp(ev->coid, c->coid, ENG_COID_LEN) == 0, "ACCEPTED: wrong coid");
    FZ_CHECK(fz, fz_order_valid(ev->instrument, ev->qty, ev->price),
             "ACCEPTED: off lot, off tick or outside the band");
    FZ_CHECK(fz, !x->duplicate_coid, "accepted a duplicate client order id");
    FZ_CHECK(fz, !x->halted, "accepted a NEW on a halted instrument");
    FZ_CHECK(fz, !x->mmp_tripped, "accepted a NEW of an account whose protection tripped");
    FZ_CHECK(fz, x->limit_reject == ENG_OK, "accepted a NEW over its instrument's order limits");

    fz->naccepted = slot;
    fz_index_put(fz, ev->order_id, slot);
    o = &fz->orders[slot];
    *o = (struct fz_order){.id = ev->order_id,
                           .open = ev->qty,
                           .price = ev->price,
                           .account = ev->account,
                           .instrument = ev->instrument,
                           .side = ev->side,
                           .stp = c->stp,
                           .post_only = (c->flags & ENG_CMD_F_POST_ONLY) != 0,
                           .market = market,
                           .stamp = fz->seq};
    memcpy(o->coid, ev->coid, ENG_COID_LEN);
    fz->qty_in[ev->instrument] += (uint64_t)ev->qty;
    *tk = (struct fz_taker){.id = ev->order_id,
                            .limit = market ? x->market_limit : c->price,
                            .last_price = ev->side == ENG_BUY ? INT64_MIN : INT64_MAX,
                            .tif = c->tif};
}

static void fz_on_rejected(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                           size_t i, size_t n, const struct fz_expect *x)
{
    static const char no_coid[ENG_COID_LEN];
    bool market = c->order_type == ENG_MARKET;
    /* The order it names: a cancel's or modify's target, a new order (its
       id with caller ids); other commands name none. */
    bool targets = c->type == ENG_CMD_CANCEL || c->type == ENG_CMD_MODIFY;
    bool names = targets || c->type == ENG_CMD_NEW;

    FZ_CHECK(fz, i == 0 && n == 1, "REJECTED is not the command's only event");
    FZ_CHECK(fz, ev->reason > ENG_OK && ev->reason < ENG_ERR__COUNT, "REJECTED: bad reason");
    FZ_CHECK(fz, ev->reason != ENG_CORRUPT && ev->reason != ENG_NO_MEMORY,
             "REJECTED: corrupt or no_memory");
    FZ_CHECK(fz, ev->order_id == (targets || (c->type == ENG_CMD_NEW && fz->caller_ids) ? c->order_id : 0),
             "REJECTED: wrong order id");
    FZ_CHECK(fz, ev->account == c->account &&
                 memcmp(ev->coid, names ? c->coid : no_coid, ENG_COID_LEN) == 0,
             "REJECTED: wrong account/coid");
    if (c->type == ENG_CMD_NEW && ev->reason == ENG_DUPLICATE_CLIENT_ORDER_ID)
        FZ_CHECK(fz, x->duplicate_coid, "duplicate_client_order_id without a duplicate");
    if (ev->reason == ENG_HALTED)
        FZ_CHECK(fz, x->halted, "rejected as halted, but the instrument is open");
    if (ev->reason == ENG_BAD_ORDER_ID)
        FZ_CHECK(fz, x->bad_id, "bad_order_id for a command that may have its id");
    if (ev->reason == ENG_DUPLICATE_ORDER_ID)
        FZ_CHECK(fz, x->duplicate_id, "duplicate_order_id without an open order of that id");
    if (ev->reason == ENG_MMP)
        FZ_CHECK(fz, c->type == ENG_CMD_NEW && x->mmp_tripped,
                 "rejected as mmp, but protection has not tripped there");
    if (ev->reason == ENG_MAX_QTY_EXCEEDED || ev->reason == ENG_MAX_NOTIONAL_EXCEEDED)
        FZ_CHECK(fz, (c->type == ENG_CMD_NEW || c->type == ENG_CMD_MODIFY) &&
                         ev->reason == x->limit_reject,
                 "rejected for an order limit the model's limits do not give");
    if (ev->reason == ENG_BAD_ORDER_LIMITS)
        FZ_CHECK(fz, c->type == ENG_CMD_SET_LIMITS, "bad_order_limits for another command");
    if (x->exact)
        FZ_CHECK(fz, ev->reason == x->reject, "rejected, but not for the reason the rules give");
    if (x->clean && x->bad_id)
        FZ_CHECK(fz, ev->reason == ENG_BAD_ORDER_ID, "order id 0 not rejected as bad_order_id");
    /* A clean NEW's shape is good: after its id, the instrument's state and
       then its account's protection come first. */
    if (x->clean && c->type == ENG_CMD_NEW && x->mmp_tripped && !x->bad_id && !x->halted)
        FZ_CHECK(fz, ev->reason == ENG_MMP, "a NEW of a tripped account not rejected as mmp");
    /* After the checks of the command alone and the limits, the id's comes
       first. */
    if (x->clean && x->duplicate_id && !x->halted && !x->mmp_tripped && !x->limit_reject &&
        fz_order_valid(c->instrument, c->qty, market ? 0 : c->price))
        FZ_CHECK(fz, ev->reason == ENG_DUPLICATE_ORDER_ID,
                 "an open order's id not rejected as duplicate_order_id");
}

static void fz_on_trade(struct fz *fz, const struct eng_event *ev, struct fz_progress *p)
{
    struct fz_taker *tk = &p->tk;
    struct fz_order *t = fz_order_at(fz, ev->order_id);
    struct fz_order *m = fz_order_at(fz, ev->maker_order_id);
    struct fzm_entry *tm = fzm_entry(&fz->mmp, ev->account, ev->instrument);
    struct fzm_entry *mm = fzm_entry(&fz->mmp, ev->maker_account, ev->instrument);
    bool buy = t->side == ENG_BUY;

    FZ_CHECK(fz, ev->qty > 0, "TRADE: qty not positive");
    FZ_CHECK(fz, ev->trade_id == fz->last_trade_id + 1, "trade ids not consecutive");
    FZ_CHECK(fz, tk->id && ev->order_id == tk->id, "TRADE: taker is not the command's order");
    FZ_CHECK(fz, m != t && m->resting && m->open > 0, "TRADE: maker was not resting");
    FZ_CHECK(fz, t->instrument == ev->instrument && m->instrument == ev->instrument,
             "TRADE: instruments differ");
    FZ_CHECK(fz, ev->side == t->side && m->side != t->side, "TRADE: sides wrong");
    FZ_CHECK(fz, ev->account == t->account && ev->maker_account == m->account,
             "TRADE: accounts wrong");
    FZ_CHECK(fz, ev->price == m->price, "TRADE: not at the maker's price");
    FZ_CHECK(fz, buy ? ev->price <= tk->limit : ev->price >= tk->limit,
             "TRADE: beyond the taker's limit");
    FZ_CHECK(fz, buy ? ev->price >= tk->last_price : ev->price <= tk->last_price,
             "TRADE: taker got a better price after a worse one");
    FZ_CHECK(fz, t->stp == ENG_STP_NONE || t->account != m->account, "TRADE: self-trade");
    FZ_CHECK(fz, !t->post_only, "TRADE: a post-only order took liquidity");
    FZ_CHECK(fz, ev->leaves >= 0 && ev->leaves == t->open - ev->qty, "TRADE: taker leaves");
    FZ_CHECK(fz, ev->maker_leaves >= 0 && ev->maker_leaves == m->open - ev->qty,
             "TRADE: maker leaves");

    fz->last_trade_id = ev->trade_id;
    tk->last_price = ev->price;
    tk->trades++;
    t->open = ev->leaves;
    m->open = ev->maker_leaves;
    fz->filled[ev->instrument][t->side - 1] += (uint64_t)ev->qty;
    fz->filled[ev->instrument][m->side - 1] += (uint64_t)ev->qty;
    fz->qty_out[ev->instrument] += 2 * (uint64_t)ev->qty;
    /* Taker first: when both go over on one trade, the taker trips first. */
    FZ_CHECK(fz, tm && mm, "TRADE: an account the harness never uses");
    fzm_fill(&fz->mmp, tm, ev->qty, p->now);
    fzm_fill(&fz->mmp, mm, ev->qty, p->now);
}

/* Is a cancel for `reason` one that command `c` may cause to order `o`? */
static bool fz_cancel_allowed(const struct fz *fz, const struct eng_cmd *c,
                              const struct eng_event *ev, size_t i, const struct fz_order *o,
                              const struct fz_taker *tk)
{
    bool taker = tk->id && ev->order_id == tk->id;

    switch (ev->reason) {
    case ENG_CANCEL_USER:
        if (c->type == ENG_CMD_MODIFY && fz->state[o->instrument] != ENG_STATE_OPEN)
            return false;
        return i == 0 && c->type != ENG_CMD_NEW && o->resting &&
               (c->order_id ? c->order_id == ev->order_id
                            : o->account == c->account &&
                                  memcmp(o->coid, c->coid, ENG_COID_LEN) == 0);
    case ENG_CANCEL_IOC:
        return taker && !o->market && tk->tif == ENG_IOC;
    case ENG_CANCEL_FOK:
        return taker && tk->tif == ENG_FOK && tk->trades == 0 && i == 1;
    case ENG_CANCEL_MARKET_REMAINDER:
        return taker && o->market;
    case ENG_CANCEL_BAND:
        return taker && o->market && fz_specs[o->instrument].market_protection >= 0;
    case ENG_CANCEL_STP:
        if (taker)
            return o->stp != ENG_STP_NONE;
        return tk->id && o->resting && fz_order_at(fz, tk->id)->stp != ENG_STP_NONE &&
               fz_order_at(fz, tk->id)->account == o->account;
    case ENG_CANCEL_LEVEL_FULL:
        return taker && !o->market;
    default:
        return false; /* no_memory cannot happen here */
    }
}

/* Does order `a` come before order `b` in book order (instruments by number,
   bids then asks, best price first, oldest first)? */
static bool fz_book_before(const struct fz_order *a, const struct fz_order *b)
{
    if (a->instrument != b->instrument)
        return a->instrument < b->instrument;
    if (a->side != b->side)
        return a->side == ENG_BUY;
    if (a->price != b->price)
        return a->side == ENG_BUY ? a->price > b->price : a->price < b->price;
    return a->stamp < b->stamp;
}

static bool fz_in_scope(const struct fz_order *o, const struct fz_scope *sc)
{
    return (sc->every || o->account == sc->account) && o->instrument >= sc->lo &&
           o->instrument <= sc->hi;
}

/* Is an order of scope `sc` open? Where a sweep ends (a CANCEL_ALL's, or a
   trip's after the command's own events), every order open in the model
   rests in the book. */
static bool fz_rests_any(const struct fz *fz, const struct fz_scope *sc)
{
    for (uint64_t s = 1; s <= fz->naccepted; s++) {
        const struct fz_order *o = &fz->orders[s];
        if (o->open > 0 && fz_in_scope(o, sc))
            return true;
    }
    return false;
}

/* ev[i] (of n) cancels the order in `slot` as part of a sweep over the orders
   of scope `sc`: it is one of them, it comes after the sweep's last in book
   order, and its level's new state follows. */
static void fz_sweep_cancel(struct fz *fz, struct fz_sweep *sw, const struct eng_event *ev,
                            size_t i, size_t n, uint64_t slot, const struct fz_scope *sc)
{
    const struct fz_order *o = &fz->orders[slot];
    const struct eng_event *next = i + 1 < n ? &ev[i + 1] : NULL;

    FZ_CHECK(fz, fz_in_scope(o, sc),
             "an account-wide cancel of another account's order or instrument");
    FZ_CHECK(fz, !sw->last || fz_book_before(&fz->orders[sw->last], o),
             "an account-wide cancel out of book order");
    if (fz->level_events)
        FZ_CHECK(fz, next && next->type == ENG_EV_LEVEL && next->instrument == o->instrument &&
                         next->side == o->side && next->price == o->price,
                 "an account-wide cancel not followed by its level");
    sw->last = slot;
    sw->count++;
}

/* A sweep is over: it left none of its orders open. */
static void fz_sweep_end(struct fz *fz, struct fz_sweep *sw, const struct fz_scope *sc)
{
    FZ_CHECK(fz, !fz_rests_any(fz, sc), "an account-wide cancel left an order open");
    *sw = (struct fz_sweep){0};
}

/* The orders a CANCEL_ALL the engine accepted covers. */
static struct fz_scope fz_mass_scope(const struct eng_cmd *c)
{
    bool all = c->flags & ENG_CMD_F_ALL_INSTRUMENTS;

    return (struct fz_scope){.account = c->account,
                             .lo = all ? 0 : c->instrument,
                             .hi = all ? FZ_NINST - 1 : c->instrument,
                             .every = c->flags & ENG_CMD_F_ALL_ACCOUNTS};
}

/* The orders a trip of protection entry `en` covers. */
static struct fz_scope fz_trip_scope(const struct fzm_entry *en)
{
    return (struct fz_scope){.account = en->account, .lo = en->instrument, .hi = en->instrument};
}

static int fz_mass_reason(const struct eng_cmd *c)
{
    return (c->flags & ENG_CMD_F_DEAD_MAN) ? ENG_CANCEL_DEAD_MAN : ENG_CANCEL_USER;
}

static void fz_on_cancelled(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                            size_t i, size_t n, struct fz_progress *p)
{
    struct fz_order *o = fz_order_at(fz, ev[i].order_id);
    uint64_t slot = (uint64_t)(o - fz->orders);
    const struct fzm_entry *trip = fzm_next_trip(&fz->mmp);
    struct fz_scope sc;

    FZ_CHECK(fz, ev[i].leaves > 0 && ev[i].leaves == o->open, "CANCELLED: leaves != open qty");
    FZ_CHECK(fz, ev[i].instrument == o->instrument && ev[i].side == o->side &&
                     ev[i].account == o->account && ev[i].price == o->price,
             "CANCELLED: fields differ from the order");
    FZ_CHECK(fz, memcmp(ev[i].coid, o->coid, ENG_COID_LEN) == 0, "CANCELLED: wrong coid");
    if (ev[i].reason == ENG_CANCEL_MMP) {
        FZ_CHECK(fz, trip, "CANCELLED for mmp, but no protection went over its limit");
        p->tripping = true;
        sc = fz_trip_scope(trip);
        fz_sweep_cancel(fz, &p->sweep, ev, i, n, slot, &sc);
    } else if (c->type == ENG_CMD_CANCEL_ALL) {
        FZ_CHECK(fz, ev[i].reason == fz_mass_reason(c), "CANCEL_ALL: a cancel's reason is wrong");
        sc = fz_mass_scope(c);
        fz_sweep_cancel(fz, &p->sweep, ev, i, n, slot, &sc);
    } else {
        FZ_CHECK(fz, fz_cancel_allowed(fz, c, &ev[i], i, o, &p->tk),
                 "CANCELLED: reason not possible here");
    }
    if (ev[i].reason == ENG_CANCEL_FOK)
        p->tk.fok_cancelled = true;
    fz->qty_out[o->instrument] += (uint64_t)o->open;
    o->open = 0;
}

/* The fields an event of an account-wide command or a SET_LIMITS leaves zero. */
static void fz_check_unused(struct fz *fz, const struct eng_event *ev)
{
    FZ_CHECK(fz, ev->side == 0 && ev->order_id == 0 && ev->maker_order_id == 0 &&
                     ev->trade_id == 0 && ev->maker_leaves == 0 && ev->maker_account == 0 &&
                     fz_coid_empty(ev->coid),
             "an account-wide or LIMITS event with a field it does not use set");
}

static void fz_on_mass_cancelled(struct fz *fz, const struct eng_cmd *c,
                                 const struct eng_event *ev, size_t i, size_t n,
                                 struct fz_progress *p)
{
    bool all = c->flags & ENG_CMD_F_ALL_INSTRUMENTS;
    bool every = c->flags & ENG_CMD_F_ALL_ACCOUNTS;
    struct fz_scope sc = fz_mass_scope(c);

    FZ_CHECK(fz, c->type == ENG_CMD_CANCEL_ALL && i == n - 1,
             "MASS_CANCELLED not the last event of a CANCEL_ALL");
    FZ_CHECK(fz, ev->reason == fz_mass_reason(c) && ev->account == (every ? 0 : c->account),
             "MASS_CANCELLED: wrong reason or account");
    FZ_CHECK(fz, ev->flags == ((all ? ENG_EV_F_ALL_INSTRUMENTS : 0) |
                               (every ? ENG_EV_F_ALL_ACCOUNTS : 0)) &&
                     ev->instrument == (all ? 0 : c->instrument),
             "MASS_CANCELLED: wrong scope");
    FZ_CHECK(fz, ev->qty == p->sweep.count && ev->price == 0 && ev->leaves == 0,
             "MASS_CANCELLED: count differs from the cancels");
    fz_check_unused(fz, ev);
    fz_sweep_end(fz, &p->sweep, &sc);
}

/* An MMP event: a SET_MMP's or RESET_MMP's answer, or a trip. */
static void fz_on_mmp(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                      size_t i, size_t n, struct fz_progress *p)
{
    struct fzm_entry *en;
    struct fz_scope sc;

    if (c->type == ENG_CMD_SET_MMP || c->type == ENG_CMD_RESET_MMP) {
        FZ_CHECK(fz, i == 0 && n == 1, "MMP not the only event of a SET_MMP or RESET_MMP");
        en = fzm_entry(&fz->mmp, c->account, c->instrument);
        FZ_CHECK(fz, en != NULL,
                 "SET_MMP/RESET_MMP accepted for an account or instrument never used");
        if (c->type == ENG_CMD_SET_MMP)
            fzm_set(en, c->qty, c->price);
        else
            fzm_reset(en);
    } else {
        en = fzm_next_trip(&fz->mmp);
        FZ_CHECK(fz, en != NULL, "MMP tripped, but no protection went over its limit");
        FZ_CHECK(fz, ev->account == en->account && ev->instrument == en->instrument,
                 "MMP tripped another account or instrument than the next over its limit");
        sc = fz_trip_scope(en);
        fz_sweep_end(fz, &p->sweep, &sc);
        fzm_trip(&fz->mmp);
        p->tripping = true;
    }
    FZ_CHECK(fz, ev->account == en->account && ev->instrument == en->instrument,
             "MMP: wrong account or instrument");
    FZ_CHECK(fz, ev->qty == en->limit && ev->price == en->window && ev->leaves == en->filled,
             "MMP: limit, window or filled qty differs from the model");
    FZ_CHECK(fz, ev->flags == (en->tripped ? ENG_EV_F_TRIPPED : 0) && ev->reason == 0,
             "MMP: tripped or not, unlike the model");
    fz_check_unused(fz, ev);
}

static void fz_on_modified(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                           size_t i, struct fz_taker *tk, const struct fz_expect *x)
{
    struct fz_order *o = fz_order_at(fz, ev->order_id);
    bool kept = ev->flags & ENG_EV_F_PRIORITY_KEPT;
    bool keep_price = c->flags & ENG_CMD_F_KEEP_PRICE;
    bool keep_qty = c->flags & ENG_CMD_F_KEEP_QTY;

    FZ_CHECK(fz, i == 0 && c->type == ENG_CMD_MODIFY, "MODIFIED not first or not for a MODIFY");
    FZ_CHECK(fz, !(keep_price && keep_qty), "MODIFIED for a modify that keeps price and qty");
    FZ_CHECK(fz, o->resting && o->open > 0, "MODIFIED: order was not resting");
    FZ_CHECK(fz, fz->state[o->instrument] == ENG_STATE_OPEN && !x->halted,
             "MODIFIED on a halted instrument");
    FZ_CHECK(fz, ev->qty > 0 && ev->qty == (keep_qty ? o->open : c->qty), "MODIFIED: wrong qty");
    FZ_CHECK(fz, ev->price == (keep_price ? o->price : c->price), "MODIFIED: wrong price");
    FZ_CHECK(fz, ev->instrument == o->instrument && ev->side == o->side &&
                     ev->account == o->account,
             "MODIFIED: fields differ from the order");
    FZ_CHECK(fz, memcmp(ev->coid, o->coid, ENG_COID_LEN) == 0, "MODIFIED: wrong coid");
    FZ_CHECK(fz, fz_order_valid(o->instrument, ev->qty, ev->price) && ev->price > 0,
             "MODIFIED: off lot, off tick or outside the band");
    FZ_CHECK(fz, kept == (ev->price == o->price && ev->qty <= o->open),
             "MODIFIED: priority kept when it should not be, or lost when it should not");
    FZ_CHECK(fz, x->limit_reject == ENG_OK, "MODIFIED to more than its instrument's order limits");

    if (ev->qty > o->open)
        fz->qty_in[o->instrument] += (uint64_t)(ev->qty - o->open);
    else
        fz->qty_out[o->instrument] += (uint64_t)(o->open - ev->qty);
    o->open = ev->qty;
    o->price = ev->price;
    if (kept)
        return;
    o->stamp = fz->seq; /* to the back of its level, once it has matched */
    *tk = (struct fz_taker){.id = ev->order_id,
                            .limit = ev->price,
                            .last_price = o->side == ENG_BUY ? INT64_MIN : INT64_MAX,
                            .tif = ENG_GTC};
}

static void fz_on_level(struct fz *fz, const struct eng_event *ev)
{
    FZ_CHECK(fz, fz->level_events, "LEVEL event without level_events");
    FZ_CHECK(fz, ev->instrument < FZ_NINST && (ev->side == ENG_BUY || ev->side == ENG_SELL),
             "LEVEL: bad instrument or side");
    FZ_CHECK(fz, ev->qty >= 0 && ev->leaves >= 0 && (ev->qty == 0) == (ev->leaves == 0),
             "LEVEL: qty and order count disagree");
}

static void fz_on_state(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                        size_t i, size_t n)
{
    FZ_CHECK(fz, i == 0 && n == 1 && c->type == ENG_CMD_SET_STATE,
             "STATE not the only event of a SET_STATE");
    FZ_CHECK(fz, ev->instrument < FZ_NINST && ev->instrument == c->instrument,
             "STATE: wrong instrument");
    FZ_CHECK(fz, (ev->qty == ENG_STATE_OPEN || ev->qty == ENG_STATE_HALTED) && ev->qty == c->qty,
             "STATE: wrong state");
    FZ_CHECK(fz, ev->account == c->account, "STATE: wrong account");
    fz->state[ev->instrument] = (int)ev->qty;
}

static void fz_on_limits(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                         size_t i, size_t n)
{
    FZ_CHECK(fz, i == 0 && n == 1 && c->type == ENG_CMD_SET_LIMITS,
             "LIMITS not the only event of a SET_LIMITS");
    FZ_CHECK(fz, ev->instrument < FZ_NINST && ev->instrument == c->instrument,
             "LIMITS: wrong instrument");
    FZ_CHECK(fz, ev->qty == c->qty && ev->price == c->price && ev->qty >= 0 && ev->price >= 0,
             "LIMITS: limits differ from the command's");
    FZ_CHECK(fz, ev->account == c->account && ev->leaves == 0 && ev->flags == 0 && ev->reason == 0,
             "LIMITS: wrong account, or leaves, flags or reason set");
    fz_check_unused(fz, ev);
    fz->limits[ev->instrument] =
        (struct eng_order_limits){.max_qty = ev->qty, .max_notional = ev->price};
}

/* ---- checks against the engine after a command ---------------------------- */

/* The model's view of order `id` equals the engine's; track resting. */
static void fz_sync_order(struct fz *fz, uint64_t id)
{
    struct fz_order *o = fz_order_at(fz, id);
    struct eng_order_info oi;
    bool open = eng_get_order(fz->e, id, &oi) == 1;

    FZ_CHECK(fz, o->open >= 0, "open qty went negative");
    FZ_CHECK(fz, open == (o->open > 0), "order open in the model but not the engine or back");
    if (open) {
        FZ_CHECK(fz, oi.order_id == id && oi.qty == o->open && oi.price == o->price,
                 "eng_get_order: qty or price differs from the events");
        FZ_CHECK(fz, oi.instrument == o->instrument && oi.side == o->side &&
                         oi.account == o->account && oi.stp == o->stp &&
                         oi.post_only == o->post_only,
                 "eng_get_order: fields differ from the events");
        FZ_CHECK(fz, memcmp(oi.coid, o->coid, ENG_COID_LEN) == 0, "eng_get_order: wrong coid");
    }
    if (open != o->resting) {
        fz->nresting += open ? 1 : (uint64_t)-1;
        o->resting = open;
    }
}

/* The level (inst, side, price) of the book, or false if there is none. */
static bool fz_book_level(struct fz *fz, uint32_t inst, uint8_t side, int64_t price,
                          struct eng_level_info *out)
{
    int64_t n = eng_book_levels(fz->e, inst, side, fz->levels, fz->cap);

    FZ_CHECK(fz, n >= 0, "eng_book_levels failed");
    for (int64_t i = 0; i < n; i++)
        if (fz->levels[i].price == price) {
            *out = fz->levels[i];
            return true;
        }
    return false;
}

/* The last LEVEL event of each level in a command tells its state now. */
static void fz_check_level_events(struct fz *fz, const struct eng_event *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct eng_level_info lv;
        bool later = false, found;

        if (ev[i].type != ENG_EV_LEVEL)
            continue;
        for (size_t j = i + 1; j < n && !later; j++)
            later = ev[j].type == ENG_EV_LEVEL && ev[j].instrument == ev[i].instrument &&
                    ev[j].side == ev[i].side && ev[j].price == ev[i].price;
        if (later)
            continue;
        found = fz_book_level(fz, ev[i].instrument, ev[i].side, ev[i].price, &lv);
        FZ_CHECK(fz, found == (ev[i].qty != 0), "LEVEL: level presence differs from the book");
        if (found)
            FZ_CHECK(fz, lv.total_qty == ev[i].qty && lv.order_count == (uint64_t)ev[i].leaves,
                     "LEVEL: total or count differs from the book");
    }
}

/* Sum one side of a book's levels; its best price goes to *best (0: empty). */
static uint64_t fz_side_total(struct fz *fz, uint32_t inst, uint8_t side, int64_t *best,
                              uint64_t *orders)
{
    int64_t n = eng_book_levels(fz->e, inst, side, fz->levels, fz->cap);
    uint64_t total = 0;

    FZ_CHECK(fz, n >= 0 && (size_t)n < fz->cap, "eng_book_levels: bad count");
    *best = n ? fz->levels[0].price : 0;
    for (int64_t i = 0; i < n; i++) {
        FZ_CHECK(fz, fz->levels[i].total_qty > 0 && fz->levels[i].order_count > 0,
                 "empty level in the book");
        total += (uint64_t)fz->levels[i].total_qty;
        *orders += fz->levels[i].order_count;
    }
    return total;
}

/* Walk one side's orders FZ_PAGE at a time: each is as the model has it, in
   price order (and oldest first in a level, as the model stamps them), and
   they add up to the levels' totals. */
static void fz_check_side_orders(struct fz *fz, uint32_t inst, uint8_t side, uint64_t total,
                                 uint64_t count)
{
    struct eng_order_info page[FZ_PAGE];
    uint64_t seen = 0, sum = 0, last_stamp = 0;
    int64_t last = side == ENG_BUY ? INT64_MAX : INT64_MIN, k;

    do {
        k = eng_book_orders(fz->e, inst, side, seen, page, FZ_PAGE);
        FZ_CHECK(fz, k >= 0 && k <= FZ_PAGE, "eng_book_orders: bad count");
        for (int64_t i = 0; i < k; i++) {
            const struct fz_order *o = fz_order_at(fz, page[i].order_id);
            FZ_CHECK(fz, o->resting && o->open == page[i].qty && o->price == page[i].price,
                     "eng_book_orders: order differs from the model");
            FZ_CHECK(fz, page[i].instrument == inst && page[i].side == side && o->side == side,
                     "eng_book_orders: order on the wrong book");
            FZ_CHECK(fz, side == ENG_BUY ? page[i].price <= last : page[i].price >= last,
                     "eng_book_orders: not in price order");
            FZ_CHECK(fz, seen + (uint64_t)i == 0 || page[i].price != last || o->stamp > last_stamp,
                     "eng_book_orders: a level's orders not oldest first");
            last = page[i].price;
            last_stamp = o->stamp;
            sum += (uint64_t)page[i].qty;
        }
        seen += (uint64_t)k;
    } while (k == FZ_PAGE);
    FZ_CHECK(fz, seen == count && sum == total, "eng_book_orders differs from eng_book_levels");
}

/* eng_get_mmp() says what the model has, and a tripped account rests
   nothing where it tripped. */
static void fz_check_mmp(struct fz *fz)
{
    struct eng_mmp_info info;

    for (unsigned a = 0; a < FZM_ACCOUNTS; a++)
        for (uint32_t inst = 0; inst < FZ_NINST; inst++) {
            const struct fzm_entry *en = &fz->mmp.entry[a][inst];
            int on = eng_get_mmp(fz->e, en->account, inst, &info);
            FZ_CHECK(fz, on == (en->limit > 0),
                     "eng_get_mmp: protection on or off, unlike the model");
            if (on)
                FZ_CHECK(fz, info.qty_limit == en->limit && info.window == en->window &&
                                 info.filled == en->filled && info.window_start == en->start &&
                                 (info.tripped != 0) == en->tripped,
                         "eng_get_mmp differs from the model");
        }
    if (!fzm_any_tripped(&fz->mmp))
        return;
    for (uint64_t s = 1; s <= fz->naccepted; s++) {
        const struct fz_order *o = &fz->orders[s];
        const struct fzm_entry *en = fzm_entry(&fz->mmp, o->account, o->instrument);
        FZ_CHECK(fz, !o->resting || !en || !en->tripped,
                 "an account rests an order where its protection tripped");
    }
}

static void fz_check_books(struct fz *fz)
{
    uint64_t orders = 0;
    struct eng_stats st;
    struct eng_counters ct;
    struct eng_order_limits limits;

    for (uint32_t inst = 0; inst < FZ_NINST; inst++) {
        int64_t bid, ask;
        uint64_t nbid = 0, nask = 0;
        uint64_t bids = fz_side_total(fz, inst, ENG_BUY, &bid, &nbid);
        uint64_t asks = fz_side_total(fz, inst, ENG_SELL, &ask, &nask);

        FZ_CHECK(fz, bid == 0 || ask == 0 || bid < ask, "crossed book");
        FZ_CHECK(fz, bids + asks == fz->qty_in[inst] - fz->qty_out[inst],
                 "quantity not conserved: in - out != resting");
        FZ_CHECK(fz, fz->filled[inst][0] == fz->filled[inst][1], "bought != sold");
        FZ_CHECK(fz, eng_instrument_state(fz->e, inst) == fz->state[inst],
                 "trading state differs from the STATE events");
        FZ_CHECK(fz, eng_get_order_limits(fz->e, inst, &limits) == 0 &&
                         limits.max_qty == fz->limits[inst].max_qty &&
                         limits.max_notional == fz->limits[inst].max_notional,
                 "eng_get_order_limits differs from the LIMITS events");
        fz_check_side_orders(fz, inst, ENG_BUY, bids, nbid);
        fz_check_side_orders(fz, inst, ENG_SELL, asks, nask);
        orders += nbid + nask;
    }
    FZ_CHECK(fz, eng_get_order_limits(fz->e, FZ_NINST, &limits) == -1,
             "eng_get_order_limits of an unknown instrument");
    eng_get_stats(fz->e, &st);
    eng_get_counters(fz->e, &ct);
    FZ_CHECK(fz, orders == fz->nresting && st.open_orders == fz->nresting,
             "open order count differs");
    FZ_CHECK(fz, ct.order_id == (fz->caller_ids ? 0 : fz->naccepted) && ct.seq == fz->seq &&
                     ct.trade_id == fz->last_trade_id,
             "eng_get_counters differs from the events");
    FZ_CHECK(fz, st.accepted == fz->naccepted && st.trades == fz->last_trade_id &&
                     st.commands == fz->seq,
             "stats counters differ from the events");
}

/* What the taker's own outcome must be once its command is done. */
static void fz_check_taker(struct fz *fz, const struct fz_taker *tk)
{
    const struct fz_order *o;

    if (!tk->id)
        return;
    o = fz_order_at(fz, tk->id);
    if (tk->tif == ENG_FOK)
        FZ_CHECK(fz, tk->fok_cancelled ? tk->trades == 0 : o->open == 0,
                 "FOK order neither filled nor killed whole");
    if (tk->tif != ENG_GTC || o->market)
        FZ_CHECK(fz, o->open == 0, "IOC/FOK/market order left open");
}

/* A clean CANCEL/MODIFY reaches its order exactly when the model says so. */
static void fz_check_target(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                            const struct fz_expect *x)
{
    bool rejected = ev->type == ENG_EV_REJECTED;
    const struct fz_order *o;

    if (!x->clean || (c->type != ENG_CMD_CANCEL && c->type != ENG_CMD_MODIFY))
        return;
    if (!x->target) {
        FZ_CHECK(fz, rejected && ev->reason == ENG_UNKNOWN_ORDER,
                 "command on a finished order not rejected as unknown_order");
        return;
    }
    o = &fz->orders[x->target];
    if (!(c->flags & ENG_CMD_F_ANY_ACCOUNT) && o->account != c->account) {
        FZ_CHECK(fz, rejected && ev->reason == ENG_NOT_OWNER, "not_owner expected");
        return;
    }
    FZ_CHECK(fz, !rejected || (ev->reason != ENG_UNKNOWN_ORDER && ev->reason != ENG_NOT_OWNER),
             "open order not found, or wrong owner check");
    FZ_CHECK(fz, rejected || ev->order_id == o->id, "command reached another order");
    if (c->type == ENG_CMD_CANCEL)
        FZ_CHECK(fz, ev->type == ENG_EV_CANCELLED, "CANCEL of an open order did not cancel it");
}

/* ---- one command ---------------------------------------------------------- */

static int64_t fz_market_limit(struct fz *fz, const struct eng_cmd *c)
{
    struct eng_level_info best;
    uint8_t opp = c->side == ENG_BUY ? ENG_SELL : ENG_BUY;
    int64_t p;

    if (c->instrument >= FZ_NINST || (c->side != ENG_BUY && c->side != ENG_SELL))
        return 0;
    p = fz_specs[c->instrument].market_protection;
    if (p < 0 || eng_book_levels(fz->e, c->instrument, opp, &best, 1) != 1)
        return c->side == ENG_BUY ? INT64_MAX : INT64_MIN;
    return c->side == ENG_BUY ? fz_sat_add(best.price, p) : best.price - p;
}

/* The reject of an account-wide command or a SET_LIMITS as the rules give
   it, in their order; ENG_OK when it is accepted. */
static int fz_account_wide_reject(const struct eng_cmd *c)
{
    const uint8_t mass_flags = ENG_CMD_F_DEAD_MAN | ENG_CMD_F_ALL_INSTRUMENTS | ENG_CMD_F_ALL_ACCOUNTS;
    bool mass = c->type == ENG_CMD_CANCEL_ALL;
    bool every = mass && (c->flags & ENG_CMD_F_ALL_ACCOUNTS);

    if (c->reserved)
        return ENG_BAD_COMMAND;
    if ((c->flags & ~(mass ? mass_flags : 0)) || (every && (c->flags & ENG_CMD_F_DEAD_MAN)))
        return ENG_BAD_FLAGS;
    if (every && c->account)
        return ENG_BAD_COMMAND;
    if (c->instrument >= FZ_NINST && !(mass && (c->flags & ENG_CMD_F_ALL_INSTRUMENTS)))
        return ENG_UNKNOWN_INSTRUMENT;
    if (c->type == ENG_CMD_SET_MMP && (c->qty < 0 || c->price < 0))
        return ENG_BAD_MMP;
    if (c->type == ENG_CMD_SET_LIMITS && (c->qty < 0 || c->price < 0))
        return ENG_BAD_ORDER_LIMITS;
    return ENG_OK;
}

/* What instrument `inst`'s order limits say of `qty` at `price` (0: a
   market order, held to the quantity only), with the notional's exact
   value: one past int64 is over any limit. */
static int fz_limits_reject(const struct fz *fz, uint32_t inst, int64_t price, int64_t qty)
{
    const struct eng_order_limits *l;

    if (inst >= FZ_NINST)
        return ENG_OK;
    l = &fz->limits[inst];
    if (l->max_qty && qty > l->max_qty)
        return ENG_MAX_QTY_EXCEEDED;
    if (l->max_notional && price && (__int128)price * qty > l->max_notional)
        return ENG_MAX_NOTIONAL_EXCEEDED;
    return ENG_OK;
}

/* A MODIFY of the open order `o`: what it leaves, held to the limits unless
   it cancels or only lowers the qty at the order's price; x->exact when
   the model knows every check before the limits passes and they refuse it. */
static void fz_expect_modify_limits(const struct fz *fz, const struct eng_cmd *c,
                                    const struct fz_order *o, bool clean, struct fz_expect *x)
{
    int64_t price = (c->flags & ENG_CMD_F_KEEP_PRICE) ? o->price : c->price;
    int64_t qty = (c->flags & ENG_CMD_F_KEEP_QTY) ? o->open : c->qty;
    bool owner = (c->flags & ENG_CMD_F_ANY_ACCOUNT) || o->account == c->account;

    if (qty <= 0 || (price == o->price && qty <= o->open))
        return;
    x->limit_reject = fz_limits_reject(fz, o->instrument, price, qty);
    if (clean && x->limit_reject && owner && !x->halted &&
        fz_order_valid(o->instrument, qty, price)) {
        x->exact = true;
        x->reject = x->limit_reject;
    }
}

static struct fz_expect fz_expect(struct fz *fz, const struct eng_cmd *c, bool clean)
{
    struct fz_expect x = {.clean = clean};
    const struct fzm_entry *en;
    uint64_t s;

    if (c->type == ENG_CMD_CANCEL_ALL || c->type == ENG_CMD_SET_MMP ||
        c->type == ENG_CMD_RESET_MMP || c->type == ENG_CMD_SET_LIMITS) {
        x.exact = true;
        x.reject = fz_account_wide_reject(c);
        return x;
    }
    if (c->type == 0 || c->type >= ENG_CMD__COUNT) {
        x.exact = true;
        x.reject = ENG_BAD_COMMAND;
        return x;
    }
    if (c->type == ENG_CMD_NEW) {
        int64_t price = c->order_type == ENG_MARKET ? 0 : c->price;

        en = fzm_entry(&fz->mmp, c->account, c->instrument);
        x.mmp_tripped = en && en->tripped;
        s = fz_slot(fz, c->order_id);
        x.bad_id = fz->caller_ids && c->order_id == 0;
        x.duplicate_id = fz->caller_ids && s && fz->orders[s].resting;
        x.duplicate_coid = fz_find_coid(fz, c->account, c->coid) != 0;
        x.market_limit = fz_market_limit(fz, c);
        x.halted = c->instrument < FZ_NINST && fz->state[c->instrument] == ENG_STATE_HALTED;
        x.limit_reject = fz_limits_reject(fz, c->instrument, price, c->qty);
        /* A clean NEW's shape is good: past its id, state, protection, qty
           and price the limits come before anything the model cannot see. */
        if (clean && x.limit_reject && !x.bad_id && !x.halted && !x.mmp_tripped &&
            fz_order_valid(c->instrument, c->qty, price)) {
            x.exact = true;
            x.reject = x.limit_reject;
        }
        return x;
    }
    if (c->type != ENG_CMD_CANCEL && c->type != ENG_CMD_MODIFY)
        return x;
    if (c->order_id) {
        s = fz_slot(fz, c->order_id);
        x.target = s && fz->orders[s].resting ? s : 0;
    } else
        x.target = fz_find_coid(fz, c->account, c->coid);
    x.halted = c->type == ENG_CMD_MODIFY && x.target &&
               fz->state[fz->orders[x.target].instrument] == ENG_STATE_HALTED;
    if (c->type == ENG_CMD_MODIFY && x.target)
        fz_expect_modify_limits(fz, c, &fz->orders[x.target], clean, &x);
    return x;
}

/* Once protection trips, only the trips' events come. */
static bool fz_trip_event(const struct eng_event *ev)
{
    return ev->type == ENG_EV_LEVEL || ev->type == ENG_EV_MMP ||
           (ev->type == ENG_EV_CANCELLED && ev->reason == ENG_CANCEL_MMP);
}

static void fz_apply_events(struct fz *fz, const struct eng_cmd *c, const struct eng_event *ev,
                            size_t n, const struct fz_expect *x)
{
    struct fz_progress p = {.now = c->ts};
    bool rejected = ev[0].type == ENG_EV_REJECTED;

    if (x->exact && rejected)
        FZ_CHECK(fz, x->reject != ENG_OK, "rejected, but the rules accept it");
    if (x->exact && !rejected)
        FZ_CHECK(fz, x->reject == ENG_OK, "accepted, but the rules reject it");
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(fz, ev[i].seq == fz->seq, "event with the wrong seq");
        FZ_CHECK(fz, !p.tripping || fz_trip_event(&ev[i]),
                 "an event of the command's own after protection began to trip");
        switch (ev[i].type) {
        case ENG_EV_ACCEPTED:
            fz_on_accepted(fz, c, &ev[i], i, &p.tk, x);
            break;
        case ENG_EV_REJECTED:
            fz_on_rejected(fz, c, &ev[i], i, n, x);
            break;
        case ENG_EV_TRADE:
            fz_on_trade(fz, &ev[i], &p);
            break;
        case ENG_EV_CANCELLED:
            fz_on_cancelled(fz, c, ev, i, n, &p);
            break;
        case ENG_EV_MODIFIED:
            fz_on_modified(fz, c, &ev[i], i, &p.tk, x);
            break;
        case ENG_EV_LEVEL:
            fz_on_level(fz, &ev[i]);
            break;
        case ENG_EV_STATE:
            fz_on_state(fz, c, &ev[i], i, n);
            break;
        case ENG_EV_MASS_CANCELLED:
            fz_on_mass_cancelled(fz, c, &ev[i], i, n, &p);
            break;
        case ENG_EV_MMP:
            fz_on_mmp(fz, c, &ev[i], i, n, &p);
            break;
        case ENG_EV_LIMITS:
            fz_on_limits(fz, c, &ev[i], i, n);
            break;
        default:
            fz_fail(fz, __LINE__, "unknown event type");
        }
    }
    FZ_CHECK(fz, fzm_next_trip(&fz->mmp) == NULL,
             "protection went over its limit but did not trip");
    if (!rejected && c->type == ENG_CMD_CANCEL_ALL)
        FZ_CHECK(fz, ev[n - 1].type == ENG_EV_MASS_CANCELLED,
                 "a CANCEL_ALL without MASS_CANCELLED");
    if (!rejected && (c->type == ENG_CMD_SET_MMP || c->type == ENG_CMD_RESET_MMP))
        FZ_CHECK(fz, ev[0].type == ENG_EV_MMP, "a SET_MMP or RESET_MMP without its MMP event");
    if (!rejected && c->type == ENG_CMD_SET_LIMITS)
        FZ_CHECK(fz, ev[0].type == ENG_EV_LIMITS, "a SET_LIMITS without its LIMITS event");
    fz_check_taker(fz, &p.tk);
}

/* Can a named fast path carry `c`? (They set no type, reserved or ts, and
   no id for a NEW.) */
static bool fz_fast_fits(const struct fz *fz, const struct eng_cmd *c)
{
    if (c->type == ENG_CMD_NEW)
        return c->reserved == 0 && !(fz->caller_ids && c->order_id);
    return c->reserved == 0 && (c->type == ENG_CMD_CANCEL || c->type == ENG_CMD_MODIFY);
}

/* `c` as the fast path builds it: the fields it does not take are zero. */
static struct eng_cmd fz_fast_shape(const struct eng_cmd *c)
{
    struct eng_cmd f = *c;

    f.ts = 0;
    if (c->type == ENG_CMD_NEW) {
        f.order_id = 0;
        return f;
    }
    f.side = f.order_type = f.tif = f.stp = 0;
    f.instrument = 0;
    if (c->type == ENG_CMD_CANCEL)
        f.price = f.qty = 0;
    return f;
}

/* Run `c` through the shortest fast path that takes it. */
static int64_t fz_fast_call(struct fz *fz, const struct eng_cmd *c)
{
    const char *coid = fz_coid_empty(c->coid) ? NULL : c->coid;

    if (c->type == ENG_CMD_NEW) {
        if (c->order_type == ENG_LIMIT && c->tif == ENG_GTC && !c->stp && !c->flags && !coid)
            return eng_limit(fz->e, c->instrument, c->side, c->account, c->qty, c->price);
        return eng_new_order(fz->e, c->instrument, c->side, c->order_type, c->tif, c->stp,
                             c->flags, c->account, c->qty, c->price, coid);
    }
    if (c->type == ENG_CMD_CANCEL) {
        if (!c->flags && !coid)
            return eng_cancel(fz->e, c->order_id, c->account);
        return eng_cancel_order(fz->e, c->order_id, c->account, c->flags, coid);
    }
    return eng_modify_order(fz->e, c->order_id, c->account, c->flags, c->qty, c->price, coid);
}

/* A fast path's result says where its events are, as pyengine.h tells. */
static void fz_check_fast_result(struct fz *fz, const struct eng_cmd *c, int64_t r,
                                 const struct eng_event *ev, size_t n)
{
    bool single = n == 1 && (ev->type == ENG_EV_REJECTED ||
                             (ev->type == ENG_EV_ACCEPTED && c->type == ENG_CMD_NEW) ||
                             (ev->type == ENG_EV_CANCELLED && c->type == ENG_CMD_CANCEL &&
                              c->order_id));

    FZ_CHECK(fz, r != 0, "fast path failed");
    if (r > 0) {
        FZ_CHECK(fz, single && ev->type != ENG_EV_REJECTED, "fast path: r > 0 for many events");
        if (ev->type == ENG_EV_ACCEPTED)
            FZ_CHECK(fz, fz->caller_ids ? r == 1 : ev->order_id == (uint64_t)r,
                     "fast path: r is not the order id (or 1 with caller order ids)");
        else
            FZ_CHECK(fz, ev->leaves == r, "fast path: r is not the leaves");
        return;
    }
    if (r > -ENG_ERR__COUNT) {
        FZ_CHECK(fz, single && ev->type == ENG_EV_REJECTED && ev->reason == -r,
                 "fast path: r is not the reject reason");
        return;
    }
    FZ_CHECK(fz, !single, "fast path: a single-event outcome not encoded in r");
    FZ_CHECK(fz, (uint64_t)(-(r + ENG_ERR__COUNT)) == n, "fast path: wrong event count");
}

/* Run `c` the input's way; returns its events (*taken: free them). */
static const struct eng_event *fz_submit(struct fz *fz, const struct eng_cmd *c, size_t *n,
                                         struct eng_event **taken)
{
    const struct eng_event *ev;
    int64_t r;

    *taken = NULL;
    eng_clear_events(fz->e);
    if (fz->route == FZ_ROUTE_FAST) {
        r = fz_fast_fits(fz, c) ? fz_fast_call(fz, c) : eng_run(fz->e, c);
        ev = eng_events(fz->e, n);
        fz_check_fast_result(fz, c, r, ev, *n);
        return ev;
    }
    if (fz->route == FZ_ROUTE_BATCH) {
        FZ_CHECK(fz, eng_process_batch(fz->e, c, 1) == 1, "eng_process_batch failed");
        *taken = eng_take_events(fz->e, n);
        FZ_CHECK(fz, *taken != NULL, "eng_take_events failed");
        return *taken;
    }
    r = eng_process(fz->e, c);
    ev = eng_events(fz->e, n);
    FZ_CHECK(fz, r >= 0 && (size_t)r == *n, "eng_process count differs from eng_events");
    return ev;
}

static void fz_run(struct fz *fz, const struct eng_cmd *cmd, bool clean)
{
    struct eng_cmd c =
        fz->route == FZ_ROUTE_FAST && fz_fast_fits(fz, cmd) ? fz_fast_shape(cmd) : *cmd;
    struct fz_expect x = fz_expect(fz, &c, clean);
    struct eng_event *taken;
    const struct eng_event *ev;
    char why[256];
    size_t n;

    fz->seq++;
    ev = fz_submit(fz, &c, &n, &taken);
    FZ_CHECK(fz, n >= 1, "command produced no event");
    FZ_CHECK(fz, eng_seq(fz->e) == fz->seq, "eng_seq out of step");

    fz_apply_events(fz, &c, ev, n, &x);
    fz_check_target(fz, &c, &ev[0], &x);
    for (size_t i = 0; i < n; i++) {
        if (ev[i].type == ENG_EV_TRADE)
            fz_sync_order(fz, ev[i].maker_order_id);
        if (ev[i].type == ENG_EV_ACCEPTED || ev[i].type == ENG_EV_TRADE ||
            ev[i].type == ENG_EV_CANCELLED || ev[i].type == ENG_EV_MODIFIED)
            fz_sync_order(fz, ev[i].order_id);
    }
    fz_check_level_events(fz, ev, n);
    fz_check_books(fz);
    fz_check_mmp(fz);
    if (eng_verify(fz->e, why, sizeof(why)) != ENG_OK) {
        fprintf(stderr, "fuzz_engine: eng_verify: %s\n", why);
        fz_fail(fz, __LINE__, "eng_verify failed");
    }
    eng_free_events(taken);
}

/* Is `kind` one of a NEW's (with caller order ids, its record has byte d)? */
static bool fz_is_new_kind(unsigned kind)
{
    return kind < 8 && kind != 5;
}

/* Decode record `r` and run its command, if it has one. */
static void fz_exec(struct fz *fz, const struct fz_rec *r)
{
    uint32_t inst = (r->op & 3) % FZ_NINST, account = (r->op >> 2) & 3;
    unsigned kind = r->op >> 4;
    struct eng_cmd cmd;

    switch (kind) {
    case 5:
        if ((r->a & 3) == 3) {
            fz_move_clock(fz, r->a, r->b, r->c);
            return;
        }
        cmd = fz_account_wide(inst, account, r->a, r->b, r->c);
        break;
    case 6:
        cmd = fz_new_limit(fz, inst, account, r->a, r->b, r->c);
        fz_make_market(&cmd, r->a);
        break;
    case 7:
        cmd = fz_new_extreme(fz, inst, account, r->a, r->b, r->c);
        break;
    case 8:
    case 9:
    case 10:
        cmd = fz_cancel(fz, kind == 10, inst, account, r->a, r->b, r->c);
        break;
    case 11:
    case 12:
    case 13:
        cmd = fz_modify(fz, kind == 13, inst, account, r->a, r->b, r->c);
        break;
    case 14:
        cmd = fz_malformed(fz, inst, account, r);
        if (fz->caller_ids && cmd.type == ENG_CMD_NEW)
            cmd.order_id = (r->e & 0x80) ? 0 : fz_fresh_id(fz);
        break;
    case 15:
        if ((r->a >> 5) < 5) {
            fz_move_mid(fz, inst, r->a);
            return;
        }
        if ((r->a >> 5) == 6 && (r->a & 16))
            cmd = fz_set_limits(inst, account, r->a, r->b, r->c);
        else
            cmd = fz_set_state(inst, account, r->a);
        break;
    default:
        cmd = fz_new_limit(fz, inst, account, r->a, r->b, r->c);
        break;
    }
    if (fz_is_new_kind(kind) && fz->caller_ids)
        cmd.order_id = fz_caller_id(fz, r->d);
    else if (fz_is_new_kind(kind) && (r->b & 0x40))
        cmd.order_id = fz_mix(fz->seq + 1); /* ignored */
    cmd.ts = fz->clock;
    fz->clock = (int64_t)((uint64_t)fz->clock + 1);
    fz_run(fz, &cmd, kind != 14);
    fz->last = *r;
    fz->has_last = true;
}

static bool fz_is_repeat(const struct fz_rec *r)
{
    return (r->op >> 4) == 15 && (r->a >> 5) == 5;
}

/* Read one record and run it (a repeat runs the last record again). */
static void fz_step(struct fz *fz, struct fz_in *in)
{
    struct fz_rec r = {.op = fz_byte(in), .a = fz_byte(in), .b = fz_byte(in), .c = fz_byte(in)};

    if ((r.op >> 4) == 14 || (fz->caller_ids && fz_is_new_kind(r.op >> 4)))
        r.d = fz_byte(in);
    if ((r.op >> 4) == 14)
        r.e = fz_byte(in);
    if (!fz_is_repeat(&r)) {
        fz_exec(fz, &r);
        return;
    }
    for (unsigned i = 0; i <= r.b && fz->has_last && fz->seq < FZ_MAX_COMMANDS; i++)
        fz_exec(fz, &fz->last);
}

/* ---- per input ------------------------------------------------------------ */

static void fz_init(struct fz *fz, uint8_t config)
{
    static const uint32_t expected[4] = {0, 1, 16, 4096};
    static const enum fz_route routes[4] = {FZ_ROUTE_PROCESS, FZ_ROUTE_PROCESS, FZ_ROUTE_BATCH,
                                            FZ_ROUTE_FAST};
    struct eng_config cfg = {.expected_orders = expected[(config >> 1) & 3],
                             .level_events = config & 1,
                             .caller_order_ids = (config >> 5) & 1};
    uint32_t id;

    *fz = (struct fz){.level_events = config & 1,
                      .caller_ids = (config >> 5) & 1,
                      .route = routes[(config >> 3) & 3],
                      .cap = FZ_MIN_ORDERS};
    fz->e = eng_create(&cfg);
    fz->orders = calloc(fz->cap, sizeof(*fz->orders));
    fz->levels = calloc(fz->cap, sizeof(*fz->levels));
    fz->index = calloc(2 * fz->cap, sizeof(*fz->index));
    FZ_CHECK(fz, fz->e && fz->orders && fz->levels && fz->index, "out of memory");
    FZ_CHECK(fz, eng_caller_order_ids(fz->e) == fz->caller_ids, "eng_caller_order_ids differs");
    fzm_init(&fz->mmp);
    for (uint32_t i = 0; i < FZ_NINST; i++) {
        FZ_CHECK(fz, eng_add_instrument(fz->e, &fz_specs[i], &id) == ENG_OK && id == i,
                 "eng_add_instrument failed");
    }
}

static void fz_finish(struct fz *fz)
{
    eng_destroy(fz->e);
    free(fz->orders);
    free(fz->levels);
    free(fz->index);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_in in = {data, size};
    struct fz fz;

    fz_init(&fz, fz_byte(&in));
    while (in.n > 0 && fz.seq < FZ_MAX_COMMANDS)
        fz_step(&fz, &in);
    fz_finish(&fz);
    return 0;
}
