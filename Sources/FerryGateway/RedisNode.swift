import Atomics
import FerryCore
import FerryRedis

#if canImport(Glibc)
import Glibc
#endif

/// How a `ferry serve --redis` node behaves.
public struct RedisNodeConfiguration: Sendable {
    /// The Redis server, credentials and channel name (`redis://[USER:PASS@]HOST:PORT/NAME`).
    public var endpoint: Endpoint
    /// The node's local shm:// channel, served by its workers.
    public var channelURL: String
    /// The model's name and version: announced to clients and part of every cache key.
    public var model: String, version: String
    /// Largest request the local channel takes (announced to clients).
    public var requestCapacity: Int
    /// Entries handled at once (one Redis connection and thread each).
    public var readers = 8
    /// A pending entry idle this long on a node is taken over by another (XAUTOCLAIM): for
    /// nodes that are alive but stuck (a node's own long-running entries are kept fresh).
    public var claimIdleNanos: UInt64 = 30_000_000_000
    /// A node whose heartbeat is older than this is dead: a live node takes its entries at
    /// once and forgets it. Heartbeats go out every `nodeTimeoutNanos / 8` (at most 250 ms).
    public var nodeTimeoutNanos: UInt64 = 5_000_000_000
    /// After this many deliveries an entry goes to the dead-letter stream.
    public var maxDeliveries = 3
    /// Result cache: time to live (0: no cache), most entries, largest reply cached.
    public var cacheTTLMillis: UInt64 = 0
    public var cacheMaxEntries = 10_000
    public var cacheMaxBytes = 16 << 20
    /// Most entries kept in the request stream (MAXLEN ~) and in the dead-letter stream.
    public var maxBacklog = 10_000
    public var deadMaxLength = 10_000
    /// This node's consumer name (unique per process by default).
    public var nodeID: String
    /// Where the node says what happens (level, message).
    public var log: @Sendable (String, String) -> Void = { _, _ in }

    public init(endpoint: Endpoint, channelURL: String, model: String, version: String, requestCapacity: Int) {
        self.endpoint = endpoint
        self.channelURL = channelURL
        self.model = model
        self.version = version
        self.requestCapacity = requestCapacity
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let hostname = String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        nodeID = "\(hostname)-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
    }
}

/// What a node has done so far.
public struct RedisNodeCounters: Sendable {
    public var served = 0, cacheHits = 0, joinedIdentical = 0, deadLettered = 0, reclaimed = 0, expired = 0, failed = 0
}

/// A node of a redis:// channel: reads requests from the stream as a member of the consumer
/// group NAME, runs them on the local shm:// channel's workers, pushes each reply onto its
/// client's list and acknowledges the entry (one Lua script, so a reply and its XACK go
/// together). Entries a dead node held are taken over after `claimIdleNanos`; an entry
/// delivered more than `maxDeliveries` times, or malformed, goes to the dead-letter stream
/// and its client gets an error. See docs/protocol.md for the keys and scripts.
public final class RedisNode: @unchecked Sendable {
    public let config: RedisNodeConfiguration
    let keys: RedisKeys
    let local: Client
    private let stopping = ManagedAtomic<Bool>(false)
    /// Each reader connection's CLIENT ID, so that `shutdown` can end their blocking reads at
    /// once (CLIENT UNBLOCK) instead of waiting out the BLOCK time.
    private let readerIDs = Locked<[Int: Int64]>([:])
    private var threads: [NativeThread] = []
    private let counters = Locked(RedisNodeCounters())
    /// Entries this node is working on (their idle time is reset so nobody takes them).
    private let inProgress = Locked<Set<String>>([])
    /// Entries taken over from dead nodes, waiting for a reader.
    private let reclaimed = Locked<[(RedisReply, RedisValue)]>([])
    /// Redis's clock minus ours (ms), so deadlines are judged on one clock.
    private let clockOffset = ManagedAtomic<Int64>(0)
    private let sha = (begin: RedisScripts.sha(RedisScripts.begin), finish: RedisScripts.sha(RedisScripts.finish),
                       bury: RedisScripts.sha(RedisScripts.bury), touch: RedisScripts.sha(RedisScripts.touch),
                       reapDead: RedisScripts.sha(RedisScripts.reapDead))

