public import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
public import Storage

/// Root-KEK rotation: new KEKs with their own shares, then every tenant key version re-wrapped
/// under them (resumable), kept apart from the other ceremony steps because it is the one step
/// that also rewrites the database.
extension KeyCeremony {
    /// What ``rotateRoot(threshold:shares:outputDirectory:transcript:keyring:recordingIn:currentShares:)`` did.
    public struct Rotation: Sendable {
        public let generated: Outcome
        public let newKEKVersion: Int
        public let rewrap: TenantKeyring.RewrapReport
        /// Legacy permissive KEKs destroyed at the end (a migration).
        public let destroyedLegacyKEKs: [String]
    }

    /// New root KEKs (version n + 1, one per wrapped purpose, from the HSM RNG) with their own
    /// new M-of-N shares; then every tenant key version is re-wrapped under them and its row
    /// MAC recomputed. The MAC key is not rotated, so its shares stay those of generate-root.
    ///
    /// The token's KEKs never unwrap an extractable key, so the old KEKs are rebuilt from
    /// `currentShares` (M of the share set that made them: custodians must be present) as
    /// session-only rewrap keys of this process, checked against the token's KCVs, and gone
    /// when it ends. An installation still on the permissive legacy KEK needs no shares: its
    /// blobs are moved off it (the last use of that hole) and it is destroyed at the end.
    /// Old per-purpose KEKs stay on the token (rows of destroyed versions still name them).
    /// - Parameter ownerDatabase: the keyring's database connected as the owner role, which
    ///   alone records root keys (migration 31).
    /// - Throws: ``CeremonyError``; before anything is written when the shares do not rebuild a
    ///   KEK some blob needs.
    public func rotateRoot(
        threshold: Int, shares: Int, outputDirectory: String, transcript: CeremonyTranscript, keyring: TenantKeyring,
        recordingIn ownerDatabase: Database, currentShares: [[String]] = []
    ) async throws -> Rotation {
        try await ceremony {
            try Shamir.validate(threshold: threshold, count: shares)
            let inventory = try await RootKeyInventory.read(from: pool)
            let current = inventory.newestKEKVersion
            guard current > 0 else { throw CeremonyError.rootKeyMissing(RootKeys.kekLabel(.bioSeed, version: 1)) }
            guard inventory.newestMACLabel != nil else { throw CeremonyError.rootKeyMissing(RootKeys.macLabel(version: 1)) }
            let sources = try await RewrapSources.make(pool: pool, inventory: inventory, shareSets: currentShares)
            // Refuse before the new set exists if a blob would be left behind.
            try await keyring.checkRewrapSources(toKEKVersion: current + 1, unwrappingKey: sources.unwrappingKey)
            let next = current + 1
            let layout = Self.keyLayout(kekVersion: next, macVersion: nil)
            let secret = try await random.randomSecret(count: layout.count * Self.keyLength)
            let generated = try await splitImportAndRecord(
                step: "rotate-root", secret: secret, keys: try Self.shareKeys(layout, secret: secret), threshold: threshold, shares: shares,
                outputDirectory: outputDirectory, transcript: transcript, details: ["previousKEKVersion": "\(current)"]
            )
            try stepFault?.reached("rotate-root.transcribed")
            // Recorded before any row moves: a resume re-wraps only under KEKs the database
            // recorded, never under a newer set planted on the token with the user PIN meanwhile.
            try await keyring.recordRootKeys(labels: Set(generated.keys.map(\.label)), in: ownerDatabase)
            try stepFault?.reached("rotate-root.keysRecorded")
            let (report, destroyed) = try await rewrap(toKEKVersion: next, sources: sources, transcript: transcript, keyring: keyring)
            return Rotation(generated: generated, newKEKVersion: next, rewrap: report, destroyedLegacyKEKs: destroyed)
        }
    }

    /// Re-wraps every tenant key version under the newest root KEK set the database recorded
    /// (``rotateRoot(threshold:shares:outputDirectory:transcript:keyring:recordingIn:currentShares:)``
    /// records its new set before moving any row): the second half of a rotation, run again
    /// after an interruption (rows already moved are left alone). Needs the same
    /// `currentShares` as the interrupted run.
    ///
    /// A set on the token that the database never recorded is never a target — the user PIN can
    /// plant one — unless `currentShares` include that set's own share files (a rotation
    /// interrupted between importing its KEKs and recording them): rebuilt from them with
    /// matching check values, it is recorded first. Root keys cannot be destroyed, so this is
    /// how such a set is adopted; without its shares it stays unused.
    public func resumeRewrap(
        transcript: CeremonyTranscript, keyring: TenantKeyring, recordingIn ownerDatabase: Database, currentShares: [[String]] = []
    ) async throws -> (kekVersion: Int, report: TenantKeyring.RewrapReport, destroyedLegacyKEKs: [String]) {
        try await ceremony {
            let inventory = try await RootKeyInventory.read(from: pool)
            let sources = try await RewrapSources.make(pool: pool, inventory: inventory, shareSets: currentShares)
            var recorded = try await keyring.recordedRootKeys()
            let proven = inventory.entries.filter { recorded[$0.label] == nil && sources.provenLabels.contains($0.label) }.map(\.label)
            if !proven.isEmpty {
                try await keyring.recordRootKeys(labels: Set(proven), in: ownerDatabase)
                recorded = try await keyring.recordedRootKeys()
            }
            let trusted = inventory.completeKEKVersions.filter { version in
                RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: version) }
                    .allSatisfy { recorded[$0] != nil && recorded[$0] == inventory.entry(label: $0)?.checkValue }
            }
            guard let newest = trusted.last else {
                let complete = inventory.completeKEKVersions.last ?? 1
                throw CustodyError.rootKeyNotRecorded(RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: complete) })
            }
            let (report, destroyed) = try await rewrap(toKEKVersion: newest, sources: sources, transcript: transcript, keyring: keyring)
            return (newest, report, destroyed)
        }
    }

    private func rewrap(
        toKEKVersion version: Int, sources: RewrapSources, transcript: CeremonyTranscript, keyring: TenantKeyring
    ) async throws -> (TenantKeyring.RewrapReport, [String]) {
        let report: TenantKeyring.RewrapReport
        do {
            report = try await keyring.rewrapTenantKeys(
                toKEKVersion: version, unwrappingKey: sources.unwrappingKey, acceptsFirstFormat: sources.migratesLegacy,
                actor: "ceremony:\(participants.operatorName)"
            )
        } catch {
            await sources.destroy(on: pool)
            throw error
        }
        // Every row names the new KEKs; the session-only rewrap keys (gone with the process
        // anyway), the legacy KEK and the transcript's `rewrap` line remain.
        try stepFault?.reached("rewrap.rowsDone")
        await sources.destroy(on: pool)
        // Every blob now names `version`: the permissive legacy KEK has nothing left to unwrap.
        let destroyed = try await sources.destroyLegacyKEKs(on: pool)
        let inventory = try await RootKeyInventory.read(from: pool)
        var draft = draft("rewrap", token: try await pool.tokenInfo())
        draft.details = [
            "kekVersion": "\(version)", "tenants": "\(report.tenants)", "rewrapped": "\(report.rewrapped)",
            "alreadyCurrent": "\(report.alreadyCurrent)", "withoutBlob": "\(report.withoutBlob)", "resealed": "\(report.resealed)",
            "destroyedLegacyKEKs": destroyed.joined(separator: ","),
        ]
        try await transcript.append(draft, macKey: inventory.newestMACLabel, pool: pool)
        return (report, destroyed)
    }
}
