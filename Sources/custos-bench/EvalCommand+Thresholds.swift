public import ArgumentParser
import Foundation
public import TokenizationEvaluation

extension SyntheticEmbeddings.Profile: ExpressibleByArgument {}

extension EvalCommand.Run {
    /// The thresholds for each target FMR and, for the protected scores, how the set falls into
    /// GREEN, AMBER and RED under the service's default thresholds: what a tenant reads to
    /// calibrate on its own data (docs/tokenization.md, "Decision thresholds").
    static func thresholdTable(_ report: ProtectedEvaluation.Report) -> String {
        func rate(_ value: Double) -> String { String(format: "%.3f %%", value * 100) }
        func cell(_ threshold: CalibratedThreshold) -> String {
            let at = threshold.threshold.map { String(format: "%.4f", $0) } ?? "none"
            return "\(at) (FMR \(rate(threshold.fmr)), FNMR \(rate(threshold.fnmr)))"
        }
        var lines = ["thresholds (accept score ≥ t)  raw cosine                                   protected (matching positions / m)"]
        for row in report.thresholds {
            var line = "  FMR ≤ \(String(format: "%g", row.target_fmr))".padding(toLength: 31, withPad: " ", startingAt: 0)
            line += cell(row.raw).padding(toLength: 45, withPad: " ", startingAt: 0) + cell(row.protected)
            if !row.protected.enough_impostors {
                let needed = Int(CalibratedThreshold.impostorsNeeded(for: row.target_fmr).rounded(.up))
                line += "  [\(row.protected.impostors_accepted) impostor pairs above: imprecise; ≥ \(needed) impostor pairs needed]"
            }
            lines.append(line)
        }
        if let shares = report.decision_shares {
            let bounds = String(format: "GREEN ≥ %.4f, AMBER ≥ %.4f", shares.green_threshold, shares.amber_threshold)
            lines.append(
                "default decisions (\(bounds)), protected: genuine \(rate(shares.genuine_green)) GREEN, \(rate(shares.genuine_amber)) AMBER, "
                    + "\(rate(shares.genuine_red)) RED; impostors \(rate(shares.impostor_green)) GREEN, \(rate(shares.impostor_amber)) AMBER"
            )
        }
        return lines.joined(separator: "\n")
    }
}
