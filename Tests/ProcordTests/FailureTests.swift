// What the main program makes of a worker that misbehaves: each test starts
// the fake worker of Tests/TestWorker in one of its modes (stdin/stdout
// channel), waits for it, and checks the exact final status, and that
// nothing (descriptor, child process) is left behind.
import Foundation
import Testing

@testable import Procord

@Suite struct FailureTests {
  /// The task every fake worker is given: JSON Int to JSON Int.
  private static let probe = DelegatedTask<Int, Int>(name: "probe")
  /// A task with raw byte input, for inputs bigger than a pipe.
  private static let bytesProbe = DelegatedTask<[UInt8], Int>(
    name: "bytes-probe", input: .bytes, output: .json)

  // MARK: - The worker goes away before answering

  @Test func workerThatExitsAtOnceIsDisconnectedWithItsExitCode() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("exit-at-once")
      #expect(failure(process.status) == .workerDisconnected(.exited(code: 0)))
      #expect(
        failure(process.status)?.description
          == "worker disconnected: the worker exited with code 0 without answering")
    }
  }

  @Test func workerThatExitsAfterTheNameIsDisconnectedWithItsExitCode() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("exit-after-name")
      #expect(failure(process.status) == .workerDisconnected(.exited(code: 0)))
    }
  }

  /// A small input is all in the pipe when the worker exits (read side sees
  /// the end); a 4 MiB one is still being written (write side sees EPIPE).
  /// Either way the status names the exit code.
  @Test(arguments: [16, 4 << 20])
  func workerThatExitsDuringTheInputIsDisconnectedWithItsExitCode(inputSize: Int) throws {
    try expectNoLeaks {
      let input = [UInt8](repeating: UInt8(ascii: "a"), count: inputSize)
      let process = try delegate(
        Self.bytesProbe, input, to: FailureFixture.worker("exit-during-input"))
      FailureFixture.finish(process)
      #expect(failure(process.status) == .workerDisconnected(.exited(code: 5)))
      #expect(failure(process.status)?.description.contains("exited with code 5") == true)
    }
  }

  @Test func workerThatCrashesIsDisconnectedWithTheSignal() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("crash-after-name")
      #expect(failure(process.status) == .workerDisconnected(.signaled(SIGSEGV)))
      let description = failure(process.status)?.description ?? ""
      #expect(description.contains("SIGSEGV"), "\(description)")
      #expect(description.contains("Segmentation fault"), "\(description)")
    }
  }

  // MARK: - An answer, whatever happens next

  /// The terminal frame decides: exiting with an error code afterwards does
  /// not undo the answer, and a late kill() is a no-op.
  @Test func answerFollowedByAnErrorExitIsStillASuccess() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("answer-then-exit", "3")
      #expect(FailureFixture.output(process.status) == 42)
      process.kill()
      #expect(FailureFixture.output(process.status) == 42)
      #expect(try process.run() == 42)
    }
  }

  /// `P` to stdout and stderr are printed, a `P` to an unregistered custom
  /// destination is dropped, `F` is accepted; then the answer counts.
  @Test func printsAndFlushesBeforeTheAnswerArePassedOn() throws {
    try expectNoLeaks {
      let (process, printed) = try FailureFixture.capturingStandardStreams {
        () throws -> DelegatedProcess<Int> in
        let process = try delegate(
          Self.probe, 7, to: FailureFixture.worker("print-then-answer"))
        process.wait(timeout: .seconds(10))
        return process
      }
      FailureFixture.finish(process)
      #expect(FailureFixture.output(process.status) == 42)
      // Exactly these, each on its own stream; "to nowhere" on neither.
      #expect(printed.output == "message", "stdout: \(printed.output)")
      #expect(printed.error == "to stderr\n", "stderr: \(printed.error)")
    }
  }

  // MARK: - Workers that do not go away

  /// The worker answers and closes stdout but does not exit: the main
  /// program gives it its 2 s grace period, kills it, and keeps the answer.
  @Test func answerFromALingeringWorkerArrivesAfterTheGracePeriod() throws {
    try expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FailureFixture.worker("answer-then-linger"))
      let elapsed = FailureFixture.finish(process)
      #expect(elapsed < .seconds(6), "took \(elapsed)")
      #expect(elapsed >= .seconds(1), "finished before the grace period: \(elapsed)")
      #expect(FailureFixture.output(process.status) == 42)
      #expect(process.pid.map(processExists) == false)
    }
  }

  /// The worker closes stdout without answering and does not exit: the
  /// main program kills it after the grace period; the status says so.
  @Test func lingeringWorkerThatClosedWithoutAnsweringIsKilledAfterTheGracePeriod() throws {
    try expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FailureFixture.worker("close-and-linger"))
      let elapsed = FailureFixture.finish(process)
      #expect(elapsed < .seconds(6), "took \(elapsed)")
      #expect(elapsed >= .seconds(1), "killed before its grace period: \(elapsed)")
      // Procord's own SIGKILL is not what happened to the worker: it hung up.
      #expect(failure(process.status) == .workerDisconnected(.closedWithoutAnswer))
      #expect(process.pid.map(processExists) == false)
    }
  }

  /// The worker answers and exits, but a grandchild (`sleep 30`) holds its
  /// stdout open: the main program must not wait for it, and must not leave
  /// it running either.
  @Test func grandchildHoldingTheStreamIsEndedWithTheWorker() throws {
    try expectNoLeaks {
      let process = try delegate(
        Self.probe, 7, to: FailureFixture.worker("answer-with-grandchild"))
      let elapsed = FailureFixture.finish(process)
      #expect(elapsed < .seconds(6), "took \(elapsed)")
      #expect(FailureFixture.output(process.status) == 42)
      // The orphaned grandchild was reparented to this process (a subreaper,
      // see Support.swift) and killed with the worker's process group: it is
      // our child now, and must die of that SIGKILL.
      let orphans = childProcesses()
      #expect(orphans.count == 1, "the grandchild was not there: \(orphans)")
      for orphan in orphans {
        var status: Int32 = 0
        #expect(waitpid(orphan, &status, 0) == orphan)
        #expect(status & 0x7f == SIGKILL, "the grandchild was not killed: status \(status)")
      }
    }
  }

  @Test func killingAHangingWorkerReportsItKilledAndReapsIt() throws {
    try expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FailureFixture.worker("hang"))
      let pid = try #require(process.pid)
      #expect(!process.wait(timeout: .milliseconds(200)))
      #expect(!process.status.isFinished)
      #expect(processExists(pid))
      process.kill()
      #expect(failure(process.status) == .workerKilled)
      FailureFixture.finish(process)
      #expect(failure(process.status) == .workerKilled)
      #expect(failure(process.status)?.description == "the worker was killed by this program")
      #expect(!processExists(pid))
    }
  }

  /// A program that forgets `Worker.runIfRequested` runs its `main` in each
  /// worker, which delegates again: copies without end. Procord refuses the
  /// worker's delegation at once, says what to do there, and tells the main
  /// program too, as the worker's answer.
  @Test func aWorkerThatDelegatesBeforeServingIsRefusedAtOnce() throws {
    try expectNoLeaks {
      var ends: [Int32] = [0, 0]
      try #require(pipe(&ends) == 0)
      for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
      let process = try delegate(
        DelegatedTask<Int, Int>(name: "probe"), 7,
        to: WorkerProgram(path: testWorkerPath, arguments: ["delegate-before-serving"], standardError: ends[1]))
      FailureFixture.finish(process)
      close(ends[1])
      var said = [UInt8](repeating: 0, count: 4096)
      let count = read(ends[0], &said, said.count)
      close(ends[0])
      let text = String(decoding: said[0..<max(0, count)], as: UTF8.self)
      guard case .workerUnknownException(let answer)? = failure(process.status) else {
        Issue.record("not the worker's word: \(process.status); the worker said: \(text)")
        return
      }
      #expect(answer.contains("started as a Procord worker and delegates before serving"), "\(answer)")
      #expect(answer.contains("Worker.runIfRequested(tasks:)"), "\(answer)")
      // Its own delegation was refused: no second generation.
      #expect(text.hasPrefix("refused: "), "\(text)")
      #expect(text.contains("started as a Procord worker and delegates before serving"), "\(text)")
      #expect(text.contains("Worker.runIfRequested(tasks:)"), "\(text)")
    }
  }

  /// A program that reaps children itself (a SIGCHLD handler calling
  /// `waitpid(-1)`) may take a worker's status first: the worker aborted, so
  /// nothing may say it exited cleanly. The reap happens on the loop's
  /// thread, before the loop can look, so the program always wins the race.
  @Test func aWorkerTheProgramReapedItselfIsReportedAsReapedElsewhere() async throws {
    try await expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FailureFixture.worker("hang"))
      let pid = try #require(process.pid)
      let status = await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
        kill(pid, SIGABRT)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
      }
      #expect(status & 0x7f == SIGABRT)
      FailureFixture.finish(process)
      #expect(failure(process.status) == .workerDisconnected(.reapedElsewhere))
      #expect(failure(process.status)?.description.contains("reaped it first") == true)
    }
  }

  /// Cancelling the task that awaits `value` kills the worker; `value`
  /// throws `CancellationError` only once the worker has been reaped (the
  /// status says `workerKilled`).
  @Test func cancellingTheAwaitKillsAHangingWorker() async throws {
    try await expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FailureFixture.worker("hang"))
      let pid = try #require(process.pid)
      let waiting = Task { try await process.value }
      waiting.cancel()
      await #expect(throws: CancellationError.self) { try await waiting.value }
      #expect(failure(process.status) == .workerKilled)
      #expect(!processExists(pid))
    }
  }

  /// The async way reports a crash as the same error the status holds.
  @Test func awaitingACrashedWorkerThrowsTheDisconnection() async throws {
    try await expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: FailureFixture.worker("crash-after-name"))
      await expectFailure(.workerDisconnected(.signaled(SIGSEGV))) {
        _ = try await process.value
      }
      #expect(failure(process.status) == .workerDisconnected(.signaled(SIGSEGV)))
    }
  }

  // MARK: - Protocol errors

  @Test func garbageIsAnIllFormedMessage() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("garbage")
      #expect(failure(process.status) == FailureFixture.protocolError(.illFormedMessage))
      let description = failure(process.status)?.description ?? ""
      #expect(description.hasPrefix("worker disconnected: protocol error: "), "\(description)")
    }
  }

  /// The protocol error comes first and is the cause, even when the worker
  /// dies right after it (PROTOCOL.md: an ill-formed frame is a
  /// disconnection carrying the protocol error).
  @Test func garbageFollowedByACrashIsStillAnIllFormedMessage() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("garbage-then-crash")
      #expect(failure(process.status) == FailureFixture.protocolError(.illFormedMessage))
    }
  }

  /// 20 digits worth only 1: the digit count alone is too long, and the
  /// main program says so without waiting for a KIND.
  @Test func twentyDigitSizeIsTooLong() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("too-long")
      #expect(failure(process.status) == FailureFixture.protocolError(.messageTooLong))
    }
  }

  /// A SIZE above the maximum is too long from the SIZE alone, without
  /// waiting for a body that never comes.
  @Test func sizeAboveTheMaximumIsTooLong() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("size-above-limit")
      #expect(failure(process.status) == FailureFixture.protocolError(.messageTooLong))
    }
  }

  @Test func errorFrameZeroMeansNoWorkerAvailable() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("error-frame", "0")
      #expect(failure(process.status) == .noWorkerAvailable(taskName: "probe"))
      #expect(failure(process.status)?.description.hasPrefix("the worker has no task named \"probe\" (") == true)
    }
  }

  @Test(arguments: 1...5)
  func otherErrorFramesAreProtocolErrorsReportedByTheWorker(code: Int) throws {
    try expectNoLeaks {
      let process = try delegate(
        Self.probe, 7, to: FailureFixture.worker("error-frame", String(code)))
      FailureFixture.finish(process)
      let error = try #require(ProtocolError(rawValue: code))
      #expect(
        failure(process.status) == .workerDisconnected(.protocolError(error, reportedByWorker: true)))
      let description = failure(process.status)?.description ?? ""
      #expect(
        description == "worker disconnected: the worker reported a protocol error: \(error)",
        "\(description)")
    }
  }

  @Test func errorFrameWithAnUnknownCodeIsIllFormed() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("bad-error-frame")
      #expect(failure(process.status) == FailureFixture.protocolError(.illFormedMessage))
    }
  }

  @Test(arguments: ["unexpected-task", "reusable-before-answer"])
  func frameThatOnlyTheMainProgramSendsIsUnexpected(mode: String) throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe(mode)
      #expect(failure(process.status) == FailureFixture.protocolError(.unexpectedMessage))
    }
  }

  @Test func outputTheCodecCannotDecodeIsUndecodable() throws {
    try expectNoLeaks {
      let process = try FailureFixture.probe("undecodable")
      guard case .error(.workerDisconnected(.undecodableOutput(let reason))) = process.status else {
        Issue.record("expected undecodableOutput, got \(process.status)")
        return
      }
      #expect(!reason.isEmpty)
      let description = failure(process.status)?.description ?? ""
      #expect(
        description.hasPrefix("worker disconnected: the worker's output could not be decoded: "),
        "\(description)")
      #expect(throws: ProcordError.self) { try process.run() }
    }
  }

  // MARK: - Workers that cannot start

  @Test func programThatDoesNotExistCouldNotStart() throws {
    try expectNoLeaks {
      let path = "/nonexistent/procord-no-such-worker"
      let process = try delegate(Self.probe, 7, to: WorkerProgram(path: path))
      #expect(process.pid == nil)
      FailureFixture.finish(process)
      #expect(failure(process.status) == .workerDisconnected(.couldNotStart(program: path, errno: ENOENT)))
      #expect(
        failure(process.status)?.description
          == "worker disconnected: could not start \(path): posix_spawn: ENOENT (No such file or directory)")
    }
  }

  @Test func directoryCouldNotStart() throws {
    try expectNoLeaks {
      let path = FileManager.default.temporaryDirectory.path
      let process = try delegate(Self.probe, 7, to: WorkerProgram(path: path))
      #expect(process.pid == nil)
      FailureFixture.finish(process)
      #expect(failure(process.status) == .workerDisconnected(.couldNotStart(program: path, errno: EACCES)))
      #expect(failure(process.status)?.description.contains("EACCES") == true)
    }
  }

  @Test func fileThatIsNotExecutableCouldNotStart() throws {
    let path = FileManager.default.temporaryDirectory
      .appendingPathComponent("procord-not-executable-\(getpid())").path
    #expect(
      FileManager.default.createFile(
        atPath: path, contents: Data("#!/bin/sh\nexit 0\n".utf8),
        attributes: [.posixPermissions: 0o644]))
    defer { try? FileManager.default.removeItem(atPath: path) }
    try expectNoLeaks {
      let process = try delegate(Self.probe, 7, to: WorkerProgram(path: path))
      #expect(process.pid == nil)
      FailureFixture.finish(process)
      #expect(failure(process.status) == .workerDisconnected(.couldNotStart(program: path, errno: EACCES)))
    }
  }

  // MARK: - Isolation

  /// A crashing and a garbage-speaking worker, side by side with three good
  /// ones: only the bad ones fail.
  @Test func badWorkersDoNotDisturbGoodOnes() throws {
    try expectNoLeaks {
      let crash = try delegate(DemoTasks.fibo, 7, to: FailureFixture.worker("crash-after-name"))
      let garbage = try delegate(DemoTasks.fibo, 7, to: FailureFixture.worker("garbage"))
      let good = try [10, 20, 30].map { try delegate(DemoTasks.fibo, $0, to: demoStdioWorker) }
      let all: [AnyDelegatedProcess] = [crash, garbage] + good
      let finished = Waiter.waitForAll(all, timeout: .seconds(10))
      #expect(finished)
      if !finished {
        all.forEach { $0.kill() }
        Waiter.waitForAll(all)
      }
      #expect(failure(crash.status) == .workerDisconnected(.signaled(SIGSEGV)))
      #expect(
        failure(garbage.status)
          == .workerDisconnected(.protocolError(.illFormedMessage, reportedByWorker: false)))
      #expect(good.map { FailureFixture.output($0.status) } == [89, 10946, 1_346_269])
    }
  }
}

