internal import CPKCS11
public import SecureMemory
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A loaded PKCS#11 module (a shared library such as SoftHSM2 or a vendor's client library).
///
/// The module is loaded with `dlopen` from an absolute path and stays loaded for the life of
/// the process: unloading a library that may still have threads or callbacks is not worth
/// the risk for a long-running service.
public final class PKCS11Module: @unchecked Sendable {
    // SAFETY: `functions` is a copy of the module's function list taken once in `init` and never
    // written again; PKCS#11 functions are thread-safe once `C_Initialize` had
    // `CKF_OS_LOCKING_OK`. `faultInjector` is guarded by its mutex, and `faultsArmed` is atomic.
    let functions: CK_FUNCTION_LIST
    public let path: String
    /// The string `C_Initialize` passes as `pReserved`, for modules that need one (NSS softokn:
    /// `configdir='sql:/path' certPrefix='' keyPrefix='' secmod='secmod.db'`, the value p11-kit
    /// calls `x-init-reserved`); `nil` for every other module, as the standard asks.
    public let initArguments: String?
    private let faultsArmed = Atomic<Bool>(false)
    private let faultInjector = Mutex<(any PKCS11FaultInjector)?>(nil)
    /// How long a call waits for another process's hold on the token folder, and who is told
    /// when one gave up (``onTokenFolderWaitAbandoned(_:)``).
    private let tokenFolderWait = Mutex<(patience: Duration, abandoned: (@Sendable (String) -> Void)?)>(
        (SoftHSMTokenFolderLock.patience, nil)
    )

    /// Serialises every call that reads or changes a module's slot table, across all loaded
    /// modules of the process (two `PKCS11Module`s of one path share one library instance).
    /// SoftHSM 2.6.1 edits its slot map inside `C_GetSlotList` without a lock: when every token
    /// is initialised, the size query inserts a new empty slot, so two concurrent queries insert
    /// the same slot id and the second aborts the process (`SlotManager::insertToken`,
    /// `assert(result.second)`), and a slot lookup (`C_OpenSession`, `C_GetTokenInfo`) meanwhile
    /// walks a map being rebalanced. These calls are rare (start-up, recovery, probes), so one
    /// lock costs nothing on the data path.
    private static let slotTable = Mutex<Void>(())

    /// Serialises, across all loaded modules of the process, the calls that read or rewrite a
    /// file-based token store: `C_Initialize`, `C_Finalize`, `C_InitToken`, `C_Login` and
    /// `C_InitPIN`. Held for the C call only (inside ``call(_:_:)``, so an injected fault's wait
    /// holds nothing), and nothing is taken while it is held.
    ///
    /// - SoftHSM 2.6.1 parses its configuration file with `strtok`, whose position glibc keeps
    ///   once per process: two instances initialising at once (an isolated copy and the shared
    ///   module in the tests; a replica's recovery beside another token's start-up) can each lose
    ///   lines of the other's parse. One CI run's shared module missed `directories.tokendir` and
    ///   silently used SoftHSM's default token folder (helper-52: 6 wrong folders and 2 failed
    ///   initialisations in 500,000 concurrent pairs).
    /// - `C_Login` (failed or not), `C_InitToken` and `C_InitPIN` rewrite the token's
    ///   `token.object`, which stays empty for milliseconds (truncated, unlocked, then written);
    ///   a `C_Initialize` scanning the folder meanwhile reads no serial, gives that token slot 0,
    ///   and with two such tokens aborts the process (`SlotManager::insertToken`,
    ///   `assert(result.second)`: seen once in a full test run; helper-59 reproduced it in 4 % of
    ///   scans with four instances logging in 50 times a second, none under this lock). With one
    ///   such token, the scan silently misses it until the next initialisation.
    ///
    /// Not the slot-table lock: a network HSM's `C_Initialize` may block for its connect timeout,
    /// and the other tokens' session openings must not wait behind it. The calls other than
    /// `C_Initialize` and `C_Finalize` take it only on SoftHSM (``rewritesTokenFiles``), so that
    /// a network HSM's login hanging for its timeout does not hold up a replica's login or
    /// recovery. Other Custos processes on the same token folder: ``SoftHSMTokenFolderLock``,
    /// taken before it.
    private static let tokenFiles = Mutex<Void>(())

