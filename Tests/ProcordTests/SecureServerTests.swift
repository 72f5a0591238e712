// Secured worker servers, end to end (issue 8): real servers
// (`procord-demo --procord-server` with TLS or a shared secret) and real
// clients. The certificates are made at test time with the `openssl`
// command: a CA, a server certificate for 127.0.0.1 and localhost, a client
// certificate, and an unrelated CA with a client certificate of its own.
// Each refusal is checked three ways: what the client reports, the server's
// log line, and that the server started no process for it.
import CTestSupport
import Foundation
import Testing

@testable import Procord

@Suite(.serialized) struct SecureServerTests {
  // MARK: - Round trips

  @Test func aTaskRoundTripsOverTLS() throws {
    let server = try ServerUnderTest(options: TestPKI.shared.serverTLS)
    defer { server.ensureStopped() }
    let value = try fibo(20, on: server, security: TestPKI.shared.client())
    #expect(value == 10946)
    server.stop()
  }

  @Test func aTaskRoundTripsOverMutualTLS() throws {
    let server = try ServerUnderTest(options: TestPKI.shared.serverTLS + ["--procord-tls-require-client-cert"])
    defer { server.ensureStopped() }
    let value = try fibo(20, on: server, security: TestPKI.shared.client(withCertificate: true))
    #expect(value == 10946)
    server.stop()
  }

  @Test func aTaskRoundTripsWithASharedSecret() throws {
    let server = try ServerUnderTest(options: ["--procord-secret-file", TestPKI.shared.secretFile])
    defer { server.ensureStopped() }
    let security = try ConnectionSecurity(
      for: .client, secret: SharedSecret(contentsOfFile: TestPKI.shared.secretFile))
    #expect(try fibo(20, on: server, security: security) == 10946)
    server.stop()
  }

  @Test func aTaskRoundTripsOverTLSWithASharedSecret() throws {
    let server = try ServerUnderTest(
      options: TestPKI.shared.serverTLS + ["--procord-secret-file", TestPKI.shared.secretFile])
    defer { server.ensureStopped() }
    let security = try ConnectionSecurity(
      for: .client, tls: .client(trusting: TestPKI.shared.caFile),
      secret: SharedSecret(contentsOfFile: TestPKI.shared.secretFile))
    #expect(try fibo(20, on: server, security: security) == 10946)
    server.stop()
  }

  /// TLS with `--procord-dont-fork`: the server ends TLS and reads the
  /// task itself, so the task runs on its own thread, no worker process
  /// needed (the server has no child).
  @Test func aTaskRoundTripsOverTLSOnADontForkServer() throws {
    let server = try ServerUnderTest(options: TestPKI.shared.serverTLS + ["--procord-dont-fork"])
    defer { server.ensureStopped() }
    let security = try ConnectionSecurity(for: .client, tls: .client(trusting: TestPKI.shared.caFile))
    #expect(try fibo(20, on: server, security: security) == 10946)
    #expect(childrenOf(server.pid).isEmpty, "a dont-fork server started \(childrenOf(server.pid))")
    server.stop()
  }

