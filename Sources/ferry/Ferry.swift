import ArgumentParser
import FerryCore
#if Network
import FerryGateway
import FerryRedis
import NIOCore
import NIOPosix
#endif
import Foundation
import Logging

@main
struct Ferry: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Hand tensors from native code to a Python model in another process.",
        discussion: """
        Exit status: 0 success; 1 any other error; 64 a usage error (a bad option or value);
        69 nothing serves the channel (FERRY_ENOSERVER); 70 the model raised an error
        (FERRY_EREMOTE); 75 a deadline passed (FERRY_ETIMEDOUT).
        """,
        version: "0.1.0",
        subcommands: [Serve.self, Call.self, Stats.self, Demo.self, Bench.self]
    )

    /// The exit status for an error (sysexits.h values, so scripts can tell them apart).
    static func exitStatus(for error: FerryError) -> Int32 {
        switch error.code {
        case .noServer: return 69  // EX_UNAVAILABLE
        case .remote: return 70  // EX_SOFTWARE
        case .timedOut: return 75  // EX_TEMPFAIL
        default: return 1
        }
    }

    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let e as FerryError {
            // The same text ArgumentParser prints for an error, with a status that says which.
            FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
            Foundation.exit(exitStatus(for: e))
        } catch {
            exit(withError: error)
        }
    }
}

/// Settings shared by the commands that create a channel.
struct ChannelOptions: ParsableArguments {
    @Option(help: "Number of slots (concurrent requests) when creating the channel.")
    var slots: Int = 8
    @Option(name: .customLong("slot-size"), help: "Bytes per slot, e.g. 8M; a request and its reply share a slot.")
    var slotSize: String = "4M"
    @Option(help: "Wait strategy: spin, futex or hybrid.")
    var wait: String = "hybrid"
    @Option(name: .customLong("spin-us"), help: "Spin time before sleeping, for hybrid.")
    var spinMicros: Int = 100

    func url(name: String) throws -> String {
        _ = try Endpoint.parseSize(slotSize)
        return "shm://\(name)?slots=\(slots)&slot_size=\(slotSize)&wait=\(wait)&spin_us=\(spinMicros)"
    }
}

func makeLogger(_ label: String, level: Logger.Level = .info, json: Bool = false) -> Logger {
    LoggingSystem.bootstrap { label in
        var h: LogHandler = json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
        h.logLevel = level
        return h
    }
    var logger = Logger(label: label)
    logger.logLevel = level
    return logger
}

/// The error of a feature that needs the Network trait, in a `ferry` built without it
/// (`make demo` builds such a one in .build-demo; `make build` the full one).
func withoutNetwork(_ feature: String) -> Error {
    ValidationError("\(feature) needs tcp:// or redis://, and this ferry was built without them (the Network trait); `make build` builds the full command")
}

