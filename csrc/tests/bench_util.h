/*
 * bench_util.h - what the benchmark's cases share: the clock and a sort
 * order for medians.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <time.h>

/* The thread's CPU time: the benchmark is one thread, and on a small shared
   machine wall time would also count the stretches it spent descheduled. */
static inline double bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* qsort() order of doubles, for medians. */
static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif /* BENCH_UTIL_H */
