/// Byte layout of a Ferry message, version 1 (docs/protocol.md). All integers little-endian.
///
///     header (64) | tensor data, each block 64-byte aligned | tensor table (96 per tensor)
///                 | tensor names | metadata entries
///
/// The table comes after the data so a writer can place tensor data in order, in place,
/// without knowing the number of tensors in advance.
public enum MessageLayout {
    /// "FRYM" read as a little-endian u32.
    public static let magic: UInt32 = 0x4D59_5246
    /// The format version this build writes and accepts.
    public static let version: UInt16 = 1
    /// Size of the fixed header.
    public static let headerSize = 64
    /// Size of one tensor table entry.
    public static let tensorEntrySize = 96
    /// Alignment of every tensor's data, from the message start.
    public static let dataAlignment = 64
    /// Most dimensions a tensor may have.
    public static let maxDims = 8
    /// Most tensors in one message.
    public static let maxTensors = 65_536
    /// Most metadata entries in one message.
    public static let maxMetadata = 65_536
    /// Longest tensor name in bytes.
    public static let maxNameLength = 1024

    // Header field offsets.
    static let oMagic = 0, oVersion = 4, oHeaderSize = 6, oTotal = 8, oTensorCount = 16
    static let oMetaCount = 20, oTable = 24, oMeta = 32, oMetaLength = 40, oStatus = 48, oFlags = 52
    // Tensor entry field offsets.
    static let eData = 0, eDataLength = 8, eName = 16, eNameLength = 24, eDType = 28, eNDim = 29, eShape = 32

    /// Rounds `n` up to a multiple of `a` (a power of two).
    @inline(__always)
    public static func align(_ n: Int, _ a: Int) -> Int { (n + a - 1) & ~(a - 1) }
}

/// Checks that `bytes` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let base = bytes.baseAddress else { return true }
    var i = 0
    let n = bytes.count
    while i < n {
        // ASCII runs eight bytes at a time: most text is ASCII, and this is what makes a
        // 1M-string column validate at memory speed.
        while i + 8 <= n, base.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 { i += 8 }
        guard i < n else { break }
        let b0 = base.load(fromByteOffset: i, as: UInt8.self)
        if b0 < 0x80 { i += 1; continue }
        var need = 0
        var minCode: UInt32 = 0
        var code: UInt32
        if b0 & 0xE0 == 0xC0 { need = 1; code = UInt32(b0 & 0x1F); minCode = 0x80 }
        else if b0 & 0xF0 == 0xE0 { need = 2; code = UInt32(b0 & 0x0F); minCode = 0x800 }
        else if b0 & 0xF8 == 0xF0 { need = 3; code = UInt32(b0 & 0x07); minCode = 0x10000 }
        else { return false }
        if i + need >= n { return false }
        for k in 1...need {
            let b = base.load(fromByteOffset: i + k, as: UInt8.self)
            if b & 0xC0 != 0x80 { return false }
            code = (code << 6) | UInt32(b & 0x3F)
        }
        if code < minCode || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF) { return false }
        i += need + 1
    }
    return true
}

/// 1 for a UTF-32 code unit that is not a Unicode scalar value (a surrogate, or past
/// U+10FFFF), else 0: without branches, so a loop that ORs it vectorises.
@inline(__always)
func nonScalarBit(_ c: UInt32) -> UInt32 { (c &- 0xD800 < 0x800 ? 1 : 0) | (c > 0x10FFFF ? 1 : 0) }

/// The first UTF-32 code unit in `bytes` that is not a Unicode scalar value, with its index;
/// with `dst`, the units are copied there in the same pass (a writer checking what it copies
/// in). One branch-free pass (it vectorises), then a search only when something is wrong.
func firstNonScalar(_ bytes: UnsafeRawBufferPointer, copyingTo dst: UnsafeMutableRawBufferPointer? = nil) -> (index: Int, value: UInt32)? {
    let units = bytes.count / 4
    guard units > 0, let p = bytes.baseAddress else { return nil }
    var bad: UInt32 = 0
    if let d = dst?.baseAddress {
        for k in 0..<units {
            let c = p.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)
            bad |= nonScalarBit(c)
            d.storeBytes(of: c, toByteOffset: 4 * k, as: UInt32.self)
        }
    } else {
        for k in 0..<units { bad |= nonScalarBit(p.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)) }
    }
    guard bad != 0 else { return nil }
    for k in 0..<units {
        let c = p.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)
        if nonScalarBit(c) != 0 { return (k, c) }
    }
    return nil
}

/// Checks packed strings — `count + 1` offsets (read by `offset(i)`) into `text` — in two
/// passes instead of one validation per string: the offsets ascend from 0 to the end, the
/// whole text is valid UTF-8, and no offset falls inside a character (the byte there is not a
/// continuation byte). Together these say each string on its own is valid UTF-8. Returns nil
/// or what is wrong.
func packedStringsProblem(count: Int, text: UnsafeRawBufferPointer, offset: (Int) -> UInt64) -> String? {
    guard offset(0) == 0 else { return "first string offset must be 0" }
    var prev: UInt64 = 0
    let end = UInt64(text.count)
    for i in stride(from: 1, through: count, by: 1) {
        let o = offset(i)
        guard o >= prev, o <= end else { return "string offset \(i) out of order or range" }
        if o < end, text.load(fromByteOffset: Int(o), as: UInt8.self) & 0xC0 == 0x80 {
            return "string \(i) starts inside a UTF-8 character (string \(i - 1) is not valid UTF-8)"
        }
        prev = o
    }
    guard prev == end else { return "last string offset \(prev) != text length \(end)" }
    guard isValidUTF8(text) else {
        // Name the string, as the per-string check did.
        for i in 0..<count {
            let a = Int(offset(i)), b = Int(offset(i + 1))
            if !isValidUTF8(UnsafeRawBufferPointer(rebasing: text[a..<b])) { return "string \(i) is not valid UTF-8" }
        }
        return "the strings are not valid UTF-8"
    }
    return nil
}

extension UnsafeRawPointer {
    @inline(__always) package func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    @inline(__always) package func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inline(__always) package func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
    @inline(__always) func i64(_ o: Int) -> Int64 { Int64(littleEndian: loadUnaligned(fromByteOffset: o, as: Int64.self)) }
}

extension UnsafeMutableRawPointer {
    @inline(__always) package func put<T: FixedWidthInteger>(_ v: T, at o: Int) { storeBytes(of: v.littleEndian, toByteOffset: o, as: T.self) }
}
