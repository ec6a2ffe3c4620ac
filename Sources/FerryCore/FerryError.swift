/// Every failure Ferry reports. The raw values are the status codes of the C ABI
/// (`include/ferry.h`), so the same number means the same thing in every language.
public struct FerryError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A stable, language-independent error category.
    public enum Code: Int32, Sendable {
        /// An argument was out of range or inconsistent (a programming error).
        case invalidArgument = 1
        /// A message or segment failed validation: bad magic, length, offset or value.
        case malformed = 2
        /// A payload does not fit in a slot; the message names the setting to raise.
        case tooLarge = 3
        /// The deadline passed before the reply arrived.
        case timedOut = 4
        /// The worker serving the request died before it replied.
        case peerDied = 5
        /// No process serves the channel (never started, or gone).
        case noServer = 6
        /// Every slot stayed busy until the deadline.
        case busy = 7
        /// The channel was closed by its server.
        case closed = 8
        /// A system call failed; the message carries the call and errno text.
        case system = 9
        /// The remote model raised an error; the message carries its text.
        case remote = 10
        /// The operating system refused access (permissions, foreign owner).
        case permission = 11
        /// The peer speaks another version of the format.
        case version = 12
        /// Not yet: the call is still in flight (a poll that returned before the deadline).
        case again = 13
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