/// Helpers of this file (named so as not to collide with other test files;
/// CrashEvidenceTests captures the standard streams with them too).
enum FailureFixture {
  /// The fake worker in `mode`, on stdin/stdout.
  static func worker(_ mode: String, _ argument: String...) -> WorkerProgram {
    WorkerProgram(path: testWorkerPath, arguments: [mode] + argument)
  }

  /// Delegates `probe` with input 7 to the fake worker in `mode` and waits
  /// for it (see ``finish(_:within:sourceLocation:)``).
  static func probe(
    _ mode: String, _ argument: String..., sourceLocation: SourceLocation = #_sourceLocation
  ) throws -> DelegatedProcess<Int> {
    let process = try delegate(
      DelegatedTask<Int, Int>(name: "probe"), 7,
      to: WorkerProgram(path: testWorkerPath, arguments: [mode] + argument))
    finish(process, sourceLocation: sourceLocation)
    return process
  }

  /// The disconnection for a protocol error that the main program found.
  static func protocolError(_ error: ProtocolError) -> ExecutionError {
    .workerDisconnected(.protocolError(error, reportedByWorker: false))
  }

  /// Waits for `process`, at most `limit`; past it, records an issue and
  /// kills the worker so that nothing is left behind. Returns how long the
  /// wait took.
  @discardableResult
  static func finish(
    _ process: AnyDelegatedProcess, within limit: Duration = .seconds(10),
    sourceLocation: SourceLocation = #_sourceLocation
  ) -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    let returned = process.wait(timeout: limit)
    let elapsed = clock.now - start
    #expect(returned, "the process had not finished after \(limit)", sourceLocation: sourceLocation)
    if !returned {
      process.kill()
      process.wait()
    }
    #expect(process.isFinished, sourceLocation: sourceLocation)
    return elapsed
  }

  /// The output of a successful status, or nil.
  static func output<Output>(_ status: Status<Output>) -> Output? {
    if case .success(let output) = status { return output }
    return nil
  }

  /// Runs `body` with this process's stdout and stderr sent to temporary
  /// files, and returns what was written to each. No expectation may be
  /// checked inside `body` (its report would be captured too).
  static func capturingStandardStreams<Result>(_ body: () throws -> Result) throws
    -> (Result, (output: String, error: String))
  {
    fflush(nil)
    let directory = FileManager.default.temporaryDirectory.path
    var files: [(path: String, fd: Int32, saved: Int32)] = []
    for (name, stream) in [("out", Int32(1)), ("err", Int32(2))] {
      var template = Array("\(directory)/procord-failure-\(name)-XXXXXX".utf8CString)
      let fd = mkstemp(&template)
      guard fd >= 0 else { throw ProcordError(code: .systemError, message: "mkstemp: errno \(errno)") }
      let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
      let saved = dup(stream)
      dup2(fd, stream)
      files.append((path, fd, saved))
    }
    func restore() -> [String] {
      fflush(nil)
      return zip(files, [Int32(1), Int32(2)]).map { file, stream in
        dup2(file.saved, stream)
        close(file.saved)
        close(file.fd)
        let text = (try? String(contentsOfFile: file.path, encoding: .utf8)) ?? ""
        unlink(file.path)
        return text
      }
    }
    let result: Result
    do { result = try body() } catch {
      _ = restore()
      throw error
    }
    let texts = restore()
    return (result, (texts[0], texts[1]))
  }
}
