import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization

/// What each client certificate's SAN URIs say (``CallerCertificate``), remembered by the
/// certificate's to-be-signed bytes: the NIO transport hands every RPC a freshly parsed copy of
/// the connection's certificate, and reading its SAN URIs again was ~2 % of the server's CPU per
/// Ping (`perf`, issue 12). The role and serial are a function of those bytes alone, so the
/// same bytes always give the same answer; revocation is still checked on every call
/// (``Authenticator``), against the serial. At most ``capacity`` certificates; past it the
/// cache starts again empty (front-end certificates are few).
final class CallerCertificateCache: Sendable {
    static let capacity = 1_024
    private let known = Mutex([Key: CallerCertificate?]())

    /// The bytes, hashed once outside the lock (a certificate's are ~1 KB).
    private struct Key: Hashable {
        let bytes: [UInt8]
        let hash: Int

        init(_ bytes: ArraySlice<UInt8>) {
            self.bytes = Array(bytes)
            hash = self.bytes.hashValue
        }

        func hash(into hasher: inout Hasher) { hasher.combine(hash) }
        static func == (left: Key, right: Key) -> Bool { left.hash == right.hash && left.bytes == right.bytes }
    }

    /// ``CallerCertificate/init(verifiedPeerOf:)``, parsed once per certificate.
    func caller(verifiedPeerOf context: ServerContext) -> CallerCertificate? {
        guard let leaf = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate else { return nil }
        let key = Key(leaf.tbsCertificateBytes)
        if let cached = known.withLock({ $0[key] }) { return cached }
        let parsed = CallerCertificate(leaf)
        known.withLock { known in
            if known.count >= Self.capacity { known.removeAll(keepingCapacity: true) }
            known[key] = .some(parsed)
        }
        return parsed
    }
}
