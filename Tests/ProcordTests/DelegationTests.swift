import CTestSupport
import Foundation
import Testing

@testable import Procord

@Suite struct DelegationTests {
  @Test(arguments: [demoSocketWorker, demoStdioWorker])
  func aTaskSucceedsInBothModes(worker: WorkerProgram) throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.fibo, 10, to: worker)
      #expect(process.pid != nil)
      #expect(try process.run() == 89)
      guard case .success(89) = process.status else {
        Issue.record("status is \(process.status)")
        return
      }
    }
  }

  @Test func anErrorWithACodecIsAnException() throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.fact, -1, to: demoSocketWorker)
      process.wait()
      guard case .exception(let error) = process.status else {
        Issue.record("status is \(process.status)")
        return
      }
      #expect(error as? TextError == TextError("fact: negative argument"))
      #expect(throws: TextError("fact: negative argument")) { try process.run() }
    }
  }

  @Test func anErrorWithoutACodecIsAnUnknownException() throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.fibo, -1, to: demoSocketWorker)
      process.wait()
      #expect(failure(process.status) == .workerUnknownException("fibo: negative argument -1"))
    }
  }

  @Test func anUnknownTaskHasNoWorkerAvailable() throws {
    try expectNoLeaks {
      let nope = DelegatedTask<Int, Int>(name: "nope")
      let process = try delegate(nope, 1, to: demoStdioWorker)
      process.wait()
      #expect(failure(process.status) == .noWorkerAvailable(taskName: "nope"))
      #expect(failure(process.status)?.description.hasPrefix("the worker has no task named \"nope\" (") == true)
    }
  }

  @Test(arguments: [("segv", SIGSEGV), ("abort", SIGABRT)])
  func aWorkerKilledBySignalSaysWhichSignal(how: String, signal: Int32) throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.crash, how, to: demoSocketWorker)
      process.wait()
      #expect(failure(process.status) == .workerDisconnected(.signaled(signal)))
      let name = signal == SIGSEGV ? "SIGSEGV" : "SIGABRT"
      #expect(failure(process.status)?.description.contains(name) == true)
    }
  }

  @Test func aWorkerThatExitsWithoutAnsweringSaysItsExitCode() throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.crash, "exit:3", to: demoStdioWorker)
      process.wait()
      #expect(failure(process.status) == .workerDisconnected(.exited(code: 3)))
    }
  }

  @Test func aProgramThatDoesNotExistCannotStart() throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.fibo, 1, to: .program("/nonexistent/worker"))
      process.wait()
      #expect(process.pid == nil)
      #expect(
        failure(process.status)
          == .workerDisconnected(.couldNotStart(program: "/nonexistent/worker", errno: ENOENT)))
      #expect(failure(process.status)?.description.contains("ENOENT") == true)
    }
  }

  @Test func killEndsTheWorkerAndSaysSo() throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.sleep, 60_000, to: demoSocketWorker)
      let pid = try #require(process.pid)
      process.kill()
      #expect(failure(process.status) == .workerKilled)
      #expect(process.wait(timeout: .seconds(10)))
      #expect(!processExists(pid))
      expectFailure(.workerKilled) { _ = try process.run() }
    }
  }

  @Test func killAfterTheAnswerChangesNothing() throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.fibo, 5, to: demoSocketWorker)
      #expect(try process.run() == 8)
      process.kill()
      guard case .success(8) = process.status else {
        Issue.record("status is \(process.status)")
        return
      }
    }
  }

  @Test func valueIsAwaitable() async throws {
    try await expectNoLeaks {
      let process = try delegate(DemoTasks.fact, 10, to: demoSocketWorker)
      #expect(try await process.value == 3_628_800)
    }
  }

  @Test func cancellingValueKillsTheWorker() async throws {
    try await expectNoLeaks {
      let process = try delegate(DemoTasks.sleep, 60_000, to: demoSocketWorker)
      let pid = try #require(process.pid)
      let waiting = Task { try await process.value }
      waiting.cancel()
      await #expect(throws: CancellationError.self) { try await waiting.value }
      #expect(failure(process.status) == .workerKilled)
      #expect(!processExists(pid))
    }
  }

  @Test func waitForAnyReturnsTheFinishedOnes() throws {
    try expectNoLeaks {
      let slow = try delegate(DemoTasks.sleep, 60_000, to: demoSocketWorker)
      let fast = try delegate(DemoTasks.fibo, 3, to: demoSocketWorker)
      #expect(Waiter.waitForAny([slow, fast]) == [1])
      #expect(try fast.run() == 3)
      #expect(!slow.isFinished)
      slow.kill()
      #expect(Waiter.waitForAll([slow, fast], timeout: .seconds(10)))
    }
  }

  @Test func waitingTimesOut() throws {
    try expectNoLeaks {
      let slow = try delegate(DemoTasks.sleep, 60_000, to: demoSocketWorker)
      #expect(Waiter.waitForAny([slow], timeout: .milliseconds(50)) == [])
      #expect(!Waiter.waitForAll([slow], timeout: .milliseconds(50)))
      #expect(!slow.wait(timeout: .milliseconds(10)))
      guard case .working = slow.update() else {
        Issue.record("status is \(slow.status)")
        return
      }
      slow.kill()
      slow.wait()
    }
  }

  @Test func twoHundredConcurrentDelegations() throws {
    try expectNoLeaks {
      let processes = try (0..<200).map { index in
        try delegate(DemoTasks.echo, Array("payload \(index)".utf8), to: demoSocketWorker)
      }
      #expect(Waiter.waitForAll(processes, timeout: .seconds(120)))
      for (index, process) in processes.enumerated() {
        #expect(try process.run() == Array("payload \(index)".utf8))
      }
    }
  }

  @Test func aLargePayloadTravelsIntactBothWays() throws {
    try expectNoLeaks {
      let payload = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
      let process = try delegate(DemoTasks.echo, payload, to: demoSocketWorker)
      #expect(try process.run() == payload)
    }
  }

  @Test func anAnswerAboveTheMaximumMessageSizeIsTooLong() throws {
    try expectNoLeaks {
      Limits.maxMessageSize = 1 << 20
      defer { Limits.maxMessageSize = 0 }
      let process = try delegate(DemoTasks.echo, [UInt8](repeating: 7, count: 2 << 20), to: demoSocketWorker)
      process.wait()
      #expect(failure(process.status) == .workerDisconnected(.protocolError(.messageTooLong, reportedByWorker: false)))
    }
    #expect(Limits.maxMessageSize == 64 << 20)
  }

  @Test func workersDelegateToWorkers() throws {
    try expectNoLeaks {
      let value = try delegate(DemoTasks.rfibo, 8, to: demoSocketWorker).run()
      #expect(value == 34)
    }
  }

  @Test func anIdleMainProgramUsesNoCPU() throws {
    try expectNoLeaks {
      let process = try delegate(DemoTasks.sleep, 1_000, to: demoSocketWorker)
      let start = cpuTime()
      let clock = ContinuousClock.now
      #expect(try process.run() == 1_000)
      let elapsed = ContinuousClock.now - clock
      let used = cpuTime() - start
      // Well under 5% of a core while the worker sleeps: nothing polls.
      #expect(used < elapsed * 0.05, "used \(used) of CPU in \(elapsed)")
    }
  }
}

