import FoundationEssentials

/// Tables on the wire (docs/protocol.md, "Tables"): an ordinary message whose equal-length
/// 1-D tensors are the columns, in order; a column "c" with nulls has a bool tensor
/// "c.valid" (true where a value is present); the 0-d string tensor "ferry.table" holds the
/// schema as JSON: `{"rows": N, "columns": [{"name", "dtype", "kind", "unit"?, "tz"?, "nullable"?}]}`.
/// `dtype` is the pandas dtype the column comes back as; `kind` says how to read the values:
/// `numpy` (numeric or bool), `masked` (numeric or bool with nulls: pandas Int64, boolean, …),
/// `datetime` / `timedelta` (int64 counts of `unit`, `tz` for zoned datetimes, stored in UTC),
/// `string` (UTF-8).
public enum TableFormat {
    /// Name of the schema tensor (and what marks a message as a table).
    public static let schemaTensor = "ferry.table"
    /// Suffix of a column's validity tensor.
    public static let validSuffix = ".valid"
    /// Time units a datetime or timedelta column may use.
    public static let units: Set<String> = ["D", "h", "m", "s", "ms", "us", "ns"]

    struct Schema: Codable {
        var rows: Int
        var columns: [Column]
    }

    struct Column: Codable {
        var name: String
        var dtype: String
        var kind: String
        var unit: String?
        var tz: String?
        var nullable: Bool?
    }
}

/// How a table column's values are stored.
public enum ColumnKind: String, Sendable {
    /// Numeric or bool values.
    case numeric = "numpy"
    /// Numeric or bool values with nulls (pandas' nullable dtypes).
    case masked
    /// int64 counts of a time unit since the epoch (UTC), with an optional time zone.
    case datetime
    /// int64 counts of a time unit.
    case timedelta
    /// UTF-8 strings.
    case string
}

/// Table state a `MessageWriter` keeps between `beginTable` and `endTable`.
struct TableInProgress {
    var rows: Int
    var columns: [TableFormat.Column] = []
}

extension MessageWriter {
    /// Rows of the table being written (nil: none is).
    public var tableRows: Int? { table?.rows }

    /// Starts a table of `rows` rows; add columns, then `endTable()`.
    public mutating func beginTable(rows: Int) throws {
        guard table == nil else { throw FerryError(.invalidArgument, "a table is already being written") }
        guard rows >= 0 else { throw FerryError(.invalidArgument, "a table cannot have \(rows) rows") }
        table = TableInProgress(rows: rows)
    }

    private mutating func checkColumn(_ name: String) throws -> Int {
        guard let t = table else { throw FerryError(.invalidArgument, "call beginTable (ferry_writer_begin_table) before adding columns") }
        guard !name.isEmpty, name != TableFormat.schemaTensor, !name.hasSuffix(TableFormat.validSuffix) else {
            throw FerryError(.invalidArgument, "column name \"\(name)\": empty names, \"\(TableFormat.schemaTensor)\" and \"*\(TableFormat.validSuffix)\" are reserved")
        }
        guard !t.columns.contains(where: { $0.name == name }) else { throw FerryError(.invalidArgument, "duplicate column \"\(name)\"") }
        return t.rows
    }

    private mutating func validity(_ name: String, rows: Int, nullable: Bool) throws -> UnsafeMutableBufferPointer<Bool>? {
        guard nullable else { return nil }
        let v = try addTensor(name: name + TableFormat.validSuffix, dtype: .bool, shape: [rows])
        v.initializeMemory(as: UInt8.self, repeating: 1)
        return v.bindMemory(to: Bool.self)
    }

