import Atomics

/// The slot state machine of a shared-memory channel (docs/protocol.md, "Slots").
///
/// Each slot has one 32-bit word: a generation (upper 28 bits, bumped on every claim) and a
/// state (lower 4 bits). Every transition is one compare-and-swap on that word, so a process
/// that dies between two steps leaves the slot in a well-defined state that a survivor can
/// recover, and a stale actor can never act on a slot's next generation.
///
///     FREE ─client claims─▶ CLAIMED ─publish─▶ READY ─worker takes─▶ BUSY ─reply─▶ DONE ─client reads, frees─▶ FREE
///                             ▲                  │ client times out      │ client times out
///                             └──────────────────┘                      ▼
///                                                                   ABANDONED ─worker finishes─▶ FREE
final class ShmChannel {
    enum SlotState: UInt32 { case free = 0, claimed, ready, busy, done, abandoned }

    let segment: ShmSegment
    let slots: Int
    let slotSize: Int
    let me = System.pid
    private var cursor = 0

    init(_ segment: ShmSegment) {
        self.segment = segment
        self.slots = segment.geometry.slots
        self.slotSize = segment.geometry.slotSize
        cursor = Int(System.pid) % slots
    }

    @inline(__always) static func pack(_ gen: UInt32, _ s: SlotState) -> UInt32 { (gen << 4) | s.rawValue }
    @inline(__always) static func gen(_ w: UInt32) -> UInt32 { w >> 4 }
    @inline(__always) static func state(_ w: UInt32) -> SlotState { SlotState(rawValue: w & 0xF) ?? .free }

    @inline(__always) func entry(_ slot: Int) -> Int { SegmentLayout.headerSize + slot * SegmentLayout.slotEntrySize }
    @inline(__always) func slotWord(_ slot: Int) -> UnsafeAtomic<UInt32> { segment.atomic(entry(slot) + SegmentLayout.sWord) }
    @inline(__always) func field32(_ slot: Int, _ f: Int) -> UnsafeAtomic<UInt32> { segment.atomic(entry(slot) + f) }
    @inline(__always) func field64(_ slot: Int, _ f: Int) -> UInt64 { UnsafeRawPointer(segment.base).u64(entry(slot) + f) }
    @inline(__always) func setField64(_ slot: Int, _ f: Int, _ v: UInt64) { segment.base.put(v, at: entry(slot) + f) }

    /// Start of slot `slot`'s data.
    @inline(__always) func data(_ slot: Int) -> UnsafeMutableRawPointer { segment.base + segment.geometry.slotsOffset + slot * slotSize }

    var slotWaitPoint: (Int) -> WaitPoint {
        { slot in WaitPoint(word: self.segment.word(self.entry(slot) + SegmentLayout.sWord),
                            sleepers: self.field32(slot, SegmentLayout.sClientWaiting)) }
    }
    var requestWaitPoint: WaitPoint {
        WaitPoint(word: segment.word(SegmentLayout.oRequestSeq), sleepers: segment.atomic(SegmentLayout.oSleepingWorkers))
    }
    var freeWaitPoint: WaitPoint {
        WaitPoint(word: segment.word(SegmentLayout.oFreeSeq), sleepers: segment.atomic(SegmentLayout.oFreeWaiters))
    }

    func closedError() -> FerryError {
        FerryError(.closed, "channel shm://\(segment.channel) was closed by its server")
    }

    // MARK: client side

    /// Claims a free slot, waiting up to the deadline. Returns (slot, generation).
    func claim(deadline: UInt64, strategy: WaitStrategy) throws -> (Int, UInt32) {
        var swept = false
        let found: (Int, UInt32)? = try freeWaitPoint.wait(strategy: strategy, deadline: deadline, poll: {
            if segment.isClosed { throw closedError() }
            for k in 0..<slots {
                let i = (cursor + k) % slots
                let w = slotWord(i).load(ordering: .relaxed)
                guard ShmChannel.state(w) == .free else { continue }
                let g = (ShmChannel.gen(w) &+ 1) & 0x0FFF_FFFF
                if slotWord(i).compareExchange(expected: w, desired: ShmChannel.pack(g, .claimed), ordering: .acquiringAndReleasing).exchanged {
                    field32(i, SegmentLayout.sClientPid).store(me, ordering: .releasing)
                    // Start the next search here: a client with one call in flight reuses the
                    // same slot, whose pages are still warm in its cache.
                    cursor = i
                    return (i, g)
                }
            }
            if !swept { swept = true; sweep() }
            return nil
        }, check: { sweep() })
        guard let f = found else {
            throw FerryError(.busy, "all \(slots) slots of shm://\(segment.channel) stayed busy until the deadline; raise slots or the timeout")
        }
        return f
    }

