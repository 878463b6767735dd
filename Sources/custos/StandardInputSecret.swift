import CustosCommandLine
import Foundation
import SecureMemory

/// A secret (an API key, a subject's external id, which may be an email) read from standard
/// input, never from the command line. Read with `read(2)` straight into locked memory, so no
/// `Data` or array copy is left unwiped; from a terminal, one line with echo off (the screen,
/// its scrollback and a session recording never show it).
enum StandardInputSecret {
    /// The longest secret taken (an external id is at most 256 bytes, a key 67).
    static let limit = 4_096

    /// - Parameter what: names the secret in the terminal's prompt.
    /// - Throws: ``LocalError`` when it is empty or longer than ``limit``.
    static func read(_ what: String) throws -> SecretBytes {
        let terminal = isatty(STDIN_FILENO) != 0
        var saved = termios()
        let quiet = terminal && tcgetattr(STDIN_FILENO, &saved) == 0
        if quiet {
            var silent = saved
            silent.c_lflag &= ~tcflag_t(ECHO)
            // Ctrl-C or a kill while echo is off must not leave the officer's terminal silent.
            savedTerminal = saved
            for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] { Glibc.signal(signal, restoreTerminalAndDie) }
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent)
            FileHandle.standardError.write(Data("\(what) (not shown): ".utf8))
        }
        defer {
            if quiet {
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
                for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] { Glibc.signal(signal, SIG_DFL) }
                FileHandle.standardError.write(Data("\n".utf8))
            }
        }
        var length = 0
        var overflow = false
        let buffer = SecretBytes(count: limit + 1) { bytes in
            while length <= limit {
                let got = Glibc.read(STDIN_FILENO, bytes.baseAddress! + length, limit + 1 - length)
                if got < 0 && errno == EINTR { continue }
                guard got > 0 else { break }
                length += got
                // A terminal gives one line at a time: the first ends the secret.
                if terminal, bytes[length - 1] == 0x0A { break }
            }
            overflow = length > limit
        }
        guard !overflow else { throw LocalError.failed("\(what) on standard input is longer than \(limit) bytes") }
        let trimmed = buffer.withUnsafeBytes { bytes in
            var end = length
            while end > 0, [0x0A, 0x0D, 0x20].contains(bytes[end - 1]) { end -= 1 }
            return end
        }
        guard trimmed > 0 else { throw LocalError.failed("no \(what) on standard input") }
        return buffer.withUnsafeBytes { bytes in
            SecretBytes(count: trimmed) { target in target.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<trimmed])) }
        }
    }
}

/// The terminal's settings while a secret is read with echo off, for the signal handler (set
/// before the handler is installed, read only by it: the CLI reads one secret, on one thread).
nonisolated(unsafe) private var savedTerminal = termios()

/// Puts the terminal's echo back and dies of the signal as it would have.
private func restoreTerminalAndDie(_ signal: Int32) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &savedTerminal)
    Glibc.signal(signal, SIG_DFL)
    raise(signal)
}
