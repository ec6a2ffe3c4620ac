import Atomics
import FerryCore
import FerryTCP
import FerryWire
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// How a gateway listens and what it allows.
public struct GatewayConfiguration: Sendable {
    /// Address to bind: loopback unless told otherwise.
    public var host = "127.0.0.1"
    /// Port to bind (0: any free port; see `Gateway.port`).
    public var port = 0
    /// The local channel's name (remote clients use tcp://HOST:PORT/NAME).
    public var name: String
    /// The local channel's URL, with this process's wait strategy (shm://NAME?wait=…).
    public var channelURL: String
    /// Most connections at once; more are refused with an error frame.
    public var maxConnections = 256
    /// Most requests in flight per connection; past it the gateway stops reading that
    /// connection until replies go out (backpressure).
    public var maxInFlight = 64
    /// Largest request body in bytes (nil: what the channel's slots take).
    public var maxRequest: Int?
    /// Shared secret for the HMAC challenge (nil: no authentication).
    public var secret: [UInt8]?
    /// TLS: PEM files of the certificate chain and its private key (nil: plain TCP).
    public var tlsCertificateFile: String?, tlsKeyFile: String?
    /// Time a new connection has to complete its handshake.
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// Time a frame may take to arrive whole once its first byte came (nil: no limit).
    public var frameTimeout: TimeAmount? = .seconds(30)
    /// A connection with nothing in flight that sends nothing for this long is closed (nil:
    /// never; clients reconnect on their next call).
    public var idleTimeout: TimeAmount? = nil
    /// Threads that carry requests into the channel when no slot is free at once, and wait
    /// for replies that take longer than `spinNanos` (each waits for one reply at a time).
    public var forwarders = 8
    /// How long the event loop itself waits (spinning) for the replies of the requests it just
    /// published, before handing them to forwarder threads. A reply that comes within it costs
    /// no thread switch; 0 hands every reply off at once.
    public var spinNanos: UInt64 = 50_000
    /// Plain-TCP connections each on a thread of their own that receives a request straight
    /// into its slot and waits for the reply itself (Gateway+Direct.swift): the shortest
    /// round trip. False: every connection on one SwiftNIO event loop with forwarder threads,
    /// for many thousands of connections. TLS connections always use the event loop.
    public var threadPerConnection = true

    /// A configuration for the channel `name` reached through `channelURL`.
    public init(name: String, channelURL: String) {
        self.name = name
        self.channelURL = channelURL
    }
}

/// Live numbers of a gateway (for logs and tests).
public struct GatewayCounters: Sendable {
    /// Connections open now.
    public var connections: Int
    /// Requests taken and not yet answered.
    public var inFlight: Int
    /// Connections refused or closed for a protocol, authentication or limit error.
    public var rejected: Int
}

/// `ferry serve --listen tcp://HOST:PORT`: accepts remote clients (SwiftNIO) and forwards each
/// request to the local workers over shared memory; replies go back on the same connection,
/// in whatever order they complete, matched by request id.
public final class Gateway: Sendable {
    let config: GatewayConfiguration
    let client: Client
    /// The event loop and its forwarder threads (nil with thread-per-connection I/O).
    let group: MultiThreadedEventLoopGroup?
    let pool: NIOThreadPool?
    /// The event loop's listening channel, or the acceptor of thread-per-connection I/O.
    let serverChannel: Channel?
    let acceptor: DirectAcceptor?
    let shared: GatewayShared
    /// The bound port.
    public let port: Int

