#if Network
import FerryCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Synchronization

/// `ferry serve --metrics HOST:PORT`: the channel's live statistics (the same as `ferry
/// stats`) as Prometheus metrics on `GET /metrics` (swift-prometheus for the text format,
/// SwiftNIO for HTTP). Counters advance by what the segment counted since the last scrape.
final class MetricsExporter: @unchecked Sendable {
    let holder: Worker
    let registry = PrometheusCollectorRegistry()
    private let last = Mutex<ChannelStats?>(nil)
    private let answered, failed, timedOut, restarts: Counter
    private let workers, clients, inFlight, slots, p50, p99: Gauge

    let channelName: String
    /// Upper bounds (seconds) of the service-time histogram's buckets.
    let buckets: [Double]
    /// Prometheus's default buckets, from 50 µs (a Ferry call) to 10 s (a big model).
    static let defaultBuckets: [Double] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    init(holder: Worker, channel: String, buckets: [Double] = MetricsExporter.defaultBuckets) {
        self.holder = holder
        channelName = channel
        self.buckets = buckets.sorted()
        let l = [("channel", channel)]
        answered = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "requests_answered", unitName: "total", helpText: "Requests answered by workers."), labels: l)
        failed = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "requests_failed", unitName: "total", helpText: "Requests answered with an error."), labels: l)
        timedOut = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "calls_timed_out", unitName: "total", helpText: "Calls given up by clients at their deadline."), labels: l)
        restarts = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "worker_restarts", unitName: "total", helpText: "Worker processes restarted."), labels: l)
        workers = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "workers", unitName: "", helpText: "Processes serving the channel."), labels: l)
        clients = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "clients", unitName: "", helpText: "Client processes attached to call the channel (live); readers of statistics (ferry stats, this exporter) are not counted."), labels: l)
        inFlight = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "in_flight", unitName: "", helpText: "Requests published or being answered."), labels: l)
        slots = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "slots", unitName: "", helpText: "Slots of the channel."), labels: l)
        p50 = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "service_p50", unitName: "seconds", helpText: "Median service time since the last scrape (bucket upper bound)."), labels: l)
        p99 = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "ferry", metricName: "service_p99", unitName: "seconds", helpText: "99th percentile service time since the last scrape (bucket upper bound)."), labels: l)
    }

    /// Brings the metrics up to date and renders them.
    func scrape() -> [UInt8] {
        last.withLock { last in
            let now = holder.stats()
            let before = last
            func delta(_ a: UInt64, _ b: UInt64?) -> Int64 { Int64(clamping: a &- (b ?? 0)) }
            answered.increment(by: delta(now.answered, before?.answered))
            failed.increment(by: delta(now.failed, before?.failed))
            timedOut.increment(by: delta(now.timedOut, before?.timedOut))
            restarts.increment(by: delta(now.restarts, before?.restarts))
            workers.set(Int64(now.workers))
            clients.set(Int64(now.clients))
            inFlight.set(Int64(now.inFlight))
            slots.set(Int64(now.slots))
            let window = before.map { b in zip(now.serviceHistogram, b.serviceHistogram).map { $0 &- $1 } } ?? now.serviceHistogram
            let hist = window.reduce(0, +) > 0 ? window : now.serviceHistogram
            p50.set(Double(ChannelStats.quantile(0.5, of: hist) ?? 0) / 1e9)
            p99.set(Double(ChannelStats.quantile(0.99, of: hist) ?? 0) / 1e9)
            last = now
            return registry.emitToBuffer() + histogramText(now.serviceHistogram)
        }
    }

    /// `ferry_service_seconds` as a Prometheus histogram, from the segment's own counts
    /// (cumulative since the channel was made, so they only go up): bucket k of the segment
    /// counts service times in [2^k, 2^(k+1)) ns and is counted under the first `le` at or
    /// above 2^(k+1) ns (so `le` is exact to a factor of two below it). The sum takes each
    /// bucket's middle. Rendered by hand: swift-prometheus records one observation at a time,
    /// and the segment has counts.
    func histogramText(_ counts: [UInt64]) -> [UInt8] {
        let name = "ferry_service_seconds", label = "channel=\"\(escape(channelName))\""
        var lines = ["# HELP \(name) Service time of a request (a worker took it → answered it), since the channel was made.",
                     "# TYPE \(name) histogram"]
        var total: UInt64 = 0
        var sum = 0.0
        for (k, n) in counts.enumerated() where n > 0 {
            total &+= n
            sum += Double(n) * 1.5 * pow(2.0, Double(k)) / 1e9
        }
        for le in buckets {
            var below: UInt64 = 0
            for (k, n) in counts.enumerated() where pow(2.0, Double(k + 1)) / 1e9 <= le { below &+= n }
            lines.append("\(name)_bucket{\(label),le=\"\(le)\"} \(below)")
        }
        lines.append("\(name)_bucket{\(label),le=\"+Inf\"} \(total)")
        lines.append("\(name)_sum{\(label)} \(sum)")
        lines.append("\(name)_count{\(label)} \(total)")
        return Array((lines.joined(separator: "\n") + "\n").utf8)
    }

    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Whether a worker takes requests now, and what to say about it.
    func readiness() -> (Bool, String) {
        let stats = holder.stats()
        if holder.hasWorker { return (true, "\(stats.workers) worker(s) on shm://\(channelName)") }
        let why = holder.status
        return (false, why.isEmpty ? "no worker is attached to shm://\(channelName) (starting, or restarting after a crash)" : why)
    }

    /// Serves `GET /metrics`, `/healthz` and `/readyz` on host:port until the returned
    /// channel is closed.
    func listen(host: String, port: Int, group: EventLoopGroup) throws -> Channel {
        let exporter = self
        return try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(MetricsHandler(exporter: exporter))
                }
            }
            .bind(host: host, port: port).wait()
    }
}

/// Answers `GET /metrics` (the Prometheus text format), `GET /healthz` (200 while the process
/// runs) and `GET /readyz` (200 while a worker takes requests, else 503 with the reason, e.g.
/// the model's load error); anything else with 404.
final class MetricsHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let exporter: MetricsExporter
    private var path = ""
    init(exporter: MetricsExporter) { self.exporter = exporter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): path = head.method == .GET ? head.uri : ""
        case .body: break
        case .end:
            let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
            let status: HTTPResponseStatus
            let body: [UInt8]
            var type = "text/plain; charset=utf-8"
            switch route {
            case "/metrics":
                status = .ok
                body = exporter.scrape()
                type = "text/plain; version=0.0.4; charset=utf-8"
            case "/healthz":  // the process is alive and answering
                status = .ok
                body = Array("ok\n".utf8)
            case "/readyz":  // a worker is attached and takes requests
                let (ready, why) = exporter.readiness()
                status = ready ? .ok : .serviceUnavailable
                body = Array((ready ? "ready: \(why)\n" : "not ready: \(why)\n").utf8)
            default:
                status = .notFound
                body = Array("served here: GET /metrics, /healthz, /readyz\n".utf8)
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: "\(body.count)")
            headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            // Connection: close — the channel closes once the response is written.
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// Parses HOST:PORT (IPv6 as [::1]:PORT).
func parseHostPort(_ text: String) throws -> (String, Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
        throw FerryError(.invalidArgument, "\"\(text)\" is not HOST:PORT")
    }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    guard !host.isEmpty else { throw FerryError(.invalidArgument, "\"\(text)\" has no host (use 127.0.0.1:PORT)") }
    return (host, port)
}
#endif
