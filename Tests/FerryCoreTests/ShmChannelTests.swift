import Foundation
import XCTest
@testable import FerryCore

/// Where the repository is, for starting Python processes.
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

func uniqueName(_ tag: String) -> String { "swift-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" }

/// Starts a Python process with Ferry's package on its path; the caller stops it.
func startPython(_ args: [String], stdout: Pipe? = nil) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3"] + args
    var env = ProcessInfo.processInfo.environment
    env["PYTHONPATH"] = repoRoot + "/python"
    env["OPENBLAS_NUM_THREADS"] = "1"
    p.environment = env
    if let stdout { p.standardOutput = stdout }
    try p.run()
    return p
}

func stop(_ p: Process) {
    if p.isRunning { kill(p.processIdentifier, SIGCONT); p.terminate() }
    p.waitUntilExit()
}

/// Connects once something serves `url`, retrying for up to `seconds`.
func connect(_ url: String, seconds: Double = 20) throws -> Client {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        do { return try Client(url) } catch let e as FerryError where e.code == .noServer && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }
}

final class ShmChannelTests: XCTestCase {
    override func tearDown() {
        let left = (try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm"))?.filter { $0.hasPrefix("ferry.\(geteuid()).swift-") } ?? []
        for f in left { try? FileManager.default.removeItem(atPath: "/dev/shm/" + f) }
        XCTAssertEqual(left, [], "segments left behind")
    }

    /// A Swift worker on a thread of this process.
    func withSwiftWorker(_ url: String, _ handler: @escaping @Sendable (Message) throws -> Message,
                         _ body: (Worker) throws -> Void) throws {
        let worker = try Worker(url)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let w = worker
        Thread.detachNewThread {
            try? w.serve(handler)
            done.signal()
        }
        defer {
            worker.stop()
            done.wait()
            worker.close()
        }
        try body(worker)
    }

    func testSwiftClientAndSwiftWorkerInProcess() throws {
        let url = "shm://\(uniqueName("inproc"))?slots=4&slot_size=64K"
        try withSwiftWorker(url, { req in
            var out = Message()
            out["sum"] = Tensor(scalar: try req["x"]!.values(as: Int64.self).reduce(0, +))
            return out
        }) { _ in
            let client = try Client(url)
            defer { client.close() }
            for i in 0..<200 {
                let r = try client.call([("x", Tensor([Int64](repeating: Int64(i), count: 10)))])
                XCTAssertEqual(try r["sum"]!.values(as: Int64.self), [Int64(10 * i)])
            }
            // Several calls in flight, answered out of order of waiting.
            let calls = try (0..<4).map { i -> PendingCall in
                let c = try client.begin()
                try c.writer.add(name: "x", Tensor([Int64(i)]))
                try c.send()
                return c
            }
            for (i, c) in calls.enumerated().reversed() {
                XCTAssertEqual(try c.wait().tensor(named: "sum")!.values(as: Int64.self), [Int64(i)])
                c.close()
            }
            // Oversize requests name the setting.
            XCTAssertThrowsError(try client.call([("x", Tensor([UInt8](repeating: 0, count: 100_000)))])) { e in
                XCTAssertEqual((e as? FerryError)?.code, .tooLarge)
                XCTAssertTrue("\(e)".contains("slot_size"))
            }
        }
    }

    func testAsyncCall() async throws {
        let url = "shm://\(uniqueName("async"))"
        let worker = try Worker(url)
        nonisolated(unsafe) let w = worker
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            try? w.serve { req in Message([("n", Tensor(scalar: Int64(req.entries.count)))]) }
            done.signal()
        }
        let client = try Client(url)
        let reply = try await client.call([("a", Tensor([1] as [UInt8])), ("b", Tensor([2] as [UInt8]))], timeout: .seconds(5))
        XCTAssertEqual(try reply["n"]!.values(as: Int64.self), [2])
        client.close()
        worker.stop()
        done.wait()
        worker.close()
    }

    /// One client shared by threads (docs/c-api.md, "Threads"): every reply is its caller's.
    func testOneClientSharedByThreads() throws {
        let url = "shm://\(uniqueName("threads"))?slots=4"
        try withSwiftWorker(url, { $0 }) { _ in
            let client = try Client(url)
            defer { client.close() }
            let wrong = ManagedAtomicCounter()
            DispatchQueue.concurrentPerform(iterations: 6) { t in
                for i in 0..<300 {
                    let tag = Int64(t * 1_000_000 + i)
                    do {
                        let reply = try client.call([("tag", Tensor([tag]))])
                        if reply["tag"] != Tensor([tag]) { wrong.add() }
                    } catch { wrong.add() }
                }
            }
            XCTAssertEqual(wrong.value, 0)
            XCTAssertEqual(try client.census(recover: true)[.free], 4)
        }
    }

