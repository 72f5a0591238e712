import CProcord

/// Where a delegated process stands.
public enum Status<Output: Sendable>: Sendable {
  /// The worker has not answered yet.
  case working
  /// The task returned this output.
  case success(Output)
  /// The task threw this error, carried back by the task's ``ErrorCodec``.
  case exception(any Error)
  /// The task did not run to an answer; the error says why.
  case error(ExecutionError)

  /// True once the status will not change any more.
  public var isFinished: Bool {
    if case .working = self { return false }
    return true
  }
}

/// Why a delegated task has no answer from its worker.
public enum ExecutionError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The task failed with an error that had no serializer; the text is the
  /// worker's description of it.
  case workerUnknownException(String)
  /// The main program killed the worker (``AnyDelegatedProcess/kill()``, or
  /// the cancellation of ``DelegatedProcess/value``).
  case workerKilled
  /// The worker went away, or broke the protocol, before answering.
  case workerDisconnected(DisconnectionCause)
  /// The worker does not have a task of this name (it answered `E0`).
  case noWorkerAvailable(taskName: String)
  /// The task ran past its ``DelegationOptions/deadline`` (this one), so
  /// its worker was killed: SIGTERM to its process group, then SIGKILL
  /// after the grace period.
  case deadlineExceeded(Duration)

  /// The error in English.
  public var description: String {
    switch self {
    case .workerUnknownException(let text): return "the task failed with an error sent as text: \(text)"
    case .workerKilled: return "the worker was killed by this program"
    case .workerDisconnected(let cause): return "worker disconnected: \(cause)"
    case .noWorkerAvailable(let name):
      return "the worker has no task named \"\(name)\" (a worker serves the tasks its program gives "
        + "Worker.runIfRequested(tasks:); check the name, and that the worker is the program you meant)"
    case .deadlineExceeded(let deadline):
      return "the task ran past its deadline of \(durationText(deadline)) and its worker was stopped"
    }
  }
}

/// The protocol errors of the wire protocol, one per `E` frame code.
public enum ProtocolError: Int, Sendable, Equatable, CustomStringConvertible {
  /// `E0`: the worker has no task of that name.
  case taskNotSupported = 0
  /// `E1`: a frame arrived where it may not.
  case unexpectedMessage = 1
  /// `E2`: a frame broke the grammar.
  case illFormedMessage = 2
  /// `E3`: a frame was longer than the receiver's maximum message size.
  case messageTooLong = 3
  /// `E4`: the peer went away.
  case disconnected = 4
  /// `E5`: a print to a destination that is not valid.
  case invalidPrintDestination = 5

  /// The error in English, as the C core names it.
  public var description: String {
    String(cString: procord_strerror(Int32(-4000 - rawValue)))
  }
}

/// What ended a worker's connection before it answered.
public enum DisconnectionCause: Sendable, Equatable, CustomStringConvertible {
  /// The worker program could not be started: the `errno` of `posix_spawn`.
  case couldNotStart(program: String, errno: Int32)
  /// Procord refused to start the worker, and the reason says what to do:
  /// this process was started as a worker and delegates before serving
  /// (its `main` does not begin with ``Worker/main(tasks:arguments:maxMessageSize:isolation:_:)``
  /// or ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``), or the worker would be more delegations deep than
  /// `PROCORD_MAX_DELEGATION_DEPTH` (16 unless the environment says otherwise).
  case startRefused(program: String, reason: String)
  /// A system call on the connection failed.
  case systemCallFailed(call: String, errno: Int32)
  /// A frame broke the protocol: ill-formed, too long, unexpected, or an
  /// `E` frame the worker sent (`reportedByWorker`).
  case protocolError(ProtocolError, reportedByWorker: Bool)
  /// The worker closed its stream without answering and exited with this code.
  case exited(code: Int32)
  /// The worker was killed by this signal (it crashed, or someone killed it).
  case signaled(Int32)
  /// The worker closed its stream without answering, and how it ended is not
  /// known, or it lingered after closing and Procord killed it.
  case closedWithoutAnswer
  /// The worker answered with an output its codec could not decode.
  case undecodableOutput(String)
  /// The server's host name could not be resolved; the reason is the
  /// resolver's.
  case couldNotResolve(host: String, reason: String)
  /// A time limit of ``RemoteServer`` passed.
  case timedOut(TimeoutPhase)
  /// TLS with the server failed (``RemoteServer/security``): the handshake,
  /// the server's certificate, or a record. The reason is OpenSSL's, e.g.
  /// "certificate verify failed".
  case tlsFailed(reason: String)
  /// Proving the shared secret failed (``RemoteServer/security``): the
  /// server refused our proof, could not prove that it knows the secret, or
  /// does not take one; the reason says which.
  case authenticationFailed(reason: String)
  /// The worker ended, but another part of this program reaped it first
  /// (a `SIGCHLD` handler calling `waitpid(-1)`, say), so how it ended is
  /// unknown. Reap only the children you started yourself.
  case reapedElsewhere

