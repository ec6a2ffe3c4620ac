/* The seed's Redis recipe from C with hiredis, as the RoboMaster program did it: the payload
 * under a key, the job id pushed on a list, the reply popped from a per-job list (the worker
 * is Python with redis-py, bench/peers.py). Prints latency percentiles as JSON. */
#define _GNU_SOURCE
#include <sched.h>
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>


int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: %s PORT COUNT WARMUP BYTES [check]\n", argv[0]); return 2; }
    /* Every reply is checked: the worker answers [checksum, size] (bench.h); each call is
     * stamped with its number, so a stale reply is caught too. ("check" is accepted, as before.) */
    long wrong = 0;
    int port = atoi(argv[1]), count = atoi(argv[2]), warmup = atoi(argv[3]);
    size_t bytes = (size_t)atoll(argv[4]);
    redisContext *r = redisConnect("127.0.0.1", port);
    if (!r || r->err) { fprintf(stderr, "redis: %s\n", r ? r->errstr : "no memory"); return 1; }
    if (bytes < 8) { fprintf(stderr, "BYTES must be at least 8 (the stamp)\n"); return 2; }
    char *payload = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) payload[i] = (char)(i * 31);
    bench_stamp(payload, 0);
    uint64_t base = bench_checksum(payload, bytes);
    double *lat = malloc(sizeof(double) * (size_t)count);
    double start = 0;
    for (int i = 0; i < warmup + count; i++) {
        if (i == warmup) start = now_us();
        char job[32];
        snprintf(job, sizeof job, "c%d", i);
        double t0 = now_us();
        bench_stamp(payload, (uint64_t)i);
        redisReply *a = redisCommand(r, "SET ferry:payload:%s %b", job, payload, bytes);
        redisReply *b = a ? redisCommand(r, "LPUSH ferry:jobs %s", job) : NULL;
        redisReply *c = b ? redisCommand(r, "BRPOP ferry:reply:%s 30", job) : NULL;
        if (!c || c->type != REDIS_REPLY_ARRAY || c->elements != 2 || c->element[1]->len != 16) {
            fprintf(stderr, "redis: no reply for %s\n", job);
            return 1;
        }
        if (!bench_reply_ok(c->element[1]->str, c->element[1]->len, base, (uint64_t)i, bytes)) wrong++;
        if (i >= warmup) lat[i - warmup] = now_us() - t0;
        freeReplyObject(a);
        freeReplyObject(b);
        freeReplyObject(c);
    }
    double wall = now_us() - start;
    printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"throughput_per_s\": %.1f, \"wrong\": %ld}\n", quantile(lat, count, 0.5),
           quantile(lat, count, 0.99), count / (wall / 1e6), wrong);
    redisFree(r);
    free(lat);
    free(payload);
    return 0;
}
