import PKCS11

/// The session pool's recovery, circuit breaker and login policy as a value: no I/O, no
/// threads, no PKCS#11 calls, time passed in as monotonic nanoseconds. ``SessionPool`` feeds it
/// events under its recovery lock and performs the actions it answers (the model is
/// postgres-nio's `PoolStateMachine`), so every rule of DESIGN §4 is tested without an HSM.
///
/// - `phase`: at most one recovery (re-login, re-initialisation, reset) runs; every other
///   report of a loss waits for it and then usually finds it done — concurrent failure reports
///   collapse into one recovery.
/// - `breaker`: a failed re-initialisation opens the circuit for a back-off that doubles from
///   the configured lower bound up to its upper bound; calls answer "unavailable" meanwhile,
///   the first call after the pause probes, and a successful re-initialisation closes it.
/// - `login`: a PIN the token refused is never tried again; `CKR_USER_ALREADY_LOGGED_IN`
///   counts as success only once the pool's own login was verified.
/// - `generation` (cached key handles) and `epoch` (sessions) say what a recovery invalidated,
///   so that a report made before a recovery is answered "already done, retry".
struct RecoveryStateMachine: Sendable, Hashable {
    enum Phase: Sendable, Hashable {
        /// No recovery runs.
        case running
        /// One recovery runs; other reports of a loss wait for its end.
        case recovering(Recovery)
        /// The pool is stopping: nothing new starts; `finishing` is the recovery still running.
        case shutDown(finishing: Recovery?)
    }

    enum Recovery: Sendable, Hashable {
        /// Log out and in again (login lost): a new generation once the login holds.
        case login
        /// Finalize and initialise the library again (device lost): a new epoch and generation.
        case device
        /// `C_CloseAllSessions` on request: a new epoch and generation.
        case reset
    }

    enum Breaker: Sendable, Hashable {
        case closed
        /// The last re-initialisation failed: calls answer "unavailable" until `until`, then one
        /// probes. `backoff` is the pause chosen, which the next failure doubles.
        case open(until: UInt64, backoff: UInt64)
    }

    enum Login: Sendable, Hashable {
        case notYet
        /// The pool's own login succeeded once with the configured PIN.
        case verified
        /// The token refused the PIN: never presented again.
        case rejected(PKCS11ReturnValue)
    }

    private(set) var phase: Phase
    private(set) var breaker: Breaker
    private(set) var login: Login
    private(set) var generation: UInt64
    private(set) var epoch: UInt64
    /// Pauses of the open circuit, in nanoseconds.
    let backoff: ClosedRange<UInt64>

    init(
        backoff: ClosedRange<UInt64>, phase: Phase = .running, breaker: Breaker = .closed, login: Login = .notYet,
        generation: UInt64 = 1, epoch: UInt64 = 1
    ) {
        self.backoff = backoff
        self.phase = phase
        self.breaker = breaker
        self.login = login
        self.generation = generation
        self.epoch = epoch
    }

    var isBreakerOpen: Bool { breaker != .closed }

    // MARK: Calls

    /// What a call does before it runs.
    enum Admission: Sendable, Hashable {
        case proceed
        /// The circuit is open: answer "unavailable", retry after this many nanoseconds.
        case unavailable(retryAfter: UInt64)
        /// The pause is over: run ``deviceLost(seenEpoch:now:)`` (it re-initialises), then the call.
        case probe(seenEpoch: UInt64)
    }

    func admit(now: UInt64) -> Admission {
        guard case .open(let until, _) = breaker else { return .proceed }
        return now < until ? .unavailable(retryAfter: until - now) : .probe(seenEpoch: epoch)
    }

    /// What a failed call does next, by the class of its return value.
    enum FailureAction: Sendable, Hashable {
        /// Try once more (the worker's session was replaced, or a recovery ran meanwhile).
        case retry
        /// Answer the error, mapped by its class.
        case surface
        /// Run ``loginLost(seenGeneration:)``, then retry once.
        case recoverLogin
        /// Run ``deviceLost(seenEpoch:now:)``, then retry once.
        case recoverDevice
    }

