import CustosModel
import HSM
import PKCS11
import Storage

extension TenantKeyring {
    /// What ``rewrapTenantKeys(toKEKVersion:actor:)`` did.
    public struct RewrapReport: Sendable, Hashable, Codable {
        public let tenants: Int
        /// Versions wrapped again under the new root KEK.
        public let rewrapped: Int
        /// Versions that already named the new root KEK (an earlier, interrupted run).
        public let alreadyCurrent: Int
        /// Versions with no wrapped blob (destroyed, or Ed25519 token keys): nothing to re-wrap;
        /// their rows keep naming the old KEK, which is why old root KEKs are never destroyed.
        public let withoutBlob: Int
    }

    /// Re-wraps every tenant key version from the root KEK it names to root KEK `newVersion`
    /// (root-KEK rotation, DESIGN §11). Per version: its row MAC is checked, it is unwrapped
    /// under the old KEK into an extractable session object, wrapped under the new KEK, the new
    /// blob unwrapped once under the new KEK as a check, the objects destroyed, and the row
    /// updated — blob, KEK version and MAC together, in one statement guarded by the old KEK
    /// version. (AES key wrap with padding checks integrity on unwrap, and the row MAC binds
    /// the blob to its row.)
    ///
    /// Each row is consistent at every moment (its MAC names the KEK its blob is wrapped under),
    /// so a crash midway leaves a mix that works; running this again finishes the job. Old root
    /// KEKs stay on the token.
    /// - Throws: ``CustodyError``.
    public func rewrapTenantKeys(toKEKVersion newVersion: Int, actor: String) async throws -> RewrapReport {
        try await custody {
            let newKEK = rootKeys.kek(version: newVersion)
            let tenants = try await TenantStore(database).list()
            var rewrapped = 0, alreadyCurrent = 0, withoutBlob = 0
            for tenant in tenants {
                let records = try await database.withTenant(tenant.id, context: "read key versions for re-wrap") { connection in
                    try await KeyVersionStore.all(on: connection)
                }
                var tenantRewrapped = 0
                for record in records {
                    guard let wrapped = record.wrappedKey, let usage = record.purpose.usage else { withoutBlob += 1; continue }
                    guard record.rootKEKVersion != newVersion else { alreadyCurrent += 1; continue }
                    let oldKEK = rootKeys.kek(version: record.rootKEKVersion)
                    let macKey = rootKeys.mac
                    let authenticator = self.authenticator
                    let blob: [UInt8] = try await pool.withSession(.wrap) { session in
                        let pkcs11 = session.pkcs11
                        guard try authenticator.isAuthentic(record, session: pkcs11, macKey: session.handle(for: macKey)) else {
                            throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
                        }
                        let key: ObjectHandle
                        do {
                            key = try pkcs11.unwrapKey(
                                .aesKeyWrapPad, unwrappingKey: session.handle(for: oldKEK), wrapped: wrapped,
                                template: KeyTemplate.tenantKeyForRewrapping(usage)
                            )
                        } catch let error as PKCS11Error where RecoveryClass(error.returnValue) == .caller || error.returnValue == .generalError {
                            throw CustodyError.cannotUnwrap(record.tenant, record.purpose, record.version)
                        }
                        defer { try? pkcs11.destroyObject(key) }
                        // SoftHSM 2.6.1 leaves CKA_CHECK_VALUE empty on unwrapped keys; where a
                        // token reports one, it must be the row's.
                        let checkValue = try pkcs11.attribute(.checkValue, of: key)
                        guard checkValue.isEmpty || checkValue == record.checkValue else {
                            throw CustodyError.cannotUnwrap(record.tenant, record.purpose, record.version)
                        }
                        let newKEKHandle = try session.handle(for: newKEK)
                        let blob = try pkcs11.wrapKey(.aesKeyWrapPad, wrappingKey: newKEKHandle, key: key)
                        // The new blob must unwrap under the new KEK before any row points at it.
                        let check = try pkcs11.unwrapKey(
                            .aesKeyWrapPad, unwrappingKey: newKEKHandle, wrapped: blob, template: KeyTemplate.tenantKeyUnwrapped(usage)
                        )
                        try? pkcs11.destroyObject(check)
                        return blob
                    }
                    let moved = KeyVersionRecord(
                        tenant: record.tenant, purpose: record.purpose, version: record.version, state: record.state,
                        wrappedKey: blob, wrapMechanism: record.wrapMechanism, rootKEKVersion: newVersion,
                        checkValue: record.checkValue, publicKey: record.publicKey, tokenLabel: record.tokenLabel, rowMAC: [],
                        retiringUntil: record.retiringUntil, retiredAt: record.retiredAt
                    )
                    let sealed = try await authenticator.sealed(moved, pool: pool)
                    let changed = try await database.withTenant(tenant.id, context: "re-wrap key version") { connection in
                        try await KeyVersionStore.rewrap(sealed, fromKEKVersion: record.rootKEKVersion, on: connection)
                    }
                    if changed { rewrapped += 1; tenantRewrapped += 1 } else { alreadyCurrent += 1 }
                }
                for purpose in KeyPurpose.allCases { invalidate(tenant.id, purpose) }
                if tenantRewrapped > 0 {
                    try await audit.append(
                        tenant: tenant.id, actor: actor, action: "key.rewrap", target: "root-kek/v\(newVersion)",
                        details: ["versions": "\(tenantRewrapped)"]
                    )
                }
            }
            return RewrapReport(tenants: tenants.count, rewrapped: rewrapped, alreadyCurrent: alreadyCurrent, withoutBlob: withoutBlob)
        }
    }
}
