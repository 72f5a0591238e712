import CProcordBench
import Procord

/// A worker server on loopback, started by the benchmark.
enum ServerScenarios {
  /// One connection, one task at a time, awaited on Swift's executor and
  /// on the loop's, against the TCP ping-pong on loopback.
  @Sendable static func roundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let server = try context.workerServer()
    let (swift, onLoop, floor) = try await PoolRuns.roundTripsOnBothExecutors(
      [.remote(server.remote)], total: context.workload.serverRoundTrips,
      floorKind: PROCORD_BENCH_PAIR_TCP_LOOPBACK, scenario: "server-rtt")
    let percentiles = [("p50", 50.0), ("p99", 99.0)]
    return PoolRuns.roundTripRows(
      "server-rtt", swift, floor: floor, medianTarget: 3, peers: nil, percentiles: percentiles)
      + PoolRuns.roundTripRows(
        "server-rtt", onLoop, floor: floor, medianTarget: 3, peers: nil, percentiles: percentiles,
        suffix: ", on the loop")
  }

  /// Many connections (clients), every task in flight at once, by default
  /// and with tasks sent ahead.
  @Sendable static func throughput(_ context: BenchContext) async throws -> [Measurement] {
    let server = try context.workerServer()
    let clients = context.workload.serverClients
    let floor = try Floors.pingPong(PROCORD_BENCH_PAIR_TCP_LOOPBACK, rounds: context.workload.pingPongRounds)
    var rows: [Measurement] = []
    for sentAhead in [0, context.tasksSentAhead] {
      let rate = try await PoolRuns.throughput(
        [.remote(server.remote)], workers: clients, tasksSentAhead: sentAhead, onLoop: false,
        count: context.workload.serverTasks, scenario: "server-throughput")
      rows.append(
        Measurement(
          scenario: "server-throughput",
          metric: "\(clients) clients" + (sentAhead > 0 ? ", \(sentAhead) sent ahead" : ""),
          unit: "tasks/s", kind: .rate, value: rate,
          floor: Double(context.workers) * 1e6 / floor.microseconds(atPercentile: 50),
          targets: clients >= 64 ? [.atLeast(20_000)] : []))
    }
    return rows
  }
}
