public import Custody
public import CustosModel
public import Foundation
public import Tokenization
public import Verification

/// Features in, decisions out — the only path from a front-end's features to the verification
/// core. In order: the session must hold the candidate's consent (checked before anything
/// touches the features), the tenant's tokenization budget must allow it, the features become a
/// token in the HSM, and the core — which sees only the token — records the outcome once.
///
/// Enrol and Verify commit once per call: the budget unit and the keys are taken first
/// (``BiometricTokenizer/prepare(tenant:version:)``: they may need the database), then the core
/// reads the session, checks consent and only then calls back to tokenize (HSM only), compares,
/// and records in one statement that checks the session again under its lock (a replacement,
/// or a Verify during a rotation's overlap: one transaction that locks the session before the
/// call-back). A call refused before tokenizing gives its budget unit back. The one change of
/// order: a tenant over its budget is told so even for a session without consent.
///
/// During a biometric rotation's overlap the core may also need the features' token under an
/// older version (a subject not yet migrated, an older 1:N gallery): it gets a closure that
/// tokenizes on demand, so the second PRF use happens only when a comparison needs it, and
/// counts against the tenant's budget like the first.
public struct BiometricVerification: Sendable {
    public let sessions: VerificationSessions
    public let core: VerificationService
    let tokenizer: BiometricTokenizer
    let keyring: TenantKeyring
    /// Where tokenizations are counted for the audit log (the keyring's counter).
    let keyUses: KeyUseCounter

    public init(sessions: VerificationSessions, core: VerificationService, tokenizer: BiometricTokenizer, keyring: TenantKeyring) {
        self.sessions = sessions
        self.core = core
        self.tokenizer = tokenizer
        self.keyring = keyring
        self.keyUses = keyring.keyUses
    }

    /// Enrols the session's candidate; `replacing` must be true to replace the template of an
    /// already enrolled subject (audited, naming `actor`).
    /// - Returns: the subject's pseudonymous reference and the biometric key version used.
    /// - Throws: ``VerificationError/alreadyEnrolled`` for an enrolled subject without `replacing`.
    public func enrol(
        tenant: TenantID, session: UUID, features: FeatureVector, replacing: Bool = false, actor: String = "custos"
    ) async throws -> (subject: SubjectReference, keyVersion: Int) {
        let prepared = try await prepare(tenant: tenant, for: .enrol)
        defer { prepared.release() }
        let enrolled = try await core.enrol(tenant: tenant, session: session, replacing: replacing, actor: actor) {
            try await self.tokenize(features, with: prepared, for: .enrol)
        }
        return (enrolled.subject, enrolled.token.keyVersion)
    }

    /// Verifies the session's candidate 1:1 against their enrolment.
    public func verify(tenant: TenantID, session: UUID, features: FeatureVector) async throws -> Decision {
        let prepared = try await prepare(tenant: tenant, for: .verify)
        let older = try await preparedOlderProbes(features, tenant: tenant, active: prepared.keyVersion)
        defer {
            prepared.release()
            older.release()
        }
        return try await core.verify(tenant: tenant, session: session, older: older.probes) {
            try await self.tokenize(features, with: prepared, for: .verify)
        }
    }

    /// Searches the tenant's enrolled subjects 1:N for the session's candidate.
    public func identify(tenant: TenantID, session: UUID, features: FeatureVector, top: Int) async throws -> [IdentifiedCandidate] {
        guard (1...100).contains(top) else { throw VerificationError.invalidArgument(field: "top", reason: "between 1 and 100") }
        let token = try await tokenize(features, tenant: tenant, session: session, for: .identify)
        let older = try await olderProbes(features, tenant: tenant, active: token.keyVersion, for: .identify)
        return try await core.identify(tenant: tenant, session: session, probe: token, older: older, top: top)
    }

