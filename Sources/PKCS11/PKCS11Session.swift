internal import CPKCS11
public import SecureMemory

/// An open PKCS#11 session.
///
/// A session has one owner at a time: it is not `Sendable`, so only the code that opened it
/// (in Custos, the session pool's worker threads) can use or close it. Closing is explicit:
/// SoftHSM crashes when sessions are closed under load, so closing is never left to `deinit`.
public struct PKCS11Session {
    public let module: PKCS11Module
    public let slot: SlotID
    /// The raw `CK_SESSION_HANDLE`, for diagnostics.
    public let handle: UInt

    init(module: PKCS11Module, slot: SlotID, handle: UInt) {
        self.module = module
        self.slot = slot
        self.handle = handle
    }

    private var cHandle: CK_SESSION_HANDLE { CK_SESSION_HANDLE(handle) }
    private var functions: CK_FUNCTION_LIST { module.functions }

    /// `C_CloseSession`.
    public func close() throws {
        try module.call(.closeSession) { functions.C_CloseSession(cHandle) }
    }

    /// `C_GetSessionInfo`: the session state (`CKS_*`).
    public func state() throws -> UInt {
        var info = CK_SESSION_INFO()
        try module.call(.getSessionInfo) { functions.C_GetSessionInfo(cHandle, &info) }
        return UInt(info.state)
    }

    // MARK: Login

    /// `C_Login`. The PIN is lent to the module for the call only.
    public func login(_ userType: UserType, pin: SecretBytes) throws {
        try pin.withCBytes { pointer, length in
            // A login rewrites SoftHSM's token file: see PKCS11Module.tokenFiles.
            try module.call(.login) { module.withTokenFileWrite { functions.C_Login(cHandle, CK_USER_TYPE(userType.rawValue), pointer, CK_ULONG(length)) } }
        }
    }

    /// `C_Logout`.
    public func logout() throws {
        try module.call(.logout) { functions.C_Logout(cHandle) }
    }

    /// `C_InitPIN` (security officer session): sets the user PIN.
    public func initPIN(_ pin: SecretBytes) throws {
        try pin.withCBytes { pointer, length in
            try module.call(.initPIN) { module.withTokenFileWrite { functions.C_InitPIN(cHandle, pointer, CK_ULONG(length)) } }
        }
    }

    // MARK: Random

