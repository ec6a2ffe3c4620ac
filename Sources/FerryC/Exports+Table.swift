// The exported table functions (include/ferry.h, "tables"), in the header's order.
import CFerryABI
import FerryCore
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("ferry_writer_begin_table")
public func ferry_writer_begin_table(_ w: OpaquePointer?, _ rows: Int64) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        try h.mutate { try $0.beginTable(rows: Int(rows)) }
    }
}

@_cdecl("ferry_writer_add_column")
public func ferry_writer_add_column(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dtypeCode: Int32, _ nullable: Int32,
                                    _ data: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                    _ valid: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?) -> Int32 {
    status {
        data?.pointee = nil
        valid?.pointee = nil
        let h = try borrow(w, WriterHandle.self, "writer")
        guard let data else { throw invalid("data is NULL") }
        guard nullable == 0 || valid != nil else { throw invalid("valid is NULL for a nullable column") }
        let n = try string(name, "name"), d = try dtype(dtypeCode)
        let (values, v) = try h.mutate { try $0.addColumn(name: n, dtype: d, nullable: nullable != 0) }
        data.pointee = values.baseAddress
        valid?.pointee = v.map { UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: UInt8.self) }
    }
}

@_cdecl("ferry_writer_add_time_column")
public func ferry_writer_add_time_column(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ kind: Int32, _ unit: UnsafePointer<CChar>?,
                                         _ tz: UnsafePointer<CChar>?, _ nullable: Int32, _ data: UnsafeMutablePointer<UnsafeMutablePointer<Int64>?>?,
                                         _ valid: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?) -> Int32 {
    status {
        data?.pointee = nil
        valid?.pointee = nil
        let h = try borrow(w, WriterHandle.self, "writer")
        guard let data else { throw invalid("data is NULL") }
        guard nullable == 0 || valid != nil else { throw invalid("valid is NULL for a nullable column") }
        let k: ColumnKind
        switch kind {
        case FERRY_COLUMN_DATETIME: k = .datetime
        case FERRY_COLUMN_TIMEDELTA: k = .timedelta
        default: throw invalid("kind \(kind) is not FERRY_COLUMN_DATETIME or FERRY_COLUMN_TIMEDELTA")
        }
        let n = try string(name, "name"), u = try string(unit, "unit")
        let zone = try tz.map { try string($0, "tz") }
        let (values, v) = try h.mutate { try $0.addTimeColumn(name: n, kind: k, unit: u, timeZone: zone, nullable: nullable != 0) }
        data.pointee = values.baseAddress
        valid?.pointee = v.map { UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: UInt8.self) }
    }
}

@_cdecl("ferry_writer_put_string_column")
public func ferry_writer_put_string_column(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ strings: UnsafePointer<UnsafePointer<CChar>?>?,
                                           _ lengths: UnsafePointer<Int>?, _ valid: UnsafePointer<UInt8>?) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        let n = try string(name, "name")
        try h.mutate { writer in
            guard let rows = writer.tableRows else { throw invalid("call ferry_writer_begin_table before adding columns") }
            guard rows == 0 || strings != nil else { throw invalid("strings is NULL") }
            // Pack straight into the wire's layout: offsets, then the text.
            var offsets = [UInt64](repeating: 0, count: rows + 1)
            var total = 0
            for i in 0..<rows where valid?[i] ?? 1 != 0 {
                guard let s = strings![i] else { throw invalid("strings[\(i)] is NULL and not marked null") }
                let len = lengths?[i] ?? strlen(s)
                total += len
                offsets[i + 1] = UInt64(len)
            }
            for i in 0..<rows { offsets[i + 1] += offsets[i] }
            let text = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 8)
            defer { text.deallocate() }
            for i in 0..<rows where offsets[i + 1] > offsets[i] {
                (text.baseAddress! + Int(offsets[i])).copyMemory(from: strings![i]!, byteCount: Int(offsets[i + 1] - offsets[i]))
            }
            let validity = valid.map { v in (0..<rows).map { v[$0] != 0 } }
            try offsets.withUnsafeBufferPointer { o in
                if let validity {
                    try validity.withUnsafeBufferPointer { try writer.addPackedStringColumn(name: n, offsets: o, text: UnsafeRawBufferPointer(start: text.baseAddress, count: total), valid: $0) }
                } else {
                    try writer.addPackedStringColumn(name: n, offsets: o, text: UnsafeRawBufferPointer(start: text.baseAddress, count: total))
                }
            }
        }
    }
}

