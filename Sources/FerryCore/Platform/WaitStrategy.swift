import Atomics

/// How a process waits for the other side of a shared-memory channel.
///
/// Spinning answers in a few microseconds but burns a core; a futex sleep burns nothing
/// but a cross-core wake-up costs tens of microseconds on small VMs. The default spins
/// briefly, then sleeps.
public enum WaitStrategy: Sendable, Equatable, CustomStringConvertible {
    /// Busy-poll until the deadline (lowest latency, one core per waiter).
    case spin
    /// Sleep on a futex at once (no CPU while waiting, slowest wake-up).
    case futex
    /// Spin for `spinNanos`, then sleep on a futex.
    case spinThenFutex(spinNanos: UInt64)

    /// Spin 100 µs, then sleep.
    public static let standard = WaitStrategy.spinThenFutex(spinNanos: 100_000)

    /// Parses "spin", "futex", "hybrid" or "spin-futex", with an optional spin time in µs.
    public init(name: String, spinMicros: UInt64? = nil) throws {
        if let s = spinMicros, s > Endpoint.maxSpinMicros {
            throw FerryError(.invalidArgument, "spin_us=\(s) exceeds \(Endpoint.maxSpinMicros) (10 s)")
        }
        switch name {
        case "spin": self = .spin
        case "futex": self = .futex
        case "hybrid", "spin-futex", "spin_then_futex", "spin-then-futex":
            self = .spinThenFutex(spinNanos: (spinMicros ?? 100) * 1000)
        default:
            throw FerryError(.invalidArgument, "unknown wait strategy \"\(name)\" (use spin, futex or hybrid)")
        }
    }

    public var description: String {
        switch self {
        case .spin: return "spin"
        case .futex: return "futex"
        case .spinThenFutex(let ns): return "hybrid(spin \(ns / 1000) µs)"
        }
    }

    package var spinNanos: UInt64 {
        switch self {
        case .spin: return .max
        case .futex: return 0
        case .spinThenFutex(let ns): return ns
        }
    }
}

/// Learns whether spinning pays for one kind of wait (a channel's replies, or its requests).
///
/// A hybrid wait that found its answer while spinning is a hit; one whose spin ran out and
/// slept is a miss: it burnt the spin *and* paid the wake-up, and on a VM whose vCPUs may
/// share a physical CPU the spin also took time from the peer it waits for. After
/// `missLimit` misses in a row, hybrid waits sleep at once, except every `probeEvery`-th,
/// which spins in full: one hit there and spinning resumes. Small requests answered in
/// microseconds never miss, so they keep spinning; a model that takes longer than the spin
/// (1080p frames, a slow model, an idle worker) stops paying for it. The tcp:// gateway's
/// connection threads use one per kind of spin too.
package final class SpinAdvisor: Sendable {
    static let missLimit = 4
    static let probeEvery = 16
    private let misses = ManagedAtomic<Int>(0)
    private let skipped = ManagedAtomic<Int>(0)

    package init() {}

    /// Whether the next hybrid wait should spin.
    package func shouldSpin() -> Bool {
        if misses.load(ordering: .relaxed) < Self.missLimit { return true }
        return skipped.loadThenWrappingIncrement(ordering: .relaxed) % Self.probeEvery == Self.probeEvery - 1
    }

    /// Records how a wait that spun ended.
    package func record(hit: Bool) {
        if hit {
            if misses.load(ordering: .relaxed) != 0 { misses.store(0, ordering: .relaxed) }
        } else if misses.load(ordering: .relaxed) < Self.missLimit {
            misses.wrappingIncrement(ordering: .relaxed)
        }
    }

    /// Whether hybrid waits currently sleep at once (for statistics and tests).
    var sleepsAtOnce: Bool { misses.load(ordering: .relaxed) >= Self.missLimit }
}

/// A futex word and the count of processes sleeping on it, both in shared memory.
struct WaitPoint {
    let word: UnsafeMutablePointer<UInt32>
    let sleepers: UnsafeAtomic<UInt32>

    var atomicWord: UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
    }

    /// Wakes sleepers after the caller changed the state they wait for (sequentially consistent,
    /// so either the sleeper sees the change before sleeping or we see it counted).
    @inline(__always)
    func wake(all: Bool = false) {
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            System.futexWake(word, count: all ? Int32.max : 1)
        }
    }

    /// Waits until `poll` returns a value, the deadline passes (nil), or `check` throws.
    /// `check` runs at least every `checkEvery` ns while waiting (liveness of the peer).
    /// With an `advisor`, a hybrid strategy spins only while spinning pays (see SpinAdvisor).
    /// With `returnOnSignal`, a signal that interrupts the sleep ends the wait (nil) so the
    /// caller's own handler runs now (a worker told to stop), not at the deadline.
    @inline(__always)
    func wait<R>(strategy: WaitStrategy, deadline: UInt64, checkEvery: UInt64 = 20_000_000, advisor: SpinAdvisor? = nil,
                 returnOnSignal: Bool = false, poll: () throws -> R?, check: () throws -> Void) throws -> R? {
        if let r = try poll() { return r }
        let start = System.nowNanos()
        var spinNanos = strategy.spinNanos
        let adaptive = advisor != nil && spinNanos != 0 && spinNanos != .max
        if adaptive, let advisor, !advisor.shouldSpin() { spinNanos = 0 }
        let spinEnd = spinNanos == .max ? deadline : min(deadline, start &+ spinNanos)
        // Only a spin that could run its full length says whether spinning pays.
        let judged = adaptive && spinNanos != 0 && spinEnd == start &+ spinNanos
        var nextCheck = start &+ checkEvery
        var now = start
        var spins = 0
        while now < spinEnd {
            System.relax()
            if let r = try poll() {
                if judged { advisor?.record(hit: true) }
                return r
            }
            spins &+= 1
            if spins & 63 == 0 {
                now = System.nowNanos()
                // Past the first 10 µs, let a process that shares this CPU (the peer we wait
                // for, a gateway) run; a quick answer never pays for the system call.
                if now &- start > 10_000 { System.yieldCPU() }
                if now >= nextCheck { try check(); nextCheck = now &+ checkEvery }
            }
        }
        if spinNanos == .max { return try poll() }
        if judged { advisor?.record(hit: false) }
        while true {
            sleepers.wrappingIncrement(ordering: .sequentiallyConsistent)
            let seen = atomicWord.load(ordering: .sequentiallyConsistent)
            if let r = try poll() {
                sleepers.wrappingDecrement(ordering: .sequentiallyConsistent)
                return r
            }
            now = System.nowNanos()
            if now >= deadline {
                sleepers.wrappingDecrement(ordering: .sequentiallyConsistent)
                return nil
            }
            let chunk = min(deadline - now, checkEvery)
            let interrupted = System.futexWait(word, expected: seen, timeoutNanos: Int64(chunk))
            sleepers.wrappingDecrement(ordering: .sequentiallyConsistent)
            if let r = try poll() { return r }
            if interrupted && returnOnSignal { return nil }
            try check()
        }
    }
}
