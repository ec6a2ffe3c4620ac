import CHiredis
import Glibc

/// A command argument: text, or bytes passed by pointer (no copy of a large payload).
public enum RedisArgument {
    case text(String)
    case bytes(UnsafeRawBufferPointer)
    case data([UInt8])
}

extension RedisArgument: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
}

/// One blocking connection to a Redis server through hiredis, used by one thread at a time.
/// Every failure maps to a `FerryError`: I/O errors and timeouts break the connection
/// (`isBroken`; make a new one), error replies do not.
public final class RedisConnection {
    private let context: UnsafeMutablePointer<redisContext>
    /// Where it is connected, for messages ("127.0.0.1:6379").
    public let address: String
    private var timeoutNanos: UInt64 = 0
    /// True after an I/O error or timeout: the stream cannot be trusted any more.
    public private(set) var isBroken = false

    /// Connects (and authenticates when `password` is given) within `timeoutNanos`; later
    /// commands time out after `timeoutNanos` too unless `setTimeout` says otherwise.
    public init(host: String, port: Int, user: String? = nil, password: String? = nil, timeoutNanos: UInt64) throws {
        address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        guard let c = redisConnectWithTimeout(host, Int32(port), RedisConnection.timeval(timeoutNanos)) else {
            throw FerryError(.system, "cannot allocate a Redis connection")
        }
        if c.pointee.err != 0 {
            let text = RedisConnection.errorText(c)
            redisFree(c)
            throw FerryError(.disconnected, "cannot connect to Redis at \(address): \(text)")
        }
        context = c
        redisEnableKeepAlive(c)
        try setTimeout(timeoutNanos)
        if let password {
            do {
                if let user { _ = try command(["AUTH", .text(user), .text(password)]) } else { _ = try command(["AUTH", .text(password)]) }
            } catch var e as FerryError {
                if e.code != .disconnected { e.code = .permission }
                e.message = "Redis at \(address) refused the credentials: \(e.message)"
                throw e
            }
        }
    }

    deinit { redisFree(context) }

    /// Connects to the server that owns `key`: on a Redis Cluster, the node serving its hash
    /// slot (following MOVED redirects, at most 3); elsewhere simply `host:port`. Every key
    /// of a channel shares one hash tag, so one connection reaches all of them.
    public static func owner(of key: String, host: String, port: Int, user: String?, password: String?,
                             timeoutNanos: UInt64) throws -> RedisConnection {
        var (h, p) = (host, port)
        for _ in 0..<4 {
            let c = try RedisConnection(host: h, port: p, user: user, password: password, timeoutNanos: timeoutNanos)
            do {
                _ = try c.command(["EXISTS", .text(key)])
                return c
            } catch let e as FerryError {
                guard let (nh, np) = movedTarget(e) else { throw e }
                (h, p) = (nh, np)
            }
        }
        throw FerryError(.system, "Redis Cluster kept redirecting the key \(key) (MOVED more than 3 times)")
    }

    /// The new owner a MOVED error names (a Redis Cluster resharded, or the wrong node was asked).
    public static func movedTarget(_ e: FerryError) -> (String, Int)? {
        let words = e.message.split(separator: " ")
        guard let i = words.firstIndex(of: "MOVED") else { return nil }
        let parts = words[(i + 1)...].map { $0 }
        guard parts.count >= 2, let colon = parts[1].lastIndex(of: ":"), let port = Int(parts[1][parts[1].index(after: colon)...]) else { return nil }
        let host = String(parts[1][..<colon])
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }

    /// Sets how long a command may wait for its reply (a blocking command needs more than
    /// its own timeout).
    public func setTimeout(_ nanos: UInt64) throws {
        guard nanos != timeoutNanos else { return }
        guard redisSetTimeout(context, RedisConnection.timeval(nanos)) == REDIS_OK else {
            throw brokenError("setting the socket timeout")
        }
        timeoutNanos = nanos
    }

    /// Sends one command and reads its reply. An error reply throws (`.permission` for
    /// authentication and ACL refusals, `.system` for the rest, its text included).
    public func command(_ args: [RedisArgument]) throws -> RedisReply {
        try append(args)
        return try reply()
    }

    /// Queues a command in the output buffer (pipelining: `reply()` once per command).
    public func append(_ args: [RedisArgument]) throws {
        guard !isBroken else { throw FerryError(.disconnected, "the connection to Redis at \(address) is broken") }
        let status = RedisConnection.withArgv(args) { argc, argv, lengths in
            redisAppendCommandArgv(context, argc, argv, lengths)
        }
        guard status == REDIS_OK else { throw brokenError("queueing a command") }
    }

    /// Reads the next reply (flushing what is queued first).
    public func reply() throws -> RedisReply {
        guard !isBroken else { throw FerryError(.disconnected, "the connection to Redis at \(address) is broken") }
        var raw: UnsafeMutableRawPointer? = nil
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else { throw brokenError("waiting for a reply") }
        let r = RedisReply(raw.assumingMemoryBound(to: redisReply.self))
        if r.value.type == .error { throw RedisConnection.refusal(r.value.text) }
        return r
    }

    /// Writes out what `append` queued, without reading.
    public func flush() throws {
        guard !isBroken else { throw FerryError(.disconnected, "the connection to Redis at \(address) is broken") }
        var done: Int32 = 0
        repeat {
            guard redisBufferWrite(context, &done) == REDIS_OK else { throw brokenError("sending") }
        } while done == 0
    }

