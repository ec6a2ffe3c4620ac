/// The reading side of a stream. `.latest` (the default) takes the newest frame each time
/// and counts the ones it skipped as dropped; `.every` takes every frame in order, and the
/// publisher waits for it (backpressure).
///
/// A received `StreamFrame` pins its slot: the publisher writes elsewhere until the frame is
/// released, so its bytes are read in place, never torn. Use from one thread at a time.
public final class Subscriber {
    /// Which frames a subscriber takes.
    public enum Mode: Sendable {
        /// The newest frame; older unseen ones are dropped (and counted).
        case latest
        /// Every frame, in order; the publisher waits for this subscriber.
        case every
    }

    /// The stream's name.
    public let name: String
    /// The mode it was opened with.
    public let mode: Mode
    let core: SubscriberCore
    let endpoint: Endpoint

    /// Attaches to a published stream (`.noServer` when nothing publishes it).
    public init(_ url: String, mode: Mode = .latest) throws {
        endpoint = try StreamEndpoint.parse(url)
        name = endpoint.name
        self.mode = mode
        core = try SubscriberCore(segment: try StreamSegment.attach(name: name), mode: mode)
    }

    deinit { close() }

    /// Leaves the stream. Frames still held lose their pins (release them first).
    public func close() { core.leave() }

    /// Frames received, and frames dropped (skipped in `.latest` mode, lost in `.every`
    /// mode only when joining while the ring turned over).
    public var received: UInt64 { core.received }
    /// See `received`.
    public var dropped: UInt64 { core.dropped }
    /// Frames per second over the last 30 frames received (0 before two).
    public var fps: Double { core.fps }

    /// Slots in the stream and bytes per slot.
    public var geometry: (slots: Int, slotSize: Int) { (core.segment.geometry.slots, core.segment.geometry.slotSize) }

    /// Where slot `index` is mapped in this process now (it moves when a frame is preserved).
    public func slotData(_ index: Int) -> UnsafeRawPointer { UnsafeRawPointer(core.segment.data(index)) }

    /// Waits up to `timeout` (else the URL's) for a frame newer than the last one taken.
    /// `.timedOut` when none came; `.closed` once the publisher ended the stream and nothing
    /// is left to take; `.peerDied` when the publisher died.
    public func receive(timeout: Duration? = nil) throws -> StreamFrame {
        let deadline = deadline(after: timeout?.clampedNanoseconds ?? endpoint.timeoutNanos)
        guard let f = try core.receive(deadline: deadline, strategy: endpoint.wait) else {
            throw FerryError(.timedOut, "no new frame on stream \"\(name)\" within the timeout")
        }
        return f
    }
}

/// One received frame: its message (read in place), sequence number and timestamps. Its
/// slot stays pinned until `release()` (or deinit).
public final class StreamFrame {
    /// The frame's sequence number (1, 2, …; gaps are frames this subscriber did not take).
    public let sequence: UInt64
    /// Capture timestamp given by the publisher (CLOCK_MONOTONIC ns).
    public let timestamp: UInt64
    /// When it was received (CLOCK_MONOTONIC ns).
    public let receivedAt: UInt64
    /// Frames skipped between the previous frame this subscriber took and this one.
    public let droppedBefore: UInt64
    /// The validated message.
    public let message: MessageView
    /// Its length in bytes.
    public let length: Int
    /// The slot holding it.
    public let slot: Int
    let core: SubscriberCore
    private var pinned = true

    init(sequence: UInt64, timestamp: UInt64, droppedBefore: UInt64, message: MessageView, length: Int, slot: Int, core: SubscriberCore) {
        self.sequence = sequence
        self.timestamp = timestamp
        self.droppedBefore = droppedBefore
        self.message = message
        self.length = length
        self.slot = slot
        self.core = core
        receivedAt = System.nowNanos()
    }

    deinit { release() }

    /// End-to-end age when received: receipt time minus capture timestamp, in ns.
    public var ageNanos: UInt64 { receivedAt > timestamp ? receivedAt - timestamp : 0 }

