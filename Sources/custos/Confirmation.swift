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
