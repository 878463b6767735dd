public import HSM
public import Logging
import SecureMemory
public import Storage

/// Start-up's check that the token and the database belong together (DESIGN §5): the
/// database records every root key's check value; a token whose keys differ — e.g. one
/// recreated by set-up over a database that outlived it — is refused with the labels and check
/// values that differ, before any call can fail half-way.
public enum RootKeyCheck {
    /// Checks the token's root keys against the database's record; on the first start (nothing
    /// recorded yet) records them.
    ///
    /// Once anything is recorded, root keys on the token that the database never recorded are
    /// left out of what this returns — never used, logged — rather than trusted: the user PIN
    /// can create a token object identical to a root KEK in every attribute but of a value its
    /// holder chose, and the newest KEK version wraps every new tenant key. Only the ceremony
    /// records root keys after the first start. (Root keys cannot be destroyed, so refusing to
    /// start would let such an object, or a rotation interrupted before its record, stop the
    /// service for good.)
    /// - Returns: the token's root keys the database vouches for.
    /// - Throws: ``CustodyError/legacyRootKEKPresent(versions:)`` while the permissive legacy
    ///   KEK is on the token; ``CustodyError/rootKeysDoNotMatch(_:)`` when a recorded key is
    ///   missing or differs; ``CustodyError/rootKeyMissing(_:)`` when no complete recorded set
    ///   of root keys remains.
    @discardableResult
    public static func verify(pool: SessionPool, database: Database, logger: Logger? = nil) async throws -> RootKeyInventory {
        try await custody {
            let inventory = try await RootKeyInventory.read(from: pool)
            let legacy = inventory.legacyKEKVersions
            guard legacy.isEmpty else { throw CustodyError.legacyRootKEKPresent(versions: legacy) }
            let recorded = try await database.withTransaction(context: "read root key check values") { connection in
                try await RootKeyStore.all(on: connection)
            }
            var mismatches = [RootKeyMismatch]()
            for (label, checkValue) in recorded.sorted(by: { $0.key < $1.key }) {
                // A legacy KEK recorded before the migration is gone on purpose.
                if RootKeyInventory.parse(label)?.kind == .legacyKEK { continue }
                let onToken = inventory.entry(label: label)?.checkValue
                if onToken != checkValue {
                    mismatches.append(RootKeyMismatch(label: label, recorded: Hex.encode(checkValue), onToken: onToken.map { Hex.encode($0) }))
                }
            }
            guard mismatches.isEmpty else { throw CustodyError.rootKeysDoNotMatch(mismatches) }
            var trusted = inventory
            if recorded.isEmpty {
                try requireComplete(inventory)
                let entries = inventory.entries.filter { $0.kind != .legacyKEK }.map { (label: $0.label, checkValue: $0.checkValue) }
                let first = try await database.withTransaction(context: "record root key check values") { connection in
                    try await RootKeyStore.recordFirst(entries, on: connection)
                }
                if !first {
                    // Another process made the first record meanwhile: checked against it instead.
                    // Or the function refused these values (an empty check value, say): nothing is
                    // recorded, and checking again would loop (helper-70).
                    guard try await !Self.recorded(in: database).isEmpty else { throw CustodyError.rootKeyNotRecorded(entries.map(\.label)) }
                    return try await verify(pool: pool, database: database, logger: logger)
                }
            } else {
                let ignored = inventory.entries.filter { recorded[$0.label] == nil }.map(\.label)
                if !ignored.isEmpty {
                    logger?.error("root keys on the token that the database never recorded are ignored", metadata: ["labels": "\(ignored)"])
                }
                trusted = RootKeyInventory(entries: inventory.entries.filter { recorded[$0.label] != nil })
                try requireComplete(trusted)
            }
            return trusted
        }
    }

    /// The newest KEK version has every wrapped purpose's KEK, and there is a MAC key.
    private static func requireComplete(_ inventory: RootKeyInventory) throws {
        let newest = max(inventory.newestKEKVersion, 1)
        for purpose in RootKeys.wrappedPurposes where inventory.entry(label: RootKeys.kekLabel(purpose, version: newest)) == nil {
            throw CustodyError.rootKeyMissing(RootKeys.kekLabel(purpose, version: newest))
        }
        guard inventory.newestMACVersion > 0 else { throw CustodyError.rootKeyMissing(RootKeys.macLabel(version: 1)) }
    }

    /// Records the check values of `inventory`'s keys the database has not recorded yet: of
    /// `labels` only (the keys a ceremony made), or of every key when the database has recorded
    /// none yet (the first record of an installation). `database` must be connected as the owner
    /// role (migration 31): the service role can no longer record root keys, or the user PIN and
    /// its password together could make a planted KEK set trusted (helper-68, session 19).
    public static func record(_ inventory: RootKeyInventory, labels: Set<String>? = nil, in database: Database) async throws {
        try await custody {
            try await database.withTransaction(context: "record root key check values") { connection in
                // Waits for transactions storing keys wrapped under the set this one supersedes;
                // those after it wrap under the new set (TenantKeyring.requireNewestRootKEKs).
                try await RootKeyStore.lockExclusive(on: connection)
                let first = try await RootKeyStore.all(on: connection).isEmpty
                let recording = inventory.entries.filter { $0.kind != .legacyKEK && (first || labels?.contains($0.label) ?? true) }
                for entry in recording {
                    try await RootKeyStore.record(label: entry.label, checkValue: entry.checkValue, on: connection)
                }
                // A label recorded already keeps its value: one that differs from the token's (a
                // first record someone else made, helper-69) is an error, not a silent success.
                let recorded = try await RootKeyStore.all(on: connection)
                let differing = recording.filter { recorded[$0.label] != $0.checkValue }.map {
                    RootKeyMismatch(label: $0.label, recorded: recorded[$0.label].map { Hex.encode($0) } ?? "none", onToken: Hex.encode($0.checkValue))
                }
                guard differing.isEmpty else { throw CustodyError.rootKeysDoNotMatch(differing) }
            }
        }
    }

    /// Label → check value of every root key the database recorded.
    public static func recorded(in database: Database) async throws -> [String: [UInt8]] {
        try await custody {
            try await database.withTransaction(context: "read root key check values") { connection in
                try await RootKeyStore.all(on: connection)
            }
        }
    }
}
