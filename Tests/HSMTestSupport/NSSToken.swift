public import HSM
public import PKCS11
public import SecureMemory

#if canImport(Glibc)
import Glibc
#endif

/// NSS softokn (Debian's libnss3) as a second PKCS#11 implementation, reached by configuration
/// alone: its key database lives in a folder named by `C_Initialize`'s `pReserved` string.
///
/// NSS reads that string only at a module's first `C_Initialize`, and its login is per process,
/// so every test gets a database of its own on a private copy of the module (``isolated(_:)``).
/// A new database's token ("NSS Certificate DB") has no user PIN yet: the security officer logs
/// in with the empty PIN and sets one (`C_InitPIN`), through the binding — never a command line.
public enum NSSToken {
    public static let modulePath = ProcessInfoLite.environment("CUSTOS_NSS_MODULE") ?? "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"
    public static let label = "NSS Certificate DB"
}

extension NSSToken {
    /// A database of its own on a private copy of the module: its `C_Initialize`/`C_Finalize`
    /// state and its login are its own.
    public static func isolated(_ name: String) throws -> (token: IsolatedToken, module: PKCS11Module) {
        TestEnvironment.prepare()
        let suffix = "\(name)-\(UInt64.random(in: 0 ... .max))"
        let directory = TestEnvironment.directory + "/nss-\(suffix)"
        mkdir(directory, 0o700)
        let copy = TestEnvironment.directory + "/softokn-copy-\(suffix).so"
        try copyFile(modulePath, to: copy)
        let initArguments = "configdir='sql:\(directory)' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
        let module = try PKCS11Module(path: copy, initArguments: initArguments)
        let userPIN = try setUserPIN(module: module)
        let pinFile = directory + "/user.pin"
        try writePrivateFile(pinFile, userPIN)
        let configuration = HSMConfiguration(
            modulePath: copy, token: .label(label), userPIN: .file(path: pinFile), initArguments: initArguments
        )
        return (IsolatedToken(configuration: configuration, userPIN: userPIN), module)
    }

    /// Initialises `module` and gives its new database's token a random user PIN.
    static func setUserPIN(module: PKCS11Module) throws -> SecretBytes {
        try module.initialize()
        // Not `findToken`: a new database's token does not count as initialised until it has a PIN.
        let slot = try module.slots(withTokenPresent: true).first { try module.tokenInfo(slot: $0).label == label }
        guard let slot else { throw HSMError.configuration("NSS softokn shows no token labelled \(label)") }
        let userPIN = SecretBytes(Array("nss-\(UInt64.random(in: 0 ... .max))".utf8))
        let session = try module.openSession(slot: slot)
        defer { try? session.close() }
        try session.login(.securityOfficer, pin: SecretBytes([]))
        try session.initPIN(userPIN)
        try session.logout()
        return userPIN
    }
}

/// A token of either backend, with the pool configuration that reaches it.
public struct IsolatedToken: Sendable {
    public let configuration: HSMConfiguration
    public let userPIN: SecretBytes

    public func configuration(workers: Int, acquireTimeout: Duration = .seconds(5)) -> HSMConfiguration {
        var configuration = configuration
        configuration.workers = workers
        configuration.acquireTimeout = acquireTimeout
        configuration.recoveryBackoff = .milliseconds(10) ... .milliseconds(200)
        return configuration
    }
}

/// The PKCS#11 implementations the pool and fault suites run on.
public enum TestBackend: String, CaseIterable, Sendable {
    case softhsm
    case nss

    /// A new token on a private copy of the backend's module.
    public func isolatedToken(_ name: String) throws -> (token: IsolatedToken, module: PKCS11Module) {
        switch self {
        case .softhsm:
            let token = try TestToken.make(name)
            return (IsolatedToken(configuration: token.configuration(), userPIN: token.userPIN), try TestToken.isolatedModule())
        case .nss:
            return try NSSToken.isolated(name)
        }
    }
}

func copyFile(_ source: String, to target: String) throws {
    let input = open(source, O_RDONLY)
    let output = open(target, O_WRONLY | O_CREAT | O_EXCL, 0o700)
    defer { close(input); close(output) }
    guard input >= 0, output >= 0 else { throw HSMError.configuration("cannot copy \(source) to \(target)") }
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = read(input, &buffer, buffer.count)
        if count <= 0 { break }
        _ = write(output, buffer, count)
    }
}
