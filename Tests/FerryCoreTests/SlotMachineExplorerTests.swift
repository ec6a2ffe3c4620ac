import Foundation
import XCTest
@testable import FerryCore

/// An explicit-state explorer of the slot protocol: every interleaving of claim, write,
/// publish, take, read, reply, complete, read reply, release, timeout, cancel, crash, restart
/// and recovery, for 2 clients × 2 workers × 2 slots, each step being one atomic operation
/// that calls the same `SlotMachine` function the channel uses (`ShmChannel.transition`
/// installs exactly what these functions return).
///
/// Invariants, checked in every reachable state and at every data access:
/// - a client reads only its own reply (the reply tag equals its request tag);
/// - data is written and read only by the slot's current owner: the client while CLAIMED by
///   it in its generation, the worker while BUSY/ABANDONED to it in its generation;
/// - no slot is double-owned: what every live actor believes it holds matches the word;
/// - no slot is lost: when nothing can move any more, every slot is FREE (crashes included).
final class SlotExplorer {
    struct Config {
        var clients = 2, workers = 2, slots = 2, callsPerClient = Int(ProcessInfo.processInfo.environment["FERRY_EXPLORER_CALLS"] ?? "") ?? 1
        var crashes = true, workerRestarts = 1
    }

    enum ClientPhase: Hashable {
        case idle                       // between calls (or done when `calls` is used up)
        case claimed(slot: Int, gen: UInt32)
        case written(slot: Int, gen: UInt32)
        case waiting(slot: Int, gen: UInt32)
        case replied(slot: Int, gen: UInt32)
        case read(slot: Int, gen: UInt32)
        case dead
    }

    enum WorkerPhase: Hashable {
        case idle
        case took(slot: Int, gen: UInt32)
        case readRequest(slot: Int, gen: UInt32, tag: Int8)
        case wroteReply(slot: Int, gen: UInt32)
        case recovering(next: Int)      // a restarted process freeing what its token's predecessor held
        case dead
    }

    struct State: Hashable {
        var words: [UInt64]
        var requestTag: [Int8]
        var replyTag: [Int8]
        var clients: [ClientPhase]
        var callsDone: [Int8]
        var workers: [WorkerPhase]
        var restarts: [Int8]
    }

    struct Violation: Error, CustomStringConvertible { let description: String }

    let cfg: Config
    var visited = [State: Double]()  // state → number of complete interleavings from it
    var transitions = 0
    var terminals = 0

    init(config: Config) {
        cfg = config
    }

    func clientID(_ c: Int) -> PeerID { PeerID(1 + c) }
    func workerID(_ w: Int) -> PeerID { PeerID(1 + cfg.clients + w) }
    func tag(_ c: Int, _ call: Int8) -> Int8 { Int8(c * 10) + call + 1 }

    func alive(_ s: State, _ id: PeerID) -> Bool {
        if id == 0 { return true }
        if Int(id) <= cfg.clients { return s.clients[Int(id) - 1] != .dead }
        return s.workers[Int(id) - 1 - cfg.clients] != .dead
    }

    /// Applies one SlotMachine decision atomically, as one CAS on the current word.
    func cas(_ s: inout State, _ slot: Int, _ next: SlotWord?) -> Bool {
        guard let next else { return false }
        s.words[slot] = next.raw
        return true
    }

    func word(_ s: State, _ slot: Int) -> SlotWord { SlotWord(raw: s.words[slot]) }

