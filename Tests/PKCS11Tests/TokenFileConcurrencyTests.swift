@testable import HSM
import HSMTestSupport
@testable import PKCS11
import SecureMemory
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SoftHSM 2.6.1 rewrites a token's file on every `C_Login` (and `C_InitToken`, `C_InitPIN`),
/// leaving it empty for milliseconds; another library instance's `C_Initialize` scanning the
/// token folder meanwhile misses that token, or gives it slot 0 — and with two such tokens
/// aborts the process (`SlotManager::insertToken`). The binding runs these calls under one
/// process-wide lock (`PKCS11Module.tokenFiles`); without it this test fails, or kills the test
/// process (helper-59: a token missing in 71 % of scans with one writer, an abort in 4 % with
/// four).
@Suite("Token files: initialisations beside logins", .serialized)
struct TokenFileConcurrencyTests {
    @Test("A module copy initialised over and over while four threads log in and out of four tokens finds every token, each in a slot of its own")
    func scansBesideLogins() throws {
        let tokens = try (0..<4).map { _ in try TestToken.make("token-files") }
        let stop = Atomic<Bool>(false)
        let writerFailures = Mutex([String]())
        let writers = try tokens.map { token in
            try startThread(name: "token-writer") {
                do {
                    // A session has one owner: this thread's.
                    let session = try token.userSession()
                    while !stop.load(ordering: .acquiring) {
                        try session.logout()
                        try session.login(.user, pin: token.userPIN)
                        // Room between logins: the lock is the whole process's, and the other
                        // suites running meanwhile log in too.
                        usleep(3_000)
                    }
                } catch {
                    writerFailures.withLock { $0.append("\(error)") }
                }
            }
        }
        defer {
            stop.store(true, ordering: .releasing)
            for writer in writers { pthread_join(writer, nil) }
        }
        // A module copy of its own: each initialisation scans the token folder afresh.
        let scanner = try TestToken.isolatedModule()
        var missed = [String]()
        for round in 0..<40 {
            missed += try TokenFolderScan.misses(scanner: scanner, tokens: tokens, round: round)
        }
        stop.store(true, ordering: .releasing)
        #expect(missed.isEmpty, "\(missed.count) misses, first: \(missed.prefix(3))")
        #expect(writerFailures.withLock { $0 }.isEmpty)
    }
}

