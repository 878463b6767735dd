public import CustosModel
public import Foundation
public import Logging
public import Storage
import Synchronization

/// Enrol, verify 1:1 and identify 1:N over tokens (DESIGN §9). It never sees a feature: the
/// composition root checks consent with ``VerificationSessions``, tokenizes, and passes tokens;
/// subjects are pseudonymous references (an HMAC of the tenant's external id, made by custody).
///
/// Each session's outcome is written in the same transaction as the enrolment or comparison
/// that produced it, once. The 1:N galleries follow other instances' erasures through NOTIFY
/// and their enrolments by polling the templates written since the last look, when a coalesced
/// notice says so and at least every ``galleryCatchUpInterval`` (``runGalleryListener()``);
/// identification re-checks its candidates against the database, so a stale gallery can miss a
/// brand-new subject but never return an erased one.
public final class VerificationService: Sendable {
    let database: Database
    public let policies: TenantPolicies
    public let galleryCapacity: Int
    /// Bytes all galleries together may hold, across tenants (``TokenGallery/bytesPerSubject``
    /// each subject): past it the galleries used least recently are dropped whole.
    public let galleryMemoryLimit: Int
    public let attemptLimit: VerificationAttemptLimit
    /// This instance's own count against ``attemptLimit``, which the database's writer cannot reset.
    let ownAttempts: SubjectAttemptCounter
    let audit: (any AuditRecording)?
    /// Every template written carries its MAC, and every template compared is checked first.
    let recordSeals: any RecordSealing
    let now: @Sendable () -> Date
    let logger: Logger
    /// Fault injection for tests: runs inside a migration's transaction between storing the new
    /// template and deleting the old one (a throw must leave the old template in place).
    let migrationFault: (@Sendable () throws -> Void)?
    /// Subjects moved to the active biometric version by a GREEN match under an older one,
    /// since start (a count only: no subject reference is recorded anywhere, DESIGN §9).
    let migrations = Atomic<Int>(0)
    /// Names this instance in gallery notifications, so it skips its own.
    let instance = UUID().uuidString.lowercased()
    private let galleries = Mutex([String: SyncedGallery]())
    /// Numbers gallery loads, so that a poll never applies its rows (or moves the watermark)
    /// of a gallery that was dropped and loaded again meanwhile.
    private let galleryLoads = Atomic<UInt64>(0)
    /// How often the listener polls the tenants it holds galleries of even without a notice:
    /// the bound on how long another instance's enrolment can stay unseen when its notice was
    /// lost (it crashed between its commit and the notice; the notice found no listener).
    public let galleryCatchUpInterval: Duration
    /// Tenants whose templates this instance wrote since its last notice, and whether a task
    /// is sending notices now (``noteTemplatesChanged(_:)``).
    private let pendingNotices = Mutex((tenants: Set<TenantID>(), sending: false))
    /// Tenants being polled (``requestCatchUp(_:)``), and whether another notice came meanwhile.
    private let catchUps = Mutex([TenantID: Bool]())
    /// At most one gallery notice per tenant per this interval (a notice takes PostgreSQL's
    /// notify lock at its commit: one for many enrolments, not one for each).
    public static let galleryNoticeInterval = Duration.milliseconds(50)
    /// When each gallery was last used (a counter), for the global cap's eviction order.
    private let galleryUse = Mutex((tick: UInt64(0), last: [String: UInt64]()))

    /// 1.5 GiB: room for 1,258,291 subjects (1M with room to spare) at ``TokenGallery/bytesPerSubject``.
    public static let defaultGalleryMemoryLimit = 1_536 * 1_024 * 1_024
    private let listening = Atomic<Bool>(false)

    public init(
        database: Database, recordSeals: any RecordSealing, policies: TenantPolicies? = nil, galleryCapacity: Int = 1_000_000,
        galleryMemoryLimit: Int = VerificationService.defaultGalleryMemoryLimit, attemptLimit: VerificationAttemptLimit = .default, audit: (any AuditRecording)? = nil,
        logger: Logger = Logger(label: "custos.verification"), now: @escaping @Sendable () -> Date = { Date() },
        migrationFault: (@Sendable () throws -> Void)? = nil, galleryCatchUpInterval: Duration = .seconds(1)
    ) {
        self.migrationFault = migrationFault
        self.galleryCatchUpInterval = galleryCatchUpInterval
        self.database = database
        self.recordSeals = recordSeals
        let policies = policies ?? TenantPolicies(database: database, audit: nil)
        self.policies = policies
        self.galleryCapacity = galleryCapacity
        self.galleryMemoryLimit = galleryMemoryLimit
        self.attemptLimit = attemptLimit
        ownAttempts = SubjectAttemptCounter(limit: attemptLimit)
        // Re-enrolments are audited: by default through the policies' recorder.
        self.audit = audit ?? policies.audit
        self.logger = logger
        self.now = now
    }

    // MARK: Sessions

    /// Enrols the session's subject and records the outcome: the session is read and its consent
    /// checked, then — only then — `tokenize` makes the token from the candidate's features, and
    /// the template and the outcome commit together in one statement that checks the session
    /// again under its lock (``SessionStore/completeEnrolmentIfOpen(_:subject:token:tenant:at:on:)``:
    /// two round trips, one commit). A replacement runs in one transaction that locks the session
    /// first and commits its audit entry with the template. Other instances are told after the
    /// commit. `tokenize` must not need the database (the composition root prepares budget and
    /// keys before): in a replacement it runs while the transaction holds a connection.
    ///
    /// A subject that already has a template (of any key version) is replaced only when the
    /// caller says so with `replacing`: otherwise whoever can open a session for a subject
    /// could swap the face it is checked against. A replacement is audited.
    /// - Parameter actor: who asked, as the audit log names callers.
    /// - Returns: the subject's reference and the token enrolled.
    /// - Throws: ``VerificationError/alreadyEnrolled`` when the subject has a template and
    ///   `replacing` is false (nothing is tokenized or written; the session stays open).
    public func enrol(
        tenant: TenantID, session: UUID, replacing: Bool = false, actor: String = "custos",
        tokenize: @escaping @Sendable () async throws -> BiometricToken
    ) async throws -> (subject: SubjectReference, token: BiometricToken) {
        // Whole seconds: the session's MAC covers its completion time as PostgreSQL returns it.
        let now = now().wholeSeconds
        let (subject, token) = try await Self.refusingWithdrawn {
            replacing
                ? try await enrolInTransaction(tenant: tenant, session: session, replacing: true, actor: actor, now: now, tokenize: tokenize)
                : try await firstEnrolment(tenant: tenant, session: session, actor: actor, now: now, tokenize: tokenize)
        }
        galleryEnrol(tenant, subject.value, token)
        noteTemplatesChanged(tenant)
        return (subject, token)
    }

