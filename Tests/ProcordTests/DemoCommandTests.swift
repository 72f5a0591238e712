import Foundation
import Testing

/// What `procord-demo` prints and how it exits: other tools drive it, so its
/// command line is a contract.
@Suite struct DemoCommandTests {
  @Test func runPrintsOneLinePerInputInOrder() throws {
    let run = try runProgram(["run", "fibo", "10", "1", "20"])
    #expect(run.outputText == "fibo(10) = 89\nfibo(1) = 1\nfibo(20) = 10946\n")
    #expect(run.status == 0)
  }

  @Test func factUsesDecimalText() throws {
    let run = try runProgram(["run", "fact", "5"])
    #expect(run.outputText == "fact(5) = 120\n")
    #expect(run.errorText.isEmpty)
    #expect(run.status == 0)
  }

  @Test func aRaisedErrorIsReportedAndExitsOne() throws {
    let run = try runProgram(["run", "fact", "-1"])
    #expect(run.outputText == "fact(-1) raised: fact: negative argument\n")
    #expect(run.status == 1)
  }

  @Test func anUnknownExceptionIsAFailure() throws {
    let run = try runProgram(["run", "fibo", "-1"])
    #expect(run.outputText.hasPrefix("fibo(-1) failed: worker raised an unknown exception"))
    #expect(run.status == 1)
  }

  @Test func aCrashNamesTheSignalAndTheDemoExitsNormally() throws {
    let run = try runProgram(["run", "crash", "segv"])
    #expect(run.outputText.hasPrefix("crash(segv) failed: "))
    #expect(run.outputText.contains("SIGSEGV"))
    #expect(run.exitedNormally)
    #expect(run.status == 1)
  }

  @Test func rfiboDelegatesRecursivelyAndLeavesNoProcessBehind() throws {
    // Orphaned workers of workers would be reparented to this process (a
    // subreaper), where childProcesses() finds them. (Descriptors are not
    // counted here: Foundation's Process keeps some of its own.)
    warmUp()
    let run = try runProgram(["run", "rfibo", "8"])
    #expect(run.outputText == "rfibo(8) = 34\n")
    #expect(run.status == 0)
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  @Test func overflowAndTheRfiboLimitAreErrorsNotWrongNumbers() throws {
    let fact = try runProgram(["run", "fact", "20", "21"])
    #expect(fact.outputText == "fact(20) = 2432902008176640000\nfact(21) raised: fact: 21 is too large for a 64-bit result\n")
    let fibo = try runProgram(["run", "fibo", "91", "92"])
    #expect(fibo.outputText.hasPrefix("fibo(91) = 7540113804746346429\nfibo(92) failed: "))
    let rfibo = try runProgram(["run", "rfibo", "11"])
    #expect(rfibo.outputText.contains("the limit is 10"))
    #expect(rfibo.status == 1)
  }

  @Test func echoAndSequential() throws {
    let run = try runProgram(["run", "--sequential", "echo", "hello", "world"])
    #expect(run.outputText == "echo(hello) = hello\necho(world) = world\n")
    #expect(run.status == 0)
  }

  /// Sequential means one task after the other: two 300 ms sleeps take at
  /// least 600 ms (run at once they would take about 300).
  @Test func sequentialRunsOneTaskAtATime() throws {
    let start = ContinuousClock.now
    let run = try runProgram(["run", "--sequential", "sleep", "300", "300"])
    let elapsed = ContinuousClock.now - start
    #expect(run.outputText == "sleep(300) = 300\nsleep(300) = 300\n")
    #expect(elapsed >= .milliseconds(600), "took \(elapsed)")
  }

  @Test func anOriginalModeWorkerProgram() throws {
    let run = try runProgram(["run", "--worker-program", demoPath, "--worker-arg", "--procord-worker", "fact", "6"])
    #expect(run.outputText == "fact(6) = 720\n")
  }

  @Test(arguments: [["run"], ["run", "nope", "1"], ["run", "fibo"], ["run", "fibo", "x"], ["frobnicate"],
                    ["run", "--bogus", "fibo", "1"], ["--procord-bogus"]])
  func usageErrorsExitTwo(arguments: [String]) throws {
    let run = try runProgram(arguments)
    #expect(run.status == 2)
    #expect(run.errorText.hasPrefix("procord-demo: "), "stderr: \(run.errorText)")
    #expect(run.outputText.isEmpty, "stdout: \(run.outputText)")
  }

  @Test func theShowcaseRunsAndExitsZero() throws {
    let run = try runProgram([])
    #expect(run.status == 0)
    #expect(run.outputText.contains("fibo(30) = 1346269"))
    #expect(run.outputText.contains("fact(-1) raised: fact: negative argument"))
    #expect(run.outputText.contains("SIGSEGV"))
  }

  @Test(arguments: [
    ("4Tfact1V5", "3V120"), ("4Tnope1V1", "1E0"), ("12345678901234567890", "1E3"),
    ("xyz", "1E2"), ("1V1", "1E1"), ("", ""),
  ])
  func anOriginalWorkerAnswersFramesOnStdin(input: String, answer: String) throws {
    let run = try runProgram(["--procord-worker"], input: Array(input.utf8))
    #expect(run.outputText == answer)
    #expect(run.exitedNormally)
  }

  @Test func aWorkerReadsAndWritesFiles() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("procord-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let input = directory.appendingPathComponent("in"), output = directory.appendingPathComponent("out")
    try Data("4Tfact2V10".utf8).write(to: input)
    let run = try runProgram(["--procord-worker", "--procord-input-file", input.path, "--procord-output-file", output.path])
    #expect(run.status == 0)
    #expect(try String(contentsOf: output, encoding: .utf8) == "7V3628800")
    #expect(run.outputText.isEmpty)
  }
}
