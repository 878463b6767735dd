import Crypto
import Foundation
public import PKCS11
import SecureMemory

/// One custodian's share, as a JSON file: everything needed to check it on its own and, with
/// M − 1 others of the same ceremony, to rebuild and verify the root keys.
///
/// The share bytes are held only in protected memory and appear only in the file (as hex under
/// `"share"`); the rest of the file is the ``Header``, which is not secret.
public struct ShareFile: Sendable {
    public static let format = "custos-share/v1"
    static let shareDomain = "custos/ceremony/share/v1"
    static let secretDomain = "custos/ceremony/secret/v1"

    /// A key backed up by the shares: bytes `offset ..< offset + length` of the shared secret.
    public struct Key: Codable, Sendable, Hashable {
        public let label: String
        /// `aes` or `generic-secret`.
        public let keyType: String
        public let offset: Int
        public let length: Int
        /// Hex KCV, the same bytes the token reports as `CKA_CHECK_VALUE` (see ``KeyCheckValue``).
        public let checkValue: String
        /// How ``checkValue`` is computed, in words (for whoever compares it by hand).
        public let checkValueRule: String

        public init(label: String, keyType: KeyType, offset: Int, length: Int, checkValue: [UInt8]) {
            self.label = label
            self.keyType = keyType == .aes ? "aes" : "generic-secret"
            self.offset = offset
            self.length = length
            self.checkValue = Hex.encode(checkValue)
            self.checkValueRule = keyType == .aes ? "AES-ECB(K, 0^16)[0..3]" : "SHA-1(K)[0..3]"
        }

        /// The key type of an escrow private key (X25519): never imported on a token; its
        /// check value is the first 3 bytes of SHA-256 of its public key.
        public static let escrowKeyType = "x25519-escrow"

        /// An escrow private key (``KeyCeremony/generateEscrow(threshold:shares:outputDirectory:transcript:keyring:)``).
        public init(escrowLabel label: String, offset: Int, length: Int, checkValue: [UInt8]) {
            self.label = label
            keyType = Self.escrowKeyType
            self.offset = offset
            self.length = length
            self.checkValue = Hex.encode(checkValue)
            checkValueRule = "SHA-256(X25519 public key)[0..3]"
        }

        public var isEscrowKey: Bool { keyType == Self.escrowKeyType }

        public var pkcs11KeyType: KeyType? {
            switch keyType {
            case "aes": .aes
            case "generic-secret": .genericSecret
            default: nil
            }
        }
    }

    /// Which token the keys were made for.
    public struct Token: Codable, Sendable, Hashable {
        public let label: String
        public let serial: String
        public init(label: String, serial: String) {
            self.label = label
            self.serial = serial
        }
    }

    /// Everything in the file but the share bytes.
    public struct Header: Codable, Sendable, Hashable {
        public let format: String
        public let ceremonyID: String
        public let createdAt: String
        public let threshold: Int
        public let shares: Int
        public let index: Int
        /// First 8 bytes of SHA-256(domain ‖ ceremony ‖ M ‖ N ‖ index ‖ share), hex: a damaged or
        /// edited share (or header) is caught before any combination.
        public let shareCheckValue: String
        /// First 16 bytes of SHA-256(domain ‖ ceremony ‖ secret), hex: the combined secret is
        /// checked against it, so shares of another split never yield a key.
        public let secretCheckValue: String
        public let keys: [Key]
        public let token: Token
    }

    public let header: Header
    public let share: ShamirShare

    init(header: Header, share: ShamirShare) {
        self.header = header
        self.share = share
    }

    // MARK: Check values

