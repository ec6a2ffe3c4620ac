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

/// The validated table of a message, copied once into private memory: tensor descriptors,
/// names, metadata and the bytes of string tensors. Another process may still write the
/// shared bytes after validation; nothing is ever read from them again but numeric tensor
/// data, whose bounds come from here. One allocation holds it all.
package final class MessageTable {
    package struct Entry {
        package var nameStart: Int, nameLength: Int
        package var dtype: DType
        package var ndim: Int
        package var shape: (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64)
        /// Offset in the message (numeric data), or in `text` (string tensors, copied).
        package var dataOffset: Int, dataLength: Int
        package var dataIsPrivate: Bool
        /// `TensorCodec.Encoding` raw value: 0 for plain data (the only kind a worker sees).
        package var encoding: UInt16 = 0
    }
    /// (keyStart, keyLength, valueStart, valueLength) in `text`.
    typealias Meta = (Int, Int, Int, Int)

    package let count: Int
    let metaCount: Int
    package let entries: UnsafeMutablePointer<Entry>
    let meta: UnsafeMutablePointer<Meta>
    /// Names, metadata and string tensors' bytes.
    let text: UnsafeMutableRawPointer
    private let storage: UnsafeMutableRawPointer

    init(count: Int, metaCount: Int, textCapacity: Int) {
        let e = MemoryLayout<Entry>.stride * count
        let m = MemoryLayout<Meta>.stride * metaCount
        storage = .allocate(byteCount: max(e + m + textCapacity, 1), alignment: 64)
        self.count = count
        self.metaCount = metaCount
        entries = storage.bindMemory(to: Entry.self, capacity: count)
        meta = (storage + e).bindMemory(to: Meta.self, capacity: metaCount)
        text = storage + e + m
    }
    deinit { storage.deallocate() }
}

/// A read-only view of a message, checked once on creation: every field of its header, table
/// and metadata is read exactly once from the given bytes and kept in private memory
/// (`MessageTable`), so a writer that changes the bytes afterwards cannot change what this
/// view reports. Numeric tensor data stays in place (zero copy): `owner` keeps it alive.
public struct MessageView {
    /// Message start.
    public let base: UnsafeRawPointer
    /// Total message length in bytes.
    public let length: Int
    /// Reply status: 0 for success, otherwise a `FerryError.Code` raw value.
    public let status: Int32
    package let table: MessageTable
    /// Whatever keeps `base` mapped (a call, a job, a buffer); nil when the caller does.
    let owner: AnyObject?

    /// Number of tensors.
    public var tensorCount: Int { table.count }

    /// Validates the message at the start of `buffer` (which may be longer than the message).
    /// Throws `.malformed` or `.version` with a precise reason on any inconsistency.
    public init(validating buffer: UnsafeRawBufferPointer) throws {
        try self.init(validating: buffer, owner: nil)
    }

