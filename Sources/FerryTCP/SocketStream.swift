import CNIOBoringSSL
import FerryCore
import Synchronization

/// The byte stream of one client connection: a non-blocking TCP socket, optionally wrapped in
/// TLS (BoringSSL, the copy swift-nio-ssl builds). Reads return 0 when nothing is there yet
/// (the caller waits with poll), so plain and TLS connections wait the same way.
package final class SocketStream: @unchecked Sendable {
    package let fd: Int32
    private let tls: TLSSession?

    /// Wraps a connected socket; with `tls`, completes the TLS handshake by `until`.
    package init(fd: Int32, tls: TLSOptions?, host: String, until: UInt64) throws {
        self.fd = fd
        self.tls = try tls.map { try TLSSession(fd: fd, host: host, options: $0, until: until) }
    }

    /// Bytes read (0: nothing there yet). Throws `.disconnected` at end of stream.
    package func receive(into p: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let tls { return try tls.read(p, count) }
        return try System.receive(fd, into: p, count: count)
    }

    /// Sends all of `bytes` before `until` (see `System.sendAll`).
    package func sendAll(_ bytes: UnsafeRawBufferPointer, until: UInt64) throws -> (sent: Int, complete: Bool) {
        if let tls { return try tls.writeAll(bytes, fd: fd, until: until) }
        return try System.sendAll(fd, bytes, until: until)
    }

    /// Sends `pieces` one after the other, as one stream of bytes, before `until`: a gathered
    /// write (sendmsg) on a plain socket, record after record over TLS.
    package func sendAll(_ pieces: [UnsafeRawBufferPointer], until: UInt64) throws -> (sent: Int, complete: Bool) {
        guard let tls else { return try System.sendAll(fd, pieces, until: until) }
        var total = 0
        for p in pieces where p.count > 0 {
            let (n, complete) = try tls.writeAll(p, fd: fd, until: total == 0 ? until : until &+ 1_000_000_000)
            total += n
            if !complete { return (total, false) }
        }
        return (total, true)
    }

    /// Reads exactly `count` bytes before `until` (the handshake).
    func receiveExactly(into p: UnsafeMutableRawPointer, count: Int, until: UInt64) throws {
        var got = 0
        while got < count {
            let n = try receive(into: p + got, count: count - got)
            if n > 0 { got += n; continue }
            guard try System.waitReady(fd, write: false, until: until) else {
                throw FerryError(.timedOut, "the gateway did not answer the handshake in time")
            }
        }
    }
}

/// One TLS client session over a non-blocking socket. The reader and the senders share the
/// SSL object, so every SSL call holds `lock` (never while waiting in poll).
final class TLSSession: @unchecked Sendable {
    private let ctx: OpaquePointer
    private let ssl: OpaquePointer
    private let lock = Locked<Int>(0)