    /// Publishes a written request of `length` bytes in a claimed slot and wakes a worker.
    func publish(slot: Int, gen: UInt32, length: Int) {
        setField64(slot, SegmentLayout.sRequestLength, UInt64(length))
        slotWord(slot).store(ShmChannel.pack(gen, .ready), ordering: .sequentiallyConsistent)
        segment.atomic(SegmentLayout.oRequestSeq).wrappingIncrement(ordering: .sequentiallyConsistent)
        requestWaitPoint.wake()
    }

    /// Waits for the reply in `slot`. On return the slot is DONE and still owned by the caller.
    /// On error the caller keeps ownership unless the error says the slot was abandoned
    /// (`owned == false`), in which case it must not touch or free the slot.
    func awaitReply(slot: Int, gen: UInt32, deadline: UInt64, strategy: WaitStrategy) throws -> (offset: Int, length: Int) {
        let word = slotWord(slot)
        let done = ShmChannel.pack(gen, .done)
        var lastServerCheck: UInt64 = 0
        let got: Bool? = try slotWaitPoint(slot).wait(strategy: strategy, deadline: deadline, poll: {
            word.load(ordering: .acquiring) == done ? true : nil
        }, check: {
            let w = word.load(ordering: .acquiring)
            switch ShmChannel.state(w) {
            case .busy:
                let pid = field32(slot, SegmentLayout.sWorkerPid).load(ordering: .acquiring)
                if pid != 0 && !System.isAlive(pid) {
                    if word.compareExchange(expected: w, desired: ShmChannel.pack(gen, .claimed), ordering: .acquiringAndReleasing).exchanged {
                        throw FerryError(.peerDied, "the worker (pid \(pid)) serving shm://\(segment.channel) died before it replied")
                    }
                }
            case .ready:
                if segment.isClosed || (System.nowNanos() - lastServerCheck > 200_000_000 && !segment.hasServer) {
                    if word.compareExchange(expected: w, desired: ShmChannel.pack(gen, .claimed), ordering: .acquiringAndReleasing).exchanged {
                        if segment.isClosed { throw closedError() }
                        throw FerryError(.noServer, "no process serves shm://\(segment.channel) any more")
                    }
                }
                lastServerCheck = System.nowNanos()
            default: break
            }
        })
        if got == nil {
            // Deadline passed: take the request back if no worker has it, else abandon the slot
            // to the worker, who frees it when done.
            let w = word.load(ordering: .acquiring)
            if ShmChannel.state(w) == .ready,
               word.compareExchange(expected: w, desired: ShmChannel.pack(gen, .claimed), ordering: .acquiringAndReleasing).exchanged {
                throw FerryError(.timedOut, "no worker took the request on shm://\(segment.channel) before the deadline")
            }
            if ShmChannel.state(w) == .busy,
               word.compareExchange(expected: w, desired: ShmChannel.pack(gen, .abandoned), ordering: .acquiringAndReleasing).exchanged {
                throw AbandonedSlot(FerryError(.timedOut, "the worker on shm://\(segment.channel) did not reply before the deadline"))
            }
            if word.load(ordering: .acquiring) != done {
                throw FerryError(.timedOut, "no reply on shm://\(segment.channel) before the deadline")
            }
        }
        let offset = Int(field64(slot, SegmentLayout.sResponseOffset))
        let length = Int(field64(slot, SegmentLayout.sResponseLength))
        guard offset >= 0, offset <= slotSize, length >= 0, length <= slotSize - offset else {
            throw FerryError(.malformed, "reply position (offset \(offset), length \(length)) outside the slot")
        }
        return (offset, length)
    }

    /// Marks an error that already gave the slot away.
    struct AbandonedSlot: Error { let error: FerryError; init(_ e: FerryError) { error = e } }

    /// Returns a slot the caller owns (CLAIMED or DONE) to the free pool.
    func release(slot: Int, gen: UInt32) {
        field32(slot, SegmentLayout.sClientPid).store(0, ordering: .relaxed)
        field32(slot, SegmentLayout.sWorkerPid).store(0, ordering: .relaxed)
        slotWord(slot).store(ShmChannel.pack(gen, .free), ordering: .sequentiallyConsistent)
        segment.atomic(SegmentLayout.oFreeSeq).wrappingIncrement(ordering: .sequentiallyConsistent)
        freeWaitPoint.wake()
    }

