import Custody
public import CustosModel
import Foundation
public import HSM
public import Logging
public import PKCS11
import SecureMemory

/// The key ceremony (DESIGN §11), run locally against the HSM: generate the root keys from the
/// HSM RNG and split them at once into M-of-N custodian shares, restore them into a fresh token,
/// verify the token's check values, rotate the root KEK. Every step appends a MAC'd line to the
/// transcript. Key material exists outside the HSM only in ``SecretBytes`` (locked, wiped on
/// release) and, as shares, in the share files.
public struct KeyCeremony: Sendable {
    public static let toolVersion = "custos-ceremony/1"
    /// Every root key is 32 bytes: AES-256 for the KEK, a 256-bit HMAC key for the MAC key.
    public static let keyLength = 32

    public let pool: SessionPool
    public let participants: CeremonyParticipants
    /// SHA-256 of the configuration the step ran with (hex), recorded in the transcript.
    public let configHash: String
    let random: any CeremonyRandomSource
    let logger: Logger
    /// Crash tests only: reached between the committed steps of a root-KEK rotation
    /// (`rotate-root.sharesWritten`, `rotate-root.keysImported`, `rotate-root.transcribed`,
    /// `rotate-root.keysRecorded`, `rewrap.rowsDone`; the rows' own steps are the keyring's).
    let stepFault: StepFault?

    /// - Parameter random: where key material and Shamir coefficients come from; the HSM RNG
    ///   unless a test passes its own.
    ///   `stepFault`: crash tests only (``StepFault``); production passes none.
    public init(
        pool: SessionPool, participants: CeremonyParticipants, configHash: String,
        random: (any CeremonyRandomSource)? = nil, logger: Logger, stepFault: StepFault? = nil
    ) {
        self.pool = pool
        self.participants = participants
        self.configHash = configHash
        self.random = random ?? HSMRandomSource(pool: pool)
        self.logger = logger
        self.stepFault = stepFault
    }

    // MARK: init-token

    /// Initialises a fresh token (SO PIN and user PIN from files or the environment, never argv)
    /// and writes the transcript's first line, which carries no MAC yet: the token has no root
    /// MAC key; the next step's MAC'd line covers it through the hash chain.
    /// - Throws: ``CeremonyError/tokenAlreadyPresent(label:serial:)`` when the label is taken.
    @discardableResult
    public static func initToken(
        module: PKCS11Module, label: String, securityOfficerPIN: PINSource, userPIN: PINSource,
        participants: CeremonyParticipants, configHash: String, transcript: CeremonyTranscript
    ) async throws -> TokenInfo {
        let token = try provisionToken(module: module, label: label, securityOfficerPIN: securityOfficerPIN, userPIN: userPIN)
        try await recordInitToken(token, module: module, participants: participants, configHash: configHash, transcript: transcript)
        return token
    }

    /// The token half of ``initToken(module:label:securityOfficerPIN:userPIN:participants:configHash:transcript:)``.
    public static func provisionToken(module: PKCS11Module, label: String, securityOfficerPIN: PINSource, userPIN: PINSource) throws -> TokenInfo {
        do {
            let soPIN = try securityOfficerPIN.read()
            let pin = try userPIN.read()
            switch try TokenProvisioning.initializeToken(module: module, label: label, securityOfficerPIN: soPIN, userPIN: pin) {
            case .created(let created): return created
            case .alreadyPresent(let existing): throw CeremonyError.tokenAlreadyPresent(label: existing.label, serial: existing.serialNumber)
            }
        } catch {
            throw CeremonyError.wrap(error)
        }
    }

