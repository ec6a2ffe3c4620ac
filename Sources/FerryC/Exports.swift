// The exported C functions, one per declaration in include/ferry.h, in the same order.
import CFerryABI
import CFerryLinux
import FerryCore

// MARK: library

private let versionString: StaticString = "0.1.0"

@_cdecl("ferry_version")
public func ferry_version() -> UnsafePointer<CChar> {
    UnsafeRawPointer(versionString.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("ferry_version_number")
public func ferry_version_number() -> Int32 { FERRY_VERSION_MAJOR * 10000 + FERRY_VERSION_MINOR * 100 + FERRY_VERSION_PATCH }

@_cdecl("ferry_last_error")
public func ferry_last_error() -> UnsafePointer<CChar> { cferry_get_error() }

// BEGIN GENERATED: status names (scripts/gen_tables.py)
private let statusNames: [StaticString] = ["FERRY_OK", "FERRY_EINVAL", "FERRY_EMALFORMED", "FERRY_ETOOBIG", "FERRY_ETIMEDOUT", "FERRY_EPEERDIED", "FERRY_ENOSERVER", "FERRY_EBUSY", "FERRY_ECLOSED", "FERRY_ESYSTEM", "FERRY_EREMOTE", "FERRY_EPERM", "FERRY_EVERSION", "FERRY_EAGAIN", "FERRY_EDISCONNECTED", "FERRY_EPROTOCOL"]
// END GENERATED
private let unknownStatus: StaticString = "FERRY_E?"

@_cdecl("ferry_status_name")
public func ferry_status_name(_ s: Int32) -> UnsafePointer<CChar> {
    let name = (s >= 0 && Int(s) < statusNames.count) ? statusNames[Int(s)] : unknownStatus
    return UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("ferry_options_init")
public func ferry_options_init(_ opts: UnsafeMutablePointer<ferry_options>?) {
    guard let opts else { return }
    opts.pointee = ferry_options()
    opts.pointee.struct_size = MemoryLayout<ferry_options>.size
}

// MARK: client

@_cdecl("ferry_client_new")
public func ferry_client_new(_ url: UnsafePointer<CChar>?, _ opts: UnsafePointer<ferry_options>?,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        guard let out else { throw invalid("out is NULL") }
        out.pointee = nil
        let client = try Client(try endpointURL(try string(url, "url"), opts))
        out.pointee = retain(ClientHandle(client))
    }
}

@_cdecl("ferry_client_free")
public func ferry_client_free(_ client: OpaquePointer?) {
    if let c = try? borrow(client, ClientHandle.self, "client") { c.client.close() }
    release(client, ClientHandle.self)
}

@_cdecl("ferry_client_error")
public func ferry_client_error(_ client: OpaquePointer?, _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    guard let c = try? borrow(client, ClientHandle.self, "client") else { return FERRY_EINVAL }
    return c.read(message)
}

@_cdecl("ferry_call_begin")
public func ferry_call_begin(_ client: OpaquePointer?, _ timeoutMs: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    let c = try? borrow(client, ClientHandle.self, "client")
    return status(on: c) {
        guard let out else { throw invalid("out is NULL") }
        out.pointee = nil
        guard let c else { throw invalid("client is NULL") }
        out.pointee = retain(CallHandle(try c.client.begin(timeout: try timeout(timeoutMs))))
    }
}

@_cdecl("ferry_client_server_info")
public func ferry_client_server_info(_ client: OpaquePointer?, _ timeoutMs: Int64, _ model: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    let c = try? borrow(client, ClientHandle.self, "client")
    return status(on: c) {
        guard let c else { throw invalid("client is NULL") }
        guard let model else { throw invalid("model is NULL") }
        let info = try c.client.serverInfo(timeout: try timeout(timeoutMs))
        var text = info["model"] ?? ""
        if let v = info["version"], !v.isEmpty, !text.contains(v) { text += " version=\(v)" }
        c.info = Array(text.utf8CString)
        model.pointee = c.info.withUnsafeBufferPointer { $0.baseAddress }
    }
}

@_cdecl("ferry_call_try_begin")
public func ferry_call_try_begin(_ client: OpaquePointer?, _ timeoutMs: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    let c = try? borrow(client, ClientHandle.self, "client")
    return status(on: c) {
        guard let out else { throw invalid("out is NULL") }
        out.pointee = nil
        guard let c else { throw invalid("client is NULL") }
        guard let call = try c.client.tryBegin(timeout: try timeout(timeoutMs)) else {
            throw FerryError(.again, "every request buffer is in use right now: try again (no call was begun)")
        }
        out.pointee = retain(CallHandle(call))
    }
}

@_cdecl("ferry_call_writer")
public func ferry_call_writer(_ call: OpaquePointer?) -> OpaquePointer? {
    guard let c = try? borrow(call, CallHandle.self, "call") else { return nil }
    return OpaquePointer(Unmanaged.passUnretained(c.writer).toOpaque())
}

@_cdecl("ferry_call_send")
public func ferry_call_send(_ call: OpaquePointer?) -> Int32 {
    let c = try? borrow(call, CallHandle.self, "call")
    return status(on: c) {
        guard let c else { throw invalid("call is NULL") }
        try c.call.send()
    }
}

@_cdecl("ferry_call_wait")
public func ferry_call_wait(_ call: OpaquePointer?, _ timeoutMs: Int64, _ reply: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    let c = try? borrow(call, CallHandle.self, "call")
    return status(on: c) {
        guard let c else { throw invalid("call is NULL") }
        reply?.pointee = nil
        reply?.pointee = c.keep(try c.call.wait(timeout: try timeout(timeoutMs)))
    }
}

@_cdecl("ferry_call_poll")
public func ferry_call_poll(_ call: OpaquePointer?, _ waitMs: Int64, _ reply: UnsafeMutablePointer<OpaquePointer?>?,
                            _ tensors: UnsafeMutablePointer<ferry_tensor>?, _ cap: Int, _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    let c = try? borrow(call, CallHandle.self, "call")
    var pending = false
    let rc = status(on: c) {
        guard let c else { throw invalid("call is NULL") }
        reply?.pointee = nil
        if !c.call.isSent { try c.call.send() }
        guard waitMs >= 0 else { throw invalid("wait_ms \(waitMs) is negative") }
        guard let view = try c.call.poll(for: .milliseconds(min(waitMs, Int64(Endpoint.maxTimeoutMillis)))) else {
            pending = true
            return
        }
        reply?.pointee = c.keep(view)
        _ = describe(view, tensors, cap, count)
    }
    return rc == FERRY_OK && pending ? FERRY_EAGAIN : rc
}

@_cdecl("ferry_call_error")
public func ferry_call_error(_ call: OpaquePointer?, _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                             _ type: UnsafeMutablePointer<UnsafePointer<CChar>?>?, _ detail: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    guard let c = try? borrow(call, CallHandle.self, "call") else { return FERRY_EINVAL }
    return c.read(message, type, detail)
}

@_cdecl("ferry_call_finish")
public func ferry_call_finish(_ call: OpaquePointer?, _ timeoutMs: Int64, _ reply: UnsafeMutablePointer<OpaquePointer?>?,
                              _ tensors: UnsafeMutablePointer<ferry_tensor>?, _ cap: Int, _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    var rc = ferry_call_send(call)
    guard rc == FERRY_OK else { return rc }
    var message: OpaquePointer? = nil
    rc = ferry_call_wait(call, timeoutMs, &message)
    reply?.pointee = message
    if rc == FERRY_OK, let m = try? borrow(message, MessageHandle.self, "message") { _ = describe(m.view, tensors, cap, count) }
    return rc
}

@_cdecl("ferry_call_array")
public func ferry_call_array(_ client: OpaquePointer?, _ timeoutMs: Int64, _ name: UnsafePointer<CChar>?, _ dt: Int32, _ ndim: Int32,
                             _ shape: UnsafePointer<Int64>?, _ data: UnsafeRawPointer?, _ nbytes: Int, _ waitMs: Int64,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?, _ reply: UnsafeMutablePointer<OpaquePointer?>?,
                             _ tensors: UnsafeMutablePointer<ferry_tensor>?, _ cap: Int, _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    guard let out else { cferry_set_error("out is NULL"); return FERRY_EINVAL }
    var rc = ferry_call_begin(client, timeoutMs, out)
    guard rc == FERRY_OK, let call = out.pointee else { return rc }
    // `data` lives until this returns, and the call is sent before: sent from where it is.
    rc = ferry_writer_put_tensor_ref(ferry_call_writer(call), name, dt, ndim, shape, data, nbytes)
    guard rc == FERRY_OK else { return rc }
    return ferry_call_poll(call, waitMs, reply, tensors, cap, count)
}

@_cdecl("ferry_call_check")
public func ferry_call_check(_ call: OpaquePointer?) -> Int32 {
    status { try borrow(call, CallHandle.self, "call").call.checkReplyIntact() }
}

@_cdecl("ferry_call_free")
public func ferry_call_free(_ call: OpaquePointer?) {
    if let c = try? borrow(call, CallHandle.self, "call") { c.reply = nil; c.call.close() }
    release(call, CallHandle.self)
}

// MARK: worker

@_cdecl("ferry_worker_new")
public func ferry_worker_new(_ url: UnsafePointer<CChar>?, _ opts: UnsafePointer<ferry_options>?,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        guard let out else { throw invalid("out is NULL") }
        out.pointee = nil
        let worker = try Worker(try endpointURL(try string(url, "url"), opts))
        out.pointee = retain(WorkerHandle(worker))
    }
}

@_cdecl("ferry_worker_error")
public func ferry_worker_error(_ worker: OpaquePointer?, _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32 {
    guard let w = try? borrow(worker, WorkerHandle.self, "worker") else { return FERRY_EINVAL }
    return w.read(message)
}

@_cdecl("ferry_worker_free")
public func ferry_worker_free(_ worker: OpaquePointer?) {
    if let w = try? borrow(worker, WorkerHandle.self, "worker") { w.worker.close() }
    release(worker, WorkerHandle.self)
}

@_cdecl("ferry_worker_slots")
public func ferry_worker_slots(_ worker: OpaquePointer?, _ count: UnsafeMutablePointer<Int>?, _ slotSize: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let w = try borrow(worker, WorkerHandle.self, "worker")
        count?.pointee = w.worker.geometry.slots
        slotSize?.pointee = w.worker.geometry.slotSize
    }
}

@_cdecl("ferry_worker_slot")
public func ferry_worker_slot(_ worker: OpaquePointer?, _ index: Int, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?) -> Int32 {
    status {
        let w = try borrow(worker, WorkerHandle.self, "worker")
        guard let data else { throw invalid("data is NULL") }
        guard index >= 0 && index < w.worker.geometry.slots else { throw invalid("slot index \(index) outside 0..<\(w.worker.geometry.slots)") }
        data.pointee = w.worker.slotData(index).baseAddress
    }
}

@_cdecl("ferry_worker_pending")
public func ferry_worker_pending(_ worker: OpaquePointer?, _ writing: UnsafeMutablePointer<Int>?, _ queued: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let w = try borrow(worker, WorkerHandle.self, "worker")
        let p = w.worker.pending()
        writing?.pointee = p.writing
        queued?.pointee = p.queued
    }
}

