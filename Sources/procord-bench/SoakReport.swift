// swift-format-ignore-file: AlwaysUseLowerCamelCase
// (snake_case property names here are the keys of the JSON reports, through Codable.)

import Procord

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// A reading of memory, descriptors and children during a soak.
struct SoakSample: Codable {
  enum Moment: String, Codable {
    case start
    /// Every 10 s, the load running.
    case periodic
    /// The load paused and nothing in flight, after 10% of the run.
    case afterTenPercent = "after 10% (quiescent)"
    /// The same, after the first minute.
    case afterWarmUpMinute = "after the warm-up minute (quiescent)"
    /// The load stopped and every task finished; the pools and the server
    /// still up.
    case end = "end (quiescent)"
    /// The load stopped with tasks still running (they were stuck).
    case endWithTasksRunning = "end (tasks still running)"
    /// The pools and the server stopped.
    case afterShutdown = "after shutdown"
  }

  /// Seconds since the load started.
  var seconds: Double
  var moment: Moment
  var tasks_done: Int
  var main_rss_mib: Double
  /// The same once malloc_trim(0) has handed the allocator's free memory
  /// back: quiescent samples only (see ``SoakReport/thresholds``).
  var main_rss_trimmed_mib: Double?
  /// What malloc counts as allocated and not freed (mallinfo2), and the
  /// transparent huge pages in the resident memory: quiescent samples only.
  var main_heap_in_use_mib: Double?
  var main_huge_pages_mib: Double?
  var server_rss_mib: Double?
  var descriptors: Int
  var children: Int
  /// The server's own descriptors, and its workers (busy and ready).
  var server_descriptors: Int?
  var server_children: Int?
}

/// What a soak found, and whether it passes: the table on stdout, the JSON
/// of `--json`.
struct SoakReport: Codable {
  /// How the run was asked for.
  struct Settings: Codable {
    var minutes: Double
    var workers: Int
    var in_flight: Int
    /// WorkerPool.Configuration.tasksSentAhead of the local pool and of the
    /// pool over the server.
    var tasks_sent_ahead: Int
    var server_tasks_sent_ahead: Int
    var seed: UInt64
    var kind_weights: [String: Int] = Dictionary(
      uniqueKeysWithValues: SoakMix.kindWeights.map { ($0.0.rawValue, $0.1) })
    var route_weights: [String: Int] = Dictionary(
      uniqueKeysWithValues: SoakMix.routeWeights.map { ($0.0.rawValue, $0.1) })
    var largest_echo_bytes = SoakMix.largestEcho
  }

  /// Tasks with one final status, on one route, with one verdict.
  struct Count: Codable {
    var kind: String
    var route: String
    var status: String
    var verdict: String
    var count: Int
  }

  /// Resident memory between two quiescent samples, against its threshold
  /// (nil: shown, not judged).
  struct Growth: Codable {
    var from: String
    var from_mib: Double
    var to_mib: Double
    var growth_mib: Double
    var threshold_mib: Double?
    var within: Bool
  }

  /// One reading of memory over the run.
  struct Memory: Codable {
    var name: String
    /// What was read, and when.
    var measure: String
    /// The growth allowed between two quiescent samples; nil: not judged.
    var threshold_mib: Double?
    var start_mib: Double?
    var end_mib: Double?
    /// The highest of all the samples.
    var peak_mib: Double?
    /// End against the sample after the warm-up minute (runs over a minute).
    var growth_since_warm_up_minute: Growth?
    /// End against the sample after the first 10% of the run.
    var growth_since_first_10_percent: Growth?
  }

  /// A pool's own counts at the end, and the soak's count of what it
  /// delegated to it: all three equal when every task ended once.
  struct PoolFigures: Codable {
    var workers_started: Int
    var tasks_delegated_by_soak: Int
    var tasks_submitted: Int
    var tasks_finished: Int
    var tasks_retried: Int

    init(_ statistics: WorkerPool.Statistics, delegatedBySoak: Int) {
      workers_started = statistics.workersStarted
      tasks_delegated_by_soak = delegatedBySoak
      tasks_submitted = statistics.tasksSubmitted
      tasks_finished = statistics.tasksFinished
      tasks_retried = statistics.tasksRetried
    }
  }

  /// What stopping everything left behind.
  struct Teardown: Codable {
    var pools_stopped: Bool
    var local_pool: PoolFigures
    var server_pool: PoolFigures
    /// The server's workers still running a task once every client was
    /// gone (they should have been killed with their connection).
    var server_tasks_left_running: [String]
    /// nil: it did not exit after SIGTERM and was killed.
    var server_exit_status: Int32?
    /// From SIGTERM to its exit: with no client left, it has nothing to drain.
    var server_stop_seconds: Double
    var descriptors_at_start: Int
    var descriptors_at_end: Int
    /// Open at the end and not at the start (`fd -> target`), and the reverse.
    var descriptors_left: [String]
    var descriptors_gone: [String]
    var children_at_start: [String]
    var children_at_end: [String]

