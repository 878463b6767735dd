import PKCS11

/// The recovery procedures: ``RecoveryStateMachine`` decides whether one runs and what its end
/// means; these run the PKCS#11 calls, always after in-flight calls have drained (SoftHSM
/// crashes when `C_Logout`, `C_CloseAllSessions` or `C_Finalize` race with them, DESIGN §4).
extension SessionPool {
    /// What a worker does after a failed call (see ``SessionWorker/perform(_:_:)``).
    func afterFailure(_ recovery: RecoveryClass, seenGeneration: UInt64, seenEpoch: UInt64, retried: Bool) -> RecoveryStateMachine.FailureAction {
        self.recovery.read { $0.callFailed(recovery, seenGeneration: seenGeneration, seenEpoch: seenEpoch, retried: retried) }
    }

    /// Fails fast while the circuit is open; once the pause is over, the caller tries recovery.
    func checkBreaker() throws {
        guard recovery.breakerOpen else { return }
        switch recovery.read({ $0.admit(now: monotonicNanoseconds()) }) {
        case .proceed:
            return
        case .unavailable(let retryAfter):
            throw HSMError.unavailable(reason: "HSM circuit open after a device error", retryAfterNanoseconds: retryAfter)
        case .probe(let seenEpoch):
            try recoverDevice(seenEpoch: seenEpoch, cause: nil)
        }
    }

    /// After a login-lost error (or an operation left active in the persistent session): drain,
    /// log out, replace the persistent session with a fresh one and log in, start a new
    /// generation (every cached handle is re-resolved). Skipped when another worker already did it.
    func recoverLogin(seenGeneration: UInt64, cause: PKCS11Error?) throws {
        guard try shouldStart(recovery.begin { $0.loginLost(seenGeneration: seenGeneration) }) else { return }
        logger.warning("HSM login lost; logging in again", metadata: ["cause": "\(cause.map(String.init(describing:)) ?? "requested")"])
        try runRecovery {
            try persistent.withLock { persistent in
                if let session = persistent {
                    // Closed, not kept: an operation a failed call left active in it stays active
                    // (SoftHSM clears it by nothing else), and the logout already took its session
                    // objects. Safe to close: no call is in flight while the gate is drained.
                    try? session.logout()
                    try? session.close()
                    persistent = nil
                }
                _ = try persistentSession(&persistent)
            }
        }
    }

    /// After a device error: drain, finalize, initialise again, select the token anew, log in.
    /// On failure the circuit opens for a growing pause, and calls answer "unavailable" at once.
    func recoverDevice(seenEpoch: UInt64, cause: PKCS11Error?) throws {
        guard try shouldStart(recovery.begin { $0.deviceLost(seenEpoch: seenEpoch, now: monotonicNanoseconds()) }) else { return }
        logger.warning("HSM device lost; re-initialising", metadata: ["cause": "\(cause.map(String.init(describing:)) ?? "breaker")"])
        try runRecovery {
            persistent.withLock { $0 = nil }
            try? module.finalize()
            try module.initialize()
            let token = try module.findToken(configuration.token)
            slot.withLock { $0 = token.slot }
            try persistent.withLock { persistent in _ = try persistentSession(&persistent) }
        }
    }

    /// Closes every session of the token for real (`C_CloseAllSessions`) once in-flight calls
    /// have drained, then opens and logs in afresh. For maintenance; cached handles are re-resolved.
    public func resetSessions() async throws {
        try await submit { _ in
            guard try self.shouldStart(self.recovery.begin { $0.resetRequested() }) else { return }
            try self.runRecovery {
                self.persistent.withLock { $0 = nil }
                try self.module.closeAllSessions(slot: try self.currentSlot())
                try self.persistent.withLock { persistent in _ = try self.persistentSession(&persistent) }
            }
            self.logger.notice("HSM sessions reset")
        }
    }

    /// Logs out and in again for real once in-flight calls have drained (e.g. after a PIN change).
    public func relogin() async throws {
        let seen = generation
        try await submit { _ in
            try self.recoverLogin(seenGeneration: seen, cause: nil)
        }
    }

    /// Whether the caller runs the recovery itself; throws what the machine answers instead.
    private func shouldStart(_ action: RecoveryStateMachine.RecoveryAction) throws -> Bool {
        switch action {
        case .start:
            return true
        case .alreadyDone:
            return false
        case .unavailable(let retryAfter):
            throw HSMError.unavailable(reason: "HSM recovery pending", retryAfterNanoseconds: retryAfter)
        case .notRunning:
            throw HSMError.notRunning
        case .awaitRecovery:
            preconditionFailure("RecoveryLock.begin returns only once no recovery runs")
        }
    }

    /// Runs the started recovery's `procedure` once in-flight calls have drained, and reports
    /// its end to the machine whatever happens, so that the machine never stays "recovering".
    private func runRecovery(_ procedure: () throws -> Void) throws {
        let effects: [RecoveryStateMachine.Effect]
        do {
            effects = try gate.drain {
                recovery.step { $0.recoveryDrained() }
                try procedure()
                // Still drained: no call runs with the old generation once the gate reopens.
                return recovery.step { $0.recoverySucceeded() }
            }
        } catch {
            let action = recovery.step { $0.recoveryFailed(now: monotonicNanoseconds(), pinRejected: error.isPINRejection) }
            switch action {
            case .rethrow:
                throw error
            case .openBreaker(let backoff), .openBreakerAndGiveUp(let backoff):
                metrics.breakerOpen.record(1)
                logger.error("HSM re-initialisation failed", metadata: ["error": "\(error)", "retry_in_ms": "\(backoff / 1_000_000)"])
                if case .openBreakerAndGiveUp = action { throw error }
                throw HSMError.unavailable(reason: "HSM re-initialisation failed: \(error)", retryAfterNanoseconds: backoff)
            }
        }
        record(effects)
    }

    private func record(_ effects: [RecoveryStateMachine.Effect]) {
        for effect in effects {
            switch effect {
            case .countRelogin:
                metrics.relogins.increment()
            case .countReinitialisation:
                metrics.reinitializations.increment()
                logger.info("HSM re-initialised")
            case .recordBreaker(let open):
                metrics.breakerOpen.record(open ? 1 : 0)
            }
        }
    }
}

extension Error {
    /// The token refused the PIN (the pool then never presents it again).
    fileprivate var isPINRejection: Bool {
        if let error = self as? HSMError, case .pinRejected = error { true } else { false }
    }
}