@_cdecl("ferry_worker_recv")
public func ferry_worker_recv(_ worker: OpaquePointer?, _ timeoutMs: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    let handle = try? borrow(worker, WorkerHandle.self, "worker")
    return status(on: handle) {
        guard let out else { throw invalid("job is NULL") }
        out.pointee = nil
        guard let w = handle else { throw invalid("worker is NULL") }
        guard let job = try w.worker.receive(timeout: try timeout(timeoutMs)) else {
            cferry_set_error("no request before the deadline")
            throw FerryError(.timedOut, "no request before the deadline")
        }
        out.pointee = retain(JobHandle(job))
    }
}

@_cdecl("ferry_worker_next")
public func ferry_worker_next(_ worker: OpaquePointer?, _ timeoutMs: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                              _ tensors: UnsafeMutablePointer<ferry_tensor>?, _ cap: Int, _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    let rc = ferry_worker_recv(worker, timeoutMs, out)
    guard rc == FERRY_OK, let job = out?.pointee else { return rc }
    // The descriptors come straight from the validated view: no message handle unless asked.
    return status {
        let j = try borrow(job, JobHandle.self, "job")
        count?.pointee = 0
        if j.view == nil { j.view = try j.job.request() }
        _ = describe(j.view!, tensors, cap, count)
    }
}

