// Stream example in Swift: publish a synthetic camera, or subscribe and check every frame.
//
//   example-stream publish NAME [FRAMES] [WIDTH] [HEIGHT]
//   example-stream subscribe NAME [FRAMES] [every|latest]
//
// Frame n: a [HEIGHT, WIDTH, 3] uint8 tensor "frame" whose row r holds (n + r) % 256 in
// every byte, with metadata n=<n> (see stream.py).
import FerryCore
import Foundation

let args = CommandLine.arguments
let role = args.count > 1 ? args[1] : "subscribe"
let name = args.count > 2 ? args[2] : "camera"
let frames = args.count > 3 ? Int(args[3]) ?? 300 : 300

func publish(width: Int, height: Int) throws {
    let publisher = try Publisher("shm://\(name)?slots=8&slot_size=\(width * height * 3 + 65536)")
    defer { publisher.close() }
    for _ in 0..<2000 where publisher.subscriberCount == 0 { usleep(5000) }
    for n in 0..<frames {
        try publisher.publish(timeout: .seconds(10)) { w in
            let image = try w.addTensor(name: "frame", dtype: .uint8, shape: [height, width, 3])  // in shared memory
            for r in 0..<height {
                UnsafeMutableRawBufferPointer(rebasing: image[(r * width * 3)..<((r + 1) * width * 3)])
                    .initializeMemory(as: UInt8.self, repeating: UInt8((n + r) % 256))
            }
            w.setMetadata("n", String(n))
        }
    }
    print("published \(frames) frames of \(width)x\(height)")
}

func subscribe(every: Bool) throws -> Bool {
    let subscriber = try Subscriber("shm://\(name)", mode: every ? .every : .latest)
    defer { subscriber.close() }
    var got = 0, bad = 0
    var ageSum: UInt64 = 0
    while true {
        let frame: StreamFrame
        do { frame = try subscriber.receive(timeout: .seconds(10)) } catch let e as FerryError where e.code == .closed { break }
        defer { frame.release() }
        let n = Int(frame.message.metadata("n") ?? "") ?? -1
        var ok = false
        if let t = frame.message.tensor(named: "frame"), t.shape.count == 3, n >= 0 {
            ok = true
            let row = t.shape[1] * 3
            rows: for r in 0..<t.shape[0] {
                let want = UInt8((n + r) % 256)
                for c in 0..<row where t.data[r * row + c] != want { ok = false; break rows }
            }
        }
        if !ok { bad += 1 }
        got += 1
        ageSum += frame.ageNanos
        if n == frames - 1 { break }
    }
    let mean = got > 0 ? Double(ageSum) / Double(got) / 1e6 : 0
    print("received \(got) frames, dropped \(subscriber.dropped), \(Int(subscriber.fps)) fps, age mean \(String(format: "%.2f", mean)) ms, \(bad) wrong")
    return bad == 0
}

do {
    if role == "publish" {
        try publish(width: args.count > 4 ? Int(args[4]) ?? 1920 : 1920, height: args.count > 5 ? Int(args[5]) ?? 1080 : 1080)
    } else if !(try subscribe(every: !(args.count > 4 && args[4] == "latest"))) {
        exit(1)
    }
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(1)
}
