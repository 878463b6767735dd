internal import CPKCS11
public import SecureMemory

/// A `CKA_*` attribute type.
public struct AttributeType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let `class` = Self(rawValue: 0x000)
    public static let token = Self(rawValue: 0x001)
    public static let `private` = Self(rawValue: 0x002)
    public static let label = Self(rawValue: 0x003)
    public static let application = Self(rawValue: 0x010)
    public static let value = Self(rawValue: 0x011)
    public static let keyType = Self(rawValue: 0x100)
    public static let id = Self(rawValue: 0x102)
    public static let sensitive = Self(rawValue: 0x103)
    public static let encrypt = Self(rawValue: 0x104)
    public static let decrypt = Self(rawValue: 0x105)
    public static let wrap = Self(rawValue: 0x106)
    public static let unwrap = Self(rawValue: 0x107)
    public static let sign = Self(rawValue: 0x108)
    public static let verify = Self(rawValue: 0x10A)
    public static let derive = Self(rawValue: 0x10C)
    public static let valueLength = Self(rawValue: 0x161)
    public static let extractable = Self(rawValue: 0x162)
    public static let local = Self(rawValue: 0x163)
    public static let neverExtractable = Self(rawValue: 0x164)
    public static let alwaysSensitive = Self(rawValue: 0x165)
    public static let modifiable = Self(rawValue: 0x170)
    public static let copyable = Self(rawValue: 0x171)
    public static let destroyable = Self(rawValue: 0x172)
    public static let checkValue = Self(rawValue: 0x090)
    public static let trusted = Self(rawValue: 0x086)
    public static let wrapWithTrusted = Self(rawValue: 0x210)
    public static let ecParams = Self(rawValue: 0x180)
    public static let ecPoint = Self(rawValue: 0x181)
    /// `CKF_ARRAY_ATTRIBUTE | 0x211`: what a wrapping key may wrap.
    public static let wrapTemplate = Self(rawValue: 0x4000_0211)
    /// `CKF_ARRAY_ATTRIBUTE | 0x212`: what every key unwrapped by this key must be.
    public static let unwrapTemplate = Self(rawValue: 0x4000_0212)

    static let names: [UInt: String] = [
        0x000: "CKA_CLASS", 0x001: "CKA_TOKEN", 0x002: "CKA_PRIVATE", 0x003: "CKA_LABEL", 0x010: "CKA_APPLICATION",
        0x011: "CKA_VALUE", 0x100: "CKA_KEY_TYPE", 0x102: "CKA_ID", 0x103: "CKA_SENSITIVE",
        0x104: "CKA_ENCRYPT", 0x105: "CKA_DECRYPT", 0x106: "CKA_WRAP", 0x107: "CKA_UNWRAP",
        0x108: "CKA_SIGN", 0x10A: "CKA_VERIFY", 0x10C: "CKA_DERIVE", 0x161: "CKA_VALUE_LEN",
        0x162: "CKA_EXTRACTABLE", 0x163: "CKA_LOCAL", 0x164: "CKA_NEVER_EXTRACTABLE",
        0x165: "CKA_ALWAYS_SENSITIVE", 0x170: "CKA_MODIFIABLE", 0x171: "CKA_COPYABLE",
        0x172: "CKA_DESTROYABLE", 0x090: "CKA_CHECK_VALUE", 0x086: "CKA_TRUSTED",
        0x210: "CKA_WRAP_WITH_TRUSTED", 0x180: "CKA_EC_PARAMS", 0x181: "CKA_EC_POINT",
        0x4000_0211: "CKA_WRAP_TEMPLATE", 0x4000_0212: "CKA_UNWRAP_TEMPLATE",
    ]

    public var description: String { Self.names[rawValue] ?? "CKA 0x" + String(rawValue, radix: 16) }
}

/// A typed attribute value, as used in templates.
public enum Attribute: Sendable, CustomStringConvertible {
    case `class`(ObjectClass)
    case keyType(KeyType)
    case token(Bool)
    case `private`(Bool)
    case sensitive(Bool)
    case extractable(Bool)
    case modifiable(Bool)
    case copyable(Bool)
    case destroyable(Bool)
    case encrypt(Bool)
    case decrypt(Bool)
    case wrap(Bool)
    case unwrap(Bool)
    case sign(Bool)
    case verify(Bool)
    case derive(Bool)
    case trusted(Bool)
    case wrapWithTrusted(Bool)
    case label(String)
    /// `CKA_APPLICATION` of a data object (`CKO_DATA`): who owns it.
    case application(String)
    case id([UInt8])
    case valueLength(Int)
    /// Key material to import. Held as ``SecretBytes`` and never printed.
    case value(SecretBytes)
    /// `CKA_VALUE` of a data object (`CKO_DATA`) that is not a secret, e.g. an anchored log head.
    case dataValue([UInt8])
    case ecParams([UInt8])
    /// A public key's point (for an imported public key object; `04 20` + 32 bytes for Ed25519).
    case ecPoint([UInt8])
    /// `CKA_LOCAL` (read-only on objects; meaningful inside a wrap template).
    case local(Bool)
    /// `CKA_WRAP_TEMPLATE`: a key is wrappable by this key only if it has every one of these
    /// attributes with the same value.
    case wrapTemplate([Attribute])
    /// `CKA_UNWRAP_TEMPLATE`: every unwrap with this key must ask for exactly these values
    /// (SoftHSM 2.6.1 refuses an unwrap whose template lacks one or differs in its bytes).
    case unwrapTemplate([Attribute])

