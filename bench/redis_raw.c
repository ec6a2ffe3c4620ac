/* Raw Redis round trips from C with hiredis, the floor for the redis:// rows: `set` writes a
 * payload of BYTES under one key (the request's bytes crossing once), `get` reads a value of
 * BYTES bytes (what a cache hit has to fetch). Prints latency percentiles as JSON. */
#define _GNU_SOURCE
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: %s PORT COUNT WARMUP BYTES set|get\n", argv[0]); return 2; }
    int port = atoi(argv[1]), count = atoi(argv[2]), warmup = atoi(argv[3]);
    size_t bytes = (size_t)atoll(argv[4]);
    int get = strcmp(argv[5], "get") == 0;
    pin_cpu(0);
    redisContext *r = redisConnect("127.0.0.1", port);
    if (!r || r->err) { fprintf(stderr, "redis: %s\n", r ? r->errstr : "no memory"); return 1; }
    char *payload = malloc(bytes ? bytes : 1);
    for (size_t i = 0; i < bytes; i++) payload[i] = (char)(i * 31);
    freeReplyObject(redisCommand(r, "SET bench:raw:value %b", payload, bytes));
    double *lat = malloc(sizeof(double) * (size_t)count);
    long wrong = 0;
    double start = 0;
    for (int i = 0; i < warmup + count; i++) {
        if (i == warmup) start = now_us();
        double t0 = now_us();
        redisReply *a = get ? redisCommand(r, "GET bench:raw:value") : redisCommand(r, "SET bench:raw:in %b", payload, bytes);
        if (!a) { fprintf(stderr, "redis: %s\n", r->errstr); return 1; }
        if (get && (a->type != REDIS_REPLY_STRING || a->len != bytes || memcmp(a->str, payload, bytes) != 0)) wrong++;
        if (i >= warmup) lat[i - warmup] = now_us() - t0;
        freeReplyObject(a);
    }
    double wall = now_us() - start;
    printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"throughput_per_s\": %.1f, \"wrong\": %ld}\n", quantile(lat, count, 0.5),
           quantile(lat, count, 0.99), count / (wall / 1e6), wrong);
    redisFree(r);
    return 0;
}
