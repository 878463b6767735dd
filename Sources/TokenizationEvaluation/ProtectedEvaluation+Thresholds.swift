extension ProtectedEvaluation {
    /// The raw-cosine and the protected threshold for one target FMR, side by side.
    public struct Thresholds: Sendable, Hashable, Codable {
        public let target_fmr: Double
        public let raw: CalibratedThreshold
        public let protected: CalibratedThreshold

        /// Both thresholds for each target, in the order given.
        static func at(_ targets: [Double], raw: VerificationMetrics, protected: VerificationMetrics) -> [Thresholds] {
            targets.map {
                Thresholds(
                    target_fmr: $0,
                    raw: CalibratedThreshold(targetFalseMatchRate: $0, metrics: raw),
                    protected: CalibratedThreshold(targetFalseMatchRate: $0, metrics: protected)
                )
            }
        }
    }
}
