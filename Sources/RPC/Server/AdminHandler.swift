public import Custody
import CustosModel
import Foundation
public import GRPCCore
public import HSM
import SecureMemory
import Storage
import SwiftProtobuf
public import Verification

/// `custos.v1.Admin`: what security officers and data-protection officers do. Officer
/// certificates only (the interceptor checks); every change is audited with the officer's name.
/// It reads and writes nothing itself: each call goes to the Custody or Verification service
/// that owns the data (Storage's record types are only what those services return).
public struct AdminHandler: Custos_V1_Admin.SimpleServiceProtocol {
    public struct Dependencies: Sendable {
        public let webhooks: WebhookSigner
        public let pool: SessionPool
        public let keyring: TenantKeyring
        public let audit: AuditLog
        public let apiKeys: APIKeyService
        public let revocations: CertificateRevocations
        public let approvals: KeyDestructionApprovals
        public let policies: TenantPolicies
        public let rights: SubjectRights
        public let retention: RetentionJob
        public let authenticator: Authenticator
        /// How long a retired version must rest before it may be destroyed.
        public let destructionWaitingPeriod: Duration
        /// Re-seals `data` records under the active version (`ResealKeys`).
        public let reseal: SessionResealJob
        public let offboarding: TenantOffboarding
        /// Ends a biometric rotation's overlap early, with two officers.
        public let overlapEnds: BiometricOverlapEndApprovals

        public init(
            webhooks: WebhookSigner, pool: SessionPool, keyring: TenantKeyring, audit: AuditLog, apiKeys: APIKeyService,
            revocations: CertificateRevocations, approvals: KeyDestructionApprovals, policies: TenantPolicies, rights: SubjectRights, retention: RetentionJob,
            authenticator: Authenticator, destructionWaitingPeriod: Duration, reseal: SessionResealJob, offboarding: TenantOffboarding,
            overlapEnds: BiometricOverlapEndApprovals
        ) {
            self.offboarding = offboarding
            self.overlapEnds = overlapEnds
            self.webhooks = webhooks
            self.pool = pool
            self.keyring = keyring
            self.audit = audit
            self.apiKeys = apiKeys
            self.revocations = revocations
            self.approvals = approvals
            self.policies = policies
            self.rights = rights
            self.retention = retention
            self.authenticator = authenticator
            self.destructionWaitingPeriod = destructionWaitingPeriod
            self.reseal = reseal
        }
    }

    let deps: Dependencies

    public init(_ dependencies: Dependencies) { deps = dependencies }

    func officer() throws -> String { "officer:" + (try Caller.requireOfficer()) }

    /// The serial of the certificate a second officer approves with: the approval names it, so
    /// revoking that certificate voids what it approved.
    func approverSerial() throws -> String {
        guard let serial = Caller.current?.certificateSerial else {
            throw RPCError(code: .permissionDenied, message: "approving needs the officer's own client certificate")
        }
        return serial
    }

    // MARK: Tenants

    public func createTenant(request: Custos_V1_CreateTenantRequest, context: ServerContext) async throws -> Custos_V1_CreateTenantResponse {
        let label = try RequestFields.tenantLabel(request.label)
        let record = try await deps.keyring.createTenant(label: label, actor: try officer())
        let policy = try await appliedPolicy(.default, of: record.id)
        return .with { $0.tenant = tenant(record, policy: policy, listedDisabled: false) }
    }

    public func listTenants(request: Custos_V1_ListTenantsRequest, context: ServerContext) async throws -> Custos_V1_ListTenantsResponse {
        _ = try officer()
        var tenants = [Custos_V1_Tenant]()
        for record in try await deps.keyring.tenants() {
            let listedDisabled = try await deps.keyring.isTenantDisabled(record.id)
            do {
                let policy = try await appliedPolicy(try await deps.policies.policy(record.id), of: record.id)
                tenants.append(tenant(record, policy: policy, listedDisabled: listedDisabled))
            } catch RecordIntegrityError.tenantPolicy(let refused) where refused == record.id {
                // Shown, not skipped (helper-78), and no longer at the cost of every other
                // tenant: one forged policy row failed the whole list, hiding the others.
                tenants.append(tenant(record, policy: nil, listedDisabled: listedDisabled))
            }
        }
        return .with { $0.tenants = tenants }
    }

