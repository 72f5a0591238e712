// DisconnectionCause reads the stage of a failure (procord_outcome_t.stage,
// one switch over procord_stage_t), not the text of its call: each case
// here gives the cause an outcome of that stage had before the stage
// existed (when it was read from `call`), for an outcome that carries the
// stage and a call that says otherwise, for one that carries only the call,
// and the C core's procord_outcome_describe says the same sentence.
import CProcord
import Foundation
import Testing

@testable import Procord

@Suite struct StageMappingTests {
  private let worker = "127.0.0.1:1111"

  @Test func spawn() {
    expectCause(
      .couldNotStart(program: worker, errno: ENOENT), stage: .PROCORD_STAGE_SPAWN, call: "posix_spawn",
      error: -ENOENT)
    expectCause(
      .startRefused(program: worker, reason: "too deep"), stage: .PROCORD_STAGE_SPAWN, call: "spawn",
      error: PROCORD_ENESTED.rawValue, detail: "too deep")
    expectCause(
      .startRefused(program: worker, reason: "not serving"), stage: .PROCORD_STAGE_SPAWN, call: "spawn",
      error: PROCORD_ENOTSERVING.rawValue, detail: "not serving")
  }

  @Test func resolve() {
    expectCause(
      .couldNotResolve(host: worker, reason: "Name or service not known"), stage: .PROCORD_STAGE_RESOLVE,
      call: "getaddrinfo", error: PROCORD_ERESOLVE.rawValue, detail: "Name or service not known")
    expectCause(
      .couldNotResolve(host: worker, reason: "unknown reason"), stage: .PROCORD_STAGE_RESOLVE,
      call: "getaddrinfo", error: -ENOMEM)
  }

  @Test func connect() {
    expectCause(
      .timedOut(.connecting), stage: .PROCORD_STAGE_CONNECT, call: "connect", error: PROCORD_ETIMEOUT.rawValue)
    // The call's text is part of this cause: no other call to try.
    expectCause(
      .systemCallFailed(call: "connect", errno: ECONNREFUSED), stage: .PROCORD_STAGE_CONNECT, call: "connect",
      error: -ECONNREFUSED, decoy: nil)
  }

  @Test func tlsAuthenticationAndTheHandshake() {
    expectCause(
      .tlsFailed(reason: "certificate verify failed"), stage: .PROCORD_STAGE_TLS, call: "tls",
      error: PROCORD_ETLS.rawValue, detail: "certificate verify failed")
    expectCause(
      .authenticationFailed(reason: "wrong proof"), stage: .PROCORD_STAGE_AUTHENTICATE, call: "authenticate",
      error: PROCORD_EAUTH.rawValue, detail: "wrong proof")
    expectCause(
      .systemCallFailed(call: "authenticate", errno: ENOMEM), stage: .PROCORD_STAGE_AUTHENTICATE,
      call: "authenticate", error: -ENOMEM, decoy: nil)
    expectCause(
      .timedOut(.handshake), stage: .PROCORD_STAGE_HANDSHAKE, call: "handshake", error: PROCORD_ETIMEOUT.rawValue)
  }

  @Test func readAndWrite() {
    let ended = PROCORD_EDISCONNECTED.rawValue
    expectCause(.exited(code: 3), stage: .PROCORD_STAGE_READ, call: "read", error: ended, exitCode: 3)
    expectCause(.closedWithoutAnswer, stage: .PROCORD_STAGE_READ, call: "read", error: ended)
    expectCause(.signaled(SIGSEGV), stage: .PROCORD_STAGE_READ, call: "read", error: ended, signal: SIGSEGV)
    expectCause(
      .closedWithoutAnswer, stage: .PROCORD_STAGE_READ, call: "read", error: ended, signal: SIGKILL,
      killedAfterGrace: true)
    expectCause(.closedWithoutAnswer, stage: .PROCORD_STAGE_READ, call: "read", error: -ECONNRESET, decoy: nil)
    expectCause(.exited(code: 0), stage: .PROCORD_STAGE_WRITE, call: "write", error: -EPIPE, exitCode: 0, decoy: nil)
    expectCause(
      .systemCallFailed(call: "write", errno: EBADF), stage: .PROCORD_STAGE_WRITE, call: "write", error: -EBADF,
      decoy: nil)
  }

  @Test func protocolErrors() {
    expectCause(
      .protocolError(.illFormedMessage, reportedByWorker: false), stage: .PROCORD_STAGE_PARSE, call: "parse",
      error: PROCORD_EILL_FORMED.rawValue)
    expectCause(
      .protocolError(.unexpectedMessage, reportedByWorker: false), stage: .PROCORD_STAGE_RECEIVE, call: "receive",
      error: PROCORD_EUNEXPECTED.rawValue)
    expectCause(
      .protocolError(.messageTooLong, reportedByWorker: true), stage: .PROCORD_STAGE_PEER, call: "peer",
      error: PROCORD_ETOO_LONG.rawValue, exitCode: 0)
  }

