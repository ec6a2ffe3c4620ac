/* C client → Ferry channel (any URL: shm:// or tcp://): sends one tensor of the given shape
 * N times and prints latency percentiles as JSON. Each call is stamped with its number
 * (bench.h) and the reply must be the checksum model's [checksum, size] (bench/checksum_model.py):
 * replies that are not are counted as "wrong". With BENCH_STAMP=0 in the environment every call
 * sends the same bytes (stamp 0): what a result cache can answer (bench/redis_bench.py's cache
 * hits). Used by bench/run.py, bench/tcp.py and bench/redis_bench.py. */
#define _GNU_SOURCE
#include <sched.h>
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry.h"



int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s URL COUNT WARMUP DTYPE ITEMSIZE DIM [DIM...]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1];
    int count = atoi(argv[2]), warmup = atoi(argv[3]);
    int dtype = atoi(argv[4]);
    size_t bytes = (size_t)atoll(argv[5]);
    int ndim = argc - 6;
    int64_t shape[FERRY_MAX_DIMS];
    for (int i = 0; i < ndim; i++) { shape[i] = atoll(argv[6 + i]); bytes *= (size_t)shape[i]; }
    const char *stamp_env = getenv("BENCH_STAMP");
    int stamped = !(stamp_env && strcmp(stamp_env, "0") == 0);
    pin_cpu(0);
    if (bytes < 8) { fprintf(stderr, "the payload must have at least 8 bytes (the stamp)\n"); return 2; }
    unsigned char *payload = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) payload[i] = (unsigned char)(i * 31);
    bench_stamp(payload, 0);
    uint64_t base = bench_checksum(payload, bytes);
    int wrong = 0;
    ferry_client *client;
    if (ferry_client_new(url, NULL, &client) != FERRY_OK) { fprintf(stderr, "%s\n", ferry_last_error()); return 1; }
    double *lat = malloc(sizeof(double) * (size_t)count);
    double t_start = 0;
    for (int i = 0; i < warmup + count; i++) {
        if (i == warmup) t_start = now_us();
        double t0 = now_us(); /* the whole call: claim, write, round trip */
        ferry_call *call;
        if (ferry_call_begin(client, 10000, &call) != FERRY_OK) { fprintf(stderr, "%s\n", ferry_last_error()); return 1; }
        uint64_t stamp = stamped ? (uint64_t)i : 0;
        bench_stamp(payload, stamp);
        /* The payload is the application's buffer: copied into the slot on shm://, sent from
         * where it is on tcp:// (it stays untouched until ferry_call_send below). */
        if (ferry_writer_put_tensor_ref(ferry_call_writer(call), "input", dtype, ndim, shape, payload, bytes) != FERRY_OK) {
            fprintf(stderr, "%s\n", ferry_last_error()); return 1;
        }
        const ferry_message *reply;
        if (ferry_call_send(call) != FERRY_OK || ferry_call_wait(call, 10000, &reply) != FERRY_OK) {
            fprintf(stderr, "%s\n", ferry_last_error()); return 1;
        }
        ferry_tensor out;
        if (ferry_message_tensor_count(reply) != 1 || ferry_message_tensor(reply, 0, &out) != FERRY_OK || out.dtype != FERRY_DTYPE_UINT64 ||
            !bench_reply_ok(out.data, out.nbytes, base, stamp, bytes))
            wrong++;
        if (i >= warmup) lat[i - warmup] = now_us() - t0;
        ferry_call_free(call);
    }
    double wall = now_us() - t_start;
    printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"throughput_per_s\": %.1f, \"wrong\": %d}\n",
           quantile(lat, count, 0.5), quantile(lat, count, 0.99), count / (wall / 1e6), wrong);
    ferry_client_free(client);
    free(lat);
    free(payload);
    return 0;
}
