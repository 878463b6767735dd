public import CustosModel
import PostgresNIO
public import Storage
import Synchronization

/// Enrol, verify 1:1 and identify 1:N over tokens (DESIGN §9). It never sees a feature: the
/// composition root tokenizes and passes tokens; subjects are pseudonymous references (an HMAC
/// of the tenant's external id, made by custody), never names.
public final class VerificationService: Sendable {
    let database: Database
    let thresholds: @Sendable (TenantID) -> DecisionThresholds
    public let galleryCapacity: Int
    private let galleries = Mutex([String: TokenGallery]())

    public init(
        database: Database, galleryCapacity: Int = 100_000,
        thresholds: @escaping @Sendable (TenantID) -> DecisionThresholds = { _ in .default }
    ) {
        self.database = database
        self.galleryCapacity = galleryCapacity
        self.thresholds = thresholds
    }

    /// Stores the subject's token (replacing one of the same key version).
    public func enrol(tenant: TenantID, subject: String, token: BiometricToken) async throws {
        try await database.withTenant(tenant, context: "enrol") { connection in
            try await TemplateStore.upsert(subject: subject, token: token, tenant: tenant, on: connection)
        }
        let key = galleryKey(tenant, token.keyVersion)
        galleries.withLock { galleries in
            if galleries[key] != nil { galleries[key]!.enrol(subject, token) }
        }
    }

    /// Compares `probe` with the subject's enrolled token of the same key version.
    /// - Throws: ``VerificationError/notEnrolled`` when there is none (for this tenant: other
    ///   tenants' subjects are invisible under row-level security).
    public func verify(tenant: TenantID, subject: String, probe: BiometricToken) async throws -> Decision {
        let enrolled = try await database.withTenant(tenant, context: "verify") { connection in
            let token = try await TemplateStore.get(subject: subject, keyVersion: probe.keyVersion, on: connection)
            if token != nil { try await TemplateStore.touch(subject: subject, on: connection) }
            return token
        }
        guard let enrolled else { throw VerificationError.notEnrolled }
        return thresholds(tenant).decide(score: probe.score(against: enrolled))
    }

    /// The best `top` candidates for `probe` among the tenant's enrolled subjects, each with a
    /// decision (the gallery is loaded from PostgreSQL on first use).
    public func identify(tenant: TenantID, probe: BiometricToken, top: Int = 5) async throws -> [(subject: String, decision: Decision)] {
        let key = galleryKey(tenant, probe.keyVersion)
        if galleries.withLock({ $0[key] == nil }) {
            let rows = try await database.withTenant(tenant, context: "load gallery") { connection in
                try await TemplateStore.all(keyVersion: probe.keyVersion, on: connection)
            }
            var gallery = TokenGallery(capacity: galleryCapacity)
            for row in rows { gallery.enrol(row.subject, row.token) }
            galleries.withLock { if $0[key] == nil { $0[key] = gallery } }
        }
        let candidates = galleries.withLock { $0[key]?.identify(probe, top: top) ?? [] }
        let thresholds = thresholds(tenant)
        return candidates.map { ($0.subject, thresholds.decide(score: $0.score)) }
    }

    /// Erases the subject's templates (GDPR Art. 17). - Returns: templates deleted.
    @discardableResult
    public func erase(tenant: TenantID, subject: String) async throws -> Int {
        let deleted = try await database.withTenant(tenant, context: "erase templates") { connection in
            try await TemplateStore.delete(subject: subject, on: connection)
        }
        let prefix = tenant.rawValue + "/"
        galleries.withLock { galleries in
            for key in galleries.keys where key.hasPrefix(prefix) { galleries[key]!.remove(subject) }
        }
        return deleted
    }

    private func galleryKey(_ tenant: TenantID, _ version: Int) -> String { "\(tenant.rawValue)/\(version)" }
}

public enum VerificationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No enrolled template for this subject (and key version) in this tenant.
    case notEnrolled

    public var description: String {
        switch self {
        case .notEnrolled: "subject not enrolled (or enrolled under another key version: re-enrol after a key rotation)"
        }
    }
}