    init(fd: Int32, host: String, options: TLSOptions, until: UInt64) throws {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSSession.error("SSL_CTX_new") }
        self.ctx = ctx
        guard let ssl = SSL_new(ctx) else {
            SSL_CTX_free(ctx)
            throw TLSSession.error("SSL_new")
        }
        self.ssl = ssl
        _ = SSL_CTX_set_min_proto_version(ctx, UInt16(TLS1_2_VERSION))
        let bundle = options.caFile ?? TLSSession.systemBundle
        guard SSL_CTX_load_verify_locations(ctx, bundle, nil) == 1 else {
            throw TLSSession.error("cannot load the certificate authorities in \(bundle)")
        }
        SSL_set_verify(ssl, SSL_VERIFY_PEER, nil)
        // The certificate must name the host the URL names (a DNS name or an IP address).
        if TLSSession.isIPAddress(host) {
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 else {
                throw TLSSession.error("bad address \(host)")
            }
        } else {
            _ = SSL_set_tlsext_host_name(ssl, host)
            guard SSL_set1_host(ssl, host) == 1 else { throw TLSSession.error("bad host name \(host)") }
        }
        guard SSL_set_fd(ssl, fd) == 1 else { throw TLSSession.error("SSL_set_fd") }
        while true {
            let r = SSL_connect(ssl)
            if r == 1 { break }
            let e = SSL_get_error(ssl, r)
            if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE {
                guard try System.waitReady(fd, write: e == SSL_ERROR_WANT_WRITE, until: until) else {
                    throw FerryError(.timedOut, "the TLS handshake with \(host) did not finish in time")
                }
                continue
            }
            // "Invalid call": no certificate was checked yet, so the failure is not about trust.
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK && verify != X509_V_ERR_INVALID_CALL {
                let why = String(cString: X509_verify_cert_error_string(Int(verify)))
                throw FerryError(.permission, "the gateway's TLS certificate is not trusted: \(why) (give its authority with ca_file=PATH)")
            }
            let failure = TLSSession.error("TLS handshake with \(host) failed")
            // What a plain tcp:// gateway's frame looks like to a TLS client: not a TLS record.
            if ["WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_TOO_LARGE", "UNEXPECTED_RECORD", "HTTP_REQUEST"]
                .contains(where: { failure.message.contains($0) }) || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN {
                throw FerryError(.protocolViolation, "the gateway at \(host) does not speak TLS (\(failure.message)): drop tls=1 from the URL, "
                    + "or start the gateway with --tls-cert and --tls-key")
            }
            throw failure
        }
    }

    deinit {
        SSL_free(ssl)
        SSL_CTX_free(ctx)
    }

    /// Debian's (and most distributions') bundle of trusted authorities.
    static let systemBundle = "/etc/ssl/certs/ca-certificates.crt"

    static func isIPAddress(_ host: String) -> Bool {
        host.contains(":") || (host.split(separator: ".").count == 4 && host.allSatisfy { $0 == "." || $0.isNumber })
    }

    /// An error with BoringSSL's reason for the last failure.
    static func error(_ what: String) -> FerryError {
        let code = ERR_get_error()
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        ERR_clear_error()
        let why = code == 0 ? "" : ": " + String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return FerryError(.disconnected, "TLS: \(what)\(why)")
    }

    /// Decrypted bytes read (0: nothing there yet; the caller polls the socket).
    func read(_ p: UnsafeMutableRawPointer, _ count: Int) throws -> Int {
        let (r, e) = lock.withLock { _ -> (Int32, Int32) in
            let r = SSL_read(ssl, p, Int32(clamping: count))
            return (r, r > 0 ? 0 : SSL_get_error(ssl, r))
        }
        if r > 0 { return Int(r) }
        if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { return 0 }
        if e == SSL_ERROR_ZERO_RETURN { throw FerryError(.disconnected, "the gateway closed the connection") }
        throw TLSSession.error("read failed")
    }

    /// Encrypts and sends all of `bytes` before `until`.
    func writeAll(_ bytes: UnsafeRawBufferPointer, fd: Int32, until: UInt64) throws -> (sent: Int, complete: Bool) {
        var done = 0
        while done < bytes.count {
            let chunk = min(bytes.count - done, 1 << 20)
            let (r, e) = lock.withLock { _ -> (Int32, Int32) in
                let r = SSL_write(ssl, bytes.baseAddress! + done, Int32(chunk))
                return (r, r > 0 ? 0 : SSL_get_error(ssl, r))
            }
            if r > 0 { done += Int(r); continue }
            if e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ {
                // A TLS record half written must be finished with the same bytes: keep going
                // past the deadline only then (bounded by the socket accepting them).
                guard try System.waitReady(fd, write: e == SSL_ERROR_WANT_WRITE, until: done == 0 ? until : until &+ 1_000_000_000) else {
                    return (done, false)
                }
                continue
            }
            throw TLSSession.error("write failed")
        }
        return (done, true)
    }
}