    /// Validates as above; `owner` is kept alive as long as the view.
    package init(validating buffer: UnsafeRawBufferPointer, owner: AnyObject?, allowingEncoded: Bool = false) throws {
        typealias L = MessageLayout
        func bad(_ why: String) -> FerryError { FerryError(.malformed, "malformed message: \(why)") }
        guard let p = buffer.baseAddress, buffer.count >= L.headerSize else {
            throw bad("\(buffer.count) bytes is shorter than the \(L.headerSize)-byte header")
        }
        // The header: each field read once into a local.
        let magic = p.u32(L.oMagic)
        guard magic == L.magic else { throw bad("bad magic (not a Ferry message)") }
        let version = p.u16(L.oVersion)
        guard version == L.version else {
            throw FerryError(.version, "message format version \(version) is not supported (this build speaks \(L.version))")
        }
        let headerSize = p.u16(L.oHeaderSize)
        guard Int(headerSize) == L.headerSize else { throw bad("header size \(headerSize) != \(L.headerSize)") }
        let total64 = p.u64(L.oTotal)
        guard total64 >= UInt64(L.headerSize), total64 <= UInt64(buffer.count) else {
            throw bad("total length \(total64) outside 64...\(buffer.count)")
        }
        let total = Int(total64)
        let count32 = p.u32(L.oTensorCount)
        guard count32 <= UInt32(L.maxTensors) else { throw bad("\(count32) tensors exceeds the limit of \(L.maxTensors)") }
        let count = Int(count32)
        let table64 = p.u64(L.oTable)
        guard table64 >= UInt64(L.headerSize), table64 <= UInt64(total),
              UInt64(count) * UInt64(L.tensorEntrySize) <= UInt64(total) - table64 else {
            throw bad("tensor table (offset \(table64), \(count) entries) outside the message")
        }
        let tableOffset = Int(table64)
        let meta64 = p.u64(L.oMeta), metaLen64 = p.u64(L.oMetaLength)
        guard meta64 <= UInt64(total), metaLen64 <= UInt64(total) - meta64 else {
            throw bad("metadata (offset \(meta64), length \(metaLen64)) outside the message")
        }
        let metaCount32 = p.u32(L.oMetaCount)
        guard metaCount32 <= UInt32(L.maxMetadata) else { throw bad("\(metaCount32) metadata entries exceeds the limit") }
        let metaCount = Int(metaCount32)
        let metaOffset = Int(meta64), metaLength = Int(metaLen64)
        let status = Int32(bitPattern: p.u32(L.oStatus))

        // The tensor table: each entry's fields read once, checked, kept.
        let table = try withUnsafeTemporaryAllocation(of: MessageTable.Entry.self, capacity: max(count, 1)) { tmp -> MessageTable in
            var textNeeded = metaLength
            for i in 0..<count {
                let e = tableOffset + i * L.tensorEntrySize
                let where_ = "tensor \(i)"
                let code = p.load(fromByteOffset: e + L.eDType, as: UInt8.self)
                guard let dtype = DType(rawValue: code) else { throw bad("\(where_): unknown dtype code \(code)") }
                let ndim = Int(p.load(fromByteOffset: e + L.eNDim, as: UInt8.self))
                guard ndim <= L.maxDims else { throw bad("\(where_): \(ndim) dimensions exceeds \(L.maxDims)") }
                var shape: (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64) = (0, 0, 0, 0, 0, 0, 0, 0)
                var elements: UInt64 = 1
                var overflow = false
                try withUnsafeMutableBytes(of: &shape) { dims in
                    for d in 0..<L.maxDims {
                        let dim = p.i64(e + L.eShape + 8 * d)
                        dims.storeBytes(of: dim, toByteOffset: 8 * d, as: Int64.self)
                        if d >= ndim {
                            guard dim == 0 else { throw bad("\(where_): unused dimension \(d) is \(dim), must be 0") }
                            continue
                        }
                        guard dim >= 0 else { throw bad("\(where_): negative dimension \(dim)") }
                        let (m, o) = elements.multipliedReportingOverflow(by: UInt64(dim))
                        elements = m
                        overflow = overflow || o
                    }
                }
                guard !overflow, elements <= UInt64(Int.max / 16) else { throw bad("\(where_): element count overflows") }
                let nameOff = p.u64(e + L.eName), nameLen = UInt64(p.u32(e + L.eNameLength))
                guard nameLen <= UInt64(L.maxNameLength), nameOff <= UInt64(total), nameLen <= UInt64(total) - nameOff else {
                    throw bad("\(where_): name (offset \(nameOff), length \(nameLen)) outside the message")
                }
                let dataOff = p.u64(e + L.eData), dataLen = p.u64(e + L.eDataLength)
                guard dataOff >= UInt64(L.headerSize), dataOff % UInt64(L.dataAlignment) == 0 else {
                    throw bad("\(where_): data offset \(dataOff) is not a 64-byte aligned offset past the header")
                }
                guard dataOff <= UInt64(total), dataLen <= UInt64(total) - dataOff else {
                    throw bad("\(where_): data (offset \(dataOff), length \(dataLen)) outside the message")
                }
                // Offset 30: the tensor's encoding (compressed on a tcp:// link); 0 everywhere else.
                let encoding = p.u16(e + 30)
                if encoding != 0 {
                    guard allowingEncoded else { throw bad("\(where_): encoded data (encoding \(encoding)) where plain data is required") }
                    try TensorCodec.checkEncodable(encoding, dtype: dtype, shape: shape, ndim: ndim, where: where_)
                } else if let item = dtype.itemSize {
                    if dtype == .bytes && ndim != 1 { throw bad("\(where_): a bytes tensor must have 1 dimension") }
                    if dtype.isFixedWidthString {
                        let width = ndim == 0 ? 0 : withUnsafeBytes(of: shape) { $0.load(fromByteOffset: 8 * (ndim - 1), as: Int64.self) }
                        if width < 1 { throw bad("\(where_): a \(dtype.name) tensor needs a last dimension (the string width) of at least 1") }
                    }
                    guard dataLen == elements * UInt64(item) else {
                        throw bad("\(where_): \(dataLen) data bytes for \(elements) elements of \(dtype.name)")
                    }
                    // Any bits are a number, but not every UTF-32 code unit is text: checked
                    // so that every reader can decode what it is handed.
                    if dtype == .utf32, let u = firstNonScalar(UnsafeRawBufferPointer(start: p + Int(dataOff), count: Int(dataLen))) {
                        throw bad("\(where_): code unit \(u.index) (U+\(String(u.value, radix: 16, uppercase: true))) is not a Unicode scalar value")
                    }
                } else {
                    textNeeded += Int(dataLen) + 8  // copied privately, kept 8-byte aligned
                }
                textNeeded += Int(nameLen)
                (tmp.baseAddress! + i).initialize(to: MessageTable.Entry(
                    nameStart: Int(nameOff), nameLength: Int(nameLen), dtype: dtype, ndim: ndim, shape: shape,
                    dataOffset: Int(dataOff), dataLength: Int(dataLen), dataIsPrivate: false, encoding: encoding))
            }
            let t = MessageTable(count: count, metaCount: metaCount, textCapacity: textNeeded)
            if count > 0 { t.entries.initialize(from: tmp.baseAddress!, count: count) }
            return t
        }

        // Names, metadata and string tensors: copied once into private memory, checked there.
        let text = table.text
        var used = 0
        func copyIn(_ offset: Int, _ n: Int) -> Int {
            let at = used
            if n > 0 { (text + at).copyMemory(from: p + offset, byteCount: n) }
            used += n
            return at
        }
        for i in 0..<count {
            let e = table.entries + i
            let at = copyIn(e.pointee.nameStart, e.pointee.nameLength)
            e.pointee.nameStart = at
            guard isValidUTF8(UnsafeRawBufferPointer(start: text + at, count: e.pointee.nameLength)) else {
                throw bad("tensor \(i): name is not valid UTF-8")
            }
            if e.pointee.dtype == .string && e.pointee.encoding == 0 {
                used = MessageLayout.align(used, 8)
                let d = copyIn(e.pointee.dataOffset, e.pointee.dataLength)
                let elements = MessageView.elementCount(e.pointee.shape, e.pointee.ndim)
                try MessageView.validateStrings(UnsafeRawPointer(text + d), length: e.pointee.dataLength, count: elements,
                                                bad: { bad("tensor \(i): \($0)") })
                e.pointee.dataOffset = d
                e.pointee.dataIsPrivate = true
            }
        }
        // Names must be unique so lookup by name is unambiguous.
        // Few tensors (the common case): compared pairwise in place, no allocation.
        if count > 1 && count <= 16 {
            for i in 1..<count {
                let a = table.entries[i]
                for j in 0..<i {
                    let b = table.entries[j]
                    if a.nameLength == b.nameLength,
                       UnsafeRawBufferPointer(start: text + a.nameStart, count: a.nameLength)
                        .elementsEqual(UnsafeRawBufferPointer(start: text + b.nameStart, count: b.nameLength)) {
                        let name = String(decoding: UnsafeRawBufferPointer(start: text + a.nameStart, count: a.nameLength), as: UTF8.self)
                        throw bad("duplicate tensor name \"\(name)\"")
                    }
                }
            }
        } else if count > 16 {
            var seen = Set<[UInt8]>()
            for i in 0..<count {
                let e = table.entries[i]
                let nameBytes = Array(UnsafeRawBufferPointer(start: text + e.nameStart, count: e.nameLength))
                guard seen.insert(nameBytes).inserted else { throw bad("duplicate tensor name \"\(String(decoding: nameBytes, as: UTF8.self))\"") }
            }
        }
        // Metadata: exactly metaCount entries filling exactly metaLength bytes.
        let m0 = copyIn(metaOffset, metaLength)
        var o = m0
        let end = m0 + metaLength
        let t = UnsafeRawPointer(text)
        for i in 0..<metaCount {
            guard end - o >= 8 else { throw bad("metadata entry \(i) header past the metadata area") }
            let k = Int(t.u32(o)), v = Int(t.u32(o + 4))
            o += 8
            guard k <= end - o, v <= end - o - k else { throw bad("metadata entry \(i) past the metadata area") }
            guard isValidUTF8(UnsafeRawBufferPointer(start: text + o, count: k)),
                  isValidUTF8(UnsafeRawBufferPointer(start: text + o + k, count: v)) else {
                throw bad("metadata entry \(i) is not valid UTF-8")
            }
            (table.meta + i).initialize(to: (o, k, o + k, v))
            o += k + v
        }
        guard o == end else { throw bad("\(end - o) stray bytes after the metadata entries") }

        self.base = p
        self.length = total
        self.status = status
        self.table = table
        self.owner = owner
    }

