public import CustosModel
public import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SecureMemory
public import X509

/// Who a client certificate (already verified by TLS against the Custos CA) says its holder is,
/// from its SAN URIs (DESIGN §10):
/// - `custos://officer/<name>` — a security officer (Admin only);
/// - `custos://frontend/<name>` with one or more `custos://tenant/<uuid>` (or `custos://tenant/*`
///   for a platform front-end) — a front-end allowed those tenants;
/// - `custos://tenant/<uuid>` alone — a front-end of exactly that tenant.
/// A certificate naming both an officer and a front-end, or nothing Custos knows, names no one.
public struct CallerCertificate: Sendable, Hashable {
    public enum Role: Sendable, Hashable {
        case officer(name: String)
        case frontend(name: String, tenants: TenantAllowance)
    }

    public let role: Role
    /// Lower-case hex of the serial number: what revocation names.
    public let serial: String

    public init(role: Role, serial: String) {
        self.role = role
        self.serial = serial
    }

    /// - Returns: `nil` when the SAN URIs name no single Custos role.
    public init?(_ certificate: Certificate) {
        guard let names = try? certificate.extensions.subjectAlternativeNames else { return nil }
        var uris = [String]()
        for name in names {
            if case .uniformResourceIdentifier(let uri) = name { uris.append(uri) }
        }
        guard let role = Self.role(fromURIs: uris) else { return nil }
        self.init(role: role, serial: Hex.encode(certificate.serialNumber.bytes))
    }

    /// The certificate the TLS handshake verified for this RPC, as the NIO transport hands it
    /// over (`HTTP2ServerTransport.Posix.Context.peerCertificate`, looked up per RPC).
    /// - Returns: `nil` without a certificate (plaintext, or another transport) or when its SAN
    ///   URIs name no single Custos role: the caller is then unauthenticated.
    public init?(verifiedPeerOf context: ServerContext) {
        guard let leaf = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate else { return nil }
        self.init(leaf)
    }

    public static func role(fromURIs uris: [String]) -> Role? {
        var officers = [String]()
        var frontends = [String]()
        var tenants = Set<TenantID>()
        var anyTenant = false
        for uri in uris {
            if let name = suffix(uri, "custos://officer/") {
                guard isName(name) else { return nil }
                officers.append(name)
            } else if let name = suffix(uri, "custos://frontend/") {
                guard isName(name) else { return nil }
                frontends.append(name)
            } else if let tenant = suffix(uri, "custos://tenant/") {
                if tenant == "*" { anyTenant = true } else if let id = TenantID(tenant) { tenants.insert(id) } else { return nil }
            }
        }
        switch (officers.count, frontends.count) {
        case (1, 0) where tenants.isEmpty && !anyTenant:
            return .officer(name: officers[0])
        case (0, 1) where anyTenant || !tenants.isEmpty:
            return .frontend(name: frontends[0], tenants: anyTenant ? .any : .only(tenants))
        case (0, 0) where tenants.count == 1 && !anyTenant:
            return .frontend(name: "tenant-" + tenants.first!.rawValue, tenants: .only(tenants))
        default:
            return nil
        }
    }

    private static func suffix(_ uri: String, _ prefix: String) -> String? {
        uri.hasPrefix(prefix) ? String(uri.dropFirst(prefix.count)) : nil
    }

    private static func isName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F }
    }
}

/// The tenants a front-end certificate may act for.
public enum TenantAllowance: Sendable, Hashable {
    case any
    case only(Set<TenantID>)

    public func allows(_ tenant: TenantID) -> Bool {
        switch self {
        case .any: true
        case .only(let tenants): tenants.contains(tenant)
        }
    }

    /// The one tenant when the certificate allows exactly one.
    var single: TenantID? {
        if case .only(let tenants) = self, tenants.count == 1 { return tenants.first }
        return nil
    }
}
