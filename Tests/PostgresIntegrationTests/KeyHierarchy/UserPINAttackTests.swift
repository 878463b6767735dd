import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import Storage
import Testing

/// The attacker of issue 9, finding 1: the user PIN (what a compromised service host has) and a
/// copy of `key_versions`. With it they try to unwrap every stored blob of every wrapped
/// purpose into a key they can read, or into an encrypt-only key that decrypts: with their own
/// templates (readable, minimal with SoftHSM's permissive defaults, usable but DECRYPT, token
/// object, modifiable/copyable, another key type), under every KEK on the token, through both
/// AES key-wrap mechanisms. The control test runs the same templates against a KEK built the
/// way root KEKs were built before (no unwrap template) and shows they worked there.
@Suite("The user PIN cannot unwrap a tenant key readable", .serialized)
struct UserPINAttackTests {
    /// Templates an attacker would send for a blob of `usage`.
    static func hostileTemplates(_ usage: KeyUsage) -> [(name: String, template: [Attribute])] {
        let other: KeyType = usage.keyType == .aes ? .genericSecret : .aes
        let pinned = KeyTemplate.tenantKeyUnwrapped(usage)
        func tweak(_ type: AttributeType, _ attribute: Attribute) -> [Attribute] {
            pinned.filter { $0.type != type } + [attribute]
        }
        return [
            ("readable", [.class(.secretKey), .keyType(usage.keyType), .token(false), .sensitive(false), .extractable(true)]),
            ("minimal (module defaults)", [.class(.secretKey), .keyType(usage.keyType)]),
            // Each usage flag flipped: an encrypt-only key that decrypts, an HMAC key that
            // encrypts, any key that wraps, unwraps or derives.
            ("DECRYPT flipped", tweak(.decrypt, .decrypt(!usage.decrypt))),
            ("ENCRYPT flipped", tweak(.encrypt, .encrypt(!usage.encrypt))),
            ("SIGN flipped", tweak(.sign, .sign(!usage.sign))),
            ("VERIFY flipped", tweak(.verify, .verify(!usage.sign))),
            ("WRAP true", tweak(.wrap, .wrap(true))),
            ("UNWRAP true", tweak(.unwrap, .unwrap(true))),
            ("DERIVE true", tweak(.derive, .derive(true))),
            ("usable but DECRYPT, flags left to the module", [.class(.secretKey), .keyType(usage.keyType), .token(false), .decrypt(true)]),
            ("pinned but extractable", tweak(.extractable, .extractable(true))),
            ("pinned but not sensitive", tweak(.sensitive, .sensitive(false))),
            ("pinned but a token object", tweak(.token, .token(true))),
            ("pinned but modifiable", tweak(.modifiable, .modifiable(true))),
            ("pinned but copyable", tweak(.copyable, .copyable(true))),
            ("another key type, readable", [.class(.secretKey), .keyType(other), .sensitive(false), .extractable(true), .decrypt(true), .sign(true)]),
            ("another key type, pinned flags", tweak(.keyType, .keyType(other))),
        ]
    }

    static let mechanisms: [Mechanism] = [.aesKeyWrapPad, .aesKeyWrap]

    @Test("every blob of every wrapped purpose: no hostile template unwraps, under any KEK, by either mechanism")
    func hostileUnwrapsFail() async throws {
        let harness = try await CustodyHarness.make("pinattack")
        let tenant = try await harness.keyring.createTenant(label: "victim", actor: "test")
        _ = try await harness.webhooks.createSecret(tenant: tenant.id, actor: "test")
        let rows = try await harness.keyring.versions(tenant.id).filter { $0.wrappedKey != nil }
        #expect(Set(rows.map(\.purpose)) == Set(RootKeys.wrappedPurposes), "one real blob per wrapped purpose (six)")

        let (outcomes, attempts) = try await harness.pool.withPersistentSession { session -> ([String], Int) in
            // Every KEK on the token, not only the row's own: the attacker tries them all.
            let keks = try session.findObjects([.class(.secretKey), .token(true), .unwrap(true)], limit: 64)
            #expect(keks.count == RootKeys.wrappedPurposes.count)
            var opened = [String]()
            var attempts = 0
            for row in rows {
                let usage = try #require(row.purpose.usage)
                for (name, template) in Self.hostileTemplates(usage) {
                    for kek in keks {
                        for mechanism in Self.mechanisms {
                            attempts += 1
                            if let handle = try? session.unwrapKey(mechanism, unwrappingKey: kek, wrapped: try #require(row.wrappedKey), template: template) {
                                opened.append("\(row.purpose.rawValue) with \(name) via \(mechanism.type)")
                                try? session.destroyObject(handle)
                            }
                        }
                    }
                }
            }
            return (opened, attempts)
        }
        #expect(attempts == 6 * Self.hostileTemplates(.hmac).count * 6 * 2)
        #expect(outcomes.isEmpty, "hostile unwraps that succeeded: \(outcomes)")
        await harness.shutdown()
    }

