// libFuzzer entry: any bytes must either decode to a message whose every tensor can be read
// within the buffer, or be rejected with a FerryError — never trap, never read outside.
import CFuzz
import FerryCore

/// Reads of tensor bytes go here, so the optimiser cannot drop them.
nonisolated(unsafe) var sink: UInt8 = 0

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    // Copy to an exact-size allocation so AddressSanitizer sees any read past the end.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
    defer { buffer.deallocate() }
    if size > 0 { buffer.copyMemory(from: UnsafeRawBufferPointer(start: data, count: size)) }
    guard let view = try? MessageView(validating: UnsafeRawBufferPointer(buffer)) else { return 0 }
    let lo = UInt(bitPattern: buffer.baseAddress!), hi = lo + UInt(size)
    for t in view.tensors {
        // Numeric data lies inside the buffer and matches its shape; strings decode.
        if t.dtype != .string {
            let start = UInt(bitPattern: t.data.baseAddress ?? UnsafeRawPointer(buffer.baseAddress!))
            precondition(start >= lo && start + UInt(t.data.count) <= hi, "tensor data outside the message")
            precondition(t.data.count == t.count * (t.dtype.itemSize ?? 0), "data length does not match the shape")
        } else {
            precondition((try? t.strings())?.count == t.count, "a validated string tensor did not decode")
        }
        for b in t.data { sink &+= b }
    }
    for (k, v) in view.metadata { sink &+= UInt8(truncatingIfNeeded: k.utf8.count &+ v.utf8.count) }
    // A table's schema (JSON another process wrote) is checked against its tensors, or refused.
    if let table = try? view.readTable() {
        for c in table.columns {
            precondition(c.values.shape == [table.rows], "a validated column has the wrong length")
            if c.kind == .string { precondition((try? c.strings())?.count == table.rows, "a validated string column did not decode") }
            for r in 0..<table.rows { sink &+= c.isNull(r) ? 1 : 0 }
        }
    }
    // Whatever decodes must re-encode, and decode again unchanged.
    let message = Message(view)
    guard let again = try? Message.decode(try message.encoded()) else { fatalError("a decoded message did not re-encode") }
    precondition(again == message, "re-encoding changed the message")
    return 0
}

// SwiftPM links every executable with `main` aliased to `FuzzMessage_main`; libFuzzer's own main
// is then not linked, so start its driver from here.
@_cdecl("FuzzMessage_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(UnsafeRawPointer(data!), size) }
}
