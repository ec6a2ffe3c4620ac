import FerryCore
import FerryTCP
import Atomics

/// The `redis://[USER:PASSWORD@]HOST:PORT/NAME` client transport: requests go onto the
/// stream `ferry:{NAME}:requests`, which `ferry serve --redis` nodes read as consumer group
/// NAME; each node pushes a reply onto this client's own list, `ferry:{NAME}:reply:ID`,
/// prefixed with the request id, so many calls can be in flight from many threads.
///
/// Two connections: one for commands (one at a time, under a lock) and one that blocks in
/// BLPOP on the reply list. Like tcp://, there is no reader thread: a waiting caller takes
/// the reader role when it is free and hands replies to their callers (leader/followers).
/// When the nodes run a result cache, a call is first looked up there, in the same round
/// trip that adds it (a Lua script). A lost connection fails the calls waiting on it with
/// `.disconnected`; the next call connects again.
final class RedisClientTransport: ClientTransport, @unchecked Sendable {
    let endpoint: Endpoint
    let keys: RedisKeys
    let replyList: String
    let buffers = BufferPool()

    /// What the nodes announced in the info hash.
    struct Announced {
        var model = "", version = ""
        var cache = false
        var capacity = 8 << 20
        var maxBacklog = 10_000
    }

    struct Shared {
        var pending: [UInt64: RedisLoan] = [:]
        var reading = false
        var nextID: UInt64 = 1
        var closed = false
        var announced = Announced()
    }
    let shared = Locked(Shared())
    /// The command connection (and the process it belongs to: a forked child connects anew).
    private let commands = Locked<(RedisConnection, UInt64)?>(nil)
    /// The blocking connection: used only by the thread holding the reader role.
    private var reader: (RedisConnection, UInt64)?
    /// Replies owed on the reader connection, in order: a request added there (its XADD's
    /// answer), or a pop (BLPOP/LPOP) of the reply list.
    private enum Owed { case added(RedisLoan), pop }
    private var owed: [Owed] = []
    private let submitSHA = RedisScripts.sha(RedisScripts.submit)

    init(_ endpoint: Endpoint) throws {
        self.endpoint = endpoint
        keys = RedisKeys(endpoint.name)
        replyList = keys.replies(client: hex(System.randomBytes(16)))
        // A quick first look (an unreachable or refused Redis is an error here, at once); a
        // Redis that accepts but does not answer (stopped, overloaded) is left to the first
        // call, which connects within its own deadline instead of this one's 3 s.
        do {
            try withCommands(deadline: deadline(after: min(endpoint.connectTimeoutNanos, 250_000_000))) { c in try refreshInfo(c) }
        } catch let e as FerryError where e.code == .timedOut {
            commands.withLock { $0 = nil }
        }
    }

    private func connect(until: UInt64) throws -> RedisConnection {
        let now = System.nowNanos()
        let budget = min(endpoint.connectTimeoutNanos, until > now ? until - now : 1_000_000)
        return try RedisConnection.owner(of: keys.info, host: endpoint.host, port: endpoint.port, user: endpoint.user,
                                         password: endpoint.password, tls: endpoint.tls, timeoutNanos: max(budget, 1_000_000))
    }

    /// Runs `body` on the command connection (connecting when there is none), once more on
    /// a fresh connection when the first attempt found it broken.
    func withCommands<R>(deadline d: UInt64, _ body: (RedisConnection) throws -> R) throws -> R {
        try commands.withLock { slot in
            if shared.withLock({ $0.closed }) { throw FerryError(.closed, "the client was closed") }
            var attempt = 0
            while true {
                attempt += 1
                if slot == nil || slot!.0.isBroken || slot!.1 != System.forkGeneration { slot = (try connect(until: d), System.forkGeneration) }
                let c = slot!.0
                // Each command waits no longer than the call may (a poll: a couple of ms).
                let now = System.nowNanos()
                try c.setTimeout(max(d > now ? d - now : 0, 2_000_000))
                do { return try body(c) } catch let e as FerryError where attempt == 1 && System.nowNanos() < d
                                                && (c.isBroken || RedisConnection.movedTarget(e) != nil) {
                    // The connection went stale (Redis restarted, an idle timeout) or the
                    // cluster moved the channel's slot: once more on a new connection.
                    slot = nil
                }
            }
        }
    }

    /// Reads what the nodes announced (model version, capacity, cache).
    func refreshInfo(_ c: RedisConnection) throws {
        let r = try c.command(["HGETALL", .text(keys.info)])
        var a = Announced()
        let e = r.value.elements
        var i = 0
        while i + 1 < e.count {
            let v = e[i + 1].text
            switch e[i].text {
            case "model": a.model = v
            case "version": a.version = v
            case "cache": a.cache = v == "1"
            case "request_capacity": a.capacity = Int(v).map { max(4096, min($0, 512 << 20)) } ?? a.capacity
            case "max_backlog": a.maxBacklog = Int(v).map { max(1, $0) } ?? a.maxBacklog
            default: break
            }
            i += 2
        }
        shared.withLock { $0.announced = a }
    }

