import Foundation
import XCTest
import FerryCore
import FerryGateway
import FerryRedis

/// The conformance suite from Swift: the same checks over shm:// (straight to a worker),
/// tcp:// (through a gateway on 127.0.0.1) and redis:// (through a real redis-server on a
/// loopback port and a node), with a Swift worker on a thread of this process.
/// (tests/test_conformance.py runs the suite against Python workers in other processes.)
final class ConformanceTests: XCTestCase {
    /// Echoes the request; metadata steers it: "sleep_ms" waits, "raise" fails.
    static let handler: @Sendable (Message) throws -> Message = { request in
        if let ms = request.metadata["sleep_ms"], let v = UInt32(ms) { usleep(v * 1000) }
        if let text = request.metadata["raise"] { throw FerryError(.remote, text) }
        return Message(request.entries.map { ($0.name, $0.tensor) })
    }

    /// Runs `body` once per transport with that transport's URL.
    func forEachTransport(_ body: (String) throws -> Void) throws {
        let name = "swift-conf-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let worker = try Worker("shm://\(name)?slots=4&slot_size=256K")
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let w = worker
        Thread.detachNewThread {
            try? w.serve(ConformanceTests.handler)
            done.signal()
        }
        defer {
            worker.stop()
            done.wait()
            worker.close()
        }
        let gateway = try Gateway(GatewayConfiguration(name: name, channelURL: "shm://\(name)"))
        defer { gateway.shutdown(grace: .seconds(1)) }
        let redis = try RedisServerProcess()
        defer { redis.stop() }
        let endpoint = try Endpoint("redis://127.0.0.1:\(redis.port)/\(name)")
        var config = RedisNodeConfiguration(endpoint: endpoint, channelURL: "shm://\(name)", model: "echo", version: "1",
                                            requestCapacity: 256 * 1024 - 4096)
        config.readers = 4
        let node = try RedisNode(config)
        defer { node.shutdown() }
        for url in ["shm://\(name)", "tcp://127.0.0.1:\(gateway.port)/\(name)", "redis://127.0.0.1:\(redis.port)/\(name)"] {
            try body(url)
        }
    }

