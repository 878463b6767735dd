public import CustosModel
public import Foundation
import PostgresNIO

/// One version of one tenant key, as stored. The key material is present only wrapped under
/// a root KEK (or, for Ed25519, as the label of a token object); `rowMAC` binds every field
/// that matters to this row (DESIGN §5: AES key wrap has no associated data).
public struct KeyVersionRecord: Sendable, Hashable {
    public let tenant: TenantID
    public let purpose: KeyPurpose
    public let version: Int
    public var state: KeyState
    public var wrappedKey: [UInt8]?
    public let wrapMechanism: String
    public let rootKEKVersion: Int
    public let checkValue: [UInt8]
    public let publicKey: [UInt8]?
    public var tokenLabel: String?
    public var rowMAC: [UInt8]
    /// While `retiring`, until when the version is still used to sign and encrypt. While
    /// `pending`, when the version it is to replace stops being used (`nil`: at once): what a
    /// rotation asked for, under the row MAC, so reconciliation completes it as asked.
    public var retiringUntil: Date?
    /// When the version became active. Like every lifecycle time it is set by custody (whole
    /// seconds) and covered by the row MAC, so a database writer cannot shorten a waiting period.
    public var activatedAt: Date?
    /// When the version stopped being active.
    public var retiredAt: Date?
    public var destroyedAt: Date?
    /// Set while officers have disabled the version (`custos key disable`): every use is
    /// refused until it is enabled again. Orthogonal to ``state``, so enabling restores exactly
    /// the lifecycle state it had; covered by the row MAC like the lifecycle times.
    public var disabledAt: Date?
    /// Set while an approved destruction of the version is scheduled: unusable until then (or
    /// until the request is cancelled); covered by the row MAC.
    public var destructionDueAt: Date?
    /// When the version was made (set by the database; nil for a record not yet read back).
    public let createdAt: Date?
    /// The token format of a `bio` version (set at creation, never changed; covered by the row
    /// MAC when set). Nil for other purposes and for `bio` versions made before formats were
    /// recorded, which are all ``BiometricTokenFormat/wide``.
    public let tokenFormat: BiometricTokenFormat?

    public init(
        tenant: TenantID, purpose: KeyPurpose, version: Int, state: KeyState, wrappedKey: [UInt8]?,
        wrapMechanism: String, rootKEKVersion: Int, checkValue: [UInt8], publicKey: [UInt8]? = nil,
        tokenLabel: String? = nil, rowMAC: [UInt8], retiringUntil: Date? = nil, activatedAt: Date? = nil, retiredAt: Date? = nil,
        destroyedAt: Date? = nil, createdAt: Date? = nil, disabledAt: Date? = nil, destructionDueAt: Date? = nil,
        tokenFormat: BiometricTokenFormat? = nil
    ) {
        self.tenant = tenant
        self.purpose = purpose
        self.version = version
        self.state = state
        self.wrappedKey = wrappedKey
        self.wrapMechanism = wrapMechanism
        self.rootKEKVersion = rootKEKVersion
        self.checkValue = checkValue
        self.publicKey = publicKey
        self.tokenLabel = tokenLabel
        self.rowMAC = rowMAC
        self.retiringUntil = retiringUntil
        self.activatedAt = activatedAt
        self.retiredAt = retiredAt
        self.destroyedAt = destroyedAt
        self.createdAt = createdAt
        self.disabledAt = disabledAt
        self.destructionDueAt = destructionDueAt
        self.tokenFormat = tokenFormat
    }

    /// Whether the version may be used at all now (neither disabled nor awaiting destruction).
    public var isUsable: Bool { disabledAt == nil && destructionDueAt == nil && state != .destroyed }
}

/// `key_versions` and `pending_rotations`. Functions take the caller's connection so that the
/// custody layer composes one transaction per step; tenant-scoped ones must run inside
/// ``Database/withTenant(_:context:timeout:_:)``.
public enum KeyVersionStore {
    private static let columns = """
        tenant_id::text, purpose, version, state, wrapped_key, wrap_mechanism, root_kek_version, check_value, \
        public_key, token_label, row_mac, retiring_until, activated_at, retired_at, destroyed_at, created_at, \
        disabled_at, destruction_due_at, token_format
        """

