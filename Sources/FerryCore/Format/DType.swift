/// Element types of a tensor. The raw values are the wire codes (docs/protocol.md) and the
/// `FERRY_DTYPE_*` constants of the C header; they never change meaning.
public enum DType: UInt8, Sendable, CaseIterable {
    case bool = 1
    case int8 = 2
    case int16 = 3
    case int32 = 4
    case int64 = 5
    case uint8 = 6
    case uint16 = 7
    case uint32 = 8
    case uint64 = 9
    case float16 = 10
    case float32 = 11
    case float64 = 12
    /// Opaque bytes: a 1-d tensor whose element is one byte with no numeric meaning.
    case bytes = 13
    /// UTF-8 strings: `(n+1)` little-endian u64 offsets followed by the concatenated text.
    case string = 14
    /// Fixed-width Unicode strings, numpy's `<U{w}`: little-endian UTF-32 code units, the
    /// last dimension is the width `w`; a string shorter than `w` is padded with NULs (so it
    /// cannot end in NUL). Only Unicode scalars (no surrogates, at most U+10FFFF) are written.
    case utf32 = 15
    /// Fixed-width byte strings, numpy's `S{w}`: the last dimension is the width `w`; a
    /// string shorter than `w` is padded with NULs.
    case fixedBytes = 16
    /// Brain floating point: the upper 16 bits of an IEEE float32 (sign, 8-bit exponent,
    /// 7-bit fraction), little-endian. Swift has no such type: read and write the raw
    /// `UInt16` values (a float32's bits shifted right by 16).
    case bfloat16 = 17

    /// Bytes per element (for fixed-width strings: per code unit), or nil for variable-length `string`.
    public var itemSize: Int? {
        switch self {
        case .bool, .int8, .uint8, .bytes, .fixedBytes: return 1
        case .int16, .uint16, .float16, .bfloat16: return 2
        case .int32, .uint32, .float32, .utf32: return 4
        case .int64, .uint64, .float64: return 8
        case .string: return nil
        }
    }

    /// The numpy-style name ("uint8", "float32", …; "bytes", "string").
    public var name: String {
        switch self {
        case .bool: return "bool"
        case .int8: return "int8"
        case .int16: return "int16"
        case .int32: return "int32"
        case .int64: return "int64"
        case .uint8: return "uint8"
        case .uint16: return "uint16"
        case .uint32: return "uint32"
        case .uint64: return "uint64"
        case .float16: return "float16"
        case .float32: return "float32"
        case .float64: return "float64"
        case .bytes: return "bytes"
        case .string: return "string"
        case .utf32: return "utf32"
        case .fixedBytes: return "fixed_bytes"
        case .bfloat16: return "bfloat16"
        }
    }

    /// True for numbers and bools: the dtypes a table column, a batch or an image holds.
    public var isNumeric: Bool {
        switch self {
        case .bytes, .string, .utf32, .fixedBytes: return false
        default: return true
        }
    }

    /// True for the fixed-width string dtypes, whose last dimension is the string width.
    public var isFixedWidthString: Bool { self == .utf32 || self == .fixedBytes }

    /// Looks a dtype up by its numpy-style name.
    public init?(name: String) {
        guard let match = DType.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }
}

/// Swift scalar types that map one-to-one onto a fixed-size `DType`.
public protocol TensorElement: Sendable {
    /// The wire dtype of this Swift type.
    static var dtype: DType { get }
}

extension Bool: TensorElement { public static var dtype: DType { .bool } }
extension Int8: TensorElement { public static var dtype: DType { .int8 } }
extension Int16: TensorElement { public static var dtype: DType { .int16 } }
extension Int32: TensorElement { public static var dtype: DType { .int32 } }
extension Int64: TensorElement { public static var dtype: DType { .int64 } }
extension UInt8: TensorElement { public static var dtype: DType { .uint8 } }
extension UInt16: TensorElement { public static var dtype: DType { .uint16 } }
extension UInt32: TensorElement { public static var dtype: DType { .uint32 } }
extension UInt64: TensorElement { public static var dtype: DType { .uint64 } }
#if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
extension Float16: TensorElement { public static var dtype: DType { .float16 } }
#endif
extension Float: TensorElement { public static var dtype: DType { .float32 } }
extension Double: TensorElement { public static var dtype: DType { .float64 } }
