import Synchronization

/// Request pages kept for views that outlive their request (a Python model that stores its
/// input). `ShmChannel.preserve` replaces such pages, in this process only, by a private copy
/// (`cferry_privatize`) and maps the slot afresh elsewhere, so the kept views keep their
/// bytes while the slot is reused. This registry remembers every preserved range so that
/// unmapping a segment spares them, and frees each one when its last view is gone.
enum PreservedPages {
    struct Range {
        let length: Int
        /// The segment whose mapping encloses the range is still mapped.
        var enclosed: Bool
        /// Nothing points into it any more (its memory was given back).
        var released: Bool
    }

    private static let ranges = Locked<[UInt: Range]>([:])

    /// Records a range just preserved inside a live mapping.
    static func add(_ start: UnsafeMutableRawPointer, length: Int) {
        let key = UInt(bitPattern: start)
        ranges.withLock { $0[key] = Range(length: length, enclosed: true, released: false) }
    }

    /// Called by the owner of the views: the range is no longer needed. False if unknown.
    @discardableResult
    static func release(_ start: UnsafeRawPointer) -> Bool {
        let key = UInt(bitPattern: start)
        return ranges.withLock { r in
            let p = UnsafeMutableRawPointer(bitPattern: key)!
            guard var e = r[key], !e.released else { return false }
            if e.enclosed {
                // The enclosing mapping is still there: give the memory back, keep the
                // addresses reserved until that mapping is unmapped.
                System.discard(p, size: e.length)
                e.released = true
                r[key] = e
            } else {
                System.unmap(p, size: e.length)
                r[key] = nil
            }
            return true
        }
    }

    /// Unmaps [start, start+size) except the preserved ranges inside it that are still in
    /// use; those become standalone mappings that `release` unmaps later.
    static func unmap(_ start: UnsafeMutableRawPointer, size: Int) {
        let lo = UInt(bitPattern: start), hi = lo + UInt(size)
        ranges.withLock { r in
            var keep: [(UInt, Int)] = []
            for (key, var e) in r where key >= lo && key < hi {
                if e.released { r[key] = nil } else { e.enclosed = false; r[key] = e; keep.append((key, e.length)) }
            }
            keep.sort { $0.0 < $1.0 }
            var cursor = lo
            for (k, len) in keep {
                if k > cursor { System.unmap(UnsafeMutableRawPointer(bitPattern: cursor)!, size: Int(k - cursor)) }
                cursor = max(cursor, k + UInt(len))
            }
            if cursor < hi { System.unmap(UnsafeMutableRawPointer(bitPattern: cursor)!, size: Int(hi - cursor)) }
        }
    }
}
