// libFuzzer entry: what a tcp:// client parses from the network before trusting it — frame
// headers, WELCOME and HELLO payloads. Any bytes must give a value or a FerryError, never a
// trap, and what parses must encode back to the same bytes.
import CFuzz
import FerryCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: size))
    if bytes.count >= Frame.headerSize, let h = try? bytes.withUnsafeBytes({ try Frame.Header(reading: $0.baseAddress!) }) {
        precondition(h.bytes == Array(bytes.prefix(Frame.headerSize)), "header does not round-trip")
    }
    if let w = try? Frame.Welcome(parsing: bytes) {
        precondition(w.maxInFlight >= 1)
        precondition(w.bytes.count == Frame.Welcome.size)
    }
    if let (name, nonce) = try? Frame.parseHello(bytes) {
        precondition(Frame.hello(name: name, nonce: nonce) == bytes, "HELLO does not round-trip")
    }
    return 0
}

@_cdecl("FuzzFrames_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(UnsafeRawPointer(data!), size) }
}