  /// The cause in English, naming the errno, exit code or signal.
  public var description: String {
    switch self {
    case .couldNotStart(let program, let code):
      return "could not start \(program): posix_spawn: \(errnoText(code))"
    case .startRefused(let program, let reason):
      return "did not start \(program): \(reason)"
    case .systemCallFailed(let call, let code):
      return "\(call) failed: \(errnoText(code))"
    case .protocolError(let error, let reported):
      return reported ? "the worker reported a protocol error: \(error)" : "protocol error: \(error)"
    case .exited(let code):
      return "the worker exited with code \(code) without answering"
    case .signaled(let signal):
      return "the worker was killed by signal \(signalText(signal))"
    case .closedWithoutAnswer:
      return "the worker closed the connection without answering"
    case .undecodableOutput(let reason):
      return "the worker's output could not be decoded: \(reason)"
    case .couldNotResolve(let host, let reason):
      return "could not resolve \(host): \(reason)"
    case .timedOut(.connecting):
      return "connecting to the server timed out"
    case .timedOut(.waitingForTheWorker):
      return "the server stayed silent longer than the idle timeout"
    case .timedOut(.handshake):
      return "TLS or authentication with the server timed out"
    case .tlsFailed(let reason):
      return "TLS with the server failed: \(reason)"
    case .authenticationFailed(let reason):
      return "authentication with the server failed: \(reason)"
    case .reapedElsewhere:
      return "the worker ended, but another part of this program reaped it first (a SIGCHLD handler "
        + "calling waitpid(-1)?), so how it ended is unknown: reap only the children you started"
    }
  }
}

/// Which time limit passed.
public enum TimeoutPhase: Sendable, Equatable {
  /// ``RemoteServer/connectTimeout``: resolving and connecting.
  case connecting
  /// ``RemoteServer/idleTimeout``: waiting for the worker to say anything.
  case waitingForTheWorker
  /// ``RemoteServer/connectTimeout``: TLS and authentication, once
  /// connected (the limit covers resolving, connecting and these).
  case handshake
}

/// `2 s`, or `1500 ms` when not a whole number of seconds.
func durationText(_ duration: Duration) -> String {
  let milliseconds = wholeMilliseconds(duration)
  return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
}

func errnoText(_ code: Int32) -> String {
  "\(String(cString: procord_err_name(-code))) (\(String(cString: procord_strerror(-code))))"
}

/// `SIGSEGV (Segmentation fault)`, or the bare number for an unknown signal.
func signalText(_ signal: Int32) -> String {
  guard let name = procord_signal_name(signal) else { return "\(signal)" }
  let description = procord_signal_description(signal).map { String(cString: $0) } ?? ""
  return "SIG\(String(cString: name))" + (description.isEmpty ? "" : " (\(description))")
}
