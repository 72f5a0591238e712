import Histogram

/// One figure of one scenario: a row of the table and an entry of the JSON.
struct Measurement: Sendable {
  /// Whether a smaller or a larger value is better: decides `ratioToFloor`.
  enum Kind: Sendable {
    /// A time or a size: the ratio is value/floor.
    case cost
    /// A rate: the ratio is floor/value.
    case rate
  }

  var scenario: String
  var metric: String
  var unit: String
  var kind: Kind
  var value: Double
  /// The physical limit measured in the same run, in the same unit.
  var floor: Double?
  /// Peers' figures for the same metric, in the same unit, by peer name.
  var peers: [String: Double] = [:]
  var targets: [Target] = []

  /// 1.0 is the floor; larger is worse.
  var ratioToFloor: Double? {
    guard let floor, floor > 0, value > 0 else { return nil }
    return kind == .cost ? value / floor : floor / value
  }

  /// How many times better than `peer` (above 1: we are better).
  func advantage(over peer: String) -> Double? {
    guard let theirs = peers[peer], theirs > 0, value > 0 else { return nil }
    return kind == .cost ? theirs / value : value / theirs
  }

  /// The targets with whether each holds.
  var targetResults: [(target: Target, met: Bool?)] {
    targets.map { ($0, $0.isMet(by: self)) }
  }
}

/// A goal the issue sets for a figure.
enum Target: Sendable, CustomStringConvertible {
  /// The ratio to the floor is at most this.
  case ratioToFloor(atMost: Double)
  /// At least this many times better than the peer.
  case advantage(over: String, atLeast: Double)
  /// The value is at most this (in its unit).
  case atMost(Double)
  /// The value is at least this (in its unit).
  case atLeast(Double)

  /// nil when the figure needed is missing (a peer that was not run).
  func isMet(by measurement: Measurement) -> Bool? {
    switch self {
    case .ratioToFloor(let limit): return measurement.ratioToFloor.map { $0 <= limit }
    case .advantage(let peer, let factor): return measurement.advantage(over: peer).map { $0 >= factor }
    case .atMost(let limit): return measurement.value <= limit
    case .atLeast(let limit): return measurement.value >= limit
    }
  }

  var description: String {
    switch self {
    case .ratioToFloor(let limit): return "≤ \(formatted(limit))× floor"
    case .advantage(let peer, let factor): return "≥ \(formatted(factor))× \(peer)"
    case .atMost(let limit): return "≤ \(formatted(limit))"
    case .atLeast(let limit): return "≥ \(formatted(limit))"
    }
  }
}

/// Latencies of one run, in nanoseconds, with percentiles from an
/// HdrHistogram (3 significant digits).
struct Latencies {
  private var histogram = Histogram<UInt64>(
    lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)

  init() {}

  /// From nanosecond samples measured elsewhere (the C floors).
  init<S: Sequence>(_ samples: S) where S.Element == UInt64 {
    for sample in samples { record(sample) }
  }

  mutating func record(_ nanoseconds: UInt64) {
    _ = histogram.record(max(1, nanoseconds))
  }

  /// Adds the samples of `other`.
  mutating func add(_ other: Latencies) {
    histogram.add(other.histogram)
  }

  /// The percentile `p` (0...100), in microseconds.
  func microseconds(atPercentile p: Double) -> Double {
    Double(histogram.valueAtPercentile(p)) / 1000
  }

}

/// A number with at most three significant digits after the point, for
/// humans.
func formatted(_ value: Double) -> String {
  if value == value.rounded() && abs(value) < 1e15 { return String(Int(value)) }
  let magnitude = abs(value)
  let digits = magnitude >= 100 ? 0 : magnitude >= 10 ? 1 : magnitude >= 1 ? 2 : 3
  return fixed(value, digits: digits)
}

/// `value` with exactly `digits` digits after the point (no Foundation here:
/// the benchmark is also its own worker, and must start as fast as one).
func fixed(_ value: Double, digits: Int) -> String {
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let scaled = (abs(value) * scale).rounded()
  guard scaled < 9e18 else { return String(value) }
  let whole = Int(scaled) / Int(scale)
  let fraction = Int(scaled) % Int(scale)
  var text = (value < 0 && scaled > 0 ? "-" : "") + String(whole)
  if digits > 0 {
    let fractionText = String(fraction)
    text += "." + String(repeating: "0", count: digits - fractionText.count) + fractionText
  }
  return text
}