    public var type: AttributeType {
        switch self {
        case .class: .class
        case .keyType: .keyType
        case .token: .token
        case .private: .private
        case .sensitive: .sensitive
        case .extractable: .extractable
        case .modifiable: .modifiable
        case .copyable: .copyable
        case .destroyable: .destroyable
        case .encrypt: .encrypt
        case .decrypt: .decrypt
        case .wrap: .wrap
        case .unwrap: .unwrap
        case .sign: .sign
        case .verify: .verify
        case .derive: .derive
        case .trusted: .trusted
        case .wrapWithTrusted: .wrapWithTrusted
        case .label: .label
        case .application: .application
        case .id: .id
        case .valueLength: .valueLength
        case .value, .dataValue: .value
        case .ecParams: .ecParams
        case .ecPoint: .ecPoint
        case .local: .local
        case .wrapTemplate: .wrapTemplate
        case .unwrapTemplate: .unwrapTemplate
        }
    }

    public var description: String {
        switch self {
        case .value(let secret): "\(type)=<\(secret.count) secret bytes>"
        case .label(let label), .application(let label): "\(type)=\"\(label)\""
        case .dataValue(let bytes): "\(type)=<\(bytes.count) bytes>"
        case .class(let objectClass): "\(type)=\(objectClass.rawValue)"
        case .keyType(let keyType): "\(type)=\(keyType.rawValue)"
        case .valueLength(let length): "\(type)=\(length)"
        case .id(let bytes), .ecParams(let bytes), .ecPoint(let bytes): "\(type)=\(Hex.encode(bytes))"
        case .wrapTemplate(let inner), .unwrapTemplate(let inner): "\(type)=[\(inner.map(\.description).joined(separator: ", "))]"
        case .local(let flag): "\(type)=\(flag)"
        case .token(let flag), .private(let flag), .sensitive(let flag), .extractable(let flag),
             .modifiable(let flag), .copyable(let flag), .destroyable(let flag), .encrypt(let flag),
             .decrypt(let flag), .wrap(let flag), .unwrap(let flag), .sign(let flag), .verify(let flag),
             .derive(let flag), .trusted(let flag), .wrapWithTrusted(let flag):
            "\(type)=\(flag)"
        }
    }

    /// The attribute's encoded bytes, written into `buffer` (which has ``encodedLength`` bytes).
    fileprivate func encode(into buffer: UnsafeMutableRawBufferPointer) {
        switch self {
        case .class(let value): buffer.storeBytes(of: CK_ULONG(value.rawValue), as: CK_ULONG.self)
        case .keyType(let value): buffer.storeBytes(of: CK_ULONG(value.rawValue), as: CK_ULONG.self)
        case .valueLength(let value): buffer.storeBytes(of: CK_ULONG(value), as: CK_ULONG.self)
        case .token(let flag), .private(let flag), .sensitive(let flag), .extractable(let flag),
             .modifiable(let flag), .copyable(let flag), .destroyable(let flag), .encrypt(let flag),
             .decrypt(let flag), .wrap(let flag), .unwrap(let flag), .sign(let flag), .verify(let flag),
             .derive(let flag), .trusted(let flag), .wrapWithTrusted(let flag):
            buffer.storeBytes(of: CK_BBOOL(flag ? 1 : 0), as: CK_BBOOL.self)
        case .local(let flag): buffer.storeBytes(of: CK_BBOOL(flag ? 1 : 0), as: CK_BBOOL.self)
        case .wrapTemplate(let inner), .unwrapTemplate(let inner): inner.encodeNested(into: buffer)
        case .label(let label), .application(let label): _ = buffer.initializeMemory(as: UInt8.self, from: label.utf8)
        case .id(let bytes), .ecParams(let bytes), .ecPoint(let bytes), .dataValue(let bytes): _ = buffer.initializeMemory(as: UInt8.self, from: bytes)
        case .value(let secret):
            secret.withUnsafeBytes { source in
                if let base = source.baseAddress, source.count > 0 {
                    buffer.baseAddress!.copyMemory(from: base, byteCount: source.count)
                }
            }
        }
    }

