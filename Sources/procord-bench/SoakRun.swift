import CProcordBench
import Procord

#if canImport(Glibc)
import Glibc
#endif

/// One soak run from start to end: the worker server and the pools are
/// started, the load runs for the time asked while the run samples memory,
/// descriptors and children, then everything is stopped and what is left
/// is counted.
struct SoakRun {
  var settings: SoakReport.Settings

  /// Tasks running longer than this are reported as stuck: the longest
  /// legitimate one (a 4 MiB echo on a busy machine, a kill after 200 ms, a
  /// deadline of 300 ms plus the 2-second grace period) takes a few seconds.
  static let stuckAfterSeconds = 60.0
  /// How long the lanes may take to finish their tasks when paused or
  /// stopped, and the pools and the server to stop.
  static let settleTimeout: Duration = .seconds(120)

  func run() async throws -> SoakReport {
    // Procord's loop thread and Swift's timers (a timerfd per clock, which
    // libdispatch opens on first use) live as long as the program once
    // started: the baseline comes after them.
    _ = try await delegate(SoakTasks.fibo.delegated, 10, to: WorkerProgram.current).value
    try await Task.sleep(until: .now + .milliseconds(1), clock: .continuous)
    try await Task.sleep(until: .now + .milliseconds(1), clock: .suspending)
    let baseline = SoakProbes.descriptors()
    let childrenBefore = SoakProbes.children()

    let server = try BenchServer(maximumTasks: settings.in_flight + settings.workers)
    var configuration = WorkerPool.Configuration(maximumWorkers: settings.workers)
    configuration.tasksSentAhead = settings.tasks_sent_ahead
    configuration.label = "soak-local"
    let localPool = try WorkerPool([.local(.current)], configuration: configuration)
    configuration.tasksSentAhead = settings.server_tasks_sent_ahead
    configuration.label = "soak-server"
    let serverPool = try WorkerPool(
      servers: [server.remote], connectionsPerServer: settings.workers, configuration: configuration)

    let tally = SoakTally()
    let load = SoakLoad(
      localPool: localPool, serverPool: serverPool, server: server.remote, tally: tally, lanes: settings.in_flight)
    var timeline = SoakTimeline(start: nowNanoseconds(), serverPID: server.pid, tally: tally)
    timeline.sample(.start)
    load.start(seed: settings.seed)

    // The load runs; samples every 10 s, and the quiescent ones (the load
    // paused, nothing in flight) after 10% of the run and after a minute.
    let duration = settings.minutes * 60
    var quiescentMarks: [(at: Double, moment: SoakSample.Moment)] = [(duration * 0.1, .afterTenPercent)]
    if duration > 60 { quiescentMarks.append((60, .afterWarmUpMinute)) }
    quiescentMarks.sort { $0.at < $1.at }
    var nextPeriodic = 10.0
    var stuck: [String] = []
    while timeline.elapsed < duration {
      let next = min(duration, nextPeriodic, quiescentMarks.first?.at ?? duration)
      if next > timeline.elapsed {
        try? await Task.sleep(for: .milliseconds(Int((next - timeline.elapsed) * 1000) + 1))
      }
      var sampled = false
      if let mark = quiescentMarks.first, timeline.elapsed >= mark.at {
        quiescentMarks.removeFirst()
        if await load.pause(timeout: Self.settleTimeout) {
          timeline.sample(mark.moment)
          sampled = true
        } else {
          stuck += load.stuck(longerThan: 0)
        }
        load.resume()
      }
      if timeline.elapsed >= nextPeriodic && timeline.elapsed < duration {
        nextPeriodic += 10
        if !sampled { timeline.sample(.periodic) }
        timeline.reportProgress()
        stuck += load.stuck(longerThan: Self.stuckAfterSeconds)
        if !stuck.isEmpty { break }
      }
    }

    // The end: the lanes finish their tasks, then the pools and the server
    // stop, and what is left is counted.
    let lanesEnded = await load.stop(timeout: Self.settleTimeout)
    if !lanesEnded { stuck += load.stuck(longerThan: 0) }
    timeline.sample(lanesEnded ? .end : .endWithTasksRunning)
    let mode: WorkerPool.ShutdownMode = lanesEnded ? .graceful : .immediate
    let poolsStopped = [localPool, serverPool].map { $0.shutdownAndWait(mode, timeout: Self.settleTimeout) }
    // No client is left: every task on the server was killed with its
    // connection, or answered.
    let serverTasksLeft = await Self.tasksRunning(on: server, for: .seconds(5)).map(SoakProbes.describe)
    let stopStart = nowNanoseconds()
    let serverExit = server.stop(timeout: Self.settleTimeout)
    let serverStopSeconds = Double(nowNanoseconds() - stopStart) / 1e9
    timeline.sample(.afterShutdown)

    let counts = tally.snapshot
    return SoakReport(
      settings: settings, tally: counts, samples: timeline.samples, stuck: stuck,
      teardown: SoakReport.Teardown(
        pools_stopped: poolsStopped.allSatisfy { $0 },
        local_pool: .init(localPool.statistics, delegatedBySoak: counts.accepted[.localPool] ?? 0),
        server_pool: .init(serverPool.statistics, delegatedBySoak: counts.accepted[.serverPool] ?? 0),
        server_tasks_left_running: serverTasksLeft,
        server_exit_status: serverExit, server_stop_seconds: serverStopSeconds,
        descriptors_at_start: baseline.count, descriptors_at_end: SoakProbes.descriptors().count,
        descriptors_left: SoakReport.Teardown.difference(SoakProbes.descriptors(), baseline),
        descriptors_gone: SoakReport.Teardown.difference(baseline, SoakProbes.descriptors()),
        children_at_start: childrenBefore.map(SoakProbes.describe),
        children_at_end: SoakProbes.children().map(SoakProbes.describe)))
  }
}

