public import HSM
import PKCS11
public import SecureMemory

#if canImport(Glibc)
import Glibc
#endif

/// NSS softokn (Debian's libnss3) as a second PKCS#11 implementation, reached by configuration
/// alone: its key database lives in a folder named by `C_Initialize`'s `pReserved` string.
///
/// NSS reads that string only at its first `C_Initialize` in a process, so every suite of a test
/// process shares one database (``shared``). A new database's token ("NSS Certificate DB") has
/// no user PIN yet: the security officer logs in with the empty PIN and sets one
/// (`C_InitPIN`), through the binding — never a command line.
public struct NSSToken: Sendable {
    public static let modulePath = ProcessInfoLite.environment("CUSTOS_NSS_MODULE") ?? "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"
    public static let label = "NSS Certificate DB"

    public let initArguments: String
    public let userPIN: SecretBytes
    public let pinFile: String

    /// The test process's NSS database, created on first use.
    public static func shared() throws -> NSSToken {
        try sharedResult.get()
    }

    private static let sharedResult: Result<NSSToken, any Error> = Result {
        TestEnvironment.prepare()
        let directory = TestEnvironment.directory + "/nss"
        mkdir(directory, 0o700)
        let initArguments = "configdir='sql:\(directory)' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
        let module = try PKCS11Module(path: modulePath, initArguments: initArguments)
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
        let pinFile = directory + "/user.pin"
        try writePrivateFile(pinFile, userPIN)
        return NSSToken(initArguments: initArguments, userPIN: userPIN, pinFile: pinFile)
    }

    /// A pool configuration for the shared database (PIN from its 0600 file).
    public func configuration(workers: Int = 2) -> HSMConfiguration {
        HSMConfiguration(
            modulePath: Self.modulePath, token: .label(Self.label), userPIN: .file(path: pinFile), workers: workers,
            acquireTimeout: .seconds(5), recoveryBackoff: .milliseconds(10) ... .milliseconds(200), initArguments: initArguments
        )
    }
}
