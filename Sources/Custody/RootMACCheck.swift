import HSM

/// Whether `stored` is the HSM MAC of `message` under the root MAC key of `version`. A version
/// the token never held means the MAC was written by someone without the HSM: not authentic,
/// rather than an error. Compared in constant time.
func rootMACVerifies(_ stored: [UInt8], of message: [UInt8], macVersion version: Int, pool: SessionPool) async throws -> Bool {
    guard version > 0 else { return false }
    let expected: [UInt8]
    do {
        expected = try await pool.hmacSHA256(key: RootKeys(macVersion: version).mac, data: message)
    } catch HSMError.keyNotFound {
        return false
    }
    return constantTimeEqual(expected, stored)
}
