public import Custody
public import CustosModel
public import Foundation
public import Logging
public import Storage
public import Tokenization
public import Verification

/// The verification side over a ``CustodyGraph``: custody behind the verification core's
/// ports, features → tokens → decisions, subject rights, retention and key-destruction
/// approvals — what `serve` (and the RPC benchmark) run.
public struct VerificationGraph: Sendable {
    /// What the verification core needs besides custody.
    public struct Settings: Sendable {
        /// Subjects held in memory per tenant and biometric version for 1:N (the
        /// global memory limit bounds their sum).
        public var galleryCapacity = 1_000_000
        /// Bytes all tenants' 1:N galleries together may hold (default 1.5 GiB: 1.26M subjects).
        public var galleryMemoryLimit = VerificationService.defaultGalleryMemoryLimit
        /// 1:1 verifications one subject may have per window.
        public var verificationAttempts = VerificationAttemptLimit.default
        /// How long a tenant's policy is reused before it is read again while the cache-change
        /// listener is connected (another instance's change is announced and forgotten at once;
        /// 0.5 s at most while it is not). Tests that change a policy and act on it at once use zero.
        public var policyCacheLifetime = TenantPolicies.defaultCacheLifetime
        /// The budget of tenants without their own, shared across instances; `nil`: no
        /// tokenization limiter at all (never in `serve`: for measuring the tokenizer alone).
        public var tokenizationBudget: TokenizationBudget? = VerificationGraph.defaultTokenizationBudget
        /// How long an instance's lease on the shared budget lasts (``TokenizationRateLimiter``).
        public var tokenizationLeaseLifetime = Duration.seconds(10)
        /// The clock of sessions, attempt windows, subject rights, retention and destruction
        /// approvals; tests move a clock of their own by hand.
        public var now: @Sendable () -> Date = { Date() }
        /// How often `serve` looks for biometric rotation overlaps whose window ended (and once
        /// at start-up): a window ends at most this late (its old version stops matching on
        /// time regardless; only the clean-up waits).
        public var biometricOverlapCheckInterval: Duration = .seconds(900)
        /// Fault injection for tests: throws inside a biometric migration's transaction.
        public var biometricMigrationFault: (@Sendable () throws -> Void)? = nil
        /// Crash tests make a re-seal run fail at a step; `nil` in `serve`.
        public var resealHook: (@Sendable (SessionResealJob.Step) throws -> Void)?
        /// Crash tests only: reached at each step of a re-seal, a biometric migration and an
        /// offboarding that has no hook of its own above (``CustosRuntime/Options/stepFault``).
        public var stepFault: StepFault?

        public init() {}
    }

    public let custody: CustodyGraph
    public let recorder: AuditLogRecorder
    public let sealer: CustodyPersonalDataSealer
    public let referencer: CustodySubjectReferencer
    public let recordSeals: CustodyRecordSealer
    public let policies: TenantPolicies
    /// Certificate revocations, tenant statuses and policy changes from every instance
    /// (``CacheChange``): the policies here and the RPC's authenticator subscribe to it.
    public let changes: CacheChangeListener
    public let core: VerificationService
    public let sessions: VerificationSessions
    /// `nil` only when ``Settings/tokenizationBudget`` is.
    public let limiter: TokenizationRateLimiter?
    public let tokenizer: BiometricTokenizer
    public let flow: BiometricVerification
    public let rights: SubjectRights
    public let retention: RetentionJob
    public let approvals: KeyDestructionApprovals
    /// `custos key reseal --purpose data`.
    public let reseal: SessionResealJob
    public let offboarding: TenantOffboarding
    /// Two officers ending a biometric rotation's overlap early.
    public let overlapEnds: BiometricOverlapEndApprovals
    let logger: Logger
    let biometricOverlapCheckInterval: Duration
    let now: @Sendable () -> Date

    /// The tokenization budget of a tenant that has not set its own: the default policy's, the
    /// one place it is written (``TenantPolicy/default``).
    public static let defaultTokenizationBudget = TokenizationBudget(perMinute: TenantPolicy.default.tokenizationsPerMinute)

