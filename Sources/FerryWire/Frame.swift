import FerryCore

/// The `tcp://` wire format (docs/protocol.md, "TCP frames"): every frame is a 32-byte
/// little-endian header and a payload. Requests and replies carry the project's one message
/// format unchanged, so a message crosses a host boundary with no re-encoding.
///
///     0  u32 magic "FRY1"   4 u8 kind   5 u8 flags (0)   6 u16 reserved (0)
///     8  u64 id (request id; 0 for connection frames)
///     16 u64 payload length
///     24 u64 argument (REQUEST: the caller's remaining time in ns; ERROR: a status code)
public enum Frame {
    /// "FRY1" read as a little-endian u32.
    public static let magic: UInt32 = 0x3159_5246
    /// Bytes of the header.
    public static let headerSize = 32
    /// The wire protocol's version (HELLO's argument).
    public static let version: UInt64 = 1
    /// Bytes of each nonce and of the HMAC-SHA256 proof.
    public static let nonceSize = 32
    /// Largest connection-level payload (HELLO, WELCOME, AUTH, ERROR).
    public static let maxControlPayload = 4096

    /// What a frame is.
    public enum Kind: UInt8, Sendable {
        /// Client → gateway, first frame: u16 name length, the channel name, the client's nonce.
        case hello = 1
        /// Gateway → client: u64 request capacity, u64 largest request frame, u32 most requests
        /// in flight per connection, u8 authentication required, 3 zero bytes, the gateway's nonce.
        case welcome = 2
        /// Client → gateway: HMAC-SHA256(secret, "ferry-auth-v1" ‖ gateway nonce ‖ client nonce ‖ name).
        case auth = 3
        /// Gateway → client: the connection may send requests.
        case ready = 4
        /// Client → gateway: one request (a message); `id` chosen by the client, unique in flight.
        case request = 5
        /// Gateway → client: the reply to request `id` (a message; its status says whether it failed).
        case reply = 6
        /// Either way: the connection is being closed because of the UTF-8 text in the payload.
        case error = 7
    }

    /// A decoded header.
    public struct Header: Sendable, Equatable {
        /// What the frame is.
        public var kind: Kind
        /// Request id (0 for connection frames).
        public var id: UInt64
        /// Payload bytes that follow.
        public var length: UInt64
        /// Kind-specific argument.
        public var argument: UInt64

        /// A header.
        public init(kind: Kind, id: UInt64 = 0, length: UInt64, argument: UInt64 = 0) {
            self.kind = kind
            self.id = id
            self.length = length
            self.argument = argument
        }

        /// Writes the header's 32 bytes at `p`.
        public func write(to p: UnsafeMutableRawPointer) {
            p.put(Frame.magic, at: 0)
            p.put(kind.rawValue, at: 4)
            p.put(UInt8(0), at: 5)
            p.put(UInt16(0), at: 6)
            p.put(id, at: 8)
            p.put(length, at: 16)
            p.put(argument, at: 24)
        }

        /// The header as bytes.
        public var bytes: [UInt8] {
            var b = [UInt8](repeating: 0, count: Frame.headerSize)
            b.withUnsafeMutableBytes { write(to: $0.baseAddress!) }
            return b
        }

        /// Reads and checks a header (untrusted bytes from the network).
        public init(reading p: UnsafeRawPointer) throws {
            let magic = p.u32(0)
            guard magic == Frame.magic else {
                throw FerryError(.protocolViolation, "not a Ferry frame (bad magic 0x\(String(magic, radix: 16))); is this port a Ferry gateway?")
            }
            let k = p.load(fromByteOffset: 4, as: UInt8.self)
            guard let kind = Kind(rawValue: k) else { throw FerryError(.protocolViolation, "unknown frame kind \(k)") }
            guard p.load(fromByteOffset: 5, as: UInt8.self) == 0, p.u16(6) == 0 else {
                throw FerryError(.protocolViolation, "frame flags set that this build does not know")
            }
            self.kind = kind
            id = p.u64(8)
            length = p.u64(16)
            argument = p.u64(24)
        }
    }

    /// What a gateway tells a client after HELLO.
    public struct Welcome: Sendable, Equatable {
        /// Largest request message in bytes (the channel's slot less one page).
        public var requestCapacity: UInt64
        /// Largest request frame payload the gateway accepts.
        public var maxRequest: UInt64
        /// Most requests a connection may have in flight (more wait for the gateway to read them).
        public var maxInFlight: UInt32
        /// The gateway wants AUTH before any request.
        public var authRequired: Bool
        /// The gateway's challenge.
        public var nonce: [UInt8]
        /// The identity of the model the channel serves, when no authentication is required
        /// (else READY carries it, after AUTH): "" when none.
        public var model: String

