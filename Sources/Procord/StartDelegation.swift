import CProcord
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// Starting a delegation in the C core, and reading its outcome back.

extension DisconnectionCause {
  /// Reads the cause of a `PROCORD_OUTCOME_DISCONNECTED` outcome from the
  /// stage it failed at (`procord_outcome_stage`: the outcome's `stage`, or
  /// the one its `call` names in an outcome built by hand). The stages that
  /// settle the cause come first; for the others, a protocol error wins over
  /// how the worker ended (it may well die after sending garbage), and the
  /// exit code or signal explains a plain end of stream. The C core's
  /// `procord_outcome_describe` reads it in the same order.
  init(_ outcome: procord_outcome_t, worker: String) {
    var outcome = outcome
    let stage = procord_outcome_stage(&outcome)
    let error = outcome.error
    let timedOut = error == PROCORD_ETIMEOUT.rawValue
    switch stage {
    case .PROCORD_STAGE_SPAWN where error == PROCORD_ENOTSERVING.rawValue || error == PROCORD_ENESTED.rawValue:
      self = .startRefused(program: worker, reason: outcome.detail.map { String(cString: $0) } ?? "")
    case .PROCORD_STAGE_SPAWN:
      self = .couldNotStart(program: worker, errno: -error)
    case .PROCORD_STAGE_RESOLVE:
      self = .couldNotResolve(host: worker, reason: outcome.detail.map { String(cString: $0) } ?? "unknown reason")
    case .PROCORD_STAGE_REAP where error == -ECHILD:
      self = .reapedElsewhere
    case .PROCORD_STAGE_CONNECT where timedOut:
      self = .timedOut(.connecting)
    case .PROCORD_STAGE_HANDSHAKE where timedOut:
      self = .timedOut(.handshake)
    case .PROCORD_STAGE_IDLE where timedOut:
      self = .timedOut(.waitingForTheWorker)
    case .PROCORD_STAGE_NONE, .PROCORD_STAGE_CONNECT, .PROCORD_STAGE_TLS, .PROCORD_STAGE_AUTHENTICATE,
      .PROCORD_STAGE_HANDSHAKE, .PROCORD_STAGE_READ, .PROCORD_STAGE_WRITE, .PROCORD_STAGE_PARSE,
      .PROCORD_STAGE_RECEIVE, .PROCORD_STAGE_PEER, .PROCORD_STAGE_IDLE, .PROCORD_STAGE_DEADLINE,
      .PROCORD_STAGE_CLOSE, .PROCORD_STAGE_REAP, .PROCORD_STAGE_SETUP:
      self.init(ending: outcome, stage: stage)
    @unknown default:
      // A stage of a newer C core: its error code and the worker's end say the rest.
      self.init(ending: outcome, stage: stage)
    }
  }

  /// A cause the stage alone does not settle: by the error code, then by
  /// how the worker ended.
  private init(ending outcome: procord_outcome_t, stage: procord_stage_t) {
    let error = outcome.error
    let endOfStream =
      (error == PROCORD_EDISCONNECTED.rawValue && stage == .PROCORD_STAGE_READ)
      || error == -EPIPE || error == -ECONNRESET
    let signal = outcome.killed_after_grace != 0 ? 0 : outcome.signal
    if error == PROCORD_ETLS.rawValue {
      self = .tlsFailed(reason: outcome.detail.map { String(cString: $0) } ?? "unknown reason")
    } else if error == PROCORD_EAUTH.rawValue {
      self = .authenticationFailed(reason: outcome.detail.map { String(cString: $0) } ?? "unknown reason")
    } else if !endOfStream, error <= -4000, error >= -4005,
      let code = ProtocolError(rawValue: Int(-4000 - error))
    {
      self = .protocolError(code, reportedByWorker: stage == .PROCORD_STAGE_PEER)
    } else if signal != 0 {
      self = .signaled(signal)
    } else if endOfStream {
      self = outcome.exit_code >= 0 ? .exited(code: outcome.exit_code) : .closedWithoutAnswer
    } else if error < 0, error > -4000 {
      self = .systemCallFailed(call: outcome.call.map { String(cString: $0) } ?? "", errno: -error)
    } else {
      self = .closedWithoutAnswer
    }
  }
}

/// The C core's print callback: hands `P`/`F` frames to the Swift state.
private let onPrint: procord_print_cb = { _, destination, text, length, context in
  guard let context else { return }
  let completion = Unmanaged<CompletionBase>.fromOpaque(context).takeUnretainedValue()
  completion.print(destination: destination, text: text.map { UnsafeBufferPointer(start: $0, count: length) })
}

/// The C core's completion callback: hands the outcome to the Swift state.
private let onDone: procord_done_cb = { _, outcome, context in
  guard let context, let outcome else { return }
  Unmanaged<CompletionBase>.fromOpaque(context).takeRetainedValue().complete(outcome.pointee)
}

