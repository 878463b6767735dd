@testable import HSM
import PKCS11
import Testing

private typealias Machine = RecoveryStateMachine

private let ms: UInt64 = 1_000_000

/// The machine the rows start from: generation 5, epoch 3, back-off 10 ms ... 200 ms (as TestToken configures).
private func machine(
    _ phase: Machine.Phase = .running, breaker: Machine.Breaker = .closed, login: Machine.Login = .verified,
    generation: UInt64 = 5, epoch: UInt64 = 3
) -> Machine {
    Machine(backoff: 10 * ms ... 200 * ms, phase: phase, breaker: breaker, login: login, generation: generation, epoch: epoch)
}

/// One event fed to the machine, so that a table row can name it.
private enum Event: Sendable {
    case admit(now: UInt64)
    case callFailed(RecoveryClass, seenGeneration: UInt64 = 5, seenEpoch: UInt64 = 3, retried: Bool = false)
    case loginLost(seenGeneration: UInt64)
    case deviceLost(seenEpoch: UInt64, now: UInt64)
    case resetRequested
    case drained
    case succeeded
    case failed(now: UInt64, pinRejected: Bool = false)
    case persistentSessionLost
    case shutDown
    case loginPrecheck
    case loginRefusal(locked: Bool, finalTry: Bool)
    case loginFinished(Machine.LoginResult)

    func apply(to machine: inout Machine) -> Answer {
        switch self {
        case .admit(let now):
            return .admission(machine.admit(now: now))
        case .callFailed(let recovery, let generation, let epoch, let retried):
            return .failure(machine.callFailed(recovery, seenGeneration: generation, seenEpoch: epoch, retried: retried))
        case .loginLost(let seen):
            return .recovery(machine.loginLost(seenGeneration: seen))
        case .deviceLost(let seen, let now):
            return .recovery(machine.deviceLost(seenEpoch: seen, now: now))
        case .resetRequested:
            return .recovery(machine.resetRequested())
        case .drained:
            machine.recoveryDrained()
        case .succeeded:
            return .effects(machine.recoverySucceeded())
        case .failed(let now, let pinRejected):
            return .failedRecovery(machine.recoveryFailed(now: now, pinRejected: pinRejected))
        case .persistentSessionLost:
            machine.persistentSessionLost()
        case .shutDown:
            machine.shutDown()
        case .loginPrecheck:
            return .refusal(machine.loginRefusal())
        case .loginRefusal(let locked, let finalTry):
            return .refusal(machine.loginRefusal(userPINLocked: locked, userPINFinalTry: finalTry))
        case .loginFinished(let result):
            return .refusal(machine.loginFinished(result))
        }
        return .nothing
    }
}

/// What the machine answered, whatever the event.
private enum Answer: Hashable, Sendable {
    case admission(Machine.Admission)
    case failure(Machine.FailureAction)
    case recovery(Machine.RecoveryAction)
    case effects([Machine.Effect])
    case failedRecovery(Machine.FailedRecoveryAction)
    case refusal(Machine.LoginRefusal?)
    case nothing
}

private struct Row: Sendable, CustomTestStringConvertible {
    let name: String
    let before: Machine
    let event: Event
    let after: Machine
    let answer: Answer

    init(_ name: String, _ before: Machine, _ event: Event, _ after: Machine, _ answer: Answer) {
        self.name = name
        self.before = before
        self.event = event
        self.after = after
        self.answer = answer
    }

    var testDescription: String { name }
}

private let open40 = Machine.Breaker.open(until: 500 * ms, backoff: 40 * ms)

private let admission: [Row] = [
    Row("closed: proceed", machine(), .admit(now: 1), machine(), .admission(.proceed)),
    Row("open, pause running: unavailable until its end", machine(breaker: open40), .admit(now: 100 * ms), machine(breaker: open40),
        .admission(.unavailable(retryAfter: 400 * ms))),
    Row("open, pause over: probe", machine(breaker: open40), .admit(now: 500 * ms), machine(breaker: open40), .admission(.probe(seenEpoch: 3))),
    Row("open, probe running: probe too (then waits for it)", machine(.recovering(.device), breaker: open40), .admit(now: 600 * ms),
        machine(.recovering(.device), breaker: open40), .admission(.probe(seenEpoch: 3))),
]