@_cdecl("ferry_worker_next_batch")
public func ferry_worker_next_batch(_ worker: OpaquePointer?, _ timeoutMs: Int64, _ gatherUs: Int64, _ max: Int,
                                    _ jobs: UnsafeMutablePointer<OpaquePointer?>?, _ tensors: UnsafeMutablePointer<ferry_tensor>?,
                                    _ counts: UnsafeMutablePointer<Int>?, _ taken: UnsafeMutablePointer<Int>?) -> Int32 {
    taken?.pointee = 0
    guard let jobs, let taken, max >= 1 else { cferry_set_error("jobs or taken is NULL, or max < 1"); return FERRY_EINVAL }
    guard gatherUs >= 0, gatherUs <= 10_000_000 else { cferry_set_error("gather_us \(gatherUs) outside 0...10000000"); return FERRY_EINVAL }
    let handle = try? borrow(worker, WorkerHandle.self, "worker")
    guard let handle else { cferry_set_error("worker is NULL"); return FERRY_EINVAL }
    var n = 0
    // One job: validated, its first descriptor filled; an invalid request is failed here.
    func add(_ job: Job) {
        let j = JobHandle(job)
        do { j.view = try job.request() } catch let e as FerryError { job.fail(e); return } catch { job.fail(FerryError(.malformed, "\(error)")); return }
        if let tensors {
            if j.view!.tensorCount > 0 { fill(tensors + n, j.view!.rawTensor(at: 0)) } else { (tensors + n).pointee = ferry_tensor() }
        }
        counts?[n] = j.view!.tensorCount
        jobs[n] = retain(j)
        n += 1
    }
    let rc = status(on: handle) {
        guard let first = try handle.worker.receive(timeout: try timeout(timeoutMs)) else {
            throw FerryError(.timedOut, "no request within the timeout")
        }
        add(first)
        // More while they are queued, or being written, for at most gather_us.
        let end = System.nowNanos() &+ UInt64(gatherUs) * 1000
        while n < max {
            if let j = try handle.worker.receive(timeout: .zero) { add(j); continue }
            let p = handle.worker.pending()
            if p.queued == 0 && (p.writing == 0 || System.nowNanos() >= end) { break }
            System.relax()
        }
    }
    taken.pointee = n
    return n > 0 ? FERRY_OK : rc
}

