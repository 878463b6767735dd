public import PKCS11

/// A small value kept on the token as private data objects (`CKO_DATA`) under one label and
/// application: the audit and ceremony-transcript anchors.
///
/// SoftHSM 2.6.1 keeps a data object's `CKA_VALUE` read-only once created, so ``replace(with:in:)``
/// creates the new object first and then destroys the old ones; a crash between the two leaves
/// both, and readers choose among ``values(in:)`` by what the values say (e.g. the highest
/// sequence number with a valid MAC). Reading or writing needs the user PIN.
public struct TokenDataObject: Sendable {
    public let label: String
    public let application: String
    /// At most this many objects are looked at (normally one; two after an interrupted replace).
    static let searchLimit = 16

    public init(label: String, application: String) {
        self.label = label
        self.application = application
    }

    private var template: [Attribute] { [.class(.data), .label(label), .application(application)] }

    /// Every stored value (empty when there is none).
    public func values(in session: PKCS11Session) throws -> [[UInt8]] {
        try session.findObjects(template, limit: Self.searchLimit).map { try session.attribute(.value, of: $0) }
    }

    /// Stores `value` in a new object (private, not modifiable or copyable: a value is replaced,
    /// never edited), then destroys the objects it replaces.
    public func replace(with value: [UInt8], in session: PKCS11Session) throws {
        let old = try session.findObjects(template, limit: Self.searchLimit)
        _ = try session.createObject(template + [.token(true), .private(true), .copyable(false), .dataValue(value), .modifiable(false)])
        for handle in old { try session.destroyObject(handle) }
    }

    /// Destroys every object of this label and application.
    /// - Returns: how many there were.
    public func destroyAll(in session: PKCS11Session) throws -> Int {
        let handles = try session.findObjects(template, limit: Self.searchLimit)
        for handle in handles { try session.destroyObject(handle) }
        return handles.count
    }
}
