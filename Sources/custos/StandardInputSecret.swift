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
    /// Signals that end the process while echo is off: each puts the echo back first.
    private static let ending = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    /// - Parameter what: names the secret in the terminal's prompt.
    /// - Throws: ``LocalError`` when it is empty, longer than ``limit`` or unreadable.
    static func read(_ what: String) throws -> SecretBytes {
        var saved = termios()
        var previous: [sigaction] = []
        let quiet = isatty(STDIN_FILENO) != 0 && tcgetattr(STDIN_FILENO, &saved) == 0 && silence(saved, keeping: &previous)
        if quiet { FileHandle.standardError.write(Data("\(what) (not shown): ".utf8)) }
        defer {
            if quiet {
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
                for (signal, action) in zip(ending + [SIGPIPE], previous) {
                    var action = action
                    sigaction(signal, &action, nil)
                }
                FileHandle.standardError.write(Data("\n".utf8))
            }
        }
        // Room for the limit, a CR LF after it, and one byte more: a full buffer means more
        // than a secret and its line break.
        let capacity = limit + 3
        var length = 0
        var failure: Int32?
        let buffer = SecretBytes(count: capacity) { bytes in
            while length < capacity {
                let got = Glibc.read(STDIN_FILENO, bytes.baseAddress! + length, capacity - length)
                if got > 0 {
                    length += got
                    // A terminal gives one line at a time: the first ends the secret.
                    if quiet, bytes[length - 1] == 0x0A { break }
                    continue
                }
                if got == 0 { break }
                switch errno {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK:
                    // Standard input left non-blocking by whoever started us: wait, do not
                    // take a partial secret for the whole.
                    var ready = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
                    _ = poll(&ready, 1, -1)
                default:
                    failure = errno
                    return
                }
            }
        }
        if let failure { throw LocalError.failed("cannot read \(what) from standard input (errno \(failure))") }
        let trimmed = buffer.withUnsafeBytes { bytes in
            var end = length
            while end > 0, [0x0A, 0x0D, 0x20].contains(bytes[end - 1]) { end -= 1 }
            return end
        }
        guard trimmed <= limit, length < capacity else {
            throw LocalError.failed("\(what) on standard input is longer than \(limit) bytes")
        }
        guard trimmed > 0 else { throw LocalError.failed("no \(what) on standard input") }
        return buffer.withUnsafeBytes { bytes in
            SecretBytes(count: trimmed) { target in target.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<trimmed])) }
        }
    }

    /// Turns the terminal's echo off, with handlers that put it back for the signals that
    /// would end the process meanwhile (their previous actions kept in `previous`, in the order
    /// of ``ending`` then `SIGPIPE`, ignored while the prompt is written: a closed standard
    /// error must not end the process with echo off).
    /// - Returns: whether echo is off; the prompt promises it only then.
    private static func silence(_ saved: termios, keeping previous: inout [sigaction]) -> Bool {
        savedTerminal = saved
        for signal in ending + [SIGPIPE] {
            var action = sigaction()
            var old = sigaction()
            if signal == SIGPIPE {
                action.__sigaction_handler.sa_handler = SIG_IGN
            } else {
                action.__sigaction_handler.sa_handler = restoreTerminalAndDie
            }
            sigemptyset(&action.sa_mask)
            sigaction(signal, &action, &old)
            previous.append(old)
        }
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO)
        guard tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent) == 0 else {
            for (signal, action) in zip(ending + [SIGPIPE], previous) {
                var action = action
                sigaction(signal, &action, nil)
            }
            previous.removeAll()
            return false
        }
        return true
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
