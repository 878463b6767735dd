#if canImport(Glibc)
import Glibc
#endif

/// The other processes' half of ``PKCS11Module``'s token-file lock: an exclusive `flock` on the
/// token folder SoftHSM is about to scan or write, taken by every Custos process (the service,
/// `custos hsm …`, `custos ceremony …`) around the same calls.
///
/// SoftHSM 2.6.1 rewrites a token's `token.object` at every `C_Login`, leaving it empty for
/// milliseconds; a `C_Initialize` in another process scanning the folder meanwhile misses that
/// token, or aborts when two tokens read as empty (helper-60 reproduced it with four processes
/// logging in while a fifth started), and an abort can leave other tokens' files empty: tokens
/// lost. SoftHSM's own file locks do not cover the rewrite. Processes that do not take this lock
/// (`softhsm2-util`, `pkcs11-tool`) are still not covered: docs/operations.md.
///
/// The folder, not the configuration file, so that two configurations naming one folder agree.
/// It is read from the configuration SoftHSM would read (`SOFTHSM2_CONF`, else its default) at
/// each call: these calls are rare (start-up, login, recovery).
struct SoftHSMTokenFolderLock {
    /// SoftHSM's configuration when `SOFTHSM2_CONF` is unset (Debian's build).
    static let defaultConfiguration = "/etc/softhsm/softhsm2.conf"

    /// The open token folder, holding the lock until ``release()``.
    private let descriptor: Int32

    /// Takes the lock, waiting for other processes; `nil` without a token folder to lock (no
    /// readable configuration, not SoftHSM's) or where `flock` is refused.
    init?() {
        guard let folder = Self.tokenFolder() else { return nil }
        let descriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        var locked = flock(descriptor, LOCK_EX) == 0
        while !locked, errno == EINTR { locked = flock(descriptor, LOCK_EX) == 0 }
        guard locked else {
            close(descriptor)
            return nil
        }
        self.descriptor = descriptor
    }

    /// Gives the lock back (closing the folder releases it). Once only.
    func release() {
        close(descriptor)
    }

    /// `directories.tokendir` of the configuration SoftHSM would read now.
    static func tokenFolder() -> String? {
        let configuration = getenv("SOFTHSM2_CONF").map { String(cString: $0) } ?? defaultConfiguration
        guard let text = contents(of: configuration) else { return nil }
        return tokenFolder(inConfiguration: text)
    }

    /// SoftHSM's parse of one setting: `name = value` lines, `#` comments, blanks trimmed.
    static func tokenFolder(inConfiguration text: String) -> String? {
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            guard !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else { continue }
            let name = trimmed[..<equals].filter { $0 != " " && $0 != "\t" }
            guard name == "directories.tokendir" else { continue }
            let value = trimmed[trimmed.index(after: equals)...].drop { $0 == " " || $0 == "\t" }
            let folder = String(value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
            return folder.hasPrefix("/") ? folder : nil
        }
        return nil
    }

    /// The first 64 KiB of the file at `path` (a configuration is a few lines).
    private static func contents(of path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: 65_536)
        var count = 0
        while count < bytes.count {
            let read = bytes.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress! + count, $0.count - count) }
            if read < 0, errno == EINTR { continue }
            guard read > 0 else { break }
            count += read
        }
        return String(decoding: bytes[..<count], as: UTF8.self)
    }
}