    var requestCapacity: Int { endpoint.maxRequest ?? shared.withLock { $0.announced.capacity } }

    func loan(deadline d: UInt64) throws -> any CallLoan {
        if shared.withLock({ $0.closed }) { throw FerryError(.closed, "the client was closed") }
        return RedisLoan(transport: self, capacity: requestCapacity)
    }

    func serverInfo(deadline d: UInt64) throws -> [String: String] {
        try withCommands(deadline: d) { c in try refreshInfo(c) }
        let a = shared.withLock { $0.announced }
        return ["model": a.model, "version": a.version]
    }

    func census(recover: Bool) throws -> [SlotState: Int] {
        throw FerryError(.invalidArgument, "slot census is not available over redis://; run `ferry stats` on a node's host")
    }

    func stats() throws -> ChannelStats {
        throw FerryError(.invalidArgument, "channel stats are not available over redis://; run `ferry stats` on a node's host")
    }

    func close() {
        let waiting: [RedisLoan] = shared.withLock { s in
            s.closed = true
            return Array(s.pending.values)
        }
        for l in waiting { l.fail(FerryError(.closed, "the client was closed")) }
        commands.withLock { $0 = nil }
    }

    // MARK: calls

    /// Adds a request (or answers it from the cache: then `loan.reply` is set on return).
    func submit(_ loan: RedisLoan, message: UnsafeRawBufferPointer, deadline d: UInt64) throws {
        let (id, announced) = try shared.withLock { s -> (UInt64, Announced) in
            if s.closed { throw FerryError(.closed, "the client was closed") }
            let id = s.nextID
            s.nextID &+= 1
            s.pending[id] = loan
            return (id, s.announced)
        }
        loan.id = id
        let now = System.nowNanos()
        let ttlMillis = max(1, (d > now ? d - now : 0) / 1_000_000)
        var digest: String? = nil
        if endpoint.useCache && announced.cache && !announced.version.isEmpty,
           let view = try? MessageView(validating: message), view.metadata(RedisWire.cacheMetadataKey) != "off" {
            digest = ResultCache.digest(model: announced.model, version: announced.version, message: view)
        }
        let add: [RedisArgument] = ["XADD", .text(keys.requests), "MAXLEN", "~", .text(String(announced.maxBacklog)), "*",
                                    .text(RedisWire.fieldMessage), .bytes(message), .text(RedisWire.fieldReplyTo), .text(replyList),
                                    .text(RedisWire.fieldID), .text(String(id)), .text(RedisWire.fieldTTL), .text(String(ttlMillis)),
                                    .text(RedisWire.fieldCache), .text(endpoint.useCache ? "1" : "0")]
        // The quick way: the request and the pop of its reply in one write on the reader
        // connection (its answer is read by whoever waits), when that connection is free
        // and the nodes have announced themselves (else the XADD's answer is wanted now).
        if digest == nil && !announced.version.isEmpty, takeReader() {
            defer { releaseReader() }
            if owed.isEmpty {
                do {
                    let c = try readerConnection(until: d)
                    try c.append(add)
                    try c.append(blockingPop(until: d))
                    try c.flush()
                    owed += [.added(loan), .pop]
                    return
                } catch let e as FerryError {
                    forget(id)
                    failReaders(e)
                    throw e
                }
            }
        }
        do {
            try withCommands(deadline: d) { c in
                if let digest {
                    let args: [RedisArgument] = [.text(keys.info), .text(keys.cache(digest)), .text(keys.requests), .text(keys.stats),
                                                 .text(announced.version), .text(String(announced.maxBacklog)), .bytes(message),
                                                 .text(replyList), .text(String(id)), .text(String(ttlMillis))]
                    let r = try evalScript(c, sha: submitSHA, script: RedisScripts.submit, keyCount: 4, args)
                    let e = r.value.elements
                    if e.count == 2, e[0].integer == 1 {
                        loan.take(reply: e[1].bytes, owner: r, buffers: buffers)
                        shared.withLock { _ = $0.pending.removeValue(forKey: id) }
                    } else if e.count == 2, e[1].text != announced.version {
                        try refreshInfo(c)  // the nodes serve another model version now
                    }
                } else {
                    _ = try c.command(add)
                    if announced.version.isEmpty { try refreshInfo(c) }  // no node had announced itself yet
                }
            }
        } catch {
            forget(id)
            throw error
        }
    }

