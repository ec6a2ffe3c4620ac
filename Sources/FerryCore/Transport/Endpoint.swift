#if canImport(Glibc)
import Glibc
#endif

/// A parsed channel URL. Each scheme parses its own options:
///
/// * `shm://NAME?slots=8&slot_size=4M&wait=hybrid&spin_us=100&timeout_ms=10000&scope=user`
///   (`slots` and `slot_size` matter to the process that creates the channel);
/// * `tcp://HOST:PORT/NAME?timeout_ms=10000&connect_timeout_ms=3000&token_file=PATH&tls=1&ca_file=PATH&wait=futex`
///   (a `ferry serve --listen` gateway; HOST may be a name, an IPv4 or a `[IPv6]` address);
/// * `redis://[USER:PASSWORD@]HOST:PORT/NAME?timeout_ms=10000&connect_timeout_ms=3000&cache=1&max_request=64M&ca_file=PATH`
///   (Redis Streams served by `ferry serve --redis` nodes; USER and PASSWORD are Redis AUTH;
///   `rediss://` or `tls=1` for TLS).
///
/// Every process picks its own wait strategy and default timeout.
public struct Endpoint: Sendable, Equatable {
    /// Transport scheme ("shm", "tcp").
    public var scheme: String
    /// Channel name.
    public var name: String
    /// tcp://: the gateway's host and port.
    public var host: String = "", port: Int = 0
    /// redis://: the AUTH user (an ACL user; nil: the default user) and password.
    public var user: String?, password: String?
    /// redis://: look up the nodes' result cache before sending (`cache=0` turns it off for
    /// this client; a call turns it off for itself with metadata `ferry.cache=off`).
    public var useCache: Bool = true
    /// redis://: largest request this client sends (`max_request=SIZE`; default: what the
    /// serving nodes announce, else 8 MiB).
    public var maxRequest: Int?
    /// tcp:// and redis://: how long connecting (and the handshake) may take, in nanoseconds (default 3 s).
    public var connectTimeoutNanos: UInt64 = 3_000_000_000
    /// tcp://: a file holding the gateway's shared secret (`ferry serve --auth-token-file`);
    /// the secret proves itself by HMAC over the gateway's challenge and never crosses the wire.
    public var tokenFile: String?
    /// shm:// servers: the identity of the model they run (`model=`); a channel is served by
    /// one model only (docs/reliability.md).
    public var model: String?
    /// tcp:// and redis://: TLS to the gateway or Redis (`tls=1`, or `rediss://`; `ca_file=PATH`
    /// names the authorities to trust and implies it). The certificate must name the URL's host.
    public var tls: TLSOptions?
    /// tcp://: tensors this client compresses before sending (`compress=zstd|jpeg|jpeg,zstd`,
    /// `jpeg_quality=1..100`, `zstd_level=1..19`); the gateway expands them, so workers get
    /// plain arrays. Off by default.
    public var compression: TensorCodec.Options?
    /// Number of slots when creating (default 8).
    public var slots: Int = 8
    /// Bytes per slot when creating (default 4 MiB: 8 × 4 MiB fits a default Docker container's
    /// 64 MiB /dev/shm with room to spare; a request and its reply share a slot).
    public var slotSize: Int = 4 << 20
    /// How this process waits.
    public var wait: WaitStrategy = .standard
    /// Default per-call timeout in nanoseconds (default 10 s).
    public var timeoutNanos: UInt64 = 10_000_000_000
    /// `scope=shared`: a channel any local user may use (mode 0666, its own namespace of
    /// names). By default a channel belongs to the user that created it (mode 0600, the uid
    /// is part of the segment's name, so users never collide on a name).
    public var shared: Bool = false
    /// The parameters the URL set explicitly (a joining worker checks them against the channel).
    public var given: Set<String> = []

    /// Longest timeout accepted anywhere (30 days): longer ones are surely a unit mistake.
    public static let maxTimeoutMillis: UInt64 = 30 * 86_400_000
    /// Longest spin before sleeping (10 s).
    public static let maxSpinMicros: UInt64 = 10_000_000