    /// - Parameters: `seenGeneration` and `seenEpoch` are the values the call started with;
    ///   `retried` says whether this was already the retry (a call is retried at most once).
    func callFailed(_ recovery: RecoveryClass, seenGeneration: UInt64, seenEpoch: UInt64, retried: Bool) -> FailureAction {
        if retried { return .surface }
        switch recovery {
        case .sessionFatal: return .retry
        case .loginLost, .operationLeftActive: return .recoverLogin
        case .device: return .recoverDevice
        // A logout under load briefly answers CKR_GENERAL_ERROR (DESIGN §4): worth one retry
        // only when a recovery happened while the call ran.
        case .transient: return generation != seenGeneration || epoch != seenEpoch ? .retry : .surface
        case .pin, .caller: return .surface
        }
    }

    // MARK: Recoveries

    /// What a report of a loss (or a request for a reset) does.
    enum RecoveryAction: Sendable, Hashable {
        /// Run the recovery now, then report ``recoveryDrained()`` and its end.
        case start(Recovery)
        /// Another thread recovered after the caller saw the failure: just retry.
        case alreadyDone
        /// Another recovery runs: wait until it ends, then report again.
        case awaitRecovery
        /// The circuit is open: answer "unavailable", retry after this many nanoseconds.
        case unavailable(retryAfter: UInt64)
        /// The pool is stopping: start nothing, answer "not running".
        case notRunning
    }

    mutating func loginLost(seenGeneration: UInt64) -> RecoveryAction {
        if let blocked = blockedByPhase() { return blocked }
        if generation != seenGeneration { return .alreadyDone }
        phase = .recovering(.login)
        return .start(.login)
    }

    mutating func deviceLost(seenEpoch: UInt64, now: UInt64) -> RecoveryAction {
        if let blocked = blockedByPhase() { return blocked }
        if epoch != seenEpoch { return .alreadyDone }
        if case .open(let until, _) = breaker, now < until { return .unavailable(retryAfter: until - now) }
        phase = .recovering(.device)
        return .start(.device)
    }

    /// A maintenance reset always runs (after any running recovery); the breaker does not stop it.
    mutating func resetRequested() -> RecoveryAction {
        if let blocked = blockedByPhase() { return blocked }
        phase = .recovering(.reset)
        return .start(.reset)
    }

    private func blockedByPhase() -> RecoveryAction? {
        switch phase {
        case .running: nil
        case .recovering: .awaitRecovery
        case .shutDown: .notRunning
        }
    }

    /// In-flight calls have drained and the pool is about to tear down. A re-initialisation or
    /// reset invalidates every session and handle now; a re-login starts its new generation
    /// only once the login holds, so that a failed re-login is recovered again on the next report.
    mutating func recoveryDrained() {
        switch runningRecovery() {
        case .device, .reset:
            epoch &+= 1
            generation &+= 1
        case .login:
            break
        }
    }

    /// What the pool records after a recovery.
    enum Effect: Sendable, Hashable {
        case countRelogin
        case countReinitialisation
        /// Set the breaker gauge (1 open, 0 closed).
        case recordBreaker(open: Bool)
    }

    /// The running recovery succeeded (reported while calls are still drained).
    mutating func recoverySucceeded() -> [Effect] {
        let recovery = runningRecovery()
        endRecovery()
        switch recovery {
        case .login:
            generation &+= 1
            return [.countRelogin]
        case .device:
            breaker = .closed
            return [.recordBreaker(open: false), .countReinitialisation]
        case .reset:
            return []
        }
    }

