// swift-format-ignore-file: AlwaysUseLowerCamelCase
// (snake_case property names here are the keys of the JSON reports, through Codable.)

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// The machine a run measured, for the JSON.
struct Machine: Codable {
  var cores: Int
  var cpu: String
  var memory_mib: Int
  var kernel: String
  var build: String
  var quick: Bool
  var date: String

  static func current(quick: Bool) -> Machine {
    var names = utsname()
    uname(&names)
    let kernel = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    #if DEBUG
    let build = "debug"
    #else
    let build = "release"
    #endif
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    var text = [CChar](repeating: 0, count: 32)
    strftime(&text, text.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
    return Machine(
      cores: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), cpu: cpuModel(),
      memory_mib: Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE))) >> 20,
      kernel: kernel, build: build, quick: quick,
      date: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
  }

  private static func cpuModel() -> String {
    guard let file = fopen("/proc/cpuinfo", "r") else { return "unknown" }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), file) != nil {
      let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      if text.hasPrefix("model name"), let colon = text.firstIndex(of: ":") {
        return String(text[text.index(after: colon)...].drop { $0 == " " || $0 == "\t" }).trimmingTrailingSpaces()
      }
    }
    return "unknown"
  }
}

/// A run's figures as a table, JSON and an SVG chart.
struct Report {
  var measurements: [Measurement]
  var machine: Machine
  var peers: PeerFigures?

  /// The JSON document (`--json`).
  struct Document: Encodable {
    struct Entry: Encodable {
      struct TargetResult: Encodable {
        var target: String
        var met: Bool?
      }
      var name: String
      var metric: String
      var unit: String
      var value: Double
      var floor: Double?
      var ratio_to_floor: Double?
      var peers: [String: Double]
      var targets: [TargetResult]
    }
    struct PeerRun: Encodable {
      var python: String
      var start_method: String
    }
    var scenarios: [Entry]
    var machine: Machine
    var peers: PeerRun?
  }

  var document: Document {
    Document(
      scenarios: measurements.map { m in
        Document.Entry(
          name: m.scenario, metric: m.metric, unit: m.unit, value: m.value, floor: m.floor,
          ratio_to_floor: m.ratioToFloor, peers: m.peers,
          targets: m.targetResults.map { .init(target: $0.target.description, met: $0.met) })
      }, machine: machine, peers: peers.map { Document.PeerRun(python: $0.python, start_method: $0.start_method) })
  }

  func writeJSON(to path: String) throws {
    try write(try jsonText(document) + "\n", to: path)
  }

  /// One row of the table: the figure, its floor, the peers', the targets.
  private func cells(of m: Measurement, peers peerNames: [String], missing: String) -> [String] {
    [
      m.scenario, m.metric, "\(formatted(m.value)) \(m.unit)", m.floor.map(formatted) ?? missing,
      m.ratioToFloor.map { formatted($0) } ?? missing,
    ]
      + peerNames.map { name in m.peers[name].map(formatted) ?? missing }
      + [m.targetResults.map { "\($0.target) \($0.met.map { $0 ? "✓" : "✗" } ?? "?")" }.joined(separator: ", ")]
  }

  /// The table printed at the end of a run.
  func table() -> String {
    let peerNames = PeerFigures.names.filter { name in measurements.contains { $0.peers[name] != nil } }
    let rows =
      [["scenario", "metric", "value", "floor", "× floor"] + peerNames + ["target"]]
      + measurements.map { cells(of: $0, peers: peerNames, missing: "-") }
    let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
    let lines = rows.map { row in
      zip(row, widths).map { $0.padding($1 + 2) }.joined().trimmingTrailingSpaces()
    }
    let rule = String(repeating: "-", count: widths.reduce(0) { $0 + $1 + 2 })
    let header =
      "procord-bench, \(machine.build) build, \(machine.cores) cores, \(machine.cpu)"
      + (machine.quick ? " (--quick: smoke run, figures not meaningful)" : "")
    return ([header, lines[0], rule] + lines.dropFirst()).joined(separator: "\n")
  }

  /// The table as Markdown (`--markdown`), for the README.
  func markdownTable() -> String {
    let peerNames = PeerFigures.names.filter { name in measurements.contains { $0.peers[name] != nil } }
    let header = ["scenario", "metric", "value", "floor", "× floor"] + peerNames + ["target"]
    let alignment = ["---", "---", "---:", "---:", "---:"] + peerNames.map { _ in "---:" } + ["---"]
    var lines = ["| " + header.joined(separator: " | ") + " |", "|" + alignment.joined(separator: "|") + "|"]
    for m in measurements {
      lines.append("| " + cells(of: m, peers: peerNames, missing: "").joined(separator: " | ") + " |")
    }
    return lines.joined(separator: "\n") + "\n"
  }

  func writeMarkdown(to path: String) throws {
    try write(markdownTable(), to: path)
  }

  /// A horizontal bar chart of every ratio to its floor, ours and the
  /// peers', on a logarithmic axis (`--svg`).
  func writeSVG(to path: String) throws {
    try write(ChartDrawing(measurements: measurements, machine: machine).svg(), to: path)
  }

  private func write(_ text: String, to path: String) throws {
    guard let file = fopen(path, "w") else { throw BenchError("cannot write \(path)", code: -errno) }
    defer { fclose(file) }
    if fputs(text, file) < 0 { throw BenchError("cannot write \(path)", code: -errno) }
  }
}

/// `value` as pretty-printed JSON with sorted keys.
func jsonText<T: Encodable>(_ value: T) throws -> String {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
  return String(decoding: try encoder.encode(value), as: UTF8.self)
}

extension String {
  func trimmingTrailingSpaces() -> String {
    var text = self
    while let last = text.last, last == " " || last == "\n" { text.removeLast() }
    return text
  }
}
