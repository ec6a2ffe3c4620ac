// See CFerryLinux.h for why each function exists.
#define _GNU_SOURCE
#include "CFerryLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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

#include <pthread.h>
#include <stdlib.h>

#define CFERRY_MAX_LIVENESS_FDS 4096
static pthread_mutex_t cferry_liveness_lock = PTHREAD_MUTEX_INITIALIZER;
static int cferry_liveness_fds[CFERRY_MAX_LIVENESS_FDS];
static int cferry_liveness_count = 0;
static uint64_t cferry_forks = 0;
static pthread_once_t cferry_atfork_once = PTHREAD_ONCE_INIT;

static void cferry_prepare(void) { pthread_mutex_lock(&cferry_liveness_lock); }
static void cferry_parent(void) { pthread_mutex_unlock(&cferry_liveness_lock); }
static void cferry_child(void) {
    // Only async-signal-safe calls here: open, dup3, close.
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int i = 0; i < cferry_liveness_count; i++) {
        if (null_fd >= 0) dup3(null_fd, cferry_liveness_fds[i], O_CLOEXEC);
    }
    if (null_fd >= 0) close(null_fd);
    cferry_liveness_count = 0;
    cferry_forks++;
    pthread_mutex_init(&cferry_liveness_lock, NULL);
}
static void cferry_install_atfork(void) { pthread_atfork(cferry_prepare, cferry_parent, cferry_child); }

int cferry_liveness_register(int fd) {
    pthread_once(&cferry_atfork_once, cferry_install_atfork);
    pthread_mutex_lock(&cferry_liveness_lock);
    int rc = 0;
    if (cferry_liveness_count >= CFERRY_MAX_LIVENESS_FDS) { errno = ENFILE; rc = -1; }
    else cferry_liveness_fds[cferry_liveness_count++] = fd;
    pthread_mutex_unlock(&cferry_liveness_lock);
    return rc;
}

void cferry_liveness_close(int fd) {
    pthread_mutex_lock(&cferry_liveness_lock);
    for (int i = 0; i < cferry_liveness_count; i++) {
        if (cferry_liveness_fds[i] == fd) {
            cferry_liveness_fds[i] = cferry_liveness_fds[--cferry_liveness_count];
            break;
        }
    }
    close(fd);
    pthread_mutex_unlock(&cferry_liveness_lock);
}

uint64_t cferry_fork_generation(void) { return __atomic_load_n(&cferry_forks, __ATOMIC_RELAXED); }

#include <stdio.h>
int cferry_reopen(int fd) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return open(path, O_RDWR | O_CLOEXEC);
}

int cferry_privatize(void *addr, size_t len) {
    void *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) return -1;
    memcpy(copy, addr, len);
    // mremap moves the private pages over the range atomically (no window without a mapping).
    void *moved = mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr);
    if (moved == MAP_FAILED) { int e = errno; munmap(copy, len); errno = e; return -1; }
    return 0;
}

/* getaddrinfo of host:port for a TCP stream (`passive`: addresses to listen on): 0, or -2
 * with the resolver's reason in `why`. */
static int cferry_resolve(const char *host, int port, int passive, struct addrinfo **res, char *why, size_t why_len) {
    struct addrinfo hints;
    char service[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(host, service, &hints, res);
    if (rc != 0) {
        if (why && why_len) snprintf(why, why_len, "%s", gai_strerror(rc));
        return -2;
    }
    return 0;
}

int cferry_tcp_connect(const char *host, int port, int timeout_ms, char *why, size_t why_len) {
    struct addrinfo *res = NULL, *ai;
    if (cferry_resolve(host, port, 0, &res, why, why_len) != 0) return -2;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int last = ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { last = errno; continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) { freeaddrinfo(res); return fd; }
        if (errno != EINPROGRESS) { last = errno; close(fd); continue; }
        for (;;) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long long spent = (now.tv_sec - start.tv_sec) * 1000LL + (now.tv_nsec - start.tv_nsec) / 1000000LL;
            if (spent >= timeout_ms) { last = ETIMEDOUT; break; }
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            int n = poll(&p, 1, (int)(timeout_ms - spent));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { last = n == 0 ? ETIMEDOUT : errno; break; }
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err == 0) { freeaddrinfo(res); return fd; }
            last = err;
            break;
        }
        close(fd);
        if (last == ETIMEDOUT) break;
    }
    freeaddrinfo(res);
    errno = last;
    return -1;
}

int cferry_poll_one(int fd, short events, int64_t timeout_ns) {
    struct pollfd p = { .fd = fd, .events = events };
    struct timespec ts = { .tv_sec = (time_t)(timeout_ns / 1000000000LL), .tv_nsec = (long)(timeout_ns % 1000000000LL) };
    int n = ppoll(&p, 1, timeout_ns < 0 ? NULL : &ts, NULL);
    if (n <= 0) return n;
    return p.revents;
}

short cferry_pollin(void) { return POLLIN; }
short cferry_pollout(void) { return POLLOUT; }

long cferry_send(int fd, const void *buf, size_t len) { return (long)send(fd, buf, len, MSG_NOSIGNAL); }

long cferry_sendv(int fd, const void *iov, int count) {
    struct msghdr msg = {0};
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = (size_t)count;
    return (long)sendmsg(fd, &msg, MSG_NOSIGNAL);
}

long cferry_recv(int fd, void *buf, size_t len) { return (long)recv(fd, buf, len, MSG_DONTWAIT); }

long cferry_recv_wait(int fd, void *buf, size_t len) { return (long)recv(fd, buf, len, 0); }