@_cdecl("ferry_jobs_reply_rows")
public func ferry_jobs_reply_rows(_ jobs: UnsafePointer<OpaquePointer?>?, _ n: Int, _ name: UnsafePointer<CChar>?, _ dt: Int32, _ ndim: Int32,
                                  _ shape: UnsafePointer<Int64>?, _ data: UnsafeRawPointer?, _ rows: UnsafePointer<Int64>?) -> Int32 {
    guard let jobs, n >= 0 else { cferry_set_error("jobs is NULL"); return FERRY_EINVAL }
    // Check the batch result once; a bad one fails every job with the reason.
    var rowBytes = 0, total: Int64 = 0
    let check = status {
        guard let rows else { throw invalid("rows is NULL") }
        let dims = try shapeArray(ndim, shape)
        guard !dims.isEmpty else { throw invalid("a batch result needs a first dimension (rows)") }
        let d = try dtype(dt)
        guard let item = d.itemSize, d.isNumeric else { throw invalid("a batch result must be a fixed-size numeric array") }
        rowBytes = dims.dropFirst().reduce(item, *)
        for i in 0..<n { guard rows[i] >= 0 else { throw invalid("rows[\(i)] is negative") }; total += rows[i] }
        guard total == Int64(dims[0]) else { throw invalid("the rows add up to \(total), the result has \(dims[0])") }
        guard data != nil || rowBytes == 0 || total == 0 else { throw invalid("data is NULL") }
    }
    if check != FERRY_OK {
        let text = String(cString: cferry_get_error())
        for i in 0..<n { _ = ferry_job_fail(jobs[i], FERRY_EREMOTE, text) }
        cferry_set_error(text)
        return check
    }
    var first = FERRY_OK
    var start: Int64 = 0
    var sub = [Int64](repeating: 0, count: Int(ndim))
    for i in 0..<Int(ndim) { sub[i] = shape![i] }
    for i in 0..<n {
        let r = rows![i]
        sub[0] = r
        let rc = sub.withUnsafeBufferPointer {
            ferry_job_reply_tensor(jobs[i], name, dt, ndim, $0.baseAddress, data.map { $0 + Int(start) * rowBytes }, Int(r) * rowBytes)
        }
        if rc != FERRY_OK && first == FERRY_OK { first = rc }
        start += r
    }
    return first
}

