// procord-test-worker: a fake worker that misbehaves on purpose, so that the
// tests can check what the main program makes of it.
//
// It speaks the original stdin/stdout protocol by hand, with raw read(2) and
// write(2) on descriptors 0 and 1 (no Procord worker loop, no print), and its
// first argument chooses the misbehaviour:
//
//   exit-at-once            exits 0 without reading anything
//   exit-after-name         reads the `T` frame, exits 0
//   exit-during-input       reads `T` and part of `V`'s body, exits 5
//   answer-then-exit N      answers `2V42`, exits N
//   crash-after-name        reads `T`, dies of SIGSEGV
//   garbage                 answers `xyz`
//   garbage-then-crash      answers `xyz`, then dies of SIGSEGV
//   too-long                answers a 20-digit SIZE (`00000000000000000001`), no kind
//   size-above-limit        answers `100000000000V`, no body
//   error-frame D           answers `1E` + D, exits 0
//   bad-error-frame         answers `1E9`
//   unexpected-task         answers with a `T` frame
//   reusable-before-answer  answers `0R`
//   print-then-answer       prints to `O`, `E` and `7`, flushes, answers `2V42`
//   answer-then-linger      answers `2V42`, closes stdout, sleeps 30 s
//   close-and-linger        closes stdout without answering, sleeps 30 s
//   answer-with-grandchild  starts `sleep 30` on its stdout, answers `2V42`, exits 0
//   hang                    reads the task, never answers
//   undecodable             answers `3Vabc`
//   stderr-then-answer      writes `noise` to its stderr, answers `2V42`
//   empty-print             sends `0P` (a print with no destination), then `2V42`
//   long-flush              sends `2FOO` (a flush with two bytes), then `2V42`
//   die-mid-output N K      sends the header of an N-byte `V` frame and K
//                           bytes of its body, then exits 6
//   killed-mid-output N K   the same, then dies of SIGKILL
//   answer-then-crash       answers `2V42`, then dies of SIGSEGV before it
//                           could send `0R` (in socket mode)
//   delegate-before-serving a program that forgot Worker.runIfRequested:
//                           delegates `probe` to itself in this same mode,
//                           as its main would; says on stderr what became
//                           of that delegation; exits 3 when Procord refused
//                           to start it, 4 otherwise (a third generation
//                           stops at once with 9, so that a broken build's
//                           cascade stays short)
//   stall-mid-frame         sends `1000V` and 10 bytes of the body, then
//                           sleeps an hour (never ends the frame)
//   answer-byte-by-byte US  sends `P` to `7`, `F` to `7`, `P` to `7`, then
//                           the 300-byte `V` of ``slowAnswer``, one byte per
//                           write with US microseconds between writes
//   large-answer BLOCKS     answers a `V` of BLOCKS blocks of 64 KiB
//                           (``patternBlock(_:)``), written as they come:
//                           a main program that does not read blocks it
//
// Started by Procord in socket mode (`--procord-socket-fd N MODE ...`, the
// option Procord puts first), a fake speaks its mode on descriptor N
// instead of stdin and stdout; only the modes that do not close stdout
// make sense there.
//
// Started with leading `--procord-*` options instead of a mode, it is a real
// Procord program (`Worker.runIfRequested`), a worker or a worker server,
// serving the tasks below (see `servedTasks`):
//
//   concurrency PATH        counts the tasks running at once: under flock on
//                           the file PATH, which holds `CURRENT MAXIMUM`,
//                           it increments CURRENT and raises MAXIMUM to it,
//                           sleeps 20 ms (lock released), decrements CURRENT;
//                           answers how many ran at its start, itself
//                           included (decimal)
//   sleep-with-child MS     starts `sleep` for MS milliseconds (in the
//                           worker's process group) and waits for it;
//                           answers MS
//   crash-on-tenths N       dies of SIGSEGV when N is a multiple of 10,
//                           answers N otherwise (decimal both ways)
//   environment NAME        answers the worker's value of variable NAME
//                           (empty if unset)
//   directory               answers the worker's working directory
//   async-double N          2 N, from an async body (AsyncTasks.swift)
//   wait-for-cancellation F an async body that tells the FIFO F when it
//                           starts and whether it saw its cancellation
//   crash-mid-output        in a server's worker: writes `1000V` and 10
//                           bytes straight onto its session with the server
//                           (the task's own answer never comes), then dies
//                           of SIGSEGV
//   stall-mid-output        the same, then sleeps an hour
//   pattern BLOCKS          answers the same bytes as `large-answer BLOCKS`
//                           (decimal in, bytes out)
//   unwrap-nil TEXT         writes TEXT and a newline to its stderr, then
//                           force-unwraps nil: a Swift runtime error
//
// Every mode but the `exit-*` and `crash-*` ones reads the whole task (`T`
// then `V`) first. After an answer that breaks the protocol, the worker
// waits for the main program to hang up (end of stdin) and exits 0: a main
// program that kept waiting for more would hang, which the tests catch.
//
// Four modes make it a main program instead of a fake worker:
//
//   unwrap-nil-from-main N  delegates `unwrap-nil "about to unwrap (I)"` to
//                           itself in socket mode N times, one after the
//                           other, and prints one line per delegation on
//                           stdout: `CODE: MESSAGE`, the ProcordError's code
//                           and fatal error message (`crashed: ...Fatal
//                           error: Unexpectedly found nil...`); exits 0.
//                           Its stderr is what a crash leaves on a main
//                           program's.
//
//   delegate-at-descriptor-limit
//                           delegates `crash-on-tenths 7` to itself in
//                           socket mode (one-off, and through a pool of one
//                           worker: `warm pool`), then lowers its
//                           RLIMIT_NOFILE to 128 and opens /dev/null until
//                           EMFILE. There it delegates again, one-off, to a
//                           second pool that has no worker yet (`cold
//                           pool`), to the warm pool, and to a server
//                           (127.0.0.1 port 1), prints `at the limit`, and
//                           waits for SIGUSR1 (a test measures its CPU time
//                           meanwhile). Then it closes those descriptors
//                           and delegates one-off and to the cold pool
//                           again. One line per delegation on stdout,
//                           `LABEL: OUTCOME` (see `outcome(of:)`); exits 0.
//   delegate-at-process-limit
//                           delegates `crash-on-tenths 7` to itself, sets
//                           its soft RLIMIT_NPROC to 1 (the process and its
//                           threads are more already), delegates one-off
//                           and to a pool, puts the soft limit back and
//                           delegates once more; lines as above; exits 0.
//                           Meaningful only for a user that the limit
//                           binds (not root).
//   metrics                 bootstraps an in-memory swift-metrics backend,
//                           then runs on a WorkerPool (label `metrics-test`,
//                           1 worker: this program in socket mode) one task
//                           after the other: crash-on-tenths 1 and 2 (they
//                           succeed), crash-on-tenths 10 (its worker dies of
//                           SIGSEGV: disconnected), sleep-with-child 60000
//                           with a deadline of 500 ms (deadline exceeded);
//                           shuts the pool down, prints what the backend
//                           holds (see `printMetrics`) and exits 0. Each
//                           task's outcome goes to stderr, for diagnosis.
//                           A mode of its own because swift-metrics binds a
//                           metric to the backend of the moment it is made,
//                           and takes one bootstrap per process: a test
//                           process cannot do it without changing every
//                           other test's metrics.
//
// The `sleep` of sleep-with-child is in its worker's process group, so a
// deadline's SIGTERM reaches it too; when the worker dies first, it is
// orphaned to init, or to the nearest subreaper (a test process that
// called `warmUp()`), which must reap it.

