import CustosCommandLine
import Foundation

/// Destructive commands ask first unless `--yes`; without a terminal they refuse rather than
/// assume consent.
func confirm(_ question: String, yes: Bool) throws {
    if yes { return }
    guard isatty(STDIN_FILENO) != 0 else {
        throw LocalError.failed("\(question) — refusing without --yes (no terminal to ask)")
    }
    FileHandle.standardError.write(Data("\(question) [y/N] ".utf8))
    guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
        throw LocalError.failed("cancelled")
    }
}

/// Reads a secret (an API key) from standard input, never from the command line.
func readSecretFromStandardInput() -> [UInt8] {
    var bytes = Array(FileHandle.standardInput.readDataToEndOfFile())
    while let last = bytes.last, last == 0x0A || last == 0x0D || last == 0x20 { bytes.removeLast() }
    return bytes
}