    /// Whether this module rewrites token files on login (SoftHSM, by `C_GetInfo`), learnt at
    /// each initialisation; until then assumed, so another module's first `C_Initialize` (and
    /// one that fails before `C_GetInfo`) also takes SoftHSM's folder lock when the host has a
    /// SoftHSM configuration: a wait of one C call, at most the patience.
    private let rewritesTokenFiles = Atomic<Bool>(true)

    /// Runs `C_Initialize` or `C_Finalize` under ``tokenFiles`` and, on a module that keeps
    /// token files, ``SoftHSMTokenFolderLock`` for the other processes — taken first, so that
    /// its wait (up to its patience, behind another process) holds none of this process's locks:
    /// other modules' initialisations (a network HSM replica's recovery) do not wait behind it
    /// (helper-62). Threads of this process exclude each other by it too (each opens the folder
    /// afresh, and `flock` belongs to the open file).
    private func withTokenFiles<R>(_ body: () throws -> R) rethrows -> R {
        let folder = otherProcessesKeptOut()
        defer { folder?.release() }
        return try Self.tokenFiles.withLock { _ in try body() }
    }

    /// The other processes' lock, on a module that keeps token files (`nil` otherwise, or when
    /// it cannot be had: see ``SoftHSMTokenFolderLock``).
    private func otherProcessesKeptOut() -> SoftHSMTokenFolderLock? {
        guard rewritesTokenFiles.load(ordering: .relaxed) else { return nil }
        let (patience, abandoned) = tokenFolderWait.withLock { $0 }
        return SoftHSMTokenFolderLock(patience: patience) { folder in abandoned?(folder) }
    }

    /// Tells `handler` (the folder) each time a call gave up waiting for another process's hold
    /// on SoftHSM's token folder and went on without it: someone has held it for the whole
    /// patience (10 s), far longer than one C call. One handler per module, the last set; `nil`
    /// removes it.
    public func onTokenFolderWaitAbandoned(_ handler: (@Sendable (String) -> Void)?) {
        tokenFolderWait.withLock { $0.abandoned = handler }
    }

    /// Sets how long a call waits for another process's hold on the token folder (tests).
    func setTokenFolderPatience(_ patience: Duration) {
        tokenFolderWait.withLock { $0.patience = patience }
    }

    /// Runs a call that rewrites token files (`C_Login`, `C_InitPIN`;
    /// ``initToken(slot:securityOfficerPIN:label:)`` takes the same locks around the slot
    /// table's) under ``tokenFiles``, on a module that keeps them. Reads are left out:
    /// `C_GetTokenInfo` in the middle of a rewrite answers a token with no label for a moment, a
    /// miss the token selection meets again on its next try, while under this lock every
    /// selection (hundreds of tokens in the test suite's folder) waited behind every scan.
    func withTokenFileWrite<R>(_ body: () throws -> R) rethrows -> R {
        guard rewritesTokenFiles.load(ordering: .relaxed) else { return try body() }
        return try withTokenFiles(body)
    }

    /// Why other processes cannot be kept out of this module's token files (a configuration
    /// SoftHSM cannot read, a folder that cannot be opened or locked), for a warning; `nil` when
    /// they can, or the module keeps no such files. Calls go on without that lock meanwhile.
    public var tokenFolderLockProblem: String? {
        rewritesTokenFiles.load(ordering: .relaxed) ? SoftHSMTokenFolderLock.problem() : nil
    }

    /// Runs a slot-table call under ``slotTable``.
    private func withSlotTable<R>(_ body: () throws -> R) rethrows -> R {
        try Self.slotTable.withLock { _ in try body() }
    }

