// Worker servers, end to end: each test starts a real server
// (`procord-demo --procord-server`, or `procord-test-worker` for the
// `concurrency` task) as a child process, learns its port from its sd_notify
// message, talks to it with plain sockets or with Procord's client, and
// stops it with SIGTERM, checking that it exits 0 and leaves no process
// behind. Every process a test starts is stopped by a `defer`, even when an
// expectation fails.
import CTestSupport
import Foundation
import Testing

@testable import Procord

@Suite(.serialized) struct ServerTests {
  // MARK: - 1. Wire compatibility

  /// An original client: `T` and `V` on a raw socket, then read. The answer
  /// is exactly the original's `3V120`, then this project's `0R`, and the
  /// end of the stream once the client closes its side.
  /// Like the original: a main program started with `--procord-hostname`
  /// and `--procord-port` before its own arguments sends `delegate(task,
  /// input)` to that server (here the README's example, whose `fibo` is the
  /// demo's).
  @Test func aMainProgramStartedWithProcordHostnameDelegatesToThatServer() throws {
    let server = try ServerUnderTest(options: ["--procord-log-level", "debug"])
    defer { server.ensureStopped() }
    let example = try ChildProcess(
      buildDirectory.appendingPathComponent("procord-example").path,
      ["--procord-hostname", "127.0.0.1", "--procord-port", String(server.port)])
    defer { example.ensureStopped() }
    let end = example.waitForExit(timeout: .seconds(30))
    #expect(end?.exited == true && end?.status == 0, "example ended \(String(describing: end))")
    #expect(example.output.wait(timeout: .seconds(10)) { $0.contains("fibo(25) = 121393") })
    #expect(example.output.wait(timeout: .seconds(10)) { $0.contains("fibo(40) = 165580141") })
    server.stop()
    // Its last log lines may still be in the pipe when it has exited.
    let servedAll = server.child.output.wait(timeout: .seconds(10)) {
      $0.components(separatedBy: "task fibo, value").count - 1 == 7
    }
    #expect(servedAll, "the server did not log 7 tasks served: \(server.output)")
    #expect(childProcesses().isEmpty)
  }

  /// A task on a server prints; its stdout and stderr travel as `P` frames
  /// and come out on the client's stdout and stderr, before the result.
  @Test func whatATaskPrintsOnAServerReachesTheClient() throws {
    let server = try ServerUnderTest()
    defer { server.ensureStopped() }
    let client = try runProgram(
      ["run", "--procord-hostname", "127.0.0.1", "--procord-port", String(server.port), "print", "3"])
    #expect(client.outputText == "print: line 1 of 3\nprint: line 2 of 3\nprint: line 3 of 3\nprint(3) = 3\n")
    #expect(client.errorText == "print: error line 1 of 3\nprint: error line 2 of 3\nprint: error line 3 of 3\n")
    #expect(client.exitedNormally && client.status == 0)
    server.stop()
  }

  @Test func aRawClientGetsTheAnswerThenR() throws {
    warmUp()
    let server = try ServerUnderTest()
    defer { server.ensureStopped() }
    let connection = try RawConnection(port: server.port)
    try connection.send("4Tfact1V5")
    #expect(try connection.readText(5) == "3V120")
    #expect(try connection.readText(2) == "0R")
    try connection.shutdownWrite()  // what an original client does next: nothing more
    #expect(try connection.readToEnd() == [])
    server.stop()
    #expect(childProcesses().isEmpty)
  }

  /// An original server: reads `T` and `V`, answers `2V42`, closes, never
  /// sends `0R`. Procord's client takes the answer and is done.
  @Test func theClientWorksWithAServerThatClosesAfterTheTaskWithoutR() throws {
    try expectNoLeaks {
      var port: Int32 = 0
      let listener = procord_test_listen_loopback(&port)
      try #require(listener >= 0, "listen: \(-listener)")
      defer { close(listener) }
      let received = LockedBox<[UInt8]>([])
      let serverDone = DispatchSemaphore(value: 0)
      Thread.detachNewThread {
        defer { serverDone.signal() }
        let fd = procord_test_accept(listener, 10_000)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var bytes: [UInt8] = []
        for _ in 0..<2 {
          guard let frame = readRawFrame(fd) else { break }
          bytes += frame
        }
        received.value = bytes
        _ = procord_test_write_all(fd, "2V42", 4)
      }
      let process = try delegate(DemoTasks.fibo, 7, to: RemoteServer(host: "127.0.0.1", port: Int(port)))
      let finished = process.wait(timeout: .seconds(10))
      serverDone.wait()
      #expect(finished)
      #expect(String(decoding: received.value, as: UTF8.self) == "4Tfibo1V7")
      guard case .success(let value) = process.status else {
        Issue.record("status: \(process.status)")
        return
      }
      #expect(value == 42)
    }
  }

