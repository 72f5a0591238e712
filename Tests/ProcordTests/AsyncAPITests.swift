import CTestSupport
import Foundation
import Procord
import Testing

/// The async-first API: `task.run`, async task bodies, cancellation that a
/// body can see, and ``ProcordError``'s codes and context.
@Suite struct AsyncAPITests {
  static let double = DelegatedTask<Int, Int>(name: "async-double", input: .decimal, output: .decimal)
  static let waitForCancellation = DelegatedTask<String, String>(
    name: "wait-for-cancellation", input: .utf8, output: .utf8)

  @Test func anAsyncBodyAnswers() async throws {
    try await expectNoLeaks {
      let doubled = try await Self.double.run(21, to: testSocketWorker)
      #expect(doubled == 42)
    }
  }

  /// Cancelling the Swift task that awaits `run` sends SIGTERM: the body,
  /// asleep in `Task.sleep`, sees its cancellation before any SIGKILL, and
  /// the caller gets `CancellationError` once the worker is gone.
  @Test func cancellingRunLetsTheAsyncBodySeeItAndThrowsCancellationError() async throws {
    try await expectNoLeaks {
      let fifo = try Fifo()
      let path = fifo.path
      let running = Task { try await Self.waitForCancellation.run(path, to: testSocketWorker) }
      #expect(fifo.readLine() == "started")
      running.cancel()
      #expect(fifo.readLine() == "cancelled")
      await #expect(throws: CancellationError.self) { try await running.value }
    }
  }

  /// The poll layer's `cancel()` is the same SIGTERM; the worker's pid is
  /// gone from the process table once `value` has thrown.
  @Test func cancelOnAProcessGivesTheBodyItsGracePeriodAndTheWorkerIsGone() async throws {
    try await expectNoLeaks {
      let fifo = try Fifo()
      let process = try delegate(Self.waitForCancellation, fifo.path, to: testSocketWorker)
      #expect(fifo.readLine() == "started")
      let pid = try #require(process.pid)
      process.cancel()
      #expect(fifo.readLine() == "cancelled")
      await expectFailure(.workerKilled) { _ = try await process.value }
      #expect(kill(pid, 0) == -1 && errno == ESRCH, "worker \(pid) still exists")
    }
  }

  /// A pooled task: cancellation reaches the body too, and the pool goes on
  /// with a new worker.
  @Test func cancellingAPooledRunReachesTheBodyAndThePoolGoesOn() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: testSocketWorker)
      let fifo = try Fifo()
      let path = fifo.path
      let running = Task { try await pool.run(Self.waitForCancellation, path) }
      #expect(fifo.readLine() == "started")
      running.cancel()
      #expect(fifo.readLine() == "cancelled")
      await #expect(throws: CancellationError.self) { try await running.value }
      let doubled = try await pool.run(Self.double, 2)
      #expect(doubled == 4)
      await pool.shutdown()
    }
  }

  /// A remote task: the connection is reset, the server closes the task's
  /// session, and its worker's watchdog cancels the body rather than kill it.
  @Test func cancellingARemoteRunReachesTheBodyInTheServersWorker() async throws {
    let server = try ServerUnderTest(program: testWorkerPath)
    defer { server.ensureStopped() }
    let fifo = try Fifo()
    let path = fifo.path
    let remote = server.remote
    let running = Task { try await Self.waitForCancellation.run(path, to: remote) }
    #expect(fifo.readLine() == "started")
    running.cancel()
    #expect(fifo.readLine() == "cancelled")
    await #expect(throws: CancellationError.self) { try await running.value }
    let doubled = try await Self.double.run(4, to: remote)
    #expect(doubled == 8)
  }

  /// A deadline stops the worker the same way: the body sees it.
  @Test func aDeadlineCancelsAnAsyncBody() async throws {
    try await expectNoLeaks {
      let fifo = try Fifo()
      let options = DelegationOptions(deadline: .milliseconds(300))
      let path = fifo.path
      let running = Task { try await Self.waitForCancellation.run(path, to: testSocketWorker, options: options) }
      #expect(fifo.readLine() == "started")
      #expect(fifo.readLine() == "cancelled")
      let error = await #expect(throws: ProcordError.self) { try await running.value }
      #expect(error?.code == .deadlineExceeded)
    }
  }

  // MARK: - What ProcordError says

  @Test func anUnknownTaskSaysWhereToRegisterIt() async throws {
    let task = DelegatedTask<Int, Int>(name: "no-such-task", input: .decimal, output: .decimal)
    let error = await #expect(throws: ProcordError.self) { try await task.run(1, to: testSocketWorker) }
    #expect(error?.code == .unknownTask)
    #expect(error?.taskName == "no-such-task")
    #expect(error?.description.contains("Worker.main(tasks:)") == true, "\(String(describing: error))")
  }

  @Test func anInputTheWorkerCannotDecodeSaysItWasTheInput() async throws {
    let task = DelegatedTask<String, Int>(name: "async-double", input: .utf8, output: .decimal)
    let error = await #expect(throws: ProcordError.self) { try await task.run("x", to: testSocketWorker) }
    #expect(error?.code == .inputNotDecodable)
    #expect(error?.message.contains("could not decode the input of task \"async-double\"") == true)
  }

  @Test func anOutputThatDoesNotDecodeSaysItWasTheOutput() async throws {
    let task = DelegatedTask<String, Int>(name: "environment", input: .utf8, output: .decimal)
    let error = await #expect(throws: ProcordError.self) { try await task.run("PATH", to: testSocketWorker) }
    #expect(error?.code == .outputNotDecodable)
    #expect(error?.message.contains("output codec and type") == true)
  }

  @Test func aRefusedConnectionNamesHostAndPort() async throws {
    let port = closedPort()
    let error = await #expect(throws: ProcordError.self) {
      try await Self.double.run(1, to: .server(host: "127.0.0.1", port: port))
    }
    #expect(error?.code == .couldNotConnect)
    #expect(error?.errorNumber == ECONNREFUSED)
    #expect(error?.description.contains("127.0.0.1:\(port)") == true, "\(String(describing: error))")
  }

  @Test func aMissingProgramNamesItsPath() async throws {
    let error = await #expect(throws: ProcordError.self) {
      try await Self.double.run(1, to: .program("/nonexistent/worker"))
    }
    #expect(error?.code == .couldNotStart)
    #expect(error?.errorNumber == ENOENT)
    #expect(error?.description.contains("/nonexistent/worker") == true)
  }

  @Test func aCrashNamesTheSignalAndThePid() async throws {
    let crash = DelegatedTask<Int, Int>(name: "crash-on-tenths", input: .decimal, output: .decimal)
    let error = await #expect(throws: ProcordError.self) { try await crash.run(10, to: testSocketWorker) }
    #expect(error?.code == .crashed)
    #expect(error?.signal == SIGSEGV)
    let pid = try #require(error?.pid)
    #expect(error?.description.contains("worker pid \(pid)") == true)
    #expect(error?.executionError == .workerDisconnected(.signaled(SIGSEGV)))
  }

  // MARK: - Entry point and names

  /// A worker program whose main returns without serving says so to its
  /// main program, which names the fix.
  @Test func aWorkerWhoseMainReturnsWithoutServingSaysWhatToCall() async throws {
    var worker = testSocketWorker
    worker.environment = ["PROCORD_TEST_RETURN_WITHOUT_SERVING": "1"]
    let error = await #expect(throws: ProcordError.self) { try await Self.double.run(1, to: worker) }
    #expect(error?.code == .workerDidNotServe)
    #expect(
      error?.message.contains("its main returned without serving its tasks") == true, "\(String(describing: error))")
    #expect(error?.message.contains("Worker.main(tasks:)") == true)
  }

  @Test func theProgramsOwnArgumentsFollowTheProcordOptions() throws {
    #expect(
      try Worker.programArguments(of: ["app", "--procord-hostname", "h", "--procord-port", "9", "in", "--procord-x"])
        == ["in", "--procord-x"])
    #expect(try Worker.programArguments(of: ["app"]) == [])
    #expect(
      try Worker.programArguments(of: ["app", "run", "--procord-hostname", "h"]) == ["run", "--procord-hostname", "h"])
    #expect(throws: Worker.CommandLineError.self) { try Worker.programArguments(of: ["app", "--procord-bogus"]) }
  }

  /// `Worker.main` from an `@main` type's `main()`, which runs on the main
  /// actor, with a body that uses main-actor state (this only compiles if
  /// the body runs in the caller's isolation).
  @Test func workerMainRunsTheBodyOnTheCallersActor() async throws {
    let seen = try await MainActorEntry.main(arguments: ["app", "input"])
    #expect(seen == ["input"])
  }

  /// A type with a `delegate` property, as so many have, can still use
  /// Procord: `run` is a method of the task, and the poll layer's free
  /// function is reached by the module's name.
  @Test func aTypeWithADelegatePropertyCanDelegate() async throws {
    let model = ModelWithADelegate()
    #expect(try await model.compute(5) == 20)
  }
}