extension SoakRun {
  /// The server's workers still running a `sleep` task (the only task
  /// that sleeps) once they have had `grace` to notice that their client
  /// went: none should be left.
  static func tasksRunning(on server: BenchServer, for grace: Duration) async -> [Int32] {
    let deadline = ContinuousClock.now + grace
    while true {
      let sleeping = SoakProbes.children(of: String(server.pid)).filter(SoakProbes.isSleeping)
      if sleeping.isEmpty || ContinuousClock.now >= deadline { return sleeping }
      try? await Task.sleep(for: .milliseconds(50))
    }
  }
}

/// The samples of one run, with the time they were taken.
struct SoakTimeline {
  let start: UInt64
  let serverPID: Int32
  let tally: SoakTally
  private(set) var samples: [SoakSample] = []

  init(start: UInt64, serverPID: Int32, tally: SoakTally) {
    self.start = start
    self.serverPID = serverPID
    self.tally = tally
  }

  /// Seconds since the load started.
  var elapsed: Double { Double(nowNanoseconds() - start) / 1e9 }

  mutating func sample(_ moment: SoakSample.Moment) {
    let resident = residentMebibytes() ?? 0
    var trimmed: Double?
    var heap: Double?
    var hugePages: Double?
    if moment != .periodic && moment != .endWithTasksRunning {
      procord_bench_trim_memory()
      trimmed = residentMebibytes()
      heap = Double(procord_bench_heap_in_use()) / 1_048_576
      hugePages = SoakProbes.anonymousHugePagesMebibytes()
    }
    samples.append(
      SoakSample(
        seconds: elapsed, moment: moment, tasks_done: tally.recorded, main_rss_mib: resident,
        main_rss_trimmed_mib: trimmed, main_heap_in_use_mib: heap, main_huge_pages_mib: hugePages,
        server_rss_mib: moment == .afterShutdown ? nil : residentMebibytes(of: String(serverPID)),
        descriptors: SoakProbes.descriptors().count, children: SoakProbes.children().count,
        server_descriptors: moment == .afterShutdown ? nil : SoakProbes.descriptorCount(of: String(serverPID)),
        server_children: moment == .afterShutdown ? nil : SoakProbes.children(of: String(serverPID)).count))
  }

  func reportProgress() {
    guard let last = samples.last else { return }
    let unexpected = tally.snapshot.unexpected
    progress(
      "soak: \(fixed(last.seconds, digits: 0)) s, \(last.tasks_done) tasks, \(unexpected) unexpected, main "
        + "\(fixed(last.main_rss_mib, digits: 1)) MiB, server "
        + "\(last.server_rss_mib.map { fixed($0, digits: 1) } ?? "?") MiB, "
        + "\(last.descriptors) descriptors, \(last.children) children")
  }
}
