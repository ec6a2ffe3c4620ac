import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// A mapped stream segment, as its publisher or as a subscriber.
///
/// Liveness uses open-file-description locks, as channels do (ShmSegment): byte 1 is held by
/// the publisher, byte `subscriberLockBase + i` by subscriber `i`; the kernel drops them when
/// a process dies. Locks go through `lockFd`, a fork-guarded second description of the file.
/// A segment whose publisher is gone is stale: the next publisher of the name, or the first
/// subscriber to notice, marks it closed and unlinks it.
final class StreamSegment {
    let name: String
    let fd: Int32
    let lockFd: Int32
    let base: UnsafeMutableRawPointer
    let geometry: StreamLayout.Geometry
    /// Where each slot's data is mapped in this process (a preserved frame moves it).
    private var slotBases: [UnsafeMutableRawPointer]
    /// Slot mappings made by `preserve` (unmapped with the segment).
    private var extraMappings: [(UnsafeMutableRawPointer, Int)] = []
    /// The fork generation this object was made in; in a forked child it is stale.
    let forkGeneration = System.forkGeneration

    private init(name: String, fd: Int32, lockFd: Int32, base: UnsafeMutableRawPointer, geometry: StreamLayout.Geometry) {
        self.name = name
        self.fd = fd
        self.lockFd = lockFd
        self.base = base
        self.geometry = geometry
        slotBases = (0..<geometry.slots).map { base + geometry.slotsOffset + $0 * geometry.slotSize }
    }

    deinit {
        PreservedPages.unmap(base, size: geometry.totalSize)
        for (p, n) in extraMappings { PreservedPages.unmap(p, size: n) }
        if lockFd >= 0 { System.closeGuarded(lockFd) }
        if fd >= 0 { System.close(fd) }
    }

    var isStale: Bool { forkGeneration != System.forkGeneration }

    /// True when another process shrank the segment's file under this one (its lost pages
    /// read as private zeros here: see System.mapShared).
    var isBroken: Bool { System.isBroken(base, size: geometry.totalSize) }

    /// What a publisher or subscriber of a broken segment is told.
    func brokenError() -> FerryError {
        FerryError(.closed, "the shared memory of stream \"\(name)\" was truncated or replaced by another process while this one used it "
            + "(\(StreamSegment.path(name))); the stream is broken: nothing read from it is trusted; restart its publisher")
    }

    static func shmName(_ name: String) -> String { "/ferry-stream.\(System.euid).\(name)" }
    static func path(_ name: String) -> String { "/dev/shm" + shmName(name) }

    // MARK: fields