    /// Enrol of a subject expected to have no template: a read, the token, one write.
    private func firstEnrolment(
        tenant: TenantID, session: UUID, actor: String, now: Date, tokenize: @escaping @Sendable () async throws -> BiometricToken
    ) async throws -> (subject: SubjectReference, token: BiometricToken) {
        let opened = try await database.withConnection(context: "read session for enrol") { connection in
            try await SessionStore.readForBiometrics(session, tenant: tenant, now: now, cutoff: now, on: connection)
        }
        guard let opened else { throw VerificationError.sessionNotFound(session) }
        try VerificationSessions.requireReady(opened.row, now: now)
        try await recordSeals.requireAuthentic(opened.row, tenant: tenant)
        guard opened.enrolledVersions.isEmpty else { throw VerificationError.alreadyEnrolled }
        let token = try await tokenize()
        let subject = opened.row.subject
        let (seal, sessionSeal) = try await Self.enrolmentSeals(token, opened.row, at: now, tenant: tenant, recordSeals)
        let written = try await database.withAutocommit(context: "enrol in session") { connection in
            try await SessionStore.completeEnrolmentIfOpen(
                session, subject: subject, token: token, seal: seal, sessionSeal: sessionSeal, tenant: tenant, at: now, on: connection
            )
        }
        switch written {
        case .completed:
            return (subject, token)
        case .alreadyEnrolled:
            throw VerificationError.alreadyEnrolled
        case .keyVersionRetired:
            // A rotation's overlap closed since the token was made: its version's templates were
            // dropped, and one stored now would outlive that (TemplateStore+VersionLock).
            throw VerificationError.biometricVersionRetired(token.keyVersion)
        case .sessionChanged, .tooManyAttempts:
            // Changed since the read (completed, expired, erased, or its subject's reference
            // moved to the active pii version): the transaction names the refusal exactly, or
            // enrols under the moved reference. The token is made already; it is not made twice.
            return try await enrolInTransaction(tenant: tenant, session: session, replacing: false, actor: actor, now: now) { token }
        }
    }

    /// Enrol in one transaction that locks the session before `tokenize` runs.
    private func enrolInTransaction(
        tenant: TenantID, session: UUID, replacing: Bool, actor: String, now: Date,
        tokenize: @escaping @Sendable () async throws -> BiometricToken
    ) async throws -> (subject: SubjectReference, token: BiometricToken) {
        let audit = audit, recordSeals = recordSeals
        return try await database.withTenant(tenant, context: "enrol in session") { connection in
            guard let (row, enrolled) = try await SessionStore.lockWithEnrolledVersions(session, on: connection) else {
                throw VerificationError.sessionNotFound(session)
            }
            try VerificationSessions.requireReady(row, now: now)
            try await recordSeals.requireAuthentic(row, tenant: tenant)
            // Refused before tokenizing; checked again below, under the subject's lock.
            guard enrolled.isEmpty || replacing else { throw VerificationError.alreadyEnrolled }
            let token = try await tokenize()
            // The token's version may have stopped matching since the composition root chose it
            // (TemplateStore+VersionLock); a close of its overlap now waits for this commit. Under
            // the subject's lock, the templates are looked for again: a first enrolment under
            // another version may have committed since the session's lock (the primary key
            // includes the version, so nothing else would stop a second template).
            let check = try await TemplateStore.lockForTemplateWrite(
                subject: row.subject.value, keyVersion: token.keyVersion, tenant: tenant, now: now, on: connection
            )
            guard check.versionMatches else { throw VerificationError.biometricVersionRetired(token.keyVersion) }
            guard check.enrolledVersions.isEmpty || replacing else { throw VerificationError.alreadyEnrolled }
            let replaced = check.enrolledVersions
            let (seal, sessionSeal) = try await Self.enrolmentSeals(token, row, at: now, tenant: tenant, recordSeals)
            // The template and the outcome in one statement.
            // The session is locked, open and consented: only a completion recorded before (which
            // its row no longer shows: helper-81) keeps the statement from completing it.
            guard try await SessionStore.completeEnrolment(
                session, subject: row.subject, token: token, seal: seal, sessionSeal: sessionSeal, tenant: tenant, at: now, on: connection
            ) else { throw VerificationError.sessionCompleted(session) }
            // Re-enrolment after a biometric rotation is how a subject leaves the old version:
            // its template of that version goes (identification re-reads candidates, so a
            // gallery still holding it returns nothing stale).
            if replacing { try await TemplateStore.deleteOtherVersions(subject: row.subject.value, keeping: token.keyVersion, on: connection) }
            if !replaced.isEmpty, let audit {
                // No subject reference in the log (DESIGN §9): the session names the event.
                // The recorder wants to be the transaction's last statement.
                try await audit.record(tenant: tenant, actor: actor, action: .subjectReenrol, target: "session:" + session.uuidString.lowercased(), details: [
                    "key_version": "\(token.keyVersion)", "replaced_key_versions": replaced.map { String($0) }.joined(separator: " "),
                ], on: connection)
            }
            return (row.subject, token)
        }
    }

    /// A template write, with the database's refusal of a withdrawn MAC (migration 34) as the
    /// caller's: the same subject, version and token were stored before and removed since.
    static func refusingWithdrawn<Value>(_ write: () async throws -> Value) async throws -> Value {
        do {
            return try await write()
        } catch StorageError.withdrawnTemplateMAC {
            throw VerificationError.tokenWithdrawn
        }
    }