  /// A pool over two mutual-TLS servers: every task succeeds, and both
  /// servers served some.
  @Test func aPoolOverTwoTLSServersServesEveryTask() async throws {
    let options = TestPKI.shared.serverTLS + ["--procord-tls-require-client-cert", "--procord-log-level", "debug"]
    let first = try ServerUnderTest(options: options)
    defer { first.ensureStopped() }
    let second = try ServerUnderTest(options: options)
    defer { second.ensureStopped() }
    let security = try TestPKI.shared.client(withCertificate: true)
    let servers = [first, second].map { RemoteServer(host: "127.0.0.1", port: $0.port, security: security) }
    let pool = try WorkerPool(servers: servers, connectionsPerServer: 2)
    let outputs = try await pool.map(DemoTasks.fibo, 1...40)
    await pool.shutdown()
    #expect(outputs == (1...40).map(fibonacci))
    for server in [first, second] {
      #expect(
        server.child.output.wait(timeout: .seconds(10)) { $0.contains("task fibo, value") },
        "a server served nothing: \(server.output)")
      server.stop()
    }
  }

  /// The README's client command line: `procord-demo run` with the
  /// `--procord-tls*` options of a mutual-TLS server.
  @Test func theDemosRunCommandDelegatesOverMutualTLS() throws {
    let pki = TestPKI.shared
    let server = try ServerUnderTest(options: pki.serverTLS + ["--procord-tls-require-client-cert"])
    defer { server.ensureStopped() }
    let run = try runProgram(
      [
        "run", "--procord-hostname", "127.0.0.1", "--procord-port", String(server.port), "--procord-tls-ca", pki.caFile,
        "--procord-tls-cert", pki.clientCertificate, "--procord-tls-key", pki.clientKey, "fibo", "10", "20",
      ])
    #expect(run.outputText == "fibo(10) = 89\nfibo(20) = 10946\n", "stderr: \(run.errorText)")
    #expect(run.exitedNormally && run.status == 0)
    server.stop()
  }

  // MARK: - Refusals

  /// Each peer that fails the server's security: the client's status says
  /// why, the server logs "PEER: refused: REASON", and the server's
  /// processes are the same before and after (none started, none handed the
  /// connection: a handed connection would also log a line for its task).
  @Test(arguments: SecurityRefusal.allCases)
  func aPeerThatFailsSecurityIsRefusedAndNoWorkerServesIt(refusal: SecurityRefusal) throws {
    let server = try ServerUnderTest(options: refusal.serverOptions + ["--procord-log-level", "debug"])
    defer { server.ensureStopped() }
    let workersBefore = try prestartedWorkers(of: server)
    let refused = server.child.output.text.components(separatedBy: "refused:").count
    let description = try refusal.attempt(port: server.port)
    #expect(description.contains(refusal.clientSees), "the client saw: \(description)")
    let logged = server.child.output.wait(timeout: .seconds(10)) {
      $0.components(separatedBy: "refused:").count > refused && $0.contains(refusal.serverLogs)
    }
    #expect(logged, "no refusal in the server's log: \(server.output)")
    // For a while: a worker the server started for the peer would show up late.
    let changed = repeatUntil(deadline: .milliseconds(300)) {
      if Set(childrenOf(server.pid)) != workersBefore { return true }
      usleep(2000)
      return false
    }
    #expect(!changed, "the server started or replaced a process")
    #expect(!server.output.contains(": task "), "a worker served the refused peer: \(server.output)")
    server.stop()
  }

  // MARK: - Nothing in clear text

  /// A recording proxy between a client and a TLS server sees neither the
  /// task's name nor its input; the same proxy in front of a plain server
  /// sees both (so the recording works).
  @Test(arguments: [true, false])
  func aRecordingOfATLSConnectionHoldsNoTaskNameOrInput(tls: Bool) throws {
    let server = try ServerUnderTest(options: tls ? TestPKI.shared.serverTLS : [])
    defer { server.ensureStopped() }
    let proxy = try RecordingProxy(to: server.port)
    let marker = "an-input-nobody-should-read-7f3a9c"
    let security = tls ? try TestPKI.shared.client() : nil
    let task = DelegatedTask<String, String>(name: "echo", input: .utf8, output: .utf8)
    let process = try delegate(task, marker, to: RemoteServer(host: "127.0.0.1", port: proxy.port, security: security))
    #expect(process.wait(timeout: .seconds(20)))
    guard case .success(let output) = process.status else {
      Issue.record("status: \(process.status)")
      return
    }
    #expect(output == marker)
    let recorded = proxy.stop()
    #expect(recorded.count > 0)
    let text = String(decoding: recorded, as: UTF8.self)
    let visible = text.contains(marker) || text.contains("4Techo")
    #expect(visible == !tls, tls ? "the recording shows the task in clear text" : "the recording saw nothing")
    server.stop()
  }

  // MARK: - The server issue's heavy tests, over TLS

  @Test func aSixtyFourMebibyteEchoRoundTripsOverMutualTLS() throws {
    let server = try ServerUnderTest(options: TestPKI.shared.serverTLS + ["--procord-tls-require-client-cert"])
    defer { server.ensureStopped() }
    let input = randomBytes(64 << 20)
    let remote = RemoteServer(
      host: "127.0.0.1", port: server.port, security: try TestPKI.shared.client(withCertificate: true))
    let process = try delegate(DemoTasks.echo, input, to: remote)
    #expect(process.wait(timeout: .seconds(60)))
    guard case .success(let output) = process.status else {
      Issue.record("status: \(process.status)")
      return
    }
    let same = output == input  // not inside #expect: it would print 64 MiB
    #expect(same, "the echo differs (\(output.count) bytes back)")
    server.stop()
    #expect(childProcesses().isEmpty)
  }

  /// 500 TLS clients at once to a server that runs at most 8 tasks: all
  /// succeed, and at most 8 tasks ran at once (counted by the tasks).
  @Test func fiveHundredTLSClientsAtOnceAllSucceed() throws {
    warmUp()
    let counter = temporaryPath("tls-concurrency")
    defer { unlink(counter) }
    let server = try ServerUnderTest(
      program: testWorkerPath, options: TestPKI.shared.serverTLS + ["--procord-max-simultaneous-tasks", "8"])
    defer { server.ensureStopped() }
    let remote = RemoteServer(host: "127.0.0.1", port: server.port, security: try TestPKI.shared.client())
    let task = DelegatedTask<String, Int>(name: "concurrency", input: .utf8, output: .decimal)
    let processes = try (0..<500).map { _ in try delegate(task, counter, to: remote) }
    #expect(Waiter.waitForAll(processes, timeout: .seconds(120)))
    let failed = processes.filter {
      if case .success(let running) = $0.status { return !(1...8).contains(running) }
      return true
    }
    #expect(failed.count == 0, "first: \(failed.first.map { "\($0.status)" } ?? "")")
    let recorded = try String(contentsOfFile: counter, encoding: .utf8).split(separator: " ").compactMap { Int($0) }
    #expect(recorded.count == 2 && recorded[0] == 0, "counter file: \(recorded)")
    #expect((recorded.last ?? 0) <= 8, "\(recorded.last ?? 0) tasks ran at once")
    #expect((recorded.last ?? 0) > 1, "the tasks never ran in parallel")
    server.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  // MARK: - Relayed clients end like plain ones

  /// A TLS client killed mid-task: the relay ends the worker's socket, and
  /// the worker's watchdog ends it within a second, as for a plain client.
  @Test func aTLSClientKilledMidTaskHasItsWorkerGoneWithinASecond() throws {
    warmUp()
    let pki = TestPKI.shared
    let server = try ServerUnderTest(options: pki.serverTLS)
    defer { server.ensureStopped() }
    let client = try ChildProcess(
      demoPath,
      [
        "run", "--procord-hostname", "127.0.0.1", "--procord-port", "\(server.port)",
        "--procord-tls-ca", pki.caFile, "sleep", "600000",
      ])
    defer { client.ensureStopped() }
    let busy = try #require(server.waitForBusyWorkers(1), "no worker started the task; server: \(server.output)")
    kill(client.pid, SIGKILL)
    let gone = procord_test_wait_for_exit(busy[0], 1000)
    #expect(gone == 1 || gone == -ESRCH, "the worker \(busy[0]) is still there after 1 s (\(gone))")
    #expect(try fibo(10, on: server, security: pki.client()) == 89)
    server.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  /// SIGTERM while a TLS task runs: its answer still reaches the client
  /// through the relay, then the server exits 0.
  @Test func sigtermLetsARunningTLSTaskFinishAndAnswer() throws {
    warmUp()
    let server = try ServerUnderTest(options: TestPKI.shared.serverTLS)
    defer { server.ensureStopped() }
    let remote = RemoteServer(host: "127.0.0.1", port: server.port, security: try TestPKI.shared.client())
    let running = try delegate(DemoTasks.sleep, 800, to: remote)
    defer { running.kill() }  // only matters if the test failed
    try #require(server.waitForBusyWorkers(1) != nil, "the task did not start; server: \(server.output)")
    kill(server.pid, SIGTERM)
    #expect(running.wait(timeout: .seconds(10)))
    guard case .success(let value) = running.status else {
      Issue.record("the draining task ended with \(running.status)")
      return
    }
    #expect(value == 800)
    let end = server.child.waitForExit(timeout: .seconds(10))
    #expect(end?.exited == true && end?.status == 0, "server ended \(String(describing: end)): \(server.output)")
  }

  /// A peer that connects and says nothing holds its slot only for the
  /// handshake timeout: then it is refused (logged) and closed.
  @Test(arguments: ["tls", "secret"])
  func aSilentPeerIsRefusedAtTheHandshakeTimeout(security: String) throws {
    let pki = TestPKI.shared
    let options =
      (security == "tls" ? pki.serverTLS : ["--procord-secret-file", pki.secretFile])
      + ["--procord-handshake-timeout", "300"]
    let server = try ServerUnderTest(options: options)
    defer { server.ensureStopped() }
    let connection = try RawConnection(port: server.port)
    let answer = try connection.readToEnd(timeout: .seconds(5))  // the server closes it
    #expect(answer.isEmpty)
    let expected = security == "tls" ? "refused: the TLS handshake timed out" : "refused: authentication timed out"
    let logged = server.child.output.wait(timeout: .seconds(5)) { $0.contains(expected) }
    #expect(logged, "log: \(server.output)")
    server.stop()
  }

  /// A pool whose client does not trust the server's certificate: its tasks
  /// end with the TLS failure, they do not wait forever.
  @Test func aPoolThatCannotPassTLSFailsItsTasksWithTheReason() throws {
    let server = try ServerUnderTest(options: TestPKI.shared.serverTLS)
    defer { server.ensureStopped() }
    let security = try ConnectionSecurity(for: .client, tls: .client(trusting: TestPKI.shared.otherCAFile))
    var configuration = WorkerPool.Configuration()
    configuration.maximumRetries = 1
    let pool = try WorkerPool(
      servers: [RemoteServer(host: "127.0.0.1", port: server.port, security: security)], configuration: configuration)
    let process = try pool.delegate(DemoTasks.fibo, 10)
    #expect(process.wait(timeout: .seconds(20)))
    guard case .workerDisconnected(.tlsFailed(let reason)) = failure(process.status) else {
      Issue.record("status: \(process.status)")
      return
    }
    #expect(reason.contains("certificate"), "reason: \(reason)")
    server.stop()
  }

  /// A secret given in the environment is gone from it before workers
  /// start: no worker inherits it, and the server's own /proc environ no
  /// longer shows it.
  @Test func aSecretFromTheEnvironmentReachesNoWorker() throws {
    let secret = "environment-secret-\(UInt64.random(in: 0...UInt64.max))"
    let notify = try NotifySocket()
    let child = try ChildProcess(
      demoPath, ["--procord-server", "--procord-port", "0", "--procord-secret-env", "PROCORD_TEST_SECRET"],
      environment: ["NOTIFY_SOCKET": notify.path, "PROCORD_TEST_SECRET": secret])
    defer { child.ensureStopped() }
    #expect(notify.receive(timeout: .seconds(10))?.contains("READY=1") == true, "log: \(child.output.text)")
    var workers: [Int32] = []
    #expect(
      repeatUntil(deadline: .seconds(10)) {
        workers = childrenOf(child.pid)
        if workers.count >= 2 { return true }
        usleep(2000)
        return false
      })
    for pid in [child.pid] + workers {
      // A worker still in its exec shows an empty environ for a moment.
      var environ = Data()
      #expect(
        repeatUntil(deadline: .seconds(2)) {
          environ = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data()
          if !environ.isEmpty { return true }
          usleep(2000)
          return false
        }, "no environ for \(pid)")
      let text = String(decoding: environ, as: UTF8.self)
      // Not inside #expect, which would print the whole environment.
      let showsSecret = text.contains(secret)
      let inherited = pid != child.pid && text.contains("PROCORD_TEST_SECRET=")
      #expect(!showsSecret, "process \(pid) shows the secret")
      #expect(!inherited, "worker \(pid) inherited the variable")
    }
    kill(child.pid, SIGTERM)
    #expect(child.waitForExit(timeout: .seconds(10))?.status == 0)
  }

  // MARK: - Safe defaults

  /// Beyond loopback, a server that lets any client in warns at start:
  /// without security, or with TLS alone. With a secret (or required client
  /// certificates): no warning.
  @Test(arguments: ["none", "tls", "secret"])
  func aServerExposedWithoutClientAuthenticationWarnsAtStart(security: String) throws {
    let notify = try NotifySocket()
    let secured = security == "secret"
    let options =
      secured
      ? ["--procord-secret-file", TestPKI.shared.secretFile]
      : security == "tls" ? TestPKI.shared.serverTLS : []
    let child = try ChildProcess(
      demoPath, ["--procord-server", "--procord-hostname", "0.0.0.0", "--procord-port", "0"] + options,
      environment: ["NOTIFY_SOCKET": notify.path])
    defer { child.ensureStopped() }
    #expect(notify.receive(timeout: .seconds(10))?.contains("READY=1") == true)
    kill(child.pid, SIGTERM)
    #expect(child.waitForExit(timeout: .seconds(10))?.status == 0)
    let warned = child.output.wait(timeout: .seconds(secured ? 1 : 10)) {
      $0.contains("anyone who can reach this port can run tasks")
        && (security != "tls" || $0.contains("with TLS but without client certificates or a shared secret"))
    }
    #expect(warned == !secured, "log: \(child.output.text)")
  }

  // MARK: - Helpers

  private func fibo(_ n: Int, on server: ServerUnderTest, security: ConnectionSecurity) throws -> Int? {
    outputOf(
      try delegate(DemoTasks.fibo, n, to: RemoteServer(host: "127.0.0.1", port: server.port, security: security)),
      timeout: .seconds(20))
  }

  /// The server's idle workers, once it has started them all (2 by default).
  private func prestartedWorkers(of server: ServerUnderTest) throws -> Set<Int32> {
    var workers: [Int32] = []
    let ready = repeatUntil(deadline: .seconds(10)) {
      workers = childrenOf(server.pid)
      if workers.count >= 2 { return true }
      usleep(2000)
      return false
    }
    try #require(ready, "the server did not start its workers")
    return Set(workers)
  }
}

