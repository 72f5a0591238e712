import CTestSupport
import Foundation
import Testing

@testable import Procord

/// The client side of remote delegation, against listeners made here.
@Suite struct RemoteClientTests {
  @Test func aNameThatDoesNotResolveSaysSo() throws {
    // The loop makes its resolver at its first lookup of a name and keeps
    // it, with a socket for each name server, as long as the loop: made
    // here first, so that the lookup below must leave nothing of its own.
    let first = try delegate(DemoTasks.fibo, 1, to: .server(host: "nonexistent.invalid", port: 1111))
    first.wait()
    try expectNoLeaks {
      let process = try delegate(DemoTasks.fibo, 1, to: .server(host: "nonexistent.invalid", port: 1111))
      process.wait()
      guard case .error(.workerDisconnected(.couldNotResolve(_, let reason))) = process.status else {
        Issue.record("status is \(process.status)")
        return
      }
      #expect(!reason.isEmpty)
      #expect(process.pid == nil)
    }
  }

  @Test func aPortNobodyListensOnIsRefused() throws {
    try expectNoLeaks {
      let port = try withListener { port, _ in port }  // closed again: nobody listens
      let process = try delegate(DemoTasks.fibo, 1, to: .server(host: "127.0.0.1", port: port))
      process.wait()
      #expect(failure(process.status) == .workerDisconnected(.systemCallFailed(call: "connect", errno: ECONNREFUSED)))
    }
  }

  @Test func aServerThatNeverAcceptsTimesOutConnecting() throws {
    try expectNoLeaks {
      try withListener(backlog: 0) { port, _ in
        // Fill the tiny backlog so that the kernel drops our SYNs.
        let fillers = (0..<4).map { _ in procord_test_connect_pending(Int32(port)) }
        defer { fillers.filter { $0 >= 0 }.forEach { close($0) } }
        try #require(fillers.allSatisfy { $0 >= 0 }, "connect: \(fillers)")
        let server = RemoteServer(host: "127.0.0.1", port: port, connectTimeout: .milliseconds(300))
        let process = try delegate(DemoTasks.fibo, 1, to: server)
        #expect(process.wait(timeout: .seconds(10)))
        #expect(failure(process.status) == .workerDisconnected(.timedOut(.connecting)))
      }
    }
  }

  @Test func aSilentServerTimesOutWhenAskedTo() throws {
    try expectNoLeaks {
      try withListener { port, listener in
        let server = RemoteServer(host: "127.0.0.1", port: port, idleTimeout: .milliseconds(200))
        let process = try delegate(DemoTasks.fibo, 1, to: server)
        let accepted = procord_test_accept(listener, 10_000)  // accepted, and never answered
        try #require(accepted >= 0, "no connection came: errno \(-accepted)")
        defer { close(accepted) }
        #expect(process.wait(timeout: .seconds(10)))
        #expect(failure(process.status) == .workerDisconnected(.timedOut(.waitingForTheWorker)))
      }
    }
  }

  @Test func killingARemoteProcessResetsItsConnection() throws {
    try expectNoLeaks {
      try withListener { port, listener in
        let process = try delegate(DemoTasks.fibo, 1, to: RemoteServer(host: "127.0.0.1", port: port))
        let accepted = procord_test_accept(listener, 10_000)
        try #require(accepted >= 0, "no connection came: errno \(-accepted)")
        defer { close(accepted) }
        // The task's frames are all sent before anything is killed.
        #expect(readRaw(accepted, 9) == .bytes("4Tfibo1V1"))
        process.kill()
        #expect(process.wait(timeout: .seconds(10)))
        #expect(failure(process.status) == .workerKilled)
        // The server side then sees the connection reset, with nothing more
        // before it: a reset, not an orderly end, which a server busy with the
        // task (tasks sent ahead unread behind it) would not see.
        #expect(readRaw(accepted, 64) == .failed(errno: Int(ECONNRESET), partial: ""))
      }
    }
  }

  @Test func anIPv6LiteralWorks() throws {
    try expectNoLeaks {
      try withListener(family: AF_INET6) { port, listener in
        let process = try delegate(DemoTasks.fibo, 1, to: .server(host: "::1", port: port))
        let accepted = procord_test_accept(listener, 10_000)
        try #require(accepted >= 0, "no connection came: errno \(-accepted)")
        // Read the task (`4Tfibo1V1`), answer like an original worker, close.
        #expect(readRaw(accepted, 9) == .bytes("4Tfibo1V1"))
        #expect(procord_test_write_all(accepted, "2V42", 4) == 0)
        close(accepted)
        #expect(try process.run() == 42)
      }
    }
  }
}

/// What a raw read gave: the bytes (fewer than asked only at the end of the
/// stream), or how it failed (-ETIMEDOUT: neither came within 5 s).
private enum RawRead: Equatable {
  case bytes(String)
  case failed(errno: Int, partial: String)
}

/// Reads `count` bytes from `fd`, or up to the end of the stream, within 5 s.
private func readRaw(_ fd: Int32, _ count: Int) -> RawRead {
  var buffer = [UInt8](repeating: 0, count: count)
  var partial = 0
  let n = procord_test_read(fd, &buffer, count, 5000, &partial)
  if n < 0 { return .failed(errno: -n, partial: String(decoding: buffer[0..<partial], as: UTF8.self)) }
  return .bytes(String(decoding: buffer[0..<n], as: UTF8.self))
}

/// Runs `body` with a listening TCP socket on the loopback address of
/// `family` and its port; closes it after.
private func withListener<R>(
  family: Int32 = AF_INET, backlog: Int32 = 16, _ body: (Int, Int32) throws -> R
) throws -> R {
  var port: Int32 = 0
  let fd = procord_test_listen(family, backlog, &port)
  try #require(fd >= 0, "listen: errno \(-fd)")
  defer { close(fd) }
  return try body(Int(port), fd)
}
