// The two ways to delegate a task: `run`, which awaits the output (the
// async-first API), and `delegate`, which returns a process to poll or wait
// for (the layer that mirrors the original library).

extension DelegatableTask {
  /// Runs the task in a worker and returns its output.
  ///
  /// ```swift
  /// let total = try await sum.run([1, 2, 3])                    // a worker of this program
  /// let total = try await sum.run(numbers, to: .server(host: "workers.internal"),
  ///                               options: DelegationOptions(deadline: .seconds(5)))
  /// ```
  ///
  /// A crash, a leak or a hang in the task cannot harm this program: the
  /// task runs in another process, which this program follows on a thread
  /// of Procord's, so the call suspends without blocking a thread.
  ///
  /// - Parameters:
  ///   - input: the task's input, encoded by its codec.
  ///   - destination: where the task runs: ``Destination/thisProgram`` (the
  ///     default: this executable started again as a worker, whose `main`
  ///     begins with ``Worker/main(tasks:arguments:maxMessageSize:isolation:_:)``),
  ///     another program, a server or a pool; see ``Destination``.
  ///   - options: the deadline, what happens to what the task prints, and
  ///     whether a pool may run it again.
  /// - Returns: the task's output.
  /// - Throws: the task's own error, decoded by its ``ErrorCodec``, as
  ///   itself; `CancellationError` when the calling Swift task is cancelled
  ///   (the worker gets SIGTERM, and an `async` body sees the cancellation,
  ///   then SIGKILL after its grace period); a ``ProcordError`` for
  ///   everything else, with the task, the destination and the worker's pid.
  public func run(
    _ input: Input, to destination: some DelegationDestination = Destination.thisProgram,
    options: DelegationOptions = DelegationOptions()
  ) async throws -> Output {
    let route = destination.destination.route
    if case .pool(let pool) = route { return try await pool.run(self, input, options: options) }
    return try await startDelegationForAwaiting(delegated, input, to: route, options: options).value
  }
}

/// Delegates a task to a new worker process and returns at once, with the
/// process to poll (``DelegatedProcess/status``) or wait for
/// (``Waiter``, ``DelegatedProcess/run()``): the layer that mirrors the
/// original library. ``DelegatableTask/run(_:to:options:)`` awaits the
/// output instead.
///
/// Everything that can go wrong with the worker (it cannot be started, it
/// crashes, it hangs up, it sends garbage) shows up in the returned process's
/// ``DelegatedProcess/status`` as an ``ExecutionError``.
///
/// Inside a type that has a `delegate` property, Swift finds the property
/// first: call this as `Procord.delegate(task, input)` there.
///
/// - Parameters:
///   - task: a ``ProcordTask`` or a ``DelegatedTask``.
///   - input: the task's input.
///   - destination: where the task runs; this executable, started again as
///     a worker, by default. See ``Destination``.
///   - options: the deadline, what happens to what the task prints, and
///     whether a pool may run it again.
/// - Throws: the input codec's own error when the input cannot be encoded;
///   ``WorkerPoolError`` when the destination is a pool whose queue is full
///   or that was shut down; ``SecurityConfigurationError`` for a
///   ``RemoteServer`` whose security is a server's; ``ProcordError`` when a
///   system call or an allocation fails.
public func delegate<T: DelegatableTask>(
  _ task: T, _ input: T.Input, to destination: some DelegationDestination = Destination.thisProgram,
  options: DelegationOptions = DelegationOptions()
) throws -> DelegatedProcess<T.Output> {
  let route = destination.destination.route
  if case .pool(let pool) = route { return try pool.delegate(task, input, options: options) }
  return try startDelegation(task.delegated, input, to: route, options: options)
}

/// Starts a delegation for a caller that awaits its output.
func startDelegationForAwaiting<Input, Output>(
  _ task: DelegatedTask<Input, Output>, _ input: Input, to route: Route, options: DelegationOptions
) throws -> DelegatedProcess<Output> {
  do {
    return try startDelegation(task, input, to: route, options: options)
  } catch {
    throw awaitedStartFailure(error, taskName: task.name, destination: route.workerName)
  }
}

/// A failure to start a delegation, as the calls that await outputs throw
/// it: a pool's refusal becomes a ``ProcordError``; a ``ProcordError``, a
/// ``SecurityConfigurationError`` and a cancellation stay as they are; any
/// other error can only be the input codec's.
func awaitedStartFailure(_ error: any Error, taskName: String, destination: String) -> any Error {
  switch error {
  case let refusal as WorkerPoolError: return ProcordError(refusal, taskName: taskName, destination: destination)
  case is ProcordError, is SecurityConfigurationError, is CancellationError: return error
  default:
    return ProcordError(
      code: .inputNotEncodable, message: "the input could not be encoded: \(error)", taskName: taskName,
      destination: destination, workerMessage: String(describing: error))
  }
}
