/*
 * server.h - the types of pyengine._server, the server's per-order path in C.
 *
 * One extension, several files, one job each:
 *   link.c     Link: one session's per-order state (tag counter, pending
 *              requests, token bucket, the orders it owns)
 *   ledger.c   Ledger: the server's per-order state (sessions by id, the
 *              owner of every open order, open and in-flight orders per
 *              account) and CommandBuffer: the engine commands queued
 *   orders.c   the Ledger's open orders and each Link's list of them
 *   idmap.c    an index by a 64-bit id (orders.c's and status.c's)
 *   form.c     the form of new_order, cancel and modify: fields, defaults,
 *              error codes and messages
 *   inbox.c    Inbox: a session's received bytes, read from its socket and
 *              split into frames
 *   intake.c   Intake: a frame, decoded once; new_order, cancel and modify
 *              carried out here, anything else handed to Python
 *   poller.c   Poller: every ready session socket of a loop turn read and
 *              drained, the commands pushed, the output written
 *   route.c    Router: the engine's events, routed and answered
 *   books.c    market data: levels and trades into MarketData's tables
 *   status.c   OrderStatus: each account's open orders and last finished
 *              ones, as the events tell them (orders, order_status)
 *   frame.c    JSON reply frames, byte for byte as orjson writes them
 *   outbox.c   each session's output: queued in its Link, written by the
 *              Ledger's flush
 *   meters.c   what the per-order path counts for the metrics endpoint
 *   trace.c    LatencyTrace: stamps of one order in N on its way through
 *   module.c   the module: interned names, the types
 *
 * Python is called only through the interfaces named in
 * pyengine/server/seam.py (IntakeEvents, RouterEvents, PollerEvents), whose
 * methods are looked up once, when an Intake or Router is built. The GIL
 * is held throughout; nothing here blocks.
 */
#ifndef PYENGINE_SERVER_H
#define PYENGINE_SERVER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "list.h"
#include "pyengine.h"

/* ---- Link: one session --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint32_t sid;
    PyObject *sid_key;   /* sid as an int: the Ledger's key for it */
    int logged_in; /* account is meaningful */
    uint32_t account;
    char admin;  /* char: T_BOOL members */
    char closed;
    char account_shared; /* another open session is logged in as its account (Python keeps it) */
    uint32_t next;       /* the last request number given out */
    PyObject *pending;   /* dict: request number -> (kind, req_id, extra) */
    struct list_node orders; /* its open orders (struct srv_open_order), in the order it came to own them */
    Py_ssize_t n_orders;
    PyObject *coids;     /* dict: client order id -> order id */
    PyObject *flying;    /* dict: client order id -> how many of its new orders with it are unanswered */
    PyObject *session;   /* the Python Session */
    double rate, burst, tokens, stamp; /* the token bucket; rate 0: unlimited */
    double last_read;    /* its socket last gave bytes (time.monotonic()'s clock) */
    /* Its output (outbox.c): frames queued and not sent yet. */
    int fd;              /* its socket, or -1: none */
    char socket_gone;    /* it had one, closed now: output is dropped */
    char listed;         /* on the Ledger's flush list */
    char polled;         /* a Poller reads its socket (poller.c): not to be forgotten meanwhile */
    char writing;        /* the socket was full: the session's writer has the output */
    char unreported;     /* a flush could not report `told` (out of memory): the next one does */
    int told;            /* enum srv_out_report or an errno */
    char *out;           /* NULL while nothing is queued */
    size_t out_pos, out_len, out_cap; /* unsent: out[out_pos, out_len) */
    size_t max_unsent;   /* more unsent than this: a slow reader; 0: no limit */
    size_t head_end;     /* where the frame queued onto an empty output ends (outbox.c) */
} srv_link;

extern PyTypeObject srv_link_type;

/* A tag for a new pending request of `link`: (sid << 32) | its number. A
 * new order's (`kind` new_order) client order id (`extra`, a str or None)
 * is in flight until srv_link_landed. */
