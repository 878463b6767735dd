/// A stored template failed its MAC check (``TemplateSealing``): it was not written by Custos
/// for this subject — copied from another subject's row, changed in place, or left without a
/// MAC after every template was sealed. Never the caller's mistake: the RPC answers DATA_LOSS
/// and the log names the tenant and version (never the subject's reference).
public enum TemplateIntegrityError: Error, Sendable, Equatable, CustomStringConvertible {
    case notAuthentic(keyVersion: Int)

    public var description: String {
        switch self {
        case .notAuthentic(let version):
            "the subject's stored template (biometric version \(version)) failed its integrity check and was not compared: an officer must look; the subject re-enrols afterwards"
        }
    }
}