        /// Bytes of the payload without the model identity (its fixed part).
        public static let size = 24 + Frame.nonceSize
        /// Longest model identity (as the shared-memory segment keeps it).
        public static let maxModel = 1020

        /// A welcome.
        public init(requestCapacity: UInt64, maxRequest: UInt64, maxInFlight: UInt32, authRequired: Bool, nonce: [UInt8], model: String = "") {
            self.requestCapacity = requestCapacity
            self.maxRequest = maxRequest
            self.maxInFlight = maxInFlight
            self.authRequired = authRequired
            self.nonce = nonce
            self.model = model
        }

        /// The payload's bytes.
        public var bytes: [UInt8] {
            var b = [UInt8](repeating: 0, count: Welcome.size)
            b.withUnsafeMutableBytes { p in
                p.baseAddress!.put(requestCapacity, at: 0)
                p.baseAddress!.put(maxRequest, at: 8)
                p.baseAddress!.put(maxInFlight, at: 16)
                p.baseAddress!.put(UInt8(authRequired ? 1 : 0), at: 20)
            }
            for i in 0..<Frame.nonceSize { b[24 + i] = i < nonce.count ? nonce[i] : 0 }
            let m = Array(model.utf8.prefix(Welcome.maxModel))
            if !authRequired && !m.isEmpty { b += [UInt8(m.count & 0xFF), UInt8(m.count >> 8)] + m }
            return b
        }

        /// Parses a payload (untrusted).
        public init(parsing b: [UInt8]) throws {
            guard b.count == Welcome.size || b.count >= Welcome.size + 2 else {
                throw FerryError(.protocolViolation, "WELCOME of \(b.count) bytes (expected \(Welcome.size), or more with a model identity)")
            }
            (requestCapacity, maxRequest, maxInFlight, authRequired) = b.withUnsafeBytes { p in
                (p.baseAddress!.u64(0), p.baseAddress!.u64(8), p.baseAddress!.u32(16), p[20] != 0)
            }
            nonce = Array(b[24..<Welcome.size])
            model = ""
            if b.count > Welcome.size {
                // The model identity: only where no AUTH follows (else READY carries it).
                let n = Int(b[Welcome.size]) | Int(b[Welcome.size + 1]) << 8
                guard !authRequired, n <= Welcome.maxModel, b.count == Welcome.size + 2 + n,
                      let text = String(validating: b[(Welcome.size + 2)...], as: UTF8.self) else {
                    throw FerryError(.protocolViolation, "WELCOME carries a model identity that is not \(n) bytes of UTF-8 without authentication")
                }
                model = text
            }
            guard maxInFlight >= 1 else { throw FerryError(.protocolViolation, "WELCOME allows no request in flight") }
        }
    }

    /// HELLO's payload.
    public static func hello(name: String, nonce: [UInt8]) -> [UInt8] {
        let n = Array(name.utf8)
        return [UInt8(n.count & 0xFF), UInt8(n.count >> 8)] + n + nonce
    }

    /// Parses HELLO's payload (untrusted): the channel name and the client's nonce.
    public static func parseHello(_ b: [UInt8]) throws -> (name: String, nonce: [UInt8]) {
        guard b.count >= 2 else { throw FerryError(.protocolViolation, "HELLO too short") }
        let n = Int(b[0]) | Int(b[1]) << 8
        guard b.count == 2 + n + nonceSize else { throw FerryError(.protocolViolation, "HELLO of \(b.count) bytes does not match its name length \(n)") }
        guard let name = String(validating: b[2..<(2 + n)], as: UTF8.self) else { throw FerryError(.protocolViolation, "HELLO name is not UTF-8") }
        return (name, Array(b[(2 + n)...]))
    }

    /// The bytes AUTH's HMAC covers: both nonces and the channel name, so a proof cannot be
    /// replayed to another connection or channel.
    public static func authTranscript(gatewayNonce: [UInt8], clientNonce: [UInt8], name: String) -> [UInt8] {
        Array("ferry-auth-v1".utf8) + gatewayNonce + clientNonce + Array(name.utf8)
    }
}