    /// Binds and starts accepting. Throws when the channel is not served or the address is taken.
    public init(_ config: GatewayConfiguration) throws {
        self.config = config
        client = try Client(config.channelURL)
        let capacity = client.requestCapacity
        let maxRequest = min(config.maxRequest ?? capacity, capacity)
        var tls: NIOSSLContext? = nil
        if let cert = config.tlsCertificateFile, let key = config.tlsKeyFile {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
                let conf = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
                tls = try NIOSSLContext(configuration: conf)
            } catch {
                client.close()
                throw FerryError(.invalidArgument, "cannot use the TLS certificate \(cert) and key \(key): \(error)")
            }
        } else if config.tlsCertificateFile != nil || config.tlsKeyFile != nil {
            client.close()
            throw FerryError(.invalidArgument, "TLS needs both a certificate and a key file")
        }
        let tlsContext = tls
        if tlsContext == nil && config.threadPerConnection {
            // No event loop, no forwarder threads.
            let shared = GatewayShared(config: config, client: client, pool: nil, maxRequest: maxRequest)
            self.shared = shared
            group = nil
            pool = nil
            serverChannel = nil
            do {
                acceptor = try DirectAcceptor(shared: shared, host: config.host, port: config.port)
            } catch {
                client.close()
                throw error
            }
            port = acceptor!.port
            return
        }
        acceptor = nil
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: max(1, config.forwarders))
        pool.start()
        self.group = group
        self.pool = pool
        let shared = GatewayShared(config: config, client: client, pool: pool, maxRequest: maxRequest)
        self.shared = shared
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // Reads of up to 1 MiB: a large request comes in a few parts, each copied once.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 1 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tlsContext { try sync.addHandler(NIOSSLServerHandler(context: tlsContext)) }
                    guard shared.admit(channel) else {
                        try sync.addHandler(Refuser(shared: shared))
                        return
                    }
                    if let idle = config.idleTimeout { try sync.addHandler(IdleStateHandler(readTimeout: idle)) }
                    try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxRequest: maxRequest, frameTimeout: config.frameTimeout)))
                    try sync.addHandler(GatewayHandler(shared: shared))
                }
            }
        do {
            serverChannel = try bootstrap.bind(host: config.host, port: config.port).wait() as Channel
        } catch {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            client.close()
            throw FerryError(.system, "cannot listen on \(config.host):\(config.port): \(error)")
        }
        port = serverChannel?.localAddress?.port ?? config.port
    }

    /// Connections, requests in flight, rejections.
    public var counters: GatewayCounters { shared.counters }

    /// Stops: no new connections; requests in flight are answered (or fail at their deadline)
    /// for up to `grace`; then every connection gets an error frame saying the gateway is
    /// shutting down and is closed.
    public func shutdown(grace: Duration = .seconds(10)) {
        try? serverChannel?.close().wait()
        acceptor?.stop()
        shared.draining.store(true, ordering: .relaxed)
        let end = System.nowNanos() &+ grace.clampedNanoseconds
        while shared.inFlight.load(ordering: .relaxed) > 0 && System.nowNanos() < end {
            usleepNanos(5_000_000)
        }
        // Thread-per-connection ones see this within a tick and do the same themselves.
        shared.closingAll.store(true, ordering: .relaxed)
        let open = shared.channels.withLock { Array($0.values) }
        for ch in open {
            ch.eventLoop.execute {
                var b = ch.allocator.buffer(capacity: 128)
                GatewayShared.errorFrame(&b, FerryError(.closed, "the gateway is shutting down"))
                ch.writeAndFlush(b).whenComplete { _ in ch.close(promise: nil) }
            }
        }
        let closeBy = System.nowNanos() &+ 1_000_000_000
        while shared.connections.load(ordering: .relaxed) > 0 && System.nowNanos() < closeBy { usleepNanos(5_000_000) }
        try? pool?.syncShutdownGracefully()
        try? group?.syncShutdownGracefully()
        client.close()
    }
}

func usleepNanos(_ ns: UInt64) {
    var ts = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
    nanosleep(&ts, nil)
}

/// What every connection of a gateway shares.
final class GatewayShared: Sendable {
    let config: GatewayConfiguration
    let client: Client
    /// The identity of the model the channel serves, told to clients (WELCOME, or READY after
    /// AUTH) so that `server_info` works over tcp:// too.
    var model: String { (try? client.serverInfo(timeout: .milliseconds(100)))?["model"] ?? "" }
    /// The event loop's forwarder threads (nil with thread-per-connection I/O, which has none).
    let pool: NIOThreadPool?
    let maxRequest: Int
    let connections = ManagedAtomic<Int>(0)
    let inFlight = ManagedAtomic<Int>(0)
    let rejected = ManagedAtomic<Int>(0)
    let draining = ManagedAtomic<Bool>(false)
    /// Past the shutdown's grace: every connection is told and closed.
    let closingAll = ManagedAtomic<Bool>(false)
    let channels = Locked<[ObjectIdentifier: Channel]>([:])
    /// Connections waiting for a slot (event-loop only).
    let waiters = Waiters()

