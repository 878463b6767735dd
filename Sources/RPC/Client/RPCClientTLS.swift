public import GRPCNIOTransportHTTP2Posix

/// The one client-side TLS set-up of Custos — the officer CLI, the load generator of
/// `bench rpc` and the test harnesses: mutual TLS with a client certificate and key, the Custos
/// CA as the only trust root, and the server's name or address checked against its certificate.
public struct RPCClientTLS: Sendable, Hashable {
    /// PEM files: the client's certificate chain and private key, and the CA that signed the
    /// server's certificate.
    public var certificateChain: String
    public var privateKey: String
    public var serverCA: String

    public init(certificateChain: String, privateKey: String, serverCA: String) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.serverCA = serverCA
    }

    /// For `HTTP2ClientTransport.Posix(target:transportSecurity:…)`. The files are read when
    /// the transport connects.
    public var transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
        .mTLS(certificateChain: [.file(path: certificateChain, format: .pem)], privateKey: .file(path: privateKey, format: .pem)) { tls in
            // `.mTLS` trusts the system roots by default: a certificate any public CA issued for
            // the server's name would pass. Only ours may.
            tls.trustRoots = .certificates([.file(path: serverCA, format: .pem)])
            tls.serverCertificateVerification = .fullVerification
        }
    }
}
