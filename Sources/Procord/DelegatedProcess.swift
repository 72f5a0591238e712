import CProcord
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A delegated task whatever its output type: what waiting on several
/// processes at once needs. ``DelegatedProcess`` is the typed handle.
public class AnyDelegatedProcess: @unchecked Sendable {
  /// The task's name.
  public let taskName: String
  /// The C core's `procord_delegation_t *`, released when this is freed.
  let handle: OpaquePointer
  fileprivate let completion: CompletionBase
  /// What must live as long as the task: its ``WorkerPool``.
  private let owner: AnyObject?

  fileprivate init(taskName: String, handle: OpaquePointer, completion: CompletionBase, owner: AnyObject?) {
    self.taskName = taskName
    self.handle = handle
    self.completion = completion
    self.owner = owner
  }

  /// The worker's process id; `nil` for a worker server's task, if the
  /// worker could not be started, or while a pooled task waits for a
  /// worker (a retried one may move to another).
  public var pid: Int32? {
    let pid = procord_delegation_pid(handle)
    return pid > 0 ? pid : nil
  }

  /// What the worker left on its stderr when it ended without answering (a
  /// one-off local worker whose stderr was this program's), read from the C
  /// outcome, which lives as long as this handle: no copy is kept per task.
  var crashEvidence: CrashEvidence? {
    procord_delegation_outcome(handle).flatMap { CrashEvidence($0.pointee) }
  }

  /// Whether the task went to a worker (it may be running there); false
  /// while a pooled task waits in the pool's queue.
  var isDelivered: Bool { procord_delegation_is_delivered(handle) != 0 }

  deinit { procord_delegation_release(handle) }

  /// Kills the worker (SIGKILL to its whole process group) unless the
  /// process has finished (``isFinished``); the status becomes
  /// `.error(.workerKilled)` at once, even if the worker had just answered
  /// and was exiting. Safe from any thread; a no-op once finished, or when
  /// the worker could not be started. A pooled task still in the queue just
  /// leaves it; a running one takes its worker down with it, and the pool
  /// starts another.
  public func kill() {
    // The C core refuses when there is nothing to kill (finished, or never
    // started, whose status keeps saying why).
    if procord_delegation_kill(handle) == 0 { completion.markKilled() }
  }

  /// Cancels the task: its worker's process group gets SIGTERM, so that an
  /// `async` task body sees `Task.isCancelled` (and cancellable calls such
  /// as `Task.sleep` throw), then SIGKILL once the grace period (2 s by
  /// default) has passed. The status becomes `.error(.workerKilled)` at
  /// once, as with ``kill()``; a task still queued in a pool just leaves
  /// it. Cancelling the Swift task that awaits ``DelegatedProcess/value``
  /// does this. Safe from any thread; a no-op once finished.
  public func cancel() {
    if procord_delegation_cancel(handle) == 0 { completion.markKilled() }
  }

  /// True once the status is final: the worker is done with the task, or
  /// ``kill()`` was called, in which case the worker may still be exiting.
  /// Waiting (``DelegatedProcess/run()``, ``Waiter``,
  /// ``DelegatedProcess/value``) always returns only once the worker is done
  /// with the task: a worker of its own has been reaped; a pooled worker
  /// has answered and moved on, or, if it died or was killed, been reaped.
  public var isFinished: Bool { completion.isFinished }

  /// Blocks until the worker is done with the task (see ``isFinished``).
  /// Returns `false` if `timeout` passed first.
  @discardableResult
  public func wait(timeout: Duration? = nil) -> Bool {
    Waiter.waitForAll([self], timeout: timeout)
  }
}

/// A task delegated to a worker process: its status, and ways to wait for it.
///
/// The worker is followed in the background by Procord's loop thread, so the
/// status changes on its own; nothing polls. Every way of waiting returns
/// only after the worker is done with the task: reaped, for a worker of its
/// own (see ``AnyDelegatedProcess/isFinished`` for pooled ones).
public final class DelegatedProcess<Output: Sendable>: AnyDelegatedProcess, @unchecked Sendable {
  private let typedCompletion: Completion<Output>

  init(taskName: String, handle: OpaquePointer, completion: Completion<Output>, owner: AnyObject? = nil) {
    typedCompletion = completion
    super.init(taskName: taskName, handle: handle, completion: completion, owner: owner)
  }

  /// Where the process stands now. Never blocks.
  public var status: Status<Output> { typedCompletion.status }

