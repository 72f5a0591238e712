import CTestSupport
import Foundation
import Synchronization
import Testing

@testable import Procord

/// Where the package's executables were built: next to the test bundle.
let buildDirectory: URL = {
  let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
  var directory = exe.deletingLastPathComponent()
  for _ in 0..<4 {
    if FileManager.default.fileExists(atPath: directory.appendingPathComponent("procord-demo").path) {
      return directory
    }
    directory = directory.deletingLastPathComponent()
  }
  fatalError("procord-demo not found near \(exe.path); run the tests with `make test`")
}()

/// The demo executable, which serves fibo, fact, echo, crash, sleep, rfibo.
let demoPath = buildDirectory.appendingPathComponent("procord-demo").path
/// The demo built in release mode (`make test` builds it), for what only the
/// optimizer can break.
let releaseDemoPath = buildDirectory.deletingLastPathComponent()
  .appendingPathComponent("release/procord-demo").path
/// The misbehaving worker of Tests/TestWorker.
let testWorkerPath = buildDirectory.appendingPathComponent("procord-test-worker").path

/// The demo as a worker in this project's socket mode.
let demoSocketWorker = WorkerProgram(path: demoPath, channel: .socket)
/// The demo as a worker in the original stdin/stdout mode.
let demoStdioWorker = WorkerProgram(path: demoPath)

/// The demo's tasks, as a main program sees them.
enum DemoTasks {
  static let fibo = DelegatedTask<Int, Int>(name: "fibo")
  static let fact = DelegatedTask<Int, Int>(
    name: "fact", input: .decimal, output: .decimal, error: .text)
  static let echo = DelegatedTask<[UInt8], [UInt8]>(name: "echo", input: .bytes, output: .bytes)
  static let crash = DelegatedTask<String, String>(name: "crash", input: .utf8, output: .utf8)
  static let sleep = DelegatedTask<Int, Int>(name: "sleep", input: .decimal, output: .decimal)
  static let rfibo = DelegatedTask<Int, Int>(name: "rfibo")
}

/// The descriptors this process has open now.
func openDescriptors() -> Set<Int32> {
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
  return Set(entries.compactMap { Int32($0) })
}

/// True while `pid` exists, zombie included: false means it was reaped.
func processExists(_ pid: Int32) -> Bool {
  kill(pid, 0) == 0 || errno != ESRCH
}

/// The children of this process (read from /proc), zombies included.
func childProcesses() -> [Int32] {
  let me = getpid()
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
  return entries.compactMap { Int32($0) }.filter { pid in
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return false }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 2 && Int32(fields[1]) == me
  }
}

/// Runs `body` and checks that it leaves no descriptor open and no child
/// process behind. Every process the body delegates must have finished
/// (been waited for) by the time it returns.
func expectNoLeaks(
  sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) rethrows {
  warmUp()
  let before = openDescriptors()
  try body()
  let leakedDescriptors = openDescriptors().subtracting(before)
  #expect(
    leakedDescriptors.isEmpty, "descriptors left open: \(leakedDescriptors.sorted())", sourceLocation: sourceLocation)
  #expect(childProcesses().isEmpty, "children left: \(childProcesses())", sourceLocation: sourceLocation)
}

/// The async twin of ``expectNoLeaks(sourceLocation:_:)``.
func expectNoLeaks(
  sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async rethrows {
  warmUp()
  let before = openDescriptors()
  try await body()
  let leakedDescriptors = openDescriptors().subtracting(before)
  #expect(
    leakedDescriptors.isEmpty, "descriptors left open: \(leakedDescriptors.sorted())", sourceLocation: sourceLocation)
  #expect(childProcesses().isEmpty, "children left: \(childProcesses())", sourceLocation: sourceLocation)
}

/// Starts the runtime's loop (its eventfd and epoll descriptors are for the
/// life of the process) so that it does not count as a leak, and makes this
/// process the reaper of orphans, so that a worker's worker left behind
/// becomes our child and is counted.
func warmUp() {
  _ = Runtime.shared
  _ = becomeSubreaper
}

private let becomeSubreaper: Void = {
  let error = procord_test_become_subreaper()
  precondition(error == 0, "prctl(PR_SET_CHILD_SUBREAPER) failed: \(error)")
}()

