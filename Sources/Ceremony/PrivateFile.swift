import PKCS11
import SecureMemory

#if canImport(Glibc)
import Glibc
#endif

/// Ceremony output files: created with `O_EXCL` (an existing file is never overwritten),
/// mode 0600, synced to disk before the step reports success.
enum PrivateFile {
    /// Creates `path` and writes `contents`.
    /// - Throws: ``CeremonyError/fileExists(_:)`` or ``CeremonyError/fileError(path:operation:errno:)``.
    static func create(_ path: String, contents: some PKCS11Bytes) throws(CeremonyError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else {
            if errno == EEXIST { throw .fileExists(path) }
            throw .fileError(path: path, operation: "create", errno: errno)
        }
        defer { close(descriptor) }
        guard fchmod(descriptor, 0o600) == 0 else { throw .fileError(path: path, operation: "chmod", errno: errno) }
        try write(descriptor, contents, path: path)
    }

    /// Appends `contents` to an existing file (the transcript), which must be a regular file
    /// owned by this user with mode 0600 or stricter.
    static func append(_ path: String, contents: some PKCS11Bytes) throws(CeremonyError) {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw .fileError(path: path, operation: "open for append", errno: errno) }
        defer { close(descriptor) }
        if let exposure = try ownersAlone(descriptor, path: path).exposure {
            throw .transcriptUnreadable(path: path, reason: "\(exposure); a transcript is written 0600 by the user running the ceremony")
        }
        try write(descriptor, contents, path: path)
    }

    /// Reads a whole share file into protected memory. Like a PIN file, it must be this user's
    /// and readable by its owner only: a share copied with mode 0644 is refused, not used.
    static func read(_ path: String, limit: Int = 1 << 20) throws(CeremonyError) -> SecretBytes {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw .fileError(path: path, operation: "open", errno: errno) }
        defer { close(descriptor) }
        let (status, exposure) = try ownersAlone(descriptor, path: path)
        if let exposure { throw .unreadableShareFile(path: path, reason: "\(exposure); a share is its custodian's alone") }
        let size = Int(status.st_size)
        guard size <= limit else { throw .fileError(path: path, operation: "read (file too large)", errno: EFBIG) }
        var failure: Int32?
        let contents = SecretBytes(count: size) { buffer in
            var offset = 0
            while offset < size {
                let got = Glibc.read(descriptor, buffer.baseAddress! + offset, size - offset)
                if got < 0 && errno == EINTR { continue }
                if got <= 0 { failure = got == 0 ? EIO : errno; return }
                offset += got
            }
        }
        if let failure { throw .fileError(path: path, operation: "read", errno: failure) }
        return contents
    }

    /// The open file's status, if it is a regular file, and what lets others in (`nil` when it
    /// is this user's with mode 0600 or stricter, as PIN files must be).
    private static func ownersAlone(_ descriptor: Int32, path: String) throws(CeremonyError) -> (status: stat, exposure: String?) {
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            throw .fileError(path: path, operation: "stat (not a regular file)", errno: errno)
        }
        if status.st_mode & 0o077 != 0 { return (status, "mode \(String(status.st_mode & 0o777, radix: 8)) lets others in (chmod 600)") }
        if status.st_uid != geteuid() { return (status, "it is not owned by the user running custos") }
        return (status, nil)
    }

    static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    private static func write(_ descriptor: Int32, _ contents: some PKCS11Bytes, path: String) throws(CeremonyError) {
        let failure: Int32? = contents.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let wrote = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if wrote < 0 && errno == EINTR { continue }
                if wrote <= 0 { return errno }
                offset += wrote
            }
            return nil
        }
        if let failure { throw .fileError(path: path, operation: "write", errno: failure) }
        guard fsync(descriptor) == 0 else { throw .fileError(path: path, operation: "fsync", errno: errno) }
    }
}
