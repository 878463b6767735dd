public import HSM
import PKCS11

/// The root keys on a token, as the token reports them: label, kind, version, `CKA_ID` and
/// `CKA_CHECK_VALUE` (SoftHSM returns it for sensitive keys too). No key material.
public struct RootKeyInventory: Sendable {
    public struct Entry: Sendable, Hashable {
        public enum Kind: String, Sendable { case kek, mac }
        public let label: String
        public let kind: Kind
        public let version: Int
        public let id: [UInt8]
        public let checkValue: [UInt8]
    }

    public let entries: [Entry]

    public func entry(label: String) -> Entry? { entries.first { $0.label == label } }
    /// The newest root KEK version on the token (0 when there is none).
    public var newestKEKVersion: Int { entries.filter { $0.kind == .kek }.map(\.version).max() ?? 0 }
    public var newestMACVersion: Int { entries.filter { $0.kind == .mac }.map(\.version).max() ?? 0 }
    public var newestMACLabel: String? { newestMACVersion == 0 ? nil : Self.label(.mac, version: newestMACVersion) }

    static func label(_ kind: Entry.Kind, version: Int) -> String { "custos/root/\(kind.rawValue)/v\(version)" }

    /// Parses `custos/root/kek/v<n>` and `custos/root/mac/v<n>`.
    static func parse(_ label: String) -> (Entry.Kind, Int)? {
        for kind in [Entry.Kind.kek, .mac] {
            let prefix = "custos/root/\(kind.rawValue)/v"
            if label.hasPrefix(prefix), let version = Int(label.dropFirst(prefix.count)), version > 0 { return (kind, version) }
        }
        return nil
    }

    /// Reads every root key of the pool's token (token objects only; session objects of the
    /// pool are never root keys).
    public static func read(from pool: SessionPool) async throws -> RootKeyInventory {
        try await pool.withPersistentSession { session in
            var entries = [Entry]()
            for handle in try session.findObjects([.class(.secretKey), .token(true)], limit: 4096) {
                let label = String(decoding: try session.attribute(.label, of: handle), as: UTF8.self)
                guard let (kind, version) = parse(label) else { continue }
                entries.append(Entry(
                    label: label, kind: kind, version: version, id: try session.attribute(.id, of: handle),
                    checkValue: try session.attribute(.checkValue, of: handle)
                ))
            }
            return RootKeyInventory(entries: entries.sorted { ($0.kind.rawValue, $0.version) < ($1.kind.rawValue, $1.version) })
        }
    }
}
