import CProcord
import CoreMetrics
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A pool of reusable workers: local worker processes and connections to
/// worker servers, kept alive between tasks.
///
/// A one-off ``delegate(_:_:to:options:)``
/// starts a process per task (a few milliseconds for a Swift program); a
/// pool hands each task to a worker that is already running, so a task
/// costs a round trip over a socket. Workers keep their isolation: a task
/// that crashes its worker takes nothing else down, and the pool starts a
/// new worker in its place.
///
/// ```swift
/// let pool = try WorkerPool(workers: 4)          // this executable, 4 workers
/// let squares = try await pool.map(square, 1...1000)
/// await pool.shutdown()
/// ```
///
/// Tasks wait in one queue, in the order they were delegated, for a free
/// worker. A worker that sends `0R` after its answer (every Procord for Swift
/// worker in socket mode, and every server of this project) gets the next
/// task on the same connection; one that does not (an original worker) is
/// used once and replaced. ``delegate(_:_:options:)``
/// returns the same ``DelegatedProcess`` as a one-off delegation: status,
/// waiting, `run()`, `value` and `kill()` work alike.
public final class WorkerPool: @unchecked Sendable, CustomStringConvertible {
  /// Where a pool's workers come from.
  public enum Source: Sendable, CustomStringConvertible {
    /// Worker processes started from a program: ``WorkerProgram/current``
    /// (this executable), or any program in worker mode. Only workers in
    /// ``WorkerProgram/Channel/socket`` mode are reused.
    case local(WorkerProgram)
    /// Connections to a worker server; each holds one of its workers.
    case remote(RemoteServer)

    /// The program's path, or the server's `host:port`.
    public var description: String {
      switch self {
      case .local(let program): return program.displayName ?? program.path
      case .remote(let server): return server.description
      }
    }
  }

  /// How a pool sizes, recycles and protects its workers.
  public struct Configuration: Sendable {
    /// Workers started ahead of time and kept even when idle.
    public var minimumWorkers = 0
    /// Workers at most at once; the pool grows up to it on demand.
    public var maximumWorkers: Int
    /// A worker above ``minimumWorkers`` idle this long is stopped; `nil`:
    /// never.
    public var idleTimeout: Duration? = .seconds(60)
    /// Retire a worker after this many tasks (like Python's
    /// `max_tasks_per_child`), to bound what a leaky task can accumulate;
    /// `nil`: never.
    public var maximumTasksPerWorker: Int?
    /// Retire a local worker whose resident memory (read after each task)
    /// is above this many bytes; `nil`: no bound.
    public var maximumResidentMemory: Int?
    /// Tasks waiting for a worker at most; beyond it ``WorkerPool/delegate(_:_:options:)``
    /// throws ``WorkerPoolError/queueFull(limit:)`` and
    /// ``WorkerPool/submit(_:_:options:)`` waits for room.
    public var maximumQueueLength = 65536
    /// How many more workers a task may be handed to after its worker went
    /// away: an idempotent task (``DelegationOptions/isIdempotent``) after
    /// any loss of its worker, any task when it never reached one.
    public var maximumRetries = 2
    /// Send tasks ahead: when every worker is busy and no more may start,
    /// a worker that has already served a task may be sent up to this many
    /// more idempotent tasks while it runs one, so that it goes from task
    /// to task without waiting for this program (for many short tasks, far
    /// more tasks per second). Only tasks delegated with
    /// ``DelegationOptions/isIdempotent`` go ahead: if the pool stops a
    /// worker just as it finishes a task, the one after may have started
    /// unseen, and runs again elsewhere. A task sent ahead waits for its
    /// worker even if another becomes free; one killed (or past its
    /// deadline) before it starts ends at once, and its worker is killed
    /// when it gets to it. 0 (the default): off.
    public var tasksSentAhead = 0
    /// Servers: how long resolving and connecting may take. (A task's
    /// ``DelegationOptions/deadline`` bounds a worker that goes silent.)
    public var connectTimeout: Duration? = .seconds(10)
    /// Start local workers in socket mode with `--procord-capture-output`,
    /// so that what their tasks print comes back as data: needed for
    /// ``DelegationOptions/captureOutput`` on pooled local tasks (tasks on
    /// servers always send it). Without it a local worker's stdout and
    /// stderr are this program's, untouched.
    public var captureOutput = false
    /// How long a worker that was told to stop (or killed with SIGTERM at a
    /// deadline) may take to exit before it gets SIGKILL.
    public var exitGracePeriod: Duration = .seconds(2)
    /// The largest frame accepted from a worker; `nil`: ``Limits/maxMessageSize``.
    public var maximumMessageSize: Int?
    /// The `pool` dimension of this pool's metrics.
    public var label = "default"

