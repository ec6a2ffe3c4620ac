import Synchronization

extension Client {
    /// Async variant of `call`: no thread is parked per call. The request is written and sent
    /// at once (when every slot is busy, the reactor retries until the deadline); one reactor
    /// thread per process watches every pending async call and resumes each with its reply.
    /// Cancelling the task gives the call up (withdrawn if no worker took it) and throws
    /// `CancellationError`.
    public func call(_ message: Message, timeout: Duration? = nil) async throws -> Message {
        let d = deadline(timeout)
        let entry = AsyncCall(client: self, message: message, deadline: d)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (k: CheckedContinuation<Message, Error>) in
                entry.start(k)
            }
        } onCancel: {
            entry.cancel()
        }
    }

    /// Async variant of `call` with named tensors.
    public func call(_ tensors: [(String, Tensor)], timeout: Duration? = nil) async throws -> Message {
        try await call(Message(tensors), timeout: timeout)
    }
}

/// One async call: its request, its call once a buffer was free, its continuation.
final class AsyncCall: @unchecked Sendable {  // state under `lock`; the call itself only on the reactor
    let client: Client
    let message: Message
    let deadline: UInt64
    private let lock = Locked<(continuation: CheckedContinuation<Message, Error>?, cancelled: Bool)>((nil, false))
    var call: PendingCall?

    init(client: Client, message: Message, deadline: UInt64) {
        self.client = client
        self.message = message
        self.deadline = deadline
    }

    func start(_ k: CheckedContinuation<Message, Error>) {
        let cancelled = lock.withLock { s -> Bool in
            s.continuation = k
            return s.cancelled
        }
        if cancelled { finish(.failure(CancellationError())); return }
        AsyncReactor.shared.add(self)
    }

    func cancel() {
        let hadStarted = lock.withLock { s -> Bool in
            s.cancelled = true
            return s.continuation != nil
        }
        if hadStarted { AsyncReactor.shared.kick() }
    }

    var isCancelled: Bool { lock.withLock { $0.cancelled } }

    /// Resumes the caller once (later results are ignored).
    func finish(_ result: Result<Message, Error>) {
        let k = lock.withLock { s -> CheckedContinuation<Message, Error>? in
            defer { s.continuation = nil }
            return s.continuation
        }
        k?.resume(with: result)
    }

    /// One look: true when the call is over (resumed).
    func step() -> Bool {
        if isCancelled {
            call?.close()  // gives the call up: withdrawn, or left to its worker
            finish(.failure(CancellationError()))
            return true
        }
        do {
            if call == nil {
                guard let c = try client.tryBegin(timeout: .nanoseconds(Int64(clamping: deadline &- min(deadline, System.nowNanos())))) else {
                    if System.nowNanos() >= deadline {
                        throw FerryError(.busy, "every request buffer stayed in use until the deadline")
                    }
                    return false
                }
                _ = try message.write(to: &c.writer)
                try c.send()
                call = c
            }
            guard let view = try call!.poll(for: .zero) else { return false }
            let reply = Message(view)
            call!.close()
            finish(.success(reply))
        } catch {
            call?.close()
            finish(.failure(error))
        }
        return true
    }
}

/// The one thread that watches every pending async call of the process: it looks at each
/// in turn and sleeps between rounds, briefly while replies keep coming and longer (up to
/// `maxSleepNanos`) while none do; new calls and cancellations wake it.
final class AsyncReactor: @unchecked Sendable {
    static let shared = AsyncReactor()
    static let minSleepNanos: Int64 = 20_000
    static let maxSleepNanos: Int64 = 500_000

    private let incoming = Locked<[AsyncCall]>([])
    private let bell = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    private let started = Locked(false)

    private init() { bell.initialize(to: 0) }

    func add(_ c: AsyncCall) {
        incoming.withLock { $0.append(c) }
        let start = started.withLock { s -> Bool in
            defer { s = true }
            return !s
        }
        if start { startThread() }
        kick()
    }

    /// Wakes the reactor (a new call or a cancellation).
    func kick() {
        let a = UnsafeAtomic<UInt32>(at: UnsafeMutableRawPointer(bell).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
        a.wrappingIncrement(ordering: .releasing)
        System.futexWake(bell, count: 1)
    }

    private func startThread() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        _ = pthread_create(&t, nil, { arg in
            let r = Unmanaged<AsyncReactor>.fromOpaque(arg!).takeRetainedValue()
            r.run()
            return nil
        }, box)
        pthread_detach(t)
    }

    private func run() {
        var pending: [AsyncCall] = []
        var sleep = AsyncReactor.minSleepNanos
        let a = UnsafeAtomic<UInt32>(at: UnsafeMutableRawPointer(bell).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
        while true {
            let seen = a.load(ordering: .acquiring)
            pending += incoming.withLock { list in defer { list.removeAll() }; return list }
            let before = pending.count
            pending.removeAll { $0.step() }
            if pending.count < before { sleep = AsyncReactor.minSleepNanos } else { sleep = min(sleep * 2, AsyncReactor.maxSleepNanos) }
            // Nothing pending: sleep until a call comes; else a short nap, cut by a kick.
            System.futexWait(bell, expected: seen, timeoutNanos: pending.isEmpty ? 1_000_000_000 : sleep)
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Atomics
