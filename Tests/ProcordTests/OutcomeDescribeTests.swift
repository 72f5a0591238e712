// The C core's procord_outcome_describe and the overlay's ProcordError say
// the same sentence for the same DISCONNECTED outcome: each case here reads
// one outcome both ways, so the two cannot drift apart unnoticed.
import CProcord
import Foundation
import Testing

@testable import Procord

@Suite struct OutcomeDescribeTests {
  @Test func aCrash() {
    expectSameSentence(error: PROCORD_EDISCONNECTED.rawValue, call: "read", signal: SIGSEGV, pid: 123)
  }

  @Test func aCrashWithTheRuntimesLastWords() {
    expectSameSentence(
      error: PROCORD_EDISCONNECTED.rawValue, call: "read", signal: SIGTRAP, pid: 123,
      tail: "main.swift:3: Fatal error: Unexpectedly found nil\nbacktrace\n")
  }

  @Test func aCrashWithoutLastWordsGivesTheTail() {
    expectSameSentence(error: PROCORD_EDISCONNECTED.rawValue, call: "read", signal: SIGABRT, pid: 9, tail: "one\n")
  }

  @Test func aProgramThatCannotStart() {
    expectSameSentence(error: -ENOENT, call: "posix_spawn", destination: "/nonexistent/app")
  }

  @Test func aRefusedConnection() {
    expectSameSentence(error: -ECONNREFUSED, call: "connect", destination: "127.0.0.1:1")
  }

  @Test func anExitWithoutAnswer() {
    expectSameSentence(error: PROCORD_EDISCONNECTED.rawValue, call: "read", exitCode: 3, pid: 5)
  }

  @Test func aStreamClosedWithoutAnswer() {
    expectSameSentence(error: PROCORD_EDISCONNECTED.rawValue, call: "read")
  }

  @Test func protocolErrors() {
    expectSameSentence(error: PROCORD_ETOO_LONG.rawValue, call: "parse", exitCode: 0, pid: 5)
    expectSameSentence(error: PROCORD_EUNEXPECTED.rawValue, call: "peer", exitCode: 0, pid: 5)
  }

  @Test func remoteFailures() {
    expectSameSentence(error: PROCORD_ERESOLVE.rawValue, call: "getaddrinfo", detail: "Name or service not known")
    expectSameSentence(error: PROCORD_ETLS.rawValue, call: "tls", detail: "certificate verify failed")
    expectSameSentence(error: PROCORD_EAUTH.rawValue, call: "authenticate", detail: nil)
    expectSameSentence(error: PROCORD_ETIMEOUT.rawValue, call: "connect")
    expectSameSentence(error: PROCORD_ETIMEOUT.rawValue, call: "idle")
    expectSameSentence(error: PROCORD_ETIMEOUT.rawValue, call: "handshake")
  }

  @Test func aSystemCallThatFailed() {
    expectSameSentence(error: -EBADF, call: "write", pid: 5)
  }

  @Test func aWorkerReapedElsewhere() {
    expectSameSentence(error: -ECHILD, call: "waitpid", pid: 5)
  }

  @Test func aStartRefused() {
    expectSameSentence(
      error: PROCORD_ENESTED.rawValue, call: "spawn", detail: "delegations nested more than 16 deep")
  }
}

/// Reads a DISCONNECTED outcome of task "fibo" both ways and expects the
/// same text.
private func expectSameSentence(
  error: Int32, call: String, signal: Int32 = 0, exitCode: Int32 = -1, pid: Int32 = -1,
  detail: String? = nil, tail: String? = nil, destination: String = "127.0.0.1:1111",
  sourceLocation: SourceLocation = #_sourceLocation
) {
  let texts: [String] = [call, detail ?? "", tail ?? ""]
  let strings = texts.map { strdup($0)! }
  defer { strings.forEach { free($0) } }
  var outcome = procord_outcome_t()
  outcome.kind = PROCORD_OUTCOME_DISCONNECTED
  outcome.error = error
  outcome.call = UnsafePointer(strings[0])
  outcome.detail = detail == nil ? nil : UnsafePointer(strings[1])
  outcome.signal = signal
  outcome.exit_code = exitCode
  outcome.worker_pid = pid
  if let tail {
    outcome.stderr_tail = UnsafePointer(strings[2])
    outcome.stderr_tail_length = tail.utf8.count
  }
  let swift = ProcordError(
    .workerDisconnected(DisconnectionCause(outcome, worker: destination)), taskName: "fibo",
    destination: destination, pid: pid > 0 ? pid : nil, evidence: CrashEvidence(outcome)
  ).description
  var buffer = [CChar](repeating: 0, count: 2048)
  let length = procord_outcome_describe(&outcome, "fibo", destination, &buffer, buffer.count)
  let written = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
  let c = String(decoding: written, as: UTF8.self)
  #expect(c == swift, sourceLocation: sourceLocation)
  #expect(length == written.count, sourceLocation: sourceLocation)
}
