import CProcord

/// The thread that runs Procord's event loop, as a task executor.
///
/// Every delegation's I/O happens on one thread of Procord's own. Code that
/// awaits tasks one after the other pays for two thread switches per task:
/// its request goes to that thread, and the answer comes back to a thread of
/// Swift's cooperative pool. Run such code on the loop's thread instead and
/// both disappear, which roughly halves a pooled round trip:
///
/// ```swift
/// try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
///   for input in inputs { results.append(try await pool.run(task, input)) }
/// }
/// ```
///
/// The code then runs between the loop's I/O: keep it short, and never block
/// in it (no `DelegatedProcess.wait()`, no locks held long, no sleeping):
/// while it runs, no delegation of this process makes progress.
public final class ProcordLoopExecutor: TaskExecutor, @unchecked Sendable {
  /// The executor of Procord's one loop.
  public static let shared = ProcordLoopExecutor()

  private init() {}

  /// Queues `job` on the loop's thread. The job itself is the call's
  /// argument: an unowned job is one pointer.
  public func enqueue(_ job: consuming ExecutorJob) {
    let argument = unsafeBitCast(UnownedJob(job), to: UnsafeMutableRawPointer.self)
    if procord_loop_call(Runtime.shared.loop, runQueuedJob, argument) != 0 {
      // Only malloc can fail here; a job cannot be dropped.
      fatalError("Procord could not queue a job on its loop: out of memory")
    }
  }
}

private let runQueuedJob: procord_loop_fn = { argument in
  guard let argument else { return }
  let job = unsafeBitCast(argument, to: UnownedJob.self)
  job.runSynchronously(on: ProcordLoopExecutor.shared.asUnownedTaskExecutor())
}
