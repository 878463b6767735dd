import Custody
public import CustosModel
public import HSM
import PKCS11
import SecureMemory

/// The old root KEKs a root-KEK rotation unwraps with (DESIGN §5). The token's own KEKs pin
/// every unwrap to a non-extractable key, so the old KEK of each purpose and version is rebuilt
/// from its custodians' shares as a ``KeyTemplate/rewrapKEK(value:usage:)``: a session object
/// of this process only, made on first use in the pool's persistent session and destroyed when
/// the rotation ends. A legacy permissive KEK on the token is used as it is, one last time, and
/// destroyed once no blob needs it.
public final class RewrapSources: Sendable {
    private let keys: [String: HSMKey]
    /// Legacy KEK labels on the token.
    let legacyLabels: [String]
    /// Root keys on the token that a given share set rebuilt with the token's check value:
    /// the custodians vouch for them.
    let provenLabels: Set<String>

    /// Whether this rotation migrates off a legacy KEK (then rows sealed in the first MAC
    /// format are accepted once and resealed).
    public var migratesLegacy: Bool { !legacyLabels.isEmpty || keys.keys.contains { $0.hasPrefix("legacy:") } }

    private init(keys: [String: HSMKey], legacyLabels: [String], provenLabels: Set<String>) {
        self.keys = keys
        self.legacyLabels = legacyLabels
        self.provenLabels = provenLabels
    }

    /// The unwrapping key for blobs of `purpose` wrapped under root KEK version `version`.
    public var unwrappingKey: @Sendable (KeyPurpose, Int) -> HSMKey? {
        { [keys] purpose, version in keys["\(purpose.rawValue)/\(version)"] }
    }

    /// Rebuilds the KEKs of each share set (each combined, its secret check and every KEK's KCV
    /// checked against the share files and, where the token still has the KEK, the token).
    /// - Parameter shareSets: the share files of each set needed (M of them each).
    static func make(pool: SessionPool, inventory: RootKeyInventory, shareSets: [[String]]) async throws -> RewrapSources {
        let nonce = Hex.encode(try await pool.random(count: 8))
        var keys = [String: HSMKey]()
        var proven = Set<String>()
        for version in inventory.legacyKEKVersions {
            let legacy = HSMKey.tokenObject(label: RootKeys.legacyKEKLabel(version: version))
            for purpose in RootKeys.wrappedPurposes { keys["\(purpose.rawValue)/\(version)"] = legacy }
        }
        for paths in shareSets where !paths.isEmpty {
            let set = try ShareSet(paths: paths)
            let secret = try set.combine()
            guard let header = set.header else { continue }
            for key in header.keys {
                guard let parsed = RootKeyInventory.parse(key.label), parsed.kind != .mac else { continue }
                if let onToken = inventory.entry(label: key.label), Hex.encode(onToken.checkValue) != key.checkValue.lowercased() {
                    throw CeremonyError.checkValueMismatch(
                        label: key.label, expected: key.checkValue, actual: Hex.encode(onToken.checkValue), stage: "reported by the token"
                    )
                }
                let value = ShareSet.slice(secret, key)
                guard try KeyCheckValue.compute(value, keyType: .aes) == Hex.decode(key.checkValue) else {
                    throw CeremonyError.checkValueMismatch(label: key.label, expected: key.checkValue, actual: "-", stage: "rebuilt from shares")
                }
                if inventory.entry(label: key.label) != nil { proven.insert(key.label) }
                let purposes = parsed.kind == .legacyKEK ? RootKeys.wrappedPurposes : parsed.purpose.map { [$0] } ?? []
                for purpose in purposes {
                    guard let usage = purpose.usage else { continue }
                    let prefix = parsed.kind == .legacyKEK ? "legacy:" : ""
                    keys["\(purpose.rawValue)/\(parsed.version)"] = HSMKey(id: "\(prefix)rewrap:\(nonce):\(key.label):\(purpose.rawValue)") { session in
                        try session.createObject(KeyTemplate.rewrapKEK(value: value, usage: usage))
                    }
                }
            }
        }
        return RewrapSources(
            keys: keys, legacyLabels: inventory.legacyKEKVersions.map(RootKeys.legacyKEKLabel(version:)), provenLabels: proven
        )
    }

    /// Destroys the session-only rewrap KEKs made so far, on every token (a re-wrap may run on
    /// a replica), through each token's pool, which made them and knows which of its handles
    /// are still theirs.
    func destroy(on pool: SessionPool) async {
        for token in pool.tokenPools { _ = try? await token.discard(Array(keys.values)) }
    }

    /// Destroys the legacy permissive KEKs on the token (call once every blob is re-wrapped).
    /// - Returns: the labels destroyed.
    func destroyLegacyKEKs(on pool: SessionPool) async throws -> [String] {
        let labels = legacyLabels
        guard !labels.isEmpty else { return [] }
        return try await pool.withPersistentSession { session in
            var destroyed = [String]()
            for label in labels {
                for handle in try session.findObjects([.class(.secretKey), .label(label)], limit: 4) {
                    try session.destroyObject(handle)
                    destroyed.append(label)
                }
            }
            return destroyed
        }
    }
}