    // MARK: worker side

    /// Takes the next published request, waiting up to the deadline; nil on timeout.
    func take(deadline: UInt64, strategy: WaitStrategy) throws -> (slot: Int, gen: UInt32, length: Int)? {
        var lastSweep = System.nowNanos()
        return try requestWaitPoint.wait(strategy: strategy, deadline: deadline, poll: {
            for k in 0..<slots {
                let i = (cursor + k) % slots
                let w = slotWord(i).load(ordering: .relaxed)
                guard ShmChannel.state(w) == .ready else { continue }
                if slotWord(i).compareExchange(expected: w, desired: ShmChannel.pack(ShmChannel.gen(w), .busy), ordering: .acquiringAndReleasing).exchanged {
                    setField64(i, SegmentLayout.sBusySince, System.nowNanos())
                    field32(i, SegmentLayout.sWorkerPid).store(me, ordering: .sequentiallyConsistent)
                    cursor = (i + 1) % slots
                    return (i, ShmChannel.gen(w), Int(field64(i, SegmentLayout.sRequestLength)))
                }
            }
            if segment.isClosed { throw closedError() }
            return nil
        }, check: {
            let now = System.nowNanos()
            if now - lastSweep > 250_000_000 { sweep(); lastSweep = now }
        })
    }

    /// Publishes the reply written at `offset` (length bytes) and wakes the client. If the
    /// client abandoned the slot meanwhile, frees it instead.
    func complete(slot: Int, gen: UInt32, offset: Int, length: Int) {
        setField64(slot, SegmentLayout.sResponseOffset, UInt64(offset))
        setField64(slot, SegmentLayout.sResponseLength, UInt64(length))
        let word = slotWord(slot)
        if word.compareExchange(expected: ShmChannel.pack(gen, .busy), desired: ShmChannel.pack(gen, .done), ordering: .sequentiallyConsistent).exchanged {
            slotWaitPoint(slot).wake(all: true)
        } else if word.load(ordering: .acquiring) == ShmChannel.pack(gen, .abandoned) {
            release(slot: slot, gen: gen)
        }
    }

    // MARK: recovery

    /// Frees slots held by processes that died: a client that claimed or was answered and is
    /// gone, a worker that was abandoned and is gone, or both sides gone.
    func sweep() {
        for i in 0..<slots {
            let w = slotWord(i).load(ordering: .acquiring)
            let state = ShmChannel.state(w)
            if state == .free { continue }
            let client = field32(i, SegmentLayout.sClientPid).load(ordering: .acquiring)
            let worker = field32(i, SegmentLayout.sWorkerPid).load(ordering: .acquiring)
            let clientDead = client != 0 && !System.isAlive(client)
            let workerDead = worker != 0 && !System.isAlive(worker)
            let reclaim: Bool
            switch state {
            case .claimed, .ready, .done: reclaim = clientDead
            case .busy: reclaim = clientDead && workerDead
            case .abandoned: reclaim = workerDead
            case .free: reclaim = false
            }
            if reclaim, slotWord(i).compareExchange(expected: w, desired: ShmChannel.pack(ShmChannel.gen(w), .claimed), ordering: .acquiringAndReleasing).exchanged {
                release(slot: i, gen: ShmChannel.gen(w))
            }
        }
    }

    /// Workers that have held a request longer than `limitNanos` (hung models): (pid, seconds).
    func hungWorkers(limitNanos: UInt64) -> [(pid: UInt32, seconds: Double)] {
        let now = System.nowNanos()
        var out: [(pid: UInt32, seconds: Double)] = []
        for i in 0..<slots {
            let state = ShmChannel.state(slotWord(i).load(ordering: .acquiring))
            guard state == .busy || state == .abandoned else { continue }
            let pid = field32(i, SegmentLayout.sWorkerPid).load(ordering: .acquiring)
            let since = field64(i, SegmentLayout.sBusySince)
            if pid != 0, since != 0, now > since, now - since > limitNanos {
                out.append((pid, Double(now - since) / 1e9))
            }
        }
        return out
    }

    /// Counts slots by state (for `ferry status` and tests).
    func census() -> [SlotState: Int] {
        var out: [SlotState: Int] = [:]
        for i in 0..<slots { out[ShmChannel.state(slotWord(i).load(ordering: .relaxed)), default: 0] += 1 }
        return out
    }
}
