/// The slot state machine of a shared-memory channel, as pure functions of one slot's
/// control word (docs/protocol.md, "Slot state machine").
///
/// The channel (`ShmChannel`) and the exhaustive explorer in the tests run these same
/// functions: every step of every actor reads the word, asks a function here what the next
/// word is, and installs it with one compare-and-swap. A failed CAS hands back the word it
/// found, and the actor decides again from that value, never from an earlier read.
///
///     FREE ─claim─▶ CLAIMED ─publish─▶ READY ─take─▶ BUSY ─complete─▶ DONE ─release─▶ FREE
///       ▲   ◀─release (never sent)─┘     │ withdraw       │ abandon            (client)
///       └───────────────────────────────┘ (timeout)       ▼
///       ◀──────────────── complete (worker, late) ── ABANDONED
///
/// Ownership is part of the word: the client's and the worker's liveness tokens (`PeerID`)
/// are written by the same CAS that claims or takes the slot, so a process that dies at any
/// instant leaves a word that names it, and `recover` can free what it held.
public enum SlotState: UInt8, Sendable, CaseIterable {
    /// Nobody owns the slot.
    case free = 0
    /// A client owns it and is writing its request.
    case claimed
    /// The request is published; a worker may take it.
    case ready
    /// A worker is answering it.
    case busy
    /// The reply is in the slot; the client owns it again.
    case done
    /// The client gave up waiting; the worker still owns it and frees it when done.
    case abandoned
}

/// A process's liveness token in one segment: 1...1023 (0 means "nobody").
public typealias PeerID = UInt16

/// One slot's 64-bit control word: state (bits 0-3), client token (4-13), worker token
/// (14-23), generation (32-63). The generation is bumped by every claim, so an actor that
/// acted on one use of the slot can never match a word of the next use.
public struct SlotWord: Hashable, Sendable, CustomStringConvertible {
    /// The word as stored in shared memory.
    public var raw: UInt64

    /// Most peers a segment can track.
    public static let maxPeer: PeerID = 1023

    /// Wraps a stored word.
    public init(raw: UInt64) { self.raw = raw }

    /// Builds a word from its fields.
    public init(_ state: SlotState, gen: UInt32, client: PeerID = 0, worker: PeerID = 0) {
        raw = UInt64(state.rawValue) | UInt64(client & 0x3FF) << 4 | UInt64(worker & 0x3FF) << 14 | UInt64(gen) << 32
    }

    /// The state; an unknown value (a corrupted word) reads as nil.
    public var state: SlotState? { SlotState(rawValue: UInt8(raw & 0xF)) }
    /// The use count of the slot.
    public var gen: UInt32 { UInt32(truncatingIfNeeded: raw >> 32) }
    /// The client that owns this use (0 when free).
    public var client: PeerID { PeerID(truncatingIfNeeded: (raw >> 4) & 0x3FF) }
    /// The worker that took this use (0 until taken).
    public var worker: PeerID { PeerID(truncatingIfNeeded: (raw >> 14) & 0x3FF) }

    public var description: String {
        "\(state.map { "\($0)" } ?? "corrupt(\(raw & 0xF))")#\(gen)(c\(client),w\(worker))"
    }
}

/// The transitions. Each returns the word to install (nil: this actor has nothing to do),
/// and where an outcome matters, what installing it means.
public enum SlotMachine {
    /// Client: claims a free slot for a new use (the generation moves on).
    public static func claim(_ w: SlotWord, client me: PeerID) -> SlotWord? {
        guard w.state == .free else { return nil }
        return SlotWord(.claimed, gen: w.gen &+ 1, client: me)
    }

    /// Client: publishes the request written in its claimed slot.
    public static func publish(_ w: SlotWord, gen: UInt32, client me: PeerID) -> SlotWord? {
        guard w == SlotWord(.claimed, gen: gen, client: me) else { return nil }
        return SlotWord(.ready, gen: gen, client: me)
    }

    /// Worker: takes a published request.
    public static func take(_ w: SlotWord, worker me: PeerID) -> SlotWord? {
        guard w.state == .ready, w.worker == 0 else { return nil }
        return SlotWord(.busy, gen: w.gen, client: w.client, worker: me)
    }