    /// A configuration with this many workers at most (by default, one per
    /// processor), and the other settings at their defaults.
    public init(maximumWorkers: Int = defaultWorkerCount, minimumWorkers: Int = 0) {
      self.maximumWorkers = maximumWorkers
      self.minimumWorkers = minimumWorkers
    }

    /// The number of processors this program may run on.
    public static var defaultWorkerCount: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
  }

  /// How ``WorkerPool/shutdown(_:)`` treats tasks that are not finished.
  public enum ShutdownMode: Sendable {
    /// Queued and running tasks finish first.
    case graceful
    /// Queued tasks end with ``ExecutionError/workerKilled``, running
    /// workers are killed.
    case immediate
  }

  /// A snapshot of a pool.
  public struct Statistics: Sendable, Equatable {
    /// Workers started and not retired: starting, idle or busy.
    public var workers: Int
    /// Workers ready and waiting for a task.
    public var idleWorkers: Int
    /// Workers running a task.
    public var busyWorkers: Int
    /// Tasks waiting for a worker.
    public var queuedTasks: Int
    /// Workers started since the pool was made, replacements included.
    public var workersStarted: Int
    /// Tasks delegated to the pool.
    public var tasksSubmitted: Int
    /// Tasks with a final status.
    public var tasksFinished: Int
    /// Times a task was handed to another worker after losing one.
    public var tasksRetried: Int
    /// Shut down, and every worker gone.
    public var isStopped: Bool
    /// Worker starts that failed for lack of resources (descriptors,
    /// processes, memory): the pool then runs its tasks on the workers it has
    /// for a while instead of failing them.
    public var startsLimitedByResources: Int = 0
    /// The most workers the pool may have now: ``Configuration/maximumWorkers``,
    /// or, for a while after a start failed for lack of resources, the
    /// workers it had then.
    public var maximumWorkersNow: Int = 0
  }

  /// The C core's `procord_pool_t *`.
  let handle: OpaquePointer
  /// Where the workers come from.
  public let sources: [Source]
  /// The pool's settings.
  public let configuration: Configuration
  /// For error messages: the program or server, or all of them.
  let workerName: String
  private let events = PoolEvents()
  private let queueLength: Gauge
  private let workerCount: Gauge

  /// Makes a pool over `sources` and starts ``Configuration/minimumWorkers``.
  /// Throws ``ProcordError`` for a configuration that cannot work (no
  /// source, a minimum above the maximum), or ``SecurityConfigurationError``
  /// for a server whose ``RemoteServer/security`` is a server's.
  public init(_ sources: [Source], configuration: Configuration = Configuration()) throws {
    for case .remote(let server) in sources { _ = try server.clientSecurity() }
    self.sources = sources
    self.configuration = configuration
    workerName = sources.map(\.description).joined(separator: ", ")
    queueLength = Gauge(label: "procord_pool_queue_length", dimensions: [("pool", configuration.label)])
    workerCount = Gauge(label: "procord_pool_workers", dimensions: [("pool", configuration.label)])
    var created: OpaquePointer?
    let events = self.events
    let started = sources.map { source -> Source in
      guard configuration.captureOutput, case .local(var program) = source, program.channel == .socket else {
        return source
      }
      program.arguments.insert("--procord-capture-output", at: 0)  // before the program's own
      return .local(program)
    }
    let error = withCSources(started[...], []) { cSources in
      cSources.withUnsafeBufferPointer { buffer in
        var options = procord_pool_options_t()
        procord_pool_options_init(&options)
        options.sources = buffer.baseAddress
        options.source_count = buffer.count
        options.min_workers = Int32(clamping: configuration.minimumWorkers)
        options.max_workers = Int32(clamping: max(1, configuration.maximumWorkers))
        options.idle_timeout_ms = milliseconds(configuration.idleTimeout)
        options.max_tasks_per_worker = Int32(clamping: configuration.maximumTasksPerWorker ?? 0)
        options.max_resident_bytes = max(0, configuration.maximumResidentMemory ?? 0)
        options.max_queue_length = max(1, configuration.maximumQueueLength)
        options.max_retries = Int32(clamping: max(0, configuration.maximumRetries))
        options.send_ahead = Int32(clamping: max(0, configuration.tasksSentAhead))
        options.connect_timeout_ms = milliseconds(configuration.connectTimeout)
        options.max_message_size = max(0, configuration.maximumMessageSize ?? 0)
        options.exit_grace_ms = milliseconds(configuration.exitGracePeriod)
        options.on_stopped = onPoolStopped
        options.on_room = onPoolRoom
        options.context = Unmanaged.passRetained(events).toOpaque()  // released once stopped
        let error = procord_pool_new(Runtime.shared.loop, &options, &created)
        if error != 0 { Unmanaged.passUnretained(events).release() }
        return error
      }
    }
    guard error == 0, let created else {
      throw ProcordError(cError: error, operation: "making a worker pool over \(workerName)")
    }
    handle = created
  }

