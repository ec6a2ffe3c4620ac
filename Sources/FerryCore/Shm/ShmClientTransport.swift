import Synchronization

/// The `shm://` client transport: a loan is a claimed slot of the channel's segment, so the
/// request is written in place and the reply read in place (zero copies).
final class ShmClientTransport: ClientTransport {
    let endpoint: Endpoint
    private let state: Locked<ShmChannel?>

    func serverInfo(deadline: UInt64) throws -> [String: String] {
        let segment = try attached().segment
        return ["model": segment.model, "workers": String(segment.liveAttachments().servers)]
    }

    init(_ endpoint: Endpoint) throws {
        self.endpoint = endpoint
        state = Locked(ShmChannel(try ShmSegment.attach(channel: endpoint.name, shared: endpoint.shared)))
    }

    /// The attached channel, re-attaching when the old one was closed or reclaimed (a
    /// restarted server serves the same name on a new segment), or when this process is a
    /// fork()ed child of the one that attached (the child needs liveness of its own).
    func attached() throws -> ShmChannel {
        try state.withLock { channel in
            if let c = channel, !c.segment.isClosed, !c.segment.isStale, !c.segment.isBroken { return c }
            let broken = channel.flatMap { $0.segment.isBroken ? $0.segment.brokenError() : nil }
            channel = nil
            do {
                let c = ShmChannel(try ShmSegment.attach(channel: endpoint.name, shared: endpoint.shared))
                channel = c
                return c
            } catch let e as FerryError where broken != nil && e.code != .noServer {
                // What is there now is the broken segment (or worse): say what happened.
                throw FerryError(.closed, "\(broken!.message) (attaching again: \(e.message))")
            }
        }
    }

    var requestCapacity: Int {
        (state.withLock { $0?.slotSize } ?? endpoint.slotSize) - SegmentLayout.page
    }

    func loan(deadline: UInt64) throws -> any CallLoan {
        let c = try attached()
        let (slot, gen) = try c.claim(deadline: deadline, strategy: endpoint.wait)
        return ShmLoan(channel: c, slot: slot, gen: gen, wait: endpoint.wait)
    }

    func census(recover: Bool) throws -> [SlotState: Int] {
        let c = try attached()
        if recover { c.recoverDead() }
        return c.census()
    }

    func stats() throws -> ChannelStats { try attached().stats() }

    func close() { state.withLock { $0 = nil } }
}

/// A claimed slot: the request is written at its start, the reply after it (page-aligned).
final class ShmLoan: CallLoan {
    let channel: ShmChannel
    let slot: Int
    let gen: UInt32
    let wait: WaitStrategy
    /// True while this loan owns its slot (CLAIMED before sending, DONE after the reply).
    var owned = true
    var sent = false
    var replied = false
    var requestLength = 0

    init(channel: ShmChannel, slot: Int, gen: UInt32, wait: WaitStrategy) {
        self.channel = channel
        self.slot = slot
        self.gen = gen
        self.wait = wait
    }

    var request: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: channel.data(slot), count: channel.requestCapacity)
    }

    var limitHint: String { channel.requestLimitHint }

    func send(length: Int, deadline: UInt64) throws {
        requestLength = length
        sent = true
        try channel.publish(slot: slot, gen: gen, length: length)
    }

    func awaitReply(until: UInt64, deadline: UInt64) throws -> UnsafeRawBufferPointer? {
        if !replied {
            do {
                guard try channel.awaitReply(slot: slot, gen: gen, until: until, deadline: deadline, strategy: wait) else { return nil }
            } catch {
                owned = false  // withdrawn, abandoned to the worker, or recovered: not ours
                throw error
            }
            replied = true
        }
        if channel.segment.isBroken { throw channel.segment.brokenError() }
        let offset = channel.replyOffset(requestLength: requestLength)
        return UnsafeRawBufferPointer(start: channel.data(slot) + offset, count: channel.slotSize - offset)
    }

    /// The segment lost its file under this process: what was read from the slot (a reply
    /// copied out after `awaitReply`) cannot be trusted.
    var isLost: Bool { channel.segment.isBroken }

    func close() {
        guard owned else { return }
        owned = false
        if sent && !replied, channel.giveUp(slot: slot, gen: gen) != .replied { return }
        channel.release(slot: slot, gen: gen)
    }

    deinit { close() }
}
