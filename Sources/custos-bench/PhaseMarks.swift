import Foundation

/// A line on stderr when a measured phase starts and ends (`rpc-phase <start|end> <Unix time>
/// <name>`): what a profiler sampling the server's and PostgreSQL's CPU time from outside
/// (`perf`, /proc) lines its samples up with, to give CPU per call by phase.
enum PhaseMarks {
    static func mark(_ edge: String, _ name: String) {
        let line = String(format: "rpc-phase %@ %.3f %@\n", edge, Date().timeIntervalSince1970, name)
        FileHandle.standardError.write(Data(line.utf8))
    }
}
