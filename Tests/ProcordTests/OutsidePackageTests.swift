// Procord as its users get it: a SwiftPM package of their own, outside this
// repository, that depends on it by path and uses only its public API. The
// suite makes that package in a temporary folder (its sources are
// Tests/OutsidePackage/Sources, its Package.swift is written here), builds
// it once with `swift build`, and runs its two programs:
// - outside-program: Codable tasks run with Worker.main, one line of output
//   per behaviour, which a test each reads;
// - outside-runaway: the mistake of delegating before serving.
// Both run under Tests/OutsidePackage/subreaper.py, which reaps whatever they
// leave behind and says how long that took.
//
// Building offline: the package's dependencies are named by their GitHub
// URLs, as anywhere, and git on this machine reads every github.com address
// from the local mirror in /opt/swift-packages (`url.<mirror>.insteadOf`
// in git's global configuration), so `swift build` resolves them with no
// network and no flag. A path dependency's identity is its folder's name
// (a clone need not be called "Procord"), so the product is named with it.
//
// The build compiles Procord again, in the temporary folder: 21 to 41 s on
// this 2-core machine, seen here (each run prints it). Then outside-program
// takes about 1.5 s and outside-runaway a fraction of a second.
import Foundation
import Synchronization
import Testing

@Suite(.serialized, .outsidePackageBuilt) struct OutsidePackageTests {
  /// What outside-program printed, under the subreaper.
  var program: OutsideRun {
    get throws { try #require(OutsidePackage.built).programRun() }
  }

  @Test func fiftyConcurrentCodableDelegationsAllReturnTheRightOutput() throws {
    #expect(try program.line("concurrent") == "50 answers, 50 right")
  }

  /// Worker.main serves on a thread of its own: a task body may use the
  /// main actor (it hung until its deadline when the worker held it).
  @Test func aTaskBodyMayUseTheMainActor() throws {
    #expect(try program.line("main actor") == "5")
  }

  @Test func theTasksOwnErrorIsCaughtAsItsOwnType() throws {
    #expect(try program.line("custom error") == "caught as OrderError: empty(orderID: 7)")
  }

  /// A 30 s nap with a deadline of 300 ms.
  @Test func aDeadlineEndsTheTaskWithDeadlineExceeded() throws {
    let line = try #require(try program.line("deadline"))
    let prefix = "ProcordError deadlineExceeded after "
    #expect(line.hasPrefix(prefix), "\(line)")
    let milliseconds = try #require(Int(line.dropFirst(prefix.count).prefix { $0.isNumber }), "\(line)")
    #expect((280..<1300).contains(milliseconds), "the deadline of 300 ms ended the task after \(milliseconds) ms")
  }

  /// The program cancels the Swift task awaiting a task whose async body
  /// loops until it sees `Task.isCancelled`; the body writes its pid, then
  /// what it saw, to a FIFO. Once the await has thrown, the worker's pid is
  /// gone from the process table (`kill(pid, 0)` fails with ESRCH).
  @Test func cancellingTheAwaitThrowsCancellationErrorAndTheWorkerIsGone() throws {
    #expect(
      try program.line("cancellation") == #"CancellationError; the body said "saw Task.isCancelled"; worker gone"#)
  }

  /// `Int("not a number")!` in the worker. The runtime's message reaches the
  /// error only with the crash evidence that another branch adds: until that
  /// branch is merged, this test fails on its second expectation.
  @Test func aForceUnwrapCrashIsAProcordErrorThatSaysWhat() throws {
    let line = try #require(try program.line("crash"))
    #expect(line.hasPrefix("ProcordError crashed: "), "\(line)")
    #expect(line.contains("Unexpectedly found nil"), "\(line)")
  }

  /// A class with `weak var delegate` calls `task.run` and
  /// `Procord.delegate(task, input)`: it compiled, and both gave the receipt.
  @Test func aClassWithADelegatePropertyUsesBothLayers() throws {
    #expect(try program.line("collision") == #"["2 x fig"] and ["2 x fig"], delegate told 1 time(s)"#)
  }

  @Test func theProgramExitsCleanlyAndLeavesNoProcess() throws {
    let run = try program
    #expect(run.report.status == 0, "\(run.standardError)")
    #expect(run.report.orphans == 0, "processes outlived their parent")
    #expect(run.report.killed == 0, "processes were still running \(OutsideRun.limit) after the start")
  }

  /// outside-runaway delegates before it serves, so its worker runs its main
  /// and delegates too. Procord refuses that worker's delegation: the main
  /// program and that one worker are all that ever start (each writes its
  /// pid to a log), and all is over well within 2 s, with an error that says
  /// what to call.
  @Test func aProgramThatDelegatesBeforeServingStopsAtOnceAndSaysWhy() throws {
    let package = try #require(OutsidePackage.built)
    let pidLog = package.folder.appendingPathComponent("runaway-pids").path
    let run = try package.run("outside-runaway", environment: ["OUTSIDE_PID_LOG": pidLog])
    let pids = try String(contentsOfFile: pidLog, encoding: .utf8).split(separator: "\n")
    #expect(pids.count <= 2, "\(pids.count) processes of the program started: \(pids)")
    #expect(run.report.secondsUntilNoneLeft < 2, "the last process ended after \(run.report.secondsUntilNoneLeft) s")
    #expect(run.report.killed == 0 && run.report.orphans == 0)
    #expect(run.report.status == 1, "\(run.lines) \(run.standardError)")
    let mainProgram = try #require(pids.first)
    let said = try #require(run.line("pid \(mainProgram)"), "\(run.lines)")
    #expect(said.contains("delegates before serving"), "\(said)")
    #expect(said.contains("Worker.runIfRequested"), "\(said)")
  }
}

/// The instrument of the runaway test, on a real runaway: a shell script
/// that starts the next of a chain of 20 and exits at once. The subreaper
/// sees every one (the pids in the log) and reaps every orphan, so what
/// that test counts would count a program that starts copies of itself.
@Suite struct SubreaperOfOutsidePackageTests {
  @Test func theSubreaperSeesEveryProcessOfAChain() throws {
    let folder = temporaryPath("subreaper")
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let script = folder + "/chain.sh"
    let pidLog = folder + "/pids"
    try """
    #!/bin/sh
    echo $$ >> "$OUTSIDE_PID_LOG"
    generation=${GENERATION:-0}
    [ "$generation" -ge 20 ] && exit 0
    GENERATION=$((generation + 1)) "$0" &
    exit 0

    """.write(toFile: script, atomically: true, encoding: .utf8)
    #expect(chmod(script, 0o755) == 0)
    let run = try OutsidePackage.runUnderSubreaper(script, environment: ["OUTSIDE_PID_LOG": pidLog])
    let pids = try String(contentsOfFile: pidLog, encoding: .utf8).split(separator: "\n")
    #expect(Set(pids).count == 21)
    #expect(run.report.orphans == 20)
    #expect(run.report.status == 0 && run.report.killed == 0)
  }
}

/// The outside package, built, in a temporary folder of its own.
final class OutsidePackage: Sendable {
  /// The package for the tests of the suite with `.outsidePackageBuilt`.
  @TaskLocal static var built: OutsidePackage?

