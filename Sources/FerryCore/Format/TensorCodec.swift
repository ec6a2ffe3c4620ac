/// Per-tensor compression for slow `tcp://` links, chosen by the client (`compress=zstd`,
/// `compress=jpeg`, or both): zstd (lossless, any fixed-size dtype) and JPEG (lossy, uint8
/// images H×W or H×W×1|3, `jpeg_quality`). A compressed tensor keeps its dtype and shape; its
/// data block holds the compressed bytes and the table entry's encoding field (offset 30,
/// zero everywhere else) says how. The gateway expands every tensor before the request
/// reaches a slot, so workers only ever see plain arrays; replies are sent plain.
///
/// The format (encodings, options, checks) lives here; compressing and expanding, which
/// need zstd and libjpeg-turbo, live in FerryWire (`TensorCodec+Compression.swift`), so the
/// shared-memory core builds without them.
public enum TensorCodec {
    /// How a tensor's data is stored.
    public enum Encoding: UInt16, Sendable {
        /// zstd frame of the plain bytes.
        case zstd = 1
        /// JPEG (4:2:0 for 3 channels) of a uint8 image.
        case jpeg = 2
    }

    /// What a client compresses.
    public struct Options: Sendable, Equatable {
        /// Lossless zstd for tensors of at least `minBytes` (JPEG takes precedence for images).
        public var zstd = false
        /// JPEG for uint8 images of at least `minBytes`.
        public var jpeg = false
        /// JPEG quality, 1...100.
        public var jpegQuality = 90
        /// zstd level, 1...19 (1: fastest).
        public var zstdLevel = 1
        /// Smaller tensors are sent as they are.
        public static let minBytes = 4096

        /// Parses `compress=` ("zstd", "jpeg", "jpeg,zstd").
        public init(parsing text: String) throws {
            for part in text.split(separator: ",") {
                switch part {
                case "zstd": zstd = true
                case "jpeg": jpeg = true
                default: throw FerryError(.invalidArgument, "compress=\(text): use zstd, jpeg, or jpeg,zstd")
                }
            }
            guard zstd || jpeg else { throw FerryError(.invalidArgument, "compress is empty: use zstd, jpeg, or jpeg,zstd") }
        }
    }

    /// Checks that an encoded table entry is one this build can expand (untrusted input).
    static func checkEncodable(_ raw: UInt16, dtype: DType, shape: (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64),
                               ndim: Int, where w: String) throws {
        func bad(_ why: String) -> FerryError { FerryError(.malformed, "malformed message: \(w): \(why)") }
        guard let e = Encoding(rawValue: raw) else { throw bad("unknown encoding \(raw)") }
        guard dtype.itemSize != nil else { throw bad("a \(dtype.name) tensor cannot be encoded") }
        if e == .jpeg {
            guard dtype == .uint8, jpegShape(ndim: ndim, shape.0, shape.1, ndim == 3 ? shape.2 : 1) != nil else {
                throw bad("JPEG encodes uint8 images H×W or H×W×1|3 only")
            }
        }
    }

    /// (height, width, channels) of a shape JPEG can hold.
    package static func jpegShape(ndim: Int, _ h: Int64, _ w: Int64, _ c: Int64) -> (Int, Int, Int)? {
        guard ndim == 2 || ndim == 3, h >= 8, w >= 8, h <= 65_500, w <= 65_500, c == 1 || c == 3 else { return nil }
        return (Int(h), Int(w), Int(c))
    }

    /// True when some tensor of `message` is encoded: header and table only, bounds checked
    /// (a cheap test on untrusted bytes; `expand` validates fully).
    public static func isEncoded(_ message: UnsafeRawBufferPointer) -> Bool {
        typealias L = MessageLayout
        guard let p = message.baseAddress, message.count >= L.headerSize else { return false }
        let count = UInt64(p.u32(L.oTensorCount)), table = p.u64(L.oTable)
        guard count <= UInt64(L.maxTensors), table <= UInt64(message.count),
              count * UInt64(L.tensorEntrySize) <= UInt64(message.count) - table else { return false }
        for i in 0..<Int(count) where p.u16(Int(table) + i * L.tensorEntrySize + 30) != 0 { return true }
        return false
    }
}
