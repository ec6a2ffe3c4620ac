import ArgumentParser
import FerryCore
import Foundation
import Histogram

/// Draws a one-line progress bar on standard error (only when it is a terminal or forced).
struct Progress {
    let total: Int
    let label: String
    var last: UInt64 = 0
    let enabled = isatty(2) != 0 || ProcessInfo.processInfo.environment["FERRY_PROGRESS"] != nil

    init(total: Int, label: String) { self.total = max(total, 1); self.label = label }

    mutating func update(_ done: Int, _ suffix: String = "", force: Bool = false) {
        guard enabled else { return }
        let now = System.nowNanos()
        guard force || now - last > 100_000_000 else { return }
        last = now
        let width = 30
        let filled = min(width, done * width / total)
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(done)/\(total) \(suffix)   ".utf8))
    }

    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}

/// CPU seconds (user + system) used so far by process `pid`.
func cpuSeconds(pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After "pid (comm)": state is field 0, utime field 11, stime field 12.
    guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure round-trip latency and throughput to a Python worker.",
        discussion: """
        Without --url it starts its own channel and Python workers (model ferry.models.bench,
        which answers with --reply-bytes bytes or echoes with --reply-bytes -1), pins the
        client to --client-cpu and workers to --worker-cpus, and stops them afterwards.
        """)

    @Option(help: "Measure an already served channel instead of starting one.")
    var url: String?
    @Option(help: "Payload shape, e.g. 9x28x28 or 1080x1920x3.")
    var shape: String = "9x28x28"
    @Option(help: "Payload dtype (numpy name).")
    var dtype: String = "uint8"
    @Option(name: .customLong("reply-bytes"), help: "Reply size in bytes for the built-in worker; -1 echoes the payload.")
    var replyBytes: Int = 16
    @Option(help: "Measured calls per client.")
    var count: Int = 20_000
    @Option(help: "Unmeasured calls per client first.")
    var warmup: Int = 2_000
    @Option(help: "Client threads, each with its own connection.")
    var clients: Int = 1
    @Option(help: "Worker processes started (without --url).")
    var workers: Int = 1
    @Option(help: "Requests in flight per client.")
    var inflight: Int = 1
    @Option(name: .customLong("client-cpu"), parsing: .unconditional, help: "CPU for client threads (-1: no pinning).")
    var clientCPU: Int = 0
    @Option(name: .customLong("worker-cpus"), help: "CPUs for workers, comma-separated (none: no pinning).")
    var workerCPUs: String = "1"
    @Option(name: .customLong("idle-seconds"), help: "Afterwards, measure an idle worker's CPU use over this many seconds.")
    var idleSeconds: Double = 0
    @Option(help: "Model for the started workers (a Python module or file).")
    var model: String = "ferry.models.bench"
    @Flag(name: .customLong("swift-worker"), help: "Serve with Swift worker threads in this process instead of Python processes (the floor without Python).")
    var swiftWorker = false
    @Option(name: .customLong("max-batch"), help: "Dynamic batching in the started workers: merge up to this many requests (1: off).")
    var maxBatch: Int = 1
    @Option(name: .customLong("max-delay"), help: "With --max-batch: microseconds to wait for more requests.")
    var maxDelay: Int = 500
    @Flag(help: """
        Check every reply: each call stamps its number into the payload's first 8 bytes and the \
        model must answer [checksum, byte count] as two uint64 (bench/checksum_model.py: the \
        little-endian uint64 words summed, then the remaining bytes, modulo 2^64). Wrong replies are counted.
        """)
    var check = false
    @Flag(help: "Print one JSON object instead of a table.")
    var json = false
    @OptionGroup var channel: ChannelOptions

    func run() throws {
        guard let dt = DType(name: dtype), dt.itemSize != nil else { throw ValidationError("unsupported --dtype \(dtype)") }
        let dims = try shape.split(separator: "x").map { (s: Substring) -> Int in
            guard let v = Int(s), v >= 0 else { throw ValidationError("bad --shape \(shape)") }
            return v
        }
        guard clients >= 1, inflight >= 1, count >= 1, workers >= 1 else { throw ValidationError("counts must be positive") }
        let payloadBytes = dims.reduce(1, *) * dt.itemSize!
        let stop = StopSignal()
        var holder: Worker? = nil
        var swiftWorkers: [Worker] = []
        let swiftWorkersDone = DispatchSemaphore(value: 0)
        var sup: Supervisor? = nil
        let target: String
        let cpus = workerCPUs.split(separator: ",").compactMap { Int($0) }
        if let url {
            target = url
        } else {
            var ch = channel
            let needed = 2 * MessageLayout.align(payloadBytes + 4096, 4096) + max(replyBytes, 0) + 8192
            if (try Endpoint.parseSize(ch.slotSize)) < needed { ch.slotSize = "\(needed / 4096 * 4096 + 4096)" }
            ch.slots = max(ch.slots, clients * inflight)
            target = try ch.url(name: "bench-\(getpid())")
            setenv("FERRY_BENCH_REPLY", String(replyBytes), 1)
            // One model per channel: Python workers and the holder carry the model's identity.
            let served = swiftWorker ? (url: target, workerArgs: []) : try Python.served(url: target, model: model)
            holder = try Worker(served.url, holder: !swiftWorker)
            if swiftWorker {
                for i in 0..<workers {
                    let cpu = cpus.isEmpty ? nil : cpus[i % cpus.count]
                    let reply = replyBytes
                    let w = try Worker(target)
                    swiftWorkers.append(w)
                    nonisolated(unsafe) let worker = w
                    let done = swiftWorkersDone
                    Thread.detachNewThread {
                        defer { done.signal() }
                        if let cpu { try? System.pin(cpu: cpu) }
                        let small = [UInt8](repeating: 0, count: max(reply, 0))
                        try? worker.serve { req, writer in
                            if reply < 0 {
                                for t in req.tensors {
                                    let dst = try writer.addTensor(name: t.name, dtype: t.dtype, shape: t.shape)
                                    if !t.data.isEmpty { dst.copyMemory(from: t.data) }
                                }
                            } else {
                                try small.withUnsafeBytes { try writer.addTensor(name: "output", dtype: .uint8, shape: [small.count], bytes: $0) }
                            }
                        }
                    }
                }
            } else {
                let batching = (maxBatch > 1 ? ["--max-batch", "\(maxBatch)", "--max-delay-us", "\(maxDelay)"] : []) + served.workerArgs
                let s = Supervisor(model: model, url: target, count: workers, cpus: cpus, extra: batching, logger: makeLogger("ferry.bench"),
                                   holder: holder)
                sup = s
                do {
                    try s.start()
                    try s.waitReady(stop: stop, timeout: 300)
                } catch {
                    s.stop()
                    holder?.close()
                    throw error
                }
            }
        }
        defer {
            sup?.stop()
            // Stop in-process workers before closing, so the last one out removes the segment.
            for w in swiftWorkers { w.stop() }
            for _ in swiftWorkers { swiftWorkersDone.wait() }
            for w in swiftWorkers { w.close() }
            holder?.close()
        }
        // Random payload, the same for every call.
        var payload = [UInt8](repeating: 0, count: payloadBytes)
        var rng = SystemRandomNumberGenerator()
        for i in stride(from: 0, to: payload.count, by: 8) { payload[i] = UInt8.random(in: 0...255, using: &rng) }
        let shared = payload
        let check = self.check
        if check && payloadBytes < 8 { throw ValidationError("--check needs a payload of at least 8 bytes") }
        // The checksum with the stamp word zeroed: a call stamped k must come back as base &+ k.
        let checkBase: UInt64 = check ? benchChecksum(payload, skippingFirstWord: true) : 0

        // Wait until a worker answers, so start-up is not measured.
        do {
            let probe = try connectWhenServed(target)
            defer { probe.close() }
            // The probe is the benchmark's own payload: any model that can be measured answers it.
            _ = try probe.call([("input", try Tensor(dtype: dt, shape: dims, bytes: shared))], timeout: .seconds(120))
        }
        // CPU burnt by this process (clients) and by the workers during the run.
        let workerPids = sup?.pids ?? []
        let cpuStartSelf = cpuSeconds(pid: getpid()) ?? 0
        let cpuStartWorkers = workerPids.compactMap { cpuSeconds(pid: $0) }.reduce(0, +)
        let results = ResultBox(clients: clients)
        let total = (warmup + count) * clients
        let start = Date()
        var threads: [Thread] = []
        for c in 0..<clients {
            let t = Thread { [self] in
                do {
                    if clientCPU >= 0 { try System.pin(cpu: clientCPU) }
                    let h = try runClient(url: target, dtype: dt, dims: dims, payload: shared, index: c, results: results, stop: stop,
                                          checkBase: check ? checkBase : nil)
                    results.set(c, h)
                } catch {
                    results.fail(error)
                }
            }
            t.start()
            threads.append(t)
        }
        var progress = Progress(total: total, label: "bench")
        while !results.finished {
            Thread.sleep(forTimeInterval: 0.05)
            progress.update(results.done)
        }
        progress.update(total, force: true)
        progress.finish()
        let wall = Date().timeIntervalSince(start)
        let clientCPUUsed = (cpuSeconds(pid: getpid()) ?? 0) - cpuStartSelf
        let workerCPU = swiftWorker ? 0 : workerPids.compactMap { cpuSeconds(pid: $0) }.reduce(0, +) - cpuStartWorkers
        if let e = results.error { throw e }
        var hist = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
        for h in results.histograms { if let h { hist.add(h) } }
        let measuredWall = results.measuredSeconds
        let calls = Double(count * clients)
        let throughput = calls / max(measuredWall, 1e-9)
        var idle: Double? = nil
        if idleSeconds > 0, let pid = sup?.pids.first, let a = cpuSeconds(pid: pid) {
            Thread.sleep(forTimeInterval: idleSeconds)
            if let b = cpuSeconds(pid: pid) { idle = (b - a) / idleSeconds * 100 }
        }
        let us = { (p: Double) in Double(hist.valueAtPercentile(p)) / 1000 }
        let report: [String: Any] = [
            "p50_us": us(50), "p99_us": us(99), "p999_us": us(99.9), "mean_us": hist.mean / 1000,
            "max_us": Double(hist.max) / 1000,
            "throughput_per_s": throughput, "mb_per_s": throughput * Double(payloadBytes) / 1e6,
            "wall_s": wall, "idle_worker_cpu_percent": idle as Any, "wrong": results.wrong, "checked": check,
            "client_cpu_s": clientCPUUsed, "worker_cpu_s": workerCPU,
            "cpu_us_per_call": (clientCPUUsed + workerCPU) / Double(max(total, 1)) * 1e6,
            "settings": [
                "url": target, "shape": dims, "dtype": dt.name, "payload_bytes": payloadBytes, "reply_bytes": replyBytes,
                "count": count, "warmup": warmup, "clients": clients, "workers": url == nil ? workers : -1,
                "inflight": inflight, "wait": channel.wait, "spin_us": channel.spinMicros,
                "client_cpu": clientCPU, "worker_cpus": cpus, "model": url == nil ? model : "external",
            ] as [String: Any],
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: report.filter { !($0.value is NSNull) && "\($0.value)" != "nil" }, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("ferry bench: \(dt.name) \(dims) (\(payloadBytes) bytes) → reply \(replyBytes) bytes, \(clients) client(s) × \(inflight) in flight, \(url == nil ? "\(workers) worker(s)" : target), wait \(channel.wait)")
            print(String(format: "  latency  p50 %8.1f µs   p99 %8.1f µs   p99.9 %8.1f µs   mean %8.1f µs", us(50), us(99), us(99.9), hist.mean / 1000))
            print(String(format: "  rate     %10.0f calls/s   %10.1f MB/s", throughput, throughput * Double(payloadBytes) / 1e6))
            if let idle { print(String(format: "  idle worker CPU %.2f %% over %.1f s", idle, idleSeconds)) }
            if check { print("  replies  \(results.wrong) wrong of \(total) checked") }
        }
    }

    func runClient(url: String, dtype: DType, dims: [Int], payload: [UInt8], index: Int, results: ResultBox, stop: StopSignal,
                   checkBase: UInt64?) throws -> Histogram<UInt64> {
        let client = try Client(url)
        defer { client.close() }
        var hist = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
        var pending: [(PendingCall, UInt64, UInt64)] = []
        let n = warmup + count
        var issued = 0, completed = 0
        // Stamps differ across clients too: a reply meant for another client is caught.
        let stampBase = UInt64(index) << 40
        func issue() throws {
            // The clock covers the whole call: claiming a slot, writing the payload, the round trip.
            let t0 = System.nowNanos()
            let call = try client.begin(timeout: .seconds(60))
            let buf = try call.writer.addTensor(name: "input", dtype: dtype, shape: dims)
            payload.withUnsafeBytes { if !$0.isEmpty { buf.copyMemory(from: $0) } }
            let stamp = stampBase &+ UInt64(issued)
            if checkBase != nil { buf.storeBytes(of: stamp.littleEndian, as: UInt64.self) }
            try call.send()
            pending.append((call, t0, stamp))
            issued += 1
        }
        while completed < n {
            while issued < n && pending.count < inflight { try issue() }
            let (call, t0, stamp) = pending.removeFirst()
            let reply = try call.wait()
            if let base = checkBase {
                // Read after the clock would flatter nobody: reading 16 bytes is part of the call.
                var ok = false
                if reply.tensorCount == 1 {
                    let t = reply.tensor(at: 0)
                    if t.dtype == .uint64 && t.data.count == 16 {
                        ok = UInt64(littleEndian: t.data.loadUnaligned(as: UInt64.self)) == base &+ stamp
                            && UInt64(littleEndian: t.data.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) == UInt64(payload.count)
                    }
                }
                if !ok { results.wrongReply() }
            } else {
                _ = reply.tensorCount
            }
            let t1 = System.nowNanos()
            call.close()
            if completed == warmup { results.markStart(index) }
            if completed >= warmup { _ = hist.record(t1 - t0) }
            completed += 1
            results.tick()
            if stop.requested { throw FerryError(.closed, "interrupted") }
        }
        results.markEnd(index)
        return hist
    }
}

