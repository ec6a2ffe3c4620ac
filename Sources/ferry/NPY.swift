import FerryCore
import Foundation

/// Reads and writes numpy `.npy` files (format versions 1–3, C order, little-endian).
enum NPY {
    static let descrs: [String: DType] = [
        "|b1": .bool, "|i1": .int8, "<i2": .int16, "<i4": .int32, "<i8": .int64,
        "|u1": .uint8, "<u2": .uint16, "<u4": .uint32, "<u8": .uint64,
        "<f2": .float16, "<f4": .float32, "<f8": .float64,
    ]

    static func descr(_ d: DType) -> String? { descrs.first(where: { $0.value == d })?.key }

    /// Loads a tensor from an `.npy` file.
    static func load(_ path: String) throws -> Tensor {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FerryError(.invalidArgument, "cannot read \(path)")
        }
        let b = [UInt8](data)
        guard b.count >= 10, b[0] == 0x93, Array(b[1...5]) == Array("NUMPY".utf8) else {
            throw FerryError(.malformed, "\(path) is not a .npy file")
        }
        let major = b[6]
        let headerLength: Int, start: Int
        if major == 1 {
            headerLength = Int(b[8]) | Int(b[9]) << 8
            start = 10
        } else {
            guard b.count >= 12 else { throw FerryError(.malformed, "\(path): truncated header") }
            headerLength = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24
            start = 12
        }
        guard start + headerLength <= b.count else { throw FerryError(.malformed, "\(path): truncated header") }
        let header = String(decoding: b[start..<(start + headerLength)], as: UTF8.self)
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let d = field("descr"), let q1 = d.firstIndex(of: "'") else { throw FerryError(.malformed, "\(path): no descr") }
        let rest = d[d.index(after: q1)...]
        guard let q2 = rest.firstIndex(of: "'") else { throw FerryError(.malformed, "\(path): bad descr") }
        var descr = String(rest[..<q2])
        if descr == "<b1" || descr == "<i1" || descr == "<u1" { descr = "|" + descr.dropFirst() }
        guard let dtype = descrs[descr] else { throw FerryError(.invalidArgument, "\(path): dtype \(descr) is not supported") }
        if let f = field("fortran_order"), f.hasPrefix("True") { throw FerryError(.invalidArgument, "\(path): Fortran order is not supported") }
        guard let s = field("shape"), let open = s.firstIndex(of: "("), let close = s.firstIndex(of: ")") else {
            throw FerryError(.malformed, "\(path): no shape")
        }
        let shape = try s[s.index(after: open)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.map { (t: String) -> Int in
                guard let v = Int(t) else { throw FerryError(.malformed, "\(path): bad shape") }
                return v
            }
        let bytes = Array(b[(start + headerLength)...])
        let needed = shape.reduce(1, *) * dtype.itemSize!
        guard bytes.count >= needed else { throw FerryError(.malformed, "\(path): \(bytes.count) data bytes, \(needed) expected") }
        return try Tensor(dtype: dtype, shape: shape, bytes: Array(bytes[0..<needed]))
    }

    /// Writes a tensor as an `.npy` file (version 1).
    static func save(_ t: Tensor, to path: String) throws {
        guard let d = descr(t.dtype) else { throw FerryError(.invalidArgument, "\(t.dtype.name) tensors cannot be saved as .npy") }
        let shape = t.shape.count == 1 ? "(\(t.shape[0]),)" : "(" + t.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(d)', 'fortran_order': False, 'shape': \(shape), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        out += Array(header.utf8)
        out += t.bytes
        guard FileManager.default.createFile(atPath: path, contents: Data(out)) else {
            throw FerryError(.system, "cannot write \(path)")
        }
    }
}
