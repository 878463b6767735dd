/// A poll of template changes could not start.
public enum TemplateChangeError: Error, Sendable, Hashable {
    /// PostgreSQL returned no snapshot xmin (it always does: a broken server or proxy).
    case noWatermark
}
