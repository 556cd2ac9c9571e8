/*
 * harness_adapter.h - replays a harness-shaped flow (harness_flow.h) on the
 * core as a gateway in front of it would: the caller chooses order ids, the
 * core assigns its own, so the adapter keeps a map from the caller's ids to
 * the core's (open addressing) and one back (an array: the core's ids are
 * dense), fills the map from ACCEPTED events (or, in HADAPT_BATCH, with
 * predicted ids as it sends the orders) and empties it as orders finish.
 * The map's cost is part of each message's.
 *
 * The `ids` paths need no map: the engine runs with caller order ids
 * (eng_config.caller_order_ids), the messages go in with the caller's ids
 * and the events come back with them.
 *
 * The outcome is summed up from the events translated back to the caller's
 * ids, so every path over the same flow must give the same sums.
 */
#ifndef HADAPT_H
#define HADAPT_H

#include <stddef.h>
#include <stdint.h>

#include "harness_flow.h"

enum hadapt_path {
    HADAPT_CMD,         /* eng_process, one message at a time, events drained after each */
    HADAPT_BATCH,       /* eng_process_batch of up to 1024, the core's ids predicted */
    HADAPT_BATCH_SPLIT, /* the same, a batch cut short where a message needs an id it creates */
    HADAPT_IDS_CMD,     /* caller order ids, eng_process one message at a time */
    HADAPT_IDS_BATCH,   /* caller order ids, eng_process_batch of up to 1024 */
    HADAPT__COUNT
};

/* The outcome of a replay. */
struct hadapt_sums {
    uint64_t trades;
    uint64_t traded_qty;
    uint64_t cancelled;  /* CANCELLED events (user and IOC remainders) */
    uint64_t rejected;   /* cancels and modifies of finished orders, by us or the core */
    uint64_t trade_hash; /* over (taker id, maker id, price, qty) of every trade */
    uint64_t batches;    /* eng_process_batch calls (0 for HADAPT_CMD) */
};

struct hadapt;

const char *hadapt_path_name(int path);

/* A fresh engine (of the mode `path` needs) and maps sized for `f`. Returns
   NULL when out of memory. */
struct hadapt *hadapt_create(const struct hflow *f, int path);
void hadapt_destroy(struct hadapt *a);

/* Replay the whole flow once on the fresh engine. Returns 0, or -1 if the
   core did not behave as the adapter relies on (see HADAPT_BATCH). */
int hadapt_replay(struct hadapt *a);
void hadapt_get_sums(const struct hadapt *a, struct hadapt_sums *out);

#endif /* HADAPT_H */