    /// The transcript half of ``initToken(module:label:securityOfficerPIN:userPIN:participants:configHash:transcript:)``.
    public static func recordInitToken(
        _ token: TokenInfo, module: PKCS11Module, participants: CeremonyParticipants, configHash: String, transcript: CeremonyTranscript
    ) async throws {
        var draft = CeremonyTranscript.Draft(
            step: "init-token", operatorName: participants.operatorName, witnesses: participants.witnesses,
            tokenLabel: token.label, tokenSerial: token.serialNumber, configHash: configHash
        )
        draft.details = ["module": module.path, "userPINInitialized": String(token.isUserPINInitialized)]
        try await transcript.append(draft, macKey: nil, pool: nil)
    }

    // MARK: generate-root

    /// What ``generateRoot(threshold:shares:outputDirectory:transcript:kekVersion:macVersion:)`` made.
    public struct Outcome: Sendable {
        public let ceremonyID: String
        public let sharePaths: [String]
        /// The keys as the token reports them (label, CKA_ID, CKA_CHECK_VALUE).
        public let keys: [CeremonyTranscriptEntry.Key]
        public let entry: CeremonyTranscriptEntry
    }

    /// Generates the root keys — one root KEK per wrapped key purpose and the root MAC key,
    /// 32 bytes each from the HSM RNG — splits their concatenation into `shares` shares with
    /// threshold `threshold` (one share set for all of them), writes one share file per
    /// custodian, imports every key (non-extractable; each KEK with its pinned unwrap template)
    /// and checks the token's KCVs against the ones in the share files. The shares are written
    /// before the import: a key is never on the token without its backup.
    /// - Throws: ``CeremonyError``; ``CeremonyError/rootKeyAlreadyPresent(_:)`` when the token
    ///   has any of the keys.
    public func generateRoot(
        threshold: Int, shares: Int, outputDirectory: String, transcript: CeremonyTranscript,
        kekVersion: Int = 1, macVersion: Int = 1
    ) async throws -> Outcome {
        try await ceremony {
            try Shamir.validate(threshold: threshold, count: shares)
            let inventory = try await RootKeyInventory.read(from: pool)
            let layout = Self.keyLayout(kekVersion: kekVersion, macVersion: macVersion)
            for (label, _) in layout where inventory.entry(label: label) != nil {
                throw CeremonyError.rootKeyAlreadyPresent(label)
            }
            let secret = try await random.randomSecret(count: layout.count * Self.keyLength)
            return try await splitImportAndRecord(
                step: "generate-root", secret: secret, keys: try Self.shareKeys(layout, secret: secret), threshold: threshold, shares: shares,
                outputDirectory: outputDirectory, transcript: transcript, details: [:]
            )
        }
    }

    /// The labels and key types of one share set: every wrapped purpose's KEK of `kekVersion`,
    /// then (when `macVersion` is given) the root MAC key.
    static func keyLayout(kekVersion: Int, macVersion: Int?) -> [(label: String, keyType: KeyType)] {
        RootKeys.wrappedPurposes.map { (RootKeys.kekLabel($0, version: kekVersion), KeyType.aes) }
            + (macVersion.map { [(RootKeys.macLabel(version: $0), KeyType.genericSecret)] } ?? [])
    }

    /// The share-file entries for `layout`, each key at its offset in `secret`, with its KCV.
    static func shareKeys(_ layout: [(label: String, keyType: KeyType)], secret: SecretBytes) throws -> [ShareFile.Key] {
        try layout.enumerated().map { index, item in
            let slot = ShareFile.Key(label: item.label, keyType: item.keyType, offset: index * keyLength, length: keyLength, checkValue: [])
            let value = ShareSet.slice(secret, slot)
            return ShareFile.Key(
                label: item.label, keyType: item.keyType, offset: index * keyLength, length: keyLength,
                checkValue: try KeyCheckValue.compute(value, keyType: item.keyType)
            )
        }
    }

    // MARK: restore