    /// What a worker's completion did.
    public enum Completion: Equatable, Sendable {
        /// The reply is delivered: the client owns the slot again.
        case delivered
        /// The client had given up: the slot is free again.
        case freed
        /// The slot is no longer this worker's (it was judged dead and recovered).
        case lost
    }

    /// Worker: finishes the use it took. Delivers the reply, or frees an abandoned slot.
    public static func complete(_ w: SlotWord, gen: UInt32, worker me: PeerID) -> (SlotWord?, Completion) {
        guard w.gen == gen, w.worker == me else { return (nil, .lost) }
        switch w.state {
        case .busy: return (SlotWord(.done, gen: gen, client: w.client, worker: me), .delivered)
        case .abandoned: return (SlotWord(.free, gen: gen), .freed)
        default: return (nil, .lost)
        }
    }

    /// What a client sees of its own call.
    public enum Progress: Equatable, Sendable {
        /// Published or being answered.
        case waiting
        /// Its reply is in the slot.
        case replied
        /// The slot is not its own any more: the worker died and the slot was recovered.
        case lost
    }

    /// Client: where its call stands.
    public static func progress(_ w: SlotWord, gen: UInt32, client me: PeerID) -> Progress {
        guard w.gen == gen, w.client == me else { return .lost }
        switch w.state {
        case .ready, .busy: return .waiting
        case .done: return .replied
        default: return .lost
        }
    }

    /// What a client's timeout did.
    public enum GiveUp: Equatable, Sendable {
        /// No worker had taken the request: it is withdrawn and the slot is free.
        case withdrawn
        /// A worker holds it: the slot is left to that worker, who frees it when done.
        case abandoned
        /// The reply arrived after all: use it.
        case replied
        /// The slot was already recovered (the worker died).
        case lost
    }

    /// Client: gives up waiting at the deadline.
    public static func giveUp(_ w: SlotWord, gen: UInt32, client me: PeerID) -> (SlotWord?, GiveUp) {
        guard w.gen == gen, w.client == me else { return (nil, .lost) }
        switch w.state {
        case .ready: return (SlotWord(.free, gen: gen), .withdrawn)
        case .busy: return (SlotWord(.abandoned, gen: gen, client: me, worker: w.worker), .abandoned)
        case .done: return (nil, .replied)
        default: return (nil, .lost)
        }
    }

    /// Client: takes back a request no worker has taken (the channel lost its servers).
    public static func withdraw(_ w: SlotWord, gen: UInt32, client me: PeerID) -> SlotWord? {
        guard w == SlotWord(.ready, gen: gen, client: me) else { return nil }
        return SlotWord(.free, gen: gen)
    }

    /// Client: frees the slot it owns (claimed and never sent, or answered and read).
    public static func release(_ w: SlotWord, gen: UInt32, client me: PeerID) -> SlotWord? {
        guard w.gen == gen, w.client == me, w.state == .claimed || w.state == .done else { return nil }
        return SlotWord(.free, gen: gen)
    }

    /// Anyone: frees what dead processes held. `alive` answers for a liveness token.
    ///
    /// | state     | client dead | worker dead | becomes   |
    /// |-----------|-------------|-------------|-----------|
    /// | CLAIMED   | yes         | –           | FREE      |
    /// | READY     | yes         | –           | FREE      |
    /// | BUSY      | –           | yes         | FREE (a live client sees `lost`: the worker died) |
    /// | BUSY      | yes         | no          | ABANDONED (the worker frees it when done) |
    /// | DONE      | yes         | –           | FREE      |
    /// | ABANDONED | –           | yes         | FREE      |
    /// | corrupt   | –           | –           | FREE (same generation) |
    public static func recover(_ w: SlotWord, alive: (PeerID) -> Bool) -> SlotWord? {
        guard let state = w.state else { return SlotWord(.free, gen: w.gen) }
        let clientDead = w.client != 0 && !alive(w.client)
        let workerDead = w.worker != 0 && !alive(w.worker)
        switch state {
        case .free: return nil
        case .claimed, .ready, .done: return clientDead ? SlotWord(.free, gen: w.gen) : nil
        case .busy:
            if workerDead { return SlotWord(.free, gen: w.gen) }
            if clientDead { return SlotWord(.abandoned, gen: w.gen, client: w.client, worker: w.worker) }
            return nil
        case .abandoned: return workerDead ? SlotWord(.free, gen: w.gen) : nil
        }
    }
}
