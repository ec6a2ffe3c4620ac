import ArgumentParser
import FerryCore
#if Network
import FerryRedis
#endif
import Foundation
import Histogram

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The RoboMaster scenario: a Swift client reads nine handwritten digits at a time with a Python model.",
        discussion: """
        Trains (once, then cached) a digit classifier on scikit-learn's bundled digits resized
        to 28×28 like MNIST, serves it with Python workers over shared memory (no server, no
        network), and sends 3×3 grids of digit images as the robot would.
        """)

    @Option(help: "Nine-digit batches to send.")
    var batches: Int = 3000
    @Option(help: "Python worker processes.")
    var workers: Int = 1
    @Option(help: "Model cache folder (default ~/.cache/ferry).")
    var cache: String?
    @Option(name: .customLong("client-cpu"), parsing: .unconditional, help: "CPU for the client (-1: no pinning).")
    var clientCPU: Int = 0
    @Option(name: .customLong("worker-cpus"), help: "CPUs for workers, comma-separated (none: no pinning).")
    var workerCPUs: String = "1"
    @Flag(help: "Distributed instead: start a local redis-server and --nodes `ferry serve --redis` nodes, and send the grids through redis:// (seeds 000 and 003).")
    var distributed = false
    @Option(help: "With --distributed: how many nodes.")
    var nodes: Int = 2

    func run() throws {
        let stop = StopSignal()
        let cacheDir = cache ?? (ProcessInfo.processInfo.environment["FERRY_CACHE"]
            ?? (NSHomeDirectory() + "/.cache/ferry"))
        print(distributed ? "ferry demo — nine-digit recognition through Redis Streams on several nodes"
                          : "ferry demo — nine-digit recognition over shared memory")
        print("  preparing the model (trained once, cached in \(cacheDir)) …")
        let out = try Python.run(["-m", "ferry.models.digits", "prepare", "--cache", cacheDir])
        let info = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any] ?? [:]
        guard let imagesPath = info["images"] as? String, let labelsPath = info["labels"] as? String else {
            throw FerryError(.remote, "model preparation printed no paths: \(out)")
        }
        let images = try NPY.load(imagesPath)
        let labels = try NPY.load(labelsPath).values(as: Int64.self)
        guard images.dtype == .uint8, images.shape.count == 3, images.shape[1] == 28, images.shape[2] == 28 else {
            throw FerryError(.malformed, "test images must be uint8 N×28×28, got \(images.dtype.name) \(images.shape)")
        }
        let n = images.shape[0]
        print("  model: \(info["model"] ?? "?") — \(info["train_size"] ?? "?") training images, \(n) held-out test images")

        var url = "shm://ferry-demo-\(getpid())?slots=8&slot_size=1M"
        var cluster: LocalCluster? = nil
        var sup: Supervisor? = nil
        var holder: Worker? = nil
        defer {
            sup?.stop()
            holder?.close()
            cluster?.stop()
        }
        if distributed {
            guard (1...16).contains(nodes) else { throw ValidationError("--nodes must be in 1...16") }
            print("  starting a local redis-server and \(nodes) nodes (ferry serve --redis) …")
            cluster = try LocalCluster(nodes: nodes, model: "ferry.models.digits", name: "digits", workers: workers)
            url = cluster!.url
        } else {
            let served = try Python.served(url: url, model: "ferry.models.digits")
            holder = try Worker(served.url, holder: true)
            let cpus = workerCPUs.split(separator: ",").compactMap { Int($0) }
            let logger = makeLogger("ferry.demo", level: .warning)  // the demo prints its own story
            sup = Supervisor(model: "ferry.models.digits", url: url, count: workers, cpus: cpus, extra: served.workerArgs, logger: logger,
                             holder: holder)
            try sup!.start()
            try sup!.waitReady(stop: stop, timeout: 120)
        }
        if clientCPU >= 0 { try System.pin(cpu: clientCPU) }
        let client = try Client(url)
        defer { client.close() }
        let frame = 9 * 28 * 28

        // First call waits for the worker to load the model.
        func classify(_ batch: Int, timeout: Duration) throws -> [Int64] {
            let first = (batch * 9) % (n - 8)
            return try client.withCall(timeout: timeout, write: { w in
                let dst = try w.addTensor(name: "digits", dtype: .uint8, shape: [9, 28, 28])
                images.bytes.withUnsafeBytes { src in
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(first * 784)..<(first * 784 + frame)]))
                }
            }, read: { reply in
                guard reply.tensorCount == 1 else { throw FerryError(.malformed, "expected one reply tensor") }
                return try reply.tensor(at: 0).values(as: Int64.self)
            })
        }
        _ = try classify(0, timeout: .seconds(120))
        if distributed {
            print("  \(nodes) nodes × \(workers) Python worker(s) ready behind \(url); sending \(batches) grids of 9 digits")
        } else {
            print("  \(workers) Python worker(s) ready on \(url.split(separator: "?")[0]); sending \(batches) grids of 9 digits")
        }

        var hist = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var correct = 0, seen = 0
        var progress = Progress(total: batches, label: "  digits")
        let start = System.nowNanos()
        for b in 0..<batches {
            if stop.requested { throw FerryError(.closed, "interrupted") }
            let t0 = System.nowNanos()
            let predicted = try classify(b, timeout: .seconds(10))
            _ = hist.record(System.nowNanos() - t0)
            let first = (b * 9) % (n - 8)
            for k in 0..<9 where predicted[k] == labels[first + k] { correct += 1 }
            seen += 9
            progress.update(b + 1, String(format: "accuracy %.1f%%", 100 * Double(correct) / Double(seen)))
        }
        progress.update(batches, String(format: "accuracy %.1f%%", 100 * Double(correct) / Double(seen)), force: true)
        progress.finish()
        let secs = Double(System.nowNanos() - start) / 1e9
        let p = { (q: Double) in Double(hist.valueAtPercentile(q)) / 1000 }
        print(String(format: "  accuracy   %.2f %% (%d of %d digits)", 100 * Double(correct) / Double(seen), correct, seen))
        print(String(format: "  latency    p50 %.1f µs   p99 %.1f µs  (per 9-digit grid, prediction included)", p(50), p(99)))
        print(String(format: "  throughput %.0f grids/s  (%.0f digits/s)", Double(batches) / secs, Double(seen) / secs))
        print("  the seed's Redis recipe took ~0.3 s per grid; the robot's budget is 1.5 s.")
    }
}

