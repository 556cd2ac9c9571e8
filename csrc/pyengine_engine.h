/*
 * pyengine_engine.h - the engine: its codes (the X-macro tables), the command
 * and event records, instruments, and the calls that process commands,
 * query the books and check the invariants, the fast paths included.
 * Part of pyengine.h, which is what users include.
 *
 * Threading: an engine is not thread-safe; one thread at a time may use it.
 */
#ifndef PYENGINE_ENGINE_H
#define PYENGINE_ENGINE_H

#ifndef PYENGINE_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

/*
 * Result and reject codes. One table gives the enum, the stable name that
 * Python and the wire protocol use, and the message.
 */
#define ENG_ERR_MAP(XX)                                                              \
    XX(OK, "ok", "ok")                                                               \
    XX(UNKNOWN_INSTRUMENT, "unknown_instrument", "unknown instrument")               \
    XX(BAD_QTY, "bad_qty", "quantity must be positive (0 in a modify cancels)")      \
    XX(OFF_LOT, "off_lot", "quantity is not a multiple of the lot size")             \
    XX(BAD_PRICE, "bad_price", "price must be positive")                             \
    XX(OFF_TICK, "off_tick", "price is not a multiple of the tick size")             \
    XX(OUTSIDE_BAND, "outside_band", "price is outside the instrument's price band") \
    XX(DUPLICATE_CLIENT_ORDER_ID, "duplicate_client_order_id",                       \
       "client order id is in use by an open order of this account")                 \
    XX(POST_ONLY_WOULD_CROSS, "post_only_would_cross", "post-only order would trade") \
    XX(UNKNOWN_ORDER, "unknown_order", "unknown or already finished order")          \
    XX(NOT_OWNER, "not_owner", "order belongs to another account")                   \
    XX(BAD_COMMAND, "bad_command",                                                   \
       "unknown command type, nonzero reserved field, or an account given to a "     \
       "cancel-all of every account")                                                \
    XX(BAD_SIDE, "bad_side", "side must be buy or sell")                             \
    XX(BAD_ORDER_TYPE, "bad_order_type",                                             \
       "order type must be limit or market; a market order has no price")            \
    XX(BAD_TIF, "bad_tif",                                                           \
       "time in force must be gtc, ioc or fok; a market order cannot be gtc")        \
    XX(BAD_STP, "bad_stp", "unknown self-trade prevention mode")                     \
    XX(BAD_FLAGS, "bad_flags",                                                       \
       "unknown flags, post-only on a market, ioc or fok order, or a modify that "   \
       "keeps both price and qty")                                                   \
    XX(BAD_CLIENT_ORDER_ID, "bad_client_order_id",                                   \
       "client order id must be printable ASCII")                                    \
    XX(NO_MEMORY, "no_memory", "out of memory")                                      \
    XX(INVALID_ARGUMENT, "invalid_argument", "invalid argument")                     \
    XX(DUPLICATE_SYMBOL, "duplicate_symbol", "an instrument with this symbol exists") \
    XX(TOO_MANY_INSTRUMENTS, "too_many_instruments", "too many instruments")         \
    XX(BUSY, "busy", "resource still in use")                                        \
    XX(CORRUPT, "corrupt", "an internal invariant does not hold")                    \
    XX(HALTED, "halted", "the instrument is halted: only cancels are accepted")      \
    XX(BAD_STATE, "bad_state", "trading state must be open or halted")               \
    XX(BAD_ORDER_ID, "bad_order_id",                                                 \
       "a new order needs an order id of its own (nonzero) with caller order ids")   \
    XX(DUPLICATE_ORDER_ID, "duplicate_order_id", "order id is in use by an open order")    \
    XX(MMP, "mmp",                                                                   \
       "market-maker protection tripped for this account and instrument: new "       \
       "orders are refused until it is reset")                                       \
    XX(BAD_MMP, "bad_mmp",                                                           \
       "a market-maker protection limit and window must not be negative")          \
    XX(MAX_QTY_EXCEEDED, "max_qty_exceeded",                                         \
       "quantity is over the instrument's largest order quantity (max_qty)")       \
    XX(MAX_NOTIONAL_EXCEEDED, "max_notional_exceeded",                               \
       "price x quantity is over the instrument's largest order notional "         \
       "(max_notional)")                                                            \
    XX(BAD_ORDER_LIMITS, "bad_order_limits", "an order limit must not be negative")

