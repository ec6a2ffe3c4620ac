import CTurboJPEG
import CZstd
import FerryCore

/// Compressing and expanding tensors (zstd, JPEG): what a tcp:// client and gateway do to a
/// message on a slow link. Kept out of FerryCore so shared memory needs neither library.
extension TensorCodec {
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
