// swift-format-ignore-file: AlwaysUseLowerCamelCase
// (snake_case property names here are the keys of the JSON reports, through Codable.)

#if canImport(Glibc)
import Glibc
#endif

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What Python's process pools reach on the same scenarios, measured by
/// bench/peers.py in the same run.
struct PeerFigures: Decodable, Sendable {
  struct RoundTrip: Decodable, Sendable {
    var p50_us: Double
    var p99_us: Double
    var p999_us: Double
  }
  struct Throughput: Decodable, Sendable {
    var tasks_per_s: Double
  }
  struct Payload: Decodable, Sendable {
    var gb_per_s: Double
  }
  struct Peer: Decodable, Sendable {
    var rtt: RoundTrip?
    var throughput: Throughput?
    var payload: [String: Payload]?
  }

  var python: String
  var start_method: String
  var peers: [String: Peer]

  /// The peers in the order the table shows them.
  static let names = ["ProcessPoolExecutor", "multiprocessing.Pool"]

  /// One figure of every peer that has it.
  func figures(_ pick: (Peer) -> Double?) -> [String: Double] {
    var result: [String: Double] = [:]
    for (name, peer) in peers { if let value = pick(peer) { result[name] = value } }
    return result
  }

  /// Runs `script` with `python` on one of its scenarios (`rtt`,
  /// `throughput` or `payload`) and reads its JSON.
  static func measure(
    python: String, script: String, workers: Int, quick: Bool, scenario: String
  ) throws -> PeerFigures {
    var arguments = [python, script, "--json", "--workers", String(workers), "--scenarios", scenario]
    if quick { arguments.append("--quick") }
    let child = try ChildProcess(path: try executable(named: python), arguments: arguments, captureOutput: true)
    let (output, status) = child.finish()
    guard status == 0 else { throw BenchError("\(script) failed (exit status \(status)); its errors are above") }
    do {
      return try JSONDecoder().decode(PeerFigures.self, from: Data(output.utf8))
    } catch {
      throw BenchError("\(script) printed something that is not its JSON: \(error)")
    }
  }
}

/// How to run the peers, and their figures once run: each scenario of
/// bench/peers.py runs right before the scenario of ours it is compared
/// with, so that both see the same minute of the machine.
final class PeerRunner {
  let python: String
  let script: String
  let workers: Int
  let quick: Bool
  private var figures: [String: PeerFigures] = [:]

  init(python: String, script: String, workers: Int, quick: Bool) {
    self.python = python
    self.script = script
    self.workers = workers
    self.quick = quick
  }

  /// The peers' figures for `scenario`, measured now if not yet.
  func figures(for scenario: String) throws -> PeerFigures {
    if let known = figures[scenario] { return known }
    progress("peers: running \(script) --scenarios \(scenario)")
    let measured = try PeerFigures.measure(
      python: python, script: script, workers: workers, quick: quick, scenario: scenario)
    figures[scenario] = measured
    return measured
  }

  /// Which Python ran, once any scenario has.
  var anyRun: PeerFigures? { figures.values.first }
}

/// The path of `name`: itself if it has a slash, otherwise looked up in PATH.
func executable(named name: String) throws -> String {
  if name.contains("/") { return name }
  let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
  for directory in path.split(separator: ":") {
    let candidate = "\(directory)/\(name)"
    if access(candidate, X_OK) == 0 { return candidate }
  }
  throw BenchError("\(name) is not in PATH")
}
