/*
 * harness_flow.h - a flow shaped like the neutral matching-engine harness's
 * (issue 17), for the benchmark: one symbol; order ids chosen by the caller,
 * unique 64-bit values scattered over a range of millions; GTC limit orders
 * (most of them quotes cancelled one or two messages later), IOC limit
 * orders, cancels, and modifies that reprice an open order with qty = its
 * open qty + 1, so it always loses priority. Trades happen at the maker's
 * price (the core's rule). Five scenarios set the mid's path and the book's
 * target depth: static, normal (a random walk), swings of 25 and of 40 ticks,
 * a flash crash.
 *
 * Messages carry the caller's ids, not the core's: whoever replays them maps
 * the ids (harness_adapter.h). The generator drives a scratch engine to know
 * which orders are open, so the flow is deterministic for a given seed and
 * replaying it on a fresh engine gives exactly the same result.
 */
#ifndef HFLOW_H
#define HFLOW_H

#include <stddef.h>
#include <stdint.h>

#include "pyengine.h"

enum hflow_scenario {
    HFLOW_STATIC,
    HFLOW_NORMAL,
    HFLOW_SWING25,
    HFLOW_SWING40,
    HFLOW_CRASH,
    HFLOW__COUNT
};

enum hflow_kind {
    HFLOW_LIMIT = 1,  /* new GTC limit order: id side price qty */
    HFLOW_IOC = 2,    /* new IOC limit order: id side price qty */
    HFLOW_CANCEL = 3, /* cancel: id */
    HFLOW_MODIFY = 4  /* cancel + re-insert of id at price with qty */
};

/* One message as the harness sends it: 32 bytes. */
struct hflow_msg {
    uint8_t kind; /* enum hflow_kind */
    uint8_t side; /* enum eng_side (new orders) */
    uint8_t reserved[6];
    uint64_t id;  /* the caller's order id */
    int64_t price;
    int64_t qty;
};

/* How far after its order each cancel came, for checking the shape. */
enum { HFLOW_DIST_BUCKETS = 4 }; /* 1, 2, 3, further (or of an older order) */

struct hflow {
    struct hflow_msg *msgs;
    size_t n;
    size_t nnew;      /* new orders (LIMIT and IOC) among msgs */
    size_t peak_open; /* the most orders open at once */
    size_t count[HFLOW_MODIFY + 1];             /* messages by kind */
    size_t cancel_dist[HFLOW_DIST_BUCKETS];     /* cancels by distance */
};

/* The instrument the flow trades (add it first, as instrument 0). */
extern const struct eng_instrument_spec hflow_instrument;

/* The scenario's name ("?" when out of range). */
const char *hflow_scenario_name(int scenario);

/* Generate `n` messages of `scenario`. Returns 0, or -1 when out of memory. */
int hflow_generate(struct hflow *f, int scenario, size_t n, uint64_t seed);
void hflow_free(struct hflow *f);

#endif /* HFLOW_H */
