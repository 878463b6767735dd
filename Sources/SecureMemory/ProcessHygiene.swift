internal import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// Keeps raw features, PINs and key shares out of core files (DESIGN §6, §11): no core dumps
/// (`RLIMIT_CORE` 0), and the process not dumpable (`PR_SET_DUMPABLE` 0), which also stops
/// other processes of the same user from attaching with ptrace and reading memory. Lives in the
/// leaf target beside ``SecretBytes``, so the service, the tools and the key ceremony use it
/// without depending on the HSM or Tokenization.
public enum ProcessHygiene {
    /// What ``lockDown()`` achieved.
    public struct State: Sendable, Equatable, Codable {
        public let coreLimitZero: Bool
        public let dumpable: Bool
    }

    /// Applies both settings; call once at start-up, before any feature is read.
    @discardableResult
    public static func lockDown() -> State {
        var limit = rlimit(rlim_cur: 0, rlim_max: 0)
        _ = setrlimit(Int32(RLIMIT_CORE.rawValue), &limit)
        _ = custos_set_dumpable(0)
        return current
    }

    /// The settings as the kernel reports them now.
    public static var current: State {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_CORE.rawValue), &limit)
        return State(coreLimitZero: limit.rlim_cur == 0, dumpable: custos_get_dumpable() != 0)
    }
}
