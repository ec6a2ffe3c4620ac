import XCTest
import FerryTCP

/// The hashes behind tcp:// authentication, Redis scripts and the result cache, against
/// published test vectors (FIPS 180 for SHA, RFC 4231 for HMAC-SHA256).
final class DigestTests: XCTestCase {
    func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    func testKnownVectors() {
        XCTAssertEqual(hex(Digest.sha256(Array("abc".utf8))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex(Digest.sha1(Array("abc".utf8))), "a9993e364706816aba3e25717850c26c9cd0d89d")
        let mac = Digest.hmacSHA256(key: Array("Jefe".utf8), Array("what do ya want for nothing?".utf8))
        XCTAssertEqual(hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        XCTAssertTrue(Digest.isValidHMACSHA256(mac, key: Array("Jefe".utf8), Array("what do ya want for nothing?".utf8)))
        var wrong = mac
        wrong[31] ^= 1
        XCTAssertFalse(Digest.isValidHMACSHA256(wrong, key: Array("Jefe".utf8), Array("what do ya want for nothing?".utf8)))
        XCTAssertFalse(Digest.isValidHMACSHA256(Array(mac.prefix(16)), key: Array("Jefe".utf8), Array("what do ya want for nothing?".utf8)))
        var h = Digest.SHA256Hasher()
        h.update(Array("a".utf8))
        h.update(Array("bc".utf8))
        XCTAssertEqual(hex(h.finalize()), hex(Digest.sha256(Array("abc".utf8))))
    }
}
