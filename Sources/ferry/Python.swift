import FerryCore
import Foundation
import Logging

/// Finds the Python interpreter and Ferry's Python package, and runs Python workers.
enum Python {
    /// The interpreter: $FERRY_PYTHON, else python3 on PATH.
    static var interpreter: String { ProcessInfo.processInfo.environment["FERRY_PYTHON"] ?? "python3" }

    /// Folder holding the `ferry` Python package: $FERRY_PYTHONPATH, else searched upward from
    /// this executable (a build tree), else PREFIX/share/ferry/python (an install); nil when
    /// none is there and the interpreter has the package installed (the ferry-ipc wheel).
    static func packageRoot() throws -> String? {
        if let p = ProcessInfo.processInfo.environment["FERRY_PYTHONPATH"] { return p }
        let exe = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<6 {
            for candidate in [dir.appendingPathComponent("python"), dir.appendingPathComponent("share/ferry/python")] {
                if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("ferry/__init__.py").path) {
                    return candidate.path
                }
            }
            dir = dir.deletingLastPathComponent()
        }
        if interpreterHasFerry { return nil }
        throw FerryError(.invalidArgument, "cannot find Ferry's Python package (pip install the ferry-ipc wheel into \(interpreter), or set FERRY_PYTHONPATH to the folder holding ferry/)")
    }

    /// Environment for a Python child: our package first on PYTHONPATH, one BLAS thread.
    static func environment() throws -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        if let root = try packageRoot() {
            env["PYTHONPATH"] = [root, env["PYTHONPATH"]].compactMap { $0 }.joined(separator: ":")
        }
        // The library built with this command (same folder, same features): a demo build
        // (.build-demo) must not load another build's libferry.so, nor an installed one.
        if env["FERRY_LIBRARY"] == nil, let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let lib = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("libferry.so").path
            if FileManager.default.fileExists(atPath: lib) { env["FERRY_LIBRARY"] = lib }
        }
        if env["OPENBLAS_NUM_THREADS"] == nil { env["OPENBLAS_NUM_THREADS"] = "1" }
        if env["OMP_NUM_THREADS"] == nil { env["OMP_NUM_THREADS"] = "1" }
        return env
    }

    /// True when the interpreter imports `ferry` by itself (installed from the wheel).
    static var interpreterHasFerry: Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [interpreter, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('ferry') is None)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    /// The identity of `model` (one model per channel): asked of Python, which computes it
    /// the same way for every worker (`python -m ferry.worker MODEL --identity`). A model that
    /// cannot be found fails here, before anything is served.
    static func identity(model: String, version: String? = nil) throws -> String {
        var args = ["-m", "ferry.worker", model, "--identity"]
        if let version { args += ["--model-version", version] }
        let id = try run(args).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !id.isEmpty else { throw FerryError(.remote, "python -m ferry.worker \(model) --identity printed nothing") }
        return id
    }

    /// `url` with the model identity added (`model=`), for the process that holds a channel
    /// its Python workers serve; and the arguments that give the workers the same identity.
    static func served(url: String, model: String, version: String? = nil) throws -> (url: String, workerArgs: [String]) {
        let id = try identity(model: model, version: version)
        let encoded = id.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? id
        return (url + (url.contains("?") ? "&" : "?") + "model=" + encoded, ["--model-id", id])
    }

    /// Starts `python -m ferry.worker MODEL --url URL` (optionally pinned to a CPU).
    static func startWorker(model: String, url: String, cpu: Int? = nil, extra: [String] = []) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var args = [interpreter, "-m", "ferry.worker", model, "--url", url, "--exit-with-parent"] + extra
        if let cpu { args += ["--cpu", String(cpu)] }
        p.arguments = args
        p.environment = try environment()
        try p.run()
        return p
    }

    /// Runs a Python command to completion and returns its standard output.
    @discardableResult
    static func run(_ args: [String], quiet: Bool = false) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [interpreter] + args
        p.environment = try environment()
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw FerryError(.remote, "python \(args.joined(separator: " ")) failed with status \(p.terminationStatus)")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Keeps N worker processes running on one channel: restarts any that exits unexpectedly
/// (with back-off), stops them all on request.
final class Supervisor {
    let model: String
    let url: String
    let cpus: [Int]
    let logger: Logger
    /// More arguments for every worker (e.g. batching).
    let extra: [String]
    var workers: [Process?]
    var restarts = 0
    private var lastStart: [Date]

    init(model: String, url: String, count: Int, cpus: [Int] = [], extra: [String] = [], logger: Logger) {
        self.model = model
        self.url = url
        self.cpus = cpus
        self.extra = extra
        self.logger = logger
        workers = Array(repeating: nil, count: count)
        lastStart = Array(repeating: .distantPast, count: count)
    }

    func start() throws {
        for i in workers.indices { try spawn(i) }
    }

    private func spawn(_ i: Int) throws {
        let cpu = cpus.isEmpty ? nil : cpus[i % cpus.count]
        let p = try Python.startWorker(model: model, url: url, cpu: cpu, extra: extra)
        workers[i] = p
        lastStart[i] = Date()
        logger.info("worker started", metadata: ["index": "\(i)", "pid": "\(p.processIdentifier)"])
    }

    /// Restarts exited workers; call periodically.
    func poll() {
        for i in workers.indices {
            guard let p = workers[i], !p.isRunning else { continue }
            let how = p.terminationReason == .uncaughtSignal ? "signal \(p.terminationStatus)" : "status \(p.terminationStatus)"
            logger.warning("worker exited; restarting", metadata: ["index": "\(i)", "pid": "\(p.processIdentifier)", "exit": "\(how)"])
            // Back off when a worker dies right after starting (a broken model), to avoid a hot loop.
            if Date().timeIntervalSince(lastStart[i]) < 1 { Thread.sleep(forTimeInterval: 1) }
            restarts += 1
            do { try spawn(i) } catch { logger.error("cannot restart worker: \(error)") }
        }
    }

    /// Pids of live workers.
    var pids: [Int32] { workers.compactMap { $0?.isRunning == true ? $0!.processIdentifier : nil } }

    /// SIGTERM to all, then SIGKILL after `grace` seconds; waits for every one.
    func stop(grace: TimeInterval = 5) {
        for p in workers.compactMap({ $0 }) where p.isRunning { kill(p.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while workers.contains(where: { $0?.isRunning == true }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        for p in workers.compactMap({ $0 }) where p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        workers = workers.map { _ in nil }
    }
}

/// Sets a flag on SIGINT/SIGTERM instead of dying, so commands can clean up.
final class StopSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    private var sources: [DispatchSourceSignal] = []

    init() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [weak self] in self?.set() }
            s.resume()
            sources.append(s)
        }
    }

    private func set() { lock.lock(); flag = true; lock.unlock() }

    var requested: Bool { lock.lock(); defer { lock.unlock() }; return flag }
}