    /// Adds a numeric or bool column and returns its values (and, when `nullable`, its
    /// validity, all true to start with: set false where a value is missing) to fill in place.
    public mutating func addColumn(name: String, dtype: DType, nullable: Bool = false) throws
        -> (values: UnsafeMutableRawBufferPointer, valid: UnsafeMutableBufferPointer<Bool>?) {
        let rows = try checkColumn(name)
        guard dtype.isNumeric else {
            throw FerryError(.invalidArgument, "column \"\(name)\": \(dtype.name) is not a column type (use addStringColumn for strings)")
        }
        let pandas: String
        if nullable {
            let masked: [DType: String] = [.bool: "boolean", .int8: "Int8", .int16: "Int16", .int32: "Int32", .int64: "Int64",
                                           .uint8: "UInt8", .uint16: "UInt16", .uint32: "UInt32", .uint64: "UInt64",
                                           .float32: "Float32", .float64: "Float64"]
            guard let m = masked[dtype] else { throw FerryError(.invalidArgument, "column \"\(name)\": \(dtype.name) cannot have nulls") }
            pandas = m
        } else {
            pandas = dtype.name
        }
        let values = try addTensor(name: name, dtype: dtype, shape: [rows])
        let valid = try validity(name, rows: rows, nullable: nullable)
        table!.columns.append(.init(name: name, dtype: pandas, kind: nullable ? ColumnKind.masked.rawValue : ColumnKind.numeric.rawValue,
                                    nullable: nullable ? true : nil))
        return (values, valid)
    }

    /// Adds a datetime (`kind: .datetime`, counts of `unit` since the epoch in UTC, shown in
    /// `timeZone` if given) or timedelta column; returns its int64 values and validity.
    public mutating func addTimeColumn(name: String, kind: ColumnKind, unit: String, timeZone: String? = nil, nullable: Bool = false) throws
        -> (values: UnsafeMutableBufferPointer<Int64>, valid: UnsafeMutableBufferPointer<Bool>?) {
        let rows = try checkColumn(name)
        guard kind == .datetime || kind == .timedelta else { throw FerryError(.invalidArgument, "column \"\(name)\": a time column is datetime or timedelta") }
        guard TableFormat.units.contains(unit) else { throw FerryError(.invalidArgument, "column \"\(name)\": unknown time unit \"\(unit)\" (use s, ms, us or ns)") }
        guard kind == .datetime || timeZone == nil else { throw FerryError(.invalidArgument, "column \"\(name)\": a timedelta has no time zone") }
        let values = try addTensor(name: name, dtype: .int64, shape: [rows]).bindMemory(to: Int64.self)
        let valid = try validity(name, rows: rows, nullable: nullable)
        let dtype = kind == .datetime ? (timeZone.map { "datetime64[\(unit), \($0)]" } ?? "datetime64[\(unit)]") : "timedelta64[\(unit)]"
        table!.columns.append(.init(name: name, dtype: dtype, kind: kind.rawValue, unit: unit, tz: timeZone, nullable: nullable ? true : nil))
        return (values, valid)
    }

    /// Adds a string column (nil: null).
    public mutating func addStringColumn(name: String, _ strings: [String?]) throws {
        let rows = try checkColumn(name)
        guard strings.count == rows else { throw FerryError(.invalidArgument, "column \"\(name)\": \(strings.count) strings for \(rows) rows") }
        try addStrings(name: name, shape: [rows], strings: strings.map { $0 ?? "" })
        let nullable = strings.contains(where: { $0 == nil })
        if let v = try validity(name, rows: rows, nullable: nullable) {
            for (i, s) in strings.enumerated() where s == nil { v[i] = false }
        }
        table!.columns.append(.init(name: name, dtype: "string", kind: ColumnKind.string.rawValue, nullable: nullable ? true : nil))
    }

    /// Adds a string column from the wire's packed layout (rows + 1 offsets, UTF-8 text) and
    /// an optional validity (nil: no nulls).
    public mutating func addPackedStringColumn(name: String, offsets: UnsafeBufferPointer<UInt64>, text: UnsafeRawBufferPointer,
                                               valid: UnsafeBufferPointer<Bool>? = nil) throws {
        let rows = try checkColumn(name)
        try addPackedStrings(name: name, shape: [rows], offsets: offsets, text: text)
        let nullable = valid.map { $0.contains(false) } ?? false
        if let valid, valid.count != rows { throw FerryError(.invalidArgument, "column \"\(name)\": \(valid.count) validity entries for \(rows) rows") }
        if let v = try validity(name, rows: rows, nullable: nullable), let valid {
            for i in 0..<rows { v[i] = valid[i] }
        }
        table!.columns.append(.init(name: name, dtype: "string", kind: ColumnKind.string.rawValue, nullable: nullable ? true : nil))
    }

