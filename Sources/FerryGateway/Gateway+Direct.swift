import Atomics
import FerryCore
import FerryTCP
import FerryWire

// Plain-TCP connections without an event loop: a thread per connection that reads a request
// straight into the slot it goes out in, waits for the reply itself and writes it from the
// slot (one gathered send). Per call that is one wake-up of the gateway on the request and
// one on the reply, and no copy of a request or a reply in user space; the event loop path
// (Gateway.swift) adds a hand-off to a forwarder thread and back, and a copy of every request
// out of NIO's buffers. TLS connections go through the event loop (swift-nio-ssl). Both
// paths speak the same protocol (docs/protocol.md) with the same limits and errors.

/// Accepts plain-TCP connections and starts a `DirectConnection` thread for each.
final class DirectAcceptor: @unchecked Sendable {
    let fd: Int32
    /// The bound port.
    let port: Int
    let shared: GatewayShared
    private let stopping = ManagedAtomic<Bool>(false)
    private var thread: NativeThread?

    init(shared: GatewayShared, host: String, port: Int) throws {
        (fd, self.port) = try System.tcpListen(host: host, port: port)
        self.shared = shared
        thread = NativeThread { [self] in run() }
    }

    private func run() {
        while !stopping.load(ordering: .relaxed) {
            // Woken at least every 100 ms to see `stop`.
            guard (try? System.waitReady(fd, write: false, until: System.nowNanos() &+ 100_000_000)) == true else { continue }
            do {
                while !stopping.load(ordering: .relaxed), let c = try System.tcpAccept(fd, tickMillis: DirectConnection.tickMillis) {
                    start(c)
                }
            } catch {
                // Out of descriptors (EMFILE, ENFILE) or memory: back off; the connections
                // waiting stay in the backlog until some close.
                usleepNanos(10_000_000)
            }
        }
    }

    private func start(_ fd: Int32) {
        let connection = DirectConnection(fd: fd, shared: shared)
        do {
            try NativeThread.detached { connection.run() }
        } catch {
            connection.refuse(FerryError(.busy, "the gateway cannot start a thread for this connection: \(error)"))
        }
    }

    /// Stops accepting and closes the listening socket (connections go on).
    func stop() {
        stopping.store(true, ordering: .relaxed)
        thread?.join()
        System.close(fd)
    }
}

/// How a connection ends.
private enum Ending: Error {
    /// Closed without a word: the peer left, went idle, or stalled mid-frame.
    case hangUp
    /// Closed with an ERROR frame saying why (counted as rejected).
    case reject(FerryError)
}

/// One plain-TCP client connection on its own thread: handshake, then requests. Requests
/// already received are published before any reply is waited for (so pipelined calls run on
/// several workers at once), up to the connection's in-flight bound; replies are sent as
/// they come, matched by request id.
final class DirectConnection: @unchecked Sendable {
    /// The socket's send and receive timeout (ms): a thread blocked on its socket wakes at
    /// least this often to look at its deadlines and at a shutdown.
    static let tickMillis: Int32 = 100
    /// One wait for a reply lasts this long before the socket is looked at again (for
    /// requests that came meanwhile, or a client that left). With one call in flight it
    /// grows with the time waited (an eighth of it, up to `longestSliceNanos`): a slow model
    /// costs a few wake-ups, and a request pipelined behind it waits at most that fraction.
    static let replySliceNanos: UInt64 = 1_000_000
    static let longestSliceNanos: UInt64 = 20_000_000
    /// Bytes received ahead of the frame being handled; a request's body beyond what is
    /// already here is received straight into its slot.
    static let stageSize = 64 << 10

    let fd: Int32
    let shared: GatewayShared
    let opened = System.nowNanos()
    private let stage: UnsafeMutableRawBufferPointer
    /// Where outgoing frame headers are written.
    private let headerOut = UnsafeMutableRawPointer.allocate(byteCount: Frame.headerSize, alignment: 8)
    /// The received bytes not yet used are stage[head..<tail].
    private var head = 0, tail = 0
    /// Published calls whose replies have not been sent, oldest first, with when each went.
    private var awaiting: [(id: UInt64, call: PendingCall, since: UInt64)] = []
    /// When the last byte came (for the idle timeout).
    private var lastRead: UInt64
    /// Whether spinning for the next request, and for a reply, pays (see `yieldSpin`).
    private let requestAdvisor = SpinAdvisor(), replyAdvisor = SpinAdvisor()

