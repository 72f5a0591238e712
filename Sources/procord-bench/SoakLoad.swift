import Procord
import Synchronization

/// The soak's load: lanes that each delegate one task after another, so
/// that at most one task per lane is in flight, through a local pool, a
/// pool over the worker server, and one-off delegations to both.
final class SoakLoad: Sendable {
  private let localPool: WorkerPool
  private let serverPool: WorkerPool
  private let server: RemoteServer
  private let tally: SoakTally
  private let lanes: Int
  private let mix = SoakMix()
  private let state: Mutex<State>

  private struct State {
    var stopping = false
    var paused = false
    var lanesLeft = 0
    /// Per lane: when its current task started, and what it is.
    var running: [(start: UInt64, plan: SoakPlan)?]
    /// Per lane: paused (or ended) with nothing kept from its last task.
    var parked: [Bool]
  }

  /// A task whose outcome is recorded one task later, once its status has
  /// been read again.
  private struct Settled {
    var outcome: SoakOutcome
    var finalStatus: String
    var laterStatus: () -> String
  }

  init(localPool: WorkerPool, serverPool: WorkerPool, server: RemoteServer, tally: SoakTally, lanes: Int) {
    self.localPool = localPool
    self.serverPool = serverPool
    self.server = server
    self.tally = tally
    self.lanes = lanes
    state = Mutex(State(running: Array(repeating: nil, count: lanes), parked: Array(repeating: false, count: lanes)))
  }

  /// Starts the lanes; each draws its tasks from a generator seeded from
  /// `seed`.
  func start(seed: UInt64) {
    var seeds = SoakRandom(seed: seed)
    state.withLock { $0.lanesLeft = lanes }
    for lane in 0..<lanes {
      let laneSeed = seeds.next()
      Task { await self.runLane(lane, seed: laneSeed) }
    }
  }

  /// Lets the lanes finish their tasks and start no more; returns once no
  /// task is in flight and none is kept (true), or when `timeout` has
  /// passed (false).
  func pause(timeout: Duration) async -> Bool {
    state.withLock { $0.paused = true }
    return await waitUntil(timeout) { $0.parked.allSatisfy { $0 } }
  }

  func resume() { state.withLock { $0.paused = false } }

  /// Ends the lanes after their current task; returns once all have ended
  /// (true), or when `timeout` has passed (false).
  func stop(timeout: Duration) async -> Bool {
    state.withLock { $0.stopping = true }
    return await waitUntil(timeout) { $0.lanesLeft == 0 }
  }

  /// The tasks in flight for longer than `seconds`, described.
  func stuck(longerThan seconds: Double) -> [String] {
    let now = nowNanoseconds()
    return state.withLock { state in
      state.running.compactMap { entry in
        guard let entry, Double(now - entry.start) / 1e9 > seconds else { return nil }
        return "\(entry.plan.route.rawValue), \(entry.plan.summary): running for "
          + "\(fixed(Double(now - entry.start) / 1e9, digits: 0)) s"
      }
    }
  }

  private func waitUntil(_ timeout: Duration, _ holds: (inout State) -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !state.withLock({ holds(&$0) }) {
      if ContinuousClock.now >= deadline { return false }
      try? await Task.sleep(for: .milliseconds(10))
    }
    return true
  }

  // MARK: A lane

  private func runLane(_ lane: Int, seed: UInt64) async {
    var random = SoakRandom(seed: seed)
    var previous: Settled?
    while true {
      let plan = mix.next(&random)
      let go = state.withLock { state -> Bool? in
        if state.stopping { return nil }
        if state.paused { return false }
        state.running[lane] = (nowNanoseconds(), plan)
        state.parked[lane] = false
        return true
      }
      guard let go else { break }
      guard go else {
        // Nothing kept while paused: the last task's output would count
        // in the quiescent sample.
        if let kept = previous { record(kept) }
        previous = nil
        state.withLock { $0.parked[lane] = true }
        try? await Task.sleep(for: .milliseconds(5))
        continue
      }
      tally.delegating()
      let settled = await run(plan)
      if let previous { record(previous) }
      previous = settled
      state.withLock { $0.running[lane] = nil }
    }
    if let previous { record(previous) }
    state.withLock { state in
      state.lanesLeft -= 1
      state.parked[lane] = true
    }
  }

  private func record(_ settled: Settled) {
    tally.record(settled.outcome.confirmed(laterStatus: settled.laterStatus(), finalStatus: settled.finalStatus))
  }

  private func run(_ plan: SoakPlan) async -> Settled {
    // Only the tasks that may run twice are idempotent: the pools may
    // retry them after a worker is lost, and send them ahead.
    let idempotent = DelegationOptions(isIdempotent: true)
    switch plan.input {
    case .echo(let size, let seed):
      let input = SoakPayload.bytes(size: size, seed: seed)
      return await settle(plan, BenchTasks.echo.delegated, input, options: idempotent) { output in
        output == input ? nil : "echo of \(size) bytes came back as \(output.count) bytes, not the same"
      }
    case .fibo(let n):
      let expected = SoakTasks.fibonacci(n)
      return await settle(plan, SoakTasks.fibo.delegated, n, options: idempotent) { output in
        output == expected ? nil : "fibo(\(n)) came back as \(output), not \(expected)"
      }
    case .crash(let how):
      return await settle(plan, SoakTasks.crash.delegated, how)
    case .sleepPastDeadline(let milliseconds):
      let options = DelegationOptions(deadline: .milliseconds(milliseconds))
      return await settle(plan, BenchTasks.sleep.delegated, 60_000, options: options)
    case .kill(let milliseconds):
      return await settle(plan, BenchTasks.sleep.delegated, 60_000, killAfter: milliseconds)
    }
  }

  /// Delegates, kills the task after `killAfter` ms if asked, waits for it,
  /// and classifies its final status.
  private func settle<Input, Output>(
    _ plan: SoakPlan, _ task: DelegatedTask<Input, Output>, _ input: Input,
    options: DelegationOptions = DelegationOptions(), killAfter: Int? = nil,
    check: (Output) -> String? = { _ in nil }
  ) async -> Settled {
    let process: DelegatedProcess<Output>
    do {
      process = try launch(task, input, options: options, on: plan.route)
    } catch {
      let outcome = SoakOutcome.refused(plan, error)
      return Settled(outcome: outcome, finalStatus: outcome.status, laterStatus: { outcome.status })
    }
    tally.accepted(by: plan.route)
    var atKill: Status<Output>?
    if let killAfter {
      if killAfter > 0 { try? await Task.sleep(for: .milliseconds(killAfter)) }
      process.kill()
      atKill = process.status
    }
    _ = try? await process.value
    let final = process.status
    return Settled(
      outcome: SoakOutcome.classify(plan, final: final, atKill: atKill, check: check),
      finalStatus: SoakOutcome.statusLabel(final), laterStatus: { SoakOutcome.statusLabel(process.status) })
  }

  private func launch<Input, Output>(
    _ task: DelegatedTask<Input, Output>, _ input: Input, options: DelegationOptions, on route: SoakRoute
  ) throws -> DelegatedProcess<Output> {
    switch route {
    case .localPool: return try localPool.delegate(task, input, options: options)
    case .serverPool: return try serverPool.delegate(task, input, options: options)
    case .oneOffServer: return try delegate(task, input, to: server, options: options)
    case .oneOffLocal: return try delegate(task, input, to: WorkerProgram.current, options: options)
    }
  }
}