/// The demo's fibo: 1, 1, 2, 3, 5... from n = 0.
private func fibonacci(_ n: Int) -> Int {
  var (a, b) = (1, 1)
  for _ in 0..<n { (a, b) = (b, a + b) }
  return a
}

/// A peer the server's security must refuse, and what each side says.
enum SecurityRefusal: String, CaseIterable, CustomTestStringConvertible, Sendable {
  case clientTrustingAnotherCA
  case clientWithoutCertificateWhenOneIsRequired
  case clientWithCertificateOfAnotherCA
  case plaintextClientAgainstTLS
  case wrongSecret
  case originalClientAgainstASecret

  var testDescription: String { rawValue }

  var serverOptions: [String] {
    let pki = TestPKI.shared
    switch self {
    case .clientTrustingAnotherCA, .plaintextClientAgainstTLS: return pki.serverTLS
    case .clientWithoutCertificateWhenOneIsRequired, .clientWithCertificateOfAnotherCA:
      return pki.serverTLS + ["--procord-tls-require-client-cert"]
    case .wrongSecret, .originalClientAgainstASecret: return ["--procord-secret-file", pki.secretFile]
    }
  }

  /// A fragment of what the client reports.
  var clientSees: String {
    switch self {
    case .clientTrustingAnotherCA: return "TLS with the server failed: self-signed certificate in certificate chain"
    case .clientWithoutCertificateWhenOneIsRequired: return "certificate required"
    case .clientWithCertificateOfAnotherCA: return "unknown ca"
    case .plaintextClientAgainstTLS: return "this server requires TLS"
    case .wrongSecret: return "refused our proof of the shared secret"
    case .originalClientAgainstASecret: return "requires a shared secret"
    }
  }