    /// Compares the candidate's probe with the session subject's template and records the
    /// decision: the session is read and its consent and the subject's ``attemptLimit`` checked,
    /// and only then does `probe` tokenize the features; the attempt, the templates' last use and
    /// the decision commit together in one statement that checks the session and the limit again
    /// under the session's lock (``SessionStore/completeVerificationIfOpen(_:tenant:outcome:confidence:biometricKeyVersion:at:cutoff:attemptLimit:on:)``:
    /// two round trips, one commit). A decision another request overtook (the session completed
    /// meanwhile, the limit reached) is never returned.
    ///
    /// During a biometric rotation's overlap (`older` names versions) the call is one
    /// transaction that locks the session and counts the attempt first; `probe` and `older`'s
    /// probes then run while it holds a connection, so they must not need the database.
    /// A subject with no template under the probe's
    /// (active) version is compared under the newest older version it has one of, with
    /// `older`'s probe; a GREEN there migrates it (``migrate(_:to:from:tenant:on:)``) in the same
    /// transaction as the outcome, which records the version actually compared.
    /// - Throws: ``VerificationError/notEnrolled`` (the session stays open: enrol first);
    ///   ``VerificationError/tooManyAttempts(limit:window:retryAfter:)`` when the subject's
    ///   window is used up (nothing is compared or written; the session stays open).
    public func verify(
        tenant: TenantID, session: UUID, older: OlderBiometricProbes = .none,
        probe makeProbe: @escaping @Sendable () async throws -> BiometricToken
    ) async throws -> Decision {
        let now = now().wholeSeconds
        let policy = try await policies.policy(tenant)
        guard older.versions.isEmpty else {
            return try await verifyInTransaction(tenant: tenant, session: session, older: older, policy: policy, now: now, probe: makeProbe)
        }
        let limit = attemptLimit
        let cutoff = now.addingTimeInterval(-Double(limit.window.components.seconds))
        let opened = try await database.withConnection(context: "read session for verify") { connection in
            try await SessionStore.readForBiometrics(session, tenant: tenant, now: now, cutoff: cutoff, on: connection)
        }
        guard let opened else { throw VerificationError.sessionNotFound(session) }
        try VerificationSessions.requireReady(opened.row, now: now)
        let templatesChecked = try await requireAuthentic(opened, tenant: tenant)
        guard opened.attempts <= limit.attempts else { throw limit.refusal(windowStart: opened.windowStart) }
        let attemptKey = SubjectAttemptCounter.key(tenant, opened.row.subject)
        try ownAttempts.reserve(attemptKey, now: now)
        let probe: BiometricToken, match: (enrolled: BiometricToken, probe: BiometricToken), decision: Decision, sessionSeal: RecordSeal
        do {
            probe = try await makeProbe()
            match = try await enrolment(in: opened, tenant: tenant, probe: probe, older: .none, checked: templatesChecked)
            decision = policy.thresholds(for: match.probe.format).decide(score: match.probe.score(against: match.enrolled))
            sessionSeal = try await recordSeals.seal(Self.decided(opened.row, decision, under: match.probe.keyVersion, at: now), tenant: tenant)
        } catch {
            ownAttempts.release(attemptKey)
            throw error
        }
        // From here an error keeps the attempt: the write may have committed (a call cancelled
        // while its statement still ran), and its decision is readable through GetSession.
        let written = try await database.withAutocommit(context: "verify in session") { connection in
            try await SessionStore.completeVerificationIfOpen(
                session, tenant: tenant, outcome: decision.color.rawValue, confidence: decision.confidence.rawValue,
                biometricKeyVersion: match.probe.keyVersion, at: now, cutoff: cutoff, attemptLimit: limit.attempts, seal: sessionSeal,
                on: connection
            )
        }
        switch written {
        case .completed:
            return decision
        case .tooManyAttempts(let windowStart):
            ownAttempts.release(attemptKey)
            throw limit.refusal(windowStart: windowStart)
        case .keyVersionRetired:
            ownAttempts.release(attemptKey)
            // The compared version's overlap closed since the read: its templates, this one
            // included, are gone. Nothing recorded, no attempt counted; sent again, the features
            // are compared under the active version.
            throw VerificationError.biometricVersionRetired(match.probe.keyVersion)
        case .sessionChanged, .alreadyEnrolled:
            // Changed since the read: the transaction names the refusal exactly (the probe is
            // made already; it is not made twice) and takes the attempt itself.
            ownAttempts.release(attemptKey)
            return try await verifyInTransaction(tenant: tenant, session: session, older: older, policy: policy, now: now) { probe }
        }
    }

    /// Verify in one transaction that locks the session and counts the attempt before `probe` runs.
    private func verifyInTransaction(
        tenant: TenantID, session: UUID, older: OlderBiometricProbes, policy: TenantPolicy, now: Date,
        probe makeProbe: @escaping @Sendable () async throws -> BiometricToken
    ) async throws -> Decision {
        let limit = attemptLimit
        let cutoff = now.addingTimeInterval(-Double(limit.window.components.seconds))
        let (decision, migrated) = try await database.withTenant(tenant, context: "verify in session") { connection -> (Decision, Migrated?) in
            // The session locked, the attempt counted and the subject's templates read in one
            // statement. Counted before any comparison; a refusal rolls the count back with
            // everything else, so the stored count stops at the limit until the window passes.
            guard let opened = try await SessionStore.openForVerify(session, tenant: tenant, now: now, cutoff: cutoff, on: connection) else {
                throw VerificationError.sessionNotFound(session)
            }
            let row = opened.row
            try VerificationSessions.requireReady(row, now: now)
            let templatesChecked = try await self.requireAuthentic(opened, tenant: tenant)
            guard opened.attempts <= limit.attempts else { throw limit.refusal(windowStart: opened.windowStart) }
            // Taken before the probe is made; given back if the body throws (the transaction then
            // commits nothing). A failed commit keeps it: the decision may have been recorded.
            let attemptKey = SubjectAttemptCounter.key(tenant, row.subject)
            try self.ownAttempts.reserve(attemptKey, now: now)
            do {
                let probe = try await makeProbe()
                let match = try await self.enrolment(in: opened, tenant: tenant, probe: probe, older: older, checked: templatesChecked)
                let score = match.probe.score(against: match.enrolled)
                let decision = policy.thresholds(for: match.probe.format).decide(score: score)
                let migrates = Self.migrates(decision, score: score, comparedUnder: match.probe, active: probe.keyVersion)
                // As the single-statement write: no decision recorded against a template whose
                // version's overlap closed since it was read (the throw rolls the attempt back),
                // and no template moved to a version that stopped matching — both locks in one call.
                let matching = try await TemplateStore.lockMatchingBiometricVersions(
                    migrates ? [match.probe.keyVersion, probe.keyVersion] : [match.probe.keyVersion], tenant: tenant, now: now, on: connection
                )
                guard matching.contains(match.probe.keyVersion) else { throw VerificationError.biometricVersionRetired(match.probe.keyVersion) }
                if migrates {
                    guard matching.contains(probe.keyVersion) else { throw VerificationError.biometricVersionRetired(probe.keyVersion) }
                    try await self.migrate(row.subject, to: probe, from: match.probe.keyVersion, tenant: tenant, on: connection)
                }
                let sessionSeal = try await self.recordSeals.seal(Self.decided(row, decision, under: match.probe.keyVersion, at: now), tenant: tenant)
                // The templates' last use and the outcome in one statement.
                guard try await SessionStore.completeVerification(
                    session, subject: row.subject.value, outcome: decision.color.rawValue, confidence: decision.confidence.rawValue,
                    biometricKeyVersion: match.probe.keyVersion, at: now, seal: sessionSeal, on: connection
                ) else { throw VerificationError.sessionCompleted(session) }
                return (decision, migrates ? Migrated(subject: row.subject.value, token: probe, from: match.probe.keyVersion) : nil)
            } catch {
                self.ownAttempts.release(attemptKey)
                throw error
            }
        }
        if let migrated { self.migrated(tenant, migrated.subject, migrated.token, from: migrated.from) }
        return decision
    }