int srv_link_tag(srv_link *link, PyObject *kind, PyObject *req_id, PyObject *extra, uint64_t *tag);
/* The engine answered a new order of `link` with client order id `coid`. */
int srv_link_landed(srv_link *link, PyObject *coid);
/* Spend one token if there is one: 1, or 0 if over the rate. */
int srv_link_take_token(srv_link *link);

/* ---- Inbox: one session's received bytes, split into frames (inbox.c) ---- */

typedef struct {
    PyObject_HEAD
    char *buf;              /* NULL while it holds nothing */
    size_t pos, end, cap;   /* the bytes held: buf[pos, end) */
    uint32_t max_frame;
    PyObject *error;        /* the exception class of a broken stream: error(code, message) */
    char draining;          /* an Intake carries out its frames (Intake.drain): none is taken meanwhile */
} srv_inbox;

extern PyTypeObject srv_inbox_type;

/* The next whole frame's body: 1, 0 when none is whole yet, -1 (the inbox's
 * error set) when the next header is broken. It stays until taken. */
int srv_inbox_next(srv_inbox *self, const char **body, size_t *len);
/* The frame srv_inbox_next gave (its body of `len` bytes) is taken. */
void srv_inbox_taken(srv_inbox *self, size_t len);
/* 0, or -1 with RuntimeError when an Intake is draining the inbox: the frame
 * it carries out stays in the inbox until it is done, and the Python that
 * runs meanwhile may not take it, or any after it. */
int srv_inbox_check_idle(srv_inbox *self);
/* What srv_inbox_read returns besides the bytes read (0: the peer closed). */
enum srv_inbox_read_error {
    SRV_INBOX_ERRNO = -1, /* the read failed: errno (EAGAIN: nothing there yet) */
    SRV_INBOX_NOMEM = -2  /* no room for the bytes: MemoryError set */
};
/* Read once from `fd` into the inbox. */
ssize_t srv_inbox_read(srv_inbox *self, int fd);

/* ---- CommandBuffer: engine commands queued ------------------------------- */

typedef struct {
    PyObject_HEAD
    struct runner_cmd *recs;
    Py_ssize_t cap, n, sent; /* the records never move: views of them stay good */
    char held;               /* a flush waiting for room holds the records: no push */
    /* Where they go (attach): a runner, through the runner_api of the one
       copy of the runner (the cffi extension's); NULL: nowhere yet. */
    struct runner *runner;
    const struct runner_api *api;
    PyObject *ledger;        /* its LatencyTrace, if any, stamps the pushes */
    unsigned long long pushes; /* ring operations that put records in */
} srv_commands;

extern PyTypeObject srv_commands_type;

/* The next record, zeroed; NULL (no exception) when the buffer is full. */
struct runner_cmd *srv_commands_reserve(srv_commands *c);
/* Push what fits of the records not in the ring yet: 1 when every queued
 * record is in (the buffer is empty), 0 when some are left (or the buffer is
 * held), -1 with an exception when it is attached to no runner. */
int srv_commands_push(srv_commands *c);

/* A tag's slot in a table of `size` slots (a power of two): its request
 * number, spread by its session id (meters.c's stamps, trace.c's records). */
static inline size_t srv_tag_slot(uint64_t tag, size_t size)
{
    uint32_t sid = (uint32_t)(tag >> 32), number = (uint32_t)tag;

    return (number + sid * 0x9E3779B1u) & (size - 1);
}

/* ---- meters (meters.c): counted here, read when the metrics are scraped --- */

/* SRV_REQ_OTHER: a frame that is not JSON (Python counts every other message it is handed). */
enum srv_request_kind { SRV_REQ_NEW_ORDER, SRV_REQ_CANCEL, SRV_REQ_MODIFY, SRV_REQ_OTHER, SRV_REQ__COUNT };

/* Reject codes: the engine's (enum eng_err), then the server's own. */
enum srv_reject {
    SRV_REJ_MAX_OPEN = ENG_ERR__COUNT,
    SRV_REJ__COUNT
};