    /// Joins the group (creating stream and group when missing), announces the model, and
    /// starts reading. Fails at once when Redis is unreachable or refuses the credentials.
    public init(_ config: RedisNodeConfiguration) throws {
        self.config = config
        keys = RedisKeys(config.endpoint.name)
        local = try Client(config.channelURL)
        let c = try connect()
        try ensureGroup(c)
        // One model per channel: refused when the live nodes serve another model.
        let identity = "\(config.model) version \(config.version)"
        let joined = try c.command([.text("EVAL"), .text(RedisScripts.join), "2", .text(keys.nodes), .text(keys.info),
                                    .text(identity), .text(config.nodeID), .text(String(config.nodeTimeoutNanos / 1_000_000))])
        if joined.value.type == .string {
            throw FerryError(.invalidArgument, "redis channel \(keys.name) is served by model \"\(joined.value.text)\"; this node is model "
                + "\"\(identity)\": one model per channel (give this model another channel name, or stop the other nodes first)")
        }
        try heartbeat(c)
        for i in 0..<max(1, config.readers) {
            threads.append(NativeThread { [self] in readLoop(i) })
        }
        threads.append(NativeThread { [self] in maintainLoop() })
    }

    /// What the node has done so far.
    public var stats: RedisNodeCounters { counters.withLock { $0 } }

