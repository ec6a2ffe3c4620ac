import Atomics
import Foundation
import XCTest
@testable import FerryCore

/// The hybrid wait's spin advisor: spinning stops when it does not pay and resumes when it does.
final class WaitStrategyTests: XCTestCase {
    func testAdvisorSleepsAtOnceAfterMissesAndProbesEverySixteenth() {
        let a = SpinAdvisor()
        for _ in 0..<(SpinAdvisor.missLimit - 1) {
            XCTAssertTrue(a.shouldSpin())
            a.record(hit: false)
        }
        XCTAssertFalse(a.sleepsAtOnce, "one miss short of the limit still spins")
        a.record(hit: false)
        XCTAssertTrue(a.sleepsAtOnce)
        let decisions = (0..<(3 * SpinAdvisor.probeEvery)).map { _ in a.shouldSpin() }
        XCTAssertEqual(decisions.filter { $0 }.count, 3, "one probe in every \(SpinAdvisor.probeEvery) waits")
        a.record(hit: true)
        XCTAssertFalse(a.sleepsAtOnce)
        XCTAssertTrue(a.shouldSpin())
    }

    /// A real futex word and a second thread that answers late, then early.
    func testHybridWaitStopsSpinningForSlowAnswersAndResumesForQuickOnes() throws {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        word.initialize(to: 0)
        let sleepers = UnsafeAtomic<UInt32>.create(0)
        defer { word.deallocate(); sleepers.destroy() }
        let point = WaitPoint(word: word, sleepers: sleepers)
        let advisor = SpinAdvisor()
        let far = System.nowNanos() + 10_000_000_000

        /// Waits for the word to reach `value`, which another thread stores after `delayMicros`.
        func waitFor(_ value: UInt32, answeredAfter delayMicros: UInt32, spin: UInt64) throws {
            nonisolated(unsafe) let point = point  // the word and its sleeper count are shared on purpose
            let t = Thread {
                usleep(delayMicros)
                point.atomicWord.store(value, ordering: .sequentiallyConsistent)
                point.wake()
            }
            t.start()
            let got: Bool? = try point.wait(strategy: .spinThenFutex(spinNanos: spin), deadline: far, advisor: advisor,
                                            poll: { point.atomicWord.load(ordering: .sequentiallyConsistent) == value ? true : nil },
                                            check: {})
            XCTAssertEqual(got, true)
            while !t.isFinished { usleep(100) }
        }
        // Answers 20 ms late against a 50 µs spin: every spin runs out.
        var v: UInt32 = 0
        for _ in 0..<SpinAdvisor.missLimit {
            v += 1
            try waitFor(v, answeredAfter: 20_000, spin: 50_000)
        }
        XCTAssertTrue(advisor.sleepsAtOnce, "after \(SpinAdvisor.missLimit) spins that ran out, hybrid sleeps at once")
        // Answers within 1 ms against a 2 s spin: the next probe finds it spinning.
        for _ in 0..<SpinAdvisor.probeEvery {
            v += 1
            try waitFor(v, answeredAfter: 1_000, spin: 2_000_000_000)
            if !advisor.sleepsAtOnce { break }
        }
        XCTAssertFalse(advisor.sleepsAtOnce, "a probe that found its answer while spinning resumes spinning")
    }
}
