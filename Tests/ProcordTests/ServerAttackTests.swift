// A worker server under attack (issue 16): each hostile client of the C
// harness (procord_bench_attack, Sources/CProcordBench/attack.c, also run
// by `procord-bench server-under-attack`) against a demo server with 8 task
// slots, for a few seconds, while a probe asks `fact 5` on a new connection
// every 100 ms. The server must hold: every probe answered within 1 s,
// every greedy client served, once the attackers are gone no connection
// kept and no descriptor but those of the workers it keeps, a clean stop,
// no process left.
import CProcordBench
import Foundation
import Testing

@Suite(.serialized) struct ServerAttackTests {
  /// The harness's own check: a server at rest answers every probe, bare
  /// and authenticated, so that probes unanswered under attack are the
  /// attack's doing.
  @Test(arguments: [false, true]) func aServerAtRestAnswersEveryProbe(withASecret: Bool) throws {
    let result = try runAttack(PROCORD_BENCH_ATTACK_NONE, seconds: 1, secret: withASecret)
    #expect(result.probes_sent >= 5)
  }

  /// 8 connections that each send a task one byte per second.
  @Test func slowloris() throws {
    try runAttack(PROCORD_BENCH_ATTACK_SLOWLORIS, seconds: 3)
  }

  /// 5000 connections (or as many as the descriptor limit allows) that
  /// send nothing.
  @Test func idleFlood() throws {
    try runAttack(PROCORD_BENCH_ATTACK_IDLE_FLOOD, seconds: 3)
  }

  /// 200 clients that each keep a connection and send `fact 5` back to
  /// back: every one of them must get answers, not only the first 8.
  @Test func greedyClients() throws {
    let result = try runAttack(PROCORD_BENCH_ATTACK_GREEDY, attackers: 200, seconds: 5)
    #expect(
      result.clients_served == 200,
      "greedy: \(result.clients_served) of 200 clients got an answer (the fewest: \(result.min_client_answers)); \(describe(PROCORD_BENCH_ATTACK_GREEDY, result))"
    )
  }

  /// 8 connections to a server with a shared secret that never finish the
  /// secret exchange; the probe authenticates.
  @Test func handshakeStall() throws {
    try runAttack(PROCORD_BENCH_ATTACK_HANDSHAKE_STALL, seconds: 3, secret: true)
  }

  /// 8 connections that send a 1 MiB echo task and read its answer one
  /// byte per second.
  @Test func slowReaders() throws {
    try runAttack(PROCORD_BENCH_ATTACK_SLOW_READER, seconds: 3)
  }
}

/// Starts a demo server with 8 task slots (and the test secret if asked),
/// runs `kind` against it for `seconds` with a probe limit of 1 s, checks
/// what every attack must leave true, stops the server and checks that
/// nothing is left. Returns the harness's figures for more checks.
@discardableResult
private func runAttack(
  _ kind: procord_bench_attack_kind_t, attackers: Int = 0, seconds: Int, secret: Bool = false,
  sourceLocation: SourceLocation = #_sourceLocation
) throws -> procord_bench_attack_result_t {
  warmUp()
  // Idle connections closed after 1 s: a flood of connects leaves some the
  // kernel completed on the server's side only (their client's close never
  // came), which the idle limit (60 s by default) ends; the check after the
  // attack wants them gone within its settle limit.
  var serverOptions = ["--procord-max-simultaneous-tasks", "8", "--procord-idle-timeout", "1000"]
  if secret { serverOptions += ["--procord-secret-file", TestPKI.shared.secretFile] }
  let server = try ServerUnderTest(options: serverOptions)
  defer { server.ensureStopped() }

  var options = procord_bench_attack_options_t()
  options.kind = kind
  options.port = Int32(server.port)
  options.attackers = Int32(attackers)
  options.duration_ms = Int32(seconds * 1000)
  options.probe_interval_ms = 100
  options.probe_limit_ms = 1000
  options.server_pid = server.pid
  // Under a connect flood the kernel completes some connections late, on
  // the server's side only (SYN-ACKs retransmitted at 1, 3, 7 s; silent
  // ones are handed over ~2 s late, TCP_DEFER_ACCEPT), and the idle limit
  // then ends each within 1 s: up to ~10 s after the attack.
  options.settle_limit_ms = 12_000
  let secretBytes = secret ? try secretOf(TestPKI.shared.secretFile) : []
  var result = procord_bench_attack_result_t()
  let code = secretBytes.withUnsafeBytes { bytes in
    if secret {
      options.secret = bytes.baseAddress
      options.secret_length = bytes.count
    }
    return procord_bench_attack(&options, &result)
  }
  try #require(code == 0, "procord_bench_attack failed: \(code)", sourceLocation: sourceLocation)

  let figures = describe(kind, result)
  #expect(
    result.probes_sent > 0 && result.probes_answered == result.probes_sent,
    "probes: \(result.probes_answered) of \(result.probes_sent) answered within 1 s; \(figures)",
    sourceLocation: sourceLocation)
  #expect(result.server_exited == 0, "the server exited during the attack; \(figures)", sourceLocation: sourceLocation)
  #expect(
    result.server_descriptors_back == 1,
    "the server kept a connection, or descriptors beyond its workers', 12 s after the attack; \(figures)",
    sourceLocation: sourceLocation)
  server.stop(sourceLocation: sourceLocation)
  #expect(childProcesses().isEmpty, "children left: \(childProcesses())", sourceLocation: sourceLocation)
  return result
}

/// Everything the harness measured, for a failure's message.
private func describe(_ kind: procord_bench_attack_kind_t, _ r: procord_bench_attack_result_t) -> String {
  func ms(_ nanoseconds: UInt64) -> String { String(format: "%.1f ms", Double(nanoseconds) / 1e6) }
  var text =
    "\(String(cString: procord_bench_attack_name(kind))) ×\(r.attackers):"
    + " probes \(r.probes_answered)/\(r.probes_sent) answered (\(r.probes_timed_out) timed out,"
    + " \(r.probes_failed) failed), p50 \(ms(r.probe_p50_ns)), p99 \(ms(r.probe_p99_ns)), max \(ms(r.probe_max_ns));"
    + " attackers: \(r.connections) connections (\(r.connect_failures) failed), \(r.server_closes) closed by"
    + " the server, at most \(r.max_connected) at once"
  if kind == PROCORD_BENCH_ATTACK_GREEDY {
    text +=
      "; \(r.answers) answers (\(Int(r.answers_per_second))/s, \(r.wrong_answers) wrong),"
      + " \(r.clients_served) clients served"
  }
  text +=
    "; server: max RSS \(r.server_rss_max_bytes >> 20) MiB, descriptors \(r.server_descriptors_before)"
    + " → max \(r.server_descriptors_max) → \(r.server_descriptors_after), children \(r.server_children_before)"
    + " → max \(r.server_children_max) → \(r.server_children_after), TCP connections held after:"
    + " \(r.server_connections_after)"
  return text
}

/// The secret in `path` as the server reads it: one trailing newline dropped.
private func secretOf(_ path: String) throws -> [UInt8] {
  var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
  if bytes.last == UInt8(ascii: "\n") {
    bytes.removeLast()
    if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
  }
  return bytes
}
