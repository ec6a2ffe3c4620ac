import FerryCore
import FerryWire
import Atomics
import Synchronization

/// The `tcp://HOST:PORT/NAME` client transport: one connection per client to a
/// `ferry serve --listen` gateway, shared by every thread of the client, with many requests
/// in flight (request ids; replies may come back in any order).
///
/// There is no reader thread: a thread waiting for its reply takes the reader role if
/// nobody holds it, reads frames and hands each reply to its caller (leader/followers), so
/// a single-threaded caller reads its own reply with no thread switch. A lost connection
/// fails every call in flight on it with `.disconnected`; the next call reconnects.
final class TCPClientTransport: ClientTransport, @unchecked Sendable {
    let endpoint: Endpoint
    let secret: [UInt8]?
    private let current = Locked<TCPConnection?>(nil)
    let buffers = BufferPool()

    init(_ endpoint: Endpoint) throws {
        self.endpoint = endpoint
        secret = try endpoint.tokenFile.map { try System.readSecret($0) }
        // A quick first connect: a refused port or a failed handshake is an error here, at
        // once; a gateway that accepts but does not answer (stopped, a partition) is left to
        // the first call, which connects within its own deadline instead of this one's.
        do {
            _ = try connection(deadline: deadline(after: min(endpoint.connectTimeoutNanos, 250_000_000)))
        } catch let e as FerryError where e.code == .timedOut {}
    }

    /// The live connection, or a new one (one connect at a time).
    func connection(deadline d: UInt64) throws -> TCPConnection {
        try current.withLock { c in
            if let live = c, live.usable { return live }
            if let old = c { old.abandon() }
            c = nil
            let fresh = try TCPConnection(transport: self, until: min(d, deadline(after: endpoint.connectTimeoutNanos)))
            c = fresh
            return fresh
        }
    }

    var requestCapacity: Int { Int(current.withLock { $0?.welcome.requestCapacity } ?? 0) }

    func serverInfo(deadline d: UInt64) throws -> [String: String] {
        ["model": try connection(deadline: d).model]
    }

    func loan(deadline d: UInt64) throws -> any CallLoan {
        let c = try connection(deadline: d)
        return TCPLoan(connection: c, capacity: Int(c.welcome.requestCapacity))
    }

    func census(recover: Bool) throws -> [SlotState: Int] {
        throw FerryError(.invalidArgument, "slot census is not available over tcp://; run `ferry stats \(endpoint.name)` on the gateway's host")
    }

    func stats() throws -> ChannelStats {
        throw FerryError(.invalidArgument, "channel stats are not available over tcp://; run `ferry stats \(endpoint.name)` on the gateway's host")
    }

    func close() {
        current.withLock { c in
            c?.fail(FerryError(.closed, "the client was closed"))
            c = nil
        }
    }

    deinit { current.withLock { $0?.fail(FerryError(.closed, "the client was closed")) } }
}

/// A heap buffer handed between threads under a lock.
package struct RawBuffer: @unchecked Sendable {
    package let base: UnsafeMutableRawPointer
    package let capacity: Int
}

/// Reusable aligned buffers (request and reply bodies), so a stream of large messages does
/// not fault in fresh pages for every call.
package final class BufferPool: @unchecked Sendable {
    private let free = Locked<[RawBuffer]>([])
    private static let keep = 8
    private static let keepBytes = 1 << 30

    package init() {}

    /// A buffer of at least `count` bytes, 64-byte aligned.
    package func take(_ count: Int) -> RawBuffer {
        // The smallest kept buffer that is large enough (a loop: no array built per call).
        let found: RawBuffer? = free.withLock { list in
            var best = -1
            for i in list.indices where list[i].capacity >= count && (best < 0 || list[i].capacity < list[best].capacity) { best = i }
            return best < 0 ? nil : list.remove(at: best)
        }
        if let found { return found }
        let size = max(count, 4096)
        return RawBuffer(base: UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64), capacity: size)
    }

    /// Gives a buffer back (freed when the pool is full).
    package func give(_ b: RawBuffer) {
        let kept = free.withLock { list -> Bool in
            let total = list.reduce(0) { $0 + $1.capacity }
            guard list.count < BufferPool.keep, total + b.capacity <= BufferPool.keepBytes else { return false }
            list.append(b)
            return true
        }
        if !kept { b.base.deallocate() }
    }

    deinit { free.withLock { for b in $0 { b.base.deallocate() } } }
}

