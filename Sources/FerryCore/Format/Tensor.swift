/// The number of elements of `shape`: nil when a dimension is negative or the product
/// overflows (0 when any dimension is 0, whatever the others).
public func elementCount(_ shape: [Int]) -> Int? {
    if shape.contains(where: { $0 < 0 }) { return nil }
    if shape.contains(0) { return 0 }
    var n = 1
    for d in shape {
        let (m, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = m
    }
    return n
}

/// An owned tensor: element type, shape and the bytes in wire form (row-major, little-endian;
/// for `string`, offsets then text as in docs/protocol.md).
public struct Tensor: Equatable, Sendable {
    /// Element type.
    public var dtype: DType
    /// Dimensions; empty for a 0-d scalar.
    public var shape: [Int]
    /// The data in wire form.
    public var bytes: [UInt8]

    /// A tensor from raw wire bytes; checks that they match dtype and shape.
    public init(dtype: DType, shape: [Int], bytes: [UInt8]) throws {
        guard shape.count <= MessageLayout.maxDims, shape.allSatisfy({ $0 >= 0 }) else {
            throw FerryError(.invalidArgument, "invalid shape \(shape)")
        }
        guard let elements = elementCount(shape), elements <= Int.max / 16 else {
            throw FerryError(.invalidArgument, "shape \(shape) has too many elements")
        }
        if let item = dtype.itemSize {
            guard bytes.count == elements * item else {
                throw FerryError(.invalidArgument, "\(bytes.count) bytes do not match \(dtype.name) \(shape)")
            }
        } else {
            try bytes.withUnsafeBytes { buf in
                try MessageView.validateStrings(buf.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, length: buf.count, count: elements) {
                    FerryError(.invalidArgument, "string tensor: \($0)")
                }
            }
        }
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// A tensor of `values`, shaped `shape` (default: 1-d).
    public init<T: TensorElement>(_ values: [T], shape: [Int]? = nil) {
        let shape = shape ?? [values.count]
        precondition(elementCount(shape) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.dtype = T.dtype
        self.shape = shape
        self.bytes = values.withUnsafeBytes { Array($0) }
    }

    /// A 0-d tensor holding one value.
    public init<T: TensorElement>(scalar: T) { self.init([scalar], shape: []) }

    /// A `string` tensor of `strings`, shaped `shape` (default: 1-d).
    public init(strings: [String], shape: [Int]? = nil) {
        let shape = shape ?? [strings.count]
        precondition(elementCount(shape) == strings.count, "shape \(shape) does not hold \(strings.count) strings")
        let length = 8 * (strings.count + 1) + strings.reduce(0) { $0 + $1.utf8.count }
        var bytes = [UInt8](repeating: 0, count: length)
        bytes.withUnsafeMutableBytes { Tensor.encodeStrings(strings, into: $0) }
        self.dtype = .string
        self.shape = shape
        self.bytes = bytes
    }

    /// A copy of a tensor view.
    public init(_ view: TensorView) {
        dtype = view.dtype
        shape = view.shape
        bytes = Array(view.data)
    }

    /// Number of elements.
    public var count: Int { elementCount(shape) ?? 0 }

    /// The elements as `T` (must match `dtype`).
    public func values<T: TensorElement>(as type: T.Type = T.self) throws -> [T] {
        guard T.dtype == dtype else { throw FerryError(.invalidArgument, "tensor is \(dtype.name), not \(T.dtype.name)") }
        return [T](unsafeUninitializedCapacity: count) { buf, n in
            bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(buf).copyMemory(from: $0) }
            n = count
        }
    }

    /// The strings of a `string` or `utf32` tensor.
    public func strings() throws -> [String] {
        if dtype == .utf32 {
            return bytes.withUnsafeBytes { fixedWidthStrings($0.baseAddress, shape: shape, as: UInt32.self, decodeUTF32) }
        }
        guard dtype == .string else { throw FerryError(.invalidArgument, "tensor is \(dtype.name), not string") }
        return bytes.withUnsafeBytes { buf in
            let p = buf.baseAddress!
            let text = p + 8 * (count + 1)
            return (0..<count).map { i in
                let a = Int(p.u64(8 * i)), b = Int(p.u64(8 * (i + 1)))
                return String(decoding: UnsafeRawBufferPointer(start: text + a, count: b - a), as: UTF8.self)
            }
        }
    }

    /// The strings of a `fixedBytes` tensor (numpy's `S`), padding removed.
    public func byteStrings() throws -> [[UInt8]] {
        guard dtype == .fixedBytes else { throw FerryError(.invalidArgument, "tensor is \(dtype.name), not fixed_bytes") }
        return bytes.withUnsafeBytes { fixedWidthStrings($0.baseAddress, shape: shape, as: UInt8.self) { Array($0) } }
    }

    static func encodeStrings(_ strings: [String], into dst: UnsafeMutableRawBufferPointer) {
        let p = dst.baseAddress!
        var offset = 0
        let text = p + 8 * (strings.count + 1)
        p.put(UInt64(0), at: 0)
        for (i, s) in strings.enumerated() {
            var s = s
            s.withUTF8 { u in
                if u.count > 0 { (text + offset).copyMemory(from: u.baseAddress!, byteCount: u.count) }
                offset += u.count
            }
            p.put(UInt64(offset), at: 8 * (i + 1))
        }
    }
}

/// An owned message: named tensors in order, string metadata and a status.
public struct Message: Equatable, Sendable {
    /// A tensor and its name.
    public struct Entry: Equatable, Sendable {
        /// Tensor name, unique in the message.
        public var name: String
        /// The tensor.
        public var tensor: Tensor
    }

    /// Tensors in order.
    public var entries: [Entry]
    /// Metadata (key → value).
    public var metadata: [String: String]
    /// 0 for success; a `FerryError.Code` raw value for an error reply.
    public var status: Int32

    /// A message with `entries` (ordered) and `metadata`.
    public init(_ entries: [(String, Tensor)] = [], metadata: [String: String] = [:], status: Int32 = 0) {
        self.entries = entries.map { Entry(name: $0.0, tensor: $0.1) }
        self.metadata = metadata
        self.status = status
    }

    /// A copy of a message view.
    public init(_ view: MessageView) {
        entries = view.tensors.map { Entry(name: $0.name, tensor: Tensor($0)) }
        metadata = Dictionary(view.metadata.map { ($0.key, $0.value) }, uniquingKeysWith: { _, b in b })
        status = view.status
    }

    /// The tensor called `name`.
    public subscript(name: String) -> Tensor? {
        get { entries.first(where: { $0.name == name })?.tensor }
        set {
            if let i = entries.firstIndex(where: { $0.name == name }) {
                if let t = newValue { entries[i].tensor = t } else { entries.remove(at: i) }
            } else if let t = newValue {
                entries.append(Entry(name: name, tensor: t))
            }
        }
    }

    /// Writes the message with `writer`.
    public func write(to writer: inout MessageWriter) throws -> Int {
        for e in entries { try writer.add(name: e.name, e.tensor) }
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) { writer.setMetadata(k, v) }
        return try writer.finish(status: status)
    }

    /// The message encoded as bytes (for transports that send a buffer).
    public func encoded() throws -> [UInt8] {
        // Exactly what MessageWriter lays out: the data blocks (each 64-byte aligned), then the
        // table (8-byte aligned), the names and the metadata.
        var size = MessageLayout.headerSize
        for e in entries { size = MessageLayout.align(size, MessageLayout.dataAlignment) + e.tensor.bytes.count }
        size = MessageLayout.align(size, 8) + entries.count * MessageLayout.tensorEntrySize
        size += entries.reduce(0) { $0 + $1.name.utf8.count }
        size += metadata.reduce(0) { $0 + 8 + $1.key.utf8.count + $1.value.utf8.count }
        var out = [UInt8](repeating: 0, count: size)
        let n = try out.withUnsafeMutableBytes { buf -> Int in
            var w = MessageWriter(base: buf.baseAddress!, capacity: buf.count)
            return try write(to: &w)
        }
        out.removeLast(out.count - n)
        return out
    }

    /// Decodes (and validates) a message from bytes.
    public static func decode(_ bytes: [UInt8]) throws -> Message {
        try bytes.withUnsafeBytes { Message(try MessageView(validating: $0)) }
    }
}

/// Fixed-width strings (`utf32`, `fixedBytes`) of `shape`: each of the strings (the product
/// of all but the last dimension) is `shape.last` units, NUL-padded; the padding is not part
/// of the string (numpy's rule).
func fixedWidthStrings<T: FixedWidthInteger, R>(_ p: UnsafeRawPointer?, shape: [Int], as: T.Type,
                                                _ make: (UnsafeBufferPointer<T>) -> R) -> [R] {
    let width = shape.last ?? 0, n = shape.dropLast().reduce(1, *)
    guard width > 0, let p else { return (0..<n).map { _ in make(UnsafeBufferPointer(start: nil, count: 0)) } }
    let units = p.assumingMemoryBound(to: T.self)
    return (0..<n).map { i in
        var k = width
        while k > 0, units[i * width + k - 1] == 0 { k -= 1 }
        return make(UnsafeBufferPointer(start: units + i * width, count: k))
    }
}

/// Text of UTF-32 code units; a value that is not a Unicode scalar (which writers refuse)
/// becomes U+FFFD rather than trapping.
func decodeUTF32(_ units: UnsafeBufferPointer<UInt32>) -> String {
    var s = String.UnicodeScalarView()
    for u in units { s.append(Unicode.Scalar(UInt32(littleEndian: u)) ?? "\u{FFFD}") }
    return String(s)
}