enum srv_meter_sizes {
    SRV_LAT_BOUNDS = 16,    /* latency buckets, and one above them all */
    SRV_STAMPS = 1 << 14,   /* new orders stamped and not acked yet (slots; a power of two) */
    SRV_UNWRITTEN = 1 << 13 /* acks built and not written yet; more: not measured */
};

extern const int64_t srv_latency_bounds[SRV_LAT_BOUNDS];

struct srv_stamp {
    uint64_t tag;
    int64_t ns; /* 0: none */
};

struct srv_trace;

struct srv_meters {
    struct srv_trace *trace;  /* a LatencyTrace's (trace.c), or NULL: not tracing */
    unsigned long long requests[SRV_REQ__COUNT];
    unsigned long long rejects[SRV_REJ__COUNT];
    unsigned long long latency[SRV_LAT_BOUNDS + 1];
    unsigned long long latency_sum_ns;
    struct srv_stamp *stamps; /* SRV_STAMPS slots, by tag */
    int64_t *unwritten;       /* the stamps of acks not written yet */
    size_t n_unwritten;
};

int srv_meters_init(struct srv_meters *m);
void srv_meters_destroy(struct srv_meters *m);
/* CLOCK_REALTIME in nanoseconds (the commands' timestamps' clock too). */
int64_t srv_meters_now(void);
/* A new order's stamp, by its tag. */
void srv_meters_stamp(struct srv_meters *m, uint64_t tag, int64_t ns);
/* Its ack is built: its stamp waits for the write. */
void srv_meters_acked(struct srv_meters *m, uint64_t tag);
/* The acks built so far are written: into the latency buckets. */
void srv_meters_written(struct srv_meters *m);
/* A dict of the counts (a new reference). */
PyObject *srv_meters_read(const struct srv_meters *m);
const char *srv_reject_name(enum srv_reject why);

/* ---- LatencyTrace (trace.c): one order in N, stamped on its way ---------- */

/* The points of a traced order, in the order it passes them. */
enum srv_trace_point {
    SRV_TP_READ,
    SRV_TP_INTAKE,
    SRV_TP_PUSHED,
    SRV_TP_TAKEN,
    SRV_TP_PUBLISHED,
    SRV_TP_POPPED,
    SRV_TP_ROUTED,
    SRV_TP_WRITTEN,
    SRV_TP__COUNT
};

enum srv_trace_sizes {
    SRV_TRACE_SLOTS = 1 << 10, /* traced orders in flight (by tag; a power of two) */
    SRV_TRACE_KEEP = 1 << 16   /* finished records kept (a reservoir sample) */
};
#define SRV_TRACE_STALE_NS 1000000000LL /* an unfinished record older than this may be dropped */

struct srv_trace_rec {
    uint64_t tag;  /* 0: a free slot */
    uint64_t seq;  /* its command's, once answered */
    const void *link; /* the srv_link its answer went to, once routed: compared, never followed */
    int64_t t[SRV_TP__COUNT];
};

struct srv_trace {
    uint32_t every, countdown; /* trace one new order in `every` */
    int64_t read_ns;           /* the last socket read */
    int64_t popped_ns;         /* the current route() call's events taken */
    struct srv_trace_rec *slots;
    uint32_t *routed;          /* slots answered and not finished */
    size_t n_routed;
    size_t unpushed;           /* slots waiting for their push stamp */
    int64_t *kept;             /* SRV_TRACE_KEEP records of SRV_TP__COUNT stamps */
    size_t n_kept;
    uint64_t rng;
    unsigned long long traced, completed, lost, skipped;
};

extern PyTypeObject srv_trace_type;

/* A new order was queued with `tag`: traced if it is the one in `every`. */
void srv_trace_taken(struct srv_trace *t, uint64_t tag);
/* The dispatcher took a batch of events from the output ring. */
void srv_trace_popped(struct srv_trace *t);
/* The answer to `tag`'s command (seq) is queued to the session of `link`. */
void srv_trace_routed(struct srv_trace *t, uint64_t tag, uint64_t seq, const void *link);
/* The answer to `tag`'s command will not be written (its session has closed):
   a traced record of it is lost. */
