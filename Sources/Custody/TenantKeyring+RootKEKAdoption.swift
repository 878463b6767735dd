import HSM
import Storage

// A root-KEK rotation while the keyring runs: `custos ceremony rotate-root` records a new KEK
// set in the database, then re-wraps the rows it finds. A running instance must wrap what it
// makes afterwards under the new set too, or its new keys stay under the superseded KEKs —
// whose shares may be why the rotation happened (attack review, session 19).
extension TenantKeyring {
    /// Runs `body` — which wraps new key material under ``rootKeys`` and stores it in a
    /// transaction that calls ``requireNewestRootKEKs(_:on:)`` — and, if a newer root KEK set
    /// was recorded meanwhile, adopts it (``adoptRecordedRootKEKs()``) and runs `body` again.
    func underNewestRootKEKs<R>(_ body: () async throws -> R) async throws -> R {
        do {
            return try await body()
        } catch CustodyError.rootKEKRotated {
            try await adoptRecordedRootKEKs()
            return try await body()
        }
    }

    /// Moves new wrapping to the newest root KEK set the database recorded, once the token's
    /// root keys are checked against the record as at start-up (``RootKeyCheck``): a set the
    /// database never recorded is never adopted, and a token that lacks the recorded set
    /// refuses rather than making keys other instances cannot unwrap.
    public func adoptRecordedRootKEKs() async throws {
        let newest = RootKeys(inventory: try await RootKeyCheck.verify(pool: pool, database: database, logger: logger)).kekVersion
        let previous = rootKeyState.withLock { keys -> Int? in
            guard newest > keys.kekVersion else { return nil }
            defer { keys = RootKeys(kekVersion: newest, macVersion: keys.macVersion) }
            return keys.kekVersion
        }
        if let previous {
            logger.notice("root KEK set recorded by a rotation adopted: new tenant keys are wrapped under it", metadata: [
                "from": "v\(previous)", "to": "v\(newest)",
            ])
        }
    }

    /// In the transaction that stores `records`: refuses (``CustodyError/rootKEKRotated(recorded:)``)
    /// a blob wrapped under an older KEK set than the newest complete one recorded, holding the
    /// record shared until the transaction ends (``RootKeyStore/lockShared(on:)``), so a
    /// ceremony that records a newer set meanwhile waits for this commit and then finds these
    /// rows to re-wrap.
    static func requireNewestRootKEKs(_ records: [KeyVersionRecord], on connection: DatabaseTransaction) async throws {
        guard let oldest = records.filter({ $0.wrappedKey != nil }).map(\.rootKEKVersion).min() else { return }
        try await RootKeyStore.lockShared(on: connection)
        let recorded = Set(try await RootKeyStore.all(on: connection).keys)
        if let newest = RootKeyInventory.completeKEKVersions(among: recorded).last, newest > oldest {
            throw CustodyError.rootKEKRotated(recorded: newest)
        }
    }
}
