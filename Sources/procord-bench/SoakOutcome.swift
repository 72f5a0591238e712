import CProcord
import Procord

#if canImport(Glibc)
import Glibc
#endif

/// How a soak task's final status compares with the one it was made to get.
enum SoakVerdict: String, CaseIterable, Codable, Sendable {
  /// A task that should succeed did, with the right output.
  case success
  /// A task made to fail failed exactly as documented.
  case expectedFailure = "expected failure"
  /// Anything else.
  case unexpected
}

/// One task's final status, classified.
struct SoakOutcome: Sendable {
  var plan: SoakPlan
  /// The status in a few words, what the counts are keyed by (`success`,
  /// `killed`, `disconnected: signal SIGSEGV`, ...).
  var status: String
  var verdict: SoakVerdict
  /// For an unexpected outcome: what was expected and what came.
  var detail: String?

  /// Classifies a finished task: `final` is its status once waiting
  /// returned, `atKill` the status right after ``AnyDelegatedProcess/kill()``
  /// for the tasks that are killed, and `check` says what is wrong with an
  /// output (nil when it is right).
  static func classify<Output>(
    _ plan: SoakPlan, final: Status<Output>, atKill: Status<Output>?, check: (Output) -> String?
  ) -> SoakOutcome {
    let label = statusLabel(final)
    func unexpected(_ status: String, _ why: String) -> SoakOutcome {
      SoakOutcome(
        plan: plan, status: status, verdict: .unexpected, detail: "\(plan.route.rawValue), \(plan.summary): \(why)")
    }
    guard final.isFinished else { return unexpected(label, "waiting returned with no final status") }
    if let atKill, statusLabel(atKill) != "killed" {
      return unexpected(label, "right after kill() the status was \(describe(atKill)), not killed")
    }

    switch plan.input {
    case .echo, .fibo:
      guard case .success(let output) = final else {
        return unexpected(label, "expected success, got \(describe(final))")
      }
      if let problem = check(output) { return unexpected("wrong output", problem) }
      return SoakOutcome(plan: plan, status: label, verdict: .success)
    case .crash(let how):
      let expected = expectedCrash(how, route: plan.route)
      guard case .error(let error) = final, error == expected else {
        return unexpected(label, "expected \(expected), got \(describe(final))")
      }
    case .sleepPastDeadline(let milliseconds):
      guard case .error(.deadlineExceeded(let deadline)) = final, deadline == .milliseconds(milliseconds) else {
        return unexpected(label, "expected deadline exceeded (\(milliseconds) ms), got \(describe(final))")
      }
    case .kill:
      guard case .error(.workerKilled) = final else {
        return unexpected(label, "expected killed, got \(describe(final))")
      }
    }
    return SoakOutcome(plan: plan, status: label, verdict: .expectedFailure)
  }

  /// The documented status of `crash(how)`: a local worker's end is known
  /// (the signal, or the exit code); a server's worker is a process of the
  /// server's, and the client only sees its connection close.
  static func expectedCrash(_ how: String, route: SoakRoute) -> ExecutionError {
    if route.isRemote { return .workerDisconnected(.closedWithoutAnswer) }
    switch how {
    case "segv": return .workerDisconnected(.signaled(SIGSEGV))
    case "abort": return .workerDisconnected(.signaled(SIGABRT))
    default: return .workerDisconnected(.exited(code: Int32(how.dropFirst(5)) ?? -1))
    }
  }

  /// This outcome, unless the status read again later (`laterStatus`) is
  /// not the one it was classified by: a final status must never change.
  func confirmed(laterStatus: String, finalStatus: String) -> SoakOutcome {
    guard laterStatus != finalStatus else { return self }
    return SoakOutcome(
      plan: plan, status: "changed after final", verdict: .unexpected,
      detail: "\(plan.route.rawValue), \(plan.summary): the final status '\(finalStatus)' became '\(laterStatus)'")
  }

  /// A failure "thrown by delegate", which should only happen when memory
  /// runs out or the pool refuses.
  static func refused(_ plan: SoakPlan, _ error: any Error) -> SoakOutcome {
    SoakOutcome(
      plan: plan, status: "refused by delegate", verdict: .unexpected,
      detail: "\(plan.route.rawValue), \(plan.summary): delegate threw \(error)")
  }

  /// The status in a few words, without the numbers that vary from task
  /// to task (the exit code, the deadline), so that counts stay few.
  static func statusLabel<Output>(_ status: Status<Output>) -> String {
    switch status {
    case .working: return "no final status"
    case .success: return "success"
    case .exception: return "exception"
    case .error(let error):
      switch error {
      case .workerUnknownException: return "unknown exception"
      case .workerKilled: return "killed"
      case .noWorkerAvailable: return "no worker available"
      case .deadlineExceeded: return "deadline exceeded"
      case .workerDisconnected(let cause): return "disconnected: " + causeLabel(cause)
      }
    }
  }

  private static func causeLabel(_ cause: DisconnectionCause) -> String {
    switch cause {
    case .signaled(let signal):
      return "signal " + (procord_signal_name(signal).map { "SIG" + String(cString: $0) } ?? "\(signal)")
    case .exited: return "exited"
    case .closedWithoutAnswer: return "closed without answer"
    case .protocolError(let error, _): return "protocol error (\(error))"
    case .systemCallFailed(let call, _): return "\(call) failed"
    case .couldNotStart: return "could not start"
    case .startRefused: return "start refused"
    case .undecodableOutput: return "undecodable output"
    case .couldNotResolve: return "could not resolve"
    case .timedOut: return "timed out"
    case .tlsFailed: return "TLS failed"
    case .authenticationFailed: return "authentication failed"
    case .reapedElsewhere: return "reaped elsewhere"
    }
  }

  /// The status in full, for the examples of unexpected outcomes.
  static func describe<Output>(_ status: Status<Output>) -> String {
    switch status {
    case .working: return "working"
    case .success: return "success"
    case .exception(let error): return "exception: \(error)"
    case .error(let error): return "\(error)"
    }
  }
}
