// libFuzzer entry: the argument checks a user reaches first — channel URLs (every option,
// number and duplicate) and the message writer's shapes, names, sizes and strings. Any input
// must give a value or a FerryError, never a trap (overflow, allocation, force-unwrap).
import CFuzz
import FerryCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let mode = bytes.first else { return 0 }
    let rest = UnsafeRawBufferPointer(rebasing: bytes.dropFirst())
    if mode & 1 == 0 {
        // A URL from the bytes (lossily: the parser sees what a user could type).
        let url = String(decoding: rest, as: UTF8.self)
        if let e = try? Endpoint(url) {
            precondition(e.slots >= 1 && e.slots <= SegmentLayout.maxSlots)
            precondition(e.timeoutNanos > 0 && e.timeoutNanos <= Endpoint.maxTimeoutMillis * 1_000_000)
        }
        _ = try? Endpoint.parseSize(url)
        return 0
    }
    // Writer arguments: a shape of up to 9 dims from the bytes, a dtype, a name, strings.
    var o = 0
    func next64() -> Int64 {
        var v: UInt64 = 0
        for _ in 0..<8 { v = v << 8 | UInt64(o < rest.count ? rest[o] : 0); o += 1 }
        return Int64(bitPattern: v)
    }
    let ndim = Int(rest.first ?? 0) % 10
    o = 1
    let shape = (0..<ndim).map { _ in Int(truncatingIfNeeded: next64() >> Int64(o % 61)) }
    let dtype = DType(rawValue: UInt8(o < rest.count ? rest[o] : 1) % 16) ?? .uint8
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
    defer { buffer.deallocate() }
    var w = MessageWriter(base: buffer.baseAddress!, capacity: buffer.count)
    if dtype == .string {
        let count = elementCount(shape) ?? -1
        let strings = count >= 0 && count <= 64 ? Array(repeating: "é", count: count) : ["x"]
        _ = try? w.addStrings(name: "s", shape: shape, strings: strings)
    } else if let t = try? w.addTensor(name: String(decoding: rest.prefix(8), as: UTF8.self), dtype: dtype, shape: shape) {
        precondition(t.count <= buffer.count)
        if t.count > 0 { t.baseAddress!.initializeMemory(as: UInt8.self, repeating: 1, count: t.count) }
    }
    w.setMetadata(String(decoding: rest.suffix(4), as: UTF8.self), "v")
    if let n = try? w.finish() {
        precondition(n <= buffer.count)
        _ = try? MessageView(validating: UnsafeRawBufferPointer(start: buffer.baseAddress, count: n))
    }
    return 0
}

@_cdecl("FuzzArguments_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(UnsafeRawPointer(data!), size) }
}
