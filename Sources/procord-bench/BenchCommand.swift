import ArgumentParser
import Procord

#if canImport(Glibc)
import Glibc
#endif

/// The command line.
struct BenchCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "procord-bench",
    abstract: "Measures what delegating a task costs on this machine, against its floors and Python's pools.",
    discussion: """
      Each scenario is compared with a floor measured in the same run: the physical limit of \
      the same work without the library (a bare process start, a 1-byte ping-pong, raw \
      socket bandwidth, in-process encoding). ratio_to_floor is value/floor for times and \
      floor/value for rates: 1.0 is the limit, larger is worse. Scenarios: \
      \(Scenario.all.map(\.name).joined(separator: ", ")).
      """,
    subcommands: [Run.self, List.self, Soak.self, MemoryProbe.self],
    defaultSubcommand: Run.self)

  /// `procord-bench [run] [SCENARIO...]`.
  struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Runs scenarios (all by default) and prints the table.")

    @Argument(help: "Scenarios to run, by name (see `procord-bench list`); all when none is given.")
    var scenarios: [String] = []

    @Flag(help: "A smoke run in seconds: small counts, small payloads. Its figures mean little.")
    var quick = false

    @Flag(help: "Also measure Python's ProcessPoolExecutor and multiprocessing.Pool (bench/peers.py).")
    var peers = false

    @Option(help: "The Python that runs the peers.")
    var python = "python3"

    @Option(help: "The peers' script.")
    var peersScript = "bench/peers.py"

    @Option(help: "Workers for the throughput scenarios (default: one per core).")
    var workers: Int?

    @Option(help: "Tasks sent ahead to each busy worker where a scenario sends ahead.")
    var tasksSentAhead = 32

    @Option(
      help: ArgumentHelp(
        "A binary to use as worker and as the bare start, instead of this one.",
        discussion: "It must be a build of procord-bench, such as one with the static Swift standard library."))
    var worker: String?

    @Option(help: ArgumentHelp("Write the figures as JSON to this file.", valueName: "file"))
    var json: String?

    @Option(help: ArgumentHelp("Draw the ratios to the floors as an SVG bar chart in this file.", valueName: "file"))
    var svg: String?

    @Option(help: ArgumentHelp("Write the table as Markdown to this file.", valueName: "file"))
    var markdown: String?

    func validate() throws {
      for name in scenarios where Scenario.named(name) == nil {
        throw ValidationError(
          "no scenario '\(name)'; there are: \(Scenario.all.map(\.name).joined(separator: ", "))")
      }
      if let workers, workers < 1 { throw ValidationError("--workers must be at least 1") }
      if tasksSentAhead < 1 { throw ValidationError("--tasks-sent-ahead must be at least 1") }
      if let worker, access(worker, X_OK) != 0 { throw ValidationError("--worker \(worker): not an executable") }
    }

    func run() async throws {
      let chosen = scenarios.isEmpty ? Scenario.all : Scenario.all.filter { scenarios.contains($0.name) }
      let workerCount = workers ?? WorkerPool.Configuration.defaultWorkerCount
      let peerRunner =
        peers
        ? PeerRunner(python: python, script: peersScript, workers: workerCount, quick: quick) : nil
      let context = BenchContext(
        workload: quick ? .quick : .full, workers: workerCount, tasksSentAhead: tasksSentAhead, workerPath: worker,
        peerRunner: peerRunner)
      defer { context.finish() }

      var measurements: [Measurement] = []
      for scenario in chosen {
        progress("\(scenario.name): \(scenario.summary)")
        let start = nowNanoseconds()
        measurements += try await scenario.run(context)
        progress("\(scenario.name): \(fixed(Double(nowNanoseconds() - start) / 1e9, digits: 1)) s")
      }
      context.finish()

      let report = Report(measurements: measurements, machine: .current(quick: quick), peers: peerRunner?.anyRun)
      print(report.table())
      if let json { try report.writeJSON(to: json) }
      if let svg { try report.writeSVG(to: svg) }
      if let markdown { try report.writeMarkdown(to: markdown) }
    }
  }

  /// `procord-bench list`.
  struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Lists the scenarios.")

    func run() {
      for scenario in Scenario.all { print("\(scenario.name.padding(18))\(scenario.summary)") }
    }
  }

  /// The memory scenario's fresh main program; prints its JSON report.
  struct MemoryProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "memory-probe", abstract: "Used by the memory scenario.", shouldDisplay: false)

    @Option var port: Int
    @Option var tasks: Int
    @Option var worker: String?

    func run() async throws {
      let program =
        worker.map { WorkerProgram(path: $0, arguments: ["--procord-worker"], channel: .socket) } ?? .current
      let report = try await MemoryScenario.probe(port: port, tasks: tasks, worker: program)
      print(try jsonText(report))
    }
  }
}

/// A line on stderr, to show the run is alive.
func progress(_ line: String) {
  let bytes = Array("procord-bench: \(line)\n".utf8)
  var written = 0
  while written < bytes.count {
    let count = bytes[written...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    if count <= 0 && errno != EINTR { return }
    written += max(0, count)
  }
}

extension String {
  /// Padded with spaces to `width` characters (never cut).
  func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(1, width - count)) }
}