  /// A pool of up to `workers` processes of `program` (by default this
  /// executable, whose `main` must begin with ``Worker/main(tasks:arguments:maxMessageSize:isolation:_:)``
  /// or ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``).
  public convenience init(
    workers: Int, program: WorkerProgram = .current, configuration: Configuration = Configuration()
  ) throws {
    var configuration = configuration
    configuration.maximumWorkers = workers
    try self.init([.local(program)], configuration: configuration)
  }

  /// A pool over worker servers, with up to `connectionsPerServer`
  /// connections (each one a task at a time) to each.
  public convenience init(
    servers: [RemoteServer], connectionsPerServer: Int = 1, configuration: Configuration = Configuration()
  ) throws {
    var configuration = configuration
    configuration.maximumWorkers = max(1, servers.count * connectionsPerServer)
    try self.init(servers.map { .remote($0) }, configuration: configuration)
  }

  /// Shuts the pool down gracefully if that was not done: tasks already
  /// delegated still run (nobody can wait for them any more, but they may
  /// have effects), then the workers stop.
  deinit {
    procord_pool_shutdown(handle, 0)
    procord_pool_release(handle)
  }

  /// `WorkerPool(sources)`.
  public var description: String { "WorkerPool(\(workerName))" }

  // MARK: Delegating

  /// Queues a task for the next free worker and returns at once: the
  /// poll-style layer (``run(_:_:options:)`` awaits the output instead).
  /// Throws ``WorkerPoolError/queueFull(limit:)`` when
  /// ``Configuration/maximumQueueLength`` tasks are waiting already, and
  /// ``WorkerPoolError/shutDown`` after ``shutdown(_:)``; everything that
  /// goes wrong with a worker shows in the process's status instead.
  public func delegate<T: DelegatableTask>(
    _ task: T, _ input: T.Input, options: DelegationOptions = DelegationOptions()
  ) throws -> DelegatedProcess<T.Output> {
    let process = try startDelegation(task.delegated, input, to: .pool(self), options: options)
    updateGauges()
    return process
  }

  /// Queues a task, waiting while the queue is full (backpressure) instead
  /// of throwing ``WorkerPoolError/queueFull(limit:)``.
  public func submit<T: DelegatableTask>(
    _ task: T, _ input: T.Input, options: DelegationOptions = DelegationOptions()
  ) async throws -> DelegatedProcess<T.Output> {
    while true {
      let roomBefore = events.roomCount
      do {
        return try delegate(task, input, options: options)
      } catch WorkerPoolError.queueFull {
        try await events.waitForRoom(after: roomBefore)
      }
    }
  }

  /// Runs a task on the pool and returns its output, waiting for room in
  /// the queue when it is full.
  /// - Throws: the task's own error as itself; `CancellationError` when the
  ///   calling task is cancelled (the task's worker gets SIGTERM, then
  ///   SIGKILL after its grace period, and the pool replaces it); a
  ///   ``ProcordError`` for everything else, ``ProcordError/Code-swift.enum/shutDown``
  ///   after ``shutdown(_:)`` included.
  public func run<T: DelegatableTask>(
    _ task: T, _ input: T.Input, options: DelegationOptions = DelegationOptions()
  ) async throws -> T.Output {
    try await submitForAwaiting(task, input, options: options).value
  }

  // MARK: Stopping

  /// Stops the pool and returns once every worker is gone. New tasks are
  /// refused (``WorkerPoolError/shutDown``) from the call on.
  public func shutdown(_ mode: ShutdownMode = .graceful) async {
    procord_pool_shutdown(handle, mode == .immediate ? 1 : 0)
    await events.stopped()
  }

  /// Stops the pool, blocking until every worker is gone or `timeout`
  /// passes; returns whether the pool stopped.
  @discardableResult
  public func shutdownAndWait(_ mode: ShutdownMode = .graceful, timeout: Duration? = nil) -> Bool {
    procord_pool_shutdown(handle, mode == .immediate ? 1 : 0)
    return procord_pool_wait(handle, waitMilliseconds(timeout)) == 1
  }

  /// The pool's state now.
  public var statistics: Statistics {
    var stats = procord_pool_stats_t()
    procord_pool_stats(handle, &stats)
    return Statistics(
      workers: stats.workers, idleWorkers: stats.idle, busyWorkers: stats.busy, queuedTasks: stats.queued,
      workersStarted: Int(stats.workers_started), tasksSubmitted: Int(stats.tasks_submitted),
      tasksFinished: Int(stats.tasks_finished), tasksRetried: Int(stats.tasks_retried),
      isStopped: stats.stopped != 0, startsLimitedByResources: Int(stats.starts_limited),
      maximumWorkersNow: Int(stats.max_workers_now))
  }

