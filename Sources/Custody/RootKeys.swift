public import HSM
import PKCS11

/// The few token-resident keys (DESIGN §5): the root KEK, which only wraps and unwraps tenant
/// keys, and the root MAC key, which authenticates `key_versions` rows and the audit chain
/// (each use with its own domain-separation prefix).
public struct RootKeys: Sendable {
    public let kekVersion: Int
    public let macVersion: Int

    public init(kekVersion: Int = 1, macVersion: Int = 1) {
        self.kekVersion = kekVersion
        self.macVersion = macVersion
    }

    public static func kekLabel(version: Int) -> String { "custos/root/kek/v\(version)" }
    public static func macLabel(version: Int) -> String { "custos/root/mac/v\(version)" }

    public func kek(version: Int? = nil) -> HSMKey { .tokenObject(label: Self.kekLabel(version: version ?? kekVersion)) }
    public var mac: HSMKey { .tokenObject(label: Self.macLabel(version: macVersion)) }

    /// Generates any missing root key inside the HSM. For local set-up only: keys generated
    /// this way are never extractable and so cannot be backed up — production root keys come
    /// from the key ceremony, which splits them into custodian shares first (DESIGN §11).
    /// - Returns: the labels created.
    public func createIfMissing(on pool: SessionPool) async throws -> [String] {
        let kekLabel = Self.kekLabel(version: kekVersion)
        let macLabel = Self.macLabel(version: macVersion)
        return try await pool.withPersistentSession { session in
            var created = [String]()
            if try session.findObjects([.class(.secretKey), .label(kekLabel)], limit: 1).isEmpty {
                _ = try session.generateKey(.aesKeyGen, template: KeyTemplate.rootKEK(label: kekLabel, id: try session.generateRandom(count: 16)))
                created.append(kekLabel)
            }
            if try session.findObjects([.class(.secretKey), .label(macLabel)], limit: 1).isEmpty {
                _ = try session.generateKey(.genericSecretKeyGen, template: KeyTemplate.rootMAC(label: macLabel, id: try session.generateRandom(count: 16)))
                created.append(macLabel)
            }
            return created
        }
    }
}