private let failedCalls: [Row] = [
    Row("session-fatal: retry in a new session", machine(), .callFailed(.sessionFatal), machine(), .failure(.retry)),
    Row("login lost: recover the login", machine(), .callFailed(.loginLost), machine(), .failure(.recoverLogin)),
    Row("device: recover the device", machine(), .callFailed(.device), machine(), .failure(.recoverDevice)),
    Row("transient, nothing changed: surface", machine(), .callFailed(.transient), machine(), .failure(.surface)),
    Row("transient, new generation meanwhile: retry", machine(), .callFailed(.transient, seenGeneration: 4), machine(), .failure(.retry)),
    Row("transient, new epoch meanwhile: retry", machine(), .callFailed(.transient, seenEpoch: 2), machine(), .failure(.retry)),
    Row("PIN: surface, never retried", machine(), .callFailed(.pin), machine(), .failure(.surface)),
    Row("caller's mistake: surface", machine(), .callFailed(.caller), machine(), .failure(.surface)),
    Row("the retry failing too: surface", machine(), .callFailed(.loginLost, retried: true), machine(), .failure(.surface)),
    Row("a device error on the retry: surface", machine(), .callFailed(.device, retried: true), machine(), .failure(.surface)),
]

private let reports: [Row] = [
    Row("login lost: start a re-login", machine(), .loginLost(seenGeneration: 5), machine(.recovering(.login)), .recovery(.start(.login))),
    Row("login lost before the last re-login: already done", machine(), .loginLost(seenGeneration: 4), machine(), .recovery(.alreadyDone)),
    Row("login lost during another recovery: wait for it", machine(.recovering(.device)), .loginLost(seenGeneration: 5),
        machine(.recovering(.device)), .recovery(.awaitRecovery)),
    Row("login lost after shutdown: start nothing", machine(.shutDown(finishing: nil)), .loginLost(seenGeneration: 5),
        machine(.shutDown(finishing: nil)), .recovery(.notRunning)),
    Row("login lost, circuit open: re-login anyway, circuit stays", machine(breaker: open40), .loginLost(seenGeneration: 5),
        machine(.recovering(.login), breaker: open40), .recovery(.start(.login))),
    Row("device lost: start a re-initialisation", machine(), .deviceLost(seenEpoch: 3, now: 1), machine(.recovering(.device)), .recovery(.start(.device))),
    Row("device lost before the last re-initialisation: already done", machine(), .deviceLost(seenEpoch: 2, now: 1), machine(),
        .recovery(.alreadyDone)),
    Row("device lost before the last re-initialisation, circuit open: already done", machine(breaker: open40),
        .deviceLost(seenEpoch: 2, now: 1), machine(breaker: open40), .recovery(.alreadyDone)),
    Row("device lost, pause running: unavailable until its end", machine(breaker: open40), .deviceLost(seenEpoch: 3, now: 300 * ms),
        machine(breaker: open40), .recovery(.unavailable(retryAfter: 200 * ms))),
    Row("device lost, pause over: probe (circuit open until it succeeds)", machine(breaker: open40), .deviceLost(seenEpoch: 3, now: 500 * ms),
        machine(.recovering(.device), breaker: open40), .recovery(.start(.device))),
    Row("device lost during another recovery: wait for it", machine(.recovering(.login)), .deviceLost(seenEpoch: 3, now: 1),
        machine(.recovering(.login)), .recovery(.awaitRecovery)),
    Row("device lost after shutdown: start nothing", machine(.shutDown(finishing: .login)), .deviceLost(seenEpoch: 3, now: 1),
        machine(.shutDown(finishing: .login)), .recovery(.notRunning)),
    Row("reset: start", machine(), .resetRequested, machine(.recovering(.reset)), .recovery(.start(.reset))),
    Row("reset, circuit open: start anyway", machine(breaker: open40), .resetRequested, machine(.recovering(.reset), breaker: open40),
        .recovery(.start(.reset))),
    Row("reset during a recovery: wait for it", machine(.recovering(.login)), .resetRequested, machine(.recovering(.login)), .recovery(.awaitRecovery)),
    Row("reset after shutdown: start nothing", machine(.shutDown(finishing: nil)), .resetRequested, machine(.shutDown(finishing: nil)),
        .recovery(.notRunning)),
]

