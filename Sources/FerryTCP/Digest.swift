import CNIOBoringSSL

/// SHA-1, SHA-256 and HMAC-SHA256 from BoringSSL — the copy swift-nio-ssl builds for TLS,
/// which this target links anyway. Why not swift-crypto: it compiles a second BoringSSL of
/// its own (~400 C files), which made every first build and every CI run minutes longer for
/// five hash calls (the tcp:// authentication MAC, the Redis script SHA-1 and the result
/// cache's SHA-256). Nothing here is hand-written cryptography; these are thin wrappers.
package enum Digest {
    /// SHA-256 of `bytes`.
    package static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { _ = SHA256(src.baseAddress?.assumingMemoryBound(to: UInt8.self), src.count, $0.baseAddress) }
        }
        return out
    }

    /// SHA-1 of `bytes` (what Redis names a script by; not for security).
    package static func sha1(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { _ = SHA1(src.baseAddress?.assumingMemoryBound(to: UInt8.self), src.count, $0.baseAddress) }
        }
        return out
    }

    /// HMAC-SHA256 of `message` under `key`.
    package static func hmacSHA256(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        key.withUnsafeBytes { k in
            message.withUnsafeBytes { m in
                out.withUnsafeMutableBufferPointer {
                    _ = HMAC(EVP_sha256(), k.baseAddress, k.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), m.count, $0.baseAddress, &length)
                }
            }
        }
        return Array(out.prefix(Int(length)))
    }

    /// True when `mac` is the HMAC-SHA256 of `message` under `key`, compared in constant time.
    package static func isValidHMACSHA256(_ mac: [UInt8], key: [UInt8], _ message: [UInt8]) -> Bool {
        let expected = hmacSHA256(key: key, message)
        guard mac.count == expected.count else { return false }
        return mac.withUnsafeBytes { a in expected.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0 } }
    }

    /// Incremental SHA-256.
    package struct SHA256Hasher {
        private var ctx = SHA256_CTX()

        package init() { SHA256_Init(&ctx) }

        package mutating func update(_ bytes: UnsafeRawBufferPointer) {
            if bytes.count > 0 { SHA256_Update(&ctx, bytes.baseAddress, bytes.count) }
        }

        package mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

        package mutating func finalize() -> [UInt8] {
            var out = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
            out.withUnsafeMutableBufferPointer { _ = SHA256_Final($0.baseAddress, &ctx) }
            return out
        }
    }
}
