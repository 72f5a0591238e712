import Foundation
import Testing

@testable import Procord

/// The client side of remote delegation, against listeners made here.
@Suite struct RemoteClientTests {
  @Test func aNameThatDoesNotResolveSaysSo() throws {
    try expectNoLeaks {
      let process = try delegate(host: "nonexistent.invalid", port: 1111, task: DemoTasks.fibo, input: 1)
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
      let process = try delegate(host: "127.0.0.1", port: port, task: DemoTasks.fibo, input: 1)
      process.wait()
      #expect(failure(process.status) == .workerDisconnected(.systemCallFailed(call: "connect", errno: ECONNREFUSED)))
    }
  }

  @Test func aServerThatNeverAcceptsTimesOutConnecting() throws {
    try expectNoLeaks {
      try withListener(backlog: 0) { port, _ in
        // Fill the tiny backlog so that the kernel drops our SYNs.
        let fillers = (0..<4).map { _ in connectRaw(port: port) }
        defer { fillers.forEach { close($0) } }
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
        let accepted = accept(listener, nil, nil)  // accepted, and never answered
        defer { close(accepted) }
        #expect(process.wait(timeout: .seconds(10)))
        #expect(failure(process.status) == .workerDisconnected(.timedOut(.waitingForTheWorker)))
      }
    }
  }

  @Test func killingARemoteProcessClosesItsConnection() throws {
    try expectNoLeaks {
      try withListener { port, listener in
        let process = try delegate(DemoTasks.fibo, 1, to: RemoteServer(host: "127.0.0.1", port: port))
        let accepted = accept(listener, nil, nil)
        defer { close(accepted) }
        process.kill()
        #expect(process.wait(timeout: .seconds(10)))
        #expect(failure(process.status) == .workerKilled)
        // The server side sees the end of the stream after the task's frames.
        var buffer = [UInt8](repeating: 0, count: 64)
        var total = 0
        while true {
          let n = read(accepted, &buffer, 64)
          if n <= 0 { break }
          total += n
        }
        #expect(total <= 64)
      }
    }
  }

  @Test func anIPv6LiteralWorks() throws {
    try expectNoLeaks {
      try withListener(family: AF_INET6) { port, listener in
        let process = try delegate(host: "::1", port: port, task: DemoTasks.fibo, input: 1)
        let accepted = accept(listener, nil, nil)
        // Read the task (`4Tfibo1V1`), answer like an original worker, close.
        var buffer = [UInt8](repeating: 0, count: 9)
        var got = 0
        while got < 9 {
          let n = buffer.withUnsafeMutableBytes { read(accepted, $0.baseAddress! + got, 9 - got) }
          if n <= 0 { break }
          got += n
        }
        #expect(String(decoding: buffer[0..<got], as: UTF8.self) == "4Tfibo1V1")
        _ = "2V42".withCString { write(accepted, $0, 4) }
        close(accepted)
        #expect(try process.run() == 42)
      }
    }
  }
}

/// Runs `body` with a listening TCP socket on loopback and its port; closes it after.
private func withListener<R>(
  family: Int32 = AF_INET, backlog: Int32 = 16, _ body: (Int, Int32) throws -> R
) throws -> R {
  let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  #expect(fd >= 0)
  defer { close(fd) }
  var port: UInt16 = 0
  if family == AF_INET6 {
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
    withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
        _ = bind(fd, pointer, length)
        _ = listen(fd, backlog)
        _ = getsockname(fd, pointer, &length)
      }
    }
    port = UInt16(bigEndian: address.sin6_port)
  } else {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
        _ = bind(fd, pointer, length)
        _ = listen(fd, backlog)
        _ = getsockname(fd, pointer, &length)
      }
    }
    port = UInt16(bigEndian: address.sin_port)
  }
  return try body(Int(port), fd)
}

/// A plain non-blocking connect to 127.0.0.1:port (it may stay pending).
private func connectRaw(port: Int) -> Int32 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
  address.sin_port = UInt16(port).bigEndian
  _ = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
    }
  }
  return fd
}