    /// Rebuilds the keys of one share set into this token: the set is checked (one ceremony,
    /// distinct indices, at least M, every share's own check value), combined, checked against
    /// the recorded secret check value and KCVs, imported, and the token's KCVs checked again.
    /// Run once per share set (after a root-KEK rotation: the generate-root set, then each
    /// rotate-root set).
    /// - Throws: ``CeremonyError``; ``CeremonyError/rootKeyAlreadyPresent(_:)`` when the token has
    ///   any of the set's keys.
    public func restore(sharePaths: [String], transcript: CeremonyTranscript) async throws -> Outcome {
        try await ceremony {
            let set = try ShareSet(paths: sharePaths)
            let secret = try set.combine()
            guard let header = set.header else { throw CeremonyError.notEnoughShares(have: 0, need: 2) }
            // The escrow key is never a token object: its shares open escrowed seeds instead.
            guard !header.keys.contains(where: \.isEscrowKey) else {
                throw CeremonyError.invalidArgument("these are shares of the escrow key: restore Ed25519 webhook keys with `ceremony restore-webhook-keys`")
            }
            // A legacy permissive KEK is never imported again (it would reopen the hole that
            // per-purpose KEKs close); rotate-root takes it from these shares as a session-only
            // rewrap key instead.
            let restorable = header.keys.filter { RootKeyInventory.parse($0.label)?.kind != .legacyKEK }
            let skipped = header.keys.filter { RootKeyInventory.parse($0.label)?.kind == .legacyKEK }.map(\.label)
            let imported = try await importKeys(secret: secret, keys: restorable)
            let token = try await pool.tokenInfo()
            var draft = draft("restore", token: token)
            draft.ceremonyID = header.ceremonyID
            draft.keys = imported
            draft.threshold = header.threshold
            draft.shareCount = header.shares
            draft.shares = set.files.map { .init(index: $0.file.header.index, file: Self.fileName($0.path), checkValue: $0.file.header.shareCheckValue) }
            draft.details = ["sourceTokenLabel": header.token.label, "sourceTokenSerial": header.token.serial]
            if !skipped.isEmpty { draft.details["notImportedLegacyKEKs"] = skipped.joined(separator: ",") }
            let entry = try await transcript.append(draft, macKey: try await RootKeyInventory.read(from: pool).newestMACLabel, pool: pool)
            logger.notice("root keys restored from shares", metadata: ["ceremony": "\(header.ceremonyID)", "keys": "\(imported.map(\.label))"])
            return Outcome(ceremonyID: header.ceremonyID, sharePaths: sharePaths, keys: imported, entry: entry)
        }
    }

    // MARK: verify

    /// One root key's recorded check value against the token's.
    public struct Comparison: Sendable, Codable, Hashable {
        public let label: String
        public let expected: String?
        public let actual: String?
        public var matches: Bool { expected != nil && expected == actual }
    }

    /// The check values recorded for each label in a transcript (the latest entry naming it),
    /// after checking the transcript's chain and MACs.
    /// - Throws: ``CeremonyError/transcriptBroken(path:line:reason:)`` for a broken transcript.
    public func expectedCheckValues(transcript: CeremonyTranscript) async throws -> [String: String] {
        try await ceremony {
            let verification = try await transcript.verify(pool: pool)
            if let line = verification.firstBadLine ?? (verification.problem != nil ? 0 : nil) {
                throw CeremonyError.transcriptBroken(path: transcript.path, line: line, reason: verification.problem ?? "")
            }
            var expected = [String: String]()
            for entry in try transcript.entries() {
                for key in entry.keys { expected[key.label] = key.checkValue }
            }
            return expected
        }
    }

    /// The check values a share file records (its own check value is verified on reading).
    public static func expectedCheckValues(shareFile path: String) throws -> [String: String] {
        let file = try ShareFile.read(from: path)
        return Dictionary(uniqueKeysWithValues: file.header.keys.map { ($0.label, $0.checkValue.lowercased()) })
    }