void srv_trace_dropped(struct srv_trace *t, uint64_t tag);
/* A RUNNER_EV_BATCH: the stamps of the batch of seqs order_id..seq. */
void srv_trace_batch(struct srv_trace *t, const struct eng_event *ev);
/* A flush handed all of `link`'s output to its socket: what was routed to it is written. */
void srv_trace_sent(struct srv_trace *t, const void *link);
/* The flush's end: what was routed so far and not stamped by srv_trace_sent
   (a session whose socket took only part, or none) counts as written now. */
void srv_trace_written(struct srv_trace *t);
/* A socket read has just returned: the read stamp of the orders it completes. */
void srv_trace_read(struct srv_trace *t);
/* `n` records went into the engine's input ring in a push that began at `ns`. */
void srv_trace_pushed(struct srv_trace *t, const struct runner_cmd *recs, size_t n, int64_t ns);

/* ---- Ledger: the server's per-order bookkeeping -------------------------- */

/* One account's orders, counted as requests and events pass. */
struct srv_account_counts {
    uint32_t account;
    uint32_t used;       /* 0: a free slot */
    long long open;      /* accepted orders not finished */
    long long in_flight; /* new orders not answered yet */
};

/* ---- an index by a 64-bit id (idmap.c) ----------------------------------- */

struct srv_idmap_slot {
    uint64_t key;
    void *value; /* NULL: a free slot */
};

enum { SRV_IDMAP_SHARD_BITS = 8, SRV_IDMAP_SHARDS = 1 << SRV_IDMAP_SHARD_BITS };

struct srv_idmap_shard {
    struct srv_idmap_slot *slots; /* open addressing; at most half full */
    size_t cap, used;             /* slots (0, or a power of two), entries in them */
    uint8_t shift;                /* 64 - log2(cap) */
};

/* id -> a pointer (not NULL), the caller's: the index never follows one. All zero: empty. */
struct srv_idmap {
    struct srv_idmap_shard shards[SRV_IDMAP_SHARDS];
    size_t count;
};

/* The pointer of `key`, or NULL. */
void *srv_idmap_find(const struct srv_idmap *m, uint64_t key);
/* key -> value (not NULL): 0, *was the pointer it replaced or NULL; or -1
 * with MemoryError, nothing changed. */
int srv_idmap_put(struct srv_idmap *m, uint64_t key, void *value, void **was);
/* `key` out: the pointer it had, or NULL. */
void *srv_idmap_remove(struct srv_idmap *m, uint64_t key);
/* Every entry out, `drop(pointer, arg)` called on each once the index no
 * longer holds it (it may run Python code), and the memory freed. */
void srv_idmap_clear(struct srv_idmap *m, void (*drop)(void *value, void *arg), void *arg);
/* NULL, or what is wrong with the index, or what `check(key, pointer, arg)`
 * says is wrong with an entry (for tests). */
const char *srv_idmap_verify(const struct srv_idmap *m, const char *(*check)(uint64_t key, void *value, void *arg),
                             void *arg);
/* The number of entries in each shard: a new list. */
PyObject *srv_idmap_sizes(const struct srv_idmap *m);

/* ---- the Ledger's open orders (orders.c) ---------------------------------- */

/* An open order a session owns. */
struct srv_open_order {
    uint64_t oid;
    srv_link *link;            /* its owner (held while it owns orders) */
    PyObject *coid;            /* its client order id: a str or None (held) */
    uint32_t inst;
    struct list_node in_link;  /* on link->orders */
};

/* Open order id -> struct srv_open_order. */
struct srv_orders {
    struct srv_idmap index;
};

/* The open order `oid`, or NULL. */
struct srv_open_order *srv_orders_find(struct srv_orders *t, uint64_t oid);
/* A new open order `oid` (not in `t`), on link's list; NULL with MemoryError. */
struct srv_open_order *srv_orders_add(struct srv_orders *t, uint64_t oid, srv_link *link, uint32_t inst,
                                 PyObject *coid);
