import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// CPU time of other local processes, from Linux's /proc (`utime + stime`, and `cutime +
/// cstime` for children that have exited): the bare server the bench started, and the
/// PostgreSQL cluster the service uses when it runs on this machine.
enum ProcessTreeCPU {
    /// A process's CPU seconds, its exited children's included; nil when it is gone or /proc is
    /// not there.
    static func seconds(pid: Int32) -> Double? {
        stat(pid).map { $0.ticks / ticksPerSecond }
    }

    /// The postmaster's CPU seconds and those of every live process it started (backends,
    /// WAL writer, checkpointer …), exited ones included through its `cutime`.
    static func postgresSeconds(postmaster: Int32) -> Double? {
        guard let root = stat(postmaster) else { return nil }
        var ticks = root.ticks
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), pid != postmaster, let child = stat(pid), child.parent == postmaster else { continue }
            ticks += child.ticks
        }
        return ticks / ticksPerSecond
    }

    /// The postmaster serving a unix socket: the first line of the socket's lock file
    /// (`<socket>.lock`), which PostgreSQL writes at start-up.
    static func postmaster(socketDirectory: String, port: Int) -> Int32? {
        guard let text = try? String(contentsOfFile: "\(socketDirectory)/.s.PGSQL.\(port).lock", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first.flatMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    }

    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// Fields 4 (ppid) and 14–17 (utime, stime, cutime, cstime) of /proc/<pid>/stat; the command
    /// name (field 2) may hold spaces and parentheses, so fields are counted after its last ')'.
    private static func stat(_ pid: Int32) -> (parent: Int32, ticks: Double)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 14, let parent = Int32(fields[1]) else { return nil }
        let times = fields[11...14].compactMap { Double($0) }
        guard times.count == 4 else { return nil }
        return (parent, times.reduce(0, +))
    }
}