    /// A subject a verification moved to the active biometric version (for after the commit).
    private struct Migrated: Sendable {
        let subject: String
        let token: BiometricToken
        let from: Int
    }

    /// The best `top` candidates for `probe` among the tenant's subjects; records the best
    /// decision (or no match) as the session's outcome.
    public func identify(
        tenant: TenantID, session: UUID, probe: BiometricToken, older: OlderBiometricProbes = .none, top: Int = 5
    ) async throws -> [IdentifiedCandidate] {
        let now = now().wholeSeconds
        // Open and consented, for a precise refusal before the search. Its MACs were checked
        // before the features were tokenized (`VerificationSessions.requireConsent`) and are
        // checked again below, under the lock of the write that relies on them.
        _ = try await database.withTenant(tenant, context: "check session") { connection in
            try await Self.lockReadySession(session, now: now, on: connection)
        }
        let candidates = try await identify(tenant: tenant, probe: probe, older: older, top: top)
        let best = candidates.first?.decision
        let recordSeals = recordSeals
        let written = try await database.withTenant(tenant, context: "record identification") { connection -> Bool in
            // Read again under the lock, and checked again: the MAC written covers the consent
            // as the row holds it now, which the database's writer may have changed while the
            // gallery was read (helper-81: a consent changed then was sealed as genuine).
            guard let row = try await SessionStore.get(session, forUpdate: true, on: connection) else { throw VerificationError.sessionNotFound(session) }
            try VerificationSessions.requireReady(row, now: now)
            try await recordSeals.requireAuthentic(row, tenant: tenant)
            let completed = row.record.completed(
                outcome: best?.color.rawValue ?? "no_match", confidence: best?.confidence.rawValue, biometricKeyVersion: probe.keyVersion, at: now
            )
            return try await SessionStore.complete(
                session, outcome: completed.outcome!, confidence: completed.confidence, biometricKeyVersion: probe.keyVersion, at: now,
                seal: try await recordSeals.seal(completed, tenant: tenant), on: connection
            )
        }
        // Another request completed the session between the two transactions: its outcome stands.
        guard written else { throw VerificationError.sessionCompleted(session) }
        return candidates
    }

    static func lockReadySession(_ session: UUID, now: Date, on connection: DatabaseTransaction) async throws -> SessionStore.Row {
        guard let row = try await SessionStore.get(session, forUpdate: true, on: connection) else { throw VerificationError.sessionNotFound(session) }
        try VerificationSessions.requireReady(row, now: now)
        return row
    }

    /// `row`'s record once Enrol completes it with `token`.
    static func enrolled(_ row: SessionStore.Row, _ token: BiometricToken, at now: Date) -> SessionRecord {
        row.record.completed(outcome: "enrolled", confidence: nil, biometricKeyVersion: token.keyVersion, at: now)
    }

    /// `row`'s record once Verify completes it with `decision`, compared under `version`.
    static func decided(_ row: SessionStore.Row, _ decision: Decision, under version: Int, at now: Date) -> SessionRecord {
        row.record.completed(outcome: decision.color.rawValue, confidence: decision.confidence.rawValue, biometricKeyVersion: version, at: now)
    }

    // MARK: Migration during a biometric rotation's overlap

    /// The probe under the older version the subject would be compared under — the newest of
    /// `older`'s versions it has a template of, when it has none under the probe's own — or
    /// `nil`. For the subject-based ``verify(tenant:subject:probe:older:)``, whose callers'
    /// probes may tokenize through the database (the shared budget): it runs before the
    /// comparison's transaction, never inside it, since holding one connection while waiting
    /// for another could starve the pool. (The session flow prepares its probes instead and
    /// finds the version inside its one transaction.)
    func olderProbe(tenant: TenantID, probe: BiometricToken, older: OlderBiometricProbes, subject: String) async throws -> BiometricToken? {
        guard !older.versions.isEmpty else { return nil }
        let version = try await database.withTenant(tenant, context: "find enrolled key version") { connection -> Int? in
            let held = try await TemplateStore.keyVersions(subject: subject, on: connection)
            guard !held.contains(probe.keyVersion) else { return nil }
            return older.versions.first { $0 != probe.keyVersion && held.contains($0) }
        }
        guard let version else { return nil }
        return try await older.probe(version)
    }

    /// The subject's template the probe is compared with, and the probe of its version: under
    /// the probe's own version when there is one (a migration that committed meanwhile wins),
    /// else under `olderProbe`'s version.
    /// - Throws: ``VerificationError/notEnrolled`` when neither exists.
    func enrolment(
        of subject: String, tenant: TenantID, probe: BiometricToken, olderProbe: BiometricToken?, on connection: DatabaseTransaction
    ) async throws -> (enrolled: BiometricToken, probe: BiometricToken) {
        if let enrolled = try await TemplateStore.get(subject: subject, keyVersion: probe.keyVersion, on: connection) {
            return (try await authentic(enrolled, of: subject, tenant: tenant, as: probe), probe)
        }
        guard let olderProbe, let enrolled = try await TemplateStore.get(subject: subject, keyVersion: olderProbe.keyVersion, on: connection) else {
            throw VerificationError.notEnrolled
        }
        return (try await authentic(enrolled, of: subject, tenant: tenant, as: olderProbe), olderProbe)
    }

    /// `template`, read from `subject`'s row, as a token in the format of `probe` (made under
    /// the same version, whose format the keyring records), once its MAC shows Custos wrote it
    /// there: a token copied from another subject's row would otherwise let that subject's
    /// face verify as this one.
    /// - Throws: ``RecordIntegrityError/notAuthentic(keyVersion:)``;
    ///   ``TemplateFormatError/formatMismatch(keyVersion:expected:byteCount:)`` for one of
    ///   another length (not written by this version's tokenizer).
    func authentic(_ template: StoredTemplate, of subject: String, tenant: TenantID, as probe: BiometricToken) async throws -> BiometricToken {
        guard try await recordSeals.isAuthentic(template, subject: subject, tenant: tenant) else {
            logTamperedTemplate(tenant: tenant, keyVersion: template.keyVersion)
            throw RecordIntegrityError.template(keyVersion: template.keyVersion)
        }
        return try template.token(format: probe.format)
    }

