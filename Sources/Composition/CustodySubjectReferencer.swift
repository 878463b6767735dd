public import Custody
import Foundation
public import CustosModel
public import HSM
import SecureMemory
public import Verification

/// Subject references as HMAC-SHA256 (in the HSM) of the external id under the tenant's `pii`
/// key: deterministic per tenant and key version, unlinkable across tenants.
public struct CustodySubjectReferencer: SubjectReferencing {
    let pool: SessionPool
    let keyring: TenantKeyring

    public init(pool: SessionPool, keyring: TenantKeyring) {
        self.pool = pool
        self.keyring = keyring
    }

    /// The external id is Unicode-normalised (NFC) before the HMAC, so "é" typed as U+00E9 or as
    /// "e" + U+0301 names one subject. References written before normalisation (the id's bytes
    /// as sent) are still found: the NFD and as-sent forms follow the NFC one when they differ,
    /// so export and erasure reach them too. New references are always the NFC form (first).
    public func references(for externalID: PersonalText, tenant: TenantID) async throws -> [SubjectReference] {
        // Cached like the keys themselves (CreateSession's hot path: one commit, not two).
        let versions = try await keyring.cachedVersions(tenant, .pii)
            .filter { $0.state == .active || $0.state == .retiring || $0.state == .retired }
            .sorted { ($0.state == .active ? 1 : 0, $0.version) > ($1.state == .active ? 1 : 0, $1.version) }
        let forms = Self.lookupForms(externalID.value)
        var references = [SubjectReference]()
        for record in versions {
            let key: HSMKey, version: Int
            do {
                (key, version) = try await keyring.key(tenant, .pii, version: record.version)
            } catch let error as CustodyError where record.state != .active && error.isStopped {
                // An old version officers stopped (disabled, or awaiting its destruction once the
                // pii migration left nothing under it, or destroyed by the HSM's list while its
                // row says otherwise: a row put back from a backup, or a destruction whose commit
                // failed) must not stop every lookup of the tenant.
                // Skipped only when nothing is stored under it: otherwise an erasure or export
                // would silently miss the subject's rows, so the refusal stands.
                if try await keyring.storedReferences(tenant, .pii, version: record.version) == 0 { continue }
                keyring.keyUses.record(tenant, .pii, version: record.version, .reference, .failure)
                throw error
            } catch {
                keyring.keyUses.record(tenant, .pii, version: record.version, .reference, .failure)
                throw error
            }
            try await keyring.keyUses.counting(tenant, .pii, version: version, .reference) {
                for form in forms {
                    let mac = try await hsm { try await pool.hmacSHA256(key: key, data: Self.message(form)) }
                    references.append(SubjectReference(value: "v\(version):" + Hex.encode(mac), piiVersion: version))
                }
            }
        }
        return references
    }

    /// NFC first (what new references are made of), then the other byte sequences an id may
    /// have been stored under before normalisation: NFD and the id as sent. Compared by bytes
    /// (Swift's `==` on strings ignores the difference).
    public static func lookupForms(_ externalID: String) -> [[UInt8]] {
        var forms = [[UInt8]]()
        for form in [externalID.precomposedStringWithCanonicalMapping, externalID.decomposedStringWithCanonicalMapping, externalID] {
            let bytes = Array(form.utf8)
            if !forms.contains(bytes) { forms.append(bytes) }
        }
        return forms
    }

    /// Domain-separated, so a `pii` HMAC of an external id never equals one made for another use.
    static func message(_ externalID: [UInt8]) -> [UInt8] {
        Array("custos/subject/v1\0".utf8) + externalID
    }
}

extension CustodyError {
    /// Officers stopped the version (disabled, its destruction scheduled, or destroyed).
    var isStopped: Bool {
        switch self {
        case .keyDisabled, .keyDestructionScheduled, .keyDestroyed: true
        default: false
        }
    }
}

/// HSM failures surface as custody errors, as everywhere else above the pool.
func hsm<R>(_ body: () async throws -> R) async throws -> R {
    do {
        return try await body()
    } catch let error as HSMError {
        throw CustodyError.hsm(error)
    }
}
