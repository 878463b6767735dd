/// What a record MAC (migration 33) is computed over: a template as stored under a subject, a
/// session's consent and outcome, or a session's subject and expiry. A list of them is sealed
/// or checked in one HSM round trip (the several MACs of one request).
public enum SealableRecord: Sendable {
    case template(StoredTemplate, subject: String)
    case session(SessionRecord)
    case sessionSubject(SessionSubject)
}