/// One connection to a gateway and the calls in flight on it.
final class TCPConnection: @unchecked Sendable {
    package let fd: Int32
    let stream: SocketStream
    let endpoint: Endpoint
    let buffers: BufferPool
    let welcome: Frame.Welcome
    /// The identity of the model the channel serves, as the gateway told it.
    var model = ""
    let forkGeneration = cferryForkGeneration()
    /// Largest reply body accepted (a reply fits in the slot after the request).
    let maxReply: Int

    struct Shared {
        var pending: [UInt64: TCPLoan] = [:]
        var reading = false
        var failure: FerryError?
        var nextID: UInt64 = 1
    }
    let shared = Locked(Shared())
    private let sending = Locked<Bool>(false)

    // The reader's state: touched only by the thread holding `shared.reading`.
    private let stage = UnsafeMutableRawPointer.allocate(byteCount: TCPConnection.stageSize, alignment: 64)
    private static let stageSize = 1 << 16
    private var stageStart = 0, stageEnd = 0
    private var partial: (header: Frame.Header, buffer: RawBuffer, got: Int)?
    /// The loan the reader is reading for (its reply needs no futex wake: its waiter is the
    /// reader itself).
    private var pumpingFor: TCPLoan?

    /// Connects and completes the handshake (HELLO, WELCOME, and AUTH when asked) by `until`.
    init(transport: TCPClientTransport, until: UInt64) throws {
        endpoint = transport.endpoint
        buffers = transport.buffers
        let e = endpoint
        fd = try System.tcpConnect(host: e.host, port: e.port, timeoutNanos: until > System.nowNanos() ? until - System.nowNanos() : 1)
        do {
            stream = try SocketStream(fd: fd, tls: e.tls, host: e.host, until: until)
        } catch {
            System.close(fd)
            stage.deallocate()
            throw error
        }
        do {
            let clientNonce = System.randomBytes(Frame.nonceSize)
            try TCPConnection.sendControl(stream, .hello, Frame.hello(name: e.name, nonce: clientNonce), argument: Frame.version, until: until)
            let (h, body) = try TCPConnection.readControl(stream, until: until)
            guard h.kind == .welcome else { throw FerryError(.protocolViolation, "expected WELCOME from the gateway, got \(h.kind)") }
            welcome = try Frame.Welcome(parsing: body)
            if welcome.authRequired {
                guard let secret = transport.secret else {
                    throw FerryError(.permission, "the gateway at \(e.host):\(e.port) requires authentication; add token_file=PATH (the gateway's --auth-token-file secret) to the URL")
                }
                let transcript = Frame.authTranscript(gatewayNonce: welcome.nonce, clientNonce: clientNonce, name: e.name)
                let mac = Digest.hmacSHA256(key: secret, Array(transcript))
                try TCPConnection.sendControl(stream, .auth, mac, until: until)
                let (r, ready) = try TCPConnection.readControl(stream, until: until)
                guard r.kind == .ready else { throw FerryError(.protocolViolation, "expected READY from the gateway, got \(r.kind)") }
                guard ready.count <= Frame.Welcome.maxModel else { throw FerryError(.protocolViolation, "READY of \(ready.count) bytes") }
                model = String(decoding: ready, as: UTF8.self)
            } else {
                model = welcome.model
            }
            maxReply = Int(min(welcome.requestCapacity, UInt64(Int.max / 2))) + 2 * 4096
        } catch let error as FerryError where e.tls == nil && (error.code == .disconnected || error.code == .protocolViolation) {
            System.close(fd)
            stage.deallocate()
            // A TLS gateway answers a plain HELLO with a TLS alert, or hangs up.
            throw FerryError(error.code, "\(error.message) — if the gateway serves TLS (ferry serve … --tls-cert), add tls=1 to the URL")
        } catch {
            System.close(fd)
            stage.deallocate()
            throw error
        }
    }