    public func disableTenant(request: Custos_V1_DisableTenantRequest, context: ServerContext) async throws -> Custos_V1_DisableTenantResponse {
        let id = try RequestFields.tenant(request.tenantID)
        guard try await deps.keyring.setTenantActive(id, false, actor: try officer()) else {
            throw RPCError(code: .notFound, message: "unknown tenant \(id)")
        }
        deps.authenticator.invalidateTenant(id)
        return Custos_V1_DisableTenantResponse()
    }

    public func setTenantPolicy(request: Custos_V1_SetTenantPolicyRequest, context: ServerContext) async throws -> Custos_V1_SetTenantPolicyResponse {
        let id = try await existingTenant(request.tenantID)
        let actor = try officer()
        let given = request.policy
        guard request.hasUpdateMask, !request.updateMask.paths.isEmpty else {
            let policy = try TenantPolicy(
                green: given.greenThreshold, amber: given.amberThreshold,
                retentionDays: Int(given.retentionDays), tokenizationsPerMinute: Int(given.tokenizationBudgetPerMinute),
                bioOverlapDays: given.hasBioOverlapDays ? Int(given.bioOverlapDays) : TenantPolicy.default.bioOverlapDays
            )
            let applied = try await appliedPolicy(try await deps.policies.set(policy, for: id, actor: actor), of: id)
            return .with { $0.policy = applied }
        }
        var changes = TenantPolicy.Changes()
        for path in request.updateMask.paths {
            switch path {
            case "green_threshold": changes.green = given.greenThreshold
            case "amber_threshold": changes.amber = given.amberThreshold
            case "retention_days": changes.retentionDays = Int(given.retentionDays)
            case "tokenization_budget_per_minute": changes.tokenizationsPerMinute = Int(given.tokenizationBudgetPerMinute)
            case "bio_overlap_days": changes.bioOverlapDays = Int(given.bioOverlapDays)
            default:
                throw RPCError(
                    code: .invalidArgument,
                    message: "update_mask: paths are green_threshold, amber_threshold, retention_days, tokenization_budget_per_minute and bio_overlap_days"
                )
            }
        }
        let applied = try await appliedPolicy(try await deps.policies.update(changes, for: id, actor: actor), of: id)
        return .with { $0.policy = applied }
    }

    public func getTenantPolicy(request: Custos_V1_GetTenantPolicyRequest, context: ServerContext) async throws -> Custos_V1_GetTenantPolicyResponse {
        _ = try officer()
        let id = try await existingTenant(request.tenantID)
        let policy = try await appliedPolicy(try await deps.policies.policy(id), of: id)
        return .with { $0.policy = policy }
    }

    // MARK: Keys

    public func listKeys(request: Custos_V1_AdminListKeysRequest, context: ServerContext) async throws -> Custos_V1_AdminListKeysResponse {
        _ = try officer()
        let id = try await existingTenant(request.tenantID)
        let versions = try await deps.keyring.versions(id)
        return .with { $0.keys = versions.map(Self.keyVersion) }
    }

