// Swift client: sends a stock table as columns and checks the summary pandas computes.
import FerryCore
import Foundation

let args = CommandLine.arguments
let url = args.count > 1 ? args[1] : "shm://table"
let rows = args.count > 2 ? Int(args[2]) ?? 1000 : 1000
let i = (0..<rows)
do {
    let client = try Client(url)
    defer { client.close() }
    let reply = try client.call([
        ("date", Tensor(i.map { Int64(20260101 + $0) })),
        ("open", Tensor(i.map { 100 + 0.25 * Double($0) })),
        ("close", Tensor(i.map { 100 + 0.5 * Double($0) })),
        ("volume", Tensor(i.map { Int64(1000 + $0) })),
    ], timeout: .seconds(30))
    let n = try reply["rows"]!.values(as: Int64.self)[0]
    let mean = try reply["mean_close"]!.values(as: Double.self)[0]
    let volume = try reply["total_volume"]!.values(as: Int64.self)[0]
    print("columns: rows=\(n) mean_close=\(String(format: "%.2f", mean)) total_volume=\(volume)")
    guard n == rows, abs(mean - (100 + 0.5 * Double(rows - 1) / 2)) < 1e-9, volume == Int64(1000 * rows + rows * (rows - 1) / 2) else {
        FileHandle.standardError.write(Data("wrong summary\n".utf8))
        exit(1)
    }
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(1)
}
