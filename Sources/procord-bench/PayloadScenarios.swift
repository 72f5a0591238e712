import Procord

/// Moving data through a pooled worker.
enum PayloadScenarios {
  /// Raw bytes echoed by one pooled worker, by size: GB/s counting the bytes
  /// both ways.
  @Sendable static func payload(_ context: BenchContext) async throws -> [Measurement] {
    let peers = try context.peers("payload")
    var configuration = WorkerPool.Configuration(maximumWorkers: 1)
    configuration.maximumMessageSize = BenchTasks.maxMessageSize
    return try await PoolRuns.withPool([.local(context.workerProgram)], configuration) { pool in
      var rows: [Measurement] = []
      for (size, repeats) in context.workload.payloadRepeats {
        let input = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let samples = try await PoolRuns.timedRepeats(repeats) {
          let output = try await pool.run(BenchTasks.echo, input)
          guard output.count == size, output.first == input.first, output.last == input.last,
            output[size / 2] == input[size / 2]
          else { throw BenchError("payload: the echo of \(size) bytes came back different") }
        }
        let floorSamples = try Floors.storeAndForward(size: size, repeats: max(3, min(repeats, 200)))
        let gigabytes = 2 * Double(size) / 1e9
        rows.append(
          Measurement(
            scenario: "payload", metric: sizeLabel(size), unit: "GB/s", kind: .rate,
            value: gigabytes / (median(samples) / 1e9), floor: gigabytes / (median(floorSamples) / 1e9),
            peers: peers?.figures { $0.payload?[String(size)]?.gb_per_s } ?? [:],
            targets: size == 256 << 20
              ? [.ratioToFloor(atMost: 2), .advantage(over: "ProcessPoolExecutor", atLeast: 5)] : []))
      }
      return rows
    }
  }

  /// A Codable array echoed by one pooled worker (JSON both ways), against
  /// encoding and decoding it once in process. The echo encodes and decodes
  /// twice (there and back), so 2.0 is the least it can cost.
  @Sendable static func codable(_ context: BenchContext) async throws -> [Measurement] {
    let records = BenchRecord.sample(count: context.workload.codableRecords)
    let repeats = context.workload.codableRepeats
    let samples = try await PoolRuns.withPool(
      [.local(context.workerProgram)], WorkerPool.Configuration(maximumWorkers: 1)
    ) { pool in
      try await PoolRuns.timedRepeats(repeats) {
        guard try await pool.run(BenchTasks.echoRecords, records) == records else {
          throw BenchError("codable: the echo came back different")
        }
      }
    }
    let codec = BenchTasks.echoRecords.delegated.input
    let floorSamples = try await PoolRuns.timedRepeats(repeats) {
      guard try codec.decode(try codec.encode(records)).count == records.count else {
        throw BenchError("codable: the in-process round trip lost records")
      }
    }
    return [
      Measurement(
        scenario: "codable", metric: "\(records.count) structs", unit: "ms", kind: .cost,
        value: median(samples) / 1e6, floor: median(floorSamples) / 1e6)
    ]
  }
}

/// 1 KiB, 1 MiB, 64 MiB...
func sizeLabel(_ size: Int) -> String {
  if size >= 1 << 20 && size % (1 << 20) == 0 { return "\(size >> 20) MiB" }
  if size >= 1 << 10 && size % (1 << 10) == 0 { return "\(size >> 10) KiB" }
  return "\(size) B"
}