    /// The biometric versions older than `active` still inside their overlap, with a closure
    /// that tokenizes `features` under one of them (consent and the budget already checked
    /// for this request; the tokenizer takes one more unit of the budget per call, and the use
    /// is counted under that version).
    private func olderProbes(_ features: FeatureVector, tenant: TenantID, active: Int, for operation: KeyUse.Operation) async throws -> OlderBiometricProbes {
        let versions = try await keyring.biometricMatchingVersions(tenant).filter { $0 < active }
        guard !versions.isEmpty else { return .none }
        let tokenizer = tokenizer, keyUses = keyUses
        return OlderBiometricProbes(versions: versions) { version in
            do {
                let token = try await tokenizer.tokenize(features, tenant: tenant, version: version)
                keyUses.record(tenant, .bioPRF, version: version, operation, .success)
                return token
            } catch let error as TokenizationError {
                throw error
            } catch {
                keyUses.record(tenant, .bioPRF, version: version, operation, .failure)
                throw error
            }
        }
    }

    /// The older versions' probes for a 1:1 comparison inside the core's transaction: each
    /// version's budget unit and keys taken now (a version whose preparation failed — over
    /// budget — fails only if the comparison needs it), unused units given back by `release`.
    private func preparedOlderProbes(_ features: FeatureVector, tenant: TenantID, active: Int) async throws -> PreparedOlderProbes {
        let versions = try await keyring.biometricMatchingVersions(tenant).filter { $0 < active }
        guard !versions.isEmpty else { return PreparedOlderProbes(probes: .none, prepared: []) }
        var prepared = [Int: Result<PreparedTokenization, any Error>]()
        for version in versions {
            do {
                prepared[version] = .success(try await tokenizer.prepare(tenant: tenant, version: version))
            } catch {
                if !(error is TokenizationError) { keyUses.record(tenant, .bioPRF, version: version, .verify, .failure) }
                prepared[version] = .failure(error)
            }
        }
        let ready = prepared
        let probes = OlderBiometricProbes(versions: versions) { version in
            guard let preparation = ready[version] else {
                throw VerificationError.invalidArgument(field: "key_version", reason: "no older biometric version \(version) is in overlap")
            }
            return try await self.tokenize(features, with: try preparation.get(), for: .verify)
        }
        return PreparedOlderProbes(probes: probes, prepared: prepared.values.compactMap { try? $0.get() })
    }

    /// The budget unit and keys of one tokenization for `tenant` under its tenant policy's budget
    /// (key failures counted as failed key uses, as a failed tokenization is).
    private func prepare(tenant: TenantID, for operation: KeyUse.Operation) async throws -> PreparedTokenization {
        let policy = try await core.policies.policy(tenant)
        tokenizer.limiter?.setBudget(tenant, perMinute: policy.tokenizationsPerMinute)
        do {
            return try await tokenizer.prepare(tenant: tenant)
        } catch let error as TokenizationError {
            // Refused by the rate limit: no key was used (audited as `tokenization.rate_limited`).
            throw error
        } catch {
            keyUses.record(tenant, .bioPRF, version: 0, operation, .failure)
            throw error
        }
    }

    /// Tokenizes with a preparation, counting the key use.
    private func tokenize(_ features: FeatureVector, with prepared: PreparedTokenization, for operation: KeyUse.Operation) async throws -> BiometricToken {
        do {
            let token = try await prepared.tokenize(features)
            keyUses.record(prepared.tenant, .bioPRF, version: token.keyVersion, operation, .success)
            return token
        } catch let error as TokenizationError {
            throw error
        } catch {
            keyUses.record(prepared.tenant, .bioPRF, version: prepared.keyVersion, operation, .failure)
            throw error
        }
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

/// Older-version probes prepared ahead of a 1:1 comparison, and the preparations to give back.
private struct PreparedOlderProbes: Sendable {
    let probes: OlderBiometricProbes
    let prepared: [PreparedTokenization]

    func release() { for preparation in prepared { preparation.release() } }
}
