import Composition
import Foundation

/// A fault the failover bench injects once, midway through its load (`--fault NAME`), with the
/// service instances it acts on: each fault starts the instances the load runs against, so a
/// fault that needs a fault-injecting binding (``TokenLoss``) gets instances built with one,
/// in this process, and the release `custos serve` never has a way to inject faults. Add a
/// fault by appending a type here and to ``FailoverFaults/all``.
protocol FailoverFault: Sendable {
    /// The `--fault` value and the report's `fault`.
    static var name: String { get }
    /// Starts the instances; they serve until ``stop()``.
    static func start(_ setting: FailoverSetting) async throws -> Self
    /// host:port of each instance, for the round-robin client.
    var addresses: [String] { get }
    /// Injects the fault. Called once, at `--fault-at` seconds into the load; it may last (a
    /// token stays removed for a while) but ends before the load does.
    func inject() async throws
    /// What the fault measured itself, in milliseconds by name (empty for most faults).
    var measurements: [String: Double] { get }
    func stop() async
}

extension FailoverFault {
    var name: String { Self.name }
    var measurements: [String: Double] { [:] }
}

/// What a fault starts its instances from.
struct FailoverSetting: Sendable {
    /// The configuration as read (its database, token and RPC files).
    let configuration: CustosConfiguration
    /// The bench's copy of it (the per-subject Verify limit raised), for child processes.
    let configurationPath: String
    /// A private 0700 directory for this run, removed afterwards.
    let directory: URL
    /// Seconds the fault lasts, for faults that last (token loss).
    let outageSeconds: Double
}

/// `kill -9` of the first of two `custos serve` processes: its connections reset, its
/// transactions in flight roll back.
struct InstanceKill: FailoverFault {
    static let name = "instance-kill"
    let serving: [ServeProcess]

    static func start(_ setting: FailoverSetting) async throws -> InstanceKill {
        let binary = FailoverBenchCommand.custosBinary()
        let first = try await ServeProcess(binary: binary, config: setting.configurationPath, directory: setting.directory, name: "a")
        do {
            let second = try await ServeProcess(binary: binary, config: setting.configurationPath, directory: setting.directory, name: "b")
            return InstanceKill(serving: [first, second])
        } catch {
            first.stop()
            throw error
        }
    }

    var addresses: [String] { serving.map(\.address) }

    func inject() async throws {
        serving[0].kill9()
    }

    func stop() async {
        for instance in serving { instance.stop() }
    }
}

enum FailoverFaults {
    /// The faults `--fault` knows, by name.
    static let all: [any FailoverFault.Type] = [InstanceKill.self, TokenLoss.self]

    /// Their names, in order, for help and validation (a key path to a static member of an
    /// existential metatype crashes Swift 6.3.1's SILGen).
    static let names: [String] = all.map { fault in fault.name }

    static func named(_ name: String) -> (any FailoverFault.Type)? { all.first { fault in fault.name == name } }
}
