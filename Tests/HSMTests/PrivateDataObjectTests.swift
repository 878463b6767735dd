import HSM
import HSMTestSupport
import PKCS11
import Testing

/// What the self-test cannot check from a logged-in process (login state is shared by every
/// session of a loaded module): a private data object, such as the key-state list, is invisible
/// to a session that never logged in. A second copy of the module is a second application to
/// SoftHSM, with no login.
@Suite("Private data objects: hidden without the user PIN", .serialized)
struct PrivateDataObjectTests {
    @Test("A session of an unlogged module copy finds the public data object, not the private one; the self-test check passes")
    func hiddenWithoutLogin() async throws {
        let token = try TestToken.make("privdata")
        let pool = try await startedPool(token, module: try TestToken.isolatedModule())
        let list = TokenDataObject(label: "custos/test/key-states", application: "custos/test")
        _ = try await pool.withPersistentSession { session in
            try list.replace(with: [0x01, 0x02], in: session)
            // The control: the same kind of object, but public.
            _ = try session.createObject([
                .class(.data), .label("custos/test/public"), .application("custos/test"), .token(true), .private(false), .dataValue([0x03]),
            ])
        }
        let outsider = try TestToken.isolatedModule()
        try outsider.initialize()
        let session = try outsider.openSession(slot: try outsider.findToken(.label(token.label)).slot)
        #expect(try session.findObjects([.class(.data), .label("custos/test/public")]).count == 1, "the unlogged session sees the token's public objects")
        #expect(try session.findObjects([.class(.data), .label(list.label)]).isEmpty, "a private data object is hidden without login")
        try session.close()

        let results = await SelfTest.capabilities(of: pool)
        let check = try #require(results.first { $0.name.hasPrefix("Private data objects") })
        #expect(check.passed, "\(check.detail)")
        await pool.shutdown()
    }
}
