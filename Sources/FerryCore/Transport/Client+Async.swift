import Dispatch

extension Client {
    /// Async variant of `call`: the blocking wait runs on a Dispatch thread, so a task can
    /// await a reply without holding a thread of the cooperative pool. A client may run many
    /// such calls at once (one slot each).
    public func call(_ message: Message, timeout: Duration? = nil) async throws -> Message {
        let client = self
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try client.call(message, timeout: timeout) })
            }
        }
    }

    /// Async variant of `call` with named tensors.
    public func call(_ tensors: [(String, Tensor)], timeout: Duration? = nil) async throws -> Message {
        try await call(Message(tensors), timeout: timeout)
    }
}
