import Atomics

/// Serves a channel: creates it (or joins the processes already serving it, sharing the
/// load) and answers requests. Not thread-safe; run one worker per thread or process.
///
///     let worker = try Worker("shm://digits")
///     try worker.serve { request in Message([("labels", Tensor(labels))]) }
public final class Worker {
    /// The parsed URL.
    public let endpoint: Endpoint
    let channel: ShmChannel
    private let stopFlag = ManagedAtomic<Bool>(false)

    /// Creates, joins or reclaims the channel at `url`. A `holder` keeps the channel open for
    /// worker processes it runs (a supervisor) and takes no requests itself: it is not
    /// counted as a worker, and while only holders serve the channel clients get `.noServer`
    /// at once (with the holder's `setStatus` text) instead of waiting out their deadline.
    public init(_ url: String, holder: Bool = false) throws {
        endpoint = try Endpoint(url)
        guard endpoint.scheme == "shm" else {
            throw FerryError(.invalidArgument, "a worker serves a shm:// channel on its own host; remote clients reach it through a gateway (ferry serve MODEL --name NAME --listen tcp://HOST:PORT)")
        }
        channel = ShmChannel(try ShmSegment.serve(channel: endpoint.name, shared: endpoint.shared, slots: endpoint.slots,
                                                  slotSize: endpoint.slotSize, model: endpoint.model ?? "", holder: holder))
        // A worker that joins a running channel gets its geometry; asking for another one
        // explicitly is an error, not a silent surprise.
        let g = channel.segment.geometry
        let askedSize = MessageLayout.align(max(endpoint.slotSize, SegmentLayout.page), SegmentLayout.page)
        if (endpoint.given.contains("slots") && endpoint.slots != g.slots) || (endpoint.given.contains("slot_size") && askedSize != g.slotSize) {
            channel.segment.leave()
            throw FerryError(.invalidArgument, "channel shm://\(endpoint.name) is already served with slots=\(g.slots) slot_size=\(g.slotSize); this worker asked for slots=\(endpoint.slots) slot_size=\(askedSize) (leave them out to join as it is)")
        }
    }

    /// Removes the segment of `url`'s channel if its servers all died (a crash leaves it behind;
    /// the next server would reclaim it anyway). Returns true when one was removed.
    public static func reclaim(_ url: String) throws -> Bool {
        let e = try Endpoint(url)
        return try ShmSegment.reclaimIfStale(channel: e.name, shared: e.shared)
    }

    /// Processes that have been working on one request for longer than `limit` (a hung
    /// model): their pids and for how long. A supervisor kills and replaces them.
    public func hungWorkers(limit: Duration) -> [(pid: Int32, seconds: Double)] {
        channel.hungWorkers(limitNanos: limit.clampedNanoseconds).map { (Int32(bitPattern: $0.pid), $0.seconds) }
    }

    /// The channel's counters and slots now (see `ChannelStats`).
    public func stats() -> ChannelStats { channel.stats() }

    /// Counts a restarted worker process (a supervisor calls it; `ferry stats` shows it).
    public func countRestart() {
        channel.segment.atomic64(SegmentLayout.oRestarts).wrappingIncrement(ordering: .relaxed)
    }

    /// True while some live process takes requests on the channel (a holder does not).
    public var hasWorker: Bool { channel.segment.hasWorker }

    /// How many workers (serving processes) ever attached to the channel: one more each time
    /// a worker's model loaded, however briefly it lived.
    public var workersJoined: UInt64 { channel.segment.atomic64(SegmentLayout.oWorkersJoined).load(ordering: .acquiring) }

    /// Says why no worker serves the channel (a holder: e.g. the model's load error); clients
    /// add it to their `.noServer` error. "" clears it.
    public func setStatus(_ text: String) { channel.segment.setStatus(text) }

    /// What the holder last said (`setStatus`), "" when nothing.
    public var status: String { channel.segment.status }

    /// Slots and bytes per slot of the channel (fixed by its creator).
    public var geometry: SegmentLayout.Geometry { channel.segment.geometry }


    /// Where slot `index` is mapped in this process now (it moves when a kept request is
    /// preserved; see `Job.preserveRequest`).
    public func slotData(_ index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: channel.data(index), count: geometry.slotSize)
    }

    /// Gives back the memory of a range returned by `Job.preserveRequest` once nothing
    /// points into it. False when it is not such a range (or was given back already).
    @discardableResult
    public static func releasePreserved(_ start: UnsafeRawPointer) -> Bool { PreservedPages.release(start) }

    /// Requests on their way to this channel's workers: slots clients are writing, and
    /// requests published but not taken yet.
    public func pending() -> (writing: Int, queued: Int) { channel.pending() }

    /// Waits up to `timeout` for the next request; nil when none came. Throws `.closed`
    /// when the channel was closed.
    public func receive(timeout: Duration? = nil) throws -> Job? {
        let ns = timeout?.clampedNanoseconds ?? endpoint.timeoutNanos
        guard let (slot, gen, length) = try channel.take(deadline: deadline(after: ns), strategy: endpoint.wait) else { return nil }
        // The length is the client's claim: validated against the slot before any use.
        return Job(channel: channel, slot: slot, gen: gen, requestLength: length <= UInt64(channel.slotSize) ? Int(length) : -1)
    }

    /// Answers requests with `handler` until `stop()` or the channel closes. The handler
    /// reads the request in place and writes the reply in place; a thrown error becomes an
    /// error reply to the client.
    public func serve(_ handler: (MessageView, inout MessageWriter) throws -> Void) throws {
        while !stopFlag.load(ordering: .relaxed) {
            let job: Job?
            do { job = try receive(timeout: .milliseconds(200)) } catch let e as FerryError where e.code == .closed { return }
            guard let job else { continue }
            job.run(handler)
        }
    }

    /// Answers requests with a function of owned messages until `stop()` or close.
    public func serve(_ fn: (Message) throws -> Message) throws {
        try serve { request, writer in
            let reply = try fn(Message(request))
            _ = try reply.write(to: &writer)
        }
    }

    /// Asks `serve` to return after the current request (safe from another thread).
    public func stop() { stopFlag.store(true, ordering: .relaxed) }

    /// Stops serving; the last serving process closes and removes the channel.
    public func close() { channel.segment.leave() }
}