    /// Every state reachable in one step from `s`.
    func successors(_ s: State) throws -> [State] {
        var out: [State] = []
        // Clients.
        for c in 0..<cfg.clients {
            let me = clientID(c)
            switch s.clients[c] {
            case .dead: continue
            case .idle:
                guard Int(s.callsDone[c]) < cfg.callsPerClient else { break }
                var anyFree = false
                for i in 0..<cfg.slots {
                    var n = s
                    if cas(&n, i, SlotMachine.claim(word(s, i), client: me)) {
                        anyFree = true
                        n.clients[c] = .claimed(slot: i, gen: word(n, i).gen)
                        out.append(n)
                    }
                }
                if !anyFree {  // claim deadline: the call fails with Busy
                    var n = s; n.callsDone[c] += 1; out.append(n)
                }
            case .claimed(let i, let g):
                guard word(s, i) == SlotWord(.claimed, gen: g, client: me) else { throw Violation(description: "client \(c) writes slot \(i) it does not own: \(word(s, i))") }
                var n = s; n.requestTag[i] = tag(c, s.callsDone[c]); n.clients[c] = .written(slot: i, gen: g); out.append(n)
                var k = s  // begin, then close without sending
                if cas(&k, i, SlotMachine.release(word(s, i), gen: g, client: me)) { k.clients[c] = .idle; k.callsDone[c] += 1; out.append(k) }
            case .written(let i, let g):
                var n = s
                if cas(&n, i, SlotMachine.publish(word(s, i), gen: g, client: me)) { n.clients[c] = .waiting(slot: i, gen: g); out.append(n) }
                else { throw Violation(description: "client \(c) could not publish its own slot \(i): \(word(s, i))") }
                var k = s
                if cas(&k, i, SlotMachine.release(word(s, i), gen: g, client: me)) { k.clients[c] = .idle; k.callsDone[c] += 1; out.append(k) }
            case .waiting(let i, let g):
                switch SlotMachine.progress(word(s, i), gen: g, client: me) {
                case .replied: var n = s; n.clients[c] = .replied(slot: i, gen: g); out.append(n)
                case .lost: var n = s; n.clients[c] = .idle; n.callsDone[c] += 1; out.append(n)  // PeerDied
                case .waiting: break
                }
                // The deadline lands now.
                var n = s
                let (next, r) = SlotMachine.giveUp(word(s, i), gen: g, client: me)
                _ = cas(&n, i, next)
                if r == .replied { n.clients[c] = .replied(slot: i, gen: g) } else { n.clients[c] = .idle; n.callsDone[c] += 1 }
                if n != s { out.append(n) }
                // No server left: the client's check withdraws what no worker took.
                if (0..<cfg.workers).allSatisfy({ s.workers[$0] == .dead }) {
                    var k = s
                    if cas(&k, i, SlotMachine.withdraw(word(s, i), gen: g, client: me)) { k.clients[c] = .idle; k.callsDone[c] += 1; out.append(k) }
                }
            case .replied(let i, let g):
                guard word(s, i) == SlotWord(.done, gen: g, client: me, worker: word(s, i).worker) else {
                    throw Violation(description: "client \(c) reads a reply in slot \(i) it does not own: \(word(s, i))")
                }
                let mine = tag(c, s.callsDone[c])
                guard s.replyTag[i] == mine else {
                    throw Violation(description: "client \(c) got reply \(s.replyTag[i]) for request \(mine) (slot \(i))")
                }
                var n = s; n.clients[c] = .read(slot: i, gen: g); out.append(n)
            case .read(let i, let g):
                var n = s
                if cas(&n, i, SlotMachine.release(word(s, i), gen: g, client: me)) { n.clients[c] = .idle; n.callsDone[c] += 1; out.append(n) }
                else { throw Violation(description: "client \(c) could not release its answered slot \(i): \(word(s, i))") }
            }
            if cfg.crashes { var n = s; n.clients[c] = .dead; out.append(n) }
        }
        // Workers.
        for w in 0..<cfg.workers {
            let me = workerID(w)
            func owns(_ i: Int, _ g: UInt32) -> Bool {
                let x = word(s, i)
                return x.gen == g && x.worker == me && (x.state == .busy || x.state == .abandoned)
            }
            switch s.workers[w] {
            case .dead:
                if Int(s.restarts[w]) < cfg.workerRestarts {  // a new process takes the same token
                    var n = s; n.workers[w] = .recovering(next: 0); n.restarts[w] += 1; out.append(n)
                }
                continue
            case .recovering(let i):
                var n = s
                if i == cfg.slots { n.workers[w] = .idle }
                else {
                    let x = word(s, i)
                    if x.client == me || x.worker == me {
                        _ = cas(&n, i, SlotMachine.recover(x, alive: { $0 != me && self.alive(s, $0) }))
                    }
                    n.workers[w] = .recovering(next: i + 1)
                }
                out.append(n)
            case .idle:
                for i in 0..<cfg.slots {
                    var n = s
                    if cas(&n, i, SlotMachine.take(word(s, i), worker: me)) { n.workers[w] = .took(slot: i, gen: word(n, i).gen); out.append(n) }
                }
            case .took(let i, let g):
                guard owns(i, g) else { throw Violation(description: "worker \(w) reads slot \(i) it does not own: \(word(s, i))") }
                var n = s; n.workers[w] = .readRequest(slot: i, gen: g, tag: s.requestTag[i]); out.append(n)
            case .readRequest(let i, let g, let t):
                guard owns(i, g) else { throw Violation(description: "worker \(w) writes a reply into slot \(i) it does not own: \(word(s, i))") }
                var n = s; n.replyTag[i] = t; n.workers[w] = .wroteReply(slot: i, gen: g); out.append(n)
            case .wroteReply(let i, let g):
                var n = s
                let (next, r) = SlotMachine.complete(word(s, i), gen: g, worker: me)
                guard r != .lost else { throw Violation(description: "worker \(w) lost slot \(i) while alive: \(word(s, i))") }
                _ = cas(&n, i, next); n.workers[w] = .idle; out.append(n)
            }
            if cfg.crashes { var n = s; n.workers[w] = .dead; out.append(n) }
        }
        // Recovery by any live process (sweeps, a waiting client's liveness check).
        if s.clients.contains(where: { $0 != .dead }) || s.workers.contains(where: { $0 != .dead }) {
            for i in 0..<cfg.slots {
                var n = s
                if cas(&n, i, SlotMachine.recover(word(s, i), alive: { self.alive(s, $0) })) { out.append(n) }
            }
        }
        return out
    }

