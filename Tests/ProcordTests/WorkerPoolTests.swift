import CTestSupport
import Foundation
import Testing

@testable import Procord

/// The real tasks of Tests/TestWorker, as a main program sees them.
enum TestWorkerTasks {
  static let sleepWithChild = DelegatedTask<Int, Int>(name: "sleep-with-child", input: .decimal, output: .decimal)
  static let crashOnTenths = DelegatedTask<Int, Int>(name: "crash-on-tenths", input: .decimal, output: .decimal)
  static let environment = DelegatedTask<String, String>(name: "environment", input: .utf8, output: .utf8)
  static let directory = DelegatedTask<String, String>(name: "directory", input: .utf8, output: .utf8)
}

/// The test worker as a real, reusable worker.
let testSocketWorker = WorkerProgram(path: testWorkerPath, arguments: ["--procord-worker"], channel: .socket)

/// The demo's `alloc` task: allocates N MiB, or raises a text error.
private let alloc = DelegatedTask<Int, Int>(name: "alloc", input: .decimal, output: .decimal, error: .text)

/// n! for the small n the tests use.
private func factorial(_ n: Int) -> Int { (1...max(1, n)).reduce(1, *) }

@Suite(.serialized) struct WorkerPoolTests {
  // MARK: - The acceptance runs of the pool issue