import CoreMetrics
import Procord
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Raw I/O

/// The descriptor a fake speaks on: stdin and stdout, or the socket that
/// socket mode names (`--procord-socket-fd N` before the mode).
let socketModeDescriptor: Int32? = {
  let all = CommandLine.arguments
  guard all.count >= 4, all[1] == "--procord-socket-fd", !all[3].hasPrefix("--procord-") else { return nil }
  return Int32(all[2])
}()
let protocolInput = socketModeDescriptor ?? 0
let protocolOutput = socketModeDescriptor ?? 1

/// Exits with a message on stderr: the fake itself went wrong (code 99) or
/// was called wrongly (code 64).
func die(_ message: String, code: Int32 = 99) -> Never {
  let bytes = Array("procord-test-worker: \(message)\n".utf8)
  _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
  exit(code)
}

/// Writes all of `bytes` to the main program (stdout).
func writeAll(_ bytes: [UInt8]) {
  var offset = 0
  while offset < bytes.count {
    let n = bytes[offset...].withUnsafeBytes { write(protocolOutput, $0.baseAddress, $0.count) }
    if n < 0 && errno == EINTR { continue }
    if n <= 0 { die("write failed: errno \(errno)") }
    offset += n
  }
}

/// Writes raw text, which need not be a well-formed frame.
func send(_ text: String) { writeAll(Array(text.utf8)) }

/// Writes one well-formed frame.
func sendFrame(_ kind: Character, _ body: String) {
  send("\(body.utf8.count)\(kind)\(body)")
}