    /// Loads the module at `path`.
    /// - Parameter initArguments: see ``initArguments``.
    /// - Throws: ``PKCS11ModuleError`` when the path is relative, the library cannot be loaded
    ///   or is not a PKCS#11 module; ``PKCS11Error`` when `C_GetFunctionList` fails.
    public init(path: String, initArguments: String? = nil) throws {
        guard path.hasPrefix("/") else { throw PKCS11ModuleError.relativePath(path) }
        guard let library = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw PKCS11ModuleError.cannotLoad(path: path, reason: reason)
        }
        guard let symbol = dlsym(library, "C_GetFunctionList") else {
            dlclose(library)
            throw PKCS11ModuleError.notAPKCS11Module(path: path)
        }
        let getFunctionList = unsafeBitCast(symbol, to: CK_C_GetFunctionList.self)
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>? = nil
        let rv = getFunctionList(&list)
        guard rv == CKR_OK, let list else {
            throw PKCS11Error(function: .getFunctionList, returnValue: .init(rawValue: UInt(rv)))
        }
        self.functions = list.pointee
        self.path = path
        self.initArguments = initArguments
    }

    // MARK: Calls

    /// Every C call goes through here: it consults the fault injector when one is armed and
    /// turns a non-OK answer into a ``PKCS11Error`` naming the function.
    @inline(__always)
    func call(_ function: PKCS11Function, _ body: () -> CK_RV) throws {
        if faultsArmed.load(ordering: .relaxed),
           let injected = faultInjector.withLock({ $0?.fault(for: function) }) {
            throw PKCS11Error(function: function, returnValue: injected)
        }
        let rv = body()
        if rv != CKR_OK {
            throw PKCS11Error(function: function, returnValue: .init(rawValue: UInt(rv)))
        }
    }

    /// Installs (or, with `nil`, removes) a fault injector consulted before every call.
    /// For fault tests only.
    public func installFaultInjector(_ injector: (any PKCS11FaultInjector)?) {
        faultInjector.withLock { $0 = injector }
        faultsArmed.store(injector != nil, ordering: .relaxed)
    }

    // MARK: Library

    /// `C_Initialize` with `CKF_OS_LOCKING_OK` (and ``initArguments``). Without that flag
    /// SoftHSM turns its own locking off and crashes under concurrent use. An already initialised
    /// library counts as success.
    public func initialize() throws {
        do {
            // The module reads the string during the call only; it holds no secret (no PIN).
            if let initArguments {
                try initArguments.withCString { try initialize(reserved: UnsafeMutableRawPointer(mutating: $0)) }
            } else {
                try initialize(reserved: nil)
            }
        } catch let error as PKCS11Error where error.returnValue == .cryptokiAlreadyInitialized {
        }
        rewritesTokenFiles.store((try? info().manufacturer.hasPrefix("SoftHSM")) ?? true, ordering: .relaxed)
    }

    private func initialize(reserved: UnsafeMutableRawPointer?) throws {
        var arguments = CK_C_INITIALIZE_ARGS(
            CreateMutex: nil, DestroyMutex: nil, LockMutex: nil, UnlockMutex: nil,
            flags: CK_FLAGS(CKF_OS_LOCKING_OK), pReserved: reserved
        )
        try call(.initialize) { withTokenFiles { functions.C_Initialize(&arguments) } }
    }

    /// `C_Finalize`. Only call it when no other call is in flight: SoftHSM crashes otherwise.
    public func finalize() throws {
        try call(.finalize) { withTokenFiles { functions.C_Finalize(nil) } }
    }

    /// `C_GetInfo`.
    public func info() throws -> ModuleInfo {
        var info = CK_INFO()
        try call(.getInfo) { functions.C_GetInfo(&info) }
        return ModuleInfo(
            cryptokiVersion: PKCS11Version(major: info.cryptokiVersion.major, minor: info.cryptokiVersion.minor),
            manufacturer: paddedString(info.manufacturerID),
            libraryDescription: paddedString(info.libraryDescription),
            libraryVersion: PKCS11Version(major: info.libraryVersion.major, minor: info.libraryVersion.minor)
        )
    }

    /// `C_GetSlotList`.
    public func slots(withTokenPresent tokenPresent: Bool = true) throws -> [SlotID] {
        let present = CK_BBOOL(tokenPresent ? 1 : 0)
        return try withSlotTable { try slotList(present) }
    }

    private func slotList(_ present: CK_BBOOL) throws -> [SlotID] {
        // The slot count can change between the two calls (a token was initialised): retry.
        while true {
            var count: CK_ULONG = 0
            try call(.getSlotList) { functions.C_GetSlotList(present, nil, &count) }
            var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
            do {
                try call(.getSlotList) { functions.C_GetSlotList(present, &slots, &count) }
            } catch let error as PKCS11Error where error.returnValue == .bufferTooSmall {
                continue
            }
            return slots.prefix(Int(count)).map { SlotID(rawValue: UInt($0)) }
        }
    }

    /// `C_GetTokenInfo`.
    public func tokenInfo(slot: SlotID) throws -> TokenInfo {
        var info = CK_TOKEN_INFO()
        try withSlotTable {
            try call(.getTokenInfo) { functions.C_GetTokenInfo(CK_SLOT_ID(slot.rawValue), &info) }
        }
        return TokenInfo(
            slot: slot,
            label: paddedString(info.label),
            manufacturer: paddedString(info.manufacturerID),
            model: paddedString(info.model),
            serialNumber: paddedString(info.serialNumber),
            flags: UInt(info.flags),
            maxSessionCount: countOrNil(info.ulMaxSessionCount),
            sessionCount: countOrNil(info.ulSessionCount),
            maxPINLength: Int(info.ulMaxPinLen),
            minPINLength: Int(info.ulMinPinLen),
            hardwareVersion: PKCS11Version(major: info.hardwareVersion.major, minor: info.hardwareVersion.minor),
            firmwareVersion: PKCS11Version(major: info.firmwareVersion.major, minor: info.firmwareVersion.minor)
        )
    }

    /// The one token matching `selector`, looked up afresh (slot ids change when tokens are
    /// initialised).
    /// - Throws: ``PKCS11ModuleError/tokenNotFound(_:)`` or ``PKCS11ModuleError/ambiguousToken(_:count:)``.
    public func findToken(_ selector: TokenSelector) throws -> TokenInfo {
        var matches = [TokenInfo]()
        // Slots to read again, with the error each answered (`nil`: a blank label).
        var unreadable = [(SlotID, PKCS11Error?)]()
        func read(_ slot: SlotID) throws {
            do {
                let info = try tokenInfo(slot: slot)
                switch selector {
                case .label(let label) where info.isInitialized && info.label == label: matches.append(info)
                case .serial(let serial) where info.isInitialized && info.serialNumber == serial: matches.append(info)
                // In the middle of SoftHSM's rewrite of a token's file (another process's login)
                // a read can also answer OK, initialised, with a blank label (helper-61: about
                // once in 2,000 reads). Read again, unless it matched (a token labelled blank
                // on purpose, found by serial).
                case _ where info.isInitialized && info.label.isEmpty: unreadable.append((slot, nil))
                default: break
                }
            } catch let error as PKCS11Error {
                // A token being rewritten by another process on SoftHSM's file store can answer
                // CKR_GENERAL_ERROR for a moment; it must not hide the one we want.
                if error.returnValue != .tokenNotPresent { unreadable.append((slot, error)) }
            }
        }
        for slot in try slots(withTokenPresent: true) { try read(slot) }
        // If some token could not be read and none matched, it may have been the one: look again
        // a few times before saying "not found".
        var attempt = 0
        while matches.isEmpty, !unreadable.isEmpty, attempt < 5 {
            attempt += 1
            usleep(UInt32(10_000 * attempt))
            let again = unreadable
            unreadable = []
            for (slot, _) in again { try read(slot) }
        }
        guard let first = matches.first else {
            if let error = unreadable.lazy.compactMap(\.1).first { throw error }
            throw PKCS11ModuleError.tokenNotFound(selector)
        }
        guard matches.count == 1 else { throw PKCS11ModuleError.ambiguousToken(selector, count: matches.count) }
        return first
    }

    /// `C_GetMechanismList`.
    public func mechanisms(slot: SlotID) throws -> [MechanismType] {
        try withSlotTable {
            var count: CK_ULONG = 0
            try call(.getMechanismList) { functions.C_GetMechanismList(CK_SLOT_ID(slot.rawValue), nil, &count) }
            var list = [CK_MECHANISM_TYPE](repeating: 0, count: Int(count))
            try call(.getMechanismList) { functions.C_GetMechanismList(CK_SLOT_ID(slot.rawValue), &list, &count) }
            return list.prefix(Int(count)).map { MechanismType(rawValue: UInt($0)) }
        }
    }

    /// `C_GetMechanismInfo`.
    public func mechanismInfo(slot: SlotID, _ type: MechanismType) throws -> MechanismInfo {
        var info = CK_MECHANISM_INFO()
        try withSlotTable {
            try call(.getMechanismInfo) {
                functions.C_GetMechanismInfo(CK_SLOT_ID(slot.rawValue), CK_MECHANISM_TYPE(type.rawValue), &info)
            }
        }
        return MechanismInfo(minKeySize: UInt(info.ulMinKeySize), maxKeySize: UInt(info.ulMaxKeySize), flags: UInt(info.flags))
    }

    /// `C_InitToken`: (re)initialises the token in `slot`, destroying its objects.
    /// The label is padded with spaces to 32 bytes as the standard requires.
    public func initToken(slot: SlotID, securityOfficerPIN: SecretBytes, label: String) throws {
        var paddedLabel = [UInt8](repeating: 0x20, count: 32)
        for (index, byte) in label.utf8.prefix(32).enumerated() { paddedLabel[index] = byte }
        // The other processes' lock before the slot table's, so that its wait holds no lock of
        // this process; the in-process token-file lock inside, for the C call only.
        let keepsTokenFiles = rewritesTokenFiles.load(ordering: .relaxed)
        let folder = otherProcessesKeptOut()
        defer { folder?.release() }
        try securityOfficerPIN.withUnsafeBytes { pin in
            try withSlotTable { try call(.initToken) {
                let initToken = {
                    self.functions.C_InitToken(
                        CK_SLOT_ID(slot.rawValue),
                        UnsafeMutablePointer(mutating: pin.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                        CK_ULONG(pin.count),
                        &paddedLabel
                    )
                }
                return keepsTokenFiles ? Self.tokenFiles.withLock { _ in initToken() } : initToken()
            } }
        }
    }

    /// `C_OpenSession` (always serial; read-write unless asked otherwise).
    public func openSession(slot: SlotID, readWrite: Bool = true) throws -> PKCS11Session {
        var handle: CK_SESSION_HANDLE = 0
        let flags = CK_FLAGS(CKF_SERIAL_SESSION) | (readWrite ? CK_FLAGS(CKF_RW_SESSION) : 0)
        try withSlotTable {
            try call(.openSession) { functions.C_OpenSession(CK_SLOT_ID(slot.rawValue), flags, nil, nil, &handle) }
        }
        return PKCS11Session(module: self, slot: slot, handle: UInt(handle))
    }

    /// `C_CloseAllSessions`. Only call it when no call on those sessions is in flight:
    /// SoftHSM crashes otherwise.
    public func closeAllSessions(slot: SlotID) throws {
        try call(.closeAllSessions) { functions.C_CloseAllSessions(CK_SLOT_ID(slot.rawValue)) }
    }
}

/// PKCS#11 pads fixed-width text fields with spaces.
func paddedString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        var bytes = Array(raw)
        while let last = bytes.last, last == 0x20 || last == 0 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// `CK_EFFECTIVELY_INFINITE` (0) and `CK_UNAVAILABLE_INFORMATION` (~0) mean "no number".
private func countOrNil(_ value: CK_ULONG) -> Int? {
    value == 0 || value == CK_ULONG.max ? nil : Int(value)
}

