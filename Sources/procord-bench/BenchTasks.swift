import Procord

#if canImport(Glibc)
import Glibc
#endif

/// The tasks the benchmark delegates to itself.
enum BenchTasks {
  /// The trivial task: as little work as a task can do, so that what is
  /// measured is the delegation.
  static let increment = ProcordTask<Int, Int>(name: "increment", input: .decimal, output: .decimal) { $0 + 1 }

  /// Raw bytes there and back, for the payload scenario.
  static let echo = ProcordTask<[UInt8], [UInt8]>(name: "echo", input: .bytes, output: .bytes) { $0 }

  /// Codable values there and back (JSON), for the codable scenario.
  static let echoRecords = ProcordTask<[BenchRecord], [BenchRecord]>(name: "echo-records") { $0 }

  /// Sleeps the given number of milliseconds: keeps a worker busy so that
  /// the tasks behind it stay pending, for the memory scenario.
  static let sleep = ProcordTask<Int, Int>(name: "sleep", input: .decimal, output: .decimal) { milliseconds in
    usleep(useconds_t(clamping: milliseconds * 1000))
    return milliseconds
  }

  /// n!, as the demo's: decimal text both ways (`4Tfact1V5` is answered
  /// `3V120`), for the server-under-attack scenario, whose C clients speak
  /// the wire protocol by hand.
  static let fact = ProcordTask<Int, Int>(name: "fact", input: .decimal, output: .decimal, error: .text) { n in
    guard n >= 0 else { throw BenchError("fact: negative argument") }
    return try (0...n).dropFirst().reduce(1) { product, factor in
      let (next, overflow) = product.multipliedReportingOverflow(by: factor)
      guard !overflow else { throw BenchError("fact: \(n) is too large for a 64-bit result") }
      return next
    }
  }

  static let all: [any ServableTask] = [increment, echo, echoRecords, sleep, fact]

  /// Room for the largest payload (256 MiB) and its frame header.
  static let maxMessageSize = 300 << 20
}

/// A small Codable struct, as applications send them.
struct BenchRecord: Codable, Equatable, Sendable {
  var id: Int
  var name: String
  var score: Double
  var tags: [String]

  /// `count` distinct records.
  static func sample(count: Int) -> [BenchRecord] {
    (0..<count).map { i in
      BenchRecord(id: i, name: "record-\(i)", score: Double(i) * 0.25, tags: ["alpha", i % 2 == 0 ? "even" : "odd"])
    }
  }
}
