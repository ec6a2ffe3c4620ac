// The C ABI layer: converts and checks arguments, calls FerryCore, maps errors to status
// codes. No logic of its own. Handles are retained Swift objects passed as opaque pointers.
import CFerryABI
import Synchronization
import CFerryLinux
import FerryCore

/// Runs `body`, turning a thrown error into a status code and the thread's last error.
@inline(__always)
func status(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return FERRY_OK
    } catch let e as FerryError {
        cferry_set_error(e.message)
        return e.code.rawValue
    } catch {
        cferry_set_error("\(error)")
        return FERRY_EINVAL
    }
}

/// `status`, also recording the outcome in the handle `on` (cleared on success).
@inline(__always)
func status(on handle: ErrorHolder?, _ body: () throws -> Void) -> Int32 {
    do {
        try body()
        handle?.clear()
        return FERRY_OK
    } catch let e as FerryError {
        cferry_set_error(e.message)
        handle?.record(e)
        return e.code.rawValue
    } catch {
        cferry_set_error("\(error)")
        handle?.record(FerryError(.invalidArgument, "\(error)"))
        return FERRY_EINVAL
    }
}

/// A handle's last error, readable from C (hiredis's err/errstr, per handle).
class ErrorHolder {
    private(set) var code: Int32 = FERRY_OK
    private var message: [CChar] = [0]
    private var type: [CChar] = [0]
    private var detail: [CChar] = [0]

    func clear() {
        guard code != FERRY_OK else { return }
        code = FERRY_OK
        message = [0]; type = [0]; detail = [0]
    }

    func record(_ e: FerryError) {
        code = e.code.rawValue
        message = Array(e.message.utf8CString)
        type = Array((e.remoteType ?? "").utf8CString)
        detail = Array((e.detail ?? "").utf8CString)
    }

    /// Hands out the stored strings (stable until the next record or clear).
    func read(_ m: UnsafeMutablePointer<UnsafePointer<CChar>?>?, _ t: UnsafeMutablePointer<UnsafePointer<CChar>?>? = nil,
              _ d: UnsafeMutablePointer<UnsafePointer<CChar>?>? = nil) -> Int32 {
        message.withUnsafeBufferPointer { m?.pointee = $0.baseAddress }
        type.withUnsafeBufferPointer { t?.pointee = $0.baseAddress }
        detail.withUnsafeBufferPointer { d?.pointee = $0.baseAddress }
        return code
    }
}

/// Which message handles are alive: a message used after its call or job was freed is an
/// error (FERRY_EINVAL), not a use after free.
enum LiveMessages {
    private static let live = Mutex<Set<UInt>>([])
    static func add(_ p: UnsafeRawPointer) { let k = UInt(bitPattern: p); live.withLock { _ = $0.insert(k) } }
    static func remove(_ p: UnsafeRawPointer) { let k = UInt(bitPattern: p); live.withLock { _ = $0.remove(k) } }
    static func contains(_ p: UnsafeRawPointer) -> Bool { let k = UInt(bitPattern: p); return live.withLock { $0.contains(k) } }
}

func invalid(_ what: String) -> FerryError { FerryError(.invalidArgument, what) }

/// Moves a Swift object into a handle (+1).
func retain<T: AnyObject>(_ object: T) -> OpaquePointer { OpaquePointer(Unmanaged.passRetained(object).toOpaque()) }

/// Borrows the object behind a handle, or throws for NULL (and for a message that is gone).
func borrow<T: AnyObject>(_ handle: OpaquePointer?, _ type: T.Type, _ name: String) throws -> T {
    guard let h = handle else { throw invalid("\(name) is NULL") }
    if T.self == MessageHandle.self, !LiveMessages.contains(UnsafeRawPointer(h)) {
        throw invalid("this message is no longer valid: the call or job it came from was freed (or answered)")
    }
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(h)).takeUnretainedValue()
}

/// Ends a handle (-1).
func release<T: AnyObject>(_ handle: OpaquePointer?, _ type: T.Type) {
    guard let h = handle else { return }
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(h)).release()
}

/// Converts a required C string; invalid UTF-8 is an error, never a replacement character.
func string(_ p: UnsafePointer<CChar>?, _ name: String) throws -> String {
    guard let p else { throw invalid("\(name) is NULL") }
    guard let s = String(validatingCString: p) else { throw invalid("\(name) is not valid UTF-8") }
    return s
}

/// Converts ndim + shape into [Int].
func shapeArray(_ ndim: Int32, _ shape: UnsafePointer<Int64>?) throws -> [Int] {
    guard ndim >= 0 && ndim <= FERRY_MAX_DIMS else { throw invalid("ndim \(ndim) outside 0...\(FERRY_MAX_DIMS)") }
    if ndim == 0 { return [] }
    guard let shape else { throw invalid("shape is NULL with ndim \(ndim)") }
    return try (0..<Int(ndim)).map {
        guard shape[$0] >= 0 else { throw invalid("shape[\($0)] is negative (\(shape[$0]))") }
        return Int(shape[$0])
    }
}

func dtype(_ code: Int32) throws -> DType {
    guard code > 0 && code < 256, let d = DType(rawValue: UInt8(code)) else { throw invalid("unknown dtype code \(code)") }
    return d
}

