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
    /// The transport its scheme chose (see `Transports`).
    public let transport: any ClientTransport

    /// Connects to the channel at `url` (it must be served already): `shm://NAME` on this
    /// host, `tcp://HOST:PORT/NAME` through a `ferry serve --listen` gateway.
    public init(_ url: String) throws {
        endpoint = try Endpoint(url)
        transport = try Transports.client(endpoint)
    }

    /// Largest request in bytes (shared memory: the slot size less one page kept for the reply).
    public var requestCapacity: Int { transport.requestCapacity }

    func deadline(_ timeout: Duration?) -> UInt64 {
        FerryCore.deadline(after: timeout?.clampedNanoseconds ?? endpoint.timeoutNanos)
    }

    /// Starts a call: loans a request buffer (a claimed slot for shm://) for writing the
    /// request in place.
    public func begin(timeout: Duration? = nil) throws -> PendingCall {
        let d = deadline(timeout)
        return PendingCall(client: self, loan: try transport.loan(deadline: d), deadline: d)
    }

    /// Starts a call only if a request buffer is free right now (nil when all are in use):
    /// for callers that must not block, such as an event loop. The call's deadline is
    /// `timeout` from now.
    public func tryBegin(timeout: Duration? = nil) throws -> PendingCall? {
        let d = deadline(timeout)
        do {
            return PendingCall(client: self, loan: try transport.loan(deadline: System.nowNanos()), deadline: d)
        } catch let e as FerryError where e.code == .busy {
            return nil
        }
    }

    /// Sends `message` and waits for the reply (copied out).
    /// An error reply from the model throws `.remote`.
    public func call(_ message: Message, timeout: Duration? = nil) throws -> Message {
        try withCall(timeout: timeout, write: { w in _ = try message.write(to: &w) }, read: { Message($0) })
    }

    /// Sends named tensors and waits for the reply.
    public func call(_ tensors: [(String, Tensor)], timeout: Duration? = nil) throws -> Message {
        try call(Message(tensors), timeout: timeout)
    }

    /// Zero-copy call: `write` fills the request directly in the loaned buffer, `read` sees
    /// the reply in place. The buffer is given back when `read` returns.
    public func withCall<R>(timeout: Duration? = nil, write: (inout MessageWriter) throws -> Void,
                            read: (MessageView) throws -> R) throws -> R {
        let call = try begin(timeout: timeout)
        defer { call.close() }
        try write(&call.writer)
        try call.send()
        return try read(try call.wait())
    }

    /// Who serves the channel: `model` (its identity: file, function, content hash, version),
    /// and what else the transport knows (`workers` over shm://, `version` over redis://;
    /// over tcp:// what the gateway's handshake said). Each reply names its model too
    /// (metadata `ferry.model`).
    public func serverInfo(timeout: Duration? = nil) throws -> [String: String] {
        try transport.serverInfo(deadline: deadline(timeout))
    }

    /// Slots of the channel by state; with `recover`, after freeing what dead processes held.
    public func census(recover: Bool = false) throws -> [SlotState: Int] { try transport.census(recover: recover) }

    /// The channel's counters and slots now (see `ChannelStats`).
    public func stats() throws -> ChannelStats { try transport.stats() }

    /// Detaches from the channel (closes the connection). Calls still open keep what they
    /// use until they are closed.
    public func close() { transport.close() }
}

/// One call in flight: a loaned request buffer, its writer and, later, its reply.
/// Free it with `close()` (also done on deinit). Its memory stays valid while it lives.
public final class PendingCall {
    let client: Client
    let loan: any CallLoan
    let deadline: UInt64
    /// True until the call is closed or has failed.
    var owned = true
    var sent = false
    /// The reply's bytes, once they came.
    var reply: UnsafeRawBufferPointer?
    /// The failure that ended the call, repeated to later `wait`s.
    var failure: FerryError?
    /// Writes the request in place in the loaned buffer.
    public var writer: MessageWriter

    init(client: Client, loan: any CallLoan, deadline: UInt64) {
        self.client = client
        self.loan = loan
        self.deadline = deadline
        let r = loan.request
        self.writer = MessageWriter(base: r.baseAddress!, capacity: r.count, limitHint: loan.limitHint)
        writer.acceptsReferences = loan.sendsReferences
    }

    /// True once the request was handed to the transport.
    public var isSent: Bool { sent }
    /// Throws when the memory the reply was read from was lost under this process (another
    /// process truncated the shared-memory segment): call after copying a reply out, before
    /// using the copy. Zero-copy readers see the pages turn to zeros instead of crashing.
    public func checkReplyIntact() throws {
        if loan.isLost { throw FerryError(.closed, "the reply's shared memory was truncated or replaced by another process while it was read; the channel is broken, the reply is not used") }
    }
    /// True until the call is closed or has failed.
    public var isOpen: Bool { owned }

