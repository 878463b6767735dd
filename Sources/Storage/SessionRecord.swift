public import Foundation

/// What a verification session's record MAC covers (migration 33): the consent it records and
/// the outcome it was completed with — what a front-end, a webhook and an export rely on.
/// Whose session it is and until when is ``SessionSubject``'s, under a MAC of its own written at
/// creation (a pii move changes the reference, never the consent). The sealed name and email
/// are bound to the row by their own AES-GCM associated data; the link's opening is not covered.
/// Times count in whole seconds: the service writes them so (a `Date` does not survive a round
/// trip through PostgreSQL's microseconds bit for bit).
public struct SessionRecord: Sendable, Hashable {
    public let id: UUID
    public var noticeVersion: String?
    public var consentedAt: Date?
    public var outcome: String?
    public var confidence: String?
    public var biometricKeyVersion: Int?
    public var completedAt: Date?

    public init(
        id: UUID, noticeVersion: String? = nil, consentedAt: Date? = nil, outcome: String? = nil, confidence: String? = nil,
        biometricKeyVersion: Int? = nil, completedAt: Date? = nil
    ) {
        self.id = id
        self.noticeVersion = noticeVersion
        self.consentedAt = consentedAt
        self.outcome = outcome
        self.confidence = confidence
        self.biometricKeyVersion = biometricKeyVersion
        self.completedAt = completedAt
    }

    /// Whether the row records anything the record MAC vouches for (a new session has nothing
    /// until its consent).
    public var needsSeal: Bool {
        noticeVersion != nil || consentedAt != nil || outcome != nil || confidence != nil || biometricKeyVersion != nil || completedAt != nil
    }

    /// This record with the session completed.
    public func completed(outcome: String, confidence: String?, biometricKeyVersion: Int, at completedAt: Date) -> SessionRecord {
        var record = self
        record.outcome = outcome
        record.confidence = confidence
        record.biometricKeyVersion = biometricKeyVersion
        record.completedAt = completedAt
        return record
    }
}

extension SessionStore.Row {
    /// What the row's MAC covers, as read.
    public var record: SessionRecord {
        SessionRecord(
            id: id, noticeVersion: noticeVersion, consentedAt: consentedAt, outcome: outcome, confidence: confidence,
            biometricKeyVersion: biometricKeyVersion, completedAt: completedAt
        )
    }
}

/// Whose session it is and until when (migration 33's subject MAC, written when the session is
/// created): pointing an open session at another subject would otherwise have Enrol seal an
/// impostor's token under that subject, or Verify compare against its template (helper-80).
public struct SessionSubject: Sendable, Hashable {
    public let id: UUID
    public let subject: String
    public let expiresAt: Date

    public init(id: UUID, subject: String, expiresAt: Date) {
        self.id = id
        self.subject = subject
        self.expiresAt = expiresAt
    }
}

extension SessionStore.Row {
    /// What the row's subject MAC covers, as read.
    public var subjectBinding: SessionSubject { SessionSubject(id: id, subject: subject.value, expiresAt: expiresAt) }
}