  // MARK: Internals

  /// Called on the loop thread as each of the pool's tasks finishes.
  func taskFinished() { updateGauges() }

  private func updateGauges() {
    // Without a backend the gauges do nothing, and reading the pool's
    // statistics for them on every task would only contend for its lock.
    guard ProcordMetrics.isLive else { return }
    var stats = procord_pool_stats_t()
    procord_pool_stats(handle, &stats)
    queueLength.record(stats.queued)
    workerCount.record(stats.workers)
  }
}

/// Why a pool refused a task.
public enum WorkerPoolError: Error, Sendable, Equatable, CustomStringConvertible {
  /// ``WorkerPool/Configuration/maximumQueueLength`` tasks wait already.
  case queueFull(limit: Int)
  /// The pool was shut down.
  case shutDown

  /// The error in English.
  public var description: String {
    switch self {
    case .queueFull(let limit): return "the worker pool's queue is full (\(limit) tasks wait already)"
    case .shutDown: return "the worker pool was shut down"
    }
  }
}

/// Calls `body` with the C form of `sources`, valid during the call.
private func withCSources<R>(
  _ sources: ArraySlice<WorkerPool.Source>, _ done: [procord_pool_source_t],
  _ body: ([procord_pool_source_t]) -> R
) -> R {
  guard let first = sources.first else { return body(done) }
  let rest = sources.dropFirst()
  switch first {
  case .local(let program):
    return program.withSpawnOptions { spawn in
      var source = procord_pool_source_t()
      procord_pool_source_init(&source)
      source.worker = spawn
      return withCSources(rest, done + [source], body)
    }
  case .remote(let server):
    return server.host.withCString { host in
      var source = procord_pool_source_t()
      procord_pool_source_init(&source)
      source.remote_host = host
      source.remote_port = Int32(server.port)
      // The pool takes a reference of its own; ours lasts until it is made.
      source.security = server.security?.pointer
      return withExtendedLifetime(server.security) { withCSources(rest, done + [source], body) }
    }
  }
}

/// What the C core tells a pool's Swift side: that its queue has room
/// again, and that it has stopped. Retained by the C pool until it stops.
private final class PoolEvents: Sendable {
  private struct State {
    var stopped = false
    var stopWaiters: [CheckedContinuation<Void, Never>] = []
    /// How many times the queue got room: a submitter that saw it full
    /// waits for this to change.
    var roomCount = 0
    var roomWaiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    var nextWaiter: UInt64 = 0
  }
  private let state = Mutex(State())

  var roomCount: Int { state.withLock { $0.roomCount } }

  func stopped() async {
    await withCheckedContinuation { continuation in
      let now = state.withLock { state -> Bool in
        if state.stopped { return true }
        state.stopWaiters.append(continuation)
        return false
      }
      if now { continuation.resume() }
    }
  }

  /// Suspends until the queue gets room after `count`; throws
  /// CancellationError if the waiting task is cancelled first.
  func waitForRoom(after count: Int) async throws {
    let id = state.withLock { state -> UInt64 in
      defer { state.nextWaiter += 1 }
      return state.nextWaiter
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        let resumeNow = state.withLock { state -> (any Error)?? in
          if Task.isCancelled { return .some(CancellationError()) }
          if state.roomCount != count || state.stopped { return .some(nil) }
          state.roomWaiters[id] = continuation
          return nil
        }
        if let outcome = resumeNow {
          if let error = outcome { continuation.resume(throwing: error) } else { continuation.resume() }
        }
      }
    } onCancel: {
      state.withLock { $0.roomWaiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
    }
  }

  func signalRoom() {
    let waiters = state.withLock { state in
      state.roomCount += 1
      defer { state.roomWaiters = [:] }
      return state.roomWaiters.values
    }
    for waiter in waiters { waiter.resume() }
  }

  func signalStopped() {
    let (stopWaiters, roomWaiters) = state.withLock { state in
      state.stopped = true
      defer { (state.stopWaiters, state.roomWaiters) = ([], [:]) }
      return (state.stopWaiters, Array(state.roomWaiters.values))
    }
    for waiter in stopWaiters { waiter.resume() }
    for waiter in roomWaiters { waiter.resume() }  // they find the pool shut down
  }
}

/// The C core's pool-stopped callback: signals, then drops the pool's hold.
private let onPoolStopped: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, context in
  guard let context else { return }
  Unmanaged<PoolEvents>.fromOpaque(context).takeRetainedValue().signalStopped()
}

/// The C core's room callback: wakes submitters waiting for room.
private let onPoolRoom: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, context in
  guard let context else { return }
  Unmanaged<PoolEvents>.fromOpaque(context).takeUnretainedValue().signalRoom()
}
