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
/// It is read, as SoftHSM reads it, from the configuration SoftHSM would read
/// (``configurationPath()``) at each call: these calls are rare (start-up, login, recovery).
struct SoftHSMTokenFolderLock {
    /// SoftHSM's configuration when `SOFTHSM2_CONF` is unset (Debian's build).
    static let defaultConfiguration = "/etc/softhsm/softhsm2.conf"

    /// The open token folder, holding the lock until ``release()``.
    private let descriptor: Int32

    /// How long a call waits for another process's hold before it goes on without the lock.
    /// A Custos process holds it for one C call (milliseconds; a scan of a large folder, a
    /// second at most). A holder that never lets go (a process stopped with SIGSTOP, or anyone
    /// else able to open the folder) must not hold up this process's logins and recoveries for
    /// good.
    static let patience: Duration = .seconds(10)

    /// Takes the lock, waiting for other processes up to `patience`; `nil` without a token
    /// folder to lock (no readable configuration, not SoftHSM's), where `flock` is refused, or
    /// after that wait — which `abandoned` is told of, with the folder.
    init?(patience: Duration = Self.patience, abandoned: (String) -> Void = { _ in }) {
        guard let folder = Self.tokenFolder() else { return nil }
        let descriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        let clock = ContinuousClock()
        let deadline = clock.now + patience
        var pause: UInt32 = 500
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let waiting = errno == EWOULDBLOCK || errno == EINTR
            guard waiting, clock.now < deadline else {
                close(descriptor)
                if waiting { abandoned(folder) }
                return nil
            }
            // Short first: a hold is one C call; no more than 20 ms between tries.
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }
        self.descriptor = descriptor
    }

    /// Gives the lock back (closing the folder releases it). Once only.
    func release() {
        close(descriptor)
    }

    /// Why the lock cannot be taken with the configuration at `configurationPath` (SoftHSM's
    /// now, by default), for a warning at start-up: every such failure otherwise only means
    /// going on without it. `nil` when it can be taken (or is held by someone now).
    static func problem(configurationPath: String = configurationPath()) -> String? {
        guard let text = contents(of: configurationPath) else { return "configuration \(configurationPath) cannot be read" }
        let folder = tokenFolder(inConfiguration: text)
        let descriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return "token folder \(folder) cannot be opened: \(String(cString: strerror(errno)))" }
        defer { close(descriptor) }
        // On NFS, for one, flock on a folder fails with EBADF.
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 || errno == EWOULDBLOCK else {
            return "token folder \(folder) cannot be locked: \(String(cString: strerror(errno)))"
        }
        return nil
    }

    /// `directories.tokendir` of the configuration SoftHSM would read now; `nil` when it has
    /// none to read (its `C_Initialize` then fails: nothing to lock).
    static func tokenFolder() -> String? {
        guard let text = contents(of: configurationPath()) else { return nil }
        return tokenFolder(inConfiguration: text)
    }

    /// Where SoftHSM 2.6.1 looks (`SimpleConfigLoader::getConfigPath`): `SOFTHSM2_CONF`, else
    /// `~/.config/softhsm2/softhsm2.conf` when it can be opened, else its default.
    static func configurationPath() -> String {
        if let path = getenv("SOFTHSM2_CONF") { return String(cString: path) }
        // HOME, or when it is unset or empty the password database's home, as SoftHSM does.
        let home = getenv("HOME").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
            ?? getpwuid(getuid()).flatMap { $0.pointee.pw_dir }.map { String(cString: $0) }
        if let home {
            let path = home + "/.config/softhsm2/softhsm2.conf"
            let descriptor = open(path, O_RDONLY | O_CLOEXEC)
            if descriptor >= 0 {
                close(descriptor)
                return path
            }
        }
        return defaultConfiguration
    }

    /// SoftHSM's folder when its configuration names none.
    static let defaultTokenFolder = "/var/lib/softhsm/tokens/"

    /// SoftHSM 2.6.1's reading of one setting (`SimpleConfigLoader::loadConfiguration`), so that
    /// every process locks the folder SoftHSM uses: lines as `fgets` into 1,024 bytes gives them
    /// (a longer line goes on as a line of its own); each cut at its first `#`, `\r`, `\n` or
    /// NUL; name and value the first two `=`-separated pieces (`strtok`: empty pieces skipped,
    /// anything after a second `=` ignored), blanks trimmed, a line with either empty ignored;
    /// the last line naming it wins; none: SoftHSM's default. A relative value stays relative,
    /// as SoftHSM opens it (to the working folder).
    static func tokenFolder(inConfiguration text: String) -> String {
        // Bytes, not Characters: Swift reads "\r\n" as one Character.
        let isSpace = { (byte: UInt8) in byte == 0x20 || (0x09...0x0D).contains(byte) }
        var folder = defaultTokenFolder
        for line in fgetsLines(Array(text.utf8)) {
            let content = line.prefix { $0 != UInt8(ascii: "#") && $0 != 0x0D && $0 != 0x0A && $0 != 0 }
            let pieces = content.split(separator: UInt8(ascii: "="), maxSplits: 2)
            guard pieces.count >= 2 else { continue }
            let (name, value) = (pieces[0].trimming(while: isSpace), pieces[1].trimming(while: isSpace))
            guard !name.isEmpty, !value.isEmpty else { continue }
            if name.elementsEqual("directories.tokendir".utf8) { folder = String(decoding: value, as: UTF8.self) }
        }
        return folder
    }

    /// The pieces `fgets(buffer, 1024, file)` returns one by one: up to and with a newline, at
    /// most 1,023 bytes.
    private static func fgetsLines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var lines = [ArraySlice<UInt8>]()
        var start = bytes.startIndex
        while start < bytes.endIndex {
            let limit = min(start + 1_023, bytes.endIndex)
            let end = bytes[start..<limit].firstIndex(of: 0x0A).map { $0 + 1 } ?? limit
            lines.append(bytes[start..<end])
            start = end
        }
        return lines
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

extension ArraySlice<UInt8> {
    /// Without the leading and trailing bytes `drop` names.
    fileprivate func trimming(while drop: (UInt8) -> Bool) -> ArraySlice<UInt8> {
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else { return [] }
        return self[first...last]
    }
}
