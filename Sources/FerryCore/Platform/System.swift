// The one place where FerryCore makes raw system calls; every failure becomes a FerryError
// naming the call and errno.
import Atomics
import CFerryLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Thin, typed wrappers over the Linux calls FerryCore needs.
public enum System {
    /// Builds an error for `call` from the current errno.
    static func error(_ call: String, _ detail: String = "", errno e: Int32 = errno) -> FerryError {
        let text = String(cString: strerror(e))
        let code: FerryError.Code = (e == EACCES || e == EPERM) ? .permission : .system
        let suffix = detail.isEmpty ? "" : " (\(detail))"
        return FerryError(code, "\(call) failed: \(text)\(suffix)")
    }

    /// Current errno, for callers that branch on specific values.
    static var lastErrno: Int32 { errno }

    /// Monotonic clock in nanoseconds.
    @inline(__always)
    public static func nowNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// This process's id (informational only: never used for liveness). getpid(2) is a real
    /// system call in current glibc, so it is cached, and refreshed after a fork.
    public static var pid: UInt32 {
        let gen = forkGeneration
        let cached = pidCache.load(ordering: .relaxed)
        if UInt64(truncatingIfNeeded: cached >> 32) == gen & 0xFFFF_FFFF, cached & 0xFFFF_FFFF != 0 {
            return UInt32(truncatingIfNeeded: cached)
        }
        let p = UInt32(bitPattern: getpid())
        pidCache.store((gen & 0xFFFF_FFFF) << 32 | UInt64(p), ordering: .relaxed)
        return p
    }
    /// (fork generation << 32) | pid.
    private static let pidCache = ManagedAtomic<UInt64>(0)