func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    return ExitCode(1)
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a Python model on shm://NAME with N supervised worker processes (and on tcp:// with --listen, or as a node of redis:// with --redis).")

    @Argument(help: "Model file (defines predict(inputs)) or Python module name.")
    var model: String
    @Option(help: "Channel name (clients use shm://NAME). With --redis, the node's local channel (default: a unique name, so several nodes can share a host).")
    var name: String?
    @Option(help: "Number of worker processes.")
    var workers: Int = 1
    @Option(name: .customLong("hang-timeout"), help: "Seconds a worker may spend on one request before it is killed and replaced (0: never).")
    var hangTimeout: Double = 60
    @Option(name: .customLong("max-batch"), help: "Merge up to this many requests into one model call (dynamic batching; 1: off).")
    var maxBatch: Int = 1
    @Option(name: .customLong("max-delay"), help: "Microseconds to wait for more requests to batch after the first.")
    var maxDelay: Int = 500
    @Option(help: "Serve Prometheus metrics on HOST:PORT (GET /metrics, /healthz, /readyz), e.g. 127.0.0.1:9464.")
    var metrics: String?
    @Option(name: .customLong("histogram-buckets"), help: "Upper bounds in seconds of the service-time histogram's buckets, comma-separated (default: 50 µs … 10 s).")
    var histogramBuckets: String?
    @Option(help: "Also accept remote clients on tcp://HOST:PORT (they call tcp://HOST:PORT/NAME). Bind a loopback address unless the network is trusted or --auth-token-file is given.")
    var listen: String?
    @Option(name: .customLong("auth-token-file"), help: "With --listen: a file (mode 600) holding a shared secret; clients prove they know it (HMAC challenge) before any request.")
    var authTokenFile: String?
    @Option(name: .customLong("tls-cert"), help: "With --listen: TLS with this PEM certificate chain (and --tls-key); clients add tls=1 (and ca_file=PATH) to the URL.")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "With --listen: the PEM private key of --tls-cert.")
    var tlsKey: String?
    @Option(name: .customLong("max-connections"), help: "With --listen: most connections at once.")
    var maxConnections: Int = 256
    @Option(name: .customLong("io"), help: "With --listen: threads (each plain-TCP connection on its own thread: the shortest round trip; the default) or event-loop (all connections on one SwiftNIO event loop: for thousands of connections). TLS always uses the event loop.")
    var io: String = "threads"
    @Option(name: .customLong("max-inflight"), help: "With --listen: most requests in flight per connection (the gateway stops reading a connection at the limit).")
    var maxInFlight: Int = 64
    @Option(name: .customLong("max-request"), help: "With --listen: largest request, e.g. 16M (default: what a slot takes).")
    var maxRequest: String?
    @Option(name: .customLong("frame-timeout"), help: "With --listen: seconds a frame may take to arrive whole once its first byte came; a stalled sender's connection is closed (0: no limit).")
    var frameTimeout: Double = 30
    @Option(name: .customLong("idle-timeout"), help: "With --listen: close a connection that has nothing in flight and sends nothing for this many seconds (0: never).")
    var idleTimeout: Double = 0
    @Option(help: "Join redis://[USER:PASSWORD@]HOST:PORT/NAME as a node: take requests from the stream ferry:{NAME}:requests (consumer group NAME) and run them here. Clients call the same URL.")
    var redis: String?
    @Option(name: .customLong("model-version"), help: "The model's version: part of its identity (one model per channel) and, with --redis, of every result-cache key (default: a hash of the model file).")
    var modelVersion: String?
    @Option(name: .customLong("claim-idle"), help: "With --redis: seconds an entry may sit unacknowledged on a live node that stopped working on it before another node takes it over.")
    var claimIdle: Double = 30
    @Option(name: .customLong("node-timeout"), help: "With --redis: seconds without a heartbeat after which a node is dead; a live node takes its entries at once (heartbeats every timeout/8, at most 250 ms).")
    var nodeTimeout: Double = 5
    @Option(name: .customLong("max-deliveries"), help: "With --redis: deliveries after which an entry goes to the dead-letter stream ferry:{NAME}:dead.")
    var maxDeliveries: Int = 3
    @Option(name: .customLong("cache-ttl"), help: "With --redis: keep replies in a result cache for this many seconds (0: no cache). Only for deterministic models.")
    var cacheTTL: Double = 0
    @Option(name: .customLong("cache-max-entries"), help: "With --redis: most replies in the result cache (the oldest are dropped).")
    var cacheMaxEntries: Int = 10_000
    @Option(name: .customLong("cache-max-bytes"), help: "With --redis: largest reply the cache keeps, e.g. 1M.")
    var cacheMaxBytes: String = "16M"
    @Option(name: .customLong("max-backlog"), help: "With --redis: most requests queued in the stream (older ones are trimmed).")
    var maxBacklog: Int = 10_000
    @Option(name: .customLong("max-dead-letters"), help: "With --redis: most entries kept in the dead-letter stream ferry:{NAME}:dead (older ones are trimmed).")
    var maxDeadLetters: Int = 10_000
    @Option(name: .customLong("max-restarts"), help: "Give up (exit 70) when workers crash more than this many times within --restart-window seconds.")
    var maxRestarts: Int = 10
    @Option(name: .customLong("max-backoff"), help: "Longest wait (seconds) before restarting a worker that keeps crashing soon after it starts (the wait doubles from 0.1 s).")
    var maxBackoff: Double = 30
    @Option(name: .customLong("restart-window"), help: "Seconds over which --max-restarts counts crashes.")
    var restartWindow: Double = 60
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"
    @Option(name: .customLong("log-format"), help: "text, or json (one JSON object per line).")
    var logFormat: String = "text"
    @Option(help: "Threads each worker's numeric libraries may use (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS; default 1, or what the environment sets).")
    var threads: Int?
    @Option(help: "The Python interpreter that runs the workers (default: $FERRY_PYTHON, else python3).")
    var python: String?
    @OptionGroup var channel: ChannelOptions

    func run() throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("--log-level: use trace, debug, info, notice, warning, error or critical") }
        guard logFormat == "text" || logFormat == "json" else { throw ValidationError("--log-format: use text or json") }
        if let threads { guard (1...1024).contains(threads) else { throw ValidationError("--threads must be in 1...1024") } }
        guard maxRestarts >= 0, restartWindow > 0 else { throw ValidationError("--max-restarts must be ≥ 0 and --restart-window > 0") }
        guard maxBackoff >= 0.1 && maxBackoff <= 3600 else { throw ValidationError("--max-backoff must be in 0.1...3600 seconds") }
        Python.chosen = python
        Python.threads = threads
        let logger = makeLogger("ferry.serve", level: level, json: logFormat == "json")
        guard workers >= 1 && workers <= 256 else { throw ValidationError("--workers must be in 1...256") }
        guard maxBatch >= 1 && maxBatch <= 4096 else { throw ValidationError("--max-batch must be in 1...4096") }
        guard maxDelay >= 0 && maxDelay <= 10_000_000 else { throw ValidationError("--max-delay must be in 0...10000000 µs") }
        let stop = StopSignal()
        guard let name = name ?? redis.map({ _ in "ferry-node-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))" }) else {
            throw ValidationError("--name is required (clients call shm://NAME)")
        }
        let redisEndpoint = try redis.map { url -> Endpoint in
            let e = try Endpoint(url)
            guard e.scheme == "redis" else { throw ValidationError("--redis takes redis://[USER:PASSWORD@]HOST:PORT/NAME") }
            return e
        }
        let url = try channel.url(name: name)
        if self.name == nil { removeStaleNodeChannels(logger: logger) }
        // This process holds the channel open for its whole life, so restarting a worker
        // never removes it, and clients keep their mapping.
        // One model per channel: the holder carries the model's identity, so a server of
        // another model on this name is refused (here, or when it starts).
        let served = try Python.served(url: url, model: model, version: modelVersion)
        // A holder: keeps the channel for the workers, takes no requests (clients get
        // NoServer at once, with the reason, while no worker runs).
        let holder = try Worker(served.url, holder: true)
        defer { holder.close() }
        let batching = (maxBatch > 1 ? ["--max-batch", "\(maxBatch)", "--max-delay-us", "\(maxDelay)"] : []) + served.workerArgs
