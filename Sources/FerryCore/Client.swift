import Synchronization

/// Calls a model served on a channel. Safe to share across threads: each call claims its
/// own slot, and several calls may be in flight at once, from one thread or many. A
/// `PendingCall` itself belongs to one thread at a time.
///
///     let client = try Client("shm://digits")
///     let reply = try client.call(Message([("image", Tensor(pixels, shape: [9, 28, 28]))]))
public final class Client: Sendable {
    /// The parsed URL.
    public let endpoint: Endpoint
    private let state: Mutex<ShmChannel?>

    /// Connects to the channel at `url` (it must be served already).
    public init(_ url: String) throws {
        endpoint = try Endpoint(url)
        state = Mutex(ShmChannel(try ShmSegment.attach(channel: endpoint.name, shared: endpoint.shared)))
    }

    /// The attached channel, re-attaching when the old one was closed or reclaimed (a
    /// restarted server serves the same name on a new segment), or when this process is a
    /// fork()ed child of the one that attached (the child needs liveness of its own).
    func attached() throws -> ShmChannel {
        try state.withLock { channel in
            if let c = channel, !c.segment.isClosed, !c.segment.isStale { return c }
            channel = nil
            let c = ShmChannel(try ShmSegment.attach(channel: endpoint.name, shared: endpoint.shared))
            channel = c
            return c
        }
    }

    /// Slot capacity in bytes (request and reply share it).
    public var slotSize: Int { state.withLock { $0?.slotSize } ?? endpoint.slotSize }

    func deadline(_ timeout: Duration?) -> UInt64 {
        FerryCore.deadline(after: timeout?.clampedNanoseconds ?? endpoint.timeoutNanos)
    }

    /// Starts a call: claims a slot and returns it for writing the request in place.
    public func begin(timeout: Duration? = nil) throws -> PendingCall {
        let d = deadline(timeout)
        let c = try attached()
        let (slot, gen) = try c.claim(deadline: d, strategy: endpoint.wait)
        return PendingCall(client: self, channel: c, slot: slot, gen: gen, deadline: d)
    }

    /// Sends `message` and waits for the reply (copied out of shared memory).
    /// An error reply from the model throws `.remote`.
    public func call(_ message: Message, timeout: Duration? = nil) throws -> Message {
        try withCall(timeout: timeout, write: { w in _ = try message.write(to: &w) }, read: { Message($0) })
    }

    /// Sends named tensors and waits for the reply.
    public func call(_ tensors: [(String, Tensor)], timeout: Duration? = nil) throws -> Message {
        try call(Message(tensors), timeout: timeout)
    }

    /// Zero-copy call: `write` fills the request directly in the slot, `read` sees the reply
    /// in place. The slot is freed when `read` returns.
    public func withCall<R>(timeout: Duration? = nil, write: (inout MessageWriter) throws -> Void,
                            read: (MessageView) throws -> R) throws -> R {
        let call = try begin(timeout: timeout)
        defer { call.close() }
        try write(&call.writer)
        try call.send()
        return try read(try call.wait())
    }

    /// Slots of the channel by state; with `recover`, after freeing what dead processes held.
    public func census(recover: Bool = false) throws -> [SlotState: Int] {
        let c = try attached()
        if recover { c.recoverDead() }
        return c.census()
    }

    /// The channel's counters and slots now (see `ChannelStats`).
    public func stats() throws -> ChannelStats { try attached().stats() }

    /// Detaches from the channel. Calls still open keep the mapping until they are closed.
    public func close() {
        state.withLock { $0 = nil }
    }
}

/// One call in flight: a claimed slot, its request writer and, later, its reply.
/// Free it with `close()` (also done on deinit). The memory stays mapped while it lives.
public final class PendingCall {
    let client: Client
    let channel: ShmChannel
    let slot: Int
    let gen: UInt32
    let deadline: UInt64
    /// True while this call owns its slot (CLAIMED before sending, DONE after the reply).
    var owned = true
    var sent = false
    /// The reply is in the slot (DONE).
    var replied = false
    var requestLength = 0
    /// The failure that ended the call, repeated to later `wait`s.
    var failure: FerryError?
    /// Writes the request in place in the slot.
    public var writer: MessageWriter

    init(client: Client, channel: ShmChannel, slot: Int, gen: UInt32, deadline: UInt64) {
        self.client = client
        self.channel = channel
        self.slot = slot
        self.gen = gen
        self.deadline = deadline
        self.writer = MessageWriter(base: channel.data(slot), capacity: channel.requestCapacity,
                                    limitHint: "a request may use the slot size less one page (kept for the reply); raise the channel's slot_size (e.g. shm://\(channel.segment.channel)?slot_size=64M where the server creates it, or ferry serve --slot-size 64M)")
    }

    /// True once the request was handed to a worker.
    public var isSent: Bool { sent }
    /// True until the call is closed or has failed.
    public var isOpen: Bool { owned }

    /// Finishes the request and hands it to a worker.
    public func send(metadata: [String: String] = [:]) throws {
        guard owned, !sent else { throw FerryError(.invalidArgument, "call already sent or closed") }
        for (k, v) in metadata { writer.setMetadata(k, v) }
        requestLength = try writer.finish()
        sent = true
        try channel.publish(slot: slot, gen: gen, length: requestLength)
    }

    /// Waits for the reply and returns a view of it in the slot (valid while the view or
    /// this call lives; the slot is freed by `close`). Throws `.remote` when the model
    /// failed, with its message. After any other error the call is over.
    public func wait(timeout: Duration? = nil) throws -> MessageView {
        let d = timeout.map { client.deadline($0) } ?? deadline
        return try waitUntil(d, deadline: d)!
    }

    /// Waits at most `interval` for the reply: nil when it has not come yet and the call's
    /// deadline has not passed (the call stays in flight), so a caller can wait in chunks
    /// and stay interruptible. Throws as `wait` at the deadline.
    public func poll(for interval: Duration) throws -> MessageView? {
        try waitUntil(FerryCore.deadline(after: interval.clampedNanoseconds), deadline: deadline)
    }

    func waitUntil(_ until: UInt64, deadline d: UInt64) throws -> MessageView? {
        if let failure { throw failure }
        guard sent else { throw FerryError(.invalidArgument, "call not sent yet") }
        guard owned else { throw FerryError(.invalidArgument, "call already closed") }
        if !replied {
            do {
                guard try channel.awaitReply(slot: slot, gen: gen, until: until, deadline: d, strategy: client.endpoint.wait) else { return nil }
            } catch let e as FerryError {
                owned = false  // withdrawn, abandoned to the worker, or recovered: not ours
                failure = e
                throw e
            }
            replied = true
        }
        let offset = channel.replyOffset(requestLength: requestLength)
        let view = try MessageView(validating: UnsafeRawBufferPointer(start: channel.data(slot) + offset, count: channel.slotSize - offset),
                                   owner: self)
        if view.status != 0 {
            let code = FerryError.Code(rawValue: view.status) ?? .remote
            var e = FerryError(code, view.metadata("error") ?? "the worker failed with status \(view.status)")
            e.remoteType = view.metadata("error_type")
            e.detail = view.metadata("error_detail")
            throw e
        }
        return view
    }

    /// Frees the slot. Safe to call twice. A call still in flight is given up: withdrawn if
    /// no worker took it, else left to its worker, who frees the slot when done.
    public func close() {
        guard owned else { return }
        owned = false
        if sent && !replied, channel.giveUp(slot: slot, gen: gen) != .replied { return }
        channel.release(slot: slot, gen: gen)
    }

    deinit { close() }
}