enum eng_err {
#define ENG_XX_(code, name, msg) ENG_##code,
    ENG_ERR_MAP(ENG_XX_)
#undef ENG_XX_
    ENG_ERR__COUNT
};

/* Why an order left the book without trading (CANCELLED events). */
#define ENG_CANCEL_REASON_MAP(XX)             \
    XX(USER, "user")                          \
    XX(IOC, "ioc")                            \
    XX(FOK, "fok")                            \
    XX(MARKET_REMAINDER, "market_remainder")  \
    XX(BAND, "band")                          \
    XX(STP, "stp")                            \
    XX(LEVEL_FULL, "level_full")              \
    XX(NO_MEMORY, "no_memory")                \
    XX(DEAD_MAN, "dead_man")                  \
    XX(MMP, "mmp")

enum eng_cancel_reason {
#define ENG_XX_(code, name) ENG_CANCEL_##code,
    ENG_CANCEL_REASON_MAP(ENG_XX_)
#undef ENG_XX_
    ENG_CANCEL__COUNT
};

/*
 * The shapes of a new order that are not orders at all: one rule, used by
 * the core on packed commands (as BAD_ORDER_TYPE, BAD_TIF and BAD_FLAGS
 * rejects), by the Python API and by the server (as argument errors with
 * these messages). Checked in this order; the first that applies is given.
 */
#define ENG_SHAPE_MAP(XX)                                                       \
    XX(OK, "ok")                                                                \
    XX(MARKET_WITH_PRICE, "a market order has no price (pass price=None)")     \
    XX(MARKET_GTC, "a market order cannot be gtc: use tif='ioc' or 'fok'")     \
    XX(MARKET_POST_ONLY, "post_only needs a limit order")                       \
    XX(LIMIT_WITHOUT_PRICE, "a limit order needs a price")                      \
    XX(POST_ONLY_NOT_GTC, "post_only needs tif='gtc'")

enum eng_shape {
#define ENG_XX_(code, msg) ENG_SHAPE_##code,
    ENG_SHAPE_MAP(ENG_XX_)
#undef ENG_XX_
    ENG_SHAPE__COUNT
};

enum eng_cmd_type {
    ENG_CMD_NEW = 1,
    ENG_CMD_CANCEL = 2,
    ENG_CMD_MODIFY = 3,
    ENG_CMD_SET_STATE = 4,  /* an instrument's trading state (administrator) */
    ENG_CMD_CANCEL_ALL = 5, /* every open order of an account (or of every account), on one
                               instrument or all */
    ENG_CMD_SET_MMP = 6,    /* an account's market-maker protection on an instrument */
    ENG_CMD_RESET_MMP = 7,  /* lift an account's tripped protection on an instrument */
    ENG_CMD_SET_LIMITS = 8, /* an instrument's order limits (administrator) */
    ENG_CMD__COUNT
};

/* While an instrument is halted only cancels are accepted: NEW and MODIFY
   are rejected with ENG_HALTED. */
enum eng_trading_state { ENG_STATE_OPEN = 0, ENG_STATE_HALTED = 1 };
enum eng_side { ENG_BUY = 1, ENG_SELL = 2 };
enum eng_order_type { ENG_LIMIT = 1, ENG_MARKET = 2 };
enum eng_tif { ENG_GTC = 1, ENG_IOC = 2, ENG_FOK = 3 };
enum eng_stp {
    ENG_STP_NONE = 0,
    ENG_STP_CANCEL_NEWEST = 1,
    ENG_STP_CANCEL_OLDEST = 2,
    ENG_STP_CANCEL_BOTH = 3
};

