import Procord

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// Resident memory, in a fresh main program (this benchmark started again
/// as `memory-probe`), so that no earlier scenario's memory is counted.
enum MemoryScenario {
  /// What the probe prints, as JSON.
  struct ProbeReport: Codable {
    /// The probe's resident memory before it delegated anything.
    var mainBeforeMiB: Double
    /// With all its tasks pending.
    var mainPendingMiB: Double
    var pendingTasks: Int
    /// A pooled worker that has answered a task and waits for the next.
    var idleWorkerMiB: Double
  }

  @Sendable static func run(_ context: BenchContext) async throws -> [Measurement] {
    let server = try context.workerServer()
    var arguments = [
      "procord-bench", "memory-probe", "--port", String(server.port), "--tasks",
      String(context.workload.pendingRemoteTasks),
    ]
    if context.workerPath != "/proc/self/exe" { arguments += ["--worker", context.workerPath] }
    let probe = try ChildProcess(path: "/proc/self/exe", arguments: arguments, captureOutput: true)
    let (output, status) = probe.finish()
    guard status == 0, let report = try? JSONDecoder().decode(ProbeReport.self, from: Data(output.utf8)) else {
      throw BenchError("the memory probe failed (exit status \(status)): \(output)")
    }
    return [
      Measurement(
        scenario: "memory", metric: "main, \(report.pendingTasks) pending remote tasks", unit: "MiB", kind: .cost,
        value: report.mainPendingMiB, targets: [.atMost(100)]),
      Measurement(
        scenario: "memory", metric: "main, before delegating", unit: "MiB", kind: .cost,
        value: report.mainBeforeMiB),
      Measurement(
        scenario: "memory", metric: "idle worker", unit: "MiB", kind: .cost, value: report.idleWorkerMiB,
        targets: [.atMost(15)]),
    ]
  }

  /// The probe itself: `tasks` remote tasks pending behind two busy
  /// connections to the server at `port`, then an idle local worker.
  static func probe(port: Int, tasks: Int, worker: WorkerProgram) async throws -> ProbeReport {
    let before = residentMebibytes() ?? 0
    var configuration = WorkerPool.Configuration(maximumWorkers: 2)
    configuration.maximumQueueLength = max(configuration.maximumQueueLength, tasks)
    let remote = try WorkerPool([.remote(RemoteServer(host: "127.0.0.1", port: port))], configuration: configuration)
    // Each task would sleep a minute: the first two hold both connections,
    // every other one stays pending until the pool is stopped.
    let processes = try (0..<tasks).map { _ in try remote.delegate(BenchTasks.sleep, 60_000) }
    while remote.statistics.busyWorkers < 2 { usleep(1000) }
    let pending = residentMebibytes() ?? 0
    await remote.shutdown(.immediate)
    for process in processes { _ = try? await process.value }

    let local = try WorkerPool(workers: 1, program: worker)
    let process = try local.delegate(BenchTasks.increment, 1)
    _ = try await process.value
    guard let pid = process.pid, let idle = residentMebibytes(of: String(pid)) else {
      throw BenchError("memory: cannot read the idle worker's resident memory")
    }
    await local.shutdown()
    return ProbeReport(mainBeforeMiB: before, mainPendingMiB: pending, pendingTasks: tasks, idleWorkerMiB: idle)
  }
}
