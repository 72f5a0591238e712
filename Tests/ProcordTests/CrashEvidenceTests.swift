// What a local worker that crashes leaves: the Swift runtime's message and
// the end of its stderr in the error, and on the main program's stderr one
// line per crash by default (the full backtrace when the user asks for it
// with SWIFT_BACKTRACE). The worker is the test worker's `unwrap-nil` task,
// which writes its input to stderr and then force-unwraps nil.
import Foundation
import Testing

@testable import Procord

@Suite struct CrashEvidenceTests {
  private static let unwrapNil = DelegatedTask<String, String>(name: "unwrap-nil", input: .utf8, output: .utf8)

  /// The test worker as a real worker, with this environment and
  /// SWIFT_BACKTRACE set to `backtrace` (nil: unset).
  private static func worker(backtrace: String?) -> WorkerProgram {
    var program = WorkerProgram(path: testWorkerPath, arguments: ["--procord-worker"], channel: .socket)
    var environment = ProcessInfo.processInfo.environment
    environment["SWIFT_BACKTRACE"] = backtrace
    program.environment = environment
    return program
  }

  /// Runs `unwrap-nil` on `program`, with our stderr captured; the error
  /// it threw (nil, with an issue, if it threw none) and our stderr.
  private static func crash(on program: WorkerProgram, saying text: String) throws -> (ProcordError?, String) {
    let (result, streams) = try FailureFixture.capturingStandardStreams { () -> Result<String, any Error> in
      Result { try delegate(unwrapNil, text, to: program).run() }
    }
    guard case .failure(let error) = result, let error = error as? ProcordError else {
      Issue.record("expected a ProcordError, got \(result)")
      return (nil, streams.error)
    }
    return (error, streams.error)
  }

  @Test func aForceUnwrappedNilComesWithTheRuntimesMessageAndTheEndOfStderr() throws {
    try expectNoLeaks {
      let (error, stderr) = try Self.crash(on: Self.worker(backtrace: "enable=no"), saying: "about to unwrap")
      let crash = try #require(error)
      #expect(crash.code == .crashed)
      #expect(crash.signal == SIGILL || crash.signal == SIGTRAP, "signal \(String(describing: crash.signal))")
      let message = try #require(crash.fatalErrorMessage)
      #expect(message.contains("Fatal error: Unexpectedly found nil while unwrapping an Optional value"))
      let tail = try #require(crash.standardErrorTail)
      #expect(!tail.isEmpty && tail.utf8.count <= 4096, "\(tail.utf8.count) bytes")
      #expect(tail.hasPrefix("about to unwrap\n"), "tail: \(tail)")
      #expect(tail.contains(message))
      #expect(crash.description.contains("the worker's last words: \(message)"), "\(crash.description)")
      // Passed on to our stderr all the same, as the worker wrote it.
      #expect(stderr.hasPrefix("about to unwrap\n\(message)\n"), "our stderr: \(stderr)")
    }
  }

  /// The backtracer's report is longer than the tail: the runtime's
  /// message, which comes before it, is kept all the same.
  @Test func theRuntimesMessageSurvivesAFullBacktrace() throws {
    try expectNoLeaks {
      let (error, stderr) = try Self.crash(on: Self.worker(backtrace: "enable=yes"), saying: "about to unwrap")
      let crash = try #require(error)
      #expect(crash.code == .crashed)
      #expect(crash.fatalErrorMessage?.contains("Unexpectedly found nil") == true)
      let tail = try #require(crash.standardErrorTail)
      #expect(tail.utf8.count <= 4096, "\(tail.utf8.count) bytes")
      #expect(stderr.contains("Program crashed"), "no backtrace on our stderr: \(stderr)")
      #expect(stderr.utf8.count > 4096, "the backtrace fits in the tail: the test proves nothing")
    }
  }

  // MARK: - What a main program's stderr gets

  /// The test worker as a main program that crashes its own worker twice
  /// (`unwrap-nil-from-main 2`), with SWIFT_BACKTRACE as given (nil: unset).
  private static func mainProgramCrashingTwice(backtrace: String?) throws -> ProgramRun {
    var environment = ProcessInfo.processInfo.environment
    environment["SWIFT_BACKTRACE"] = backtrace
    return try runProgram(["unwrap-nil-from-main", "2"], program: testWorkerPath, environment: environment)
  }

