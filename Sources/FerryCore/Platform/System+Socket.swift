import CFerryLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The socket calls of the `tcp://` client, errno mapped to `FerryError` here as for the
/// rest of `System`.
extension System {
    /// A connected, non-blocking TCP socket with TCP_NODELAY, or `.disconnected` naming why.
    package static func tcpConnect(host: String, port: Int, timeoutNanos: UInt64) throws -> Int32 {
        var why = [CChar](repeating: 0, count: 256)
        let ms = Int32(clamping: max(1, timeoutNanos / 1_000_000))
        let fd = cferry_tcp_connect(host, Int32(port), ms, &why, why.count)
        if fd >= 0 { return fd }
        let text = fd == -2 ? "cannot resolve \"\(host)\": " + resolverText(why) : String(cString: strerror(errno))
        throw FerryError(.disconnected, "cannot connect to \(host):\(port): \(text) (is `ferry serve --listen tcp://\(host):\(port)` running?)")
    }

    /// The resolver's reason the shim wrote into `why` (NUL-terminated).
    private static func resolverText(_ why: [CChar]) -> String {
        String(decoding: why.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Waits until `fd` is readable (or writable) or `until` passes: true when ready.
    package static func waitReady(_ fd: Int32, write: Bool, until: UInt64) throws -> Bool {
        while true {
            let now = nowNanos()
            if now >= until { return false }
            let r = cferry_poll_one(fd, write ? cferry_pollout() : cferry_pollin(), Int64(clamping: until - now))
            if r > 0 { return true }
            if r == 0 { continue }
            if errno == EINTR { continue }
            throw error("poll")
        }
    }

    /// True when `fd` has something to read now (or is closed): a poll that does not wait.
    package static func readable(_ fd: Int32) -> Bool { cferry_poll_one(fd, cferry_pollin(), 0) > 0 }

    /// Sends all of `bytes` before `until`: the number of bytes sent when time ran out
    /// (`complete` false), or all of them. Throws `.disconnected` when the peer is gone.
    package static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, until: UInt64) throws -> (sent: Int, complete: Bool) {
        var done = 0
        while done < bytes.count {
            let n = cferry_send(fd, bytes.baseAddress! + done, bytes.count - done)
            if n > 0 { done += n; continue }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK {
                guard try waitReady(fd, write: true, until: until) else { return (done, false) }
                continue
            }
            throw FerryError(.disconnected, "the connection was lost while sending: \(String(cString: strerror(e)))")
        }
        return (done, true)
    }

    /// Sends `pieces` in order as one stream of bytes (gathered writes: no copy into one
    /// buffer first), before `until`, like `sendAll` of one buffer.
    package static func sendAll(_ fd: Int32, _ pieces: [UnsafeRawBufferPointer], until: UInt64) throws -> (sent: Int, complete: Bool) {
        // The iovecs on the stack (a request is a few pieces): no array built per send.
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: max(1, pieces.count)) { v in
            var count = 0
            for p in pieces where p.count > 0 {
                v[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: p.baseAddress), iov_len: p.count)
                count += 1
            }
            return try sendAll(fd, UnsafeMutableBufferPointer(rebasing: v[0..<count]), until: until)
        }
    }

    /// Sends the bytes `vecs` describe, in order (advancing them as they go).
    private static func sendAll(_ fd: Int32, _ vecs: UnsafeMutableBufferPointer<iovec>, until: UInt64) throws -> (sent: Int, complete: Bool) {
        var first = 0, done = 0
        while first < vecs.count {
            // At most 512 pieces a call (IOV_MAX is 1024 on Linux).
            let n = cferry_sendv(fd, vecs.baseAddress! + first, Int32(min(vecs.count - first, 512)))
            if n >= 0 {
                done += n
                var left = n
                while first < vecs.count && left >= vecs[first].iov_len {
                    left -= vecs[first].iov_len
                    first += 1
                }
                if left > 0 {
                    vecs[first].iov_base += left
                    vecs[first].iov_len -= left
                }
                continue
            }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK {
                guard try waitReady(fd, write: true, until: until) else { return (done, false) }
                continue
            }
            throw FerryError(.disconnected, "the connection was lost while sending: \(String(cString: strerror(e)))")
        }
        return (done, true)
    }

    /// Reads what is there (non-blocking): bytes read, or 0 when nothing is there yet.
    /// Throws `.disconnected` at end of stream or on a socket error.
    package static func receive(_ fd: Int32, into p: UnsafeMutableRawPointer, count: Int) throws -> Int {
        while true {
            let n = cferry_recv(fd, p, count)
            if n > 0 { return n }
            if n == 0 { throw FerryError(.disconnected, "the gateway closed the connection") }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return 0 }
            throw FerryError(.disconnected, "the connection was lost: \(String(cString: strerror(e)))")
        }
    }

    /// Reads exactly `count` bytes before `until` (the handshake).
    static func receiveExactly(_ fd: Int32, into p: UnsafeMutableRawPointer, count: Int, until: UInt64) throws {
        var got = 0
        while got < count {
            let n = try receive(fd, into: p + got, count: count - got)
            if n > 0 { got += n; continue }
            guard try waitReady(fd, write: false, until: until) else {
                throw FerryError(.timedOut, "the gateway did not answer the handshake in time")
            }
        }
    }

    /// A listening TCP socket on `host:port` (port 0: any free one) and the port it got:
    /// non-blocking, for an acceptor that waits with `waitReady`.
    package static func tcpListen(host: String, port: Int, backlog: Int32 = 256) throws -> (fd: Int32, port: Int) {
        var why = [CChar](repeating: 0, count: 256)
        let fd = cferry_tcp_listen(host, Int32(port), backlog, &why, why.count)
        if fd == -2 {
            throw FerryError(.invalidArgument, "cannot resolve \"\(host)\": " + resolverText(why))
        }
        guard fd >= 0 else { throw FerryError(.system, "cannot listen on \(host):\(port): \(String(cString: strerror(errno)))") }
        let bound = cferry_local_port(fd)
        guard bound > 0 else {
            let e = error("getsockname")
            close(fd)
            throw e
        }
        return (fd, Int(bound))
    }

    /// The next connection waiting on listening socket `fd` (nil: none now), blocking, with
    /// TCP_NODELAY and send and receive timeouts of `tickMillis` (see `receiveWaiting`).
    /// Out of descriptors is an error the caller may outlive (it backs off and tries again).
    package static func tcpAccept(_ fd: Int32, tickMillis: Int32) throws -> Int32? {
        while true {
            let c = cferry_tcp_accept(fd, tickMillis)
            if c >= 0 { return c }
            let e = errno
            switch e {
            case EINTR: continue
            // A connection that was reset before it was taken is simply gone.
            case EAGAIN, EWOULDBLOCK, ECONNABORTED, EPROTO: return nil
            default: throw error("accept", errno: e)
            }
        }
    }

    /// Reads what is there, waiting for it up to the socket's receive timeout: bytes read, or
    /// 0 when the timeout passed with nothing. Throws `.disconnected` at end of stream.
    package static func receiveWaiting(_ fd: Int32, into p: UnsafeMutableRawPointer, count: Int) throws -> Int {
        while true {
            let n = cferry_recv_wait(fd, p, count)
            if n > 0 { return n }
            if n == 0 { throw FerryError(.disconnected, "the peer closed the connection") }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return 0 }
            throw FerryError(.disconnected, "the connection was lost: \(String(cString: strerror(e)))")
        }
    }

    /// Stops both directions of a socket (wakes a thread blocked on it) without closing it.
    package static func shutdownSocket(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// Random bytes from the kernel (getrandom), for nonces.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    /// The contents of a small private file (a secret): refused when other users may read it.
    public static func readSecret(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw error("open", path) }
        defer { close(fd) }
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else { throw error("fstat", path) }
        guard st.st_mode & 0o077 == 0 else {
            throw FerryError(.permission, "\(path) may be read by other users (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it")
        }
        guard st.st_size > 0, st.st_size <= 4096 else {
            throw FerryError(.invalidArgument, "\(path): a token file holds 1 to 4096 bytes")
        }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n == out.count else { throw error("read", path) }
        while let last = out.last, last == 0x0A || last == 0x0D { out.removeLast() }
        guard out.count >= 16 else { throw FerryError(.invalidArgument, "\(path): the secret is shorter than 16 bytes") }
        return out
    }
}