    /// EVALSHA, falling back to EVAL the first time a server has not seen the script.
    func evalScript(_ c: RedisConnection, sha: String, script: String, keyCount: Int, _ args: [RedisArgument]) throws -> RedisReply {
        do {
            return try c.command([.text("EVALSHA"), .text(sha), .text(String(keyCount))] + args)
        } catch let e as FerryError where e.message.contains("NOSCRIPT") {
            return try c.command([.text("EVAL"), .text(script), .text(String(keyCount))] + args)
        }
    }

    /// Drops a call from the pending table (gave up); its late reply will be discarded.
    func forget(_ id: UInt64) { _ = shared.withLock { $0.pending.removeValue(forKey: id) } }

    /// Takes the reader role if it is free.
    private func takeReader() -> Bool {
        shared.withLock { s in
            if s.reading { return false }
            s.reading = true
            return true
        }
    }

    /// The reader connection (connecting when there is none); role holder only.
    private func readerConnection(until: UInt64) throws -> RedisConnection {
        if let (c, generation) = reader, !c.isBroken, generation == System.forkGeneration { return c }
        owed = []
        // Within the call's deadline (connect gives a poll at least a millisecond).
        let c = try connect(until: until)
        try c.setTimeout(30_000_000_000)  // reads wait in poll(2) with their own deadline
        reader = (c, System.forkGeneration)
        return c
    }

    /// A pop of the reply list: BLPOP for at most 1 s (so a closed client is noticed), or an
    /// LPOP when `until` is less than a millisecond away (a poll).
    private func blockingPop(until: UInt64) -> [RedisArgument] {
        let now = System.nowNanos()
        let left = until > now ? until - now : 0
        if left < 1_000_000 { return ["LPOP", .text(replyList)] }
        let ms = min(left / 1_000_000, 1000)
        return ["BLPOP", .text(replyList), .text("\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst())")]
    }

    /// Waits for `loan`'s reply until `until`; true once it is there.
    func awaitReply(_ loan: RedisLoan, until: UInt64) throws -> Bool {
        while true {
            var lead = false
            let seen = loan.event.load(ordering: .acquiring)
            let done: Bool = try shared.withLock { s in
                if loan.reply != nil { return true }
                if let f = loan.failure { throw f }
                if !s.reading { s.reading = true; lead = true }
                return false
            }
            if done { return true }
            if lead {
                do { try pump(for: loan, until: until) } catch let e as FerryError { failReaders(e) }
                releaseReader()
                if System.nowNanos() >= until {
                    return try shared.withLock { _ in
                        if let f = loan.failure, loan.reply == nil { throw f }
                        return loan.reply != nil
                    }
                }
                continue
            }
            let now = System.nowNanos()
            if now >= until { return false }
            System.futexWait(loan.eventWord, expected: seen, timeoutNanos: Int64(min(until - now, 5_000_000)))
        }
    }

    /// The reader connection broke: every call waiting for a reply fails (their outcome is
    /// unknown: the request may have run). Role holder only.
    private func failReaders(_ e: FerryError) {
        reader = nil
        owed = []
        let waiting: [RedisLoan] = shared.withLock { s in
            let all = Array(s.pending.values)
            s.pending.removeAll()
            return all
        }
        let error = e.code == .closed ? e : FerryError(.disconnected, "\(e.message); the call's outcome is unknown (it may have run)")
        for l in waiting { l.fail(error) }
    }

    private func releaseReader() {
        let waiting: [RedisLoan] = shared.withLock { s in
            s.reading = false
            return Array(s.pending.values)
        }
        for l in waiting { l.signal() }
    }

    /// Reads the replies owed on the reader connection (asking for a pop when none is owed)
    /// and hands them out until `loan` has its own or `until` passes; at least one look, so
    /// a poll with `until` in the past still sees a waiting reply.
    private func pump(for loan: RedisLoan, until: UInt64) throws {
        var first = true
        while true {
            if shared.withLock({ _ in loan.reply != nil || loan.failure != nil }) { return }
            if !first && System.nowNanos() >= until { return }
            first = false
            let c = try readerConnection(until: until)
            if owed.isEmpty {
                try c.append(blockingPop(until: until))
                try c.flush()
                owed.append(.pop)
            }
            let r: RedisReply
            do {
                guard let got = try c.reply(until: until) else { return }
                r = got
            } catch let e as FerryError where !c.isBroken {
                // An error answer: it belongs to the first reply owed.
                if case .added(let l) = owed.removeFirst() { forget(l.id); l.fail(e); continue }
                throw e
            }
            if case .added = owed.removeFirst() { continue }  // the request's XADD went through
            let v = r.value
            let element: RedisValue
            switch v.type {
            case .null: continue
            case .string: element = v
            case .array where v.elements.count == 2: element = v.elements[1]
            default: throw FerryError(.protocolViolation, "unexpected reply to a pop from Redis")
            }
            let bytes = element.bytes
            guard let id = RedisWire.requestID(bytes) else { continue }  // not ours to understand: dropped
            let body = UnsafeRawBufferPointer(rebasing: bytes[RedisWire.prefixSize...])
            let target: RedisLoan? = shared.withLock { s in s.pending.removeValue(forKey: id) }
            if let target {
                shared.withLock { _ in target.take(reply: body, owner: r, buffers: buffers) }
                target.signal()
            }
        }
    }

