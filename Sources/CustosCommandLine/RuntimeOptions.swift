public import Composition
public import CustosModel
import Foundation
public import Logging
public import PKCS11

extension CustosRuntime.Options {
    /// A command's runtime: logs to standard error (``makeLogger()``), root keys checked unless
    /// the command is the root-KEK ceremony.
    public static func cli(verifyRootKeys: Bool = true, module: PKCS11Module? = nil) -> Self {
        Self(logger: makeLogger(), verifyRootKeys: verifyRootKeys, module: module, stepFault: .crashPointFromEnvironment)
    }
}

extension StepFault {
    /// Debug builds only: `CUSTOS_CRASH_AT=<step>` makes this process kill itself with SIGKILL on
    /// reaching that step (e.g. `rotation.pendingStored`), so crash tests can stop a real
    /// `custos` exactly between two steps of a change. Release builds never read it.
    public static var crashPointFromEnvironment: StepFault? {
        #if DEBUG
        guard let armed = ProcessInfo.processInfo.environment["CUSTOS_CRASH_AT"], !armed.isEmpty else { return nil }
        return StepFault { step in
            if step == armed { kill(getpid(), SIGKILL) }
        }
        #else
        return nil
        #endif
    }
}

/// Turns a tenant argument into a ``TenantID`` or a clear local error.
public func tenantID(_ text: String) throws -> TenantID {
    do {
        return try TenantID.parse(text)
    } catch {
        throw LocalError.failed("\(error): \(text)")
    }
}

/// Logs go to standard error at `CUSTOS_LOG_LEVEL` (default warning), so standard output
/// carries only a command's result.
public func makeLogger() -> Logger {
    var logger = Logger(label: "custos") { StreamLogHandler.standardError(label: $0) }
    let level = ProcessInfo.processInfo.environment["CUSTOS_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .warning
    return logger
}

/// A command's `--output json`: pretty-printed, keys sorted, so output diffs stay stable.
public func encodeJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
