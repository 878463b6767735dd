/// Stops a multi-step change between two of its steps, for crash tests. Every change that takes
/// more than one committed step — a rotation, a re-seal, a biometric migration, an offboarding —
/// calls it with the step's name (`rotation.pendingStored`, `offboarding.keysDestroyed`, ...)
/// where a crash would leave an intermediate state; tests throw from it, and debug builds of
/// `custos` kill themselves there with SIGKILL when `CUSTOS_CRASH_AT` names the step, so a test
/// can prove that start-up reconciliation completes or rolls back what a `kill -9` left.
/// Production passes none.
public struct StepFault: Sendable {
    let body: @Sendable (_ step: String) throws -> Void

    public init(_ body: @escaping @Sendable (_ step: String) throws -> Void) {
        self.body = body
    }

    /// Called on reaching `step`.
    public func reached(_ step: String) throws {
        try body(step)
    }

    /// A typed step hook (`KeyringStep`, `SessionResealJob.Step`, ...) that reaches
    /// `<prefix>.<step>`.
    public func hook<Step>(_ prefix: String) -> @Sendable (Step) throws -> Void {
        { step in try self.reached("\(prefix).\(step)") }
    }
}
