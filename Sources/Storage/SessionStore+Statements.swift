import CustosModel
import Foundation
import PostgresNIO

/// The session statements every verification front-end call runs, prepared once per
/// connection (``PreparedStatement``). Their SQL is what the ``SessionStore`` functions ran
/// before as interpolated queries.
extension SessionStore {
    struct ReadSession: PreparedStatement {
        static let name = "custos_read_session"
        static let bindingDataTypes: [PostgresDataType] = [.uuid]
        static let sql = "SELECT \(columns) FROM verification_sessions WHERE id = $1"
        let id: UUID

        func makeBindings() -> PostgresBindings { Self.bind(id) }
    }

    struct LockSession: PreparedStatement {
        static let name = "custos_lock_session"
        static let bindingDataTypes: [PostgresDataType] = [.uuid]
        static let sql = "SELECT \(columns) FROM verification_sessions WHERE id = $1 FOR UPDATE"
        let id: UUID

        func makeBindings() -> PostgresBindings { Self.bind(id) }
    }

    /// The session locked, with the key versions its subject has templates of (Enrol's two
    /// reads in one round trip). The versions are read after the lock is taken only in the
    /// sense that matters: a concurrent completion of this session is seen by the lock's
    /// re-check of the row, and the session then refuses.
    struct LockSessionWithEnrolledVersions: PreparedStatement {
        static let name = "custos_lock_session_with_enrolled_versions"
        static let bindingDataTypes: [PostgresDataType] = [.uuid]
        static let sql = """
            SELECT \(columns),
                ARRAY(SELECT t.key_version FROM templates t WHERE t.subject_ref = s.subject_ref ORDER BY t.key_version)::int8[]
            FROM verification_sessions s WHERE s.id = $1 FOR UPDATE OF s
            """
        let id: UUID

        func makeBindings() -> PostgresBindings { Self.bind(id) }
    }

    struct InsertSession: PreparedStatement {
        static let name = "custos_insert_sealed_session"
        static let bindingDataTypes: [PostgresDataType] = [.uuid, .text, .text, .int8, .bytea, .bytea, .int8, .timestamptz, .bytea, .int8]
        static let sql = """
            INSERT INTO verification_sessions (id, tenant_id, subject_ref, pii_version, sealed_name, sealed_email, data_key_version, expires_at,
                subject_mac, subject_mac_version)
            VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10)
            """
        let new: New
        let tenant: TenantID

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 10)
            bindings.append(new.id)
            bindings.append(tenant.rawValue)
            bindings.append(new.subject.value)
            bindings.append(new.subject.piiVersion)
            try bindings.append(new.sealedName.map { Data($0) })
            try bindings.append(new.sealedEmail.map { Data($0) })
            bindings.append(new.dataKeyVersion)
            bindings.append(new.expiresAt)
            try bindings.append(Data(new.subjectSeal.mac))
            bindings.append(new.subjectSeal.macVersion)
            return bindings
        }
    }

    struct InsertLink: PreparedStatement {
        static let name = "custos_insert_gateway_link"
        static let bindingDataTypes: [PostgresDataType] = [.bytea, .text, .uuid, .timestamptz]
        static let sql = "INSERT INTO gateway_links (link_hash, tenant_id, session_id, expires_at) VALUES ($1, $2::uuid, $3, $4)"
        let new: New
        let tenant: TenantID

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 4)
            try bindings.append(Data(new.linkHash))
            bindings.append(tenant.rawValue)
            bindings.append(new.id)
            bindings.append(new.expiresAt)
            return bindings
        }
    }
}

extension PreparedStatement {
    static func bind(_ id: UUID) -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(id)
        return bindings
    }
}