  @Test func timeLimits() {
    let timeout = PROCORD_ETIMEOUT.rawValue
    expectCause(.timedOut(.waitingForTheWorker), stage: .PROCORD_STAGE_IDLE, call: "idle", error: timeout)
    expectCause(.closedWithoutAnswer, stage: .PROCORD_STAGE_DEADLINE, call: "deadline", error: timeout)
    expectCause(.closedWithoutAnswer, stage: .PROCORD_STAGE_CLOSE, call: "close", error: timeout)
  }

  @Test func reapAndSetup() {
    expectCause(.reapedElsewhere, stage: .PROCORD_STAGE_REAP, call: "waitpid", error: -ECHILD)
    expectCause(
      .systemCallFailed(call: "setup", errno: ENOMEM), stage: .PROCORD_STAGE_SETUP, call: "setup", error: -ENOMEM,
      decoy: nil)
  }

  @Test func noStageAndNoCall() {
    var outcome = disconnected(stage: .PROCORD_STAGE_NONE, call: nil, error: PROCORD_EDISCONNECTED.rawValue)
    #expect(DisconnectionCause(outcome, worker: worker) == .protocolError(.disconnected, reportedByWorker: false))
    outcome.error = -ECONNRESET
    #expect(DisconnectionCause(outcome, worker: worker) == .closedWithoutAnswer)
  }

  /// A stage this overlay does not know (a newer C core's) is read by its
  /// error code and the worker's end, as one without a stage.
  @Test func aStageFromANewerCore() throws {
    let newer = try #require(procord_stage_t(rawValue: 1000))
    let call = strdup("something new")!
    defer { free(call) }
    var outcome = disconnected(stage: newer, call: UnsafePointer(call), error: PROCORD_ETLS.rawValue)
    #expect(DisconnectionCause(outcome, worker: worker) == .tlsFailed(reason: "unknown reason"))
    outcome.error = -ECONNRESET
    outcome.exit_code = 1
    #expect(DisconnectionCause(outcome, worker: worker) == .exited(code: 1))
    outcome.error = -EIO
    #expect(DisconnectionCause(outcome, worker: worker) == .systemCallFailed(call: "something new", errno: EIO))
  }

  /// Expects `cause` from an outcome at `stage` with the call `decoy` (a
  /// call of another stage: only the stage may decide), from one with only
  /// `call` (how outcomes were read before the stage), and the C core's
  /// sentence for the outcome to be the overlay's. `decoy` nil: the cause
  /// names the call, so the outcome at `stage` keeps `call`.
  private func expectCause(
    _ cause: DisconnectionCause, stage: procord_stage_t, call: String, error: Int32, detail: String? = nil,
    exitCode: Int32 = -1, signal: Int32 = 0, killedAfterGrace: Bool = false, decoy: String? = "frobnicate",
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let strings: [String] = [call, decoy ?? call, detail ?? ""]
    let texts = strings.map { strdup($0)! }
    defer { texts.forEach { free($0) } }
    func outcome(stage: procord_stage_t, call: UnsafeMutablePointer<CChar>) -> procord_outcome_t {
      var outcome = disconnected(stage: stage, call: UnsafePointer(call), error: error)
      outcome.detail = detail == nil ? nil : UnsafePointer(texts[2])
      outcome.exit_code = exitCode
      outcome.signal = signal
      outcome.killed_after_grace = killedAfterGrace ? 1 : 0
      return outcome
    }
    var staged = outcome(stage: stage, call: texts[1])
    let callOnly = outcome(stage: .PROCORD_STAGE_NONE, call: texts[0])
    #expect(DisconnectionCause(staged, worker: worker) == cause, "by the stage", sourceLocation: sourceLocation)
    #expect(DisconnectionCause(callOnly, worker: worker) == cause, "by the call", sourceLocation: sourceLocation)
    let swift = ProcordError(
      .workerDisconnected(DisconnectionCause(staged, worker: worker)), taskName: "fibo", destination: worker,
      pid: nil
    ).description
    var buffer = [CChar](repeating: 0, count: 2048)
    procord_outcome_describe(&staged, "fibo", worker, &buffer, buffer.count)
    let c = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    #expect(c == swift, sourceLocation: sourceLocation)
  }

  private func disconnected(stage: procord_stage_t, call: UnsafePointer<CChar>?, error: Int32) -> procord_outcome_t {
    var outcome = procord_outcome_t()
    outcome.kind = PROCORD_OUTCOME_DISCONNECTED
    outcome.stage = stage
    outcome.call = call
    outcome.error = error
    outcome.exit_code = -1
    outcome.worker_pid = -1
    return outcome
  }
}