    deinit {
        System.close(fd)
        stage.deallocate()
        if let p = partial { buffers.give(p.buffer) }
    }

    /// Fit for new calls: not failed, and owned by this process (a fork()ed child must not
    /// write into its parent's stream; it connects anew).
    var usable: Bool { shared.withLock { $0.failure == nil } && forkGeneration == cferryForkGeneration() }

    /// Replaced after a fork: the parent still uses the socket, so only this copy is closed
    /// (at deinit), never shut down.
    func abandon() {
        if forkGeneration == cferryForkGeneration() { fail(FerryError(.disconnected, "the connection was replaced")) }
    }

    /// Fails the connection: every call in flight on it gets `error`.
    func fail(_ error: FerryError) {
        let waiting: [TCPLoan] = shared.withLock { s in
            if s.failure == nil { s.failure = error }
            return Array(s.pending.values)
        }
        if forkGeneration == cferryForkGeneration() { System.shutdownSocket(fd) }
        for l in waiting { l.signal() }
    }

    static func sendControl(_ stream: SocketStream, _ kind: Frame.Kind, _ body: [UInt8], argument: UInt64 = 0, until: UInt64) throws {
        let bytes = Frame.Header(kind: kind, length: UInt64(body.count), argument: argument).bytes + body
        let (_, complete) = try bytes.withUnsafeBytes { try stream.sendAll($0, until: until) }
        guard complete else { throw FerryError(.timedOut, "the gateway did not take the handshake in time") }
    }

    static func readControl(_ stream: SocketStream, until: UInt64) throws -> (Frame.Header, [UInt8]) {
        var hb = [UInt8](repeating: 0, count: Frame.headerSize)
        try hb.withUnsafeMutableBytes { try stream.receiveExactly(into: $0.baseAddress!, count: Frame.headerSize, until: until) }
        // 0x15/0x16 0x03: a TLS alert or handshake record where a frame should be.
        if (hb[0] == 0x15 || hb[0] == 0x16) && hb[1] == 0x03 {
            throw FerryError(.protocolViolation, "the gateway speaks TLS and this client does not")
        }
        let h = try hb.withUnsafeBytes { try Frame.Header(reading: $0.baseAddress!) }
        guard h.length <= UInt64(Frame.maxControlPayload) else { throw FerryError(.protocolViolation, "handshake frame of \(h.length) bytes is too long") }
        var body = [UInt8](repeating: 0, count: Int(h.length))
        if !body.isEmpty {
            try body.withUnsafeMutableBytes { try stream.receiveExactly(into: $0.baseAddress!, count: $0.count, until: until) }
        }
        if h.kind == .error { throw TCPConnection.remoteError(h, body) }
        return (h, body)
    }

    /// The error an ERROR frame carries (its argument is a status code).
    static func remoteError(_ h: Frame.Header, _ body: [UInt8]) -> FerryError {
        let code = Int32(exactly: h.argument).flatMap(FerryError.Code.init(rawValue:)) ?? .protocolViolation
        return FerryError(code, "the gateway closed the connection: " + String(decoding: body, as: UTF8.self))
    }

    // MARK: calls