/// A request taken by a worker, and the writer for its reply in the same slot.
public final class Job {
    let channel: ShmChannel
    let slot: Int
    let gen: UInt32
    /// -1 when the client's claimed length was past the slot (the request is malformed).
    let requestLength: Int
    let replyOffset: Int
    private var finished = false
    /// Writes the reply in place (after the request, page-aligned).
    public var writer: MessageWriter

    init(channel: ShmChannel, slot: Int, gen: UInt32, requestLength: Int) {
        self.channel = channel
        self.slot = slot
        self.gen = gen
        self.requestLength = requestLength
        replyOffset = channel.replyOffset(requestLength: max(requestLength, 0))
        writer = MessageWriter(base: channel.data(slot) + replyOffset, capacity: channel.slotSize - replyOffset,
                               limitHint: "the reply does not fit after the request; raise the channel's slot_size (shm://\(channel.segment.channel)?slot_size=… or ferry serve --slot-size)")
    }

    /// The request, validated. Throws `.malformed` for a bad message.
    public func request() throws -> MessageView {
        guard requestLength >= 0 else {
            throw FerryError(.malformed, "malformed message: the request length is past the \(channel.slotSize)-byte slot")
        }
        let view = try MessageView(validating: UnsafeRawBufferPointer(start: channel.data(slot), count: requestLength), owner: self)
        if channel.segment.isBroken { throw channel.segment.brokenError() }
        return view
    }

    /// The slot this job's request is in.
    public var slotIndex: Int { slot }

    /// Keeps the request's bytes for views that outlive the job (a model that stores its
    /// input): call before replying. The pages stay, privately, at their addresses; the slot
    /// is mapped afresh for later requests. Returns the kept range: give it back with
    /// `Worker.releasePreserved` when the last view is gone.
    public func preserveRequest() throws -> UnsafeRawBufferPointer {
        guard !finished else { throw FerryError(.invalidArgument, "preserve the request before replying") }
        return UnsafeRawBufferPointer(try channel.preserve(slot: slot, length: max(requestLength, 0)))
    }

    /// True once the job was answered (replied or failed).
    public var isAnswered: Bool { finished }

    /// Sends the reply written with `writer`.
    public func reply() throws {
        guard !finished else { throw FerryError(.invalidArgument, "job already answered") }
        _ = try writer.finish()
        finished = true
        // A reply written into pages the segment lost reaches nobody: say so.
        if channel.segment.isBroken { throw channel.segment.brokenError() }
        channel.complete(slot: slot, gen: gen)
    }

    /// Sends an error reply carrying `error`'s code and message.
    public func fail(_ error: FerryError) {
        guard !finished else { return }
        finished = true
        var w = MessageWriter(base: channel.data(slot) + replyOffset, capacity: channel.slotSize - replyOffset)
        w.setMetadata("error", Job.bounded(error.message, 4000))
        if let t = error.remoteType { w.setMetadata("error_type", Job.bounded(t, 200)) }
        if let d = error.detail { w.setMetadata("error_detail", Job.bounded(d, Job.maxDetail, keepTail: true)) }
        if (try? w.finish(status: error.code.rawValue)) == nil {
            // No room for the detail (the request filled the slot): the message alone.
            w = MessageWriter(base: channel.data(slot) + replyOffset, capacity: channel.slotSize - replyOffset)
            w.setMetadata("error", Job.bounded(error.message, 3000))
        }
        if (try? w.finish(status: error.code.rawValue)) == nil {
            // Cannot happen while a page stays free for the reply; still, never deliver garbage.
            var bare = MessageWriter(base: channel.data(slot) + replyOffset, capacity: channel.slotSize - replyOffset)
            _ = try? bare.finish(status: error.code.rawValue)
        }
        channel.complete(slot: slot, gen: gen, failed: true)
    }

    /// Most bytes of error detail (a traceback) an error reply carries: its tail is kept.
    public static let maxDetail = 16_384

    /// `text` cut to at most `limit` UTF-8 bytes on a character boundary (the tail, for
    /// tracebacks, whose end says most).
    static func bounded(_ text: String, _ limit: Int, keepTail: Bool = false) -> String {
        if text.utf8.count <= limit { return text }
        var scalars = String.UnicodeScalarView()
        var used = 4  // room for the ellipsis
        let source = keepTail ? Array(text.unicodeScalars.reversed()) : Array(text.unicodeScalars)
        for u in source {
            let n = String(u).utf8.count
            if used + n > limit { break }
            used += n
            scalars.append(u)
        }
        let kept = keepTail ? String(String.UnicodeScalarView(scalars.reversed())) : String(scalars)
        return keepTail ? "…" + kept : kept + "…"
    }

    /// Runs `handler` on this job and replies (or fails with the handler's error).
    public func run(_ handler: (MessageView, inout MessageWriter) throws -> Void) {
        do {
            let req = try request()
            try handler(req, &writer)
            try reply()
        } catch let e as FerryError {
            fail(e.code == .invalidArgument ? FerryError(.remote, e.message) : e)
        } catch {
            fail(FerryError(.remote, "\(error)"))
        }
    }

    deinit {
        if !finished { fail(FerryError(.remote, "the worker dropped the request without replying")) }
    }
}
