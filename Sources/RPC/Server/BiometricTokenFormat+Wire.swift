public import CustosModel

extension BiometricTokenFormat {
    /// The format as the protos spell it. Users never see this spelling: the CLI shows
    /// ``BiometricTokenFormat/name`` (`quaternary`).
    public var wire: Custos_V1_BiometricTokenFormat {
        switch self {
        case .wide: .wide
        case .compact: .compact
        case .quaternary: .quaternary
        }
    }

    /// - Returns: `nil` for `BIOMETRIC_TOKEN_FORMAT_UNSPECIFIED` and values this build does not know.
    public init?(wire: Custos_V1_BiometricTokenFormat) {
        switch wire {
        case .wide: self = .wide
        case .compact: self = .compact
        case .quaternary: self = .quaternary
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}