    /// Lets the publisher reuse the slot. The message's data must not be read after this
    /// (unless `preserve` was called first). Idempotent.
    public func release() {
        guard pinned else { return }
        pinned = false
        core.unpin(slot)
    }

    /// Keeps this frame's bytes readable after `release()`: its pages become a private copy
    /// at the same addresses, in this process only. Give them back with
    /// `Worker.releasePreserved` once nothing points into them.
    public func preserve() throws -> UnsafeRawBufferPointer {
        guard pinned else { throw FerryError(.invalidArgument, "preserve a frame before releasing it") }
        return UnsafeRawBufferPointer(try core.segment.preserve(slot: slot, length: length))
    }
}

/// A subscriber's state, shared with the frames it handed out (they keep the mapping).
final class SubscriberCore {
    let segment: StreamSegment
    let mode: Subscriber.Mode
    /// This subscriber's index: its reader bit and its lock byte.
    private(set) var bit = -1
    private var cursor: UInt64 = 0
    private(set) var received: UInt64 = 0
    private(set) var dropped: UInt64 = 0
    private var arrivals: [UInt64] = []
    private var open = true

    init(segment: StreamSegment, mode: Subscriber.Mode) throws {
        self.segment = segment
        self.mode = mode
        for i in 0..<StreamLayout.maxSubscribers {
            if try System.lock(fd: segment.lockFd, byte: StreamLayout.subscriberLockBase + Int64(i), exclusive: true, wait: false) {
                bit = i
                break
            }
        }
        guard bit >= 0 else { throw FerryError(.busy, "stream \"\(segment.name)\" already has \(StreamLayout.maxSubscribers) subscribers (the most a stream tracks)") }
        // The index may have been a dead subscriber's: drop what it held.
        segment.clearPins(of: bit)
        let e = segment.sub(bit)
        segment.base.put(System.pid, at: e + StreamLayout.ePid)
        for f in [StreamLayout.eReceived, StreamLayout.eDropped, StreamLayout.eLastAge] { segment.subField(bit, f).store(0, ordering: .relaxed) }
        // A subscriber gets the frames published after it attached (like an iceoryx2
        // subscriber without history): each of them is either received or counted as dropped,
        // so received + dropped == frames published since attach once it has caught up. The
        // cursor is published before the mode, so the publisher never sees this subscriber
        // without it.
        cursor = segment.latest.seq
        segment.subField(bit, StreamLayout.eCursor).store(cursor, ordering: .releasing)
        segment.subMode(bit).store(mode == .every ? StreamLayout.modeEvery : StreamLayout.modeLatest, ordering: .sequentiallyConsistent)
        segment.bump(segment.released)
    }

    deinit { leave() }

    func leave() {
        guard open else { return }
        open = false
        guard !segment.isStale, bit >= 0 else { return }
        segment.subMode(bit).store(StreamLayout.modeFree, ordering: .releasing)
        segment.clearPins(of: bit)
        System.unlock(fd: segment.lockFd, byte: StreamLayout.subscriberLockBase + Int64(bit))
        segment.bump(segment.released)
    }

    var fps: Double {
        guard arrivals.count >= 2, let a = arrivals.first, let b = arrivals.last, b > a else { return 0 }
        return Double(arrivals.count - 1) * 1e9 / Double(b - a)
    }

    func unpin(_ slot: Int) {
        guard open, !segment.isStale else { return }
        let word = segment.word(slot)
        var w = FrameWord(raw: word.load(ordering: .acquiring))
        while w.isPinned(by: bit) {
            let (ok, found) = word.compareExchange(expected: w.raw, desired: w.unpinned(by: bit).raw, ordering: .acquiringAndReleasing)
            if ok { break }
            w = FrameWord(raw: found)
        }
        segment.bump(segment.released)
    }

    /// Pins `slot` if it holds frame `seq` (checked again, in full, once pinned).
    private func pin(_ slot: Int, _ seq: UInt64) -> Bool {
        let word = segment.word(slot)
        var w = FrameWord(raw: word.load(ordering: .acquiring))
        while true {
            guard let p = w.pinned(by: bit, expecting: UInt32(truncatingIfNeeded: seq)) else { return false }
            let (ok, found) = word.compareExchange(expected: w.raw, desired: p.raw, ordering: .acquiringAndReleasing)
            if ok { break }
            w = FrameWord(raw: found)
        }
        if segment.slotField(slot, StreamLayout.sSeq).load(ordering: .acquiring) == seq { return true }
        unpin(slot)
        return false
    }

