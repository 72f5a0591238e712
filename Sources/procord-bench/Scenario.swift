/// A named measurement of the benchmark.
struct Scenario: Sendable {
  let name: String
  /// What it measures, and against which floor.
  let summary: String
  let run: @Sendable (BenchContext) async throws -> [Measurement]

  /// Every scenario, in the order a full run takes them. pool-rtt comes
  /// before c-pool-rtt, which compares itself with it; server-under-attack,
  /// the longest, which loads the machine most, comes last.
  static let all: [Scenario] = [
    Scenario(
      name: "spawn-rtt",
      summary: "one process per task, sequential, vs. the bare start and exit of the same binary (--noop)",
      run: SpawnScenarios.roundTrip),
    Scenario(
      name: "spawn-throughput",
      summary: "one-process-per-task delegations all at once, vs. as many bare starts at once",
      run: SpawnScenarios.throughput),
    Scenario(
      name: "pool-rtt",
      summary: "one pooled worker, sequential trivial tasks, vs. 1-byte ping-pong over a socketpair",
      run: PoolScenarios.roundTrip),
    Scenario(
      name: "pool-throughput",
      summary: "a worker per core, many tasks in flight, vs. the ping-pong floor times the workers",
      run: PoolScenarios.throughput),
    Scenario(
      name: "payload",
      summary: "raw bytes echoed by a pooled worker (GB/s both ways), vs. the same bytes over a bare socketpair",
      run: PayloadScenarios.payload),
    Scenario(
      name: "codable",
      summary: "a Codable array of small structs echoed by a pooled worker, vs. encoding and decoding it in process",
      run: PayloadScenarios.codable),
    Scenario(
      name: "server-rtt",
      summary: "one client of a loopback worker server, sequential, vs. 1-byte TCP ping-pong on loopback",
      run: ServerScenarios.roundTrip),
    Scenario(
      name: "server-throughput",
      summary: "64 clients of a loopback worker server, vs. the TCP ping-pong floor times the cores",
      run: ServerScenarios.throughput),
    Scenario(
      name: "c-pool-rtt",
      summary: "pool-rtt through the C API; its ratio to pool-rtt is the Swift overlay's cost",
      run: PoolScenarios.cRoundTrip),
    Scenario(
      name: "memory",
      summary: "resident memory of a main program with pending remote tasks, and of an idle worker",
      run: MemoryScenario.run),
    Scenario(
      name: AttackScenario.name,
      summary:
        "a server with 8 task slots under five hostile clients (slowloris, idle flood...), probed with fact 5 every 100 ms",
      run: AttackScenario.run),
  ]

  static func named(_ name: String) -> Scenario? { all.first { $0.name == name } }
}