  // MARK: - 2. Many clients, a bounded number of tasks

  /// 500 delegations at once to a server that runs at most 8 tasks: all
  /// succeed; the tasks themselves count how many run at once (under flock,
  /// see Tests/TestWorker), and the server's children are sampled meanwhile.
  @Test func fiveHundredClientsAtOnceAllSucceedAndAtMostEightRunAtOnce() throws {
    warmUp()
    let counter = temporaryPath("concurrency")
    defer { unlink(counter) }
    let server = try ServerUnderTest(
      program: testWorkerPath, options: ["--procord-max-simultaneous-tasks", "8"])
    defer { server.ensureStopped() }
    let sampler = ChildSampler(parent: server.pid)
    let task = DelegatedTask<String, Int>(name: "concurrency", input: .utf8, output: .decimal)
    let processes = try (0..<500).map { _ in try delegate(task, counter, to: server.remote) }
    let allFinished = Waiter.waitForAll(processes, timeout: .seconds(60))
    let sampled = sampler.stop()
    #expect(allFinished)
    let failed = processes.enumerated().filter { _, process in
      if case .success(let running) = process.status { return !(1...8).contains(running) }
      return true
    }
    let firstFailure = failed.first.map { "\($0.element.status)" } ?? ""
    #expect(failed.count == 0, "first: \(firstFailure)")  // a count: the array would print 500 items
    let recorded = try String(contentsOfFile: counter, encoding: .utf8).split(separator: " ").compactMap { Int($0) }
    #expect(recorded.count == 2 && recorded[0] == 0, "counter file: \(recorded)")
    let maximum = recorded.last ?? 0
    #expect(maximum <= 8, "\(maximum) tasks ran at once")
    #expect(maximum > 1, "the tasks never ran in parallel")
    #expect(sampled.samples > 0)
    #expect(sampled.maximum > 0, "the sampler never saw a worker of the server")
    #expect(sampled.maximum <= 8, "the server had \(sampled.maximum) children at once")
    server.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  // MARK: - 3. Sizes

  /// The largest body the default limit allows (64 MiB), one byte, and
  /// none: each comes back intact through a server.
  @Test(arguments: [64 << 20, 1, 0])
  func echoRoundTripsThroughAServer(size: Int) throws {
    warmUp()
    let input = randomBytes(size)
    let server = try ServerUnderTest()
    defer { server.ensureStopped() }
    let process = try delegate(DemoTasks.echo, input, to: server.remote)
    #expect(process.wait(timeout: .seconds(30)))
    guard case .success(let output) = process.status else {
      Issue.record("status: \(process.status)")
      return
    }
    #expect(output.count == input.count)
    let same = output == input  // not inside #expect: it would print 64 MiB
    #expect(same, "first difference at \(output.indices.first { $0 >= input.count || output[$0] != input[$0] } ?? -1)")
    server.stop()
    #expect(childProcesses().isEmpty)
  }

  // MARK: - 4. A client that dies

  /// A client killed with SIGKILL while its task sleeps: the server's
  /// worker for it is gone within a second, and the server goes on serving.
  @Test func aClientKilledMidTaskHasItsWorkerGoneWithinASecond() throws {
    warmUp()
    let server = try ServerUnderTest()
    defer { server.ensureStopped() }
    let client = try ChildProcess(
      demoPath, ["run", "--procord-hostname", "127.0.0.1", "--procord-port", "\(server.port)", "sleep", "600000"])
    defer { client.ensureStopped() }
    let busy = try #require(server.waitForBusyWorkers(1), "no worker started the task; server: \(server.output)")
    let worker = busy[0]
    kill(client.pid, SIGKILL)
    let gone = procord_test_wait_for_exit(worker, 1000)
    #expect(gone == 1 || gone == -ESRCH, "the worker \(worker) is still there after 1 s (\(gone))")
    let clientEnd = client.waitForExit(timeout: .seconds(5))
    #expect(clientEnd?.exited == false && clientEnd?.status == SIGKILL)
    #expect(try outputOf(delegate(DemoTasks.fact, 5, to: server.remote)) == 120)
    server.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  // MARK: - 5. Stopping

  /// SIGTERM while three tasks run: the listening socket is closed at once
  /// (new connections are refused), the three finish with their answers,
  /// and the server exits 0.
  @Test func sigtermRefusesNewConnectionsAndLetsRunningTasksFinish() throws {
    warmUp()
    let server = try ServerUnderTest(options: ["--procord-log-level", "info"])
    defer { server.ensureStopped() }
    let running = try (0..<3).map { _ in try delegate(DemoTasks.sleep, 1500, to: server.remote) }
    defer { running.forEach { $0.kill() } }  // only matters if the test failed
    try #require(server.waitForBusyWorkers(3) != nil, "the 3 tasks did not all start; server: \(server.output)")
    kill(server.pid, SIGTERM)
    // The server logs the stop just before it closes its listening socket:
    // refused connections must follow within moments, long before the
    // tasks end (and the server with them, which would close it anyway).
    try #require(
      server.child.output.wait(timeout: .seconds(5)) { $0.contains("stopping (SIGTERM)") },
      "no stop logged: \(server.output)")
    var accepted = 0
    let refused = repeatUntil(deadline: .milliseconds(200)) {
      let fd = procord_test_connect_loopback(Int32(server.port))
      if fd >= 0 {
        accepted += 1
        close(fd)
      }
      return fd == -ECONNREFUSED
    }
    #expect(refused, "connections still accepted after SIGTERM (\(accepted) in 200 ms)")
    #expect(running.allSatisfy { !$0.isFinished }, "a task ended before the refusal was checked")
    let late = try delegate(DemoTasks.fact, 5, to: server.remote)
    #expect(late.wait(timeout: .seconds(5)))
    #expect(failure(late.status) == .workerDisconnected(.systemCallFailed(call: "connect", errno: ECONNREFUSED)))
    #expect(Waiter.waitForAll(running, timeout: .seconds(10)))
    for process in running {
      guard case .success(let value) = process.status else {
        Issue.record("a draining task ended with \(process.status)")
        continue
      }
      #expect(value == 1500)
    }
    let end = server.child.waitForExit(timeout: .seconds(10))
    #expect(end?.exited == true && end?.status == 0, "server ended \(String(describing: end)): \(server.output)")
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  /// A server inherits its signal mask from whatever starts it: Foundation's
  /// Process started from a Swift concurrency or dispatch thread (which
  /// block SIGTERM and SIGINT) passes them on blocked. A server that
  /// handles those signals must still stop on them.
  @Test func aServerStartedWithSIGTERMBlockedStillStopsOnSIGTERM() throws {
    warmUp()
    var blocked = sigset_t()
    var previous = sigset_t()
    sigemptyset(&blocked)
    sigaddset(&blocked, SIGTERM)
    sigaddset(&blocked, SIGINT)
    pthread_sigmask(SIG_BLOCK, &blocked, &previous)
    let started = Result { try ServerUnderTest(inheritSignalMask: true) }
    pthread_sigmask(SIG_SETMASK, &previous, nil)
    let server = try started.get()
    defer { server.child.ensureStopped(signal: SIGKILL) }
    #expect(try outputOf(delegate(DemoTasks.fact, 5, to: server.remote)) == 120)
    kill(server.pid, SIGTERM)
    let end = server.child.waitForExit(timeout: .seconds(3))
    #expect(end?.exited == true && end?.status == 0, "still running 3 s after SIGTERM: \(String(describing: end))")
  }

  // MARK: - 6. Socket activation

  /// systemd-socket-activate binds the port and starts the server at the
  /// first connection, with the socket in LISTEN_FDS; that connection and
  /// the next are served.
  @Test func aSocketActivatedServerServes() throws {
    warmUp()
    let activator = try #require(findProgram("systemd-socket-activate"), "systemd-socket-activate is not installed")
    let port = Int(procord_test_free_port())
    try #require(port > 0)
    let notify = try NotifySocket()
    let child = try ChildProcess(
      activator, ["-l", "127.0.0.1:\(port)", "-E", "NOTIFY_SOCKET", demoPath, "--procord-server"],
      environment: ["NOTIFY_SOCKET": notify.path])
    defer { child.ensureStopped() }
    try #require(
      child.output.wait(timeout: .seconds(10)) { $0.contains("Listening on 127.0.0.1:\(port)") },
      "systemd-socket-activate is not listening: \(child.output.text)")
    let remote = RemoteServer(host: "127.0.0.1", port: port)
    let first = try delegate(DemoTasks.fact, 5, to: remote)  // this connection starts the server
    let ready = notify.receive(timeout: .seconds(10))
    #expect(ready?.contains("READY=1") == true, "no READY=1: \(ready ?? "nothing"); output: \(child.output.text)")
    #expect(ready?.contains("STATUS=listening on 127.0.0.1:\(port)") == true, "\(ready ?? "nothing")")
    #expect(outputOf(first) == 120)
    #expect(try outputOf(delegate(DemoTasks.fibo, 10, to: remote)) == 89)
    kill(child.pid, SIGTERM)
    let end = child.waitForExit(timeout: .seconds(10))
    #expect(end?.exited == true && end?.status == 0, "server ended \(String(describing: end)): \(child.output.text)")
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  // MARK: - 7. Behind a proxy

  /// nginx's stream module balancing two servers: 200 tasks all succeed and
  /// both servers serve some (counted from their per-connection log lines);
  /// with one server stopped, tasks still succeed through the other.
  @Test func nginxInFrontOfTwoServersSpreadsTheTasksAndSurvivesOneStopping() throws {
    warmUp()
    let nginxPath = try #require(findProgram("nginx", extraDirectories: ["/usr/sbin"]), "nginx is not installed")
    let first = try ServerUnderTest(options: ["--procord-log-level", "debug"])
    defer { first.ensureStopped() }
    let second = try ServerUnderTest(options: ["--procord-log-level", "debug"])
    defer { second.ensureStopped() }
    let port = Int(procord_test_free_port())
    try #require(port > 0)
    let directory = temporaryPath("nginx")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let configuration = """
      load_module /usr/lib/nginx/modules/ngx_stream_module.so;
      daemon off;
      master_process on;
      worker_processes 1;
      pid \(directory)/nginx.pid;
      error_log stderr notice;
      events { worker_connections 2048; }
      stream {
        upstream u { server 127.0.0.1:\(first.port); server 127.0.0.1:\(second.port); }
        server { listen 127.0.0.1:\(port); proxy_pass u; }
      }
      """
    try configuration.write(toFile: "\(directory)/nginx.conf", atomically: true, encoding: .utf8)
    let nginx = try ChildProcess(nginxPath, ["-c", "\(directory)/nginx.conf", "-p", directory, "-e", "stderr"])
    defer { nginx.ensureStopped(signal: SIGQUIT) }
    // nginx listens before it starts its workers (and says so).
    try #require(
      nginx.output.wait(timeout: .seconds(10)) { $0.contains("start worker process") },
      "nginx did not start: \(nginx.output.text)")
    let proxy = RemoteServer(host: "127.0.0.1", port: port)

    let served = "task echo, value"
    try expectEchoes(200, through: proxy)
    // Each server logs a connection once its worker is done with it, which
    // may be just after the client has its answer.
    let bothLogged = StreamRecorder.wait(timeout: .seconds(10)) {
      first.output.occurrences(of: served) + second.output.occurrences(of: served) >= 200
    }
    let (byFirst, bySecond) = (first.output.occurrences(of: served), second.output.occurrences(of: served))
    #expect(bothLogged && byFirst + bySecond == 200, "served: \(byFirst) + \(bySecond)")
    #expect(byFirst > 0 && bySecond > 0, "served: \(byFirst) + \(bySecond)")

    first.stop()
    try expectEchoes(20, through: proxy)
    #expect(second.child.output.wait(timeout: .seconds(10)) { $0.occurrences(of: served) == bySecond + 20 })

    kill(nginx.pid, SIGQUIT)
    let end = nginx.waitForExit(timeout: .seconds(10))
    #expect(end?.exited == true && end?.status == 0, "nginx ended \(String(describing: end)): \(nginx.output.text)")
    second.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  // MARK: - 8. Bad input

  @Test func garbageIsAnsweredIllFormedAndTheServerGoesOn() throws {
    try expectAnswer("1E2", to: "xyz")
  }

  @Test func aTwentyDigitSizeIsAnsweredTooLongAtOnce() throws {
    try expectAnswer("1E3", to: "12345678901234567890")
  }

  @Test func aSizeAboveTheServersLimitIsAnsweredTooLong() throws {
    try expectAnswer("1E3", to: "4Tfact5000V", serverOptions: ["--procord-max-message-size", "1000"])
  }

  /// Half a frame, then silence: the connection is closed once the read
  /// timeout has passed (the default, 30 s, would fail this test).
  @Test func aSilentHalfFrameIsClosedAfterTheReadTimeout() throws {
    warmUp()
    let server = try ServerUnderTest(options: ["--procord-read-timeout", "300"])
    defer { server.ensureStopped() }
    let connection = try RawConnection(port: server.port)
    try connection.send("4Tfa")
    let start = ContinuousClock.now
    let answer = try connection.readToEnd(timeout: .seconds(5))
    let waited = ContinuousClock.now - start
    #expect(answer == [], "answered \(String(decoding: answer, as: UTF8.self))")
    #expect(waited >= .milliseconds(250), "closed after \(waited), before the read timeout")
    #expect(try outputOf(delegate(DemoTasks.fact, 5, to: server.remote)) == 120)
    server.stop()
    #expect(childProcesses().isEmpty)
  }

  /// The command line's bounds reach the server (`Worker.runIfRequested`
  /// maps them onto `Server.Options`): a second connection from an address
  /// allowed one is refused with a `U` frame naming the limit, and the
  /// first, idle after its task, is closed at the idle limit.
  @Test func theCommandLinesClientBoundsReachTheServer() throws {
    warmUp()
    let server = try ServerUnderTest(options: [
      "--procord-max-connections-per-peer", "1", "--procord-idle-timeout", "300",
    ])
    defer { server.ensureStopped() }
    let first = try RawConnection(port: server.port)
    try first.send("4Tfact1V5")
    #expect(try first.readText(7) == "3V1200R")
    let idleSince = ContinuousClock.now
    let second = try RawConnection(port: server.port)
    try second.send("4")  // the kernel hands a connection over with its first bytes
    let refusal = String(decoding: try second.readToEnd(), as: UTF8.self)
    #expect(refusal.contains("U") && refusal.contains("this address has 1 connections already"), "got \(refusal)")
    #expect(try first.readToEnd(timeout: .seconds(5)) == [])
    let idle = ContinuousClock.now - idleSince
    #expect(idle >= .milliseconds(250) && idle < .seconds(3), "closed after \(idle) idle")
    server.stop()
    #expect(childProcesses().isEmpty)
  }

  // MARK: - Helpers

  /// Sends `request` on a raw connection to a new server; expects exactly
  /// `answer` then the end of the stream, and a normal task to succeed after.
  private func expectAnswer(
    _ answer: String, to request: String, serverOptions: [String] = [],
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    warmUp()
    let server = try ServerUnderTest(options: serverOptions)
    defer { server.ensureStopped() }
    let connection = try RawConnection(port: server.port)
    try connection.send(request)
    let got = String(decoding: try connection.readToEnd(), as: UTF8.self)
    #expect(got == answer, sourceLocation: sourceLocation)
    #expect(
      try outputOf(delegate(DemoTasks.fact, 5, to: server.remote), sourceLocation: sourceLocation) == 120,
      sourceLocation: sourceLocation)
    server.stop()
    #expect(childProcesses().isEmpty, sourceLocation: sourceLocation)
  }

  /// Delegates `count` echo tasks at once, each with its own text, and
  /// expects each to come back with it.
  private func expectEchoes(
    _ count: Int, through server: RemoteServer, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let inputs = (0..<count).map { Array("task \($0)".utf8) }
    let processes = try inputs.map { try delegate(DemoTasks.echo, $0, to: server) }
    #expect(Waiter.waitForAll(processes, timeout: .seconds(30)), sourceLocation: sourceLocation)
    let wrong = zip(processes, inputs).filter { process, input in
      if case .success(let output) = process.status { return output != input }
      return true
    }
    let firstWrong = wrong.first.map { "\($0.0.status)" } ?? ""
    #expect(wrong.count == 0, "\(wrong.count) of \(count) failed, first: \(firstWrong)", sourceLocation: sourceLocation)
  }
}

// MARK: - Processes

/// Counts a process's children over and over on a thread of its own until
/// stopped, keeping the largest count seen.
private final class ChildSampler: @unchecked Sendable {
  private let lock = NSLock()
  private var stopped = false
  private var result = (maximum: 0, samples: 0)
  private let done = DispatchSemaphore(value: 0)