/// Collects per-client results across threads.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var histograms: [Histogram<UInt64>?]
    private var starts: [Date?], ends: [Date?]
    private var remaining: Int
    private var _done = 0
    private(set) var error: Error?

    init(clients: Int) {
        histograms = Array(repeating: nil, count: clients)
        starts = Array(repeating: nil, count: clients)
        ends = Array(repeating: nil, count: clients)
        remaining = clients
    }
    func set(_ i: Int, _ h: Histogram<UInt64>) { lock.lock(); histograms[i] = h; remaining -= 1; lock.unlock() }
    func fail(_ e: Error) { lock.lock(); error = error ?? e; remaining -= 1; lock.unlock() }
    func tick() { lock.lock(); _done += 1; lock.unlock() }
    private var _wrong = 0
    func wrongReply() { lock.lock(); _wrong += 1; lock.unlock() }
    var wrong: Int { lock.lock(); defer { lock.unlock() }; return _wrong }
    func markStart(_ i: Int) { lock.lock(); starts[i] = Date(); lock.unlock() }
    func markEnd(_ i: Int) { lock.lock(); ends[i] = Date(); lock.unlock() }
    var done: Int { lock.lock(); defer { lock.unlock() }; return _done }
    var finished: Bool { lock.lock(); defer { lock.unlock() }; return remaining == 0 }
    /// Seconds from the first client's first measured call to the last client's end.
    var measuredSeconds: Double {
        lock.lock(); defer { lock.unlock() }
        guard let s = starts.compactMap({ $0 }).min(), let e = ends.compactMap({ $0 }).max() else { return 0 }
        return e.timeIntervalSince(s)
    }
}

/// Connects to `url`, retrying while nothing serves it yet (workers starting), up to 60 s.
func connectWhenServed(_ url: String) throws -> Client {
    let deadline = Date().addingTimeInterval(60)
    while true {
        do { return try Client(url) } catch let e as FerryError where e.code == .noServer && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }
}

/// bench/checksum_model.py's checksum: the little-endian uint64 words summed, then each
/// remaining byte, modulo 2^64 (optionally with the first word, the call's stamp, as zero).
func benchChecksum(_ bytes: [UInt8], skippingFirstWord: Bool) -> UInt64 {
    bytes.withUnsafeBytes { buf in
        var sum: UInt64 = 0
        let words = buf.count / 8
        for i in (skippingFirstWord ? 1 : 0)..<max(words, skippingFirstWord ? 1 : 0) {
            sum &+= UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
        }
        for i in (8 * words)..<buf.count { sum &+= UInt64(buf[i]) }
        return sum
    }
}
