// See CFerryLinux.h for why each function exists.
#define _GNU_SOURCE
#include "CFerryLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int cferry_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
        ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
        tsp = &ts;
    }
    // FUTEX_WAIT (not _PRIVATE): the word lives in a mapping shared between processes.
    return (int)syscall(SYS_futex, addr, FUTEX_WAIT, expected, tsp, NULL, 0);
}

int cferry_futex_wake(uint32_t *addr, int count) {
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE, count, NULL, NULL, 0);
}

int cferry_shm_open(const char *name, int oflag, mode_t mode) {
    return shm_open(name, oflag, mode);
}

int cferry_shm_unlink(const char *name) { return shm_unlink(name); }

int cferry_ofd_lock(int fd, short type, int64_t start, int64_t len, int wait) {
    struct flock fl = {0};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)start;
    fl.l_len = (off_t)len;
    fl.l_pid = 0; // required for OFD locks
    return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

int cferry_ofd_test(int fd, short type, int64_t start, int64_t len) {
    struct flock fl = {0};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)start;
    fl.l_len = (off_t)len;
    fl.l_pid = 0;
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return -1;
    return fl.l_type == F_UNLCK ? 0 : 1;
}

int cferry_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

int cferry_errno_eagain(void) { return EAGAIN; }
int cferry_errno_etimedout(void) { return ETIMEDOUT; }
int cferry_errno_eintr(void) { return EINTR; }

#include <string.h>
static _Thread_local char cferry_error_text[1024];

void cferry_set_error(const char *text) {
    strncpy(cferry_error_text, text ? text : "", sizeof cferry_error_text - 1);
    cferry_error_text[sizeof cferry_error_text - 1] = 0;
}

const char *cferry_get_error(void) { return cferry_error_text; }

#include <sched.h>
int cferry_pin_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}