    /// Sends a request frame: header and message are contiguous in `frame`, but for the
    /// holes of `references`, whose bytes are sent from where they are (one gathered write).
    func send(_ loan: TCPLoan, frame: UnsafeMutableRawBufferPointer, messageLength: Int,
              references: [MessageWriter.Reference] = [], deadline: UInt64) throws {
        let id: UInt64 = try shared.withLock { s in
            if let f = s.failure { throw f }
            let id = s.nextID
            s.nextID &+= 1
            s.pending[id] = loan
            return id
        }
        loan.id = id
        let now = System.nowNanos()
        Frame.Header(kind: .request, id: id, length: UInt64(messageLength), argument: deadline > now ? deadline - now : 1)
            .write(to: frame.baseAddress!)
        // The pieces in order: the buffer up to each hole, the hole's bytes, ..., the rest.
        var pieces: [UnsafeRawBufferPointer] = []
        pieces.reserveCapacity(2 * references.count + 1)
        var at = 0  // in `frame`
        for r in references {
            let hole = Frame.headerSize + r.offset
            if hole > at { pieces.append(UnsafeRawBufferPointer(start: frame.baseAddress! + at, count: hole - at)) }
            pieces.append(UnsafeRawBufferPointer(start: r.source, count: r.length))
            at = hole + r.length
        }
        let end = Frame.headerSize + messageLength
        if end > at { pieces.append(UnsafeRawBufferPointer(start: frame.baseAddress! + at, count: end - at)) }
        do {
            let (sent, complete) = try sending.withLock { _ in
                pieces.count == 1 ? try stream.sendAll(pieces[0], until: deadline) : try stream.sendAll(pieces, until: deadline)
            }
            if !complete {
                if sent == 0 { forget(id); throw FerryError(.timedOut, "the request could not be sent before the deadline (the gateway is not reading)") }
                // Half a frame is on the wire: the stream cannot be resynchronised.
                let e = FerryError(.timedOut, "the deadline passed while the request was being sent; the connection was reset")
                fail(FerryError(.disconnected, "a request was cut off mid-frame at its deadline"))
                throw e
            }
        } catch let e as FerryError where e.code == .disconnected {
            fail(e)
            throw e
        }
    }

    /// Drops a call from the pending table (gave up); its late reply will be discarded.
    func forget(_ id: UInt64) { _ = shared.withLock { $0.pending.removeValue(forKey: id) } }

    /// Waits for `loan`'s reply until `until` (see the type's comment for the roles).
    func awaitReply(_ loan: TCPLoan, until: UInt64, spinNanos: UInt64) throws -> Bool {
        while true {
            var lead = false
            let seen = loan.event.load(ordering: .acquiring)
            let state: Bool? = try shared.withLock { s in
                if loan.reply != nil { return true }
                if let f = s.failure {
                    s.pending.removeValue(forKey: loan.id)
                    throw f.code == .closed ? f : FerryError(.disconnected, "\(f.message); the call's outcome is unknown (it may have run)")
                }
                if !s.reading { s.reading = true; lead = true }
                return nil
            }
            if state == true { return true }
            if lead {
                // At least one look at the socket, even when `until` has passed (a poll).
                do { try pump(for: loan, until: until, spinNanos: spinNanos) } catch let e as FerryError { fail(e) }
                releaseReader()
                if System.nowNanos() >= until { return shared.withLock { _ in loan.reply != nil } }
                continue
            }
            let now = System.nowNanos()
            if now >= until { return false }
            System.futexWait(loan.eventWord, expected: seen, timeoutNanos: Int64(min(until - now, 5_000_000)))
        }
    }

    /// Gives up the reader role and wakes the other waiters (one of them takes it).
    private func releaseReader() {
        let waiting: [TCPLoan] = shared.withLock { s in
            s.reading = false
            return Array(s.pending.values)
        }
        for l in waiting { l.signal() }
    }

