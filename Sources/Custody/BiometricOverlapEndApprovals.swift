public import CustosModel
public import Foundation
public import Storage

/// Ending a biometric rotation's overlap early takes two officers (DESIGN §10): it drops the
/// templates of every subject who has not migrated yet, who must then re-enrol in person. One
/// officer requests, a different one approves before the request expires; the approval and the
/// end of the overlap commit in one transaction (``TenantKeyring/closeBiometricOverlap(_:version:actor:reason:)``
/// with ``BiometricOverlapClosing/approvedEarly``), so there is no stored approval to forge or
/// replay, and a crash leaves either the request pending or the overlap ended with it approved.
public final class BiometricOverlapEndApprovals: Sendable {
    let database: Database
    let keyring: TenantKeyring
    let audit: AuditLog
    public let lifetime: Duration
    let now: @Sendable () -> Date

    public init(
        database: Database, keyring: TenantKeyring, audit: AuditLog, lifetime: Duration = .seconds(24 * 3600),
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.database = database
        self.keyring = keyring
        self.audit = audit
        self.lifetime = lifetime
        self.now = now
    }

    public typealias Request = OverlapEndRequestStore.Row

    /// First officer: asks to end the overlap of biometric `version` now.
    /// - Throws: ``CustodyError/invalidTransition(_:_:_:from:to:)`` unless the version is in its
    ///   overlap (`retiring`, window not over); ``CustodyError/unknownKeyVersion(_:_:_:)``.
    public func request(_ tenant: TenantID, version: Int, officer: String) async throws -> Request {
        let versions = try await keyring.versions(tenant)
        guard let seed = versions.first(where: { $0.purpose == .bioSeed && $0.version == version }) else {
            throw CustodyError.unknownKeyVersion(tenant, .bioSeed, version)
        }
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        guard seed.state == .retiring, let until = seed.retiringUntil, until > at else {
            throw CustodyError.invalidTransition(tenant, .bioSeed, version, from: seed.state, to: .retired)
        }
        let unsealed = Request(
            id: UUID(), tenant: tenant, version: version, requestedBy: officer, requestedAt: at,
            expiresAt: at.addingTimeInterval(Double(lifetime.components.seconds))
        )
        let pool = keyring.pool, rootKeys = keyring.rootKeys
        let mac = try await custody { try await pool.hmacSHA256(key: rootKeys.mac, data: OverlapEndRequestAuthenticator.requestMessage(for: unsealed)) }
        let row = Request(
            id: unsealed.id, tenant: tenant, version: version, requestedBy: officer, requestedAt: at, expiresAt: unsealed.expiresAt,
            requestMAC: mac, requestMACVersion: rootKeys.macVersion
        )
        let audit = audit
        try await custody {
            try await database.withTransaction(context: "request early end of biometric overlap") { connection in
                try await OverlapEndRequestStore.insert(row, on: connection)
                try await audit.append(
                    tenant: tenant, actor: officer, action: .biometricOverlapEndRequest, target: "bio/v\(version)",
                    details: ["request": row.id.uuidString.lowercased()], on: connection
                )
            }
        }
        return row
    }

    /// Second officer: approves, and the overlap ends in the same transaction.
    /// - Parameter certificateSerial: the serial (lower-case hex) of the approver's certificate;
    ///   a revoked one cannot approve.
    /// - Returns: the request and the templates dropped.
    /// - Throws: ``OverlapEndApprovalError``; ``CustodyError`` when the overlap is no longer
    ///   open (ended by its window meanwhile) or its rows changed.
    public func approve(_ id: UUID, officer: String, certificateSerial: String) async throws -> (request: Request, templatesDropped: Int) {
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let requested = try await custody {
            try await database.withTransaction(context: "read early end request") { connection in
                try await OverlapEndRequestStore.lock(id, on: connection)
            }
        }
        guard let requested else { throw OverlapEndApprovalError.unknown(id) }
        // Sealed in the HSM before the transaction; the transaction re-checks the request under
        // its lock, and the rows' expected MACs make a concurrent change fail it whole.
        let close = try await keyring.prepareBiometricOverlapClose(requested.tenant, version: requested.version)
        let pool = keyring.pool
        let dropped = try await custody {
            try await database.withTenant(requested.tenant, context: "approve early end of biometric overlap", timeout: TenantKeyring.BiometricOverlapClose.transactionTimeout) { connection in
                guard let row = try await OverlapEndRequestStore.lock(id, on: connection) else { throw OverlapEndApprovalError.unknown(id) }
                guard row.requestedBy != officer else { throw OverlapEndApprovalError.approverIsRequester(id) }
                // Only a request Custos recorded, unchanged since, can be approved.
                guard try await OverlapEndRequestAuthenticator.isAuthenticRequest(row, pool: pool) else {
                    throw OverlapEndApprovalError.requestNotAuthentic(id)
                }
                guard row.approvedAt == nil else { throw OverlapEndApprovalError.alreadyApproved(id) }
                guard at < row.expiresAt else { throw OverlapEndApprovalError.expired(id) }
                guard try await !CertificateRevocationStore.all(on: connection).contains(certificateSerial) else {
                    throw OverlapEndApprovalError.approverRevoked(id)
                }
                try await OverlapEndRequestStore.approve(id, by: officer, certificateSerial: certificateSerial, at: at, on: connection)
                return try await close.apply(
                    actor: officer, reason: .approvedEarly,
                    details: ["request": id.uuidString.lowercased(), "requested_by": row.requestedBy], on: connection
                )
            }
        }
        keyring.biometricOverlapClosed(close, dropped: dropped, reason: .approvedEarly)
        let approved = Request(
            id: requested.id, tenant: requested.tenant, version: requested.version, requestedBy: requested.requestedBy,
            requestedAt: requested.requestedAt, expiresAt: requested.expiresAt, approvedBy: officer, approvedAt: at,
            approverCertificateSerial: certificateSerial
        )
        return (approved, dropped)
    }
}

/// Why an early end of a biometric overlap was refused. Messages name the request, never a subject.
public enum OverlapEndApprovalError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknown(UUID)
    case approverIsRequester(UUID)
    case alreadyApproved(UUID)
    case expired(UUID)
    case approverRevoked(UUID)
    case requestNotAuthentic(UUID)

    public var description: String {
        switch self {
        case .unknown(let id): "no request to end a biometric overlap early with id \(id.uuidString.lowercased())"
        case .approverIsRequester(let id): "request \(id.uuidString.lowercased()) must be approved by a different officer than the one who made it"
        case .alreadyApproved(let id): "request \(id.uuidString.lowercased()) is already approved; the overlap has ended"
        case .expired(let id): "request \(id.uuidString.lowercased()) has expired; make a new one"
        case .approverRevoked(let id): "your certificate is revoked: you cannot approve request \(id.uuidString.lowercased())"
        case .requestNotAuthentic(let id):
            "request \(id.uuidString.lowercased()) fails its integrity check (changed or written outside Custos); make a new one"
        }
    }
}
