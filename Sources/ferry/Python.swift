import FerryCore
import Foundation
import Logging

/// Finds the Python interpreter and Ferry's Python package, and runs Python workers.
enum Python {
    /// The interpreter: `ferry serve --python`, else $FERRY_PYTHON, else python3 on PATH.
    nonisolated(unsafe) static var chosen: String? = nil
    static var interpreter: String { chosen ?? ProcessInfo.processInfo.environment["FERRY_PYTHON"] ?? "python3" }
    /// Threads a worker's numeric libraries may use (`ferry serve --threads`; default 1:
    /// one worker a core, and BLAS threads would fight the other workers).
    nonisolated(unsafe) static var threads: Int? = nil

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
        for key in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
            if let threads { env[key] = String(threads) } else if env[key] == nil { env[key] = "1" }
        }
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

    /// Starts `python -m ferry.worker MODEL --url URL` (optionally pinned to a CPU; its
    /// stderr into `stderr` when given, and then it reports model errors as FERRY-LOG lines).
    static func startWorker(model: String, url: String, cpu: Int? = nil, extra: [String] = [], stderr: Pipe? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var args = [interpreter, "-m", "ferry.worker", model, "--url", url, "--exit-with-parent"] + extra
        if let cpu { args += ["--cpu", String(cpu)] }
        p.arguments = args
        var env = try environment()
        if let stderr {
            p.standardError = stderr
            env["FERRY_SUPERVISED"] = "1"
        }
        p.environment = env
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

/// Keeps N worker processes running on one channel, and says what they do:
///
/// * Each worker's stderr is read line by line into the supervisor's log, with its pid (a
///   model's error report, `FERRY-LOG {json}` from ferry.serving, is one entry).
/// * Until a worker is ready (attached to the channel, so its model loaded), `waitReady`
///   waits; a worker that exits before any worker was ever ready failed to load the model:
///   `poll` throws its error (the last lines it wrote), and `ferry serve` exits at once.
/// * A worker that crashes after the model once served is restarted after a back-off: 0.1 s
///   when it had run for 10 s or more (a one-off), else doubling up to `maxBackoff` (a crash
///   loop); more than `maxRestarts` crashes within `restartWindow` seconds and `poll` throws
///   (gives up).
/// * While no worker runs, the holder's status says why (clients get it with `.noServer`).
final class Supervisor {
    let model: String
    let url: String
    let cpus: [Int]
    let logger: Logger
    /// More arguments for every worker (e.g. batching).
    let extra: [String]
    /// The process's hold on the channel (role "holder"): readiness and status go through it.
    let holder: Worker?
    let maxRestarts: Int
    let restartWindow: TimeInterval
    let maxBackoff: TimeInterval
    var workers: [Process?]
    var restarts = 0
    /// True once some worker attached (its model loaded).
    private(set) var everReady = false
    private var lastStart: [Date]
    private var backoff: [TimeInterval]
    private var restartAt: [Date?]
    private var crashes: [Date] = []
    /// The last lines each worker wrote to stderr (for errors), by index.
    private let tails = Locked<[[String]]>([])

    init(model: String, url: String, count: Int, cpus: [Int] = [], extra: [String] = [], logger: Logger, holder: Worker? = nil,
         maxRestarts: Int = 10, restartWindow: TimeInterval = 60, maxBackoff: TimeInterval = 30) {
        self.model = model
        self.url = url
        self.cpus = cpus
        self.extra = extra
        self.logger = logger
        self.holder = holder
        joinedAtStart = holder?.workersJoined ?? 0
        self.maxRestarts = maxRestarts
        self.restartWindow = restartWindow
        self.maxBackoff = maxBackoff
        workers = Array(repeating: nil, count: count)
        lastStart = Array(repeating: .distantPast, count: count)
        backoff = Array(repeating: 0.1, count: count)
        restartAt = Array(repeating: nil, count: count)
        tails.withLock { $0 = Array(repeating: [], count: count) }
    }

    func start() throws {
        for i in workers.indices { try spawn(i) }
    }

    private func spawn(_ i: Int) throws {
        let cpu = cpus.isEmpty ? nil : cpus[i % cpus.count]
        let errors = Pipe()
        let p = try Python.startWorker(model: model, url: url, cpu: cpu, extra: extra, stderr: errors)
        workers[i] = p
        lastStart[i] = Date()
        tails.withLock { $0[i] = [] }
        follow(errors, index: i, pid: p.processIdentifier)
        logger.info("worker started", metadata: ["index": "\(i)", "pid": "\(p.processIdentifier)"])
    }

    /// Reads a worker's stderr into the log, a line an entry, keeping the last lines.
    private func follow(_ pipe: Pipe, index: Int, pid: Int32) {
        let logger = self.logger, tails = self.tails
        let pending = Locked(Data())  // a partial line (only this handler touches it)
        pipe.fileHandleForReading.readabilityHandler = { h in
            let chunk = h.availableData
            let lines: [String] = pending.withLock { buf in
                if chunk.isEmpty {  // EOF: the worker is gone
                    h.readabilityHandler = nil
                    defer { buf.removeAll() }
                    return buf.isEmpty ? [] : [String(decoding: buf, as: UTF8.self)]
                }
                buf.append(chunk)
                var out: [String] = []
                while let nl = buf.firstIndex(of: 0x0A) {
                    out.append(String(decoding: buf[buf.startIndex..<nl], as: UTF8.self))
                    buf.removeSubrange(buf.startIndex...nl)
                }
                return out
            }
            for line in lines { Supervisor.logLine(line, pid: pid, index: index, logger: logger, tails: tails) }
        }
    }

    private static func logLine(_ line: String, pid: Int32, index: Int, logger: Logger, tails: Locked<[[String]]>) {
        var meta: Logger.Metadata = ["pid": "\(pid)"]
        var level = Logger.Level.warning
        var message = line
        if line.hasPrefix("FERRY-LOG "), let obj = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(10).utf8)) as? [String: Any] {
            // One structured entry from ferry.serving (e.g. a model's exception and its traceback).
            message = obj["message"] as? String ?? line
            level = (obj["level"] as? String).flatMap(Logger.Level.init(rawValue:)) ?? .error
            for (k, v) in obj where k != "message" && k != "level" { meta[k] = "\(v)" }
        }
        tails.withLock { t in
            guard index < t.count else { return }
            t[index].append(message)
            if t[index].count > 40 { t[index].removeFirst(t[index].count - 40) }
        }
        logger.log(level: level, "\(message)", metadata: meta)
    }

    /// The most telling line a worker wrote last: its exception ("Type: message"), else its
    /// last non-empty line.
    func lastError(_ i: Int) -> String? {
        let lines = tails.withLock { $0[i] }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return lines.last(where: { l in
            guard let colon = l.firstIndex(of: ":") else { return false }
            let head = l[..<colon]
            return !head.contains(" ") && (head.hasSuffix("Error") || head.hasSuffix("Exception") || head.hasSuffix("Interrupt") || head == "SystemExit")
        }) ?? lines.last
    }

    /// Waits until a worker is ready (attached: its model loaded). Throws when the model
    /// fails to load (see `poll`) or on `stop`.
    func waitReady(stop: StopSignal? = nil, timeout: TimeInterval = .infinity) throws {
        guard holder != nil else { return }
        let start = Date()
        var said = false
        while !aWorkerJoined {
            if stop?.requested == true { throw FerryError(.closed, "interrupted while the workers loaded the model") }
            try poll()
            if Date().timeIntervalSince(start) > timeout {
                throw FerryError(.timedOut, "no worker was ready after \(Int(timeout)) s (the model is still loading?)")
            }
            if !said && Date().timeIntervalSince(start) > 10 {
                said = true
                logger.info("waiting for a worker to load the model")
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        markReady()
    }

    /// Workers that had attached to the channel before this supervisor started any.
    private let joinedAtStart: UInt64

    /// True once a worker attached since this supervisor started (its model loads), even if
    /// it came and went between two looks.
    private var aWorkerJoined: Bool {
        guard let holder else { return false }
        return holder.hasWorker || holder.workersJoined > joinedAtStart
    }

    private func markReady() {
        if !everReady { everReady = true }
        holder?.setStatus("")
    }

    /// Restarts exited workers (after their back-off); call periodically. Throws when the
    /// model failed to load, or when workers crash more than `maxRestarts` times in
    /// `restartWindow` seconds.
    func poll() throws {
        let now = Date()
        if let holder, holder.hasWorker || (!everReady && aWorkerJoined) { markReady() }
        for i in workers.indices {
            if let at = restartAt[i] {
                if now >= at {
                    restartAt[i] = nil
                    restarts += 1
                    do { try spawn(i) } catch { logger.error("cannot restart worker: \(error)") }
                }
                continue
            }
            guard let p = workers[i], !p.isRunning else { continue }
            workers[i] = nil
            let how = p.terminationReason == .uncaughtSignal ? "signal \(p.terminationStatus)" : "status \(p.terminationStatus)"
            // Let the reader thread drain the last lines before they are quoted.
            Thread.sleep(forTimeInterval: 0.05)
            let why = lastError(i)
            if !everReady && !aWorkerJoined {
                // No worker ever attached: the model does not load. Restarting would loop.
                holder?.setStatus("the model failed to load" + (why.map { ": \($0)" } ?? ""))
                throw FerryError(.remote, "the model \(model) failed to load: the worker exited with \(how)"
                    + (why.map { " (\($0))" } ?? "") + "; its error is above")
            }
            crashes.append(now)
            crashes.removeAll { now.timeIntervalSince($0) > restartWindow }
            if crashes.count > maxRestarts {
                holder?.setStatus("the workers kept crashing; the server gave up" + (why.map { ": \($0)" } ?? ""))
                throw FerryError(.remote, "workers crashed \(crashes.count) times within \(Int(restartWindow)) s (last: \(how)"
                    + (why.map { ", \($0)" } ?? "") + "); giving up (--max-restarts, --restart-window)")
            }
            if now.timeIntervalSince(lastStart[i]) >= 10 { backoff[i] = 0.1 }  // it ran well for a while: a one-off
            let delay = min(backoff[i], maxBackoff)
            backoff[i] = min(backoff[i] * 2, maxBackoff)
            restartAt[i] = now.addingTimeInterval(delay)
            if holder?.hasWorker != true {
                holder?.setStatus("the worker exited (\(how))" + (why.map { ": \($0)" } ?? "") + "; restarting")
            }
            logger.warning("worker exited; restarting", metadata: ["index": "\(i)", "pid": "\(p.processIdentifier)", "exit": "\(how)",
                                                                   "in_seconds": "\(delay)"])
        }
    }

    /// Pids of live workers.
    var pids: [Int32] { workers.compactMap { $0?.isRunning == true ? $0!.processIdentifier : nil } }

    /// SIGTERM to all, then SIGKILL after `grace` seconds; waits for every one.
    func stop(grace: TimeInterval = 5) {
        restartAt = restartAt.map { _ in nil }
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
