import Foundation
import Logging

/// `--log-format json`: one JSON object per line on stderr — `ts` (RFC 3339, UTC, ms),
/// `level`, `logger`, `message`, then the entry's metadata as string fields — for log
/// shippers that parse lines (Loki, Elasticsearch, journald's JSON mode).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    private static let lock = NSLock()

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let level = event.level, message = event.message, extra = event.metadata
        var fields: [(String, String)] = [("ts", Self.timestamp()), ("level", level.rawValue), ("logger", label), ("message", message.description)]
        let merged = metadata.merging(extra ?? [:]) { _, new in new }
        for key in merged.keys.sorted() where !["ts", "level", "logger", "message"].contains(key) {
            fields.append((key, merged[key]!.description))
        }
        let text = "{" + fields.map { "\(Stats.jsonString($0.0)):\(Stats.jsonString($0.1))" }.joined(separator: ",") + "}\n"
        Self.lock.lock()
        FileHandle.standardError.write(Data(text.utf8))
        Self.lock.unlock()
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(ts.tv_nsec / 1_000_000))
    }
}