/// Reads up to `count` bytes from the main program (stdin; fewer only at
/// the end of the stream).
func readBytes(_ count: Int) -> [UInt8] {
  var bytes = [UInt8](repeating: 0, count: count)
  var filled = 0
  while filled < count {
    let n = bytes[filled...].withUnsafeMutableBytes { read(protocolInput, $0.baseAddress, $0.count) }
    if n < 0 && errno == EINTR { continue }
    if n < 0 { die("read failed: errno \(errno)") }
    if n == 0 { break }
    filled += n
  }
  return Array(bytes[0..<filled])
}

/// Reads a frame header (SIZE digits, then KIND); exits 99 on anything else.
func readHeader() -> (kind: UInt8, size: Int) {
  var size = 0
  var digits = 0
  while true {
    guard let byte = readBytes(1).first else { die("end of stream inside a frame header") }
    if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
      digits += 1
      guard digits < 19 else { die("frame SIZE too long") }
      size = size * 10 + Int(byte - UInt8(ascii: "0"))
    } else {
      guard digits > 0 else { die("frame without a SIZE") }
      return (byte, size)
    }
  }
}

/// Reads one whole frame.
func readFrame() -> (kind: UInt8, body: [UInt8]) {
  let (kind, size) = readHeader()
  let body = readBytes(size)
  guard body.count == size else { die("end of stream inside a frame body") }
  return (kind, body)
}

/// Reads the `T` frame and returns the task name.
@discardableResult
func readTaskName() -> String {
  let frame = readFrame()
  guard frame.kind == UInt8(ascii: "T") else { die("expected a T frame first") }
  return String(decoding: frame.body, as: UTF8.self)
}

/// Reads the whole task: `T`, then `V`.
func readTask() {
  readTaskName()
  guard readFrame().kind == UInt8(ascii: "V") else { die("expected a V frame after T") }
}

/// Waits until the main program closes our stdin, then exits 0.
func exitWhenHungUp() -> Never {
  while !readBytes(4096).isEmpty {}
  exit(0)
}

/// Sleeps `seconds`, whatever signals come (used to outlive the main program's patience).
func linger(seconds: Int) -> Never {
  var remaining = timespec(tv_sec: seconds, tv_nsec: 0)
  var request = remaining
  while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
  exit(0)
}

/// Starts `sleep 30` as a child that inherits stdin, stdout and stderr.
func startGrandchild() {
  var pid: pid_t = 0
  let arguments: [UnsafeMutablePointer<CChar>?] = ["sleep", "30"].map { (word: String) in strdup(word) } + [nil]
  defer { arguments.forEach { free($0) } }
  let error = posix_spawnp(&pid, "sleep", nil, nil, arguments, environ)
  guard error == 0 else { die("posix_spawnp sleep: errno \(error)") }
}

/// Dies of SIGSEGV, without a core file and without the Swift runtime's
/// handler spending time on a backtrace first.
func crash() -> Never {
  var noCore = rlimit(rlim_cur: 0, rlim_max: 0)
  setrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &noCore)
  signal(SIGSEGV, SIG_DFL)
  raise(SIGSEGV)
  die("still alive after SIGSEGV")
}

/// A frame's bytes, for writing them some other way than `sendFrame`.
func frameBytes(_ kind: Character, _ body: String) -> [UInt8] {
  Array("\(body.utf8.count)\(kind)\(body)".utf8)
}

/// What the `*-mid-*` modes and tasks send before they stop: the header of
/// a 1000-byte `V` frame and the first 10 bytes of its body.
let partialFrame = Array("1000V0123456789".utf8)

/// `die-mid-output` and `killed-mid-output`: the header of a `size`-byte
/// `V` frame, then `sent` bytes of its body, in writes of at most 64 KiB.
func sendPartialValue(size: Int, sent: Int) {
  send("\(size)V")
  let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 65536)
  var left = sent
  while left > 0 {
    writeAll(Array(chunk.prefix(left)))
    left -= min(left, chunk.count)
  }
}

/// The body of `answer-byte-by-byte`'s `V` frame: 300 bytes. The tests
/// expect the same text.
let slowAnswer = String(repeating: "slow answer ", count: 25)

/// The bytes of block 0 of `large-answer` but for its first 8.
let patternBase: [UInt8] = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }

/// Block `index` of `large-answer`: 64 KiB, the index in its first 8 bytes
/// (little-endian), then byte (7 * position + 3) mod 256 at each position.
/// The tests build the same blocks to check the answer.
func patternBlock(_ index: Int) -> [UInt8] {
  var block = patternBase
  for i in 0..<8 { block[i] = UInt8(truncatingIfNeeded: UInt64(index) >> (8 * UInt64(i))) }
  return block
}