    @Test("the one template that unwraps yields a key that stays unreadable, cannot decrypt (bio-prf) and cannot be widened")
    func pinnedUnwrapIsHarmless() async throws {
        let harness = try await CustodyHarness.make("pinnedunwrap")
        let tenant = try await harness.keyring.createTenant(label: "victim", actor: "test")
        let rows = try await harness.keyring.versions(tenant.id).filter { $0.wrappedKey != nil }
        try await harness.pool.withPersistentSession { session in
            for row in rows {
                let usage = try #require(row.purpose.usage)
                let kek = try #require(try session.findObjects([.class(.secretKey), .label(RootKeys.kekLabel(row.purpose, version: 1))]).first)
                let key = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: try #require(row.wrappedKey), template: KeyTemplate.tenantKeyUnwrapped(usage))
                defer { try? session.destroyObject(key) }
                #expect(throws: PKCS11Error.self, "CKA_VALUE of \(row.purpose.rawValue)") { _ = try session.attribute(.value, of: key) }
                #expect(try session.boolAttribute(.sensitive, of: key) && !session.boolAttribute(.extractable, of: key))
                #expect(try !session.boolAttribute(.token, of: key))
                #expect(throws: PKCS11Error.self, "widening \(row.purpose.rawValue) to DECRYPT") { try session.setAttributes([.decrypt(true)], of: key) }
                #expect(throws: PKCS11Error.self, "copying \(row.purpose.rawValue) with DECRYPT") { _ = try session.copyObject(key, template: [.decrypt(true)]) }
                if row.purpose == .bioPRF {
                    let block = [UInt8](repeating: 7, count: 16)
                    let output = try session.encrypt(.aesECB, key: key, data: block)
                    #expect(throws: PKCS11Error.self, "the PRF cannot be inverted") { _ = try session.decrypt(.aesECB, key: key, data: output) }
                }
            }
        }
        await harness.shutdown()
    }

    @Test("the user PIN can neither destroy a root key (to put one of its own under the label) nor widen one")
    func rootKeysStay() async throws {
        let harness = try await CustodyHarness.make("pinroot")
        let survivors = try await harness.pool.withPersistentSession { session -> Int in
            let roots = try session.findObjects([.class(.secretKey), .token(true)], limit: 64)
            #expect(roots.count == RootKeys.wrappedPurposes.count + 1)
            for root in roots {
                #expect(throws: PKCS11Error.self, "C_DestroyObject on a root key") { try session.destroyObject(root) }
                #expect(throws: PKCS11Error.self, "C_SetAttributeValue on a root key") { try session.setAttributes([.unwrapTemplate([])], of: root) }
            }
            return try session.findObjects([.class(.secretKey), .token(true)], limit: 64).count
        }
        #expect(survivors == RootKeys.wrappedPurposes.count + 1)
        await harness.shutdown()
    }

    @Test("control: the same templates open a blob under a KEK without an unwrap template (the design before issue 9)")
    func permissiveKEKWasOpen() async throws {
        let harness = try await CustodyHarness.make("pincontrol", createRootKeys: false)
        let opened = try await harness.pool.withPersistentSession { session -> (readable: [UInt8], decrypts: Bool) in
            // The old root KEK template: WRAP/UNWRAP, sensitive, non-extractable — and no unwrap template.
            let legacy = try session.generateKey(.aesKeyGen, template: [
                .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .private(true), .sensitive(true),
                .extractable(false), .modifiable(false), .copyable(false), .wrap(true), .unwrap(true), .encrypt(false), .decrypt(false),
            ])
            let prf = try session.generateKey(.aesKeyGen, template: KeyTemplate.tenantKeyForWrapping(.encryptOnly))
            let blob = try session.wrapKey(.aesKeyWrapPad, wrappingKey: legacy, key: prf)
            let templates = Self.hostileTemplates(.encryptOnly)
            let readable = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: legacy, wrapped: blob, template: templates[0].template)
            let minimal = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: legacy, wrapped: blob, template: templates[1].template)
            let output = try session.encrypt(.aesECB, key: prf, data: [UInt8](repeating: 7, count: 16))
            let decrypts = (try? session.decrypt(.aesECB, key: minimal, data: output)) == [UInt8](repeating: 7, count: 16)
            return (try session.attribute(.value, of: readable), decrypts)
        }
        #expect(opened.readable.count == 32, "the clear key came out")
        #expect(opened.decrypts, "SoftHSM's defaults turned the encrypt-only PRF key into one that decrypts")
        await harness.shutdown()
    }
}
