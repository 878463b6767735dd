public import CustosModel
public import Foundation
import PostgresNIO

/// CreateSession, OpenGateway and RecordConsent as one statement each, sent outside BEGIN and
/// COMMIT: a function of migration 27 that scopes itself to the tenant (as Enrol's and Verify's
/// of migration 23 do), so each call is one round trip and at most one commit where BEGIN,
/// `set_config`, two or three statements and COMMIT took five or more (issue 12). Run them with
/// ``Database/withAutocommit(context:_:)``. A refusal writes nothing and says why; each
/// function checks what it relies on in the same statement that writes.
extension SessionStore {
    /// Inserts the session and its link, unless the subject still has rows stored under one of
    /// `oldSubjects` (another `pii` version's or Unicode form's reference of the same external
    /// id): those must move to `new.subject` first, in a transaction (then nothing is written).
    /// - Returns: whether the session was inserted.
    public static func insertUnlessStoredUnder(
        _ oldSubjects: [String], _ new: New, tenant: TenantID, on connection: DatabaseTransaction
    ) async throws -> Bool {
        for try await row in try await connection.execute(CreateSession(new: new, tenant: tenant, oldSubjects: oldSubjects)) {
            return try row.decode(String.self) == "created"
        }
        return false
    }

    /// Why OpenGateway opened nothing.
    public enum GatewayRefusal: Error, Sendable, Equatable {
        case link(LinkRefusal)
        /// The link is this tenant's, unused and unexpired, but its session is not in the
        /// tenant's scope.
        case sessionNotFound(UUID)
    }

    /// Marks the link used and its session opened, once: a second open (also a concurrent one),
    /// one after `now` passed the link's expiry, or another tenant's link is refused. The index
    /// table has no row-level security: the tenant is matched in the function.
    /// - Returns: the session as it is then.
    public static func openGateway(hash: [UInt8], tenant: TenantID, now: Date, on connection: DatabaseTransaction) async throws -> Result<Row, GatewayRefusal> {
        for try await row in try await connection.execute(OpenGateway(hash: hash, tenant: tenant, now: now)) {
            let cells = row.makeRandomAccess()
            switch try cells[columnCount].decode(String.self) {
            case "opened": return .success(try decode(row))
            case "already_used": return .failure(.link(.alreadyUsed))
            case "expired": return .failure(.link(.expired))
            case "session_not_found":
                guard let id = try cells[0].decode(UUID?.self) else { break }
                return .failure(.sessionNotFound(id))
            default: break
            }
            // Another tenant's link is "unknown": its existence is not revealed.
            return .failure(.link(.unknown))
        }
        return .failure(.link(.unknown))
    }

    /// How RecordConsent ended.
    public enum ConsentWrite: String, Sendable, Equatable {
        case consented
        /// Nothing written: no such session in the tenant's scope.
        case notFound = "not_found"
        /// Nothing written: the session has an outcome.
        case completed
        /// Nothing written: the session expired at or before `now`.
        case expired
        /// Nothing written: the session's gateway link was not opened.
        case notOpened = "not_opened"
        /// Nothing written: the session was consented to this notice version before; its
        /// consent keeps its first time.
        case alreadyConsented = "already_consented"
        /// Nothing written: the session changed between the function's write and its read (the
        /// link opened, or a consent to another notice recorded, meanwhile).
        case changed
    }

    /// Records consent to `noticeVersion` at `now`, with the MAC of the consented record
    /// (``SessionRecord``: `now` in whole seconds), if the session is open (no outcome,
    /// unexpired) and its link was opened; refusals are named in that order.
    public static func recordConsentIfOpen(
        _ id: UUID, noticeVersion: String, tenant: TenantID, at now: Date, seal: RecordSeal, on connection: DatabaseTransaction
    ) async throws -> ConsentWrite {
        let statement = RecordConsentIfOpen(id: id, tenant: tenant, noticeVersion: noticeVersion, now: now, seal: seal)
        for try await row in try await connection.execute(statement) {
            return ConsentWrite(rawValue: try row.decode(String.self)) ?? .notFound
        }
        return .notFound
    }

    struct CreateSession: PreparedStatement {
        static let name = "custos_create_sealed_session"
        static let sql = "SELECT create_session($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        static let bindingDataTypes: [PostgresDataType] = [
            .text, .uuid, .text, .int8, .textArray, .bytea, .bytea, .int8, .timestamptz, .bytea, .bytea, .int8,
        ]
        let new: New
        let tenant: TenantID
        let oldSubjects: [String]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 12)
            bindings.append(tenant.rawValue)
            bindings.append(new.id)
            bindings.append(new.subject.value)
            bindings.append(new.subject.piiVersion)
            bindings.append(oldSubjects)
            try bindings.append(new.sealedName.map { Data($0) })
            try bindings.append(new.sealedEmail.map { Data($0) })
            bindings.append(new.dataKeyVersion)
            bindings.append(new.expiresAt)
            try bindings.append(Data(new.linkHash))
            try bindings.append(Data(new.subjectSeal.mac))
            bindings.append(new.subjectSeal.macVersion)
            return bindings
        }
    }

    struct OpenGateway: PreparedStatement {
        static let name = "custos_open_gateway_link"
        static let sql = "SELECT * FROM open_gateway_link($1::uuid, $2, $3)"
        static let bindingDataTypes: [PostgresDataType] = [.text, .bytea, .timestamptz]
        let hash: [UInt8]
        let tenant: TenantID
        let now: Date

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 3)
            bindings.append(tenant.rawValue)
            try bindings.append(Data(hash))
            bindings.append(now)
            return bindings
        }
    }

    struct RecordConsentIfOpen: PreparedStatement {
        static let name = "custos_record_sealed_consent_once"
        static let sql = "SELECT record_consent_once($1::uuid, $2, $3, $4, $5, $6)"
        static let bindingDataTypes: [PostgresDataType] = [.text, .uuid, .text, .timestamptz, .bytea, .int8]
        let id: UUID
        let tenant: TenantID
        let noticeVersion: String
        let now: Date
        let seal: RecordSeal

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 6)
            bindings.append(tenant.rawValue)
            bindings.append(id)
            bindings.append(noticeVersion)
            bindings.append(now)
            try bindings.append(Data(seal.mac))
            bindings.append(seal.macVersion)
            return bindings
        }
    }
}