/// Sleeps `microseconds`, whatever signals come.
func pause(microseconds: Int) {
  var request = timespec(tv_sec: microseconds / 1_000_000, tv_nsec: (microseconds % 1_000_000) * 1000)
  var remaining = request
  while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

// MARK: - Real tasks, for `--procord-*` command lines

/// A task that failed in a way the test should see (a `U` answer).
struct TaskFailure: Error, CustomStringConvertible {
  let description: String
}

/// Applies `change` to the `CURRENT MAXIMUM` pair in the file open on `fd`,
/// under an exclusive flock, and returns the new pair.
func updateCounter(_ fd: Int32, _ change: (inout (current: Int, maximum: Int)) -> Void) throws
  -> (current: Int, maximum: Int)
{
  while flock(fd, LOCK_EX) != 0 {
    guard errno == EINTR else { throw TaskFailure(description: "flock: errno \(errno)") }
  }
  defer { flock(fd, LOCK_UN) }
  var bytes = [UInt8](repeating: 0, count: 64)
  let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
  guard n >= 0 else { throw TaskFailure(description: "pread: errno \(errno)") }
  let words = String(decoding: bytes[0..<n], as: UTF8.self).split(separator: " ").compactMap { Int($0) }
  var pair = (current: words.count == 2 ? words[0] : 0, maximum: words.count == 2 ? words[1] : 0)
  change(&pair)
  let text = Array("\(pair.current) \(pair.maximum)".utf8)
  guard ftruncate(fd, 0) == 0,
    text.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == text.count
  else { throw TaskFailure(description: "writing the counter: errno \(errno)") }
  return pair
}

/// `concurrency PATH`: see the header.
let concurrency = WorkerTask<String, Int>(name: "concurrency", input: .utf8, output: .decimal) { path in
  let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
  guard fd >= 0 else { throw TaskFailure(description: "open \(path): errno \(errno)") }
  defer { close(fd) }
  let started = try updateCounter(fd) { pair in
    pair.current += 1
    pair.maximum = max(pair.maximum, pair.current)
  }
  var request = timespec(tv_sec: 0, tv_nsec: 20_000_000)
  var remaining = request
  while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
  _ = try updateCounter(fd) { pair in pair.current -= 1 }
  return started.current
}

/// `sleep-with-child MS`: see the header.
let sleepWithChild = WorkerTask<Int, Int>(name: "sleep-with-child", input: .decimal, output: .decimal) { ms in
  var pid: pid_t = 0
  let seconds = String(Double(ms) / 1000)
  let arguments: [UnsafeMutablePointer<CChar>?] = ["sleep", seconds].map { (word: String) in strdup(word) } + [nil]
  defer { arguments.forEach { free($0) } }
  let error = posix_spawnp(&pid, "sleep", nil, nil, arguments, environ)
  guard error == 0 else { throw TaskFailure(description: "posix_spawnp sleep: errno \(error)") }
  // Waits for its end before reaping it: when a SIGTERM to the group ends
  // both, this worker dies on its way out of the wait and the `sleep` is
  // left to the subreaper, as the tests expect (a reaping wait could take it
  // first: a race the tests lost one run in five).
  var info = siginfo_t()
  while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
  return ms
}

/// `crash-on-tenths N`: see the header.
let crashOnTenths = WorkerTask<Int, Int>(name: "crash-on-tenths", input: .decimal, output: .decimal) { n in
  if n % 10 == 0 { crash() }
  return n
}

/// `unwrap-nil TEXT`: see the header.
let unwrapNil = WorkerTask<String, String>(name: "unwrap-nil", input: .utf8, output: .utf8) { text in
  printToStandardError(text)
  let missing: String? = nil
  return missing!
}

/// `environment NAME`: see the header.
let environment = WorkerTask<String, String>(name: "environment", input: .utf8, output: .utf8) { name in
  getenv(name).map { String(cString: $0) } ?? ""
}

/// `directory`: see the header.
let directory = WorkerTask<String, String>(name: "directory", input: .utf8, output: .utf8) { _ in
  var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
  guard getcwd(&buffer, buffer.count) != nil else { throw TaskFailure(description: "getcwd: errno \(errno)") }
  return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Where a server's worker writes its answers: its session with the server
/// (which carries them to the client), the Unix stream socket other than
/// the handoff descriptor 3 (the rest are pipes and files).
func sessionSocket() -> Int32? {
  for fd in Int32(4)..<1024 {
    var address = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let named = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    if named == 0 && Int32(address.ss_family) == AF_UNIX { return fd }
  }
  return nil
}

/// Writes ``partialFrame`` straight onto the session's socket, behind the
/// worker loop's back, as a worker dying in the middle of its answer would
/// have left it.
func sendPartialFrameToClient() throws {
  guard let fd = sessionSocket() else { throw TaskFailure(description: "no session socket: not in a server's worker") }
  let sent = partialFrame.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
  guard sent == partialFrame.count else { throw TaskFailure(description: "send: errno \(errno)") }
}

/// `crash-mid-output`: see the header.
let crashMidOutput = WorkerTask<String, String>(name: "crash-mid-output", input: .utf8, output: .utf8) { _ in
  try sendPartialFrameToClient()
  crash()
}

/// `stall-mid-output`: see the header.
let stallMidOutput = WorkerTask<String, String>(name: "stall-mid-output", input: .utf8, output: .utf8) { _ in
  try sendPartialFrameToClient()
  linger(seconds: 3600)
}

/// `pattern BLOCKS`: see the header.
let pattern = WorkerTask<Int, [UInt8]>(name: "pattern", input: .decimal, output: .bytes) { blocks in
  var output: [UInt8] = []
  output.reserveCapacity(blocks * patternBase.count)
  for index in 0..<blocks { output += patternBlock(index) }
  return output
}

/// What this program serves as a real worker or server.
let servedTasks: [any ServableTask] = [
  unwrapNil,
  concurrency, sleepWithChild, crashOnTenths, environment, directory, crashMidOutput, stallMidOutput, pattern,
  asyncDouble, waitForCancellation,
]

// MARK: - The `metrics` mode

/// Names a metric: its label, then its dimensions sorted by name, as
/// `label{name=value,...}` (just `label` without dimensions), one word that
/// the values can follow. Two metrics made with the same label and
/// dimensions share one handler, as in a real backend.
func metricKey(_ label: String, _ dimensions: [(String, String)]) -> String {
  guard !dimensions.isEmpty else { return label }
  let pairs = dimensions.sorted { $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }
  return "\(label){\(pairs.joined(separator: ","))}"
}

/// A counter that keeps its total.
final class MemoryCounter: CounterHandler {
  let total = Mutex<Int64>(0)
  func increment(by amount: Int64) { total.withLock { $0 += amount } }
  func reset() { total.withLock { $0 = 0 } }
}

/// A recorder (a gauge, for Procord's pools) that keeps every value, in order.
final class MemoryRecorder: RecorderHandler {
  let values = Mutex<[Double]>([])
  func record(_ value: Int64) { record(Double(value)) }
  func record(_ value: Double) { values.withLock { $0.append(value) } }
}

/// A timer that keeps every duration, in nanoseconds.
final class MemoryTimer: TimerHandler {
  let durations = Mutex<[Int64]>([])
  func recordNanoseconds(_ duration: Int64) { durations.withLock { $0.append(duration) } }
}

/// The handler under `key` in `handlers`, made and kept there if it is the
/// first of its key.
func handler<Handler>(in handlers: inout [String: Handler], _ key: String, _ make: () -> Handler) -> Handler {
  if let existing = handlers[key] { return existing }
  let made = make()
  handlers[key] = made
  return made
}

/// A swift-metrics backend that keeps everything in memory, by metric key.
/// Handlers are called from any thread (Procord's loop thread, callers of
/// `delegate`), hence the locks.
final class MemoryMetricsFactory: MetricsFactory {
  let counters = Mutex<[String: MemoryCounter]>([:])
  let recorders = Mutex<[String: MemoryRecorder]>([:])
  let timers = Mutex<[String: MemoryTimer]>([:])

  func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler {
    counters.withLock { handler(in: &$0, metricKey(label, dimensions), MemoryCounter.init) }
  }
  func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
    recorders.withLock { handler(in: &$0, metricKey(label, dimensions), MemoryRecorder.init) }
  }
  func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler {
    timers.withLock { handler(in: &$0, metricKey(label, dimensions), MemoryTimer.init) }
  }
  // Destroyed metrics keep their values: the report comes at the end.
  func destroyCounter(_ handler: CounterHandler) {}
  func destroyRecorder(_ handler: RecorderHandler) {}
  func destroyTimer(_ handler: TimerHandler) {}
}

/// Prints one line per metric the backend was asked for, sorted, with only
/// what the scenario makes deterministic when Procord works:
///
///   counter:  `KEY TOTAL`, e.g. `procord_tasks_failed_total{cause=killed} 0`
///   timer:    `KEY count=N shortest=positive longest=480ms..900ms`, where
///             a duration out of its range is printed instead, in ns: every
///             task takes some time, and the longest is the deadline's
///             (500 ms, less the loop clock's lag, then the kill within
///             the tests' 400 ms margin), far from its sleep's 60 s
///   recorder: `KEY count=N last=X max=Y` (whole numbers), or `KEY count=0`
///             if nothing was recorded
func printMetrics(_ factory: MemoryMetricsFactory) {
  var lines: [String] = []
  for (key, counter) in factory.counters.withLock({ $0 }) {
    lines.append("\(key) \(counter.total.withLock { $0 })")
  }
  for (key, timer) in factory.timers.withLock({ $0 }) {
    let durations = timer.durations.withLock { $0 }
    var line = "\(key) count=\(durations.count)"
    if let shortest = durations.min(), let longest = durations.max() {
      line += shortest > 0 ? " shortest=positive" : " shortest=\(shortest)ns"
      line += (480_000_000..<900_000_000).contains(longest) ? " longest=480ms..900ms" : " longest=\(longest)ns"
    }
    lines.append(line)
  }
  for (key, recorder) in factory.recorders.withLock({ $0 }) {
    let values = recorder.values.withLock { $0 }
    if let last = values.last, let largest = values.max() {
      lines.append("\(key) count=\(values.count) last=\(Int(last)) max=\(Int(largest))")
    } else {
      lines.append("\(key) count=0")
    }
  }
  for line in lines.sorted() { print(line) }
}

/// Writes a line to stderr (stdout holds only the metrics).
func printToStandardError(_ text: String) {
  let bytes = Array("\(text)\n".utf8)
  _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// `metrics`: see the header.
func runMetricsScenario() -> Never {
  // Before anything makes a metric: Procord's are made on first use and
  // stay bound to the backend of that moment.
  let factory = MemoryMetricsFactory()
  MetricsSystem.bootstrap(factory)

  var configuration = WorkerPool.Configuration(maximumWorkers: 1)
  configuration.label = "metrics-test"
  let itself = WorkerProgram(path: "/proc/self/exe", arguments: ["--procord-worker"], channel: .socket)
  let pool: WorkerPool
  do {
    pool = try WorkerPool([.local(itself)], configuration: configuration)
  } catch {
    die("making the pool: \(error)")
  }
  let crashTask = DelegatedTask(name: crashOnTenths.name, input: crashOnTenths.input, output: crashOnTenths.output)
  let sleepTask = DelegatedTask(name: sleepWithChild.name, input: sleepWithChild.input, output: sleepWithChild.output)
  // One at a time, each waited for: the counts and the gauges' last values
  // do not depend on how the tasks interleave.
  func run(_ task: DelegatedTask<Int, Int>, _ input: Int, options: DelegationOptions = DelegationOptions()) {
    let process: DelegatedProcess<Int>
    do {
      process = try pool.delegate(task, input, options: options)
    } catch {
      die("delegating \(task.name)(\(input)): \(error)")
    }
    process.wait()
    let outcome: String
    switch process.status {
    case .success(let output): outcome = "= \(output)"
    case .exception(let error): outcome = "raised: \(error)"
    case .error(let error): outcome = "failed: \(error)"
    case .working: outcome = "still working after the wait"
    }
    printToStandardError("\(task.name)(\(input)) \(outcome)")
  }
  run(crashTask, 1)
  run(crashTask, 2)
  run(crashTask, 10)
  run(sleepTask, 60000, options: DelegationOptions(deadline: .milliseconds(500)))
  pool.shutdownAndWait()
  printMetrics(factory)
  exit(0)
}

// MARK: - The `unwrap-nil-from-main` mode

/// `unwrap-nil-from-main N`: see the header.
func runUnwrapNilFromMain(times: Int) -> Never {
  let task = DelegatedTask(name: unwrapNil.name, input: unwrapNil.input, output: unwrapNil.output)
  for index in 0..<times {
    do {
      let output = try delegate(task, "about to unwrap (\(index + 1))", to: itselfAsWorker).run()
      printLine("answered: \(output)")
    } catch let error as ProcordError {
      printLine("\(error.code): \(error.fatalErrorMessage ?? "no fatal error message")")
    } catch {
      printLine("threw: \(error)")
    }
  }
  exit(0)
}

// MARK: - The `delegate-at-*-limit` modes

/// Writes a line to stdout at once (no buffer: the test reads as it comes).
func printLine(_ text: String) {
  let bytes = Array("\(text)\n".utf8)
  _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

/// `= 7`, or `failed: ` and the error's description, or `threw: ` and the
/// error `delegate` threw, or `still working after 10 s` (then killed).
func outcome(of make: () throws -> DelegatedProcess<Int>) -> String {
  let process: DelegatedProcess<Int>
  do {
    process = try make()
  } catch {
    return "threw: \(error)"
  }
  guard process.wait(timeout: .seconds(10)) else {
    process.kill()
    process.wait()
    return "still working after 10 s"
  }
  switch process.status {
  case .success(let output): return "= \(output)"
  case .exception(let error): return "raised: \(error)"
  case .error(let error): return "failed: \(error)"
  case .working: return "still working after the wait"
  }
}

/// The task these modes delegate, and where: this program in socket mode.
let limitProbe = DelegatedTask(name: crashOnTenths.name, input: crashOnTenths.input, output: crashOnTenths.output)
let itselfAsWorker = WorkerProgram(path: "/proc/self/exe", arguments: ["--procord-worker"], channel: .socket)

/// A pool of one worker of this program.
func makeLimitPool() -> WorkerPool {
  do {
    return try WorkerPool([.local(itselfAsWorker)], configuration: WorkerPool.Configuration(maximumWorkers: 1))
  } catch {
    die("making a pool: \(error)")
  }
}

/// `delegate-at-descriptor-limit`: see the header.
func runAtDescriptorLimit() -> Never {
  // Blocked before any thread starts, so that every thread inherits the
  // mask and sigwait below is the only taker.
  var resume = sigset_t()
  sigemptyset(&resume)
  sigaddset(&resume, SIGUSR1)
  pthread_sigmask(SIG_BLOCK, &resume, nil)
  let warmPool = makeLimitPool()
  let coldPool = makeLimitPool()
  printLine("before: \(outcome { try delegate(limitProbe, 7, to: itselfAsWorker) })")
  printLine("warm pool before: \(outcome { try warmPool.delegate(limitProbe, 7) })")

  var limit = rlimit()
  getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
  limit.rlim_cur = 128
  guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { die("setrlimit: errno \(errno)") }
  var held: [Int32] = []
  while true {
    let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
    if fd >= 0 {
      held.append(fd)
      continue
    }
    guard errno == EMFILE else { die("open /dev/null: errno \(errno)") }
    break
  }
  printLine("one-off: \(outcome { try delegate(limitProbe, 7, to: itselfAsWorker) })")
  printLine("cold pool: \(outcome { try coldPool.delegate(limitProbe, 7) })")
  printLine("warm pool: \(outcome { try warmPool.delegate(limitProbe, 7) })")
  printLine("remote: \(outcome { try delegate(limitProbe, 7, to: RemoteServer(host: "127.0.0.1", port: 1)) })")
  printLine("at the limit")
  var signal: Int32 = 0
  while sigwait(&resume, &signal) != 0 {}

  held.forEach { close($0) }
  printLine("one-off after: \(outcome { try delegate(limitProbe, 7, to: itselfAsWorker) })")
  printLine("cold pool after: \(outcome { try coldPool.delegate(limitProbe, 7) })")
  _ = warmPool.shutdownAndWait(timeout: .seconds(10))
  _ = coldPool.shutdownAndWait(timeout: .seconds(10))
  exit(0)
}

/// `delegate-at-process-limit`: see the header.
func runAtProcessLimit() -> Never {
  let pool = makeLimitPool()
  printLine("before: \(outcome { try delegate(limitProbe, 7, to: itselfAsWorker) })")
  var limit = rlimit()
  getrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &limit)
  let saved = limit
  limit.rlim_cur = 1
  guard setrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &limit) == 0 else { die("setrlimit: errno \(errno)") }
  printLine("one-off: \(outcome { try delegate(limitProbe, 7, to: itselfAsWorker) })")
  printLine("pool: \(outcome { try pool.delegate(limitProbe, 7) })")
  limit = saved
  guard setrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &limit) == 0 else { die("setrlimit: errno \(errno)") }
  printLine("one-off after: \(outcome { try delegate(limitProbe, 7, to: itselfAsWorker) })")
  _ = pool.shutdownAndWait(timeout: .seconds(10))
  exit(0)
}

