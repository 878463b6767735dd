public import CustosModel
public import HSM
import PKCS11

/// The root keys on a token, as the token reports them: label, kind, purpose, version, `CKA_ID`
/// and `CKA_CHECK_VALUE` (SoftHSM returns it for sensitive keys too). No key material.
public struct RootKeyInventory: Sendable {
    public struct Entry: Sendable, Hashable {
        public enum Kind: String, Sendable {
            /// A per-purpose root KEK, pinned by its unwrap template.
            case kek
            /// The permissive single KEK of older installations (see ``RootKeys/legacyKEKLabel(version:)``).
            case legacyKEK = "legacy-kek"
            case mac
        }

        public let label: String
        public let kind: Kind
        /// The purpose a ``Kind/kek`` serves.
        public let purpose: KeyPurpose?
        public let version: Int
        public let id: [UInt8]
        public let checkValue: [UInt8]
    }

    public let entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    public func entry(label: String) -> Entry? { entries.first { $0.label == label } }
    /// The newest root KEK version on the token, per-purpose or legacy (0 when there is none):
    /// both kinds share one version space.
    public var newestKEKVersion: Int { entries.filter { $0.kind != .mac }.map(\.version).max() ?? 0 }
    public var newestMACVersion: Int { entries.filter { $0.kind == .mac }.map(\.version).max() ?? 0 }
    public var newestMACLabel: String? { newestMACVersion == 0 ? nil : RootKeys.macLabel(version: newestMACVersion) }
    /// Versions of the permissive legacy KEK still on the token.
    public var legacyKEKVersions: [Int] { entries.filter { $0.kind == .legacyKEK }.map(\.version) }
    /// Versions for which every wrapped purpose has its KEK.
    public var completeKEKVersions: [Int] { Self.completeKEKVersions(among: Set(entries.map(\.label))) }

    /// Versions for which every wrapped purpose's KEK label is among `labels` (e.g. the labels
    /// a database recorded), oldest first.
    public static func completeKEKVersions(among labels: Set<String>) -> [Int] {
        let versions = Set(labels.compactMap(parse).filter { $0.kind == .kek }.map(\.version))
        return versions.sorted().filter { version in
            RootKeys.wrappedPurposes.allSatisfy { labels.contains(RootKeys.kekLabel($0, version: version)) }
        }
    }

    /// Parses `custos/root/kek/<purpose>/v<n>`, `custos/root/kek/v<n>` and `custos/root/mac/v<n>`,
    /// `n` in canonical decimal only: every other use of a root key rebuilds its label from the
    /// version, so `v01` or `v+1` would be counted here yet never found (nor destroyed) there.
    public static func parse(_ label: String) -> (kind: Entry.Kind, purpose: KeyPurpose?, version: Int)? {
        let parts = label.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 4, parts[0] == "custos", parts[1] == "root", let last = parts.last, last.hasPrefix("v"),
              let version = Int(last.dropFirst()), version > 0, "v\(version)" == last else { return nil }
        switch (parts[2], parts.count) {
        case ("mac", 4): return (.mac, nil, version)
        case ("kek", 4): return (.legacyKEK, nil, version)
        case ("kek", 5):
            guard let purpose = KeyPurpose(rawValue: parts[3]), purpose.usage != nil else { return nil }
            return (.kek, purpose, version)
        default: return nil
        }
    }

    /// Reads every root key of the pool's token (token objects only; session objects of the
    /// pool are never root keys).
    public static func read(from pool: SessionPool) async throws -> RootKeyInventory {
        try await pool.withPersistentSession { session in
            var entries = [Entry]()
            for handle in try session.findObjects([.class(.secretKey), .token(true)], limit: 4096) {
                let label = String(decoding: try session.attribute(.label, of: handle), as: UTF8.self)
                guard let (kind, purpose, version) = parse(label) else { continue }
                entries.append(Entry(
                    label: label, kind: kind, purpose: purpose, version: version, id: try session.attribute(.id, of: handle),
                    checkValue: try session.attribute(.checkValue, of: handle)
                ))
            }
            return RootKeyInventory(entries: entries.sorted { $0.label < $1.label })
        }
    }
}