enum eng_cmd_flags {
    ENG_CMD_F_POST_ONLY = 1,   /* NEW: never trade on arrival */
    ENG_CMD_F_ANY_ACCOUNT = 2, /* CANCEL/MODIFY: administrator, skip the owner check */
    ENG_CMD_F_KEEP_PRICE = 4,  /* MODIFY: ignore `price`, keep the order's price */
    ENG_CMD_F_KEEP_QTY = 8,    /* MODIFY: ignore `qty`, keep the order's open qty as it
                                  is when the command runs (not with KEEP_PRICE) */
    ENG_CMD_F_DEAD_MAN = 16,   /* CANCEL_ALL: the account's dead-man switch fired: the
                                  orders leave with reason dead_man, not user */
    ENG_CMD_F_ALL_INSTRUMENTS = 32, /* CANCEL_ALL: every instrument; `instrument` ignored */
    ENG_CMD_F_ALL_ACCOUNTS = 64     /* CANCEL_ALL: the open orders of every account, in one
                                       walk; `account` must be 0 (else bad_command); not
                                       with DEAD_MAN, which is one account's */
};

enum eng_event_type {
    ENG_EV_ACCEPTED = 1,
    ENG_EV_REJECTED = 2,
    ENG_EV_TRADE = 3,
    ENG_EV_CANCELLED = 4,
    ENG_EV_MODIFIED = 5,
    ENG_EV_LEVEL = 6, /* only with eng_config.level_events */
    ENG_EV_STATE = 7,
    ENG_EV_MASS_CANCELLED = 8,
    ENG_EV_MMP = 9,
    ENG_EV_LIMITS = 10
};

/* Bit 0x80 is never the engine's: a runner marks with it the last event of a
   command (RUNNER_EV_F_LAST, pyengine_runner.h). */
enum eng_event_flags {
    ENG_EV_F_PRIORITY_KEPT = 1,  /* MODIFIED: the order kept its time priority */
    ENG_EV_F_ALL_INSTRUMENTS = 2, /* MASS_CANCELLED: of every instrument */
    ENG_EV_F_TRIPPED = 4,        /* MMP: the protection is tripped now */
    ENG_EV_F_ALL_ACCOUNTS = 8    /* MASS_CANCELLED: of every account (account 0) */
};

enum eng_limits {
    ENG_SYMBOL_MAX = 16,    /* bytes incl. the terminating NUL */
    ENG_COID_LEN = 16,      /* client order id bytes, NUL-padded, not terminated */
    ENG_MAX_INSTRUMENTS = 65536
};

/*
 * A command: 64 bytes, little-endian on every platform we build for.
 * Fields a command type does not use are ignored; `reserved` must be zero.
 * The engine assigns the sequence number.
 */
struct eng_cmd {
    uint8_t type;       /* enum eng_cmd_type */
    uint8_t side;       /* NEW: enum eng_side */
    uint8_t order_type; /* NEW: enum eng_order_type */
    uint8_t tif;        /* NEW: enum eng_tif */
    uint8_t stp;        /* NEW: enum eng_stp */
    uint8_t flags;      /* enum eng_cmd_flags */
    uint16_t reserved;  /* must be zero */
    uint32_t instrument;
    uint32_t account;
    uint64_t order_id;  /* CANCEL/MODIFY target; 0 = address it by (account, coid).
                           NEW: the order's id with eng_config.caller_order_ids
                           (nonzero, unique among open orders), else ignored */
    int64_t price;      /* NEW limit: price; MODIFY: new price unless KEEP_PRICE;
                           SET_MMP: the window, in `ts` units (0 = until reset);
                           SET_LIMITS: the largest notional (0 = none) */
    int64_t qty;        /* NEW: quantity; MODIFY: new open quantity (0 cancels)
                           unless KEEP_QTY; SET_STATE: the new enum eng_trading_state;
                           SET_MMP: the fill limit (0 turns protection off);
                           SET_LIMITS: the largest order quantity (0 = none) */
    int64_t ts;         /* caller's timestamp: recorded; read only as the clock of
                           market-maker protection's window (the server stamps
                           each command with its arrival time) */
    char coid[16];      /* client order id, NUL-padded; all zero = none */
};