    func testEveryDTypeAndShapeRoundTrips() throws {
        try forEachTransport { url in
            let client = try Client(url)
            defer { client.close() }
            for dtype in DType.allCases where dtype.itemSize != nil {
                let shapes = dtype == .bytes ? [[0], [7]] : [[], [0], [1], [7], [3, 5], [2, 0, 4], [2, 3, 4, 5]]
                // Fixed-width strings: the last dimension is the width (at least 1), and UTF-32
                // code units must be Unicode scalars (here below U+8000).
                for shape in shapes where !dtype.isFixedWidthString || (shape.last ?? 0) >= 1 {
                    let n = shape.reduce(1, *) * dtype.itemSize!
                    let mask: (Int) -> UInt8 = { dtype == .utf32 ? [0xFF, 0x7F, 0, 0][$0 % 4] : 0xFF }
                    let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) & mask($0) }
                    let t = try Tensor(dtype: dtype, shape: shape, bytes: bytes)
                    let reply = try client.call([("x", t)])
                    XCTAssertEqual(reply["x"], t, "\(url) \(dtype) \(shape)")
                }
            }
            let words = Tensor(strings: ["héllo", "", "wörld"], shape: [3])
            XCTAssertEqual(try client.call([("s", words)])["s"], words)
        }
    }

    /// Tensors added by reference cross exactly on every transport: over tcp:// a large one is
    /// sent from the caller's memory (a hole in the request between copied parts), elsewhere
    /// copied in. A small one added by reference is copied everywhere.
    func testTensorsAddedByReferenceCrossExactly() throws {
        try forEachTransport { url in
            let client = try Client(url)
            defer { client.close() }
            let head = (0..<100).map { UInt8(truncatingIfNeeded: $0 &* 5 &+ 1) }
            let big = (0..<70_001).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }  // past 64 KiB
            let tail = (0..<33).map { Int32($0 * 1000 - 7) }
            let got: [[UInt8]] = try head.withUnsafeBytes { h in
                try big.withUnsafeBytes { b in
                    try tail.withUnsafeBytes { t in
                        try client.withCall(write: { w in
                            try w.addTensor(name: "head", dtype: .uint8, shape: [head.count], referencing: h)
                            try w.addTensor(name: "big", dtype: .uint8, shape: [big.count], referencing: b)
                            try w.addTensor(name: "tail", dtype: .int32, shape: [tail.count], referencing: t)
                        }, read: { view in
                            // (The echo keeps tensors only; the table and names after the
                            // holes were read back by the worker's decoder.)
                            return ["head", "big", "tail"].map { Array(view.tensor(named: $0)?.data ?? UnsafeRawBufferPointer(start: nil, count: 0)) }
                        })
                    }
                }
            }
            XCTAssertEqual(got[0], head, url)
            XCTAssertEqual(got[1], big, url)
            XCTAssertEqual(got[2], tail.withUnsafeBytes { Array($0) }, url)
            // Wrong byte counts are refused before anything is sent, as for copied tensors.
            XCTAssertThrowsError(try big.withUnsafeBytes { b in
                try client.withCall(write: { w in try w.addTensor(name: "x", dtype: .uint16, shape: [big.count], referencing: b) },
                                    read: { _ in () })
            }, url)
        }
    }

    func testModelErrorsDeadlinesAndOversize() throws {
        try forEachTransport { url in
            let client = try Client(url)
            defer { client.close() }
            let one = Tensor([Int32(1)])
            XCTAssertThrowsError(try client.call(Message([("x", one)], metadata: ["raise": "boom"]))) { e in
                XCTAssertEqual((e as? FerryError)?.code, .remote)
                XCTAssertTrue((e as? FerryError)?.message.contains("boom") ?? false)
            }
            let t0 = Date()
            XCTAssertThrowsError(try client.call(Message([("x", one)], metadata: ["sleep_ms": "2000"]), timeout: .milliseconds(200))) { e in
                XCTAssertEqual((e as? FerryError)?.code, .timedOut, "\(url)")
            }
            XCTAssertLessThan(Date().timeIntervalSince(t0), 1.5)
            XCTAssertThrowsError(try client.call([("x", Tensor([UInt8](repeating: 1, count: 1 << 20)))])) { e in
                XCTAssertEqual((e as? FerryError)?.code, .tooLarge, "\(url)")
            }
            XCTAssertEqual(try client.call([("x", one)])["x"], one)  // still usable
        }
    }

    func testManyThreadsAndCallsInFlight() throws {
        try forEachTransport { url in
            let client = try Client(url)
            defer { client.close() }
            let failures = ManagedCounter()
            DispatchQueue.concurrentPerform(iterations: 6) { k in
                for i in 0..<100 {
                    let v = Tensor([Int64(k * 1000 + i)])
                    if (try? client.call([("id", v)])["id"]) != v { failures.add() }
                }
            }
            XCTAssertEqual(failures.value, 0, url)
            // Several calls in flight from one thread, collected in reverse order.
            var calls: [(PendingCall, Int64)] = []
            for i in 0..<4 {
                let c = try client.begin()
                try c.writer.add(name: "id", Tensor([Int64(i)]))
                try c.send()
                calls.append((c, Int64(i)))
            }
            for (c, i) in calls.reversed() {
                XCTAssertEqual(try Message(c.wait())["id"], Tensor([i]))
                c.close()
            }
        }
    }

    func testAsyncCallsManyAtOnceAndCancellation() throws {
        try forEachTransport { url in
            let client = try Client(url)
            defer { client.close() }
            let done = DispatchSemaphore(value: 0)
            let failures = ManagedCounter()
            Task {
                // 64 calls at once from tasks: more than the slots, no thread parked per call.
                await withTaskGroup(of: Bool.self) { group in
                    for i in 0..<64 {
                        group.addTask {
                            let v = Tensor([Int64(i)])
                            return (try? await client.call([("id", v)]))?["id"] == v
                        }
                    }
                    for await ok in group where !ok { failures.add() }
                }
                // A slow call, cancelled: CancellationError at once, and the client carries on.
                let slow = Task { try await client.call(Message([("x", Tensor([Int32(1)]))], metadata: ["sleep_ms": "3000"])) }
                try? await Task.sleep(for: .milliseconds(100))
                let t0 = ContinuousClock.now
                slow.cancel()
                switch await slow.result {
                case .failure(let e) where e is CancellationError: break
                default: failures.add()
                }
                if ContinuousClock.now - t0 > .seconds(1) { failures.add() }
                if (try? await client.call([("x", Tensor([Int32(7)]))]))?["x"] != Tensor([Int32(7)]) { failures.add() }
                done.signal()
            }
            XCTAssertEqual(done.wait(timeout: .now() + 30), .success, url)
            XCTAssertEqual(failures.value, 0, url)
        }
    }

    func testGatewayRefusesAnUnservedChannel() throws {
        XCTAssertThrowsError(try Gateway(GatewayConfiguration(name: "nobody-\(getpid())", channelURL: "shm://nobody-\(getpid())"))) { e in
            XCTAssertEqual((e as? FerryError)?.code, .noServer)
        }
    }
}

final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

/// A redis-server on a free loopback port for one test (no persistence), stopped by `stop`.
final class RedisServerProcess {
    let port: Int
    private var running: Process?

    init() throws {
        guard let path = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw FerryError(.noServer, "redis-server is not installed (scripts/setup.sh installs it)")
        }
        var lastError: Error? = nil
        for _ in 0..<20 {
            let port = Int.random(in: 20_000..<60_000)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: path)
            p.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let deadline = Date().addingTimeInterval(5)
            while p.isRunning && Date() < deadline {
                if let c = try? RedisConnection(host: "127.0.0.1", port: port, timeoutNanos: 200_000_000),
                   (try? c.command(["PING"]).value.text) == "PONG" {
                    self.port = port
                    running = p
                    return
                }
                usleep(20_000)
            }
            lastError = FerryError(.noServer, "redis-server did not start on port \(port)")
            if p.isRunning { p.terminate(); p.waitUntilExit() }
        }
        throw lastError!
    }

    func stop() {
        if let p = running, p.isRunning { p.terminate(); p.waitUntilExit() }
        running = nil
    }

    deinit { stop() }
}