    init(config: GatewayConfiguration, client: Client, pool: NIOThreadPool?, maxRequest: Int) {
        self.config = config
        self.client = client
        self.pool = pool
        self.maxRequest = maxRequest
    }

    var counters: GatewayCounters {
        GatewayCounters(connections: connections.load(ordering: .relaxed), inFlight: inFlight.load(ordering: .relaxed),
                        rejected: rejected.load(ordering: .relaxed))
    }

    /// Counts a new connection in, or says it is one too many.
    func admit(_ channel: Channel) -> Bool {
        let n = connections.wrappingIncrementThenLoad(ordering: .relaxed)
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in
            connections.wrappingDecrement(ordering: .relaxed)
            channels.withLock { _ = $0.removeValue(forKey: id) }
        }
        return n <= config.maxConnections && !draining.load(ordering: .relaxed)
    }

    /// Counts a thread-per-connection connection in (true), or says it is one too many.
    func admitDirect() -> Bool {
        let n = connections.wrappingIncrementThenLoad(ordering: .relaxed)
        guard n <= config.maxConnections && !draining.load(ordering: .relaxed) else {
            connections.wrappingDecrement(ordering: .relaxed)
            return false
        }
        return true
    }

    /// A thread-per-connection connection closed.
    func leaveDirect() { connections.wrappingDecrement(ordering: .relaxed) }

    /// Appends an ERROR frame carrying `e`'s code and message.
    static func errorFrame(_ b: inout ByteBuffer, _ e: FerryError) {
        let text = Array(e.message.utf8.prefix(Frame.maxControlPayload))
        b.writeFrameHeader(Frame.Header(kind: .error, length: UInt64(text.count), argument: UInt64(e.code.rawValue)))
        b.writeBytes(text)
    }

    /// Waits for a published call's reply and returns its REPLY frame; closes the call.
    func finish(id: UInt64, call: PendingCall, allocator: ByteBufferAllocator) -> ByteBuffer {
        defer { call.close() }
        // Waits up to the call's own deadline; the client validates the reply, so only its length is read here.
        do {
            guard let bytes = try call.pollReplyBytes(for: .seconds(Endpoint.maxTimeoutMillis / 1000)) else {
                throw FerryError(.timedOut, "no reply within the deadline")
            }
            return replyFrame(id: id, bytes, allocator)
        } catch {
            return errorReply(id: id, error, allocator)
        }
    }

    /// A REPLY frame carrying the reply's bytes unchanged.
    func replyFrame(id: UInt64, _ bytes: UnsafeRawBufferPointer, _ allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: Frame.headerSize + bytes.count)
        out.writeFrameHeader(Frame.Header(kind: .reply, id: id, length: UInt64(bytes.count)))
        out.writeBytes(bytes)
        return out
    }

    /// A REPLY frame failing request `id` with `error` (its code, message, type and detail).
    func errorReply(id: UInt64, _ error: Error, _ allocator: ByteBufferAllocator) -> ByteBuffer {
        let e = error as? FerryError ?? FerryError(.system, "\(error)")
        var m = Message(metadata: ["error": e.message], status: e.code.rawValue)
        if let t = e.remoteType { m.metadata["error_type"] = t }
        if let d = e.detail { m.metadata["error_detail"] = d }
        let bytes = (try? m.encoded()) ?? []
        var out = allocator.buffer(capacity: Frame.headerSize + bytes.count)
        out.writeFrameHeader(Frame.Header(kind: .reply, id: id, length: UInt64(bytes.count)))
        out.writeBytes(bytes)
        return out
    }
}

/// Connections with requests queued for a slot. Used only on the gateway's one event loop
/// thread: kicked when a reply frees a slot, and every millisecond while any wait (slots
/// may also be freed by other clients of the channel, and queued requests time out).
final class Waiters: @unchecked Sendable {
    private var handlers: [ObjectIdentifier: GatewayHandler] = [:]
    private var timer: Scheduled<Void>?

