import Crypto
import CustosModel
import SecureMemory
import Testing
import Tokenization

@Suite("PRF blocks")
struct PRFBlocksTests {
    static let tenant = TenantID("6f1c2b1e-3a4d-4c5e-8f60-718293a4b5c6")!

    @Test("The tag is the first 8 bytes of SHA-256(domain ‖ 0 ‖ tenant ‖ version)")
    func tag() {
        let blocks = PRFBlocks(tenant: Self.tenant, keyVersion: 3)
        let expected = SHA256.hash(data: Array("custos/bio/v1".utf8) + [0] + Array(Self.tenant.rawValue.utf8) + [0, 0, 0, 0, 0, 0, 0, 3])
        #expect(blocks.tag == Array(expected.prefix(8)))
        #expect(blocks.tag != PRFBlocks(tenant: Self.tenant, keyVersion: 4).tag)
        #expect(blocks.tag != PRFBlocks(tenant: TenantID("6f1c2b1e-3a4d-4c5e-8f60-718293a4b5c7")!, keyVersion: 3).tag)
    }

    @Test("Block j is tag ‖ j (big-endian UInt16) ‖ symbol ‖ five zero bytes")
    func layout() {
        let blocks = PRFBlocks(tenant: Self.tenant, keyVersion: 1)
        let symbols = (0..<1024).map { UInt8(($0 * 7) % 16) }
        let input = blocks.input(for: SecretBytes(symbols)).withUnsafeBytes { Array($0) }
        #expect(input.count == 16_384)
        for j in [0, 1, 255, 256, 300, 1023] {
            let block = Array(input[(j * 16)..<(j * 16 + 16)])
            #expect(Array(block[0..<8]) == blocks.tag)
            #expect(block[8] == UInt8(j >> 8) && block[9] == UInt8(j & 0xFF))
            #expect(block[10] == symbols[j])
            #expect(block[11...].allSatisfy { $0 == 0 })
        }
        #expect(Array(input[(300 * 16 + 8)..<(300 * 16 + 10)]) == [0x01, 0x2C])
    }

    @Test("Token values are the first four bytes, big-endian, of each output block")
    func tokenValues() throws {
        var output = [UInt8](repeating: 0xEE, count: 16_384)
        output[0..<4] = [0x01, 0x02, 0x03, 0x04]
        output[1023 * 16..<(1023 * 16 + 4)] = [0xFF, 0x00, 0x00, 0x7F]
        let values = try PRFBlocks.tokenValues(fromPRFOutput: output)
        #expect(values.count == 1024)
        #expect(values[0] == 0x0102_0304)
        #expect(values[1] == 0xEEEE_EEEE)
        #expect(values[1023] == 0xFF00_007F)
        #expect(throws: PRFBlocksError.wrongOutputLength(16_383, expected: 16_384)) {
            try PRFBlocks.tokenValues(fromPRFOutput: Array(output.dropLast()))
        }
    }

    /// A stand-in for the HSM's AES-ECB: any keyed function applied block by block (here
    /// HMAC-SHA256 truncated to 16 bytes) must preserve scores, because equal blocks give equal
    /// outputs and different blocks (almost surely) different 32-bit values.
    static func standInPRF(key: SymmetricKey, input: SecretBytes) -> [UInt8] {
        input.withUnsafeBytes { raw in
            (0..<1024).flatMap { j in
                Array(HMAC<SHA256>.authenticationCode(for: Array(raw[(j * 16)..<(j * 16 + 16)]), using: key).prefix(16))
            }
        }
    }

    static func token(_ values: [Float], hashing: IndexOfMaxHashing, blocks: PRFBlocks, key: SymmetricKey, version: Int) throws -> BiometricToken {
        let input = blocks.input(for: try hashing.symbols(for: FeatureVector(values)))
        return BiometricToken(keyVersion: version, values: try PRFBlocks.tokenValues(fromPRFOutput: standInPRF(key: key, input: input)))
    }

    @Test("Through a stand-in PRF, token scores equal symbol agreement; other tenants' tokens are unrelated")
    func scoresPreserved() throws {
        var random = TestRandom(seed: 11)
        let key = SymmetricKey(size: .bits256)
        let hashing = try IndexOfMaxHashing(seed: seed(11), dimension: 512, kind: .structured)
        let blocks = PRFBlocks(tenant: Self.tenant, keyVersion: 1)
        let base = random.unitVector(dimension: 512)
        let near = random.unitVector(near: base, cosine: 0.9)
        let first = try Self.token(base, hashing: hashing, blocks: blocks, key: key, version: 1)
        let second = try Self.token(near, hashing: hashing, blocks: blocks, key: key, version: 1)
        let symbolAgreement = agreement(try hashing.plainSymbols(for: base), try hashing.plainSymbols(for: near))
        #expect(symbolAgreement > 0.4)
        #expect(first.score(against: second) == symbolAgreement)
        #expect(first.score(against: first) == 1)

        let otherTenant = PRFBlocks(tenant: TenantID.random(), keyVersion: 1)
        let elsewhere = try Self.token(base, hashing: hashing, blocks: otherTenant, key: key, version: 1)
        #expect(first.score(against: elsewhere) < 0.01)
    }
}