/* The order is link's now (it was another's). */
void srv_orders_move(struct srv_open_order *o, srv_link *link);
/* The order is finished: out of `t` and its link's list, freed. */
void srv_orders_remove(struct srv_orders *t, struct srv_open_order *o);
/* Every order out, and the index's memory freed. */
void srv_orders_clear(struct srv_orders *t);
/* (instrument, client order id) of an open order: a new tuple. */
PyObject *srv_order_info(const struct srv_open_order *o);
/* link's open orders: a new dict, order id -> (instrument, client order id), in the order it came to own them. */
PyObject *srv_link_orders(srv_link *link);
/* A new list of the ids of link's open orders, oldest first: of instrument
 * `inst`, or of every one when it is negative. */
PyObject *srv_link_order_ids(srv_link *link, int64_t inst);
/* Open orders as they were at one moment: what a walk that makes Python
 * objects reads (making one can run a collection, whose finalizers may
 * change the orders and free the entries under the walk). */
struct srv_order_copy {
    uint64_t oid;
    uint32_t inst;
    PyObject *coid; /* held */
};
struct srv_order_copies {
    struct srv_order_copy *items;
    size_t n, cap;
};
/* Append link's open orders to `c` (no Python code runs); -1 with MemoryError. */
int srv_orders_copy(srv_link *link, struct srv_order_copies *c);
void srv_orders_copies_free(struct srv_order_copies *c);
/* A new dict of the copies: order id -> (instrument, client order id). */
PyObject *srv_order_copies_dict(const struct srv_order_copies *c);
/* NULL, or what is wrong with `t` (for tests). */
const char *srv_orders_verify(struct srv_orders *t);

typedef struct {
    PyObject_HEAD
    PyObject *links;     /* dict: session id -> Link */
    struct srv_orders orders;    /* the open orders and their owners */
    struct srv_account_counts *counts; /* open addressing by account; at most half full */
    size_t counts_cap, counts_used;    /* slots (a power of two), accounts in them */
    srv_link **listed;                 /* links with output queued since the last flush (held) */
    size_t n_listed, listed_cap;
    struct srv_meters meters;
    /* The order ids the server knows: up to known_oid (recovered, or in an
     * ACCEPTED routed), unless catch_up_seq: then the engine answered
     * commands the Router has not routed yet (a node that took the lead),
     * up to the event of that seq, and any id may be known. */
    uint64_t known_oid, catch_up_seq;
} srv_ledger;

extern PyTypeObject srv_ledger_type;

/* ---- the sessions' output (outbox.c) -------------------------------------- */

/* What Ledger.flush reports of a link, besides a failed send's errno. */
enum srv_out_report { SRV_OUT_WAIT = 0, SRV_OUT_SLOW = -1 };

/* Queue `n` bytes (whole frames) for link's session. */
int srv_outbox_put(srv_ledger *l, srv_link *link, const char *data, size_t n);
/* Bytes queued for link's session, not sent yet. */
size_t srv_link_unsent(const srv_link *link);
/* Write every listed link's output: None, or a list of (session, what). */
PyObject *srv_outbox_flush(srv_ledger *l);
/* Let go of the flush list (the Ledger is cleared). */
void srv_outbox_release(srv_ledger *l);
PyObject *srv_link_write(srv_link *self, PyObject *ignored);
PyObject *srv_link_take_output(srv_link *self, PyObject *ignored);
PyObject *srv_link_drop_output(srv_link *self, PyObject *ignored);
PyObject *srv_link_forget_socket(srv_link *self, PyObject *ignored);
extern const char srv_link_write_doc[], srv_link_take_output_doc[], srv_link_drop_output_doc[],
    srv_link_forget_socket_doc[];

/* The counts of `account` (zero when it has none yet); NULL, with
 * MemoryError set, when there is no memory for a new account. */
