/* The wake-up floor: two processes (CPU 0 and CPU 1) bounce a token N times, through a
 * pair of pipes, an AF_UNIX socketpair (socket2: one socketpair per direction) or a shared
 * futex word (a kernel wake-up each way),
 * or by spinning on a shared cache line (no kernel at all). With GAP_US, the client works
 * (spins) that long between two calls, outside the timing, as a real client does between
 * requests: on some VMs that changes what a wake-up costs, and not alike for every kind
 * (bench/notes.md). Prints the median and p99 round trip as JSON.
 * Usage: pingpong pipe|socket|socket2|futex|spin [N] [GAP_US] */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void futex_wait(_Atomic int *w, int expected) {
    while (atomic_load(w) == expected) syscall(SYS_futex, w, FUTEX_WAIT, expected, NULL, NULL, 0);
}
static void futex_set(_Atomic int *w, int value) {
    atomic_store(w, value);
    syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "pipe";
    int spin = strcmp(mode, "spin") == 0, futex = strcmp(mode, "futex") == 0, sock = strcmp(mode, "socket") == 0;
    int sock2 = strcmp(mode, "socket2") == 0;
    if (!spin && !futex && !sock && !sock2 && strcmp(mode, "pipe") != 0) {
        fprintf(stderr, "usage: %s pipe|socket|socket2|futex|spin [N] [GAP_US]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    double gap_us = argc > 3 ? atof(argv[3]) : 0;
    if (n < 1 || gap_us < 0 || gap_us > 1e6) { fprintf(stderr, "bad N or GAP_US\n"); return 2; }
    int a[2], b[2], sv[2];
    if (sock2) {  /* requests on one socketpair, replies on another */
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) || socketpair(AF_UNIX, SOCK_STREAM, 0, b)) return 1;
        int t = a[0]; a[0] = a[1]; a[1] = t;  /* a[0]: the worker's reading end, a[1]: the client's writing end */
        t = b[0]; b[0] = b[1]; b[1] = t;
    } else if (pipe(a) || pipe(b)) {
        return 1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
    /* Request and reply ends: two pipes (or two socketpairs), or both ends of one socketpair. */
    int worker_in = sock ? sv[1] : a[0], worker_out = sock ? sv[1] : b[1];
    int client_out = sock ? sv[0] : a[1], client_in = sock ? sv[0] : b[0];
    _Atomic int *flag = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (flag == MAP_FAILED) return 1;
    *flag = 0;
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        pin_cpu(1);
        char c;
        for (int i = 0; i < n; i++) {
            if (spin) {
                while (atomic_load(flag) != 2 * i + 1) {}
                atomic_store(flag, 2 * i + 2);
            } else if (futex) {
                futex_wait(flag, 2 * i);
                futex_set(flag, 2 * i + 2);
            } else {
                if (read(worker_in, &c, 1) != 1 || write(worker_out, &c, 1) != 1) _exit(1);
            }
        }
        _exit(0);
    }
    pin_cpu(0);
    double *lat = malloc(sizeof(double) * (size_t)n);
    char c = 'x';
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        if (spin) {
            atomic_store(flag, 2 * i + 1);
            while (atomic_load(flag) != 2 * i + 2) {}
        } else if (futex) {
            futex_set(flag, 2 * i + 1);
            futex_wait(flag, 2 * i + 1);
        } else {
            if (write(client_out, &c, 1) != 1 || read(client_in, &c, 1) != 1) return 1;
        }
        double t1 = now_us();
        lat[i] = t1 - t0;
        while (gap_us > 0 && now_us() - t1 < gap_us) {}
    }
    waitpid(child, NULL, 0);
    printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"gap_us\": %.1f}\n", quantile(lat, n, 0.5), quantile(lat, n, 0.99), gap_us);
    return 0;
}
