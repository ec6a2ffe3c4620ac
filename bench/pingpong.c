/* The wake-up floor: two processes (CPU 0 and CPU 1) bounce a token N times, through a
 * pair of pipes or a shared futex word (a kernel wake-up each way), or by spinning on a
 * shared cache line (no kernel at all). Prints the median and p99 round trip as JSON.
 * Usage: pingpong pipe|futex|spin [N] */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
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
    int spin = argc > 1 && strcmp(argv[1], "spin") == 0;
    int futex = argc > 1 && strcmp(argv[1], "futex") == 0;
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    int a[2], b[2];
    if (pipe(a) || pipe(b)) return 1;
    _Atomic int *flag = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *flag = 0;
    pid_t child = fork();
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
                if (read(a[0], &c, 1) != 1 || write(b[1], &c, 1) != 1) _exit(1);
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
            if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) return 1;
        }
        lat[i] = now_us() - t0;
    }
    waitpid(child, NULL, 0);
        printf("{\"p50_us\": %.3f, \"p99_us\": %.3f}\n", quantile(lat, n, 0.5), quantile(lat, n, 0.99));
    return 0;
}
