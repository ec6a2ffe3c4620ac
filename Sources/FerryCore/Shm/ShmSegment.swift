import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// Byte layout of a shared-memory segment (docs/protocol.md, "Segment").
public enum SegmentLayout {
    /// "FERRYSEG" read as a little-endian u64.
    public static let magic: UInt64 = 0x4745_5359_5252_4546
    /// Segment layout version (2: 64-bit slot words carrying owner tokens).
    public static let version: UInt32 = 2
    /// Size of the header page.
    public static let headerSize = 4096
    /// Size of one slot descriptor.
    public static let slotEntrySize = 64
    /// Most slots in a segment.
    public static let maxSlots = 1024
    /// Largest slot.
    public static let maxSlotSize = 1 << 36
    /// Page size used for alignment.
    public static let page = 4096

    static let oMagic = 0, oVersion = 8, oHeaderSize = 12, oSlotCount = 16, oState = 20
    static let oSlotSize = 24, oSlotsOffset = 32, oTotal = 40, oCreator = 48, oInstance = 52
    // Each hot counter on its own cache line.
    static let oRequestSeq = 64, oSleepingWorkers = 128, oFreeSeq = 192, oFreeWaiters = 256
    // Live statistics (`ferry stats`), counted since the segment was created: requests
    // answered and failed by workers, calls given up by clients at their deadline, worker
    // restarts (by a supervisor), and a histogram of service times (worker took → answered):
    // bucket k counts times in [2^k, 2^(k+1)) ns, the last one everything longer.
    static let oAnswered = 384, oFailed = 392, oTimedOut = 448, oRestarts = 512
    /// Serving processes that ever attached (each adds one as it takes its token): a worker
    /// attaches once its model loaded, so a supervisor knows the model loads even when the
    /// worker came and went between two of its looks.
    static let oWorkersJoined = 520
    static let oServiceHistogram = 576, serviceBuckets = 40
    /// One byte per liveness token: 1 for a serving process, 2 for a client, 3 for a reader
    /// of statistics, 4 for a holder — a process that keeps the channel open for its workers
    /// but takes no requests (`ferry serve`'s supervisor). Written by the token's holder
    /// after taking it; only counted while the token is alive.
    static let oRoles = 2048
    /// Why no worker serves the channel now, as its holder last said (u32 length, then up to
    /// `maxStatusLength` UTF-8 bytes; 0: nothing said): e.g. the model's load error, which
    /// clients add to their `.noServer` error. Informational: a torn read is repaired text.
    static let oStatus = 1024, maxStatusLength = 1020

    // Slot descriptor fields: the 64-bit control word (SlotWord), the count of clients
    // sleeping on its low half, the worker's pid (informational: for the hang watchdog and
    // `ferry status`, never for liveness), the request length, when the worker took it.
    static let sWord = 0, sClientWaiting = 8, sWorkerPid = 12, sRequestLength = 16, sBusySince = 24

    /// Who serves the channel: the model identity its first server gave (u32 length, then
    /// up to `maxModelLength` UTF-8 bytes; length 0: none given). Written once, when the
    /// segment is created; every later server must give the same one (one model per channel).
    static let oModel = 3072, maxModelLength = 1020

    /// File byte whose OFD lock is peer `id`'s liveness token is `peerLockBase + id`.
    static let peerLockBase: Int64 = 1024

    static let stateInit: UInt32 = 0, stateReady: UInt32 = 1, stateClosed: UInt32 = 2

    /// Offset of the first slot's data for `slots` slots.
    public static func slotsOffset(slots: Int) -> Int {
        MessageLayout.align(headerSize + slots * slotEntrySize, page)
    }

    /// Geometry of a segment, validated.
    public struct Geometry: Equatable, Sendable {
        /// Number of slots.
        public var slots: Int
        /// Bytes per slot (request and response share a slot).
        public var slotSize: Int
        /// Offset of slot 0's data.
        public var slotsOffset: Int
        /// Total segment size.
        public var totalSize: Int
    }

