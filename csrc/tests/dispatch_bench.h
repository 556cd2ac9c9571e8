/*
 * dispatch_bench.h - the benchmark's "dispatch" case (dispatch_bench.c): one
 * command at a time against batches, on flows of one kind and of two kinds
 * in random order.
 */
#ifndef DISPATCH_BENCH_H
#define DISPATCH_BENCH_H

#include <stddef.h>

/* Run both flows of `n` messages `reps` times and print their rows.
   Returns 0, or -1 (and says why) when a replay went wrong. */
int bench_dispatch(size_t n, int reps);

#endif /* DISPATCH_BENCH_H */