  @Test func aHundredThousandTrivialTasksThroughTwoWorkersStartTwoProcesses() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 2, program: demoSocketWorker)
      let inputs = (0..<100_000).map { $0 % 20 }
      let outputs = try await pool.map(DemoTasks.fact, inputs)
      #expect(outputs == inputs.map(factorial))
      let statistics = pool.statistics
      #expect(statistics.workersStarted == 2, "\(statistics)")
      #expect(statistics.tasksFinished == 100_000)
      // Nothing ran short: the pool may grow to its maximum.
      #expect(statistics.startsLimitedByResources == 0 && statistics.maximumWorkersNow == 2, "\(statistics)")
      await pool.shutdown()
      #expect(pool.statistics.isStopped)
    }
  }

  @Test func tenThousandTasksWithOneInTenCrashingEachEndOnceAndThePoolStaysFull() async throws {
    try await expectNoLeaks {
      var configuration = WorkerPool.Configuration(maximumWorkers: 2, minimumWorkers: 2)
      configuration.label = "crashing"
      let pool = try WorkerPool([.local(testSocketWorker)], configuration: configuration)
      var results: [Int: Result<Int, any Error>] = [:]
      var repeated = 0
      for await (index, result) in pool.mapUnordered(TestWorkerTasks.crashOnTenths, 0..<10_000) {
        if results.updateValue(result, forKey: index) != nil { repeated += 1 }
      }
      #expect(results.count == 10_000 && repeated == 0)
      var wrong: [Int] = []
      for (index, result) in results {
        switch result {
        case .success(let output) where index % 10 != 0 && output == index: continue
        case .failure(let error as ProcordError)
        where index % 10 == 0 && error.executionError == .workerDisconnected(.signaled(SIGSEGV)):
          continue
        default: wrong.append(index)
        }
      }
      #expect(wrong.isEmpty, "unexpected results for \(wrong.sorted().prefix(10))")
      // A task delegated now runs after the pool has replaced the last
      // crashed worker (the loop handles both in order).
      #expect(try await pool.run(TestWorkerTasks.crashOnTenths, 1) == 1)
      let statistics = pool.statistics
      #expect(statistics.workers == 2, "\(statistics)")
      #expect(statistics.workersStarted == 2 + 1000, "\(statistics)")
      await pool.shutdown()
    }
  }

  @Test func aDeadlineOfOneSecondEndsASleepWithItsWorkerAndItsChild() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: testSocketWorker)
      let start = ContinuousClock.now
      let process = try pool.delegate(
        TestWorkerTasks.sleepWithChild, 100_000_000, options: DelegationOptions(deadline: .seconds(1)))
      await expectFailure(.deadlineExceeded(.seconds(1))) { _ = try await process.value }
      let elapsed = ContinuousClock.now - start
      expectEndedAtDeadline(elapsed, .seconds(1))
      #expect(
        failure(process.status)?.description
          == "the task ran past its deadline of 1 s and its worker was stopped")
      // The worker was reaped before the status came. Its `sleep`, killed
      // with the worker's process group, was left to us (a subreaper).
      let orphans = childProcesses()
      #expect(orphans.count == 1, "the task's child is not there: \(orphans)")
      for orphan in orphans {
        // Dead already, or about to be; one that lives on (a bug) is ended
        // with SIGUSR1, which shows, instead of a wait of a day.
        if procord_test_wait_for_exit(orphan, 2000) != 1 { kill(orphan, SIGUSR1) }
        var status: Int32 = 0
        #expect(waitpid(orphan, &status, 0) == orphan)
        #expect(status & 0x7f == SIGTERM || status & 0x7f == SIGKILL, "the child was not killed: \(status)")
      }
      await pool.shutdown()
    }
  }

  @Test func aPoolOverTwoServersKeepsServingWhenOneIsStopped() async throws {
    warmUp()
    let first = try ServerUnderTest()
    defer { first.ensureStopped() }
    let second = try ServerUnderTest()
    defer { second.ensureStopped() }
    let pool = try WorkerPool(servers: [first.remote, second.remote], connectionsPerServer: 2)
    let options = DelegationOptions(deadline: nil, isIdempotent: true)
    let run = Task { try await pool.map(DemoTasks.sleep, Array(repeating: 20, count: 300), options: options) }
    // Mid-run: once the first server has tasks running.
    #expect(first.waitForBusyWorkers(1) != nil)
    // The server lets the pool's connections go as soon as their running
    // tasks are done, not at its drain timeout (5 s here).
    let stopping = ContinuousClock.now
    first.stop()
    #expect(ContinuousClock.now - stopping < .seconds(3), "the drain waited for idle connections")
    let outputs = try await run.value
    #expect(outputs == Array(repeating: 20, count: 300))
    await pool.shutdown()
    second.stop()
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  @Test func aWorkerUnderAnAddressSpaceLimitFailsABigAllocationAndThePoolGoesOn() async throws {
    try await expectNoLeaks {
      var program = demoSocketWorker
      program.limits.addressSpace = 256 << 20
      let pool = try WorkerPool(workers: 1, program: program)
      await #expect {
        try await pool.run(alloc, 1024)
      } throws: { error in
        (error as? TextError)?.description == "alloc: cannot allocate 1024 MiB: Cannot allocate memory"
      }
      #expect(try await pool.run(alloc, 16) == 16)
      #expect(pool.statistics.workersStarted == 1)
      await pool.shutdown()
    }
  }

  @Test func localWorkersDieWithinASecondOfTheirMainProgramsSIGKILL() throws {
    warmUp()
    let demo = try ChildProcess(demoPath, ["run", "--pool", "3", "sleep", "600000", "600000", "600000"])
    defer { demo.ensureStopped(signal: SIGKILL) }
    // Its three workers, once each sleeps in its task: another process's
    // state, which nothing here can await.
    var workers: [Int32] = []
    let busy = repeatUntil(deadline: .seconds(10)) {
      workers = childrenOf(demo.pid).filter {
        (try? String(contentsOfFile: "/proc/\($0)/wchan", encoding: .utf8)) == "hrtimer_nanosleep"
      }
      return workers.count == 3
    }
    try #require(busy, "the demo's workers: \(childrenOf(demo.pid)) \(demo.output.text)")
    kill(demo.pid, SIGKILL)
    #expect(demo.waitForExit(timeout: .seconds(5)) != nil)
    let deadline = ContinuousClock.now + .seconds(1)
    for worker in workers {
      let left = max(0, wholeMilliseconds(deadline - ContinuousClock.now))
      #expect(procord_test_wait_for_exit(worker, Int32(left)) == 1, "worker \(worker) outlived its main program")
    }
    for worker in workers {
      kill(worker, SIGKILL)  // if it did not end, do not leave it behind
      _ = waitpid(worker, nil, 0)  // our child now, as a subreaper
    }
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  // MARK: - The pool's API

  @Test func mapReturnsTheOutputsInTheOrderOfTheInputs() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 4, program: demoSocketWorker)
      // Later inputs finish first.
      let inputs = [120, 90, 60, 30, 0, 0, 0, 0]
      #expect(try await pool.map(DemoTasks.sleep, inputs) == inputs)
      await pool.shutdown()
    }
  }

  /// A task's own failure in `map`: no further input is delegated, the
  /// tasks still queued are withdrawn, the running ones finish (their
  /// outputs dropped), and no healthy worker is killed: the pool started
  /// its three workers and no more.
  @Test func mapThrowsTheFirstFailureOnceTheRunningTasksFinishAndKillsNoWorker() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 3, program: demoSocketWorker)
      // Three running (two 1 s sleeps and an input `sleep` refuses at
      // once), three queued behind them, and more never delegated. The
      // worker that failed takes the first queued task at once (100 ms),
      // before `map` hears of the failure: that one runs. The other two
      // (10 s each: run, they would hold the map up for 10 s) are withdrawn.
      let inputs = [1000, 1000, -1, 100] + Array(repeating: 10_000, count: 20)
      let start = ContinuousClock.now
      await expectFailure(.workerUnknownException("sleep: negative duration")) {
        _ = try await pool.map(DemoTasks.sleep, inputs, maxConcurrency: 6)
      }
      let took = ContinuousClock.now - start
      #expect(took >= .milliseconds(900), "returned after \(took), before the running tasks finished")
      #expect(took < .seconds(8), "returned after \(took): the queued tasks ran instead of being withdrawn")
      let statistics = pool.statistics
      #expect(statistics.workersStarted == 3, "workers started: \(statistics.workersStarted)")
      #expect(statistics.tasksFinished <= 6, "tasks finished: \(statistics.tasksFinished)")
      // The pool goes on with the same workers.
      #expect(try await pool.run(DemoTasks.fact, 5) == 120)
      #expect(pool.statistics.workersStarted == 3)
      await pool.shutdown()
    }
  }

  /// Cancelling the task that runs `map` kills the running tasks and
  /// throws `CancellationError` at once.
  @Test func cancellingMapKillsTheRunningTasksAndThrowsCancellationError() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 2, program: demoSocketWorker)
      let start = ContinuousClock.now
      let mapping = Task { try await pool.map(DemoTasks.sleep, [600_000, 600_000, 600_000]) }
      // Once both workers run a task (another process's state: looked at,
      // nothing to await).
      var workers: [Int32] = []
      let running = repeatUntil(deadline: .seconds(10)) {
        workers = childProcesses()
        return workers.count == 2 && pool.statistics.busyWorkers == 2
      }
      try #require(running, "the two tasks never ran: \(pool.statistics)")
      mapping.cancel()
      await #expect(throws: CancellationError.self) { try await mapping.value }
      #expect(ContinuousClock.now - start < .seconds(10), "the running tasks were not killed")
      for pid in workers { #expect(procord_test_wait_for_exit(pid, 5000) != 0, "worker \(pid) still runs") }
      await pool.shutdown()
    }
  }

  @Test func aFullQueueRefusesDelegateAndMakesSubmitWait() async throws {
    try await expectNoLeaks {
      var configuration = WorkerPool.Configuration(maximumWorkers: 1)
      configuration.maximumQueueLength = 1
      let pool = try WorkerPool([.local(demoSocketWorker)], configuration: configuration)
      let running = try pool.delegate(DemoTasks.sleep, 200)
      // Running once it has a worker's pid; until then it still counts as queued.
      #expect(await eventually { running.pid != nil })
      let queued = try pool.delegate(DemoTasks.sleep, 1)
      #expect(throws: WorkerPoolError.queueFull(limit: 1)) { try pool.delegate(DemoTasks.sleep, 2) }
      let waited = try await pool.submit(DemoTasks.sleep, 3)
      #expect(running.isFinished)  // room came when a task finished
      #expect(try await waited.value == 3)
      #expect(try await queued.value == 1)
      await pool.shutdown()
    }
  }

  @Test func gracefulShutdownFinishesQueuedTasksAndRefusesNewOnes() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: demoSocketWorker)
      // One running (it has a worker) and five queued when the shutdown comes.
      let running = try pool.delegate(DemoTasks.sleep, 300)
      #expect(await eventually { running.pid != nil })
      let processes = try (1...5).map { try pool.delegate(DemoTasks.fact, $0) }
      await pool.shutdown(.graceful)
      #expect(try running.run() == 300)
      #expect(throws: WorkerPoolError.shutDown) { try pool.delegate(DemoTasks.fact, 1) }
      for (index, process) in processes.enumerated() { #expect(try process.run() == factorial(index + 1)) }
      #expect(pool.statistics.isStopped)
    }
  }

  @Test func immediateShutdownKillsRunningAndQueuedTasks() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: demoSocketWorker)
      let running = try pool.delegate(DemoTasks.sleep, 600_000)
      let queued = try pool.delegate(DemoTasks.sleep, 1)
      #expect(await eventually { running.pid != nil })
      await pool.shutdown(.immediate)
      #expect(failure(running.status) == .workerKilled)
      #expect(failure(queued.status) == .workerKilled)
    }
  }

  @Test func killingAPooledTaskKillsItsWorkerAndThePoolStartsAnother() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: demoSocketWorker)
      let process = try pool.delegate(DemoTasks.sleep, 600_000)
      #expect(await eventually { process.pid != nil })
      let worker = try #require(process.pid)
      process.kill()
      process.wait()
      #expect(failure(process.status) == .workerKilled)
      #expect(!processExists(worker))
      #expect(try await pool.run(DemoTasks.fact, 5) == 120)
      #expect(pool.statistics.workersStarted == 2)
      await pool.shutdown()
    }
  }

  @Test func tasksSentAheadWaitInTheirWorkerRatherThanInTheQueue() async throws {
    try await expectNoLeaks {
      var configuration = WorkerPool.Configuration(maximumWorkers: 1)
      configuration.tasksSentAhead = 2
      let pool = try WorkerPool([.local(demoSocketWorker)], configuration: configuration)
      // Sent ahead only to a worker known to take task after task.
      #expect(try await pool.run(DemoTasks.fact, 1) == 1)
      let running = try pool.delegate(DemoTasks.sleep, 300)
      let idempotent = DelegationOptions(isIdempotent: true)  // only those go ahead
      let ahead = try [3, 4].map { try pool.delegate(DemoTasks.fact, $0, options: idempotent) }
      #expect(await eventually { pool.statistics.queuedTasks == 0 })
      #expect(!running.isFinished)
      #expect(ahead.allSatisfy { $0.pid == nil })  // not started: no worker of their own yet
      #expect(try await running.value == 300)
      #expect(try await ahead[0].value == 6)
      #expect(try await ahead[1].value == 24)
      #expect(pool.statistics.workersStarted == 1)
      await pool.shutdown()
    }
  }

  @Test func largeBodiesCrossIntactAndTheCallersLaterChangesDoNotReachThem() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: demoSocketWorker)
      // Above the size from which bodies are lent to the C core, not copied.
      let pattern = { (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) } }
      var input = pattern()  // the only reference to its buffer, besides the one lent
      let process = try pool.delegate(DemoTasks.echo, input)
      input[0] = 0  // copy on write: the lent buffer is untouched...
      input[input.count - 1] = 0
      input = []  // ...and stays alive while lent, though nobody here holds it
      #expect(try await process.value == pattern())
      #expect(try await pool.run(DemoTasks.echo, [1, 2, 3]) == [1, 2, 3])
      await pool.shutdown()
    }
  }

  @Test func anOriginalModeWorkerIsUsedOnceAndReplaced() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: demoStdioWorker)
      for n in 1...3 { #expect(try await pool.run(DemoTasks.fact, n) == factorial(n)) }
      #expect(pool.statistics.workersStarted == 3)
      await pool.shutdown()
    }
  }

  @Test func aWorkerIsRetiredAfterItsMaximumOfTasks() async throws {
    try await expectNoLeaks {
      var configuration = WorkerPool.Configuration(maximumWorkers: 1)
      configuration.maximumTasksPerWorker = 2
      let pool = try WorkerPool([.local(demoSocketWorker)], configuration: configuration)
      for n in 1...5 { #expect(try await pool.run(DemoTasks.fact, n) == factorial(n)) }
      #expect(pool.statistics.workersStarted == 3)
      await pool.shutdown()
    }
  }

  @Test func aMissingProgramFailsTheTaskSayingSo() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: WorkerProgram(path: "/nonexistent/worker", channel: .socket))
      await expectFailure(.workerDisconnected(.couldNotStart(program: "/nonexistent/worker", errno: ENOENT))) {
        _ = try await pool.run(DemoTasks.fact, 1)
      }
      await pool.shutdown()
    }
  }

  @Test func aPoolWithNoSourceIsRefused() {
    #expect(throws: ProcordError.self) { try WorkerPool([]) }
  }

  // MARK: - Task control

  @Test func aOneOffDelegationEndsAtItsDeadline() async throws {
    try await expectNoLeaks {
      let start = ContinuousClock.now
      let process = try delegate(
        DemoTasks.sleep, 600_000, to: demoSocketWorker, options: DelegationOptions(deadline: .milliseconds(500)))
      let worker = try #require(process.pid)
      await expectFailure(.deadlineExceeded(.milliseconds(500))) { _ = try await process.value }
      let elapsed = ContinuousClock.now - start
      expectEndedAtDeadline(elapsed, .milliseconds(500))
      #expect(!processExists(worker))
      #expect(
        failure(process.status)?.description
          == "the task ran past its deadline of 500 ms and its worker was stopped")
    }
  }

  @Test func aTaskThatAnswersBeforeItsDeadlineIsUnaffected() throws {
    try expectNoLeaks {
      let process = try delegate(
        DemoTasks.fact, 6, to: demoSocketWorker, options: DelegationOptions(deadline: .seconds(10)))
      #expect(try process.run() == 720)
    }
  }

  @Test func aWorkersEnvironmentAndDirectoryAreTheOnesGiven() throws {
    try expectNoLeaks {
      // A directory of its own: not where the tests run.
      let given = FileManager.default.temporaryDirectory.appendingPathComponent("procord-\(UUID().uuidString)").path
      try FileManager.default.createDirectory(atPath: given, withIntermediateDirectories: false)
      defer { try? FileManager.default.removeItem(atPath: given) }
      var program = testSocketWorker
      program.environment = ["PROCORD_TEST_VALUE": "given", "PATH": "/usr/bin:/bin"]
      program.workingDirectory = given
      let value = try delegate(TestWorkerTasks.environment, "PROCORD_TEST_VALUE", to: program)
      let home = try delegate(TestWorkerTasks.environment, "HOME", to: program)
      let directory = try delegate(TestWorkerTasks.directory, "", to: program)
      #expect(try value.run() == "given")
      #expect(try home.run() == "")  // only what was given
      #expect(try directory.run() == given)
    }
  }

  @Test func aWorkingDirectoryThatDoesNotExistFailsTheStart() throws {
    try expectNoLeaks {
      var program = testSocketWorker
      program.workingDirectory = "/nonexistent/directory"
      let process = try delegate(TestWorkerTasks.directory, "", to: program)
      process.wait()
      #expect(failure(process.status) == .workerDisconnected(.couldNotStart(program: testWorkerPath, errno: ENOENT)))
    }
  }
}

/// Looks at a condition until it holds, for at most 10 s, yielding between
/// looks: for a state of another thread or process that nothing can await.
private func eventually(_ condition: () -> Bool) async -> Bool {
  let deadline = ContinuousClock.now + .seconds(10)
  while ContinuousClock.now < deadline {
    if condition() { return true }
    await Task.yield()
  }
  return false
}