    /// Checks a segment header found in `header` for a file of `fileSize` bytes.
    /// This is what a process runs before trusting any other field of a segment.
    public static func validate(_ header: UnsafeRawBufferPointer, fileSize: Int) throws -> Geometry {
        func bad(_ why: String) -> FerryError { FerryError(.malformed, "invalid shared-memory segment: \(why)") }
        guard let p = header.baseAddress, header.count >= 64 else { throw bad("header shorter than 64 bytes") }
        guard p.u64(oMagic) == magic else { throw bad("bad magic (not a Ferry segment)") }
        let v = p.u32(oVersion)
        guard v == version else { throw FerryError(.version, "segment layout version \(v) is not supported (this build uses \(version))") }
        guard Int(p.u32(oHeaderSize)) == headerSize else { throw bad("header size \(p.u32(oHeaderSize))") }
        let slots = Int(p.u32(oSlotCount))
        guard slots >= 1 && slots <= maxSlots else { throw bad("slot count \(slots) outside 1...\(maxSlots)") }
        let slotSize64 = p.u64(oSlotSize)
        guard slotSize64 >= UInt64(page), slotSize64 <= UInt64(maxSlotSize), slotSize64 % UInt64(page) == 0 else {
            throw bad("slot size \(slotSize64) is not a page multiple in 4096...\(maxSlotSize)")
        }
        let slotSize = Int(slotSize64)
        let expectedOffset = slotsOffset(slots: slots)
        guard p.u64(oSlotsOffset) == UInt64(expectedOffset) else { throw bad("slot area offset \(p.u64(oSlotsOffset)) != \(expectedOffset)") }
        let total = expectedOffset + slots * slotSize
        guard p.u64(oTotal) == UInt64(total) else { throw bad("total size \(p.u64(oTotal)) != \(total)") }
        guard total <= fileSize else { throw bad("segment of \(fileSize) bytes is smaller than its header says (\(total))") }
        return Geometry(slots: slots, slotSize: slotSize, slotsOffset: expectedOffset, totalSize: total)
    }
}

/// A mapped shared-memory segment, as the process serving it or as a client.
///
/// Liveness and creation use open-file-description locks on the segment's file, which the
/// kernel drops when a process dies (pids are never used: they are reused, and differ
/// between pid namespaces): byte 0 serialises create/join/reclaim/leave, every serving
/// process holds a shared lock on byte 1, and every attachment holds an exclusive lock on
/// byte `peerLockBase + id`: its liveness token `id`, which slot words record as owner.
/// A segment whose byte 1 nobody holds is stale (its servers are gone) and the next server
/// reclaims it.
///
/// Every lock is taken through `lockFd`, a second open file description of the file that
/// is never mapped and is fork-guarded (`cferry_liveness_register`): a forked child gets
/// /dev/null in its place, so it neither inherits nor prolongs the parent's liveness. (The
/// mapping itself keeps `fd`'s description open in a child, which is why no lock is ever
/// taken through `fd`; `fd` only maps and tests locks.)
///
/// The mapping lives as long as this object: calls, jobs and message views keep it alive,
/// so `leave()` (stop serving, detach) never unmaps memory that something still points into.
final class ShmSegment {
    let channel: String
    let shmName: String
    let path: String
    /// Shared across users (`?scope=shared`) rather than private to this one.
    let shared: Bool
    let fd: Int32
    let lockFd: Int32
    let base: UnsafeMutableRawPointer
    let geometry: SegmentLayout.Geometry
    let isServer: Bool
    var isOpen = true
    /// This attachment's liveness token (0 until acquired).
    private(set) var peer: PeerID = 0
    /// The fork generation this object was made in; in a forked child it is stale.
    let forkGeneration = System.forkGeneration

    static let mutexByte: Int64 = 0
    static let livenessByte: Int64 = 1

    /// Takes ownership of `fd`, `lockFd` (either may be -1) and the mapping.
    private init(channel: String, shared: Bool, fd: Int32, lockFd: Int32, base: UnsafeMutableRawPointer, geometry: SegmentLayout.Geometry, isServer: Bool) {
        self.channel = channel
        self.shared = shared
        self.shmName = ShmSegment.shmName(channel, shared: shared)
        self.path = ShmSegment.path(channel, shared: shared)
        self.fd = fd
        self.lockFd = lockFd
        self.base = base
        self.geometry = geometry
        self.isServer = isServer
    }

    /// True in a forked child for an object its parent made: it must not touch shared state.
    var isStale: Bool { forkGeneration != System.forkGeneration }

