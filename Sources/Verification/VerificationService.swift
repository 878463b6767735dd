public import CustosModel
public import Foundation
public import Logging
import PostgresNIO
public import Storage
import Synchronization

/// Enrol, verify 1:1 and identify 1:N over tokens (DESIGN §9). It never sees a feature: the
/// composition root checks consent with ``VerificationSessions``, tokenizes, and passes tokens;
/// subjects are pseudonymous references (an HMAC of the tenant's external id, made by custody).
///
/// Each session's outcome is written in the same transaction as the enrolment or comparison
/// that produced it, once. The 1:N galleries follow other instances' enrolments and erasures
/// through NOTIFY (``runGalleryListener()``); identification re-checks its candidates against
/// the database, so a stale gallery can miss a brand-new subject but never return an erased one.
public final class VerificationService: Sendable {
    let database: Database
    public let policies: TenantPolicies
    public let galleryCapacity: Int
    let now: @Sendable () -> Date
    let logger: Logger
    /// Names this instance in gallery notifications, so it skips its own.
    let instance = UUID().uuidString.lowercased()
    private let galleries = Mutex([String: TokenGallery]())
    private let listening = Atomic<Bool>(false)

    public init(
        database: Database, policies: TenantPolicies? = nil, galleryCapacity: Int = 100_000,
        logger: Logger = Logger(label: "custos.verification"), now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.database = database
        self.policies = policies ?? TenantPolicies(database: database, audit: nil)
        self.galleryCapacity = galleryCapacity
        self.logger = logger
        self.now = now
    }

    // MARK: Sessions

    /// Enrols the session's subject with `token` and records the outcome, in one transaction.
    /// - Returns: the subject's reference.
    public func enrol(tenant: TenantID, session: UUID, token: BiometricToken) async throws -> SubjectReference {
        let now = now()
        let instance = instance
        let subject = try await database.withTenant(tenant, context: "enrol in session") { connection in
            let row = try await Self.lockReadySession(session, now: now, on: connection)
            try await TemplateStore.upsert(subject: row.subject, token: token, tenant: tenant, on: connection)
            _ = try await SessionStore.complete(session, outcome: "enrolled", confidence: nil, biometricKeyVersion: token.keyVersion, at: now, on: connection)
            try await TemplateStore.notify(
                GalleryChange(instance: instance, tenant: tenant, kind: .enrolled, keyVersion: token.keyVersion, subject: row.subject.value), on: connection
            )
            return row.subject
        }
        galleryEnrol(tenant, subject.value, token)
        return subject
    }

    /// Compares `probe` with the session subject's template and records the decision.
    /// - Throws: ``VerificationError/notEnrolled`` (the session stays open: enrol first).
    public func verify(tenant: TenantID, session: UUID, probe: BiometricToken) async throws -> Decision {
        let now = now()
        let policy = try await policies.policy(tenant)
        return try await database.withTenant(tenant, context: "verify in session") { connection in
            let row = try await Self.lockReadySession(session, now: now, on: connection)
            guard let enrolled = try await TemplateStore.get(subject: row.subject.value, keyVersion: probe.keyVersion, on: connection) else {
                throw VerificationError.notEnrolled
            }
            let decision = policy.thresholds.decide(score: probe.score(against: enrolled))
            try await TemplateStore.touch(subject: row.subject.value, on: connection)
            _ = try await SessionStore.complete(
                session, outcome: decision.color.rawValue, confidence: decision.confidence.rawValue,
                biometricKeyVersion: probe.keyVersion, at: now, on: connection
            )
            return decision
        }
    }

    /// The best `top` candidates for `probe` among the tenant's subjects; records the best
    /// decision (or no match) as the session's outcome.
    public func identify(tenant: TenantID, session: UUID, probe: BiometricToken, top: Int = 5) async throws -> [IdentifiedCandidate] {
        let now = now()
        _ = try await database.withTenant(tenant, context: "check session") { connection in
            try await Self.lockReadySession(session, now: now, on: connection)
        }
        let candidates = try await identify(tenant: tenant, probe: probe, top: top)
        let best = candidates.first?.decision
        let written = try await database.withTenant(tenant, context: "record identification") { connection in
            try await SessionStore.complete(
                session, outcome: best?.color.rawValue ?? "no_match", confidence: best?.confidence.rawValue,
                biometricKeyVersion: probe.keyVersion, at: now, on: connection
            )
        }
        // Another request completed the session between the two transactions: its outcome stands.
        guard written else { throw VerificationError.sessionCompleted(session) }
        return candidates
    }

    static func lockReadySession(_ session: UUID, now: Date, on connection: PostgresConnection) async throws -> SessionStore.Row {
        guard let row = try await SessionStore.get(session, forUpdate: true, on: connection) else { throw VerificationError.sessionNotFound(session) }
        try VerificationSessions.requireReady(row, now: now)
        return row
    }

    // MARK: Tokens, for callers that hold consent themselves (benchmarks, re-enrolment jobs)

    /// Stores the subject's token (replacing one of the same key version).
    public func enrol(tenant: TenantID, subject: SubjectReference, token: BiometricToken) async throws {
        let instance = instance
        try await database.withTenant(tenant, context: "enrol") { connection in
            try await TemplateStore.upsert(subject: subject, token: token, tenant: tenant, on: connection)
            try await TemplateStore.notify(
                GalleryChange(instance: instance, tenant: tenant, kind: .enrolled, keyVersion: token.keyVersion, subject: subject.value), on: connection
            )
        }
        galleryEnrol(tenant, subject.value, token)
    }

