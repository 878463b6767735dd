public import CustosModel
public import Logging
public import PKCS11
public import UnixSignals

extension CustosRuntime {
    /// How a command wants the runtime.
    public struct Options: Sendable {
        /// When the runtime stops.
        public enum Lifetime: Sendable {
            /// When the body returns or throws (every command but `serve`).
            case body
            /// When the group ends: a signal in ``Options/gracefulShutdownSignals``, or a service
            /// ending; the body runs beside the services (`serve`).
            case services
        }

        public var logger: Logger
        /// Refuse a token whose root keys the database does not know (``RootKeyCheck``). Only
        /// `ceremony rotate-root`, which migrates and records them, turns it off.
        public var verifyRootKeys = true
        /// A module already loaded (`hsm status` reports on the same one; fault-injection tests
        /// use a private copy); `nil` loads the configured module path.
        public var module: PKCS11Module?
        public var lifetime: Lifetime = .body
        /// Signals that shut the group down gracefully (`serve`: SIGTERM, SIGINT).
        public var gracefulShutdownSignals: [UnixSignal] = []
        /// Crash tests only: called at each step of multi-step changes (``StepFault``); the
        /// runtime wires it into every such change that has no hook of its own.
        public var stepFault: StepFault?

        public init(
            logger: Logger, verifyRootKeys: Bool = true, module: PKCS11Module? = nil,
            lifetime: Lifetime = .body, gracefulShutdownSignals: [UnixSignal] = [], stepFault: StepFault? = nil
        ) {
            self.stepFault = stepFault
            self.logger = logger
            self.verifyRootKeys = verifyRootKeys
            self.module = module
            self.lifetime = lifetime
            self.gracefulShutdownSignals = gracefulShutdownSignals
        }
    }
}
