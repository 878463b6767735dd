public import Foundation

/// What `custos audit export` writes: one JSON object per audit entry and line, for a SIEM
/// (fields in docs/audit.md), and how it reads `--since`.
public enum AuditExportFormat {
    /// One entry as its JSON line (keys sorted, no trailing newline).
    public static func line(_ entry: Custos_V1_AuditEntry) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(Line(entry)), as: UTF8.self)
    }

    private struct Line: Encodable {
        let sequence: UInt64
        let time: String
        let tenant: String?
        let actor: String
        let action: String
        let target: String
        let details: [String: String]
        let hash: String
        let previousHash: String

        init(_ entry: Custos_V1_AuditEntry) {
            sequence = entry.sequence
            time = AuditExportFormat.timestamp(entry.at.date)
            tenant = entry.tenantID.isEmpty ? nil : entry.tenantID
            actor = entry.actor
            action = entry.action
            target = entry.target
            details = entry.details
            hash = entry.hash
            previousHash = entry.previousHash
        }

        enum CodingKeys: String, CodingKey {
            case sequence, time, tenant, actor, action, target, details, hash
            case previousHash = "previous_hash"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(sequence, forKey: .sequence)
            try container.encode(time, forKey: .time)
            // Always present: `null` for entries about no tenant (officer and service actions).
            try container.encode(tenant, forKey: .tenant)
            try container.encode(actor, forKey: .actor)
            try container.encode(action, forKey: .action)
            try container.encode(target, forKey: .target)
            try container.encode(details, forKey: .details)
            try container.encode(hash, forKey: .hash)
            try container.encode(previousHash, forKey: .previousHash)
        }
    }

    /// RFC 3339, UTC, milliseconds (the precision entries are stored with).
    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// `--since` that is not an RFC 3339 date-time.
    public struct InvalidTime: Error, CustomStringConvertible {
        public let text: String
        public var description: String {
            "--since: \"\(text)\" is not an RFC 3339 time; give a date, a time and an offset, such as 2026-12-05T16:50:00Z or 2026-12-05T17:50:00.250+01:00"
        }
    }

    /// Parses an RFC 3339 date-time (`T` or a space between date and time, fractional seconds
    /// optional, `Z` or `±hh:mm` required).
    /// - Throws: ``InvalidTime``.
    public static func time(_ text: String) throws(InvalidTime) -> Date {
        let pattern = #"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"#
        guard text.range(of: pattern, options: .regularExpression) != nil else { throw InvalidTime(text: text) }
        // Field ranges checked here: a lenient parser would roll month 13 into the next year.
        let digits = Array(text.utf8)
        func number(_ start: Int, _ count: Int) -> Int { digits[start..<(start + count)].reduce(0) { $0 * 10 + Int($1 - 48) } }
        guard (1...12).contains(number(5, 2)), (1...31).contains(number(8, 2)), number(11, 2) < 24, number(14, 2) < 60, number(17, 2) < 60 else {
            throw InvalidTime(text: text)
        }
        var normalised = text.uppercased()
        normalised.replaceSubrange(normalised.index(normalised.startIndex, offsetBy: 10)...normalised.index(normalised.startIndex, offsetBy: 10), with: "T")
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = normalised.contains(".") ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
        guard let date = formatter.date(from: normalised) else { throw InvalidTime(text: text) }
        return date
    }
}