    public static func insert(_ record: KeyVersionRecord, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO key_versions (tenant_id, purpose, version, state, wrapped_key, wrap_mechanism, root_kek_version,
                check_value, public_key, token_label, row_mac, retiring_until, activated_at, token_format)
            VALUES (\(record.tenant.rawValue)::uuid, \(record.purpose.rawValue), \(record.version), \(record.state.rawValue),
                \(record.wrappedKey.map { Data($0) }), \(record.wrapMechanism), \(record.rootKEKVersion), \(Data(record.checkValue)),
                \(record.publicKey.map { Data($0) }), \(record.tokenLabel), \(Data(record.rowMAC)), \(record.retiringUntil),
                \(record.activatedAt), \(record.tokenFormat.map { Int16($0.rawValue) }))
            """, logger: Database.quiet)
    }

    /// Every version of one purpose, oldest first.
    public static func versions(_ tenant: TenantID, _ purpose: KeyPurpose, on connection: DatabaseTransaction) async throws -> [KeyVersionRecord] {
        try await decode(connection.query("""
            SELECT \(unescaped: columns) FROM key_versions
            WHERE tenant_id = \(tenant.rawValue)::uuid AND purpose = \(purpose.rawValue) ORDER BY version
            """, logger: Database.quiet))
    }

    /// Every version of every purpose of the tenant in scope.
    public static func all(on connection: DatabaseTransaction) async throws -> [KeyVersionRecord] {
        try await decode(connection.query(
            "SELECT \(unescaped: columns) FROM key_versions ORDER BY purpose, version", logger: Database.quiet
        ))
    }

    public static func get(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, on connection: DatabaseTransaction) async throws -> KeyVersionRecord? {
        try await decode(connection.query("""
            SELECT \(unescaped: columns) FROM key_versions
            WHERE tenant_id = \(tenant.rawValue)::uuid AND purpose = \(purpose.rawValue) AND version = \(version)
            """, logger: Database.quiet)).first
    }

    /// Changes a version's state, material and lifecycle times together with its MAC, only if
    /// the stored MAC is still `expectedMAC` (compare-and-swap: a retire or destroy racing a
    /// re-wrap never undoes the other's change, and never leaves a row failing its MAC).
    /// - Returns: whether the row was changed (false: it changed meanwhile, or is gone).
    public static func update(_ record: KeyVersionRecord, expectedMAC: [UInt8], on connection: DatabaseTransaction) async throws -> Bool {
        let rows = try await connection.query("""
            UPDATE key_versions SET state = \(record.state.rawValue), row_mac = \(Data(record.rowMAC)),
                retiring_until = \(record.retiringUntil), wrapped_key = \(record.wrappedKey.map { Data($0) }), token_label = \(record.tokenLabel),
                activated_at = \(record.activatedAt), retired_at = \(record.retiredAt), destroyed_at = \(record.destroyedAt),
                disabled_at = \(record.disabledAt), destruction_due_at = \(record.destructionDueAt)
            WHERE tenant_id = \(record.tenant.rawValue)::uuid AND purpose = \(record.purpose.rawValue) AND version = \(record.version)
                AND row_mac = \(Data(expectedMAC))
            RETURNING version
            """, logger: Database.quiet)
        for try await _ in rows { return true }
        return false
    }

    /// The channel that carries "a key version changed" (`<tenant>/<purpose>`) to every
    /// instance's keyring, so a disabled version is refused everywhere within a second.
    public static let stateChannel = "custos_key_state"

    /// Tells every instance (on commit) that versions of `purpose` changed.
    public static func notifyStateChange(_ tenant: TenantID, _ purpose: KeyPurpose, on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_notify(\(stateChannel), \(tenant.rawValue + "/" + purpose.rawValue))")
    }

    /// Deletes a version that never became active (a rotation rolled back).
    /// - Parameter rowMAC: delete only the row with this MAC — the pending row the caller read or
    ///   stored, not another made since under the same version number.
    /// - Returns: whether a row was deleted.
    @discardableResult
    public static func deletePending(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, rowMAC: [UInt8]? = nil, on connection: DatabaseTransaction
    ) async throws -> Bool {
        let rows = try await connection.query("""
            DELETE FROM key_versions WHERE tenant_id = \(tenant.rawValue)::uuid AND purpose = \(purpose.rawValue)
                AND version = \(version) AND state = 'pending' AND (\(rowMAC.map { Data($0) })::bytea IS NULL OR row_mac = \(rowMAC.map { Data($0) }))
            RETURNING version
            """, logger: Database.quiet)
        for try await _ in rows { return true }
        return false
    }

    // MARK: Rotations in progress (no tenant needed)

    public static func markPending(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO pending_rotations (tenant_id, purpose, version) VALUES (\(tenant.rawValue)::uuid, \(purpose.rawValue), \(version))
            """, logger: Database.quiet)
    }

    /// Takes the rotation of `purpose` off the list: only the one of `version` when given (a
    /// later rotation's listing stays), any otherwise.
    public static func clearPending(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int? = nil, on connection: DatabaseTransaction) async throws {
        if let version {
            try await connection.query("""
                DELETE FROM pending_rotations WHERE tenant_id = \(tenant.rawValue)::uuid AND purpose = \(purpose.rawValue) AND version = \(version)
                """, logger: Database.quiet)
        } else {
            try await connection.query("""
                DELETE FROM pending_rotations WHERE tenant_id = \(tenant.rawValue)::uuid AND purpose = \(purpose.rawValue)
                """, logger: Database.quiet)
        }
    }

    /// Takes the rotation of `version` off the list only while the version's row is the one a
    /// reconciliation read — none (`rowMAC` nil), or the row with that MAC — in one statement, so
    /// a listing of a rotation that took the number again since stays. - Returns: whether it went.
    public static func clearPending(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, ifRowMAC rowMAC: [UInt8]?, on connection: DatabaseTransaction
    ) async throws -> Bool {
        let mac = rowMAC.map { Data($0) }
        let rows = try await connection.query("""
            DELETE FROM pending_rotations WHERE tenant_id = \(tenant.rawValue)::uuid AND purpose = \(purpose.rawValue) AND version = \(version)
                AND CASE WHEN \(mac)::bytea IS NULL
                    THEN NOT EXISTS (SELECT 1 FROM key_versions k WHERE k.tenant_id = \(tenant.rawValue)::uuid AND k.purpose = \(purpose.rawValue) AND k.version = \(version))
                    ELSE EXISTS (SELECT 1 FROM key_versions k WHERE k.tenant_id = \(tenant.rawValue)::uuid AND k.purpose = \(purpose.rawValue) AND k.version = \(version) AND k.row_mac = \(mac))
                END
            RETURNING version
            """, logger: Database.quiet)
        for try await _ in rows { return true }
        return false
    }

    /// The version of `purpose`'s rotation listed as pending, if one is.
    public static func pendingRotation(_ tenant: TenantID, _ purpose: KeyPurpose, on connection: DatabaseTransaction) async throws -> Int? {
        let rows = try await connection.query("""
            SELECT version FROM pending_rotations WHERE tenant_id = \(tenant.rawValue)::uuid AND purpose = \(purpose.rawValue)
            """, logger: Database.quiet)
        for try await version in rows.decode(Int.self) { return version }
        return nil
    }

    public static func pendingRotations(on connection: DatabaseTransaction) async throws -> [(tenant: TenantID, purpose: KeyPurpose, version: Int)] {
        var pending = [(tenant: TenantID, purpose: KeyPurpose, version: Int)]()
        let rows = try await connection.query("SELECT tenant_id::text, purpose, version FROM pending_rotations ORDER BY created_at", logger: Database.quiet)
        for try await (tenant, purpose, version) in rows.decode((String, String, Int).self) {
            guard let tenant = TenantID(tenant), let purpose = KeyPurpose(rawValue: purpose) else { continue }
            pending.append((tenant, purpose, version))
        }
        return pending
    }

    private static func decode(_ rows: PostgresRowSequence) async throws -> [KeyVersionRecord] {
        var records = [KeyVersionRecord]()
        for try await row in rows {
            let (tenant, purpose, version, state, wrapped, mechanism, rootVersion, checkValue, publicKey, tokenLabel, mac, retiringUntil, activatedAt, retiredAt, destroyedAt, createdAt) =
                try row.decode((String, String, Int, String, Data?, String, Int, Data, Data?, String?, Data, Date?, Date?, Date?, Date?, Date).self)
            let columns = row.makeRandomAccess()
            let disabledAt = try columns[16].decode(Date?.self)
            let destructionDueAt = try columns[17].decode(Date?.self)
            let tokenFormat = try columns[18].decode(Int16?.self)
            guard let tenantID = TenantID(tenant), let purposeValue = KeyPurpose(rawValue: purpose), let stateValue = KeyState(rawValue: state) else {
                throw StorageError.query(sqlState: "XX000", context: "unknown purpose or state in key_versions")
            }
            let format = try tokenFormat.map { raw in
                guard let format = BiometricTokenFormat(rawValue: Int(raw)) else {
                    throw StorageError.query(sqlState: "XX000", context: "unknown token format \(raw) in key_versions")
                }
                return format
            }
            records.append(KeyVersionRecord(
                tenant: tenantID, purpose: purposeValue, version: version, state: stateValue, wrappedKey: wrapped.map { Array($0) },
                wrapMechanism: mechanism, rootKEKVersion: rootVersion, checkValue: Array(checkValue), publicKey: publicKey.map { Array($0) },
                tokenLabel: tokenLabel, rowMAC: Array(mac), retiringUntil: retiringUntil, activatedAt: activatedAt, retiredAt: retiredAt,
                destroyedAt: destroyedAt, createdAt: createdAt, disabledAt: disabledAt, destructionDueAt: destructionDueAt,
                tokenFormat: format
            ))
        }
        return records
    }
}
