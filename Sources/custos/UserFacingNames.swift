import CustosModel
import RPC
import SwiftProtobuf

/// One spelling per concept for what the CLI prints: a key purpose reads `bio-seed` and a key
/// state `active` in tables and in `--output json` alike — the spelling `--purpose` takes —
/// while the protos keep their enum names (`KEY_PURPOSE_BIO_SEED`) on the wire.
enum UserFacingNames {
    static func purpose(_ wire: Custos_V1_KeyPurpose) -> String { KeyPurpose(wire: wire)?.rawValue ?? "unspecified" }

    static func state(_ wire: Custos_V1_KeyState) -> String { KeyState(wire: wire)?.rawValue ?? "unspecified" }

    static func format(_ wire: Custos_V1_BiometricTokenFormat) -> String { BiometricTokenFormat(wire: wire)?.name ?? "unspecified" }

    /// Protobuf JSON (field names as in the .proto) with key purposes and states renamed.
    static func json(_ message: some SwiftProtobuf.Message) throws -> String {
        var text = try message.jsonString(options: jsonOptions)
        for (wire, user) in renames { text = text.replacingOccurrences(of: wire, with: user) }
        return text
    }

    static let jsonOptions: JSONEncodingOptions = {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        return options
    }()

    /// `"purpose":"KEY_PURPOSE_BIO_SEED"` → `"purpose":"bio-seed"`, each `"state":…` and each
    /// token format (`"thresholds_format":"quaternary"`, `"token_format":…`) likewise, the wire
    /// text taken from the encoder itself. A quote inside a JSON string is escaped, so this text
    /// can only be a field and its value, never part of a label.
    static let renames: [(wire: String, user: String)] = {
        func field(_ message: some SwiftProtobuf.Message) -> String? {
            // `{"purpose":"KEY_PURPOSE_BIO_SEED"}` without its braces.
            guard let json = try? message.jsonString(options: jsonOptions), json.hasPrefix("{"), json.hasSuffix("}") else { return nil }
            return String(json.dropFirst().dropLast())
        }
        let purposes = KeyPurpose.allCases.compactMap { purpose in
            field(Custos_V1_KeyVersion.with { $0.purpose = purpose.wire }).map { (wire: $0, user: "\"purpose\":\"\(purpose.rawValue)\"") }
        }
        let states = KeyState.allCases.compactMap { state in
            field(Custos_V1_KeyVersion.with { $0.state = state.wire }).map { (wire: $0, user: "\"state\":\"\(state.rawValue)\"") }
        }
        let formats = BiometricTokenFormat.allCases.flatMap { format in
            [
                field(Custos_V1_TenantPolicy.with { $0.thresholdsFormat = format.wire }).map { (wire: $0, user: "\"thresholds_format\":\"\(format.name)\"") },
                field(Custos_V1_BiometricVersionThresholds.with { $0.tokenFormat = format.wire }).map { (wire: $0, user: "\"token_format\":\"\(format.name)\"") },
            ].compactMap { $0 }
        }
        return purposes + states + formats
    }()
}
