import CTestSupport
import Foundation
import Synchronization
import Testing

@testable import Procord

/// `Server.run`, the API form, in this process (`dontFork`), with its accept
/// filter and keep-running predicate.
@Suite struct ServerAPITests {
  @Test func theAcceptFilterAndTheKeepRunningPredicateAreHonoured() throws {
    let port = procord_test_free_port()
    try #require(port > 0)
    let twice = ProcordTask<Int, Int>(name: "twice", input: .decimal, output: .decimal) { $0 * 2 }
    let peersSeen = Mutex(0)
    let served = Mutex(0)
    var options = Server.Options()
    options.port = Int(port)
    options.dontFork = true
    options.readTimeout = .seconds(5)
    options.acceptFilter = { peer in
      // Refuse the first peer, serve the others.
      peersSeen.withLock { count in
        count += 1
        return count > 1 && peer.hasPrefix("127.0.0.1:")
      }
    }
    options.keepRunning = {
      served.withLock {
        $0 += 1
        return $0 < 1
      }
    }
    let server = ServerThread(tasks: [twice], options: options)
    let refused = server.connect()
    try #require(refused >= 0)
    var buffer = [UInt8](repeating: 0, count: 16)
    // Refused by the filter: closed without a byte.
    #expect(procord_test_read(refused, &buffer, 16, 5000, nil) == 0)
    close(refused)

    let client = procord_test_connect_loopback(port)
    try #require(client >= 0)
    #expect(procord_test_write_all(client, "5Ttwice2V21", 11) == 0)
    let count = procord_test_read(client, &buffer, 6, 5000, nil)
    #expect(count == 6 && String(decoding: buffer[0..<6], as: UTF8.self) == "2V420R")
    close(client)

    // keepRunning said stop after that connection: run returns.
    server.expectReturn()
    #expect(peersSeen.withLock { $0 } == 2)
  }

  /// The bounds and figures of `Server.Options`: a second connection from
  /// an address allowed one is refused with a `U` frame naming the limit;
  /// the statistics count the answered task, the refusal and the unknown
  /// task (answered `E0` by the server itself), and the connections now.
  @Test func aPerAddressLimitRefusesWithAReasonAndTheStatisticsCountIt() throws {
    let port = procord_test_free_port()
    try #require(port > 0)
    let twice = ProcordTask<Int, Int>(name: "twice", input: .decimal, output: .decimal) { $0 * 2 }
    let statistics = ServerStatistics()
    var options = Server.Options()
    options.port = Int(port)
    options.dontFork = true
    options.maxConnectionsPerPeer = 1
    options.statistics = statistics
    // Asked after each task and each connection's end. Until the unknown
    // task below is counted, the server runs on; then it stops. (A flag
    // the test set after reading the first answer raced with the ask that
    // follows that answer, which may come after the client has read it.)
    options.keepRunning = { statistics.current.unknownTasks == 0 }
    let server = ServerThread(tasks: [twice], options: options)
    let first = server.connect()
    try #require(first >= 0)
    defer { close(first) }

    let second = procord_test_connect_loopback(port)
    try #require(second >= 0)
    var buffer = [UInt8](repeating: 0, count: 512)
    let refusal = procord_test_read(second, &buffer, buffer.count, 5000, nil)
    close(second)
    let text = String(decoding: buffer[0..<max(0, refusal)], as: UTF8.self)
    #expect(text.contains("U") && text.contains("this address has 1 connections already"), "got \(text)")

    #expect(procord_test_write_all(first, "5Ttwice2V21", 11) == 0)
    #expect(procord_test_read(first, &buffer, 6, 5000, nil) == 6)
    #expect(String(decoding: buffer[0..<6], as: UTF8.self) == "2V420R")
    // The unknown task is answered `E0`, which closes the connection; the
    // server, asked then, stops.
    #expect(procord_test_write_all(first, "4Tnope1V1", 9) == 0)
    let answer = procord_test_read(first, &buffer, 16, 5000, nil)
    #expect(String(decoding: buffer[0..<max(0, answer)], as: UTF8.self) == "1E0", "then the end of the stream")

    let figures = statistics.current
    #expect(figures.tasksAnswered == 1)
    #expect(figures.refusedAtPeerConnections == 1)
    #expect(figures.unknownTasks == 1)
    #expect(figures.connectionsAccepted == 1, "the refused one is not accepted as a client")
    #expect(figures.tasksRunningNow == 0 && figures.tasksWaitingNow == 0)

    server.expectReturn()
    #expect(statistics.current.connectionsNow == 0)
  }
}

/// `Server.run` on a thread of its own, listening on `options.port`.
private final class ServerThread: Sendable {
  private let finished = Mutex<Result<Void, any Error>?>(nil)
  private let port: Int32

  init(tasks: [any ServableTask], options: Server.Options) {
    port = Int32(options.port)
    Thread { [self] in
      let result = Result { try Server.run(tasks: tasks, options: options) }
      finished.withLock { $0 = result }
    }.start()
  }

  /// A connection to it, once it listens (within moments: nothing to await
  /// but its socket); a negated errno if it never does within 10 s.
  func connect() -> Int32 {
    var fd = procord_test_connect_loopback(port)
    let deadline = ContinuousClock.now + .seconds(10)
    while fd == -ECONNREFUSED && ContinuousClock.now < deadline {
      sched_yield()
      fd = procord_test_connect_loopback(port)
    }
    return fd
  }

  /// Expects `Server.run` to return, without throwing, within 40 s.
  func expectReturn(sourceLocation: SourceLocation = #_sourceLocation) {
    let deadline = ContinuousClock.now + .seconds(40)
    while finished.withLock({ $0 }) == nil && ContinuousClock.now < deadline { sched_yield() }
    let result = finished.withLock { $0 }
    #expect(result != nil, "Server.run did not return", sourceLocation: sourceLocation)
    if case .failure(let error) = result { Issue.record("Server.run threw \(error)", sourceLocation: sourceLocation) }
  }
}
