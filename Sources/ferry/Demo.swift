import ArgumentParser
import FerryCore
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
    @Option(name: .customLong("client-cpu"), help: "CPU for the client (-1: no pinning).")
    var clientCPU: Int = 0
    @Option(name: .customLong("worker-cpus"), help: "CPUs for workers, comma-separated (none: no pinning).")
    var workerCPUs: String = "1"

    func run() throws {
        let stop = StopSignal()
        let cacheDir = cache ?? (ProcessInfo.processInfo.environment["FERRY_CACHE"]
            ?? (NSHomeDirectory() + "/.cache/ferry"))
        print("ferry demo — nine-digit recognition over shared memory")
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

        let url = "shm://ferry-demo-\(getpid())?slots=8&slot_size=1M"
        let holder = try Worker(url)
        defer { holder.close() }
        let cpus = workerCPUs.split(separator: ",").compactMap { Int($0) }
        var logger = makeLogger("ferry.demo")
        logger.logLevel = .warning  // the demo prints its own story
        let sup = Supervisor(model: "ferry.models.digits", url: url, count: workers, cpus: cpus, logger: logger)
        try sup.start()
        defer { sup.stop() }
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
        print("  \(workers) Python worker(s) ready on \(url.split(separator: "?")[0]); sending \(batches) grids of 9 digits")

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
