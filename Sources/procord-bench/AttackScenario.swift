import CProcordBench

#if canImport(Glibc)
import Glibc
#endif

/// A worker server with 8 task slots (`--procord-max-simultaneous-tasks 8`)
/// under each attack of issue 16, run by the C harness
/// (procord_bench_attack) while a probe asks `fact 5` every 100 ms on a new
/// connection. Each attack gets a fresh server, so that none inherits what
/// the one before left, and the probe first runs alone against one (the
/// floor of its latencies). What a server must hold: every probe answered,
/// p99 under 100 ms, greedy clients all served at about the throughput of
/// 8 clients alone, no connection kept and no descriptor but its workers'
/// once the attack ends.
enum AttackScenario {
  static let name = "server-under-attack"
  static let taskSlots = 8

  @Sendable static func run(_ context: BenchContext) async throws -> [Measurement] {
    let workload = context.workload
    let settle = workload.attackSettleMilliseconds
    let atRest = try attack(PROCORD_BENCH_ATTACK_NONE, milliseconds: workload.attackMilliseconds, settle: settle)
    progress(summary(PROCORD_BENCH_ATTACK_NONE, atRest, what: "probe alone"))
    var rows = probeRows(PROCORD_BENCH_ATTACK_NONE, atRest, atRest: nil)
    for kind in attacks {
      let isGreedy = kind == PROCORD_BENCH_ATTACK_GREEDY
      let milliseconds = isGreedy ? workload.greedyAttackMilliseconds : workload.attackMilliseconds
      let result = try attack(kind, milliseconds: milliseconds, settle: settle)
      progress(summary(kind, result))
      // The probe at rest is a bare connection; handshake-stall's authenticates.
      let floor = kind == PROCORD_BENCH_ATTACK_HANDSHAKE_STALL ? nil : atRest
      rows += probeRows(kind, result, atRest: floor) + serverRows(kind, result)
      if isGreedy {
        // Without contention: as many greedy clients as task slots, no probe.
        let baseline = try attack(
          kind, attackers: taskSlots, milliseconds: workload.attackMilliseconds, settle: settle, probe: false)
        progress(summary(kind, baseline, what: "baseline"))
        rows += greedyRows(result, baseline: baseline)
      }
    }
    return rows
  }

  /// Every attack, in the order of procord_bench_attack_kind_t (NONE, 0, is none).
  static let attacks = (1..<PROCORD_BENCH_ATTACK_KIND_COUNT).map { procord_bench_attack_kind_t(UInt32($0)) }

  static func label(_ kind: procord_bench_attack_kind_t, _ result: procord_bench_attack_result_t) -> String {
    kind == PROCORD_BENCH_ATTACK_NONE
      ? "at rest" : "\(String(cString: procord_bench_attack_name(kind))) ×\(result.attackers)"
  }

  /// Runs one attack against a server of its own, stopped after.
  static func attack(
    _ kind: procord_bench_attack_kind_t, attackers: Int = 0, milliseconds: Int, settle: Int, probe: Bool = true
  ) throws -> procord_bench_attack_result_t {
    let secret = kind == PROCORD_BENCH_ATTACK_HANDSHAKE_STALL ? try SecretFile() : nil
    defer { secret?.remove() }
    // Idle connections end after 2 s (60 s by default): those a connect
    // flood leaves open on the server's side only are gone when it is checked.
    let server = try BenchServer(
      maximumTasks: taskSlots, secretFile: secret?.path, drainTimeoutMilliseconds: 5000,
      extraOptions: ["--procord-idle-timeout", "2000"])
    defer {
      if server.stop(timeout: .seconds(10)) == nil {
        progress("\(name): the server did not stop within 10 s of SIGTERM: killed")
      }
    }
    var options = procord_bench_attack_options_t()
    options.kind = kind
    options.port = Int32(server.port)
    options.attackers = Int32(attackers)
    options.duration_ms = Int32(milliseconds)
    options.probe_interval_ms = probe ? 100 : -1
    options.probe_limit_ms = 2000
    options.server_pid = server.pid
    options.settle_limit_ms = Int32(settle)
    var result = procord_bench_attack_result_t()
    let bytes = Array((secret?.text ?? "").utf8)
    let code = bytes.withUnsafeBytes { secretBytes in
      if secret != nil {
        options.secret = secretBytes.baseAddress
        options.secret_length = secretBytes.count
      }
      return procord_bench_attack(&options, &result)
    }
    try check(code, "\(name): \(String(cString: procord_bench_attack_name(kind)))")
    return result
  }

  private static func milliseconds(_ nanoseconds: UInt64) -> Double { Double(nanoseconds) / 1e6 }