    /// `C_GenerateRandom`.
    public func generateRandom(count: Int) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: count)
        try fillRandom(&output)
        return output
    }

    /// `C_GenerateRandom` straight into protected storage, for key material and PINs.
    public func generateSecret(count: Int) throws -> SecretBytes {
        try SecretBytes(count: count) { buffer in
            guard count > 0 else { return }
            try module.call(.generateRandom) {
                functions.C_GenerateRandom(cHandle, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), CK_ULONG(count))
            }
        }
    }

    private func fillRandom(_ output: inout [UInt8]) throws {
        guard !output.isEmpty else { return }
        let count = output.count
        try output.withUnsafeMutableBufferPointer { buffer in
            try module.call(.generateRandom) { functions.C_GenerateRandom(cHandle, buffer.baseAddress, CK_ULONG(count)) }
        }
    }

    // MARK: Single-part operations

    /// `C_DigestInit` + `C_Digest`.
    public func digest(_ mechanism: Mechanism, data: some PKCS11Bytes) throws -> [UInt8] {
        try mechanism.withCMechanism { mech in
            try module.call(.digestInit) { functions.C_DigestInit(cHandle, mech) }
        }
        return try output(.digest, expected: mechanism.outputLength(forInput: 0, encrypting: true), data: data) { input, inputLength, output, outputLength in
            functions.C_Digest(cHandle, input, inputLength, output, outputLength)
        }
    }

    /// `C_SignInit` + `C_Sign` (MACs and signatures).
    public func sign(_ mechanism: Mechanism, key: ObjectHandle, data: some PKCS11Bytes) throws -> [UInt8] {
        try mechanism.withCMechanism { mech in
            try module.call(.signInit) { functions.C_SignInit(cHandle, mech, CK_OBJECT_HANDLE(key.rawValue)) }
        }
        return try output(.sign, expected: mechanism.outputLength(forInput: 0, encrypting: true), data: data) { input, inputLength, output, outputLength in
            functions.C_Sign(cHandle, input, inputLength, output, outputLength)
        }
    }

    /// `C_VerifyInit` + `C_Verify`. A signature that does not verify answers `false`; any other
    /// failure throws.
    public func verify(_ mechanism: Mechanism, key: ObjectHandle, data: some PKCS11Bytes, signature: [UInt8]) throws -> Bool {
        try mechanism.withCMechanism { mech in
            try module.call(.verifyInit) { functions.C_VerifyInit(cHandle, mech, CK_OBJECT_HANDLE(key.rawValue)) }
        }
        do {
            try data.withCBytes { input, inputLength in
                try signature.withCBytes { sig, sigLength in
                    try module.call(.verify) { functions.C_Verify(cHandle, input, CK_ULONG(inputLength), sig, CK_ULONG(sigLength)) }
                }
            }
            return true
        } catch let error as PKCS11Error where error.returnValue == .signatureInvalid || error.returnValue == .signatureLenRange {
            return false
        }
    }

    /// `C_EncryptInit` + `C_Encrypt`.
    public func encrypt(_ mechanism: Mechanism, key: ObjectHandle, data: some PKCS11Bytes) throws -> [UInt8] {
        try mechanism.withCMechanism { mech in
            try module.call(.encryptInit) { functions.C_EncryptInit(cHandle, mech, CK_OBJECT_HANDLE(key.rawValue)) }
        }
        let length = data.withUnsafeBytes(\.count)
        return try output(.encrypt, expected: mechanism.outputLength(forInput: length, encrypting: true), data: data) { input, inputLength, output, outputLength in
            functions.C_Encrypt(cHandle, input, inputLength, output, outputLength)
        }
    }

    /// `C_DecryptInit` + `C_Decrypt`.
    public func decrypt(_ mechanism: Mechanism, key: ObjectHandle, data: some PKCS11Bytes) throws -> [UInt8] {
        try mechanism.withCMechanism { mech in
            try module.call(.decryptInit) { functions.C_DecryptInit(cHandle, mech, CK_OBJECT_HANDLE(key.rawValue)) }
        }
        let length = data.withUnsafeBytes(\.count)
        // GCM may need the whole ciphertext length as scratch before it trims the tag.
        let expected = mechanism.outputLength(forInput: length, encrypting: false).map { Swift.max($0, length) }
        return try output(.decrypt, expected: expected, data: data) { input, inputLength, output, outputLength in
            functions.C_Decrypt(cHandle, input, inputLength, output, outputLength)
        }
    }

    /// Runs a single-part call that writes output. With a known output size it is one call;
    /// otherwise (or if the module wants more room) it asks for the size first, which PKCS#11
    /// allows without ending the operation.
    private func output(
        _ function: PKCS11Function,
        expected: Int?,
        data: some PKCS11Bytes,
        _ call: (UnsafeMutablePointer<UInt8>, CK_ULONG, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<CK_ULONG>) -> CK_RV
    ) throws -> [UInt8] {
        try data.withCBytes { input, inputLength in
            var capacity = expected ?? 0
            if expected == nil {
                var needed: CK_ULONG = 0
                try module.call(function) { call(input, CK_ULONG(inputLength), nil, &needed) }
                capacity = Int(needed)
            }
            while true {
                var produced = CK_ULONG(capacity)
                var tooSmall = false
                let result = try [UInt8](unsafeUninitializedCapacity: Swift.max(capacity, 1)) { buffer, initialized in
                    initialized = 0
                    do {
                        try module.call(function) { call(input, CK_ULONG(inputLength), buffer.baseAddress, &produced) }
                        initialized = Int(produced)
                    } catch let error as PKCS11Error where error.returnValue == .bufferTooSmall && Int(produced) > capacity {
                        tooSmall = true
                    }
                }
                if !tooSmall { return result }
                capacity = Int(produced)
            }
        }
    }

    // MARK: Objects

    /// `C_GenerateKey`.
    public func generateKey(_ mechanism: Mechanism, template: [Attribute]) throws -> ObjectHandle {
        var handle: CK_OBJECT_HANDLE = 0
        try mechanism.withCMechanism { mech in
            try template.withTemplate { attributes, count in
                try module.call(.generateKey) { functions.C_GenerateKey(cHandle, mech, attributes, count, &handle) }
            }
        }
        return ObjectHandle(rawValue: UInt(handle))
    }

    /// `C_GenerateKeyPair`: returns (public key, private key).
    public func generateKeyPair(
        _ mechanism: Mechanism, publicTemplate: [Attribute], privateTemplate: [Attribute]
    ) throws -> (publicKey: ObjectHandle, privateKey: ObjectHandle) {
        var publicHandle: CK_OBJECT_HANDLE = 0
        var privateHandle: CK_OBJECT_HANDLE = 0
        try mechanism.withCMechanism { mech in
            try publicTemplate.withTemplate { publicAttributes, publicCount in
                try privateTemplate.withTemplate { privateAttributes, privateCount in
                    try module.call(.generateKeyPair) {
                        functions.C_GenerateKeyPair(
                            cHandle, mech, publicAttributes, publicCount, privateAttributes, privateCount,
                            &publicHandle, &privateHandle
                        )
                    }
                }
            }
        }
        return (ObjectHandle(rawValue: UInt(publicHandle)), ObjectHandle(rawValue: UInt(privateHandle)))
    }

    /// `C_CreateObject`.
    public func createObject(_ template: [Attribute]) throws -> ObjectHandle {
        var handle: CK_OBJECT_HANDLE = 0
        try template.withTemplate { attributes, count in
            try module.call(.createObject) { functions.C_CreateObject(cHandle, attributes, count, &handle) }
        }
        return ObjectHandle(rawValue: UInt(handle))
    }

    /// `C_CopyObject`, with `template` overriding attributes of the copy.
    public func copyObject(_ object: ObjectHandle, template: [Attribute]) throws -> ObjectHandle {
        var handle: CK_OBJECT_HANDLE = 0
        try template.withTemplate { attributes, count in
            try module.call(.copyObject) {
                functions.C_CopyObject(cHandle, CK_OBJECT_HANDLE(object.rawValue), attributes, count, &handle)
            }
        }
        return ObjectHandle(rawValue: UInt(handle))
    }

    /// `C_DestroyObject`.
    public func destroyObject(_ object: ObjectHandle) throws {
        try module.call(.destroyObject) { functions.C_DestroyObject(cHandle, CK_OBJECT_HANDLE(object.rawValue)) }
    }

    /// `C_FindObjectsInit` / `C_FindObjects` / `C_FindObjectsFinal`. Slow on file-backed tokens
    /// (~20 ms with 1,000 objects on SoftHSM): resolve once and cache, never on a hot path.
    public func findObjects(_ template: [Attribute], limit: Int = 64) throws -> [ObjectHandle] {
        try template.withTemplate { attributes, count in
            try module.call(.findObjectsInit) { functions.C_FindObjectsInit(cHandle, attributes, count) }
        }
        var found = [ObjectHandle]()
        var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 16)
        do {
            while found.count < limit {
                var returned: CK_ULONG = 0
                try module.call(.findObjects) { functions.C_FindObjects(cHandle, &batch, CK_ULONG(batch.count), &returned) }
                if returned == 0 { break }
                found += batch.prefix(Int(returned)).map { ObjectHandle(rawValue: UInt($0)) }
            }
        } catch {
            try? module.call(.findObjectsFinal) { functions.C_FindObjectsFinal(cHandle) }
            throw error
        }
        try module.call(.findObjectsFinal) { functions.C_FindObjectsFinal(cHandle) }
        return Array(found.prefix(limit))
    }

    /// `C_GetAttributeValue` for one attribute, as raw bytes.
    /// - Throws: ``PKCS11Error`` with `CKR_ATTRIBUTE_SENSITIVE` for a sensitive key's value.
    public func attribute(_ type: AttributeType, of object: ObjectHandle) throws -> [UInt8] {
        var attribute = CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(type.rawValue), pValue: nil, ulValueLen: 0)
        try module.call(.getAttributeValue) {
            functions.C_GetAttributeValue(cHandle, CK_OBJECT_HANDLE(object.rawValue), &attribute, 1)
        }
        let length = Int(attribute.ulValueLen)
        return try [UInt8](unsafeUninitializedCapacity: Swift.max(length, 1)) { buffer, initialized in
            attribute.pValue = UnsafeMutableRawPointer(buffer.baseAddress)
            try module.call(.getAttributeValue) {
                functions.C_GetAttributeValue(cHandle, CK_OBJECT_HANDLE(object.rawValue), &attribute, 1)
            }
            initialized = Int(attribute.ulValueLen)
        }
    }

    /// A boolean attribute (`CKA_SENSITIVE`, `CKA_EXTRACTABLE`, …).
    public func boolAttribute(_ type: AttributeType, of object: ObjectHandle) throws -> Bool {
        try attribute(type, of: object).first.map { $0 != 0 } ?? false
    }

    /// A `CK_ULONG` attribute (`CKA_CLASS`, `CKA_KEY_TYPE`, `CKA_VALUE_LEN`).
    public func ulongAttribute(_ type: AttributeType, of object: ObjectHandle) throws -> UInt {
        let bytes = try attribute(type, of: object)
        guard bytes.count == MemoryLayout<CK_ULONG>.size else { return 0 }
        return UInt(bytes.withUnsafeBytes { $0.loadUnaligned(as: CK_ULONG.self) })
    }

    /// `C_SetAttributeValue`.
    public func setAttributes(_ template: [Attribute], of object: ObjectHandle) throws {
        try template.withTemplate { attributes, count in
            try module.call(.setAttributeValue) {
                functions.C_SetAttributeValue(cHandle, CK_OBJECT_HANDLE(object.rawValue), attributes, count)
            }
        }
    }

    // MARK: Wrapping

    /// `C_WrapKey`: `key` encrypted under `wrappingKey`.
    public func wrapKey(_ mechanism: Mechanism, wrappingKey: ObjectHandle, key: ObjectHandle) throws -> [UInt8] {
        try mechanism.withCMechanism { mech in
            var needed: CK_ULONG = 0
            try module.call(.wrapKey) {
                functions.C_WrapKey(cHandle, mech, CK_OBJECT_HANDLE(wrappingKey.rawValue), CK_OBJECT_HANDLE(key.rawValue), nil, &needed)
            }
            return try [UInt8](unsafeUninitializedCapacity: Swift.max(Int(needed), 1)) { buffer, initialized in
                try module.call(.wrapKey) {
                    functions.C_WrapKey(
                        cHandle, mech, CK_OBJECT_HANDLE(wrappingKey.rawValue), CK_OBJECT_HANDLE(key.rawValue),
                        buffer.baseAddress, &needed
                    )
                }
                initialized = Int(needed)
            }
        }
    }

    /// `C_UnwrapKey`: a new key object with `template`, from `wrapped` under `unwrappingKey`.
    public func unwrapKey(
        _ mechanism: Mechanism, unwrappingKey: ObjectHandle, wrapped: [UInt8], template: [Attribute]
    ) throws -> ObjectHandle {
        var handle: CK_OBJECT_HANDLE = 0
        try mechanism.withCMechanism { mech in
            try wrapped.withCBytes { blob, blobLength in
                try template.withTemplate { attributes, count in
                    try module.call(.unwrapKey) {
                        functions.C_UnwrapKey(
                            cHandle, mech, CK_OBJECT_HANDLE(unwrappingKey.rawValue), blob, CK_ULONG(blobLength),
                            attributes, count, &handle
                        )
                    }
                }
            }
        }
        return ObjectHandle(rawValue: UInt(handle))
    }
}

