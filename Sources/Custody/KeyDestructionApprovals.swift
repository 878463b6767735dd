public import CustosModel
public import Foundation
public import Storage

/// Destroying a key version takes two officers (DESIGN §10): one requests, a different one
/// approves before the request expires, then either carries it out — once, and still subject to
/// the keyring's own rules (retired, waiting period over, nothing stored still needs it).
///
/// An approval is sealed with an HSM MAC (see ``DestructionApprovalAuthenticator``) and names
/// the approver's certificate serial: one written into the database directly, or whose
/// approver's certificate has since been revoked, does not count.
public final class KeyDestructionApprovals: Sendable {
    let database: Database
    let keyring: TenantKeyring
    let audit: AuditLog
    public let lifetime: Duration
    let now: @Sendable () -> Date
    let authenticator = DestructionApprovalAuthenticator()
    /// Test hook: runs while an execution holds the request row locked, before the key is destroyed.
    let executionHook: (@Sendable (UUID) async throws -> Void)?

    /// - Parameter executionHook: for tests only (observing the row lock during an execution).
    public init(
        database: Database, keyring: TenantKeyring, audit: AuditLog, lifetime: Duration = .seconds(24 * 3600),
        now: @escaping @Sendable () -> Date = { Date() }, executionHook: (@Sendable (UUID) async throws -> Void)? = nil
    ) {
        self.database = database
        self.keyring = keyring
        self.audit = audit
        self.lifetime = lifetime
        self.now = now
        self.executionHook = executionHook
    }

    public typealias Request = DestructionRequestStore.Row

    public func request(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, officer: String) async throws -> Request {
        let versions = try await keyring.versions(tenant)
        guard let record = versions.first(where: { $0.purpose == purpose && $0.version == version }) else {
            throw CustodyError.unknownKeyVersion(tenant, purpose, version)
        }
        guard record.state == .retired else { throw CustodyError.invalidTransition(tenant, purpose, version, from: record.state, to: .destroyed) }
        let at = now()
        let row = Request(
            id: UUID(), tenant: tenant, purpose: purpose, version: version, requestedBy: officer, requestedAt: at,
            expiresAt: at.addingTimeInterval(Double(lifetime.components.seconds)), approvedBy: nil, approvedAt: nil, executedAt: nil
        )
        let audit = audit
        try await custody {
            try await database.withTransaction(context: "request key destruction") { connection in
                try await DestructionRequestStore.insert(row, on: connection)
                try await audit.append(
                    tenant: tenant, actor: officer, action: .keyDestroyRequest, target: "\(purpose.rawValue)/v\(version)",
                    details: ["request": row.id.uuidString.lowercased()], on: connection
                )
            }
        }
        return row
    }

    /// An approval that no longer counts (see ``execute(_:officer:waitingPeriod:)``) may be
    /// replaced by a new one.
    /// - Parameter certificateSerial: the serial (lower-case hex) of the certificate the approver
    ///   authenticated with; revoking it later voids the approval.
    /// - Throws: ``DestructionApprovalError`` when the approver requested it, or the request is
    ///   unknown, expired, already approved or carried out.
    public func approve(_ id: UUID, officer: String, certificateSerial: String) async throws -> Request {
        // Whole seconds: the MAC covers the time, and PostgreSQL keeps microseconds only.
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let pool = keyring.pool, rootKeys = keyring.rootKeys, authenticator = self.authenticator
        let audit = audit
        _ = try await custody {
            try await database.withTransaction(context: "approve key destruction") { connection in
                guard let row = try await DestructionRequestStore.get(id, forUpdate: true, on: connection) else { throw DestructionApprovalError.unknown(id) }
                guard row.requestedBy != officer else { throw DestructionApprovalError.approverIsRequester(id) }
                let revoked = try await CertificateRevocationStore.all(on: connection)
                guard !revoked.contains(certificateSerial) else { throw DestructionApprovalError.approverRevoked(id) }
                // A void approval (forged in the database, or by a since-revoked officer) may be replaced.
                if row.approvedBy != nil, try await authenticator.isAuthentic(row, pool: pool),
                   !revoked.contains(row.approverCertificateSerial ?? "") {
                    throw DestructionApprovalError.alreadyApproved(id)
                }
                guard at < row.expiresAt else { throw DestructionApprovalError.expired(id) }
                let (mac, macVersion) = try await authenticator.mac(
                    for: row, approvedBy: officer, certificateSerial: certificateSerial, approvedAt: at, pool: pool, rootKeys: rootKeys
                )
                try await DestructionRequestStore.approve(
                    id, by: officer, certificateSerial: certificateSerial, at: at, mac: mac, macVersion: macVersion, on: connection
                )
                try await audit.append(
                    tenant: row.tenant, actor: officer, action: .keyDestroyApprove, target: "\(row.purpose.rawValue)/v\(row.version)",
                    details: ["request": id.uuidString.lowercased()], on: connection
                )
                return row
            }
        }
        return try await get(id)
    }

