public import PKCS11

/// One configured token for status reports (`custos hsm status`, the Admin RPC's HSM status):
/// where it is routed (``TokenStatus``) and its own pool's sessions and breaker.
public struct TokenHealth: Sendable, Hashable {
    /// The token's label (or `serial …` when selected by serial), never a PIN or a slot.
    public let label: String
    public let modulePath: String
    public let status: TokenStatus
    public let statistics: SessionPoolStatistics
}

extension SessionPool {
    /// Every configured token, the first (this pool's own) first.
    public var tokenHealth: [TokenHealth] {
        zip(tokenPools, tokenStatuses).map { pool, status in
            TokenHealth(label: pool.configuration.token.name, modulePath: pool.configuration.modulePath, status: status, statistics: pool.statistics)
        }
    }
}

extension TokenSelector {
    /// The label as configured, or `serial <serial>`: for reports.
    public var name: String {
        switch self {
        case .label(let label): label
        case .serial(let serial): "serial \(serial)"
        }
    }
}

extension HSMConfiguration {
    /// Each configured token's own single-token configuration, the first token's first: for
    /// reporting on each token when the pool over all of them cannot start.
    public var tokenConfigurations: [HSMConfiguration] {
        var first = self
        first.replicas = []
        return [first] + replicas.map(replicaConfiguration)
    }
}