  init(parent: Int32) {
    Thread.detachNewThread { [self] in
      while true {
        let count = childrenOf(parent).count
        lock.lock()
        result = (max(result.maximum, count), result.samples + 1)
        let stop = stopped
        lock.unlock()
        if stop { break }
        usleep(1000)
      }
      done.signal()
    }
  }

  /// Stops sampling; returns the largest count and how many samples were taken.
  func stop() -> (maximum: Int, samples: Int) {
    lock.lock()
    stopped = true
    lock.unlock()
    done.wait()
    lock.lock()
    defer { lock.unlock() }
    return result
  }
}

// MARK: - Sockets

/// A plain TCP connection to 127.0.0.1: no Procord involved.
final class RawConnection {
  let fd: Int32

  init(port: Int) throws {
    fd = procord_test_connect_loopback(Int32(port))
    guard fd >= 0 else { throw TestFailure("connect to port \(port): errno \(-fd)") }
  }

  deinit { close(fd) }

  func send(_ text: String) throws {
    let bytes = Array(text.utf8)
    let error = procord_test_write_all(fd, bytes, bytes.count)
    guard error == 0 else { throw TestFailure("send: errno \(-error)") }
  }

  /// Exactly `count` bytes (fewer only if the stream ends), within `timeout`.
  func read(_ count: Int, timeout: Duration = .seconds(5)) throws -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: count)
    var partial = 0
    let n = procord_test_read(fd, &buffer, count, Int32(timeout.components.seconds * 1000), &partial)
    guard n >= 0 else {
      throw TestFailure("read: errno \(-n) after \(String(decoding: buffer[0..<partial], as: UTF8.self))")
    }
    return Array(buffer[0..<n])
  }

  func readText(_ count: Int) throws -> String {
    String(decoding: try read(count), as: UTF8.self)
  }

  /// Everything until the end of the stream, which must come within `timeout`.
  func readToEnd(timeout: Duration = .seconds(5)) throws -> [UInt8] {
    let limit = 1 << 20
    let bytes = try read(limit, timeout: timeout)
    guard bytes.count < limit else { throw TestFailure("more than \(limit) bytes") }
    return bytes
  }

  func shutdownWrite() throws {
    let error = procord_test_shutdown_write(fd)
    guard error == 0 else { throw TestFailure("shutdown: errno \(-error)") }
  }
}

