import FerryCore
import FerryTCP

/// What redis:// clients and `ferry serve --redis` nodes agree on: key names, the fields of
/// a request entry, the reply element, the Lua scripts, and the result-cache key.
///
/// Every key of a channel carries the hash tag `{NAME}`, so on Redis Cluster they all live
/// in one slot and the scripts may touch any of them. See docs/protocol.md.
public struct RedisKeys: Sendable {
    /// The channel name; also the consumer group's name.
    public let name: String
    /// Requests: a stream read by the nodes' consumer group.
    public let requests: String
    /// Entries that failed too often or were malformed, with the reason.
    public let dead: String
    /// A hash the nodes fill: model, version, request_capacity, cache (0/1).
    public let info: String
    /// A sorted set of node ids scored by their last heartbeat (Redis time, ms).
    public let nodes: String
    /// Cached replies' keys by insertion time (trimmed to the cap).
    public let cacheIndex: String
    /// A key standing in for an unused script key (same slot).
    public let none: String
    /// Channel-wide counters no node sees: `cache_hits`, the calls clients answered from the
    /// result cache themselves (their submit script), without reaching a node.
    public let stats: String

    public init(_ name: String) {
        self.name = name
        let p = "ferry:{\(name)}:"
        requests = p + "requests"
        dead = p + "dead"
        info = p + "info"
        nodes = p + "nodes"
        cacheIndex = p + "cache-index"
        none = p + "none"
        stats = p + "stats"
    }

    /// A node's counters (a hash refreshed with every heartbeat, expiring a minute after it stops).
    public func node(_ id: String) -> String { "ferry:{\(name)}:node:\(id)" }
    /// The list a client's replies are pushed onto.
    public func replies(client: String) -> String { "ferry:{\(name)}:reply:\(client)" }
    /// Marks that the entry `id` has been answered (a second run's reply is dropped).
    public func done(entry id: String) -> String { "ferry:{\(name)}:done:\(id)" }
    /// A cached reply.
    public func cache(_ digest: String) -> String { "ferry:{\(name)}:cache:\(digest)" }
    /// Held by the node computing `digest` (identical requests wait for it).
    public func running(_ digest: String) -> String { "ferry:{\(name)}:running:\(digest)" }
    /// Entries waiting for the node computing `digest`.
    public func waiting(_ digest: String) -> String { "ferry:{\(name)}:waiting:\(digest)" }
}

/// The reply element and request-entry conventions.
public enum RedisWire {
    /// A reply element is this many bytes of prefix (the request id, 20 decimal digits, then
    /// spaces) and then the reply message. 48 bytes put a large message on a 64-byte boundary
    /// in hiredis's buffer (glibc hands out large blocks 16 bytes past a page).
    public static let prefixSize = 48

    /// The prefix for request `id`.
    public static func prefix(_ id: UInt64) -> [UInt8] {
        var digits = Array(String(id).utf8)
        digits = [UInt8](repeating: UInt8(ascii: "0"), count: 20 - digits.count) + digits
        return digits + [UInt8](repeating: UInt8(ascii: " "), count: prefixSize - 20)
    }

    /// The request id of a reply element (nil when it is not one).
    public static func requestID(_ element: UnsafeRawBufferPointer) -> UInt64? {
        guard element.count >= prefixSize else { return nil }
        var v: UInt64 = 0
        for i in 0..<20 {
            let d = element[i]
            guard d >= 0x30, d <= 0x39 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(d - 0x30))
            guard !o1, !o2 else { return nil }
            v = s
        }
        return v
    }

    /// Field names of a request entry: the message, the reply list, the request id, the
    /// time it may take (ms from the entry's id), and whether the result cache may be used.
    public static let fieldMessage = "m", fieldReplyTo = "r", fieldID = "i", fieldTTL = "t", fieldCache = "c"
    /// Metadata a caller sets to `off` to keep one call out of the result cache.
    public static let cacheMetadataKey = "ferry.cache"
}