  /// A fragment of the server's log line.
  var serverLogs: String {
    switch self {
    case .clientTrustingAnotherCA: return "refused: TLS handshake failed: tlsv1 alert unknown ca"
    case .clientWithoutCertificateWhenOneIsRequired:
      return "refused: TLS handshake failed: peer did not return a certificate"
    case .clientWithCertificateOfAnotherCA:
      return "refused: TLS handshake failed: unable to get local issuer certificate"
    case .plaintextClientAgainstTLS: return "refused: this server requires TLS"
    case .wrongSecret: return "refused: wrong shared secret"
    case .originalClientAgainstASecret: return "refused: this server requires a shared secret"
    }
  }

  /// Tries a task as this peer; returns what the client reports.
  func attempt(port: Int) throws -> String {
    let pki = TestPKI.shared
    if self == .originalClientAgainstASecret {
      // An original client: `T` and `V` at once, then it reads its answer.
      let connection = try RawConnection(port: port)
      try connection.send("4Tfibo2V10")
      return String(decoding: try connection.readToEnd(timeout: .seconds(10)), as: UTF8.self)
    }
    let security: ConnectionSecurity?
    switch self {
    case .clientTrustingAnotherCA:
      security = try ConnectionSecurity(
        for: .client, tls: .client(trusting: pki.otherCAFile, certificate: pki.clientCertificate, key: pki.clientKey))
    case .clientWithoutCertificateWhenOneIsRequired: security = try pki.client()
    case .clientWithCertificateOfAnotherCA:
      security = try ConnectionSecurity(
        for: .client,
        tls: .client(trusting: pki.caFile, certificate: pki.otherClientCertificate, key: pki.otherClientKey))
    case .plaintextClientAgainstTLS: security = nil
    case .wrongSecret:
      security = try ConnectionSecurity(for: .client, secret: SharedSecret(contentsOfFile: pki.wrongSecretFile))
    case .originalClientAgainstASecret: security = nil
    }
    let process = try delegate(DemoTasks.fibo, 10, to: RemoteServer(host: "127.0.0.1", port: port, security: security))
    guard process.wait(timeout: .seconds(20)) else { return "no answer within 20 s" }
    if case .success = process.status { return "success" }
    return "\(process.status)"
  }
}

