import Atomics

/// The slots of a shared-memory channel, driven by `SlotMachine` (docs/protocol.md, "Slots").
///
/// Every step is `transition`: read the slot's 64-bit word, ask a `SlotMachine` function for
/// the next word, install it with one compare-and-swap, and on failure decide again from the
/// word the CAS found. Data is written only by the slot's current owner: the client while
/// CLAIMED, the worker while BUSY (or ABANDONED to it), so a late actor can never touch the
/// slot's next use. The reply starts at a page boundary after the request, an offset both
/// sides compute from the request length; its length is its own (validated) header's.
final class ShmChannel: @unchecked Sendable {
    let segment: ShmSegment
    let slots: Int
    let slotSize: Int
    /// Where the next search for a free or published slot starts (a hint; races are harmless).
    private let cursor = ManagedAtomic<Int>(0)

    /// Where each slot's data is mapped in this process: in the segment mapping, until a
    /// kept request moves it (`preserve`).
    private let slotBases: UnsafeMutablePointer<UnsafeMutableRawPointer>

    /// Completes a client's `.tooLarge` error (built once: a call must not pay for it).
    let requestLimitHint: String

    init(_ segment: ShmSegment) {
        self.segment = segment
        requestLimitHint = "a request may use the slot size less one page (kept for the reply); raise the channel's slot_size (e.g. shm://\(segment.channel)?slot_size=64M where the server creates it, or ferry serve --slot-size 64M)"
        self.slots = segment.geometry.slots
        self.slotSize = segment.geometry.slotSize
        slotBases = .allocate(capacity: segment.geometry.slots)
        for i in 0..<segment.geometry.slots {
            (slotBases + i).initialize(to: segment.base + segment.geometry.slotsOffset + i * segment.geometry.slotSize)
        }
        cursor.store(Int(segment.peer) % slots, ordering: .relaxed)
        // A token is reused only after its holder died: free what that holder left behind.
        recoverDead(treatingAsDead: segment.peer)
    }

    var me: PeerID { segment.peer }

    @inline(__always) func entry(_ slot: Int) -> Int { SegmentLayout.headerSize + slot * SegmentLayout.slotEntrySize }
    @inline(__always) func word(_ slot: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (segment.base + entry(slot) + SegmentLayout.sWord).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
    }
    @inline(__always) func load(_ slot: Int) -> SlotWord { SlotWord(raw: word(slot).load(ordering: .acquiring)) }
    @inline(__always) func field64(_ slot: Int, _ f: Int) -> UInt64 { UnsafeRawPointer(segment.base).u64(entry(slot) + f) }
    @inline(__always) func setField64(_ slot: Int, _ f: Int, _ v: UInt64) { segment.base.put(v, at: entry(slot) + f) }

    deinit { slotBases.deallocate() }

    /// Start of slot `slot`'s data.
    @inline(__always) func data(_ slot: Int) -> UnsafeMutableRawPointer { slotBases[slot] }

    /// Keeps the first `length` bytes of `slot` (a finished request that views still point
    /// into) as a private copy at their current addresses, and maps the slot afresh for its
    /// next uses. Only for the thread that serves (the slot table is not synchronised).
    /// Returns the kept range, for `PreservedPages.release`.
    func preserve(slot: Int, length: Int) throws -> UnsafeMutableRawBufferPointer {
        let keep = min(MessageLayout.align(max(length, 1), SegmentLayout.page), slotSize)
        let fresh = try System.mapShared(fd: segment.fd, size: slotSize, offset: segment.geometry.slotsOffset + slot * slotSize)
        let old = slotBases[slot]
        do { try System.privatize(old, length: keep) } catch { System.unmap(fresh, size: slotSize); throw error }
        PreservedPages.add(old, length: keep)
        segment.extraMappings.append((fresh, slotSize))
        slotBases[slot] = fresh
        return UnsafeMutableRawBufferPointer(start: old, count: keep)
    }

    /// Where a reply starts for a request of `requestLength` bytes (both sides compute it).
    @inline(__always) func replyOffset(requestLength: Int) -> Int {
        min(MessageLayout.align(requestLength, SegmentLayout.page), slotSize)
    }

    /// Room for a request: one page stays free so a worker can always answer (an error fits).
    var requestCapacity: Int { slotSize - SegmentLayout.page }

    /// One step of the state machine on `slot`: decide from the current word, install with a
    /// CAS, and on failure decide again from the word the CAS returned.
    @inline(__always)
    func transition<R>(_ slot: Int, _ decide: (SlotWord) -> (SlotWord?, R)) -> (installed: Bool, result: R, word: SlotWord) {
        var w = load(slot)
        while true {
            let (next, r) = decide(w)
            guard let next else { return (false, r, w) }
            let (ok, found) = word(slot).compareExchange(expected: w.raw, desired: next.raw, ordering: .acquiringAndReleasing)
            if ok { return (true, r, next) }
            w = SlotWord(raw: found)
        }
    }