private let recoveryEnds: [Row] = [
    Row("re-initialisation drained: new epoch and generation", machine(.recovering(.device)), .drained,
        machine(.recovering(.device), generation: 6, epoch: 4), .nothing),
    Row("reset drained: new epoch and generation", machine(.recovering(.reset)), .drained, machine(.recovering(.reset), generation: 6, epoch: 4), .nothing),
    Row("re-login drained: nothing new yet", machine(.recovering(.login)), .drained, machine(.recovering(.login)), .nothing),
    Row("re-initialisation drained after shutdown: new epoch and generation", machine(.shutDown(finishing: .device)), .drained,
        machine(.shutDown(finishing: .device), generation: 6, epoch: 4), .nothing),
    Row("re-login succeeded: new generation, counted", machine(.recovering(.login)), .succeeded, machine(generation: 6), .effects([.countRelogin])),
    Row("re-login succeeded, circuit open: it stays open", machine(.recovering(.login), breaker: open40), .succeeded,
        machine(breaker: open40, generation: 6), .effects([.countRelogin])),
    Row("re-initialisation succeeded: circuit closed, counted", machine(.recovering(.device), breaker: open40), .succeeded, machine(),
        .effects([.recordBreaker(open: false), .countReinitialisation])),
    Row("reset succeeded", machine(.recovering(.reset)), .succeeded, machine(), .effects([])),
    Row("re-login succeeded after shutdown: stays shut down", machine(.shutDown(finishing: .login)), .succeeded,
        machine(.shutDown(finishing: nil), generation: 6), .effects([.countRelogin])),
    Row("re-login failed: its error, same generation (the next report recovers again)", machine(.recovering(.login)), .failed(now: 1), machine(),
        .failedRecovery(.rethrow)),
    Row("reset failed: its error", machine(.recovering(.reset)), .failed(now: 1), machine(), .failedRecovery(.rethrow)),
    Row("first re-initialisation failure: circuit opens for the lower bound", machine(.recovering(.device)), .failed(now: 1000 * ms),
        machine(breaker: .open(until: 1010 * ms, backoff: 10 * ms)), .failedRecovery(.openBreaker(backoff: 10 * ms))),
    Row("re-initialisation failed with the PIN refused: circuit opens, give up", machine(.recovering(.device)),
        .failed(now: 1000 * ms, pinRejected: true), machine(breaker: .open(until: 1010 * ms, backoff: 10 * ms)),
        .failedRecovery(.openBreakerAndGiveUp(backoff: 10 * ms))),
    Row("re-initialisation failed after shutdown: stays shut down", machine(.shutDown(finishing: .device)), .failed(now: 0),
        machine(.shutDown(finishing: nil), breaker: .open(until: 10 * ms, backoff: 10 * ms)), .failedRecovery(.openBreaker(backoff: 10 * ms))),
    Row("persistent session lost: new generation", machine(), .persistentSessionLost, machine(generation: 6), .nothing),
    Row("shutdown", machine(), .shutDown, machine(.shutDown(finishing: nil)), .nothing),
    Row("shutdown during a recovery: it may finish", machine(.recovering(.device), breaker: open40), .shutDown,
        machine(.shutDown(finishing: .device), breaker: open40), .nothing),
    Row("shutdown twice", machine(.shutDown(finishing: .login)), .shutDown, machine(.shutDown(finishing: .login)), .nothing),
]

