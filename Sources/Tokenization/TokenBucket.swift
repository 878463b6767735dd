/// A tenant's tokenization budget: `perSecond` sustained, up to `burst` at once.
public struct TokenizationBudget: Sendable, Hashable {
    public let perSecond: Double
    public let burst: Double

    public init(perSecond: Double, burst: Double) {
        self.perSecond = max(0, perSecond)
        self.burst = max(1, burst)
    }

    /// `perMinute` sustained, bursts of up to 5 seconds' worth (at least one).
    public init(perMinute: Int) {
        let perSecond = Double(perMinute) / 60
        self.init(perSecond: perSecond, burst: max(1, (perSecond * 5).rounded(.down)))
    }
}

/// A token bucket's arithmetic, without clocks or storage: the limiter reads the shared bucket
/// and the database clock, applies these, and writes the bucket back.
public struct TokenBucket: Sendable, Hashable {
    public private(set) var tokens: Double
    /// When `tokens` was last brought up to date, in seconds.
    public private(set) var at: Double

    public init(tokens: Double, at: Double) {
        self.tokens = tokens
        self.at = at
    }

    /// Adds what `budget` earned since ``at``, up to its burst. A clock that went backwards
    /// (a database fail-over) earns nothing.
    public mutating func refill(to now: Double, budget: TokenizationBudget) {
        tokens = min(budget.burst, tokens + max(0, now - at) * budget.perSecond)
        at = max(at, now)
    }

    /// Takes up to `count` whole tokens.
    /// - Returns: how many were taken (0 when the bucket holds less than one).
    public mutating func take(upTo count: Int) -> Int {
        let taken = max(0, min(count, Int(tokens.rounded(.down))))
        tokens -= Double(taken)
        return taken
    }

    /// Seconds until the bucket holds one whole token again (0 when it does).
    public func secondsUntilNextToken(_ budget: TokenizationBudget) -> Double {
        guard tokens < 1 else { return 0 }
        guard budget.perSecond > 0 else { return .infinity }
        return (1 - tokens) / budget.perSecond
    }
}