@_cdecl("ferry_job_request")
public func ferry_job_request(_ job: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        guard let out else { throw invalid("request is NULL") }
        let j = try borrow(job, JobHandle.self, "job")
        if j.view == nil { j.view = try j.job.request() }
        if j.request == nil { j.request = MessageHandle(j.view!, owner: j.job) }
        out.pointee = OpaquePointer(Unmanaged.passUnretained(j.request!).toOpaque())
    }
}

@_cdecl("ferry_job_writer")
public func ferry_job_writer(_ job: OpaquePointer?) -> OpaquePointer? {
    guard let j = try? borrow(job, JobHandle.self, "job") else { return nil }
    return OpaquePointer(Unmanaged.passUnretained(j.writer).toOpaque())
}

@_cdecl("ferry_job_reply")
public func ferry_job_reply(_ job: OpaquePointer?) -> Int32 {
    let rc = status {
        let j = try borrow(job, JobHandle.self, "job")
        do { try j.job.reply() } catch let e as FerryError { j.job.fail(e); throw e }
    }
    release(job, JobHandle.self)
    return rc
}

@_cdecl("ferry_job_reply_tensor")
public func ferry_job_reply_tensor(_ job: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dt: Int32, _ ndim: Int32,
                                   _ shape: UnsafePointer<Int64>?, _ data: UnsafeRawPointer?, _ nbytes: Int) -> Int32 {
    let w = ferry_job_writer(job)
    let rc = ferry_writer_put_tensor(w, name, dt, ndim, shape, data, nbytes)
    if rc != FERRY_OK {
        let text = String(cString: cferry_get_error())
        _ = ferry_job_fail(job, rc == FERRY_EINVAL ? FERRY_EREMOTE : rc, text)
        cferry_set_error(text)
        return rc
    }
    return ferry_job_reply(job)
}

@_cdecl("ferry_job_fail")
public func ferry_job_fail(_ job: OpaquePointer?, _ code: Int32, _ message: UnsafePointer<CChar>?) -> Int32 {
    ferry_job_fail_ex(job, code, nil, message, nil)
}

@_cdecl("ferry_job_fail_ex")
public func ferry_job_fail_ex(_ job: OpaquePointer?, _ code: Int32, _ type: UnsafePointer<CChar>?, _ message: UnsafePointer<CChar>?,
                              _ detail: UnsafePointer<CChar>?) -> Int32 {
    let rc = status {
        let j = try borrow(job, JobHandle.self, "job")
        let c = FerryError.Code(rawValue: code) ?? .remote
        // Text for people: invalid UTF-8 is repaired here rather than losing the error.
        var e = FerryError(c == .invalidArgument || c == .again ? .remote : c, message.map { String(cString: $0) } ?? "the model failed")
        e.remoteType = type.map { String(cString: $0) }
        e.detail = detail.map { String(cString: $0) }
        j.job.fail(e)
    }
    release(job, JobHandle.self)
    return rc
}

@_cdecl("ferry_job_preserve")
public func ferry_job_preserve(_ job: OpaquePointer?, _ kept: UnsafeMutablePointer<UnsafeRawPointer?>?, _ keptLen: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let j = try borrow(job, JobHandle.self, "job")
        let r = try j.job.preserveRequest()
        kept?.pointee = r.baseAddress
        keptLen?.pointee = r.count
    }
}

@_cdecl("ferry_preserved_release")
public func ferry_preserved_release(_ kept: UnsafeRawPointer?) -> Int32 {
    status {
        guard let kept else { throw invalid("kept is NULL") }
        guard Worker.releasePreserved(kept) else { throw invalid("not a range kept by ferry_job_preserve (or given back already)") }
    }
}

// MARK: writing

@_cdecl("ferry_writer_add_tensor")
public func ferry_writer_add_tensor(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dt: Int32, _ ndim: Int32,
                                    _ shape: UnsafePointer<Int64>?, _ data: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                    _ nbytes: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        let n = try string(name, "name"), d = try dtype(dt), s = try shapeArray(ndim, shape)
        guard d != .string else { throw invalid("use ferry_writer_put_strings for string tensors") }
        let buf = try h.mutate { try $0.addTensor(name: n, dtype: d, shape: s) }
        data?.pointee = buf.baseAddress
        nbytes?.pointee = buf.count
    }
}