    fileprivate var encodedLength: Int {
        switch self {
        case .class, .keyType, .valueLength: MemoryLayout<CK_ULONG>.size
        case .label(let label), .application(let label): label.utf8.count
        case .id(let bytes), .ecParams(let bytes), .ecPoint(let bytes), .dataValue(let bytes): bytes.count
        case .value(let secret): secret.count
        case .wrapTemplate(let inner), .unwrapTemplate(let inner): inner.nestedLayout.total
        default: MemoryLayout<CK_BBOOL>.size
        }
    }

    /// The length PKCS#11 is told: for an array attribute, the `CK_ATTRIBUTE` array only (its
    /// values follow it in the same buffer).
    fileprivate var declaredLength: Int {
        switch self {
        case .wrapTemplate(let inner), .unwrapTemplate(let inner): inner.count * MemoryLayout<CK_ATTRIBUTE>.stride
        default: encodedLength
        }
    }

    fileprivate var isSecret: Bool {
        switch self {
        case .value: true
        case .wrapTemplate(let inner), .unwrapTemplate(let inner): inner.contains(where: \.isSecret)
        default: false
        }
    }
}

extension Array where Element == Attribute {
    /// Lays the template out as a `CK_ATTRIBUTE` array for the duration of `body`; secret
    /// values are wiped from the scratch buffer afterwards.
    func withTemplate<R>(_ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) throws -> R) rethrows -> R {
        // SoftHSM 2.6.1 applies an unwrap template in order and refuses every attribute after
        // CKA_MODIFIABLE=false (CKR_ATTRIBUTE_READ_ONLY). Order carries no meaning in PKCS#11,
        // so CKA_MODIFIABLE always goes last.
        let ordered = filter { $0.type != .modifiable } + filter { $0.type == .modifiable }
        return try ordered.withOrderedTemplate(body)
    }

    private func withOrderedTemplate<R>(_ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) throws -> R) rethrows -> R {
        let lengths = map(\.encodedLength)
        // Each value starts on an 8-byte boundary so that CK_ULONG values are aligned.
        var offsets = [Int]()
        offsets.reserveCapacity(count)
        var running = 0
        for length in lengths {
            offsets.append(running)
            running += (length + 7) & ~7
        }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(running, 8), alignment: 8)
        defer {
            if contains(where: \.isSecret) { wipe(scratch) }
            scratch.deallocate()
        }
        let attributes = UnsafeMutablePointer<CK_ATTRIBUTE>.allocate(capacity: Swift.max(count, 1))
        defer { attributes.deallocate() }
        for (index, attribute) in enumerated() {
            let slot = UnsafeMutableRawBufferPointer(rebasing: scratch[offsets[index] ..< offsets[index] + lengths[index]])
            attribute.encode(into: slot)
            attributes[index] = CK_ATTRIBUTE(
                type: CK_ATTRIBUTE_TYPE(attribute.type.rawValue),
                pValue: UnsafeMutableRawPointer(scratch.baseAddress! + offsets[index]),
                ulValueLen: CK_ULONG(attribute.declaredLength)
            )
        }
        return try body(isEmpty ? nil : attributes, CK_ULONG(count))
    }
}

extension Array where Element == Attribute {
    /// Where a nested template's parts go in its buffer: the `CK_ATTRIBUTE` array first, then
    /// each value on an 8-byte boundary.
    fileprivate var nestedLayout: (offsets: [Int], total: Int) {
        var running = count * MemoryLayout<CK_ATTRIBUTE>.stride
        var offsets = [Int]()
        for attribute in self {
            running = (running + 7) & ~7
            offsets.append(running)
            running += attribute.encodedLength
        }
        return (offsets, (running + 7) & ~7)
    }

    /// Writes a nested template (an array attribute's value) into `buffer`, which stays alive for
    /// the call: the inner `CK_ATTRIBUTE`s point at values later in the same buffer.
    fileprivate func encodeNested(into buffer: UnsafeMutableRawBufferPointer) {
        let layout = nestedLayout
        // SAFETY: `buffer` starts on an 8-byte boundary (the outer layout aligns every value) and
        // holds `layout.total` bytes, so the array and each value fit where the layout says.
        let base = buffer.baseAddress!
        for (index, attribute) in enumerated() {
            let slot = UnsafeMutableRawBufferPointer(start: base + layout.offsets[index], count: attribute.encodedLength)
            attribute.encode(into: slot)
            let entry = CK_ATTRIBUTE(
                type: CK_ATTRIBUTE_TYPE(attribute.type.rawValue),
                pValue: base + layout.offsets[index],
                ulValueLen: CK_ULONG(attribute.declaredLength)
            )
            (base + index * MemoryLayout<CK_ATTRIBUTE>.stride).storeBytes(of: entry, as: CK_ATTRIBUTE.self)
        }
    }
}