    /// As ``enrolment(of:tenant:probe:olderProbe:on:)``, among the templates Verify's opening
    /// read (`checked`: their MACs were checked with the session's, ``requireAuthentic(_:tenant:)``;
    /// else the one compared is checked now): with none under the probe's version, the newest of
    /// `older`'s versions the subject has one of, and `older`'s probe under it (made only then).
    func enrolment(
        in opened: SessionStore.VerifyOpening, tenant: TenantID, probe: BiometricToken, older: OlderBiometricProbes, checked: Bool
    ) async throws -> (enrolled: BiometricToken, probe: BiometricToken) {
        let subject = opened.row.subject.value
        func token(_ template: StoredTemplate, as probe: BiometricToken) async throws -> BiometricToken {
            checked ? try template.token(format: probe.format) : try await authentic(template, of: subject, tenant: tenant, as: probe)
        }
        if let enrolled = opened.template(keyVersion: probe.keyVersion) {
            return (try await token(enrolled, as: probe), probe)
        }
        let held = opened.enrolledVersions
        guard let version = older.versions.first(where: { $0 != probe.keyVersion && held.contains($0) }),
              let enrolled = opened.template(keyVersion: version) else {
            throw VerificationError.notEnrolled
        }
        let olderProbe = try await older.probe(version)
        return (try await token(enrolled, as: olderProbe), olderProbe)
    }

    /// Templates of a subject whose MACs Verify checks with the session's, ahead of the
    /// comparison: one, two during a biometric overlap. More can only be the database writer's
    /// rows (each an HSM MAC: helper-85 planted 20,000).
    static let templatesCheckedAhead = 4

    /// Verify's opening as Custos wrote it: the session's subject, expiry, consent and outcome,
    /// with every template of its subject that was read, in one HSM round trip (the probe is
    /// compared with one of them, whose version is known only once it is made).
    /// - Returns: whether the templates passed too; if not (or there are too many to check
    ///   ahead), the one compared is checked on its own, so a forged row of a version never
    ///   compared refuses nothing (helper-85).
    /// - Throws: ``RecordIntegrityError/session(_:)``.
    func requireAuthentic(_ opened: SessionStore.VerifyOpening, tenant: TenantID) async throws -> Bool {
        let templates = opened.storedTemplates
        if templates.count <= Self.templatesCheckedAhead {
            let subject = opened.row.subject.value
            let records = opened.row.sealedParts + templates.map { (record: SealableRecord.template($0, subject: subject), seal: $0.seal) }
            if try await recordSeals.areAuthentic(records, tenant: tenant) { return true }
        }
        try await recordSeals.requireAuthentic(opened.row, tenant: tenant)
        return false
    }

    /// The tenant and version only: never the subject's reference (DESIGN §9).
    private func logTamperedTemplate(tenant: TenantID, keyVersion: Int) {
        logger.error("a stored template failed its MAC check and was not compared (written or copied by the database's writer?)", metadata: [
            "tenant": "\(tenant)", "key_version": "\(keyVersion)",
        ])
    }

    /// The MACs Enrol writes with `token`: its template's under `row`'s subject, and the
    /// session's completed record (one HSM round trip).
    static func enrolmentSeals(
        _ token: BiometricToken, _ row: SessionStore.Row, at now: Date, tenant: TenantID, _ recordSeals: any RecordSealing
    ) async throws -> (template: RecordSeal, session: RecordSeal) {
        let seals = try await recordSeals.seal([.template(token.stored, subject: row.subject.value), .session(enrolled(row, token, at: now))], tenant: tenant)
        return (seals[0], seals[1])
    }

    /// The least score that re-enrols a subject silently: the default GREEN threshold of the
    /// format compared in (the older version's, FMR ``DecisionThresholds/greenFalseMatchRate``),
    /// whatever the tenant's own. A migration rewrites the enrolment without anyone looking, so
    /// it must not follow thresholds an officer (audited) or a database write (not: policy rows
    /// carry no MAC) lowered: with a GREEN threshold of 0.02 an impostor would otherwise become
    /// the enrolled face. A subject GREEN under a lower tenant threshold but below this is
    /// answered GREEN and simply not migrated (it may still migrate on a later, better verification).
    public static func migrationFloor(for format: BiometricTokenFormat) -> Double {
        DecisionThresholds.default(for: format).green
    }

    /// Whether a comparison under an older version (`probe`'s) moves the subject to the active one.
    static func migrates(_ decision: Decision, score: Double, comparedUnder probe: BiometricToken, active: Int) -> Bool {
        probe.keyVersion != active && decision.color == .green && score >= migrationFloor(for: probe.format)
    }

    /// Re-enrols the subject under `token`'s (active) version from the probe — features are
    /// never stored, so a GREEN match is the only moment this can happen — and deletes its
    /// template of version `old`, inside the caller's transaction: both or neither commit, so a
    /// failure leaves the old template in place. Other instances' galleries poll the new
    /// template after the commit; the old one may stay in them, which identification's re-read
    /// of candidates' tokens from the database makes harmless.
    /// The caller holds `token`'s version lock and found it matching
    /// (``TemplateStore/lockMatchingBiometricVersions(_:tenant:now:on:)``): a template write like
    /// any other, never under a retired version.
    func migrate(_ subject: SubjectReference, to token: BiometricToken, from old: Int, tenant: TenantID, on connection: DatabaseTransaction) async throws {
        let seal = try await recordSeals.seal(token.stored, subject: subject.value, tenant: tenant)
        try await TemplateStore.upsert(subject: subject, token: token, seal: seal, tenant: tenant, on: connection)
        try migrationFault?()
        try await TemplateStore.delete(subject: subject.value, keyVersion: old, on: connection)
    }

    /// After a migration committed: this instance's galleries, and the count.
    private func migrated(_ tenant: TenantID, _ subject: String, _ token: BiometricToken, from old: Int) {
        galleryRemove(tenant, [subject], exceptVersion: token.keyVersion)
        galleryEnrol(tenant, subject, token)
        noteTemplatesChanged(tenant)
        migrations.add(1, ordering: .relaxed)
        // Versions and the tenant only: never the subject's reference (DESIGN §9).
        logger.debug("template moved to the active biometric version", metadata: [
            "tenant": "\(tenant)", "from_version": "\(old)", "to_version": "\(token.keyVersion)",
        ])
    }

    /// Subjects this instance moved to the active biometric version since start.
    public var biometricMigrations: Int { migrations.load(ordering: .relaxed) }

    // MARK: Tokens, for callers that hold consent themselves (benchmarks, re-enrolment jobs)