    /// Whether spinning pays while this process waits for replies / for requests (hybrid waits).
    let replyAdvisor = SpinAdvisor()
    let requestAdvisor = SpinAdvisor()

    var slotWaitPoint: (Int) -> WaitPoint {
        // The futex is the word's low half (state and owners), which every transition changes.
        { slot in WaitPoint(word: self.segment.word(self.entry(slot) + SegmentLayout.sWord),
                            sleepers: self.segment.atomic(self.entry(slot) + SegmentLayout.sClientWaiting)) }
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

    func staleError() -> FerryError {
        FerryError(.invalidArgument, "this handle was made before fork(); a forked child must make its own client or worker")
    }

    /// Tells free-slot waiters that a slot became free.
    func announceFree() {
        segment.atomic(SegmentLayout.oFreeSeq).wrappingIncrement(ordering: .sequentiallyConsistent)
        freeWaitPoint.wake()
    }

    // MARK: client side

    /// Claims a free slot, waiting up to the deadline. Returns (slot, generation).
    func claim(deadline: UInt64, strategy: WaitStrategy) throws -> (Int, UInt32) {
        guard !segment.isStale else { throw staleError() }
        let me = self.me
        var swept = false
        let found: (Int, UInt32)? = try freeWaitPoint.wait(strategy: strategy, deadline: deadline, poll: {
            if segment.isBroken { throw segment.brokenError() }
            if segment.isClosed { throw closedError() }
            let start = cursor.load(ordering: .relaxed)
            for k in 0..<slots {
                let i = (start + k) % slots
                guard load(i).state == .free else { continue }
                let t = transition(i) { w in (SlotMachine.claim(w, client: me), ()) }
                if t.installed {
                    // Start the next search here: a client with one call in flight reuses the
                    // same slot, whose pages are still warm in its cache.
                    cursor.store(i, ordering: .relaxed)
                    return (i, t.word.gen)
                }
            }
            if !swept { swept = true; recoverDead() }
            return nil
        }, check: { recoverDead() })
        guard let f = found else {
            if !segment.hasServer {
                throw FerryError(.noServer, "no process serves shm://\(segment.channel) any more")
            }
            throw FerryError(.busy, "all \(slots) slots of shm://\(segment.channel) stayed busy until the deadline; raise slots or the timeout")
        }
        return f
    }

    /// Publishes a written request of `length` bytes in a claimed slot and wakes a worker.
    func publish(slot: Int, gen: UInt32, length: Int) throws {
        guard !segment.isStale else { throw staleError() }
        setField64(slot, SegmentLayout.sRequestLength, UInt64(length))
        let me = self.me
        let t = transition(slot) { w in (SlotMachine.publish(w, gen: gen, client: me), ()) }
        guard t.installed else {
            if segment.isBroken { throw segment.brokenError() }  // the slot word read as zeros
            throw FerryError(.invalidArgument, "the call's slot is not claimed by this client any more")
        }
        segment.atomic(SegmentLayout.oRequestSeq).wrappingIncrement(ordering: .sequentiallyConsistent)
        requestWaitPoint.wake()
    }

    /// Why a wait ended without a reply. The call no longer owns its slot after any of them.
    func lostError() -> FerryError {
        FerryError(.peerDied, "the worker serving shm://\(segment.channel) died before it replied")
    }

    /// Waits for the reply to the request in `slot`. On return the slot is DONE and owned by
    /// the caller, and the reply starts at `replyOffset(requestLength:)`. On error the
    /// caller no longer owns the slot (it was withdrawn, abandoned to its worker, or
    /// recovered after the worker died).
    func awaitReply(slot: Int, gen: UInt32, deadline: UInt64, strategy: WaitStrategy) throws {
        _ = try awaitReply(slot: slot, gen: gen, until: deadline, deadline: deadline, strategy: strategy)
    }

    /// As above, but returns false at `until` (before `deadline`) with the call still in
    /// flight, so a caller can wait in chunks (and be interrupted between them).
    func awaitReply(slot: Int, gen: UInt32, until: UInt64, deadline: UInt64, strategy: WaitStrategy) throws -> Bool {
        guard !segment.isStale else { throw staleError() }
        let me = self.me
        let got: Bool? = try slotWaitPoint(slot).wait(strategy: strategy, deadline: min(until, deadline), advisor: replyAdvisor, poll: {
            let word = load(slot)
            // Zeros where the slot word was: the segment lost its file, not a state change.
            if segment.isBroken { throw segment.brokenError() }
            switch SlotMachine.progress(word, gen: gen, client: me) {
            case .replied: return true
            case .waiting: return nil
            case .lost: throw lostError()
            }
        }, check: {
            // Runs every check interval while waiting (never reset by polling).
            let w = load(slot)
            if w.state == .busy, w.gen == gen, !segment.isAlive(w.worker) {
                _ = transition(slot) { w in (SlotMachine.recover(w, alive: segment.isAlive), ()) }
                announceFree()
                throw lostError()
            }
            if w.state == .ready {
                let closed = segment.isClosed
                // Not taken, and nothing can take it: the channel closed, its servers are gone,
                // or only a holder keeps it (`ferry serve` while no worker runs: a model that
                // fails to load, workers being restarted) — say so now, not at the deadline.
                let server = !closed && segment.hasServer
                if closed || !server || !segment.hasWorker {
                    let t = transition(slot) { w in (SlotMachine.withdraw(w, gen: gen, client: me), ()) }
                    if t.installed {
                        announceFree()
                        throw closed ? closedError() : server ? segment.noWorkerError()
                            : FerryError(.noServer, "no process serves shm://\(segment.channel) any more")
                    }
                }
            }
        })
        if got == true { return true }
        if until < deadline && System.nowNanos() < deadline { return false }
        // Deadline passed: withdraw the request if no worker has it, else abandon the slot
        // to its worker, who frees it when done. A reply that raced in is used.
        let outcome = giveUp(slot: slot, gen: gen)
        switch outcome {
        case .replied: return true
        case .lost: throw lostError()
        case .withdrawn, .abandoned:
            segment.atomic64(SegmentLayout.oTimedOut).wrappingIncrement(ordering: .relaxed)
            throw FerryError(.timedOut, outcome == .withdrawn
                ? "no worker took the request on shm://\(segment.channel) before the deadline"
                : "the worker on shm://\(segment.channel) did not reply before the deadline")
        }
    }

    /// Gives up a published call: withdraws it, or abandons it to its worker, or (when the
    /// reply raced in) leaves it DONE for the caller to read and release.
    func giveUp(slot: Int, gen: UInt32) -> SlotMachine.GiveUp {
        guard !segment.isStale else { return .lost }
        let me = self.me
        let t = transition(slot) { w in SlotMachine.giveUp(w, gen: gen, client: me) }
        if t.result == .withdrawn { announceFree() }
        return t.result
    }

    /// Returns a slot the caller owns (CLAIMED or DONE) to the free pool. False when the
    /// slot was not the caller's any more (nothing is changed then).
    @discardableResult
    func release(slot: Int, gen: UInt32) -> Bool {
        guard !segment.isStale else { return false }
        let me = self.me
        let t = transition(slot) { w in (SlotMachine.release(w, gen: gen, client: me), ()) }
        if t.installed { announceFree() }
        return t.installed
    }

    // MARK: worker side

    /// Takes the next published request, waiting up to the deadline; nil on timeout, or
    /// earlier when a signal came (the worker's stop handler then runs at once).
    /// The request length is read once, after the take, and is only a claim to validate.
    func take(deadline: UInt64, strategy: WaitStrategy) throws -> (slot: Int, gen: UInt32, length: UInt64)? {
        guard !segment.isStale else { throw staleError() }
        let me = self.me
        var lastSweep = System.nowNanos()
        return try requestWaitPoint.wait(strategy: strategy, deadline: deadline, advisor: requestAdvisor, returnOnSignal: true, poll: {
            let start = cursor.load(ordering: .relaxed)
            for k in 0..<slots {
                let i = (start + k) % slots
                guard load(i).state == .ready else { continue }
                let t = transition(i) { w in (SlotMachine.take(w, worker: me), ()) }
                if t.installed {
                    setField64(i, SegmentLayout.sBusySince, System.nowNanos())
                    segment.atomic(entry(i) + SegmentLayout.sWorkerPid).store(System.pid, ordering: .relaxed)
                    cursor.store((i + 1) % slots, ordering: .relaxed)
                    return (i, t.word.gen, field64(i, SegmentLayout.sRequestLength))
                }
            }
            if segment.isBroken { throw segment.brokenError() }
            if segment.isClosed { throw closedError() }
            return nil
        }, check: {
            let now = System.nowNanos()
            if now - lastSweep > 250_000_000 { recoverDead(); lastSweep = now }
        })
    }

    /// Publishes the reply written in the slot and wakes the client; if the client gave up
    /// meanwhile, frees the slot instead.
    @discardableResult
    func complete(slot: Int, gen: UInt32, failed: Bool = false) -> SlotMachine.Completion {
        guard !segment.isStale, !segment.isBroken else { return .lost }
        let me = self.me
        recordService(slot: slot, failed: failed)
        let t = transition(slot) { w in SlotMachine.complete(w, gen: gen, worker: me) }
        switch t.result {
        case .delivered: slotWaitPoint(slot).wake(all: true)
        case .freed: announceFree()
        case .lost: break
        }
        return t.result
    }

    // MARK: statistics

    /// Counts an answered request and its service time (one relaxed add each).
    @inline(__always)
    func recordService(slot: Int, failed: Bool) {
        let since = field64(slot, SegmentLayout.sBusySince)
        let now = System.nowNanos()
        let ns = now > since ? now - since : 0
        let bucket = min(ns == 0 ? 0 : 63 - ns.leadingZeroBitCount, SegmentLayout.serviceBuckets - 1)
        segment.atomic64(SegmentLayout.oServiceHistogram + 8 * bucket).wrappingIncrement(ordering: .relaxed)
        segment.atomic64(failed ? SegmentLayout.oFailed : SegmentLayout.oAnswered).wrappingIncrement(ordering: .relaxed)
    }

    /// A snapshot of the channel's counters and slots.
    func stats() -> ChannelStats {
        var hist = [UInt64](repeating: 0, count: SegmentLayout.serviceBuckets)
        for k in hist.indices { hist[k] = segment.atomic64(SegmentLayout.oServiceHistogram + 8 * k).load(ordering: .relaxed) }
        let live = segment.liveAttachments()
        return ChannelStats(
            slots: slots, slotSize: slotSize, census: census(),
            workers: live.servers, clients: live.clients,
            answered: segment.atomic64(SegmentLayout.oAnswered).load(ordering: .relaxed),
            failed: segment.atomic64(SegmentLayout.oFailed).load(ordering: .relaxed),
            timedOut: segment.atomic64(SegmentLayout.oTimedOut).load(ordering: .relaxed),
            restarts: segment.atomic64(SegmentLayout.oRestarts).load(ordering: .relaxed),
            serviceHistogram: hist, model: segment.model)
    }

    // MARK: recovery

    /// Frees what dead processes held (SlotMachine.recover), judging each token by its lock.
    /// `treatingAsDead` is a token this process just took over from a dead holder.
    func recoverDead(treatingAsDead reused: PeerID = 0) {
        guard !segment.isStale else { return }
        var verdict = [PeerID: Bool]()
        let alive: (PeerID) -> Bool = { id in
            if id == reused { return false }
            if let v = verdict[id] { return v }
            let v = self.segment.isAlive(id)
            verdict[id] = v
            return v
        }
        for i in 0..<slots {
            let w = load(i)
            guard w.state != .free, w.client == reused || w.worker == reused || reused == 0 else { continue }
            let t = transition(i) { w in (SlotMachine.recover(w, alive: alive), ()) }
            if t.installed {
                if t.word.state == .free { announceFree() }
                slotWaitPoint(i).wake(all: true)
            }
        }
    }

    /// Workers that have held a request longer than `limitNanos` (hung models): (pid, seconds).
    func hungWorkers(limitNanos: UInt64) -> [(pid: UInt32, seconds: Double)] {
        let now = System.nowNanos()
        var out: [(pid: UInt32, seconds: Double)] = []
        for i in 0..<slots {
            let state = load(i).state
            guard state == .busy || state == .abandoned else { continue }
            let pid = segment.atomic(entry(i) + SegmentLayout.sWorkerPid).load(ordering: .relaxed)
            let since = field64(i, SegmentLayout.sBusySince)
            if pid != 0, since != 0, now > since, now - since > limitNanos {
                out.append((pid, Double(now - since) / 1e9))
            }
        }
        return out
    }

    /// Requests on their way: slots a client is writing (claimed) and requests published but
    /// not taken yet (ready). A batching worker stops gathering when both are 0: nothing more
    /// can arrive before it answers.
    func pending() -> (writing: Int, queued: Int) {
        var writing = 0, queued = 0
        for i in 0..<slots {
            switch load(i).state {
            case .claimed: writing += 1
            case .ready: queued += 1
            default: break
            }
        }
        return (writing, queued)
    }

    /// Counts slots by state (for `ferry status` and tests).
    func census() -> [SlotState: Int] {
        var out: [SlotState: Int] = [:]
        for i in 0..<slots { if let s = load(i).state { out[s, default: 0] += 1 } }
        return out
    }
}