struct srv_account_counts *srv_ledger_counts(srv_ledger *l, uint32_t account);
/* An open order a session owns (borrowed), or NULL. */
struct srv_open_order *srv_ledger_order(srv_ledger *l, uint64_t oid);
/* The Link owning an open order (borrowed), or NULL. */
srv_link *srv_ledger_owner(srv_ledger *l, uint64_t oid);
/* Whether an order id is one the server could have told a client of. */
int srv_ledger_knows(const srv_ledger *l, uint64_t oid);
/* Another session of `link`'s account that holds an open order with client
 * order id `coid`, or is open and has a new order with it unanswered
 * (borrowed), or NULL; *err set on error. */
srv_link *srv_ledger_coid_holder(srv_ledger *l, srv_link *link, PyObject *coid, int *err);
/* The order is link's now: in the open orders, on its list and, with a coid, in link->coids. */
int srv_ledger_own(srv_ledger *l, srv_link *link, uint64_t oid, uint32_t inst, PyObject *coid);
/* The order is finished: out of the open orders and link's (nothing if it is not link's). */
int srv_ledger_forget(srv_ledger *l, srv_link *link, uint64_t oid);

/* ---- OrderStatus: orders' status for the orders and order_status requests -- */

typedef struct {
    PyObject_HEAD
    struct srv_idmap open;     /* order id -> its open OrderRecord (held) */
    struct srv_idmap accounts; /* account -> its open OrderRecords, in the order accepted, and finished ones */
    struct srv_idmap coids;    /* the key of (account, client order id) -> its open OrderRecord (status.c) */
    Py_ssize_t keep;           /* finished orders kept per account */
    int coid_key_bits;         /* of the keys in `coids`: 64; fewer in tests, to make keys clash */
    char ready;                /* initialised (by __init__) */
} srv_status;

extern PyTypeObject srv_status_type;
extern PyTypeObject srv_status_rec_type; /* OrderRecord: one order's status */

/* Update the records by one event of the engine (those of other types change none): 0, or -1 with an error. */
int srv_status_event(srv_status *st, const struct eng_event *ev);

/* ---- market data (books.c) ------------------------------------------------ */

/* MarketData's tables (see MarketData.router_tables), borrowed. */
struct srv_md {
    PyObject *books;       /* list by instrument: ({}, bids, asks), price -> (total, count) */
    PyObject *subscribers; /* list by instrument: a set of sessions */
    PyObject *changes;     /* dict: instrument -> {(side, price): (total, count)} */
    PyObject *trades;      /* dict: instrument -> [(trade id, price, qty, aggressor side)] */
};

/* A level event into its book (and the changes, if subscribed). */
int srv_md_level(struct srv_md *md, const struct eng_event *ev);
/* A trade into the trades to publish, if subscribed. */
int srv_md_trade(struct srv_md *md, const struct eng_event *ev);

/* ---- JSON frames ----------------------------------------------------------- */

/* A frame being written: the 4-byte length first, then the JSON body. */
struct srv_frame {
    char *buf;
    size_t len, cap;
    char local[512];
};

void srv_frame_init(struct srv_frame *w);
void srv_frame_free(struct srv_frame *w);
int srv_put(struct srv_frame *w, const char *s, size_t n);
#define SRV_PUT(w, lit) srv_put((w), (lit), sizeof(lit) - 1)
int srv_put_bytes(struct srv_frame *w, PyObject *bytes);
int srv_put_i64(struct srv_frame *w, int64_t v);
int srv_put_u64(struct srv_frame *w, uint64_t v);
/* Any value as orjson writes it: None, an int, a str; else through `dumps`. */
int srv_put_value(struct srv_frame *w, PyObject *o, PyObject *dumps);
/* The finished frame (the body's length put in front) queued for link's
 * session; nothing once the link is closed. */
int srv_frame_send(struct srv_frame *w, srv_ledger *l, srv_link *link);

/* ---- the form of a per-order request (form.c) ------------------------------ */

/* A per-order request, read and checked for form; not yet carried out.
 * The fields read from the message (or form.c's defaults) are held: looking
 * up the next field may run Python (a key's __eq__) that drops one read
 * before from the message. srv_form_release lets go of them. */