#if Network
        var metricsServer: (group: MultiThreadedEventLoopGroup, channel: Channel)? = nil
        if let metrics {
            let (host, port) = try parseHostPort(metrics)
            var buckets = MetricsExporter.defaultBuckets
            if let histogramBuckets {
                let parsed = histogramBuckets.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
                guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil && $0! > 0 && $0!.isFinite }) else {
                    throw ValidationError("--histogram-buckets takes positive seconds, comma-separated, e.g. 0.001,0.01,0.1,1")
                }
                buckets = parsed.map { $0! }
            }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            do {
                let channel = try MetricsExporter(holder: holder, channel: name, buckets: buckets).listen(host: host, port: port, group: group)
                metricsServer = (group, channel)
                logger.info("metrics", metadata: ["address": "http://\(metrics)/metrics"])
            } catch {
                try? group.syncShutdownGracefully()
                throw FerryError(.system, "cannot serve metrics on \(metrics): \(error)")
            }
        }
        defer {
            if let m = metricsServer { try? m.channel.close().wait(); try? m.group.syncShutdownGracefully() }
        }
#else
        for (given, option) in [(metrics, "--metrics"), (listen, "--listen"), (redis, "--redis")] where given != nil {
            throw withoutNetwork("ferry serve \(option)")
        }