@_cdecl("ferry_writer_put_tensor")
public func ferry_writer_put_tensor(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dt: Int32, _ ndim: Int32,
                                    _ shape: UnsafePointer<Int64>?, _ data: UnsafeRawPointer?, _ nbytes: Int) -> Int32 {
    putTensor(w, name, dt, ndim, shape, data, nbytes, byReference: false)
}

@_cdecl("ferry_writer_put_tensor_ref")
public func ferry_writer_put_tensor_ref(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dt: Int32, _ ndim: Int32,
                                        _ shape: UnsafePointer<Int64>?, _ data: UnsafeRawPointer?, _ nbytes: Int) -> Int32 {
    putTensor(w, name, dt, ndim, shape, data, nbytes, byReference: true)
}

/// The two put_tensor exports: the same checks; copied now, or read when the call is sent.
private func putTensor(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dt: Int32, _ ndim: Int32, _ shape: UnsafePointer<Int64>?,
                       _ data: UnsafeRawPointer?, _ nbytes: Int, byReference: Bool) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        let n = try string(name, "name"), d = try dtype(dt), s = try shapeArray(ndim, shape)
        guard d != .string else { throw invalid("use ferry_writer_put_strings for string tensors") }
        guard nbytes >= 0, data != nil || nbytes == 0 else { throw invalid("data is NULL") }
        let bytes = UnsafeRawBufferPointer(start: data, count: nbytes)
        try h.mutate {
            if byReference { try $0.addTensor(name: n, dtype: d, shape: s, referencing: bytes) } else { try $0.addTensor(name: n, dtype: d, shape: s, bytes: bytes) }
        }
    }
}

@_cdecl("ferry_writer_put_strings")
public func ferry_writer_put_strings(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ ndim: Int32, _ shape: UnsafePointer<Int64>?,
                                     _ strings: UnsafePointer<UnsafePointer<CChar>?>?, _ lengths: UnsafePointer<Int>?, _ count: Int) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        let n = try string(name, "name"), s = try shapeArray(ndim, shape)
        guard count >= 0, count == 0 || (strings != nil && lengths != nil) else { throw invalid("strings or lengths is NULL") }
        guard let expected = elementCount(s), expected == count else {
            throw invalid("\(count) strings for shape \(s)")
        }
        // Every string takes an 8-byte offset: refuse what cannot fit before allocating for it.
        let room = try h.mutate { $0.capacity }
        guard count <= room / 8 else {
            throw FerryError(.tooLarge, "\(count) strings need at least \(count * 8) bytes; the message has room for \(room)")
        }
        var values: [String] = []
        values.reserveCapacity(count)
        for i in 0..<count {
            guard let p = strings![i] else { throw invalid("strings[\(i)] is NULL") }
            guard lengths![i] >= 0, lengths![i] <= room else { throw FerryError(.tooLarge, "strings[\(i)] is \(UInt(bitPattern: lengths![i])) bytes; the message has room for \(room)") }
            let bytes = UnsafeRawBufferPointer(start: p, count: lengths![i])
            guard let text = String(validating: bytes, as: UTF8.self) else { throw invalid("strings[\(i)] is not valid UTF-8") }
            values.append(text)
        }
        try h.mutate { try $0.addStrings(name: n, shape: s, strings: values) }
    }
}

@_cdecl("ferry_writer_put_strings_packed")
public func ferry_writer_put_strings_packed(_ w: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ ndim: Int32, _ shape: UnsafePointer<Int64>?,
                                            _ offsets: UnsafePointer<UInt64>?, _ text: UnsafePointer<CChar>?, _ textLen: Int) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        let n = try string(name, "name"), s = try shapeArray(ndim, shape)
        guard let count = elementCount(s) else { throw invalid("shape \(s) overflows") }
        let room = try h.mutate { $0.capacity }
        guard count < room / 8 else { throw FerryError(.tooLarge, "\(count) strings need at least \((count + 1) * 8) bytes; the message has room for \(room)") }
        guard textLen >= 0, textLen <= room else { throw FerryError(.tooLarge, "\(textLen) bytes of text; the message has room for \(room)") }
        guard let offsets else { throw invalid("offsets is NULL") }
        guard text != nil || textLen == 0 else { throw invalid("text is NULL") }
        try h.mutate {
            try $0.addPackedStrings(name: n, shape: s, offsets: UnsafeBufferPointer(start: offsets, count: count + 1),
                                    text: UnsafeRawBufferPointer(start: text, count: textLen))
        }
    }
}