    /// True while `pid` names a live (non-zombie) process.
    public static func isAlive(_ pid: UInt32) -> Bool {
        if pid == 0 { return true }
        if kill(pid_t(bitPattern: pid), 0) != 0 && errno == ESRCH { return false }
        // A killed child not yet reaped by its parent still answers kill(0): read its state.
        let path = "/proc/\(pid)/stat"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return errno != ENOENT }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 512)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return true }
        // Format: "pid (comm) S ..."; comm may hold spaces and parens, so take the last ')'.
        if let close = buf[0..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n {
            let state = buf[close + 2]
            return state != UInt8(ascii: "Z") && state != UInt8(ascii: "X")
        }
        return true
    }

    /// shm_open(3) with O_CLOEXEC implied by glibc.
    static func shmOpen(_ name: String, flags: Int32, mode: mode_t) throws -> Int32 {
        let fd = cferry_shm_open(name, flags, mode)
        if fd < 0 { throw error("shm_open", name) }
        return fd
    }

    /// shm_unlink(3); a missing name is not an error.
    static func shmUnlink(_ name: String) {
        _ = cferry_shm_unlink(name)
    }

    /// Reserves `size` bytes so a full /dev/shm fails here, not later with SIGBUS.
    static func allocate(fd: Int32, size: Int) throws {
        if ftruncate(fd, off_t(size)) != 0 { throw error("ftruncate", "\(size) bytes") }
        let rc = posix_fallocate(fd, 0, off_t(size))
        if rc == ENOSPC {
            throw FerryError(.system, "shared memory full: this channel needs \(describeBytes(size)) in /dev/shm, \(shmSpace()); "
                + "free space there, give the container more (docker run --shm-size=\(suggestedShmSize(size)) or --ipc=host), "
                + "or make the channel smaller with fewer slots or a smaller slot_size (shm://NAME?slots=4&slot_size=2M; "
                + "ferry serve --slots/--slot-size)")
        }
        if rc != 0 {
            throw FerryError(.system, "cannot reserve \(size) bytes of shared memory: \(String(cString: strerror(rc))); free space in /dev/shm or lower slots/slot_size")
        }
    }

    /// "/dev/shm holds N in all, M free" (statvfs), or what could not be read.
    static func shmSpace() -> String {
        var st = statvfs()
        guard statvfs("/dev/shm", &st) == 0 else { return "whose size could not be read" }
        let total = Int(st.f_blocks) * Int(st.f_frsize), free = Int(st.f_bavail) * Int(st.f_frsize)
        return "which holds \(describeBytes(total)) in all with \(describeBytes(free)) free"
    }

    /// Bytes as "67,117,056 bytes (64.0 MiB)".
    static func describeBytes(_ n: Int) -> String {
        let mib = Double(n) / 1_048_576
        var digits = String(n), grouped = ""
        while digits.count > 3 { grouped = "," + digits.suffix(3) + grouped; digits = String(digits.dropLast(3)) }
        return digits + grouped + " bytes (" + (mib >= 1 ? "\((mib * 10).rounded() / 10) MiB" : "\(n / 1024) KiB") + ")"
    }

    /// A --shm-size that fits a channel of `size` bytes with room for another: whole MiB, rounded up to 64.
    static func suggestedShmSize(_ size: Int) -> String {
        let mib = (2 * size + (1 << 20) - 1) >> 20
        return "\(max(64, (mib + 63) / 64 * 64))m"
    }

    /// fstat(2): (size, inode, uid, mode).
    static func stat(fd: Int32) throws -> (size: Int, inode: UInt64, uid: UInt32, mode: UInt32) {
        var st = Glibc.stat()
        if fstat(fd, &st) != 0 { throw error("fstat") }
        return (Int(st.st_size), UInt64(st.st_ino), st.st_uid, st.st_mode)
    }

    /// The inode a path names now, or nil when it does not exist.
    static func inode(path: String) -> UInt64? {
        var st = Glibc.stat()
        if lstat(path, &st) != 0 { return nil }
        return UInt64(st.st_ino)
    }

    /// mmap(2) a shared read-write mapping of `size` bytes of `fd`, guarded against SIGBUS:
    /// if another process shrinks the file, the range turns into private zeros and
    /// `isBroken` says so, instead of the process dying (cferry_guard_add).
    static func mapShared(fd: Int32, size: Int, offset: Int = 0) throws -> UnsafeMutableRawPointer {
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(offset)), p != MAP_FAILED else {
            throw error("mmap", "\(size) bytes")
        }
        _ = cferry_guard_add(p, size)
        return p
    }

    /// True when a mapping starting inside [p, p+size) lost its file under it (a fault was
    /// taken there). One atomic load while nothing in the process ever faulted.
    @inline(__always)
    static func isBroken(_ p: UnsafeRawPointer, size: Int) -> Bool {
        cferry_guard_faults() != 0 && cferry_guard_broken_range(UnsafeMutableRawPointer(mutating: p), size) != 0
    }

    /// Gives back the memory of [p, p+size) but keeps the addresses reserved (PROT_NONE), so
    /// a later unmap of an enclosing range cannot hit a mapping someone else made there.
    static func discard(_ p: UnsafeMutableRawPointer, size: Int) {
        _ = mmap(p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
    }

    /// munmap(2), after unguarding the mappings inside the range.
    static func unmap(_ p: UnsafeMutableRawPointer, size: Int) {
        cferry_guard_remove_range(p, size)
        _ = munmap(p, size)
    }

    /// close(2).
    package static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Takes (or, with `wait == false`, tries) an open-file-description lock on one byte.
    /// Returns false when `wait` is false and another holder conflicts.
    @discardableResult
    static func lock(fd: Int32, byte: Int64, exclusive: Bool, wait: Bool) throws -> Bool {
        while true {
            let type = Int16(exclusive ? F_WRLCK : F_RDLCK)
            if cferry_ofd_lock(fd, type, byte, 1, wait ? 1 : 0) == 0 { return true }
            let e = errno
            if e == EINTR { continue }
            if !wait && (e == EAGAIN || e == EACCES) { return false }
            throw error("fcntl(F_OFD_SETLK)", errno: e)
        }
    }

    /// Releases an open-file-description lock on one byte.
    static func unlock(fd: Int32, byte: Int64) {
        _ = cferry_ofd_lock(fd, Int16(F_UNLCK), byte, 1, 0)
    }

    /// True when another open file description holds any lock on `byte`.
    static func isLocked(fd: Int32, byte: Int64) -> Bool {
        cferry_ofd_test(fd, Int16(F_WRLCK), byte, 1) == 1
    }

    /// Waits while `*word == expected`, at most `timeoutNanos` (negative: no limit).
    /// Returns on wake-up, value change, timeout or signal; callers re-check their condition.
    @inline(__always)
    /// Returns true when a signal interrupted the wait (EINTR).
    @discardableResult
    package static func futexWait(_ word: UnsafeMutablePointer<UInt32>, expected: UInt32, timeoutNanos: Int64) -> Bool {
        cferry_futex_wait(word, expected, timeoutNanos) == -1 && errno == EINTR
    }

    /// Wakes up to `count` waiters on `word`.
    @inline(__always)
    package static func futexWake(_ word: UnsafeMutablePointer<UInt32>, count: Int32 = Int32.max) {
        _ = cferry_futex_wake(word, count)
    }

    /// One spin-loop hint to the CPU.
    @inline(__always)
    /// A spin-loop hint to the CPU (pause).
    public static func relax() { cferry_cpu_relax() }

    /// Lets another runnable thread of this CPU run (sched_yield): a waiter that spins where
    /// the process it waits for may share its CPU must not starve it.
    public static func yieldCPU() { _ = sched_yield() }

    /// Asks the kernel to send `signal` to this process when its parent exits.
    public static func exitWithParent(signal: Int32 = SIGTERM) {
        _ = cferry_set_parent_death_signal(signal)
    }

    /// Pins the calling thread to one CPU (benchmarks state their placement).
    public static func pin(cpu: Int) throws {
        if cferry_pin_cpu(Int32(cpu)) != 0 { throw error("sched_setaffinity", "cpu \(cpu)") }
    }

    /// How many forks this process descends from (see `cferry_fork_generation`).
    package static var forkGeneration: UInt64 { cferry_fork_generation() }

    /// Fork-guards a descriptor that carries liveness locks; false when the table is full.
    static func guardLiveness(_ fd: Int32) -> Bool { cferry_liveness_register(fd) == 0 }

    /// Closes a descriptor (fork-guarded or not) without racing a fork.
    static func closeGuarded(_ fd: Int32) { cferry_liveness_close(fd) }

    /// A second open file description of `fd`'s file, for locks of its own.
    static func reopen(_ fd: Int32) throws -> Int32 {
        let r = cferry_reopen(fd)
        if r < 0 { throw error("open(/proc/self/fd)") }
        return r
    }

    /// Replaces [p, p+len) with a private copy of its bytes (see `cferry_privatize`).
    static func privatize(_ p: UnsafeMutableRawPointer, length: Int) throws {
        if cferry_privatize(p, length) != 0 { throw error("mremap", "privatize \(length) bytes") }
    }

    /// Current effective user id.
    static var euid: UInt32 { geteuid() }
}

extension Duration {
    /// The duration in whole nanoseconds, clamped at zero (deadlines are computed in ns).
    /// Saturates instead of wrapping: a duration past ~584 years reads as UInt64.max.
    public var clampedNanoseconds: UInt64 {
        let c = components
        let (s, o1) = UInt64(max(0, c.seconds)).multipliedReportingOverflow(by: 1_000_000_000)
        let (t, o2) = s.addingReportingOverflow(UInt64(max(0, c.attoseconds / 1_000_000_000)))
        return o1 || o2 ? .max : t
    }
}

/// `now + ns`, saturating: a deadline never wraps into the past.
@inline(__always)
package func deadline(after ns: UInt64) -> UInt64 {
    let now = System.nowNanos()
    let (d, o) = now.addingReportingOverflow(ns)
    return o ? .max : d
}
