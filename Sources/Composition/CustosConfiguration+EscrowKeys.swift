public import Custody

extension CustosConfiguration {
    /// `webhookEscrowKeys` parsed: the escrow keys seeds may be sealed to. The list lives here,
    /// outside the token and the database, because a holder of the user PIN can MAC an escrow
    /// key row of their own (docs/threat-model.md, round 3).
    /// - Throws: ``ConfigurationError/invalid(path:reason:)`` naming the first malformed entry.
    public func trustedEscrowKeys() throws -> Set<EscrowKeyFingerprint> {
        var trusted = Set<EscrowKeyFingerprint>()
        for (index, entry) in (webhookEscrowKeys ?? []).enumerated() {
            guard let fingerprint = EscrowKeyFingerprint(parsing: entry) else {
                throw ConfigurationError.invalid(
                    path: source,
                    reason: "webhookEscrowKeys[\(index)] is not an escrow key fingerprint: expected \(EscrowKeyFingerprint.prefix) and 64 hex digits, as `custos ceremony generate-escrow` prints"
                )
            }
            trusted.insert(fingerprint)
        }
        return trusted
    }
}
