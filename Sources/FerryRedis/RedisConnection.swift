import FerryCore
import FerryTCP
import CHiredis
import Glibc

/// A command argument: text, or bytes read in place from the caller's memory when formatted.
public enum RedisArgument {
    case text(String)
    case bytes(UnsafeRawBufferPointer)
    case data([UInt8])
}

extension RedisArgument: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
}

/// One connection to a Redis server, used by one thread at a time. hiredis does the Redis
/// protocol (formatting commands, parsing replies); the bytes travel on Ferry's own socket
/// stream, plain or TLS (BoringSSL), because Debian's hiredis 0.14 has no TLS. Every failure
/// maps to a `FerryError`: I/O errors and timeouts break the connection (`isBroken`; make a
/// new one), error replies do not.
public final class RedisConnection {
    private let stream: SocketStream
    private let reader: UnsafeMutablePointer<redisReader>
    /// Commands formatted but not sent yet (hiredis buffers, freed once sent).
    private var queued: [(UnsafeMutablePointer<CChar>, Int)] = []
    private let stage = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)
    /// Where it is connected, for messages ("127.0.0.1:6379").
    public let address: String
    private var timeoutNanos: UInt64
    /// True after an I/O error or timeout: the stream cannot be trusted any more.
    public private(set) var isBroken = false

    /// Connects (with TLS when `tls` is given, and authenticates when `password` is) within
    /// `timeoutNanos`; later commands time out after `timeoutNanos` too unless `setTimeout`
    /// says otherwise.
    public init(host: String, port: Int, user: String? = nil, password: String? = nil, tls: TLSOptions? = nil, timeoutNanos: UInt64) throws {
        address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        self.timeoutNanos = max(timeoutNanos, 1_000_000)
        let until = deadline(after: self.timeoutNanos)
        let fd: Int32
        do { fd = try System.tcpConnect(host: host, port: port, timeoutNanos: self.timeoutNanos) } catch let e as FerryError {
            stage.deallocate()
            let why = e.message.firstRange(of: " (is `").map { String(e.message[..<$0.lowerBound]) } ?? e.message
            throw FerryError(.disconnected, "cannot connect to Redis at \(address): \(why)")
        }
        do {
            stream = try SocketStream(fd: fd, tls: tls, host: host, until: until)
        } catch let e as FerryError {
            System.close(fd)
            stage.deallocate()
            let text = e.message.hasPrefix("the gateway's ") ? "its" + e.message.dropFirst("the gateway's".count) : e.message
            throw FerryError(e.code, "Redis at \(address): \(text)")
        }
        guard let r = redisReaderCreate() else {
            System.close(fd)
            stage.deallocate()
            throw FerryError(.system, "cannot allocate a Redis reply parser")
        }
        reader = r
        if let password {
            do {
                if let user { _ = try command(["AUTH", .text(user), .text(password)]) } else { _ = try command(["AUTH", .text(password)]) }
            } catch var e as FerryError {
                if e.code != .disconnected && e.code != .timedOut { e.code = .permission }
                e.message = "Redis at \(address) refused the credentials: \(e.message)"
                throw e
            }
        }
    }

    deinit {
        for (p, _) in queued { redisFreeCommand(p) }
        redisReaderFree(reader)
        System.close(stream.fd)
        stage.deallocate()
    }

    /// Connects to the server that owns `key`: on a Redis Cluster, the node serving its hash
    /// slot (following MOVED redirects, at most 3); elsewhere simply `host:port`. Every key
    /// of a channel shares one hash tag, so one connection reaches all of them.
    public static func owner(of key: String, host: String, port: Int, user: String?, password: String?, tls: TLSOptions? = nil,
                             timeoutNanos: UInt64) throws -> RedisConnection {
        var (h, p) = (host, port)
        for _ in 0..<4 {
            let c = try RedisConnection(host: h, port: p, user: user, password: password, tls: tls, timeoutNanos: timeoutNanos)
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
    public func setTimeout(_ nanos: UInt64) throws { timeoutNanos = max(nanos, 1_000_000) }

    /// Sends one command and reads its reply. An error reply throws (`.permission` for
    /// authentication and ACL refusals, `.system` for the rest, its text included).
    public func command(_ args: [RedisArgument]) throws -> RedisReply {
        try append(args)
        try flush()
        guard let r = try reply(until: deadline(after: timeoutNanos)) else {
            isBroken = true
            throw FerryError(.timedOut, "Redis at \(address) did not answer in time")
        }
        return r
    }

    /// Queues a command (pipelining: `flush`, then `reply` once per command).
    public func append(_ args: [RedisArgument]) throws {
        guard !isBroken else { throw FerryError(.disconnected, "the connection to Redis at \(address) is broken") }
        var target: UnsafeMutablePointer<CChar>? = nil
        let n = RedisConnection.withArgv(args) { argc, argv, lengths in redisFormatCommandArgv(&target, argc, argv, lengths) }
        guard n > 0, let target else { throw FerryError(.system, "cannot format a Redis command (out of memory)") }
        queued.append((target, Int(n)))
    }

    /// Reads the next reply (sending what is queued first), waiting as long as the timeout.
    public func reply() throws -> RedisReply {
        try flush()
        guard let r = try reply(until: deadline(after: timeoutNanos)) else {
            isBroken = true
            throw FerryError(.timedOut, "Redis at \(address) did not answer in time")
        }
        return r
    }

    /// Writes out what `append` queued, without reading.
    public func flush() throws {
        guard !isBroken else { throw FerryError(.disconnected, "the connection to Redis at \(address) is broken") }
        defer {
            for (p, _) in queued { redisFreeCommand(p) }
            queued.removeAll()
        }
        let until = deadline(after: timeoutNanos)
        // Small pipelined commands go out in one write (one segment, one wake-up of Redis).
        var parts = queued.map { UnsafeRawBufferPointer(start: $0.0, count: $0.1) }
        let total = parts.reduce(0) { $0 + $1.count }
        var joined: UnsafeMutableRawBufferPointer? = nil
        defer { joined?.deallocate() }
        if parts.count > 1 && total <= 256 << 10 {
            let j = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
            var at = 0
            for part in parts { (j.baseAddress! + at).copyMemory(from: part.baseAddress!, byteCount: part.count); at += part.count }
            joined = j
            parts = [UnsafeRawBufferPointer(j)]
        }
        for part in parts {
            do {
                let (_, complete) = try stream.sendAll(part, until: until)
                guard complete else {
                    isBroken = true
                    throw FerryError(.timedOut, "Redis at \(address) did not take a command in time")
                }
            } catch let e as FerryError {
                isBroken = true
                throw e.code == .timedOut ? e : FerryError(.disconnected, "Redis at \(address) is unreachable (sending: \(e.message))")
            }
        }
    }

    /// The next reply if one is complete by `until` (monotonic ns), else nil with the
    /// connection intact: a caller can wait in slices for a blocking command's answer. At
    /// least one look, even when `until` has passed. Flush first.
    public func reply(until: UInt64) throws -> RedisReply? {
        guard !isBroken else { throw FerryError(.disconnected, "the connection to Redis at \(address) is broken") }
        var raw: UnsafeMutableRawPointer? = nil
        while true {
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                isBroken = true
                throw FerryError(.protocolViolation, "Redis at \(address) sent something that is not the Redis protocol")
            }
            if raw != nil { break }
            let n: Int
            do { n = try stream.receive(into: stage, count: 1 << 16) } catch let e as FerryError {
                isBroken = true
                throw FerryError(.disconnected, e.message.contains("closed") ? "Redis at \(address) closed the connection" : "Redis at \(address) is unreachable (\(e.message))")
            }
            if n > 0 {
                guard redisReaderFeed(reader, stage.assumingMemoryBound(to: CChar.self), n) == REDIS_OK else {
                    isBroken = true
                    throw FerryError(.protocolViolation, "Redis at \(address): the reply parser failed")
                }
                continue
            }
            guard try System.waitReady(stream.fd, write: false, until: until) else { return nil }
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