    /// What the caller of a failed recovery answers.
    enum FailedRecoveryAction: Sendable, Hashable {
        /// The procedure's own error, as it is (a failed re-login or reset).
        case rethrow
        /// The circuit opened for `backoff`: set the gauge; answer "unavailable, retry after
        /// `backoff`".
        case openBreaker(backoff: UInt64)
        /// The circuit opened for `backoff`, and the PIN was refused: give up and answer that;
        /// the PIN is never tried again.
        case openBreakerAndGiveUp(backoff: UInt64)
    }

    /// The running recovery failed at `now`; `pinRejected` says the failure was the token
    /// refusing the PIN.
    mutating func recoveryFailed(now: UInt64, pinRejected: Bool) -> FailedRecoveryAction {
        let recovery = runningRecovery()
        endRecovery()
        guard recovery == .device else { return .rethrow }
        let next: UInt64 = switch breaker {
        case .closed: backoff.lowerBound
        case .open(_, let previous): previous > backoff.upperBound / 2 ? backoff.upperBound : previous * 2
        }
        breaker = .open(until: now &+ next, backoff: next)
        return pinRejected ? .openBreakerAndGiveUp(backoff: next) : .openBreaker(backoff: next)
    }

    /// The persistent session was lost outside a recovery: its session objects are gone, so
    /// no cached handle may be used again.
    mutating func persistentSessionLost() {
        generation &+= 1
    }

    /// The pool stops: no recovery starts any more and waiting reports are answered "not
    /// running"; a recovery already running finishes and reports as usual.
    mutating func shutDown() {
        switch phase {
        case .running: phase = .shutDown(finishing: nil)
        case .recovering(let recovery): phase = .shutDown(finishing: recovery)
        case .shutDown: break
        }
    }

    private func runningRecovery() -> Recovery {
        switch phase {
        case .recovering(let recovery), .shutDown(finishing: .some(let recovery)): return recovery
        case .running, .shutDown(finishing: nil): preconditionFailure("a recovery reported progress, but none was started")
        }
    }

    private mutating func endRecovery() {
        phase = if case .shutDown = phase { .shutDown(finishing: nil) } else { .running }
    }

    // MARK: Login

    /// Why the pool does not log in, or refuses the answer of a login.
    enum LoginRefusal: Sendable, Hashable {
        case pinRejected(PKCS11ReturnValue)
        case pinLocked(finalTry: Bool)
        case unverifiable

        var error: HSMError {
            switch self {
            case .pinRejected(let returnValue): .pinRejected(returnValue)
            case .pinLocked(let finalTry): .pinLocked(finalTry: finalTry)
            case .unverifiable: .loginUnverifiable
            }
        }
    }

    /// Before asking the token anything: a PIN that failed is never tried again.
    func loginRefusal() -> LoginRefusal? {
        if case .rejected(let returnValue) = login { return .pinRejected(returnValue) }
        return nil
    }

    /// With the token's PIN flags: a locked PIN, or one wrong try from locked, is not risked.
    func loginRefusal(userPINLocked: Bool, userPINFinalTry: Bool) -> LoginRefusal? {
        if let refusal = loginRefusal() { return refusal }
        if userPINLocked { return .pinLocked(finalTry: false) }
        if userPINFinalTry { return .pinLocked(finalTry: true) }
        return nil
    }

    /// How `C_Login` answered.
    enum LoginResult: Sendable, Hashable {
        case succeeded
        case alreadyLoggedIn
        /// A `CKR_PIN_*` answer.
        case pinRefused(PKCS11ReturnValue)
    }

    /// `nil` when the login holds; otherwise the error to answer.
    mutating func loginFinished(_ result: LoginResult) -> LoginRefusal? {
        switch result {
        case .succeeded:
            login = .verified
            return nil
        case .alreadyLoggedIn:
            // Another session's login hides a wrong PIN (DESIGN §4): only the pool's own,
            // already verified login may answer this.
            return login == .verified ? nil : .unverifiable
        case .pinRefused(let returnValue):
            login = .rejected(returnValue)
            return .pinRejected(returnValue)
        }
    }
}
