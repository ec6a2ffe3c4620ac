/// How a stream URL is read: `shm://NAME?slots=8&slot_size=8M&wait=hybrid&timeout_ms=10000`,
/// or the bare NAME. `slots` and `slot_size` matter to the publisher, which creates it.
enum StreamEndpoint {
    static func parse(_ url: String) throws -> Endpoint {
        let e = try Endpoint(url.contains("://") ? url : "shm://" + url)
        guard e.scheme == "shm" else {
            throw FerryError(.invalidArgument, "streams are local: use shm://NAME or a bare name, not \(Endpoint.redacted(url))")
        }
        guard !e.shared else { throw FerryError(.invalidArgument, "scope=shared is not supported for streams") }
        return e
    }
}

/// The writing side of a stream of frames (e.g. one camera): frames go into a ring of
/// slots in shared memory, each a message in the one format with a sequence number and a
/// capture timestamp. A stream has one publisher; any number of subscribers (up to 31) read
/// the newest frame, or every frame with backpressure.
///
/// Publishing never waits for a latest-frame subscriber: it writes into a slot no reader
/// pins. It waits (up to the timeout, then `.busy`) only when every slot holds a frame an
/// every-frame subscriber has not taken yet, or is pinned.
///
/// Use from one thread at a time.
public final class Publisher {
    /// The stream's name.
    public let name: String
    let segment: StreamSegment
    let endpoint: Endpoint
    private var lastSeq: UInt64 = 0
    private var nextSlot = 0
    private var loaned: Int? = nil
    private var isOpen = true
    private let limitHint: String

    /// Creates the stream (reclaiming one whose publisher died); `.busy` if another
    /// publisher lives.
    public init(_ url: String) throws {
        endpoint = try StreamEndpoint.parse(url)
        name = endpoint.name
        segment = try StreamSegment.create(name: name, slots: endpoint.slots, slotSize: endpoint.slotSize)
        limitHint = "raise the stream's slot_size (e.g. shm://\(name)?slot_size=64M at the publisher)"
    }

    deinit { close() }

    /// Slots in the ring and bytes per slot (the largest frame message).
    public var geometry: (slots: Int, slotSize: Int) { (segment.geometry.slots, segment.geometry.slotSize) }

    /// Live subscribers.
    public var subscriberCount: Int {
        (0..<StreamLayout.maxSubscribers).filter {
            segment.subMode($0).load(ordering: .acquiring) != StreamLayout.modeFree && segment.subscriberAlive($0)
        }.count
    }

    /// Sequence number of the last frame published (0: none yet).
    public var lastSequence: UInt64 { lastSeq }

