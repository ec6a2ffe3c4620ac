import CFerryLinux
import Synchronization

/// A client's side of one transport (`shm://`, `tcp://`): it loans a buffer for each
/// request, sends it, and hands back the reply's bytes. `Client` and `PendingCall` are the
/// same for every transport; each transport brings its own liveness and acknowledgement
/// rules (liveness locks and slot states for shared memory, connection state and request
/// ids for TCP). A transport is shared by every thread of its client.
public protocol ClientTransport: AnyObject, Sendable {
    /// Loans a request buffer, waiting until `deadline` (monotonic ns) for one to be free.
    func loan(deadline: UInt64) throws -> any CallLoan
    /// Largest request (message bytes) a loan can hold.
    var requestCapacity: Int { get }
    /// Slots of the channel by state (transports that have slots; others throw).
    func census(recover: Bool) throws -> [SlotState: Int]
    /// The channel's counters and slots now (transports that can see them; others throw).
    func stats() throws -> ChannelStats
    /// Lets go of the transport's resources; loans still open keep what they use.
    func close()
    /// Who serves the channel (`model`: its identity, one model per channel), asked by
    /// `deadline` (transports that can tell; others throw `.invalidArgument`).
    func serverInfo(deadline: UInt64) throws -> [String: String]
}

extension ClientTransport {
    public func serverInfo(deadline: UInt64) throws -> [String: String] {
        throw FerryError(.invalidArgument, "this transport cannot tell who serves the channel; each reply names its model (metadata ferry.model)")
    }
}

/// One request's buffer, loaned by a transport for one call: the caller writes the request
/// into `request`, `send`s it, then waits for the reply, whose bytes stay valid until
/// `close`. Belongs to one thread at a time.
public protocol CallLoan: AnyObject {
    /// Where the request is written (in a shared-memory slot, or in a private buffer).
    var request: UnsafeMutableRawBufferPointer { get }
    /// Which setting to raise when a request does not fit (completes the `.tooLarge` error).
    var limitHint: String { get }
    /// Sends the first `length` bytes of `request` (a complete message); the call's
    /// deadline travels with it where the transport can carry it.
    func send(length: Int, deadline: UInt64) throws
    /// True when the transport can send tensors from the caller's memory (scatter-gather):
    /// the call's writer then leaves large tensors added by reference where they are.
    var sendsReferences: Bool { get }
    /// Sends the first `length` bytes of `request`, with each reference's bytes in place of
    /// the hole the writer left for it (`MessageWriter.references`).
    func send(length: Int, references: [MessageWriter.Reference], deadline: UInt64) throws
    /// Waits until `until` for the reply: its bytes (a message, possibly an error reply), or
    /// nil when it has not come yet and `until` is before `deadline`. Throws at the deadline
    /// and on transport failures; after a throw the call is over.
    func awaitReply(until: UInt64, deadline: UInt64) throws -> UnsafeRawBufferPointer?
    /// Gives the loan back. A call still in flight is given up (its late reply is dropped).
    func close()
    /// True when the loaned memory was lost under this process (a shared-memory segment
    /// another process truncated): a reply read from it must not be used.
    var isLost: Bool { get }
}

extension CallLoan {
    public var isLost: Bool { false }
    public var sendsReferences: Bool { false }
    /// Copies the referenced bytes into their holes, then sends as usual.
    public func send(length: Int, references: [MessageWriter.Reference], deadline: UInt64) throws {
        for r in references { (request.baseAddress! + r.offset).copyMemory(from: r.source, byteCount: r.length) }
        try send(length: length, deadline: deadline)
    }
}

/// The URL-scheme registry: each scheme parses its own options (`Endpoint`) and makes its
/// client transport. `shm` is built in. `tcp` and `redis` live in their own targets
/// (FerryTCP, FerryRedis) so that the shared-memory core builds without SwiftNIO's BoringSSL,
/// swift-crypto, zstd, libjpeg-turbo or hiredis; a program or library that links FerryNetwork
/// gets them registered on its first lookup (`cferry_register_linked_transports`), with no
/// call to remember.
public enum Transports {
    /// Makes a client transport for a parsed endpoint.
    public typealias Factory = @Sendable (Endpoint) throws -> any ClientTransport

    private static let table = Locked<[String: Factory]>([
        "shm": { try ShmClientTransport($0) }
    ])

    /// Registers the transports linked into this image (FerryNetwork's tcp:// and redis://), once.
    private static let linked: Void = { cferry_register_linked_transports() }()

    /// Registers (or replaces) the client transport for `scheme`.
    public static func register(_ scheme: String, _ factory: @escaping Factory) {
        table.withLock { $0[scheme] = factory }
    }

    /// The schemes a client can use, sorted.
    public static var schemes: [String] {
        _ = linked
        return table.withLock { $0.keys.sorted() }
    }

    /// A client transport for `endpoint`.
    public static func client(_ endpoint: Endpoint) throws -> any ClientTransport {
        _ = linked
        guard let f = table.withLock({ $0[endpoint.scheme] }) else {
            throw FerryError(.invalidArgument, "no client transport for \(endpoint.scheme):// in this build (known: \(schemes.map { $0 + "://" }.joined(separator: ", ")))")
        }
        return try f(endpoint)
    }
}