    /// Stops taking entries, finishes those in hand, and leaves the set of live nodes.
    /// Entries it held but had not started are taken over by other nodes after the claim
    /// idle time.
    public func shutdown() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // Readers blocked in XREADGROUP return now (a read not yet sent still waits its
        // BLOCK time, 500 ms at most).
        let blocked = readerIDs.withLock { Array($0.values) }
        if !blocked.isEmpty, let c = try? connect() {
            for id in blocked { _ = try? c.command(["CLIENT", "UNBLOCK", .text(String(id))]) }
        }
        for t in threads { t.join() }
        if let c = try? connect() {
            _ = try? c.command(["ZREM", .text(keys.nodes), .text(config.nodeID)])
            _ = try? c.command(["DEL", .text(keys.node(config.nodeID))])
        }
        local.close()
    }

    private func connect() throws -> RedisConnection {
        let e = config.endpoint
        return try RedisConnection.owner(of: keys.requests, host: e.host, port: e.port, user: e.user, password: e.password,
                                         tls: e.tls, timeoutNanos: e.connectTimeoutNanos)
    }

    private func ensureGroup(_ c: RedisConnection) throws {
        do {
            // From the stream's start: requests queued before any node ran are served too.
            _ = try c.command(["XGROUP", "CREATE", .text(keys.requests), .text(keys.name), "0", "MKSTREAM"])
        } catch let e as FerryError where e.message.contains("BUSYGROUP") {}
    }

    /// Tells clients this node is alive and what it serves; syncs the clock offset.
    private func heartbeat(_ c: RedisConnection) throws {
        let t = try c.command(["TIME"]).value.elements
        guard t.count == 2, let s = Int64(t[0].text), let us = Int64(t[1].text) else {
            throw FerryError(.protocolViolation, "Redis answered TIME with something else")
        }
        let redisMillis = s * 1000 + us / 1000
        clockOffset.store(redisMillis - Int64(System.nowNanos() / 1_000_000), ordering: .relaxed)
        try c.append(["ZADD", .text(keys.nodes), .text(String(redisMillis)), .text(config.nodeID)])
        try c.append(["ZREMRANGEBYSCORE", .text(keys.nodes), "-inf", .text(String(redisMillis - 60_000))])
        try c.append(["HSET", .text(keys.info), "model", .text(config.model), "version", .text(config.version),
                      "request_capacity", .text(String(config.requestCapacity)), "cache", config.cacheTTLMillis > 0 ? "1" : "0",
                      "max_backlog", .text(String(config.maxBacklog))])
        let n = counters.withLock { $0 }
        let nodeKey = keys.node(config.nodeID)
        try c.append(["HSET", .text(nodeKey), "served", .text(String(n.served)), "failed", .text(String(n.failed)),
                      "cache_hits", .text(String(n.cacheHits)), "joined_identical", .text(String(n.joinedIdentical)),
                      "dead_lettered", .text(String(n.deadLettered)), "reclaimed", .text(String(n.reclaimed)),
                      "expired", .text(String(n.expired)), "readers", .text(String(config.readers)),
                      "in_progress", .text(String(inProgress.withLock { $0.count }))])
        try c.append(["PEXPIRE", .text(nodeKey), "60000"])
        for _ in 0..<5 { _ = try c.reply() }
    }

    private var redisNowMillis: Int64 { Int64(System.nowNanos() / 1_000_000) + clockOffset.load(ordering: .relaxed) }

    private func sleep(_ nanos: UInt64) {
        let end = System.nowNanos() + nanos
        while !stopping.load(ordering: .relaxed), System.nowNanos() < end { usleep(10_000) }
    }

    // MARK: readers

    private func readLoop(_ index: Int) {
        var c: RedisConnection? = nil
        var backoff: UInt64 = 50_000_000
        var complained = false
        // Answers queued on `c` but not read yet: a reply goes out in the same write as the
        // next XREADGROUP (one round trip per request on the node's side).
        var queued = 0
        func drain() throws {
            while queued > 0 {
                queued -= 1
                do {
                    if try c!.reply().value.integer == 0 {
                        config.log("info", "a late answer was dropped: its entry had moved to another node (this node was declared dead)")
                    }
                } catch let e as FerryError where !c!.isBroken {
                    config.log("warning", "redis refused a reply step: \(e.message)")
                }
            }
        }
        while !stopping.load(ordering: .relaxed) {
            do {
                if c == nil || c!.isBroken {
                    queued = 0
                    c = try connect()
                    try ensureGroup(c!)
                    if let id = try? c!.command(["CLIENT", "ID"]).value.integer { readerIDs.withLock { $0[index] = id } }
                }
                if let (owner, entry) = reclaimed.withLock({ $0.popLast() }) {
                    // takeOver marked it in progress (touched while it waited for a reader).
                    let id = entry.elements.first.map { $0.text }
                    defer { if let id { inProgress.withLock { _ = $0.remove(id) } } }
                    try drain()
                    queued += handle(entry, owner: owner, connection: c!)
                    continue
                }
                try c!.setTimeout(2_500_000_000)
                try c!.append(["XREADGROUP", "GROUP", .text(keys.name), .text(config.nodeID), "COUNT", "1", "BLOCK", "500",
                               "STREAMS", .text(keys.requests), ">"])
                try drain()
                let r = try c!.reply()
                backoff = 50_000_000
                if complained { config.log("info", "redis reachable again"); complained = false }
                for stream in r.value.elements {
                    let parts = stream.elements
                    guard parts.count == 2 else { continue }
                    for entry in parts[1].elements {
                        try drain()
                        queued += handle(entry, owner: r, connection: c!)
                    }
                }
            } catch let e as FerryError {
                if e.message.contains("NOGROUP"), let c, !c.isBroken { _ = try? ensureGroup(c); continue }  // Redis restarted empty
                if RedisConnection.movedTarget(e) != nil { c = nil; queued = 0; continue }  // the cluster moved the slot
                if !complained && index == 0 { config.log("warning", "redis: \(e.message); retrying") }
                complained = true
                sleep(backoff)
                backoff = min(backoff * 2, 2_000_000_000)
            } catch {
                sleep(backoff)
            }
        }
        // Send what is still queued (a drain must not lose the last answer).
        if queued > 0, let c, !c.isBroken { try? c.flush(); try? drain() }
    }

    /// One entry: validate, consult the cache, run on the local workers, answer, acknowledge.
    /// Returns how many answers it queued on `c` without reading them (the plain answer is
    /// pipelined; everything else is done before it returns).
    private func handle(_ entry: RedisValue, owner: RedisReply, connection c: RedisConnection) -> Int {
        let parts = entry.elements
        guard parts.count == 2, parts[0].type == .string else { return 0 }
        let id = parts[0].text
        var fields: [String: RedisValue] = [:]
        let f = parts[1].elements
        var i = 0
        while i + 1 < f.count { fields[f[i].text] = f[i + 1]; i += 2 }
        if f.isEmpty && parts[1].type != .array { return 0 }  // a deleted entry (XAUTOCLAIM reports those apart)

        // Where to answer: only this channel's reply lists, never a key an entry names.
        let replyTo = fields[RedisWire.fieldReplyTo].map { $0.text }
        let replyPrefix = "ferry:{\(keys.name)}:reply:"
        let validReplyTo = replyTo.flatMap { r -> String? in
            let tail = r.dropFirst(replyPrefix.count)
            return r.hasPrefix(replyPrefix) && !tail.isEmpty && tail.count <= 64 && tail.allSatisfy({ $0.isHexDigit }) ? r : nil
        }
        let requestID = fields[RedisWire.fieldID].flatMap { UInt64($0.text) }
        let ttl = fields[RedisWire.fieldTTL].flatMap { UInt64($0.text) }.map { min($0, Endpoint.maxTimeoutMillis) }
        let answerable = validReplyTo != nil && requestID != nil
        func bury(_ reason: String, code: FerryError.Code, deliveries: Int = 1) {
            let element: [UInt8] = answerable ? RedisWire.prefix(requestID!) + errorMessage(FerryError(code, reason)) : []
            let args: [RedisArgument] = [.text(keys.requests), .text(keys.dead), .text(validReplyTo ?? keys.none), .text(keys.done(entry: id)),
                                         .text(keys.name), .text(id), .text(reason), .text(String(deliveries)), .text(String(config.deadMaxLength)),
                                         .data(element), .text(String((ttl ?? 60_000) + 10_000))]
            do {
                _ = try eval(c, sha.bury, RedisScripts.bury, keyCount: 4, args)
                counters.withLock { $0.deadLettered += 1 }
                config.log("warning", "entry \(id) moved to \(keys.dead): \(reason)")
            } catch {
                config.log("warning", "could not dead-letter entry \(id): \(error)")
            }
        }
        guard let message = fields[RedisWire.fieldMessage], message.type == .string, answerable, let ttl else {
            var missing: [String] = []
            if fields[RedisWire.fieldMessage]?.type != .string { missing.append("m (the message)") }
            if validReplyTo == nil { missing.append("r (a reply list of this channel)") }
            if requestID == nil { missing.append("i (a request id)") }
            if ttl == nil { missing.append("t (a time to live in ms)") }
            bury("malformed entry: missing or invalid field \(missing.joined(separator: ", "))", code: .malformed)
            return 0
        }
        // Past its deadline: the client gave up; drop it unanswered.
        if let added = Int64(id.split(separator: "-").first ?? ""), added + Int64(ttl) < redisNowMillis {
            _ = try? c.command(["XACK", .text(keys.requests), .text(keys.name), .text(id)])
            _ = try? c.command(["XDEL", .text(keys.requests), .text(id)])
            counters.withLock { $0.expired += 1 }
            return 0
        }
        let view: MessageView
        do { view = try MessageView(validating: message.bytes) } catch let e as FerryError {
            bury("invalid message: \(e.message)", code: e.code)
            return 0
        } catch { return 0 }
        inProgress.withLock { _ = $0.insert(id) }
        defer { inProgress.withLock { _ = $0.remove(id) } }

        let prefix = RedisWire.prefix(requestID!)
        let remainingMillis = max(1, Int64(ttl) - max(0, redisNowMillis - (Int64(id.split(separator: "-").first ?? "") ?? redisNowMillis)))
        var digest: String? = nil
        if config.cacheTTLMillis > 0, fields[RedisWire.fieldCache]?.text == "1", view.metadata(RedisWire.cacheMetadataKey) != "off" {
            digest = ResultCache.digest(model: config.model, version: config.version, message: view)
        }
        do {
            if let digest {
                let record = "\(id)\n\(validReplyTo!)\n\(String(decoding: prefix, as: UTF8.self))\n\(ttl + 10_000)"
                let r = try eval(c, sha.begin, RedisScripts.begin, keyCount: 3,
                                 [.text(keys.cache(digest)), .text(keys.running(digest)), .text(keys.waiting(digest)),
                                  .text(record), .text(String(remainingMillis + 1000))])
                let e = r.value.elements
                switch e.first?.integer {
                case 1 where e.count == 2:
                    try withExtendedLifetime(r) {
                        try finish(c, id: id, replyTo: validReplyTo!, element: prefix, body: e[1].bytes, ttl: ttl, digest: nil)
                    }
                    counters.withLock { $0.cacheHits += 1 }
                    return 0
                case 3:
                    counters.withLock { $0.joinedIdentical += 1 }
                    return 0  // answered by the node computing it
                default: break
                }
            }
            let reply = run(message.bytes, timeoutMillis: remainingMillis)
            // Cached only when it is a well-formed success (the worker's bytes are untrusted).
            let ok = digest != nil && reply.withUnsafeBytes { (try? MessageView(validating: $0))?.status == 0 }
            let status = reply.withUnsafeBytes { (try? MessageView(validating: $0))?.status ?? -1 }
            counters.withLock { if status == 0 { $0.served += 1 } else { $0.failed += 1 } }
            if digest == nil {
                // No cache, no waiters: push, expire, acknowledge, delete.
                // One script, pipelined: answered only while the entry is still this node's
                // (a node frozen past the node timeout has lost it, and its answer is dropped).
                let element = prefix + reply
                try c.append([.text("EVAL"), .text(RedisScripts.answer), "2", .text(keys.requests), .text(validReplyTo!),
                              .text(keys.name), .text(id), .text(config.nodeID), .data(element), .text(String(ttl + 10_000))])
                return 1
            }
            try reply.withUnsafeBytes { body in
                try finish(c, id: id, replyTo: validReplyTo!, element: prefix, body: body, ttl: ttl,
                           digest: digest, store: ok && body.count <= config.cacheMaxBytes)
            }
        } catch {
            // Redis went away mid-way: the entry stays pending and is taken over later.
            config.log("warning", "entry \(id) not acknowledged: \(error)")
        }
        return 0
    }

    /// Runs a request on the local workers; the reply's bytes, or an error reply.
    private func run(_ request: UnsafeRawBufferPointer, timeoutMillis: Int64) -> [UInt8] {
        do {
            let call = try local.begin(timeout: .milliseconds(timeoutMillis))
            defer { call.close() }
            try call.send(forwarding: request)
            while true {
                if let bytes = try call.pollReplyBytes(for: .milliseconds(100)) { return Array(bytes) }
            }
        } catch {
            return errorMessage(error as? FerryError ?? FerryError(.system, "\(error)"))
        }
    }

    private func finish(_ c: RedisConnection, id: String, replyTo: String, element prefix: [UInt8], body: UnsafeRawBufferPointer,
                        ttl: UInt64, digest: String?, store: Bool = false) throws {
        let element = UnsafeMutableRawBufferPointer.allocate(byteCount: prefix.count + body.count, alignment: 64)
        defer { element.deallocate() }
        prefix.withUnsafeBytes { element.copyMemory(from: $0) }
        if body.count > 0 { (element.baseAddress! + prefix.count).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        let store = store && digest != nil && config.cacheTTLMillis > 0
        let args: [RedisArgument] = [
            .text(keys.requests), .text(replyTo), .text(keys.done(entry: id)),
            .text(digest.map { keys.cache($0) } ?? keys.none), .text(digest.map { keys.running($0) } ?? keys.none),
            .text(digest.map { keys.waiting($0) } ?? keys.none), .text(keys.cacheIndex),
            .text(keys.name), .text(id), .bytes(UnsafeRawBufferPointer(element)), .text(String(ttl + 10_000)),
            .text(store ? "1" : "0"), .text(String(config.cacheTTLMillis)), .text(String(config.cacheMaxEntries)),
            .text("ferry:{\(keys.name)}:"),
        ]
        _ = try eval(c, sha.finish, RedisScripts.finish, keyCount: 7, args)
    }

    private func eval(_ c: RedisConnection, _ sha: String, _ script: String, keyCount: Int, _ args: [RedisArgument]) throws -> RedisReply {
        do {
            return try c.command([.text("EVALSHA"), .text(sha), .text(String(keyCount))] + args)
        } catch let e as FerryError where e.message.contains("NOSCRIPT") {
            return try c.command([.text("EVAL"), .text(script), .text(String(keyCount))] + args)
        }
    }

    private func errorMessage(_ e: FerryError) -> [UInt8] {
        var m = Message(metadata: ["error": e.message], status: e.code.rawValue)
        if let t = e.remoteType { m.metadata["error_type"] = t }
        if let d = e.detail { m.metadata["error_detail"] = d }
        return (try? m.encoded()) ?? []
    }

    // MARK: heartbeat and takeover

    private func maintainLoop() {
        var c: RedisConnection? = nil
        // Often enough that a live node is never mistaken for a dead one (eight heartbeats per
        // node timeout) and a dead one is noticed within a tick of its timeout.
        let tick = min(250_000_000, max(20_000_000, min(config.claimIdleNanos / 4, config.nodeTimeoutNanos / 8)))
        while !stopping.load(ordering: .relaxed) {
            do {
                if c == nil || c!.isBroken { c = try connect() }
                try c!.setTimeout(2_000_000_000)
                try heartbeat(c!)
                try touchInProgress(c!)
                try reapDeadNodes(c!)
                try takeOver(c!)
            } catch {
                c = nil
            }
            sleep(tick)
        }
    }

    /// Takes over, at once, the entries of nodes whose heartbeat is older than the node
    /// timeout (killed, or frozen: a frozen node that wakes finds them gone and its late
    /// answers are dropped by the `answer` script).
    private func reapDeadNodes(_ c: RedisConnection) throws {
        guard reclaimed.withLock({ $0.isEmpty }) else { return }
        let cutoff = redisNowMillis - Int64(config.nodeTimeoutNanos / 1_000_000)
        let dead = try c.command(["ZRANGEBYSCORE", .text(keys.nodes), "-inf", .text("(\(cutoff)")]).value.elements.map { $0.text }
        for node in dead where node != config.nodeID {
            let r = try eval(c, sha.reapDead, RedisScripts.reapDead, keyCount: 3,
                             [.text(keys.nodes), .text(keys.requests), .text(keys.node(node)),
                              .text(keys.name), .text(node), .text(config.nodeID), .text(String(cutoff)), "64"])
            let taken = r.value.elements.filter { $0.elements.count == 2 && $0.elements[1].type == .array }
            if !taken.isEmpty {
                config.log("warning", "node \(node) missed its heartbeat for \(config.nodeTimeoutNanos / 1_000_000) ms: declared dead, took over \(taken.count) entries")
            }
            for entry in taken { adopt(entry, owner: r, connection: c) }
        }
    }

    /// An entry taken over (from a dead node, or idle too long): run it here, or bury it
    /// when it was delivered too often.
    private func adopt(_ entry: RedisValue, owner r: RedisReply, connection c: RedisConnection) {
        let id = entry.elements[0].text
        if inProgress.withLock({ $0.contains(id) }) { return }
        let p = (try? c.command(["XPENDING", .text(keys.requests), .text(keys.name), .text(id), .text(id), "1"]))?.value.elements ?? []
        let deliveries = p.first.map { Int($0.elements.count == 4 ? $0.elements[3].integer : 1) } ?? 1
        counters.withLock { $0.reclaimed += 1 }
        if deliveries > config.maxDeliveries {
            buryStale(c, id: id, entry: entry, deliveries: deliveries)
        } else {
            config.log("info", "took over entry \(id) (delivery \(deliveries))")
            // In progress from now on: touched (so not taken over again, by this node or
            // another) while a reader is still blocked in XREADGROUP.
            inProgress.withLock { _ = $0.insert(id) }
            reclaimed.withLock { $0.insert((r, entry), at: 0) }
        }
    }

    /// Resets the idle time of entries this node works on, so a slow model is not mistaken
    /// for a dead node (XCLAIM … JUSTID does not count a delivery).
    private func touchInProgress(_ c: RedisConnection) throws {
        let ids = inProgress.withLock { Array($0) }
        guard !ids.isEmpty else { return }
        _ = try eval(c, sha.touch, RedisScripts.touch, keyCount: 1,
                     [.text(keys.requests), .text(keys.name), .text(config.nodeID)] + ids.map { .text($0) })
    }

    /// Takes over entries idle longer than the claim time on any node; buries those
    /// delivered too often.
    private func takeOver(_ c: RedisConnection) throws {
        guard reclaimed.withLock({ $0.isEmpty }) else { return }
        let idle = String(config.claimIdleNanos / 1_000_000)
        let r = try c.command(["XAUTOCLAIM", .text(keys.requests), .text(keys.name), .text(config.nodeID), .text(idle), "0-0", "COUNT", "16"])
        let parts = r.value.elements
        guard parts.count >= 2 else { return }
        for entry in parts[1].elements {
            let e = entry.elements
            guard e.count == 2, e[1].type == .array else { continue }
            // Ours already (running, or taken over and waiting for a reader): its touch came
            // after its idle time ran out. Running it again would be a needless second run.
            adopt(entry, owner: r, connection: c)
        }
    }

    private func buryStale(_ c: RedisConnection, id: String, entry: RedisValue, deliveries: Int) {
        var fields: [String: RedisValue] = [:]
        let f = entry.elements[1].elements
        var i = 0
        while i + 1 < f.count { fields[f[i].text] = f[i + 1]; i += 2 }
        let replyPrefix = "ferry:{\(keys.name)}:reply:"
        let replyTo = fields[RedisWire.fieldReplyTo]?.text
        let rid = fields[RedisWire.fieldID].flatMap { UInt64($0.text) }
        let ok = replyTo.map { $0.hasPrefix(replyPrefix) && $0.count <= replyPrefix.count + 64 } ?? false
        let reason = "delivered \(deliveries) times without an answer (the nodes that took it died or stalled; limit --max-deliveries \(config.maxDeliveries))"
        let element: [UInt8] = ok && rid != nil ? RedisWire.prefix(rid!) + errorMessage(FerryError(.peerDied, reason)) : []
        let ttl = fields[RedisWire.fieldTTL].flatMap { UInt64($0.text) } ?? 60_000
        _ = try? eval(c, sha.bury, RedisScripts.bury, keyCount: 4,
                      [.text(keys.requests), .text(keys.dead), .text(ok ? replyTo! : keys.none), .text(keys.done(entry: id)),
                       .text(keys.name), .text(id), .text(reason), .text(String(deliveries)), .text(String(config.deadMaxLength)),
                       .data(element), .text(String(min(ttl, Endpoint.maxTimeoutMillis) + 10_000))])
        counters.withLock { $0.deadLettered += 1 }
        config.log("warning", "entry \(id) moved to \(keys.dead): \(reason)")
    }
}
