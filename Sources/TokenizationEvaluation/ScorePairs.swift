/// Genuine and impostor scores over every pair of a labelled set, scored by the caller.
public struct ScorePairs: Sendable {
    /// Scores of pairs with equal labels (mated).
    public var genuine: [Double]
    /// Scores of pairs with different labels (non-mated).
    public var impostor: [Double]

    /// Scores already computed.
    public init(genuine: [Double] = [], impostor: [Double] = []) {
        self.genuine = genuine
        self.impostor = impostor
    }

    /// Every unordered pair of one set: `score(i, j)` for all `i < j`; genuine when
    /// `labels[i] == labels[j]`, impostor otherwise.
    public init<Label: Hashable>(labels: [Label], score: (_ first: Int, _ second: Int) throws -> Double) rethrows {
        self.init()
        for first in labels.indices {
            for second in (first + 1)..<labels.count {
                let value = try score(first, second)
                if labels[first] == labels[second] { genuine.append(value) } else { impostor.append(value) }
            }
        }
    }

    /// Every ordered pair across two template sets made from the same samples (for example under
    /// two keys, for ``Unlinkability``): `score(i, j)` compares template i of the first set with
    /// template j of the second; mated (``genuine``) when the labels are equal. Pairs of a sample
    /// with itself (`i == j`) are left out unless `includingSameSample`.
    public static func crossing<Label: Hashable>(
        labels: [Label], includingSameSample: Bool = false, score: (_ first: Int, _ second: Int) throws -> Double
    ) rethrows -> ScorePairs {
        var pairs = ScorePairs()
        for first in labels.indices {
            for second in labels.indices where includingSameSample || first != second {
                let value = try score(first, second)
                if labels[first] == labels[second] { pairs.genuine.append(value) } else { pairs.impostor.append(value) }
            }
        }
        return pairs
    }
}