    func receive(deadline: UInt64, strategy: WaitStrategy) throws -> StreamFrame? {
        guard open else { throw FerryError(.closed, "the subscriber is closed") }
        guard !segment.isStale else { throw FerryError(.invalidArgument, "a subscriber cannot be used in a forked child") }
        return try segment.published.wait(strategy: strategy, deadline: deadline, poll: { try take() }, check: { try checkPublisher() })
    }

    private func checkPublisher() throws {
        if segment.isBroken { throw segment.brokenError() }
        if segment.state == StreamLayout.stateClosed {
            if segment.latest.seq > cursor { return }  // frames left: the wait polls again
            throw FerryError(.closed, "stream \"\(segment.name)\" has ended: its publisher closed it")
        }
        if !segment.hasPublisher {
            segment.unlinkIfStale()
            throw FerryError(.peerDied, "the publisher of stream \"\(segment.name)\" died (last frame taken: \(cursor))")
        }
    }

    /// One attempt to take the next frame: nil when there is none yet.
    private func take() throws -> StreamFrame? {
        if segment.isBroken { throw segment.brokenError() }
        let slots = segment.geometry.slots
        for _ in 0..<64 {
            let latest = segment.latest
            guard latest.seq > cursor else { return nil }
            guard latest.slot < slots else { throw FerryError(.malformed, "stream \"\(segment.name)\": newest-frame slot \(latest.slot) out of range") }
            var slot = latest.slot, seq = latest.seq
            if mode == .every {
                // The frame after the cursor; if it was lost (joined while the ring turned
                // over), the oldest one left.
                var best: (Int, UInt64)? = nil
                for s in 0..<slots {
                    let q = segment.slotField(s, StreamLayout.sSeq).load(ordering: .acquiring)
                    if q == cursor + 1 { best = (s, q); break }
                    if q > cursor, best == nil || q < best!.1 { best = (s, q) }
                }
                guard let b = best else { continue }
                (slot, seq) = b
            }
            guard pin(slot, seq) else { continue }
            return try frame(slot: slot, seq: seq)
        }
        return nil
    }

    private func frame(slot: Int, seq: UInt64) throws -> StreamFrame {
        let skipped = seq - cursor - 1
        cursor = seq
        segment.subField(bit, StreamLayout.eCursor).store(seq, ordering: .releasing)
        let length64 = segment.slotField(slot, StreamLayout.sLength).load(ordering: .relaxed)
        let ts = segment.slotField(slot, StreamLayout.sTimestamp).load(ordering: .relaxed)
        let view: MessageView
        do {
            guard length64 <= UInt64(segment.geometry.slotSize) else {
                throw FerryError(.malformed, "frame \(seq) of stream \"\(segment.name)\" claims \(length64) bytes in a slot of \(segment.geometry.slotSize)")
            }
            view = try MessageView(validating: UnsafeRawBufferPointer(start: segment.data(slot), count: Int(length64)))
            if segment.isBroken { throw segment.brokenError() }
        } catch {
            unpin(slot)
            // A frame read from pages another process truncated is zeros, and fails to
            // validate: the truncation is the cause to report, not the bytes it left.
            if segment.isBroken { throw segment.brokenError() }
            throw error
        }
        received += 1
        dropped += skipped
        let f = StreamFrame(sequence: seq, timestamp: ts, droppedBefore: skipped, message: view, length: Int(length64), slot: slot, core: self)
        if arrivals.count == 30 { arrivals.removeFirst() }
        arrivals.append(f.receivedAt)
        segment.subField(bit, StreamLayout.eReceived).store(received, ordering: .relaxed)
        segment.subField(bit, StreamLayout.eDropped).store(dropped, ordering: .relaxed)
        segment.subField(bit, StreamLayout.eLastAge).store(f.ageNanos, ordering: .relaxed)
        return f
    }
}