    /// Compares the token's root keys with `expected` (label → hex KCV); appends the result to
    /// `transcript` when one is given. Keys on the token that `expected` does not name are
    /// listed with no expected value (not a failure).
    public func verify(expected: [String: String], transcript: CeremonyTranscript?) async throws -> [Comparison] {
        try await ceremony {
            let inventory = try await RootKeyInventory.read(from: pool)
            var comparisons = expected.keys.sorted().map { label in
                Comparison(label: label, expected: expected[label], actual: inventory.entry(label: label).map { Hex.encode($0.checkValue) })
            }
            for entry in inventory.entries where expected[entry.label] == nil {
                comparisons.append(Comparison(label: entry.label, expected: nil, actual: Hex.encode(entry.checkValue)))
            }
            if let transcript {
                let token = try await pool.tokenInfo()
                var draft = draft("verify", token: token)
                draft.keys = inventory.entries.filter { expected[$0.label] != nil }.map {
                    .init(label: $0.label, id: Hex.encode($0.id), checkValue: Hex.encode($0.checkValue))
                }
                let failures = comparisons.filter { $0.expected != nil && !$0.matches }.map(\.label)
                draft.details = ["result": failures.isEmpty ? "all match" : "MISMATCH", "mismatched": failures.joined(separator: ",")]
                try await transcript.append(draft, macKey: inventory.newestMACLabel, pool: pool)
            }
            return comparisons
        }
    }

    // MARK: Shared steps

    /// Splits, writes the share files, imports, checks, records. `secret` holds `keys` at their offsets.
    func splitImportAndRecord(
        step: String, secret: SecretBytes, keys: [ShareFile.Key], threshold: Int, shares: Int,
        outputDirectory: String, transcript: CeremonyTranscript, details: [String: String]
    ) async throws -> Outcome {
        let token = try await pool.tokenInfo()
        let (ceremonyID, files, paths) = try await splitAndWrite(
            secret: secret, keys: keys, threshold: threshold, shares: shares, outputDirectory: outputDirectory, token: token
        )
        try stepFault?.reached("\(step).sharesWritten")
        let imported = try await importKeys(secret: secret, keys: keys)
        try stepFault?.reached("\(step).keysImported")
        var draft = draft(step, token: token)
        draft.ceremonyID = ceremonyID
        draft.keys = imported
        draft.threshold = threshold
        draft.shareCount = shares
        draft.shares = zip(files, paths).map { .init(index: $0.header.index, file: Self.fileName($1), checkValue: $0.header.shareCheckValue) }
        draft.details = details
        let entry = try await transcript.append(draft, macKey: try await RootKeyInventory.read(from: pool).newestMACLabel, pool: pool)
        logger.notice("root keys split into shares and imported", metadata: [
            "step": "\(step)", "ceremony": "\(ceremonyID)", "threshold": "\(threshold)", "shares": "\(shares)",
        ])
        return Outcome(ceremonyID: ceremonyID, sharePaths: paths, keys: imported, entry: entry)
    }

    /// Splits `secret` M-of-N, checks that the first M and the last M shares give it back, and
    /// writes one share file per custodian (refusing before writing anything if any exists).
    func splitAndWrite(
        secret: SecretBytes, keys: [ShareFile.Key], threshold: Int, shares: Int, outputDirectory: String, token: TokenInfo
    ) async throws -> (ceremonyID: String, files: [ShareFile], paths: [String]) {
        let ceremonyID = UUID().uuidString.lowercased()
        let split = try await Shamir.split(secret, threshold: threshold, count: shares, random: random)
        // Before anything is written: the first M and the last M shares give the secret back.
        for subset in [Array(split.prefix(threshold)), Array(split.suffix(threshold))] {
            guard try Shamir.combine(subset) == secret else { throw CeremonyError.secretCheckFailed(ceremony: ceremonyID) }
        }
        let secretCheck = ShareFile.secretCheckValue(ceremonyID: ceremonyID, secret: secret)
        let createdAt = ISO8601DateFormatter().string(from: Date())
        let files = split.map { share in
            ShareFile(header: .init(
                format: ShareFile.format, ceremonyID: ceremonyID, createdAt: createdAt, threshold: threshold, shares: shares,
                index: Int(share.index),
                shareCheckValue: ShareFile.shareCheckValue(ceremonyID: ceremonyID, threshold: threshold, count: shares, share: share),
                secretCheckValue: secretCheck, keys: keys, token: .init(label: token.label, serial: token.serialNumber)
            ), share: share)
        }
        let directory = URL(fileURLWithPath: outputDirectory)
        let paths = files.map {
            directory.appendingPathComponent("custos-share-\(ceremonyID.prefix(8))-\($0.header.index)-of-\(shares).json").path
        }
        // Refuse before writing anything if any output exists: never a half-written set.
        for path in paths where PrivateFile.exists(path) { throw CeremonyError.fileExists(path) }
        for (file, path) in zip(files, paths) { try file.write(to: path) }
        return (ceremonyID, files, paths)
    }

