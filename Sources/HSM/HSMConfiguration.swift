public import PKCS11

/// Everything the session pool needs to reach its token, and the replica tokens it may spread
/// work over (``replicas``; see ``SessionPool``'s "Several tokens").
public struct HSMConfiguration: Sendable {
    /// Absolute path of the PKCS#11 module (Debian's SoftHSM2: `/usr/lib/softhsm/libsofthsm2.so`).
    public var modulePath: String
    /// `C_Initialize`'s `pReserved` string for modules that need one (NSS softokn); see
    /// `PKCS11Module.initArguments`.
    public var initArguments: String?
    /// Which token: by label or serial, never by slot number.
    public var token: TokenSelector
    /// Where the user PIN comes from.
    public var userPIN: PINSource
    /// Worker threads, each owning one session. Capped by the token's session limit.
    public var workers: Int
    /// The most workers a pool starts (each a thread owning a session; HSMs cap sessions far
    /// lower).
    public static let maximumWorkers = 256
    /// How long a request may wait for a free session before ``HSMError/exhausted(waitedNanoseconds:maxSessions:)``.
    public var acquireTimeout: Duration
    /// First and longest pause between attempts to re-initialise a lost device.
    public var recoveryBackoff: ClosedRange<Duration>
    /// Most session objects (unwrapped tenant keys) the pool keeps on the token; past it the
    /// least recently used is destroyed and unwrapped again on its next use. Token objects
    /// (root KEKs, the audit MAC key) are not counted. Default ``defaultMaxCachedKeys``.
    public var maxCachedKeys: Int
    /// Further tokens holding the same root keys (empty: one token, the default). Each gets a
    /// pool of its own with the settings above; ``SessionPool`` routes work over all of them.
    public var replicas: [TokenEndpoint]
    /// How often a token taken out of service after a device or session error is probed
    /// (one RNG call through its own pool, whose breaker paces re-initialisation).
    public var tokenProbeInterval: Duration

    /// 1,000: real HSMs cap session objects in the low thousands per token or partition, and
    /// the cap is shared with every other process logged in to it (the `custos` CLI, a second
    /// instance); at five unwrapped keys per busy tenant this keeps ~200 tenants hot, and a
    /// miss costs one unwrap (docs/benchmarks.md, "Tenant scale").
    public static let defaultMaxCachedKeys = 1_000

    public init(
        modulePath: String,
        token: TokenSelector,
        userPIN: PINSource,
        workers: Int = 2,
        acquireTimeout: Duration = .seconds(2),
        recoveryBackoff: ClosedRange<Duration> = .milliseconds(50) ... .seconds(30),
        initArguments: String? = nil,
        maxCachedKeys: Int = defaultMaxCachedKeys,
        replicas: [TokenEndpoint] = [],
        tokenProbeInterval: Duration = .milliseconds(250)
    ) {
        self.modulePath = modulePath
        self.initArguments = initArguments
        self.token = token
        self.userPIN = userPIN
        self.workers = workers
        self.acquireTimeout = acquireTimeout
        self.recoveryBackoff = recoveryBackoff
        self.maxCachedKeys = maxCachedKeys
        self.replicas = replicas
        self.tokenProbeInterval = tokenProbeInterval
    }
}

extension Duration {
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(seconds, 0)) * 1_000_000_000 + UInt64(max(attoseconds, 0) / 1_000_000_000)
    }
}
