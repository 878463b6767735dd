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
        /// The token format evaluated (`wide` or `compact`, DESIGN §6 step 4), or
        /// `shape` for a shape no format has (`--positions --bits --symbols`).
        public let token_format: String
        /// m, q and b of the tokens evaluated, and their packed size in bytes.
        public let positions: Int
        public let symbols_per_position: Int
        public let bits_per_value: Int
        public let token_bytes: Int
        /// Mean wall time of one tokenization here (projection and one `C_Encrypt` of m blocks,
        /// sequential, projections cached): the shape's cost, for comparison within one run.
        public let tokenization_us: Double
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
            case samples, identities, dimension, projection, token_format, positions, symbols_per_position, bits_per_value, token_bytes, tokenization_us, genuine_pairs, impostor_pairs, raw_eer, protected_eer, dsys
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
    ///
    /// With a `shape`, the tokens have that shape instead of `format`'s (the same projection and
    /// PRF, m blocks in one `C_Encrypt`): how candidate formats are compared before one is made.
    public static func run(
        _ embeddings: LabelledEmbeddings, pool: SessionPool, kind: IndexOfMaxHashing.ProjectionKind, format: BiometricTokenFormat = .default,
        shape: BiometricTokenShape? = nil,
        falseMatchRates: [Double] = CalibratedThreshold.defaultTargets, decisionThresholds: (green: Double, amber: Double)? = nil
    ) async throws -> Report {
        let tokenizer = BiometricTokenizer(pool: pool, keys: EvaluationKeys(versions: [1, 2], format: format), kind: kind)
        let tokenShape = shape ?? format.shape
        var vectors = [FeatureVector]()
        var first = [[UInt32]]()
        var second = [[UInt32]]()
        // The projections are derived on the first call of each version: not part of the cost.
        if embeddings.count > 0 {
            let warm = try embeddings.featureVector(at: 0)
            for version in [1, 2] { _ = try await tokenizer.values(of: warm, tenant: tenant, version: version, shape: tokenShape) }
        }
        let clock = ContinuousClock()
        let start = clock.now
        for index in 0..<embeddings.count {
            let vector = try embeddings.featureVector(at: index)
            vectors.append(vector)
            first.append(try await tokenizer.values(of: vector, tenant: tenant, version: 1, shape: tokenShape))
            second.append(try await tokenizer.values(of: vector, tenant: tenant, version: 2, shape: tokenShape))
        }
        let elapsed = (clock.now - start).components
        let tokenizationMicroseconds = (Double(elapsed.seconds) * 1e6 + Double(elapsed.attoseconds) / 1e12) / Double(max(2 * embeddings.count, 1))
        let labels = embeddings.labels
        let positions = Double(tokenShape.positions)
        let raw = ScorePairs(labels: labels) { i, j in vectors[i].cosineSimilarity(to: vectors[j]) ?? 0 }
        let protected = ScorePairs(labels: labels) { i, j in Double(equalValues(first[i], first[j])) / positions }
        let rawMetrics = try VerificationMetrics(genuine: raw.genuine, impostor: raw.impostor)
        let protectedMetrics = try VerificationMetrics(genuine: protected.genuine, impostor: protected.impostor)
        // Tokens of the same samples under the keys of two versions.
        let crossing = ScorePairs.crossing(labels: labels) { i, j in Double(equalValues(first[i], second[j])) / positions }
        let unlinkability = try Unlinkability(mated: crossing.genuine, nonMated: crossing.impostor, range: 0...1)
        let renewal = (0..<first.count).map { Double(equalValues(first[$0], second[$0])) / positions }
        func det(_ metrics: VerificationMetrics) -> [[Double]] {
            metrics.detCurve(maxPoints: 400).map { [$0.falseMatchRate, $0.falseNonMatchRate] }
        }
        return Report(
            samples: embeddings.count, identities: Set(labels).count, dimension: embeddings.dimension, projection: kind.rawValue,
            token_format: shape == nil || shape == format.shape ? format.name : "shape",
            positions: tokenShape.positions, symbols_per_position: tokenShape.symbolsPerPosition, bits_per_value: tokenShape.bitsPerValue,
            token_bytes: tokenShape.byteCount, tokenization_us: tokenizationMicroseconds,
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

    /// Positions where two value lists agree (one shape, so one length). Over unsafe buffers so
    /// the loop vectorises: a sweep scores millions of pairs of up to 8,192 values.
    static func equalValues(_ left: [UInt32], _ right: [UInt32]) -> Int {
        precondition(left.count == right.count, "values of one shape")
        return left.withUnsafeBufferPointer { a in
            right.withUnsafeBufferPointer { b in
                var count = 0
                for index in 0..<a.count { count &+= a[index] == b[index] ? 1 : 0 }
                return count
            }
        }
    }
}