#endif
#if Network
        // The gateway first: a bad address or certificate fails before any worker starts.
        var gateway: Gateway? = nil
        if let listen {
            gateway = try startGateway(listen, name: name, url: url, forwarders: holder.geometry.slots, logger: logger)
        }
#endif
        let sup = Supervisor(model: model, url: url, count: workers, extra: batching, logger: logger, holder: holder,
                             maxRestarts: maxRestarts, restartWindow: restartWindow, maxBackoff: maxBackoff)
        // Serving only once a worker is ready: a model that fails to load ends `ferry serve`
        // here, with its error, instead of a restart loop.
        do {
            try sup.start()
            try sup.waitReady(stop: stop)
        } catch {
#if Network
            gateway?.shutdown(grace: .zero)
#endif
            sup.stop()
            throw error
        }
#if Network
        // The node last: it takes requests only once workers are there to run them.
        var node: RedisNode? = nil
        if let redisEndpoint {
            // A node takes only what its workers can start now (batching: enough to fill a
            // batch), so an idle node is never kept waiting by one hoarding entries.
            let readers = min(holder.geometry.slots, workers * maxBatch)
            do { node = try startNode(redisEndpoint, url: url, capacity: holder.geometry.slotSize - 4096, readers: readers, logger: logger) } catch {
                gateway?.shutdown(grace: .zero)
                sup.stop()
                throw error
            }
        }
#else
        _ = redisEndpoint
#endif
        logger.info("serving", metadata: ["url": "shm://\(name)", "workers": "\(workers)",
                                          "slots": "\(holder.geometry.slots)", "slot_size": "\(holder.geometry.slotSize)"])
        while !stop.requested {
            Thread.sleep(forTimeInterval: 0.05)
            if hangTimeout > 0 {
                // A hung model holds its slot forever: kill that worker; its client gets an
                // error at once and poll() starts a replacement.
                for hung in holder.hungWorkers(limit: .milliseconds(Int64(hangTimeout * 1000))) where sup.pids.contains(hung.pid) {
                    logger.warning("worker hung; killing it", metadata: ["pid": "\(hung.pid)", "seconds": "\(Int(hung.seconds))"])
                    kill(hung.pid, SIGKILL)
                    if sup.pids.count <= 1 { holder.setStatus("the worker hung for \(Int(hung.seconds)) s on one request and was killed; restarting") }
                }
            }
            let before = sup.restarts
            do { try sup.poll() } catch {
                // Gave up: the workers keep crashing. Stop what serves, then fail.
                logger.error("\(error)")
#if Network
                node?.shutdown()
                gateway?.shutdown(grace: .zero)
#endif
                sup.stop()
                throw error
            }
            for _ in before..<max(before, sup.restarts) { holder.countRestart() }
        }
        logger.info("stopping")
#if Network
        if let node {
            // Finish the entries in hand; those not started are taken over by other nodes.
            node.shutdown()
            let s = node.stats
            logger.info("node stopped", metadata: ["served": "\(s.served)", "cache_hits": "\(s.cacheHits)", "dead_lettered": "\(s.deadLettered)", "reclaimed": "\(s.reclaimed)"])
        }
        if let gateway {
            // Answer what is in flight (the workers still run), then close the connections.
            gateway.shutdown(grace: .seconds(10))
        }
#endif
        sup.stop()
    }

    /// Nodes with a generated local channel name (`ferry-node-PID-…`) that died by SIGKILL
    /// could not remove it; the next node on the host does, so they do not pile up.
    func removeStaleNodeChannels(logger: Logger) {
        let prefix = "ferry.\(geteuid()).ferry-node-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm") else { return }
        for file in names where file.hasPrefix(prefix) {
            guard let pid = Int32(file.dropFirst(prefix.count).split(separator: "-").first ?? ""), pid > 0 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                unlink("/dev/shm/\(file)")
                logger.info("removed the channel of a node that died", metadata: ["segment": "\(file)"])
            }
        }
    }