// MARK: - Modes

/// The command line, without the socket-mode option before a fake's mode.
let arguments =
  socketModeDescriptor == nil ? CommandLine.arguments : [CommandLine.arguments[0]] + CommandLine.arguments.dropFirst(3)
if arguments.count >= 2 && arguments[1].hasPrefix("--procord-") {
  // A program whose main forgot to serve, for the test of what it says.
  if getenv("PROCORD_TEST_RETURN_WITHOUT_SERVING") != nil { exit(0) }
  do {
    try Worker.runIfRequested(tasks: servedTasks)
  } catch {
    die("\(error)", code: 64)
  }
  die("the --procord-* options ask for neither a worker nor a server", code: 64)
}
guard arguments.count >= 2 else { die("usage: procord-test-worker MODE [ARGUMENT]", code: 64) }
let mode = arguments[1]
/// The mode's numeric argument (`answer-then-exit N`, `error-frame D`).
func number() -> Int32 {
  guard arguments.count >= 3, let value = Int32(arguments[2]) else {
    die("\(mode) needs a number argument", code: 64)
  }
  return value
}

/// The mode's numeric argument number `index` (1: the first after the mode).
func numberArgument(_ index: Int) -> Int {
  guard arguments.count > index + 1, let value = Int(arguments[index + 1]) else {
    die("\(mode) needs \(index) number argument(s)", code: 64)
  }
  return value
}

