// Swift client: reads nine 28×28 digit images (raw bytes) and prints the model's labels.
import FerryCore
import Foundation

let args = CommandLine.arguments
let url = args.count > 1 ? args[1] : "shm://digits"
var images = [UInt8](repeating: 0, count: 9 * 28 * 28)
if args.count > 2 {
    guard let data = FileManager.default.contents(atPath: args[2]), data.count == images.count else {
        FileHandle.standardError.write(Data("cannot read \(args[2])\n".utf8))
        exit(1)
    }
    images = [UInt8](data)
}
do {
    let client = try Client(url)
    defer { client.close() }
    let labels = try client.withCall(timeout: .seconds(30), write: { w in
        let slot = try w.addTensor(name: "digits", dtype: .uint8, shape: [9, 28, 28])  // in shared memory
        images.withUnsafeBytes { slot.copyMemory(from: $0) }
    }, read: { reply in try reply.tensor(at: 0).values(as: Int64.self) })
    print("labels: " + labels.map(String.init).joined(separator: " "))
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(1)
}
