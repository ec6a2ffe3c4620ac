/// One tensor of a validated message, as raw fields that point into the message bytes.
/// No allocation: this is what the C ABI hands out.
public struct RawTensor {
    /// Start of the UTF-8 name (not NUL-terminated).
    public var name: UnsafeRawPointer
    /// Length of the name in bytes.
    public var nameLength: Int
    /// Element type.
    public var dtype: DType
    /// Number of dimensions (0...8).
    public var ndim: Int
    /// Dimensions; entries past `ndim` are zero.
    public var shape: (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64)
    /// Start of the data (64-byte aligned within the message).
    public var data: UnsafeRawPointer
    /// Length of the data in bytes.
    public var dataLength: Int
    /// Offset of the data from the message start.
    public var dataOffset: Int
}

/// A read-only view of a message in memory, checked once on creation so that every later
/// access stays inside the buffer. It does not own the bytes: keep them alive while in use.
public struct MessageView {
    /// Message start.
    public let base: UnsafeRawPointer
    /// Total message length in bytes.
    public let length: Int
    /// Number of tensors.
    public let tensorCount: Int
    /// Reply status: 0 for success, otherwise a `FerryError.Code` raw value.
    public let status: Int32
    let tableOffset: Int
    let metaOffset: Int
    let metaLength: Int
    let metaCount: Int