@_cdecl("ferry_writer_set_meta")
public func ferry_writer_set_meta(_ w: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?) -> Int32 {
    status {
        let h = try borrow(w, WriterHandle.self, "writer")
        let k = try string(key, "key"), v = try string(value, "value")
        try h.mutate { $0.setMetadata(k, v) }
    }
}

@_cdecl("ferry_encoder_new")
public func ferry_encoder_new(_ capacity: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        guard let out else { throw invalid("out is NULL") }
        guard capacity > 0 && capacity <= 1 << 40 else { throw invalid("capacity \(capacity) out of range") }
        out.pointee = retain(EncoderHandle(capacity: capacity))
    }
}

@_cdecl("ferry_encoder_writer")
public func ferry_encoder_writer(_ enc: OpaquePointer?) -> OpaquePointer? {
    guard let e = try? borrow(enc, EncoderHandle.self, "encoder") else { return nil }
    return OpaquePointer(Unmanaged.passUnretained(e.writerHandle).toOpaque())
}

@_cdecl("ferry_encoder_finish")
public func ferry_encoder_finish(_ enc: OpaquePointer?, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?, _ len: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let e = try borrow(enc, EncoderHandle.self, "encoder")
        e.length = try e.writer.finish()
        data?.pointee = UnsafeRawPointer(e.buffer.baseAddress)
        len?.pointee = e.length
    }
}

@_cdecl("ferry_encoder_free")
public func ferry_encoder_free(_ enc: OpaquePointer?) { release(enc, EncoderHandle.self) }

// MARK: reading

@_cdecl("ferry_message_decode")
public func ferry_message_decode(_ data: UnsafeRawPointer?, _ len: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    status {
        guard let out else { throw invalid("out is NULL") }
        out.pointee = nil
        guard len >= 0, data != nil || len == 0 else { throw invalid("data is NULL") }
        let view = try MessageView(validating: UnsafeRawBufferPointer(start: data, count: len))
        out.pointee = retain(MessageHandle(view, owner: nil))
    }
}

@_cdecl("ferry_message_free")
public func ferry_message_free(_ msg: OpaquePointer?) { release(msg, MessageHandle.self) }

@_cdecl("ferry_message_tensor_count")
public func ferry_message_tensor_count(_ msg: OpaquePointer?) -> Int {
    (try? borrow(msg, MessageHandle.self, "message"))?.view.tensorCount ?? 0
}

func fill(_ out: UnsafeMutablePointer<ferry_tensor>, _ t: RawTensor) {
    out.pointee.name = t.name.assumingMemoryBound(to: CChar.self)
    out.pointee.name_len = t.nameLength
    out.pointee.dtype = Int32(t.dtype.rawValue)
    out.pointee.ndim = Int32(t.ndim)
    out.pointee.shape = t.shape
    out.pointee.data = t.data
    out.pointee.nbytes = t.dataLength
    out.pointee.reserved = (0, 0, 0, 0)
}

@_cdecl("ferry_message_tensor")
public func ferry_message_tensor(_ msg: OpaquePointer?, _ index: Int, _ out: UnsafeMutablePointer<ferry_tensor>?) -> Int32 {
    status {
        let m = try borrow(msg, MessageHandle.self, "message")
        guard let out else { throw invalid("out is NULL") }
        guard index >= 0 && index < m.view.tensorCount else { throw invalid("tensor index \(index) out of range 0..<\(m.view.tensorCount)") }
        fill(out, m.view.rawTensor(at: index))
    }
}

@_cdecl("ferry_message_tensors")
public func ferry_message_tensors(_ msg: OpaquePointer?, _ out: UnsafeMutablePointer<ferry_tensor>?, _ cap: Int,
                                  _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let m = try borrow(msg, MessageHandle.self, "message")
        guard describe(m.view, out, cap, count) else {
            let n = m.view.tensorCount
            throw invalid(n > cap ? "\(n) tensors but room for \(cap)" : "out is NULL")
        }
    }
}