    /// Parses `url`; unknown parameters and malformed values are errors.
    public init(_ url: String) throws {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw FerryError(.invalidArgument, "\"\(url)\" is not a channel URL (expected shm://NAME)")
        }
        scheme = String(parts[0])
        var rest = String(parts[1])
        var query = ""
        if let q = rest.firstIndex(of: "?") {
            query = String(rest[rest.index(after: q)...])
            rest = String(rest[..<q])
        }
        name = rest
        switch scheme {
        case "shm": break
        case "tcp":
            // tcp://HOST:PORT/NAME
            guard let slash = rest.firstIndex(of: "/") else {
                throw FerryError(.invalidArgument, "\"\(url)\": a tcp:// URL needs a channel name (tcp://HOST:PORT/NAME)")
            }
            let authority = String(rest[..<slash])
            name = String(rest[rest.index(after: slash)...])
            (host, port) = try Endpoint.parseHostPort(authority, in: url)
            wait = .futex  // over a network the wait is in poll(2); spinning only when asked
        case "redis", "rediss":
            // redis://[USER:PASSWORD@]HOST:PORT/NAME; rediss:// is the same over TLS.
            if scheme == "rediss" {
                scheme = "redis"
                tls = TLSOptions()
            }
            guard let slash = rest.lastIndex(of: "/") else {
                throw FerryError(.invalidArgument, "\"\(Endpoint.redacted(url))\": a redis:// URL needs a channel name (redis://HOST:PORT/NAME)")
            }
            var authority = String(rest[..<slash])
            name = String(rest[rest.index(after: slash)...])
            if let at = authority.lastIndex(of: "@") {
                let credentials = String(authority[..<at])
                authority = String(authority[authority.index(after: at)...])
                if let colon = credentials.firstIndex(of: ":") {
                    let u = Endpoint.percentDecoded(String(credentials[..<colon]))
                    user = u.isEmpty ? nil : u
                    password = Endpoint.percentDecoded(String(credentials[credentials.index(after: colon)...]))
                } else {
                    password = Endpoint.percentDecoded(credentials)  // redis://PASSWORD@HOST:PORT/NAME
                }
                guard password?.isEmpty == false else { throw FerryError(.invalidArgument, "\"\(Endpoint.redacted(url))\": the Redis password is empty") }
            }
            (host, port) = try Endpoint.parseHostPort(authority, in: Endpoint.redacted(url))
            wait = .futex
        default:
            throw FerryError(.invalidArgument, "unknown transport \"\(scheme)://\" (expected shm://NAME, tcp://HOST:PORT/NAME or redis://HOST:PORT/NAME)")
        }
        var spinMicros: UInt64? = nil
        var waitName: String? = nil
        var jpegQuality: Int? = nil, zstdLevel: Int? = nil
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw FerryError(.invalidArgument, "URL parameter \"\(pair)\" has no value") }
            guard given.insert(kv[0]).inserted else {
                throw FerryError(.invalidArgument, "URL parameter \"\(kv[0])\" is given twice in \"\(url)\"")
            }
            switch kv[0] {
            case "slots" where scheme == "shm":
                guard let v = Int(kv[1]), v >= 1, v <= SegmentLayout.maxSlots else {
                    throw FerryError(.invalidArgument, "slots must be an integer in 1...\(SegmentLayout.maxSlots)")
                }
                slots = v
            case "slot_size" where scheme == "shm": slotSize = try Endpoint.parseSize(kv[1])
            case "model" where scheme == "shm":
                let m = Endpoint.percentDecoded(kv[1])
                guard !m.isEmpty, m.utf8.count <= SegmentLayout.maxModelLength else {
                    throw FerryError(.invalidArgument, "model= takes a model identity of 1 to \(SegmentLayout.maxModelLength) bytes")
                }
                model = m
            case "wait": waitName = kv[1]
            case "spin_us":
                guard let v = UInt64(kv[1]), v <= Endpoint.maxSpinMicros else {
                    throw FerryError(.invalidArgument, "spin_us=\(kv[1]): use a whole number of microseconds up to \(Endpoint.maxSpinMicros)")
                }
                spinMicros = v
            case "scope" where scheme == "shm":
                switch kv[1] {
                case "user": shared = false
                case "shared": shared = true
                default: throw FerryError(.invalidArgument, "scope=\(kv[1]): use user (the default) or shared")
                }
            case "timeout_ms":
                guard let v = UInt64(kv[1]), v > 0, v <= Endpoint.maxTimeoutMillis else {
                    throw FerryError(.invalidArgument, "timeout_ms=\(kv[1]): use a whole number of milliseconds in 1...\(Endpoint.maxTimeoutMillis) (30 days)")
                }
                timeoutNanos = v * 1_000_000
            case "cache" where scheme == "redis":
                switch kv[1] {
                case "1", "true", "yes", "on": useCache = true
                case "0", "false", "no", "off": useCache = false
                default: throw FerryError(.invalidArgument, "cache=\(kv[1]): use 1 or 0")
                }
            case "max_request" where scheme == "redis":
                maxRequest = try Endpoint.parseSize(kv[1])
            case "connect_timeout_ms" where scheme == "tcp" || scheme == "redis":
                guard let v = UInt64(kv[1]), v > 0, v <= Endpoint.maxTimeoutMillis else {
                    throw FerryError(.invalidArgument, "connect_timeout_ms=\(kv[1]): use a whole number of milliseconds in 1...\(Endpoint.maxTimeoutMillis)")
                }
                connectTimeoutNanos = v * 1_000_000
            case "tls" where scheme == "tcp" || scheme == "redis":
                switch kv[1] {
                case "1", "true", "yes": tls = tls ?? TLSOptions()
                case "0", "false", "no": tls = nil
                default: throw FerryError(.invalidArgument, "tls=\(kv[1]): use 1 or 0")
                }
            case "ca_file" where scheme == "tcp" || scheme == "redis":
                guard !kv[1].isEmpty else { throw FerryError(.invalidArgument, "ca_file is empty") }
                tls = TLSOptions(caFile: Endpoint.percentDecoded(kv[1]))
            case "compress" where scheme == "tcp":
                compression = try TensorCodec.Options(parsing: kv[1])
            case "jpeg_quality" where scheme == "tcp":
                guard let v = Int(kv[1]), (1...100).contains(v) else { throw FerryError(.invalidArgument, "jpeg_quality=\(kv[1]): use 1...100") }
                jpegQuality = v
            case "zstd_level" where scheme == "tcp":
                guard let v = Int(kv[1]), (1...19).contains(v) else { throw FerryError(.invalidArgument, "zstd_level=\(kv[1]): use 1...19") }
                zstdLevel = v
            case "password_file" where scheme == "redis":
                // The password out of the URL (and out of `ps`): a private file, like token_file.
                guard password == nil else { throw FerryError(.invalidArgument, "give the Redis password in the URL or in password_file=, not both") }
                password = try Endpoint.readPasswordFile(Endpoint.percentDecoded(kv[1]))
            case "token_file" where scheme == "tcp":
                guard !kv[1].isEmpty else { throw FerryError(.invalidArgument, "token_file is empty") }
                tokenFile = Endpoint.percentDecoded(kv[1])
            default:
                let known = scheme == "tcp" ? "wait, spin_us, timeout_ms, connect_timeout_ms, token_file, tls, ca_file, compress, jpeg_quality, zstd_level"
                    : scheme == "redis" ? "wait, spin_us, timeout_ms, connect_timeout_ms, cache, max_request, tls, ca_file, password_file"
                    : "slots, slot_size, wait, spin_us, timeout_ms, scope, model"
                throw FerryError(.invalidArgument, "unknown URL parameter \"\(kv[0])\" for \(scheme):// (known: \(known))")
            }
        }
        if jpegQuality != nil || zstdLevel != nil {
            guard compression != nil else { throw FerryError(.invalidArgument, "jpeg_quality and zstd_level need compress=…") }
            if let q = jpegQuality { compression!.jpegQuality = q }
            if let l = zstdLevel { compression!.zstdLevel = l }
        }
        // As redis-cli does: a password from the environment when neither the URL nor
        // password_file= gives one (keeps it out of the command line).
        if scheme == "redis", password == nil, let env = getenv("REDISCLI_AUTH"), env.pointee != 0 {
            password = String(cString: env)
        }
        if let w = waitName { wait = try WaitStrategy(name: w, spinMicros: spinMicros) }
        else if let s = spinMicros { wait = .spinThenFutex(spinNanos: s * 1000) }
        try Endpoint.validateName(name)
    }

    /// Checks a channel name (the same rule for every transport: it becomes a file name in
    /// /dev/shm and a key in Redis).
    public static func validateName(_ name: String) throws {
        let ok = !name.isEmpty && name.utf8.count <= 200 && !name.hasPrefix(".") && name.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D
        }
        guard ok else {
            throw FerryError(.invalidArgument, "invalid channel name \"\(name)\": use 1-200 characters of A-Z a-z 0-9 . _ - (no '/', not starting with '.')")
        }
    }

    /// A Redis password from a file of mode 0600 (a trailing newline is not part of it).
    static func readPasswordFile(_ path: String) throws -> String {
        guard !path.isEmpty else { throw FerryError(.invalidArgument, "password_file is empty") }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw System.error("open", path) }
        defer { close(fd) }
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else { throw System.error("fstat", path) }
        guard st.st_mode & 0o077 == 0 else {
            throw FerryError(.permission, "\(path) may be read by other users (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it")
        }
        guard st.st_size > 0, st.st_size <= 4096 else { throw FerryError(.invalidArgument, "\(path): a password file holds 1 to 4096 bytes") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw System.error("read", path) }
        while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }
        guard !bytes.isEmpty, let text = String(validating: bytes, as: UTF8.self) else {
            throw FerryError(.invalidArgument, "\(path): the password is empty or not UTF-8")
        }
        return text
    }

    /// `url` with the password of a redis:// URL hidden (for messages and logs).
    public static func redacted(_ url: String) -> String {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return url }
        let rest = parts[1]
        let head = rest[..<(rest.firstIndex(of: "?") ?? rest.endIndex)]
        guard let at = head.lastIndex(of: "@") else { return url }
        let credentials = rest[..<at]
        let user: String = credentials.firstIndex(of: ":").map { String(credentials[..<$0]) + ":" } ?? ""
        return String(parts[0]) + "://" + user + "***" + String(rest[at...])
    }

    /// Splits "HOST:PORT" ("[::1]:PORT" for IPv6).
    static func parseHostPort(_ authority: String, in url: String) throws -> (String, Int) {
        var host: Substring, portText: Substring
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw FerryError(.invalidArgument, "\"\(url)\": unclosed [ in the IPv6 address")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            guard after.hasPrefix(":") else { throw FerryError(.invalidArgument, "\"\(url)\": a tcp:// URL needs a port (tcp://[ADDR]:PORT/NAME)") }
            portText = after.dropFirst()
        } else {
            guard let colon = authority.lastIndex(of: ":") else {
                throw FerryError(.invalidArgument, "\"\(url)\": a tcp:// URL needs a port (tcp://HOST:PORT/NAME)")
            }
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        }
        guard !host.isEmpty, host.utf8.count <= 253,
              host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_") }) else {
            throw FerryError(.invalidArgument, "\"\(url)\": \"\(host)\" is not a host name or address")
        }
        guard let port = Int(portText), port >= 1, port <= 65535 else {
            throw FerryError(.invalidArgument, "\"\(url)\": port \"\(portText)\" is not in 1...65535")
        }
        return (String(host), port)
    }

    /// `%XX` escapes decoded (a path in a URL parameter); malformed escapes stay as they are.
    static func percentDecoded(_ text: String) -> String {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%"), bytes.count >= 2,
               let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses "4096", "64K", "8M", "1G" (binary multiples).
    public static func parseSize(_ text: String) throws -> Int {
        var digits = text
        var mult = 1
        if let last = text.last, !last.isNumber {
            digits = String(text.dropLast())
            switch last {
            case "k", "K": mult = 1 << 10
            case "m", "M": mult = 1 << 20
            case "g", "G": mult = 1 << 30
            default: throw FerryError(.invalidArgument, "size \"\(text)\": unknown unit (use K, M or G)")
            }
        }
        guard let v = Int(digits), v > 0, v <= SegmentLayout.maxSlotSize / mult else {
            throw FerryError(.invalidArgument, "size \"\(text)\" is not a positive size up to 64G")
        }
        return v * mult
    }
}

/// tcp:// and redis:// TLS settings from the URL (`tls=1`, `ca_file=PATH`).
public struct TLSOptions: Sendable, Equatable {
    /// PEM file of the certificate authorities to trust (default: the system's bundle).
    public var caFile: String?

    /// Settings with the system's trust store, or `caFile`.
    public init(caFile: String? = nil) { self.caFile = caFile }
}