/// What an `@main` type looks like: its `main()` is on the main actor.
@MainActor private enum MainActorEntry {
  static var seen: [String] = []

  static func main(arguments: [String]) async throws -> [String] {
    try await Worker.main(tasks: [], arguments: arguments) { arguments in
      seen = arguments
    }
    return seen
  }
}

private protocol ModelDelegate: AnyObject {}

private final class ModelWithADelegate: Sendable {
  nonisolated(unsafe) weak var delegate: ModelDelegate?

  func compute(_ n: Int) async throws -> Int {
    let doubled = try await AsyncAPITests.double.run(n, to: testSocketWorker)
    let process = try Procord.delegate(AsyncTasksForCollision.double, doubled, to: testSocketWorker)
    return try await process.value
  }
}

private enum AsyncTasksForCollision {
  static let double = AsyncAPITests.double
}

/// A port nobody listens on: a listener's, closed again.
private func closedPort() -> Int {
  var port: Int32 = 0
  let fd = procord_test_listen(AF_INET, 1, &port)
  if fd >= 0 { close(fd) }
  return Int(port)
}

/// A named pipe the test reads lines from, written by a task in a worker:
/// reading it awaits the task's news without sleeping. The test keeps a
/// write end open too, so that reads wait for the task rather than see EOF.
private final class Fifo {
  let path: String
  private let reader: Int32
  private let keeper: Int32

  init() throws {
    path = FileManager.default.temporaryDirectory.appendingPathComponent("procord-fifo-\(UUID().uuidString)").path
    guard mkfifo(path, 0o600) == 0 else { throw TextError("mkfifo \(path): errno \(errno)") }
    reader = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    keeper = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
    guard reader >= 0, keeper >= 0 else { throw TextError("open \(path): errno \(errno)") }
    _ = fcntl(reader, F_SETFL, fcntl(reader, F_GETFL) & ~O_NONBLOCK)
  }

  deinit {
    close(reader)
    close(keeper)
    unlink(path)
  }

  /// The next line, without its newline; nil after 30 s without one.
  func readLine() -> String? {
    var line: [UInt8] = []
    var byte: UInt8 = 0
    var poller = pollfd(fd: reader, events: Int16(POLLIN), revents: 0)
    while true {
      guard poll(&poller, 1, 30_000) == 1, read(reader, &byte, 1) == 1 else { return nil }
      if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
      line.append(byte)
    }
  }
}
