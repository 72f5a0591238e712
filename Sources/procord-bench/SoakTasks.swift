import Procord

#if canImport(Glibc)
import Glibc
#endif

/// The tasks the soak adds to the benchmark's own (``BenchTasks``): one that
/// computes a checkable value and one that kills its worker on purpose.
enum SoakTasks {
  /// fibo(0) = fibo(1) = 1, fibo(n) = fibo(n-1) + fibo(n-2), as the demo's;
  /// JSON both ways, so the Codable path is soaked too.
  static let fibo = ProcordTask<Int, Int>(name: "fibo") { n in fibonacci(n) }

  /// Dies in the middle of the task, as the demo's `crash`: `segv`, `abort`
  /// or `exit:N`.
  static let crash = ProcordTask<String, String>(name: "crash", input: .utf8, output: .utf8) { how in
    // Default dispositions first: the Swift runtime's crash handlers would
    // spend seconds printing a backtrace before the worker dies.
    switch how {
    case "segv":
      signal(SIGSEGV, SIG_DFL)
      raise(SIGSEGV)
    case "abort":
      signal(SIGABRT, SIG_DFL)
      abort()
    case let text where text.hasPrefix("exit:"):
      if let code = Int32(text.dropFirst(5)) { exit(code) }
    default:
      break
    }
    return "still alive after crash(\(how))"
  }

  static let all: [any ServableTask] = [fibo, crash]

  /// The largest n whose fibo fits 64 bits.
  static let largestFibo = 91

  /// fibo(n) for 0 ≤ n ≤ ``largestFibo``; what the main program checks the
  /// worker's answer against.
  static func fibonacci(_ n: Int) -> Int {
    var (previous, current) = (1, 1)
    for _ in 0..<max(0, n - 1) { (previous, current) = (current, previous &+ current) }
    return current
  }
}
