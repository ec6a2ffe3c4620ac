/// Every failure Ferry reports. The raw values are the status codes of the C ABI
/// (`include/ferry.h`), so the same number means the same thing in every language.
public struct FerryError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A stable, language-independent error category.
    public enum Code: Int32, Sendable {
        // BEGIN GENERATED: status (scripts/gen_tables.py)
        /// An argument is invalid (NULL, out of range, inconsistent, or a call in the wrong order).
        case invalidArgument = 1
        /// A message or segment failed validation: bad magic, length, offset or value.
        case malformed = 2
        /// The payload does not fit in a slot; the error names the setting to raise.
        case tooLarge = 3
        /// The deadline passed (for ferry_worker_recv: no request came).
        case timedOut = 4
        /// The worker serving the request died before it replied.
        case peerDied = 5
        /// Nothing serves the channel (never started, or gone).
        case noServer = 6
        /// Every slot stayed in use until the deadline.
        case busy = 7
        /// The channel was closed by its server.
        case closed = 8
        /// A system call failed; the message carries the call and errno text.
        case system = 9
        /// The model raised an error; its text, type and traceback come with it (ferry_call_error).
        case remote = 10
        /// The operating system refused access (permissions, a segment of another user).
        case permission = 11
        /// The peer speaks another version of the format.
        case version = 12
        /// Not yet: the call is still in flight (ferry_call_poll); not an error.
        case again = 13
        /// The connection to a remote gateway was lost or refused; calls in flight on it failed, the next call reconnects.
        case disconnected = 14
        /// A remote peer broke the wire protocol (bad frame, failed authentication step); the connection was closed.
        case protocolViolation = 15
        // END GENERATED
    }

    /// The category.
    public var code: Code
    /// A human-readable explanation meant for the user.
    public var message: String
    /// For `.remote`: the type of the model's error (e.g. "ValueError"), when it said.
    public var remoteType: String? = nil
    /// For `.remote`: the model-side traceback or other detail (bounded), when it gave one.
    public var detail: String? = nil

    /// Creates an error of `code` explained by `message`.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "ferry: \(message)" }
}