    /// Reads frames and hands out replies until `loan` has its own or `until` passes.
    private func pump(for loan: TCPLoan, until: UInt64, spinNanos: UInt64) throws {
        pumpingFor = loan
        defer { pumpingFor = nil }
        // A plain socket with nothing staged right after the request went: the reply cannot be
        // there yet, so the first look is the poll that waits for it (one system call less).
        // Over TLS a record may be buffered in BoringSSL where poll does not see it.
        var waitFirst = spinNanos == 0 && endpoint.tls == nil && stageStart == stageEnd && partial == nil
        while true {
            try drainStage()
            if shared.withLock({ _ in loan.reply != nil }) { return }
            if waitFirst {
                waitFirst = false
                if System.nowNanos() < until {
                    guard try System.waitReady(fd, write: false, until: until) else { return }
                }
            }
            // Read: straight into a large body being received, else into the staging buffer.
            var n: Int
            if let p = partial, Int(p.header.length) - p.got >= TCPConnection.stageSize {
                n = try stream.receive(into: p.buffer.base + p.got, count: Int(p.header.length) - p.got)
                if n > 0 { partial!.got += n; try finishPartialIfComplete(); continue }
            } else {
                if stageStart == stageEnd { stageStart = 0; stageEnd = 0 }
                if stageEnd == TCPConnection.stageSize {
                    (stage).copyMemory(from: stage + stageStart, byteCount: stageEnd - stageStart)
                    stageEnd -= stageStart
                    stageStart = 0
                }
                n = try stream.receive(into: stage + stageEnd, count: TCPConnection.stageSize - stageEnd)
                if n > 0 { stageEnd += n; continue }
            }
            // Nothing there yet: spin if asked, then sleep in poll.
            if spinNanos > 0 {
                let spinEnd = min(until, System.nowNanos() &+ spinNanos)
                while System.nowNanos() < spinEnd, !System.readable(fd) { System.relax() }
            }
            guard try System.waitReady(fd, write: false, until: until) else { return }
        }
    }

    /// Parses the staged bytes into frames and delivers the complete ones.
    private func drainStage() throws {
        while stageStart < stageEnd {
            if let p = partial {
                let need = Int(p.header.length) - p.got
                let n = min(need, stageEnd - stageStart)
                (p.buffer.base + p.got).copyMemory(from: stage + stageStart, byteCount: n)
                stageStart += n
                partial!.got += n
                try finishPartialIfComplete()
                continue
            }
            guard stageEnd - stageStart >= Frame.headerSize else { return }
            let h = try Frame.Header(reading: stage + stageStart)
            stageStart += Frame.headerSize
            switch h.kind {
            case .reply:
                guard h.length <= UInt64(maxReply) else {
                    throw FerryError(.protocolViolation, "the gateway sent a reply of \(h.length) bytes, more than the \(maxReply) a slot can hold")
                }
            case .error:
                guard h.length <= UInt64(Frame.maxControlPayload) else { throw FerryError(.protocolViolation, "ERROR frame of \(h.length) bytes is too long") }
            default:
                throw FerryError(.protocolViolation, "unexpected \(h.kind) frame from the gateway")
            }
            partial = (h, buffers.take(Int(h.length)), 0)
            try finishPartialIfComplete()
        }
    }

    private func finishPartialIfComplete() throws {
        guard let p = partial, p.got == Int(p.header.length) else { return }
        partial = nil
        if p.header.kind == .error {
            let text = Array(UnsafeRawBufferPointer(start: p.buffer.base, count: p.got))
            buffers.give(p.buffer)
            throw TCPConnection.remoteError(p.header, text)
        }
        let target: TCPLoan? = shared.withLock { s in
            guard let l = s.pending.removeValue(forKey: p.header.id) else { return nil }
            l.reply = (p.buffer, p.got)
            return l
        }
        if let target {
            if target === pumpingFor { target.event.wrappingIncrement(ordering: .releasing) } else { target.signal() }
        } else {
            buffers.give(p.buffer)  // a call that gave up
        }
    }
}

@inline(__always) func cferryForkGeneration() -> UInt64 { System.forkGeneration }