/// User plus system CPU time of this process so far.
private func cpuTime() -> Duration {
  var usage = rusage()
  getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
  let micros =
    Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000
    + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
  return .microseconds(micros)
}

/// Behaviours found in review: each was a bug once.
@Suite struct DelegationEdgeTests {
  @Test func aWorkerThatRefusesTheInputFromItsSizeIsHeard() throws {
    try expectNoLeaks {
      // The worker answers `1E3` and closes while we are still writing 1 MB:
      // its answer must win over our broken pipe.
      let small = WorkerProgram(path: demoPath, arguments: ["--procord-worker", "--procord-max-message-size", "10"])
      let process = try delegate(DemoTasks.echo, [UInt8](repeating: 1, count: 1 << 20), to: small)
      process.wait()
      #expect(failure(process.status) == .workerDisconnected(.protocolError(.messageTooLong, reportedByWorker: true)))
    }
  }

  @Test func workersThatExitAtOnceNeverCrashTheMainProgram() throws {
    try expectNoLeaks {
      let processes = try (0..<20).map { _ in
        try delegate(DemoTasks.fibo, 1, to: WorkerProgram(path: "/bin/true"))
      }
      #expect(Waiter.waitForAll(processes, timeout: .seconds(30)))
      for process in processes {
        #expect(failure(process.status) == .workerDisconnected(.exited(code: 0)))
      }
    }
  }