    /// Finishes the request and hands it to the transport.
    public func send(metadata: [String: String] = [:]) throws {
        guard owned, !sent else { throw FerryError(.invalidArgument, "call already sent or closed") }
        for (k, v) in metadata { writer.setMetadata(k, v) }
        let length = try writer.finish()
        try transmit(length, references: writer.references)
    }

    /// Sends `bytes` as they are, checking only that they fit: for a gateway passing on a
    /// request it received, which the worker validates in full anyway (every reader of a slot
    /// treats its bytes as untrusted).
    public func send(forwarding bytes: UnsafeRawBufferPointer) throws {
        guard owned, !sent else { throw FerryError(.invalidArgument, "call already sent or closed") }
        guard bytes.count <= loan.request.count else {
            throw FerryError(.tooLarge, "message of \(bytes.count) bytes does not fit in \(loan.request.count); \(loan.limitHint)")
        }
        if bytes.count > 0 { loan.request.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        try transmit(bytes.count)
    }

    /// The loaned request buffer, for a gateway that receives a request's bytes straight into
    /// it as they arrive (then `send(forwardingInPlace:)`).
    public var requestBuffer: UnsafeMutableRawBufferPointer { loan.request }

    /// Sends the first `length` bytes of `requestBuffer` as they are: `send(forwarding:)`
    /// without the copy, for bytes already received into place.
    public func send(forwardingInPlace length: Int) throws {
        guard owned, !sent else { throw FerryError(.invalidArgument, "call already sent or closed") }
        guard length >= 0, length <= loan.request.count else {
            throw FerryError(.tooLarge, "message of \(length) bytes does not fit in \(loan.request.count); \(loan.limitHint)")
        }
        try transmit(length)
    }

    /// The reply's bytes as they came, once it is there (nil before; throws as `poll`): only
    /// its length is read from its header, for a gateway passing it on to a client that
    /// validates it in full.
    public func pollReplyBytes(for interval: Duration) throws -> UnsafeRawBufferPointer? {
        if let failure { throw failure }
        guard sent else { throw FerryError(.invalidArgument, "call not sent yet") }
        guard owned else { throw FerryError(.invalidArgument, "call already closed") }
        if reply == nil {
            do {
                guard let r = try loan.awaitReply(until: FerryCore.deadline(after: interval.clampedNanoseconds), deadline: deadline) else { return nil }
                reply = r
            } catch let e as FerryError {
                owned = false
                failure = e
                loan.close()
                throw e
            }
        }
        let r = reply!
        guard r.count >= MessageLayout.headerSize else { throw FerryError(.malformed, "malformed reply: shorter than a header") }
        let total = r.baseAddress!.u64(MessageLayout.oTotal)
        guard total >= UInt64(MessageLayout.headerSize), total <= UInt64(r.count) else {
            throw FerryError(.malformed, "malformed reply: total length \(total) outside 64...\(r.count)")
        }
        return UnsafeRawBufferPointer(start: r.baseAddress, count: Int(total))
    }

    private func transmit(_ length: Int, references: [MessageWriter.Reference] = []) throws {
        sent = true
        do {
            if references.isEmpty {
                try loan.send(length: length, deadline: deadline)
            } else {
                try loan.send(length: length, references: references, deadline: deadline)
            }
        } catch let e as FerryError {
            owned = false
            failure = e
            loan.close()
            throw e
        }
    }

    /// Waits for the reply and returns a view of it (in the slot for shm://; valid while
    /// the view or this call lives). Throws `.remote` when the model failed, with its
    /// message. After any other error the call is over.
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
        if reply == nil {
            do {
                guard let r = try loan.awaitReply(until: until, deadline: d) else { return nil }
                reply = r
            } catch let e as FerryError {
                owned = false  // withdrawn, abandoned to the worker, or the connection failed: not ours
                failure = e
                loan.close()
                throw e
            }
        }
        let view: MessageView
        do {
            view = try MessageView(validating: reply!, owner: self)
            try checkReplyIntact()  // read whole, not partly from pages lost meanwhile
        } catch let e as FerryError where e.code != .closed {
            try checkReplyIntact()  // zeros where the reply was: say why
            throw e
        }
        if view.status != 0 {
            let code = FerryError.Code(rawValue: view.status) ?? .remote
            var e = FerryError(code, view.metadata("error") ?? "the worker failed with status \(view.status)")
            e.remoteType = view.metadata("error_type")
            e.detail = view.metadata("error_detail")
            throw e
        }
        return view
    }

    /// Gives the buffer back. Safe to call twice. A call still in flight is given up: for
    /// shm:// withdrawn if no worker took it, else left to its worker, who frees the slot.
    public func close() {
        guard owned else { return }
        owned = false
        loan.close()
    }

    deinit { close() }
}