/// The Lua scripts (run atomically by Redis; EVALSHA with EVAL as the fallback).
public enum RedisScripts {
    /// Client: answer from the cache when the nodes' model version is the one the key was
    /// computed for (counting the hit in the stats hash), else add the request. KEYS: info,
    /// cache key, requests, stats. ARGV: version, maxlen, message, reply list, id, ttl.
    /// Returns {1, reply} or {0, version}.
    public static let submit = """
    local v = redis.call('HGET', KEYS[1], 'version')
    if v and v == ARGV[1] then
      local hit = redis.call('GET', KEYS[2])
      if hit then
        redis.call('HINCRBY', KEYS[4], 'cache_hits', 1)
        return {1, hit}
      end
    end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[3], 'r', ARGV[4], 'i', ARGV[5], 't', ARGV[6], 'c', '1')
    return {0, v or ''}
    """

    /// Node, before running a cacheable request: {1, reply} on a hit, {2} when this node
    /// computes it (it took the running lock), {3} when another node computes it (the entry
    /// was added to its waiters and is answered by that node's finish).
    /// KEYS: cache key, running, waiting. ARGV: waiter record, lock ttl ms.
    public static let begin = """
    local hit = redis.call('GET', KEYS[1])
    if hit then return {1, hit} end
    if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
    redis.call('RPUSH', KEYS[3], ARGV[1])
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
    return {3}
    """

    /// Node, when a reply is ready: pushes it to the client unless that entry was answered
    /// already, acknowledges and deletes the entry; stores it in the cache when asked
    /// (bounded by the index), and answers the waiters of identical requests.
    /// KEYS: requests, reply list, done key, cache key, running, waiting, cache index.
    /// ARGV: group, entry id, element (prefix + reply), reply ttl ms, store (0/1), cache ttl
    /// ms, cache cap (entries), key prefix ("ferry:{NAME}:").
    public static let finish = """
    local P = 48
    local function deliver(entry, rkey, element, ttl)
      if redis.call('SET', ARGV[8] .. 'done:' .. entry, '1', 'NX', 'PX', ttl) then
        redis.call('RPUSH', rkey, element)
        redis.call('PEXPIRE', rkey, ttl)
      end
      redis.call('XACK', KEYS[1], ARGV[1], entry)
      redis.call('XDEL', KEYS[1], entry)
    end
    deliver(ARGV[2], KEYS[2], ARGV[3], ARGV[4])
    if ARGV[5] == '1' then
      local body = string.sub(ARGV[3], P + 1)
      redis.call('SET', KEYS[4], body, 'PX', ARGV[6])
      redis.call('ZADD', KEYS[7], redis.call('TIME')[1], KEYS[4])
      local over = redis.call('ZCARD', KEYS[7]) - tonumber(ARGV[7])
      if over > 0 then
        local old = redis.call('ZPOPMIN', KEYS[7], over)
        for i = 1, #old, 2 do redis.call('DEL', old[i]) end
      end
    end
    if KEYS[6] ~= KEYS[5] then
      local body = nil
      for _, w in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do
        local entry, rkey, rid, ttl = string.match(w, '^([^\\n]+)\\n([^\\n]+)\\n([^\\n]+)\\n([^\\n]+)$')
        if entry and entry ~= ARGV[2] then
          body = body or string.sub(ARGV[3], P + 1)
          deliver(entry, rkey, rid .. body, ttl)
        end
      end
      redis.call('DEL', KEYS[6])
      redis.call('DEL', KEYS[5])
    end
    return 1
    """

    /// Node: answers an entry (no cache) only while it is still this node's: a node that was
    /// frozen (SIGSTOP, a stalled VM) and declared dead finds its entries moved to another node
    /// when it wakes, and its late answer is dropped here, so each call is answered once.
    /// KEYS: requests, reply list. ARGV: group, entry id, this node, element, reply ttl ms.
    /// Returns 1 when answered, 0 when the entry was no longer this node's.
    public static let answer = """
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
    if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
    redis.call('RPUSH', KEYS[2], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
    redis.call('XDEL', KEYS[1], ARGV[2])
    return 1
    """