  /// What the task wrote to stdout and stderr so far, when the delegation
  /// was made with ``DelegationOptions/captureOutput``; complete once the
  /// process has finished.
  public var capturedOutput: CapturedOutput { typedCompletion.captured }

  /// Returns the current status, like the original library's `update`. The
  /// worker's answer is read continuously in the background, so this only
  /// looks; it never blocks.
  @discardableResult
  public func update() -> Status<Output> { status }

  /// Blocks until the process has finished, then returns the output, or
  /// throws the task's own error or a ``ProcordError`` (whose
  /// ``ProcordError/executionError`` is the status's ``ExecutionError``).
  public func run() throws -> Output {
    wait()
    return try typedCompletion.result(pid: pid, evidence: crashEvidence)
  }

  /// The output, once the process has finished; throws the task's own
  /// error (decoded by its ``ErrorCodec``) as itself, or a ``ProcordError``.
  /// Cancelling the awaiting task cancels the process (``AnyDelegatedProcess/cancel()``: SIGTERM,
  /// then SIGKILL after the grace period) and throws `CancellationError`;
  /// an answer that came before the cancellation took effect is still
  /// returned.
  public var value: Output {
    get async throws {
      await withTaskCancellationHandler {
        await typedCompletion.finished()
      } onCancel: {
        self.cancel()
      }
      if Task.isCancelled, case .error(.workerKilled) = typedCompletion.status { throw CancellationError() }
      return try typedCompletion.result(pid: pid, evidence: crashEvidence)
    }
  }
}

/// The part of a process's state the C callback reaches, without generics.
class CompletionBase: @unchecked Sendable {
  private let printHandlers: [UInt8: PrintHandler]
  private let capture = Mutex(CapturedOutput())

  init(options: DelegationOptions) {
    printHandlers = Dictionary(uniqueKeysWithValues: options.printHandlers.map { ($0.key.byte, $0.value) })
  }

  var captured: CapturedOutput { capture.withLock { $0 } }

  /// Runs on the loop thread for `P`/`F` frames the C core hands over.
  func print(destination: UInt8, text: UnsafeBufferPointer<UInt8>?) {
    switch destination {
    case UInt8(ascii: "O"): if let text { capture.withLock { $0.standardOutput.append(contentsOf: text) } }
    case UInt8(ascii: "E"): if let text { capture.withLock { $0.standardError.append(contentsOf: text) } }
    default:
      guard let handler = printHandlers[destination] ?? PrintHandlers.handler(for: destination) else { return }
      handler(text.map { .text(String(decoding: $0, as: UTF8.self)) } ?? .flush)
    }
  }

  var isFinished: Bool { fatalError("abstract") }
  func markKilled() { fatalError("abstract") }
  func complete(_ outcome: procord_outcome_t) { fatalError("abstract") }
}

final class Completion<Output: Sendable>: CompletionBase, @unchecked Sendable {
  private struct State {
    var status: Status<Output> = .working
    /// The answer's bytes, decoded into `status` on first look, on the
    /// looker's thread: a big decode (or copy) must not stall the loop
    /// thread. Borrowed from the C outcome, which lives as long as the
    /// process handle, the only way to look.
    var undecoded: (kind: procord_outcome_kind_t, body: BorrowedBytes)?
    var reaped = false
    var waiters: [CheckedContinuation<Void, Never>] = []
  }

  private let state = Mutex(State())
  let taskName: String
  /// The worker program, or `host:port` of a server, for error messages.
  let workerName: String
  /// Whether the worker is this executable, started again (for the hint of
  /// a worker that exits without serving).
  let isThisProgram: Bool
  let decodeOutput: @Sendable ([UInt8]) throws -> Output
  let errorCodec: ErrorCodec?
  let deadline: Duration?
  /// Told once the outcome is in (a pool updates its gauges).
  let onFinish: (@Sendable () -> Void)?
  /// For the duration metric only.
  let startedAt: ContinuousClock.Instant? = ProcordMetrics.isLive ? ContinuousClock.now : nil

  init<Input>(
    task: DelegatedTask<Input, Output>, workerName: String, options: DelegationOptions,
    onFinish: (@Sendable () -> Void)? = nil, isThisProgram: Bool = false
  ) {
    taskName = task.name
    self.isThisProgram = isThisProgram
    self.workerName = workerName
    deadline = options.deadline
    self.onFinish = onFinish
    decodeOutput = task.output.decode
    errorCodec = task.error
    super.init(options: options)
  }

