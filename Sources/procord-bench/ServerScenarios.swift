import CProcordBench
import Procord

/// A worker server on loopback, started by the benchmark.
enum ServerScenarios {
  /// One connection, one task at a time, awaited on Swift's executor and
  /// on the loop's, in chunks that alternate with TCP ping-pong chunks.
  @Sendable static func roundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let server = try context.workerServer()
    let pool = try WorkerPool(servers: [server.remote], connectionsPerServer: 1)
    var (latencies, onLoop, floor) = (Latencies(), Latencies(), Latencies())
    let chunk = context.workload.serverRoundTrips / 4
    do {
      try await PoolScenarios.warmUp(pool)
      for _ in 0..<4 {
        latencies.add(try await PoolScenarios.roundTrips(pool, count: chunk, scenario: "server-rtt"))
        onLoop.add(
          try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
            try await PoolScenarios.roundTrips(pool, count: chunk, scenario: "server-rtt")
          })
        floor.add(try Floors.pingPong(PROCORD_BENCH_PAIR_TCP_LOOPBACK, rounds: chunk))
      }
    } catch {
      await pool.shutdown(.immediate)
      throw error
    }
    await pool.shutdown()
    let percentiles = [("p50", 50.0), ("p99", 99.0)]
    return PoolScenarios.roundTripRows(
      "server-rtt", latencies, floor: floor, medianTarget: 3, peers: nil, percentiles: percentiles)
      + PoolScenarios.roundTripRows(
        "server-rtt", onLoop, floor: floor, medianTarget: 3, peers: nil, percentiles: percentiles,
        suffix: ", on the loop")
  }

  /// Many connections (clients), every task in flight at once.
  @Sendable static func throughput(_ context: BenchContext) async throws -> [Measurement] {
    let server = try context.workerServer()
    let clients = context.workload.serverClients
    let floor = try Floors.pingPong(PROCORD_BENCH_PAIR_TCP_LOOPBACK, rounds: context.workload.pingPongRounds)
    var rows: [Measurement] = []
    for sentAhead in [0, context.tasksSentAhead] {
      var configuration = WorkerPool.Configuration(maximumWorkers: clients, minimumWorkers: clients)
      configuration.maximumQueueLength = max(configuration.maximumQueueLength, context.workload.serverTasks)
      configuration.tasksSentAhead = sentAhead
      let pool = try WorkerPool([.remote(server.remote)], configuration: configuration)
      let rate: Double
      do {
        _ = try await PoolScenarios.inFlight(pool, count: clients * 20, scenario: "server-throughput")
        rate = try await PoolScenarios.medianRate(
          pool, count: context.workload.serverTasks, onLoop: false, scenario: "server-throughput")
      } catch {
        await pool.shutdown(.immediate)
        throw error
      }
      await pool.shutdown()
      rows.append(
        Measurement(
          scenario: "server-throughput", metric: "\(clients) clients\(sentAhead > 0 ? ", \(sentAhead) sent ahead" : "")",
          unit: "tasks/s", kind: .rate, value: rate,
          floor: Double(context.workers) * 1e6 / floor.microseconds(atPercentile: 50),
          targets: clients >= 64 ? [.atLeast(20_000)] : []))
    }
    return rows
  }

}