    /// Ends the table: writes its schema tensor.
    public mutating func endTable() throws {
        guard let t = table else { throw FerryError(.invalidArgument, "no table is being written (call beginTable first)") }
        let json = try JSONEncoder().encode(TableFormat.Schema(rows: t.rows, columns: t.columns))
        try addStrings(name: TableFormat.schemaTensor, shape: [], strings: [String(decoding: json, as: UTF8.self)])
        table = nil
    }
}

/// One column of a received table.
public struct TableColumn {
    /// Column name.
    public let name: String
    /// How its values are stored.
    public let kind: ColumnKind
    /// The pandas dtype it has on the Python side ("int64", "Int64", "string", "datetime64[ms, UTC]", …).
    public let pandasDType: String
    /// Time unit of a datetime or timedelta column.
    public let unit: String?
    /// Time zone of a zoned datetime column.
    public let timeZone: String?
    /// The values (int64 for times; the string tensor for strings), in place.
    public let values: TensorView
    /// Validity (true where a value is present); nil when the column has no nulls.
    public let valid: TensorView?

    /// True when row `row` is null.
    public func isNull(_ row: Int) -> Bool {
        guard let valid, row >= 0, row < valid.data.count else { return false }
        return valid.data[row] == 0
    }

    /// A string column's values, nil for nulls.
    public func strings() throws -> [String?] {
        let s = try values.strings()
        return s.enumerated().map { isNull($0.offset) ? nil : $0.element }
    }
}

/// A received table: its rows and columns, read in place.
public struct TableView {
    /// Number of rows.
    public let rows: Int
    /// Columns in order.
    public let columns: [TableColumn]

    /// The column named `name`.
    public func column(_ name: String) -> TableColumn? { columns.first { $0.name == name } }
}

extension MessageView {
    /// True when the message is a table (it has a schema tensor).
    public var isTable: Bool { tensor(named: TableFormat.schemaTensor) != nil }

    /// The message as a table; `.invalidArgument` if it is not one, `.malformed` if its schema
    /// does not match its tensors.
    public func readTable() throws -> TableView {
        guard let schemaTensor = tensor(named: TableFormat.schemaTensor) else {
            throw FerryError(.invalidArgument, "the message is not a table (it has no \"\(TableFormat.schemaTensor)\" tensor)")
        }
        func bad(_ why: String) -> FerryError { FerryError(.malformed, "invalid table: \(why)") }
        guard schemaTensor.dtype == .string, schemaTensor.shape.isEmpty, let text = try schemaTensor.strings().first else {
            throw bad("\(TableFormat.schemaTensor) must be a 0-d string tensor")
        }
        let schema: TableFormat.Schema
        do { schema = try JSONDecoder().decode(TableFormat.Schema.self, from: Data(text.utf8)) } catch {
            throw bad("its schema is not the expected JSON (\(error))")
        }
        guard schema.rows >= 0 else { throw bad("\(schema.rows) rows") }
        var seen = Set<String>()
        let columns: [TableColumn] = try schema.columns.map { c in
            guard seen.insert(c.name).inserted else { throw bad("column \"\(c.name)\" appears twice") }
            guard let kind = ColumnKind(rawValue: c.kind) else { throw bad("column \"\(c.name)\" has unknown kind \"\(c.kind)\"") }
            guard let values = tensor(named: c.name) else { throw bad("column \"\(c.name)\" has no tensor") }
            guard values.shape == [schema.rows] else { throw bad("column \"\(c.name)\" has shape \(values.shape), not [\(schema.rows)]") }
            switch kind {
            case .numeric, .masked:
                guard values.dtype.isNumeric else { throw bad("column \"\(c.name)\" is \(values.dtype.name)") }
            case .datetime, .timedelta:
                guard values.dtype == .int64, let u = c.unit, TableFormat.units.contains(u) else { throw bad("column \"\(c.name)\": a time column is int64 with a unit") }
            case .string:
                guard values.dtype == .string else { throw bad("column \"\(c.name)\" is \(values.dtype.name), not string") }
            }
            let valid = tensor(named: c.name + TableFormat.validSuffix)
            if let v = valid, v.dtype != .bool || v.shape != [schema.rows] {
                throw bad("column \"\(c.name)\": its validity must be bool [\(schema.rows)]")
            }
            return TableColumn(name: c.name, kind: kind, pandasDType: c.dtype, unit: c.unit, timeZone: c.tz, values: values, valid: valid)
        }
        return TableView(rows: schema.rows, columns: columns)
    }
}
