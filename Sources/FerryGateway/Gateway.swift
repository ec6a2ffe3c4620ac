import Atomics
import Crypto
import FerryCore
import NIOCore
import NIOPosix
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
    /// Time a new connection has to complete its handshake.
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// Threads that carry requests into the channel (each waits for one reply at a time).
    public var forwarders = 8

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
    let group: MultiThreadedEventLoopGroup
    let pool: NIOThreadPool
    let serverChannel: Channel
    let shared: GatewayShared
    /// The bound port.
    public let port: Int

    /// Binds and starts accepting. Throws when the channel is not served or the address is taken.
    public init(_ config: GatewayConfiguration) throws {
        self.config = config
        client = try Client(config.channelURL)
        let capacity = client.requestCapacity
        let maxRequest = min(config.maxRequest ?? capacity, capacity)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        pool = NIOThreadPool(numberOfThreads: max(1, config.forwarders))
        pool.start()
        let shared = GatewayShared(config: config, client: client, pool: pool, maxRequest: maxRequest)
        self.shared = shared
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    guard shared.admit(channel) else {
                        try sync.addHandler(Refuser(shared: shared))
                        return
                    }
                    try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxRequest: maxRequest)))
                    try sync.addHandler(GatewayHandler(shared: shared))
                }
            }
        do {
            serverChannel = try bootstrap.bind(host: config.host, port: config.port).wait()
        } catch {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            client.close()
            throw FerryError(.system, "cannot listen on \(config.host):\(config.port): \(error)")
        }
        port = serverChannel.localAddress?.port ?? config.port
    }

    /// Connections, requests in flight, rejections.
    public var counters: GatewayCounters { shared.counters }

    /// Stops: no new connections; requests in flight are answered (or fail at their deadline)
    /// for up to `grace`; then every connection gets an error frame saying the gateway is
    /// shutting down and is closed.
    public func shutdown(grace: Duration = .seconds(10)) {
        try? serverChannel.close().wait()
        shared.draining.store(true, ordering: .relaxed)
        let end = System.nowNanos() &+ grace.clampedNanoseconds
        while shared.inFlight.load(ordering: .relaxed) > 0 && System.nowNanos() < end {
            usleepNanos(5_000_000)
        }
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
        try? pool.syncShutdownGracefully()
        try? group.syncShutdownGracefully()
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
    let pool: NIOThreadPool
    let maxRequest: Int
    let connections = ManagedAtomic<Int>(0)
    let inFlight = ManagedAtomic<Int>(0)
    let rejected = ManagedAtomic<Int>(0)
    let draining = ManagedAtomic<Bool>(false)
    let channels = Mutex<[ObjectIdentifier: Channel]>([:])

    init(config: GatewayConfiguration, client: Client, pool: NIOThreadPool, maxRequest: Int) {
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

    /// Appends an ERROR frame carrying `e`'s code and message.
    static func errorFrame(_ b: inout ByteBuffer, _ e: FerryError) {
        let text = Array(e.message.utf8.prefix(Frame.maxControlPayload))
        b.writeFrameHeader(Frame.Header(kind: .error, length: UInt64(text.count), argument: UInt64(e.code.rawValue)))
        b.writeBytes(text)
    }

    /// Carries one request into the channel and returns the REPLY frame (an error reply when
    /// the channel failed it). Runs on a forwarder thread; blocks until the reply or deadline.
    func forward(id: UInt64, body: ByteBuffer, timeoutNanos: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        do {
            let call = try client.begin(timeout: .nanoseconds(Int64(clamping: timeoutNanos)))
            defer { call.close() }
            try body.withUnsafeReadableBytes { try call.send(encoded: $0) }
            let view = try call.waitRaw()
            var out = allocator.buffer(capacity: Frame.headerSize + view.length)
            out.writeFrameHeader(Frame.Header(kind: .reply, id: id, length: UInt64(view.length)))
            out.writeBytes(UnsafeRawBufferPointer(start: view.base, count: view.length))
            return out
        } catch {
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
    typealias InboundIn = (Frame.Header, ByteBuffer)
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
    var handshakeTimer: Scheduled<Void>?

    init(shared: GatewayShared) { self.shared = shared }

    func channelActive(context: ChannelHandlerContext) {
        let ctx = context
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: shared.config.handshakeTimeout) { [self] in
            if case .ready = state { return }
            reject(ctx, FerryError(.timedOut, "no handshake within \(shared.config.handshakeTimeout.nanoseconds / 1_000_000) ms"))
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        state = .closing
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
        let (header, body) = unwrapInboundIn(data)
        switch (state, header.kind) {
        case (.hello, .hello):
            hello(context, header, body)
        case (.auth(let gatewayNonce, let clientNonce, let name), .auth):
            let transcript = Frame.authTranscript(gatewayNonce: gatewayNonce, clientNonce: clientNonce, name: name)
            guard let secret = shared.config.secret,
                  HMAC<SHA256>.isValidAuthenticationCode(Array(body.readableBytesView), authenticating: transcript, using: SymmetricKey(data: secret)) else {
                reject(context, FerryError(.permission, "authentication failed (wrong token)"))
                return
            }
            becomeReady(context)
            var b = context.channel.allocator.buffer(capacity: Frame.headerSize)
            b.writeFrameHeader(Frame.Header(kind: .ready, length: 0))
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
                                    maxInFlight: UInt32(shared.config.maxInFlight), authRequired: shared.config.secret != nil, nonce: nonce)
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
        if shared.draining.load(ordering: .relaxed) {
            reply(context, shared.forwardRefused(id: header.id, FerryError(.closed, "the gateway is shutting down"), context.channel.allocator))
            return
        }
        inFlight += 1
        shared.inFlight.wrappingIncrement(ordering: .relaxed)
        let promise = context.eventLoop.makePromise(of: ByteBuffer.self)
        let shared = self.shared
        let allocator = context.channel.allocator
        let id = header.id
        // The caller's remaining time, bounded (30 days) so a huge value is not a hang forever.
        let timeout = min(max(header.argument, 1), Endpoint.maxTimeoutMillis * 1_000_000)
        shared.pool.submit { state in
            guard state == .active else {
                promise.succeed(shared.forwardRefused(id: id, FerryError(.closed, "the gateway is shutting down"), allocator))
                return
            }
            promise.succeed(shared.forward(id: id, body: body, timeoutNanos: timeout, allocator: allocator))
        }
        let ctx = context
        promise.futureResult.assumeIsolated().whenSuccess { [self] frame in
            inFlight -= 1
            shared.inFlight.wrappingDecrement(ordering: .relaxed)
            if case .closing = state { return }
            reply(ctx, frame)
            if readHeld && inFlight < shared.config.maxInFlight {
                readHeld = false
                ctx.read()
            }
        }
    }

    func reply(_ context: ChannelHandlerContext, _ frame: ByteBuffer) {
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    // Backpressure: no more reading while the connection has its fill of requests in flight.
    func read(context: ChannelHandlerContext) {
        if inFlight >= shared.config.maxInFlight {
            readHeld = true
        } else {
            context.read()
        }
    }
}

extension GatewayShared {
    /// A REPLY frame failing request `id` with `e` (the request never reached a worker).
    func forwardRefused(id: UInt64, _ e: FerryError, _ allocator: ByteBufferAllocator) -> ByteBuffer {
        let bytes = (try? Message(metadata: ["error": e.message], status: e.code.rawValue).encoded()) ?? []
        var out = allocator.buffer(capacity: Frame.headerSize + bytes.count)
        out.writeFrameHeader(Frame.Header(kind: .reply, id: id, length: UInt64(bytes.count)))
        out.writeBytes(bytes)
        return out
    }
}