@Suite("Token files: the folder other processes lock")
struct SoftHSMTokenFolderLockTests {
    @Test("The token folder is read as SoftHSM 2.6.1 reads it: comments cut, blanks trimmed, the last line wins, its default without one")
    func tokenFolderParse() {
        let configuration = "# directories.tokendir = /commented/out\nlog.level = ERROR\n"
            + "directories.tokendir = /first\n"
            + "  directories.tokendir \t=  /var/tmp/custos tokens/  \t# main folder\r\n"
            + "objectstore.backend = file\r\n"
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: configuration) == "/var/tmp/custos tokens/", "the last one, comment and CR cut")
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: "directories.tokendir==/a=b") == "/a", "strtok: empty pieces skipped, a second = ends the value")
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: "directories.tokendir = tokens") == "tokens", "relative, as SoftHSM opens it")
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: "log.level = INFO") == SoftHSMTokenFolderLock.defaultTokenFolder)
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: "directories.tokendir\n= /x") == SoftHSMTokenFolderLock.defaultTokenFolder, "one line each")
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: "directories.tokendir = /t1\ndirectories.tokendir =   #c\n") == "/t1", "an empty value is ignored")
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: "directories.tokendir = /t1\u{0}/t2\n") == "/t1", "cut at a NUL")
        // fgets into 1,024 bytes: the rest of a longer line is read as a line of its own.
        let long = "#" + String(repeating: "x", count: 1_022) + "directories.tokendir = /t2\n"
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: long) == "/t2")
        #expect(SoftHSMTokenFolderLock.tokenFolder(inConfiguration: "#" + String(repeating: "x", count: 1_021) + "directories.tokendir = /t2\n") == SoftHSMTokenFolderLock.defaultTokenFolder)
    }

    @Test("The lock is the folder SoftHSM reads here, and a second holder waits for the first")
    func lockExcludesAnotherHolder() throws {
        TestEnvironment.prepare()
        let folder = try #require(SoftHSMTokenFolderLock.tokenFolder())
        #expect(folder.hasPrefix(TestEnvironment.directory), "the run's own token folder, from SOFTHSM2_CONF")
        let held = try #require(SoftHSMTokenFolderLock())
        // Another open file description, as another process has: refused while held.
        let other = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(other) }
        #expect(flock(other, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK)
        held.release()
        // Blocking: another suite of this process may take the lock for a moment meanwhile.
        #expect(flock(other, LOCK_EX) == 0)
        flock(other, LOCK_UN)
    }

    @Test("A holder that never lets go holds a call up for the patience only; the call then goes on without the lock")
    func holderThatNeverLetsGo() throws {
        TestEnvironment.prepare()
        let folder = try #require(SoftHSMTokenFolderLock.tokenFolder())
        // O_CLOEXEC: a child another suite starts meanwhile must not inherit the hold.
        let stuck = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(stuck) }
        #expect(flock(stuck, LOCK_EX) == 0)
        let start = ContinuousClock.now
        #expect(SoftHSMTokenFolderLock(patience: .milliseconds(300)) == nil)
        #expect(ContinuousClock.now - start >= .milliseconds(300), "it waited for the holder first")
        flock(stuck, LOCK_UN)
        let taken = try #require(SoftHSMTokenFolderLock(patience: .seconds(10)))
        taken.release()
    }

    @Test("A lock that cannot be taken is named for the start-up warning: unreadable configuration, a folder that cannot be opened; none for the run's own")
    func problemsNamed() throws {
        TestEnvironment.prepare()
        let directory = TestEnvironment.directory + "/folder-lock-\(getpid())"
        mkdir(directory, 0o700)
        let missing = directory + "/absent.conf"
        #expect(SoftHSMTokenFolderLock.problem(configurationPath: missing) == "configuration \(missing) cannot be read")
        let configuration = directory + "/softhsm2.conf"
        let text = "directories.tokendir = \(directory)/no-such-folder\n"
        let file = fopen(configuration, "w")
        fputs(text, file)
        fclose(file)
        let problem = try #require(SoftHSMTokenFolderLock.problem(configurationPath: configuration))
        #expect(problem.hasPrefix("token folder \(directory)/no-such-folder cannot be opened"))
        #expect(SoftHSMTokenFolderLock.problem() == nil, "the run's own folder locks")
        #expect(TestToken.sharedModule.tokenFolderLockProblem == nil)
    }

    @Test("A token labelled blank on purpose is found by its serial (a blank label is read again only when it did not match)")
    func blankLabelFoundBySerial() throws {
        let module = TestToken.sharedModule
        try TestToken.serializingInitialisation {
            let free = try #require(try module.slots(withTokenPresent: true).first { (try? module.tokenInfo(slot: $0).isInitialized) == false })
            let securityOfficerPIN = SecretBytes(count: 16) { $0.copyBytes(from: (0..<16).map { _ in UInt8.random(in: 97...122) }) }
            try module.initToken(slot: free, securityOfficerPIN: securityOfficerPIN, label: "")
            // Leave no blank-labelled token in the run's folder, even when an expectation
            // fails: every lookup that misses would read it again for 150 ms.
            defer { try? module.initToken(slot: free, securityOfficerPIN: securityOfficerPIN, label: "t-was-blank-\(getpid())") }
            let blank = try module.tokenInfo(slot: free)
            #expect(blank.isInitialized && blank.label.isEmpty)
            #expect(try module.findToken(.serial(blank.serialNumber)).slot == free)
        }
    }

    @Test("A SoftHSM login waiting for another process's hold holds up no other module's initialisation")
    func waitHoldsNoOtherModule() throws {
        let token = try TestToken.make("folder-wait")
        // Initialised once, so the binding knows it keeps no token files.
        let (_, nss) = try NSSToken.isolated("folder-wait")
        let folder = try #require(SoftHSMTokenFolderLock.tokenFolder())
        let otherProcess = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(otherProcess) }
        #expect(flock(otherProcess, LOCK_EX) == 0)
        // Selected here; on the thread, the session (owned there) and the login, which waits for
        // the hold — flagged first, so the timing below starts only once the login waits.
        let slot = try TestToken.sharedModule.findToken(.label(token.label)).slot
        let loggingIn = Atomic<Bool>(false)
        let loggedIn = Atomic<Bool>(false)
        let login = try startThread(name: "softhsm-login") {
            guard let session = try? TestToken.sharedModule.openSession(slot: slot) else { return }
            defer { try? session.close() }
            loggingIn.store(true, ordering: .releasing)
            // Waits for the hold above (at most its patience, 10 s).
            if (try? session.login(.user, pin: token.userPIN)) != nil { loggedIn.store(true, ordering: .releasing) }
        }
        for _ in 0..<5_000 where !loggingIn.load(ordering: .acquiring) { usleep(1_000) }
        let started = loggingIn.load(ordering: .acquiring)
        #expect(started, "the login thread opened its session")
        usleep(100_000)
        let start = ContinuousClock.now
        try nss.finalize()
        try nss.initialize()
        let took = ContinuousClock.now - start
        flock(otherProcess, LOCK_UN)
        pthread_join(login, nil)
        // Before, the login waited inside the process-wide token-file lock, and the NSS module's
        // re-initialisation behind it for the login's whole patience.
        #expect(took < .seconds(2), "the NSS module's re-initialisation took \(took)")
        let didLogIn = loggedIn.load(ordering: .acquiring)
        #expect(didLogIn)
    }

    /// Folders a module said it stopped waiting for.
    final class Abandoned: Sendable {
        let folders = Mutex([String]())
    }

    @Test("A login that gives up waiting for another process's hold goes on without the lock, and its module says so")
    func abandonedWaitReported() throws {
        let token = try TestToken.make("folder-abandoned")
        let module = try TestToken.isolatedModule()
        try module.initialize()
        defer { try? module.finalize() }
        module.setTokenFolderPatience(.milliseconds(200))
        let abandoned = Abandoned()
        module.onTokenFolderWaitAbandoned { folder in abandoned.folders.withLock { $0.append(folder) } }
        let folder = try #require(SoftHSMTokenFolderLock.tokenFolder())
        let otherProcess = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(otherProcess) }
        #expect(flock(otherProcess, LOCK_EX) == 0)
        let session = try module.openSession(slot: try module.findToken(.label(token.label)).slot)
        try session.login(.user, pin: token.userPIN)
        flock(otherProcess, LOCK_UN)
        #expect(abandoned.folders.withLock { $0 } == [folder])
        try session.logout()
        try session.close()
    }
}