/*
 * An event: 96 bytes. Which fields are meaningful depends on `type`:
 *
 *   ACCEPTED  order_id side instrument price(0 = market) qty account coid
 *   REJECTED  reason(enum eng_err) order_id(a cancel's or modify's target; a
 *             new order's own with caller order ids; else 0) account
 *             coid(a new order's, a cancel's or modify's; else all zero)
 *             instrument
 *   TRADE     trade_id instrument side(aggressor) price qty order_id(taker)
 *             maker_order_id account(taker) maker_account leaves(taker)
 *             maker_leaves
 *   CANCELLED order_id reason(enum eng_cancel_reason) leaves(open qty cancelled)
 *             instrument side price(0 = market) account coid
 *   MODIFIED  order_id instrument side price qty(new open qty) account coid
 *             flags(PRIORITY_KEPT)
 *   LEVEL     instrument side price qty(the level's total open qty now,
 *             0 = the level is gone) leaves(its order count now); one after
 *             every change to a level, right after the event that caused it
 *   STATE     instrument qty(enum eng_trading_state, now) account; after
 *             every accepted SET_STATE, even one that changes nothing
 *   MASS_CANCELLED  account(0 with flags ALL_ACCOUNTS)
 *             instrument(0 with flags ALL_INSTRUMENTS) qty(orders cancelled)
 *             reason(enum eng_cancel_reason) flags(ALL_INSTRUMENTS,
 *             ALL_ACCOUNTS: the command's scope); the last event of an
 *             accepted CANCEL_ALL, after one CANCELLED per order
 *   MMP       account instrument qty(fill limit, 0 = off) price(window)
 *             leaves(quantity filled in the current window)
 *             flags(TRIPPED); after every accepted SET_MMP and RESET_MMP,
 *             and when protection trips, after the cancels it causes
 *   LIMITS    instrument qty(max_qty, 0 = none) price(max_notional, 0 = none)
 *             account; after every accepted SET_LIMITS, even one that changes
 *             nothing
 * Fields a type does not use are zero.
 */
struct eng_event {
    uint8_t type;   /* enum eng_event_type */
    uint8_t side;   /* enum eng_side */
    uint8_t reason; /* REJECTED: enum eng_err; CANCELLED: enum eng_cancel_reason */
    uint8_t flags;  /* enum eng_event_flags */
    uint32_t instrument;
    uint64_t seq;   /* sequence number of the command that caused the event */
    uint64_t order_id;
    uint64_t maker_order_id;
    uint64_t trade_id;
    int64_t price;
    int64_t qty;
    int64_t leaves;
    int64_t maker_leaves;
    uint32_t account;
    uint32_t maker_account;
    char coid[16];
};

struct eng_instrument_spec {
    char symbol[16];           /* 1..15 printable ASCII bytes, NUL-terminated */
    int64_t tick_size;         /* > 0 */
    int64_t lot_size;          /* > 0 */
    int64_t min_price;         /* price band, inclusive; 0 and 0 = no band */
    int64_t max_price;
    int64_t market_protection; /* < 0 = none; else market orders trade only
                                  within best opposite price +/- this */
};

struct eng_config {
    uint32_t expected_orders; /* sizes the order index up front; 0 = default */
    uint32_t level_events;    /* nonzero: also emit LEVEL events (market data) */
    uint64_t hash_seed;       /* keys the indexes' hashes (order ids, client order
                                 ids, prices), so clients cannot choose keys that
                                 collide; 0 = random. Only placement depends on
                                 it, never events. */
    uint32_t caller_order_ids; /* nonzero: the caller gives each new order its id
                                  (eng_cmd.order_id), as a gateway that assigns
                                  ids does; else the engine numbers them 1, 2, ... */
};

