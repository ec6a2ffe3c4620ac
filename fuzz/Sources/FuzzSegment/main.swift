// libFuzzer entry: segment- and stream-header validation must accept only self-consistent geometry and
// never trap on any header or file size.
import CFuzz
import FerryCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size >= 8 else { return 0 }
    // The first 8 bytes pick the file size the header is checked against.
    let fileSize = Int(truncatingIfNeeded: data.loadUnaligned(as: UInt64.self) & 0xFFFF_FFFF_FFFF)
    let header = UnsafeMutableRawBufferPointer.allocate(byteCount: size - 8, alignment: 64)
    defer { header.deallocate() }
    if size > 8 { header.copyMemory(from: UnsafeRawBufferPointer(start: data + 8, count: size - 8)) }
    if let g = try? SegmentLayout.validate(UnsafeRawBufferPointer(header), fileSize: fileSize) {
        precondition(g.slots >= 1 && g.slots <= SegmentLayout.maxSlots)
        precondition(g.slotSize % SegmentLayout.page == 0 && g.slotSize <= SegmentLayout.maxSlotSize)
        precondition(g.slotsOffset + g.slots * g.slotSize == g.totalSize && g.totalSize <= fileSize)
    }
    // The same bytes as a stream header.
    if let g = try? StreamLayout.validate(UnsafeRawBufferPointer(header), fileSize: fileSize) {
        precondition(g.slots >= StreamLayout.minSlots && g.slots <= StreamLayout.maxSlots)
        precondition(g.slotSize % StreamLayout.page == 0 && g.slotSize <= StreamLayout.maxSlotSize)
        precondition(g.slotsOffset + g.slots * g.slotSize == g.totalSize && g.totalSize <= fileSize)
    }
    return 0
}

// SwiftPM links every executable with `main` aliased to `FuzzSegment_main`; libFuzzer's own main
// is then not linked, so start its driver from here.
@_cdecl("FuzzSegment_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(UnsafeRawPointer(data!), size) }
}
