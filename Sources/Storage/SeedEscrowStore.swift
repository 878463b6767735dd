public import CustosModel
import Foundation
import PostgresNIO

/// One escrowed seed: an HPKE ciphertext of a key version's seed to escrow key
/// `escrowKeyVersion`. Useless without M custodians' shares of that escrow key.
public struct SeedEscrowRecord: Sendable, Hashable {
    public let tenant: TenantID
    public let purpose: KeyPurpose
    public let version: Int
    public let escrowKeyVersion: Int
    public let encapsulatedKey: [UInt8]
    public let ciphertext: [UInt8]

    public init(tenant: TenantID, purpose: KeyPurpose, version: Int, escrowKeyVersion: Int, encapsulatedKey: [UInt8], ciphertext: [UInt8]) {
        self.tenant = tenant
        self.purpose = purpose
        self.version = version
        self.escrowKeyVersion = escrowKeyVersion
        self.encapsulatedKey = encapsulatedKey
        self.ciphertext = ciphertext
    }
}

/// `key_version_escrows` (row-level security per tenant, like `key_versions`): written in the
/// transaction that stores the version; deleted with a pending row and by the database when
/// the version is destroyed (migration 19's trigger).
public enum SeedEscrowStore {
    public static func insert(_ record: SeedEscrowRecord, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO key_version_escrows (tenant_id, purpose, version, escrow_key_version, encapsulated_key, ciphertext)
            VALUES (\(record.tenant.rawValue)::uuid, \(record.purpose.rawValue), \(record.version), \(record.escrowKeyVersion),
                    \(Data(record.encapsulatedKey)), \(Data(record.ciphertext)))
            """, logger: Database.quiet)
    }

    /// Every escrow of the tenant in scope.
    public static func all(on connection: DatabaseTransaction) async throws -> [SeedEscrowRecord] {
        var records = [SeedEscrowRecord]()
        let rows = try await connection.query("""
            SELECT tenant_id::text, purpose, version, escrow_key_version, encapsulated_key, ciphertext
            FROM key_version_escrows ORDER BY purpose, version
            """, logger: Database.quiet)
        for try await (tenant, purpose, version, escrowKeyVersion, encapsulated, ciphertext) in rows.decode((String, String, Int, Int, Data, Data).self) {
            guard let tenant = TenantID(tenant), let purpose = KeyPurpose(rawValue: purpose) else { continue }
            records.append(SeedEscrowRecord(
                tenant: tenant, purpose: purpose, version: version, escrowKeyVersion: escrowKeyVersion,
                encapsulatedKey: Array(encapsulated), ciphertext: Array(ciphertext)
            ))
        }
        return records
    }

    /// The tenant's live Ed25519 versions with a token object and no escrow (made before
    /// escrow existed): version, state and token label.
    public static func unescrowedTokenObjects(on connection: DatabaseTransaction) async throws -> [(version: Int, state: KeyState, label: String)] {
        var found = [(version: Int, state: KeyState, label: String)]()
        let rows = try await connection.query("""
            SELECT k.version, k.state, k.token_label FROM key_versions k
            LEFT JOIN key_version_escrows e ON e.tenant_id = k.tenant_id AND e.purpose = k.purpose AND e.version = k.version
            WHERE k.purpose = \(KeyPurpose.webhookEd25519.rawValue) AND k.state <> 'destroyed' AND k.token_label IS NOT NULL
              AND e.version IS NULL
            ORDER BY k.version
            """, logger: Database.quiet)
        for try await (version, state, label) in rows.decode((Int, String, String).self) {
            guard let state = KeyState(rawValue: state) else { continue }
            found.append((version, state, label))
        }
        return found
    }
}
