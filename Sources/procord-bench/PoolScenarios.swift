import CProcordBench
import Procord

/// Pooled local workers: what a task costs when its process is kept.
enum PoolScenarios {
  /// One worker, one task at a time, through `WorkerPool.run`: awaited on
  /// Swift's executor, and on the loop's (``ProcordLoopExecutor``), in
  /// chunks that alternate with chunks of the ping-pong floor.
  @Sendable static func roundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let peers = try context.peers("rtt")
    let pool = try WorkerPool(workers: 1, program: context.workerProgram)
    var (latencies, onLoop, floor) = (Latencies(), Latencies(), Latencies())
    let chunk = context.workload.poolRoundTrips / 4
    do {
      try await warmUp(pool)
      for _ in 0..<4 {
        latencies.add(try await roundTrips(pool, count: chunk, scenario: "pool-rtt"))
        onLoop.add(
          try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
            try await roundTrips(pool, count: chunk, scenario: "pool-rtt")
          })
        floor.add(try Floors.pingPong(PROCORD_BENCH_PAIR_UNIX_STREAM, rounds: chunk))
      }
    } catch {
      await pool.shutdown(.immediate)
      throw error
    }
    await pool.shutdown()
    return roundTripRows("pool-rtt", latencies, floor: floor, medianTarget: 2.5, peers: peers)
      + roundTripRows("pool-rtt", onLoop, floor: floor, medianTarget: 2.5, peers: peers, suffix: ", on the loop")
  }

  /// As many workers as cores, every task in flight at once: tasks/s, with
  /// the default configuration and with tasks sent ahead.
  @Sendable static func throughput(_ context: BenchContext) async throws -> [Measurement] {
    let count = context.workload.throughputTasks
    let peers = try context.peers("throughput")
    let floor = try Floors.pingPong(PROCORD_BENCH_PAIR_UNIX_STREAM, rounds: context.workload.pingPongRounds)
    var rows: [Measurement] = []
    for (sendsAhead, onLoop) in [(false, false), (true, false), (true, true)] {
      var configuration = WorkerPool.Configuration(
        maximumWorkers: context.workers, minimumWorkers: context.workers)
      configuration.maximumQueueLength = max(configuration.maximumQueueLength, count)
      configuration.tasksSentAhead = sendsAhead ? context.tasksSentAhead : 0
      let pool = try WorkerPool([.local(context.workerProgram)], configuration: configuration)
      let rate: Double
      do {
        _ = try await inFlight(pool, count: context.workers * 100, scenario: "pool-throughput")
        rate = try await medianRate(pool, count: count, onLoop: onLoop, scenario: "pool-throughput")
      } catch {
        await pool.shutdown(.immediate)
        throw error
      }
      await pool.shutdown()
      rows.append(
        Measurement(
          scenario: "pool-throughput", metric: "\(context.workers) workers\(sendsAhead ? ", \(context.tasksSentAhead) sent ahead" : "")\(onLoop ? ", on the loop" : "")",
          unit: "tasks/s", kind: .rate,
          value: rate, floor: Double(context.workers) * 1e6 / floor.microseconds(atPercentile: 50),
          peers: peers?.figures { $0.throughput?.tasks_per_s } ?? [:],
          targets: [
            .advantage(over: "multiprocessing.Pool", atLeast: 5),
            .advantage(over: "ProcessPoolExecutor", atLeast: 10),
          ]))
    }
    return rows
  }

  /// pool-rtt through the C API, from C code: no Swift on the main side;
  /// in chunks that alternate with pool-rtt through Swift and with the
  /// ping-pong floor, so that the ratio of the two is the overlay's cost.
  @Sendable static func cRoundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let pool = try WorkerPool(workers: 1, program: context.workerProgram)
    var (latencies, swift, floor) = (Latencies(), Latencies(), Latencies())
    let chunk = context.workload.poolRoundTrips / 4
    do {
      try await warmUp(pool)
      for _ in 0..<4 {
        latencies.add(try Floors.cPoolRoundTrips(context.workerPath, rounds: chunk))
        swift.add(try await roundTrips(pool, count: chunk, scenario: "c-pool-rtt"))
        floor.add(try Floors.pingPong(PROCORD_BENCH_PAIR_UNIX_STREAM, rounds: chunk))
      }
    } catch {
      await pool.shutdown(.immediate)
      throw error
    }
    await pool.shutdown()
    return roundTripRows("c-pool-rtt", latencies, floor: floor, medianTarget: nil, peers: nil) + [
      // How much the Swift overlay adds to a round trip: 1.3 is +30%.
      Measurement(
        scenario: "c-pool-rtt", metric: "pool-rtt p50 ÷ this p50", unit: "×", kind: .cost,
        value: swift.microseconds(atPercentile: 50) / latencies.microseconds(atPercentile: 50), floor: 1,
        targets: [.atMost(1.3)])
    ]
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

  /// The median of three runs of ``inFlight(_:count:scenario:)``: one run is
  /// at the mercy of whatever else the machine does meanwhile.
  static func medianRate(_ pool: WorkerPool, count: Int, onLoop: Bool, scenario: String) async throws -> Double {
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

  /// p50, p99 and p99.9 rows of a round-trip scenario.
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
