/// A candidate's name or email on its way to or from the sealer: personal data that must never
/// reach a log, so its `description` is redacted. Read `value` only to seal it or to hand it to
/// the tenant it belongs to (an export).
public struct PersonalText: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String

    public init(_ value: String) { self.value = value }

    public var description: String { "<redacted \(value.utf8.count) bytes>" }
    public var debugDescription: String { description }
}
