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
///
/// ``Configuration/realistic(identities:samplesPerIdentity:dimension:seed:)`` adds what the
/// default leaves out and decision thresholds depend on (docs/tokenization.md, "Decision
/// thresholds"): identities in ``Configuration/groups`` groups whose centres share a direction
/// (``Configuration/groupShare`` of their variance), so impostor cosines have a slightly positive
/// mean and a heavier upper tail from look-alikes of the same group, as face models show across
/// sex, age and origin; a noise level per identity (``Configuration/identityNoiseSpread``), so
/// some people are harder to match than others; and more, milder hard samples.
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
        /// The standard deviation of ln σ between identities (0: every identity has the same
        /// median noise).
        public var identityNoiseSpread = 0.0
        /// The number of groups identities fall in (identity i in group i mod groups).
        public var groups = 1
        /// The share of a centre's variance along its group's direction (0: centres independent,
        /// impostor cosines centred on 0).
        public var groupShare = 0.0

        /// The default noise model, calibrated against real 512-d face embeddings.
        public init(identities: Int = 200, samplesPerIdentity: Int = 10, dimension: Int = 512, seed: UInt64 = 5) {
            self.identities = identities
            self.samplesPerIdentity = samplesPerIdentity
            self.dimension = dimension
            self.seed = seed
        }

        /// A profile whose protected scores have the tails of real face embeddings (InsightFace
        /// on LFW): about a quarter of genuine pairs below 0.30 and 1 % below 0.15, impostor
        /// cosines 0.03 ± 0.08 with a tail reaching 0.3 at FMR 1e-4 (docs/tokenization.md).
        public static func realistic(identities: Int = 200, samplesPerIdentity: Int = 10, dimension: Int = 512, seed: UInt64 = 5) -> Configuration {
            var configuration = Configuration(identities: identities, samplesPerIdentity: samplesPerIdentity, dimension: dimension, seed: seed)
            configuration.typicalNoise = 0.62
            configuration.noiseSpread = 0.3
            configuration.identityNoiseSpread = 0.2
            configuration.hardSampleRate = 0.015
            configuration.hardNoiseFactor = 1.5...4
            configuration.groups = 6
            configuration.groupShare = 0.25
            return configuration
        }
    }

    /// The named noise models.
    public enum Profile: String, Sendable, CaseIterable {
        /// The default: calibrated on the raw-cosine EER (the accuracy targets use it).
        case standard
        /// ``Configuration/realistic(identities:samplesPerIdentity:dimension:seed:)``: the
        /// score tails decision thresholds are derived from.
        case realistic

        /// This profile's configuration of the given size.
        public func configuration(identities: Int, samplesPerIdentity: Int, dimension: Int, seed: UInt64) -> Configuration {
            switch self {
            case .standard: Configuration(identities: identities, samplesPerIdentity: samplesPerIdentity, dimension: dimension, seed: seed)
            case .realistic: .realistic(identities: identities, samplesPerIdentity: samplesPerIdentity, dimension: dimension, seed: seed)
            }
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
        precondition(c.groups > 0 && (0..<1).contains(c.groupShare) && c.identityNoiseSpread >= 0, "invalid identity model")
        var random = SyntheticRandom(seed: c.seed)
        let d = c.dimension
        let noiseScale = 1 / Double(d).squareRoot()
        let logFactors = log(c.hardNoiseFactor.lowerBound)...log(c.hardNoiseFactor.upperBound)
        var labels: [String] = []
        var values: [Float] = []
        labels.reserveCapacity(c.identities * c.samplesPerIdentity)
        values.reserveCapacity(c.identities * c.samplesPerIdentity * d)
        // Extra draws only when the model uses them, so the default profile's samples stay the
        // same as before these options existed.
        var groupDirections: [[Double]] = []
        if c.groupShare > 0 {
            for _ in 0..<c.groups {
                var direction = (0..<d).map { _ in random.normal() }
                Self.normalise(&direction)
                groupDirections.append(direction)
            }
        }
        let ownWeight = (1 - c.groupShare).squareRoot(), groupWeight = c.groupShare.squareRoot()
        var centre = [Double](repeating: 0, count: d)
        var sample = [Double](repeating: 0, count: d)
        for identity in 0..<c.identities {
            for index in 0..<d { centre[index] = random.normal() }
            Self.normalise(&centre)
            if !groupDirections.isEmpty {
                let direction = groupDirections[identity % c.groups]
                for index in 0..<d { centre[index] = ownWeight * centre[index] + groupWeight * direction[index] }
                Self.normalise(&centre)
            }
            let identityNoise = c.identityNoiseSpread > 0 ? c.typicalNoise * exp(c.identityNoiseSpread * random.normal()) : c.typicalNoise
            for _ in 0..<c.samplesPerIdentity {
                var sigma = identityNoise * exp(c.noiseSpread * random.normal())
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
