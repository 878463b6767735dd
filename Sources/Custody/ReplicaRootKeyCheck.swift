public import HSM

/// Start-up's check that every configured token is a replica of the first: the same root keys
/// (per-purpose KEKs, legacy KEKs, the audit/row MAC keys), label for label, with the same
/// `CKA_CHECK_VALUE`. The pool moves a call to another token when one fails, so a replica with
/// another root would answer differently (a wrong HMAC, a tenant key that does not unwrap): it
/// is refused before anything runs on it. A replica is made by `custos ceremony restore` from
/// the custodians' shares (docs/operations.md, "Several tokens").
public enum ReplicaRootKeyCheck {
    /// Reads every token's root keys through its own pool and compares each replica with the
    /// first token; then makes the pool check every token before bringing it back into service
    /// after a failure (``returnMismatches(found:startUp:inService:token:)``). Nothing to do with
    /// one token.
    /// - Throws: ``ReplicaTokensDiffer`` naming each token and key that differs (never a value).
    public static func verify(_ pool: SessionPool) async throws {
        let pools = pool.tokenPools
        guard let primary = pools.first, pools.count > 1 else { return }
        let expected = try await RootKeyInventory.read(from: primary)
        let primaryToken = String(describing: primary.configuration.token)
        var mismatches = [ReplicaKeyMismatch]()
        for replica in pools.dropFirst() {
            let found = try await RootKeyInventory.read(from: replica)
            mismatches += compare(expected: expected, found: found, token: String(describing: replica.configuration.token))
        }
        guard mismatches.isEmpty else { throw ReplicaTokensDiffer(primaryToken: primaryToken, mismatches: mismatches) }
        // A token re-made while it was out (another root, or none yet) answers the probe's RNG
        // call like the one that left. (Weak: the pool keeps this check.)
        pool.checkTokensBeforeTheirReturn { [weak pool] token in
            // A token that answers the probe but not this read is kept out as in doubt (a
            // verdict, not an HSMError): a re-made token could otherwise fail it on purpose,
            // stay out without doubt, and take fallback calls.
            let found: RootKeyInventory
            do {
                found = try await RootKeyInventory.read(from: token)
            } catch {
                throw ReplicaKeysUnreadable(token: String(describing: token.configuration.token), error: String(describing: error))
            }
            var inService: RootKeyInventory?
            if let pool, let reference = zip(pool.tokenPools, pool.tokenStatuses).first(where: { $0.1.inService && $0.0 !== token })?.0 {
                // A token counted in service that does not answer (failing already, no call has
                // taken it out yet) throws its HSMError: the check could not be made, the
                // returning token stays out until the next probe, its keys not doubted. Not the
                // start-up snapshot: after a root rotation it lacks the new keys, and a token
                // with a root generation of its own would pass.
                inService = try await RootKeyInventory.read(from: reference)
            }
            let mismatches = returnMismatches(
                found: found, startUp: expected, inService: inService, token: String(describing: token.configuration.token)
            )
            guard mismatches.isEmpty else { throw ReplicaTokensDiffer(primaryToken: primaryToken, mismatches: mismatches) }
        }
    }

    /// Why a token that answers again may not come back: a root key under the same label as a
    /// token in service holds (else the first token at start-up) but with another value, or
    /// several keys under one label — it would answer with other keys; or, compared with a token
    /// in service, it lacks a key that token holds and that was there at start-up. Keys a root
    /// rotation added or retired since start-up neither keep a token out (it would stay out for
    /// good, and with every token out the instance would stop serving) nor let one in with
    /// another root: a label's key never changes.
    static func returnMismatches(
        found: RootKeyInventory, startUp: RootKeyInventory, inService: RootKeyInventory?, token: String
    ) -> [ReplicaKeyMismatch] {
        compare(expected: inService ?? startUp, found: found, token: token).filter { mismatch in
            switch mismatch.problem {
            case .differs, .duplicated: true
            case .notOnFirstToken: false
            case .missing: inService != nil && startUp.entry(label: mismatch.label) != nil
            }
        }
    }

    /// How `found` (a replica's root keys) differs from `expected` (the first token's), by label.
    static func compare(expected: RootKeyInventory, found: RootKeyInventory, token: String) -> [ReplicaKeyMismatch] {
        let labels = Set(expected.entries.map(\.label)).union(found.entries.map(\.label)).sorted()
        return labels.compactMap { label -> ReplicaKeyMismatch? in
            // Compared by the first key of a label, a second one (made with the replica's user
            // PIN) went unseen; calls routed there fail resolving the label, and are not moved.
            if found.entries.count(where: { $0.label == label }) > 1 {
                return ReplicaKeyMismatch(token: token, label: label, problem: .duplicated)
            }
            return switch (expected.entry(label: label), found.entry(label: label)) {
            case (.some, nil): ReplicaKeyMismatch(token: token, label: label, problem: .missing)
            case (nil, .some): ReplicaKeyMismatch(token: token, label: label, problem: .notOnFirstToken)
            case (let wanted?, let got?) where wanted.checkValue != got.checkValue || wanted.kind != got.kind:
                ReplicaKeyMismatch(token: token, label: label, problem: .differs)
            default: nil
            }
        }
    }
}

/// One root key that a replica token does not hold as the first token does.
public struct ReplicaKeyMismatch: Sendable, Hashable, CustomStringConvertible {
    public enum Problem: String, Sendable, Hashable {
        /// The first token has the key; the replica has no key of that label.
        case missing
        /// Both have it, with another check value: another root.
        case differs
        /// Only the replica has it (a rotation not restored onto the first token, or a stray key).
        case notOnFirstToken = "not on the first token"
        /// The replica holds several keys under the label (one made by someone else).
        case duplicated = "several keys under this label"
    }

    /// The replica's token selector (label or serial).
    public let token: String
    public let label: String
    public let problem: Problem

    public var description: String { "\(label) on token \(token): \(problem.rawValue)" }
}

/// The configured tokens do not hold the same root keys; the service does not start.
/// A token that answers its probe but whose root keys cannot be read: kept out, in doubt.
public struct ReplicaKeysUnreadable: Error, Sendable, Hashable, CustomStringConvertible {
    public let token: String
    public let error: String

    public var description: String { "the root keys of HSM token \(token) cannot be read: \(error)" }
}

public struct ReplicaTokensDiffer: Error, Sendable, Hashable, CustomStringConvertible {
    public let primaryToken: String
    public let mismatches: [ReplicaKeyMismatch]

    public var description: String {
        "the configured HSM tokens are not replicas of the first (\(primaryToken)): "
            + mismatches.map(\.description).joined(separator: "; ")
            + ". Restore the first token's root keys onto each replica with `custos ceremony restore` from the custodians' shares"
    }
}