    /// Validates the message at the start of `buffer` (which may be longer than the message).
    /// Throws `.malformed` or `.version` with a precise reason on any inconsistency.
    public init(validating buffer: UnsafeRawBufferPointer) throws {
        typealias L = MessageLayout
        func bad(_ why: String) -> FerryError { FerryError(.malformed, "malformed message: \(why)") }
        guard let p = buffer.baseAddress, buffer.count >= L.headerSize else {
            throw bad("\(buffer.count) bytes is shorter than the \(L.headerSize)-byte header")
        }
        guard p.u32(L.oMagic) == L.magic else { throw bad("bad magic (not a Ferry message)") }
        let version = p.u16(L.oVersion)
        guard version == L.version else {
            throw FerryError(.version, "message format version \(version) is not supported (this build speaks \(L.version))")
        }
        guard Int(p.u16(L.oHeaderSize)) == L.headerSize else { throw bad("header size \(p.u16(L.oHeaderSize)) != \(L.headerSize)") }
        let total64 = p.u64(L.oTotal)
        guard total64 >= UInt64(L.headerSize), total64 <= UInt64(buffer.count) else {
            throw bad("total length \(total64) outside 64...\(buffer.count)")
        }
        let total = Int(total64)
        let count = Int(p.u32(L.oTensorCount))
        guard count <= L.maxTensors else { throw bad("\(count) tensors exceeds the limit of \(L.maxTensors)") }
        let table64 = p.u64(L.oTable)
        guard table64 >= UInt64(L.headerSize), table64 <= UInt64(total),
              UInt64(count) * UInt64(L.tensorEntrySize) <= UInt64(total) - table64 else {
            throw bad("tensor table (offset \(table64), \(count) entries) outside the message")
        }
        let table = Int(table64)
        let meta64 = p.u64(L.oMeta), metaLen64 = p.u64(L.oMetaLength)
        guard meta64 <= UInt64(total), metaLen64 <= UInt64(total) - meta64 else {
            throw bad("metadata (offset \(meta64), length \(metaLen64)) outside the message")
        }
        let metaCount = Int(p.u32(L.oMetaCount))
        guard metaCount <= L.maxMetadata else { throw bad("\(metaCount) metadata entries exceeds the limit") }

        // Tensors.
        for i in 0..<count {
            let e = table + i * L.tensorEntrySize
            let where_ = "tensor \(i)"
            guard let dtype = DType(rawValue: p.load(fromByteOffset: e + L.eDType, as: UInt8.self)) else {
                throw bad("\(where_): unknown dtype code \(p.load(fromByteOffset: e + L.eDType, as: UInt8.self))")
            }
            let ndim = Int(p.load(fromByteOffset: e + L.eNDim, as: UInt8.self))
            guard ndim <= L.maxDims else { throw bad("\(where_): \(ndim) dimensions exceeds \(L.maxDims)") }
            var elements: UInt64 = 1
            var overflow = false
            for d in 0..<L.maxDims {
                let dim = p.i64(e + L.eShape + 8 * d)
                if d >= ndim {
                    guard dim == 0 else { throw bad("\(where_): unused dimension \(d) is \(dim), must be 0") }
                    continue
                }
                guard dim >= 0 else { throw bad("\(where_): negative dimension \(dim)") }
                let (m, o) = elements.multipliedReportingOverflow(by: UInt64(dim))
                elements = m
                overflow = overflow || o
            }
            guard !overflow, elements <= UInt64(Int.max / 16) else { throw bad("\(where_): element count overflows") }
            let nameOff = p.u64(e + L.eName), nameLen = UInt64(p.u32(e + L.eNameLength))
            guard nameLen <= UInt64(L.maxNameLength), nameOff <= UInt64(total), nameLen <= UInt64(total) - nameOff else {
                throw bad("\(where_): name (offset \(nameOff), length \(nameLen)) outside the message")
            }
            guard isValidUTF8(UnsafeRawBufferPointer(start: p + Int(nameOff), count: Int(nameLen))) else {
                throw bad("\(where_): name is not valid UTF-8")
            }
            let dataOff = p.u64(e + L.eData), dataLen = p.u64(e + L.eDataLength)
            guard dataOff >= UInt64(L.headerSize), dataOff % UInt64(L.dataAlignment) == 0 else {
                throw bad("\(where_): data offset \(dataOff) is not a 64-byte aligned offset past the header")
            }
            guard dataOff <= UInt64(total), dataLen <= UInt64(total) - dataOff else {
                throw bad("\(where_): data (offset \(dataOff), length \(dataLen)) outside the message")
            }
            if let item = dtype.itemSize {
                if dtype == .bytes && ndim != 1 { throw bad("\(where_): a bytes tensor must have 1 dimension") }
                guard dataLen == elements * UInt64(item) else {
                    throw bad("\(where_): \(dataLen) data bytes for \(elements) elements of \(dtype.name)")
                }
            } else {
                try MessageView.validateStrings(p + Int(dataOff), length: Int(dataLen), count: Int(elements), bad: { bad("\(where_): \($0)") })
            }
        }
        // Names must be unique so lookup by name is unambiguous.
        if count > 1 {
            var seen = Set<[UInt8]>()
            for i in 0..<count {
                let e = table + i * L.tensorEntrySize
                let nameBytes = Array(UnsafeRawBufferPointer(start: p + Int(p.u64(e + L.eName)), count: Int(p.u32(e + L.eNameLength))))
                guard seen.insert(nameBytes).inserted else { throw bad("duplicate tensor name \"\(String(decoding: nameBytes, as: UTF8.self))\"") }
            }
        }
        // Metadata: exactly metaCount entries filling exactly metaLength bytes.
        var o = Int(meta64)
        let end = o + Int(metaLen64)
        for i in 0..<metaCount {
            guard end - o >= 8 else { throw bad("metadata entry \(i) header past the metadata area") }
            let k = Int(p.u32(o)), v = Int(p.u32(o + 4))
            o += 8
            guard k <= end - o, v <= end - o - k else { throw bad("metadata entry \(i) past the metadata area") }
            guard isValidUTF8(UnsafeRawBufferPointer(start: p + o, count: k)),
                  isValidUTF8(UnsafeRawBufferPointer(start: p + o + k, count: v)) else {
                throw bad("metadata entry \(i) is not valid UTF-8")
            }
            o += k + v
        }
        guard o == end else { throw bad("\(end - o) stray bytes after the metadata entries") }

        self.base = p
        self.length = total
        self.tensorCount = count
        self.status = Int32(bitPattern: p.u32(L.oStatus))
        self.tableOffset = table
        self.metaOffset = Int(meta64)
        self.metaLength = Int(metaLen64)
        self.metaCount = metaCount
    }

    static func validateStrings(_ p: UnsafeRawPointer, length: Int, count: Int, bad: (String) -> FerryError) throws {
        let (table, o1) = (count + 1).multipliedReportingOverflow(by: 8)
        guard !o1, table <= length else { throw bad("string offsets (\(count + 1)) do not fit in \(length) bytes") }
        let textLength = length - table
        let text = p + table
        var prev: UInt64 = 0
        guard p.u64(0) == 0 else { throw bad("first string offset must be 0") }
        for i in stride(from: 1, through: count, by: 1) {
            let off = p.u64(8 * i)
            guard off >= prev, off <= UInt64(textLength) else { throw bad("string offset \(i) out of order or range") }
            guard isValidUTF8(UnsafeRawBufferPointer(start: text + Int(prev), count: Int(off - prev))) else {
                throw bad("string \(i - 1) is not valid UTF-8")
            }
            prev = off
        }
        guard prev == UInt64(textLength) else { throw bad("last string offset \(prev) != text length \(textLength)") }
    }