/* One price level as seen from outside. */
struct eng_level_info {
    int64_t price;
    int64_t total_qty;
    uint32_t order_count;
    uint32_t reserved;
};

/* One open order as seen from outside. */
struct eng_order_info {
    uint64_t order_id;
    int64_t price;
    int64_t qty; /* open quantity */
    uint32_t instrument;
    uint32_t account;
    uint8_t side;
    uint8_t stp;
    uint8_t post_only;
    uint8_t reserved[5];
    char coid[16];
};

struct eng_stats {
    uint64_t commands;
    uint64_t accepted;
    uint64_t rejected;
    uint64_t trades;
    uint64_t cancelled;
    uint64_t modified;
    uint64_t events;
    uint64_t open_orders;
    uint64_t levels;
    uint64_t bytes_reserved; /* memory held by the engine, index included */
    uint64_t bytes_per_order_node;
    uint64_t index_bytes;
};

struct eng;

/* Create an engine; `cfg` may be NULL. Returns NULL when out of memory. */
struct eng *eng_create(const struct eng_config *cfg);
/* Destroy an engine and every order and level it holds. `e` may be NULL. */
void eng_destroy(struct eng *e);

/*
 * Add an instrument. On success stores its number in *id (numbers are 0, 1,
 * 2, ... in order of addition) and returns ENG_OK; on error nothing changes.
 */
int eng_add_instrument(struct eng *e, const struct eng_instrument_spec *spec, uint32_t *id);
uint32_t eng_instrument_count(const struct eng *e);
/* The spec of instrument `id`, or NULL if there is none. */
const struct eng_instrument_spec *eng_instrument(const struct eng *e, uint32_t id);
/* The trading state (enum eng_trading_state) of instrument `id`, or -1. */
int eng_instrument_state(const struct eng *e, uint32_t id);

/*
 * An instrument's order limits (SET_LIMITS), 0 = none: a new order's
 * quantity at most max_qty, a new limit order's price x quantity at most
 * max_notional (market orders: the quantity only), and the same for the price
 * and open quantity a MODIFY leaves, except that a modify which only lowers
 * an order's quantity (keeping its price and priority) is always allowed.
 * They are state, as the trading state is: set by a sequenced command,
 * journaled and in snapshots, not part of the instrument's spec.
 */
struct eng_order_limits {
    int64_t max_qty;
    int64_t max_notional;
};
/* Fills *out and returns 0, or returns -1 for an unknown instrument. */
int eng_get_order_limits(const struct eng *e, uint32_t id, struct eng_order_limits *out);

/*
 * Process one command: assigns it the next sequence number and appends the
 * events it causes to the engine's event buffer (see eng_events). Returns the
 * number of events appended, or -1 if the event buffer could not grow (the
 * command was then not processed and took no sequence number).
 */
int64_t eng_process(struct eng *e, const struct eng_cmd *cmd);

/*
 * Process `n` commands in order, appending all their events. Returns the number
 * of commands processed (less than n only when out of memory).
 */
size_t eng_process_batch(struct eng *e, const struct eng_cmd *cmds, size_t n);

/* The events appended since the last eng_clear_events(). Valid until the next
   call that processes a command or clears. */
const struct eng_event *eng_events(const struct eng *e, size_t *count);
void eng_clear_events(struct eng *e);

/*
 * Hand the event buffer, with its *count events, over to the caller, who frees
 * it with eng_free_events(); the engine carries on with a new, empty buffer.
 * This is how a batch's events leave without being copied. Returns NULL when
 * out of memory (nothing changes then).
 */
struct eng_event *eng_take_events(struct eng *e, size_t *count);
void eng_free_events(struct eng_event *events);