  /// The crash reports of `stderr`, without the short "Current stack trace"
  /// the runtime adds in code built without optimization (which only an
  /// enabled backtracer turns off): the lines left.
  private static func linesBesidesTheDebugStackTrace(_ stderr: String) -> [Substring] {
    var inTrace = false
    return stderr.split(separator: "\n").filter { line in
      if line == "Current stack trace:" {
        inTrace = true
        return false
      }
      // `0    libswiftCore.so    0x... swift_reportError + 33`
      if inTrace, let first = line.split(separator: " ").first, Int(first) != nil { return false }
      inTrace = false
      return true
    }
  }

  @Test func aCrashLeavesAboutOneLineOnTheMainProgramsStderrByDefault() throws {
    warmUp()
    let run = try Self.mainProgramCrashingTwice(backtrace: nil)
    #expect(run.status == 0, "stderr: \(run.errorText)")
    let reports = run.outputText.split(separator: "\n")
    #expect(reports.count == 2, "stdout: \(run.outputText)")
    for report in reports {
      #expect(report.hasPrefix("crashed: ") && report.contains("Fatal error: Unexpectedly found nil"), "\(report)")
    }
    // Per crash: what the task wrote, and the runtime's line.
    let lines = Self.linesBesidesTheDebugStackTrace(run.errorText)
    #expect(lines.count == 4, "stderr: \(run.errorText)")
    #expect(lines.filter { $0.contains("Fatal error: Unexpectedly found nil") }.count == 2, "stderr: \(run.errorText)")
    #expect(lines.filter { $0.hasPrefix("about to unwrap (") }.count == 2, "stderr: \(run.errorText)")
    #expect(!run.errorText.contains("Backtracing"), "stderr: \(run.errorText)")
  }

  @Test func aUserWhoSetsSwiftBacktraceGetsTheFullBacktrace() throws {
    warmUp()
    let run = try Self.mainProgramCrashingTwice(backtrace: "enable=yes")
    #expect(run.status == 0, "stderr: \(run.errorText)")
    #expect(run.errorText.components(separatedBy: "Program crashed").count == 3, "stderr: \(run.errorText)")
    let reports = run.outputText.split(separator: "\n")
    #expect(reports.count == 2, "stdout: \(run.outputText)")
    for report in reports {
      #expect(report.contains("Fatal error: Unexpectedly found nil"), "\(report)")
    }
  }

  // MARK: - Which workers get SWIFT_BACKTRACE=enable=no

  /// The environment `program` would be started with; nil for ours as it is.
  private static func spawnEnvironment(of program: WorkerProgram, quietingCrashes: Bool = true) -> [String]? {
    program.withSpawnOptions(quietingCrashes: quietingCrashes) { options -> [String]? in
      guard var entry = options.environment else { return nil }
      var strings: [String] = []
      while let string = entry.pointee {
        strings.append(String(cString: string))
        entry += 1
      }
      return strings
    }
  }

  @Test func onlyThisProgramsWorkersAreQuietedAndOnlyWhenTheUserSaidNothing() throws {
    try #require(
      getenv("SWIFT_BACKTRACE") == nil, "this test process has SWIFT_BACKTRACE set: its workers keep it")
    // This program: ours, and the setting.
    let current = Self.spawnEnvironment(of: .current)
    #expect(current?.last == "SWIFT_BACKTRACE=enable=no")
    var ours: [String] = []
    var index = 0
    while let entry = environ[index] {
      ours.append(String(cString: entry))
      index += 1
    }
    #expect(current.map { Array($0.dropLast()) } == ours)
    // Another program: our environment as it is.
    #expect(Self.spawnEnvironment(of: WorkerProgram(path: testWorkerPath)) == nil)
    // An environment of its own: exactly that.
    var given = WorkerProgram.current
    given.environment = ["A": "1"]
    #expect(Self.spawnEnvironment(of: given) == ["A=1"])
    // A server's workers.
    #expect(Self.spawnEnvironment(of: .current, quietingCrashes: false) == nil)
  }
}
