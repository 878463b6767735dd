public import CustosModel

extension KeyPurpose {
    /// The purpose as the protos spell it (one mapping for the server and the CLI). Users never
    /// see this spelling: the CLI shows ``KeyPurpose/rawValue`` (`bio-seed`).
    public var wire: Custos_V1_KeyPurpose {
        switch self {
        case .bioSeed: .bioSeed
        case .bioPRF: .bioPrf
        case .pii: .pii
        case .apiKeyPepper: .apikeyPepper
        case .webhook: .webhook
        case .webhookEd25519: .webhookEd25519
        case .data: .data
        }
    }

    /// - Returns: `nil` for `KEY_PURPOSE_UNSPECIFIED` and values this build does not know.
    public init?(wire: Custos_V1_KeyPurpose) {
        switch wire {
        case .bioSeed: self = .bioSeed
        case .bioPrf: self = .bioPRF
        case .pii: self = .pii
        case .apikeyPepper: self = .apiKeyPepper
        case .webhook: self = .webhook
        case .webhookEd25519: self = .webhookEd25519
        case .data: self = .data
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}
