extension TemplateStore {
    /// The SQLSTATE with which `templates` refuses a row that carries a withdrawn MAC
    /// (migration 34): the MAC of a row that was deleted, or whose token, subject, version or
    /// MAC changed, can never be written again — so a copy of a row taken before an erasure, a
    /// retention run or a replacement cannot be put back. Custos meets it only when the very same
    /// token is enrolled again for the same subject and version (``StorageError/withdrawnTemplateMAC(_:)``).
    public static let withdrawnMACState = "CS001"
}