/// A private request buffer (frame header, then the message) and, later, the reply's body.
final class TCPLoan: CallLoan, @unchecked Sendable {  // shared state is under the connection's lock
    let connection: TCPConnection
    let frame: RawBuffer
    var id: UInt64 = 0
    var sent = false
    var open = true
    /// Set by whichever thread read the reply (under the connection's lock).
    var reply: (buffer: RawBuffer, length: Int)?
    /// Bumped and woken when a reply or a failure arrives, or the reader role is free.
    let eventWord = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    var event: UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: UnsafeMutableRawPointer(eventWord).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
    }
    /// Room before the message: the frame header sits right before it, and the message
    /// itself starts 64-byte aligned.
    static let front = 64

    init(connection: TCPConnection, capacity: Int) {
        self.connection = connection
        frame = connection.buffers.take(TCPLoan.front + capacity)
        eventWord.initialize(to: 0)
    }

    var request: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: frame.base + TCPLoan.front, count: frame.capacity - TCPLoan.front)
    }

    var limitHint: String {
        "the gateway's channel takes requests up to its slot size less one page; raise it where the gateway runs (ferry serve --slot-size 64M)"
    }

    func signal() {
        event.wrappingIncrement(ordering: .releasing)
        System.futexWake(eventWord, count: 1)
    }

    func send(length: Int, deadline: UInt64) throws {
        sent = true
        if let options = connection.endpoint.compression {
            // Compressed into a second buffer, sent from there, given back at once.
            let plain = UnsafeRawBufferPointer(start: frame.base + TCPLoan.front, count: length)
            let packed = connection.buffers.take(TCPLoan.front + (try TensorCodec.bound(plain)))
            defer { connection.buffers.give(packed) }
            let n = try TensorCodec.compress(plain, into: UnsafeMutableRawBufferPointer(start: packed.base + TCPLoan.front, count: packed.capacity - TCPLoan.front),
                                             options: options)
            let f = UnsafeMutableRawBufferPointer(start: packed.base + TCPLoan.front - Frame.headerSize, count: Frame.headerSize + n)
            try connection.send(self, frame: f, messageLength: n, deadline: deadline)
            return
        }
        let f = UnsafeMutableRawBufferPointer(start: frame.base + TCPLoan.front - Frame.headerSize, count: Frame.headerSize + length)
        try connection.send(self, frame: f, messageLength: length, deadline: deadline)
    }

    /// Large tensors go from the caller's memory, not copied here first (compressed
    /// requests are compressed from one piece, so they are copied in as before).
    var sendsReferences: Bool { connection.endpoint.compression == nil }

    func send(length: Int, references: [MessageWriter.Reference], deadline: UInt64) throws {
        guard sendsReferences else {
            for r in references { (frame.base + TCPLoan.front + r.offset).copyMemory(from: r.source, byteCount: r.length) }
            try send(length: length, deadline: deadline)
            return
        }
        sent = true
        let f = UnsafeMutableRawBufferPointer(start: frame.base + TCPLoan.front - Frame.headerSize, count: Frame.headerSize + length)
        try connection.send(self, frame: f, messageLength: length, references: references, deadline: deadline)
    }

    func awaitReply(until: UInt64, deadline: UInt64) throws -> UnsafeRawBufferPointer? {
        if connection.shared.withLock({ _ in reply == nil }) {
            guard try connection.awaitReply(self, until: min(until, deadline), spinNanos: connection.endpoint.wait.spinNanos == .max ? 1_000_000 : connection.endpoint.wait.spinNanos) else {
                guard until < deadline else {
                    connection.forget(id)
                    // A reply may have landed between the last look and forgetting it.
                    if connection.shared.withLock({ _ in reply == nil }) {
                        throw FerryError(.timedOut, "no reply within the deadline from \(connection.endpoint.host):\(connection.endpoint.port)/\(connection.endpoint.name) (the call may still run on the gateway; its late reply is dropped)")
                    }
                    return UnsafeRawBufferPointer(start: reply!.buffer.base, count: reply!.length)
                }
                return nil
            }
        }
        return UnsafeRawBufferPointer(start: reply!.buffer.base, count: reply!.length)
    }

    func close() {
        guard open else { return }
        open = false
        // Under the connection's lock: a reader may be handing this loan its reply right now.
        let r: RawBuffer? = connection.shared.withLock { s in
            if sent && reply == nil { s.pending.removeValue(forKey: id) }
            return reply?.buffer
        }
        if let r { connection.buffers.give(r) }
        connection.buffers.give(frame)
    }

    deinit {
        close()
        eventWord.deallocate()
    }
}

/// Registers the `tcp://` client transport with the core's URL-scheme registry.
public enum TCPTransport {
    /// Makes `Client("tcp://HOST:PORT/NAME")` work in this process (idempotent).
    public static func register() {
        Transports.register("tcp") { try TCPClientTransport($0) }
    }
}
