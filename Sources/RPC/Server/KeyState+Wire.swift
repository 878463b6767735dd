public import CustosModel

extension KeyState {
    /// The state as the protos spell it. Users never see this spelling: the CLI shows
    /// ``KeyState/rawValue`` (`active`).
    public var wire: Custos_V1_KeyState {
        switch self {
        case .pending: .pending
        case .active: .active
        case .retiring: .retiring
        case .retired: .retired
        case .destroyed: .destroyed
        }
    }

    /// - Returns: `nil` for `KEY_STATE_UNSPECIFIED` and values this build does not know.
    public init?(wire: Custos_V1_KeyState) {
        switch wire {
        case .pending: self = .pending
        case .active: self = .active
        case .retiring: self = .retiring
        case .retired: self = .retired
        case .destroyed: self = .destroyed
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}
