// libFuzzer entry: what crosses a tcp:// link before it is trusted — frame headers, WELCOME
// and HELLO payloads, and messages with compressed tensors that the gateway expands. Any bytes
// must give a value or a FerryError, never a trap or a write past the output; what parses
// must encode back to the same bytes, and an expanded message must be a valid plain one.
import CFuzz
import FerryCore
import FerryWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: size))
    if bytes.count >= Frame.headerSize, let h = try? bytes.withUnsafeBytes({ try Frame.Header(reading: $0.baseAddress!) }) {
        precondition(h.bytes == Array(bytes.prefix(Frame.headerSize)), "header does not round-trip")
    }
    if let w = try? Frame.Welcome(parsing: bytes) {
        precondition(w.maxInFlight >= 1)
        // The fixed part, then the model identity (valid UTF-8, only without AUTH) as it came.
        precondition(w.bytes.count == Frame.Welcome.size + (w.model.isEmpty ? 0 : 2 + w.model.utf8.count))
        precondition(w.model.isEmpty || (!w.authRequired && Array(w.bytes.suffix(w.model.utf8.count)) == Array(bytes.suffix(w.model.utf8.count))))
    }
    if let (name, nonce) = try? Frame.parseHello(bytes) {
        precondition(Frame.hello(name: name, nonce: nonce) == bytes, "HELLO does not round-trip")
    }
    bytes.withUnsafeBytes { src in
        guard let bound = try? TensorCodec.expandedBound(src), bound <= 1 << 24 else { return }
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: bound, alignment: 64)
        defer { out.deallocate() }
        if let n = try? TensorCodec.expand(src, into: out) {
            precondition(n <= bound)
            _ = try! MessageView(validating: UnsafeRawBufferPointer(rebasing: out.prefix(n)))
        }
    }
    return 0
}

@_cdecl("FuzzFrames_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(UnsafeRawPointer(data!), size) }
}
