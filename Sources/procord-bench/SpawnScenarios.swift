import Procord

/// One worker process per task: what a task costs when nothing is kept.
enum SpawnScenarios {
  /// Sequential one-off delegations of the trivial task, each to a new
  /// process of the worker binary, through the async API (`task.run`) and
  /// through the poll-style layer (`delegate`, then a blocking `run()`),
  /// one of each in turn with a bare process start: the async path must
  /// cost no more than the poll path.
  @Sendable static func roundTrip(_ context: BenchContext) async throws -> [Measurement] {
    let count = context.workload.spawnTasks
    let worker = context.workerProgram
    let task = BenchTasks.increment
    // A first one of each, unrecorded: the binary's pages come into the cache.
    _ = try await task.run(0, to: worker)
    _ = try delegate(task, 0, to: worker).run()
    _ = try Floors.startSequentially(context.workerPath, count: 1)

    // One of each in turn, so that all see the same machine.
    var awaited = Latencies()
    var polled = Latencies()
    var floor = Latencies()
    for i in 0..<count {
      var start = nowNanoseconds()
      let answer = try await task.run(i, to: worker)
      awaited.record(nowNanoseconds() - start)
      guard answer == i + 1 else { throw BenchError("spawn-rtt: increment(\(i)) gave \(answer)") }
      start = nowNanoseconds()
      let polledAnswer = try delegate(task, i, to: worker).run()
      polled.record(nowNanoseconds() - start)
      guard polledAnswer == i + 1 else { throw BenchError("spawn-rtt: increment(\(i)) gave \(polledAnswer)") }
      floor.add(try Floors.startSequentially(context.workerPath, count: 1))
    }
    let awaitedMedian = awaited.microseconds(atPercentile: 50) / 1000
    let polledMedian = polled.microseconds(atPercentile: 50) / 1000
    return [
      Measurement(
        scenario: "spawn-rtt", metric: "p50", unit: "ms", kind: .cost,
        value: awaitedMedian, floor: floor.microseconds(atPercentile: 50) / 1000,
        targets: [.ratioToFloor(atMost: 1.3)]),
      // The floor of the async path is the poll path: it may not cost more.
      Measurement(
        scenario: "spawn-rtt-async-vs-poll", metric: "p50", unit: "ms", kind: .cost,
        value: awaitedMedian, floor: polledMedian, targets: [.ratioToFloor(atMost: 1.05)]),
    ]
  }

  /// Many one-off delegations at once: how fast a burst of them drains.
  /// Bursts and bare bursts alternate; the medians are compared.
  @Sendable static func throughput(_ context: BenchContext) async throws -> [Measurement] {
    let count = context.workload.concurrentSpawns
    let worker = context.workerProgram
    var burst: [UInt64] = []
    var bare: [UInt64] = []
    for _ in 0..<context.workload.spawnBursts {
      let start = nowNanoseconds()
      let processes = try (0..<count).map { try delegate(BenchTasks.increment, $0, to: worker) }
      for (i, process) in processes.enumerated() {
        let answer = try await process.value
        guard answer == i + 1 else { throw BenchError("spawn-throughput: increment(\(i)) gave \(answer)") }
      }
      burst.append(nowNanoseconds() - start)
      bare.append(try Floors.startConcurrently(context.workerPath, count: count))
    }
    return [
      Measurement(
        scenario: "spawn-throughput", metric: "\(count) at once", unit: "tasks/s", kind: .rate,
        value: Double(count) / (median(burst) / 1e9), floor: Double(count) / (median(bare) / 1e9))
    ]
  }
}