/// Certificates and secrets for the tests, made once per test run with the
/// `openssl` command in a temporary directory.
final class TestPKI: Sendable {
  static let shared = try! TestPKI()

  let directory: String
  var caFile: String { directory + "/ca.pem" }
  var otherCAFile: String { directory + "/other-ca.pem" }
  var clientCertificate: String { directory + "/client.pem" }
  var clientKey: String { directory + "/client.key" }
  var otherClientCertificate: String { directory + "/other-client.pem" }
  var otherClientKey: String { directory + "/other-client.key" }
  var secretFile: String { directory + "/secret" }
  var wrongSecretFile: String { directory + "/wrong-secret" }

  /// The server's TLS options.
  var serverTLS: [String] {
    [
      "--procord-tls-cert", directory + "/server.pem", "--procord-tls-key", directory + "/server.key",
      "--procord-tls-ca", caFile,
    ]
  }

  /// A client that trusts the CA, with its certificate if asked.
  func client(withCertificate: Bool = false) throws -> ConnectionSecurity {
    try ConnectionSecurity(
      for: .client,
      tls: .client(
        trusting: caFile, certificate: withCertificate ? clientCertificate : nil,
        key: withCertificate ? clientKey : nil))
  }

  private init() throws {
    directory = temporaryPath("pki")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    try shell(
      """
      set -e
      cd '\(directory)'
      openssl req -x509 \(ec) -days 2 -subj /CN=ProcordTestCA -keyout ca.key -out ca.pem
      openssl req -x509 \(ec) -days 2 -subj /CN=OtherCA -keyout other-ca.key -out other-ca.pem
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext
      openssl req \(ec) -subj /CN=localhost -keyout server.key -out server.csr
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
      openssl req \(ec) -subj /CN=client -keyout client.key -out client.csr
      openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem
      openssl req \(ec) -subj /CN=intruder -keyout other-client.key -out other-client.csr
      openssl x509 -req -in other-client.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 2 -out other-client.pem
      openssl rand -hex 32 > secret
      openssl rand -hex 32 > wrong-secret
      chmod 600 *.key secret wrong-secret
      """)
  }

