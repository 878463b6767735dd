import Foundation

/// Certificates made by `scripts/make-ca` in a temporary folder, once per test process: the
/// tests exercise the script itself as well as the TLS set-up.
public struct TestCertificates: Sendable {
    public let directory: String

    public func path(_ name: String) -> String { "\(directory)/\(name)" }

    static let shared: Result<TestCertificates, any Error> = Result { try make() }

    public static func get() throws -> TestCertificates { try shared.get() }

    private static func make() throws -> TestCertificates {
        // Tests/HSMTestSupport/TestCertificates.swift → the repository.
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("custos-rpc-tests-\(UUID().uuidString)").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [root.appendingPathComponent("scripts/make-ca").path, directory]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "scripts/make-ca failed: \(process.terminationStatus)"])
        }
        return TestCertificates(directory: directory)
    }
}