/*
 * Fast paths for the Python binding: one command from scalar arguments, the
 * event buffer cleared first. Each call from Python costs about 20 ns per
 * argument, so the common cases have short signatures of their own. The
 * return value r says where the events are, so that the usual single-event
 * outcomes need no decoding at all:
 *   r > 0       the only event is the call's success event, and every field
 *               of it is an argument or r:
 *                 eng_limit, eng_new_order: ACCEPTED, order id r
 *                 (they take no order id: with caller order ids they
 *                 are rejected bad_order_id);
 *                 eng_run of a NEW: as these, and with caller order ids
 *                 the order id is the command's own and r is 1;
 *                 eng_cancel, eng_cancel_order: CANCELLED(user) of
 *                 `order_id` (given by id), leaves r;
 *                 eng_modify_order never returns r > 0.
 *   -ENG_ERR__COUNT < r < 0
 *               the only event is REJECTED, reason -r.
 *   r <= -ENG_ERR__COUNT
 *               n = -r - ENG_ERR__COUNT events, in the engine's buffer
 *               (eng_events).
 *   r == 0      out of memory: nothing was processed.
 * `coid` is NULL or points to ENG_COID_LEN bytes.
 */
int64_t eng_limit(struct eng *e, uint32_t instrument, uint8_t side, uint32_t account, int64_t qty,
                  int64_t price);
int64_t eng_new_order(struct eng *e, uint32_t instrument, uint8_t side, uint8_t order_type,
                      uint8_t tif, uint8_t stp, uint8_t flags, uint32_t account, int64_t qty,
                      int64_t price, const char *coid);
int64_t eng_cancel(struct eng *e, uint64_t order_id, uint32_t account);
int64_t eng_cancel_order(struct eng *e, uint64_t order_id, uint32_t account, uint8_t flags,
                         const char *coid);
int64_t eng_modify_order(struct eng *e, uint64_t order_id, uint32_t account, uint8_t flags,
                         int64_t qty, int64_t price, const char *coid);
/* Any command, its result encoded as above (for a NEW, as eng_new_order's). */
int64_t eng_run(struct eng *e, const struct eng_cmd *cmd);

/* Does this engine take its new orders' ids from the caller
   (eng_config.caller_order_ids)? */
int eng_caller_order_ids(const struct eng *e);

/*
 * The shape of a new order (enum eng_shape): `order_type` ENG_LIMIT or
 * ENG_MARKET, `tif` a tif code, `has_price` whether a price is given, `flags`
 * its ENG_CMD_F_* flags. Other codes and flags are not judged here.
 */
int eng_order_shape(uint8_t order_type, uint8_t tif, int has_price, uint8_t flags);

/* The sequence number of the last command processed (0 before the first). */
uint64_t eng_seq(const struct eng *e);

/* The last sequence number, order id and trade id an engine has issued
   (order id 0 with caller order ids: the engine issues none). */
struct eng_counters {
    uint64_t seq;
    uint64_t order_id;
    uint64_t trade_id;
};
void eng_get_counters(const struct eng *e, struct eng_counters *out);
/*
 * Raise each counter of `e` to at least its value in `c`; none is lowered.
 * The next command then gets a seq above c->seq, the next order and trade
 * ids are above c's. For a recovery that must not issue again the ids a
 * lost part of the journal may hold. Can't fail.
 */
void eng_raise_counters(struct eng *e, const struct eng_counters *c);

/*
 * The fast paths as a table of function pointers, for a second binding in
 * the same process (the CPython extension pyengine._calls): it calls the core
 * linked into the cffi extension through this table instead of carrying a
 * copy of its own. `size` is sizeof(struct eng_api); fields are only ever
 * appended.
 */
