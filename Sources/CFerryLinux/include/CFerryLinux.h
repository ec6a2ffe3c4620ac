// C shim for the few Linux calls Swift cannot make directly.
// Every symbol is prefixed `cferry_`; each says why it exists.
#ifndef CFERRY_LINUX_H
#define CFERRY_LINUX_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

/// futex(2) FUTEX_WAIT on a shared (not process-private) word. glibc has no wrapper and
/// `syscall` is variadic, which Swift cannot call. Returns 0 or -1 with errno set.
/// `timeout_ns` < 0 waits without a deadline.
int cferry_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns);

/// futex(2) FUTEX_WAKE on a shared word. Returns the number woken or -1 with errno set.
int cferry_futex_wake(uint32_t *addr, int count);

/// shm_open(3) is variadic in glibc's headers (mode is optional), so Swift cannot import it.
int cferry_shm_open(const char *name, int oflag, mode_t mode);

/// shm_unlink(3), next to shm_open for symmetry.
int cferry_shm_unlink(const char *name);

/// fcntl(2) open-file-description byte-range lock (F_OFD_SETLK / F_OFD_SETLKW).
/// fcntl is variadic. `type` is F_RDLCK, F_WRLCK or F_UNLCK. Returns 0 or -1 with errno.
int cferry_ofd_lock(int fd, short type, int64_t start, int64_t len, int wait);

/// fcntl(2) F_OFD_GETLK: 1 if a conflicting lock of `type` is held by someone, 0 if not, -1 on error.
int cferry_ofd_test(int fd, short type, int64_t start, int64_t len);

/// The x86 `pause` (or arm `yield`) instruction for spin loops; no Swift spelling exists.
static inline void cferry_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// prctl(2) PR_SET_PDEATHSIG: prctl is variadic.
int cferry_set_parent_death_signal(int sig);

/// errno constants used by FerryCore, exported as functions so Swift sees stable values.
int cferry_errno_eagain(void);
int cferry_errno_etimedout(void);
int cferry_errno_eintr(void);



/// Thread-local "last error" text for the C ABI (ferry_last_error). Swift has no
/// thread-local globals, so the storage lives here. The text is truncated to 1023 bytes.
void cferry_set_error(const char *text);
const char *cferry_get_error(void);
/// sched_setaffinity(2) to one CPU: cpu_set_t's CPU_SET macros are not visible to Swift.
int cferry_pin_cpu(int cpu);

/// Fork safety for liveness. Ferry marks a process alive by open-file-description locks,
/// which a fork()ed child would otherwise share (the child's copy of the descriptor keeps
/// the lock after the parent dies). Descriptors registered here are replaced by /dev/null
/// in every forked child (pthread_atfork), so a lock lives exactly as long as the process
/// that took it. Returns 0, or -1 with errno (ENFILE when the table is full).
int cferry_liveness_register(int fd);
/// Unregisters `fd` and closes it, under the same lock as fork, so a fork never sees a
/// registered descriptor that is already closed (and maybe reused).
void cferry_liveness_close(int fd);
/// Number of forks this process descends from since libferry was loaded; objects made
/// before a fork compare it to know they belong to the parent.
uint64_t cferry_fork_generation(void);
/// Opens a second, independent open file description of the file behind `fd`
/// (open("/proc/self/fd/N")): OFD locks taken through it are separate from `fd`'s.
int cferry_reopen(int fd);
/// mmap(2) MAP_FIXED of private anonymous memory over [addr, addr+len) after copying the
/// range's current bytes into it: views into the range keep their bytes while the shared
/// pages behind them go on being reused. Returns 0 or -1 with errno.
int cferry_privatize(void *addr, size_t len);

/// Connects a TCP socket to host:port within timeout_ms (getaddrinfo, then a non-blocking
/// connect per address, waited for with poll): in one place because glibc's sockaddr
/// unions and fcntl's variadic signature are awkward from Swift. The socket is returned
/// non-blocking, close-on-exec, with TCP_NODELAY. Returns the fd, or -1 with errno (ETIMEDOUT,
/// ECONNREFUSED, ...), or -2 when the name did not resolve (its text in `why`).
int cferry_tcp_connect(const char *host, int port, int timeout_ms, char *why, size_t why_len);
/// poll(2) on one descriptor for `events` with a nanosecond timeout (ppoll): returns the
/// events seen, 0 on timeout, or -1 with errno.
int cferry_poll_one(int fd, short events, int64_t timeout_ns);
/// The poll(2) event bits (macros in glibc).
short cferry_pollin(void);
short cferry_pollout(void);
/// send(2) with MSG_NOSIGNAL (a closed peer is an EPIPE error, never a SIGPIPE that kills
/// the caller's process). Returns bytes sent or -1 with errno.
long cferry_send(int fd, const void *buf, size_t len);
/** sendmsg of `count` struct iovec at `iov`, without SIGPIPE (a gathered send). */
long cferry_sendv(int fd, const void *iov, int count);
/// recv(2), non-blocking. Returns bytes read, 0 at end of stream, or -1 with errno.
long cferry_recv(int fd, void *buf, size_t len);
/// recv(2) that waits, up to the socket's receive timeout (SO_RCVTIMEO; then -1 with EAGAIN):
/// the gateway's connection threads block here, one system call per request.
long cferry_recv_wait(int fd, void *buf, size_t len);

/// A listening TCP socket bound to host:port (getaddrinfo with AI_PASSIVE; SO_REUSEADDR,
/// close-on-exec, non-blocking: the acceptor waits with poll). Returns the fd, or -1 with
/// errno, or -2 when the name did not resolve (its text in `why`).
int cferry_tcp_listen(const char *host, int port, int backlog, char *why, size_t why_len);
/// The local port a socket is bound to, or -1 with errno.
int cferry_local_port(int fd);
/// accept4(2) of one connection (close-on-exec, blocking) with TCP_NODELAY and send and
/// receive timeouts of `timeout_ms` (the connection's thread wakes at least that often to
/// look at its deadlines). Returns the fd, or -1 with errno (EAGAIN: none waiting).
int cferry_tcp_accept(int listen_fd, int timeout_ms);


/// Registers the client transports linked into this image beside the core: FerryNetwork
/// Shared-memory mappings guarded against SIGBUS. A file that another process of the same
/// user truncates (a bug, a cleanup script) makes every access past its new end raise SIGBUS,
/// which would kill every client and worker of the channel. A guarded range is instead
/// replaced, on its first fault, by zero-filled private pages (as Wayland compositors do for
/// client pools) and marked broken; the library checks the mark wherever it waits or hands
/// data over and reports the channel broken. A fault outside every guarded range goes to the
/// handler that was installed before (the default one: the process dies as it would have).
/// Returns 0, or -1 when the table is full (the range is then unguarded).
int cferry_guard_add(void *addr, size_t len);
/// Stops guarding the ranges that start inside [addr, addr+len) (before unmapping them).
void cferry_guard_remove_range(void *addr, size_t len);
/// 1 when a guarded range starting inside [addr, addr+len) took a fault (its memory is now
/// private zeros).
int cferry_guard_broken_range(void *addr, size_t len);
/// How many faults the guard has taken in this process (0: nothing is broken; one load).
unsigned cferry_guard_faults(void);

/// defines `cferry_network_register` (tcp://, redis://); the core refers to it weakly, so a
/// program or library built from the core alone (the shared-memory demo, libferry-shm.so)
/// links without it, and one that links FerryNetwork gets its schemes with no call to
/// remember. Swift has no weak references to functions, hence C.
void cferry_register_linked_transports(void);

#endif
