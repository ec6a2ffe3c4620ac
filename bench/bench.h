/* Helpers shared by the C benchmark programs: a monotonic clock, sorting latencies, pinning,
 * and the checksum every benchmark model answers with. */
#ifndef FERRY_BENCH_H
#define FERRY_BENCH_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* bench/checksum_model.py's checksum: the little-endian uint64 words summed, then each
 * remaining byte, modulo 2^64. Every benchmark model computes it, every client checks it. */
static inline uint64_t bench_checksum(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t s = 0, v;
    size_t w = n / 8;
    for (size_t i = 0; i < w; i++) { memcpy(&v, p + 8 * i, 8); s += v; }
    for (size_t i = 8 * w; i < n; i++) s += p[i];
    return s;
}

/* Writes call number `i` into the payload's first 8 bytes (the stamp: every reply differs). */
static inline void bench_stamp(void *payload, uint64_t i) { memcpy(payload, &i, 8); }

/* Whether a 16-byte reply is [base + i, n] (base: the checksum with the stamp word zero). */
static inline int bench_reply_ok(const void *reply, size_t len, uint64_t base, uint64_t i, size_t n) {
    uint64_t r[2];
    if (len != 16) return 0;
    memcpy(r, reply, 16);
    return r[0] == base + i && r[1] == (uint64_t)n;
}
/* The benchmark payload: bytes i * 31, the stamp word zero; *base receives its checksum. */
static inline unsigned char *bench_payload(size_t bytes, uint64_t *base) {
    unsigned char *p = malloc(bytes ? bytes : 1);
    for (size_t i = 0; i < bytes; i++) p[i] = (unsigned char)(i * 31);
    if (bytes >= 8) bench_stamp(p, 0);
    *base = bench_checksum(p, bytes);
    return p;
}

/* One client's run: warm-up calls, then `count` timed calls; wall time from the first timed call. */
typedef struct {
    double *lat, start;
    int count, warmup;
    long wrong;
} bench_run;

static inline bench_run bench_start(int count, int warmup) {
    bench_run r = {malloc(sizeof(double) * (size_t)(count > 0 ? count : 1)), 0, count, warmup, 0};
    return r;
}

/* Call `i` (0-based, warm-up first) begins: returns its start time. */
static inline double bench_call_begins(bench_run *r, int i) {
    double t0 = now_us();
    if (i == r->warmup) r->start = t0;
    return t0;
}

/* Call `i` ended (the reply is in hand and checked). */
static inline void bench_call_ends(bench_run *r, int i, double t0) {
    if (i >= r->warmup) r->lat[i - r->warmup] = now_us() - t0;
}

/* Prints the run as JSON (p50, p99, calls/s, wrong replies) and frees it. */
static inline void bench_report(bench_run *r) {
    double wall = now_us() - r->start;
    printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"throughput_per_s\": %.1f, \"wrong\": %ld}\n", quantile(r->lat, r->count, 0.5),
           quantile(r->lat, r->count, 0.99), r->count / (wall / 1e6), r->wrong);
    free(r->lat);
}
#endif
