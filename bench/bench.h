/* Helpers shared by the C benchmark programs: a monotonic clock, sorting latencies, pinning. */
#ifndef FERRY_BENCH_H
#define FERRY_BENCH_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdlib.h>
#include <time.h>

static inline double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts `n` latencies in place; returns the q-quantile (0 ≤ q < 1). */
static inline double quantile(double *lat, int n, double q) {
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    return lat[(int)(n * q)];
}

static inline void pin_cpu(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}
#endif
