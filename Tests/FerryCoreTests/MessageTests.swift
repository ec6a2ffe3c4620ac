import XCTest
@testable import FerryCore

final class MessageTests: XCTestCase {
    func testEveryDTypeAndShapeRoundTrips() throws {
        let shapes: [[Int]] = [[], [0], [3], [2, 3], [0, 5], [1, 1, 1, 1, 1, 1, 1, 2]]
        for dtype in DType.allCases where dtype != .string && dtype != .bytes {
            for shape in shapes where !dtype.isFixedWidthString || (shape.last ?? 0) >= 1 {
                let n = shape.reduce(1, *) * dtype.itemSize!
                // UTF-32 code units below U+8000 (no surrogates): what writers accept.
                let mask: (Int) -> UInt8 = { dtype == .bool ? 1 : dtype == .utf32 ? [0xFF, 0x7F, 0, 0][$0 % 4] : 0xFF }
                let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) & mask($0) }
                let t = try Tensor(dtype: dtype, shape: shape, bytes: bytes)
                let m = Message([("t", t)], metadata: ["k": "v"])
                let back = try Message.decode(try m.encoded())
                XCTAssertEqual(back, m, "\(dtype) \(shape)")
            }
        }
    }

    func testStringsBytesAndScalars() throws {
        let m = Message([
            ("s", Tensor(strings: ["héllo", "", "😀", "x"], shape: [2, 2])),
            ("b", try Tensor(dtype: .bytes, shape: [3], bytes: [0, 1, 255])),
            ("f", Tensor(scalar: Float(2.5))),
        ])
        let back = try Message.decode(try m.encoded())
        XCTAssertEqual(try back["s"]!.strings(), ["héllo", "", "😀", "x"])
        XCTAssertEqual(back["b"]!.bytes, [0, 1, 255])
        XCTAssertEqual(try back["f"]!.values(as: Float.self), [2.5])
        XCTAssertEqual(back["f"]!.shape, [])
    }

    func testFixedWidthStringsAreNumpysLayoutAndOnlyUnicodeScalars() throws {
        // numpy's <U3 ["hé", "😀", ""] and S3 [b"a\0b", b""]: the width is the last dimension.
        let units: [UInt32] = [0x68, 0xE9, 0, 0x1F600, 0, 0, 0, 0, 0]
        let u = try Tensor(dtype: .utf32, shape: [3, 3], bytes: units.withUnsafeBytes { Array($0) })
        let b = try Tensor(dtype: .fixedBytes, shape: [2, 3], bytes: [0x61, 0, 0x62, 0, 0, 0])
        let back = try Message.decode(try Message([("u", u), ("b", b)]).encoded())
        XCTAssertEqual(try back["u"]!.strings(), ["hé", "😀", ""])
        XCTAssertEqual(try back["b"]!.byteStrings(), [[0x61, 0, 0x62], []])
        // A lone surrogate or a value past U+10FFFF is refused when written, naming the string…
        for bad: UInt32 in [0xD800, 0xDFFF, 0x110000, 0xFFFF_FFFF] {
            let t = try Tensor(dtype: .utf32, shape: [2, 2], bytes: ([0x41, 0, 0x42, bad] as [UInt32]).withUnsafeBytes { Array($0) })
            XCTAssertThrowsError(try Message([("u", t)]).encoded()) { e in
                XCTAssertEqual((e as? FerryError)?.code, .invalidArgument)
                XCTAssertTrue("\(e)".contains("string 1"), "\(e)")
            }
        }
        // …and when read (another process wrote it): the decoder checks every code unit.
        var good = try Message([("u", u)]).encoded()
        let at = try XCTUnwrap(good.indices.first { i in i + 4 <= good.count && good[i..<i + 4].elementsEqual([0x00, 0xF6, 0x01, 0x00]) })
        good[at + 1] = 0xD8; good[at + 2] = 0; good[at + 3] = 0  // U+1F600 → U+D800
        XCTAssertThrowsError(try Message.decode(good)) { XCTAssertEqual(($0 as? FerryError)?.code, .malformed) }
        // A fixed-width string tensor needs its width dimension, at least 1.
        XCTAssertThrowsError(try Message([("u", try Tensor(dtype: .utf32, shape: [], bytes: [0x41, 0, 0, 0]))]).encoded())
        XCTAssertThrowsError(try Message([("u", try Tensor(dtype: .fixedBytes, shape: [3, 0], bytes: []))]).encoded())
    }

    func testWriterRejectsWhatDoesNotFit() throws {
        var buf = [UInt8](repeating: 0, count: 256)
        try buf.withUnsafeMutableBytes { raw in
            var w = MessageWriter(base: raw.baseAddress!, capacity: raw.count, limitHint: "raise slot_size")
            XCTAssertThrowsError(try w.addTensor(name: "big", dtype: .uint8, shape: [1000])) { e in
                XCTAssertEqual((e as? FerryError)?.code, .tooLarge)
                XCTAssertTrue("\(e)".contains("slot_size"))
            }
            XCTAssertThrowsError(try w.addTensor(name: "x", dtype: .uint8, shape: Array(repeating: 1, count: 9)))
            _ = try w.addTensor(name: "ok", dtype: .uint8, shape: [4])
            XCTAssertThrowsError(try w.addTensor(name: "ok", dtype: .uint8, shape: [4]), "duplicate names")
        }
    }

    func testDecoderRejectsTruncationAtEveryLength() throws {
        let good = try Message([("a", Tensor([Int32](0..<10))), ("s", Tensor(strings: ["x", "yz"]))], metadata: ["k": "v"]).encoded()
        for n in 0..<good.count {
            XCTAssertThrowsError(try Message.decode(Array(good[0..<n])), "length \(n)") { e in
                XCTAssertEqual((e as? FerryError)?.code, .malformed)
            }
        }
        XCTAssertNoThrow(try Message.decode(good))
    }

    func testDecoderSurvivesEverySingleByteCorruption() throws {
        let good = try Message([("a", Tensor([Int32](0..<10))), ("s", Tensor(strings: ["x", "yz"]))], metadata: ["k": "v"]).encoded()
        for pos in 0..<good.count {
            for value: UInt8 in [0, 1, 7, 0x80, 0xFF] {
                var bad = good
                bad[pos] = value
                do { _ = try Message.decode(bad) } catch let e as FerryError {
                    XCTAssertTrue(e.code == .malformed || e.code == .version)
                }
            }
        }
    }

    func testSegmentHeaderValidation() throws {
        var header = [UInt8](repeating: 0, count: 4096)
        XCTAssertThrowsError(try header.withUnsafeBytes { try SegmentLayout.validate($0, fileSize: 1 << 20) })
        header.withUnsafeMutableBytes { raw in
            let p = raw.baseAddress!
            p.put(SegmentLayout.magic, at: 0)
            p.put(SegmentLayout.version, at: 8)
            p.put(UInt32(4096), at: 12)
            p.put(UInt32(2), at: 16)
            p.put(UInt64(8192), at: 24)
            p.put(UInt64(SegmentLayout.slotsOffset(slots: 2)), at: 32)
            p.put(UInt64(SegmentLayout.slotsOffset(slots: 2) + 2 * 8192), at: 40)
        }
        let total = SegmentLayout.slotsOffset(slots: 2) + 2 * 8192
        XCTAssertEqual(try header.withUnsafeBytes { try SegmentLayout.validate($0, fileSize: total) }.slots, 2)
        XCTAssertThrowsError(try header.withUnsafeBytes { try SegmentLayout.validate($0, fileSize: total - 1) })
        header[16] = 0
        XCTAssertThrowsError(try header.withUnsafeBytes { try SegmentLayout.validate($0, fileSize: total) })
    }

    func testEndpointParsing() throws {
        let e = try Endpoint("shm://digits?slots=4&slot_size=16M&wait=spin&timeout_ms=250")
        XCTAssertEqual(e.name, "digits")
        XCTAssertEqual(e.slots, 4)
        XCTAssertEqual(e.slotSize, 16 << 20)
        XCTAssertEqual(e.wait, .spin)
        XCTAssertEqual(e.timeoutNanos, 250_000_000)
        XCTAssertEqual(try Endpoint("shm://x?spin_us=5").wait, .spinThenFutex(spinNanos: 5000))
        for bad in ["digits", "shm://a/b", "shm://x?slots=0", "shm://x?bogus=1", "shm://x?wait=nap", "tcp://h:1", "shm://x?slot_size=3Q"] {
            XCTAssertThrowsError(try Endpoint(bad), bad)
        }
    }

    /// Found by the fuzzer: a valid message that did not survive decode → encode → decode.
    func testEveryDecodedMessageReencodes() throws {
        let dir = repoRoot + "/fuzz/corpus/message"
        for file in try FileManager.default.contentsOfDirectory(atPath: dir).sorted() {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file)))
            guard let m = try? Message.decode(bytes) else { continue }
            do {
                let again = try Message.decode(try m.encoded())
                XCTAssertEqual(again, m, file)
            } catch { XCTFail("\(file): \(error)") }
        }
    }
}