#if Network
    func startNode(_ endpoint: Endpoint, url: String, capacity: Int, readers: Int, logger: Logger) throws -> RedisNode {
        guard claimIdle > 0 && claimIdle <= 86_400 else { throw ValidationError("--claim-idle must be in (0, 86400] seconds") }
        guard nodeTimeout >= 0.2 && nodeTimeout <= 3600 else { throw ValidationError("--node-timeout must be in [0.2, 3600] seconds") }
        guard (1...1000).contains(maxDeliveries) else { throw ValidationError("--max-deliveries must be in 1...1000") }
        guard cacheTTL >= 0 && cacheTTL <= 30 * 86_400 else { throw ValidationError("--cache-ttl must be in 0...2592000 seconds") }
        guard (1...100_000_000).contains(cacheMaxEntries) else { throw ValidationError("--cache-max-entries must be in 1...100000000") }
        guard (1...100_000_000).contains(maxBacklog) else { throw ValidationError("--max-backlog must be in 1...100000000") }
        let stem = model.split(separator: "/").last.map(String.init) ?? model
        let modelName = stem.hasSuffix(".py") ? String(stem.dropLast(3)) : stem
        let version = modelVersion ?? (FileManager.default.contents(atPath: model).map { ResultCache.version(of: Array($0)) } ?? "unversioned")
        var config = RedisNodeConfiguration(endpoint: endpoint, channelURL: url, model: modelName, version: version, requestCapacity: capacity)
        config.readers = readers
        config.claimIdleNanos = UInt64(claimIdle * 1e9)
        config.nodeTimeoutNanos = UInt64(nodeTimeout * 1e9)
        config.maxDeliveries = maxDeliveries
        config.cacheTTLMillis = UInt64(cacheTTL * 1000)
        config.cacheMaxEntries = cacheMaxEntries
        config.cacheMaxBytes = try Endpoint.parseSize(cacheMaxBytes)
        config.maxBacklog = maxBacklog
        guard (1...100_000_000).contains(maxDeadLetters) else { throw ValidationError("--max-dead-letters must be in 1...100000000") }
        config.deadMaxLength = maxDeadLetters
        let log = logger
        config.log = { level, text in
            if level == "warning" { log.warning("\(text)") } else { log.info("\(text)") }
        }
        let node = try RedisNode(config)
        // Tests and scripts read this line.
        logger.info("node joined", metadata: ["url": "redis://\(endpoint.host):\(endpoint.port)/\(endpoint.name)", "node": "\(config.nodeID)",
                                             "model": "\(modelName)", "version": "\(version)", "cache": "\(cacheTTL > 0)"])
        return node
    }

    func startGateway(_ listen: String, name: String, url: String, forwarders: Int, logger: Logger) throws -> Gateway {
        guard listen.hasPrefix("tcp://") else { throw ValidationError("--listen takes tcp://HOST:PORT") }
        let (host, port) = try parseHostPort(String(listen.dropFirst("tcp://".count)))
        guard (1...100_000).contains(maxConnections) else { throw ValidationError("--max-connections must be in 1...100000") }
        guard (1...65_536).contains(maxInFlight) else { throw ValidationError("--max-inflight must be in 1...65536") }
        var config = GatewayConfiguration(name: name, channelURL: url)
        config.host = host
        config.port = port
        config.maxConnections = maxConnections
        guard ["threads", "event-loop"].contains(io) else { throw ValidationError("--io takes threads or event-loop") }
        config.threadPerConnection = io == "threads"
        config.maxInFlight = maxInFlight
        config.forwarders = forwarders
        guard (0...86_400).contains(frameTimeout), (0...86_400).contains(idleTimeout) else {
            throw ValidationError("--frame-timeout and --idle-timeout take seconds in 0...86400 (0: no limit)")
        }
        config.frameTimeout = frameTimeout > 0 ? .milliseconds(Int64(frameTimeout * 1000)) : nil
        config.idleTimeout = idleTimeout > 0 ? .milliseconds(Int64(idleTimeout * 1000)) : nil
        // The gateway waits for quick replies the way the channel's clients do.
        config.spinNanos = channel.wait == "futex" ? 0 : UInt64(max(0, min(channel.spinMicros, 1000))) * 1000
        if let maxRequest { config.maxRequest = try Endpoint.parseSize(maxRequest) }
        if let authTokenFile { config.secret = try System.readSecret(authTokenFile) }
        config.tlsCertificateFile = tlsCert
        config.tlsKeyFile = tlsKey
        let loopback = host == "localhost" || host.hasPrefix("127.") || host == "::1"
        if !loopback && config.secret == nil {
            logger.warning("listening beyond loopback without --auth-token-file: anyone who reaches this port can call the model", metadata: ["listen": "\(listen)"])
        }
        let gateway = try Gateway(config)
        // Tests and scripts read the bound port from this line (useful with port 0).
        logger.info("listening", metadata: ["url": "tcp://\(host.contains(":") ? "[\(host)]" : host):\(gateway.port)/\(name)", "auth": "\(config.secret != nil)", "tls": "\(tlsCert != nil)"])
        return gateway
    }
