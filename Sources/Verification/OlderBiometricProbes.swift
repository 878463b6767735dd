public import CustosModel

/// During a biometric rotation's overlap: the older key versions a subject may still be
/// enrolled under, and a way to get the probe's token under one of them.
///
/// The core never sees features, so the composition root supplies `probe`, which tokenizes the
/// same features again under the version asked for. It is called only when a comparison needs
/// it (a subject with no template under the active version, or a 1:N gallery of an older
/// version that is not empty): each call is one more use of the tenant's PRF, counted against
/// its tokenization budget like any other.
public struct OlderBiometricProbes: Sendable {
    /// Older versions still matching (retiring inside their window), newest first; never the
    /// active version.
    public let versions: [Int]
    let tokenize: @Sendable (Int) async throws -> BiometricToken

    /// - Parameters:
    ///   - versions: the live older versions, newest first.
    ///   - probe: the same features' token under the version passed.
    public init(versions: [Int], probe: @escaping @Sendable (Int) async throws -> BiometricToken) {
        self.versions = versions
        tokenize = probe
    }

    /// No overlap: only the active version matches (the probe's own).
    public static let none = OlderBiometricProbes(versions: []) { version in
        throw VerificationError.invalidArgument(field: "key_version", reason: "no older biometric version \(version) is in overlap")
    }

    /// The probe's token under `version`.
    /// - Throws: whatever tokenizing throws (budget, custody), or
    ///   ``VerificationError/invalidArgument(field:reason:)`` when the token came back under
    ///   another version (it would be compared with the wrong template).
    func probe(_ version: Int) async throws -> BiometricToken {
        let token = try await tokenize(version)
        guard token.keyVersion == version else {
            throw VerificationError.invalidArgument(field: "key_version", reason: "probe made under v\(token.keyVersion), not v\(version)")
        }
        return token
    }
}