    /// The element count of a validated shape: 0 when any dimension is 0 (the running
    /// product of the others may exceed Int even then), else their product, which
    /// validation bounded.
    package static func elementCount(_ shape: (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64), _ ndim: Int) -> Int {
        withUnsafeBytes(of: shape) { dims in
            var n = 1
            for k in 0..<ndim {
                let d = dims.load(fromByteOffset: 8 * k, as: Int64.self)
                if d == 0 { return 0 }
                let (m, o) = n.multipliedReportingOverflow(by: Int(d))
                if o { return 0 }  // cannot happen for a validated shape
                n = m
            }
            return n
        }
    }

    static func validateStrings(_ p: UnsafeRawPointer, length: Int, count: Int, bad: (String) -> FerryError) throws {
        let (table, o1) = (count + 1).multipliedReportingOverflow(by: 8)
        guard !o1, table <= length else { throw bad("string offsets (\(count + 1)) do not fit in \(length) bytes") }
        let textLength = length - table
        let text = UnsafeRawBufferPointer(start: p + table, count: textLength)
        if let problem = packedStringsProblem(count: count, text: text, offset: { p.u64(8 * $0) }) { throw bad(problem) }
    }

    /// The raw fields of tensor `i` (0 ≤ i < tensorCount): the name (and a string tensor's
    /// bytes) in the view's private copy, numeric data in place.
    @inline(__always)
    public func rawTensor(at i: Int) -> RawTensor {
        precondition(i >= 0 && i < tensorCount, "tensor index out of range")
        let e = table.entries[i]
        let text = UnsafeRawPointer(table.text)
        let data = e.dataIsPrivate ? text + e.dataOffset : base + e.dataOffset
        return RawTensor(name: text + e.nameStart, nameLength: e.nameLength, dtype: e.dtype, ndim: e.ndim, shape: e.shape,
                         data: data, dataLength: e.dataLength, dataOffset: e.dataOffset)
    }