private let logins: [Row] = [
    Row("first login: go ahead", machine(login: .notYet), .loginPrecheck, machine(login: .notYet), .refusal(nil)),
    Row("a refused PIN is never presented again", machine(login: .rejected(.pinIncorrect)), .loginPrecheck, machine(login: .rejected(.pinIncorrect)),
        .refusal(.pinRejected(.pinIncorrect))),
    Row("PIN flags clear: go ahead", machine(login: .notYet), .loginRefusal(locked: false, finalTry: false), machine(login: .notYet), .refusal(nil)),
    Row("PIN locked: refuse", machine(), .loginRefusal(locked: true, finalTry: false), machine(), .refusal(.pinLocked(finalTry: false))),
    Row("PIN one try from locked: refuse", machine(), .loginRefusal(locked: false, finalTry: true), machine(), .refusal(.pinLocked(finalTry: true))),
    Row("refused PIN wins over the flags", machine(login: .rejected(.pinLenRange)), .loginRefusal(locked: true, finalTry: true),
        machine(login: .rejected(.pinLenRange)), .refusal(.pinRejected(.pinLenRange))),
    Row("login succeeded: verified", machine(login: .notYet), .loginFinished(.succeeded), machine(login: .verified), .refusal(nil)),
    Row("already logged in by someone else: unverifiable", machine(login: .notYet), .loginFinished(.alreadyLoggedIn), machine(login: .notYet),
        .refusal(.unverifiable)),
    Row("already logged in, own login verified: accepted", machine(login: .verified), .loginFinished(.alreadyLoggedIn), machine(login: .verified),
        .refusal(nil)),
    Row("PIN refused: remembered, give up", machine(login: .notYet), .loginFinished(.pinRefused(.pinIncorrect)),
        machine(login: .rejected(.pinIncorrect)), .refusal(.pinRejected(.pinIncorrect))),
    Row("PIN refused after it once worked (changed): remembered", machine(login: .verified), .loginFinished(.pinRefused(.pinExpired)),
        machine(login: .rejected(.pinExpired)), .refusal(.pinRejected(.pinExpired))),
    Row("refused PIN, then someone else's login: still unverifiable", machine(login: .rejected(.pinIncorrect)), .loginFinished(.alreadyLoggedIn),
        machine(login: .rejected(.pinIncorrect)), .refusal(.unverifiable)),
]

@Suite("Recovery state machine (no HSM)")
struct RecoveryStateMachineTests {
    @Test("Admission before a call", arguments: admission)
    fileprivate func admit(row: Row) { check(row) }

    @Test("A failed call, by the class of its return value", arguments: failedCalls)
    fileprivate func failedCall(row: Row) { check(row) }

    @Test("Reports of a loss and requests for a reset", arguments: reports)
    fileprivate func report(row: Row) { check(row) }

    @Test("A recovery's drain, success and failure; shutdown", arguments: recoveryEnds)
    fileprivate func recoveryEnd(row: Row) { check(row) }

    @Test("Login: a refused PIN is never retried; ALREADY_LOGGED_IN only for the pool's own login", arguments: logins)
    fileprivate func login(row: Row) { check(row) }

    private func check(_ row: Row) {
        var machine = row.before
        let answer = row.event.apply(to: &machine)
        #expect(answer == row.answer)
        #expect(machine == row.after)
    }

    @Test("The pause doubles with each failed probe up to the cap; a success resets it", arguments: [
        (previous: Machine.Breaker.closed, next: 10 * ms),
        (.open(until: 0, backoff: 10 * ms), 20 * ms),
        (.open(until: 0, backoff: 40 * ms), 80 * ms),
        (.open(until: 0, backoff: 160 * ms), 200 * ms),
        (.open(until: 0, backoff: 200 * ms), 200 * ms),
    ])
    fileprivate func backoff(previous: Machine.Breaker, next: UInt64) {
        var recovery = machine(breaker: previous)
        #expect(recovery.deviceLost(seenEpoch: 3, now: 1000 * ms) == .start(.device))
        recovery.recoveryDrained()
        #expect(recovery.recoveryFailed(now: 1000 * ms, pinRejected: false) == .openBreaker(backoff: next))
        #expect(recovery.breaker == .open(until: 1000 * ms + next, backoff: next))
        #expect(recovery.admit(now: 1000 * ms + next - 1) == .unavailable(retryAfter: 1))
        #expect(recovery.admit(now: 1000 * ms + next) == .probe(seenEpoch: 4))
    }

