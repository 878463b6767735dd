import Storage
import Testing

/// The database password never shows in what prints a configuration (no database needed).
@Suite("Storage: a printed DatabaseConfiguration never shows its password")
struct DatabaseConfigurationRedactionTests {
    @Test("description, debug description and dump name the role and socket but not the password")
    func passwordRedacted() {
        let canary = "canary-password-7f3a"
        let configuration = DatabaseConfiguration(
            socketDirectory: "/var/run/custos-test", port: 5433, database: "custos", username: "custos_service", password: canary
        )
        var dumped = ""
        dump(configuration, to: &dumped)
        for printed in [String(describing: configuration), String(reflecting: configuration), "\(configuration)", dumped] {
            #expect(!printed.contains(canary))
            #expect(printed.contains("custos_service"))
        }
    }
}
