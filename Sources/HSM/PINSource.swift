public import SecureMemory

#if canImport(Glibc)
import Glibc
#endif

/// Where a PIN comes from. Never the command line: argv is visible to every user of the
/// machine through `/proc`.
public enum PINSource: Sendable, Hashable, CustomStringConvertible {
    /// A file readable by its owner only (mode 0600 or 0400). A trailing newline is ignored.
    case file(path: String)
    /// An environment variable.
    case environment(name: String)

    public var description: String {
        switch self {
        case .file(let path): "file \(path)"
        case .environment(let name):
            // A PIN typed where the variable's name belongs (`--user-pin-env 1234`) would
            // otherwise reach the error and, under `serve`, the log.
            Self.isVariableName(name) ? "environment variable \(name)" : "environment variable (not a variable name; not shown)"
        }
    }

    /// An environment variable's name as such names are written: upper-case letters, digits and
    /// `_`, not starting with a digit. Stricter than POSIX on purpose: the PINs `scripts/setup`
    /// makes are mixed-case letters and digits, and most would pass as lower-case names.
    static func isVariableName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        let letter = { (byte: UInt8) in (0x41...0x5A).contains(byte) || byte == 0x5F }
        return (1...128).contains(bytes.count) && letter(bytes[0]) && bytes.allSatisfy { letter($0) || (0x30...0x39).contains($0) }
    }

    /// Reads the PIN into protected memory.
    /// - Throws: ``PINSourceError`` naming the source and the problem, never the PIN.
    public func read() throws(PINSourceError) -> SecretBytes {
        switch self {
        case .environment(let name):
            guard let value = getenv(name) else { throw .missing(self) }
            let length = strlen(value)
            guard length > 0 else { throw .empty(self) }
            return SecretBytes(count: length) { buffer in
                buffer.copyMemory(from: UnsafeRawBufferPointer(start: value, count: length))
            }
        case .file(let path):
            return try Self.readFile(path, source: self)
        }
    }

    private static func readFile(_ path: String, source: PINSource) throws(PINSourceError) -> SecretBytes {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw .missing(source) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { throw .notARegularFile(source) }
        guard status.st_mode & 0o077 == 0 else { throw .permissionsTooOpen(source, mode: UInt32(status.st_mode & 0o777)) }
        guard status.st_uid == geteuid() else { throw .wrongOwner(source) }
        let size = Int(status.st_size)
        guard size > 0 else { throw .empty(source) }
        guard size <= 256 else { throw .tooLong(source) }
        // Read into protected scratch, then copy the PIN without its trailing newline.
        let raw = try? SecretBytes(count: size) { buffer in
            var offset = 0
            while offset < size {
                let got = Glibc.read(descriptor, buffer.baseAddress! + offset, size - offset)
                if got <= 0 { throw PINSourceError.unreadable(source) }
                offset += got
            }
        }
        guard let raw else { throw .unreadable(source) }
        let length = raw.withUnsafeBytes { bytes in
            var end = bytes.count
            while end > 0, bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D { end -= 1 }
            return end
        }
        guard length > 0 else { throw .empty(source) }
        return raw.withUnsafeBytes { bytes in
            SecretBytes(count: length) { target in target.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<length])) }
        }
    }
}

/// Why a PIN could not be read. Names the source, never the content.
public enum PINSourceError: Error, Sendable, Hashable, CustomStringConvertible {
    case missing(PINSource)
    case empty(PINSource)
    case tooLong(PINSource)
    case notARegularFile(PINSource)
    case permissionsTooOpen(PINSource, mode: UInt32)
    case wrongOwner(PINSource)
    case unreadable(PINSource)

    public var description: String {
        switch self {
        case .missing(let source): "\(source) does not exist"
        case .empty(let source): "\(source) is empty"
        case .tooLong(let source): "\(source) is longer than 256 bytes"
        case .notARegularFile(let source): "\(source) is not a regular file"
        case .permissionsTooOpen(let source, let mode):
            "\(source) has mode \(String(mode, radix: 8)); it must be readable by its owner only (0600)"
        case .wrongOwner(let source): "\(source) is not owned by the user running custos"
        case .unreadable(let source): "\(source) could not be read"
        }
    }
}