    init(fd: Int32, shared: GatewayShared) {
        self.fd = fd
        self.shared = shared
        stage = .allocate(byteCount: DirectConnection.stageSize, alignment: 64)
        lastRead = opened
    }

    deinit {
        stage.deallocate()
        headerOut.deallocate()
    }

    var config: GatewayConfiguration { shared.config }

    /// Answers with an ERROR frame and closes (no thread for it, or over the limit).
    func refuse(_ e: FerryError) {
        shared.rejected.wrappingIncrement(ordering: .relaxed)
        sendError(e)
        System.close(fd)
    }

    func run() {
        guard shared.admitDirect() else {
            let why = shared.draining.load(ordering: .relaxed) ? "the gateway is shutting down"
                : "too many connections (this gateway allows \(config.maxConnections))"
            refuse(FerryError(.busy, why))
            return
        }
        defer { finish() }
        do {
            try handshake()
            try serve()
        } catch Ending.reject(let e) {
            shared.rejected.wrappingIncrement(ordering: .relaxed)
            sendError(e)
        } catch {
            // Hung up, or the socket failed: nobody to tell.
        }
    }

    /// Gives up what is still in flight (a worker that took a call frees its slot) and closes.
    private func finish() {
        for a in awaiting { a.call.close() }
        shared.inFlight.wrappingDecrement(by: awaiting.count, ordering: .relaxed)
        awaiting.removeAll()
        System.close(fd)
        shared.leaveDirect()
    }

    // MARK: Receiving

    /// Waits until `count` bytes (at most `stageSize`) are received ahead; throws `timeout`
    /// at `until`, `.reject` on shutdown, `.hangUp` when the peer closed.
    private func fill(_ count: Int, until: UInt64, timeout: Ending) throws {
        while tail - head < count {
            if head > 0 && tail + (count - (tail - head)) > stage.count {
                // Moved to the front so the rest fits.
                (stage.baseAddress!).copyMemory(from: stage.baseAddress! + head, byteCount: tail - head)
                tail -= head
                head = 0
            }
            try receiveOnce(into: stage.baseAddress! + tail, count: stage.count - tail, until: until, timeout: timeout) { tail += $0 }
        }
    }

    /// One receive that waits (up to a tick), then the deadline and shutdown checks.
    private func receiveOnce(into p: UnsafeMutableRawPointer, count: Int, until: UInt64, timeout: Ending, got: (Int) -> Void) throws {
        let n: Int
        do { n = try System.receiveWaiting(fd, into: p, count: count) } catch { throw Ending.hangUp }
        if n > 0 {
            lastRead = System.nowNanos()
            got(n)
            return
        }
        if shared.closingAll.load(ordering: .relaxed) { throw Ending.reject(FerryError(.closed, "the gateway is shutting down")) }
        if System.nowNanos() >= until { throw timeout }
    }

    /// Receives `count` bytes to `p`: first those already here, then straight from the socket.
    private func receive(into p: UnsafeMutableRawPointer?, count: Int, until: UInt64) throws {
        let ahead = min(tail - head, count)
        if ahead > 0, let p { p.copyMemory(from: stage.baseAddress! + head, byteCount: ahead) }
        head += ahead
        var got = ahead
        while got < count {
            if let p {
                try receiveOnce(into: p + got, count: count - got, until: until, timeout: .hangUp) { got += $0 }
            } else {
                // Discarded: through the stage.
                head = 0
                tail = 0
                try receiveOnce(into: stage.baseAddress!, count: min(stage.count, count - got), until: until, timeout: .hangUp) { got += $0 }
            }
        }
        if head == tail { head = 0; tail = 0 }
    }

    /// True when bytes are here or have come (does not wait). Throws `.hangUp` at end of stream.
    private func somethingToRead() throws -> Bool {
        if tail > head { return true }
        head = 0
        tail = 0
        let n: Int
        do { n = try System.receive(fd, into: stage.baseAddress!, count: stage.count) } catch { throw Ending.hangUp }
        tail = n
        if n > 0 { lastRead = System.nowNanos() }
        return n > 0
    }

