public import CustosModel
public import Foundation
public import HSM
public import Storage

/// Why a custody operation failed. Descriptions name tenants, purposes and versions — never key
/// material, API keys, secrets or data.
public enum CustodyError: Error, Sendable, CustomStringConvertible {
    case unknownTenant(TenantID)
    case tenantDisabled(TenantID)
    /// Two officers approved the tenant's offboarding: its keys stay disabled until they are
    /// shredded, and it gets no new ones.
    case tenantOffboarding(TenantID)
    case noActiveKey(TenantID, KeyPurpose)
    case unknownKeyVersion(TenantID, KeyPurpose, Int)
    /// The stored row's MAC does not match: a blob or state was changed or moved in the database.
    case rowTampered(TenantID, KeyPurpose, Int)
    /// The HSM refused to unwrap (tampered blob or wrong KEK).
    case cannotUnwrap(TenantID, KeyPurpose, Int)
    case keyDestroyed(TenantID, KeyPurpose, Int)
    /// Officers disabled this version (`custos key disable`): every use is refused until it is
    /// enabled again.
    case keyDisabled(TenantID, KeyPurpose, Int)
    /// An approved destruction of this version is scheduled: it is unusable until then, or
    /// until the request is cancelled (`custos key cancel-destroy`).
    case keyDestructionScheduled(TenantID, KeyPurpose, Int, due: Date)
    /// A state change the lifecycle does not allow (e.g. destroying an active key).
    case invalidTransition(TenantID, KeyPurpose, Int, from: KeyState, to: KeyState)
    /// Destruction refused: live data still needs this version, or the waiting period is not over.
    case stillNeeded(TenantID, KeyPurpose, Int, reason: String)
    /// A root key is missing from the token.
    case rootKeyMissing(String)
    /// The row changed between reading and writing it (another instance or a re-wrap acted
    /// first); nothing was written. Retry reads the new state.
    case changedConcurrently(TenantID, KeyPurpose, Int)
    /// Another rotation of the purpose, to the version given, is still listed as pending: in
    /// progress, or interrupted (a crash) and left to a reconciliation. Nothing was stored.
    case rotationPending(TenantID, KeyPurpose, Int)
    /// A root-KEK rotation recorded a newer root KEK set (`recorded`) while a key was being
    /// wrapped under an older one: nothing was stored. The keyring adopts the new set and makes
    /// the key again once; seen by a caller only if the set changed twice meanwhile.
    case rootKEKRotated(recorded: Int)
    /// The token's root keys are not the ones this database was made with.
    case rootKeysDoNotMatch([RootKeyMismatch])
    /// The token still holds the permissive legacy root KEK (no unwrap template).
    case legacyRootKEKPresent(versions: [Int])
    /// The token holds root keys that no ceremony recorded in this database: the user PIN alone
    /// can create token objects that look exactly like root keys, of values its holder knows
    /// (or a rotate-root was interrupted between importing its KEKs and recording them).
    case rootKeyNotRecorded([String])
    /// Root-KEK rotation needs the old KEK of `purpose` version `version` rebuilt from its
    /// custodians' shares, and was not given them.
    case rewrapKeyMissing(KeyPurpose, version: Int)
    /// Data sealed under this key version does not open: the row was altered or moved.
    case sealedDataInvalid(TenantID, KeyPurpose, Int)
    /// The tenant already holds `limit` live HSM token objects (Ed25519 webhook keys): the
    /// token's storage is shared, so destroy retired versions before making another.
    case tokenObjectLimit(TenantID, limit: Int)
    /// The audit log stands behind (or beside) its HSM anchor: newest entries were deleted or
    /// the chain rewritten. Appends are refused until an officer investigates.
    case auditLogBehindAnchor(anchoredSeq: Int64, logSeq: Int64)
    /// The HSM holds an audit anchor object whose MAC is wrong: refused, never overwritten.
    case auditAnchorInvalid
    /// The audit log's newest entry fails its MAC (planted or altered in the database): nothing
    /// is chained onto it until an officer investigates (`custos audit verify`).
    case auditLogHeadInvalid(seq: Int64)
    case hsm(HSMError)
    case storage(StorageError)
    /// A biometric version is still inside its rotation overlap (subjects migrate to the new
    /// version on their next GREEN match until `until`): retiring it now would drop their
    /// templates, so an early end needs two officers' approval.
    case biometricOverlapOpen(TenantID, KeyPurpose, Int, until: Date)
    /// The HSM's list of destroyed key versions is there but fails its MAC (written by someone
    /// else, or edited): no version can be shown not to be destroyed, so none is used.
    case keyStateAnchorInvalid
    /// An optional feature the HSM module cannot provide (e.g. Ed25519 webhook keys).
    case featureUnavailable(String)
    /// A recorded escrow public key fails its HSM MAC: a database writer put a key of their own
    /// in `escrow_keys` (or edited one), or the key the tokens pinned is missing (the newest
    /// deleted, so that seeds would go to an older one); no seed is sealed until officers look.
    case escrowKeyTampered(version: Int)
    /// The newest recorded escrow key (MAC-valid) is not among the fingerprints config.json
    /// trusts (`webhookEscrowKeys`): written by someone holding the user PIN and the owner role,
    /// or a real new escrow key not yet added to this instance's configuration. Nothing sealed.
    case escrowKeyNotTrusted(version: Int, fingerprint: EscrowKeyFingerprint)
    /// config.json's `webhookEscrowKeys` is empty or absent: no seed may be sealed, so no v1a
    /// key is made (v1 is unaffected).
    case escrowKeysNotConfigured
    /// The tenant's policy row is not what its newest audited change recorded (the database's
    /// writer's): its biometric overlap is not believed.
    case tenantPolicyTampered(TenantID)