struct srv_order {
    struct eng_cmd cmd;  /* all but instrument, account, tag and ts */
    PyObject *kind;      /* interned "new_order", "cancel" or "modify" (not held) */
    PyObject *req_id;    /* set by the caller (not held) */
    PyObject *coid;      /* NULL for none */
    PyObject *symbol, *side, *order_type, *tif, *stp; /* new_order's strings */
    int has_price;       /* a price was given */
    int keep_price, keep_qty; /* modify */
};

/* Why a request is not well-formed: the protocol's code and message (owned). */
struct srv_form_error {
    const char *code;
    PyObject *message;
};

/* Read msg as a request of `kind`: 1 well-formed, 0 not (*e says why),
 * 2 `kind` is not a per-order request, -1 on error. Whichever it returns,
 * srv_form_release(r) once done with r. */
int srv_form_read(PyObject *kind, PyObject *msg, struct srv_order *r, struct srv_form_error *e);
void srv_form_release(struct srv_order *r);
PyObject *srv_read_order(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* trace.c: one stage's times over a LatencyTrace's records, sorted. */
PyObject *srv_stage_times(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char srv_stage_times_doc[];
extern const char srv_read_order_doc[];

/* The wire's names of the engine's codes, made at import. */
extern struct srv_tables {
    PyObject *sides, *order_types, *tifs, *stps;  /* dicts: name -> code */
    PyObject *side_choices, *order_type_choices, *tif_choices, *stp_choices; /* repr(sorted(names)) */
    PyObject *limit, *gtc, *ioc, *stp_none;       /* the defaults */
} srv_tables;
extern PyObject *srv_form_error_type;
int srv_tables_init(PyObject *module);

/* ---- Intake: a session's frames carried out (intake.c) --------------------- */

typedef struct {
    PyObject_HEAD
    srv_ledger *ledger;
    srv_commands *commands;
    PyObject *instruments; /* dict: symbol -> instrument number */
    PyObject *loads;
    /* IntakeEvents, bound once */
    PyObject *on_undecodable, *on_refused, *on_rejected, *on_over_rate;
    long long max_open;
    int64_t turn_after_ns; /* a drain stops once it has run this long (0: when the frames end) */
} srv_intake;

/* Carry out the whole frames held in `inbox` until one needs Python or
 * waiting, or the drain has run turn_after_ns (Intake.drain): None,
 * (message,), False, True, or NULL on error. */
PyObject *srv_intake_drain(srv_intake *self, srv_link *link, srv_inbox *inbox);

/* ---- module ---------------------------------------------------------------- */

/* Interned strings, made once at import. */
extern struct srv_names {
    PyObject *type, *req_id, *symbol, *side, *qty, *price, *order_type, *tif, *post_only, *stp, *coid;
    PyObject *order_id, *new_order, *cancel, *modify, *mass_cancel;
} srv_names;

extern PyTypeObject srv_intake_type;
extern PyTypeObject srv_router_type;
extern PyTypeObject srv_poller_type;

/* A bound method of `obj` by public name, checked callable (a new reference). */
PyObject *srv_method(PyObject *obj, const char *name);
/* The exception set now, taken (cleared) as an instance with its traceback
 * attached (a new reference). */
PyObject *srv_take_error(void);
/* The addresses of a struct runner and of its struct runner_api (runner_api()),
 * as Python ints, into *r and *a: 0, or -1 with an exception set (ValueError
 * for 0 or a table older than this build's). Nothing else can be checked:
 * the caller vouches for the addresses. */
int srv_runner_addresses(PyObject *runner, PyObject *api, struct runner **r, const struct runner_api **a);
/* CLOCK_MONOTONIC in nanoseconds (time.monotonic_ns()'s clock). */
int64_t srv_monotonic_ns(void);
/* `tuple` (NULL passes through), taken out of the cyclic collector's walks
 * when none of its items can hold a reference (then it is part of no
 * cycle). A tuple made for each order is otherwise walked by the next young
 * collection, and the dict keeping it is tracked: walked whole by every full
 * one, all the open orders with it. */
PyObject *srv_untracked(PyObject *tuple);

#endif
