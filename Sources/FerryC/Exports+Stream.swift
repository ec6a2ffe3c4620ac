// The exported stream functions (include/ferry.h, "streams"), in the header's order.
import CFerryABI
import FerryCore

// MARK: publisher

@_cdecl("ferry_publisher_new")
public func ferry_publisher_new(_ url: UnsafePointer<CChar>?, _ opts: UnsafePointer<ferry_options>?,
                                _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        guard let out else { throw invalid("out is NULL") }
        out.pointee = nil
        let p = try Publisher(try endpointURL(try string(url, "url"), opts))
        out.pointee = retain(PublisherHandle(p))
    }
}

@_cdecl("ferry_publisher_free")
public func ferry_publisher_free(_ pub: OpaquePointer?) {
    if let p = try? borrow(pub, PublisherHandle.self, "publisher") { p.writer = nil; p.publisher.close() }
    release(pub, PublisherHandle.self)
}

@_cdecl("ferry_publisher_loan")
public func ferry_publisher_loan(_ pub: OpaquePointer?, _ timeoutMs: Int64, _ writer: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    let p = try? borrow(pub, PublisherHandle.self, "publisher")
    return status(on: p) {
        guard let writer else { throw invalid("writer is NULL") }
        writer.pointee = nil
        guard let p else { throw invalid("publisher is NULL") }
        _ = try p.publisher.loan(timeout: try timeout(timeoutMs))
        p.writer = try p.publisher.writer()
        writer.pointee = OpaquePointer(Unmanaged.passUnretained(p.writerHandle).toOpaque())
    }
}

@_cdecl("ferry_publisher_publish")
public func ferry_publisher_publish(_ pub: OpaquePointer?, _ timestampNs: UInt64, _ sequence: UnsafeMutablePointer<UInt64>?) -> Int32 {
    let p = try? borrow(pub, PublisherHandle.self, "publisher")
    return status(on: p) {
        guard let p else { throw invalid("publisher is NULL") }
        guard var w = p.writer else { throw invalid("no frame is loaned: call ferry_publisher_loan first") }
        let n: Int
        do { n = try w.finish() } catch { p.writer = nil; p.publisher.cancel(); throw error }
        p.writer = nil
        let seq = try p.publisher.publish(length: n, timestamp: timestampNs)
        sequence?.pointee = seq
    }
}

@_cdecl("ferry_publisher_cancel")
public func ferry_publisher_cancel(_ pub: OpaquePointer?) -> Int32 {
    let p = try? borrow(pub, PublisherHandle.self, "publisher")
    return status(on: p) {
        guard let p else { throw invalid("publisher is NULL") }
        p.writer = nil
        p.publisher.cancel()
    }
}

@_cdecl("ferry_publisher_subscribers")
public func ferry_publisher_subscribers(_ pub: OpaquePointer?, _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let p = try borrow(pub, PublisherHandle.self, "publisher")
        guard let count else { throw invalid("count is NULL") }
        count.pointee = p.publisher.subscriberCount
    }
}

// MARK: subscriber

@_cdecl("ferry_subscriber_new")
public func ferry_subscriber_new(_ url: UnsafePointer<CChar>?, _ mode: Int32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        guard let out else { throw invalid("out is NULL") }
        out.pointee = nil
        let m: Subscriber.Mode
        switch mode {
        case FERRY_STREAM_LATEST: m = .latest
        case FERRY_STREAM_EVERY: m = .every
        default: throw invalid("unknown stream mode \(mode) (use FERRY_STREAM_LATEST or FERRY_STREAM_EVERY)")
        }
        out.pointee = retain(SubscriberHandle(try Subscriber(try string(url, "url"), mode: m)))
    }
}

@_cdecl("ferry_subscriber_free")
public func ferry_subscriber_free(_ sub: OpaquePointer?) {
    if let s = try? borrow(sub, SubscriberHandle.self, "subscriber") { s.subscriber.close() }
    release(sub, SubscriberHandle.self)
}

