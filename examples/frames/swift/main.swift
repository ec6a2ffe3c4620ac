// Swift client: streams synthetic 1080p BGR frames, each decoded straight into shared memory,
// with the seed's {width, height, type} header; checks each result and prints fps.
import FerryCore
import Foundation

let args = CommandLine.arguments
let url = args.count > 1 ? args[1] : "shm://frames"
let count = args.count > 2 ? Int(args[2]) ?? 200 : 200
let (width, height, cv8UC3) = (1920, 1080, Int32(16))
do {
    let client = try Client(url)
    defer { client.close() }
    let start = Date()
    for i in 0..<count {
        let value = UInt8((i * 7) % 256)
        let means = try client.withCall(timeout: .seconds(30), write: { w in
            try w.add(name: "header", Tensor([Int32(width), Int32(height), cv8UC3]))
            let pixels = try w.addTensor(name: "frame", dtype: .uint8, shape: [height, width, 3])
            pixels.initializeMemory(as: UInt8.self, repeating: value)  // "decode" into the slot
        }, read: { reply in try reply.tensor(at: 0).values(as: Float.self) })
        guard means.count == 3, means[0] == Float(value) else {
            FileHandle.standardError.write(Data("frame \(i): wrong result \(means)\n".utf8))
            exit(1)
        }
    }
    let fps = Double(count) / Date().timeIntervalSince(start)
    print("\(count) frames \(width)x\(height), fps: \(String(format: "%.1f", fps))")
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(1)
}
