#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reproducible face-embedding-like data for accuracy tests (DESIGN §6), with a raw-cosine EER
/// near that of real 512-d face embeddings (about 0.5 %) rather than a trivially perfect one.
///
/// The model:
/// - each identity has a centre: d standard normal values scaled to unit length, so centres of
///   different identities have cosine ≈ 0 ± 1/√d (± 0.044 at d = 512);
/// - each sample is `centre + σ·n`, scaled to unit length, where n holds d normal values of
///   variance 1/d (‖n‖ ≈ 1) and σ is the sample's noise level: log-normal around
///   ``Configuration/typicalNoise`` (spread ``Configuration/noiseSpread``), and for a
///   ``Configuration/hardSampleRate`` fraction of samples (pose, age, blur) multiplied by a
///   factor drawn log-uniformly from ``Configuration/hardNoiseFactor``.
///
/// Two samples of one identity then have cosine ≈ 1/√((1+σ₁²)(1+σ₂²)) (≈ 0.6 typically, near 0
/// when either is very hard); samples of different identities have cosine 0 ± 1/√d whatever the
/// noise. With the default configuration (200 identities × 10 samples, d = 512, seed 5) the
/// raw-cosine EER is 0.50 %; seeds 1–6 give 0.14–0.72 % (a few hard samples decide it), and
/// structured Index-of-Max hashing adds 0.01–0.12 points.
public struct SyntheticEmbeddings: Sendable {
    /// The generator's parameters.
    public struct Configuration: Sendable, Hashable {
        /// The number of subjects.
        public var identities: Int
        /// Samples per subject.
        public var samplesPerIdentity: Int
        /// Values per sample.
        public var dimension: Int
        /// Fixes every random draw: the same configuration always gives the same samples.
        public var seed: UInt64
        /// The median noise level σ of an ordinary sample.
        public var typicalNoise = 0.8
        /// The standard deviation of ln σ over ordinary samples.
        public var noiseSpread = 0.25
        /// The fraction of hard samples.
        public var hardSampleRate = 0.005
        /// The range (drawn log-uniformly) by which a hard sample's σ is multiplied.
        public var hardNoiseFactor: ClosedRange<Double> = 2...100

        /// The default noise model, calibrated against real 512-d face embeddings.
        public init(identities: Int = 200, samplesPerIdentity: Int = 10, dimension: Int = 512, seed: UInt64 = 5) {
            self.identities = identities
            self.samplesPerIdentity = samplesPerIdentity
            self.dimension = dimension
            self.seed = seed
        }
    }

    /// What the samples were generated from.
    public let configuration: Configuration
    /// The samples, subject by subject, labelled `subject-0`, `subject-1`, …
    public let embeddings: LabelledEmbeddings

    /// Generates the samples.
    ///
    /// - Precondition: positive counts, `identities × samplesPerIdentity ≥ 2`, and a non-negative
    ///   noise model with `hardNoiseFactor.lowerBound > 0`.
    public init(configuration: Configuration = Configuration()) {
        let c = configuration
        precondition(c.identities > 0 && c.samplesPerIdentity > 0 && c.dimension > 0, "counts must be positive")
        precondition(c.typicalNoise >= 0 && c.noiseSpread >= 0 && (0...1).contains(c.hardSampleRate), "invalid noise model")
        precondition(c.hardNoiseFactor.lowerBound > 0, "the hard-sample factor must be positive")
        var random = SyntheticRandom(seed: c.seed)
        let d = c.dimension
        let noiseScale = 1 / Double(d).squareRoot()
        let logFactors = log(c.hardNoiseFactor.lowerBound)...log(c.hardNoiseFactor.upperBound)
        var labels: [String] = []
        var values: [Float] = []
        labels.reserveCapacity(c.identities * c.samplesPerIdentity)
        values.reserveCapacity(c.identities * c.samplesPerIdentity * d)
        var centre = [Double](repeating: 0, count: d)
        var sample = [Double](repeating: 0, count: d)
        for identity in 0..<c.identities {
            for index in 0..<d { centre[index] = random.normal() }
            Self.normalise(&centre)
            for _ in 0..<c.samplesPerIdentity {
                var sigma = c.typicalNoise * exp(c.noiseSpread * random.normal())
                if random.uniform() < c.hardSampleRate {
                    sigma *= exp(logFactors.lowerBound + (logFactors.upperBound - logFactors.lowerBound) * random.uniform())
                }
                for index in 0..<d { sample[index] = centre[index] + sigma * noiseScale * random.normal() }
                Self.normalise(&sample)
                values.append(contentsOf: sample.lazy.map { Float($0) })
                labels.append("subject-\(identity)")
            }
        }
        self.configuration = configuration
        embeddings = LabelledEmbeddings(dimension: d, labels: labels, values: values)
    }

    /// The samples in the CSV format of ``LabelledEmbeddings``.
    public func csv() -> String { embeddings.csv() }

    private static func normalise(_ values: inout [Double]) {
        let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
        guard norm > 0 else { return }
        for index in values.indices { values[index] /= norm }
    }
}