#if Network
/// A redis-server on a free loopback port and `ferry serve --redis` nodes, for the
/// distributed demo; all stopped by `stop()`.
final class LocalCluster {
    let redis: Process
    var nodes: [Process] = []
    let url: String
    let logDir: String

    init(nodes count: Int, model: String, name: String, workers: Int) throws {
        guard let server = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw FerryError(.noServer, "redis-server is not installed (make setup installs it)")
        }
        logDir = NSTemporaryDirectory() + "ferry-demo-\(getpid())"
        try FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true)
        var started: (Process, Int)? = nil
        for _ in 0..<20 where started == nil {
            let port = Int.random(in: 20_000..<60_000)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: server)
            p.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", logDir]
            let log = "\(logDir)/redis.log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            p.standardOutput = FileHandle(forWritingAtPath: log)
            p.standardError = p.standardOutput
            try p.run()
            let deadline = Date().addingTimeInterval(5)
            while p.isRunning && Date() < deadline {
                if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("Ready to accept") { started = (p, port); break }
                Thread.sleep(forTimeInterval: 0.02)
            }
            if started == nil { p.terminate(); p.waitUntilExit() }  // the port was taken: another
        }
        guard let (redis, port) = started else { throw FerryError(.system, "redis-server did not start (see \(logDir)/redis.log)") }
        self.redis = redis
        url = "redis://127.0.0.1:\(port)/\(name)"
        do {
            for i in 0..<count {
                let n = Process()
                n.executableURL = URL(fileURLWithPath: "/proc/self/exe")
                n.arguments = ["serve", model, "--redis", url, "--workers", "\(workers)"]
                let log = "\(logDir)/node-\(i).log"
                _ = FileManager.default.createFile(atPath: log, contents: nil)
                n.standardOutput = FileHandle(forWritingAtPath: log)
                n.standardError = n.standardOutput
                try n.run()
                nodes.append(n)
            }
            // Ready when every node announced itself.
            let c = try RedisConnection(host: "127.0.0.1", port: port, timeoutNanos: 2_000_000_000)
            let deadline = Date().addingTimeInterval(60)
            while try c.command(["ZCARD", .text(RedisKeys(name).nodes)]).value.integer < count {
                guard Date() < deadline, nodes.allSatisfy({ $0.isRunning }) else {
                    throw FerryError(.noServer, "the nodes did not start (logs in \(logDir))")
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        } catch {
            keepLogs = true
            stop()
            throw error
        }
    }

    /// Logs stay when starting failed (the error points at them).
    var keepLogs = false

    func stop() {
        for n in nodes where n.isRunning { n.terminate() }
        for n in nodes { n.waitUntilExit() }
        nodes = []
        if redis.isRunning { redis.terminate(); redis.waitUntilExit() }
        if !keepLogs { try? FileManager.default.removeItem(atPath: logDir) }
    }
}
#else
/// Without the Network trait there is no redis://: `--distributed` says so.
final class LocalCluster {
    let url = ""
    init(nodes count: Int, model: String, name: String, workers: Int) throws {
        throw withoutNetwork("ferry demo --distributed")
    }
    func stop() {}
}
#endif
