import CProcord

#if canImport(Glibc)
import Glibc
#endif

/// Everything that can go wrong around a task, as the async API throws it:
/// what happened (``code``, to switch on), where (``taskName``,
/// ``destination``, ``pid``), the evidence (``signal``, ``exitStatus``,
/// ``fatalErrorMessage``, ``standardErrorTail``), and, in ``description``, a
/// sentence that says what to do.
///
/// The async API (``DelegatableTask/run(_:to:options:)``,
/// ``WorkerPool/run(_:_:options:)``, ``DelegatedProcess/value``) throws
/// exactly three kinds of error:
/// - the task's own error, decoded by its ``ErrorCodec``, as itself (so
///   `catch let error as MyError` works);
/// - `CancellationError`, when the awaiting Swift task is cancelled (its
///   worker is then stopped);
/// - a `ProcordError` for everything else.
///
/// ```swift
/// do {
///   let report = try await analyze.run(file)
/// } catch let error as AnalysisError {    // the task's own
///   ...
/// } catch let error as ProcordError {
///   switch error.code {
///   case .crashed: log(error.fatalErrorMessage ?? error.description)
///   case .deadlineExceeded: ...
///   default: throw error
///   }
/// }
/// ```
public struct ProcordError: Error, Sendable, CustomStringConvertible {
  /// What went wrong, one case per thing a caller may handle differently.
  public enum Code: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The worker program could not be started (`posix_spawn` failed: no
    /// such file, not executable...); ``errorNumber`` says why.
    case couldNotStart
    /// Procord refused to start the worker: this process was started as a
    /// worker and delegates before serving, or the delegations are nested
    /// deeper than `PROCORD_MAX_DELEGATION_DEPTH`.
    case startRefused
    /// The worker died of a signal it did not get from this program: a
    /// crash (a Swift runtime error such as a force-unwrapped `nil` is a
    /// SIGILL or SIGTRAP), or someone else killed it. See ``signal`` and
    /// ``fatalErrorMessage``.
    case crashed
    /// The worker program was started but never served its tasks: its
    /// `main` delegated, or returned, before calling
    /// ``Worker/main(tasks:arguments:maxMessageSize:isolation:_:)`` or
    /// ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``. The
    /// worker said so itself; ``workerMessage`` is its words.
    case workerDidNotServe
    /// The worker exited without answering; see ``exitStatus``.
    case exitedWithoutAnswer
    /// The worker's connection ended without an answer, and how the worker
    /// ended is not known (or a system call on it failed).
    case disconnected
    /// The worker broke the wire protocol, or reported that this program did.
    case protocolViolation
    /// The worker serves no task of this name.
    case unknownTask
    /// The worker could not decode the task's input: the two sides disagree
    /// on its type or codec.
    case inputNotDecodable
    /// The task's input could not be encoded here, by its codec.
    case inputNotEncodable
    /// The task's output could not be decoded here: the two sides disagree
    /// on its type or codec.
    case outputNotDecodable
    /// The task threw an error that could not travel as itself (no
    /// ``ErrorCodec``, or one that does not handle it); ``workerMessage`` is
    /// its text.
    case taskFailed
    /// The task ran past ``DelegationOptions/deadline`` and its worker was
    /// stopped.
    case deadlineExceeded
    /// This program killed the task (``AnyDelegatedProcess/kill()``).
    case killed
    /// The server's host name could not be resolved.
    case couldNotResolve
    /// The server could not be reached: the connection was refused, or the
    /// network is unreachable; ``errorNumber`` says which.
    case couldNotConnect
    /// A time limit of ``RemoteServer`` passed (connecting, the handshake,
    /// or waiting for the server).
    case timedOut
    /// TLS with the server failed.
    case tlsFailed
    /// Proving the shared secret to the server (or its proof) failed.
    case authenticationFailed
    /// The ``WorkerPool``'s queue is full.
    case queueFull
    /// The ``WorkerPool`` is shut down.
    case shutDown
    /// A system call or an allocation failed while setting the task up;
    /// ``errorNumber`` says which.
    case systemError

    /// The code's name, as in `case`.
    public var description: String { rawValue }
  }

