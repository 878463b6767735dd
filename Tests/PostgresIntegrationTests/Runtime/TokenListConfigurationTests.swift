import Composition
import Foundation
import HSM
import PKCS11
import Testing

/// `hsm.tokens` in config.json: several tokens, the first primary; the single-token fields stay
/// the default, so existing files read as before.
@Suite("Configuration: hsm.tokens")
struct TokenListConfigurationTests {
    func decode(_ json: String) throws -> CustosConfiguration {
        var configuration = try JSONDecoder().decode(CustosConfiguration.self, from: Data(json.utf8))
        configuration.source = "test.json"
        return configuration
    }

    @Test("without hsm.tokens: one token, as before")
    func singleToken() throws {
        let pool = try decode(#"{"hsm": {"modulePath": "/m.so", "tokenLabel": "custos", "userPINFile": "/p.pin"}}"#).poolConfiguration()
        #expect(pool.modulePath == "/m.so" && pool.token == .label("custos") && pool.userPIN == .file(path: "/p.pin"))
        #expect(pool.replicas.isEmpty)
    }

    @Test("hsm.tokens alone: the first is primary, the rest replicas, each with its own PIN source and init arguments")
    func tokenList() throws {
        let configuration = try decode(#"""
        {"hsm": {"workers": 3, "tokens": [
          {"modulePath": "/a.so", "tokenLabel": "a", "userPINFile": "/a.pin"},
          {"modulePath": "/b.so", "tokenLabel": "b", "userPINEnvironment": "CUSTOS_PIN_B", "initArguments": "configdir='sql:/x'"}
        ]}}
        """#)
        #expect(configuration.hsm.modulePath == "/a.so" && configuration.hsm.tokenLabel == "a")
        let pool = try configuration.poolConfiguration()
        #expect(pool.modulePath == "/a.so" && pool.token == .label("a") && pool.userPIN == .file(path: "/a.pin") && pool.workers == 3)
        #expect(pool.replicas == [
            TokenEndpoint(modulePath: "/b.so", token: .label("b"), userPIN: .environment(name: "CUSTOS_PIN_B"), initArguments: "configdir='sql:/x'"),
        ])
    }

    @Test("hsm.tokens refusals: empty, disagreeing with tokenLabel, a token without a PIN source")
    func refusals() throws {
        let empty = #expect(throws: ConfigurationError.self) {
            try decode(#"{"hsm": {"modulePath": "/m.so", "tokenLabel": "a", "tokens": []}}"#).poolConfiguration()
        }
        #expect(empty?.description.contains("hsm.tokens is empty") == true)
        let disagreeing = #expect(throws: ConfigurationError.self) {
            try decode(#"{"hsm": {"tokenLabel": "z", "tokens": [{"modulePath": "/a.so", "tokenLabel": "a", "userPINFile": "/a.pin"}]}}"#).poolConfiguration()
        }
        #expect(disagreeing?.description.contains("hsm.tokens[0]") == true)
        let noPIN = #expect(throws: ConfigurationError.self) {
            try decode(#"""
            {"hsm": {"tokens": [{"modulePath": "/a.so", "tokenLabel": "a", "userPINFile": "/a.pin"}, {"modulePath": "/b.so", "tokenLabel": "b"}]}}
            """#).poolConfiguration()
        }
        #expect(noPIN?.description == "configuration test.json is invalid: no user PIN source (userPINFile or userPINEnvironment) in hsm.tokens[1]")
    }
}
