import Foundation
import Synchronization
import Testing

@testable import Procord

/// What a task prints reaches the main program, in every mode, in order,
/// and never corrupts the protocol.
@Suite struct OutputTests {
  static let modes: [[String]] = [[], ["--worker-program", demoPath]]

  @Test(arguments: modes)
  func printThreeReachesStdoutAndStderrBeforeTheResult(mode: [String]) throws {
    let run = try runProgram(["run"] + mode + ["print", "3"])
    #expect(
      run.outputText == """
        print: line 1 of 3
        print: line 2 of 3
        print: line 3 of 3
        print(3) = 3

        """)
    #expect(
      run.errorText == """
        print: error line 1 of 3
        print: error line 2 of 3
        print: error line 3 of 3

        """)
    #expect(run.status == 0)
  }

  @Test(arguments: modes)
  func theMainProgramsOwnOutputKeepsItsPlace(mode: [String]) throws {
    // Each result line is printed (buffered) by the main program after its
    // task; the next task's lines must not overtake it.
    let run = try runProgram(["run", "--sequential"] + mode + ["print", "2", "1"])
    #expect(
      run.outputText == "print: line 1 of 2\nprint: line 2 of 2\nprint(2) = 2\nprint: line 1 of 1\nprint(1) = 1\n")
  }

  @Test(arguments: modes)
  func tenMebibytesOfOutputArriveWholeAndInOrder(mode: [String]) throws {
    let lines = 420_000  // about 10.5 MB on stdout, as much on stderr
    let run = try runProgram(["run"] + mode + ["print", String(lines)])
    #expect(run.output.count > 10 << 20)
    let received = run.outputText.split(separator: "\n", omittingEmptySubsequences: false)
    #expect(received.count == lines + 2)  // the lines, the result, the final empty piece
    let firstWrong = (0..<lines).first { received[$0] != "print: line \($0 + 1) of \(lines)" }
    #expect(firstWrong == nil, "line \(firstWrong.map { $0 + 1 } ?? 0) is \(firstWrong.map { received[$0] } ?? "")")
    #expect(received[lines] == "print(\(lines)) = \(lines)")
    #expect(run.errorText.hasSuffix("print: error line \(lines) of \(lines)\n"))
  }

  @Test(arguments: modes)
  func progressMessagesArriveInOrderBeforeTheResult(mode: [String]) throws {
    // One pipe for both streams, so that their order can be checked.
    let run = try runProgram(["run"] + mode + ["progress", "5"], mergingStreams: true)
    let text = run.outputText
    #expect(run.status == 0)
    #expect(text == (1...5).map { "progress: step \($0) of 5\n" }.joined() + "progress(5) = 5\n")
  }

  @Test func handlersGetTheirDestinationAndFlushes() throws {
    try expectNoLeaks {
      let progress = DelegatedTask<Int, Int>(name: "progress", input: .decimal, output: .decimal)
      let seen = Mutex<[PrintEvent]>([])
      var options = DelegationOptions()
      options.printHandlers[OutputDestination("1")] = { event in seen.withLock { $0.append(event) } }
      let process = try delegate(progress, 3, to: demoSocketWorker, options: options)
      let value = try process.run()
      #expect(value == 3)
      #expect(seen.withLock { $0 } == [.text("step 1 of 3"), .text("step 2 of 3"), .text("step 3 of 3"), .flush])
    }
  }

  @Test func theDefaultHandlerServesDelegationsWithoutTheirOwn() throws {
    try expectNoLeaks {
      let progress = DelegatedTask<Int, Int>(name: "progress", input: .decimal, output: .decimal)
      let count = Mutex(0)
      PrintHandlers.setDefault(
        { event in if case .text = event { count.withLock { $0 += 1 } } }, for: OutputDestination("1"))
      defer { PrintHandlers.setDefault(nil, for: OutputDestination("1")) }
      let first = try delegate(progress, 2, to: demoSocketWorker).run()
      #expect(first == 2)
      #expect(count.withLock { $0 } == 2)
      // Nobody handles it any more: dropped, and nothing else changes.
      PrintHandlers.setDefault(nil, for: OutputDestination("1"))
      let second = try delegate(progress, 2, to: demoSocketWorker).run()
      #expect(second == 2)
      #expect(count.withLock { $0 } == 2)
    }
  }

  @Test(arguments: [demoSocketWorker, demoStdioWorker])
  func outputCanBeCapturedAsData(worker: WorkerProgram) throws {
    try expectNoLeaks {
      let print = DelegatedTask<Int, Int>(name: "print", input: .decimal, output: .decimal)
      var options = DelegationOptions()
      options.captureOutput = true
      // An original-mode worker's stderr is the descriptor it is given (not
      // captured): give it a pipe, to see what reaches it.
      var stderrPipe: [Int32] = [-1, -1]
      #expect(pipe(&stderrPipe) == 0)
      stderrPipe.forEach { _ = fcntl($0, F_SETFD, FD_CLOEXEC) }
      defer { stderrPipe.filter { $0 >= 0 }.forEach { close($0) } }
      var program = worker
      if worker.channel != .socket { program.standardError = stderrPipe[1] }
      let process = try delegate(print, 2, to: program, options: options)
      let value = try process.run()
      #expect(value == 2)
      close(stderrPipe[1])
      stderrPipe[1] = -1
      // The worker has exited: its end of the pipe is closed, so is ours.
      let passedOn = String(
        decoding: FileHandle(fileDescriptor: stderrPipe[0], closeOnDealloc: false).readDataToEndOfFile(),
        as: UTF8.self)
      let captured = process.capturedOutput
      let errorLines = "print: error line 1 of 2\nprint: error line 2 of 2\n"
      #expect(String(decoding: captured.standardOutput, as: UTF8.self) == "print: line 1 of 2\nprint: line 2 of 2\n")
      if worker.channel == .socket {
        // Both streams captured, and nothing passed on.
        #expect(String(decoding: captured.standardError, as: UTF8.self) == errorLines)
        #expect(passedOn == "")
      } else {
        // Stdout captured; stderr went to its descriptor, untouched.
        #expect(captured.standardError == [])
        #expect(passedOn == errorLines)
      }
    }
  }

  @Test(arguments: ["empty-print", "long-flush"])
  func anIllFormedPrintOrFlushIsADisconnection(mode: String) throws {
    try expectNoLeaks {
      let others = try (0..<3).map { _ in try delegate(DemoTasks.fibo, 10, to: demoSocketWorker) }
      let process = try delegate(
        DelegatedTask<Int, Int>(name: "probe"), 1, to: WorkerProgram(path: testWorkerPath, arguments: [mode]))
      #expect(Waiter.waitForAll(others + [process], timeout: .seconds(30)))
      #expect(
        failure(process.status) == .workerDisconnected(.protocolError(.illFormedMessage, reportedByWorker: false)))
      for other in others {
        let value = try other.run()
        #expect(value == 89)
      }
    }
  }
}
