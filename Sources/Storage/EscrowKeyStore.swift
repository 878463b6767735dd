import Foundation
import PostgresNIO

/// An escrow public key the key ceremony made (X25519; its private half exists only as the
/// custodians' M-of-N shares), as recorded with its HSM MAC. Nothing secret.
public struct EscrowKeyRecord: Sendable, Hashable {
    public let version: Int
    /// The raw 32-byte X25519 public key.
    public let publicKey: [UInt8]
    public let ceremonyID: String
    /// HMAC under the root MAC key `macKeyVersion` over the fields above (custody computes it).
    public let mac: [UInt8]
    public let macKeyVersion: Int

    public init(version: Int, publicKey: [UInt8], ceremonyID: String, mac: [UInt8], macKeyVersion: Int) {
        self.version = version
        self.publicKey = publicKey
        self.ceremonyID = ceremonyID
        self.mac = mac
        self.macKeyVersion = macKeyVersion
    }
}

/// `escrow_keys`: insert-only; not tenant data (no row-level security).
public enum EscrowKeyStore {
    /// Every recorded escrow key, oldest first.
    public static func all(on connection: DatabaseTransaction) async throws -> [EscrowKeyRecord] {
        var records = [EscrowKeyRecord]()
        let rows = try await connection.query(
            "SELECT version, public_key, ceremony_id, mac, mac_key_version FROM escrow_keys ORDER BY version", logger: Database.quiet
        )
        for try await (version, publicKey, ceremonyID, mac, macKeyVersion) in rows.decode((Int, Data, String, Data, Int).self) {
            records.append(EscrowKeyRecord(version: version, publicKey: Array(publicKey), ceremonyID: ceremonyID, mac: Array(mac), macKeyVersion: macKeyVersion))
        }
        return records
    }

    /// Inserts `record`; a version recorded already is a conflict (never replaced).
    public static func insert(_ record: EscrowKeyRecord, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO escrow_keys (version, public_key, ceremony_id, mac, mac_key_version)
            VALUES (\(record.version), \(Data(record.publicKey)), \(record.ceremonyID), \(Data(record.mac)), \(record.macKeyVersion))
            """, logger: Database.quiet)
    }
}
