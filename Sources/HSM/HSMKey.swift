public import PKCS11

/// A key the pool can find or re-create on demand, cached as a handle per pool generation.
///
/// Handles are worthless after a re-login or re-initialisation (session objects vanish,
/// handles are reassigned), so callers name keys by an ``HSMKey`` and the pool resolves it:
/// once per generation, in its persistent logged-in session, never on the hot path.
public struct HSMKey: Sendable, Hashable, CustomStringConvertible {
    /// A stable identity for the cache (`token:<label>`, `tenant:<id>/<purpose>/v<n>`, …).
    public let id: String
    let resolve: @Sendable (KeyResolution) throws -> ObjectHandle

    /// A key with a custom resolver that runs in the pool's persistent session (where session
    /// objects it creates live on). The resolver must give the same key every time.
    public init(id: String, resolve: @escaping @Sendable (PKCS11Session) throws -> ObjectHandle) {
        self.id = id
        self.resolve = { resolution in try resolve(resolution.session) }
    }

    /// A key whose resolver needs other keys found on the token (an unwrap needs its root KEK):
    /// through the pool those come from its cache (``KeyResolution/tokenObject(_:)``), so a
    /// key unwrapped again after eviction costs no `C_FindObjects`.
    public init(id: String, resolveWith resolve: @escaping @Sendable (KeyResolution) throws -> ObjectHandle) {
        self.id = id
        self.resolve = resolve
    }

    /// A key stored on the token, found by its label and class.
    public static func tokenObject(label: String, class objectClass: ObjectClass = .secretKey) -> HSMKey {
        HSMKey(id: "token:\(objectClass.rawValue):\(label)") { session in
            let found = try session.findObjects([.class(objectClass), .label(label)], limit: 2)
            guard let handle = found.first else { throw HSMError.keyNotFound(label) }
            guard found.count == 1 else { throw HSMError.duplicateKey(label) }
            return handle
        }
    }

    /// Finds or creates the key in `session` now (resolvers of other keys may need it, e.g. the
    /// root KEK to unwrap a tenant key). Callers on the hot path use the pool's cache instead.
    public func resolve(in session: PKCS11Session) throws -> ObjectHandle {
        try resolve(KeyResolution(session: session, operationSession: session, tokenObjects: nil))
    }

    public var description: String { id }

    public static func == (lhs: HSMKey, rhs: HSMKey) -> Bool { lhs.id == rhs.id }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// What a key's resolver gets: the session to resolve in (the pool's persistent session, or the
/// caller's for ``HSMKey/resolve(in:)``), a session for the operations it runs on the way, and
/// the handles of the token objects it depends on. Valid only during the resolver; not `Sendable`.
public struct KeyResolution {
    /// Where objects the resolver makes (an unwrapped key) must be made: they live as long as
    /// this session. Use it only for calls that leave nothing behind (find, create, unwrap).
    public let session: PKCS11Session
    /// The calling worker's own session (or ``session`` outside the pool), for operations that
    /// hold state between calls — a `C_SignInit` + `C_Sign` such as a row's MAC check. A call
    /// that fails there can leave its operation active; the worker then replaces its session,
    /// whereas the persistent session, which owns every unwrapped key, could only be replaced
    /// by draining the pool.
    public let operationSession: PKCS11Session
    let tokenObjects: ((HSMKey) throws -> ObjectHandle)?

    init(session: PKCS11Session, operationSession: PKCS11Session, tokenObjects: ((HSMKey) throws -> ObjectHandle)?) {
        self.session = session
        self.operationSession = operationSession
        self.tokenObjects = tokenObjects
    }

    /// The handle of `key`, a key stored on the token (a root KEK, the MAC key): from the
    /// pool's cache when the pool resolves, else found now. A session object would not be
    /// cached here; only token objects are meant.
    public func tokenObject(_ key: HSMKey) throws -> ObjectHandle {
        if let tokenObjects { return try tokenObjects(key) }
        return try key.resolve(in: session)
    }
}

@available(*, unavailable, message: "a key resolution belongs to the resolver it is passed to")
extension KeyResolution: Sendable {}