    /// What every live actor believes it owns must match the words.
    func checkOwnership(_ s: State) throws {
        for c in 0..<cfg.clients {
            let me = clientID(c)
            switch s.clients[c] {
            case .claimed(let i, let g), .written(let i, let g):
                guard word(s, i) == SlotWord(.claimed, gen: g, client: me) else { throw Violation(description: "client \(c) believes it holds slot \(i) but it is \(word(s, i))") }
            case .replied(let i, let g), .read(let i, let g):
                let x = word(s, i)
                guard x.state == .done, x.gen == g, x.client == me else { throw Violation(description: "client \(c) believes it holds answered slot \(i) but it is \(x)") }
            default: break
            }
        }
        for w in 0..<cfg.workers {
            switch s.workers[w] {
            case .took(let i, let g), .readRequest(let i, let g, _), .wroteReply(let i, let g):
                let x = word(s, i)
                guard x.gen == g, x.worker == workerID(w), x.state == .busy || x.state == .abandoned else {
                    throw Violation(description: "worker \(w) believes it holds slot \(i) but it is \(x)")
                }
            default: break
            }
        }
    }

    /// Depth-first over all interleavings (memoised): returns the number of complete ones.
    func explore(_ s: State) throws -> Double {
        if let n = visited[s] { return n }
        try checkOwnership(s)
        let next = try successors(s)
        transitions += next.count
        var paths = 0.0
        if next.isEmpty {
            terminals += 1
            // Nothing can move: a process that attaches now sweeps once (what every new
            // client and worker does), and then every slot must be free.
            for i in 0..<cfg.slots {
                var x = word(s, i)
                if let r = SlotMachine.recover(x, alive: { self.alive(s, $0) }) { x = r }
                guard x.state == .free else {
                    throw Violation(description: "slot \(i) lost: \(x) when nothing can move (clients \(s.clients), workers \(s.workers))")
                }
            }
            paths = 1
        } else {
            for n in next { paths += try explore(n) }
        }
        visited[s] = paths
        return paths
    }