/// Applies a `ferry_options` over the URL's settings.
func endpointURL(_ url: String, _ opts: UnsafePointer<ferry_options>?) throws -> String {
    guard let o = opts?.pointee else { return url }
    guard o.struct_size >= MemoryLayout<Int>.size else { throw invalid("ferry_options.struct_size not set (use ferry_options_init)") }
    // Only read fields the caller's struct has.
    func has(_ offset: Int, _ size: Int) -> Bool { o.struct_size >= offset + size }
    var extra: [String] = []
    if has(MemoryLayout<ferry_options>.offset(of: \.slots)!, 4), o.slots != 0 { extra.append("slots=\(o.slots)") }
    if has(MemoryLayout<ferry_options>.offset(of: \.slot_size)!, 8), o.slot_size != 0 { extra.append("slot_size=\(o.slot_size)") }
    if has(MemoryLayout<ferry_options>.offset(of: \.wait)!, 4), o.wait != 0 {
        switch o.wait {
        case FERRY_WAIT_SPIN: extra.append("wait=spin")
        case FERRY_WAIT_FUTEX: extra.append("wait=futex")
        case FERRY_WAIT_SPIN_FUTEX: extra.append("wait=hybrid")
        default: throw invalid("unknown wait strategy \(o.wait)")
        }
    }
    if has(MemoryLayout<ferry_options>.offset(of: \.spin_us)!, 8), o.spin_us > 0 { extra.append("spin_us=\(o.spin_us)") }
    if has(MemoryLayout<ferry_options>.offset(of: \.timeout_ms)!, 8), o.timeout_ms > 0 { extra.append("timeout_ms=\(o.timeout_ms)") }
    if extra.isEmpty { return url }
    return url + (url.contains("?") ? "&" : "?") + extra.joined(separator: "&")
}

/// A C timeout: negative means the channel's default; past 30 days is an error (a unit mistake).
func timeout(_ ms: Int64) throws -> Duration? {
    if ms < 0 { return nil }
    guard UInt64(ms) <= Endpoint.maxTimeoutMillis else {
        throw invalid("timeout_ms \(ms) exceeds \(Endpoint.maxTimeoutMillis) (30 days)")
    }
    return .milliseconds(ms)
}

// MARK: handle classes

final class ClientHandle: ErrorHolder {
    let client: Client
    /// The text `ferry_client_server_info` hands out (valid until its next call).
    var info: [CChar] = [0]
    init(_ c: Client) { client = c }
}
final class WorkerHandle: ErrorHolder { let worker: Worker; init(_ w: Worker) { worker = w } }

/// A message view and whatever keeps its bytes alive.
final class MessageHandle {
    let view: MessageView
    let owner: AnyObject?
    /// The parsed table, once asked for (ferry_message_table and friends).
    var tableCache: TableCache?
    init(_ v: MessageView, owner: AnyObject?) {
        view = v
        self.owner = owner
        LiveMessages.add(UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque()))
    }
    deinit { LiveMessages.remove(UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque())) }
}

/// Where a writer writes: a call's slot, a job's slot or an encoder's buffer.
final class WriterHandle {
    enum Target { case call(PendingCall), job(Job), encoder(EncoderHandle), loan(FrameLoan) }
    let target: Target
    init(_ t: Target) { target = t }
    /// Runs `body` on the writer; writing a call already sent (the worker may be reading
    /// it) or a job already answered is an error.
    func mutate<R>(_ body: (inout MessageWriter) throws -> R) throws -> R {
        switch target {
        case .call(let c):
            guard !c.isSent, c.isOpen else { throw invalid("the call was already sent (or closed): its request can no longer be written") }
            return try body(&c.writer)
        case .job(let j):
            guard !j.isAnswered else { throw invalid("the job was already answered: its reply can no longer be written") }
            return try body(&j.writer)
        case .encoder(let e): return try body(&e.writer)
        case .loan(let p):
            guard p.writer != nil else { throw invalid("no frame is loaned (or it was published): call ferry_publisher_loan first") }
            return try body(&p.writer!)
        }
    }
}

final class CallHandle: ErrorHolder {
    let call: PendingCall
    var reply: MessageHandle?
    lazy var writer = WriterHandle(.call(call))
    init(_ c: PendingCall) { call = c }

    /// Holds `view` as the call's reply (a borrowed handle, valid until the call is freed).
    func keep(_ view: MessageView) -> OpaquePointer {
        let m = MessageHandle(view, owner: call)
        reply = m
        return OpaquePointer(Unmanaged.passUnretained(m).toOpaque())
    }
}

final class JobHandle {
    let job: Job
    /// The validated request (computed once); its C handle is made only when asked for.
    var view: MessageView?
    var request: MessageHandle?
    lazy var writer = WriterHandle(.job(job))
    init(_ j: Job) { job = j }
}

final class EncoderHandle {
    let buffer: UnsafeMutableRawBufferPointer
    var writer: MessageWriter
    var length = 0
    lazy var writerHandle = WriterHandle(.encoder(self))
    init(capacity: Int) {
        buffer = .allocate(byteCount: max(capacity, MessageLayout.headerSize), alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        writer = MessageWriter(base: buffer.baseAddress!, capacity: buffer.count, limitHint: "raise the encoder capacity")
    }
    deinit { buffer.deallocate() }
}

/// The writer of a publisher's loaned frame (nil when none is loaned); its own object so
/// the writer handle does not keep the publisher handle alive.
final class FrameLoan { var writer: MessageWriter? }

final class PublisherHandle: ErrorHolder {
    let publisher: Publisher
    let loan = FrameLoan()
    lazy var writerHandle = WriterHandle(.loan(loan))
    var writer: MessageWriter? {
        get { loan.writer }
        set { loan.writer = newValue }
    }
    init(_ p: Publisher) { publisher = p }
}

final class SubscriberHandle: ErrorHolder {
    let subscriber: Subscriber
    init(_ s: Subscriber) { subscriber = s }
}

final class FrameHandle {
    let frame: StreamFrame
    lazy var message = MessageHandle(frame.message, owner: frame)
    init(_ f: StreamFrame) { frame = f }
}