/// How long past its deadline a task may end when its worker dies of the
/// deadline's SIGTERM: the kill, the reaping, a busy machine. Every deadline
/// the tests set is longer, so a deadline that fires twice too late fails.
let deadlineMargin = Duration.milliseconds(400)

/// Expects a task that ran past `deadline` to have ended at it: not before
/// (but for 20 ms: the loop arms the timer from the time it read last, which
/// may be a little older than the delegation), and within the grace period
/// its worker spent (none when it dies of the SIGTERM) plus `margin` after
/// it. `elapsed` counts from the delegation.
func expectEndedAtDeadline(
  _ elapsed: Duration, _ deadline: Duration, graceSpent: Duration = .zero,
  margin: Duration = deadlineMargin, sourceLocation: SourceLocation = #_sourceLocation
) {
  #expect(
    elapsed >= deadline - .milliseconds(20) && elapsed < deadline + graceSpent + margin,
    "ended after \(elapsed): its deadline is \(deadline), with \(graceSpent) of grace and \(margin) of margin",
    sourceLocation: sourceLocation)
}

/// The English text of an execution error, for matching in tests.
func failure<Output>(_ status: Status<Output>) -> ExecutionError? {
  if case .error(let error) = status { return error }
  return nil
}

/// How a program run by ``runProgram(_:program:input:mergingStreams:)`` ended,
/// with everything it wrote.
struct ProgramRun {
  var output: [UInt8]
  var error: [UInt8]
  /// The exit code, or the signal if it did not exit normally.
  var status: Int32
  var exitedNormally: Bool
  var outputText: String { String(decoding: output, as: UTF8.self) }
  var errorText: String { String(decoding: error, as: UTF8.self) }
}

/// Runs `program` (procord-demo unless told) with `arguments` to its end,
/// feeding it `input` on stdin, and returns what it wrote on stdout and
/// stderr, both read at once (a full stderr pipe must not stall a long
/// stdout). With `mergingStreams`, both go to one pipe, in the order
/// written, all in `output`. `environment`: the program's whole
/// environment (nil: this process's).
func runProgram(
  _ arguments: [String], program: String = demoPath, input: [UInt8] = [], mergingStreams: Bool = false,
  environment: [String: String]? = nil
) throws -> ProgramRun {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: program)
  process.arguments = arguments
  if let environment { process.environment = environment }
  let stdin = Pipe()
  let stdout = Pipe()
  let stderr = mergingStreams ? nil : Pipe()
  process.standardInput = stdin
  process.standardOutput = stdout
  process.standardError = stderr ?? stdout
  try process.run()
  let errorData = Mutex<Data>(Data())
  let errorReader = stderr.map { stderr in
    Thread { errorData.withLock { $0 = stderr.fileHandleForReading.readDataToEndOfFile() } }
  }
  errorReader?.start()
  // Only when there is something to write: a program that exits at once
  // (a usage error) would make even an empty write raise SIGPIPE here.
  if !input.isEmpty { try stdin.fileHandleForWriting.write(contentsOf: Data(input)) }
  try stdin.fileHandleForWriting.close()
  let output = stdout.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  while let errorReader, !errorReader.isFinished { sched_yield() }
  return ProgramRun(
    output: [UInt8](output), error: [UInt8](errorData.withLock { $0 }),
    status: process.terminationStatus, exitedNormally: process.terminationReason == .exit)
}

/// The children of `pid` (of all its threads), from /proc.
func childrenOf(_ pid: Int32) -> [Int32] {
  let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
  return tasks.flatMap { task in
    let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
    return text.split(separator: " ").compactMap { Int32($0) }
  }
}

/// Expects `body` to throw a ``ProcordError`` whose poll-layer failure is
/// `expected` (the async API's errors carry it as `executionError`).
func expectFailure(
  _ expected: ExecutionError, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async {
  await #expect(sourceLocation: sourceLocation) { try await body() } throws: { error in
    (error as? ProcordError)?.executionError == expected
  }
}

/// ``expectFailure(_:sourceLocation:_:)`` for a body that does not suspend.
func expectFailure(
  _ expected: ExecutionError, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) {
  #expect(sourceLocation: sourceLocation) { try body() } throws: { error in
    (error as? ProcordError)?.executionError == expected
  }
}