  /// Everything: the package, its build, the programs' logs.
  let folder: URL
  /// Where `swift build` put the programs.
  let binaries: URL
  private let programRunOnce = Mutex<Result<OutsideRun, any Error>?>(nil)

  /// This repository's root, which the package depends on.
  static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

  /// Makes the package and builds it; throws if the build fails.
  init() throws {
    folder = FileManager.default.temporaryDirectory
      .appendingPathComponent("procord-outside-package-\(UUID().uuidString.prefix(8))")
    let package = folder.appendingPathComponent("OutsideUser")
    let scratch = folder.appendingPathComponent("build")
    binaries = scratch.appendingPathComponent("debug")
    try FileManager.default.createDirectory(at: package, withIntermediateDirectories: true)
    do {
      let sources = Self.repositoryRoot.appendingPathComponent("Tests/OutsidePackage/Sources")
      try FileManager.default.copyItem(at: sources, to: package.appendingPathComponent("Sources"))
      try Self.manifest.write(to: package.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
      let start = ContinuousClock.now
      let build = try ChildProcess(
        "/usr/bin/env", ["swift", "build", "--package-path", package.path, "--scratch-path", scratch.path])
      defer { build.ensureStopped() }
      let end = build.waitForExit(timeout: .seconds(600))
      guard end?.exited == true && end?.status == 0 else {
        throw TestFailure("swift build of the outside package ended \(String(describing: end)):\n\(build.output.text)")
      }
      print("OutsidePackageTests: swift build of the outside package took \(ContinuousClock.now - start)")
    } catch {
      remove()
      throw error
    }
  }

  /// A package as a user writes it, but for the dependency's path.
  static var manifest: String {
    func insideStringLiteral(_ text: String) -> String {
      text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }
    let (root, procord) = (
      insideStringLiteral(repositoryRoot.path), insideStringLiteral(repositoryRoot.lastPathComponent)
    )
    return """
      // swift-tools-version: 6.2
      import PackageDescription

      let package = Package(
        name: "OutsideUser",
        dependencies: [.package(path: "\(root)")],
        targets: [
          .executableTarget(
            name: "outside-program", dependencies: [.product(name: "Procord", package: "\(procord)")],
            path: "Sources/OutsideProgram"),
          .executableTarget(
            name: "outside-runaway", dependencies: [.product(name: "Procord", package: "\(procord)")],
            path: "Sources/OutsideRunaway"),
        ]
      )

      """
  }

  func remove() { try? FileManager.default.removeItem(at: folder) }

  /// Runs a program of the package under the subreaper, to its end and the
  /// end of all it started.
  func run(_ program: String, environment: [String: String] = [:]) throws -> OutsideRun {
    try Self.runUnderSubreaper(binaries.appendingPathComponent(program).path, environment: environment)
  }

  /// Runs the program at `path` under the subreaper, to its end and the end
  /// of all it started.
  static func runUnderSubreaper(_ path: String, environment: [String: String] = [:]) throws -> OutsideRun {
    let subreaper = repositoryRoot.appendingPathComponent("Tests/OutsidePackage/subreaper.py").path
    let settings = environment.map { "\($0.key)=\($0.value)" }
    let run = try runProgram(
      settings + ["python3", subreaper, String(OutsideRun.limit.components.seconds), path], program: "/usr/bin/env")
    var lines = run.outputText.split(separator: "\n").map(String.init)
    guard let last = lines.popLast(), last.hasPrefix("subreaper: ") else {
      throw TestFailure("no report from the subreaper: \(run.outputText)\n\(run.errorText)")
    }
    let report = try JSONDecoder().decode(SubreaperReport.self, from: Data(last.dropFirst("subreaper: ".count).utf8))
    return OutsideRun(lines: lines, standardError: run.errorText, report: report)
  }

  /// outside-program's run, the same for every test that reads it.
  func programRun() throws -> OutsideRun {
    try programRunOnce.withLock { once in
      if once == nil { once = Result { try run("outside-program") } }
      return try once!.get()
    }
  }
}

/// What a program printed, and what the subreaper saw.
struct OutsideRun {
  /// How long a program and all it starts may run before the subreaper
  /// kills them.
  static let limit = Duration.seconds(60)

