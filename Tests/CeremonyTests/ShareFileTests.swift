@testable import Ceremony
import Foundation
import HSMTestSupport
import SecureMemory
import Testing

@Suite("Share files: one per custodian, checked alone and as a set")
struct ShareFileTests {
    /// A 3-of-5 split of a 64-byte secret (KEK ‖ MAC key) written to a fresh directory.
    struct Fixture {
        let directory: String
        let paths: [String]
        let material: SecretBytes
        let ceremonyID: String
    }

    /// `macOffset`: where the header says the MAC key starts (a forged set names another).
    static func makeFixture(seed: UInt64, ceremonyID: String = UUID().uuidString.lowercased(), macOffset: Int = 32) async throws -> Fixture {
        let material = try await SeededRandomSource(seed: seed).randomSecret(count: 64)
        let kek = ShareSet.slice(material, .init(label: "k", keyType: .aes, offset: 0, length: 32, checkValue: []))
        let mac = ShareSet.slice(material, .init(label: "m", keyType: .genericSecret, offset: 32, length: 32, checkValue: []))
        let keys = [
            ShareFile.Key(label: "custos/root/kek/v1", keyType: .aes, offset: 0, length: 32, checkValue: try KeyCheckValue.compute(kek, keyType: .aes)),
            ShareFile.Key(label: "custos/root/mac/v1", keyType: .genericSecret, offset: macOffset, length: 32, checkValue: try KeyCheckValue.compute(mac, keyType: .genericSecret)),
        ]
        let shares = try await Shamir.split(material, threshold: 3, count: 5, random: SeededRandomSource(seed: seed + 100))
        TestEnvironment.prepare()
        let directory = TestEnvironment.directory + "/shares-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        var paths = [String]()
        for share in shares {
            let file = ShareFile(header: .init(
                format: ShareFile.format, ceremonyID: ceremonyID, createdAt: "2025-01-01T00:00:00Z", threshold: 3, shares: 5,
                index: Int(share.index),
                shareCheckValue: ShareFile.shareCheckValue(ceremonyID: ceremonyID, threshold: 3, count: 5, share: share),
                secretCheckValue: ShareFile.secretCheckValue(ceremonyID: ceremonyID, secret: material), keys: keys,
                token: .init(label: "custos", serial: "0123456789abcdef")
            ), share: share)
            let path = directory + "/share-\(share.index).json"
            try file.write(to: path)
            paths.append(path)
        }
        return Fixture(directory: directory, paths: paths, material: material, ceremonyID: ceremonyID)
    }

    @Test("Files are 0600 JSON, never overwritten, and any 3 of them give the secret back")
    func roundTrip() async throws {
        let fixture = try await Self.makeFixture(seed: 10)
        for path in fixture.paths {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
            #expect(json?["threshold"] as? Int == 3 && json?["shares"] as? Int == 5)
            #expect((json?["share"] as? String)?.count == 128)
        }
        let again = try ShareFile.read(from: fixture.paths[0])
        #expect(throws: CeremonyError.self) { try again.write(to: fixture.paths[0]) }
        for subset in subsets(fixture.paths, size: 3) {
            #expect(try ShareSet(paths: subset).combine() == fixture.material)
        }
        #expect(try ShareSet(paths: fixture.paths).combine() == fixture.material)
    }

    @Test("Two shares: a clear 'not enough shares', no key")
    func tooFew() async throws {
        let fixture = try await Self.makeFixture(seed: 11)
        let error = #expect(throws: CeremonyError.self) { try ShareSet(paths: Array(fixture.paths.prefix(2))).combine() }
        guard case .notEnoughShares(have: 2, need: 3) = error else { Issue.record("got \(String(describing: error))"); return }
    }

    @Test("A changed share byte, or a changed index, fails the share's own check value")
    func corrupted() async throws {
        let fixture = try await Self.makeFixture(seed: 12)
        let path = fixture.paths[1]
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let range = try #require(text.range(of: "\"share\" : \""))
        let digit = text.index(range.upperBound, offsetBy: 5)
        text.replaceSubrange(digit...digit, with: text[digit] == "0" ? "1" : "0")
        try FileManager.default.removeItem(atPath: path)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, 0o600)
        let error = #expect(throws: CeremonyError.self) { try ShareSet(paths: [fixture.paths[0], path, fixture.paths[2]]).combine() }
        guard case .corruptedShare(_, index: 2) = error else { Issue.record("got \(String(describing: error))"); return }