  /// What went wrong.
  public let code: Code
  /// The sentence that says what happened and what to do, without the
  /// context (``description`` adds it).
  public let message: String
  /// The task's name, when the error is about one.
  public let taskName: String?
  /// Where the task went: the worker program's path, `host:port` of a
  /// server, or a pool's sources.
  public let destination: String?
  /// The worker's process id, when it had one on this machine.
  public let pid: Int32?
  /// The signal that ended the worker (``Code-swift.enum/crashed``).
  public let signal: Int32?
  /// The worker's exit status (``Code-swift.enum/exitedWithoutAnswer``).
  public let exitStatus: Int32?
  /// The `errno` (positive), or the C core's `PROCORD_E*` code (negative),
  /// of a failed system call.
  public let errorNumber: Int32?
  /// What the worker said: the text of an error that could not travel as
  /// itself, or of an input it could not decode.
  public let workerMessage: String?
  /// The Swift runtime's last words, when the worker crashed on a runtime
  /// error: `Fatal error: Unexpectedly found nil while unwrapping an
  /// Optional value`, after its file and line (the last line of
  /// ``standardErrorTail`` that says `Fatal error:`).
  ///
  /// `nil` without a tail, and when the runtime said nothing: code built
  /// with optimization (`-O`, `swift build -c release`) traps without a
  /// message on a force-unwrapped `nil`, an index out of range, an
  /// overflow or a failed `precondition`; only `fatalError(_:)` and `try!`
  /// still speak there. The ``signal`` (SIGILL or SIGTRAP) says it was such
  /// a trap.
  public let fatalErrorMessage: String?
  /// The last lines the worker wrote to its stderr before it crashed or
  /// exited without answering: at most 4096 bytes, from the start of a line.
  /// A `Fatal error:` line that a long backtrace after it pushed out comes
  /// first all the same, followed by a line `[...]`.
  ///
  /// Only for a worker that this program started for this one task (not a
  /// pool's, nor a server's), and whose stderr would have been this
  /// program's: ``WorkerProgram/standardError`` `nil`, and not
  /// ``DelegationOptions/captureOutput`` in socket mode. Such a worker's
  /// stderr is a pipe that Procord reads: what it writes is passed on at
  /// once to this program's stderr, as before, and its end is kept. How much
  /// a crash prints there, see ``WorkerProgram/current``.
  public let standardErrorTail: String?
  /// The same failure as the poll-style API's ``Status/error(_:)`` gives it,
  /// when the error is about a task's run.
  public let executionError: ExecutionError?

  /// Makes an error; Procord makes its own from what happened.
  public init(
    code: Code, message: String, taskName: String? = nil, destination: String? = nil, pid: Int32? = nil,
    signal: Int32? = nil, exitStatus: Int32? = nil, errorNumber: Int32? = nil, workerMessage: String? = nil,
    fatalErrorMessage: String? = nil, standardErrorTail: String? = nil, executionError: ExecutionError? = nil
  ) {
    self.code = code
    self.message = message
    self.taskName = taskName
    self.destination = destination
    self.pid = pid
    self.signal = signal
    self.exitStatus = exitStatus
    self.errorNumber = errorNumber
    self.workerMessage = workerMessage
    self.fatalErrorMessage = fatalErrorMessage
    self.standardErrorTail = standardErrorTail
    self.executionError = executionError
  }

  /// `task "fibo" (worker pid 1234, /usr/bin/app): ` and the message, then
  /// the evidence: the runtime's fatal error, or else the tail of stderr.
  public var description: String {
    var context: [String] = []
    if let pid { context.append("worker pid \(pid)") }
    if let destination { context.append(destination) }
    var text = ""
    if let taskName { text = "task \"\(taskName)\"" }
    if !context.isEmpty { text += (text.isEmpty ? "" : " ") + "(\(context.joined(separator: ", ")))" }
    text += (text.isEmpty ? "" : ": ") + message
    if let fatalErrorMessage { text += "\nthe worker's last words: \(fatalErrorMessage)" }
    // The fatal-error line is taken from the tail: one or the other.
    if let standardErrorTail, fatalErrorMessage == nil {
      text += "\nthe end of the worker's stderr:\n\(standardErrorTail)"
    }
    return text
  }
}

extension ProcordError {
  /// An error of the C core while doing `operation`, not about a task's run.
  init(cError code: Int32, operation: String, taskName: String? = nil, destination: String? = nil) {
    let what: Code =
      switch code {
      case PROCORD_EFULL.rawValue: .queueFull
      case PROCORD_ECLOSED.rawValue: .shutDown
      default: .systemError
      }
    self.init(
      code: what, message: "\(operation): \(cErrorText(code))", taskName: taskName, destination: destination,
      errorNumber: code < 0 && code > -4000 ? -code : code)
  }

  /// A pool that could not take the task.
  init(_ error: WorkerPoolError, taskName: String, destination: String) {
    let code: Code
    switch error {
    case .queueFull: code = .queueFull
    case .shutDown: code = .shutDown
    }
    self.init(code: code, message: error.description, taskName: taskName, destination: destination)
  }

