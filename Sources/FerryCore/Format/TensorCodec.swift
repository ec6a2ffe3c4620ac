import CTurboJPEG
import CZstd

/// Per-tensor compression for slow `tcp://` links, chosen by the client (`compress=zstd`,
/// `compress=jpeg`, or both): zstd (lossless, any fixed-size dtype) and JPEG (lossy, uint8
/// images H×W or H×W×1|3, `jpeg_quality`). A compressed tensor keeps its dtype and shape; its
/// data block holds the compressed bytes and the table entry's encoding field (offset 30,
/// zero everywhere else) says how. The gateway expands every tensor before the request
/// reaches a slot, so workers only ever see plain arrays; replies are sent plain.
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
    static func jpegShape(ndim: Int, _ h: Int64, _ w: Int64, _ c: Int64) -> (Int, Int, Int)? {
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

    /// Most bytes `compress` may write for `plain` (a message this process wrote).
    public static func bound(_ plain: UnsafeRawBufferPointer) throws -> Int {
        let view = try MessageView(validating: plain)
        var extra = 64 * view.tensorCount + 4096
        for i in 0..<view.tensorCount {
            let t = view.rawTensor(at: i)
            extra += max(0, ZSTD_compressBound(t.dataLength) - t.dataLength)
            if let (h, w, _) = jpegShape(ndim: t.ndim, t.shape.0, t.shape.1, t.ndim == 3 ? t.shape.2 : 1) {
                extra += max(0, Int(tjBufSize(Int32(w), Int32(h), Int32(TJSAMP_420.rawValue))) - t.dataLength)
            }
        }
        return plain.count + extra
    }

    /// Writes `plain` (a message this process wrote) into `out` with eligible tensors
    /// compressed as `options` says; returns the length. A tensor that does not shrink is
    /// sent plain.
    public static func compress(_ plain: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer, options: Options) throws -> Int {
        let view = try MessageView(validating: plain)
        var w = MessageWriter(base: out.baseAddress!, capacity: out.count)
        for i in 0..<view.tensorCount {
            let t = view.rawTensor(at: i)
            let name = Array(UnsafeRawBufferPointer(start: t.name, count: t.nameLength))
            let shape = withUnsafeBytes(of: t.shape) { Array($0.bindMemory(to: Int64.self).prefix(t.ndim)).map(Int.init) }
            let src = UnsafeRawBufferPointer(start: t.data, count: t.dataLength)
            let big = t.dataLength >= Options.minBytes && t.dtype.itemSize != nil
            if big && options.jpeg && t.dtype == .uint8,
               let (h, wd, c) = jpegShape(ndim: t.ndim, t.shape.0, t.shape.1, t.ndim == 3 ? t.shape.2 : 1) {
                let cap = Int(tjBufSize(Int32(wd), Int32(h), Int32((c == 1 ? TJSAMP_GRAY : TJSAMP_420).rawValue)))
                let dst = try w.reserveEncoded(name: name, dtype: t.dtype, shape: shape, length: cap, encoding: Encoding.jpeg.rawValue)
                let n = try jpegCompress(src, into: dst, height: h, width: wd, channels: c, quality: options.jpegQuality)
                w.shrinkLast(to: n)
            } else if big && options.zstd {
                let dst = try w.reserveEncoded(name: name, dtype: t.dtype, shape: shape, length: ZSTD_compressBound(t.dataLength),
                                               encoding: Encoding.zstd.rawValue)
                let n = ZSTD_compress(dst.baseAddress, dst.count, src.baseAddress, src.count, Int32(options.zstdLevel))
                if ZSTD_isError(n) != 0 || n >= src.count {
                    // Incompressible: the plain bytes, in the same place.
                    dst.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: src.count)
                    w.shrinkLast(to: src.count, encoding: 0)
                } else {
                    w.shrinkLast(to: n)
                }
            } else {
                let dst = try w.reserveEncoded(name: name, dtype: t.dtype, shape: shape, length: t.dataLength, encoding: 0)
                if t.dataLength > 0 { dst.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: t.dataLength) }
            }
        }
        for m in view.metadata { w.setMetadata(m.key, m.value) }
        return try w.finish(status: view.status)
    }

    /// Most bytes `expand` may write for `encoded` (untrusted; validated here).
    public static func expandedBound(_ encoded: UnsafeRawBufferPointer) throws -> Int {
        let view = try MessageView(validating: encoded, owner: nil, allowingEncoded: true)
        var total = encoded.count + 64 * view.tensorCount
        for i in 0..<view.tensorCount {
            let e = view.table.entries[i]
            guard e.encoding != 0 else { continue }
            let (n, o) = MessageView.elementCount(e.shape, e.ndim).multipliedReportingOverflow(by: e.dtype.itemSize!)
            guard !o, n <= Int.max / 4 - total else { throw FerryError(.tooLarge, "an encoded tensor expands past any slot") }
            total += n
        }
        return total
    }

    /// Writes the plain form of `encoded` (untrusted: validated, and every tensor must expand
    /// to exactly its shape's size) into `out`; returns the length. Throws `.malformed` for
    /// bad compressed data, `.tooLarge` when the plain message does not fit.
    public static func expand(_ encoded: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer, limitHint: String = "") throws -> Int {
        let view = try MessageView(validating: encoded, owner: nil, allowingEncoded: true)
        var w = MessageWriter(base: out.baseAddress!, capacity: out.count, limitHint: limitHint)
        for i in 0..<view.tensorCount {
            let e = view.table.entries[i]
            let t = view.rawTensor(at: i)
            let name = Array(UnsafeRawBufferPointer(start: t.name, count: t.nameLength))
            let shape = withUnsafeBytes(of: t.shape) { Array($0.bindMemory(to: Int64.self).prefix(t.ndim)).map(Int.init) }
            let src = UnsafeRawBufferPointer(start: t.data, count: t.dataLength)
            guard let enc = Encoding(rawValue: e.encoding) else {
                let dst = try w.reserveEncoded(name: name, dtype: t.dtype, shape: shape, length: t.dataLength, encoding: 0)
                if t.dataLength > 0 { dst.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: t.dataLength) }
                continue
            }
            let n = MessageView.elementCount(e.shape, e.ndim) * t.dtype.itemSize!
            let dst = try w.reserveEncoded(name: name, dtype: t.dtype, shape: shape, length: n, encoding: 0)
            func bad(_ why: String) -> FerryError { FerryError(.malformed, "malformed message: tensor \(i): \(why)") }
            switch enc {
            case .zstd:
                let size = ZSTD_getFrameContentSize(src.baseAddress, src.count)
                guard size == UInt64(n) else { throw bad("zstd data of \(size == ZSTD_CONTENTSIZE_UNKNOWN ? "unknown" : "\(size)") bytes for \(n)") }
                let r = ZSTD_decompress(dst.baseAddress, n, src.baseAddress, src.count)
                guard ZSTD_isError(r) == 0, r == n else { throw bad("zstd data does not expand to \(n) bytes") }
            case .jpeg:
                let (h, wd, c) = jpegShape(ndim: t.ndim, t.shape.0, t.shape.1, t.ndim == 3 ? t.shape.2 : 1)!
                try jpegDecompress(src, into: dst, height: h, width: wd, channels: c, bad: bad)
            }
        }
        for m in view.metadata { w.setMetadata(m.key, m.value) }
        return try w.finish(status: view.status)
    }

    static func jpegCompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer, height: Int, width: Int,
                             channels: Int, quality: Int) throws -> Int {
        guard let tj = tjInitCompress() else { throw FerryError(.system, "tjInitCompress failed") }
        defer { tjDestroy(tj) }
        var out: UnsafeMutablePointer<UInt8>? = dst.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var size = UInt(dst.count)
        let rc = tjCompress2(tj, src.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(width), 0, Int32(height),
                             Int32((channels == 1 ? TJPF_GRAY : TJPF_RGB).rawValue), &out, &size,
                             Int32((channels == 1 ? TJSAMP_GRAY : TJSAMP_420).rawValue), Int32(quality), TJFLAG_NOREALLOC | TJFLAG_FASTDCT)
        guard rc == 0, out == dst.baseAddress!.assumingMemoryBound(to: UInt8.self) else {
            throw FerryError(.system, "JPEG compression failed: \(String(cString: tjGetErrorStr2(tj)))")
        }
        return Int(size)
    }

    static func jpegDecompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer, height: Int, width: Int,
                               channels: Int, bad: (String) -> FerryError) throws {
        guard let tj = tjInitDecompress() else { throw FerryError(.system, "tjInitDecompress failed") }
        defer { tjDestroy(tj) }
        var w: Int32 = 0, h: Int32 = 0, sub: Int32 = 0, space: Int32 = 0
        let jpeg = src.baseAddress?.assumingMemoryBound(to: UInt8.self)
        guard let jpeg, tjDecompressHeader3(tj, jpeg, UInt(src.count), &w, &h, &sub, &space) == 0 else { throw bad("not a JPEG image") }
        guard Int(w) == width, Int(h) == height else { throw bad("a \(w)×\(h) JPEG for a \(width)×\(height) tensor") }
        let rc = tjDecompress2(tj, jpeg, UInt(src.count), dst.baseAddress!.assumingMemoryBound(to: UInt8.self), w, 0, h,
                               Int32((channels == 1 ? TJPF_GRAY : TJPF_RGB).rawValue), TJFLAG_FASTDCT)
        guard rc == 0 else { throw bad("JPEG data does not decode: \(String(cString: tjGetErrorStr2(tj)))") }
    }
}