    public func rotateKey(request: Custos_V1_RotateKeyRequest, context: ServerContext) async throws -> Custos_V1_RotateKeyResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let purpose = try RequestFields.purpose(request.purpose)
        var activated = [KeyVersionRecord]()
        if purpose == .bioSeed || purpose == .bioPRF {
            // One biometric version covers both keys: they rotate together.
            let version = try await deps.keyring.rotateBiometric(id, actor: actor)
            activated = try await deps.keyring.versions(id).filter { ($0.purpose == .bioSeed || $0.purpose == .bioPRF) && $0.version == version }
        } else {
            let rotated = try await deps.keyring.rotate(id, purpose, actor: actor)
            activated = try await deps.keyring.versions(id).filter { $0.purpose == purpose && $0.version == rotated.version }
        }
        return .with { $0.activated = activated.map(Self.keyVersion) }
    }

    public func retireKey(request: Custos_V1_RetireKeyRequest, context: ServerContext) async throws -> Custos_V1_RetireKeyResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let purpose = try RequestFields.purpose(request.purpose)
        try await deps.keyring.retire(id, purpose, version: Int(request.version), actor: actor)
        let record = try await deps.keyring.versions(id).first { $0.purpose == purpose && $0.version == Int(request.version) }
        return .with { if let record { $0.key = Self.keyVersion(record) } }
    }

    public func requestKeyDestruction(request: Custos_V1_RequestKeyDestructionRequest, context: ServerContext) async throws -> Custos_V1_RequestKeyDestructionResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        // Every officer's destruction is scheduled (DESIGN §5): the default when none is named.
        let days = request.hasWaitingDays ? Int(request.waitingDays) : KeyDestructionApprovals.defaultWaitingDays
        guard KeyDestructionApprovals.waitingDaysRange.contains(days) else {
            throw RPCError(code: .invalidArgument, message: DestructionApprovalError.waitingDaysOutOfRange(days).description)
        }
        let row = try await deps.approvals.request(
            id, try RequestFields.purpose(request.purpose), version: Int(request.version), officer: actor, waitingDays: days
        )
        return .with {
            $0.requestID = row.id.uuidString.lowercased()
            $0.expiresAt = Google_Protobuf_Timestamp(date: row.expiresAt)
            $0.waitingDays = UInt32(days)
        }
    }

    public func approveKeyDestruction(request: Custos_V1_ApproveKeyDestructionRequest, context: ServerContext) async throws -> Custos_V1_ApproveKeyDestructionResponse {
        let actor = try officer()
        let serial = try approverSerial()
        let row = try await deps.approvals.approve(try RequestFields.uuid(request.requestID, field: "request_id"), officer: actor, certificateSerial: serial)
        return .with {
            if let at = row.approvedAt { $0.approvedAt = Google_Protobuf_Timestamp(date: at) }
            if let due = row.dueAt { $0.dueAt = Google_Protobuf_Timestamp(date: due) }
        }
    }

    public func cancelKeyDestruction(request: Custos_V1_CancelKeyDestructionRequest, context: ServerContext) async throws -> Custos_V1_CancelKeyDestructionResponse {
        let actor = try officer()
        let row = try await deps.approvals.cancel(try RequestFields.uuid(request.requestID, field: "request_id"), officer: actor)
        return .with { if let at = row.cancelledAt { $0.cancelledAt = Google_Protobuf_Timestamp(date: at) } }
    }

    public func disableKey(request: Custos_V1_DisableKeyRequest, context: ServerContext) async throws -> Custos_V1_DisableKeyResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let record = try await deps.keyring.disable(id, try RequestFields.purpose(request.purpose), version: Int(request.version), actor: actor)
        return .with { $0.key = Self.keyVersion(record) }
    }

    public func enableKey(request: Custos_V1_EnableKeyRequest, context: ServerContext) async throws -> Custos_V1_EnableKeyResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let record = try await deps.keyring.enable(id, try RequestFields.purpose(request.purpose), version: Int(request.version), actor: actor)
        return .with { $0.key = Self.keyVersion(record) }
    }

    public func destroyKey(request: Custos_V1_DestroyKeyRequest, context: ServerContext) async throws -> Custos_V1_DestroyKeyResponse {
        let actor = try officer()
        let row = try await deps.approvals.execute(
            try RequestFields.uuid(request.requestID, field: "request_id"), officer: actor, waitingPeriod: deps.destructionWaitingPeriod
        )
        let record = try await deps.keyring.versions(row.tenant).first { $0.purpose == row.purpose && $0.version == row.version }
        return .with { if let record { $0.key = Self.keyVersion(record) } }
    }

    // MARK: Offboarding

    public func requestTenantOffboarding(request: Custos_V1_RequestTenantOffboardingRequest, context: ServerContext) async throws -> Custos_V1_RequestTenantOffboardingResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let days = request.hasWaitingDays ? Int(request.waitingDays) : KeyDestructionApprovals.defaultWaitingDays
        guard KeyDestructionApprovals.waitingDaysRange.contains(days) else {
            throw RPCError(code: .invalidArgument, message: DestructionApprovalError.waitingDaysOutOfRange(days).description)
        }
        let row = try await deps.offboarding.request(id, officer: actor, waitingDays: days)
        return .with {
            $0.requestID = row.id.uuidString.lowercased()
            $0.expiresAt = Google_Protobuf_Timestamp(date: row.expiresAt)
            $0.waitingDays = UInt32(days)
        }
    }

    public func approveTenantOffboarding(request: Custos_V1_ApproveTenantOffboardingRequest, context: ServerContext) async throws -> Custos_V1_ApproveTenantOffboardingResponse {
        let actor = try officer()
        let serial = try approverSerial()
        let row = try await deps.offboarding.approve(try RequestFields.uuid(request.requestID, field: "request_id"), officer: actor, certificateSerial: serial)
        return .with {
            if let at = row.approvedAt { $0.approvedAt = Google_Protobuf_Timestamp(date: at) }
            if let due = row.dueAt { $0.dueAt = Google_Protobuf_Timestamp(date: due) }
        }
    }

    public func completeTenantOffboarding(request: Custos_V1_CompleteTenantOffboardingRequest, context: ServerContext) async throws -> Custos_V1_CompleteTenantOffboardingResponse {
        let actor = try officer()
        let row = try await deps.offboarding.complete(try RequestFields.uuid(request.requestID, field: "request_id"), officer: actor)
        return .with { if let at = row.completedAt { $0.completedAt = Google_Protobuf_Timestamp(date: at) } }
    }

    // MARK: API keys

    public func issueAPIKey(request: Custos_V1_IssueAPIKeyRequest, context: ServerContext) async throws -> Custos_V1_IssueAPIKeyResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let known = Set(Authenticator.scopes.values)
        guard !request.scopes.isEmpty, request.scopes.allSatisfy(known.contains) else {
            throw RPCError(code: .invalidArgument, message: "scopes: one or more of \(known.sorted().joined(separator: ", "))")
        }
        let label = try RequestFields.text(request.label, field: "label", maxBytes: 128)
        guard request.ttlSeconds <= 2 * 365 * 86_400 else { throw RPCError(code: .invalidArgument, message: "ttl_seconds: at most 2 years (63072000)") }
        let expiry = request.ttlSeconds == 0 ? nil : Date().addingTimeInterval(Double(request.ttlSeconds))
        // Each scope once, in the order given (helper-91: ["keys", "keys"] was stored as sent).
        var seen = Set<String>()
        let scopes = request.scopes.filter { seen.insert($0).inserted }
        let issued = try await deps.apiKeys.issue(tenant: id, scopes: scopes, label: label, expiresAt: expiry, actor: actor)
        let record = try await deps.apiKeys.list(tenant: id).first { $0.keyID == issued.keyID }
        return .with {
            $0.apiKey = issued.key.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            if let record { $0.info = APIKeysHandler.info(record) }
        }
    }

    public func revokeAPIKey(request: Custos_V1_RevokeAPIKeyRequest, context: ServerContext) async throws -> Custos_V1_RevokeAPIKeyResponse {
        let actor = try officer()
        let keyID = try RequestFields.apiKeyID(request.keyID)
        let id = try await existingTenant(request.tenantID)
        do {
            guard try await deps.apiKeys.revoke(tenant: id, keyID: keyID, actor: actor) else {
                throw RPCError(code: .notFound, message: "no API key \(keyID) in tenant \(id)")
            }
            return .with { $0.revoked = true }
        } catch APIKeyError.alreadyRevoked {
            return .with { $0.revoked = false }
        }
    }

    public func listAPIKeys(request: Custos_V1_ListAPIKeysRequest, context: ServerContext) async throws -> Custos_V1_ListAPIKeysResponse {
        _ = try officer()
        let id = try await existingTenant(request.tenantID)
        let keys = request.stale ? try await deps.apiKeys.stale(tenant: id) : try await deps.apiKeys.list(tenant: id)
        return .with { $0.keys = keys.map(APIKeysHandler.info) }
    }

    public func revokeCertificate(request: Custos_V1_RevokeCertificateRequest, context: ServerContext) async throws -> Custos_V1_RevokeCertificateResponse {
        let actor = try officer()
        let serial = request.serial.lowercased()
        guard (1...64).contains(serial.utf8.count), serial.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw RPCError(code: .invalidArgument, message: "serial: the certificate's serial number in hex")
        }
        let subject = try RequestFields.text(request.subject, field: "subject", maxBytes: 256)
        try await deps.revocations.revoke(serial: serial, subject: subject, actor: actor)
        deps.authenticator.invalidateRevocations()
        return .with { $0.revoked = true }
    }

    // MARK: Webhook keys

    public func createWebhookSecret(request: Custos_V1_CreateWebhookSecretRequest, context: ServerContext) async throws -> Custos_V1_CreateWebhookSecretResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let (version, secret) = try await deps.webhooks.createSecret(tenant: id, overlap: try Self.overlap(request.hasOverlapSeconds ? request.overlapSeconds : nil), actor: actor)
        return .with {
            $0.version = UInt32(version)
            $0.secret = secret.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        }
    }

    public func createWebhookEd25519Key(request: Custos_V1_CreateWebhookEd25519KeyRequest, context: ServerContext) async throws -> Custos_V1_CreateWebhookEd25519KeyResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let (version, publicKey) = try await deps.webhooks.createEd25519Key(tenant: id, overlap: try Self.overlap(request.hasOverlapSeconds ? request.overlapSeconds : nil), actor: actor)
        return .with {
            $0.version = UInt32(version)
            $0.publicKey = publicKey
        }
    }

    static func overlap(_ seconds: UInt32?) throws -> Duration {
        guard let seconds else { return .seconds(86_400) }
        guard seconds <= 7 * 86_400 else { throw RPCError(code: .invalidArgument, message: "overlap_seconds is at most 604800 (7 days)") }
        return .seconds(Int(seconds))
    }

    // MARK: Audit and HSM

    public func auditTail(request: Custos_V1_AuditTailRequest, context: ServerContext) async throws -> Custos_V1_AuditTailResponse {
        _ = try officer()
        // As AuditExport: over the bound is refused, not cut silently (helper-91).
        guard request.limit <= 1_000 else { throw RPCError(code: .invalidArgument, message: "limit is at most 1000") }
        let limit = Int(request.limit == 0 ? 20 : request.limit)
        let entries = try await deps.audit.tail(limit: limit)
        return .with { $0.entries = entries.map(Self.wire) }
    }

    public func auditExport(request: Custos_V1_AuditExportRequest, context: ServerContext) async throws -> Custos_V1_AuditExportResponse {
        _ = try officer()
        guard request.limit <= 1_000 else { throw RPCError(code: .invalidArgument, message: "limit is at most 1000") }
        guard request.afterSequence <= UInt64(Int64.max) else { throw RPCError(code: .invalidArgument, message: "after_sequence is out of range") }
        let since = request.hasSince ? try RequestFields.date(request.since, field: "since") : nil
        let entries = try await deps.audit.export(
            after: Int64(request.afterSequence), since: since, limit: Int(request.limit == 0 ? 500 : request.limit)
        )
        return .with {
            $0.entries = entries.map(Self.wire)
            $0.nextAfterSequence = entries.last.map { UInt64($0.seq) } ?? request.afterSequence
        }
    }

    static func wire(_ entry: AuditEntryRecord) -> Custos_V1_AuditEntry {
        .with {
            $0.sequence = UInt64(entry.seq)
            $0.at = Google_Protobuf_Timestamp(date: entry.at)
            $0.actor = entry.actor
            $0.action = entry.action
            $0.target = entry.target
            $0.tenantID = entry.tenant?.rawValue ?? ""
            $0.details = (try? JSONSerialization.jsonObject(with: Data(entry.details.utf8)) as? [String: String]) ?? [:]
            $0.hash = Hex.encode(entry.entryHash)
            $0.previousHash = Hex.encode(entry.previousHash)
        }
    }

    public func auditVerify(request: Custos_V1_AuditVerifyRequest, context: ServerContext) async throws -> Custos_V1_AuditVerifyResponse {
        _ = try officer()
        let result = try await deps.audit.verify()
        return .with {
            $0.ok = result.isIntact
            $0.entriesChecked = UInt64(result.entriesChecked)
            $0.firstBadSequence = UInt64(result.firstBroken ?? 0)
            $0.problem = result.problem ?? ""
        }
    }

    public func hsmStatus(request: Custos_V1_HSMStatusRequest, context: ServerContext) async throws -> Custos_V1_HSMStatusResponse {
        _ = try officer()
        // The primary's own description needs the primary: while it is out of service the rest
        // of the status (which says so) is what an operator needs.
        let token = try? await deps.pool.tokenInfo()
        let statistics = deps.pool.statistics
        return .with {
            $0.tokenLabel = token?.label ?? deps.pool.configuration.token.name
            $0.tokenSerial = token?.serialNumber ?? ""
            $0.manufacturer = token?.manufacturer ?? ""
            $0.model = token?.model ?? ""
            $0.workers = UInt32(statistics.workers)
            $0.openSessions = UInt32(statistics.openSessions)
            $0.callsInFlight = UInt32(statistics.callsInFlight)
            $0.waitingRequests = UInt32(statistics.waitingRequests)
            $0.generation = statistics.generation
            $0.breakerOpen = statistics.breakerOpen
            $0.running = statistics.running
            $0.tokens = deps.pool.tokenHealth.map { token in
                .with {
                    $0.tokenLabel = token.label
                    $0.inService = token.status.inService
                    if let since = token.status.outOfServiceSince { $0.outOfServiceSince = Google_Protobuf_Timestamp(date: since) }
                    $0.lastErrorClass = token.status.lastErrorClass ?? ""
                    $0.openSessions = UInt32(token.statistics.openSessions)
                    $0.breakerOpen = token.statistics.breakerOpen
                    $0.probesWhileOut = UInt32(token.status.probesWhileOut)
                    if let probe = token.status.lastProbe { $0.lastProbe = Google_Protobuf_Timestamp(date: probe) }
                    $0.takenOut = UInt32(token.status.takenOut)
                    $0.broughtBack = UInt32(token.status.broughtBack)
                }
            }
        }
    }

    // MARK: Data protection

    public func exportSubject(request: Custos_V1_ExportSubjectRequest, context: ServerContext) async throws -> Custos_V1_ExportSubjectResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let externalID = PersonalText(request.subjectExternalID)
        // Unpaged (page_size 0) for a client that does not know paging: it must never take one
        // page for the whole export.
        guard request.pageSize > 0 || !request.pageToken.isEmpty else {
            // An export that cannot be encoded is an error, never an empty export.
            let json = try await deps.rights.export(tenant: id, externalID: externalID, actor: actor).json()
            return .with { $0.json = json }
        }
        let paging = try SubjectExportPaging(size: Int(request.pageSize), token: request.pageToken)
        let page = try await deps.rights.export(tenant: id, externalID: externalID, actor: actor, paging: paging)
        let json = try page.export.json()
        return .with {
            $0.json = json
            $0.nextPageToken = page.nextPageToken ?? ""
        }
    }

    public func eraseSubject(request: Custos_V1_EraseSubjectRequest, context: ServerContext) async throws -> Custos_V1_EraseSubjectResponse {
        let actor = try officer()
        let id = try await existingTenant(request.tenantID)
        let counts = try await deps.rights.erase(tenant: id, externalID: PersonalText(request.subjectExternalID), actor: actor)
        return .with {
            $0.templatesDeleted = UInt32(counts.templates)
            $0.sessionsDeleted = UInt32(counts.sessions)
        }
    }

    public func runRetention(request: Custos_V1_RunRetentionRequest, context: ServerContext) async throws -> Custos_V1_RunRetentionResponse {
        let actor = try officer()
        let tenant = request.hasTenantID ? try await existingTenant(request.tenantID) : nil
        let deleted = try await deps.retention.run(tenant: tenant, actor: actor)
        return .with {
            $0.templatesDeleted = UInt32(deleted.values.reduce(0) { $0 + $1.templates })
            $0.sessionsDeleted = UInt32(deleted.values.reduce(0) { $0 + $1.sessions })
            $0.tenantsWithDeletions = UInt32(deleted.count)
        }
    }

    // MARK: Helpers

    private func existingTenant(_ text: String) async throws -> TenantID {
        let id = try RequestFields.tenant(text)
        guard try await deps.keyring.tenant(id) != nil else { throw RPCError(code: .notFound, message: "unknown tenant \(id)") }
        return id
    }

    /// - Parameter listedDisabled: the HSM's list of key states names the tenant disabled (or
    ///   offboarding): shown disabled whatever its row says, which the database's writer can set.
    /// - Parameter policy: nil when the tenant's policy row is refused.
    private func tenant(_ record: TenantRecord, policy: Custos_V1_TenantPolicy?, listedDisabled: Bool) -> Custos_V1_Tenant {
        .with {
            $0.tenantID = record.id.rawValue
            $0.label = record.label
            $0.disabled = record.status != "active" || listedDisabled
            $0.createdAt = Google_Protobuf_Timestamp(date: record.createdAt)
            if let policy { $0.policy = policy } else { $0.policyRefused = true }
        }
    }

    /// `policy` as it applies to `tenant` now: the stored pair is a fraction of one format's
    /// scale (or none was set), so what is shown is what ``TenantPolicy/thresholds(for:)``
    /// gives each biometric version that still matches — the pair Verify and Identify decide
    /// that version's comparisons with. Formats come from the versions' rows.
    private func appliedPolicy(_ policy: TenantPolicy, of tenant: TenantID) async throws -> Custos_V1_TenantPolicy {
        let rows = try await deps.keyring.versions(tenant)
        let matching: [Int]
        do {
            matching = try await deps.keyring.biometricMatchingVersions(tenant).sorted(by: >)
        } catch CustodyError.keyDisabled, CustodyError.keyDestructionScheduled, CustodyError.keyDestroyed, CustodyError.tenantOffboarding {
            // The tenant's active biometric version is refused by its (MAC-checked) state, yet
            // officers list every tenant (helper-77: one such tenant failed the whole
            // ListTenants): the versions its rows name as matching, refused or not, so the
            // thresholds show on the tenant's own scale. Integrity, HSM and database errors
            // still fail the call (helper-78).
            let now = Date()
            let inWindow = { (purpose: KeyPurpose) in
                Set(rows.filter { row in
                    row.purpose == purpose && (row.state == .active || (row.state == .retiring && (row.retiringUntil.map { $0 > now } ?? false)))
                }.map(\.version))
            }
            matching = inWindow(.bioSeed).intersection(inWindow(.bioPRF)).sorted(by: >)
        }
        let formats = Dictionary(
            rows.filter { $0.purpose == .bioPRF }.map { ($0.version, $0.tokenFormat ?? .wide) },
            uniquingKeysWith: { first, _ in first }
        )
        let versions = matching.compactMap { version in formats[version].map { (version: version, format: $0) } }
        return Self.policy(policy, versions: versions)
    }

    /// - Parameter versions: the tenant's matching biometric versions with their formats, newest
    ///   (the active one) first; none: the thresholds of the format a first version would get.
    static func policy(_ policy: TenantPolicy, versions: [(version: Int, format: BiometricTokenFormat)]) -> Custos_V1_TenantPolicy {
        let active = versions.first?.format ?? .default
        let applied = policy.thresholds(for: active)
        return .with {
            $0.greenThreshold = applied.green
            $0.amberThreshold = applied.amber
            $0.thresholdsFormat = active.wire
            $0.biometricVersions = versions.map { version in
                let thresholds = policy.thresholds(for: version.format)
                return .with {
                    $0.keyVersion = UInt32(version.version)
                    $0.tokenFormat = version.format.wire
                    $0.greenThreshold = thresholds.green
                    $0.amberThreshold = thresholds.amber
                    $0.tenantSet = policy.ownThresholds(for: version.format)
                }
            }
            $0.retentionDays = UInt32(policy.retentionDays)
            $0.tokenizationBudgetPerMinute = UInt32(policy.tokenizationsPerMinute)
            $0.bioOverlapDays = UInt32(policy.bioOverlapDays)
        }
    }

    static func keyVersion(_ record: KeyVersionRecord) -> Custos_V1_KeyVersion {
        .with {
            $0.purpose = RequestFields.purpose(record.purpose)
            $0.version = UInt32(record.version)
            $0.state = RequestFields.state(record.state)
            $0.checkValue = Hex.encode(record.checkValue)
            $0.rootKekVersion = UInt32(record.rootKEKVersion)
            // A pending row's holds its rotation's overlap for the version it replaces: not its own.
            if record.state == .retiring, let until = record.retiringUntil { $0.retiringUntil = Google_Protobuf_Timestamp(date: until) }
            if let at = record.createdAt { $0.createdAt = Google_Protobuf_Timestamp(date: at) }
            if let at = record.destroyedAt { $0.destroyedAt = Google_Protobuf_Timestamp(date: at) }
            if let at = record.disabledAt { $0.disabledAt = Google_Protobuf_Timestamp(date: at) }
            if let at = record.destructionDueAt { $0.destructionDueAt = Google_Protobuf_Timestamp(date: at) }
        }
    }
}