    func add(_ h: GatewayHandler, on loop: EventLoop) {
        handlers[ObjectIdentifier(h)] = h
        guard timer == nil else { return }
        timer = loop.assumeIsolated().scheduleTask(in: .milliseconds(1)) { [self] in
            timer = nil
            kick()
            if let any = handlers.values.first, let ctx = any.context { add(any, on: ctx.eventLoop) }
        }
    }

    func remove(_ h: GatewayHandler) { handlers.removeValue(forKey: ObjectIdentifier(h)) }

    /// Lets every waiting connection try again.
    func kick() {
        guard !handlers.isEmpty else { return }
        for h in Array(handlers.values) { h.resume() }
    }
}

/// A compressed request after expansion: its plain body, or the error reply that fails it.
enum Expanded: Sendable {
    case plain(ByteBuffer)
    case reply(ByteBuffer)
}

/// A call handed from the event loop to a forwarder thread (one owner at a time).
struct HandedCall: @unchecked Sendable {
    let call: PendingCall
}

/// A large request being received in parts (one per connection at a time): where its
/// bytes go — a slot (`call`), a buffer, or nowhere (refused, or the connection is closing).
final class StreamedRequest {
    let id: UInt64
    /// The caller's remaining time (ns) and when the first part came.
    let timeout: UInt64, arrival: UInt64
    let length: Int
    var got = 0
    let ignored: Bool
    var call: PendingCall?
    var buffer: ByteBuffer?
    var refusal: FerryError?

    init(id: UInt64, timeout: UInt64, length: Int, ignored: Bool) {
        self.id = id
        self.timeout = timeout
        self.arrival = System.nowNanos()
        self.length = length
        self.ignored = ignored
    }
}