    /// Carries out an approved, unexpired request once: the request row stays locked (`FOR
    /// UPDATE`) from the checks until it is marked carried out, so a second execution waits and
    /// then finds it done. Needs a second database connection meanwhile (the keyring's own).
    /// - Throws: ``DestructionApprovalError``; ``CustodyError`` from the keyring's rules.
    public func execute(_ id: UUID, officer: String, waitingPeriod: Duration) async throws -> Request {
        let at = now()
        let keyring = self.keyring, authenticator = self.authenticator, hook = executionHook
        let pool = keyring.pool
        try await custody {
            try await database.withTransaction(context: "carry out key destruction") { connection in
                guard let row = try await DestructionRequestStore.get(id, forUpdate: true, on: connection) else { throw DestructionApprovalError.unknown(id) }
                guard row.executedAt == nil else { throw DestructionApprovalError.alreadyExecuted(id) }
                guard row.approvedBy != nil else { throw DestructionApprovalError.notApproved(id) }
                guard at < row.expiresAt else { throw DestructionApprovalError.expired(id) }
                guard try await authenticator.isAuthentic(row, pool: pool) else { throw DestructionApprovalError.approvalNotAuthentic(id) }
                if let serial = row.approverCertificateSerial, try await CertificateRevocationStore.all(on: connection).contains(serial) {
                    throw DestructionApprovalError.approverRevoked(id)
                }
                try await hook?(id)
                try await keyring.destroy(row.tenant, row.purpose, version: row.version, waitingPeriod: waitingPeriod, actor: officer)
                try await DestructionRequestStore.markExecuted(id, at: at, on: connection)
            }
        }
        return try await get(id)
    }

    public func get(_ id: UUID) async throws -> Request {
        let row = try await custody {
            try await database.withTransaction(context: "read key destruction request") { connection in
                try await DestructionRequestStore.get(id, forUpdate: false, on: connection)
            }
        }
        guard let row else { throw DestructionApprovalError.unknown(id) }
        return row
    }

    private func custody<R: Sendable>(_ body: () async throws -> R) async throws -> R {
        do {
            return try await body()
        } catch let error as StorageError {
            throw CustodyError.storage(error)
        }
    }
}

/// Why a destruction request was refused.
public enum DestructionApprovalError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknown(UUID)
    case approverIsRequester(UUID)
    case alreadyApproved(UUID)
    case notApproved(UUID)
    case alreadyExecuted(UUID)
    case expired(UUID)
    /// The approval's HSM MAC is missing or wrong: it was not made through Custos.
    case approvalNotAuthentic(UUID)
    /// The approver's certificate was revoked after approving: the approval no longer counts.
    case approverRevoked(UUID)

    public var description: String {
        switch self {
        case .unknown(let id): "no key destruction request \(id.uuidString.lowercased())"
        case .approverIsRequester(let id): "request \(id.uuidString.lowercased()) must be approved by a different officer than the one who made it"
        case .alreadyApproved(let id): "request \(id.uuidString.lowercased()) is already approved"
        case .notApproved(let id): "request \(id.uuidString.lowercased()) has no approval from a second officer yet"
        case .alreadyExecuted(let id): "request \(id.uuidString.lowercased()) was already carried out"
        case .expired(let id): "request \(id.uuidString.lowercased()) has expired; make a new one"
        case .approvalNotAuthentic(let id): "the approval of request \(id.uuidString.lowercased()) fails its integrity check; it does not count"
        case .approverRevoked(let id): "the officer who approved request \(id.uuidString.lowercased()) has had their certificate revoked; another officer must approve it"
        }
    }
}