    public var isRetryable: Bool {
        switch self {
        case .hsm(let error): error.isRetryable
        case .storage(let error): error.isRetryable
        default: false
        }
    }

    public var description: String {
        switch self {
        case .unknownTenant(let tenant): "unknown tenant \(tenant)"
        case .tenantDisabled(let tenant): "tenant \(tenant) is disabled"
        case .tenantOffboarding(let tenant):
            "tenant \(tenant) is being offboarded (approved by two officers): its keys stay disabled until they are destroyed, and it gets no new ones"
        case .noActiveKey(let tenant, let purpose): "tenant \(tenant) has no active \(purpose.rawValue) key"
        case .unknownKeyVersion(let tenant, let purpose, let version): "tenant \(tenant) has no \(purpose.rawValue) key v\(version)"
        case .tenantPolicyTampered(let tenant):
            "tenant \(tenant)'s policy is not what its last audited change recorded: an officer must look, then set the whole policy again"
        case .rowTampered(let tenant, let purpose, let version):
            "stored \(purpose.rawValue) key v\(version) of tenant \(tenant) fails its integrity check; refusing to use it"
        case .cannotUnwrap(let tenant, let purpose, let version): "cannot unwrap \(purpose.rawValue) key v\(version) of tenant \(tenant)"
        case .keyDestroyed(let tenant, let purpose, let version): "\(purpose.rawValue) key v\(version) of tenant \(tenant) is destroyed"
        case .keyDisabled(let tenant, let purpose, let version):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) is disabled; an officer must enable it (custos key enable) before it can be used"
        case .keyDestructionScheduled(let tenant, let purpose, let version, let due):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) is scheduled for destruction at \(due.formatted(.iso8601)) and unusable; "
                + "cancel the request (custos key cancel-destroy) to use it again"
        case .invalidTransition(let tenant, let purpose, let version, let from, let to):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) cannot go from \(from.rawValue) to \(to.rawValue)"
        case .stillNeeded(let tenant, let purpose, let version, let reason):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) cannot be destroyed: \(reason)"
        case .rootKeyMissing(let label): "root key \(label) is not on the token"
        case .rootKEKRotated(let recorded): "root KEK version \(recorded) was recorded while a key was being made under an older one; nothing was stored, try again"
        case .rotationPending(let tenant, let purpose, let version):
            "a rotation of tenant \(tenant)'s \(purpose.rawValue) key to v\(version) is still pending: rotate again once it completes; if it was interrupted, an operator's `custos key reconcile` (or a restart) completes or rolls it back"
        case .changedConcurrently(let tenant, let purpose, let version):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) changed while this operation ran; nothing was written, try again"
        case .rootKeysDoNotMatch(let mismatches):
            "the token's root keys do not match this database (\(mismatches.map(\.description).joined(separator: "; "))): "
                + "this token was not made for this database. Restore the root keys from the custodians' shares "
                + "(scripts/ceremony/restore) or point the service at the token and database that belong together"
        case .legacyRootKEKPresent(let versions):
            "the token holds the legacy root KEK (\(versions.map { RootKeys.legacyKEKLabel(version: $0) }.joined(separator: ", "))), "
                + "which lets the user PIN unwrap tenant keys readable: run scripts/ceremony/rotate-root to move every key to "
                + "per-purpose root KEKs and destroy it (docs/key-hierarchy.md, \"Migrating\")"
        case .rootKeyNotRecorded(let labels):
            "the token holds root keys this database never recorded (\(labels.joined(separator: ", "))): the ceremony "
                + "records every root key it makes before any tenant key uses it, so these were made with the user PIN "
                + "(they would let their maker read every new tenant key) or left by a rotate-root interrupted before it "
                + "recorded them. No stored key needs them: destroy them, investigate how the PIN was used, and run "
                + "rotate-root again if one was interrupted (docs/key-hierarchy.md, \"The token must match the database\")"
        case .rewrapKeyMissing(let purpose, let version):
            "re-wrapping needs \(RootKeys.kekLabel(purpose, version: version)) rebuilt from its custodians' shares: pass that share set with --old-share"
        case .sealedDataInvalid(let tenant, let purpose, let version):
            "data sealed under \(purpose.rawValue) key v\(version) of tenant \(tenant) does not open (altered or moved row)"
        case .tokenObjectLimit(let tenant, let limit):
            "tenant \(tenant) already holds \(limit) live HSM token objects (the limit); destroy retired webhook-ed25519 versions first"
        case .auditLogBehindAnchor(let anchoredSeq, let logSeq):
            "the audit log ends at entry \(logSeq) but the HSM anchored entry \(anchoredSeq): refusing to append"
        case .auditAnchorInvalid: "the HSM's audit anchor fails its MAC: refusing to append"
        case .auditLogHeadInvalid(let seq): "the audit log's newest entry (\(seq)) fails its MAC: refusing to append; run custos audit verify"
        case .featureUnavailable(let feature): "not available on this HSM: \(feature)"
        case .escrowKeyTampered(let version):
            "escrow key v\(version) in the database fails its HSM MAC (replaced or edited) or is missing though the HSM pinned it (deleted): no Ed25519 seed is escrowed until it is investigated"
        case .escrowKeyNotTrusted(let version, let fingerprint):
            "escrow key v\(version) (\(fingerprint)) is not listed in config.json's webhookEscrowKeys: no Ed25519 seed is sealed to it. "
                + "If the custodians made it (`custos ceremony generate-escrow`), add \"\(fingerprint)\" there on every instance and restart; otherwise it was planted"
        case .escrowKeysNotConfigured:
            "v1a (Ed25519) webhook keys: config.json's webhookEscrowKeys lists no escrow key: add the fingerprint `custos ceremony generate-escrow` printed (docs/ceremony.md); v1 secrets work"
        case .keyStateAnchorInvalid: "the HSM's list of key states (\(KeyStateAnchor.label)) fails its MAC: refusing to use tenant keys"
        case .hsm(let error): error.description
        case .storage(let error): error.description
        case .biometricOverlapOpen(let tenant, let purpose, let version, let until):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) is in its biometric rotation overlap until "
                + "\(until.ISO8601Format()) (subjects still migrate to the new version on their next GREEN verification); "
                + "it retires by itself then, dropping the templates that did not migrate. Ending the overlap early drops "
                + "them now and needs two officers: `custos key request-end-overlap --tenant \(tenant) --version \(version)`, then a different "
                + "officer's `custos key approve-end-overlap REQUEST`; `key retire` alone cannot do it"
        }
    }

    /// Wraps lower-layer errors so callers see one type.
    static func wrap(_ error: any Error) -> any Error {
        switch error {
        case let error as CustodyError: error
        case let error as HSMError: CustodyError.hsm(error)
        case let error as StorageError: CustodyError.storage(error)
        default: error
        }
    }
}

/// One root key that differs between the token and the database's record.
public struct RootKeyMismatch: Sendable, Hashable, CustomStringConvertible {
    public let label: String
    /// The check value the database recorded (hex).
    public let recorded: String
    /// The token's (hex), or nil when the token lacks the key.
    public let onToken: String?

    public var description: String {
        "\(label): recorded kcv \(recorded), token \(onToken.map { "kcv \($0)" } ?? "has no such key")"
    }
}

extension Optional {
    /// The wrapped value, or `error` thrown.
    func orThrow(_ error: @autoclosure () -> any Error) throws -> Wrapped {
        guard let value = self else { throw error() }
        return value
    }
}

/// Runs `body`, presenting HSM and storage errors as ``CustodyError``.
func custody<R>(_ body: () async throws -> R) async throws -> R {
    do {
        return try await body()
    } catch {
        throw CustodyError.wrap(error)
    }
}