  /// A line for the progress output: what the table leaves out.
  static func summary(
    _ kind: procord_bench_attack_kind_t, _ r: procord_bench_attack_result_t, what: String = "attack"
  ) -> String {
    var parts: [String] = []
    if r.probes_sent > 0 {
      parts.append(
        "probes \(r.probes_answered)/\(r.probes_sent) answered (\(r.probes_timed_out) timed out,"
          + " \(r.probes_failed) failed), p50 \(formatted(milliseconds(r.probe_p50_ns))) ms,"
          + " p99 \(formatted(milliseconds(r.probe_p99_ns))) ms, max \(formatted(milliseconds(r.probe_max_ns))) ms")
    }
    if kind != PROCORD_BENCH_ATTACK_NONE {
      parts.append(
        "attackers: \(r.connections) connections (\(r.connect_failures) failed),"
          + " \(r.server_closes) closed by the server, at most \(r.max_connected) at once")
    }
    if kind == PROCORD_BENCH_ATTACK_GREEDY {
      parts.append(
        "\(r.answers) answers (\(formatted(r.answers_per_second))/s, \(r.wrong_answers) wrong),"
          + " \(r.clients_served)/\(r.attackers) clients served, the fewest \(r.min_client_answers)")
    }
    if r.server_sampled != 0 {
      parts.append(
        "server: RSS \(formatted(mebibytes(r.server_rss_before_bytes))) →"
          + " max \(formatted(mebibytes(r.server_rss_max_bytes))) MiB, descriptors"
          + " \(r.server_descriptors_before) → max \(r.server_descriptors_max) → \(r.server_descriptors_after)"
          + " (back: \(r.server_descriptors_back != 0 ? "yes" : "no") after"
          + " \(fixed(Double(r.server_settle_ns) / 1e9, digits: 1)) s), children \(r.server_children_before) →"
          + " max \(r.server_children_max) → \(r.server_children_after), TCP connections held after:"
          + " \(r.server_connections_after)")
    }
    if r.server_exited != 0 { parts.append("THE SERVER EXITED") }
    return "\(name): \(label(kind, r)) \(what), \(fixed(Double(r.elapsed_ns) / 1e9, digits: 1)) s: "
      + parts.joined(separator: "; ")
  }

  private static func mebibytes(_ bytes: UInt64) -> Double { Double(bytes) / 1_048_576 }

  /// The probe's figures; its latencies against those of the probe alone
  /// (`atRest`, the floor).
  static func probeRows(
    _ kind: procord_bench_attack_kind_t, _ r: procord_bench_attack_result_t, atRest: procord_bench_attack_result_t?
  ) -> [Measurement] {
    let label = label(kind, r)
    func latency(_ name: String, _ nanoseconds: UInt64, floor: UInt64?, _ targets: [Target] = []) -> Measurement {
      Measurement(
        scenario: Self.name, metric: "\(label): probe \(name)", unit: "ms", kind: .cost,
        value: milliseconds(nanoseconds), floor: floor.map(milliseconds), targets: targets)
    }
    return [
      Measurement(
        scenario: name, metric: "\(label): probes answered", unit: "of \(r.probes_sent)", kind: .rate,
        value: Double(r.probes_answered), targets: [.atLeast(Double(r.probes_sent))]),
      latency("p50", r.probe_p50_ns, floor: atRest?.probe_p50_ns),
      latency("p99", r.probe_p99_ns, floor: atRest?.probe_p99_ns, [.atMost(100)]),
      latency("max", r.probe_max_ns, floor: atRest?.probe_max_ns),
    ]
  }

  /// The server's memory, and its descriptors after the attack against
  /// before it plus those of the workers it started meanwhile and keeps
  /// (three each): the floor, which a server that kept no connection and
  /// leaked nothing meets (a ratio of at most 1).
  static func serverRows(_ kind: procord_bench_attack_kind_t, _ r: procord_bench_attack_result_t) -> [Measurement] {
    guard r.server_sampled != 0 else { return [] }
    let label = label(kind, r)
    return [
      Measurement(
        scenario: name, metric: "\(label): server max RSS", unit: "MiB", kind: .cost,
        value: mebibytes(r.server_rss_max_bytes)),
      Measurement(
        scenario: name,
        metric: "\(label): server descriptors \(fixed(Double(r.server_settle_ns) / 1e9, digits: 1)) s after",
        unit: "fds", kind: .cost, value: Double(r.server_descriptors_after),
        floor: Double(r.server_descriptors_before + 3 * max(0, r.server_children_after - r.server_children_before)),
        targets: [.ratioToFloor(atMost: 1)]),
    ]
  }

  /// Greedy's throughput against 8 clients alone (the floor: within 20%
  /// is a ratio of at most 1.25), and how evenly it was shared.
  static func greedyRows(_ r: procord_bench_attack_result_t, baseline: procord_bench_attack_result_t)
    -> [Measurement]
  {
    let label = label(PROCORD_BENCH_ATTACK_GREEDY, r)
    return [
      Measurement(
        scenario: name, metric: "\(label): throughput (floor: \(baseline.attackers) clients alone)",
        unit: "tasks/s", kind: .rate, value: r.answers_per_second, floor: baseline.answers_per_second,
        targets: [.ratioToFloor(atMost: 1.25)]),
      Measurement(
        scenario: name, metric: "\(label): clients served", unit: "of \(r.attackers)", kind: .rate,
        value: Double(r.clients_served), targets: [.atLeast(Double(r.attackers))]),
      Measurement(
        scenario: name, metric: "\(label): fewest answers of a client", unit: "answers", kind: .rate,
        value: Double(r.min_client_answers)),
    ]
  }
}

/// A shared secret for the server of handshake-stall: 64 random hex
/// digits in a file of its own (mode 600) in a fresh directory under /tmp.
struct SecretFile {
  let path: String
  let text: String

  init() throws {
    var template = Array("/tmp/procord-bench-secret-XXXXXX".utf8CString)
    guard let directory = mkdtemp(&template) else { throw BenchError("cannot make a directory", code: -errno) }
    path = String(cString: directory) + "/secret"
    var generator = SystemRandomNumberGenerator()
    text = (0..<64).map { _ in String(Int.random(in: 0..<16, using: &generator), radix: 16) }.joined()
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw BenchError("cannot write \(path)", code: -errno) }
    defer { close(fd) }
    let line = Array((text + "\n").utf8)
    guard write(fd, line, line.count) == line.count else { throw BenchError("cannot write \(path)", code: -errno) }
  }

  func remove() {
    unlink(path)
    rmdir(String(path.dropLast("/secret".count)))
  }
}