    /// Ends the stream: subscribers take what is left, then get `.closed`. Idempotent.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        if let s = loaned { abandon(s) }
        segment.close()
    }

    /// Claims a free slot and returns a writer into it; `publish(timestamp:)` sends the
    /// frame. Waits up to `timeout` (else the URL's) for a slot when every-frame subscribers
    /// lag; then `.busy`.
    public func loan(timeout: Duration? = nil) throws -> UnsafeMutableRawPointer {
        guard isOpen else { throw FerryError(.closed, "the publisher of stream \"\(name)\" is closed") }
        guard !segment.isStale else { throw FerryError(.invalidArgument, "a publisher cannot be used in a forked child") }
        guard loaned == nil else { throw FerryError(.invalidArgument, "a frame is already loaned: publish or cancel it first") }
        let deadline = deadline(after: timeout?.clampedNanoseconds ?? endpoint.timeoutNanos)
        if segment.isBroken { throw segment.brokenError() }
        let slot = try segment.released.wait(strategy: endpoint.wait, deadline: deadline, poll: { claim() }, check: {
            if segment.isBroken { throw segment.brokenError() }
            reapDead()
        })
        guard let slot else { throw segment.isBroken ? segment.brokenError() : stuck() }
        loaned = slot
        return segment.data(slot)
    }

    /// A writer over the loaned slot.
    public func writer() throws -> MessageWriter {
        guard let s = loaned else { throw FerryError(.invalidArgument, "no frame is loaned: call loan() first") }
        return MessageWriter(base: segment.data(s), capacity: segment.geometry.slotSize, limitHint: limitHint)
    }

    /// Publishes the loaned slot, whose message `writer` finished (`length` bytes), with a
    /// capture timestamp (CLOCK_MONOTONIC ns; 0: now). Returns the frame's sequence number.
    public func publish(length: Int, timestamp: UInt64 = 0) throws -> UInt64 {
        guard let s = loaned else { throw FerryError(.invalidArgument, "no frame is loaned: call loan() first") }
        guard length >= MessageLayout.headerSize && length <= segment.geometry.slotSize else {
            throw FerryError(.invalidArgument, "frame length \(length) outside \(MessageLayout.headerSize)...\(segment.geometry.slotSize)")
        }
        loaned = nil
        // Written into pages the segment lost, the frame reaches nobody: say so.
        if segment.isBroken { throw segment.brokenError() }
        let seq = lastSeq + 1
        let now = System.nowNanos()
        segment.slotField(s, StreamLayout.sSeq).store(seq, ordering: .relaxed)
        segment.slotField(s, StreamLayout.sTimestamp).store(timestamp == 0 ? now : timestamp, ordering: .relaxed)
        segment.slotField(s, StreamLayout.sLength).store(UInt64(length), ordering: .relaxed)
        segment.slotField(s, StreamLayout.sPublished).store(now, ordering: .relaxed)
        // Releasing: a subscriber that pins the new tag sees the fields and bytes above.
        segment.word(s).store(FrameWord.published(tag: UInt32(truncatingIfNeeded: seq)).raw, ordering: .releasing)
        segment.atomic64(StreamLayout.oLatest).store(seq << 16 | UInt64(s), ordering: .releasing)
        lastSeq = seq
        segment.atomic64(StreamLayout.oFramesPublished).wrappingIncrement(ordering: .relaxed)
        segment.atomic64(StreamLayout.oLastPublish).store(now, ordering: .relaxed)
        segment.bump(segment.published)
        return seq
    }

    /// Gives the loaned slot back unpublished (its old frame is gone: the slot is empty).
    public func cancel() {
        if let s = loaned { abandon(s) }
        loaned = nil
    }

    /// Writes a frame with `fill` and publishes it (loan, write, publish in one).
    @discardableResult
    public func publish(timestamp: UInt64 = 0, timeout: Duration? = nil, _ fill: (inout MessageWriter) throws -> Void) throws -> UInt64 {
        _ = try loan(timeout: timeout)
        do {
            var w = try writer()
            try fill(&w)
            let n = try w.finish()
            return try publish(length: n, timestamp: timestamp)
        } catch {
            cancel()
            throw error
        }
    }

    /// An empty slot: sequence 0 and tag 0, which no subscriber accepts (it checks the full
    /// sequence after pinning), so stale readers never see half-written bytes.
    private func abandon(_ s: Int) {
        segment.slotField(s, StreamLayout.sSeq).store(0, ordering: .relaxed)
        segment.word(s).store(FrameWord.published(tag: 0).raw, ordering: .releasing)
        segment.bump(segment.released)
    }

    /// Claims a slot no subscriber pins, that is not the newest frame, and whose frame every
    /// every-frame subscriber has taken. nil when there is none.
    private func claim() -> Int? {
        let seg = segment
        let latest = seg.latest
        var minCursor = UInt64.max
        for i in 0..<StreamLayout.maxSubscribers where seg.subMode(i).load(ordering: .acquiring) == StreamLayout.modeEvery {
            minCursor = min(minCursor, seg.subField(i, StreamLayout.eCursor).load(ordering: .acquiring))
        }
        let n = seg.geometry.slots
        for k in 0..<n {
            let s = (nextSlot + k) % n
            if latest.seq != 0 && s == latest.slot { continue }
            if seg.slotField(s, StreamLayout.sSeq).load(ordering: .relaxed) > minCursor { continue }
            let w = FrameWord(raw: seg.word(s).load(ordering: .acquiring))
            guard let c = w.claimed() else { continue }
            if seg.word(s).compareExchange(expected: w.raw, desired: c.raw, ordering: .acquiringAndReleasing).exchanged {
                nextSlot = (s + 1) % n
                return s
            }
        }
        return nil
    }

    /// Frees what dead subscribers held (their pins, their place in the backpressure).
    private func reapDead() {
        for i in 0..<StreamLayout.maxSubscribers where segment.reap(i) { segment.bump(segment.released) }
    }

    /// Why no slot came free, naming the subscribers holding it up.
    private func stuck() -> FerryError {
        var who: [String] = []
        for i in 0..<StreamLayout.maxSubscribers {
            let mode = segment.subMode(i).load(ordering: .acquiring)
            guard mode != StreamLayout.modeFree else { continue }
            let pins = (0..<segment.geometry.slots).filter { FrameWord(raw: segment.word($0).load(ordering: .relaxed)).isPinned(by: i) }.count
            let pid = UnsafeRawPointer(segment.base).u32(segment.sub(i) + StreamLayout.ePid)
            let behind = lastSeq &- segment.subField(i, StreamLayout.eCursor).load(ordering: .relaxed)
            who.append("subscriber \(i) (pid \(pid), \(mode == StreamLayout.modeEvery ? "every frame, \(behind) behind" : "latest frame"), \(pins) frame(s) held)")
        }
        return FerryError(.busy, "no free slot in stream \"\(name)\" (\(segment.geometry.slots) slots): every slot holds the newest frame, a frame an every-frame subscriber has not taken, or a frame a subscriber still holds — \(who.joined(separator: "; "))")
    }
}
