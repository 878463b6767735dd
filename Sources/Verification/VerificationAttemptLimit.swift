import Foundation

/// How many 1:1 verifications one subject may have in a window (fixed windows: a burst at a
/// window's edge can reach twice the count). Every decision is an oracle answer — green / amber
/// / red and a confidence — and hill-climbing towards an enrolled face needs thousands of them
/// against one subject; a candidate needs a handful.
public struct VerificationAttemptLimit: Sendable, Hashable {
    public let attempts: Int
    public let window: Duration

    /// 20 attempts a subject per 24 hours.
    public static let `default` = VerificationAttemptLimit(attempts: 20, window: .seconds(86_400))

    public init(attempts: Int, window: Duration) {
        precondition(attempts > 0 && window > .zero, "a limit allows at least one attempt in a positive window")
        self.attempts = attempts
        self.window = window
    }

    /// The refusal of an attempt over the limit in the window that started at `windowStart`.
    func refusal(windowStart: Date) -> VerificationError {
        .tooManyAttempts(limit: attempts, window: window, retryAfter: windowStart.addingTimeInterval(Double(window.components.seconds)))
    }
}
