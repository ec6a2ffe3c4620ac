/// What a channel has done since it was created, and what its slots hold now (`ferry stats`).
public struct ChannelStats: Sendable {
    /// Number of slots and bytes per slot.
    public var slots: Int, slotSize: Int
    /// Slots by state now.
    public var census: [SlotState: Int]
    /// Processes serving the channel (workers, and a supervisor holding it), and client
    /// attachments (a `ferry stats` asking counts as one), by their live liveness tokens.
    public var workers: Int, clients: Int
    /// Requests answered, and answered with an error.
    public var answered: UInt64, failed: UInt64
    /// Calls given up by their clients at the deadline.
    public var timedOut: UInt64
    /// Worker processes restarted by a supervisor.
    public var restarts: UInt64
    /// Service times (worker took → answered): bucket k counts [2^k, 2^(k+1)) ns.
    public var serviceHistogram: [UInt64]
    /// The identity of the model that serves the channel ("" when its server gave none).
    public var model: String = ""

    /// Requests in flight now (published or being answered).
    public var inFlight: Int { (census[.ready] ?? 0) + (census[.busy] ?? 0) }

    /// The service-time quantile `q` (0...1) in nanoseconds from `histogram` (an upper
    /// bound: the top of the bucket it falls in), or nil when it is empty.
    public static func quantile(_ q: Double, of histogram: [UInt64]) -> UInt64? {
        let total = histogram.reduce(0, +)
        guard total > 0 else { return nil }
        let rank = max(1, UInt64((Double(total) * q).rounded(.up)))
        var seen: UInt64 = 0
        for (k, n) in histogram.enumerated() {
            seen += n
            if seen >= rank { return k >= 63 ? .max : UInt64(1) << UInt64(k + 1) }
        }
        return nil
    }
}

/// Reads a channel's statistics without being counted as one of its clients: what `ferry
/// stats` uses, so the reader that asks never shows up in the answer. Re-attaches when the
/// channel was replaced (a restarted server).
public final class ChannelObserver: @unchecked Sendable {
    private let endpoint: Endpoint
    private let state: Locked<ShmChannel?>

    /// Attaches to `url` (shm:// only: other transports have no shared counters to read).
    public init(_ url: String) throws {
        endpoint = try Endpoint(url)
        guard endpoint.scheme == "shm" else {
            throw FerryError(.invalidArgument, "\(endpoint.scheme):// channels have no local statistics to observe; use shm://NAME")
        }
        state = Locked(ShmChannel(try ShmSegment.attach(channel: endpoint.name, shared: endpoint.shared, observer: true)))
    }

    /// The channel's counters and slots now.
    public func stats() throws -> ChannelStats {
        try state.withLock { channel in
            if let c = channel, !c.segment.isClosed, !c.segment.isStale { return c.stats() }
            channel = nil
            let c = ShmChannel(try ShmSegment.attach(channel: endpoint.name, shared: endpoint.shared, observer: true))
            channel = c
            return c.stats()
        }
    }

    /// Detaches.
    public func close() { state.withLock { $0 = nil } }
}
