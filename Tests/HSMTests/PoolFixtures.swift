import Crypto
import HSM
import HSMTestSupport
import Logging
import PKCS11
import SecureMemory
import Synchronization

/// A known HMAC key imported as a private, sensitive session object of the pool's persistent
/// session, so every result can be checked against swift-crypto and the key is re-imported
/// after a re-login (session objects vanish then).
struct KnownHMACKey {
    let bytes: [UInt8]
    let key: HSMKey

    init(name: String = "known-hmac", seed: UInt8 = 0x42) {
        let bytes = (0..<32).map { UInt8(truncatingIfNeeded: Int(seed) &+ $0 &* 13) }
        self.bytes = bytes
        key = HSMKey(id: "test:\(name)") { session in
            try session.createObject([
                .class(.secretKey), .keyType(.genericSecret), .token(false), .private(true), .sensitive(true),
                .extractable(false), .sign(true), .verify(true), .value(SecretBytes(bytes)),
            ])
        }
    }

    func expected(_ message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: bytes)))
    }
}

func message(_ task: Int, _ index: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 64)
    withUnsafeBytes(of: UInt64(task).littleEndian) { for (offset, byte) in $0.enumerated() { bytes[offset] = byte } }
    withUnsafeBytes(of: UInt64(index).littleEndian) { for (offset, byte) in $0.enumerated() { bytes[8 + offset] = byte } }
    return bytes
}

func startedPool(_ token: TestToken, workers: Int = 2, acquireTimeout: Duration = .seconds(5), module: PKCS11Module? = nil, logger: Logger = Logger(label: "test")) async throws -> SessionPool {
    let configuration = token.configuration(workers: workers, acquireTimeout: acquireTimeout)
    let pool = if let module {
        try SessionPool(configuration: configuration, module: module, logger: logger)
    } else {
        try SessionPool(configuration: configuration, logger: logger)
    }
    try await pool.start()
    return pool
}

/// A started pool on `token` of either backend, through `module` (its private copy).
func startedPool(_ token: IsolatedToken, workers: Int = 2, acquireTimeout: Duration = .seconds(5), module: PKCS11Module) async throws -> SessionPool {
    let pool = try SessionPool(configuration: token.configuration(workers: workers, acquireTimeout: acquireTimeout), module: module, logger: Logger(label: "test"))
    try await pool.start()
    return pool
}

/// A counter and a list that concurrent test tasks can share.
final class Tally: Sendable {
    private let count = Mutex(0)
    private let notes = Mutex([String]())

    func add(_ value: Int = 1) { count.withLock { $0 += value } }
    var value: Int { count.withLock { $0 } }
    func note(_ line: String) { notes.withLock { $0.append(line) } }
    var lines: [String] { notes.withLock { $0 } }
}
