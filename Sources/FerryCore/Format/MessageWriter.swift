/// Writes a message in place into memory it does not own (a shared-memory slot, a buffer).
/// Tensor data is placed first, in the order added, so callers can fill each tensor's
/// bytes directly (decode a frame straight into the slot); `finish` writes the table,
/// names, metadata and header.
public struct MessageWriter {
    let base: UnsafeMutableRawPointer
    /// Bytes available.
    public let capacity: Int
    let limitHint: String
    var cursor = MessageLayout.headerSize
    var entries: [(name: [UInt8], dtype: DType, shape: [Int], offset: Int, length: Int, encoding: UInt16)] = []
    var meta: [(key: [UInt8], value: [UInt8])] = []
    /// UTF-32 tensors handed out to be filled in place (`addTensor(name:dtype:shape:)`), which
    /// `finish` checks; those copied in by `addTensor(…bytes:)` are checked as they are copied.
    var uncheckedText: [Int] = []
    /// The table being written (between `beginTable` and `endTable`).
    var table: TableInProgress? = nil
    /// Set by the call when its transport sends from the caller's memory (tcp://): large
    /// tensors added with `addTensor(…referencing:)` are then not copied into the buffer but
    /// sent from where they are (scatter-gather), and their range in the buffer stays a hole.
    package var acceptsReferences = false
    /// The tensors sent from the caller's memory: where each goes in the message, from where.
    package private(set) var references: [Reference] = []

    /// A tensor's bytes left in the caller's memory until the message is sent.
    public struct Reference {
        /// Offset of the bytes in the message.
        public let offset: Int
        /// Where the bytes are (the caller's memory).
        public let source: UnsafeRawPointer
        public let length: Int
    }

    /// Below this a tensor is copied even where references are accepted: a copy of a few
    /// pages costs less than another piece for the kernel to gather.
    package static let smallestReference = 64 << 10

    /// Prepares to write at most `capacity` bytes at `base`. `limitHint` completes the
    /// error raised when the message does not fit (which setting to raise).
    public init(base: UnsafeMutableRawPointer, capacity: Int, limitHint: String = "") {
        self.base = base
        self.capacity = capacity
        self.limitHint = limitHint
        entries.reserveCapacity(4)
    }

    /// Bytes written so far (data only; `finish` adds the table).
    public var bytesUsed: Int { cursor }

    func tooLarge(_ needed: Int) -> FerryError {
        FerryError(.tooLarge, "message needs at least \(needed) bytes but only \(capacity) fit\(limitHint.isEmpty ? "" : "; \(limitHint)")")
    }