#endif
}

struct Call: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send tensors from .npy files to a served model and print (or save) the reply.")

    @Argument(help: "Channel URL, e.g. shm://digits.")
    var url: String
    @Option(name: .customLong("input"), help: "NAME=FILE.npy (repeatable); a bare FILE.npy is sent as \"input\".")
    var inputs: [String] = []
    @Option(name: .customLong("meta"), help: "KEY=VALUE metadata (repeatable).")
    var meta: [String] = []
    @Option(help: "Folder to save each reply tensor as NAME.npy.")
    var output: String?
    @Option(help: "Timeout in milliseconds.")
    var timeout: Int = 10_000

    func run() throws {
        var message = Message()
        for spec in inputs {
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            let (name, path) = parts.count == 2 ? (parts[0], parts[1]) : ("input", parts[0])
            message[name] = try NPY.load(path)
        }
        for kv in meta {
            let parts = kv.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--meta takes KEY=VALUE") }
            message.metadata[parts[0]] = parts[1]
        }
        let client = try Client(url)
        defer { client.close() }
        let start = System.nowNanos()
        let reply = try client.call(message, timeout: .milliseconds(timeout))
        let micros = Double(System.nowNanos() - start) / 1000
        print("reply in \(String(format: "%.1f", micros)) µs")
        for e in reply.entries {
            print("  \(e.name): \(e.tensor.dtype.name) \(e.tensor.shape) = \(preview(e.tensor))")
            if let dir = output {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try NPY.save(e.tensor, to: "\(dir)/\(e.name).npy")
            }
        }
        for (k, v) in reply.metadata.sorted(by: { $0.key < $1.key }) { print("  [\(k)] \(v)") }
    }
}

/// A short text rendering of the first elements of a tensor.
func preview(_ t: Tensor, limit: Int = 10) -> String {
    func show<T: TensorElement>(_: T.Type) -> String {
        let v = (try? t.values(as: T.self)) ?? []
        return "[" + v.prefix(limit).map { "\($0)" }.joined(separator: ", ") + (v.count > limit ? ", …" : "") + "]"
    }
    switch t.dtype {
    case .bool: return show(Bool.self)
    case .int8: return show(Int8.self)
    case .int16: return show(Int16.self)
    case .int32: return show(Int32.self)
    case .int64: return show(Int64.self)
    case .uint8: return show(UInt8.self)
    case .uint16: return show(UInt16.self)
    case .uint32: return show(UInt32.self)
    case .uint64: return show(UInt64.self)
    case .float16: return show(Float16.self)
    case .float32: return show(Float.self)
    case .float64: return show(Double.self)
    case .bytes: return "\(t.bytes.count) bytes"
    case .string, .utf32: return ((try? t.strings()) ?? []).prefix(limit).description
    case .fixedBytes: return "\(t.shape.dropLast().reduce(1, *)) byte strings of width \(t.shape.last ?? 0)"
    case .bfloat16:  // the upper half of a float32's bits
        let v = stride(from: 0, to: t.bytes.count - 1, by: 2).map { Float(bitPattern: UInt32(t.bytes[$0]) << 16 | UInt32(t.bytes[$0 + 1]) << 24) }
        return "[" + v.prefix(limit).map { "\($0)" }.joined(separator: ", ") + (v.count > limit ? ", …" : "") + "]"
    }
}