    /// Compares `probe` with the subject's enrolled token of the same key version.
    /// - Throws: ``VerificationError/notEnrolled`` when there is none (for this tenant: other
    ///   tenants' subjects are invisible under row-level security).
    public func verify(tenant: TenantID, subject: SubjectReference, probe: BiometricToken) async throws -> Decision {
        let policy = try await policies.policy(tenant)
        let enrolled = try await database.withTenant(tenant, context: "verify") { connection in
            let token = try await TemplateStore.get(subject: subject.value, keyVersion: probe.keyVersion, on: connection)
            if token != nil { try await TemplateStore.touch(subject: subject.value, on: connection) }
            return token
        }
        guard let enrolled else { throw VerificationError.notEnrolled }
        return policy.thresholds.decide(score: probe.score(against: enrolled))
    }

    /// The best `top` candidates for `probe` among the tenant's enrolled subjects, each with a
    /// decision (the gallery is loaded from PostgreSQL on first use).
    public func identify(tenant: TenantID, probe: BiometricToken, top: Int = 5) async throws -> [IdentifiedCandidate] {
        guard (1...100).contains(top) else { throw VerificationError.invalidArgument(field: "top", reason: "between 1 and 100") }
        let policy = try await policies.policy(tenant)
        let key = galleryKey(tenant, probe.keyVersion)
        // Without the listener, changes from other instances would be missed: load afresh.
        let cached = listening.load(ordering: .acquiring)
        if !cached || galleries.withLock({ $0[key] == nil }) {
            let rows = try await database.withTenant(tenant, context: "load gallery") { connection in
                try await TemplateStore.all(keyVersion: probe.keyVersion, on: connection)
            }
            var gallery = TokenGallery(capacity: galleryCapacity)
            for row in rows { gallery.enrol(row.subject, row.token) }
            galleries.withLock { if !cached || $0[key] == nil { $0[key] = gallery } }
        }
        let candidates = galleries.withLock { $0[key]?.identify(probe, top: top) ?? [] }
        let still = try await database.withTenant(tenant, context: "confirm candidates") { connection in
            try await TemplateStore.existing(subjects: candidates.map(\.subject), keyVersion: probe.keyVersion, on: connection)
        }
        return candidates.filter { still.contains($0.subject) }.map {
            IdentifiedCandidate(subject: $0.subject, decision: policy.thresholds.decide(score: $0.score))
        }
    }

    // MARK: Gallery synchronisation

    /// Keeps the galleries in step with other instances until cancelled (reconnecting with
    /// backoff). While it is down, identification loads from the database on every call.
    public func runGalleryListener() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await database.listen(
                    channel: TemplateStore.galleryChannel,
                    ready: { [self] in
                        // Changes made while no one listened are unknown: start from the database.
                        galleries.withLock { $0.removeAll() }
                        listening.store(true, ordering: .releasing)
                    },
                    received: { [self] payload in
                        guard let change = GalleryChange(payload: payload), change.instance != instance else { return }
                        apply(change)
                    }
                )
            } catch {
                if !Task.isCancelled {
                    logger.warning("gallery listener lost; identification reads the database until it is back", metadata: ["error": "\(error)"])
                }
            }
            listening.store(false, ordering: .releasing)
            galleries.withLock { $0.removeAll() }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// Whether the gallery listener is connected (and so galleries are kept in memory).
    public var isListening: Bool { listening.load(ordering: .acquiring) }

    private func apply(_ change: GalleryChange) {
        switch change.kind {
        case .enrolled:
            let key = galleryKey(change.tenant, change.keyVersion)
            guard galleries.withLock({ $0[key] != nil }) else { return }
            // The token itself is not in the payload: read the one row.
            Task { [self] in
                do {
                    let token = try await database.withTenant(change.tenant, context: "gallery update") { connection in
                        try await TemplateStore.get(subject: change.subject, keyVersion: change.keyVersion, on: connection)
                    }
                    if let token { galleryEnrol(change.tenant, change.subject, token) }
                } catch {
                    galleries.withLock { $0[key] = nil }
                }
            }
        case .erased:
            galleryRemove(change.tenant, [change.subject])
        case .reset:
            let prefix = change.tenant.rawValue + "/"
            galleries.withLock { galleries in
                for key in galleries.keys where key.hasPrefix(prefix) { galleries[key] = nil }
            }
        }
    }

    func galleryEnrol(_ tenant: TenantID, _ subject: String, _ token: BiometricToken) {
        let key = galleryKey(tenant, token.keyVersion)
        galleries.withLock { galleries in
            if galleries[key] != nil { galleries[key]!.enrol(subject, token) }
        }
    }

    func galleryRemove(_ tenant: TenantID, _ subjects: [String]) {
        let prefix = tenant.rawValue + "/"
        galleries.withLock { galleries in
            for key in galleries.keys where key.hasPrefix(prefix) {
                for subject in subjects { galleries[key]!.remove(subject) }
            }
        }
    }

    func galleryReset(_ tenant: TenantID) {
        apply(GalleryChange(instance: "", tenant: tenant, kind: .reset))
    }

    func galleryChange(_ tenant: TenantID, _ kind: GalleryChange.Kind, subject: String = "") -> GalleryChange {
        GalleryChange(instance: instance, tenant: tenant, kind: kind, subject: subject)
    }

    private func galleryKey(_ tenant: TenantID, _ version: Int) -> String { "\(tenant.rawValue)/\(version)" }
}

/// One identification candidate: a pseudonymous reference and a decision, never a score.
public struct IdentifiedCandidate: Sendable, Hashable {
    public let subject: String
    public let decision: Decision
}
