/// Byte layout of a stream segment (docs/protocol.md, "Streams"): one header page, one
/// 64-byte descriptor per frame slot, then the slots. A publisher writes frames into free
/// slots; subscribers pin the slot they read, so a frame is never rewritten under a reader.
public enum StreamLayout {
    /// "FERRYSTR" read as a little-endian u64.
    public static let magic: UInt64 = 0x5254_5359_5252_4546
    /// Stream layout version.
    public static let version: UInt32 = 1
    /// Size of the header page.
    public static let headerSize = 4096
    /// Size of one slot descriptor.
    public static let slotEntrySize = 64
    /// Most slots (frames in the ring).
    public static let maxSlots = 256
    /// Fewest slots: the newest frame stays readable while the next one is written.
    public static let minSlots = 2
    /// Most subscribers at once (one reader bit each in a slot word).
    public static let maxSubscribers = FrameWord.readerBits
    /// Largest slot.
    public static let maxSlotSize = 1 << 36
    /// Page size used for alignment.
    public static let page = 4096

    static let oMagic = 0, oVersion = 8, oHeaderSize = 12, oSlotCount = 16, oState = 20
    static let oSlotSize = 24, oSlotsOffset = 32, oTotal = 40, oPublisherPid = 48
    /// The newest frame: `seq << 16 | slot` (0: none yet).
    static let oLatest = 64
    /// Futex word bumped on every publish (and on close); its sleepers' count follows.
    static let oPublished = 128, oPublishedSleepers = 132
    /// Futex word bumped whenever a subscriber lets go of a frame (a publisher waiting for
    /// a free slot sleeps on it); its sleepers' count follows.
    static let oReleased = 192, oReleasedSleepers = 196
    /// Frames published since creation, and when the last one was (monotonic ns).
    static let oFramesPublished = 256, oLastPublish = 264
    /// Subscriber table: `maxSubscribers` entries of `subEntrySize` bytes.
    static let oSubscribers = 1024, subEntrySize = 64
    // Subscriber entry fields: mode (0 free, 1 latest, 2 every), pid (informational), last
    // sequence taken (its cursor), frames received, frames dropped, age of its last frame.
    static let eMode = 0, ePid = 4, eCursor = 8, eReceived = 16, eDropped = 24, eLastAge = 32
    // Slot descriptor fields: the control word (FrameWord), the frame's full sequence number,
    // its capture timestamp (CLOCK_MONOTONIC ns), its message length, when it was published.
    static let sWord = 0, sSeq = 8, sTimestamp = 16, sLength = 24, sPublished = 32

    /// OFD lock bytes: 0 serialises create/reclaim, 1 is held by the live publisher,
    /// `subscriberLockBase + i` by subscriber `i` while it lives.
    static let mutexByte: Int64 = 0, publisherByte: Int64 = 1, subscriberLockBase: Int64 = 64

    static let stateInit: UInt32 = 0, stateReady: UInt32 = 1, stateClosed: UInt32 = 2
    static let modeFree: UInt32 = 0, modeLatest: UInt32 = 1, modeEvery: UInt32 = 2

    /// Offset of the first slot's data for `slots` slots.
    public static func slotsOffset(slots: Int) -> Int {
        MessageLayout.align(headerSize + slots * slotEntrySize, page)
    }

    /// Geometry of a stream segment, validated.
    public struct Geometry: Equatable, Sendable {
        /// Number of frame slots.
        public var slots: Int
        /// Bytes per slot (the largest frame message).
        public var slotSize: Int
        /// Offset of slot 0's data.
        public var slotsOffset: Int
        /// Total segment size.
        public var totalSize: Int
    }

