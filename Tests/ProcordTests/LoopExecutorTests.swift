import CProcord
import Testing

@testable import Procord

@Suite(.serialized) struct LoopExecutorTests {
  @Test func codeWithTheLoopExecutorPreferenceRunsOnTheLoopsThread() async {
    let onLoop = await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
      procord_loop_is_current_thread(Runtime.shared.loop) != 0
    }
    #expect(onLoop)
    #expect(procord_loop_is_current_thread(Runtime.shared.loop) == 0)
  }

  @Test func pooledTasksAwaitedOnTheLoopGetTheirOutputs() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 2, program: demoSocketWorker)
      let outputs = try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
        var outputs: [Int] = []
        for n in 1...200 {
          outputs.append(try await pool.run(DemoTasks.fact, n % 10))
          #expect(procord_loop_is_current_thread(Runtime.shared.loop) != 0, "resumed off the loop")
        }
        return outputs
      }
      #expect(outputs == (1...200).map { (1...max(1, $0 % 10)).reduce(1, *) })
      await pool.shutdown()
    }
  }

  /// Code on the loop that keeps yielding keeps queueing work for the loop,
  /// which must still poll its descriptors in between (or the answer it
  /// waits for would never be read).
  @Test func codeThatKeepsYieldingOnTheLoopDoesNotStarveItsIO() async throws {
    try await expectNoLeaks {
      let pool = try WorkerPool(workers: 1, program: demoSocketWorker)
      let finished = try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
        let process = try pool.delegate(DemoTasks.fact, 6)
        let deadline = ContinuousClock.now + .seconds(20)
        while !process.isFinished && ContinuousClock.now < deadline {
          await Task.yield()
          // On the loop still: the yield re-queued this job there.
          if procord_loop_is_current_thread(Runtime.shared.loop) == 0 { return false }
        }
        return process.isFinished
      }
      #expect(finished, "the loop never read the answer while code on it kept yielding")
      await pool.shutdown()
    }
  }

  @Test func aOneOffDelegationFromTheLoopStartsItsWorkerThere() async throws {
    try await expectNoLeaks {
      let (output, onLoop) = try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
        let output = try await delegate(DemoTasks.fact, 5, to: demoSocketWorker).value
        return (output, procord_loop_is_current_thread(Runtime.shared.loop) != 0)
      }
      #expect(output == 120)
      #expect(onLoop)
    }
  }
}
