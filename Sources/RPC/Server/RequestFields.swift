import Custody
import CustosModel
import Foundation
import GRPCCore
import SwiftProtobuf
import Verification

/// Parsing of request fields, each refusal naming the field (INVALID_ARGUMENT).
enum RequestFields {
    static func uuid(_ text: String, field: String) throws -> UUID {
        guard text.utf8.count == 36, let id = UUID(uuidString: text) else {
            throw RPCError(code: .invalidArgument, message: "\(field) is not a UUID")
        }
        return id
    }

    static func tenant(_ text: String) throws -> TenantID {
        do {
            return try TenantID.parse(text)
        } catch {
            throw RPCError(code: .invalidArgument, message: "tenant_id is \(error)")
        }
    }

    /// A caller's timestamp, refused outside 0001-01-01 to 9999-12-31 (the range protobuf's
    /// Timestamp allows): past it SwiftProtobuf's conversion to `Date` or PostgresNIO's encoding
    /// of the `Date` traps, which took the whole server down (attack review, session 18).
    static func date(_ timestamp: Google_Protobuf_Timestamp, field: String) throws -> Date {
        guard (-62_135_596_800...253_402_300_799).contains(timestamp.seconds), (0..<1_000_000_000).contains(timestamp.nanos) else {
            throw RPCError(code: .invalidArgument, message: "\(field) is outside 0001-01-01 to 9999-12-31")
        }
        return timestamp.date
    }

    /// Text an officer names something with (a key's label, a certificate's subject): at most
    /// `maxBytes` bytes; no control characters (PostgreSQL refuses NUL in text: it came back
    /// INTERNAL), no line breaks (they would forge lines in what the CLI prints), and no format,
    /// private-use or unassigned characters (bidi overrides and zero-width characters make a
    /// label read as another in `apikey list` and `audit tail`). Never repeated in the refusal.
    static func text(_ text: String, field: String, maxBytes: Int) throws -> String {
        guard text.utf8.count <= maxBytes else { throw RPCError(code: .invalidArgument, message: "\(field): at most \(maxBytes) bytes") }
        let refused: Set<Unicode.GeneralCategory> = [.control, .lineSeparator, .paragraphSeparator, .format, .privateUse, .unassigned, .surrogate]
        guard !text.unicodeScalars.contains(where: { refused.contains($0.properties.generalCategory) }) else {
            throw RPCError(code: .invalidArgument, message: "\(field): control, format and unassigned characters and line breaks are not allowed")
        }
        return text
    }

    /// An API key's id: 11 base62 characters. Checked before any lookup and never repeated: an
    /// officer who pastes a whole key by mistake must not see it echoed back.
    static func apiKeyID(_ text: String) throws -> String {
        guard APIKeyFormat.isKeyID(text) else {
            throw RPCError(code: .invalidArgument, message: "key_id is 11 base62 characters (the id `apikey list` shows, not the key)")
        }
        return text
    }

    /// A tenant's label: 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit — byte by
    /// byte, as the table's CHECK reads it (a regular expression's `$` also matched before a
    /// final line break, and the insert then failed as INTERNAL after the keys were made).
    static func tenantLabel(_ label: String) throws -> String {
        let bytes = Array(label.utf8)
        let lowerOrDigit = { (byte: UInt8) in (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte) }
        guard (1...63).contains(bytes.count), lowerOrDigit(bytes[0]), bytes.allSatisfy({ lowerOrDigit($0) || $0 == 0x2D }) else {
            throw RPCError(code: .invalidArgument, message: "label: 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit")
        }
        return label
    }

    static func decision(_ decision: Decision) -> Custos_V1_Decision {
        .with {
            $0.color = switch decision.color {
            case .green: .green
            case .amber: .amber
            case .red: .red
            }
            $0.confidence = confidence(decision.confidence)
        }
    }

    static func confidence(_ confidence: Decision.Confidence?) -> Custos_V1_Confidence {
        switch confidence {
        case .low: .low
        case .medium: .medium
        case .high: .high
        case nil: .unspecified
        }
    }

    static func purpose(_ purpose: Custos_V1_KeyPurpose) throws -> KeyPurpose {
        guard let purpose = KeyPurpose(wire: purpose) else {
            throw RPCError(code: .invalidArgument, message: "purpose is required (e.g. KEY_PURPOSE_DATA)")
        }
        return purpose
    }

    static func purpose(_ purpose: KeyPurpose) -> Custos_V1_KeyPurpose { purpose.wire }

    static func state(_ state: KeyState) -> Custos_V1_KeyState { state.wire }
}

extension Caller {
    /// The tenant this call is scoped to (the interceptor guarantees one on tenant services).
    static func requireTenant() throws -> TenantID {
        guard let tenant = current?.tenant else { throw RPCError(code: .unauthenticated, message: "no tenant-scoped caller") }
        return tenant
    }

    static func requireOfficer() throws -> String {
        guard case .officer(let name) = current?.kind else { throw RPCError(code: .permissionDenied, message: "Admin calls need an officer certificate") }
        return name
    }
}