/// Fills the descriptors of `view` into `out` when they fit in `cap` (and `*count` with how
/// many there are); false when they do not fit or `out` is NULL for a non-empty message.
/// Shared by ferry_message_tensors and the fast paths that end with it.
func describe(_ view: MessageView, _ out: UnsafeMutablePointer<ferry_tensor>?, _ cap: Int, _ count: UnsafeMutablePointer<Int>?) -> Bool {
    let n = view.tensorCount
    count?.pointee = n
    guard n <= cap, out != nil || n == 0 else { return false }
    for i in 0..<n { fill(out! + i, view.rawTensor(at: i)) }
    return true
}

@_cdecl("ferry_message_find")
public func ferry_message_find(_ msg: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<ferry_tensor>?) -> Int32 {
    status {
        let m = try borrow(msg, MessageHandle.self, "message")
        let wanted = Array(try string(name, "name").utf8)
        guard let out else { throw invalid("out is NULL") }
        for i in 0..<m.view.tensorCount {
            let t = m.view.rawTensor(at: i)
            if t.nameLength == wanted.count && wanted.withUnsafeBytes({ memcmpEqual($0.baseAddress, t.name, t.nameLength) }) {
                fill(out, t)
                return
            }
        }
        throw invalid("no tensor named \"\(String(decoding: wanted, as: UTF8.self))\"")
    }
}

func memcmpEqual(_ a: UnsafeRawPointer?, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    guard n > 0, let a else { return true }
    return UnsafeRawBufferPointer(start: a, count: n).elementsEqual(UnsafeRawBufferPointer(start: b, count: n))
}

@_cdecl("ferry_message_meta_count")
public func ferry_message_meta_count(_ msg: OpaquePointer?) -> Int {
    (try? borrow(msg, MessageHandle.self, "message"))?.view.metadataCount ?? 0
}

@_cdecl("ferry_message_meta")
public func ferry_message_meta(_ msg: OpaquePointer?, _ index: Int,
                               _ key: UnsafeMutablePointer<UnsafePointer<CChar>?>?, _ keyLen: UnsafeMutablePointer<Int>?,
                               _ value: UnsafeMutablePointer<UnsafePointer<CChar>?>?, _ valueLen: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let m = try borrow(msg, MessageHandle.self, "message")
        guard let e = m.view.rawMetadata(at: index) else { throw invalid("metadata index \(index) out of range") }
        key?.pointee = e.key.assumingMemoryBound(to: CChar.self)
        keyLen?.pointee = e.keyLength
        value?.pointee = e.value.assumingMemoryBound(to: CChar.self)
        valueLen?.pointee = e.valueLength
    }
}

@_cdecl("ferry_message_status")
public func ferry_message_status(_ msg: OpaquePointer?) -> Int32 {
    (try? borrow(msg, MessageHandle.self, "message"))?.view.status ?? FERRY_EINVAL
}

@_cdecl("ferry_message_bytes")
public func ferry_message_bytes(_ msg: OpaquePointer?, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?, _ len: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        let m = try borrow(msg, MessageHandle.self, "message")
        data?.pointee = m.view.base
        len?.pointee = m.view.length
    }
}

@_cdecl("ferry_channel_reclaim")
public func ferry_channel_reclaim(_ url: UnsafePointer<CChar>?, _ removed: UnsafeMutablePointer<Int32>?) -> Int32 {
    status {
        let r = try Worker.reclaim(try string(url, "url"))
        removed?.pointee = r ? 1 : 0
    }
}

@_cdecl("ferry_channel_census")
public func ferry_channel_census(_ url: UnsafePointer<CChar>?, _ recover: Int32, _ counts: UnsafeMutablePointer<Int>?) -> Int32 {
    status {
        guard let counts else { throw invalid("counts is NULL") }
        let census = try Client(try string(url, "url")).census(recover: recover != 0)
        for s in SlotState.allCases { counts[Int(s.rawValue)] = census[s] ?? 0 }
    }
}

@_cdecl("ferry_segment_validate")
public func ferry_segment_validate(_ header: UnsafeRawPointer?, _ len: Int, _ fileSize: Int) -> Int32 {
    status {
        guard len >= 0, header != nil || len == 0 else { throw invalid("header is NULL") }
        _ = try SegmentLayout.validate(UnsafeRawBufferPointer(start: header, count: len), fileSize: fileSize)
    }
}
