/* libzmq REQ client (C) → pyzmq REP worker over ipc:// (bench/peers.py): what a C or C++
 * program using ZeroMQ would write. Sends the payload N times, stamped with the call's
 * number, checks every [checksum, size] reply (bench.h) and prints latency percentiles as JSON. */
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s ADDR COUNT WARMUP BYTES\n", argv[0]); return 2; }
    const char *addr = argv[1];
    int count = atoi(argv[2]), warmup = atoi(argv[3]);
    size_t bytes = (size_t)atoll(argv[4]);
    if (bytes < 8 || count < 1) { fprintf(stderr, "BYTES must be at least 8 and COUNT at least 1\n"); return 2; }
    pin_cpu(0);
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_REQ);
    int linger = 0, timeout = 30000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);  /* a dead worker is an error, not a hang */
    if (zmq_connect(sock, addr) != 0) { fprintf(stderr, "zmq_connect: %s\n", zmq_strerror(zmq_errno())); return 1; }
    uint64_t base;
    unsigned char *payload = bench_payload(bytes, &base);
    bench_run run = bench_start(count, warmup);
    for (int i = 0; i < warmup + count; i++) {
        double t0 = bench_call_begins(&run, i);
        bench_stamp(payload, (uint64_t)i);
        unsigned char reply[16];
        if (zmq_send(sock, payload, bytes, 0) != (int)bytes) { fprintf(stderr, "zmq_send: %s\n", zmq_strerror(zmq_errno())); return 1; }
        int n = zmq_recv(sock, reply, sizeof reply, 0);
        if (n < 0) { fprintf(stderr, "zmq_recv: %s\n", zmq_strerror(zmq_errno())); return 1; }
        if (!bench_reply_ok(reply, (size_t)n, base, (uint64_t)i, bytes)) run.wrong++;
        bench_call_ends(&run, i, t0);
    }
    bench_report(&run);
    zmq_close(sock);
    zmq_ctx_destroy(ctx);
    free(payload);
    return 0;
}
