import Foundation
public import GRPCNIOTransportHTTP2Posix

/// The Custos instances a client spreads its calls over: `host:port`, or several separated by
/// commas (`10.0.0.1:7443,10.0.0.2:7443`), as `--server`, `CUSTOS_SERVER` and the benchmarks
/// take them. Several addresses must be IP literals of one family (grpc-swift resolves a list
/// of IPv4 or of IPv6 addresses, one DNS name only).
public struct ServiceAddresses: Sendable, Hashable, CustomStringConvertible {
    public struct Address: Sendable, Hashable {
        /// Without brackets for IPv6.
        public let host: String
        public let port: Int
    }

    public let addresses: [Address]

    /// - Throws: ``ServiceAddressError`` naming the entry that is not `host:port`, or the mix.
    public init(parsing text: String) throws(ServiceAddressError) {
        var addresses = [Address]()
        for entry in text.split(separator: ",", omittingEmptySubsequences: false) {
            let entry = entry.trimmingCharacters(in: .whitespaces)
            guard let colon = entry.lastIndex(of: ":"), let port = Int(entry[entry.index(after: colon)...]), (1...65_535).contains(port) || port == 0,
                  colon > entry.startIndex
            else { throw .notHostAndPort(entry) }
            let host = String(entry[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            addresses.append(Address(host: host, port: port))
        }
        if addresses.count > 1, !(addresses.allSatisfy { Self.isIPv4($0.host) } || addresses.allSatisfy { Self.isIPv6($0.host) }) {
            throw .severalNeedOneIPFamily(text)
        }
        self.addresses = addresses
    }

    public var description: String {
        addresses.map { Self.isIPv6($0.host) ? "[\($0.host)]:\($0.port)" : "\($0.host):\($0.port)" }.joined(separator: ",")
    }

    /// The first host (the only one, for a single address): what `--plaintext-loopback` checks.
    public var hosts: [String] { addresses.map(\.host) }

    /// The resolvable target: every address for round robin, or the one DNS name.
    public var target: any ResolvableTarget {
        let pairs = addresses.map { (host: $0.host, port: $0.port) }
        if pairs.allSatisfy({ Self.isIPv4($0.host) }) { return .ipv4(pairs: pairs) }
        if pairs.allSatisfy({ Self.isIPv6($0.host) }) { return .ipv6(pairs: pairs) }
        return .dns(host: pairs[0].host, port: pairs[0].port)
    }

    static func isIPv4(_ host: String) -> Bool {
        host.split(separator: ".", omittingEmptySubsequences: false).count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
    }

    static func isIPv6(_ host: String) -> Bool { host.contains(":") }
}

/// Why `--server` (or `CUSTOS_SERVER`) is not a list of addresses.
public enum ServiceAddressError: Error, Sendable, Hashable, CustomStringConvertible {
    case notHostAndPort(String)
    case severalNeedOneIPFamily(String)

    public var description: String {
        switch self {
        case .notHostAndPort(let entry): "not host:port: '\(entry)'"
        case .severalNeedOneIPFamily(let text): "several addresses must all be IPv4 or all IPv6 literals (one DNS name at most): '\(text)'"
        }
    }
}
