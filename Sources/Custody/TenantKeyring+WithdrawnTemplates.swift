public import CustosModel

// The list of withdrawn template MACs (migration 34) grows with every template removed. An entry
// guards against a copy of its row being put back and compared; once the row's biometric version
// has its `bio-prf` key destroyed, no probe can be tokenized under that version again, so no
// template of it is ever compared and its entries guard nothing.
extension TenantKeyring {
    /// The biometric versions, by tenant, whose `bio-prf` key the HSM's list of key states
    /// records as destroyed — the list, not the database's rows, which the database's writer
    /// could change (a version marked destroyed in its row alone would let its entries go while
    /// its key still compares).
    /// - Throws: ``CustodyError`` (an unreadable list).
    public func destroyedBiometricVersions() async throws -> [TenantID: [Int]] {
        try await custody {
            var versions = [TenantID: [Int]]()
            for entry in try await anchoredStates(fresh: true).destroyed where entry.purpose == .bioPRF {
                versions[entry.tenant, default: []].append(entry.version)
            }
            return versions.mapValues { $0.sorted() }
        }
    }
}
