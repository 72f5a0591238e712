// Fault injection at the points of the protocol that FailureTests does not
// reach (issue 9): a worker that dies in the middle of its output, or right
// after its answer and before `0R`; a peer that stalls in the middle of a
// frame; one that answers byte by byte; a main program that does not read
// for a while; and the same faults inside a worker server. Each test starts
// a fake worker of Tests/TestWorker in the mode named after the fault, and
// checks the status docs/PROTOCOL.md gives for it and that nothing (child,
// descriptor, busy server worker) is left behind.
//
// FailureTests covers already, and is not repeated here: a worker that
// exits at once (before reading the task name), after the name, during the
// input, that crashes after the name (during the task), and one that
// answers then exits with an error code.
import CProcord
import CTestSupport
import Foundation
import Testing

@testable import Procord

@Suite(.serialized) struct FaultInjectionTests {
  /// The task the fake workers are given: JSON Int in, output as the test needs.
  private static let probe = DelegatedTask<Int, Int>(name: "probe")
  private static let bytesProbe = DelegatedTask<Int, [UInt8]>(name: "probe", input: .json, output: .bytes)
  private static let textProbe = DelegatedTask<Int, String>(name: "probe", input: .json, output: .utf8)

  // MARK: - Dying in the middle of the output

  /// The worker announces a `V` frame, sends part of its body and exits 6:
  /// a small frame (10 bytes of 1000, all in the pipe at once), and a large
  /// one (4 MiB of 8 MiB, so that the main program reads body bytes as they
  /// come and is in the middle of the body when the stream ends).
  @Test(arguments: zip([1000, 8 << 20], [10, 4 << 20]))
  func workerThatExitsMidOutputIsDisconnectedWithItsExitCode(size: Int, sent: Int) throws {
    try expectNoLeaks {
      let process = try delegate(
        Self.bytesProbe, 7, to: FaultFixture.worker("die-mid-output", "\(size)", "\(sent)"))
      FaultFixture.finish(process)
      #expect(failure(process.status) == .workerDisconnected(.exited(code: 6)))
      #expect(
        failure(process.status)?.description
          == "worker disconnected: the worker exited with code 6 without answering")
    }
  }

  /// The same, the worker killed (SIGKILL) instead of exiting.
  @Test(arguments: zip([1000, 8 << 20], [10, 4 << 20]))
  func workerKilledMidOutputIsDisconnectedWithTheSignal(size: Int, sent: Int) throws {
    try expectNoLeaks {
      let process = try delegate(
        Self.bytesProbe, 7, to: FaultFixture.worker("killed-mid-output", "\(size)", "\(sent)"))
      FaultFixture.finish(process)
      #expect(failure(process.status) == .workerDisconnected(.signaled(SIGKILL)))
      #expect(failure(process.status)?.description.contains("SIGKILL") == true)
    }
  }

  // MARK: - Dying right after the answer, before `0R`

  /// Socket mode, where a worker says `0R` after its answer: this one dies
  /// of SIGSEGV between the two. The terminal frame decides: a success.
  @Test func workerThatDiesRightAfterItsAnswerInSocketModeStillSucceeds() throws {
    try expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FaultFixture.socketWorker("answer-then-crash"))
      FaultFixture.finish(process)
      #expect(FaultFixture.output(process.status) == 42)
    }
  }

  /// In a pool of one worker, two tasks at once: the first gets its
  /// answer, and the second, which waited in the queue meanwhile, runs on a
  /// new worker once the first worker has died (before its `0R`).
  @Test func pooledWorkerThatDiesRightAfterItsAnswerIsReplacedForTheNextTask() throws {
    try expectNoLeaks {
      let pool = try WorkerPool(
        [.local(FaultFixture.socketWorker("answer-then-crash"))],
        configuration: WorkerPool.Configuration(maximumWorkers: 1))
      let first = try pool.delegate(Self.probe, 7)
      let second = try pool.delegate(Self.probe, 8)
      FaultFixture.finish(first)
      FaultFixture.finish(second)
      #expect(FaultFixture.output(first.status) == 42)
      #expect(FaultFixture.output(second.status) == 42)
      let pids = (first.pid, second.pid)
      #expect(pids.0 != nil && pids.1 != nil && pids.0 != pids.1, "worker pids: \(String(describing: pids))")
      #expect(pool.statistics.workersStarted == 2)
      #expect(pool.shutdownAndWait(timeout: .seconds(10)))
    }
  }

  // MARK: - A peer that stalls in the middle of a frame

  /// No time limit: the delegation waits, mid-body, as long as the worker
  /// is silent; killing it ends it as killed, at once, and reaps the worker.
  @Test func workerStalledMidFrameIsKilledOnRequest() throws {
    try expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FaultFixture.worker("stall-mid-frame"))
      let pid = try #require(process.pid)
      // Asleep: it has written its partial frame and will write no more.
      #expect(FaultFixture.waitUntilAsleep(pid), "the worker never got to its sleep")
      #expect(!process.isFinished)
      process.kill()
      #expect(failure(process.status) == .workerKilled)
      FaultFixture.finish(process)
      #expect(failure(process.status) == .workerKilled)
      #expect(!processExists(pid))
    }
  }

  /// A pooled task has no idle timeout; its deadline bounds a silent
  /// worker (WorkerPool.Configuration says so): SIGTERM at 500 ms.
  @Test func pooledTaskStalledMidFrameEndsAtItsDeadline() throws {
    try expectNoLeaks {
      let pool = try WorkerPool(
        [.local(FaultFixture.socketWorker("stall-mid-frame"))],
        configuration: WorkerPool.Configuration(maximumWorkers: 1))
      let start = ContinuousClock.now
      let process = try pool.delegate(Self.probe, 7, options: DelegationOptions(deadline: .milliseconds(500)))
      _ = FaultFixture.finish(process)
      #expect(failure(process.status) == .deadlineExceeded(.milliseconds(500)))
      expectEndedAtDeadline(ContinuousClock.now - start, .milliseconds(500))
      #expect(pool.shutdownAndWait(timeout: .seconds(10)))
    }
  }

  /// A server whose worker stalls mid-frame (the server, which forwards
  /// whole frames, is then silent): with an idle timeout the delegation
  /// ends `.timedOut(.waitingForTheWorker)`; the server's worker, whose
  /// client went away mid-task, is ended, and the server serves on.
  @Test func serverStalledMidFrameTimesOutAtTheIdleTimeout() throws {
    warmUp()
    let server = try ServerUnderTest(program: testWorkerPath)
    defer { server.ensureStopped() }
    var remote = server.remote
    remote.idleTimeout = .milliseconds(500)
    let start = ContinuousClock.now
    let process = try delegate(FaultFixture.stallMidOutput, "", to: remote)
    let busy = server.waitForBusyWorkers(1)
    FaultFixture.finish(process)
    let elapsed = ContinuousClock.now - start
    #expect(failure(process.status) == .workerDisconnected(.timedOut(.waitingForTheWorker)))
    #expect(elapsed >= .milliseconds(450), "timed out after \(elapsed), before the idle timeout")
    let worker = try #require(busy?.first, "the task never started on the server: \(server.output)")
    let gone = procord_test_wait_for_exit(worker, 2000)
    #expect(gone == 1 || gone == -ESRCH, "the server's worker \(worker) still runs the stalled task")
    #expect(outputOf(try delegate(FaultFixture.crashOnTenths, 7, to: server.remote)) == 7)
    server.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  // MARK: - A peer that sends a frame byte by byte

  /// One byte per write, 1 ms apart: two prints and a flush to destination
  /// `7`, then a 300-byte answer, every SIZE, KIND and body split across
  /// reads. All arrive, in order, and the answer is whole.
  @Test func answerSentByteByByteArrivesWhole() throws {
    try expectNoLeaks {
      let events = LockedBox<[PrintEvent]>([])
      var options = DelegationOptions()
      options.printHandlers[OutputDestination("7")] = { event in events.value.append(event) }
      let process = try delegate(
        Self.textProbe, 7, to: FaultFixture.worker("answer-byte-by-byte", "1000"), options: options)
      FaultFixture.finish(process)
      #expect(FaultFixture.output(process.status) == String(repeating: "slow answer ", count: 25))
      #expect(events.value == [.text("one "), .flush, .text("two ")])
    }
  }

  // MARK: - A main program that does not read for a while

  /// Code on Procord's loop thread that computes for long (here: until the
  /// worker is seen blocked, then half a second) keeps the loop from
  /// reading: the worker's
  /// 32 MiB answer fills the pipe or socket and its write blocks. Once the
  /// loop is free, the write resumes and the answer arrives whole. Both
  /// with the fake's plain writes on a pipe and with a real worker's
  /// frame writer in socket mode.
  @Test(arguments: [true, false])
  func mainProgramThatDoesNotReadForAWhileStillGetsTheWholeAnswer(realWorker: Bool) async throws {
    try await expectNoLeaks {
      let blocks = 512
      let task = DelegatedTask<Int, [UInt8]>(name: "pattern", input: .decimal, output: .bytes)
      let worker =
        realWorker
        ? WorkerProgram(path: testWorkerPath, arguments: ["--procord-worker"], channel: .socket)
        : FaultFixture.worker("large-answer", "\(blocks)")
      // Without the descriptor that listing them used, since closed.
      let before = openDescriptors().filter { fcntl($0, F_GETFD) >= 0 }
      let process = try delegate(task, blocks, to: worker)
      let pid = try #require(process.pid)
      // The main program's end of a socket-mode worker's socketpair.
      let ours = openDescriptors().subtracting(before).first(where: FaultFixture.isSocket)
      let (onLoop, blocked) = await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
        let onLoop = procord_loop_is_current_thread(Runtime.shared.loop) != 0
        // Another process's state, which nothing can await: looked at every ms.
        let blocked = repeatUntil(deadline: .seconds(10)) {
          if FaultFixture.isBlockedWriting(pid, unreadOn: ours) { return true }
          usleep(1000)
          return false
        }
        // The fault itself: half a second more without reading.
        if blocked { usleep(500_000) }
        return (onLoop, blocked)
      }
      #expect(onLoop, "the busy code did not run on the loop's thread")
      #expect(blocked, "the worker never blocked in its write")
      let output = try await process.value
      #expect(output.count == blocks * 65536)
      #expect(FaultFixture.firstBlockNotMatching(output, blocks: blocks) == nil)
    }
  }

  // MARK: - On a worker server

  /// The server's worker writes part of a `V` frame to the server and dies
  /// of SIGSEGV: the client is disconnected (the server forwards whole
  /// frames only, and a server's worker has no exit code to give), the
  /// server logs the death, naming the worker's pid and signal, and serves
  /// the next client.
  @Test func taskThatCrashesMidOutputOnAServerLeavesTheServerServing() throws {
    warmUp()
    let server = try ServerUnderTest(program: testWorkerPath, options: ["--procord-log-level", "debug"])
    defer { server.ensureStopped() }
    let process = try delegate(FaultFixture.crashMidOutput, "", to: server.remote)
    FaultFixture.finish(process)
    #expect(failure(process.status) == .workerDisconnected(.closedWithoutAnswer))
    let logged = server.child.output.wait(timeout: .seconds(10)) {
      $0.contains("the worker running its task crash-mid-output (pid ")
        && $0.contains("was killed by signal \(SIGSEGV)")
    }
    #expect(logged, "the server did not log its worker's death: \(server.output)")
    #expect(outputOf(try delegate(FaultFixture.crashOnTenths, 7, to: server.remote)) == 7)
    server.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }
}

