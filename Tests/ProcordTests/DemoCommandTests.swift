import Foundation
import Testing

/// What `procord-demo` prints and how it exits: other tools drive it, so its
/// command line is a contract.
@Suite struct DemoCommandTests {
  struct Run {
    var output: String
    var error: String
    var status: Int32
    var exitedNormally: Bool
  }

  /// Runs procord-demo with `arguments`, feeding `input` on stdin.
  func demo(_ arguments: [String], input: [UInt8] = []) throws -> Run {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: demoPath)
    process.arguments = arguments
    let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    stdin.fileHandleForWriting.write(Data(input))
    try stdin.fileHandleForWriting.close()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    let error = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Run(
      output: String(decoding: output, as: UTF8.self), error: String(decoding: error, as: UTF8.self),
      status: process.terminationStatus, exitedNormally: process.terminationReason == .exit)
  }

  @Test func runPrintsOneLinePerInputInOrder() throws {
    let run = try demo(["run", "fibo", "10", "1", "20"])
    #expect(run.output == "fibo(10) = 89\nfibo(1) = 1\nfibo(20) = 10946\n")
    #expect(run.status == 0)
  }

  @Test func factUsesDecimalText() throws {
    let run = try demo(["run", "fact", "5"])
    #expect(run.output == "fact(5) = 120\n")
  }

  @Test func aRaisedErrorIsReportedAndExitsOne() throws {
    let run = try demo(["run", "fact", "-1"])
    #expect(run.output == "fact(-1) raised: fact: negative argument\n")
    #expect(run.status == 1)
  }

  @Test func anUnknownExceptionIsAFailure() throws {
    let run = try demo(["run", "fibo", "-1"])
    #expect(run.output.hasPrefix("fibo(-1) failed: worker raised an unknown exception"))
    #expect(run.status == 1)
  }

  @Test func aCrashNamesTheSignalAndTheDemoExitsNormally() throws {
    let run = try demo(["run", "crash", "segv"])
    #expect(run.output.hasPrefix("crash(segv) failed: "))
    #expect(run.output.contains("SIGSEGV"))
    #expect(run.exitedNormally)
    #expect(run.status == 1)
  }

  @Test func rfiboDelegatesRecursivelyAndLeavesNoProcessBehind() throws {
    // Orphaned workers of workers would be reparented to this process (a
    // subreaper), where childProcesses() finds them. (Descriptors are not
    // counted here: Foundation's Process keeps some of its own.)
    warmUp()
    let run = try demo(["run", "rfibo", "8"])
    #expect(run.output == "rfibo(8) = 34\n")
    #expect(run.status == 0)
    #expect(childProcesses().isEmpty, "left behind: \(childProcesses())")
  }

  @Test func overflowAndTheRfiboLimitAreErrorsNotWrongNumbers() throws {
    let fact = try demo(["run", "fact", "20", "21"])
    #expect(fact.output == "fact(20) = 2432902008176640000\nfact(21) raised: fact: 21 is too large for a 64-bit result\n")
    let fibo = try demo(["run", "fibo", "91", "92"])
    #expect(fibo.output.hasPrefix("fibo(91) = 7540113804746346429\nfibo(92) failed: "))
    let rfibo = try demo(["run", "rfibo", "11"])
    #expect(rfibo.output.contains("the limit is 10"))
    #expect(rfibo.status == 1)
  }

  @Test func echoAndSequential() throws {
    let run = try demo(["run", "--sequential", "echo", "hello", "world"])
    #expect(run.output == "echo(hello) = hello\necho(world) = world\n")
  }

  @Test func anOriginalModeWorkerProgram() throws {
    let run = try demo(["run", "--worker-program", demoPath, "--worker-arg", "--procord-worker", "fact", "6"])
    #expect(run.output == "fact(6) = 720\n")
  }

  @Test(arguments: [["run"], ["run", "nope", "1"], ["run", "fibo"], ["run", "fibo", "x"], ["frobnicate"],
                    ["run", "--bogus", "fibo", "1"], ["--procord-bogus"]])
  func usageErrorsExitTwo(arguments: [String]) throws {
    let run = try demo(arguments)
    #expect(run.status == 2)
    #expect(!run.error.isEmpty)
  }

  @Test func theShowcaseRunsAndExitsZero() throws {
    let run = try demo([])
    #expect(run.status == 0)
    #expect(run.output.contains("fibo(30) = 1346269"))
    #expect(run.output.contains("fact(-1) raised: fact: negative argument"))
    #expect(run.output.contains("SIGSEGV"))
  }

  @Test(arguments: [
    ("4Tfact1V5", "3V120"), ("4Tnope1V1", "1E0"), ("12345678901234567890", "1E3"),
    ("xyz", "1E2"), ("1V1", "1E1"), ("", ""),
  ])
  func anOriginalWorkerAnswersFramesOnStdin(input: String, answer: String) throws {
    let run = try demo(["--procord-worker"], input: Array(input.utf8))
    #expect(run.output == answer)
  }

  @Test func aWorkerReadsAndWritesFiles() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("procord-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let input = directory.appendingPathComponent("in"), output = directory.appendingPathComponent("out")
    try Data("4Tfact2V10".utf8).write(to: input)
    let run = try demo(["--procord-worker", "--procord-input-file", input.path, "--procord-output-file", output.path])
    #expect(run.status == 0)
    #expect(try String(contentsOf: output, encoding: .utf8) == "7V3628800")
    #expect(run.output.isEmpty)
  }
}
