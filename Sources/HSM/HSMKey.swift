public import PKCS11

/// A key the pool can find or re-create on demand, cached as a handle per pool generation.
///
/// Handles are worthless after a re-login or re-initialisation (session objects vanish,
/// handles are reassigned), so callers name keys by an ``HSMKey`` and the pool resolves it:
/// once per generation, in its persistent logged-in session, never on the hot path.
public struct HSMKey: Sendable, Hashable, CustomStringConvertible {
    /// A stable identity for the cache (`token:<label>`, `tenant:<id>/<purpose>/v<n>`, …).
    public let id: String
    let resolve: @Sendable (PKCS11Session) throws -> ObjectHandle

    /// A key with a custom resolver that runs in the pool's persistent session (where session
    /// objects it creates live on). The resolver must give the same key every time.
    public init(id: String, resolve: @escaping @Sendable (PKCS11Session) throws -> ObjectHandle) {
        self.id = id
        self.resolve = resolve
    }

    /// A key stored on the token, found by its label and class.
    public static func tokenObject(label: String, class objectClass: ObjectClass = .secretKey) -> HSMKey {
        HSMKey(id: "token:\(objectClass.rawValue):\(label)") { session in
            let found = try session.findObjects([.class(objectClass), .label(label)], limit: 2)
            guard let handle = found.first else { throw HSMError.keyNotFound(label) }
            guard found.count == 1 else { throw HSMError.configuration("several objects are labelled \(label)") }
            return handle
        }
    }

    /// Finds or creates the key in `session` now (resolvers of other keys may need it, e.g. the
    /// root KEK to unwrap a tenant key). Callers on the hot path use the pool's cache instead.
    public func resolve(in session: PKCS11Session) throws -> ObjectHandle {
        try resolve(session)
    }

    public var description: String { id }

    public static func == (lhs: HSMKey, rhs: HSMKey) -> Bool { lhs.id == rhs.id }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}
