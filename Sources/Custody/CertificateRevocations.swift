public import Storage

/// Client certificates (officers', front-ends') refused before they expire, by serial number
/// (DESIGN §10): NIOSSL checks no CRLs, so the deny-list lives in the database, where the
/// authenticator and two-officer approvals read it.
public struct CertificateRevocations: Sendable {
    let database: Database
    let audit: AuditLog

    public init(database: Database, audit: AuditLog) {
        self.database = database
        self.audit = audit
    }

    /// Revokes `serial`, audits it and tells every instance (on commit) in one transaction
    /// (revoking twice is harmless: the entry is written again, the first revocation stays).
    /// - Parameters:
    ///   - serial: lower-case hex, as ``CertificateRevocationStore`` keeps it.
    ///   - subject: what the officer says the certificate names, for the record.
    /// - Throws: ``CustodyError``.
    public func revoke(serial: String, subject: String, actor: String) async throws {
        let audit = audit
        try await custody {
            try await database.withTransaction(context: "revoke certificate") { connection in
                try await CertificateRevocationStore.revoke(serial: serial, subject: subject, by: actor, on: connection)
                try await audit.append(tenant: nil, actor: actor, action: .certificateRevoke, target: serial, details: [:], on: connection)
                try await CacheChange.certificateRevocations.announce(on: connection)
            }
        }
    }
}