@_cdecl("ferry_subscriber_recv")
public func ferry_subscriber_recv(_ sub: OpaquePointer?, _ timeoutMs: Int64, _ frame: UnsafeMutablePointer<OpaquePointer?>?,
                                  _ message: UnsafeMutablePointer<OpaquePointer?>?, _ tensors: UnsafeMutablePointer<ferry_tensor>?,
                                  _ cap: Int, _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    let s = try? borrow(sub, SubscriberHandle.self, "subscriber")
    return status(on: s) {
        guard let frame else { throw invalid("frame is NULL") }
        frame.pointee = nil
        message?.pointee = nil
        guard let s else { throw invalid("subscriber is NULL") }
        let f = FrameHandle(try s.subscriber.receive(timeout: try timeout(timeoutMs)))
        _ = describe(f.frame.message, tensors, cap, count)
        if let message { message.pointee = OpaquePointer(Unmanaged.passUnretained(f.message).toOpaque()) }
        frame.pointee = retain(f)
    }
}

@_cdecl("ferry_subscriber_stats")
public func ferry_subscriber_stats(_ sub: OpaquePointer?, _ out: UnsafeMutablePointer<ferry_stream_stats>?) -> Int32 {
    status {
        let s = try borrow(sub, SubscriberHandle.self, "subscriber")
        guard let out else { throw invalid("out is NULL") }
        out.pointee = ferry_stream_stats()
        out.pointee.received = s.subscriber.received
        out.pointee.dropped = s.subscriber.dropped
        out.pointee.fps = s.subscriber.fps
    }
}

@_cdecl("ferry_subscriber_slots")
public func ferry_subscriber_slots(_ sub: OpaquePointer?, _ count: UnsafeMutablePointer<Int>?, _ slotSize: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let s = try borrow(sub, SubscriberHandle.self, "subscriber")
        count?.pointee = s.subscriber.geometry.slots
        slotSize?.pointee = s.subscriber.geometry.slotSize
    }
}

@_cdecl("ferry_subscriber_slot")
public func ferry_subscriber_slot(_ sub: OpaquePointer?, _ index: Int, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?) -> Int32 {
    status {
        let s = try borrow(sub, SubscriberHandle.self, "subscriber")
        guard let data else { throw invalid("data is NULL") }
        let n = s.subscriber.geometry.slots
        guard index >= 0 && index < n else { throw invalid("slot index \(index) outside 0..<\(n)") }
        data.pointee = s.subscriber.slotData(index)
    }
}

// MARK: frame

@_cdecl("ferry_frame_describe")
public func ferry_frame_describe(_ frame: OpaquePointer?, _ out: UnsafeMutablePointer<ferry_frame_info>?) -> Int32 {
    status {
        let f = try borrow(frame, FrameHandle.self, "frame").frame
        guard let out else { throw invalid("out is NULL") }
        out.pointee = ferry_frame_info()
        out.pointee.sequence = f.sequence
        out.pointee.timestamp_ns = f.timestamp
        out.pointee.received_ns = f.receivedAt
        out.pointee.age_ns = f.ageNanos
        out.pointee.dropped_before = f.droppedBefore
        out.pointee.slot = UInt64(f.slot)
    }
}

@_cdecl("ferry_frame_message")
public func ferry_frame_message(_ frame: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        let f = try borrow(frame, FrameHandle.self, "frame")
        guard let out else { throw invalid("out is NULL") }
        out.pointee = OpaquePointer(Unmanaged.passUnretained(f.message).toOpaque())
    }
}

@_cdecl("ferry_frame_preserve")
public func ferry_frame_preserve(_ frame: OpaquePointer?, _ kept: UnsafeMutablePointer<UnsafeRawPointer?>?, _ keptLen: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let f = try borrow(frame, FrameHandle.self, "frame")
        let r = try f.frame.preserve()
        kept?.pointee = r.baseAddress
        keptLen?.pointee = r.count
    }
}

@_cdecl("ferry_frame_free")
public func ferry_frame_free(_ frame: OpaquePointer?) {
    if let f = try? borrow(frame, FrameHandle.self, "frame") { f.frame.release() }
    release(frame, FrameHandle.self)
}
