import CustosModel
import PostgresNIO

/// `set_config('app.tenant_id', …, true)`: the transaction-local tenant scope the row-level
/// security policies read, the first statement of every tenant transaction (prepared: it runs
/// once per transaction).
struct SetTenant: PreparedStatement {
    static let name = "custos_set_tenant"
    static let sql = "SELECT set_config('app.tenant_id', $1, true)"
    static let bindingDataTypes: [PostgresDataType] = [.text]

    let tenant: TenantID

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(tenant.rawValue)
        return bindings
    }
}