    mutating func reserve(name: String, dtype: DType, shape: [Int], length: Int) throws -> UnsafeMutableRawBufferPointer {
        guard shape.count <= MessageLayout.maxDims else {
            throw FerryError(.invalidArgument, "tensor \"\(name)\" has \(shape.count) dimensions; at most \(MessageLayout.maxDims) are allowed")
        }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw FerryError(.invalidArgument, "tensor \"\(name)\" has a negative dimension in \(shape)") }
        let nameBytes = Array(name.utf8)
        guard nameBytes.count <= MessageLayout.maxNameLength else {
            throw FerryError(.invalidArgument, "tensor name longer than \(MessageLayout.maxNameLength) bytes")
        }
        guard !entries.contains(where: { $0.name == nameBytes }) else {
            throw FerryError(.invalidArgument, "duplicate tensor name \"\(name)\"")
        }
        guard entries.count < MessageLayout.maxTensors else { throw FerryError(.invalidArgument, "too many tensors") }
        let offset = MessageLayout.align(cursor, MessageLayout.dataAlignment)
        guard length <= capacity, offset <= capacity - length else { throw tooLarge(offset + length) }
        entries.append((nameBytes, dtype, shape, offset, length, 0))
        cursor = offset + length
        return UnsafeMutableRawBufferPointer(start: base + offset, count: length)
    }

    /// Reserves room for a fixed-size tensor and returns its bytes to fill in place.
    public mutating func addTensor(name: String, dtype: DType, shape: [Int]) throws -> UnsafeMutableRawBufferPointer {
        guard let item = dtype.itemSize else {
            throw FerryError(.invalidArgument, "use addStrings for string tensors")
        }
        if dtype == .bytes && shape.count != 1 { throw FerryError(.invalidArgument, "a bytes tensor must have 1 dimension") }
        if dtype.isFixedWidthString && (shape.last ?? 0) < 1 {
            throw FerryError(.invalidArgument, "tensor \"\(name)\": a \(dtype.name) tensor needs a last dimension, the string width, of at least 1 (numpy's <U and S have no width 0)")
        }
        // A 0 anywhere: no elements, however large the other dimensions (the decoder takes
        // such shapes, so a decoded message re-encodes).
        var count = shape.contains(0) ? 0 : 1
        for d in shape where count != 0 {
            let (m, o) = count.multipliedReportingOverflow(by: max(d, 0))
            guard !o else { throw FerryError(.invalidArgument, "tensor \"\(name)\" shape \(shape) overflows") }
            count = m
        }
        let (length, o) = count.multipliedReportingOverflow(by: item)
        guard !o else { throw FerryError(.invalidArgument, "tensor \"\(name)\" shape \(shape) overflows") }
        let dst = try reserve(name: name, dtype: dtype, shape: shape, length: length)
        if dtype == .utf32 { uncheckedText.append(entries.count - 1) }
        return dst
    }

    /// Adds a tensor by copying `bytes` (which must match dtype and shape).
    public mutating func addTensor(name: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        let dst = try addTensor(name: name, dtype: dtype, shape: shape)
        if dtype == .utf32 { uncheckedText.removeLast() }  // checked below, while copying
        guard dst.count == bytes.count else {
            cursor = entries.removeLast().offset
            throw FerryError(.invalidArgument, "tensor \"\(name)\": \(bytes.count) bytes given, \(dst.count) expected for \(dtype.name) \(shape)")
        }
        guard dtype == .utf32 else {
            if !bytes.isEmpty { dst.copyMemory(from: bytes) }
            return
        }
        // Copied and checked in one pass over the caller's memory.
        if let bad = firstNonScalar(bytes, copyingTo: dst) {
            cursor = entries.removeLast().offset
            throw Self.nonScalarError(tensor: name, shape: shape, bad)
        }
    }

    /// Adds a tensor whose bytes are read when the message is *sent*, not now: where the
    /// transport sends from the caller's memory (tcp://), a large tensor is not copied into
    /// the request at all; elsewhere (shm://, small tensors, UTF-32 text, which is checked
    /// as it is copied) this is `addTensor(…bytes:)`. `bytes` must stay valid and unchanged
    /// until the call's `send` returns.
    public mutating func addTensor(name: String, dtype: DType, shape: [Int], referencing bytes: UnsafeRawBufferPointer) throws {
        guard acceptsReferences, bytes.count >= Self.smallestReference, dtype != .utf32, table == nil else {
            try addTensor(name: name, dtype: dtype, shape: shape, bytes: bytes)
            return
        }
        let dst = try addTensor(name: name, dtype: dtype, shape: shape)
        guard dst.count == bytes.count else {
            cursor = entries.removeLast().offset
            throw FerryError(.invalidArgument, "tensor \"\(name)\": \(bytes.count) bytes given, \(dst.count) expected for \(dtype.name) \(shape)")
        }
        references.append(Reference(offset: dst.baseAddress! - base, source: bytes.baseAddress!, length: bytes.count))
    }

    /// The error for UTF-32 text holding a code unit that is not a Unicode scalar value.
    static func nonScalarError(tensor name: String, shape: [Int], _ bad: (index: Int, value: UInt32)) -> FerryError {
        FerryError(.invalidArgument, "tensor \"\(name)\": string \(bad.index / max(shape.last ?? 1, 1)) holds U+\(String(bad.value, radix: 16, uppercase: true)), "
            + "which is not a Unicode scalar value (a lone surrogate or past U+10FFFF)")
    }

    /// Adds a `string` tensor of `shape` holding `strings` in row-major order.
    public mutating func addStrings(name: String, shape: [Int], strings: [String]) throws {
        guard let expected = elementCount(shape), expected == strings.count else {
            throw FerryError(.invalidArgument, "tensor \"\(name)\": \(strings.count) strings for shape \(shape)")
        }
        let text = strings.reduce(0) { $0 + $1.utf8.count }
        let dst = try reserve(name: name, dtype: .string, shape: shape, length: 8 * (strings.count + 1) + text)
        Tensor.encodeStrings(strings, into: dst)
    }

    /// Adds a `string` tensor of `shape` from packed UTF-8: `offsets` (count + 1 ascending
    /// byte offsets, the first 0, the last `text.count`) and the concatenated `text` — the
    /// wire layout itself, so bindings hand over whole columns without a per-string call.
    /// Every string is checked to be valid UTF-8.
    public mutating func addPackedStrings(name: String, shape: [Int], offsets: UnsafeBufferPointer<UInt64>,
                                          text: UnsafeRawBufferPointer) throws {
        guard let count = elementCount(shape), offsets.count == count + 1 else {
            throw FerryError(.invalidArgument, "tensor \"\(name)\": \(offsets.count) offsets for shape \(shape) (need one more than the strings)")
        }
        guard offsets.first == 0, offsets.last == UInt64(text.count) else {
            throw FerryError(.invalidArgument, "tensor \"\(name)\": offsets must start at 0 and end at the text length \(text.count)")
        }
        if let problem = packedStringsProblem(count: count, text: text, offset: { offsets[$0] }) {
            throw FerryError(.invalidArgument, "tensor \"\(name)\": \(problem)")
        }
        let (table, o1) = offsets.count.multipliedReportingOverflow(by: 8)
        let (length, o2) = table.addingReportingOverflow(text.count)
        guard !o1, !o2 else { throw FerryError(.invalidArgument, "tensor \"\(name)\" is too large") }
        let dst = try reserve(name: name, dtype: .string, shape: shape, length: length)
        // The wire's offsets are little-endian u64, as the caller's are on every host Swift
        // runs this on: one copy, not a store per string.
        #if _endian(little)
        dst.baseAddress!.copyMemory(from: offsets.baseAddress!, byteCount: table)
        #else
        for (i, o) in offsets.enumerated() { dst.baseAddress!.put(o, at: 8 * i) }
        #endif
        if text.count > 0 { (dst.baseAddress! + table).copyMemory(from: text.baseAddress!, byteCount: text.count) }
    }

    /// Adds an owned tensor by copying it.
    public mutating func add(name: String, _ tensor: Tensor) throws {
        if tensor.dtype.itemSize != nil {  // the same checks as any fixed-size tensor
            try tensor.bytes.withUnsafeBytes { try addTensor(name: name, dtype: tensor.dtype, shape: tensor.shape, bytes: $0) }
            return
        }
        let dst = try reserve(name: name, dtype: tensor.dtype, shape: tensor.shape, length: tensor.bytes.count)
        tensor.bytes.withUnsafeBytes { if !$0.isEmpty { dst.copyMemory(from: $0) } }
    }

    /// Adds or replaces a metadata entry.
    public mutating func setMetadata(_ key: String, _ value: String) {
        let k = Array(key.utf8)
        meta.removeAll(where: { $0.key == k })
        meta.append((k, Array(value.utf8)))
    }

    /// Reserves `length` bytes for tensor data stored with `encoding` (a compressed tensor on a
    /// tcp:// link); `TensorCodec` fills them. Returns the whole reserved range.
    package mutating func reserveEncoded(name: [UInt8], dtype: DType, shape: [Int], length: Int, encoding: UInt16) throws -> UnsafeMutableRawBufferPointer {
        let buf = try reserve(name: String(decoding: name, as: UTF8.self), dtype: dtype, shape: shape, length: length)
        entries[entries.count - 1].encoding = encoding
        return buf
    }

    /// Gives back the unused tail of the last reserved tensor (after compressing into it).
    package mutating func shrinkLast(to length: Int, encoding: UInt16? = nil) {
        guard let last = entries.last, length <= last.length else { return }
        entries[entries.count - 1].length = length
        if let encoding { entries[entries.count - 1].encoding = encoding }
        cursor = last.offset + length
    }

    /// Writes table, names, metadata and header. Returns the total message length.
    public mutating func finish(status: Int32 = 0) throws -> Int {
        typealias L = MessageLayout
        // Fixed-width Unicode strings are filled in place after `addTensor`: checked here,
        // before anything is sent, so every reader can turn them into text.
        for i in uncheckedText where entries[i].encoding == 0 {
            let e = entries[i]
            if let bad = firstNonScalar(UnsafeRawBufferPointer(start: base + e.offset, count: e.length)) {
                throw Self.nonScalarError(tensor: String(decoding: e.name, as: UTF8.self), shape: e.shape, bad)
            }
        }
        let table = L.align(cursor, 8)
        var end = table + entries.count * L.tensorEntrySize
        let namesStart = end
        end += entries.reduce(0) { $0 + $1.name.count }
        let metaStart = end
        let metaLength = meta.reduce(0) { $0 + 8 + $1.key.count + $1.value.count }
        end += metaLength
        guard end <= capacity else { throw tooLarge(end) }
        var nameAt = namesStart
        for (i, e) in entries.enumerated() {
            let o = table + i * L.tensorEntrySize
            base.put(UInt64(e.offset), at: o + L.eData)
            base.put(UInt64(e.length), at: o + L.eDataLength)
            base.put(UInt64(nameAt), at: o + L.eName)
            base.put(UInt32(e.name.count), at: o + L.eNameLength)
            base.put(e.dtype.rawValue, at: o + L.eDType)
            base.put(UInt8(e.shape.count), at: o + L.eNDim)
            base.put(e.encoding, at: o + 30)
            for d in 0..<L.maxDims { base.put(Int64(d < e.shape.count ? e.shape[d] : 0), at: o + L.eShape + 8 * d) }
            e.name.withUnsafeBytes { if !$0.isEmpty { (base + nameAt).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            nameAt += e.name.count
        }
        var m = metaStart
        for (k, v) in meta {
            base.put(UInt32(k.count), at: m)
            base.put(UInt32(v.count), at: m + 4)
            m += 8
            k.withUnsafeBytes { if !$0.isEmpty { (base + m).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            m += k.count
            v.withUnsafeBytes { if !$0.isEmpty { (base + m).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            m += v.count
        }
        base.put(L.magic, at: L.oMagic)
        base.put(L.version, at: L.oVersion)
        base.put(UInt16(L.headerSize), at: L.oHeaderSize)
        base.put(UInt64(end), at: L.oTotal)
        base.put(UInt32(entries.count), at: L.oTensorCount)
        base.put(UInt32(meta.count), at: L.oMetaCount)
        base.put(UInt64(table), at: L.oTable)
        base.put(UInt64(metaStart), at: L.oMeta)
        base.put(UInt64(metaLength), at: L.oMetaLength)
        base.put(UInt32(bitPattern: status), at: L.oStatus)
        base.put(UInt32(0), at: L.oFlags)
        base.put(UInt64(0), at: 56)
        // Zero the alignment padding in the table gap so no stale bytes leak between messages.
        if table > cursor { (base + cursor).initializeMemory(as: UInt8.self, repeating: 0, count: table - cursor) }
        return end
    }
}
