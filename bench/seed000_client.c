/* Seed 000's recipe from C with hiredis, as the RoboMaster program describes it: the nine
 * digit images pushed onto a list, a flag key set to tell the Python program to read them,
 * then the flag polled until the worker has stored the result, which is read back. The
 * worker (bench/redis_bench.py, redis-py) polls the same flag. Both poll without sleeping,
 * the recipe's best case. The worker answers [checksum, size] (bench.h) of the stamped images, checked here.
 * Prints latency percentiles as JSON. */
#define _GNU_SOURCE
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: %s PORT COUNT WARMUP IMAGES IMAGE_BYTES\n", argv[0]); return 2; }
    int port = atoi(argv[1]), count = atoi(argv[2]), warmup = atoi(argv[3]), images = atoi(argv[4]);
    size_t each = (size_t)atoll(argv[5]), bytes = each * (size_t)images;
    pin_cpu(0);
    redisContext *r = redisConnect("127.0.0.1", port);
    if (!r || r->err) { fprintf(stderr, "redis: %s\n", r ? r->errstr : "no memory"); return 1; }
    if (bytes < 8) { fprintf(stderr, "at least 8 bytes of images, please (the stamp)\n"); return 2; }
    unsigned char *payload = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) payload[i] = (unsigned char)(i * 31);
    bench_stamp(payload, 0);
    uint64_t base = bench_checksum(payload, bytes);  /* the reply must be [base + call number, bytes] */
    const char **argvv = malloc(sizeof(char *) * (size_t)(images + 2));
    size_t *lens = malloc(sizeof(size_t) * (size_t)(images + 2));
    argvv[0] = "RPUSH"; lens[0] = 5;
    argvv[1] = "IMAGE_LIST"; lens[1] = 10;
    for (int k = 0; k < images; k++) { argvv[2 + k] = (const char *)payload + (size_t)k * each; lens[2 + k] = each; }
    double *lat = malloc(sizeof(double) * (size_t)count);
    long wrong = 0;
    double start = 0;
    for (int i = 0; i < warmup + count; i++) {
        if (i == warmup) start = now_us();
        double t0 = now_us();
        bench_stamp(payload, (uint64_t)i);
        freeReplyObject(redisCommand(r, "DEL IMAGE_LIST"));
        freeReplyObject(redisCommandArgv(r, images + 2, argvv, lens));
        freeReplyObject(redisCommand(r, "SET FLAG 1"));
        for (;;) {  /* poll the flag until the worker says the result is there */
            redisReply *f = redisCommand(r, "GET FLAG");
            if (!f) { fprintf(stderr, "redis: %s\n", r->errstr); return 1; }
            int done = f->type == REDIS_REPLY_STRING && f->len == 1 && f->str[0] == '2';
            freeReplyObject(f);
            if (done) break;
        }
        redisReply *res = redisCommand(r, "GET RESULT");
        if (!res || res->type != REDIS_REPLY_STRING || res->len != 16) { fprintf(stderr, "redis: no result\n"); return 1; }
        if (!bench_reply_ok(res->str, res->len, base, (uint64_t)i, bytes)) wrong++;
        freeReplyObject(res);
        if (i >= warmup) lat[i - warmup] = now_us() - t0;  /* the result is in hand */
        freeReplyObject(redisCommand(r, "SET FLAG 0"));
    }
    double wall = now_us() - start;
    printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"throughput_per_s\": %.1f, \"wrong\": %ld}\n", quantile(lat, count, 0.5),
           quantile(lat, count, 0.99), count / (wall / 1e6), wrong);
    redisFree(r);
    return 0;
}