    /// The frame clock: a frame must arrive whole within the frame timeout of its first byte.
    private func frameDeadline() -> UInt64 {
        config.frameTimeout.map { System.nowNanos() &+ UInt64($0.nanoseconds) } ?? UInt64.max
    }

    /// The next frame's header (taken off the stream): checked, and its length within the
    /// limit for its kind.
    private func header(until: UInt64, timeout: Ending) throws -> Frame.Header {
        try fill(1, until: until, timeout: timeout)
        try fill(Frame.headerSize, until: frameDeadline(), timeout: .hangUp)
        let h: Frame.Header
        do { h = try Frame.Header(reading: stage.baseAddress! + head) } catch let e as FerryError { throw Ending.reject(e) }
        head += Frame.headerSize
        let limit = h.kind == .request ? shared.maxRequest : Frame.maxControlPayload
        guard h.length <= UInt64(limit) else {
            throw Ending.reject(FerryError(.tooLarge, "a \(h.kind) frame of \(h.length) bytes exceeds this gateway's limit of \(limit) bytes"))
        }
        return h
    }

    /// A control frame's payload.
    private func controlBody(_ h: Frame.Header) throws -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Int(h.length))
        try b.withUnsafeMutableBytes { try receive(into: $0.baseAddress, count: $0.count, until: frameDeadline()) }
        return b
    }

    // MARK: Sending

    /// Sends a frame whole (its header, then `payload`, in one gathered send); a client that
    /// does not take it within the frame timeout is hung up on.
    private func send(_ kind: Frame.Kind, id: UInt64 = 0, argument: UInt64 = 0, _ payload: UnsafeRawBufferPointer) throws {
        Frame.Header(kind: kind, id: id, length: UInt64(payload.count), argument: argument).write(to: headerOut)
        let until = config.frameTimeout.map { System.nowNanos() &+ UInt64($0.nanoseconds) } ?? UInt64.max
        guard let (_, complete) = try? System.sendAll(fd, [UnsafeRawBufferPointer(start: headerOut, count: Frame.headerSize), payload], until: until),
              complete else { throw Ending.hangUp }
    }

    private func send(_ kind: Frame.Kind, id: UInt64 = 0, argument: UInt64 = 0, _ payload: [UInt8]) throws {
        try payload.withUnsafeBytes { try send(kind, id: id, argument: argument, $0) }
    }

    /// An ERROR frame, best effort (the connection is closing).
    private func sendError(_ e: FerryError) {
        let text = Array(e.message.utf8.prefix(Frame.maxControlPayload))
        let h = Frame.Header(kind: .error, length: UInt64(text.count), argument: UInt64(e.code.rawValue)).bytes
        h.withUnsafeBytes { hb in text.withUnsafeBytes { tb in _ = try? System.sendAll(fd, [hb, tb], until: System.nowNanos() &+ 1_000_000_000) } }
    }

    // MARK: Handshake

    private func handshake() throws {
        let until = opened &+ UInt64(config.handshakeTimeout.nanoseconds)
        let late = Ending.reject(FerryError(.timedOut, "no handshake within \(config.handshakeTimeout.nanoseconds / 1_000_000) ms"))
        let h = try header(until: until, timeout: late)
        guard h.kind == .hello else { throw Ending.reject(FerryError(.protocolViolation, "expected HELLO, got \(h.kind)")) }
        let body = try controlBody(h)
        guard h.argument == Frame.version else {
            throw Ending.reject(FerryError(.version, "client speaks wire protocol \(h.argument); this gateway speaks \(Frame.version)"))
        }
        let parsed: (name: String, nonce: [UInt8])
        do { parsed = try Frame.parseHello(body) } catch let e as FerryError { throw Ending.reject(e) }
        guard parsed.name == config.name else {
            throw Ending.reject(FerryError(.noServer, "this gateway serves channel \"\(config.name)\", not \"\(parsed.name)\""))
        }
        let nonce = System.randomBytes(Frame.nonceSize)
        let welcome = Frame.Welcome(requestCapacity: UInt64(shared.maxRequest), maxRequest: UInt64(shared.maxRequest),
                                    maxInFlight: UInt32(config.maxInFlight), authRequired: config.secret != nil, nonce: nonce,
                                    model: shared.model)
        try send(.welcome, welcome.bytes)
        guard let secret = config.secret else { return }
        let a = try header(until: until, timeout: late)
        guard a.kind == .auth else { throw Ending.reject(FerryError(.permission, "this gateway requires authentication before requests")) }
        let proof = try controlBody(a)
        let transcript = Frame.authTranscript(gatewayNonce: nonce, clientNonce: parsed.nonce, name: parsed.name)
        guard Digest.isValidHMACSHA256(proof, key: secret, transcript) else {
            throw Ending.reject(FerryError(.permission, "authentication failed (wrong token)"))
        }
        // READY names the model (after AUTH: not told to whoever connects).
        try send(.ready, Array(shared.model.utf8.prefix(Frame.Welcome.maxModel)))
    }

    // MARK: Requests

    private func serve() throws {
        while true {
            if shared.closingAll.load(ordering: .relaxed) { throw Ending.reject(FerryError(.closed, "the gateway is shutting down")) }
            if awaiting.isEmpty {
                // Nothing in flight: wait for the next request (the idle timeout runs). A
                // client calling in a loop sends it within microseconds of its reply: a
                // request found spinning costs no wake-up.
                if !(try yieldSpin(requestAdvisor, somethingToRead)) {
                    let until = config.idleTimeout.map { lastRead &+ UInt64($0.nanoseconds) } ?? UInt64.max
                    try fill(1, until: until, timeout: .hangUp)
                }
            }
            // Every request already here goes out before any reply is waited for.
            while awaiting.count < config.maxInFlight, try somethingToRead() {
                try request()
            }
            if !awaiting.isEmpty { try answer() }
        }
    }

    /// With a hybrid wait (`spinNanos` > 0): `look`s for that long, yielding the CPU between
    /// looks from the first (a worker may share this CPU, and a spin that does not yield only
    /// delays it). True when a look found what it looks for. Only while `advisor` says
    /// spinning pays: after four misses in a row, one try in sixteen.
    private func yieldSpin(_ advisor: SpinAdvisor, _ look: () throws -> Bool) rethrows -> Bool {
        let spin = config.spinNanos
        guard spin > 0, advisor.shouldSpin() else { return false }
        let end = System.nowNanos() &+ spin
        while true {
            if try look() {
                advisor.record(hit: true)
                return true
            }
            if System.nowNanos() >= end {
                advisor.record(hit: false)
                return false
            }
            System.yieldCPU()
        }
    }

    /// Reads one REQUEST and publishes it (or answers it with an error at once).
    private func request() throws {
        let h = try header(until: UInt64.max, timeout: .hangUp)
        guard h.kind == .request else {
            throw Ending.reject(FerryError(.protocolViolation, "unexpected \(h.kind) frame after the handshake"))
        }
        let length = Int(h.length)
        // In flight from here until published (then until its reply is sent, see `poll`).
        shared.inFlight.wrappingIncrement(ordering: .relaxed)
        var published = false
        defer { if !published { shared.inFlight.wrappingDecrement(ordering: .relaxed) } }
        // The caller's remaining time, bounded (30 days) so a huge value is not a hang forever.
        let timeout = min(max(h.argument, 1), Endpoint.maxTimeoutMillis * 1_000_000)
        let call: PendingCall
        do {
            if shared.draining.load(ordering: .relaxed) { throw FerryError(.closed, "the gateway is shutting down") }
            call = try slot(deadline: System.nowNanos() &+ timeout)
        } catch let e as FerryError {
            try receive(into: nil, count: length, until: frameDeadline())
            try reply(id: h.id, error: e)
            return
        }
        do {
            guard call.requestBuffer.count >= length else {
                throw FerryError(.tooLarge, "a request of \(length) bytes does not fit in the channel's slots")
            }
            try receive(into: call.requestBuffer.baseAddress, count: length, until: frameDeadline())
        } catch let e as FerryError {
            call.close()
            try receive(into: nil, count: length, until: frameDeadline())
            try reply(id: h.id, error: e)
            return
        } catch {
            call.close()
            throw error
        }
        do {
            var sent = length
            let whole = UnsafeRawBufferPointer(rebasing: call.requestBuffer.prefix(length))
            if TensorCodec.isEncoded(whole) {
                // Compressed tensors never reach a worker: expanded into the slot they came in.
                let encoded = Array(whole)
                sent = try encoded.withUnsafeBytes { src in
                    try TensorCodec.expand(src, into: UnsafeMutableRawBufferPointer(rebasing: call.requestBuffer.prefix(shared.maxRequest)),
                                           limitHint: "the request expands past the gateway's slots; raise --slot-size where the gateway runs")
                }
            }
            try call.send(forwardingInPlace: sent)
            awaiting.append((h.id, call, System.nowNanos()))
            published = true
        } catch {
            call.close()
            try reply(id: h.id, error: error)
        }
    }

    /// A free slot for a request due by `deadline`. Our own replies are sent first when no
    /// slot is free (they may hold the slots); else slots freed by other connections are
    /// looked for every 200 µs until the deadline.
    private func slot(deadline: UInt64) throws -> PendingCall {
        while true {
            let now = System.nowNanos()
            let left = deadline > now ? deadline - now : 1
            if let call = try shared.client.tryBegin(timeout: .nanoseconds(Int64(clamping: left))) { return call }
            if !awaiting.isEmpty {
                try answer(oldestWhole: true)
                continue
            }
            if now >= deadline {
                throw FerryError(.busy, "every slot of the gateway's channel stayed busy until the deadline; raise --slots where the gateway runs, or the timeout")
            }
            if shared.closingAll.load(ordering: .relaxed) { throw FerryError(.closed, "the gateway is shutting down") }
            usleepNanos(200_000)
        }
    }

    /// Waits for the oldest call's reply (a slice at most, or until it came with
    /// `oldestWhole`), then sends every reply that is there.
    private func answer(oldestWhole: Bool = false) throws {
        if !(try yieldSpin(replyAdvisor, { try poll(0, for: 0) })) {
            while true {
                let waited = System.nowNanos() &- awaiting[0].since
                var slice = DirectConnection.replySliceNanos
                if awaiting.count == 1 || oldestWhole { slice = max(slice, min(waited / 8, DirectConnection.longestSliceNanos)) }
                if try poll(0, for: slice) || !oldestWhole { break }
                if shared.closingAll.load(ordering: .relaxed) { throw Ending.reject(FerryError(.closed, "the gateway is shutting down")) }
                // Waited a while: the client may have left meanwhile.
                if !(try stillThere()) { throw Ending.hangUp }
            }
        }
        var i = 0
        while i < awaiting.count {
            if try !poll(i, for: 0) { i += 1 }
        }
    }

    /// True when the peer has not closed (looks without consuming what it sent).
    private func stillThere() throws -> Bool {
        if head == tail { head = 0; tail = 0 }
        // The stage is full of requests not read yet: nothing to look with (and the peer
        // was there to send them).
        if tail == stage.count { return true }
        let n: Int
        do { n = try System.receive(fd, into: stage.baseAddress! + tail, count: stage.count - tail) } catch { return false }
        tail += n
        return true
    }

    /// Looks (up to `interval` ns) for the reply of `awaiting[i]`; sends it and drops the call
    /// when it is there. True when it was.
    private func poll(_ i: Int, for interval: UInt64) throws -> Bool {
        let (id, call, _) = awaiting[i]
        do {
            guard let bytes = try call.pollReplyBytes(for: .nanoseconds(Int64(interval))) else { return false }
            awaiting.remove(at: i)
            shared.inFlight.wrappingDecrement(ordering: .relaxed)
            defer { call.close() }
            // Straight from the slot.
            try send(.reply, id: id, bytes)
        } catch let e as FerryError {
            awaiting.remove(at: i)
            shared.inFlight.wrappingDecrement(ordering: .relaxed)
            call.close()
            try reply(id: id, error: e)
        }
        return true
    }

    /// Answers request `id` with `error` (a REPLY whose status says why).
    private func reply(id: UInt64, error: Error) throws {
        let e = error as? FerryError ?? FerryError(.system, "\(error)")
        var m = Message(metadata: ["error": e.message], status: e.code.rawValue)
        if let t = e.remoteType { m.metadata["error_type"] = t }
        if let d = e.detail { m.metadata["error_detail"] = d }
        try send(.reply, id: id, (try? m.encoded()) ?? [])
    }
}
