public import CustosModel
import Synchronization

/// Counts data-plane key uses in memory; ``KeyUseRecorder`` moves the counts into the audit log.
/// The hot path pays one relaxed atomic load and one increment of a dictionary entry under a
/// lock (held for that increment only); nothing else happens per call.
///
/// Memory: one entry per distinct ``KeyUse`` seen since the last successful flush (about 100
/// bytes each), whatever the number of calls. Counts a failed flush could not write are merged
/// back and kept for the next one: never dropped.
public final class KeyUseCounter: Sendable {
    private let counts = Mutex([KeyUse: Int64]())
    private let recording = Atomic<Bool>(true)

    public init() {}

    /// Whether uses are counted (on by default; the benchmarks turn it off to measure the cost).
    public var isRecording: Bool {
        get { recording.load(ordering: .relaxed) }
        set { recording.store(newValue, ordering: .relaxed) }
    }

    /// Counts one use.
    public func record(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, _ operation: KeyUse.Operation, _ outcome: KeyUse.Outcome) {
        add(KeyUse(tenant: tenant, purpose: purpose, version: version, operation: operation, outcome: outcome), 1)
    }

    /// Runs `body` (the key use) and counts it: a success if it returns, a failure if it throws
    /// (the error is rethrown as it is).
    public func counting<R>(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, _ operation: KeyUse.Operation, _ body: () async throws -> R
    ) async throws -> R {
        do {
            let result = try await body()
            record(tenant, purpose, version: version, operation, .success)
            return result
        } catch {
            record(tenant, purpose, version: version, operation, .failure)
            throw error
        }
    }

    /// The same for a call that resolves the key version itself: `body` sets `version` once it
    /// is known (it starts as `requested`, or 0: a failure before resolution counts under it).
    public func counting<R>(
        _ tenant: TenantID, _ purpose: KeyPurpose, requested: Int?, _ operation: KeyUse.Operation,
        _ body: (_ version: inout Int) async throws -> R
    ) async throws -> R {
        var version = requested ?? 0
        do {
            let result = try await body(&version)
            record(tenant, purpose, version: version, operation, .success)
            return result
        } catch {
            record(tenant, purpose, version: version, operation, .failure)
            throw error
        }
    }

    func add(_ use: KeyUse, _ count: Int64) {
        guard recording.load(ordering: .relaxed) else { return }
        counts.withLock { $0[use, default: 0] += count }
    }

    /// The counts so far, leaving the counter empty (a flush takes them).
    public func take() -> [KeyUse: Int64] {
        counts.withLock { counts in
            let taken = counts
            counts.removeAll(keepingCapacity: true)
            return taken
        }
    }

    /// Puts back counts a flush could not write, added to what was counted meanwhile (so
    /// nothing is lost; even with recording off).
    public func restore(_ taken: [KeyUse: Int64]) {
        guard !taken.isEmpty else { return }
        counts.withLock { counts in
            for (use, count) in taken { counts[use, default: 0] += count }
        }
    }

    /// Counts not yet flushed (tests and the recorder's log line).
    public var pending: [KeyUse: Int64] { counts.withLock { $0 } }
}