    func run() throws -> (states: Int, transitions: Int, terminals: Int, interleavings: Double) {
        let start = State(words: Array(repeating: SlotWord(.free, gen: 0).raw, count: cfg.slots),
                          requestTag: Array(repeating: 0, count: cfg.slots), replyTag: Array(repeating: 0, count: cfg.slots),
                          clients: Array(repeating: .idle, count: cfg.clients), callsDone: Array(repeating: 0, count: cfg.clients),
                          workers: Array(repeating: .idle, count: cfg.workers), restarts: Array(repeating: 0, count: cfg.workers))
        let n = try explore(start)
        return (visited.count, transitions, terminals, n)
    }

}

final class SlotMachineExplorerTests: XCTestCase {
    typealias State = SlotExplorer.State
    typealias Config = SlotExplorer.Config

    func explore(_ cfg: Config) throws {
        let r = try SlotExplorer(config: cfg).run()
        print("explorer: \(cfg.clients) clients × \(cfg.callsPerClient) calls, \(cfg.workers) workers (crashes: \(cfg.crashes), \(cfg.workerRestarts) restart each), \(cfg.slots) slots: \(r.states) states, \(r.transitions) transitions, \(r.terminals) final states, \(String(format: "%.3g", r.interleavings)) complete interleavings — no violation")
        XCTAssertGreaterThan(r.terminals, 0)
    }

    /// Every step of every actor may be its last (crash), and a crashed worker's token is
    /// taken over by a restarted process. `FERRY_EXPLORER_CALLS=2` (make soak) explores two
    /// calls per client: 7.3 million states.
    func testEveryInterleavingOfTwoClientsTwoWorkersTwoSlots() throws {
        try explore(Config())
    }

    /// Two calls per client (each slot reused by several calls), every step a possible
    /// timeout, no crashes: the late-reply races in isolation.
    func testEveryInterleavingOfTwoCallsPerClientWithTimeouts() throws {
        try explore(Config(callsPerClient: 2, crashes: false, workerRestarts: 0))
    }

    /// The explorer must catch the bug this protocol fixed: a timeout that frees a slot a
    /// worker holds (acting on a stale read instead of the CAS result) lets the worker's late
    /// reply land in the slot's next use.
    func testTheExplorerCatchesTheOldTimeoutRace() throws {
        var s = State(words: [SlotWord(.free, gen: 0).raw], requestTag: [0], replyTag: [0],
                      clients: [.idle, .idle], callsDone: [0, 0], workers: [.idle], restarts: [1])
        let e = SlotExplorer(config: Config(clients: 2, workers: 1, slots: 1, callsPerClient: 1, crashes: false, workerRestarts: 0))
        // Client 0 claims, writes, publishes; the worker takes it.
        s = try e.successors(s).first { $0.clients[0] != .idle && $0.clients[0] != .dead }!
        s = try e.successors(s).first { if case .written = $0.clients[0] { return true }; return false }!
        s = try e.successors(s).first { if case .waiting = $0.clients[0] { return true }; return false }!
        s = try e.successors(s).first { if case .took = $0.workers[0] { return true }; return false }!
        // The old timeout branch: it saw READY, its CAS failed, and it freed the slot anyway.
        s.words[0] = SlotWord(.free, gen: SlotWord(raw: s.words[0]).gen).raw
        s.clients[0] = .idle; s.callsDone[0] = 1
        XCTAssertThrowsError(try e.explore(s)) { error in
            XCTAssertTrue("\(error)".contains("does not own") || "\(error)".contains("got reply") || "\(error)".contains("believes"), "\(error)")
        }
    }
}
