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

  @Test func anErrorWithoutACodecIsAFailureThatSaysWhatToDo() throws {
    let run = try runProgram(["run", "fibo", "-1"])
    #expect(
      run.outputText.hasPrefix(
        "fibo(-1) failed: the task threw an error that cannot travel as its own type: "
          + "fibo: negative argument -1 (to catch it as its own type, give the task an ErrorCodec"), "\(run.outputText)"
    )
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
    #expect(
      fact.outputText == "fact(20) = 2432902008176640000\nfact(21) raised: fact: 21 is too large for a 64-bit result\n")
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

  // MARK: Pools, servers, deadlines and limits

  @Test func aPoolOfTwoPrintsEveryResultInInputOrder() throws {
    warmUp()
    let run = try runProgram(["run", "--pool", "2", "fact", "1", "2", "3", "4", "5"])
    #expect(run.outputText == "fact(1) = 1\nfact(2) = 2\nfact(3) = 6\nfact(4) = 24\nfact(5) = 120\n")
    #expect(run.errorText.isEmpty, "stderr: \(run.errorText)")
    #expect(run.status == 0)
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  /// The order of the lines is the inputs', not the order the tasks end in:
  /// on two workers, the 50 ms and 10 ms sleeps end long before the 400 ms
  /// one.
  @Test func aPoolPrintsInInputOrderWhenTasksEndInAnotherOrder() throws {
    let run = try runProgram(["run", "--pool", "2", "sleep", "400", "50", "10"])
    #expect(run.outputText == "sleep(400) = 400\nsleep(50) = 50\nsleep(10) = 10\n")
    #expect(run.status == 0)
  }

  /// `--timeout` is in seconds, shown back in milliseconds; the worker is
  /// killed at the deadline, not left to sleep its 100 s.
  @Test func aTimeoutKillsTheTaskAtItsDeadline() throws {
    warmUp()
    let start = ContinuousClock.now
    let run = try runProgram(["run", "--timeout", "0.8", "sleep", "100000"])
    let elapsed = ContinuousClock.now - start
    #expect(
      run.outputText == "sleep(100000) failed: the task ran past its deadline of 800 ms and its worker was stopped\n")
    #expect(run.status == 1)
    // The margin also covers starting and ending the demo itself.
    expectEndedAtDeadline(elapsed, .milliseconds(800), margin: deadlineMargin + .milliseconds(300))
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  /// Under `--limit-memory 256`, 1 GiB is refused as an error the task
  /// raises (mmap's ENOMEM), not a crash: the pool's only worker survives
  /// to serve the next input. In the release build too, where the
  /// optimizer once removed the allocation altogether.
  @Test(arguments: [demoPath, releaseDemoPath])
  func aMemoryLimitMakesABigAllocationARaisedError(demo: String) throws {
    warmUp()
    try #require(
      FileManager.default.isExecutableFile(atPath: demo),
      "\(demo) is missing: `make test` builds it (swift build -c release --product procord-demo)")
    let run = try runProgram(["run", "--pool", "1", "--limit-memory", "256", "alloc", "1024", "16"], program: demo)
    #expect(
      run.outputText == "alloc(1024) raised: alloc: cannot allocate 1024 MiB: Cannot allocate memory\nalloc(16) = 16\n")
    #expect(run.status == 1)
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  /// `--hosts` runs the tasks on the servers: the same command fails once
  /// they are stopped (so it did not quietly run them locally).
  @Test func hostsRunTheTasksOnTheServers() throws {
    warmUp()
    let first = try ServerUnderTest()
    defer { first.ensureStopped() }
    let second = try ServerUnderTest()
    defer { second.ensureStopped() }
    let arguments = [
      "run", "--hosts", "127.0.0.1:\(first.port),127.0.0.1:\(second.port)",
      "fact", "1", "2", "3", "4", "5", "6",
    ]
    let run = try runProgram(arguments)
    #expect(run.outputText == "fact(1) = 1\nfact(2) = 2\nfact(3) = 6\nfact(4) = 24\nfact(5) = 120\nfact(6) = 720\n")
    #expect(run.status == 0, "stderr: \(run.errorText)")
    first.stop()
    second.stop()
    let withoutServers = try runProgram(arguments)
    #expect(
      withoutServers.outputText.hasPrefix("fact(1) failed: could not connect to "),
      "stdout: \(withoutServers.outputText)")
    #expect(
      withoutServers.outputText.contains("ECONNREFUSED (Connection refused); check that a Procord server listens"),
      "stdout: \(withoutServers.outputText)")
    #expect(withoutServers.status == 1)
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  @Test(arguments: [
    (["run", "--pool", "0", "fact", "1"], "--pool"),
    (["run", "--hosts", "nonsense", "fact", "1"], "--hosts"),
    (["run", "--timeout", "-1", "fact", "1"], "--timeout"),
    (["run", "--limit-memory", "256", "--hosts", "127.0.0.1:1", "fact", "1"], "--limit-memory"),
  ])
  func badValuesOfTheNewOptionsAreUsageErrors(arguments: [String], option: String) throws {
    let run = try runProgram(arguments)
    #expect(run.status == 2)
    #expect(run.errorText.hasPrefix("procord-demo: \(option) "), "stderr: \(run.errorText)")
    #expect(run.outputText.isEmpty, "stdout: \(run.outputText)")
  }

  @Test(arguments: [
    ["run"], ["run", "nope", "1"], ["run", "fibo"], ["run", "fibo", "x"], ["frobnicate"],
    ["run", "--bogus", "fibo", "1"], ["--procord-bogus"],
  ])
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
    #expect(run.outputText.contains("A pool of 2 workers ran 1000 fact tasks (0 failed)"))
    #expect(run.outputText.contains("2 worker processes started in all"))
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
    let input = directory.appendingPathComponent("in")
    let output = directory.appendingPathComponent("out")
    try Data("4Tfact2V10".utf8).write(to: input)
    let run = try runProgram([
      "--procord-worker", "--procord-input-file", input.path, "--procord-output-file", output.path,
    ])
    #expect(run.status == 0)
    #expect(try String(contentsOf: output, encoding: .utf8) == "7V3628800")
    #expect(run.outputText.isEmpty)
  }
}