@available(*, unavailable, message: "a PKCS#11 session has one owner; only the session pool moves it")
extension PKCS11Session: Sendable {}

extension Mechanism {
    /// Lends a `CK_MECHANISM` (and its parameter block) for the duration of `body`.
    func withCMechanism<R>(_ body: (UnsafeMutablePointer<CK_MECHANISM>) throws -> R) rethrows -> R {
        let type = CK_MECHANISM_TYPE(self.type.rawValue)
        switch self {
        case .aesGCM(let iv, let additionalData):
            return try iv.withCBytes { ivPointer, ivLength in
                try additionalData.withCBytes { aadPointer, aadLength in
                    var parameters = CK_GCM_PARAMS(
                        pIv: ivPointer, ulIvLen: CK_ULONG(ivLength), ulIvBits: CK_ULONG(ivLength * 8),
                        pAAD: aadPointer, ulAADLen: CK_ULONG(aadLength), ulTagBits: 128
                    )
                    return try withUnsafeMutablePointer(to: &parameters) { parametersPointer in
                        var mechanism = CK_MECHANISM(
                            mechanism: type, pParameter: UnsafeMutableRawPointer(parametersPointer),
                            ulParameterLen: CK_ULONG(MemoryLayout<CK_GCM_PARAMS>.size)
                        )
                        return try body(&mechanism)
                    }
                }
            }
        default:
            var mechanism = CK_MECHANISM(mechanism: type, pParameter: nil, ulParameterLen: 0)
            return try body(&mechanism)
        }
    }
}