    /// Node: keeps the entries it works on from looking idle (XCLAIM … JUSTID, which does
    /// not count a delivery), but only those still its own: a node that woke after being
    /// declared dead must not take back what another node already runs.
    /// KEYS: requests. ARGV: group, this node, entry ids…
    public static let touch = """
    local n = 0
    for i = 3, #ARGV do
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
      if #p == 1 and p[1][2] == ARGV[2] then
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
        n = n + 1
      end
    end
    return n
    """

    /// Node: joins the channel's set of nodes if the live nodes serve the same model (one
    /// model per channel), atomically, so two nodes of different models starting together
    /// cannot both join. KEYS: nodes set, info hash. ARGV: this node's model identity, this
    /// node, the node timeout (ms). Returns nil when joined, else the identity being served.
    public static let join = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local live = redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[3]), '+inf')
    local current = redis.call('HGET', KEYS[2], 'identity')
    if live > 0 and current and current ~= ARGV[1] then return current end
    redis.call('HSET', KEYS[2], 'identity', ARGV[1])
    redis.call('ZADD', KEYS[1], now, ARGV[2])
    return false
    """

    /// Node: takes over what a dead node held, at once. A node is dead when its heartbeat
    /// (its score in the nodes set) is older than the cutoff; checked here again, so of the
    /// live nodes that noticed, only the first takes its entries (they move to this node,
    /// counting a delivery), and once it holds none it is forgotten (consumer and stats).
    /// KEYS: nodes set, requests, the dead node's stats hash. ARGV: group, dead node, this
    /// node, cutoff (Redis ms), most entries. Returns the entries taken (XCLAIM's answer).
    public static let reapDead = """
    local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
    if not score or tonumber(score) >= tonumber(ARGV[4]) then return {} end
    local pending = redis.call('XPENDING', KEYS[2], ARGV[1], '-', '+', tonumber(ARGV[5]), ARGV[2])
    local ids = {}
    for _, p in ipairs(pending) do ids[#ids + 1] = p[1] end
    local taken = {}
    if #ids > 0 then taken = redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[3], 0, unpack(ids)) end
    if #ids < tonumber(ARGV[5]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[1], ARGV[2])
      redis.call('ZREM', KEYS[1], ARGV[2])
      redis.call('DEL', KEYS[3])
    end
    return taken
    """

    /// Node: moves an entry to the dead-letter stream with the reason (and its fields),
    /// answers its client with an error when it can, acknowledges and deletes it.
    /// KEYS: requests, dead, reply list (or the none key), done key.
    /// ARGV: group, entry id, reason, deliveries, dead maxlen, element ('' for none), reply ttl ms.
    public static let bury = """
    local fields = {'entry', ARGV[2], 'error', ARGV[3], 'deliveries', ARGV[4]}
    local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
    if found[1] then
      local f = found[1][2]
      for i = 1, #f, 2 do
        table.insert(fields, 'field:' .. f[i])
        table.insert(fields, f[i + 1])
      end
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
    if ARGV[6] ~= '' and redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[7]) then
      redis.call('RPUSH', KEYS[3], ARGV[6])
      redis.call('PEXPIRE', KEYS[3], ARGV[7])
    end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
    redis.call('XDEL', KEYS[1], ARGV[2])
    return 1
    """

    /// The SHA-1 a script is known by (EVALSHA).
    public static func sha(_ script: String) -> String {
        hex(Digest.sha1(Array(script.utf8)))
    }
}

/// The result cache's key: SHA-256 over the model's name and version and the request's
/// tensors (names, dtypes, shapes, bytes) and metadata (but `ferry.*` keys), so the same
/// input to the same model version finds the same reply.
public enum ResultCache {
    /// A model version from its source: the first 16 hex digits of its SHA-256.
    public static func version(of source: [UInt8]) -> String { String(hex(Digest.sha256(source)).prefix(16)) }

    /// The hex digest for `message` (a validated request) under `model`/`version`.
    public static func digest(model: String, version: String, message: MessageView) -> String {
        var h = Digest.SHA256Hasher()
        func add(_ s: String) { var n = UInt64(s.utf8.count); withUnsafeBytes(of: &n) { h.update($0) }; h.update(Array(s.utf8)) }
        func add(_ v: Int64) { var v = v.littleEndian; withUnsafeBytes(of: &v) { h.update($0) } }
        add("ferry-cache-1")
        add(model)
        add(version)
        add(Int64(message.tensorCount))
        for i in 0..<message.tensorCount {
            let t = message.tensor(at: i)
            add(t.name)
            add(Int64(t.dtype.rawValue))
            add(Int64(t.shape.count))
            for d in t.shape { add(Int64(d)) }
            add(Int64(t.data.count))
            if t.data.count > 0 { h.update(UnsafeRawBufferPointer(t.data)) }
        }
        let meta = message.metadata.filter { !$0.key.hasPrefix("ferry.") }.sorted { $0.key < $1.key }
        add(Int64(meta.count))
        for (k, v) in meta { add(k); add(v) }
        return hex(h.finalize())
    }
}

/// Lower-case hex of `bytes`.
func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
    return String(decoding: out, as: UTF8.self)
}

/// What a redis:// channel looks like from Redis: its nodes and their counters, the backlog,
/// the entries in flight, the dead letters and the cache (`ferry stats redis://…`).
public struct RedisChannelSnapshot: Sendable {
    /// One node: its id, how long ago it was last heard from, and its counters.
    public struct Node: Sendable {
        public var id: String
        public var lastSeenMillisAgo: Int64
        public var counters: [String: Int64]
    }
    public var nodes: [Node] = []
    /// Requests not yet taken by a node, taken but not answered, dead letters, cached replies.
    public var backlog: Int64 = 0, inFlight: Int64 = 0, deadLetters: Int64 = 0, cached: Int64 = 0
    /// Calls answered from the result cache: by clients' own lookups (never reaching a node)
    /// plus the nodes' hits.
    public var cacheHits: Int64 = 0
    /// The model and version the nodes announce.
    public var model = "", version = ""

    /// Reads it (a handful of commands on one connection).
    public static func read(_ endpoint: Endpoint) throws -> RedisChannelSnapshot {
        let keys = RedisKeys(endpoint.name)
        let c = try RedisConnection.owner(of: keys.info, host: endpoint.host, port: endpoint.port, user: endpoint.user,
                                          password: endpoint.password, tls: endpoint.tls, timeoutNanos: endpoint.connectTimeoutNanos)
        var s = RedisChannelSnapshot()
        let t = try c.command(["TIME"]).value.elements
        let now = t.count == 2 ? (Int64(t[0].text) ?? 0) * 1000 + (Int64(t[1].text) ?? 0) / 1000 : 0
        let members = try c.command(["ZRANGE", .text(keys.nodes), "0", "-1", "WITHSCORES"]).value.elements
        var i = 0
        while i + 1 < members.count {
            let id = members[i].text
            let seen = Int64(Double(members[i + 1].text) ?? 0)
            var counters: [String: Int64] = [:]
            let h = try c.command(["HGETALL", .text(keys.node(id))]).value.elements
            var j = 0
            while j + 1 < h.count { counters[h[j].text] = Int64(h[j + 1].text) ?? 0; j += 2 }
            s.nodes.append(Node(id: id, lastSeenMillisAgo: max(0, now - seen), counters: counters))
            i += 2
        }
        s.backlog = try c.command(["XLEN", .text(keys.requests)]).value.integer
        if let p = try? c.command(["XPENDING", .text(keys.requests), .text(keys.name)]).value.elements, let first = p.first {
            s.inFlight = first.integer
            s.backlog = max(0, s.backlog - s.inFlight)
        }
        s.deadLetters = try c.command(["XLEN", .text(keys.dead)]).value.integer
        s.cached = try c.command(["ZCARD", .text(keys.cacheIndex)]).value.integer
        let clientHits = Int64(try c.command(["HGET", .text(keys.stats), "cache_hits"]).value.text) ?? 0
        s.cacheHits = clientHits + s.nodes.reduce(0) { $0 + ($1.counters["cache_hits"] ?? 0) }
        let info = try c.command(["HMGET", .text(keys.info), "model", "version"]).value.elements
        if info.count == 2 { s.model = info[0].text; s.version = info[1].text }
        return s
    }
}
