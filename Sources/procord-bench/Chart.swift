/// The SVG bar chart of a run: one group of bars per figure that has a
/// floor, the length of a bar its ratio to the floor on a logarithmic axis
/// (1 = the floor; shorter is better).
struct ChartDrawing {
  var measurements: [Measurement]
  var machine: Machine

  private static let colors = [
    "Procord": "#2f6fb2", "ProcessPoolExecutor": "#d98c2b", "multiprocessing.Pool": "#8a5aa8",
  ]
  private let plotWidth = 560.0
  private let barHeight = 12.0

  /// The ratio of a peer's figure to the floor, computed like ours.
  private func peerRatio(_ m: Measurement, _ peer: String) -> Double? {
    guard let floor = m.floor, let theirs = m.peers[peer], floor > 0, theirs > 0 else { return nil }
    return m.kind == .cost ? theirs / floor : floor / theirs
  }

  func svg() -> String {
    let rows = measurements.filter { $0.ratioToFloor != nil }
    // Room for the longest label, at about 6.5 pixels a character.
    let labelWidth = max(200, Double(rows.map { "\($0.scenario) \($0.metric)".count }.max() ?? 0) * 6.5 + 16)
    let series = ["Procord"] + PeerFigures.names.filter { name in rows.contains { $0.peers[name] != nil } }
    let largest =
      rows.flatMap { m in [m.ratioToFloor ?? 1] + series.dropFirst().compactMap { peerRatio(m, $0) } }
      .max() ?? 1
    // Decades from 1 up to the first power of ten above the largest ratio.
    var top = 10.0
    while top < largest { top *= 10 }
    func x(_ ratio: Double) -> Double { labelWidth + plotWidth * log10(max(ratio, 1)) / log10(top) }

    let groupHeight = Double(series.count) * barHeight + 8
    let chartTop = 56.0
    let height = chartTop + Double(rows.count) * groupHeight + 40
    let width = labelWidth + plotWidth + 60
    var svg = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
      font-family="sans-serif" font-size="11">
      <rect width="100%" height="100%" fill="white"/>
      <text x="10" y="18" font-size="14" font-weight="bold">procord-bench: ratio to this machine's floor \
      (1 = the physical limit; shorter is better)</text>
      <text x="10" y="34" fill="#555">\(escaped("\(machine.cores) cores, \(machine.cpu), \(machine.build) build, \(machine.date)"))</text>

      """
    // The legend.
    for (index, name) in series.enumerated() {
      let left = 10 + Double(index) * 190
      svg += "<rect x=\"\(left)\" y=\"40\" width=\"10\" height=\"10\" fill=\"\(Self.colors[name] ?? "#999")\"/>"
      svg += "<text x=\"\(left + 14)\" y=\"49\">\(escaped(name))</text>\n"
    }
    // Grid lines at 1, 2, 5, 10, 20, 50...
    var tick = 1.0
    while tick <= top {
      for step in [1.0, 2.0, 5.0] where tick * step <= top {
        let position = x(tick * step)
        svg +=
          "<line x1=\"\(position)\" y1=\"\(chartTop - 2)\" x2=\"\(position)\" y2=\"\(height - 30)\" "
          + "stroke=\"\(step == 1 ? "#bbb" : "#e4e4e4")\"/>"
        svg += "<text x=\"\(position)\" y=\"\(height - 16)\" text-anchor=\"middle\">\(formatted(tick * step))×</text>\n"
      }
      tick *= 10
    }
    for (index, m) in rows.enumerated() {
      let groupTop = chartTop + Double(index) * groupHeight
      svg +=
        "<text x=\"\(labelWidth - 8)\" y=\"\(groupTop + barHeight)\" text-anchor=\"end\">"
        + "\(escaped("\(m.scenario) \(m.metric)"))</text>\n"
      for (row, name) in series.enumerated() {
        guard let ratio = name == "Procord" ? m.ratioToFloor : peerRatio(m, name) else { continue }
        let top = groupTop + Double(row) * barHeight
        let length = max(1, x(ratio) - labelWidth)
        svg +=
          "<rect x=\"\(labelWidth)\" y=\"\(top)\" width=\"\(length)\" height=\"\(barHeight - 2)\" "
          + "fill=\"\(Self.colors[name] ?? "#999")\"/>"
        svg += "<text x=\"\(labelWidth + length + 4)\" y=\"\(top + barHeight - 3)\">\(formatted(ratio))×</text>\n"
      }
    }
    return svg + "</svg>\n"
  }

  private func escaped(_ text: String) -> String {
    text.replacing("&", with: "&amp;").replacing("<", with: "&lt;")
      .replacing(">", with: "&gt;")
  }
}

#if canImport(Glibc)
import Glibc
#endif