    static func shareCheckValue(ceremonyID: String, threshold: Int, count: Int, share: ShamirShare) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(shareDomain.utf8) + [0])
        hasher.update(data: Array(ceremonyID.utf8) + [0, UInt8(threshold), UInt8(count), share.index])
        share.value.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return Hex.encode(hasher.finalize().prefix(8))
    }

    static func secretCheckValue(ceremonyID: String, secret: SecretBytes) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(secretDomain.utf8) + [0])
        hasher.update(data: Array(ceremonyID.utf8) + [0])
        secret.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return Hex.encode(hasher.finalize().prefix(16))
    }

    // MARK: Writing

    /// Writes the file (new, 0600); the share's hex is assembled in protected memory.
    /// - Throws: ``CeremonyError/fileExists(_:)`` and other file errors.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var headerJSON = Array(try encoder.encode(header))
        // `{ …header… }` becomes `{ …header…,\n  "share" : "<hex>"\n}`.
        while let last = headerJSON.last, last == 0x0A || last == 0x20 { headerJSON.removeLast() }
        guard headerJSON.last == 0x7D else { throw CeremonyError.invalidArgument("share header did not encode as a JSON object") }
        headerJSON.removeLast()
        while let last = headerJSON.last, last == 0x0A || last == 0x20 { headerJSON.removeLast() }
        let prefix = headerJSON + Array(",\n  \"share\" : \"".utf8)
        let suffix = Array("\"\n}\n".utf8)
        let hex = Hex.encode(secret: share.value)
        let contents = SecretBytes(count: prefix.count + hex.count + suffix.count) { output in
            output.copyBytes(from: prefix)
            hex.withUnsafeBytes { bytes in
                UnsafeMutableRawBufferPointer(rebasing: output[prefix.count ..< prefix.count + bytes.count]).copyMemory(from: bytes)
            }
            UnsafeMutableRawBufferPointer(rebasing: output[(prefix.count + hex.count)...]).copyBytes(from: suffix)
        }
        try PrivateFile.create(path, contents: contents)
    }

    // MARK: Reading

    /// Reads and checks one share file: its format, its header fields and the share's own
    /// check value.
    /// - Throws: ``CeremonyError/unreadableShareFile(path:reason:)`` or
    ///   ``CeremonyError/corruptedShare(path:index:)``.
    public static func read(from path: String) throws -> ShareFile {
        let contents = try PrivateFile.read(path)
        let (header, share) = try contents.withUnsafeBytes { bytes throws -> (Header, ShamirShare) in
            guard let range = shareValueRange(in: bytes) else {
                throw CeremonyError.unreadableShareFile(path: path, reason: "no \"share\" field")
            }
            guard let value = Hex.decode(secret: UnsafeRawBufferPointer(rebasing: bytes[range])), value.count > 0 else {
                throw CeremonyError.unreadableShareFile(path: path, reason: "the share is not hexadecimal")
            }
            // The header is decoded from a copy without the share's characters.
            let redacted = Data(bytes[..<range.lowerBound]) + Data(bytes[range.upperBound...])
            let header: Header
            do {
                header = try JSONDecoder().decode(Header.self, from: redacted)
            } catch {
                throw CeremonyError.unreadableShareFile(path: path, reason: "not a share file (\(type(of: error)))")
            }
            guard (1...255).contains(header.index) else {
                throw CeremonyError.unreadableShareFile(path: path, reason: "share index \(header.index) out of range")
            }
            return (header, ShamirShare(index: UInt8(header.index), value: value))
        }
        guard header.format == format else {
            throw CeremonyError.unreadableShareFile(path: path, reason: "format \(header.format), expected \(format)")
        }
        guard (2...255).contains(header.threshold), (header.threshold...255).contains(header.shares), header.index <= header.shares else {
            throw CeremonyError.unreadableShareFile(path: path, reason: "threshold \(header.threshold), shares \(header.shares), index \(header.index) are inconsistent")
        }
        let expected = shareCheckValue(ceremonyID: header.ceremonyID, threshold: header.threshold, count: header.shares, share: share)
        guard constantTimeEqual(Array(expected.utf8), Array(header.shareCheckValue.lowercased().utf8)) else {
            throw CeremonyError.corruptedShare(path: path, index: share.index)
        }
        return ShareFile(header: header, share: share)
    }

    /// The byte range of the share's hex digits: after `"share"`, optional blanks, `:`, optional
    /// blanks and `"`, up to the next `"`.
    static func shareValueRange(in bytes: UnsafeRawBufferPointer) -> Range<Int>? {
        let key = Array("\"share\"".utf8)
        guard bytes.count > key.count else { return nil }
        var start = 0
        while start + key.count <= bytes.count {
            if bytes[start] == key[0] && (0..<key.count).allSatisfy({ bytes[start + $0] == key[$0] }) { break }
            start += 1
        }
        guard start + key.count <= bytes.count else { return nil }
        var cursor = start + key.count
        func skipBlanks() { while cursor < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[cursor]) { cursor += 1 } }
        skipBlanks()
        guard cursor < bytes.count, bytes[cursor] == 0x3A else { return nil }
        cursor += 1
        skipBlanks()
        guard cursor < bytes.count, bytes[cursor] == 0x22 else { return nil }
        cursor += 1
        let valueStart = cursor
        while cursor < bytes.count, bytes[cursor] != 0x22 { cursor += 1 }
        guard cursor < bytes.count else { return nil }
        return valueStart ..< cursor
    }
}

/// Compares in time that depends only on the lengths.
func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
    return difference == 0
}
