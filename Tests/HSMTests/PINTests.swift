import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Counts calls without changing them.
final class CallCounter: PKCS11FaultInjector {
    let calls = Mutex([PKCS11Function: Int]())
    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        calls.withLock { $0[function, default: 0] += 1 }
        return nil
    }
    func count(_ function: PKCS11Function) -> Int { calls.withLock { $0[function, default: 0] } }
}

@Suite("PINs", .serialized)
struct PINTests {
    @Test("A wrong PIN: a clear error, one login attempt only, and the PIN in no log line or error")
    func wrongPIN() async throws {
        let token = try TestToken.make("wrongpin")
        let module = try TestToken.isolatedModule()
        let counter = CallCounter()
        module.installFaultInjector(counter)
        let wrongPIN = "Wr0ngPin-\(UInt32.random(in: 100_000 ... 999_999))"
        let pinFile = TestEnvironment.directory + "/\(token.label).wrong.pin"
        try writePrivateFile(pinFile, SecretBytes(Array(wrongPIN.utf8)))
        var configuration = token.configuration(workers: 2)
        configuration.userPIN = .file(path: pinFile)
        let logs = LogCapture()
        let pool = try SessionPool(configuration: configuration, module: module, logger: logs.logger)
        var thrown: HSMError?
        do {
            try await pool.start()
        } catch let error as HSMError {
            thrown = error
        }
        guard case .pinRejected(let returnValue) = thrown else {
            Issue.record("expected pinRejected, got \(String(describing: thrown))")
            return
        }
        #expect(returnValue == .pinIncorrect)
        #expect(thrown?.isRetryable == false)
        #expect(counter.count(.login) == 1, "a PIN that failed is never tried again")
        #expect(logs.count > 0)
        #expect(!logs.text.contains(wrongPIN))
        #expect(!String(describing: thrown!).contains(wrongPIN))
        #expect(!String(reflecting: thrown!).contains(wrongPIN))
        let correct = String(decoding: token.userPIN.withUnsafeBytes { Array($0) }, as: UTF8.self)
        #expect(!logs.text.contains(correct))
        // The right PIN still works afterwards (the failed try did not lock the token).
        let good = try await startedPool(token, module: module)
        #expect(try await good.random(count: 8).count == 8)
        await good.shutdown()
    }

    @Test("CKR_USER_ALREADY_LOGGED_IN from someone else's login does not pass a wrong PIN")
    func alreadyLoggedInIsNotProof() async throws {
        let token = try TestToken.make("loggedin")
        let module = try TestToken.isolatedModule()
        try module.initialize()
        let other = try module.openSession(slot: try module.findToken(.label(token.label)).slot)
        try other.login(.user, pin: token.userPIN)
        let pinFile = TestEnvironment.directory + "/\(token.label).wrong.pin"
        try writePrivateFile(pinFile, SecretBytes(Array("not-the-pin".utf8)))
        var configuration = token.configuration()
        configuration.userPIN = .file(path: pinFile)
        let pool = try SessionPool(configuration: configuration, module: module, logger: LogCapture().logger)
        do {
            try await pool.start()
            Issue.record("a wrong PIN was accepted because another session had logged in")
        } catch let error as HSMError {
            guard case .loginUnverifiable = error else { Issue.record("got \(error)"); return }
        }
        try other.logout()
        try other.close()
    }

    @Test("PIN files must be private; environment variables work; nothing of the PIN is printed")
    func pinSources() throws {
        let path = TestEnvironment.directory + "/open.pin"
        try writePrivateFile(path, SecretBytes(Array("123456\n".utf8)))
        #expect(try PINSource.file(path: path).read() == SecretBytes(Array("123456".utf8)), "trailing newline ignored")
        chmod(path, 0o644)
        #expect(throws: PINSourceError.permissionsTooOpen(.file(path: path), mode: 0o644)) { _ = try PINSource.file(path: path).read() }
        #expect(throws: PINSourceError.missing(.file(path: path + ".absent"))) { _ = try PINSource.file(path: path + ".absent").read() }
        setenv("CUSTOS_TEST_PIN", "env-pin-42", 1)
        #expect(try PINSource.environment(name: "CUSTOS_TEST_PIN").read() == SecretBytes(Array("env-pin-42".utf8)))
        #expect(throws: PINSourceError.missing(.environment(name: "CUSTOS_NO_SUCH_PIN"))) {
            _ = try PINSource.environment(name: "CUSTOS_NO_SUCH_PIN").read()
        }
        let error = PINSourceError.permissionsTooOpen(.file(path: path), mode: 0o644)
        #expect(error.description.contains("0600") && !error.description.contains("123456"))
        // A PIN typed where the variable's name belongs (`--user-pin-env 4711-2203`): the error
        // (which `serve` logs) must not repeat it (attack review, session 18).
        for typed in ["4711-2203", "s3cr3t pin", "9", "hunter2", "Xk4pQz9Lw2RtYb7NcVm3HsJd"] {
            let missing = PINSourceError.missing(.environment(name: typed))
            #expect(!missing.description.contains(typed) && missing.description.contains("not a variable name"), "\(missing)")
        }
        #expect(PINSourceError.missing(.environment(name: "CUSTOS_NO_SUCH_PIN")).description.contains("CUSTOS_NO_SUCH_PIN"), "a real name is still named")
    }
}