  /// 1 is also where the protocol goes in the child: as the worker's
  /// stderr, it must not land on the protocol. 0 means ours (stderr), as in
  /// a zero-initialized C struct, never our stdin.
  @Test(arguments: zip([Int32(1), Int32(0)], [Int32(1), Int32(2)]))
  func aDescriptorCanBeTheWorkersStandardError(given: Int32, landsOn descriptor: Int32) throws {
    try expectNoLeaks {
      var pipe: [Int32] = [0, 0]
      #expect(Glibc.pipe(&pipe) == 0)
      let saved = dup(descriptor)
      dup2(pipe[1], descriptor)
      let process = try delegate(
        DelegatedTask<Int, Int>(name: "probe"), 1,
        to: WorkerProgram(path: testWorkerPath, arguments: ["stderr-then-answer"], standardError: given))
      process.wait()
      dup2(saved, descriptor)
      close(saved)
      close(pipe[1])
      var buffer = [UInt8](repeating: 0, count: 16)
      let count = read(pipe[0], &buffer, 16)
      close(pipe[0])
      #expect(try process.run() == 42)
      #expect(count == 5 && Array(buffer[0..<5]) == Array("noise".utf8))
    }
  }

  @Test func aNegativeTimeoutDoesNotWaitForever() throws {
    try expectNoLeaks {
      let slow = try delegate(DemoTasks.sleep, 60_000, to: demoSocketWorker)
      #expect(!slow.wait(timeout: .milliseconds(-5)))
      #expect(Waiter.waitForAny([slow], timeout: .seconds(-2)) == [])
      slow.kill()
      slow.wait()
    }
  }

  @Test func aWorkerDiesWithAMainProgramKilledBySignal() throws {
    // procord-demo delegates a ten-minute sleep, then dies of SIGKILL (no
    // atexit runs): its worker, reparented to us (a subreaper), must end by
    // itself, killed by its watchdog (or, if the task had not arrived yet,
    // by the end of its stream).
    warmUp()  // makes us the subreaper
    let demo = Process()
    demo.executableURL = URL(fileURLWithPath: demoPath)
    demo.arguments = ["run", "sleep", "600000"]
    try demo.run()
    let worker = try #require(waitForChild(of: demo.processIdentifier))
    // Into its task: sleeping in nanosleep (a state of another process, which
    // nothing here can await).
    #expect(eventually { wchan(of: worker) == "hrtimer_nanosleep" }, "the task never started")
    kill(demo.processIdentifier, SIGKILL)
    demo.waitUntilExit()
    #expect(procord_test_wait_for_exit(worker, 10_000) == 1, "the worker outlived its main program")
    kill(worker, SIGKILL)  // if it did not end, do not leave it behind
    var status: Int32 = 0
    #expect(waitpid(worker, &status, 0) == worker)  // our child now
    #expect(childProcesses().isEmpty)
  }
}

/// The first child of `pid`, once it has one (its worker), read from /proc.
private func waitForChild(of pid: Int32) -> Int32? {
  var child: Int32?
  _ = eventually {
    child = childrenOf(pid).first  // started by its loop thread
    return child != nil
  }
  return child
}

/// Where `pid` sleeps in the kernel.
private func wchan(of pid: Int32) -> String? {
  try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)
}

/// Looks at a condition of another process until it holds, for at most 10 s.
/// For states no descriptor or call can await; yields between looks.
private func eventually(_ condition: () -> Bool) -> Bool {
  let deadline = ContinuousClock.now + .seconds(10)
  while ContinuousClock.now < deadline {
    if condition() { return true }
    sched_yield()
  }
  return false
}