    /// Tensor `i` with its name and shape decoded.
    public func tensor(at i: Int) -> TensorView {
        TensorView(raw: rawTensor(at: i), keep: self)
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
        (0..<metadataCount).map { i in
            let e = rawMetadata(at: i)!
            return (String(decoding: UnsafeRawBufferPointer(start: e.key, count: e.keyLength), as: UTF8.self),
                    String(decoding: UnsafeRawBufferPointer(start: e.value, count: e.valueLength), as: UTF8.self))
        }
    }

    /// The value of metadata `key`, if present.
    public func metadata(_ key: String) -> String? {
        metadata.first(where: { $0.key == key })?.value
    }

    /// Raw metadata entry `i`: pointers into the view's private copy, for the C ABI.
    public func rawMetadata(at i: Int) -> (key: UnsafeRawPointer, keyLength: Int, value: UnsafeRawPointer, valueLength: Int)? {
        guard i >= 0 && i < metadataCount else { return nil }
        let (k, kl, v, vl) = table.meta[i]
        let text = UnsafeRawPointer(table.text)
        return (text + k, kl, text + v, vl)
    }

    /// Number of metadata entries.
    public var metadataCount: Int { table.metaCount }
}

/// A tensor inside a `MessageView`: decoded name and shape, data still in place.
public struct TensorView {
    /// Tensor name.
    public let name: String
    /// Element type.
    public let dtype: DType
    /// Dimensions (empty for a 0-d scalar).
    public let shape: [Int]
    /// The bytes, in place in the message (a string tensor's: in the view's private copy).
    public let data: UnsafeRawBufferPointer
    /// Keeps the private copy and the message's memory alive as long as this view.
    let keep: (MessageTable, AnyObject?)