    /// Takes a free liveness token: the first id whose lock byte nobody holds. A token left
    /// by a dead process is reused; the channel then recovers what that process held.
    func acquirePeer(observer: Bool = false, holder: Bool = false) throws {
        let n = Int(SlotWord.maxPeer)
        let start = Int(System.nowNanos() % UInt64(n))
        for k in 0..<n {
            let id = PeerID(1 + (start + k) % n)
            if try System.lock(fd: lockFd, byte: SegmentLayout.peerLockBase + Int64(id), exclusive: true, wait: false) {
                peer = id
                // 1 serves, 2 calls, 3 only reads statistics (`ferry stats`), 4 holds the
                // channel for its workers: 3 and 4 take no requests and are not counted.
                base.storeBytes(of: observer ? 3 : holder ? 4 : isServer ? 1 : 2, toByteOffset: SegmentLayout.oRoles + Int(id), as: UInt8.self)
                if isServer && !observer && !holder { atomic64(SegmentLayout.oWorkersJoined).wrappingIncrement(ordering: .releasing) }
                return
            }
        }
        throw FerryError(.busy, "shm://\(channel) already has \(n) attached processes (the most a segment tracks)")
    }

    /// Live attachments by role: (serving processes, clients).
    func liveAttachments() -> (servers: Int, clients: Int) {
        var servers = 0, clients = 0
        for id in 1...Int(SlotWord.maxPeer) {
            let role = base.load(fromByteOffset: SegmentLayout.oRoles + id, as: UInt8.self)
            guard role == 1 || role == 2, isAlive(PeerID(id)) else { continue }
            if role == 1 { servers += 1 } else { clients += 1 }
        }
        return (servers, clients)
    }

    /// True while the process holding liveness token `id` lives (or `id` is 0, nobody).
    func isAlive(_ id: PeerID) -> Bool {
        id == 0 || System.isLocked(fd: fd, byte: SegmentLayout.peerLockBase + Int64(id))
    }

    /// The segment's name: scoped to this user (the uid is part of it), so users never
    /// collide on a channel name, or `shared.` for channels shared across users on purpose.
    static func shmName(_ channel: String, shared: Bool) -> String {
        shared ? "/ferry.shared.\(channel)" : "/ferry.\(System.euid).\(channel)"
    }
    static func path(_ channel: String, shared: Bool) -> String { "/dev/shm" + shmName(channel, shared: shared) }

    /// Who may use the segment: its owner only, or (shared) every local user.
    static func mode(shared: Bool) -> mode_t { shared ? 0o666 : 0o600 }

    /// A segment of this user's scope must be this user's: anything else was planted there.
    static func checkOwner(_ uid: UInt32, channel: String, shared: Bool) throws {
        guard !shared, uid != System.euid else { return }
        throw FerryError(.permission, "channel \"\(channel)\": \(path(channel, shared: false)) belongs to uid \(uid), not to this user (uid \(System.euid)); another user created it — remove it, or use another name")
    }

    static func validateName(_ name: String) throws { try Endpoint.validateName(name) }

    /// A fork-guarded second description of `fd`'s file, for locks; closes `fd` on failure.
    private static func lockDescriptor(for fd: Int32) throws -> Int32 {
        let lfd: Int32
        do { lfd = try System.reopen(fd) } catch { System.close(fd); throw error }
        guard System.guardLiveness(lfd) else {
            System.close(lfd)
            System.close(fd)
            throw FerryError(.system, "too many Ferry attachments in this process")
        }
        return lfd
    }

    /// Closes both descriptors of an attempt that did not produce a segment.
    private static func closePair(_ fd: Int32, _ lfd: Int32) {
        System.closeGuarded(lfd)
        System.close(fd)
    }

    // MARK: serving side

