// libFuzzer entry: any bytes must either decode to a message whose every tensor can be read
// within the buffer, or be rejected with a FerryError — never trap, never read outside.
import CFuzz
import FerryCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    // Copy to an exact-size allocation so AddressSanitizer sees any read past the end.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
    defer { buffer.deallocate() }
    if size > 0 { buffer.copyMemory(from: UnsafeRawBufferPointer(start: data, count: size)) }
    guard let view = try? MessageView(validating: UnsafeRawBufferPointer(buffer)) else { return 0 }
    var checksum: UInt8 = 0
    for t in view.tensors {
        for b in t.data { checksum &+= b }
        if t.dtype == .string { _ = try? t.strings() }
    }
    for (k, v) in view.metadata { checksum &+= UInt8(truncatingIfNeeded: k.utf8.count &+ v.utf8.count) }
    // Whatever decodes must survive a re-encode and decode unchanged.
    let message = Message(view)
    if let again = try? Message.decode(try message.encoded()), again != message {
        fatalError("re-encoding changed the message")
    }
    return checksum == 0xFF ? 0 : 0
}

// SwiftPM links every executable with `main` aliased to `FuzzMessage_main`; libFuzzer's own main
// is then not linked, so start its driver from here.
@_cdecl("FuzzMessage_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(UnsafeRawPointer(data!), size) }
}