    init(raw: RawTensor, keep view: MessageView) {
        keep = (view.table, view.owner)
        name = String(decoding: UnsafeRawBufferPointer(start: raw.name, count: raw.nameLength), as: UTF8.self)
        dtype = raw.dtype
        shape = withUnsafeBytes(of: raw.shape) { buf in (0..<raw.ndim).map { Int(buf.load(fromByteOffset: 8 * $0, as: Int64.self)) } }
        data = UnsafeRawBufferPointer(start: raw.data, count: raw.dataLength)
    }

    /// Number of elements (1 for a 0-d tensor; 0 when a dimension is 0).
    public var count: Int {
        if shape.contains(0) { return 0 }
        return shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? 0 : $0 * $1 }
    }

    /// Copies the elements out as `T` (which must match `dtype`). The copy is sized from
    /// the validated shape, and never copies more than the validated data length.
    public func values<T: TensorElement>(as type: T.Type = T.self) throws -> [T] {
        guard T.dtype == dtype else { throw FerryError(.invalidArgument, "tensor \"\(name)\" is \(dtype.name), not \(T.dtype.name)") }
        let n = count
        let bytes = min(n * MemoryLayout<T>.stride, data.count)
        return [T](unsafeUninitializedCapacity: n) { buf, filled in
            let dst = UnsafeMutableRawBufferPointer(buf)
            if bytes > 0 { dst.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: bytes) }
            if bytes < dst.count { (dst.baseAddress! + bytes).initializeMemory(as: UInt8.self, repeating: 0, count: dst.count - bytes) }
            filled = n
        }
    }

    /// The strings of a `fixedBytes` tensor (numpy's `S`), padding removed.
    public func byteStrings() throws -> [[UInt8]] {
        guard dtype == .fixedBytes else { throw FerryError(.invalidArgument, "tensor \"\(name)\" is \(dtype.name), not fixed_bytes") }
        return fixedWidthStrings(data.baseAddress, shape: shape, as: UInt8.self) { Array($0) }
    }

    /// The strings of a `string` or `utf32` tensor, in row-major order.
    public func strings() throws -> [String] {
        if dtype == .utf32 {
            return fixedWidthStrings(data.baseAddress, shape: shape, as: UInt32.self, decodeUTF32)
        }
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