  var lines: [String]
  var standardError: String
  var report: SubreaperReport

  /// What follows `name: ` on the line that starts so.
  func line(_ name: String) -> String? {
    lines.first { $0.hasPrefix(name + ": ") }.map { String($0.dropFirst(name.count + 2)) }
  }
}

/// subreaper.py's last line.
struct SubreaperReport: Decodable {
  /// The exit code, or minus the signal.
  var status: Int32?
  /// From the start to the program's end.
  var seconds: Double?
  /// From the start to the end of the last process it started.
  var secondsUntilNoneLeft: Double
  /// Processes whose parent ended before them.
  var orphans: Int
  /// Processes still running when ``OutsideRun/limit`` passed.
  var killed: Int

  enum CodingKeys: String, CodingKey {
    case status, seconds, orphans, killed
    case secondsUntilNoneLeft = "seconds_until_none_left"
  }
}

/// Builds the outside package once for the whole suite, and removes it after.
struct OutsidePackageBuilt: SuiteTrait, TestScoping {
  func provideScope(
    for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
  ) async throws {
    let package = try OutsidePackage()
    defer { package.remove() }
    try await OutsidePackage.$built.withValue(package) { try await function() }
  }
}

extension Trait where Self == OutsidePackageBuilt {
  static var outsidePackageBuilt: Self { Self() }
}
