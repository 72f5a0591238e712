import CProcordBench
import Procord

/// How the pool scenarios (local and server) drive a pool and time it.
enum PoolRuns {
  /// Runs `body` with a new pool, which is shut down gracefully after it,
  /// or at once if `body` throws.
  static func withPool<R>(
    _ sources: [WorkerPool.Source], _ configuration: WorkerPool.Configuration,
    _ body: (WorkerPool) async throws -> R
  ) async throws -> R {
    let pool = try WorkerPool(sources, configuration: configuration)
    let result: R
    do {
      result = try await body(pool)
    } catch {
      await pool.shutdown(.immediate)
      throw error
    }
    await pool.shutdown()
    return result
  }

  /// Trivial tasks, unrecorded: the worker started, its code paged in.
  static func warmUp(_ pool: WorkerPool) async throws {
    for i in 0..<2000 { _ = try await pool.run(BenchTasks.increment, i) }
  }

  /// Sequential round trips of the trivial task.
  static func roundTrips(_ pool: WorkerPool, count: Int, scenario: String) async throws -> Latencies {
    var latencies = Latencies()
    for i in 0..<count {
      let start = nowNanoseconds()
      let answer = try await pool.run(BenchTasks.increment, i)
      latencies.record(nowNanoseconds() - start)
      guard answer == i + 1 else { throw BenchError("\(scenario): increment(\(i)) gave \(answer)") }
    }
    return latencies
  }

  /// `total` round trips through a one-worker pool awaited on Swift's
  /// executor, as many on the loop's (``ProcordLoopExecutor``), and as many
  /// ping-pongs over `floorKind`, in four alternating chunks: the figures
  /// and their floor see the same minute of the machine.
  static func roundTripsOnBothExecutors(
    _ sources: [WorkerPool.Source], total: Int, floorKind: procord_bench_pair_kind, scenario: String
  ) async throws -> (swift: Latencies, onLoop: Latencies, floor: Latencies) {
    try await withPool(sources, WorkerPool.Configuration(maximumWorkers: 1)) { pool in
      var (swift, onLoop, floor) = (Latencies(), Latencies(), Latencies())
      let chunk = total / 4
      try await warmUp(pool)
      for _ in 0..<4 {
        swift.add(try await roundTrips(pool, count: chunk, scenario: scenario))
        onLoop.add(
          try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
            try await roundTrips(pool, count: chunk, scenario: scenario)
          })
        floor.add(try Floors.pingPong(floorKind, rounds: chunk))
      }
      return (swift, onLoop, floor)
    }
  }

  /// Tasks/s of `count` trivial tasks all in flight through `workers`
  /// workers (all started first, and warmed up with `workers * 20` tasks),
  /// the median of three runs: one run is at the mercy of whatever else the
  /// machine does meanwhile.
  static func throughput(
    _ sources: [WorkerPool.Source], workers: Int, tasksSentAhead: Int, onLoop: Bool, count: Int, scenario: String
  ) async throws -> Double {
    var configuration = WorkerPool.Configuration(maximumWorkers: workers, minimumWorkers: workers)
    configuration.maximumQueueLength = max(configuration.maximumQueueLength, count)
    configuration.tasksSentAhead = tasksSentAhead
    return try await withPool(sources, configuration) { pool in
      _ = try await inFlight(pool, count: workers * 20, scenario: scenario)
      var rates: [Double] = []
      for _ in 0..<3 {
        if onLoop {
          rates.append(
            try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
              try await inFlight(pool, count: count, scenario: scenario)
            })
        } else {
          rates.append(try await inFlight(pool, count: count, scenario: scenario))
        }
      }
      return rates.sorted()[1]
    }
  }

  /// Delegates `count` trivial tasks at once, then waits for them all;
  /// returns tasks/s from the first delegation to the last answer. The
  /// tasks are idempotent (only those are sent ahead).
  static func inFlight(_ pool: WorkerPool, count: Int, scenario: String) async throws -> Double {
    let start = nowNanoseconds()
    var processes: [DelegatedProcess<Int>] = []
    processes.reserveCapacity(count)
    let idempotent = DelegationOptions(isIdempotent: true)
    for i in 0..<count { processes.append(try pool.delegate(BenchTasks.increment, i, options: idempotent)) }
    for (i, process) in processes.enumerated() {
      let answer = try await process.value
      guard answer == i + 1 else { throw BenchError("\(scenario): increment(\(i)) gave \(answer)") }
    }
    return Double(count) / (Double(nowNanoseconds() - start) / 1e9)
  }

  /// Runs `body` once unrecorded (a warm-up), then `repeats` times timed;
  /// nanoseconds each.
  static func timedRepeats(_ repeats: Int, _ body: () async throws -> Void) async throws -> [UInt64] {
    try await body()
    var samples: [UInt64] = []
    for _ in 0..<repeats {
      let start = nowNanoseconds()
      try await body()
      samples.append(nowNanoseconds() - start)
    }
    return samples
  }

  /// p50, p99 and p99.9 rows (or those `percentiles`) of a round-trip scenario.
  static func roundTripRows(
    _ scenario: String, _ latencies: Latencies, floor: Latencies, medianTarget: Double?, peers: PeerFigures?,
    percentiles: [(String, Double)] = [("p50", 50), ("p99", 99), ("p99.9", 99.9)], suffix: String = ""
  ) -> [Measurement] {
    percentiles.map { metric, percentile in
      let peerFigures = peers?.figures { peer in
        switch metric {
        case "p50": return peer.rtt?.p50_us
        case "p99": return peer.rtt?.p99_us
        default: return peer.rtt?.p999_us
        }
      }
      return Measurement(
        scenario: scenario, metric: metric + suffix, unit: "µs", kind: .cost,
        value: latencies.microseconds(atPercentile: percentile), floor: floor.microseconds(atPercentile: percentile),
        peers: peerFigures ?? [:],
        targets: metric == "p50" ? medianTarget.map { [.ratioToFloor(atMost: $0)] } ?? [] : [])
    }
  }
}