    /// The raw fields of tensor `i` (0 ≤ i < tensorCount), pointing into the message.
    @inline(__always)
    public func rawTensor(at i: Int) -> RawTensor {
        precondition(i >= 0 && i < tensorCount, "tensor index out of range")
        typealias L = MessageLayout
        let e = tableOffset + i * L.tensorEntrySize
        let p = base
        let dataOff = Int(p.u64(e + L.eData))
        return RawTensor(
            name: p + Int(p.u64(e + L.eName)), nameLength: Int(p.u32(e + L.eNameLength)),
            dtype: DType(rawValue: p.load(fromByteOffset: e + L.eDType, as: UInt8.self))!,
            ndim: Int(p.load(fromByteOffset: e + L.eNDim, as: UInt8.self)),
            shape: (p.i64(e + 32), p.i64(e + 40), p.i64(e + 48), p.i64(e + 56), p.i64(e + 64), p.i64(e + 72), p.i64(e + 80), p.i64(e + 88)),
            data: p + dataOff, dataLength: Int(p.u64(e + L.eDataLength)), dataOffset: dataOff)
    }

    /// Tensor `i` with its name and shape decoded.
    public func tensor(at i: Int) -> TensorView {
        TensorView(raw: rawTensor(at: i))
    }

    /// The tensor called `name`, if any.
    public func tensor(named name: String) -> TensorView? {
        for i in 0..<tensorCount {
            let t = tensor(at: i)
            if t.name == name { return t }
        }
        return nil
    }

    /// All tensors in order.
    public var tensors: [TensorView] { (0..<tensorCount).map { tensor(at: $0) } }

    /// Metadata entries in order.
    public var metadata: [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        out.reserveCapacity(metaCount)
        var o = metaOffset
        for _ in 0..<metaCount {
            let k = Int(base.u32(o)), v = Int(base.u32(o + 4))
            o += 8
            let key = String(decoding: UnsafeRawBufferPointer(start: base + o, count: k), as: UTF8.self)
            let value = String(decoding: UnsafeRawBufferPointer(start: base + o + k, count: v), as: UTF8.self)
            out.append((key, value))
            o += k + v
        }
        return out
    }

    /// The value of metadata `key`, if present.
    public func metadata(_ key: String) -> String? {
        metadata.first(where: { $0.key == key })?.value
    }

    /// Raw metadata entry `i`: pointers into the message for the C ABI.
    public func rawMetadata(at i: Int) -> (key: UnsafeRawPointer, keyLength: Int, value: UnsafeRawPointer, valueLength: Int)? {
        guard i >= 0 && i < metaCount else { return nil }
        var o = metaOffset
        for _ in 0..<i { o += 8 + Int(base.u32(o)) + Int(base.u32(o + 4)) }
        let k = Int(base.u32(o)), v = Int(base.u32(o + 4))
        return (base + o + 8, k, base + o + 8 + k, v)
    }

    /// Number of metadata entries.
    public var metadataCount: Int { metaCount }
}

/// A tensor inside a `MessageView`: decoded name and shape, data still in place.
public struct TensorView {
    /// Tensor name.
    public let name: String
    /// Element type.
    public let dtype: DType
    /// Dimensions (empty for a 0-d scalar).
    public let shape: [Int]
    /// The bytes, in place in the message.
    public let data: UnsafeRawBufferPointer

    init(raw: RawTensor) {
        name = String(decoding: UnsafeRawBufferPointer(start: raw.name, count: raw.nameLength), as: UTF8.self)
        dtype = raw.dtype
        shape = withUnsafeBytes(of: raw.shape) { buf in (0..<raw.ndim).map { Int(buf.load(fromByteOffset: 8 * $0, as: Int64.self)) } }
        data = UnsafeRawBufferPointer(start: raw.data, count: raw.dataLength)
    }

    /// Number of elements (1 for a 0-d tensor).
    public var count: Int { shape.reduce(1, *) }

    /// Copies the elements out as `T` (which must match `dtype`).
    public func values<T: TensorElement>(as type: T.Type = T.self) throws -> [T] {
        guard T.dtype == dtype else { throw FerryError(.invalidArgument, "tensor \"\(name)\" is \(dtype.name), not \(T.dtype.name)") }
        return [T](unsafeUninitializedCapacity: count) { buf, n in
            UnsafeMutableRawBufferPointer(buf).copyMemory(from: data)
            n = count
        }
    }

    /// The strings of a `string` tensor, in row-major order.
    public func strings() throws -> [String] {
        guard dtype == .string else { throw FerryError(.invalidArgument, "tensor \"\(name)\" is \(dtype.name), not string") }
        let p = data.baseAddress!
        let n = count
        let text = p + 8 * (n + 1)
        return (0..<n).map { i in
            let a = Int(p.u64(8 * i)), b = Int(p.u64(8 * (i + 1)))
            return String(decoding: UnsafeRawBufferPointer(start: text + a, count: b - a), as: UTF8.self)
        }
    }
}
