/// Decides, before a PKCS#11 call is made, whether it should fail instead.
///
/// This is the binding boundary at which fault tests inject session-fatal, login-lost or
/// device errors: SoftHSM itself crashes when sessions are really closed or the library is
/// finalized with calls in flight, so faults are simulated here and real teardown happens
/// only after the pool has drained its calls. Production code never installs one.
public protocol PKCS11FaultInjector: Sendable {
    /// The return value to answer instead of calling `function`, or `nil` to make the real call.
    func fault(for function: PKCS11Function) -> PKCS11ReturnValue?
}
