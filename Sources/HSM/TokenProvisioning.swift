public import PKCS11
public import SecureMemory

/// Initialises a token through the binding, so PINs never appear on a command line
/// (`softhsm2-util` takes them as arguments when no terminal is attached).
public enum TokenProvisioning {
    /// What ``initializeToken(module:label:securityOfficerPIN:userPIN:)`` did.
    public enum Outcome: Sendable, Equatable {
        case created(TokenInfo)
        case alreadyPresent(TokenInfo)
    }

    /// Initialises the first free token with `label` and sets the user PIN; does nothing when a
    /// token with that label exists already (so set-up scripts can run it every time).
    /// - Throws: ``PKCS11Error`` or ``PKCS11ModuleError``; ``HSMError/configuration(_:)`` when
    ///   no uninitialised token is left.
    public static func initializeToken(
        module: PKCS11Module, label: String, securityOfficerPIN: SecretBytes, userPIN: SecretBytes
    ) throws -> Outcome {
        guard label.utf8.count <= 32 else { throw HSMError.configuration("token labels have at most 32 bytes") }
        try module.initialize()
        if let existing = try? module.findToken(.label(label)) { return .alreadyPresent(existing) }
        // Slot ids change when a token is initialised, so the free one is looked up, used, and
        // the new token found again by its label.
        let free = try module.slots(withTokenPresent: true).first { slot in
            (try? module.tokenInfo(slot: slot).isInitialized) == false
        }
        guard let free else { throw HSMError.configuration("no uninitialised token is available on this module") }
        try module.initToken(slot: free, securityOfficerPIN: securityOfficerPIN, label: label)
        let token = try module.findToken(.label(label))
        let session = try module.openSession(slot: token.slot)
        defer { try? session.close() }
        try session.login(.securityOfficer, pin: securityOfficerPIN)
        defer { try? session.logout() }
        try session.initPIN(userPIN)
        return .created(try module.tokenInfo(slot: token.slot))
    }
}