    static func difference(_ these: [Int32: String], _ those: [Int32: String]) -> [String] {
      these.filter { those[$0.key] != $0.value }.sorted { $0.key < $1.key }.map { "\($0.key) -> \($0.value)" }
    }
  }

  /// An idle server stops at once on SIGTERM; one still draining tasks
  /// waits for them (up to its 30-second drain timeout).
  static let serverStopLimitSeconds = 10.0

  /// Growth beyond these between two quiescent samples fails the run;
  /// ``thresholds`` says why.
  static let heapGrowthThresholdMiB = 4.0
  static let trimmedGrowthThresholdMiB = 32.0
  static let serverGrowthThresholdMiB = 4.0
  static let thresholds = """
    Memory is compared between quiescent samples (the load paused, nothing in flight, nothing kept): the \
    end against the sample after the warm-up minute and against the one after the first 10% of the run. \
    The main program's heap in use (malloc's allocated bytes, mallinfo2) may grow by \
    \(formatted(heapGrowthThresholdMiB)) MiB: it stays within half a MiB from sample to sample, and a leak of \
    32 bytes per task crosses 4 MiB within 10 minutes at 300 tasks/s. Its VmRSS after malloc_trim(0) may grow \
    by \(formatted(trimmedGrowthThresholdMiB)) MiB: with a flat heap it moved by up to 14 MiB between \
    quiescent samples in 2- and 10-minute runs, and by up to 22 MiB in half-minute runs, whose 10% sample \
    comes while the allocator's arenas still fill. glibc keeps each thread arena's top below its trim \
    threshold (up to 8 MiB once 4 MiB echoes have raised it) and malloc_trim does not trim those, and \
    buffers of 2 MiB and more are advised into transparent huge pages. Its raw VmRSS is shown, not judged. \
    The server's VmRSS may grow by \(formatted(serverGrowthThresholdMiB)) MiB: it moves by less than \
    0.2 MiB, as it runs no task itself.
    """

  var settings: Settings
  var machine: Machine
  var duration_seconds: Double
  var tasks_done: Int
  var tasks_delegated: Int
  var tasks_per_second: Double
  var verdicts: [String: Int]
  var by_kind: [String: [String: Int]]
  var by_route: [String: [String: Int]]
  var counts: [Count]
  var unexpected_examples: [String]
  var stuck_tasks: [String]
  var memory: [Memory]
  var teardown: Teardown
  var thresholds: String
  var samples: [SoakSample]
  /// Why the run fails; empty when it passes.
  var problems: [String]
  var passed: Bool

  init(settings: Settings, tally: SoakTally.Snapshot, samples: [SoakSample], stuck: [String], teardown: Teardown) {
    self.settings = settings
    machine = .current(quick: false)
    let end = samples.last { $0.moment == .end || $0.moment == .endWithTasksRunning }
    duration_seconds = end?.seconds ?? 0
    tasks_done = tally.recorded
    tasks_delegated = tally.delegated
    tasks_per_second = duration_seconds > 0 ? Double(tasks_done) / duration_seconds : 0
    verdicts = Dictionary(uniqueKeysWithValues: SoakVerdict.allCases.map { ($0.rawValue, 0) })
      .merging(tally.total { $0.verdict.rawValue }) { $1 }
    by_kind = Self.nested(tally) { $0.kind.rawValue }
    by_route = Self.nested(tally) { $0.route.rawValue }
    counts = tally.counts.map { key, count in
      Count(
        kind: key.kind.rawValue, route: key.route.rawValue, status: key.status, verdict: key.verdict.rawValue,
        count: count)
    }.sorted { ($0.kind, $0.route, $0.status) < ($1.kind, $1.route, $1.status) }
    unexpected_examples = tally.examples
    stuck_tasks = stuck
    memory = [
      Self.memory("main program", samples, measure: "VmRSS", threshold: nil) { $0.main_rss_mib },
      Self.memory(
        "main, after malloc_trim", samples, measure: "VmRSS after malloc_trim(0)",
        threshold: Self.trimmedGrowthThresholdMiB
      ) { $0.main_rss_trimmed_mib },
      Self.memory(
        "main, heap in use", samples, measure: "mallinfo2 uordblks + hblkhd", threshold: Self.heapGrowthThresholdMiB
      ) { $0.main_heap_in_use_mib },
      Self.memory("server", samples, measure: "VmRSS", threshold: Self.serverGrowthThresholdMiB) { $0.server_rss_mib },
    ]
    self.teardown = teardown
    thresholds = Self.thresholds
    self.samples = samples
    problems = []
    passed = false
    problems = findProblems(tally)
    passed = problems.isEmpty
  }