    @inline(__always) func atomic32(_ o: Int) -> UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: (base + o).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
    }
    @inline(__always) func atomic64(_ o: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (base + o).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
    }
    @inline(__always) func entry(_ slot: Int) -> Int { StreamLayout.headerSize + slot * StreamLayout.slotEntrySize }
    @inline(__always) func word(_ slot: Int) -> UnsafeAtomic<UInt64> { atomic64(entry(slot) + StreamLayout.sWord) }
    @inline(__always) func slotField(_ slot: Int, _ f: Int) -> UnsafeAtomic<UInt64> { atomic64(entry(slot) + f) }
    @inline(__always) func sub(_ i: Int) -> Int { StreamLayout.oSubscribers + i * StreamLayout.subEntrySize }
    @inline(__always) func subField(_ i: Int, _ f: Int) -> UnsafeAtomic<UInt64> { atomic64(sub(i) + f) }
    @inline(__always) func subMode(_ i: Int) -> UnsafeAtomic<UInt32> { atomic32(sub(i) + StreamLayout.eMode) }
    @inline(__always) func data(_ slot: Int) -> UnsafeMutableRawPointer { slotBases[slot] }

    var state: UInt32 { atomic32(StreamLayout.oState).load(ordering: .acquiring) }
    var latest: (seq: UInt64, slot: Int) {
        let v = atomic64(StreamLayout.oLatest).load(ordering: .acquiring)
        return (v >> 16, Int(v & 0xFFFF))
    }

    var published: WaitPoint {
        WaitPoint(word: (base + StreamLayout.oPublished).assumingMemoryBound(to: UInt32.self),
                  sleepers: atomic32(StreamLayout.oPublishedSleepers))
    }
    var released: WaitPoint {
        WaitPoint(word: (base + StreamLayout.oReleased).assumingMemoryBound(to: UInt32.self),
                  sleepers: atomic32(StreamLayout.oReleasedSleepers))
    }

    /// True while the publisher lives.
    var hasPublisher: Bool { System.isLocked(fd: fd, byte: StreamLayout.publisherByte) }
    /// True while subscriber `i` lives.
    func subscriberAlive(_ i: Int) -> Bool { System.isLocked(fd: fd, byte: StreamLayout.subscriberLockBase + Int64(i)) }

    /// Removes subscriber `bit`'s pins from every slot (its holder is dead or leaving, and the
    /// caller holds its lock byte, so no live process owns that bit).
    func clearPins(of bit: Int) {
        for s in 0..<geometry.slots {
            var w = FrameWord(raw: word(s).load(ordering: .acquiring))
            while w.isPinned(by: bit) {
                let (ok, found) = word(s).compareExchange(expected: w.raw, desired: w.unpinned(by: bit).raw, ordering: .acquiringAndReleasing)
                if ok { break }
                w = FrameWord(raw: found)
            }
        }
    }

    /// Lets go of subscriber `i`'s entry whose holder died: takes its lock byte (failing
    /// when it lives), clears its pins and entry. True when something was freed.
    func reap(_ i: Int) -> Bool {
        let inUse = subMode(i).load(ordering: .acquiring) != StreamLayout.modeFree
            || (0..<geometry.slots).contains { FrameWord(raw: word($0).load(ordering: .relaxed)).isPinned(by: i) }
        guard inUse else { return false }
        let byte = StreamLayout.subscriberLockBase + Int64(i)
        guard (try? System.lock(fd: lockFd, byte: byte, exclusive: true, wait: false)) == true else { return false }
        clearPins(of: i)
        subMode(i).store(StreamLayout.modeFree, ordering: .releasing)
        System.unlock(fd: lockFd, byte: byte)
        return true
    }

    /// Bumps a futex word and wakes its sleepers.
    func bump(_ point: WaitPoint) {
        point.atomicWord.wrappingIncrement(ordering: .sequentiallyConsistent)
        point.wake(all: true)
    }

    /// Replaces slot `slot`'s first `length` bytes, in this process only, by a private copy
    /// (for views kept past their frame) and maps the slot afresh for later frames.
    func preserve(slot: Int, length: Int) throws -> UnsafeMutableRawBufferPointer {
        let size = geometry.slotSize
        let keep = min(MessageLayout.align(max(length, 1), StreamLayout.page), size)
        let fresh = try System.mapShared(fd: fd, size: size, offset: geometry.slotsOffset + slot * size)
        let old = slotBases[slot]
        do { try System.privatize(old, length: keep) } catch { System.unmap(fresh, size: size); throw error }
        PreservedPages.add(old, length: keep)
        extraMappings.append((fresh, size))
        slotBases[slot] = fresh
        return UnsafeMutableRawBufferPointer(start: old, count: keep)
    }

    // MARK: opening

    private static func open(_ name: String, create: Bool) -> (fd: Int32, errno: Int32) {
        do { return (try System.shmOpen(shmName(name), flags: create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR, mode: 0o600), 0) }
        catch { return (-1, System.lastErrno) }
    }

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

    private static func checkOwner(_ uid: UInt32, _ name: String) throws {
        guard uid != System.euid else { return }
        throw FerryError(.permission, "stream \"\(name)\": \(path(name)) belongs to uid \(uid), not to this user (uid \(System.euid)); remove it, or use another name")
    }

    /// Creates the stream as its publisher. A stream left by a dead publisher is reclaimed;
    /// one with a live publisher is `.busy`.
    static func create(name: String, slots: Int, slotSize: Int) throws -> StreamSegment {
        try Endpoint.validateName(name)
        guard slots >= StreamLayout.minSlots && slots <= StreamLayout.maxSlots else {
            throw FerryError(.invalidArgument, "a stream needs \(StreamLayout.minSlots)...\(StreamLayout.maxSlots) slots, got \(slots)")
        }
        let slotSize = MessageLayout.align(max(slotSize, StreamLayout.page), StreamLayout.page)
        guard slotSize <= StreamLayout.maxSlotSize else { throw FerryError(.invalidArgument, "slot_size \(slotSize) exceeds \(StreamLayout.maxSlotSize)") }
        for _ in 0..<100 {
            let created = open(name, create: true)
            if created.fd >= 0 {
                let fd = created.fd
                let lfd: Int32
                do { lfd = try lockDescriptor(for: fd) } catch { System.shmUnlink(shmName(name)); throw error }
                do {
                    try System.lock(fd: lfd, byte: StreamLayout.mutexByte, exclusive: true, wait: true)
                    guard let ino = System.inode(path: path(name)), ino == (try System.stat(fd: fd)).inode else {
                        System.closeGuarded(lfd); System.close(fd)
                        continue
                    }
                    let offset = StreamLayout.slotsOffset(slots: slots)
                    let total = offset + slots * slotSize
                    try System.allocate(fd: fd, size: total)
                    let base = try System.mapShared(fd: fd, size: total)
                    base.put(StreamLayout.magic, at: StreamLayout.oMagic)
                    base.put(StreamLayout.version, at: StreamLayout.oVersion)
                    base.put(UInt32(StreamLayout.headerSize), at: StreamLayout.oHeaderSize)
                    base.put(UInt32(slots), at: StreamLayout.oSlotCount)
                    base.put(UInt64(slotSize), at: StreamLayout.oSlotSize)
                    base.put(UInt64(offset), at: StreamLayout.oSlotsOffset)
                    base.put(UInt64(total), at: StreamLayout.oTotal)
                    base.put(System.pid, at: StreamLayout.oPublisherPid)
                    let g = StreamLayout.Geometry(slots: slots, slotSize: slotSize, slotsOffset: offset, totalSize: total)
                    let seg = StreamSegment(name: name, fd: fd, lockFd: lfd, base: base, geometry: g)
                    guard try System.lock(fd: lfd, byte: StreamLayout.publisherByte, exclusive: true, wait: false) else {
                        System.shmUnlink(shmName(name))
                        throw FerryError(.busy, "stream \"\(name)\" is being created by another publisher")
                    }
                    seg.atomic32(StreamLayout.oState).store(StreamLayout.stateReady, ordering: .releasing)
                    System.unlock(fd: lfd, byte: StreamLayout.mutexByte)
                    return seg
                } catch {
                    System.shmUnlink(shmName(name))
                    throw error
                }
            }
            guard created.errno == EEXIST else { throw System.error("shm_open", shmName(name), errno: created.errno) }
            let opened = open(name, create: false)
            if opened.fd < 0 {
                if opened.errno == ENOENT { continue }
                throw System.error("shm_open", shmName(name), errno: opened.errno)
            }
            let fd = opened.fd
            let lfd = try lockDescriptor(for: fd)
            defer { System.closeGuarded(lfd); System.close(fd) }
            try System.lock(fd: lfd, byte: StreamLayout.mutexByte, exclusive: true, wait: true)
            let st = try System.stat(fd: fd)
            guard let ino = System.inode(path: path(name)), ino == st.inode else { continue }
            try checkOwner(st.uid, name)
            if System.isLocked(fd: fd, byte: StreamLayout.publisherByte) {
                var pid: UInt32 = 0
                if st.size >= StreamLayout.headerSize, let h = try? System.mapShared(fd: fd, size: StreamLayout.headerSize) {
                    pid = UnsafeRawPointer(h).u32(StreamLayout.oPublisherPid)
                    System.unmap(h, size: StreamLayout.headerSize)
                }
                throw FerryError(.busy, "stream \"\(name)\" already has a live publisher (pid \(pid)); a stream has one publisher")
            }
            retire(fd: fd, name: name, size: st.size)
        }
        throw FerryError(.busy, "could not create stream \"\(name)\": too many concurrent creators")
    }

    /// Marks a stale stream closed (waking every subscriber) and unlinks it. The caller holds
    /// the mutex byte and saw no publisher.
    private static func retire(fd: Int32, name: String, size: Int) {
        if size >= StreamLayout.headerSize, let h = try? System.mapShared(fd: fd, size: StreamLayout.headerSize) {
            if (try? StreamLayout.validate(UnsafeRawBufferPointer(start: h, count: StreamLayout.headerSize), fileSize: size)) != nil {
                UnsafeAtomic<UInt32>(at: (h + StreamLayout.oState).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
                    .store(StreamLayout.stateClosed, ordering: .sequentiallyConsistent)
                let w = (h + StreamLayout.oPublished).assumingMemoryBound(to: UInt32.self)
                UnsafeAtomic<UInt32>(at: UnsafeMutableRawPointer(w).assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
                    .wrappingIncrement(ordering: .sequentiallyConsistent)
                System.futexWake(w)
            }
            System.unmap(h, size: StreamLayout.headerSize)
        }
        System.shmUnlink(shmName(name))
    }

    /// Unlinks this segment's name if it is still this segment and its publisher is gone
    /// (called by a subscriber that found the publisher dead, so nothing is left in /dev/shm).
    func unlinkIfStale() {
        guard (try? System.lock(fd: lockFd, byte: StreamLayout.mutexByte, exclusive: true, wait: true)) == true else { return }
        defer { System.unlock(fd: lockFd, byte: StreamLayout.mutexByte) }
        guard !hasPublisher, let ino = System.inode(path: StreamSegment.path(name)), let mine = try? System.stat(fd: fd).inode, ino == mine else { return }
        System.shmUnlink(StreamSegment.shmName(name))
    }

    /// The publisher's clean exit: closed state, every subscriber woken, name unlinked.
    func close() {
        guard !isStale else { return }
        _ = try? System.lock(fd: lockFd, byte: StreamLayout.mutexByte, exclusive: true, wait: true)
        atomic32(StreamLayout.oState).store(StreamLayout.stateClosed, ordering: .sequentiallyConsistent)
        bump(published)
        if let ino = System.inode(path: StreamSegment.path(name)), let mine = try? System.stat(fd: fd).inode, ino == mine {
            System.shmUnlink(StreamSegment.shmName(name))
        }
        System.unlock(fd: lockFd, byte: StreamLayout.publisherByte)
        System.unlock(fd: lockFd, byte: StreamLayout.mutexByte)
    }

    /// Maps an existing stream as a subscriber.
    static func attach(name: String) throws -> StreamSegment {
        try Endpoint.validateName(name)
        let opened = open(name, create: false)
        if opened.fd < 0 {
            if opened.errno == ENOENT { throw FerryError(.noServer, "no stream \"\(name)\": nothing publishes it (start its publisher first)") }
            throw System.error("shm_open", shmName(name), errno: opened.errno)
        }
        let fd = opened.fd
        let seg: StreamSegment
        do {
            let st = try System.stat(fd: fd)
            try checkOwner(st.uid, name)
            guard System.isLocked(fd: fd, byte: StreamLayout.publisherByte) else {
                throw FerryError(.noServer, "stream \"\(name)\" exists but its publisher is gone")
            }
            let header = try System.mapShared(fd: fd, size: StreamLayout.headerSize)
            let g: StreamLayout.Geometry
            do {
                defer { System.unmap(header, size: StreamLayout.headerSize) }
                g = try StreamLayout.validate(UnsafeRawBufferPointer(start: header, count: StreamLayout.headerSize), fileSize: st.size)
            }
            let lfd = try lockDescriptor(for: fd)
            let base: UnsafeMutableRawPointer
            do { base = try System.mapShared(fd: fd, size: g.totalSize) } catch { System.closeGuarded(lfd); throw error }
            seg = StreamSegment(name: name, fd: fd, lockFd: lfd, base: base, geometry: g)
        } catch {
            System.close(fd)
            throw error
        }
        guard seg.state == StreamLayout.stateReady else { throw FerryError(.closed, "stream \"\(name)\" has ended") }
        return seg
    }
}