int cferry_tcp_listen(const char *host, int port, int backlog, char *why, size_t why_len) {
    struct addrinfo *res = NULL, *ai;
    if (cferry_resolve(host, port, 1, &res, why, why_len) != 0) return -2;
    int last = EADDRNOTAVAIL;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { last = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) { freeaddrinfo(res); return fd; }
        last = errno;
        close(fd);
    }
    freeaddrinfo(res);
    errno = last;
    return -1;
}

int cferry_local_port(int fd) {
    struct sockaddr_storage a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0) return -1;
    if (a.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&a)->sin_port);
    if (a.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    errno = EAFNOSUPPORT;
    return -1;
}

int cferry_tcp_accept(int listen_fd, int timeout_ms) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

// Defined by FerryNetwork (Transports+Network.swift) when it is linked into the same image.
extern void cferry_network_register(void) __attribute__((weak));

void cferry_register_linked_transports(void) {
    if (cferry_network_register) cferry_network_register();
}

// ---- SIGBUS guard (see CFerryLinux.h) ------------------------------------------------------
// The table is read by the signal handler without locks: each entry's range is published
// with release stores and cleared before the range is unmapped; writers (add/remove) take a
// mutex among themselves. 1024 entries: channels, streams and their header peeks together.
#define CFERRY_GUARDS 1024
static struct { _Atomic(uintptr_t) start; _Atomic(size_t) len; atomic_int broken; } cferry_guards[CFERRY_GUARDS];
static pthread_mutex_t cferry_guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction cferry_guard_previous;
static atomic_int cferry_guard_installed;
static atomic_uint cferry_guard_fault_count;
static size_t cferry_guard_page = 4096;

static void cferry_guard_handler(int sig, siginfo_t *info, void *context) {
    uintptr_t a = (uintptr_t)info->si_addr;
    if (info->si_code > 0) {  // raised by the kernel for an access, not by kill()/raise()
        for (int i = 0; i < CFERRY_GUARDS; i++) {
            uintptr_t s = atomic_load_explicit(&cferry_guards[i].start, memory_order_acquire);
            size_t n = atomic_load_explicit(&cferry_guards[i].len, memory_order_acquire);
            if (s == 0 || a < s || a - s >= n) continue;
            // Only the page that is gone becomes private zeros (mmap is a system call, safe
            // here): pages still backed by the file stay shared, and private pages inside the
            // range (preserved request pages) keep their bytes. The access resumes on zeros;
            // the library sees the mark before it trusts anything it read.
            uintptr_t page = a & ~(uintptr_t)(cferry_guard_page - 1);
            if (mmap((void *)page, cferry_guard_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
                atomic_store_explicit(&cferry_guards[i].broken, 1, memory_order_release);
                atomic_fetch_add_explicit(&cferry_guard_fault_count, 1, memory_order_release);
                return;
            }
            break;
        }
    }
    // Not ours: what was there before.
    if ((cferry_guard_previous.sa_flags & SA_SIGINFO) && cferry_guard_previous.sa_sigaction) {
        cferry_guard_previous.sa_sigaction(sig, info, context);
    } else if (cferry_guard_previous.sa_handler != SIG_DFL && cferry_guard_previous.sa_handler != SIG_IGN) {
        cferry_guard_previous.sa_handler(sig);
    } else {
        // The default action: returning re-executes the access, which now kills the process.
        signal(SIGBUS, SIG_DFL);
    }
}

static void cferry_guard_install(void) {
    if (atomic_load(&cferry_guard_installed)) return;
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0) cferry_guard_page = (size_t)page;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = cferry_guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &cferry_guard_previous) == 0) atomic_store(&cferry_guard_installed, 1);
}

int cferry_guard_add(void *addr, size_t len) {
    if (!addr || !len) return -1;
    pthread_mutex_lock(&cferry_guard_lock);
    cferry_guard_install();
    int found = -1;
    for (int i = 0; i < CFERRY_GUARDS; i++) {
        if (atomic_load_explicit(&cferry_guards[i].start, memory_order_relaxed) == 0) {
            atomic_store_explicit(&cferry_guards[i].broken, 0, memory_order_relaxed);
            atomic_store_explicit(&cferry_guards[i].len, len, memory_order_release);
            atomic_store_explicit(&cferry_guards[i].start, (uintptr_t)addr, memory_order_release);
            found = i;
            break;
        }
    }
    pthread_mutex_unlock(&cferry_guard_lock);
    return found < 0 ? -1 : 0;
}

void cferry_guard_remove_range(void *addr, size_t len) {
    uintptr_t lo = (uintptr_t)addr;
    pthread_mutex_lock(&cferry_guard_lock);
    for (int i = 0; i < CFERRY_GUARDS; i++) {
        uintptr_t s = atomic_load_explicit(&cferry_guards[i].start, memory_order_relaxed);
        if (s == 0 || s < lo || s - lo >= len) continue;
        atomic_store_explicit(&cferry_guards[i].start, 0, memory_order_release);
        atomic_store_explicit(&cferry_guards[i].len, 0, memory_order_release);
    }
    pthread_mutex_unlock(&cferry_guard_lock);
}

int cferry_guard_broken_range(void *addr, size_t len) {
    uintptr_t lo = (uintptr_t)addr;
    for (int i = 0; i < CFERRY_GUARDS; i++) {
        uintptr_t s = atomic_load_explicit(&cferry_guards[i].start, memory_order_acquire);
        if (s == 0 || s < lo || s - lo >= len) continue;
        if (atomic_load_explicit(&cferry_guards[i].broken, memory_order_acquire)) return 1;
    }
    return 0;
}

unsigned cferry_guard_faults(void) { return atomic_load_explicit(&cferry_guard_fault_count, memory_order_acquire); }
