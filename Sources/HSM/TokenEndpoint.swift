public import PKCS11

/// How to reach one more token that holds the same root keys as the pool's first: another
/// partition of an HSM cluster, or a replica restored from the key ceremony's shares.
/// The pool's first token is described by ``HSMConfiguration`` itself; these are the others.
public struct TokenEndpoint: Sendable, Hashable {
    /// Absolute path of the PKCS#11 module. Each token needs a module of its own (a copy of the
    /// library file for SoftHSM): tokens on one loaded module share its `C_Initialize` and
    /// `C_Finalize`, so a device recovery on one would tear down the other's sessions.
    public var modulePath: String
    /// `C_Initialize`'s `pReserved` string for modules that need one (NSS softokn).
    public var initArguments: String?
    /// Which token: by label or serial, never by slot number.
    public var token: TokenSelector
    /// Where its user PIN comes from (a file or the environment, never the command line).
    public var userPIN: PINSource

    public init(modulePath: String, token: TokenSelector, userPIN: PINSource, initArguments: String? = nil) {
        self.modulePath = modulePath
        self.token = token
        self.userPIN = userPIN
        self.initArguments = initArguments
    }
}

extension HSMConfiguration {
    /// The configuration of one replica's own single-token pool: the replica's module, token and
    /// PIN with this configuration's workers, timeouts, back-off and key-cache bound.
    func replicaConfiguration(_ endpoint: TokenEndpoint) -> HSMConfiguration {
        var replica = self
        replica.modulePath = endpoint.modulePath
        replica.initArguments = endpoint.initArguments
        replica.token = endpoint.token
        replica.userPIN = endpoint.userPIN
        replica.replicas = []
        return replica
    }
}
