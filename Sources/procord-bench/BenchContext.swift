import CProcordBench
import Procord

/// How much work each scenario does: the full run of `make bench`, or the
/// seconds-long smoke run of `--quick`.
struct Workload: Sendable {
  var pingPongRounds: Int
  var spawnTasks: Int
  var concurrentSpawns: Int
  var spawnBursts: Int
  var poolRoundTrips: Int
  var throughputTasks: Int
  var payloadRepeats: [(size: Int, repeats: Int)]
  var codableRepeats: Int
  var codableRecords: Int
  var serverRoundTrips: Int
  var serverTasks: Int
  var serverClients: Int
  var pendingRemoteTasks: Int
  /// How long each attack of server-under-attack lasts, greedy's apart,
  /// and how long the server then has to close what the attack opened.
  var attackMilliseconds: Int
  var greedyAttackMilliseconds: Int
  var attackSettleMilliseconds: Int

  static let full = Workload(
    pingPongRounds: 20_000, spawnTasks: 100, concurrentSpawns: 500, spawnBursts: 3, poolRoundTrips: 20_000,
    throughputTasks: 50_000,
    payloadRepeats: [(1 << 10, 2000), (1 << 20, 100), (64 << 20, 5), (256 << 20, 3)],
    codableRepeats: 10, codableRecords: 10_000, serverRoundTrips: 10_000, serverTasks: 25_000,
    serverClients: 64, pendingRemoteTasks: 10_000, attackMilliseconds: 15_000, greedyAttackMilliseconds: 60_000,
    attackSettleMilliseconds: 8_000)

  static let quick = Workload(
    pingPongRounds: 500, spawnTasks: 5, concurrentSpawns: 20, spawnBursts: 1, poolRoundTrips: 300,
    throughputTasks: 1_000,
    payloadRepeats: [(1 << 10, 50), (1 << 20, 5)], codableRepeats: 3, codableRecords: 10_000,
    serverRoundTrips: 200, serverTasks: 2_000, serverClients: 8, pendingRemoteTasks: 1_000, attackMilliseconds: 2_000,
    greedyAttackMilliseconds: 3_000, attackSettleMilliseconds: 6_000)
}

/// What the scenarios of one run share: the settings, the floors measured
/// once, the peers' figures and the worker server.
final class BenchContext {
  let workload: Workload
  /// Workers for the throughput scenarios: one per core by default.
  let workers: Int
  /// The binary used as worker (and as the bare start of spawn-rtt).
  let workerPath: String
  /// Python's pools, when `--peers` asks for them.
  let peerRunner: PeerRunner?
  /// WorkerPool.Configuration.tasksSentAhead where a scenario sends ahead.
  let tasksSentAhead: Int

  private var server: BenchServer?

  init(workload: Workload, workers: Int, tasksSentAhead: Int, workerPath: String?, peerRunner: PeerRunner?) {
    self.workload = workload
    self.workers = workers
    self.tasksSentAhead = tasksSentAhead
    self.workerPath = workerPath ?? "/proc/self/exe"
    self.peerRunner = peerRunner
  }

  /// The worker program for pools and one-off delegations.
  var workerProgram: WorkerProgram {
    if workerPath == "/proc/self/exe" { return .current }
    return WorkerProgram(path: workerPath, arguments: ["--procord-worker"], channel: .socket)
  }

  /// The peers' figures for one of their scenarios (`rtt`, `throughput`,
  /// `payload`), measured on first use; nil without `--peers`.
  func peers(_ scenario: String) throws -> PeerFigures? {
    try peerRunner?.figures(for: scenario)
  }

  /// A worker server on 127.0.0.1, started on first use and stopped by
  /// ``finish()``.
  func workerServer() throws -> BenchServer {
    if let server { return server }
    let started = try BenchServer(maximumTasks: workload.serverClients + 16)
    server = started
    return started
  }

  func finish() {
    server?.stop()
    server = nil
  }
}