        let other = fixture.paths[3]
        let edited = try String(contentsOfFile: other, encoding: .utf8).replacingOccurrences(of: "\"index\" : 4", with: "\"index\" : 5")
        try FileManager.default.removeItem(atPath: other)
        try edited.write(toFile: other, atomically: false, encoding: .utf8)
        chmod(other, 0o600)
        #expect(throws: CeremonyError.self) { try ShareFile.read(from: other) }
    }

    @Test("A share file others may read is refused, naming its mode, before its bytes are used")
    func openShareFileRefused() async throws {
        // Attack review, session 18: shares were read whatever their mode, while PIN files
        // must be 0600. A custodian's share copied with mode 0644 is readable by every user.
        let fixture = try await Self.makeFixture(seed: 15)
        chmod(fixture.paths[0], 0o644)
        let error = #expect(throws: CeremonyError.self) { try ShareSet(paths: Array(fixture.paths.prefix(3))).combine() }
        guard case .unreadableShareFile(fixture.paths[0], let reason) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(reason.contains("mode 644"))
        chmod(fixture.paths[0], 0o600)
        #expect(try ShareSet(paths: Array(fixture.paths.prefix(3))).combine().withUnsafeBytes { Array($0) } == fixture.material.withUnsafeBytes { Array($0) })
    }

    @Test("A consistent set whose header places a key past the secret (offset near Int.max) is refused, not a crash")
    func keyLayoutPastTheSecret() async throws {
        // Attack review, session 18: the check values are unkeyed, so whoever writes every file
        // of a set can make it consistent; `offset + length` then overflowed and trapped.
        let fixture = try await Self.makeFixture(seed: 16, macOffset: .max)
        let error = #expect(throws: CeremonyError.self) { try ShareSet(paths: Array(fixture.paths.prefix(3))).combine() }
        guard case .inconsistentShareFile(_, let field) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(field.contains("custos/root/mac/v1"))
    }

    @Test("Shares of two ceremonies, or the same share twice, never combine")
    func mixedAndDuplicate() async throws {
        let first = try await Self.makeFixture(seed: 13)
        let second = try await Self.makeFixture(seed: 14)
        let mixed = #expect(throws: CeremonyError.self) { try ShareSet(paths: [first.paths[0], first.paths[1], second.paths[2]]).combine() }
        guard case .mixedCeremonies = mixed else { Issue.record("got \(String(describing: mixed))"); return }
        let duplicate = #expect(throws: CeremonyError.self) { try ShareSet(paths: [first.paths[0], first.paths[1], first.paths[1]]).combine() }
        guard case .duplicateShareIndex(2, _) = duplicate else { Issue.record("got \(String(describing: duplicate))"); return }
    }

    @Test("A forged share with a self-consistent check value is caught by the secret check")
    func forged() async throws {
        let fixture = try await Self.makeFixture(seed: 15)
        let original = try ShareFile.read(from: fixture.paths[2])
        let tampered = SecretBytes(count: original.share.value.count) { buffer in
            original.share.value.withUnsafeBytes { buffer.copyMemory(from: $0) }
            buffer[0] ^= 0x01
        }
        let share = ShamirShare(index: original.share.index, value: tampered)
        let header = original.header
        let forged = ShareFile(header: .init(
            format: header.format, ceremonyID: header.ceremonyID, createdAt: header.createdAt, threshold: header.threshold,
            shares: header.shares, index: header.index,
            shareCheckValue: ShareFile.shareCheckValue(ceremonyID: header.ceremonyID, threshold: 3, count: 5, share: share),
            secretCheckValue: header.secretCheckValue, keys: header.keys, token: header.token
        ), share: share)
        let path = fixture.directory + "/forged.json"
        try forged.write(to: path)
        let error = #expect(throws: CeremonyError.self) { try ShareSet(paths: [fixture.paths[0], fixture.paths[1], path]).combine() }
        guard case .secretCheckFailed(fixture.ceremonyID) = error else { Issue.record("got \(String(describing: error))"); return }
    }
}
