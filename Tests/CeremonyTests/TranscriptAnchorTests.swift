import Ceremony
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import Testing

/// The transcript's newest MAC'd line is anchored on the token: lines cut from the end, which
/// leave a valid chain, are found, and a cut transcript is never extended.
@Suite("Ceremony transcript anchor")
struct TranscriptAnchorTests {
    static let macLabel = "custos/root/mac/v1"

    private func draft(_ step: String) -> CeremonyTranscript.Draft {
        CeremonyTranscript.Draft(
            step: step, operatorName: "Ada Operator", witnesses: ["Grace Witness"], tokenLabel: "test", tokenSerial: "0", configHash: "test-config"
        )
    }

    /// A pool on a fresh token holding a root MAC key (only the key the transcript needs).
    private func pool(_ name: String) async throws -> SessionPool {
        let token = try TestToken.make(name)
        let pool = try SessionPool(configuration: token.configuration(), logger: LogCapture().logger)
        try await pool.start()
        _ = try await pool.withPersistentSession { session in
            try session.generateKey(.genericSecretKeyGen, template: [
                .class(.secretKey), .keyType(.genericSecret), .token(true), .private(true), .sensitive(true),
                .extractable(false), .sign(true), .verify(true), .label(Self.macLabel), .valueLength(32),
            ])
        }
        return pool
    }

    private func copy(_ transcript: CeremonyTranscript, keeping lines: Int, to name: String) throws -> CeremonyTranscript {
        let text = try String(contentsOfFile: transcript.path, encoding: .utf8).split(separator: "\n").prefix(lines).joined(separator: "\n") + "\n"
        let path = transcript.path + "." + name
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        // As the ceremony writes it: refused for the cut, not for its mode.
        chmod(path, 0o600)
        return CeremonyTranscript(path: path)
    }

    @Test("A transcript others may write is not appended to")
    func openTranscriptRefused() async throws {
        let pool = try await pool("transcriptmode")
        let transcript = CeremonyTranscript(path: TestEnvironment.directory + "/transcript-\(UInt32.random(in: 0 ... .max)).jsonl")
        try await transcript.append(draft("init-token"), macKey: nil, pool: nil)
        chmod(transcript.path, 0o664)
        let refused = await #expect(throws: CeremonyError.self) { try await transcript.append(draft("generate-root"), macKey: Self.macLabel, pool: pool) }
        guard case .transcriptUnreadable(_, let reason) = refused else { Issue.record("got \(String(describing: refused))"); return }
        #expect(reason.contains("mode 664"))
        chmod(transcript.path, 0o600)
        try await transcript.append(draft("generate-root"), macKey: Self.macLabel, pool: pool)
        #expect(try String(contentsOfFile: transcript.path, encoding: .utf8).split(separator: "\n").count == 2)
        await pool.shutdown()
    }

    @Test("Cutting lines from the end is found at the first missing line; a cut transcript is not extended")
    func truncation() async throws {
        let pool = try await pool("transcriptanchor")
        let transcript = CeremonyTranscript(path: TestEnvironment.directory + "/transcript-\(UInt32.random(in: 0 ... .max)).jsonl")
        try await transcript.append(draft("init-token"), macKey: nil, pool: nil)
        for step in ["generate-root", "verify", "verify"] {
            try await transcript.append(draft(step), macKey: Self.macLabel, pool: pool)
        }
        let intact = try await transcript.verify(pool: pool)
        #expect(intact.isIntact && intact.entries == 4 && intact.anchoredLine == 4, "\(intact)")

        // Each cut copy still ends with a MAC'd line and a valid chain: only the anchor sees it.
        let cutOne = try copy(transcript, keeping: 3, to: "cut1")
        let one = try await cutOne.verify(pool: pool)
        #expect(one.firstBadLine == 4 && one.anchoredLine == 4, "\(one)")
        let cutTwo = try copy(transcript, keeping: 2, to: "cut2")
        #expect(try await cutTwo.verify(pool: pool).firstBadLine == 3)

        await #expect(throws: CeremonyError.self, "appending would hide the cut") {
            try await cutOne.append(draft("verify"), macKey: Self.macLabel, pool: pool)
        }
        #expect(try String(contentsOfFile: cutOne.path, encoding: .utf8).split(separator: "\n").count == 3)

        // The untouched transcript goes on, and its anchor with it.
        try await transcript.append(draft("verify"), macKey: Self.macLabel, pool: pool)
        #expect(try await transcript.verify(pool: pool).anchoredLine == 5)
        await pool.shutdown()
    }
}
