import Foundation

extension Date {
    /// This time less its fraction of a second: the times a session's MAC covers (consent,
    /// completion) are written so, since a `Date` does not survive PostgreSQL's microseconds
    /// bit for bit (``SessionRecord``).
    var wholeSeconds: Date { Date(timeIntervalSince1970: timeIntervalSince1970.rounded(.down)) }
}