@_cdecl("ferry_writer_end_table")
public func ferry_writer_end_table(_ w: OpaquePointer?) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        try h.mutate { try $0.endTable() }
    }
}

/// A message's table, parsed once, with what C needs to point at (raw tensors, zone strings).
final class TableCache {
    let rows: Int
    /// Each column with its raw tensors and its time zone as a C string this object owns.
    let columns: [(column: TableColumn, values: RawTensor, valid: RawTensor?, tz: UnsafeMutableBufferPointer<CChar>?)]
    init(_ view: MessageView) throws {
        let t = try view.readTable()
        var raw: [String: RawTensor] = [:]
        for i in 0..<view.tensorCount {
            let r = view.rawTensor(at: i)
            raw[String(decoding: UnsafeRawBufferPointer(start: r.name, count: r.nameLength), as: UTF8.self)] = r
        }
        rows = t.rows
        columns = t.columns.map { c in
            let tz = c.timeZone.map { z -> UnsafeMutableBufferPointer<CChar> in
                let chars = Array(z.utf8CString)
                let b = UnsafeMutableBufferPointer<CChar>.allocate(capacity: chars.count)
                _ = b.initialize(from: chars)
                return b
            }
            return (c, raw[c.name]!, raw[c.name + TableFormat.validSuffix], tz)
        }
    }

    deinit { for c in columns { c.tz?.deallocate() } }
}

func table(_ msg: OpaquePointer?) throws -> TableCache {
    let m = try borrow(msg, MessageHandle.self, "message")
    if let t = m.tableCache { return t }
    let t = try TableCache(m.view)
    m.tableCache = t
    return t
}

@_cdecl("ferry_message_table")
public func ferry_message_table(_ msg: OpaquePointer?, _ rows: UnsafeMutablePointer<Int64>?, _ columns: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let t = try table(msg)
        rows?.pointee = Int64(t.rows)
        columns?.pointee = t.columns.count
    }
}

func fillColumn(_ out: UnsafeMutablePointer<ferry_column>, _ t: TableCache, _ i: Int) {
    let (c, values, valid, tz) = t.columns[i]
    var col = ferry_column()
    col.name = values.name.assumingMemoryBound(to: CChar.self)
    col.name_len = values.nameLength
    switch c.kind {
    case .numeric: col.kind = FERRY_COLUMN_NUMERIC
    case .masked: col.kind = FERRY_COLUMN_MASKED
    case .datetime: col.kind = FERRY_COLUMN_DATETIME
    case .timedelta: col.kind = FERRY_COLUMN_TIMEDELTA
    case .string: col.kind = FERRY_COLUMN_STRING
    }
    col.dtype = Int32(values.dtype.rawValue)
    col.rows = Int64(t.rows)
    col.data = values.data
    col.nbytes = values.dataLength
    col.valid = valid.map { UnsafeRawPointer($0.data).assumingMemoryBound(to: UInt8.self) }
    if c.kind == .string {
        col.offsets = UnsafeRawPointer(values.data).assumingMemoryBound(to: UInt64.self)
        col.text = UnsafeRawPointer(values.data + 8 * (t.rows + 1)).assumingMemoryBound(to: CChar.self)
    }
    withUnsafeMutableBytes(of: &col.unit) { u in
        for (k, b) in (c.unit ?? "").utf8.prefix(3).enumerated() { u[k] = b }
    }
    if let tz {
        col.tz = UnsafePointer(tz.baseAddress)
        col.tz_len = tz.count - 1
    }
    out.pointee = col
}

@_cdecl("ferry_message_column")
public func ferry_message_column(_ msg: OpaquePointer?, _ index: Int, _ out: UnsafeMutablePointer<ferry_column>?) -> Int32 {
    status {
        let t = try table(msg)
        guard let out else { throw invalid("out is NULL") }
        guard index >= 0 && index < t.columns.count else { throw invalid("column index \(index) outside 0..<\(t.columns.count)") }
        fillColumn(out, t, index)
    }
}

@_cdecl("ferry_message_find_column")
public func ferry_message_find_column(_ msg: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<ferry_column>?) -> Int32 {
    status {
        let t = try table(msg)
        let n = try string(name, "name")
        guard let out else { throw invalid("out is NULL") }
        guard let i = t.columns.firstIndex(where: { $0.column.name == n }) else { throw invalid("no column named \"\(n)\"") }
        fillColumn(out, t, i)
    }
}