    /// Stores the subject's token (replacing one of the same key version), under the same locks
    /// and version check as the session flow's writes (TemplateStore+VersionLock).
    /// - Throws: ``VerificationError/biometricVersionRetired(_:)`` when the token's version no
    ///   longer matches (its overlap closed): nothing is stored.
    public func enrol(tenant: TenantID, subject: SubjectReference, token: BiometricToken) async throws {
        let now = now()
        let seal = try await recordSeals.seal(token.stored, subject: subject.value, tenant: tenant)
        try await Self.refusingWithdrawn {
            try await database.withTenant(tenant, context: "enrol") { connection in
                let check = try await TemplateStore.lockForTemplateWrite(subject: subject.value, keyVersion: token.keyVersion, tenant: tenant, now: now, on: connection)
                guard check.versionMatches else { throw VerificationError.biometricVersionRetired(token.keyVersion) }
                try await TemplateStore.upsert(subject: subject, token: token, seal: seal, tenant: tenant, on: connection)
            }
        }
        galleryEnrol(tenant, subject.value, token)
        noteTemplatesChanged(tenant)
    }

    /// Compares `probe` with the subject's enrolled token of the same key version — or, during
    /// a biometric rotation's overlap, of the newest older version in `older` it has one of,
    /// migrating it on GREEN as the session flow does.
    /// - Throws: ``VerificationError/notEnrolled`` when there is none (for this tenant: other
    ///   tenants' subjects are invisible under row-level security).
    public func verify(tenant: TenantID, subject: SubjectReference, probe: BiometricToken, older: OlderBiometricProbes = .none) async throws -> Decision {
        let policy = try await policies.policy(tenant)
        let olderProbe = try await self.olderProbe(tenant: tenant, probe: probe, older: older, subject: subject.value)
        let (decision, migrated) = try await database.withTenant(tenant, context: "verify") { connection -> (Decision, Bool) in
            let match = try await self.enrolment(of: subject.value, tenant: tenant, probe: probe, olderProbe: olderProbe, on: connection)
            let score = match.probe.score(against: match.enrolled)
            let decision = policy.thresholds(for: match.probe.format).decide(score: score)
            let migrated = Self.migrates(decision, score: score, comparedUnder: match.probe, active: probe.keyVersion)
            if migrated {
                guard try await TemplateStore.lockMatchingBiometricVersions([probe.keyVersion], tenant: tenant, now: self.now(), on: connection).contains(probe.keyVersion) else {
                    throw VerificationError.biometricVersionRetired(probe.keyVersion)
                }
                try await self.migrate(subject, to: probe, from: match.probe.keyVersion, tenant: tenant, on: connection)
            }
            try await TemplateStore.touch(subject: subject.value, on: connection)
            return (decision, migrated)
        }
        if migrated { self.migrated(tenant, subject.value, probe, from: olderProbe?.keyVersion ?? 0) }
        return decision
    }

    /// The best `top` candidates for `probe` among the tenant's enrolled subjects, each with a
    /// decision (the gallery is loaded from PostgreSQL on first use). The in-memory scan of
    /// fingerprints preselects a few more than `top`; their full tokens, read from the database,
    /// give the exact scores the decisions use (and drop subjects erased meanwhile).
    ///
    /// During a biometric rotation's overlap the galleries of `older`'s versions are scanned
    /// too, each with the probe under its version (made only for a gallery that is not empty),
    /// and candidates are merged by subject with their best score: a subject caught between
    /// versions (migrated while a gallery was stale) is never returned twice.
    public func identify(tenant: TenantID, probe: BiometricToken, older: OlderBiometricProbes = .none, top: Int = 5) async throws -> [IdentifiedCandidate] {
        guard (1...100).contains(top) else { throw VerificationError.invalidArgument(field: "top", reason: "between 1 and 100") }
        let policy = try await policies.policy(tenant)
        // Scores of two formats are on different scales (quaternary impostors sit near 0.44,
        // compact ones near 0.066): candidates are ranked by where their score lies between
        // their own format's AMBER and GREEN thresholds.
        var best = [String: (rank: Double, decision: Decision)]()
        for version in [probe.keyVersion] + older.versions.filter({ $0 != probe.keyVersion }) {
            let held = try await loadGallery(tenant, version)
            let versionProbe: BiometricToken
            if version == probe.keyVersion {
                versionProbe = probe
            } else {
                guard held > 0 else { continue }
                versionProbe = try await older.probe(version)
            }
            let thresholds = policy.thresholds(for: versionProbe.format)
            for (subject, score) in try await candidates(tenant, versionProbe, top: top) {
                let rank = thresholds.bandPosition(of: score)
                if rank > best[subject]?.rank ?? -.infinity { best[subject] = (rank, thresholds.decide(score: score)) }
            }
        }
        return best.sorted { ($0.value.rank, $1.key) > ($1.value.rank, $0.key) }.prefix(top).map {
            IdentifiedCandidate(subject: $0.key, decision: $0.value.decision)
        }
    }

    /// Makes sure `version`'s gallery of `tenant` is in memory (loaded from PostgreSQL when
    /// absent, or always without the listener: other instances' changes would be missed).
    /// - Returns: the subjects it holds.
    private func loadGallery(_ tenant: TenantID, _ version: Int) async throws -> Int {
        let key = galleryKey(tenant, version)
        let capacity = max(1, min(galleryCapacity, gallerySubjectCapacity))
        let cached = listening.load(ordering: .acquiring)
        if !cached || galleries.withLock({ $0[key] == nil }) {
            // Rows go straight into the gallery as they arrive, into storage sized once: a
            // million tokens never sit in a second list (or a doubling array) while loading.
            let load = galleryLoads.add(1, ordering: .relaxed).newValue
            let gallery = try await database.withTenant(tenant, context: "load gallery") { connection in
                // Before the rows: polls start from what this read could not see.
                let watermark = try await TemplateStore.changeWatermark(on: connection)
                var gallery = TokenGallery(capacity: capacity)
                gallery.reserveCapacity(try await TemplateStore.count(keyVersion: version, limit: capacity, on: connection))
                try await TemplateStore.all(keyVersion: version, limit: capacity, on: connection) { subject, template in
                    gallery.enrol(subject, template)
                }
                return SyncedGallery(gallery: gallery, tenant: tenant, keyVersion: version, load: load, watermark: watermark)
            }
            galleries.withLock { if !cached || $0[key] == nil { $0[key] = gallery } }
        }
        markUsed(key)
        enforceGalleryMemoryLimit(keeping: key)
        return galleries.withLock { $0[key]?.gallery.count ?? 0 }
    }