/// Where a delegation's worker comes from, once ``Destination/thisProgram``
/// is resolved.
enum Route: Sendable {
  case local(WorkerProgram)
  case remote(RemoteServer)
  case pool(WorkerPool)

  /// Whether this executable is the worker, started again.
  var isThisProgram: Bool {
    if case .local(let program) = self { return program.isThisProgram }
    return false
  }

  var workerName: String {
    switch self {
    case .local(let program): return program.displayName ?? program.path
    case .remote(let server): return server.description
    case .pool(let pool): return pool.workerName
    }
  }
}

/// Starts a worker (or connects to a server, or queues in a pool) and
/// delegates the task to it.
func startDelegation<Input, Output>(
  _ task: DelegatedTask<Input, Output>, _ input: Input, to destination: Route,
  options delegationOptions: DelegationOptions = DelegationOptions()
) throws -> DelegatedProcess<Output> {
  let encoded = try task.input.encode(input)
  var pool: WorkerPool?
  if case .pool(let chosen) = destination { pool = chosen }
  var onFinish: (@Sendable () -> Void)?
  if let pool, ProcordMetrics.isLive { onFinish = { pool.taskFinished() } }
  let completion = Completion(
    task: task, workerName: destination.workerName, options: delegationOptions, onFinish: onFinish,
    isThisProgram: destination.isThisProgram)
  let context = Unmanaged.passRetained(completion as CompletionBase).toOpaque()
  var handle: OpaquePointer?
  /// Fills in what every destination shares, then lets `submit` hand it over.
  let start = { (submit: (inout procord_delegation_options_t) -> Int32) -> Int32 in
    task.name.withCString { name in
      encoded.withUnsafeBytes { bytes in
        var options = procord_delegation_options_t()
        procord_delegation_options_init(&options)
        options.task_name = name
        options.input = bytes.baseAddress
        options.input_length = bytes.count
        if let lent = PinnedBytes.lendIfLarge(encoded) {
          // Lent, not copied: the C core gives it back when done with it.
          options.input = lent.base
          options.input_release = releasePinnedBytes
          options.input_context = lent.context
        }
        options.deadline_ms = milliseconds(delegationOptions.deadline)
        options.idempotent = delegationOptions.isIdempotent ? 1 : 0
        options.on_done = onDone
        options.on_print = onPrint
        options.capture_output = delegationOptions.captureOutput ? 1 : 0
        options.context = context
        return submit(&options)
      }
    }
  }
  let error: Int32
  switch destination {
  case .local(var program):
    // A socket-mode worker's stdout is ours unless asked to send it as frames.
    if delegationOptions.captureOutput && program.channel == .socket {
      program.arguments.insert("--procord-capture-output", at: 0)  // before the program's own
    }
    error = program.withSpawnOptions { spawn in
      start { options in
        options.worker = spawn
        return procord_delegate(Runtime.shared.loop, &options, &handle)
      }
    }
  case .remote(let server):
    let security = try server.clientSecurity()
    error = server.host.withCString { host in
      start { options in
        options.remote_host = host
        options.remote_port = Int32(server.port)
        options.connect_timeout_ms = milliseconds(server.connectTimeout)
        options.idle_timeout_ms = milliseconds(server.idleTimeout)
        options.security = security?.pointer
        // The C core takes a reference of its own before returning.
        return withExtendedLifetime(security) { procord_delegate(Runtime.shared.loop, &options, &handle) }
      }
    }
  case .pool(let pool):
    error = start { options in procord_pool_delegate(pool.handle, &options, &handle) }
  }
  guard error == 0, let handle else {
    Unmanaged<CompletionBase>.fromOpaque(context).release()
    if let pool, error == PROCORD_EFULL.rawValue {
      throw WorkerPoolError.queueFull(limit: pool.configuration.maximumQueueLength)
    }
    if pool != nil, error == PROCORD_ECLOSED.rawValue { throw WorkerPoolError.shutDown }
    throw ProcordError(cError: error, operation: "delegating \(task.name)")
  }
  if ProcordMetrics.isLive { ProcordMetrics.tasksStarted.increment() }
  return DelegatedProcess(taskName: task.name, handle: handle, completion: completion, owner: pool)
}

/// A duration in whole milliseconds, rounded up (negative stays negative).
func wholeMilliseconds(_ duration: Duration) -> Int64 {
  let (seconds, attoseconds) = duration.components
  return seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
}

/// A timeout for the C core's waits, where -1 means none: nil is -1, and a
/// given timeout is never negative (a negative one is 0: do not wait).
func waitMilliseconds(_ timeout: Duration?) -> Int32 {
  timeout.map { Int32(clamping: max(0, wholeMilliseconds($0))) } ?? -1
}

/// A time limit for the C core's options, where 0 means none: nil is 0, and
/// any real limit is at least 1 ms.
func milliseconds(_ duration: Duration?) -> Int32 {
  guard let duration else { return 0 }
  return Int32(clamping: max(1, wholeMilliseconds(duration)))
}