  var status: Status<Output> {
    state.withLock { state in
      if let (kind, body) = state.undecoded {
        state.undecoded = nil
        if !state.status.isFinished { state.status = decode(kind, copiedBytes(UnsafeRawBufferPointer(body.bytes))) }
      }
      return state.status
    }
  }

  override var isFinished: Bool {
    state.withLock { $0.undecoded != nil || $0.status.isFinished }
  }

  override func markKilled() {
    state.withLock { state in
      guard state.undecoded == nil, !state.status.isFinished else { return }
      state.status = .error(.workerKilled)
    }
  }

  /// Suspends until the worker is done with the task.
  func finished() async {
    // Already over: no suspension (which would cost a trip through the
    // executor, and often a thread wake-up, for nothing).
    if state.withLock({ $0.reaped }) { return }
    await withCheckedContinuation { continuation in
      let now = state.withLock { state -> Bool in
        if state.reaped { return true }
        state.waiters.append(continuation)
        return false
      }
      if now { continuation.resume() }
    }
  }

  /// The output, or the task's own error, or a ``ProcordError`` with the
  /// context of the run and the `evidence` the worker left.
  func result(pid: Int32?, evidence: @autoclosure () -> CrashEvidence?) throws -> Output {
    let failure: ExecutionError
    switch status {
    case .success(let output): return output
    case .exception(let error): throw error
    case .error(let error): failure = error
    case .working: failure = .workerKilled  // unreachable once finished
    }
    throw ProcordError(
      failure, taskName: taskName, destination: workerName, pid: pid, evidence: evidence(),
      startedFromThisProgram: isThisProgram)
  }

  /// Runs on the loop thread when the C core reports the outcome: keeps the
  /// answer's bytes for decoding later, or sets a status that needs no codec.
  override func complete(_ outcome: procord_outcome_t) {
    let body = UnsafeBufferPointer(start: outcome.body, count: outcome.body == nil ? 0 : outcome.length)
    let needsCodec = outcome.kind == PROCORD_OUTCOME_VALUE || outcome.kind == PROCORD_OUTCOME_EXCEPTION
    let final = needsCodec ? nil : decode(outcome.kind, Array(body), outcome: outcome)
    let waiters = state.withLock { state in
      if !state.status.isFinished {
        if let final { state.status = final } else { state.undecoded = (outcome.kind, BorrowedBytes(bytes: body)) }
      }
      state.reaped = true
      defer { state.waiters = [] }
      return state.waiters
    }
    if let startedAt { ProcordMetrics.recordOutcome(outcome.kind, after: ContinuousClock.now - startedAt) }
    onFinish?()
    for waiter in waiters { waiter.resume() }
  }

  private func decode(
    _ kind: procord_outcome_kind_t, _ body: [UInt8], outcome: procord_outcome_t? = nil
  ) -> Status<Output> {
    switch kind {
    case PROCORD_OUTCOME_VALUE:
      do { return .success(try decodeOutput(body)) } catch {
        return .error(.workerDisconnected(.undecodableOutput(String(describing: error))))
      }
    case PROCORD_OUTCOME_EXCEPTION:
      if let errorCodec, let error = try? errorCodec.decode(body) { return .exception(error) }
      return .error(.workerUnknownException(String(decoding: body, as: UTF8.self)))
    case PROCORD_OUTCOME_UNKNOWN_EXCEPTION:
      return .error(.workerUnknownException(String(decoding: body, as: UTF8.self)))
    case PROCORD_OUTCOME_NO_WORKER:
      return .error(.noWorkerAvailable(taskName: taskName))
    case PROCORD_OUTCOME_KILLED:
      return .error(.workerKilled)
    case PROCORD_OUTCOME_TIMED_OUT:
      return .error(.deadlineExceeded(deadline ?? .zero))
    default:
      guard let outcome else { return .error(.workerDisconnected(.closedWithoutAnswer)) }
      return .error(.workerDisconnected(DisconnectionCause(outcome, worker: workerName)))
    }
  }
}

/// Bytes the C core owns and keeps for as long as the one who looks at them
/// (a process handle's delegation): safe to hand between threads.
struct BorrowedBytes: @unchecked Sendable {
  let bytes: UnsafeBufferPointer<UInt8>
}
