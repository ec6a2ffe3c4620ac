// Swift client: sends a stock table column by column (a DataFrame on the Python side) and
// reads the per-symbol summary table it answers.
import FerryCore
import Foundation

let args = CommandLine.arguments
let url = args.count > 1 ? args[1] : "shm://table"
let rows = args.count > 2 ? Int(args[2]) ?? 1000 : 1000
let syms = ["AAA", "BBB", "CCC"]
do {
    let client = try Client(url)
    defer { client.close() }
    let summary: [(String, Int64, Double, Int64)] = try client.withCall(timeout: .seconds(30), write: { w in
        try w.beginTable(rows: rows)
        let date = try w.addColumn(name: "date", dtype: .int64).values.bindMemory(to: Int64.self)  // in shared memory
        let open = try w.addColumn(name: "open", dtype: .float64).values.bindMemory(to: Double.self)
        let close = try w.addColumn(name: "close", dtype: .float64).values.bindMemory(to: Double.self)
        let volume = try w.addColumn(name: "volume", dtype: .int64).values.bindMemory(to: Int64.self)
        for i in 0..<rows {
            date[i] = Int64(20260101 + i)
            open[i] = 100 + 0.25 * Double(i)
            close[i] = 100 + 0.5 * Double(i)
            volume[i] = Int64(1000 + i)
        }
        try w.addStringColumn(name: "sym", (0..<rows).map { syms[$0 % 3] })
        try w.endTable()
    }, read: { reply in
        // The answer is a table: sym, rows, mean_close, total_volume, one row per symbol.
        let t = try reply.readTable()
        guard let s = t.column("sym"), let n = t.column("rows"), let m = t.column("mean_close"), let v = t.column("total_volume") else {
            throw FerryError(.malformed, "the summary lacks a column")
        }
        let names = try s.strings(), counts = try n.values.values(as: Int64.self)
        let means = try m.values.values(as: Double.self), volumes = try v.values.values(as: Int64.self)
        return (0..<t.rows).map { (names[$0] ?? "", counts[$0], means[$0], volumes[$0]) }
    })
    for (k, (sym, count, mean, volume)) in summary.enumerated() {
        let rowsOf = Array(stride(from: k, to: rows, by: 3))
        let expectedMean = rowsOf.map { 100 + 0.5 * Double($0) }.reduce(0, +) / Double(rowsOf.count)
        guard summary.count == 3, sym == syms[k], count == Int64(rowsOf.count), abs(mean - expectedMean) < 1e-9,
              volume == Int64(rowsOf.map { 1000 + $0 }.reduce(0, +)) else {
            FileHandle.standardError.write(Data("wrong per-symbol summary \(summary)\n".utf8))
            exit(1)
        }
    }
    print("table: " + summary.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(1)
}
