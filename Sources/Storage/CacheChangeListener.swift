public import Logging
import Synchronization

/// One LISTEN connection on ``channel`` for every cache that ``CacheChange`` covers (the
/// certificate deny-list and tenant statuses in the authenticator, tenant policies): each
/// notice is handed to the subscribed caches, which forget what it names.
///
/// One shared channel with a typed payload rather than a listener per cache: each listener
/// holds a connection for the life of the process (``Database/maximumListeners``), and these
/// caches share one rule — trust a cached value for its normal lifetime only while the listener
/// is connected, ``unlistenedLifetime`` otherwise.
public final class CacheChangeListener: Sendable {
    /// The NOTIFY channel (database-wide: a notice from another schema on the same database
    /// only makes a cache forget an entry early).
    public static let channel = "custos_cache_change"
    /// How long a cached value is trusted while the listener is down (or never ran, as in
    /// one-shot CLI commands): another instance's change applies here within it.
    public static let unlistenedLifetime = Duration.milliseconds(500)

    let database: Database
    let logger: Logger
    private let listening = Atomic<Bool>(false)
    /// Bumped by every notice and every connect or loss of the listener: a read that began
    /// before a bump must not be cached (it may hold the value from before the change).
    private let generationCounter = Atomic<UInt64>(0)
    /// `nil` means "forget everything" (the listener connected or was lost, or a notice this
    /// version cannot read).
    private let subscribers = Mutex<[@Sendable (CacheChange?) -> Void]>([])

    public init(database: Database, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// Adds a cache that forgets what each change names (`nil`: everything).
    public func subscribe(_ forget: @escaping @Sendable (CacheChange?) -> Void) {
        subscribers.withLock { $0.append(forget) }
    }

    /// Whether the LISTEN connection is in place (so cached values may live their lifetime).
    public var isListening: Bool { listening.load(ordering: .acquiring) }

    /// The current generation: take it before reading the database, and cache the value read
    /// only if it is unchanged afterwards.
    public var generation: UInt64 { generationCounter.load(ordering: .acquiring) }

    /// `lifetime` while listening, at most ``unlistenedLifetime`` otherwise.
    public func lifetime(_ lifetime: Duration) -> Duration {
        isListening ? lifetime : min(lifetime, Self.unlistenedLifetime)
    }

    /// Keeps the LISTEN connection until cancelled, reconnecting with backoff (100 ms doubling
    /// to 5 s, back to 100 ms once connected). The composition root runs it (`custos serve`).
    public func run() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await database.listen(
                    channel: Self.channel,
                    ready: { [self] in
                        forget(nil)
                        listening.store(true, ordering: .releasing)
                    },
                    received: { [self] payload in forget(CacheChange(payload: payload)) }
                )
            } catch {
                if !Task.isCancelled {
                    logger.warning("cache-change listener lost; cached certificates, tenant statuses and policies are re-read every 0.5 s until it is back", metadata: ["error": "\(error)"])
                }
            }
            if listening.exchange(false, ordering: .acquiringAndReleasing) { backoff = .milliseconds(100) }
            forget(nil)
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    func forget(_ change: CacheChange?) {
        _ = generationCounter.add(1, ordering: .releasing)
        for subscriber in subscribers.withLock({ $0 }) { subscriber(change) }
    }
}
