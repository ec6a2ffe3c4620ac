/// A parsed channel URL: `shm://NAME?slots=8&slot_size=8M&wait=hybrid&spin_us=100&timeout_ms=10000`.
///
/// `slots` and `slot_size` matter to the process that creates the channel; every process
/// picks its own wait strategy and default timeout.
public struct Endpoint: Sendable, Equatable {
    /// Transport scheme ("shm").
    public var scheme: String
    /// Channel name.
    public var name: String
    /// Number of slots when creating (default 8).
    public var slots: Int = 8
    /// Bytes per slot when creating (default 8 MiB; a request and its reply share a slot).
    public var slotSize: Int = 8 << 20
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
        case "tcp", "redis":
            throw FerryError(.invalidArgument, "the \(scheme):// transport is not available in this build; use shm://NAME")
        default:
            throw FerryError(.invalidArgument, "unknown transport \"\(scheme)://\" (expected shm://)")
        }
        var spinMicros: UInt64? = nil
        var waitName: String? = nil
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw FerryError(.invalidArgument, "URL parameter \"\(pair)\" has no value") }
            guard given.insert(kv[0]).inserted else {
                throw FerryError(.invalidArgument, "URL parameter \"\(kv[0])\" is given twice in \"\(url)\"")
            }
            switch kv[0] {
            case "slots":
                guard let v = Int(kv[1]), v >= 1, v <= SegmentLayout.maxSlots else {
                    throw FerryError(.invalidArgument, "slots must be an integer in 1...\(SegmentLayout.maxSlots)")
                }
                slots = v
            case "slot_size": slotSize = try Endpoint.parseSize(kv[1])
            case "wait": waitName = kv[1]
            case "spin_us":
                guard let v = UInt64(kv[1]), v <= Endpoint.maxSpinMicros else {
                    throw FerryError(.invalidArgument, "spin_us=\(kv[1]): use a whole number of microseconds up to \(Endpoint.maxSpinMicros)")
                }
                spinMicros = v
            case "scope":
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
            default:
                throw FerryError(.invalidArgument, "unknown URL parameter \"\(kv[0])\" (known: slots, slot_size, wait, spin_us, timeout_ms, scope)")
            }
        }
        if let w = waitName { wait = try WaitStrategy(name: w, spinMicros: spinMicros) }
        else if let s = spinMicros { wait = .spinThenFutex(spinNanos: s * 1000) }
        try ShmSegment.validateName(name)
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