    /// Checks a stream header in `header` for a file of `fileSize` bytes before any other
    /// field of it is trusted.
    public static func validate(_ header: UnsafeRawBufferPointer, fileSize: Int) throws -> Geometry {
        func bad(_ why: String) -> FerryError { FerryError(.malformed, "invalid stream segment: \(why)") }
        guard let p = header.baseAddress, header.count >= headerSize else { throw bad("header shorter than \(headerSize) bytes") }
        guard p.u64(oMagic) == magic else { throw bad("bad magic (not a Ferry stream)") }
        let v = p.u32(oVersion)
        guard v == version else { throw FerryError(.version, "stream layout version \(v) is not supported (this build uses \(version))") }
        guard Int(p.u32(oHeaderSize)) == headerSize else { throw bad("header size \(p.u32(oHeaderSize))") }
        let slots = Int(p.u32(oSlotCount))
        guard slots >= minSlots && slots <= maxSlots else { throw bad("slot count \(slots) outside \(minSlots)...\(maxSlots)") }
        let slotSize64 = p.u64(oSlotSize)
        guard slotSize64 >= UInt64(page), slotSize64 <= UInt64(maxSlotSize), slotSize64 % UInt64(page) == 0 else {
            throw bad("slot size \(slotSize64) is not a page multiple in 4096...\(maxSlotSize)")
        }
        let slotSize = Int(slotSize64)
        let offset = slotsOffset(slots: slots)
        guard p.u64(oSlotsOffset) == UInt64(offset) else { throw bad("slot area offset \(p.u64(oSlotsOffset)) != \(offset)") }
        let total = offset + slots * slotSize
        guard p.u64(oTotal) == UInt64(total) else { throw bad("total size \(p.u64(oTotal)) != \(total)") }
        guard total <= fileSize else { throw bad("segment of \(fileSize) bytes is smaller than its header says (\(total))") }
        return Geometry(slots: slots, slotSize: slotSize, slotsOffset: offset, totalSize: total)
    }
}

/// The 64-bit control word of one frame slot, changed only by compare-and-swap:
/// bits 0–30 are reader pins (bit `i` for subscriber `i`), bit 31 says the publisher is
/// writing the slot, bits 32–63 tag the frame it holds (the low 32 bits of its sequence).
///
/// The rules (checked by `StreamExplorerTests` over every interleaving):
/// * the publisher may claim a slot only with no pins and no write in progress;
/// * a subscriber may pin a slot only when its tag is the frame it wants and no write is in
///   progress — so no frame is ever written while pinned, nor pinned while written;
/// * a pin of a dead subscriber is removed only by whoever holds that subscriber's lock byte,
///   so it can never remove the pin of a live subscriber that reuses the index.
public struct FrameWord: Equatable, Hashable, Sendable {
    /// The word's bits.
    public var raw: UInt64
    /// Reader bits (the most subscribers).
    public static let readerBits = 31
    static let writingBit: UInt64 = 1 << 31
    static let readerMask: UInt64 = (1 << 31) - 1

    /// Wraps a word's bits.
    public init(raw: UInt64) { self.raw = raw }

    /// A slot holding frame tag `tag`, unpinned.
    public static func published(tag: UInt32) -> FrameWord { FrameWord(raw: UInt64(tag) << 32) }

    /// The frame's tag (low 32 bits of its sequence number).
    public var tag: UInt32 { UInt32(truncatingIfNeeded: raw >> 32) }
    /// True while the publisher writes the slot.
    public var writing: Bool { raw & FrameWord.writingBit != 0 }
    /// The reader bits.
    public var readers: UInt32 { UInt32(truncatingIfNeeded: raw & FrameWord.readerMask) }
    /// True when subscriber `bit` pins the slot.
    public func isPinned(by bit: Int) -> Bool { raw & (1 << UInt64(bit)) != 0 }

    /// The publisher's claim, or nil when a reader pins the slot or a write is in progress.
    public func claimed() -> FrameWord? {
        readers == 0 && !writing ? FrameWord(raw: raw | FrameWord.writingBit) : nil
    }

    /// Subscriber `bit`'s pin on frame `tag`, or nil when the slot holds another frame or
    /// is being written.
    public func pinned(by bit: Int, expecting tag: UInt32) -> FrameWord? {
        guard !writing, self.tag == tag else { return nil }
        return FrameWord(raw: raw | (1 << UInt64(bit)))
    }

    /// The word without subscriber `bit`'s pin.
    public func unpinned(by bit: Int) -> FrameWord { FrameWord(raw: raw & ~(1 << UInt64(bit))) }
}
