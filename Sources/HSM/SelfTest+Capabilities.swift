import Crypto
import PKCS11
import SecureMemory

// What a module must do for tenant keys to stay unreadable with the user PIN (DESIGN §5), checked
// by behaviour rather than by name: NSS softokn lists every mechanism Custos uses and still
// fails two of these (it ignores CKA_UNWRAP_TEMPLATE, and its 0x210A is PKCS#7-padded key wrap).
// Ed25519 is checked here too: without it only v1a webhooks are off.
extension SelfTest {
    static let capabilityChecks: [Check] = [
        Check(name: "Unwrap templates enforced (CKA_UNWRAP_TEMPLATE)") { session in
            let kek = try importKey(session, [UInt8](repeating: 0x5A, count: 32), .aes, [
                .wrap(true), .unwrap(true), .unwrapTemplate(KeyTemplate.tenantKeyUnwrapped(.hmac)),
            ])
            defer { try? session.destroyObject(kek) }
            let key = try importKey(session, [UInt8](repeating: 0x3C, count: 32), .genericSecret, [.sign(true), .extractable(true)])
            defer { try? session.destroyObject(key) }
            let blob = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: key)
            // What an attacker with the user PIN would ask for: the key back in clear.
            let hostile: [Attribute] = [
                .class(.secretKey), .keyType(.genericSecret), .token(false), .sensitive(false), .extractable(true), .sign(true),
            ]
            guard let unwrapped = try? session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: blob, template: hostile) else {
                return nil
            }
            defer { try? session.destroyObject(unwrapped) }
            let readable = (try? session.attribute(.value, of: unwrapped)) != nil
            return "an unwrap with a template contradicting the KEK's unwrap template succeeded"
                + (readable ? " and the key's value is readable" : "")
                + ": anyone with the user PIN could unwrap stored tenant keys on their own terms"
        },
        Check(name: "AES key wrap with padding is RFC 5649 under 0x210A") { session in
            let kek = try importKey(session, [UInt8](repeating: 0x11, count: 32), .aes, [.wrap(true)])
            defer { try? session.destroyObject(kek) }
            let key = try importKey(session, [UInt8](repeating: 0x22, count: 32), .genericSecret, [.sign(true), .extractable(true)])
            defer { try? session.destroyObject(key) }
            // RFC 5649 adds one 8-byte block to a 32-byte key; PKCS#7 padding before RFC 3394
            // (NSS softokn's 0x210A, whose RFC 5649 is 0x210B) adds two.
            let length = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: key).count
            switch length {
            case 40: return nil
            case 48: return "0x210A wraps a 32-byte key into 48 bytes: PKCS#7-padded AES key wrap (RFC 3394), not RFC 5649; blobs would not move to another HSM"
            default: return "0x210A wraps a 32-byte key into \(length) bytes, neither RFC 5649 (40) nor PKCS#7-padded RFC 3394 (48)"
            }
        },
        Check(name: "Key check values readable (CKA_CHECK_VALUE)") { session in
            let key = try importKey(session, (0..<32).map { UInt8($0) }, .aes, [.wrap(true)])
            defer { try? session.destroyObject(key) }
            // The first 3 bytes of AES-256-ECB(key, 0^16) for key 00 01 … 1f, as vendor tools show KCVs.
            return expect(try session.attribute(.checkValue, of: key), hexBytes("f29000"))
        },
        // The key-state list and the audit and transcript anchors are private data objects made
        // non-modifiable and non-copyable: what the user PIN may do to them is limited to
        // destroying or adding (which their MACs and the readers' rules catch), never editing.
        // Hidden without login is a property of the process's login state, which this session
        // shares: HSMTests' PrivateDataObjectTests check it from an unlogged module copy.
        Check(name: "Private data objects kept private, unchangeable and uncopyable (key-state list, anchors)") { session in
            let base: [Attribute] = [
                .class(.data), .label("custos/selftest/data"), .application("custos/selftest"), .token(false), .private(true), .dataValue([0x01, 0x02, 0x03]),
            ]
            let object: ObjectHandle
            do {
                object = try session.createObject(base + [.copyable(false), .modifiable(false)])
            } catch {
                // Name what the module refuses: the list cannot be stored as Custos stores it.
                let refused = [("CKA_MODIFIABLE false", Attribute.modifiable(false)), ("CKA_COPYABLE false", .copyable(false))].filter { _, attribute in
                    guard let handle = try? session.createObject(base + [attribute]) else { return true }
                    try? session.destroyObject(handle)
                    return false
                }.map(\.0)
                let created = (try? session.createObject(base)).map { handle in (try? session.destroyObject(handle)) != nil } ?? false
                return "the module refuses a private data object made as the key-state list and anchors are: "
                    + (!created ? "even without CKA_MODIFIABLE and CKA_COPYABLE (\(error))" : refused.isEmpty ? "\(error)" : refused.joined(separator: ", ") + " refused")
            }
            defer { try? session.destroyObject(object) }
            var problems = [String]()
            if (try? session.boolAttribute(.private, of: object)) != true { problems.append("CKA_PRIVATE does not read back true") }
            if (try? session.setAttributes([.dataValue([0x09])], of: object)) != nil { problems.append("its value could be changed") }
            if (try? session.setAttributes([.label("custos/selftest/renamed")], of: object)) != nil { problems.append("its label could be changed") }
            if let copy = try? session.copyObject(object, template: [.dataValue([0x09])]) {
                try? session.destroyObject(copy)
                problems.append("it could be copied with another value")
            }
            return problems.isEmpty ? nil : "a private data object made non-modifiable and non-copyable: " + problems.joined(separator: "; ")
        },
        Check(name: "Ed25519 (RFC 8032 §7.1 test 1, and swift-crypto verification)", neededFor: .ed25519Webhooks) { session in
            let seed = hexBytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            let privateKey = try session.createObject([
                .class(.privateKey), .keyType(.ecEdwards), .token(false), .private(true), .sensitive(true), .sign(true),
                .ecParams(KeyTemplate.ed25519Parameters), .value(SecretBytes(seed)),
            ])
            defer { try? session.destroyObject(privateKey) }
            let signature = try session.sign(.eddsa, key: privateKey, data: [UInt8]())
            let expected = hexBytes("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
            if let problem = expect(signature, expected) { return "RFC 8032: " + problem }
            let pair = try session.generateKeyPair(
                .ecEdwardsKeyPairGen,
                publicTemplate: KeyTemplate.ed25519(label: "custos/selftest", id: [0], token: false).public,
                privateTemplate: KeyTemplate.ed25519(label: "custos/selftest", id: [0], token: false).private
            )
            defer { try? session.destroyObject(pair.privateKey); try? session.destroyObject(pair.publicKey) }
            let point = try session.attribute(.ecPoint, of: pair.publicKey)
            let publicKey = try Curve25519.Signing.PublicKey(rawRepresentation: point.suffix(32))
            let message = Array("webhook body".utf8)
            return publicKey.isValidSignature(try session.sign(.eddsa, key: pair.privateKey, data: message), for: message)
                ? nil : "a generated key's signature does not verify with swift-crypto"
        },
    ]

    /// The failed checks that rule out custody on this module (empty when it can serve).
    public static func custodyBlockers(_ results: [Result]) -> [Result] {
        results.filter { !$0.passed && $0.neededFor == .custody }
    }

    /// Whether every check `v1a` (Ed25519) webhook keys need passed.
    public static func supportsEd25519Webhooks(_ results: [Result]) -> Bool {
        !results.contains { !$0.passed && $0.neededFor == .ed25519Webhooks }
    }
}
