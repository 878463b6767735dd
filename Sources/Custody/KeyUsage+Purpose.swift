public import CustosModel
public import HSM

extension KeyPurpose {
    /// What the HSM lets a key of this purpose do. `bio-prf` encrypts only: with DECRYPT false
    /// not even the service can invert the PRF.
    public var usage: KeyUsage? {
        switch self {
        case .bioSeed, .pii, .apiKeyPepper, .webhook: .hmac
        case .bioPRF: .encryptOnly
        case .data: .encryptDecrypt
        case .webhookEd25519: nil
        }
    }

    /// The purposes a new tenant gets at once (webhook keys are made when the tenant asks for a
    /// secret, because the secret is shown to them once).
    public static let createdWithTenant: [KeyPurpose] = [.bioSeed, .bioPRF, .pii, .apiKeyPepper, .data]
}
