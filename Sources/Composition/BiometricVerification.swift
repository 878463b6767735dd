public import Custody
public import CustosModel
public import Foundation
public import Tokenization
public import Verification

/// Features in, decisions out — the only path from a front-end's features to the verification
/// core. In order: the session must hold the candidate's consent (checked before anything
/// touches the features), the tenant's tokenization budget must allow it, the features become a
/// token in the HSM, and the core — which sees only the token — records the outcome once.
public struct BiometricVerification: Sendable {
    public let sessions: VerificationSessions
    public let core: VerificationService
    let tokenizer: BiometricTokenizer
    /// Where tokenizations are counted for the audit log (the keyring's counter).
    let keyUses: KeyUseCounter

    public init(sessions: VerificationSessions, core: VerificationService, tokenizer: BiometricTokenizer, keyUses: KeyUseCounter) {
        self.sessions = sessions
        self.core = core
        self.tokenizer = tokenizer
        self.keyUses = keyUses
    }

    /// Enrols the session's candidate; `replacing` must be true to replace the template of an
    /// already enrolled subject (audited, naming `actor`).
    /// - Returns: the subject's pseudonymous reference and the biometric key version used.
    /// - Throws: ``VerificationError/alreadyEnrolled`` for an enrolled subject without `replacing`.
    public func enrol(
        tenant: TenantID, session: UUID, features: FeatureVector, replacing: Bool = false, actor: String = "custos"
    ) async throws -> (subject: SubjectReference, keyVersion: Int) {
        let token = try await tokenize(features, tenant: tenant, session: session, for: .enrol)
        return (try await core.enrol(tenant: tenant, session: session, token: token, replacing: replacing, actor: actor), token.keyVersion)
    }

    /// Verifies the session's candidate 1:1 against their enrolment.
    public func verify(tenant: TenantID, session: UUID, features: FeatureVector) async throws -> Decision {
        let token = try await tokenize(features, tenant: tenant, session: session, for: .verify)
        return try await core.verify(tenant: tenant, session: session, probe: token)
    }

    /// Searches the tenant's enrolled subjects 1:N for the session's candidate.
    public func identify(tenant: TenantID, session: UUID, features: FeatureVector, top: Int) async throws -> [IdentifiedCandidate] {
        guard (1...100).contains(top) else { throw VerificationError.invalidArgument(field: "top", reason: "between 1 and 100") }
        let token = try await tokenize(features, tenant: tenant, session: session, for: .identify)
        return try await core.identify(tenant: tenant, session: session, probe: token, top: top)
    }

    private func tokenize(_ features: FeatureVector, tenant: TenantID, session: UUID, for operation: KeyUse.Operation) async throws -> BiometricToken {
        _ = try await sessions.requireConsent(tenant: tenant, session: session)
        let policy = try await core.policies.policy(tenant)
        tokenizer.limiter?.setBudget(tenant, perMinute: policy.tokenizationsPerMinute)
        // Counted once the tokenizer is reached, except a call its rate limit refuses: that one
        // used no key (and is audited as `tokenization.rate_limited`).
        do {
            let token = try await tokenizer.tokenize(features, tenant: tenant)
            keyUses.record(tenant, .bioPRF, version: token.keyVersion, operation, .success)
            return token
        } catch let error as TokenizationError {
            throw error
        } catch {
            keyUses.record(tenant, .bioPRF, version: 0, operation, .failure)
            throw error
        }
    }
}