/// Reads one frame (`SIZE KIND BODY`) from `fd`, within 5 s, and returns
/// all its bytes; nil if the stream ends or breaks the grammar.
private func readRawFrame(_ fd: Int32) -> [UInt8]? {
  var bytes: [UInt8] = []
  var size = 0
  var byte: UInt8 = 0
  while true {
    guard procord_test_read(fd, &byte, 1, 5000, nil) == 1 else { return nil }
    bytes.append(byte)
    guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { break }
    size = size * 10 + Int(byte - UInt8(ascii: "0"))
    if bytes.count > 18 { return nil }
  }
  guard bytes.count > 1 else { return nil }
  var body = [UInt8](repeating: 0, count: size)
  guard procord_test_read(fd, &body, size, 5000, nil) == size else { return nil }
  return bytes + body
}

// MARK: - Small things

/// The output of `process` once it has finished, within `timeout`; nil,
/// with an issue recorded, if it failed or did not finish (it is then
/// killed: a test must not hang on a server that never answers).

/// A value shared with a thread of the test.
final class LockedBox<Value>: @unchecked Sendable {
  private let lock = NSLock()
  private var stored: Value
  init(_ value: Value) { stored = value }
  var value: Value {
    get { lock.withLock { stored } }
    set { lock.withLock { stored = newValue } }
  }
}

/// `count` random bytes, from /dev/urandom.
func randomBytes(_ count: Int) -> [UInt8] {
  let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
  precondition(fd >= 0, "/dev/urandom: errno \(errno)")
  defer { close(fd) }
  return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
    var filled = 0
    while filled < count {
      let n = read(fd, buffer.baseAddress! + filled, count - filled)
      precondition(n > 0 || errno == EINTR, "/dev/urandom: errno \(errno)")
      if n > 0 { filled += n }
    }
    initialized = count
  }
}

/// Where `name` is found in PATH (or in `extraDirectories`), if it is.
private func findProgram(_ name: String, extraDirectories: [String] = []) -> String? {
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
  let directories = path.split(separator: ":").map(String.init) + extraDirectories
  return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

extension String {
  /// How many times `text` occurs, without overlaps.
  fileprivate func occurrences(of text: String) -> Int {
    components(separatedBy: text).count - 1
  }
}
