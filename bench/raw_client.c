/* Doing it by hand (C): the payload written into a shared-memory file, a futex word flipped to
 * 1 and woken; the Python worker (bench/peers.py, RawFutexPeer) reads it in place, writes the
 * [checksum, size] reply, flips the word to 2 and wakes us. No library, no slots, no
 * liveness: the floor a careful programmer reaches with kernel wake-ups, for comparison. */
#include "bench.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define HEADER 64

static long futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts) {
    return syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, 0);
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s PATH COUNT WARMUP BYTES\n", argv[0]); return 2; }
    int count = atoi(argv[2]), warmup = atoi(argv[3]);
    size_t bytes = (size_t)atoll(argv[4]);
    if (bytes < 8 || count < 1) { fprintf(stderr, "BYTES must be at least 8 and COUNT at least 1\n"); return 2; }
    pin_cpu(0);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 1; }
    unsigned char *map = mmap(NULL, HEADER + bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) { perror("mmap"); return 1; }
    _Atomic uint32_t *state = (_Atomic uint32_t *)map;
    uint64_t base;
    unsigned char *payload = bench_payload(bytes, &base);
    bench_run run = bench_start(count, warmup);
    for (int i = 0; i < warmup + count; i++) {
        double t0 = bench_call_begins(&run, i);
        bench_stamp(payload, (uint64_t)i);
        memcpy(map + HEADER, payload, bytes);
        atomic_store_explicit(state, 1, memory_order_release);
        futex(state, FUTEX_WAKE, 1, NULL);
        double give_up = t0 + 30e6;  /* a dead worker is an error, not a hang */
        while (atomic_load_explicit(state, memory_order_acquire) != 2) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            if (futex(state, FUTEX_WAIT, 1, &ts) < 0 && errno != EAGAIN && errno != EINTR && errno != ETIMEDOUT) { perror("futex"); return 1; }
            if (now_us() > give_up) { fprintf(stderr, "the worker did not answer\n"); return 1; }
        }
        if (!bench_reply_ok(map + 8, 16, base, (uint64_t)i, bytes)) run.wrong++;
        atomic_store_explicit(state, 0, memory_order_relaxed);
        bench_call_ends(&run, i, t0);
    }
    bench_report(&run);
    munmap(map, HEADER + bytes);
    free(payload);
    return 0;
}