    func testMalformedRequestGetsAClearErrorReply() throws {
        let url = "shm://\(uniqueName("malformed"))"
        try withSwiftWorker(url, { $0 }) { _ in
            let client = try Client(url)
            defer { client.close() }
            let call = try client.begin()
            // Bypass the writer: garbage straight into the slot.
            let slot = call.loan.request.baseAddress!
            for i in 0..<256 { slot.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31), toByteOffset: i, as: UInt8.self) }
            call.sent = true
            try call.loan.send(length: 256, deadline: call.deadline)
            XCTAssertThrowsError(try call.wait()) { e in
                XCTAssertEqual((e as? FerryError)?.code, .malformed)
                XCTAssertTrue("\(e)".contains("bad magic"), "\(e)")
            }
            call.close()
            XCTAssertEqual(try client.call([("x", Tensor([1, 2] as [Int32]))])["x"], Tensor([1, 2] as [Int32]))
        }
    }

    func testSwiftClientCallsPythonWorker() throws {
        let name = uniqueName("py")
        let url = "shm://\(name)"
        let worker = try startPython(["-m", "ferry.worker", repoRoot + "/tests/models/testmodel.py", "--url", url])
        defer { stop(worker); XCTAssertFalse(FileManager.default.fileExists(atPath: "/dev/shm/ferry.\(geteuid()).\(name)")) }
        let client = try connect(url)
        defer { client.close() }
        let pixels = (0..<(9 * 28 * 28)).map { UInt8(truncatingIfNeeded: $0) }
        let reply = try client.call([("digits", Tensor(pixels, shape: [9, 28, 28]))], timeout: .seconds(20))
        XCTAssertEqual(reply["output"], Tensor(pixels, shape: [9, 28, 28]))
        // A model error becomes .remote with the Python exception text.
        XCTAssertThrowsError(try client.call([("raise", Tensor(strings: ["nope"], shape: [])), ("x", Tensor([1] as [UInt8]))])) { e in
            XCTAssertEqual((e as? FerryError)?.code, .remote)
            XCTAssertTrue("\(e)".contains("ValueError: nope"), "\(e)")
        }
    }

    func testSwiftClientReadsAPythonModelsSeveralOutputsByIndexAndItsIdentity() throws {
        let name = uniqueName("outputs")
        let url = "shm://\(name)"
        let worker = try startPython(["-m", "ferry.worker", repoRoot + "/tests/models/testmodel.py", "--url", url])
        defer { stop(worker) }
        let client = try connect(url)
        defer { client.close() }
        // testmodel.py returns (a, a[:1] * 2, a[1:]) for "outputs": a tuple of three.
        let a: [Float] = [0, 1, 2, 3]
        let reply = try client.call([("outputs", Tensor(a)), ("x", Tensor([1] as [UInt8]))], timeout: .seconds(20))
        XCTAssertEqual(reply.metadata["ferry.outputs"], "tuple")
        XCTAssertEqual(reply.entries.map { $0.name }, ["output_0", "output_1", "output_2"])
        XCTAssertEqual(try reply.entries[0].tensor.values(as: Float.self), a)
        XCTAssertEqual(try reply.entries[1].tensor.values(as: Float.self), [0])
        XCTAssertEqual(try reply.entries[2].tensor.values(as: Float.self), [1, 2, 3])
        // Who serves: the channel's model identity, also named in the reply.
        let model = try client.serverInfo()["model"] ?? ""
        XCTAssertTrue(model.contains("testmodel.py:predict sha256="), model)
        XCTAssertEqual(reply.metadata["ferry.model"], model)
    }

    func testPythonWorkerKilledMidRequestGivesPeerDied() throws {
        let url = "shm://\(uniqueName("kill"))"
        let worker = try startPython(["-m", "ferry.worker", repoRoot + "/tests/models/testmodel.py", "--url", url])
        defer { stop(worker); _ = try? Worker.reclaim(url) }
        let client = try connect(url)
        defer { client.close() }
        _ = try client.call([("ping", Tensor([0] as [UInt8])), ("x", Tensor([0] as [UInt8]))], timeout: .seconds(20))
        let pid = worker.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { kill(pid, SIGKILL) }
        let start = Date()
        XCTAssertThrowsError(try client.call([("sleep", Tensor(scalar: 30.0)), ("x", Tensor([0] as [UInt8]))], timeout: .seconds(20))) { e in
            XCTAssertEqual((e as? FerryError)?.code, .peerDied, "\(e)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        worker.waitUntilExit()
        XCTAssertTrue(try Worker.reclaim(url))
    }

    func testPythonClientCallsSwiftWorker() throws {
        // The reverse direction: a Swift worker serves a Python client.
        let url = "shm://\(uniqueName("reverse"))"
        try withSwiftWorker(url, { req in
            let x = try req["input"]!.values(as: Float.self)
            return Message([("output", Tensor(x.map { $0 * 2 }, shape: req["input"]!.shape))])
        }) { _ in
            let out = Pipe()
            let p = try startPython(["-c", """
                import ferry, numpy as np
                with ferry.Client("\(url)") as c:
                    y = c.call(np.arange(6, dtype=np.float32).reshape(2, 3))
                print(y.dtype, y.shape, y.ravel().tolist())
                """], stdout: out)
            p.waitUntilExit()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(p.terminationStatus, 0)
            XCTAssertEqual(text.trimmingCharacters(in: .whitespacesAndNewlines), "float32 (2, 3) [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]")
        }
    }

    func testClosingTheLastServerRemovesTheSegmentAndClientsSeeClosed() throws {
        let name = uniqueName("close")
        let worker = try Worker("shm://\(name)")
        let client = try Client("shm://\(name)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: "/dev/shm/ferry.\(geteuid()).\(name)"))
        worker.close()
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/dev/shm/ferry.\(geteuid()).\(name)"))
        XCTAssertThrowsError(try client.call([("x", Tensor([1] as [UInt8]))], timeout: .milliseconds(200))) { e in
            XCTAssertTrue([.closed, .noServer].contains((e as? FerryError)?.code), "\(e)")
        }
        client.close()
    }
}

/// A thread-safe counter for tests.
final class ManagedAtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
