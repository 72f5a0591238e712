import Foundation
import Testing

/// procord-bench, built with the tests.
private let benchPath = buildDirectory.appendingPathComponent("procord-bench").path

/// A smoke test that the benchmark runs and reports what it says it does;
/// its figures are not checked (speed is measured by `make bench`, not by tests).
@Suite(.serialized) struct BenchSmokeTests {
  @Test func aQuickRunReportsEveryScenarioWithItsFloorAndThePeers() throws {
    let json = temporaryPath("bench.json")
    let svg = temporaryPath("bench.svg")
    defer {
      unlink(json)
      unlink(svg)
    }
    let child = try ChildProcess(benchPath, ["--quick", "--peers", "--json", json, "--svg", svg])
    defer { child.ensureStopped() }
    let end = try #require(child.waitForExit(timeout: .seconds(300)), "still running: \(child.output.text)")
    #expect(end.exited && end.status == 0, "\(child.output.text)")
    #expect(child.output.wait(timeout: .seconds(10)) { $0.contains("procord-bench, debug build") })

    let document = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
    let scenarios = try #require(document["scenarios"] as? [[String: Any]])
    let names = Set(scenarios.compactMap { $0["name"] as? String })
    #expect(
      names == [
        "spawn-rtt", "spawn-rtt-async-vs-poll", "spawn-throughput", "pool-rtt", "pool-throughput", "payload",
        "codable", "server-rtt",
        "server-throughput", "c-pool-rtt", "memory", "server-under-attack",
      ])
    for entry in scenarios {
      let label = "\(entry["name"] ?? "?") \(entry["metric"] ?? "?")"
      let value = try #require(entry["value"] as? Double, "\(label): no value")
      #expect(value > 0, "\(label)")
      guard let floor = entry["floor"] as? Double else { continue }
      // 1.0 is the floor and larger is worse, for times and rates alike.
      let isRate = (entry["unit"] as? String)?.hasSuffix("/s") == true
      let ratio = try #require(entry["ratio_to_floor"] as? Double, "\(label): no ratio")
      #expect(abs(ratio - (isRate ? floor / value : value / floor)) < 1e-6 * ratio, "\(label)")
    }
    // The peers' figures sit next to ours where they measure the same thing.
    let throughput = try #require(scenarios.first { $0["name"] as? String == "pool-throughput" })
    let peers = try #require(throughput["peers"] as? [String: Double])
    #expect(Set(peers.keys) == ["ProcessPoolExecutor", "multiprocessing.Pool"])
    #expect(peers.values.allSatisfy { $0 > 0 })
    let machine = try #require(document["machine"] as? [String: Any])
    #expect((machine["cores"] as? Int ?? 0) > 0)

    let chart = try String(contentsOfFile: svg, encoding: .utf8)
    #expect(chart.hasPrefix("<svg"))
    #expect(chart.contains("pool-rtt p50"))
    #expect(chart.contains("multiprocessing.Pool"))
  }

  @Test func anUnknownScenarioIsRefusedWithTheListOfScenarios() throws {
    let child = try ChildProcess(benchPath, ["no-such-scenario"])
    defer { child.ensureStopped() }
    let end = try #require(child.waitForExit(timeout: .seconds(30)))
    #expect(end.exited && end.status == 64, "exit status \(end.status)")
    let refusal = "no scenario 'no-such-scenario'; there are: spawn-rtt, spawn-throughput"
    #expect(child.output.wait(timeout: .seconds(10)) { $0.contains(refusal) })
  }
}
