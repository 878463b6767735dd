public import Custody
public import HSM
public import PKCS11

/// Why a ceremony step failed. Descriptions name files, indices, labels and check values —
/// never share bytes, key material or PINs — so they are safe to print and to read aloud.
public enum CeremonyError: Error, Sendable, CustomStringConvertible {
    /// A caller mistake (bad threshold, empty operator name, missing option).
    case invalidArgument(String)
    case unsupportedKeyType(String)
    case shamir(ShamirError)
    /// Fewer shares than the threshold: the secret cannot be recovered (and is not guessed).
    case notEnoughShares(have: Int, need: Int)
    /// The share files come from different ceremonies (or disagree on M, N or the keys).
    case mixedCeremonies(first: String, other: String, path: String)
    case inconsistentShareFile(path: String, field: String)
    case duplicateShareIndex(UInt8, path: String)
    /// A share's own check value does not match its bytes: the file was damaged or edited.
    case corruptedShare(path: String, index: UInt8)
    case unreadableShareFile(path: String, reason: String)
    /// The combined secret does not match the check recorded at the split: a share is from
    /// another split, or was forged with a matching check value.
    case secretCheckFailed(ceremony: String)
    /// A key check value differs: `stage` says where (software before import, or the token).
    case checkValueMismatch(label: String, expected: String, actual: String, stage: String)
    case rootKeyAlreadyPresent(String)
    /// `init-token` found a token with this label: a ceremony starts from a fresh token.
    case tokenAlreadyPresent(label: String, serial: String)
    case rootKeyMissing(String)
    /// An output file exists already; ceremony outputs are never overwritten.
    case fileExists(String)
    case fileError(path: String, operation: String, errno: Int32)
    case transcriptUnreadable(path: String, reason: String)
    /// The transcript's chain or MACs fail at `line` (1-based).
    case transcriptBroken(path: String, line: Int, reason: String)
    case pin(PINSourceError)
    case hsm(HSMError)
    /// A direct PKCS#11 call failed (token initialisation, outside the pool).
    case pkcs11(PKCS11Error)
    case custody(CustodyError)

    public var description: String {
        switch self {
        case .invalidArgument(let reason): reason
        case .unsupportedKeyType(let what): "no check-value rule for \(what)"
        case .shamir(let error): error.description
        case .notEnoughShares(let have, let need):
            "\(have) share\(have == 1 ? "" : "s") given, \(need) needed: the root keys cannot be recovered from fewer than the threshold"
        case .mixedCeremonies(let first, let other, let path):
            "\(path) belongs to ceremony \(other), the other shares to ceremony \(first): shares of different ceremonies never combine"
        case .inconsistentShareFile(let path, let field): "\(path) disagrees with the other share files on \(field)"
        case .duplicateShareIndex(let index, let path): "share \(index) is given twice (again in \(path))"
        case .corruptedShare(let path, let index): "share \(index) in \(path) fails its own check value: the file is damaged or was changed"
        case .unreadableShareFile(let path, let reason): "cannot read share file \(path): \(reason)"
        case .secretCheckFailed(let ceremony):
            "the shares of ceremony \(ceremony) do not combine to the recorded secret: one of them is wrong; nothing was imported"
        case .checkValueMismatch(let label, let expected, let actual, let stage):
            "\(label): check value \(actual) (\(stage)) differs from the recorded \(expected)"
        case .rootKeyAlreadyPresent(let label): "\(label) is already on the token: restore goes into a fresh token only"
        case .rootKeyMissing(let label): "\(label) is not on the token"
        case .tokenAlreadyPresent(let label, let serial):
            "a token labelled \(label) exists already (serial \(serial)); a ceremony initialises a fresh token"
        case .fileExists(let path): "\(path) exists already; ceremony outputs are never overwritten"
        case .fileError(let path, let operation, let errno): "\(operation) \(path) failed (errno \(errno))"
        case .transcriptUnreadable(let path, let reason): "cannot read transcript \(path): \(reason)"
        case .transcriptBroken(let path, let line, let reason): "transcript \(path) is broken at line \(line): \(reason)"
        case .pin(let error): error.description
        case .hsm(let error): error.description
        case .pkcs11(let error): error.description
        case .custody(let error): error.description
        }
    }

    /// Presents lower-layer errors as ``CeremonyError``.
    static func wrap(_ error: any Error) -> any Error {
        switch error {
        case let error as CeremonyError: error
        case let error as ShamirError: CeremonyError.shamir(error)
        case let error as HSMError: CeremonyError.hsm(error)
        case let error as CustodyError: CeremonyError.custody(error)
        case let error as PINSourceError: CeremonyError.pin(error)
        case let error as PKCS11Error: CeremonyError.pkcs11(error)
        case let error as PKCS11ModuleError: CeremonyError.hsm(.configuration(error.description))
        default: error
        }
    }
}

/// Runs `body`, presenting lower-layer errors as ``CeremonyError``.
func ceremony<R>(_ body: () async throws -> R) async throws -> R {
    do {
        return try await body()
    } catch {
        throw CeremonyError.wrap(error)
    }
}
