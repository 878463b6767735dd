public import PKCS11

/// What a ``SessionPool/withSession(_:)`` body gets: the worker's PKCS#11 session and the
/// pool's key-handle cache. Valid only inside the body; not `Sendable`, so it cannot escape.
public struct HSMSession {
    /// The session this worker thread owns. Do not close it, and do not log in or out on it:
    /// the pool manages both.
    public let pkcs11: PKCS11Session
    let worker: SessionWorker

    /// The handle of `key` in the current pool generation (resolved once, then cached).
    public func handle(for key: HSMKey) throws -> ObjectHandle {
        try worker.handle(for: key)
    }
}

@available(*, unavailable, message: "an HSM session belongs to the worker thread that runs the body")
extension HSMSession: Sendable {}
