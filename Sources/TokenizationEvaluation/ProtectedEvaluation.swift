public import Tokenization
public import CustosModel
public import HSM

/// ISO/IEC 19795-1-style evaluation of the whole protected pipeline against raw cosine, on a
/// labelled set, with fixed imported keys (``EvaluationKeys``) so the figures are deterministic:
/// EER and FNMR at FMR 1e-3 / 1e-4 over all genuine and impostor pairs, a DET curve for each,
/// the Gomez-Barrero D↔sys between tokens of the same samples under two keys, and renewability
/// (the old token against the new one of the same sample after a key change).
public enum ProtectedEvaluation {
    /// What `custos eval --output json` prints. Rates are fractions, not percent.
    public struct Report: Sendable, Codable {
        public let samples: Int
        public let identities: Int
        public let dimension: Int
        public let projection: String
        /// The token format evaluated (`wide` or `compact`, DESIGN §6 step 4).
        public let token_format: String
        public let genuine_pairs: Int
        public let impostor_pairs: Int
        public let raw_eer: Double
        public let protected_eer: Double
        public let raw_fnmr_at_fmr_1e_3: Double
        public let protected_fnmr_at_fmr_1e_3: Double
        public let raw_fnmr_at_fmr_1e_4: Double
        public let protected_fnmr_at_fmr_1e_4: Double
        /// D↔sys: mated = same subject under keys v1 and v2, non-mated = different subjects.
        public let dsys: Double
        /// Scores of each sample's v1 token against its own v2 token (renewability: these should
        /// look like impostor scores).
        public let renewability_mean: Double
        public let renewability_max: Double
        public let protected_impostor_mean: Double
        /// DET curves as [FMR, FNMR] points.
        public let raw_det: [[Double]]
        public let protected_det: [[Double]]
        /// The threshold for each FMR asked for (`--fmr`), raw and protected.
        public let thresholds: [Thresholds]
        /// Protected scores under the decision thresholds asked for (the service's defaults).
        public let decision_shares: DecisionShares?

        enum CodingKeys: String, CodingKey {
            case samples, identities, dimension, projection, token_format, genuine_pairs, impostor_pairs, raw_eer, protected_eer, dsys
            case raw_fnmr_at_fmr_1e_3 = "raw_fnmr_at_fmr_1e-3", protected_fnmr_at_fmr_1e_3 = "protected_fnmr_at_fmr_1e-3"
            case raw_fnmr_at_fmr_1e_4 = "raw_fnmr_at_fmr_1e-4", protected_fnmr_at_fmr_1e_4 = "protected_fnmr_at_fmr_1e-4"
            case renewability_mean, renewability_max, protected_impostor_mean, raw_det, protected_det
            case thresholds, decision_shares
        }
    }

    /// The tenant the evaluation tokens are made for (a fixed, reserved id).
    public static let tenant = TenantID("00000000-0000-4000-8000-00000000e7a1")!

    /// Runs the evaluation through the real HSM pipeline (seed HMAC and PRF in the HSM), with
    /// the thresholds for each of `falseMatchRates` and, given decision thresholds, the shares of
    /// protected comparisons in GREEN, AMBER and RED.
    public static func run(
        _ embeddings: LabelledEmbeddings, pool: SessionPool, kind: IndexOfMaxHashing.ProjectionKind, format: BiometricTokenFormat = .default,
        falseMatchRates: [Double] = CalibratedThreshold.defaultTargets, decisionThresholds: (green: Double, amber: Double)? = nil
    ) async throws -> Report {
        let tokenizer = BiometricTokenizer(pool: pool, keys: EvaluationKeys(versions: [1, 2], format: format), kind: kind)
        var vectors = [FeatureVector]()
        var first = [BiometricToken]()
        var second = [BiometricToken]()
        for index in 0..<embeddings.count {
            let vector = try embeddings.featureVector(at: index)
            vectors.append(vector)
            first.append(try await tokenizer.tokenize(vector, tenant: tenant, version: 1))
            second.append(try await tokenizer.tokenize(vector, tenant: tenant, version: 2))
        }
        let labels = embeddings.labels
        let raw = ScorePairs(labels: labels) { i, j in vectors[i].cosineSimilarity(to: vectors[j]) ?? 0 }
        let protected = ScorePairs(labels: labels) { i, j in first[i].score(against: first[j]) }
        let rawMetrics = try VerificationMetrics(genuine: raw.genuine, impostor: raw.impostor)
        let protectedMetrics = try VerificationMetrics(genuine: protected.genuine, impostor: protected.impostor)
        // Across keys the version check of `score` would hide everything; compare values.
        let crossing = ScorePairs.crossing(labels: labels) { i, j in
            Double(first[i].matchingPositions(with: second[j])) / Double(BiometricToken.length)
        }
        let unlinkability = try Unlinkability(mated: crossing.genuine, nonMated: crossing.impostor, range: 0...1)
        let renewal = (0..<first.count).map { Double(first[$0].matchingPositions(with: second[$0])) / Double(BiometricToken.length) }
        func det(_ metrics: VerificationMetrics) -> [[Double]] {
            metrics.detCurve(maxPoints: 400).map { [$0.falseMatchRate, $0.falseNonMatchRate] }
        }
        return Report(
            samples: embeddings.count, identities: Set(labels).count, dimension: embeddings.dimension, projection: kind.rawValue,
            token_format: format == .compact ? "compact" : "wide",
            genuine_pairs: raw.genuine.count, impostor_pairs: raw.impostor.count,
            raw_eer: rawMetrics.equalErrorRate.rate, protected_eer: protectedMetrics.equalErrorRate.rate,
            raw_fnmr_at_fmr_1e_3: rawMetrics.falseNonMatchRate(atFalseMatchRate: 1e-3).falseNonMatchRate,
            protected_fnmr_at_fmr_1e_3: protectedMetrics.falseNonMatchRate(atFalseMatchRate: 1e-3).falseNonMatchRate,
            raw_fnmr_at_fmr_1e_4: rawMetrics.falseNonMatchRate(atFalseMatchRate: 1e-4).falseNonMatchRate,
            protected_fnmr_at_fmr_1e_4: protectedMetrics.falseNonMatchRate(atFalseMatchRate: 1e-4).falseNonMatchRate,
            dsys: unlinkability.systemLinkability,
            renewability_mean: renewal.reduce(0, +) / Double(max(renewal.count, 1)), renewability_max: renewal.max() ?? 0,
            protected_impostor_mean: protected.impostor.reduce(0, +) / Double(max(protected.impostor.count, 1)),
            raw_det: det(rawMetrics), protected_det: det(protectedMetrics),
            thresholds: Thresholds.at(falseMatchRates, raw: rawMetrics, protected: protectedMetrics),
            decision_shares: decisionThresholds.map { DecisionShares(green: $0.green, amber: $0.amber, metrics: protectedMetrics) }
        )
    }
}