/// Helpers of this file (named so as not to collide with other test files).
private enum FaultFixture {
  /// Tasks that procord-test-worker serves as a real worker or server.
  static let crashOnTenths = DelegatedTask<Int, Int>(name: "crash-on-tenths", input: .decimal, output: .decimal)
  static let crashMidOutput = DelegatedTask<String, String>(name: "crash-mid-output", input: .utf8, output: .utf8)
  static let stallMidOutput = DelegatedTask<String, String>(name: "stall-mid-output", input: .utf8, output: .utf8)

  /// The fake worker in `mode`, on stdin/stdout.
  static func worker(_ mode: String, _ arguments: String...) -> WorkerProgram {
    WorkerProgram(path: testWorkerPath, arguments: [mode] + arguments)
  }

  /// The fake worker in `mode`, in socket mode.
  static func socketWorker(_ mode: String, _ arguments: String...) -> WorkerProgram {
    WorkerProgram(path: testWorkerPath, arguments: [mode] + arguments, channel: .socket)
  }

  /// Waits for `process`, at most `limit`; past it, records an issue and
  /// kills the worker so that nothing is left behind. Returns how long the
  /// wait took.
  @discardableResult
  static func finish(
    _ process: AnyDelegatedProcess, within limit: Duration = .seconds(10),
    sourceLocation: SourceLocation = #_sourceLocation
  ) -> Duration {
    let start = ContinuousClock.now
    let returned = process.wait(timeout: limit)
    let elapsed = ContinuousClock.now - start
    #expect(returned, "the process had not finished after \(limit)", sourceLocation: sourceLocation)
    if !returned {
      process.kill()
      process.wait()
    }
    return elapsed
  }

