public import PKCS11

#if canImport(Glibc)
import Glibc
#endif

/// One scan of the token folder, as a process starting up makes it, for the token-file race
/// tests: `scanner` (a module copy of its own) initialised afresh, each of `tokens` looked up by
/// label, then finalised.
public enum TokenFolderScan {
    /// - Returns: what went wrong in this scan (`round` names it): a token missing, or two
    ///   tokens given one slot. Empty when the scan found every token in a slot of its own.
    public static func misses(scanner: PKCS11Module, tokens: [TestToken], round: Int) throws -> [String] {
        try scanner.initialize()
        var missed = [String]()
        var slots = Set<SlotID>()
        for token in tokens {
            // A token read in the middle of a login's rewrite answers with no label for a
            // moment: read again. One the scan missed stays missing until the next
            // initialisation, whatever the reads.
            var found: TokenInfo?
            for attempt in 0..<20 where found == nil {
                if attempt > 0 { usleep(5_000) }
                found = try? scanner.findToken(.label(token.label))
            }
            guard let found else {
                missed.append("round \(round): \(token.label) missing")
                continue
            }
            if !slots.insert(found.slot).inserted { missed.append("round \(round): \(token.label) shares slot \(found.slot)") }
        }
        // Not `try?`: a module left initialised would make every later round's initialisation
        // succeed without scanning.
        try scanner.finalize()
        return missed
    }
}
