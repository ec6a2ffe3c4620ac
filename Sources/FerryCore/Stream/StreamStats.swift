import FoundationEssentials

/// What a stream is doing, read from its segment without joining it (`ferry stats`).
public struct StreamSnapshot: Sendable {
    /// One subscriber's counters.
    public struct Subscriber: Sendable {
        /// Its index (reader bit).
        public var index: Int
        /// Its process id (informational).
        public var pid: UInt32
        /// "latest" or "every".
        public var mode: String
        /// Frames received and dropped so far.
        public var received: UInt64, dropped: UInt64
        /// End-to-end age of the last frame it received, in ns.
        public var lastAgeNanos: UInt64
        /// Frames published after the last one it took.
        public var behind: UInt64
    }

    /// The stream's name.
    public var name: String
    /// The publisher's process id, and whether it lives.
    public var publisherPid: UInt32, publisherAlive: Bool
    /// Slots and bytes per slot.
    public var slots: Int, slotSize: Int
    /// Frames published so far, and the newest frame's sequence number.
    public var published: UInt64, latest: UInt64
    /// Nanoseconds since the last publish (nil: none yet).
    public var sinceLastPublishNanos: UInt64?
    /// Live subscribers.
    public var subscribers: [Subscriber]

    /// Names of this user's streams in /dev/shm.
    public static func names() -> [String] {
        let prefix = "ferry-stream.\(System.euid)."
        let files = (try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []
        return files.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }.sorted()
    }

    /// Reads stream `name` (`.noServer` when nothing publishes it).
    public static func read(_ name: String) throws -> StreamSnapshot {
        let seg = try StreamSegment.attach(name: name)
        let latest = seg.latest.seq
        var subs: [Subscriber] = []
        for i in 0..<StreamLayout.maxSubscribers {
            let mode = seg.subMode(i).load(ordering: .acquiring)
            guard mode != StreamLayout.modeFree, seg.subscriberAlive(i) else { continue }
            let cursor = seg.subField(i, StreamLayout.eCursor).load(ordering: .relaxed)
            subs.append(Subscriber(index: i, pid: UnsafeRawPointer(seg.base).u32(seg.sub(i) + StreamLayout.ePid),
                                   mode: mode == StreamLayout.modeEvery ? "every" : "latest",
                                   received: seg.subField(i, StreamLayout.eReceived).load(ordering: .relaxed),
                                   dropped: seg.subField(i, StreamLayout.eDropped).load(ordering: .relaxed),
                                   lastAgeNanos: seg.subField(i, StreamLayout.eLastAge).load(ordering: .relaxed),
                                   behind: latest > cursor ? latest - cursor : 0))
        }
        let last = seg.atomic64(StreamLayout.oLastPublish).load(ordering: .relaxed)
        let now = System.nowNanos()
        return StreamSnapshot(name: name, publisherPid: UnsafeRawPointer(seg.base).u32(StreamLayout.oPublisherPid), publisherAlive: seg.hasPublisher,
                              slots: seg.geometry.slots, slotSize: seg.geometry.slotSize,
                              published: seg.atomic64(StreamLayout.oFramesPublished).load(ordering: .relaxed), latest: latest,
                              sinceLastPublishNanos: last == 0 ? nil : (now > last ? now - last : 0), subscribers: subs)
    }
}