    /// The gallery of `probe`'s version preselects candidates; their tokens, read from the
    /// database, give exact scores.
    private func candidates(_ tenant: TenantID, _ probe: BiometricToken, top: Int) async throws -> [(subject: String, score: Double)] {
        let key = galleryKey(tenant, probe.keyVersion)
        // Chance agreement of fingerprints can reorder close candidates: preselect a margin.
        let preselected = galleries.withLock { $0[key]?.gallery.identify(probe, top: min(100, top * 2 + 8)) ?? [] }
        let tokens = try await database.withTenant(tenant, context: "re-score candidates") { connection in
            try await TemplateStore.tokens(subjects: preselected.map(\.subject), keyVersion: probe.keyVersion, on: connection)
        }
        let read = preselected.compactMap { candidate in tokens[candidate.subject].map { (subject: candidate.subject, template: $0) } }
        // Every candidate's MAC in one HSM round trip; only when one fails, each on its own.
        let allAuthentic = try await recordSeals.areAuthentic(read.map { (.template($0.template, subject: $0.subject), $0.template.seal) }, tenant: tenant)
        var scored = [(subject: String, score: Double)]()
        for (subject, template) in read {
            do {
                let enrolled = allAuthentic
                    ? try template.token(format: probe.format) : try await authentic(template, of: subject, tenant: tenant, as: probe)
                scored.append((subject, probe.score(against: enrolled)))
            } catch is RecordIntegrityError {
                // Logged: one forged row must not hide every other candidate from the tenant's
                // identifications (its writer could as well delete rows).
                continue
            }
        }
        return scored
    }

    /// Subjects all galleries together may hold (``galleryMemoryLimit`` / ``TokenGallery/bytesPerSubject``).
    public var gallerySubjectCapacity: Int { galleryMemoryLimit / TokenGallery.bytesPerSubject }

    /// Subjects held in memory now, across every tenant's galleries.
    public var gallerySubjectsInMemory: Int { galleries.withLock { $0.values.reduce(0) { $0 + $1.gallery.count } } }

    private func markUsed(_ key: String) {
        galleryUse.withLock { use in
            use.tick += 1
            use.last[key] = use.tick
        }
    }

    /// Past the global limit, drops whole galleries, least recently used first, never `keeping`
    /// (the one in use; its own capacity is at most the global one). A dropped gallery is
    /// reloaded from PostgreSQL at its tenant's next identification.
    private func enforceGalleryMemoryLimit(keeping: String) {
        let limit = gallerySubjectCapacity
        let order = galleryUse.withLock { use in use.last.sorted { $0.value < $1.value }.map(\.key) }
        let dropped = galleries.withLock { galleries -> [String] in
            var total = galleries.values.reduce(0) { $0 + $1.gallery.count }
            var dropped = [String]()
            for key in order where total > limit && key != keeping {
                guard let gallery = galleries.removeValue(forKey: key) else { continue }
                total -= gallery.gallery.count
                dropped.append(key)
            }
            return dropped
        }
        if !dropped.isEmpty {
            galleryUse.withLock { use in for key in dropped { use.last[key] = nil } }
            logger.notice("gallery memory limit reached: least recently used galleries dropped", metadata: ["galleries": "\(dropped.count)"])
        }
    }

    // MARK: Gallery synchronisation

