/// How one delegation runs: what happens to what its task prints, how long
/// it may take, and whether a pool may run it again.
public struct DelegationOptions: Sendable {
  /// Handlers for custom destinations, for this delegation only; the
  /// defaults of ``PrintHandlers`` cover the others.
  public var printHandlers: [OutputDestination: PrintHandler] = [:]
  /// Keep what the task writes to stdout and stderr as data, in
  /// ``DelegatedProcess/capturedOutput``, instead of passing it through to
  /// this program's stdout and stderr (to log it with the task's name, say).
  /// A worker program in the original stdin/stdout mode can only give its
  /// stdout this way; its stderr is the descriptor it was given.
  public var captureOutput = false
  /// How long the task may take, counted from the delegation (time spent
  /// waiting in a ``WorkerPool``'s queue included). When it passes, the
  /// worker gets SIGTERM (its whole process group, so what the task
  /// started too), then SIGKILL after the grace period, and the status is
  /// ``ExecutionError/deadlineExceeded(_:)``. A remote task's connection is
  /// closed, and its server kills it. `nil` (the default): no limit.
  public var deadline: Duration?
  /// Whether running the task twice does no harm. A ``WorkerPool`` runs an
  /// idempotent task again on another worker (up to
  /// ``WorkerPool/Configuration/maximumRetries`` times) when its worker
  /// goes away before answering, say a server that is stopped. A task that
  /// never reached a worker is retried either way. Ignored outside pools.
  public var isIdempotent = false

  /// Options that pass output through, with no handlers of their own, no
  /// deadline, and a task that is not idempotent.
  public init() {}

  /// Options with a deadline and, for pools, idempotence.
  public init(deadline: Duration? = nil, isIdempotent: Bool = false) {
    self.deadline = deadline
    self.isIdempotent = isIdempotent
  }
}
