/// Length-prefixed concatenation: no two different field lists encode to the same bytes, so a
/// MAC over the encoding binds every field to its position.
struct CanonicalEncoding {
    private(set) var bytes: [UInt8]

    init(domain: String) {
        bytes = []
        append(domain)
    }

    mutating func append(_ field: [UInt8]) {
        var length = UInt32(field.count).bigEndian
        withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: field)
    }

    mutating func append(_ field: String) { append(Array(field.utf8)) }
    mutating func append(_ field: Int) { append(String(field)) }
    mutating func append(_ field: Int64) { append(String(field)) }

    /// An optional field: absent and empty are different.
    mutating func append(optional field: [UInt8]?) {
        if let field {
            bytes.append(1)
            append(field)
        } else {
            bytes.append(0)
        }
    }

    mutating func append(optional field: String?) { append(optional: field.map { Array($0.utf8) }) }
}
