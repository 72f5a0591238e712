import Foundation
import Synchronization
import Testing

@testable import Procord

/// What a task prints reaches the main program, in every mode, in order,
/// and never corrupts the protocol.
@Suite struct OutputTests {
  struct Run {
    var output: [UInt8]
    var error: [UInt8]
    var status: Int32
    var outputText: String { String(decoding: output, as: UTF8.self) }
    var errorText: String { String(decoding: error, as: UTF8.self) }
  }

  /// Runs procord-demo with `arguments`, its stdout and stderr read to the end.
  func demo(_ arguments: [String]) throws -> Run {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: demoPath)
    process.arguments = arguments
    let stdout = Pipe(), stderr = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Both pipes at once: a full stderr pipe must not stall a long stdout.
    let errorData = Mutex<Data>(Data())
    let errorReader = Thread { errorData.withLock { $0 = stderr.fileHandleForReading.readDataToEndOfFile() } }
    errorReader.start()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !errorReader.isFinished { sched_yield() }
    return Run(output: [UInt8](output), error: [UInt8](errorData.withLock { $0 }), status: process.terminationStatus)
  }

  static let modes: [[String]] = [[], ["--worker-program", demoPath]]

  @Test(arguments: modes)
  func printThreeReachesStdoutAndStderrBeforeTheResult(mode: [String]) throws {
    let run = try demo(["run"] + mode + ["print", "3"])
    #expect(run.outputText == """
      print: line 1 of 3
      print: line 2 of 3
      print: line 3 of 3
      print(3) = 3

      """)
    #expect(run.errorText == """
      print: error line 1 of 3
      print: error line 2 of 3
      print: error line 3 of 3

      """)
    #expect(run.status == 0)
  }

  @Test(arguments: modes)
  func tenMebibytesOfOutputArriveWholeAndInOrder(mode: [String]) throws {
    let lines = 420_000  // about 10.5 MB on stdout, as much on stderr
    let run = try demo(["run"] + mode + ["print", String(lines)])
    #expect(run.output.count > 10 << 20)
    let received = run.outputText.split(separator: "\n", omittingEmptySubsequences: false)
    #expect(received.count == lines + 2)  // the lines, the result, the final empty piece
    let firstWrong = (0..<lines).first { received[$0] != "print: line \($0 + 1) of \(lines)" }
    #expect(firstWrong == nil, "line \(firstWrong.map { $0 + 1 } ?? 0) is \(firstWrong.map { received[$0] } ?? "")")
    #expect(received[lines] == "print(\(lines)) = \(lines)")
    #expect(run.errorText.hasSuffix("print: error line \(lines) of \(lines)\n"))
  }

  @Test(arguments: ["empty-print", "long-flush"])
  func anIllFormedPrintOrFlushIsADisconnection(mode: String) throws {
    try expectNoLeaks {
      let others = try (0..<3).map { _ in try delegate(DemoTasks.fibo, 10, to: demoSocketWorker) }
      let process = try delegate(DelegatedTask<Int, Int>(name: "probe"), 1, to: WorkerProgram(path: testWorkerPath, arguments: [mode]))
      #expect(Waiter.waitForAll(others + [process], timeout: .seconds(30)))
      #expect(failure(process.status) == .workerDisconnected(.protocolError(.illFormedMessage, reportedByWorker: false)))
      for other in others { #expect(try other.run() == 89) }
    }
  }
}
