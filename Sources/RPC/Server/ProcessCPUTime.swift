#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This process's CPU time, user and system, all threads (`getrusage(RUSAGE_SELF)`). /metrics
/// exports it as Prometheus's standard `process_cpu_seconds_total`, so a benchmark in another
/// process can put the service's CPU per call beside its own and PostgreSQL's
/// (docs/benchmarks.md, "CPU per call").
public enum ProcessCPUTime {
    public static let metricName = "process_cpu_seconds_total"

    public static func seconds() -> Double {
        var usage = rusage()
        #if canImport(Glibc)
        let who = __rusage_who_t(RUSAGE_SELF.rawValue)
        #else
        let who = RUSAGE_SELF
        #endif
        guard getrusage(who, &usage) == 0 else { return 0 }
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// The metric in Prometheus text format 0.0.4.
    static func exposition() -> String {
        "# HELP \(metricName) Total user and system CPU time spent in seconds.\n# TYPE \(metricName) counter\n\(metricName) \(seconds())\n"
    }
}
