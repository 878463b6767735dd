/// The configuration says where and as whom, never the password: a log line, an error or a
/// `dump` that interpolates it (the runtime passes it around since issue 10) shows the rest.
extension DatabaseConfiguration: CustomStringConvertible, CustomReflectable {
    public var description: String {
        "DatabaseConfiguration(socketPath: \(socketPath), database: \(database), username: \(username), password: <redacted>, schema: \(schema))"
    }

    public var customMirror: Mirror {
        Mirror(self, children: [
            "socketPath": socketPath, "database": database, "username": username, "password": "<redacted>", "schema": schema,
            "maximumConnections": maximumConnections, "connectTimeout": connectTimeout,
            "statementTimeout": statementTimeout, "operationTimeout": operationTimeout, "applicationName": applicationName,
        ])
    }
}