  /// The failure of a task's run, with its context and a sentence that says
  /// what to do.
  init(
    _ failure: ExecutionError, taskName: String, destination: String, pid: Int32?,
    evidence: CrashEvidence? = nil, startedFromThisProgram: Bool = false
  ) {
    var code: Code = .disconnected
    var message = failure.description
    var signal: Int32?
    var exitStatus: Int32?
    var errorNumber: Int32?
    var workerMessage: String?
    switch failure {
    case .workerUnknownException(let text):
      workerMessage = text
      if text.contains(Self.notServingWords) {
        code = .workerDidNotServe
        message = text
      } else if text.hasPrefix(TaskInputError.prefix) {
        code = .inputNotDecodable
        message = text
      } else {
        code = .taskFailed
        message =
          "the task threw an error that cannot travel as its own type: \(text) (to catch it as its "
          + "own type, give the task an ErrorCodec that handles it, such as .json(YourError.self))"
      }
    case .workerKilled:
      code = .killed
      message = "killed by this program"
    case .deadlineExceeded:
      code = .deadlineExceeded
    case .noWorkerAvailable(let name):
      code = .unknownTask
      message =
        "the worker serves no task named \"\(name)\": pass the task to Worker.main(tasks:) or "
        + "Worker.runIfRequested(tasks:) in the worker program, and check that the worker is the program you meant"
    case .workerDisconnected(let cause):
      switch cause {
      case .couldNotStart(let program, let number):
        code = .couldNotStart
        errorNumber = number
        message =
          "could not start \(program): \(errnoText(number)); check the path, and that it is an executable "
          + "this user may run"
      case .startRefused:
        code = .startRefused
      case .systemCallFailed(let call, let number):
        errorNumber = number
        if call == "connect" || call == "socket" {
          code = .couldNotConnect
          message =
            "could not connect to \(destination): \(errnoText(number)); check that a Procord server "
            + "listens there (--procord-server) and that this machine can reach it"
        } else {
          message = "\(call) on the worker's connection failed: \(errnoText(number))"
        }
      case .protocolError:
        code = .protocolViolation
        message += " (is the worker a Procord worker of a compatible version?)"
      case .exited(let status):
        code = .exitedWithoutAnswer
        exitStatus = status
        if startedFromThisProgram {
          message +=
            "; if it exited at once, this program was started as a Procord worker but its main never "
            + "served: call Worker.main(tasks:) (or Worker.runIfRequested(tasks:)) first thing in main"
        }
      case .signaled(let number):
        code = .crashed
        signal = number
        message = "the worker crashed: killed by signal \(signalText(number))"
      case .closedWithoutAnswer, .reapedElsewhere:
        code = .disconnected
      case .undecodableOutput(let reason):
        code = .outputNotDecodable
        message =
          "the task's output could not be decoded here: \(reason) (the main program and the worker must "
          + "use the same output codec and type: is the worker an older build?)"
      case .couldNotResolve:
        code = .couldNotResolve
        message += "; check the host name and this machine's resolver"
      case .timedOut:
        code = .timedOut
      case .tlsFailed:
        code = .tlsFailed
      case .authenticationFailed:
        code = .authenticationFailed
      }
    }
    self.init(
      code: code, message: message, taskName: taskName, destination: destination, pid: pid, signal: signal,
      exitStatus: exitStatus, errorNumber: errorNumber, workerMessage: workerMessage,
      fatalErrorMessage: evidence?.fatalErrorMessage, standardErrorTail: evidence?.standardErrorTail,
      executionError: failure)
  }
}

extension ProcordError {
  /// How a worker that never served says so (the C core's lineage.c).
  static let notServingWords = "was started as a Procord worker"
}

/// What a local worker left behind when it ended without answering.
struct CrashEvidence: Sendable {
  /// The last lines of its stderr.
  var standardErrorTail: String?
  /// The Swift runtime's `Fatal error: ...` line among them.
  var fatalErrorMessage: String?

  /// Finds the runtime's message in the tail of a worker's stderr.
  init?(standardErrorTail tail: String?) {
    guard let tail, !tail.isEmpty else { return nil }
    standardErrorTail = tail
    fatalErrorMessage = tail.split(separator: "\n").last { $0.contains("Fatal error:") }.map(String.init)
  }

  /// The evidence in a C outcome: the tail of the worker's stderr, which
  /// the C core keeps for a one-off local worker that ended without
  /// answering (`PROCORD_OUTCOME_DISCONNECTED`); nil for any other.
  init?(_ outcome: procord_outcome_t) {
    guard outcome.kind == PROCORD_OUTCOME_DISCONNECTED, let tail = outcome.stderr_tail,
      outcome.stderr_tail_length > 0
    else { return nil }
    let bytes = UnsafeRawBufferPointer(start: tail, count: outcome.stderr_tail_length)
    self.init(standardErrorTail: String(decoding: bytes, as: UTF8.self))
  }
}

/// `PROCORD_EFULL (the queue is full)`, for any C core code.
func cErrorText(_ code: Int32) -> String {
  "\(String(cString: procord_err_name(code))) (\(String(cString: procord_strerror(code))))"
}
