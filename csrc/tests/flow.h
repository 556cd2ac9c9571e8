/*
 * flow.h - a synthetic order flow shaped like real exchange flow, for the
 * benchmark: about 60% limit adds (a sixth of them crossing the spread), 35%
 * cancels (of an open order while the book is above its target size, else of
 * one that already traded or was cancelled: a few percent of them), 5% market
 * orders, around a random-walk mid, over a book kept
 * near `resting` open orders spread over about 2 * `levels` price levels.
 *
 * The generator drives a scratch engine to know which orders are open, so
 * the stream is realistic and deterministic for a given seed; replaying it
 * on a fresh engine gives exactly the same result.
 */
#ifndef ENG_FLOW_H
#define ENG_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include "pyengine.h"

struct flow_params {
    uint64_t seed;
    uint32_t resting; /* target number of open orders */
    uint32_t levels;  /* passive orders land within this many ticks of the touch */
    int64_t mid;      /* starting mid price, in ticks (tick size 1, lot 1) */
};

struct flow {
    struct eng_cmd *warmup; /* passive adds that build the book to `resting` */
    size_t nwarmup;
    struct eng_cmd *cmds;   /* the measured mixed flow */
    size_t ncmds;
};

/* The instrument the flow trades (add it first, as instrument 0). */
extern const struct eng_instrument_spec flow_instrument;

/* Generate a flow of `n` measured commands. Returns 0, or -1 when out of memory. */
int flow_generate(struct flow *f, size_t n, const struct flow_params *p);
void flow_free(struct flow *f);

#endif /* ENG_FLOW_H */
