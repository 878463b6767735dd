import Foundation

/// A fault the failover bench injects once, midway through its load (`--fault NAME`). Each
/// names itself in the report; ``all`` is the list `--fault` chooses from — add a fault (a token
/// removed from the pool, say) by appending a type here and to ``all``.
protocol FailoverFault: Sendable {
    /// The `--fault` value and the report's `fault`.
    var name: String { get }
    /// Injects the fault. Called once, at `--fault-at` seconds into the load.
    func inject(into instances: FailoverInstances) async throws
}

/// What a fault can act on: the running `custos serve` instances (the first is the victim of
/// instance faults) and the bench's configuration.
struct FailoverInstances: Sendable {
    let serving: [ServeProcess]
    let configurationPath: String
}

/// `kill -9` of the first instance: its connections reset, its transactions in flight roll back.
struct InstanceKill: FailoverFault {
    var name: String { "instance-kill" }

    func inject(into instances: FailoverInstances) async throws {
        instances.serving[0].kill9()
    }
}

enum FailoverFaults {
    /// The faults `--fault` knows, by name.
    static let all: [any FailoverFault] = [InstanceKill()]

    static func named(_ name: String) -> (any FailoverFault)? { all.first { $0.name == name } }
}
