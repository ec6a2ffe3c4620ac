// libFuzzer entry: a message in a "slot" that another thread keeps rewriting while this one
// validates and reads it — the worst a peer process can do to shared memory. The input is
// [message bytes][rewrite script]; a second thread applies the script (offset, xor) in a loop
// for the whole decode. The reader must never trap or read outside the slot: everything it
// reports comes from the copy it validated (AddressSanitizer checks every access).
import CFuzz
import Dispatch
import FerryCore
import Synchronization

final class Peer: @unchecked Sendable {
    let slot: UnsafeMutableRawBufferPointer
    let script: [(Int, UInt8)]
    let running = Atomic<Bool>(true)
    init(slot: UnsafeMutableRawBufferPointer, script: [(Int, UInt8)]) { self.slot = slot; self.script = script }
    func run() {
        guard !script.isEmpty, slot.count > 0 else { return }
        var i = 0
        while running.load(ordering: .relaxed) {
            let (off, x) = script[i % script.count]
            // Volatile-enough: an atomic byte store is what a racing process does.
            let p = (slot.baseAddress! + off % slot.count).assumingMemoryBound(to: UInt8.self)
            p.pointee ^= x
            i &+= 1
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    // First two bytes: how long the message part is (the rest is the script).
    let split = min(Int(data.load(as: UInt16.self)), size - 2)
    let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: max(split, 1), alignment: 64)
    defer { slot.deallocate() }
    slot.copyMemory(from: UnsafeRawBufferPointer(start: data + 2, count: max(split, 0)))
    var script: [(Int, UInt8)] = []
    var o = 2 + split
    while o + 3 <= size {
        let off = Int(data.load(fromByteOffset: o, as: UInt8.self)) | Int(data.load(fromByteOffset: o + 1, as: UInt8.self)) << 8
        script.append((off, data.load(fromByteOffset: o + 2, as: UInt8.self) | 1))
        o += 3
    }
    let peer = Peer(slot: slot, script: script)
    let done = DispatchSemaphore(value: 0)
    DispatchQueue.global().async { peer.run(); done.signal() }
    defer { peer.running.store(false, ordering: .relaxed); done.wait() }
    for _ in 0..<4 {
        guard let view = try? MessageView(validating: UnsafeRawBufferPointer(slot)) else { continue }
        var sink = 0
        for t in view.tensors {
            sink &+= t.name.utf8.count &+ t.shape.count &+ t.data.count
            for b in t.data { sink &+= Int(b) }
            switch t.dtype {
            case .string: sink &+= (try? t.strings())?.count ?? 0
            case .float64: sink &+= (try? t.values(as: Double.self))?.count ?? 0
            case .uint8: sink &+= (try? t.values(as: UInt8.self))?.count ?? 0
            default: break
            }
        }
        for (k, v) in view.metadata { sink &+= k.utf8.count &+ v.utf8.count }
        _ = Message(view)
        if sink == -1 { print(sink) }
    }
    return 0
}

@_cdecl("FuzzRacing_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(UnsafeRawPointer(data!), size) }
}