struct eng_api {
    size_t size;
    int64_t (*limit)(struct eng *e, uint32_t instrument, uint8_t side, uint32_t account,
                     int64_t qty, int64_t price);
    int64_t (*new_order)(struct eng *e, uint32_t instrument, uint8_t side, uint8_t order_type,
                         uint8_t tif, uint8_t stp, uint8_t flags, uint32_t account, int64_t qty,
                         int64_t price, const char *coid);
    int64_t (*cancel)(struct eng *e, uint64_t order_id, uint32_t account);
    const struct eng_event *(*events)(const struct eng *e, size_t *count);
    int64_t (*cancel_order)(struct eng *e, uint64_t order_id, uint32_t account, uint8_t flags,
                            const char *coid);
    int64_t (*modify_order)(struct eng *e, uint64_t order_id, uint32_t account, uint8_t flags,
                            int64_t qty, int64_t price, const char *coid);
    int64_t (*book_levels)(const struct eng *e, uint32_t instrument, uint8_t side,
                           struct eng_level_info *out, size_t max);
    int (*get_order)(const struct eng *e, uint64_t order_id, struct eng_order_info *out);
    int (*get_order_by_coid)(const struct eng *e, uint32_t account, const char *coid,
                             struct eng_order_info *out);
    int (*order_shape)(uint8_t order_type, uint8_t tif, int has_price, uint8_t flags);
    uint64_t (*seq)(const struct eng *e);
    int64_t (*run)(struct eng *e, const struct eng_cmd *cmd);
    int (*caller_order_ids)(const struct eng *e);
};
const struct eng_api *eng_api(void);

/*
 * Copy up to `max` levels of one side of an instrument's book, best first,
 * into `out`. Returns the number copied, or -1 for an unknown instrument or
 * side.
 */
int64_t eng_book_levels(const struct eng *e, uint32_t instrument, uint8_t side,
                        struct eng_level_info *out, size_t max);

/* An account's market-maker protection on one instrument (see SET_MMP). */
struct eng_mmp_info {
    int64_t qty_limit;    /* 0 = off */
    int64_t window;       /* in ts units; 0 = the window lasts until a reset */
    int64_t filled;       /* quantity filled in the current window */
    int64_t window_start; /* ts of the fill that opened the current window */
    uint32_t tripped;     /* nonzero: new orders are refused (ENG_MMP) */
    uint32_t reserved;
};

/* Returns 1 and fills *out if `account` has protection set on `instrument`
   (limit > 0), else 0. */
int eng_get_mmp(const struct eng *e, uint32_t account, uint32_t instrument,
                struct eng_mmp_info *out);

/* Look up an open order. Returns 1 and fills *out if it is open, else 0. */
int eng_get_order(const struct eng *e, uint64_t order_id, struct eng_order_info *out);
/* The same by client order id: the open order of `account` whose coid is the
   ENG_COID_LEN bytes at `coid` (NULL or all zero: none). O(1). */
int eng_get_order_by_coid(const struct eng *e, uint32_t account, const char *coid,
                          struct eng_order_info *out);

/*
 * Copy up to `max` open orders of one side of an instrument, in book order
 * (best level first, oldest first within a level), starting after skipping
 * `skip` orders. Returns the number copied, or -1 for an unknown
 * instrument/side.
 */
int64_t eng_book_orders(const struct eng *e, uint32_t instrument, uint8_t side, size_t skip,
                        struct eng_order_info *out, size_t max);

void eng_get_stats(const struct eng *e, struct eng_stats *out);

/*
 * Check every invariant of every book and of the indexes. Returns ENG_OK, or
 * ENG_CORRUPT with a description of the first broken invariant in `why`
 * (NUL-terminated, truncated to `why_len`; `why` may be NULL).
 */
int eng_verify(const struct eng *e, char *why, size_t why_len);

/* Stable names and messages of the codes above ("?" when out of range). */
const char *eng_err_name(int err);
const char *eng_strerror(int err);
const char *eng_cancel_reason_name(int reason);
/* The message of an enum eng_shape ("?" when out of range). */
const char *eng_shape_message(int shape);

#endif /* PYENGINE_ENGINE_H */