    @Test("A device that stays down: pauses 10, 20, 40, 80, 160, 200, 200 ms; back up: closed, and the next outage starts at 10 ms")
    func backoffSequence() {
        var recovery = machine()
        var now: UInt64 = 0
        var pauses = [UInt64]()
        for _ in 0..<7 {
            #expect(recovery.deviceLost(seenEpoch: recovery.epoch, now: now) == .start(.device))
            recovery.recoveryDrained()
            guard case .openBreaker(let backoff) = recovery.recoveryFailed(now: now, pinRejected: false) else {
                Issue.record("the circuit did not open")
                return
            }
            pauses.append(backoff / ms)
            now += backoff
        }
        #expect(pauses == [10, 20, 40, 80, 160, 200, 200])
        #expect(recovery.deviceLost(seenEpoch: recovery.epoch, now: now) == .start(.device))
        recovery.recoveryDrained()
        #expect(recovery.recoverySucceeded() == [.recordBreaker(open: false), .countReinitialisation])
        #expect(recovery.admit(now: now) == .proceed)
        #expect(recovery.deviceLost(seenEpoch: recovery.epoch, now: now) == .start(.device))
        #expect(recovery.recoveryFailed(now: now, pinRejected: false) == .openBreaker(backoff: 10 * ms))
    }

    @Test("Workers reporting a loss at once: one recovery, the others wait and then find it done", arguments: [
        (first: Machine.Recovery.login, others: Machine.Recovery.login, afterwards: Machine.RecoveryAction.alreadyDone),
        (.device, .device, .alreadyDone),
        // A re-initialisation starts a new generation too, so it settles a lost login…
        (.device, .login, .alreadyDone),
        // …but a re-login does not settle a lost device.
        (.login, .device, .start(.device)),
    ])
    fileprivate func concurrentReports(first: Machine.Recovery, others: Machine.Recovery, afterwards: Machine.RecoveryAction) {
        var recovery = machine()
        func report(_ kind: Machine.Recovery) -> Machine.RecoveryAction {
            kind == .login ? recovery.loginLost(seenGeneration: 5) : recovery.deviceLost(seenEpoch: 3, now: 0)
        }
        #expect(report(first) == .start(first))
        #expect((0..<3).map { _ in report(others) } == Array(repeating: .awaitRecovery, count: 3))
        recovery.recoveryDrained()
        _ = recovery.recoverySucceeded()
        #expect(recovery.phase == .running)
        #expect(report(others) == afterwards)
    }

    @Test("Shutdown while a recovery runs: waiting reports are released with 'not running', the recovery finishes, nothing new starts")
    func shutdownDuringRecovery() {
        var recovery = machine()
        #expect(recovery.deviceLost(seenEpoch: 3, now: 0) == .start(.device))
        #expect(recovery.loginLost(seenGeneration: 5) == .awaitRecovery)
        recovery.shutDown()
        #expect(recovery.loginLost(seenGeneration: 5) == .notRunning)
        recovery.recoveryDrained()
        #expect(recovery.recoveryFailed(now: 0, pinRejected: false) == .openBreaker(backoff: 10 * ms))
        #expect(recovery.phase == .shutDown(finishing: nil))
        #expect(recovery.deviceLost(seenEpoch: recovery.epoch, now: 20 * ms) == .notRunning)
        #expect(recovery.resetRequested() == .notRunning)
    }

    @Test("A wrong PIN during re-initialisation: the circuit opens, the answer is the PIN error, and the PIN is never presented again")
    func pinRefusedDuringRecovery() {
        var recovery = machine(login: .notYet)
        #expect(recovery.deviceLost(seenEpoch: 3, now: 0) == .start(.device))
        recovery.recoveryDrained()
        #expect(recovery.loginRefusal(userPINLocked: false, userPINFinalTry: false) == nil)
        #expect(recovery.loginFinished(.pinRefused(.pinIncorrect)) == .pinRejected(.pinIncorrect))
        #expect(recovery.recoveryFailed(now: 0, pinRejected: true) == .openBreakerAndGiveUp(backoff: 10 * ms))
        // After the pause the probe re-initialises again, but the login stops before C_Login.
        #expect(recovery.deviceLost(seenEpoch: recovery.epoch, now: 10 * ms) == .start(.device))
        #expect(recovery.loginRefusal() == .pinRejected(.pinIncorrect))
    }
}