  /// The output of a successful status, or nil.
  static func output<Output>(_ status: Status<Output>) -> Output? {
    if case .success(let output) = status { return output }
    return nil
  }

  /// What /proc says process `pid` waits in (its main thread), or "".
  static func waitChannel(_ pid: Int32) -> String {
    (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)) ?? ""
  }

  /// True once `pid` sleeps in nanosleep (within 10 s). Looks at /proc
  /// every ms: another process's state, which nothing can await.
  static func waitUntilAsleep(_ pid: Int32) -> Bool {
    repeatUntil(deadline: .seconds(10)) {
      if waitChannel(pid) == "hrtimer_nanosleep" { return true }
      usleep(1000)
      return false
    }
  }

  /// True while `pid` is blocked writing to a full pipe or socket: asleep
  /// in a blocking write, or, for a worker whose socket is non-blocking
  /// (a real worker's), asleep in poll while its answer has started to
  /// arrive, unread, on `ours`, the main program's end of its socket (it
  /// sends nothing before its answer, and the answer is too big to fit in
  /// the socket's buffers: in poll then, it waits for room).
  static func isBlockedWriting(_ pid: Int32, unreadOn ours: Int32?) -> Bool {
    let channel = waitChannel(pid)
    if channel.hasSuffix("pipe_write") || channel == "sock_alloc_send_pskb" || channel == "unix_stream_sendmsg"
      || channel == "sk_stream_wait_memory"
    {
      return true
    }
    guard let ours, channel.hasPrefix("poll_schedule_timeout") || channel == "do_sys_poll" else { return false }
    var byte: UInt8 = 0
    return recv(ours, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 1
  }

  /// True if `fd` is a socket.
  static func isSocket(_ fd: Int32) -> Bool {
    var information = stat()
    return fstat(fd, &information) == 0 && information.st_mode & S_IFMT == S_IFSOCK
  }

  /// The index of the first 64 KiB block of `output` that is not the
  /// worker's `patternBlock(index)` (Tests/TestWorker: the index in its
  /// first 8 bytes, little-endian, then byte (7 * position + 3) mod 256),
  /// or nil if all `blocks` are.
  static func firstBlockNotMatching(_ output: [UInt8], blocks: Int) -> Int? {
    let size = 65536
    guard output.count == blocks * size else { return 0 }
    var expected: [UInt8] = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
    return output.withUnsafeBytes { all in
      (0..<blocks).first { index in
        for i in 0..<8 { expected[i] = UInt8(truncatingIfNeeded: UInt64(index) >> (8 * UInt64(i))) }
        return expected.withUnsafeBytes { memcmp(all.baseAddress! + index * size, $0.baseAddress!, size) } != 0
      }
    }
  }
}
