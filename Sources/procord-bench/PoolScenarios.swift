import CProcordBench
import Procord

/// Pooled local workers: what a task costs when its process is kept.
enum PoolScenarios {
  /// One worker, one task at a time, through `WorkerPool.run`: awaited on
  /// Swift's executor and on the loop's, against the socketpair ping-pong.
  @Sendable static func roundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let peers = try context.peers("rtt")
    let (swift, onLoop, floor) = try await PoolRuns.roundTripsOnBothExecutors(
      [.local(context.workerProgram)], total: context.workload.poolRoundTrips,
      floorKind: PROCORD_BENCH_PAIR_UNIX_STREAM, scenario: "pool-rtt")
    return PoolRuns.roundTripRows("pool-rtt", swift, floor: floor, medianTarget: 2.5, peers: peers)
      + PoolRuns.roundTripRows(
        "pool-rtt", onLoop, floor: floor, medianTarget: 2.5, peers: peers, suffix: ", on the loop")
  }

  /// As many workers as cores, every task in flight at once: tasks/s, with
  /// the default configuration and with tasks sent ahead.
  @Sendable static func throughput(_ context: BenchContext) async throws -> [Measurement] {
    let peers = try context.peers("throughput")
    let floor = try Floors.pingPong(PROCORD_BENCH_PAIR_UNIX_STREAM, rounds: context.workload.pingPongRounds)
    var rows: [Measurement] = []
    for (sentAhead, onLoop) in [(0, false), (context.tasksSentAhead, false), (context.tasksSentAhead, true)] {
      let rate = try await PoolRuns.throughput(
        [.local(context.workerProgram)], workers: context.workers, tasksSentAhead: sentAhead, onLoop: onLoop,
        count: context.workload.throughputTasks, scenario: "pool-throughput")
      let metric =
        "\(context.workers) workers" + (sentAhead > 0 ? ", \(sentAhead) sent ahead" : "")
        + (onLoop ? ", on the loop" : "")
      rows.append(
        Measurement(
          scenario: "pool-throughput", metric: metric, unit: "tasks/s", kind: .rate,
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
  /// on a loop thread of the library's and on a libevent base the caller
  /// runs (procord_loop_new_on_base); in chunks that alternate with
  /// pool-rtt through Swift and with the ping-pong floor, so that the ratio
  /// of the two is the overlay's cost.
  @Sendable static func cRoundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let (bothLoops, swift, floor) = try await PoolRuns.withPool(
      [.local(context.workerProgram)], WorkerPool.Configuration(maximumWorkers: 1)
    ) { pool in
      var (latencies, hosted, swift, floor) = (Latencies(), Latencies(), Latencies(), Latencies())
      let chunk = context.workload.poolRoundTrips / 4
      try await PoolRuns.warmUp(pool)
      for _ in 0..<4 {
        latencies.add(try Floors.cPoolRoundTrips(context.workerPath, rounds: chunk))
        hosted.add(try Floors.cPoolRoundTrips(context.workerPath, rounds: chunk, onHostBase: true))
        swift.add(try await PoolRuns.roundTrips(pool, count: chunk, scenario: "c-pool-rtt"))
        floor.add(try Floors.pingPong(PROCORD_BENCH_PAIR_UNIX_STREAM, rounds: chunk))
      }
      return ((latencies, hosted), swift, floor)
    }
    let (latencies, hosted) = bothLoops
    // On the host's base: no hop to a loop thread, so no worse than above.
    return PoolRuns.roundTripRows("c-pool-rtt", latencies, floor: floor, medianTarget: nil, peers: nil)
      + PoolRuns.roundTripRows(
        "c-pool-rtt", hosted, floor: floor, medianTarget: nil, peers: nil,
        suffix: " on a host base") + [
        // How much the Swift overlay adds to a round trip: 1.3 is +30%.
        Measurement(
          scenario: "c-pool-rtt", metric: "pool-rtt p50 ÷ this p50", unit: "×", kind: .cost,
          value: swift.microseconds(atPercentile: 50) / latencies.microseconds(atPercentile: 50), floor: 1,
          targets: [.atMost(1.3)])
      ]
  }
}