switch mode {
case "unwrap-nil-from-main":
  runUnwrapNilFromMain(times: numberArgument(1))

case "metrics":
  runMetricsScenario()

case "delegate-at-descriptor-limit":
  runAtDescriptorLimit()

case "delegate-at-process-limit":
  runAtProcessLimit()

case "exit-at-once":
  exit(0)

case "exit-after-name":
  readTaskName()
  exit(0)

case "exit-during-input":
  readTaskName()
  let (kind, size) = readHeader()
  guard kind == UInt8(ascii: "V") else { die("expected a V frame after T") }
  _ = readBytes(size / 2)
  exit(5)

case "answer-then-exit":
  readTask()
  sendFrame("V", "42")
  exit(number())

case "crash-after-name":
  readTaskName()
  crash()

case "garbage-then-crash":
  readTask()
  send("xyz")
  crash()

case "garbage":
  readTask()
  send("xyz")
  exitWhenHungUp()

case "too-long":
  readTask()
  send("00000000000000000001")  // 20 digits, worth 1, and no KIND
  exitWhenHungUp()

case "size-above-limit":
  readTask()
  send("100000000000V")  // 100 GB announced, no body
  exitWhenHungUp()

case "error-frame":
  readTask()
  sendFrame("E", String(number()))
  exit(0)

case "bad-error-frame":
  readTask()
  send("1E9")
  exitWhenHungUp()

case "unexpected-task":
  readTask()
  sendFrame("T", "probe")
  exitWhenHungUp()

case "reusable-before-answer":
  readTask()
  send("0R")
  exitWhenHungUp()

case "print-then-answer":
  readTask()
  send("8POmessage")
  sendFrame("P", "Eto stderr\n")
  sendFrame("P", "7to nowhere\n")
  sendFrame("F", "O")
  sendFrame("V", "42")
  exit(0)

case "answer-then-linger":
  readTask()
  sendFrame("V", "42")
  close(1)
  linger(seconds: 30)

case "close-and-linger":
  readTask()
  close(1)
  linger(seconds: 30)

case "answer-with-grandchild":
  readTask()
  startGrandchild()
  sendFrame("V", "42")
  exit(0)

case "hang":
  readTask()
  linger(seconds: 3600)

case "undecodable":
  readTask()
  sendFrame("V", "abc")
  exit(0)

case "empty-print":
  readTask()
  sendFrame("P", "")
  sendFrame("V", "42")
  exitWhenHungUp()

case "long-flush":
  readTask()
  sendFrame("F", "OO")
  sendFrame("V", "42")
  exitWhenHungUp()

case "stderr-then-answer":
  readTask()
  _ = "noise".withCString { write(2, $0, 5) }
  sendFrame("V", "42")
  exit(0)

case "die-mid-output":
  readTask()
  sendPartialValue(size: numberArgument(1), sent: numberArgument(2))
  exit(6)

case "killed-mid-output":
  readTask()
  sendPartialValue(size: numberArgument(1), sent: numberArgument(2))
  raise(SIGKILL)
  die("still alive after SIGKILL")

case "answer-then-crash":
  readTask()
  sendFrame("V", "42")
  crash()

case "delegate-before-serving":
  let generation = getenv("PROCORD_TEST_GENERATION").flatMap { Int(String(cString: $0)) } ?? 0
  if generation >= 3 { die("generation \(generation): stopped by the test's own bound", code: 9) }
  setenv("PROCORD_TEST_GENERATION", "\(generation + 1)", 1)
  let again = WorkerProgram(path: "/proc/self/exe", arguments: ["delegate-before-serving"])
  let process = try delegate(DelegatedTask<Int, Int>(name: "probe"), 7, to: again)
  process.wait()
  let refused: Bool
  if case .error(.workerDisconnected(.startRefused)) = process.status { refused = true } else { refused = false }
  let said = Array("\(refused ? "refused" : "delegated"): \(process.status)\n".utf8)
  _ = said.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
  exit(refused ? 3 : 4)

case "stall-mid-frame":
  readTask()
  writeAll(partialFrame)
  linger(seconds: 3600)

case "answer-byte-by-byte":
  readTask()
  let gap = numberArgument(1)
  let bytes = frameBytes("P", "7one ") + frameBytes("F", "7") + frameBytes("P", "7two ") + frameBytes("V", slowAnswer)
  for byte in bytes {
    writeAll([byte])
    pause(microseconds: gap)
  }
  exit(0)

case "large-answer":
  readTask()
  let blocks = numberArgument(1)
  send("\(blocks * patternBase.count)V")
  for index in 0..<blocks { writeAll(patternBlock(index)) }
  exit(0)

default:
  die("unknown mode \(mode)", code: 64)
}