    /// Creates the segment, or joins it when live servers already serve it, or reclaims it
    /// when its servers died. Bounded: gives up after 100 races.
    static func serve(channel: String, shared: Bool = false, slots: Int, slotSize: Int, model: String = "", holder: Bool = false) throws -> ShmSegment {
        try validateName(channel)
        guard model.utf8.count <= SegmentLayout.maxModelLength else {
            throw FerryError(.invalidArgument, "model identity longer than \(SegmentLayout.maxModelLength) bytes")
        }
        guard slots >= 1 && slots <= SegmentLayout.maxSlots else {
            throw FerryError(.invalidArgument, "slots must be in 1...\(SegmentLayout.maxSlots), got \(slots)")
        }
        let slotSize = MessageLayout.align(max(slotSize, SegmentLayout.page), SegmentLayout.page)
        guard slotSize <= SegmentLayout.maxSlotSize else { throw FerryError(.invalidArgument, "slot_size \(slotSize) exceeds \(SegmentLayout.maxSlotSize)") }
        let name = shmName(channel, shared: shared), path = path(channel, shared: shared)
        for _ in 0..<100 {
            let created = cferryOpen(name, create: true, shared: shared)
            if created.fd >= 0 {
                let fd = created.fd
                let lfd: Int32
                do { lfd = try lockDescriptor(for: fd) } catch { System.shmUnlink(name); throw error }
                let seg: ShmSegment
                do {
                    try System.lock(fd: lfd, byte: mutexByte, exclusive: true, wait: true)
                    // A racing server may have judged our empty file stale and unlinked it.
                    guard let ino = System.inode(path: path), ino == (try System.stat(fd: fd)).inode else {
                        closePair(fd, lfd)
                        continue
                    }
                    let offset = SegmentLayout.slotsOffset(slots: slots)
                    let total = offset + slots * slotSize
                    try System.allocate(fd: fd, size: total)
                    let base = try System.mapShared(fd: fd, size: total)
                    base.put(SegmentLayout.magic, at: SegmentLayout.oMagic)
                    base.put(SegmentLayout.version, at: SegmentLayout.oVersion)
                    base.put(UInt32(SegmentLayout.headerSize), at: SegmentLayout.oHeaderSize)
                    base.put(UInt32(slots), at: SegmentLayout.oSlotCount)
                    base.put(UInt64(slotSize), at: SegmentLayout.oSlotSize)
                    base.put(UInt64(offset), at: SegmentLayout.oSlotsOffset)
                    base.put(UInt64(total), at: SegmentLayout.oTotal)
                    base.put(System.pid, at: SegmentLayout.oCreator)
                    base.put(UInt32(truncatingIfNeeded: System.nowNanos()), at: SegmentLayout.oInstance)
                    let identity = Array(model.utf8)
                    base.put(UInt32(identity.count), at: SegmentLayout.oModel)
                    identity.withUnsafeBytes { if !$0.isEmpty { (base + SegmentLayout.oModel + 4).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
                    let geometry = SegmentLayout.Geometry(slots: slots, slotSize: slotSize, slotsOffset: offset, totalSize: total)
                    seg = ShmSegment(channel: channel, shared: shared, fd: fd, lockFd: lfd, base: base, geometry: geometry, isServer: true)
                } catch {
                    System.shmUnlink(name)
                    closePair(fd, lfd)
                    throw error
                }
                // From here `seg` owns the descriptors and the mapping.
                do {
                    try seg.acquirePeer(holder: holder)
                    seg.atomic(SegmentLayout.oState).store(SegmentLayout.stateReady, ordering: .releasing)
                    try System.lock(fd: lfd, byte: livenessByte, exclusive: false, wait: true)
                    System.unlock(fd: lfd, byte: mutexByte)
                    return seg
                } catch {
                    System.shmUnlink(name)
                    seg.isOpen = false
                    throw error
                }
            }
            guard created.errno == EEXIST else { throw System.error("shm_open", name, errno: created.errno) }
            let opened = cferryOpen(name, create: false, shared: shared)
            if opened.fd < 0 {
                if opened.errno == ENOENT { continue }
                throw System.error("shm_open", name, errno: opened.errno)
            }
            let fd = opened.fd
            let lfd = try lockDescriptor(for: fd)
            var owned = false  // true once a ShmSegment owns the descriptors
            defer { if !owned { closePair(fd, lfd) } }
            try System.lock(fd: lfd, byte: mutexByte, exclusive: true, wait: true)
            let st = try System.stat(fd: fd)
            guard let ino = System.inode(path: path), ino == st.inode else { continue }
            try checkOwner(st.uid, channel: channel, shared: shared)
            let alive = System.isLocked(fd: fd, byte: livenessByte)
            var geometry: SegmentLayout.Geometry? = nil
            var headerError: FerryError? = nil
            if st.size >= SegmentLayout.headerSize {
                let header = try System.mapShared(fd: fd, size: SegmentLayout.headerSize)
                defer { System.unmap(header, size: SegmentLayout.headerSize) }
                do { geometry = try SegmentLayout.validate(UnsafeRawBufferPointer(start: header, count: SegmentLayout.headerSize), fileSize: st.size) }
                catch let e as FerryError { headerError = e }
            }
            if alive {
                guard let g = geometry else {
                    throw headerError ?? FerryError(.malformed, "channel \"\(channel)\" is served by a process whose segment is not a Ferry segment")
                }
                let base = try System.mapShared(fd: fd, size: g.totalSize)
                let seg = ShmSegment(channel: channel, shared: shared, fd: fd, lockFd: lfd, base: base, geometry: g, isServer: true)
                owned = true
                seg.isOpen = false  // until it is fully joined
                guard seg.atomic(SegmentLayout.oState).load(ordering: .acquiring) == SegmentLayout.stateReady else { continue }
                // One model per channel: a server of another model would answer some of the
                // calls with the wrong model's results.
                let serving = seg.model
                guard serving == model else {
                    throw FerryError(.invalidArgument, "channel shm://\(channel) is served by model \(ShmSegment.describe(serving)); "
                        + "this worker is model \(ShmSegment.describe(model)): one model per channel "
                        + "(serve this one under another name, or stop the other's workers first)")
                }
                try seg.acquirePeer(holder: holder)
                try System.lock(fd: lfd, byte: livenessByte, exclusive: false, wait: true)
                seg.isOpen = true
                System.unlock(fd: lfd, byte: mutexByte)
                return seg
            }
            retire(fd: fd, channel: channel, shared: shared, geometry: geometry)
        }
        throw FerryError(.busy, "could not create or join channel \"\(channel)\": too many concurrent creators")
    }

    /// Removes the channel's segment if no process serves it any more (its servers died).
    /// Returns true if a stale segment was removed, false if none exists or it is served.
    static func reclaimIfStale(channel: String, shared: Bool = false) throws -> Bool {
        try validateName(channel)
        let opened = cferryOpen(shmName(channel, shared: shared), create: false, shared: shared)
        if opened.fd < 0 {
            if opened.errno == ENOENT { return false }
            throw System.error("shm_open", shmName(channel, shared: shared), errno: opened.errno)
        }
        let fd = opened.fd
        let lfd = try lockDescriptor(for: fd)
        defer { closePair(fd, lfd) }
        try System.lock(fd: lfd, byte: mutexByte, exclusive: true, wait: true)
        let st = try System.stat(fd: fd)
        guard let ino = System.inode(path: path(channel, shared: shared)), ino == st.inode else { return false }
        try checkOwner(st.uid, channel: channel, shared: shared)
        if System.isLocked(fd: fd, byte: livenessByte) { return false }
        var geometry: SegmentLayout.Geometry? = nil
        if st.size >= SegmentLayout.headerSize, let header = try? System.mapShared(fd: fd, size: SegmentLayout.headerSize) {
            geometry = try? SegmentLayout.validate(UnsafeRawBufferPointer(start: header, count: SegmentLayout.headerSize), fileSize: st.size)
            System.unmap(header, size: SegmentLayout.headerSize)
        }
        retire(fd: fd, channel: channel, shared: shared, geometry: geometry)
        return true
    }

    /// Removes a stale segment (the caller holds the mutex byte and saw no server): marks it
    /// closed and wakes every sleeper, so clients still mapped to it notice and re-attach by
    /// name, then unlinks it.
    private static func retire(fd: Int32, channel: String, shared: Bool, geometry: SegmentLayout.Geometry?) {
        if let g = geometry, let base = try? System.mapShared(fd: fd, size: g.totalSize) {
            let seg = ShmSegment(channel: channel, shared: shared, fd: -1, lockFd: -1, base: base, geometry: g, isServer: false)
            seg.atomic(SegmentLayout.oState).store(SegmentLayout.stateClosed, ordering: .sequentiallyConsistent)
            seg.wakeEveryone()
            seg.isOpen = false
        }
        System.shmUnlink(shmName(channel, shared: shared))
    }

    // MARK: client side

    /// Maps an existing, served segment as a client.
    static func attach(channel: String, shared: Bool = false, observer: Bool = false) throws -> ShmSegment {
        try validateName(channel)
        let opened = cferryOpen(shmName(channel, shared: shared), create: false, shared: shared)
        if opened.fd < 0 {
            if opened.errno == ENOENT {
                throw FerryError(.noServer, "no channel shm://\(channel): nothing serves it (start one with `ferry serve` or ferry.serve)")
            }
            throw System.error("shm_open", shmName(channel, shared: shared), errno: opened.errno)
        }
        let fd = opened.fd
        let seg: ShmSegment
        do {
            let st = try System.stat(fd: fd)
            try checkOwner(st.uid, channel: channel, shared: shared)
            // A server takes its liveness lock only once the header is complete, so check it first:
            // a segment being created (or left by a dead server) is "no server", not "malformed".
            guard System.isLocked(fd: fd, byte: livenessByte) else {
                throw FerryError(.noServer, "channel shm://\(channel) exists but no process serves it (being created, or its server died)")
            }
            guard st.size >= SegmentLayout.headerSize else {
                throw FerryError(.closed, "channel shm://\(channel): its segment is \(st.size) bytes, smaller than a Ferry header: "
                    + "another process truncated it; the channel is broken (restart its server to make a new one)")
            }
            let header = try System.mapShared(fd: fd, size: SegmentLayout.headerSize)
            let g: SegmentLayout.Geometry
            do {
                defer { System.unmap(header, size: SegmentLayout.headerSize) }
                g = try SegmentLayout.validate(UnsafeRawBufferPointer(start: header, count: SegmentLayout.headerSize), fileSize: st.size)
            }
            let lfd = try lockDescriptor(for: fd)
            let base: UnsafeMutableRawPointer
            do { base = try System.mapShared(fd: fd, size: g.totalSize) } catch { System.closeGuarded(lfd); throw error }
            seg = ShmSegment(channel: channel, shared: shared, fd: fd, lockFd: lfd, base: base, geometry: g, isServer: false)
        } catch {
            System.close(fd)
            throw error
        }
        // `seg` owns the descriptors and the mapping now.
        guard seg.state == SegmentLayout.stateReady else {
            seg.isOpen = false
            throw FerryError(.closed, "channel shm://\(channel) is closing")
        }
        try seg.acquirePeer(observer: observer)
        return seg
    }

    private static func cferryOpen(_ name: String, create: Bool, shared: Bool) -> (fd: Int32, errno: Int32) {
        do {
            let fd = try System.shmOpen(name, flags: create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR, mode: mode(shared: shared))
            // The umask must not narrow a shared channel's mode.
            if create && shared { _ = fchmod(fd, mode(shared: true)) }
            return (fd, 0)
        } catch {
            return (-1, System.lastErrno)
        }
    }

    // MARK: shared fields

    @inline(__always)
    func atomic(_ offset: Int) -> UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
    }

    @inline(__always)
    func word(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        (base + offset).assumingMemoryBound(to: UInt32.self)
    }

    @inline(__always)
    func atomic64(_ offset: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
    }

    /// The model identity the channel's first server gave ("" when none was given).
    var model: String {
        let n = min(Int(base.load(fromByteOffset: SegmentLayout.oModel, as: UInt32.self)), SegmentLayout.maxModelLength)
        return String(decoding: UnsafeRawBufferPointer(start: base + SegmentLayout.oModel + 4, count: n), as: UTF8.self)
    }

    /// True while a live process takes requests (role 1): a holder alone does not.
    var hasWorker: Bool {
        for id in 1...Int(SlotWord.maxPeer) where base.load(fromByteOffset: SegmentLayout.oRoles + id, as: UInt8.self) == 1 {
            if isAlive(PeerID(id)) { return true }
        }
        return false
    }

    /// What the holder said about the channel's state (`oStatus`), "" when nothing.
    var status: String {
        let a = atomic(SegmentLayout.oStatus)
        let n = Int(a.load(ordering: .acquiring))
        guard n > 0 else { return "" }
        var bytes = [UInt8](repeating: 0, count: min(n, SegmentLayout.maxStatusLength))
        bytes.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: base + SegmentLayout.oStatus + 4, count: $0.count)) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Sets the status text (the holder): length 0 while the bytes change, then the length.
    func setStatus(_ text: String) {
        var bytes = Array(text.utf8.prefix(SegmentLayout.maxStatusLength))
        if text.utf8.count > bytes.count {  // cut: keep whole characters
            while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }
            if let last = bytes.last, last >= 0xC0 { bytes.removeLast() }
        }
        let a = atomic(SegmentLayout.oStatus)
        a.store(0, ordering: .releasing)
        bytes.withUnsafeBytes { if !$0.isEmpty { (base + SegmentLayout.oStatus + 4).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        a.store(UInt32(bytes.count), ordering: .releasing)
    }

    /// The error of a call that no live worker can take: the holder's word on why, if any.
    func noWorkerError() -> FerryError {
        let why = status
        return FerryError(.noServer, "no worker serves shm://\(channel) now" + (why.isEmpty ? "" : ": \(why)"))
    }

    /// An identity for an error message.
    static func describe(_ model: String) -> String { model.isEmpty ? "(none given)" : "\"\(model)\"" }

    /// Segment state (init, ready, closed).
    var state: UInt32 { atomic(SegmentLayout.oState).load(ordering: .acquiring) }

    /// True when the segment was closed or reclaimed.
    var isClosed: Bool { state == SegmentLayout.stateClosed }

    /// True when another process shrank the segment's file under this one: the pages it
    /// lost read as private zeros here (System.mapShared), so nothing read from the segment
    /// since can be trusted and nothing written reaches anyone. One atomic load while no
    /// fault was ever taken in this process.
    var isBroken: Bool { System.isBroken(base, size: geometry.totalSize) }

    /// What a client, worker or observer of a broken segment is told.
    func brokenError() -> FerryError {
        FerryError(.closed, "the shared memory of shm://\(channel) was truncated or replaced by another process while this one used it "
            + "(\(path)); the channel is broken: nothing read from it is trusted; restart its server to make a new one")
    }

    /// True while some process serves the segment.
    var hasServer: Bool { fd >= 0 && System.isLocked(fd: fd, byte: ShmSegment.livenessByte) }

    /// Wakes every sleeper on every futex of the segment (after closing).
    func wakeEveryone() {
        atomic(SegmentLayout.oRequestSeq).wrappingIncrement(ordering: .sequentiallyConsistent)
        System.futexWake(word(SegmentLayout.oRequestSeq))
        atomic(SegmentLayout.oFreeSeq).wrappingIncrement(ordering: .sequentiallyConsistent)
        System.futexWake(word(SegmentLayout.oFreeSeq))
        for i in 0..<geometry.slots {
            System.futexWake(word(SegmentLayout.headerSize + i * SegmentLayout.slotEntrySize + SegmentLayout.sWord))
        }
    }

    /// Stops serving (server) or detaches (client). The last server closes and unlinks.
    /// The mapping stays until the object is gone (see the type's comment).
    func leave() {
        guard isOpen else { return }
        isOpen = false
        if isServer && !isStale {
            _ = try? System.lock(fd: lockFd, byte: ShmSegment.mutexByte, exclusive: true, wait: true)
            System.unlock(fd: lockFd, byte: ShmSegment.livenessByte)
            if !System.isLocked(fd: fd, byte: ShmSegment.livenessByte) {
                atomic(SegmentLayout.oState).store(SegmentLayout.stateClosed, ordering: .sequentiallyConsistent)
                wakeEveryone()
                if let ino = System.inode(path: path), let mine = try? System.stat(fd: fd).inode, ino == mine {
                    System.shmUnlink(shmName)
                }
            }
            System.unlock(fd: lockFd, byte: ShmSegment.mutexByte)
        }
    }

    /// Slot mappings made by `ShmChannel.preserve` (unmapped with the segment).
    var extraMappings: [(UnsafeMutableRawPointer, Int)] = []

    deinit {
        leave()
        PreservedPages.unmap(base, size: geometry.totalSize)
        for (p, n) in extraMappings { PreservedPages.unmap(p, size: n) }
        if lockFd >= 0 { System.closeGuarded(lockFd) }
        if fd >= 0 { System.close(fd) }
    }
}
