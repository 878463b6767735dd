/// Who runs a ceremony step and who watches it; recorded in every transcript entry.
public struct CeremonyParticipants: Sendable, Hashable {
    public let operatorName: String
    public let witnesses: [String]

    /// - Throws: ``CeremonyError/invalidArgument(_:)`` without an operator, without a witness, or
    ///   when the operator is also named as a witness.
    public init(operatorName: String, witnesses: [String]) throws(CeremonyError) {
        let name = operatorName.trimmingWhitespace
        let others = witnesses.map(\.trimmingWhitespace)
        guard !name.isEmpty else { throw .invalidArgument("a ceremony step needs an operator (--operator)") }
        guard !others.isEmpty, others.allSatisfy({ !$0.isEmpty }) else {
            throw .invalidArgument("a ceremony step needs at least one witness (--witness)")
        }
        guard !others.contains(name) else { throw .invalidArgument("the operator cannot also be a witness") }
        guard Set(others).count == others.count else { throw .invalidArgument("a witness is named twice") }
        self.operatorName = name
        self.witnesses = others
    }
}

extension String {
    var trimmingWhitespace: String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