/// Answers a connection over the limit with an error frame and closes it.
final class Refuser: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let shared: GatewayShared
    init(shared: GatewayShared) { self.shared = shared }

    func channelActive(context: ChannelHandlerContext) {
        shared.rejected.wrappingIncrement(ordering: .relaxed)
        var b = context.channel.allocator.buffer(capacity: 128)
        let why = shared.draining.load(ordering: .relaxed) ? "the gateway is shutting down"
            : "too many connections (this gateway allows \(shared.config.maxConnections))"
        GatewayShared.errorFrame(&b, FerryError(.busy, why))
        let ctx = context
        context.writeAndFlush(NIOAny(b)).assumeIsolated().whenComplete { _ in ctx.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// One client connection: handshake, then requests forwarded with a bound on how many are in
/// flight (reading stops at the bound and resumes as replies go out).
final class GatewayHandler: ChannelDuplexHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        case hello
        case auth(gatewayNonce: [UInt8], clientNonce: [UInt8], name: String)
        case ready
        case closing
    }

    let shared: GatewayShared
    var state = State.hello
    var inFlight = 0
    var readHeld = false
    /// Requests published from the event loop in this read, awaiting their replies.
    var awaiting: [(UInt64, PendingCall)] = []
    /// Requests not yet published (no slot was free): id, body, timeout, arrival (ns).
    var queued: [(UInt64, ByteBuffer, UInt64, UInt64)] = []
    /// Set while the handler is in the pipeline (for `resume`).
    var context: ChannelHandlerContext?
    /// A look at the pending calls is in the event loop's queue.
    var pollScheduled = false
    /// When a reply last came while calls were pending (0: none pending).
    var lastProgress: UInt64 = 0
    var handshakeTimer: Scheduled<Void>?
    /// The large request being received in parts, if any.
    var incoming: StreamedRequest?

    init(shared: GatewayShared) { self.shared = shared }

    func channelActive(context: ChannelHandlerContext) {
        let ctx = context
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: shared.config.handshakeTimeout) { [self] in
            if case .ready = state { return }
            reject(ctx, FerryError(.timedOut, "no handshake within \(shared.config.handshakeTimeout.nanoseconds / 1_000_000) ms"))
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Read-idle (--idle-timeout): closed only when nothing of this connection is in flight.
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            if inFlight == 0 && awaiting.isEmpty && queued.isEmpty { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        state = .closing
        // Published calls nobody will read: given up (a worker that took one frees its slot).
        for (_, call) in awaiting { call.close() }
        shared.waiters.remove(self)
        shared.inFlight.wrappingDecrement(by: awaiting.count, ordering: .relaxed)
        inFlight -= awaiting.count + queued.count
        shared.inFlight.wrappingDecrement(by: queued.count, ordering: .relaxed)
        awaiting.removeAll()
        queued.removeAll()
        if let s = incoming, !s.ignored {
            s.call?.close()  // half received: its slot goes back unsent
            inFlight -= 1
            shared.inFlight.wrappingDecrement(ordering: .relaxed)
        }
        incoming = nil
        context.fireChannelInactive()
    }

    /// Closes the connection with an error frame saying why.
    func reject(_ context: ChannelHandlerContext, _ e: FerryError) {
        if case .closing = state { return }
        state = .closing
        handshakeTimer?.cancel()
        shared.rejected.wrappingIncrement(ordering: .relaxed)
        var b = context.channel.allocator.buffer(capacity: 128)
        GatewayShared.errorFrame(&b, e)
        let ctx = context
        context.writeAndFlush(wrapOutboundOut(b)).assumeIsolated().whenComplete { _ in ctx.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? FerryError {
            reject(context, e)
        } else if error is ByteToMessageDecoderError {
            reject(context, FerryError(.protocolViolation, "malformed frame: \(error)"))
        } else {
            context.close(promise: nil)  // the socket itself failed: nobody to tell
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .frame(let header, let body): frame(context, header, body)
        case .start(let header, let first): startStreamed(context, header, first)
        case .part(let part): receive(context, part)
        }
    }

    func frame(_ context: ChannelHandlerContext, _ header: Frame.Header, _ body: ByteBuffer) {
        switch (state, header.kind) {
        case (.hello, .hello):
            hello(context, header, body)
        case (.auth(let gatewayNonce, let clientNonce, let name), .auth):
            let transcript = Frame.authTranscript(gatewayNonce: gatewayNonce, clientNonce: clientNonce, name: name)
            guard let secret = shared.config.secret,
                  Digest.isValidHMACSHA256(Array(body.readableBytesView), key: secret, Array(transcript)) else {
                reject(context, FerryError(.permission, "authentication failed (wrong token)"))
                return
            }
            becomeReady(context)
            var b = context.channel.allocator.buffer(capacity: Frame.headerSize)
            // READY names the model (after AUTH: not told to whoever connects).
            let m = Array(shared.model.utf8.prefix(Frame.Welcome.maxModel))
            b.writeFrameHeader(Frame.Header(kind: .ready, length: UInt64(m.count)))
            b.writeBytes(m)
            context.writeAndFlush(wrapOutboundOut(b), promise: nil)
        case (.ready, .request):
            request(context, header, body)
        case (.closing, _):
            return
        case (.ready, _):
            reject(context, FerryError(.protocolViolation, "unexpected \(header.kind) frame after the handshake"))
        case (.auth, _):
            reject(context, FerryError(.permission, "this gateway requires authentication before requests"))
        case (.hello, _):
            reject(context, FerryError(.protocolViolation, "expected HELLO, got \(header.kind)"))
        }
    }

    func hello(_ context: ChannelHandlerContext, _ header: Frame.Header, _ body: ByteBuffer) {
        guard header.argument == Frame.version else {
            reject(context, FerryError(.version, "client speaks wire protocol \(header.argument); this gateway speaks \(Frame.version)"))
            return
        }
        let parsed: (name: String, nonce: [UInt8])
        do { parsed = try Frame.parseHello(Array(body.readableBytesView)) } catch let e as FerryError {
            reject(context, e)
            return
        } catch { return }
        guard parsed.name == shared.config.name else {
            reject(context, FerryError(.noServer, "this gateway serves channel \"\(shared.config.name)\", not \"\(parsed.name)\""))
            return
        }
        let nonce = System.randomBytes(Frame.nonceSize)
        let welcome = Frame.Welcome(requestCapacity: UInt64(shared.maxRequest), maxRequest: UInt64(shared.maxRequest),
                                    maxInFlight: UInt32(shared.config.maxInFlight), authRequired: shared.config.secret != nil, nonce: nonce,
                                    model: shared.model)
        let w = welcome.bytes
        var b = context.channel.allocator.buffer(capacity: Frame.headerSize + w.count)
        b.writeFrameHeader(Frame.Header(kind: .welcome, length: UInt64(w.count)))
        b.writeBytes(w)
        context.writeAndFlush(wrapOutboundOut(b), promise: nil)
        if shared.config.secret != nil {
            state = .auth(gatewayNonce: nonce, clientNonce: parsed.nonce, name: parsed.name)
        } else {
            becomeReady(context)
        }
    }

    func becomeReady(_ context: ChannelHandlerContext) {
        state = .ready
        handshakeTimer?.cancel()
        handshakeTimer = nil
    }

    func request(_ context: ChannelHandlerContext, _ header: Frame.Header, _ body: ByteBuffer) {
        let allocator = context.channel.allocator
        if shared.draining.load(ordering: .relaxed) {
            context.writeAndFlush(wrapOutboundOut(shared.errorReply(id: header.id, FerryError(.closed, "the gateway is shutting down"), allocator)), promise: nil)
            return
        }
        inFlight += 1
        shared.inFlight.wrappingIncrement(ordering: .relaxed)
        let id = header.id
        // The caller's remaining time, bounded (30 days) so a huge value is not a hang forever.
        let timeout = min(max(header.argument, 1), Endpoint.maxTimeoutMillis * 1_000_000)
        if body.withUnsafeReadableBytes({ TensorCodec.isEncoded($0) }) {
            expand(context, id: id, body: body, timeout: timeout)
            return
        }
        // Published from the event loop when a slot is free (no thread switch), else queued;
        // channelReadComplete waits briefly for the replies and fills freed slots from the queue.
        queued.append((id, body, timeout, System.nowNanos()))
    }

    /// A large request's first part: where its bytes will go, decided now. Straight into a
    /// slot when one is free and nothing of this connection waits for one (order kept): each
    /// part is copied there as it arrives, and the request goes out as soon as its last byte
    /// came. Else into one buffer of its size, queued once whole like any request; a
    /// compressed one is expanded first.
    func startStreamed(_ context: ChannelHandlerContext, _ header: Frame.Header, _ first: ByteBuffer) {
        let length = Int(header.length)
        guard case .ready = state else {
            frame(context, header, first)  // refused as any request before the handshake
            incoming = StreamedRequest(id: header.id, timeout: 0, length: length, ignored: true)
            receive(context, first)
            return
        }
        inFlight += 1
        shared.inFlight.wrappingIncrement(ordering: .relaxed)
        let timeout = min(max(header.argument, 1), Endpoint.maxTimeoutMillis * 1_000_000)
        let s = StreamedRequest(id: header.id, timeout: timeout, length: length, ignored: false)
        incoming = s
        if shared.draining.load(ordering: .relaxed) {
            s.refusal = FerryError(.closed, "the gateway is shutting down")
        } else if queued.isEmpty {
            do {
                if let call = try shared.client.tryBegin(timeout: .nanoseconds(Int64(clamping: timeout))) {
                    if call.requestBuffer.count >= length { s.call = call } else {
                        call.close()
                        s.refusal = FerryError(.tooLarge, "a request of \(length) bytes does not fit in the channel's slots")
                    }
                }
            } catch let e as FerryError {
                s.refusal = e
            } catch {
                s.refusal = FerryError(.system, "\(error)")
            }
        }
        if s.call == nil && s.refusal == nil && s.buffer == nil { s.buffer = context.channel.allocator.buffer(capacity: length) }
        receive(context, first)
    }

    /// The next part of the large request: copied to where it goes; sent or queued when whole.
    func receive(_ context: ChannelHandlerContext, _ part: ByteBuffer) {
        guard let s = incoming else { return }
        var part = part
        let n = min(part.readableBytes, s.length - s.got)
        if let call = s.call {
            part.withUnsafeReadableBytes { src in
                if n > 0 { (call.requestBuffer.baseAddress! + s.got).copyMemory(from: src.baseAddress!, byteCount: n) }
            }
        } else if s.buffer != nil {
            s.buffer!.writeBuffer(&part)
        }
        s.got += n
        guard s.got == s.length else { return }
        incoming = nil
        if s.ignored { return }
        let allocator = context.channel.allocator
        if let e = s.refusal {
            complete(context, shared.errorReply(id: s.id, e, allocator))
        } else if let call = s.call {
            // Compressed tensors never reach a worker (the tensor table, at the message's end,
            // says whether any is): taken back out of the slot and expanded like any other.
            let whole = UnsafeRawBufferPointer(rebasing: call.requestBuffer.prefix(s.length))
            if TensorCodec.isEncoded(whole) {
                var body = allocator.buffer(capacity: s.length)
                body.writeBytes(whole)
                call.close()
                expand(context, id: s.id, body: body, timeout: s.timeout)
                return
            }
            do {
                try call.send(forwardingInPlace: s.length)
                awaiting.append((s.id, call))
            } catch {
                call.close()
                complete(context, shared.errorReply(id: s.id, error, allocator))
            }
        } else if let body = s.buffer {
            s.buffer = nil
            if body.withUnsafeReadableBytes({ TensorCodec.isEncoded($0) }) {
                expand(context, id: s.id, body: body, timeout: s.timeout)
            } else {
                queued.append((s.id, body, s.timeout, s.arrival))
            }
        }
    }

    /// A request with compressed tensors: expanded on a forwarder thread (decoding a frame
    /// takes milliseconds, too long for the event loop), then queued like any other.
    func expand(_ context: ChannelHandlerContext, id: UInt64, body: ByteBuffer, timeout: UInt64) {
        let shared = self.shared
        let allocator = context.channel.allocator
        let arrival = System.nowNanos()
        let promise = context.eventLoop.makePromise(of: Expanded.self)
        shared.pool!.submit { _ in
            do {
                let plain = try body.withUnsafeReadableBytes { src -> ByteBuffer in
                    let cap = min(try TensorCodec.expandedBound(src), shared.maxRequest)
                    var out = allocator.buffer(capacity: cap)
                    try out.writeWithUnsafeMutableBytes(minimumWritableBytes: cap) { dst in
                        try TensorCodec.expand(src, into: UnsafeMutableRawBufferPointer(rebasing: dst.prefix(cap)),
                                               limitHint: "the request expands past the gateway's slots; raise --slot-size where the gateway runs")
                    }
                    return out
                }
                promise.succeed(.plain(plain))
            } catch {
                promise.succeed(.reply(shared.errorReply(id: id, error, allocator)))
            }
        }
        let ctx = context
        promise.futureResult.assumeIsolated().whenSuccess { [self] result in
            switch result {
            case .reply(let frame):
                complete(ctx, frame)
            case .plain(let plain):
                if case .closing = state { inFlight -= 1; shared.inFlight.wrappingDecrement(ordering: .relaxed); return }
                queued.append((id, plain, timeout, arrival))
                awaitPublished(ctx)
            }
        }
    }

    /// Publishes queued requests while slots are free (in arrival order). True when any went.
    func publishQueued(_ context: ChannelHandlerContext) -> Bool {
        var any = false
        let allocator = context.channel.allocator
        let now = System.nowNanos()
        while let (id, body, timeout, arrival) = queued.first {
            let call: PendingCall
            if now &- arrival >= timeout {
                queued.removeFirst()
                complete(context, shared.errorReply(id: id, FerryError(.busy, "every slot of the gateway's channel stayed busy until the deadline; raise --slots where the gateway runs, or the timeout"), allocator), flush: false)
                any = true
                continue
            }
            do {
                guard let c = try shared.client.tryBegin(timeout: .nanoseconds(Int64(clamping: timeout - (now &- arrival)))) else { break }
                call = c
            } catch {
                queued.removeFirst()
                complete(context, shared.errorReply(id: id, error, allocator), flush: false)
                any = true
                continue
            }
            queued.removeFirst()
            any = true
            do {
                try body.withUnsafeReadableBytes { try call.send(forwarding: $0) }
                awaiting.append((id, call))
            } catch {
                call.close()
                complete(context, shared.errorReply(id: id, error, allocator), flush: false)
            }
        }
        return any
    }

    /// Writes a reply frame when `future` has it; its slot is free again, so requests
    /// queued on any connection may go.
    func deliver(_ context: ChannelHandlerContext, _ future: EventLoopFuture<ByteBuffer>) {
        let ctx = context
        future.assumeIsolated().whenSuccess { [self] frame in
            complete(ctx, frame)
            shared.waiters.kick()
        }
    }

    /// Tries again to publish what is queued (a slot may have been freed).
    func resume() {
        guard let context, case .ready = state else { return }
        awaitPublished(context)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        shared.waiters.remove(self)
    }

    /// One request answered: write its reply and resume reading if it was held.
    func complete(_ context: ChannelHandlerContext, _ frame: ByteBuffer, flush: Bool = true) {
        inFlight -= 1
        shared.inFlight.wrappingDecrement(ordering: .relaxed)
        if case .closing = state { return }
        if flush { context.writeAndFlush(wrapOutboundOut(frame), promise: nil) } else { context.write(wrapOutboundOut(frame), promise: nil) }
        if readHeld && inFlight < shared.config.maxInFlight {
            readHeld = false
            context.read()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        awaitPublished(context)
        context.fireChannelReadComplete()
    }

    /// One look at this connection's calls: publishes what is queued while slots are free,
    /// writes every reply that came, and refills freed slots. While calls are pending and
    /// replies keep coming (each within `spinNanos` of the last), it looks again from the event
    /// loop's task queue, between reads of the sockets, so new requests keep flowing in and
    /// other connections are served; a quick model costs no thread switch. After `spinNanos`
    /// without a reply, the calls still out are awaited by forwarder threads.
    func awaitPublished(_ context: ChannelHandlerContext) {
        guard !awaiting.isEmpty || !queued.isEmpty else { return }
        let allocator = context.channel.allocator
        var progress = publishQueued(context)
        var i = 0
        while i < awaiting.count {
            let (id, call) = awaiting[i]
            var frame: ByteBuffer? = nil
            do {
                if let bytes = try call.pollReplyBytes(for: .zero) { frame = shared.replyFrame(id: id, bytes, allocator) }
            } catch {
                frame = shared.errorReply(id: id, error, allocator)
            }
            guard let frame else { i += 1; continue }
            call.close()
            awaiting.remove(at: i)
            complete(context, frame, flush: false)
            progress = true
        }
        if progress {
            _ = publishQueued(context)
            context.flush()
        }
        let now = System.nowNanos()
        if progress || lastProgress == 0 { lastProgress = now }
        if awaiting.isEmpty && queued.isEmpty {
            lastProgress = 0
            shared.waiters.remove(self)
            return
        }
        if now &- lastProgress < shared.config.spinNanos {
            // Yield rather than pause: the workers may share this CPU.
            if !progress { System.yieldCPU() }
            if !pollScheduled {
                pollScheduled = true
                context.eventLoop.assumeIsolated().execute { [self] in
                    pollScheduled = false
                    if case .ready = state, let ctx = self.context { awaitPublished(ctx) }
                }
            }
            return
        }
        lastProgress = 0
        // Replies still to come are awaited by forwarder threads, which never wait for a slot
        // (so they can always free the slots they wait on). Requests without a slot stay
        // queued here and go when a slot frees up.
        let shared = self.shared
        for (id, call) in awaiting {
            let handed = HandedCall(call: call)
            let promise = context.eventLoop.makePromise(of: ByteBuffer.self)
            shared.pool!.submit { _ in promise.succeed(shared.finish(id: id, call: handed.call, allocator: allocator)) }
            deliver(context, promise.futureResult)
        }
        awaiting.removeAll()
        if queued.isEmpty { shared.waiters.remove(self) } else { shared.waiters.add(self, on: context.eventLoop) }
    }

    // Backpressure: no more reading while the connection has its fill of requests in flight.
    // A request being received in parts is always read whole (it may hold a slot).
    func read(context: ChannelHandlerContext) {
        if inFlight >= shared.config.maxInFlight && incoming == nil {
            readHeld = true
        } else {
            context.read()
        }
    }
}