  /// Verdict counts per kind or per route.
  private static func nested(
    _ tally: SoakTally.Snapshot, by group: (SoakTally.Key) -> String
  ) -> [String: [String: Int]] {
    tally.counts.reduce(into: [:]) { result, entry in
      result[group(entry.key), default: [:]][entry.key.verdict.rawValue, default: 0] += entry.value
    }
  }

  private static func memory(
    _ name: String, _ samples: [SoakSample], measure: String, threshold: Double?, _ value: (SoakSample) -> Double?
  ) -> Memory {
    let end = samples.last { $0.moment == .end }.flatMap(value)
    func growth(since moment: SoakSample.Moment) -> Growth? {
      guard let from = samples.first(where: { $0.moment == moment }).flatMap(value), let end else { return nil }
      return Growth(
        from: moment.rawValue, from_mib: from, to_mib: end, growth_mib: end - from, threshold_mib: threshold,
        within: threshold.map { end - from <= $0 } ?? true)
    }
    return Memory(
      name: name, measure: measure, threshold_mib: threshold,
      start_mib: samples.first { $0.moment == .start }.flatMap(value), end_mib: end,
      peak_mib: samples.compactMap(value).max(),
      growth_since_warm_up_minute: growth(since: .afterWarmUpMinute),
      growth_since_first_10_percent: growth(since: .afterTenPercent))
  }

  /// Every reason to fail the run.
  private func findProblems(_ tally: SoakTally.Snapshot) -> [String] {
    var problems: [String] = []
    let unexpected = verdicts[SoakVerdict.unexpected.rawValue] ?? 0
    if unexpected > 0 { problems.append("\(unexpected) tasks had an unexpected final status") }
    if !stuck_tasks.isEmpty { problems.append("\(stuck_tasks.count) tasks never finished") }
    if tally.delegated != tally.recorded {
      problems.append("\(tally.delegated) tasks delegated but \(tally.recorded) final statuses recorded")
    }
    if tasks_done == 0 { problems.append("no task was done") }
    for (name, pool) in [("local", teardown.local_pool), ("server", teardown.server_pool)]
    where pool.tasks_submitted != pool.tasks_finished || pool.tasks_submitted != pool.tasks_delegated_by_soak {
      problems.append(
        "the \(name) pool counts \(pool.tasks_submitted) tasks submitted and \(pool.tasks_finished) finished; "
          + "the soak delegated \(pool.tasks_delegated_by_soak) to it")
    }
    if !teardown.pools_stopped { problems.append("a pool did not stop") }
    if !teardown.server_tasks_left_running.isEmpty {
      problems.append(
        "\(teardown.server_tasks_left_running.count) tasks still ran on the server after their clients had gone: "
          + teardown.server_tasks_left_running.joined(separator: ", "))
    }
    if teardown.server_stop_seconds > Self.serverStopLimitSeconds {
      problems.append(
        "the server took \(fixed(teardown.server_stop_seconds, digits: 1)) s to stop after SIGTERM with no client left")
    }
    if teardown.server_exit_status != 0 {
      problems.append(
        "the server "
          + (teardown.server_exit_status.map { "exited with status \($0) after SIGTERM" }
            ?? "did not exit after SIGTERM"))
    }
    if !teardown.descriptors_left.isEmpty || !teardown.descriptors_gone.isEmpty {
      problems.append(
        "descriptors: \(teardown.descriptors_at_start) at start, \(teardown.descriptors_at_end) at end"
          + " (left: \(teardown.descriptors_left), gone: \(teardown.descriptors_gone))")
    }
    if !teardown.children_at_end.isEmpty {
      problems.append("child processes left: \(teardown.children_at_end.joined(separator: ", "))")
    }
    for memory in memory where memory.threshold_mib != nil {
      for growth in [memory.growth_since_warm_up_minute, memory.growth_since_first_10_percent].compactMap({ $0 })
      where !growth.within {
        problems.append(
          "\(memory.name) (\(memory.measure)) grew by \(fixed(growth.growth_mib, digits: 1)) MiB since "
            + "\(growth.from), more than \(formatted(growth.threshold_mib ?? 0)) MiB")
      }
      if memory.end_mib == nil { problems.append("\(memory.name): no \(memory.measure) at the end") }
    }
    return problems
  }

  func writeJSON(to path: String) throws {
    let text = try jsonText(self) + "\n"
    guard let file = fopen(path, "w") else { throw BenchError("cannot write \(path)", code: -errno) }
    defer { fclose(file) }
    if fputs(text, file) < 0 { throw BenchError("cannot write \(path)", code: -errno) }
  }
}
