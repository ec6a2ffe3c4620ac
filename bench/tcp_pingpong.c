/* The raw TCP floor for tcp:// rows: a child process (CPU 1) accepts one loopback
 * connection and answers every REQ-byte message with a REP-byte one; the parent (CPU 0)
 * sends N messages one at a time (TCP_NODELAY, blocking sockets) and times each round trip.
 * Every byte is read by the receiver, and the replies are checked. Prints JSON: p50/p99
 * round trip, calls/s and MB/s of request bytes over the wall time.
 * Usage: tcp_pingpong REQ_BYTES REP_BYTES N [WARMUP] */
#define _GNU_SOURCE
#include "bench.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int read_all(int fd, unsigned char *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, p + done, n - done);
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: tcp_pingpong REQ_BYTES REP_BYTES N [WARMUP]\n"); return 2; }
    size_t req = (size_t)atol(argv[1]), rep = (size_t)atol(argv[2]);
    int n = atoi(argv[3]), warm = argc > 4 ? atoi(argv[4]) : n / 10;
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0 };
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) || getsockname(ls, (struct sockaddr *)&a, &al)) return 1;
    unsigned char *in = malloc(req > rep ? req : rep), *out = malloc(req > rep ? req : rep);
    pid_t child = fork();
    if (child == 0) {
        pin_cpu(1);
        int c = accept(ls, NULL, NULL);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (int i = 0; i < n + warm; i++) {
            if (read_all(c, in, req)) _exit(1);
            /* The "model" reads every byte: the reply's first byte is the sum of the request's. */
            unsigned char sum = 0;
            for (size_t k = 0; k < req; k++) sum += in[k];
            memset(out, 0, rep);
            if (rep) out[0] = sum;
            if (write_all(c, out, rep)) _exit(1);
        }
        _exit(0);
    }
    pin_cpu(0);
    close(ls);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) return 1;
    unsigned char expect = 0;
    for (size_t k = 0; k < req; k++) { out[k] = (unsigned char)(k * 7 + 1); expect += out[k]; }
    double *lat = malloc(sizeof(double) * (size_t)n);
    double start = 0;
    int wrong = 0;
    for (int i = 0; i < n + warm; i++) {
        if (i == warm) start = now_us();
        double t0 = now_us();
        if (write_all(s, out, req) || read_all(s, in, rep)) return 1;
        if (rep && in[0] != expect) wrong++;
        if (i >= warm) lat[i - warm] = now_us() - t0;
    }
    double wall = (now_us() - start) / 1e6;
    waitpid(child, NULL, 0);
    printf("{\"p50_us\": %.2f, \"p99_us\": %.2f, \"throughput_per_s\": %.1f, \"mb_per_s\": %.1f, \"wrong\": %d}\n",
           quantile(lat, n, 0.5), quantile(lat, n, 0.99), n / wall, n / wall * (double)req / 1e6, wrong);
    return wrong != 0;
}