    /// Why nothing answered by the deadline: no node alive, or a slow one.
    func deadlineError() -> FerryError {
        let what = "\(endpoint.host):\(endpoint.port)/\(endpoint.name)"
        // A quick look only (a few ms): the call's deadline has come, and a stopped Redis
        // must not hold it longer.
        let alive: Int? = try? withCommands(deadline: deadline(after: 5_000_000)) { c in
            let t = try c.command(["TIME"]).value.elements
            guard t.count == 2, let s = Int64(t[0].text) else { return 0 }
            return Int(try c.command(["ZCOUNT", .text(keys.nodes), .text(String((s - 5) * 1000)), "+inf"]).value.integer)
        }
        if alive == 0 {
            return FerryError(.noServer, "no node serves \(what): no `ferry serve --redis` node has been seen in the last 5 s (the request stays queued until a node takes it or the stream is trimmed)")
        }
        return FerryError(.timedOut, "no reply within the deadline from \(what) (the call may still run on a node; its late reply is dropped)")
    }

    deinit { close() }
}

/// A private request buffer and, later, the reply (kept in hiredis's reply object when it
/// is aligned, else copied into an aligned buffer).
final class RedisLoan: CallLoan, @unchecked Sendable {  // shared state is under the transport's lock
    let transport: RedisClientTransport
    let buffer: RawBuffer
    var id: UInt64 = 0
    var sent = false
    var open = true
    var reply: UnsafeRawBufferPointer?
    private var replyOwner: RedisReply?
    private var replyCopy: RawBuffer?
    var failure: FerryError?
    let eventWord = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    var event: UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: UnsafeMutableRawPointer(eventWord).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
    }

    init(transport: RedisClientTransport, capacity: Int) {
        self.transport = transport
        buffer = transport.buffers.take(capacity)
        eventWord.initialize(to: 0)
    }

    var request: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: buffer.base, count: buffer.capacity) }

    var limitHint: String {
        "the nodes take requests up to their slot size less one page; raise it where the nodes run (ferry serve --slot-size 64M) or set max_request= in the URL"
    }

    /// Keeps the reply (called under the transport's lock, or before the call is shared).
    func take(reply bytes: UnsafeRawBufferPointer, owner: RedisReply, buffers: BufferPool) {
        if let base = bytes.baseAddress, Int(bitPattern: base) % 64 == 0 {
            replyOwner = owner
            reply = bytes
        } else {
            let b = buffers.take(max(bytes.count, 1))
            if bytes.count > 0 { b.base.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            replyCopy = b
            reply = UnsafeRawBufferPointer(start: b.base, count: bytes.count)
        }
    }

    func fail(_ e: FerryError) {
        transport.shared.withLock { _ in if failure == nil && reply == nil { failure = e } }
        signal()
    }

    func signal() {
        event.wrappingIncrement(ordering: .releasing)
        System.futexWake(eventWord, count: 1)
    }

    func send(length: Int, deadline: UInt64) throws {
        sent = true
        try transport.submit(self, message: UnsafeRawBufferPointer(start: buffer.base, count: length), deadline: deadline)
    }

    func awaitReply(until: UInt64, deadline: UInt64) throws -> UnsafeRawBufferPointer? {
        if let r = transport.shared.withLock({ _ in reply }) { return r }
        // Never past the call's deadline, however long the caller's slice.
        if try transport.awaitReply(self, until: min(until, deadline)) {
            return transport.shared.withLock { _ in reply }
        }
        guard until < deadline else {
            transport.forget(id)
            if let r = transport.shared.withLock({ _ in reply }) { return r }  // landed just now
            throw transport.deadlineError()
        }
        return nil
    }

    func close() {
        guard open else { return }
        open = false
        let copy: RawBuffer? = transport.shared.withLock { s in
            if sent && reply == nil { s.pending.removeValue(forKey: id) }
            replyOwner = nil
            reply = nil
            defer { replyCopy = nil }
            return replyCopy
        }
        if let copy { transport.buffers.give(copy) }
        transport.buffers.give(buffer)
    }

    deinit {
        close()
        eventWord.deallocate()
    }
}

/// Registers the `redis://` client transport with the core's URL-scheme registry.
public enum RedisTransport {
    /// Makes `Client("redis://HOST:PORT/NAME")` work in this process (idempotent).
    public static func register() {
        Transports.register("redis") { try RedisClientTransport($0) }
    }
}