    public init(custody: CustodyGraph, settings: Settings = Settings(), logger: Logger) {
        let (pool, database, keyring, audit) = (custody.pool, custody.database, custody.keyring, custody.audit)
        self.custody = custody
        recorder = AuditLogRecorder(audit)
        sealer = CustodyPersonalDataSealer(pool: pool, keyring: keyring)
        referencer = CustodySubjectReferencer(pool: pool, keyring: keyring)
        recordSeals = CustodyRecordSealer(keyring: keyring)
        changes = CacheChangeListener(database: database, logger: logger)
        policies = TenantPolicies(database: database, audit: recorder, cacheLifetime: settings.policyCacheLifetime, changes: changes)
        core = VerificationService(
            database: database, recordSeals: recordSeals, policies: policies, galleryCapacity: settings.galleryCapacity,
            galleryMemoryLimit: settings.galleryMemoryLimit, attemptLimit: settings.verificationAttempts, audit: recorder, logger: logger,
            now: settings.now,
            migrationFault: settings.biometricMigrationFault ?? settings.stepFault.map { fault -> @Sendable () throws -> Void in
                { try fault.reached("migration.templateStored") }
            }
        )
        sessions = VerificationSessions(database: database, sealer: sealer, referencer: referencer, recordSeals: recordSeals, now: settings.now)
        limiter = settings.tokenizationBudget.map {
            TokenizationRateLimiter(database: database, defaultBudget: $0, audit: audit, leaseLifetime: settings.tokenizationLeaseLifetime)
        }
        tokenizer = BiometricTokenizer(pool: pool, keyring: keyring, limiter: limiter)
        flow = BiometricVerification(sessions: sessions, core: core, tokenizer: tokenizer, keyring: keyring)
        rights = SubjectRights(database: database, core: core, sealer: sealer, referencer: referencer, audit: recorder, now: settings.now)
        retention = RetentionJob(database: database, core: core, audit: recorder, now: settings.now)
        approvals = KeyDestructionApprovals(database: database, keyring: keyring, audit: audit, now: settings.now)
        reseal = SessionResealJob(database: database, sealer: sealer, activeVersion: sealer, audit: recorder, hook: settings.resealHook ?? settings.stepFault?.hook("reseal"))
        offboarding = TenantOffboarding(
            database: database, keyring: keyring, audit: audit, now: settings.now,
            stepHook: settings.stepFault?.hook("offboarding")
        )
        overlapEnds = BiometricOverlapEndApprovals(database: database, keyring: keyring, audit: audit, now: settings.now)
        self.logger = logger
        biometricOverlapCheckInterval = settings.biometricOverlapCheckInterval
        now = settings.now
    }

    /// Completes or rolls back rotations a crash interrupted, then keeps the API-key revocation,
    /// gallery, key-state and cache-change listeners, and the closing of ended biometric overlaps, running
    /// until cancelled.
    public func runBackground() async {
        do {
            let done = try await custody.keyring.reconcile()
            if !done.isEmpty { logger.notice("reconciled interrupted key rotations", metadata: ["count": "\(done.count)"]) }
        } catch {
            logger.error("start-up reconciliation failed; run `custos key reconcile`", metadata: ["error": "\(error)"])
        }
        do {
            try await custody.keyring.reconcileRecordSeals()
        } catch {
            logger.error("could not check whether every template carries its MAC", metadata: ["error": "\(error)"])
        }
        // Ed25519 keys made before escrow are lost with their token: name them once per start.
        await custody.keyring.warnAboutSingleTokenKeys()
        await withDiscardingTaskGroup { group in
            group.addTask { await custody.apiKeys.runRevocationListener() }
            group.addTask { await core.runGalleryListener() }
            group.addTask { await custody.keyring.runKeyStateListener() }
            group.addTask { await changes.run() }
            group.addTask { await closeEndedBiometricOverlaps() }
        }
    }

    /// Closes ended biometric overlaps now and then every ``Settings/biometricOverlapCheckInterval``
    /// until cancelled (each close is one transaction: a crash mid-way leaves the version
    /// `retiring` past its end, which no longer matches and is closed by the next run).
    func closeEndedBiometricOverlaps() async {
        while !Task.isCancelled {
            do {
                let closed = try await custody.keyring.closeEndedBiometricOverlaps(now: now())
                if !closed.isEmpty { logger.notice("biometric overlaps closed", metadata: ["count": "\(closed.count)"]) }
            } catch {
                logger.warning("could not look for ended biometric overlaps; retrying later", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: biometricOverlapCheckInterval)
        }
    }

    /// Completes due tenant offboardings every `interval` until cancelled (`custos serve`, on
    /// every instance: a second run of one finds the steps done and only finishes what is left).
    public func runOffboardingSweep(every interval: Duration) async {
        while !Task.isCancelled {
            do {
                let (completed, refused) = try await offboarding.sweep(officer: "system:offboarding-sweep")
                if !completed.isEmpty { logger.notice("completed tenant offboardings", metadata: ["count": "\(completed.count)"]) }
                for (row, error) in refused {
                    logger.warning("tenant offboarding not completed; retrying at the next sweep", metadata: [
                        "request": "\(row.id.uuidString.lowercased())", "error": "\(error)",
                    ])
                }
            } catch {
                if !Task.isCancelled { logger.warning("tenant offboarding sweep failed", metadata: ["error": "\(error)"]) }
            }
            try? await Task.sleep(for: interval)
        }
    }
}
