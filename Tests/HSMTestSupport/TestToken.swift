public import HSM
public import PKCS11
public import SecureMemory
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A freshly initialised SoftHSM token for one test suite, in a token directory private to
/// the test process. Suites that change process-wide state (logout, finalize, faults) each
/// get their own token, and may get their own copy of the module (see ``isolatedModule()``).
public struct TestToken: Sendable {
    public let label: String
    public let userPIN: SecretBytes
    public let pinFile: String
    public static let modulePath = ProcessInfoLite.environment("CUSTOS_PKCS11_MODULE") ?? "/usr/lib/softhsm/libsofthsm2.so"

    /// The module every suite shares unless it needs its own.
    public static let sharedModule: PKCS11Module = {
        TestEnvironment.prepare()
        let module = try! PKCS11Module(path: modulePath)
        try! module.initialize()
        return module
    }()

    private static let creation = Mutex(0)

    /// Initialises a new token labelled `custos-test-<name>-<n>` with random PINs, the user
    /// PIN also written to a 0600 file.
    public static func make(_ name: String) throws -> TestToken {
        let module = sharedModule
        return try creation.withLock { counter in
            counter += 1
            let label = String("t-\(name)-\(getpid())-\(counter)".prefix(32))
            let soPIN = SecretBytes(randomPIN())
            let userPIN = SecretBytes(randomPIN())
            let before = TestEnvironment.tokenFolders()
            _ = try TokenProvisioning.initializeToken(module: module, label: label, securityOfficerPIN: soPIN, userPIN: userPIN)
            // A module that lost `directories.tokendir` while parsing its configuration puts
            // every token elsewhere, and each new instance of the run then misses them: say so
            // here, once per token, rather than as "no token with label" far away.
            guard TestEnvironment.tokenFolders() > before else {
                throw HSMError.configuration("token \(label) did not appear in \(TestEnvironment.directory)/tokens: the shared module uses another token folder")
            }
            let pinFile = TestEnvironment.directory + "/\(label).pin"
            try writePrivateFile(pinFile, userPIN)
            return TestToken(label: label, userPIN: userPIN, pinFile: pinFile)
        }
    }

    /// Runs `body` while no other suite initialises a token: `C_InitToken` takes the one free
    /// slot, so two initialisations at once would race for it (for tests that initialise their
    /// own tokens, e.g. the key ceremony's init-token step).
    public static func serializingInitialisation<R>(_ body: () throws -> R) rethrows -> R {
        _ = sharedModule
        return try creation.withLock { _ in try body() }
    }

    /// A pool configuration for this token (PIN from its 0600 file).
    public func configuration(workers: Int = 2, acquireTimeout: Duration = .seconds(5)) -> HSMConfiguration {
        HSMConfiguration(
            modulePath: Self.modulePath, token: .label(label), userPIN: .file(path: pinFile),
            workers: workers, acquireTimeout: acquireTimeout, recoveryBackoff: .milliseconds(10) ... .milliseconds(200)
        )
    }

    /// A logged-in session on the shared module, for binding tests.
    public func userSession() throws -> PKCS11Session {
        let module = Self.sharedModule
        let token = try module.findToken(.label(label))
        let session = try module.openSession(slot: token.slot)
        do {
            try session.login(.user, pin: userPIN)
        } catch let error as PKCS11Error where error.returnValue == .userAlreadyLoggedIn {
            // Another session of this test process already logged in to this token.
        }
        return session
    }

    /// A private copy of the SoftHSM library, loaded as a separate instance: its
    /// `C_Initialize`/`C_Finalize` state is its own, so a suite that finalizes the library
    /// cannot disturb the others running in the same process.
    public static func isolatedModule() throws -> PKCS11Module {
        TestEnvironment.prepare()
        let copy = TestEnvironment.directory + "/softhsm-copy-\(UInt64.random(in: 0 ... .max)).so"
        try copyFile(modulePath, to: copy)
        return try PKCS11Module(path: copy)
    }

    private static func randomPIN() -> [UInt8] {
        let alphabet = Array("abcdefghijkmnopqrstuvwxyz23456789".utf8)
        return (0..<16).map { _ in alphabet.randomElement()! }
    }
}

/// Writes `secret` to a new file with mode 0600.
public func writePrivateFile(_ path: String, _ secret: SecretBytes) throws {
    unlink(path)
    let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard descriptor >= 0 else { throw HSMError.configuration("cannot create \(path)") }
    defer { close(descriptor) }
    secret.withUnsafeBytes { bytes in _ = write(descriptor, bytes.baseAddress, bytes.count) }
}

/// The test process's private SoftHSM configuration: a fresh token directory per process,
/// so test runs never touch the tokens `scripts/setup` made.
public enum TestEnvironment {
    public static let directory: String = {
        var template = Array("/tmp/custos-test-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { buffer in String(cString: mkdtemp(buffer.baseAddress!)!) }
        mkdir(path + "/tokens", 0o700)
        let config = "directories.tokendir = \(path)/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
        let descriptor = open(path + "/softhsm2.conf", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = config.withCString { write(descriptor, $0, strlen($0)) }
        close(descriptor)
        setenv("SOFTHSM2_CONF", path + "/softhsm2.conf", 1)
        return path
    }()

    public static func prepare() { _ = directory }

    /// How many token folders the private token directory holds.
    static func tokenFolders() -> Int {
        guard let folder = opendir(directory + "/tokens") else { return 0 }
        defer { closedir(folder) }
        var count = 0
        while let entry = readdir(folder) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { count += 1 }
        }
        return count
    }
}

/// `getenv` without Foundation.
public enum ProcessInfoLite {
    public static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
