import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

extension BenchCommand {
  /// `procord-bench soak`: mixed load for minutes, then what it left.
  struct Soak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Runs a mixed load through pools and a worker server; checks every final status and what is left.",
      discussion: """
        Lanes (--in-flight) each delegate one task after another: echo (up to 4 MiB, the output checked), \
        fibo (the value checked), crash (segv, abort, exit:N: the documented disconnection), sleep past a \
        deadline (deadline exceeded), sleep killed (killed), through a pool of local workers, a pool over a \
        worker server started for the run, and one-off delegations to both. Resident memory, descriptors and \
        child processes are sampled at the start, every 10 s and at the end; the pools and the server are \
        then stopped. Exit status 1 if any task had an unexpected status or none, a descriptor or process was \
        left, or memory grew beyond its threshold (see the report).
        """)

    @Option(help: "How long the load runs, in minutes (0.2 for a smoke run).")
    var minutes = 10.0

    @Option(help: ArgumentHelp("Write the report as JSON to this file.", valueName: "file"))
    var json: String?

    @Option(help: "Workers in the local pool, and connections in the pool over the server.")
    var workers = 4

    @Option(help: "Tasks in flight at most (one per lane).")
    var inFlight = 64

    @Option(help: "Idempotent tasks (echo, fibo) sent ahead to each busy worker of the local pool; 0: off.")
    var tasksSentAhead = 4

    // A task killed (or past its deadline) on a server connection with tasks
    // sent ahead behind it must still end on the server: the soak found it
    // running on, its connection's orderly end stuck behind the unread tasks
    // (killing a remote task now resets its connection).
    @Option(help: "The same for the pool over the server.")
    var serverTasksSentAhead = 4

    @Option(help: "Seeds the mix of tasks (default: from the clock); the report says which was used.")
    var seed: UInt64?

    func validate() throws {
      guard minutes > 0 else { throw ValidationError("--minutes must be more than 0") }
      guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
      guard inFlight >= 1 else { throw ValidationError("--in-flight must be at least 1") }
      guard tasksSentAhead >= 0, serverTasksSentAhead >= 0 else {
        throw ValidationError("--tasks-sent-ahead and --server-tasks-sent-ahead must be 0 or more")
      }
    }

    func run() async throws {
      let settings = SoakReport.Settings(
        minutes: minutes, workers: workers, in_flight: inFlight, tasks_sent_ahead: tasksSentAhead,
        server_tasks_sent_ahead: serverTasksSentAhead, seed: seed ?? nowNanoseconds() ^ UInt64(getpid()))
      progress("soak: \(formatted(minutes)) min, seed \(settings.seed)")
      let report = try await SoakRun(settings: settings).run()
      print(report.table())
      if let json { try report.writeJSON(to: json) }
      if !report.passed { throw ExitCode(1) }
    }
  }
}
