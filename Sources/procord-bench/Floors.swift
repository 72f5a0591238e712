import CProcordBench

/// The physical limits of this machine, measured in C by the benchmark and a
/// copy of itself (`--floor-peer`), so that no library code is involved.
enum Floors {
  /// The arguments that make this benchmark a floor peer in `mode`.
  private static func peerArguments(_ mode: String) -> [String] { ["procord-bench", "--floor-peer", mode] }

  /// 1-byte round trips between two processes over a descriptor pair of `kind`.
  static func pingPong(_ kind: procord_bench_pair_kind, rounds: Int) throws -> Latencies {
    var samples = [UInt64](repeating: 0, count: rounds)
    let result = withConstArgumentVector(peerArguments("echo-1")) { argv in
      procord_bench_pingpong(kind, "/proc/self/exe", argv, Int32(min(rounds, 2000)), Int32(rounds), &samples)
    }
    try check(result, "ping-pong floor")
    return Latencies(samples)
  }

  /// `size` bytes to another process and back over an AF_UNIX stream
  /// socketpair, in full each way (the shape of a task); nanoseconds each.
  static func storeAndForward(size: Int, repeats: Int) throws -> [UInt64] {
    var samples = [UInt64](repeating: 0, count: repeats)
    let result = withConstArgumentVector(peerArguments("store-and-forward")) { argv in
      procord_bench_store_and_forward("/proc/self/exe", argv, size, Int32(repeats), &samples)
    }
    try check(result, "bandwidth floor")
    return samples
  }

  /// Starts and reaps `program --noop`, one at a time; nanoseconds each.
  static func startSequentially(_ program: String, count: Int) throws -> Latencies {
    var samples = [UInt64](repeating: 0, count: count)
    let result = withConstArgumentVector(["procord-bench", "--noop"]) { argv in
      procord_bench_spawn_sequential(program, argv, Int32(count), &samples)
    }
    try check(result, "process start floor")
    return Latencies(samples)
  }

  /// Starts `count` copies of `program --noop` at once and reaps them all;
  /// nanoseconds in all.
  static func startConcurrently(_ program: String, count: Int) throws -> UInt64 {
    var total: UInt64 = 0
    let result = withConstArgumentVector(["procord-bench", "--noop"]) { argv in
      procord_bench_spawn_concurrent(program, argv, Int32(count), &total)
    }
    try check(result, "concurrent process start floor")
    return total
  }

  /// pool-rtt through the C API: one pooled worker (`program` in socket
  /// mode), `rounds` sequential increments; with `onHostBase`, the loop on
  /// a libevent base the calling thread runs, not on a thread of its own.
  static func cPoolRoundTrips(_ program: String, rounds: Int, onHostBase: Bool = false) throws -> Latencies {
    var samples = [UInt64](repeating: 0, count: rounds)
    let input: [UInt8] = Array("41".utf8)
    let arguments = ["procord-bench", "--procord-worker", "--procord-socket-fd", "3"]
    let result = withConstArgumentVector(arguments) { argv in
      input.withUnsafeBufferPointer { bytes in
        procord_bench_c_pool_rtt(
          program, argv, BenchTasks.increment.name, bytes.baseAddress, bytes.count, onHostBase ? 1 : 0,
          Int32(min(rounds, 2000)), Int32(rounds), &samples)
      }
    }
    try check(
      result, onHostBase ? "pool round trips through the C API on a host's base" : "pool round trips through the C API")
    return Latencies(samples)
  }
}

/// The middle value of `samples` (the mean of the two middle ones when even).
func median(_ samples: [UInt64]) -> Double {
  let sorted = samples.sorted()
  guard !sorted.isEmpty else { return 0 }
  let middle = sorted.count / 2
  return sorted.count % 2 == 1 ? Double(sorted[middle]) : (Double(sorted[middle - 1]) + Double(sorted[middle])) / 2
}
