public import PKCS11
public import Synchronization

/// Injects failures at the binding boundary: chosen functions answer a chosen `CK_RV` with a
/// given probability, instead of calling SoftHSM.
public final class RandomFaults: PKCS11FaultInjector {
    private let plan: [PKCS11Function: [(PKCS11ReturnValue, Double)]]
    private let generator = Mutex(SystemRandomNumberGenerator())
    public let injected = Mutex([PKCS11ReturnValue: Int]())

    public init(_ plan: [PKCS11Function: [(PKCS11ReturnValue, Double)]]) { self.plan = plan }

    public func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        guard let choices = plan[function] else { return nil }
        let roll = generator.withLock { Double.random(in: 0 ..< 1, using: &$0) }
        var threshold = 0.0
        for (returnValue, probability) in choices {
            threshold += probability
            if roll < threshold {
                injected.withLock { $0[returnValue, default: 0] += 1 }
                return returnValue
            }
        }
        return nil
    }
}