    /// Imports each key of `secret` as a private, sensitive, non-extractable, non-modifiable,
    /// non-copyable, non-destroyable token object with a random CKA_ID, and checks the token's
    /// CKA_CHECK_VALUE against the recorded one. A mismatch (an HSM that computes check values
    /// another way) stops the step; root keys cannot be destroyed, so the keys imported so far
    /// stay on that token: initialise a fresh one.
    func importKeys(secret: SecretBytes, keys: [ShareFile.Key]) async throws -> [CeremonyTranscriptEntry.Key] {
        var templates = [(key: ShareFile.Key, template: [Attribute], id: [UInt8])]()
        for key in keys {
            guard key.length == Self.keyLength, let keyType = key.pkcs11KeyType, let parsed = RootKeyInventory.parse(key.label) else {
                throw CeremonyError.unsupportedKeyType("\(key.label) (\(key.keyType), \(key.length) bytes)")
            }
            let value = ShareSet.slice(secret, key)
            let id = try await pool.random(count: 16)
            let template: [Attribute]
            switch (parsed.kind, keyType) {
            case (.kek, .aes):
                guard let usage = parsed.purpose?.usage else { throw CeremonyError.unsupportedKeyType(key.label) }
                template = KeyTemplate.rootKEK(label: key.label, id: id, value: value, usage: usage)
            case (.mac, .genericSecret):
                template = KeyTemplate.rootMAC(label: key.label, id: id, value: value)
            default:
                // Never a legacy permissive KEK, never a key whose type contradicts its label.
                throw CeremonyError.unsupportedKeyType("\(key.label) (\(key.keyType))")
            }
            templates.append((key, template, id))
        }
        let prepared = templates
        return try await pool.withPersistentSession { session in
            for item in prepared where !(try session.findObjects([.class(.secretKey), .label(item.key.label)], limit: 1)).isEmpty {
                throw CeremonyError.rootKeyAlreadyPresent(item.key.label)
            }
            var recorded = [CeremonyTranscriptEntry.Key]()
            for item in prepared {
                let handle = try session.createObject(item.template)
                let checkValue = Hex.encode(try session.attribute(.checkValue, of: handle))
                guard checkValue == item.key.checkValue.lowercased() else {
                    throw CeremonyError.checkValueMismatch(
                        label: item.key.label, expected: item.key.checkValue, actual: checkValue,
                        stage: "reported by the token (root keys cannot be destroyed: initialise a fresh token)"
                    )
                }
                recorded.append(.init(label: item.key.label, id: Hex.encode(item.id), checkValue: checkValue))
            }
            return recorded
        }
    }

    func draft(_ step: String, token: TokenInfo) -> CeremonyTranscript.Draft {
        CeremonyTranscript.Draft(
            step: step, operatorName: participants.operatorName, witnesses: participants.witnesses,
            tokenLabel: token.label, tokenSerial: token.serialNumber, configHash: configHash
        )
    }

    static func fileName(_ path: String) -> String { URL(fileURLWithPath: path).lastPathComponent }
}