    /// Keeps the galleries in step with other instances until cancelled (reconnecting with
    /// backoff): applies their notices, and polls every tenant it holds galleries of at least
    /// every ``galleryCatchUpInterval``. While it is down, identification loads from the
    /// database on every call.
    public func runGalleryListener() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.listenForGalleryChanges() }
            group.addTask { await self.catchUpPeriodically() }
        }
    }

    private func listenForGalleryChanges() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await database.listen(
                    channel: TemplateStore.galleryChannel,
                    ready: { [self] in
                        // Changes made while no one listened are unknown: start from the database.
                        galleries.withLock { $0.removeAll() }
                        listening.store(true, ordering: .releasing)
                    },
                    received: { [self] payload in
                        guard let change = GalleryChange(payload: payload), change.instance != instance else { return }
                        apply(change)
                    }
                )
            } catch {
                if !Task.isCancelled {
                    logger.warning("gallery listener lost; identification reads the database until it is back", metadata: ["error": "\(error)"])
                }
            }
            listening.store(false, ordering: .releasing)
            galleries.withLock { $0.removeAll() }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// Whether the gallery listener is connected (and so galleries are kept in memory).
    public var isListening: Bool { listening.load(ordering: .acquiring) }

    /// Polls every tenant this instance holds galleries of, each ``galleryCatchUpInterval``
    /// while the listener is connected (without it galleries are not kept).
    private func catchUpPeriodically() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: galleryCatchUpInterval)
            guard isListening else { continue }
            let tenants = Set(galleries.withLock { $0.values.map(\.tenant) })
            for tenant in tenants { requestCatchUp(tenant) }
        }
    }

    /// Polls the tenant's templates written since its galleries last looked, unless a poll of
    /// it runs already — then that one polls once more when done (one notice may stand for
    /// writes it did not see).
    func requestCatchUp(_ tenant: TenantID) {
        let start = catchUps.withLock { running -> Bool in
            guard running[tenant] == nil else {
                running[tenant] = true
                return false
            }
            running[tenant] = false
            return true
        }
        guard start else { return }
        Task { [self] in
            repeat {
                do {
                    try await catchUp(tenant)
                } catch {
                    // Unknown what was missed: the tenant's galleries reload on their next use.
                    galleryReset(tenant)
                    logger.debug("gallery catch-up failed; the tenant's galleries reload", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                }
            } while catchUps.withLock({ running in
                guard running[tenant] == true else {
                    running[tenant] = nil
                    return false
                }
                running[tenant] = false
                return true
            })
        }
    }

    /// One poll of the tenant's galleries: the templates of their versions written by
    /// transactions their last read could not see, applied to the galleries that are still the
    /// ones polled for (not dropped and loaded again meanwhile), whose watermark then moves on.
    func catchUp(_ tenant: TenantID) async throws {
        let held = galleries.withLock { galleries in
            galleries.filter { $0.value.tenant == tenant }.map { (key: $0.key, load: $0.value.load, version: $0.value.keyVersion, watermark: $0.value.watermark) }
        }
        guard let since = held.map(\.watermark).min() else { return }
        let (watermark, rows) = try await database.withTenant(tenant, context: "gallery catch-up") { connection in
            // Before the rows, as when loading.
            let watermark = try await TemplateStore.changeWatermark(on: connection)
            return (watermark, try await TemplateStore.changes(since: since, keyVersions: held.map(\.version), on: connection))
        }
        guard !rows.isEmpty || held.contains(where: { $0.watermark < watermark }) else { return }
        galleries.withLock { galleries in
            for gallery in held where galleries[gallery.key]?.load == gallery.load {
                for row in rows where row.template.keyVersion == gallery.version {
                    galleries[gallery.key]!.gallery.enrol(row.subject, row.template)
                }
                galleries[gallery.key]!.watermark = max(galleries[gallery.key]!.watermark, watermark)
            }
        }
        for gallery in held { enforceGalleryMemoryLimit(keeping: gallery.key) }
    }

    /// After this instance's write of the tenant's templates committed: tells other instances
    /// to poll them, with one NOTIFY per tenant per ``galleryNoticeInterval`` at most, sent on
    /// a connection of its own outside any data transaction. A notice that is lost (a crash
    /// first, a failed send) is made up for by the others' periodic catch-up.
    func noteTemplatesChanged(_ tenant: TenantID) {
        let start = pendingNotices.withLock { pending -> Bool in
            pending.tenants.insert(tenant)
            guard !pending.sending else { return false }
            pending.sending = true
            return true
        }
        guard start else { return }
        Task { [self] in
            while true {
                let tenants = pendingNotices.withLock { pending -> Set<TenantID> in
                    defer { pending.tenants.removeAll() }
                    if pending.tenants.isEmpty { pending.sending = false }
                    return pending.tenants
                }
                guard !tenants.isEmpty else { return }
                let instance = instance
                do {
                    try await database.withTransaction(context: "gallery notice") { connection in
                        try await TemplateStore.notify(tenants.sorted { $0.rawValue < $1.rawValue }.map { GalleryChange(instance: instance, tenant: $0, kind: .changed) }, on: connection)
                    }
                } catch {
                    logger.warning("gallery notice not sent; other instances catch up by their periodic poll", metadata: ["tenants": "\(tenants.count)", "error": "\(error)"])
                }
                // Writes meanwhile wait for the next notice: one per tenant per interval.
                try? await Task.sleep(for: Self.galleryNoticeInterval)
            }
        }
    }

    /// A notice from the channel, which any role that can connect may send (`pg_notify`): each
    /// kind only makes this instance read the database again — a notice never removes a
    /// template by its word alone (helper-71: a forged "erased" hid an enrolled subject from
    /// identification until the tenant's galleries next reloaded).
    private func apply(_ change: GalleryChange) {
        switch change.kind {
        case .changed:
            requestCatchUp(change.tenant)
        case .enrolled, .migrated:
            if change.kind == .migrated { dropIfGone(change.tenant, change.subject, exceptVersion: change.keyVersion) }
            let key = galleryKey(change.tenant, change.keyVersion)
            guard galleries.withLock({ $0[key] != nil }) else { return }
            // The token itself is not in the payload: read the one row.
            Task { [self] in
                do {
                    let token = try await database.withTenant(change.tenant, context: "gallery update") { connection in
                        try await TemplateStore.get(subject: change.subject, keyVersion: change.keyVersion, on: connection)
                    }
                    if let token { galleryEnrol(change.tenant, change.subject, token) }
                } catch {
                    galleries.withLock { $0[key] = nil }
                }
            }
        case .erased:
            dropIfGone(change.tenant, change.subject)
        case .reset:
            let prefix = change.tenant.rawValue + "/"
            galleries.withLock { galleries in
                for key in galleries.keys where key.hasPrefix(prefix) { galleries[key] = nil }
            }
        }
    }

    /// Removes the subject from the tenant's galleries of the versions it has no template of now
    /// (read after the notice, so after the commit that sent it), but `exceptVersion`'s. A failed
    /// read drops the tenant's galleries: they reload from the database on their next use.
    private func dropIfGone(_ tenant: TenantID, _ subject: String, exceptVersion: Int? = nil) {
        let prefix = tenant.rawValue + "/"
        guard galleries.withLock({ $0.keys.contains { $0.hasPrefix(prefix) } }) else { return }
        Task { [self] in
            do {
                let stored = Set(try await database.withTenant(tenant, context: "gallery removal") { connection in
                    try await TemplateStore.keyVersions(subject: subject, on: connection)
                })
                galleries.withLock { galleries in
                    for (key, held) in galleries where key.hasPrefix(prefix) && held.keyVersion != exceptVersion && !stored.contains(held.keyVersion) {
                        galleries[key]!.gallery.remove(subject)
                    }
                }
            } catch {
                galleryReset(tenant)
            }
        }
    }

    func galleryEnrol(_ tenant: TenantID, _ subject: String, _ token: BiometricToken) {
        galleryEnrol(tenant, subject, token.stored)
    }

    func galleryEnrol(_ tenant: TenantID, _ subject: String, _ template: StoredTemplate) {
        let key = galleryKey(tenant, template.keyVersion)
        let held = galleries.withLock { galleries in
            guard galleries[key] != nil else { return false }
            galleries[key]!.gallery.enrol(subject, template)
            return true
        }
        if held { enforceGalleryMemoryLimit(keeping: key) }
    }

    /// Removes `subjects` from the tenant's galleries (all of them, or all but `exceptVersion`'s).
    func galleryRemove(_ tenant: TenantID, _ subjects: [String], exceptVersion: Int? = nil) {
        let prefix = tenant.rawValue + "/"
        let kept = exceptVersion.map { galleryKey(tenant, $0) }
        galleries.withLock { galleries in
            for key in galleries.keys where key.hasPrefix(prefix) && key != kept {
                for subject in subjects { galleries[key]!.gallery.remove(subject) }
            }
        }
    }

    func galleryReset(_ tenant: TenantID) {
        apply(GalleryChange(instance: "", tenant: tenant, kind: .reset))
    }

    func galleryChange(_ tenant: TenantID, _ kind: GalleryChange.Kind, subject: String = "") -> GalleryChange {
        GalleryChange(instance: instance, tenant: tenant, kind: kind, subject: subject)
    }

    private func galleryKey(_ tenant: TenantID, _ version: Int) -> String { "\(tenant.rawValue)/\(version)" }
}

/// A gallery in memory with what its polls need: whose and which version it is, which load
/// made it, and the watermark its next poll starts from (``TemplateStore/changeWatermark(on:)``).
struct SyncedGallery: Sendable {
    var gallery: TokenGallery
    let tenant: TenantID
    let keyVersion: Int
    let load: UInt64
    var watermark: UInt64
}

/// One identification candidate: a pseudonymous reference and a decision, never a score.
public struct IdentifiedCandidate: Sendable, Hashable {
    public let subject: String
    public let decision: Decision
}