  private func shell(_ script: String) throws {
    let run = try runProgram(["-c", script], program: "/bin/sh")
    guard run.exitedNormally && run.status == 0 else {
      throw TestFailure("making the test certificates failed: \(run.errorText)")
    }
  }
}

/// A TCP proxy on 127.0.0.1 that forwards one connection to `port` and
/// records every byte the client sends and the server answers.
final class RecordingProxy: @unchecked Sendable {
  let port: Int
  private let listener: Int32
  private let recorded = LockedBox<[UInt8]>([])
  private let finished = DispatchSemaphore(value: 0)

  init(to upstreamPort: Int) throws {
    var port: Int32 = 0
    listener = procord_test_listen_loopback(&port)
    guard listener >= 0 else { throw TestFailure("listen: errno \(-listener)") }
    self.port = Int(port)
    Thread.detachNewThread { [self] in
      defer { finished.signal() }
      let client = procord_test_accept(listener, 20_000)
      guard client >= 0 else { return }
      defer { close(client) }
      let server = procord_test_connect_loopback(Int32(upstreamPort))
      guard server >= 0 else { return }
      defer { close(server) }
      relay(client, server)
    }
  }

  /// Copies both ways until either side ends.
  private func relay(_ a: Int32, _ b: Int32) {
    var buffer = [UInt8](repeating: 0, count: 65536)
    var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
    while poll(&fds, 2, 20_000) > 0 {
      for i in 0..<2 where fds[i].revents != 0 {
        let n = read(fds[i].fd, &buffer, buffer.count)
        if n <= 0 { return }
        recorded.value += buffer[0..<n]
        if procord_test_write_all(fds[1 - i].fd, buffer, n) != 0 { return }
      }
    }
  }

  /// Waits for the connection to end; returns what went through.
  func stop() -> [UInt8] {
    finished.wait()
    close(listener)
    return recorded.value
  }
}