    /// The next reply if one is complete by `until` (monotonic ns), else nil with the
    /// connection intact: a caller can wait in slices for a blocking command's answer. At
    /// least one look, even when `until` has passed. Flush first.
    public func reply(until: UInt64) throws -> RedisReply? {
        guard !isBroken else { throw FerryError(.disconnected, "the connection to Redis at \(address) is broken") }
        var raw: UnsafeMutableRawPointer? = nil
        guard redisGetReplyFromReader(context, &raw) == REDIS_OK else { throw brokenError("parsing a reply") }
        while raw == nil {
            let fd = context.pointee.fd
            if !System.readable(fd) { guard try System.waitReady(fd, write: false, until: until) else { return nil } }
            guard redisBufferRead(context) == REDIS_OK else { throw brokenError("waiting for a reply") }
            guard redisGetReplyFromReader(context, &raw) == REDIS_OK else { throw brokenError("parsing a reply") }
        }
        let r = RedisReply(raw!.assumingMemoryBound(to: redisReply.self))
        if r.value.type == .error { throw RedisConnection.refusal(r.value.text) }
        return r
    }

    /// The error an error reply means.
    static func refusal(_ text: String) -> FerryError {
        let auth = ["NOAUTH", "WRONGPASS", "NOPERM", "ERR AUTH", "ERR invalid password", "ERR Client sent AUTH"]
        if auth.contains(where: { text.hasPrefix($0) }) { return FerryError(.permission, "Redis refused: \(text)") }
        return FerryError(.system, "Redis replied with an error: \(text)")
    }

    private func brokenError(_ doing: String) -> FerryError {
        isBroken = true
        let text = RedisConnection.errorText(context)
        let timedOut = text.contains("temporarily unavailable") || text.contains("timed out")
        return FerryError(timedOut ? .timedOut : .disconnected,
                          "Redis at \(address) \(timedOut ? "did not answer in time" : "is unreachable") (\(doing): \(text))")
    }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let n = bytes.firstIndex(of: 0) ?? bytes.count
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[..<n]), as: UTF8.self)
            return text.isEmpty ? "connection lost" : text
        }
    }

    private static func timeval(_ nanos: UInt64) -> Glibc.timeval {
        let n = max(nanos, 1_000)
        return Glibc.timeval(tv_sec: Int(n / 1_000_000_000), tv_usec: Int((n % 1_000_000_000) / 1000))
    }

    /// Calls `body` with argc/argv/argvlen pointing at `args` (text kept alive meanwhile).
    private static func withArgv<R>(_ args: [RedisArgument], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        var owned: [UnsafeMutableRawPointer] = []
        defer { for p in owned { p.deallocate() } }
        let argv = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: args.count)
        let lengths = UnsafeMutablePointer<Int>.allocate(capacity: args.count)
        defer { argv.deallocate(); lengths.deallocate() }
        func copy(_ bytes: UnsafeRawBufferPointer, _ i: Int) {
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
            if bytes.count > 0 { p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            owned.append(p)
            argv[i] = UnsafePointer(p.assumingMemoryBound(to: CChar.self))
            lengths[i] = bytes.count
        }
        for (i, a) in args.enumerated() {
            switch a {
            case .text(let s): var s = s; s.withUTF8 { copy(UnsafeRawBufferPointer($0), i) }
            case .data(let d): d.withUnsafeBytes { copy($0, i) }
            case .bytes(let b):
                if let base = b.baseAddress {
                    argv[i] = UnsafePointer(base.assumingMemoryBound(to: CChar.self))
                    lengths[i] = b.count
                } else {
                    copy(b, i)
                }
            }
        }
        return body(Int32(args.count), argv, UnsafePointer(lengths))
    }
}

/// A reply from Redis, freed with this object; its values (and their bytes) are valid while
/// it lives.
public final class RedisReply {
    let root: UnsafeMutablePointer<redisReply>
    init(_ root: UnsafeMutablePointer<redisReply>) { self.root = root }
    deinit { freeReplyObject(root) }
    /// The top-level value.
    public var value: RedisValue { RedisValue(root, owner: self) }
}

/// A view of one value in a `RedisReply`; it keeps the reply alive, so its bytes stay valid
/// while the view (or a copy of it) lives.
public struct RedisValue {
    let p: UnsafeMutablePointer<redisReply>
    /// The reply this value is part of.
    public let owner: RedisReply
    init(_ p: UnsafeMutablePointer<redisReply>, owner: RedisReply) { self.p = p; self.owner = owner }

    /// The RESP2 value kinds.
    public enum Kind { case string, array, integer, null, status, error }

    /// Which kind of value it is.
    public var type: Kind {
        switch p.pointee.type {
        case REDIS_REPLY_STRING: return .string
        case REDIS_REPLY_ARRAY: return .array
        case REDIS_REPLY_INTEGER: return .integer
        case REDIS_REPLY_STATUS: return .status
        case REDIS_REPLY_ERROR: return .error
        default: return .null
        }
    }
    /// The bytes of a string, status or error (empty for others).
    public var bytes: UnsafeRawBufferPointer {
        guard let s = p.pointee.str else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: s, count: Int(p.pointee.len))
    }
    /// The text of a string, status or error.
    public var text: String { String(decoding: bytes, as: UTF8.self) }
    /// An integer reply.
    public var integer: Int64 { Int64(p.pointee.integer) }
    /// The elements of an array (empty for others).
    public var elements: [RedisValue] {
        guard type == .array, let e = p.pointee.element else { return [] }
        return (0..<Int(p.pointee.elements)).map { RedisValue(e[$0]!, owner: owner) }
    }
    /// True for a nil (missing) value.
    public var isNull: Bool { type == .null }
}
