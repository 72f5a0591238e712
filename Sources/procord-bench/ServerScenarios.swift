import CProcordBench
import Procord

/// A worker server on loopback, started by the benchmark.
enum ServerScenarios {
  /// One connection, one task at a time.
  @Sendable static func roundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let server = try context.workerServer()
    let pool = try WorkerPool(servers: [server.remote], connectionsPerServer: 1)
    var (latencies, floor) = (Latencies(), Latencies())
    let chunk = context.workload.serverRoundTrips / 4
    do {
      try await PoolScenarios.warmUp(pool)
      for _ in 0..<4 {
        latencies.add(try await PoolScenarios.roundTrips(pool, count: chunk, scenario: "server-rtt"))
        floor.add(try Floors.pingPong(PROCORD_BENCH_PAIR_TCP_LOOPBACK, rounds: chunk))
      }
    } catch {
      await pool.shutdown(.immediate)
      throw error
    }
    await pool.shutdown()
    return PoolScenarios.roundTripRows(
      "server-rtt", latencies, floor: floor, medianTarget: 3, peers: nil,
      percentiles: [("p50", 50), ("p99", 99)])
  }

  /// Many connections (clients), every task in flight at once.
  @Sendable static func throughput(_ context: BenchContext) async throws -> [Measurement] {
    let server = try context.workerServer()
    let clients = context.workload.serverClients
    var configuration = WorkerPool.Configuration(maximumWorkers: clients, minimumWorkers: clients)
    configuration.maximumQueueLength = max(configuration.maximumQueueLength, context.workload.serverTasks)
    let pool = try WorkerPool([.remote(server.remote)], configuration: configuration)
    let rate: Double
    do {
      _ = try await PoolScenarios.inFlight(pool, count: clients * 20, scenario: "server-throughput")
      rate = try await PoolScenarios.inFlight(pool, count: context.workload.serverTasks, scenario: "server-throughput")
    } catch {
      await pool.shutdown(.immediate)
      throw error
    }
    await pool.shutdown()
    let floor = try Floors.pingPong(PROCORD_BENCH_PAIR_TCP_LOOPBACK, rounds: context.workload.pingPongRounds)
    return [
      Measurement(
        scenario: "server-throughput", metric: "\(clients) clients", unit: "tasks/s", kind: .rate,
        value: rate, floor: Double(context.workers) * 1e6 / floor.microseconds(atPercentile: 50),
        targets: clients >= 64 ? [.atLeast(20_000)] : [])
    ]
  }
}
