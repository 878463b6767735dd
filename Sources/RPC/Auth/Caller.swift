public import CustosModel

/// The authenticated caller of the RPC being served, set by ``AuthenticationInterceptor``
/// before any handler runs. Every tenant-facing call is scoped to exactly one tenant.
public struct Caller: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// A security officer (Admin).
        case officer(name: String)
        /// A front-end or tenant system acting for one tenant.
        case tenant(TenantID, via: Credential)
        /// Health checks: any certificate the CA issued.
        case healthProbe
    }

    /// How a tenant-scoped caller proved its tenant.
    public enum Credential: Sendable, Hashable {
        case certificate(frontend: String)
        case apiKey(keyID: String, scopes: [String])
    }

    public let kind: Kind
    /// The serial (lower-case hex) of the client certificate, for officers: what an approval
    /// records so that revoking the certificate voids it.
    public var certificateSerial: String? = nil

    @TaskLocal public static var current: Caller?

    /// The tenant the call is scoped to.
    public var tenant: TenantID? {
        if case .tenant(let tenant, _) = kind { return tenant }
        return nil
    }

    /// The name recorded in the audit log as the actor.
    public var actor: String {
        switch kind {
        case .officer(let name): "officer:\(name)"
        case .tenant(_, .certificate(let frontend)): "frontend:\(frontend)"
        case .tenant(_, .apiKey(let keyID, _)): "apikey:\(keyID)"
        case .healthProbe: "health"
        }
    }
}
