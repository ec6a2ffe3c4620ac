import ArgumentParser
import FerryCore
#if Network
import FerryRedis
#endif
import Foundation

/// `ferry stats [NAME]`: what each channel is doing, live.
struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show channels and streams live: workers, clients (processes attached to call; this command is not one of them), slots in flight, requests/s, p50/p99 service time, errors, timeouts, restarts; a stream's fps, subscribers, drops and frame age.")

    @Argument(help: "Channel or stream name, or URL (default: every channel and stream of this user); redis://HOST:PORT/NAME shows a distributed channel and its nodes.")
    var name: String?
    @Option(help: "Seconds between two samples (rates and quantiles are over this window).")
    var interval: Double = 1.0
    @Option(help: "Number of samples to print (0: until interrupted).")
    var count: Int = 1
    @Flag(help: "Print one JSON object per channel and sample instead of a table.")
    var json = false

    func validate() throws {
        guard interval > 0 && interval <= 3600 else { throw ValidationError("--interval must be in (0, 3600] seconds") }
        guard count >= 0 else { throw ValidationError("--count must be ≥ 0") }
    }

    /// This user's channels in /dev/shm (per-user names; docs/protocol.md).
    static func channels() -> [String] {
        let prefix = "ferry.\(geteuid())."
        let files = (try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []
        return files.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }.sorted()
    }

    func run() throws {
        if let name, name.hasPrefix("redis://") || name.hasPrefix("rediss://") { return try runRedis(try Endpoint(name)) }
        var urls: [String] = [], streams: [String] = []
        if let name {
            let bare = name.hasPrefix("shm://") ? String(name.dropFirst("shm://".count)) : name
            if !name.contains("://") || name.hasPrefix("shm://"), !Stats.channels().contains(bare), StreamSnapshot.names().contains(bare) {
                streams = [bare]
            } else {
                urls = [name.contains("://") ? name : "shm://\(name)"]
            }
        } else {
            urls = Stats.channels().map { "shm://\($0)" }
            streams = StreamSnapshot.names()
        }
        if urls.isEmpty && streams.isEmpty { print("no channels or streams of this user are live"); return }
        // Observers, not clients: this command is not counted among the clients it shows.
        var clients: [(String, ChannelObserver)] = []
        for url in urls {
            do { clients.append((url, try ChannelObserver(url))) } catch let e as FerryError {
                if name != nil { throw e }  // asked for one: say why not
            }
        }
        var previous = try clients.map { try $0.1.stats() }
        var previousStreams: [String: StreamSnapshot] = [:]
        for s in streams {
            do { previousStreams[s] = try StreamSnapshot.read(s) } catch let e as FerryError { if name != nil { throw e } }
        }
        var printed = 0
        if !json && !clients.isEmpty { print(Stats.header) }
        while count == 0 || printed < count {
            Thread.sleep(forTimeInterval: interval)
            for (i, (url, client)) in clients.enumerated() {
                guard let now = try? client.stats() else { continue }
                let row = Stats.row(url: url, now: now, before: previous[i], seconds: interval)
                print(json ? row.json : row.text)
                previous[i] = now
            }
            for s in streams {
                guard let before = previousStreams[s], let now = try? StreamSnapshot.read(s) else { continue }
                print(Stats.stream(now, before: before, seconds: interval, json: json))
                previousStreams[s] = now
            }
            printed += 1
            fflush(nil)  // every stream: a pipe reader sees each sample at once
        }
    }

    /// A stream's sample: the publisher's rate, then each subscriber's rate, drops and age.
    static func stream(_ now: StreamSnapshot, before: StreamSnapshot, seconds: Double, json: Bool) -> String {
        let fps = Double(now.published &- before.published) / seconds
        let old = Dictionary(before.subscribers.map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
        func subFps(_ s: StreamSnapshot.Subscriber) -> Double {
            guard let o = old[s.index], o.pid == s.pid else { return 0 }
            return Double(s.received &- o.received) / seconds
        }
        if json {
            let subs = now.subscribers.map { s in
                "{\"index\":\(s.index),\"pid\":\(s.pid),\"mode\":\"\(s.mode)\",\"received\":\(s.received),\"dropped\":\(s.dropped),"
                    + "\"fps\":\(subFps(s)),\"last_age_ns\":\(s.lastAgeNanos),\"behind\":\(s.behind)}"
            }
            return "{\"stream\":\"\(now.name)\",\"publisher_pid\":\(now.publisherPid),\"publisher_alive\":\(now.publisherAlive),"
                + "\"slots\":\(now.slots),\"slot_size\":\(now.slotSize),\"published\":\(now.published),\"latest\":\(now.latest),"
                + "\"fps\":\(fps),\"subscribers\":[\(subs.joined(separator: ","))]}"
        }
        var lines = ["stream \(now.name)  publisher pid \(now.publisherPid)\(now.publisherAlive ? "" : " (dead)")  slots \(now.slots)×\(now.slotSize / 1024) KiB  "
                     + "published \(now.published)  \(String(format: "%.1f", fps)) fps  subscribers \(now.subscribers.count)"]
        for s in now.subscribers {
            lines.append("  subscriber \(s.index)  pid \(s.pid)  \(s.mode.padding(toLength: 6, withPad: " ", startingAt: 0))  received \(s.received)  "
                         + "dropped \(s.dropped)  \(String(format: "%.1f", subFps(s))) fps  age \(String(format: "%.2f", Double(s.lastAgeNanos) / 1e6)) ms  behind \(s.behind)")
        }
        return lines.joined(separator: "\n")
    }

#if Network
    /// `ferry stats redis://HOST:PORT/NAME`: the channel as Redis sees it, and every node.
    func runRedis(_ endpoint: Endpoint) throws {
        var before = try RedisChannelSnapshot.read(endpoint)
        var printed = 0
        while count == 0 || printed < count {
            Thread.sleep(forTimeInterval: interval)
            let now = try RedisChannelSnapshot.read(endpoint)
            let old = Dictionary(before.nodes.map { ($0.id, $0.counters) }, uniquingKeysWith: { a, _ in a })
            func rate(_ n: RedisChannelSnapshot.Node) -> Double {
                let done = (n.counters["served"] ?? 0) + (n.counters["failed"] ?? 0) + (n.counters["cache_hits"] ?? 0)
                let was = old[n.id].map { ($0["served"] ?? 0) + ($0["failed"] ?? 0) + ($0["cache_hits"] ?? 0) } ?? done
                return Double(done - was) / interval
            }
            if json {
                let nodes = now.nodes.map { n in
                    "{\"id\":\"\(n.id)\",\"last_seen_ms\":\(n.lastSeenMillisAgo),\"requests_per_s\":\(rate(n)),"
                        + n.counters.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
                }
                print("{\"url\":\"redis://\(endpoint.host):\(endpoint.port)/\(endpoint.name)\",\"model\":\"\(now.model)\",\"version\":\"\(now.version)\","
                      + "\"backlog\":\(now.backlog),\"in_flight\":\(now.inFlight),\"dead_letters\":\(now.deadLetters),\"cached\":\(now.cached),\"cache_hits\":\(now.cacheHits),"
                      + "\"nodes\":[\(nodes.joined(separator: ","))]}")
            } else {
                print("redis://\(endpoint.host):\(endpoint.port)/\(endpoint.name)  model \(now.model) \(now.version)  backlog \(now.backlog)  in flight \(now.inFlight)  dead letters \(now.deadLetters)  cached \(now.cached)  cache hits \(now.cacheHits)")
                print("  node                                      seen     req/s    served   failed   cache hits  reclaimed  dead")
                for n in now.nodes {
                    let c = n.counters
                    print("  " + n.id.prefix(40).padding(toLength: 42, withPad: " ", startingAt: 0)
                          + "\(n.lastSeenMillisAgo)ms".padding(toLength: 9, withPad: " ", startingAt: 0)
                          + String(format: "%-9.0f%-9lld%-9lld%-12lld%-11lld%lld", rate(n),
                                   c["served"] ?? 0, c["failed"] ?? 0, c["cache_hits"] ?? 0, c["reclaimed"] ?? 0, c["dead_lettered"] ?? 0))
                }
                if now.nodes.isEmpty { print("  no node has been seen (none serves the channel)") }
            }
            before = now
            printed += 1
            fflush(nil)
        }
    }
#else
    func runRedis(_ endpoint: Endpoint) throws {
        throw withoutNetwork("ferry stats redis://…")
    }
#endif

    static let header = "channel                      workers  clients  slots  in-flight  req/s      p50        p99        errors  timeouts  restarts  model"

    /// `s` as a JSON string literal.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    struct Row {
        var text: String
        var json: String
    }

    static func row(url: String, now: ChannelStats, before: ChannelStats, seconds: Double) -> Row {
        let answered = now.answered &- before.answered, failed = now.failed &- before.failed
        let rate = Double(answered + failed) / seconds
        let window = zip(now.serviceHistogram, before.serviceHistogram).map { $0 &- $1 }
        // Quantiles over the window; over the whole life when the window saw nothing.
        let hist = window.reduce(0, +) > 0 ? window : now.serviceHistogram
        let p50 = ChannelStats.quantile(0.5, of: hist), p99 = ChannelStats.quantile(0.99, of: hist)
        func fmt(_ ns: UInt64?) -> String {
            guard let ns else { return "–" }
            if ns < 10_000 { return String(format: "≤%.1fµs", Double(ns) / 1e3) }
            if ns < 10_000_000 { return String(format: "≤%.0fµs", Double(ns) / 1e3) }
            return String(format: "≤%.0fms", Double(ns) / 1e6)
        }
        let name = String(url.dropFirst("shm://".count).prefix(28))
        let text = name.padding(toLength: 29, withPad: " ", startingAt: 0)
            + String(now.workers).padding(toLength: 9, withPad: " ", startingAt: 0)
            + String(now.clients).padding(toLength: 9, withPad: " ", startingAt: 0)
            + String(now.slots).padding(toLength: 7, withPad: " ", startingAt: 0)
            + String(now.inFlight).padding(toLength: 11, withPad: " ", startingAt: 0)
            + String(format: "%-11.0f", rate)
            + fmt(p50).padding(toLength: 11, withPad: " ", startingAt: 0)
            + fmt(p99).padding(toLength: 11, withPad: " ", startingAt: 0)
            + String(now.failed).padding(toLength: 8, withPad: " ", startingAt: 0)
            + String(now.timedOut).padding(toLength: 10, withPad: " ", startingAt: 0)
            + String(now.restarts).padding(toLength: 10, withPad: " ", startingAt: 0)
            + (now.model.isEmpty ? "–" : now.model)
        let json = """
        {"url":"\(url)","workers":\(now.workers),"clients":\(now.clients),"slots":\(now.slots),"in_flight":\(now.inFlight),\
        "answered":\(now.answered),"failed":\(now.failed),"timed_out":\(now.timedOut),"restarts":\(now.restarts),\
        "requests_per_s":\(rate),"p50_ns":\(p50.map(String.init) ?? "null"),"p99_ns":\(p99.map(String.init) ?? "null"),\
        "window_answered":\(answered),"window_failed":\(failed),"model":\(jsonString(now.model))}
        """
        return Row(text: text, json: json)
    }
}
