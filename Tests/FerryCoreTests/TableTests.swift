import XCTest
@testable import FerryCore

/// Tables written column by column and read back through the validating view.
final class TableTests: XCTestCase {
    func encode(_ body: (inout MessageWriter) throws -> Void) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        let n = try buf.withUnsafeMutableBytes { b -> Int in
            var w = MessageWriter(base: b.baseAddress!, capacity: b.count)
            try body(&w)
            return try w.finish()
        }
        return Array(buf[..<n])
    }

    func testEveryColumnKindRoundTrips() throws {
        let bytes = try encode { w in
            try w.beginTable(rows: 3)
            let p = try w.addColumn(name: "price", dtype: .float64).values.bindMemory(to: Double.self)
            let (n, valid) = try w.addColumn(name: "n", dtype: .int64, nullable: true)
            let (at, _) = try w.addTimeColumn(name: "at", kind: .datetime, unit: "ms", timeZone: "UTC")
            try w.addStringColumn(name: "s", ["x", nil, "ß"])
            for i in 0..<3 { p[i] = Double(i) / 2; n.bindMemory(to: Int64.self)[i] = Int64(i) + (1 << 53); at[i] = Int64(i) * 1000 }
            valid![1] = false
            XCTAssertThrowsError(try w.addColumn(name: "price", dtype: .float64))  // duplicate
            XCTAssertThrowsError(try w.addStringColumn(name: "t", ["only one"]))  // wrong length
            try w.endTable()
        }
        try bytes.withUnsafeBytes { raw in
            let t = try MessageView(validating: raw).readTable()
            XCTAssertEqual(t.rows, 3)
            XCTAssertEqual(t.columns.map(\.name), ["price", "n", "at", "s"])
            XCTAssertEqual(try t.column("price")!.values.values(as: Double.self), [0, 0.5, 1])
            let n = t.column("n")!
            XCTAssertEqual(n.kind, .masked)
            XCTAssertEqual(n.pandasDType, "Int64")
            XCTAssertTrue(n.isNull(1))
            XCTAssertFalse(n.isNull(2))
            XCTAssertEqual(try n.values.values(as: Int64.self)[2], 2 + (1 << 53))
            let at = t.column("at")!
            XCTAssertEqual(at.kind, .datetime)
            XCTAssertEqual(at.unit, "ms")
            XCTAssertEqual(at.timeZone, "UTC")
            XCTAssertEqual(try t.column("s")!.strings(), ["x", nil, "ß"])
        }
    }

    func testAMessageThatIsNotATableOrHasABadSchemaIsAnError() throws {
        let plain = try encode { w in _ = try w.addTensor(name: "x", dtype: .uint8, shape: [2]) }
        try plain.withUnsafeBytes { raw in
            let v = try MessageView(validating: raw)
            XCTAssertFalse(v.isTable)
            XCTAssertThrowsError(try v.readTable()) { XCTAssertEqual(($0 as? FerryError)?.code, .invalidArgument) }
        }
        // A schema naming a column of the wrong length, and one that is not JSON.
        for schema in [#"{"rows": 3, "columns": [{"name": "x", "dtype": "uint8", "kind": "numpy"}]}"#, "not json"] {
            let bad = try encode { w in
                _ = try w.addTensor(name: "x", dtype: .uint8, shape: [2])
                try w.addStrings(name: TableFormat.schemaTensor, shape: [], strings: [schema])
            }
            try bad.withUnsafeBytes { raw in
                XCTAssertThrowsError(try MessageView(validating: raw).readTable()) { XCTAssertEqual(($0 as? FerryError)?.code, .malformed) }
            }
        }
    }
}
