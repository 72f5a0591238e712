import CTestSupport
import Foundation
import Testing

@testable import Procord

// Child programs for tests: servers and other long-running processes, with
// their output recorded, and the notify socket they report readiness on.

/// Everything a child writes to its stdout and stderr (one pipe), read by a
/// thread of its own as it comes, so that the child never blocks on a full
/// pipe and tests can wait for a line. All outputs signal one condition, so
/// that a test can wait on what several children say.
final class StreamRecorder: @unchecked Sendable {
  let pipe = Pipe()
  private let lock = NSLock()
  private var bytes: [UInt8] = []
  /// Signalled whenever any output grows or ends.
  private static let changed = NSCondition()
  /// How many times any output changed; guarded by `changed`.
  nonisolated(unsafe) private static var generation = 0

  /// Starts reading; call once the child has been started.
  func start() {
    let fd = pipe.fileHandleForReading.fileDescriptor
    Thread.detachNewThread { [self] in
      var buffer = [UInt8](repeating: 0, count: 65536)
      while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n > 0 { lock.withLock { bytes += buffer[0..<n] } }
        Self.changed.lock()
        Self.generation += 1
        Self.changed.broadcast()
        Self.changed.unlock()
        if n <= 0 { return }
      }
    }
  }

  /// What has come so far. A child that has exited may still have output
  /// in the pipe that this reader has not taken yet: to check for a line,
  /// wait for it (``wait(timeout:until:)``).
  var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }

  /// Waits until `holds` (checked again each time any output changes) or
  /// until `timeout` has passed. Returns whether it holds.
  static func wait(timeout: Duration, until holds: () -> Bool) -> Bool {
    let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
    let deadline = Date(timeIntervalSinceNow: seconds)
    changed.lock()
    defer { changed.unlock() }
    while true {
      let seen = generation
      changed.unlock()
      let done = holds()
      changed.lock()
      if done { return true }
      while generation == seen {
        if !changed.wait(until: deadline) && generation == seen { return false }
      }
    }
  }

  /// Waits until `holds` for this output's text, for at most `timeout`.
  func wait(timeout: Duration, until holds: (String) -> Bool) -> Bool {
    Self.wait(timeout: timeout) { holds(self.text) }
  }
}

/// A program run as a child process with Foundation's Process, its output
/// captured.
final class ChildProcess: @unchecked Sendable {
  let process = Process()
  let output = StreamRecorder()

  /// Starts `path` with `arguments`; the environment is this process's with
  /// `environment` added (and no NOTIFY_SOCKET or LISTEN_* unless given).
  ///
  /// The child inherits the signal mask of the thread that starts it, and
  /// the threads tests run on block most signals (libdispatch's workers
  /// do); unless `inheritSignalMask`, the child starts with none blocked,
  /// as it would from a shell or a service manager.
  init(
    _ path: String, _ arguments: [String], environment: [String: String] = [:],
    inheritSignalMask: Bool = false
  ) throws {
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    var inherited = ProcessInfo.processInfo.environment
    for name in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { inherited[name] = nil }
    process.environment = inherited.merging(environment) { $1 }
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = output.pipe
    process.standardError = output.pipe
    var none = sigset_t()
    var previous = sigset_t()
    sigemptyset(&none)
    if !inheritSignalMask { pthread_sigmask(SIG_SETMASK, &none, &previous) }
    defer { if !inheritSignalMask { pthread_sigmask(SIG_SETMASK, &previous, nil) } }
    try process.run()
    output.start()
  }

  var pid: Int32 { process.processIdentifier }

  /// Waits for the child to exit, for at most `timeout`; nil if it has not.
  /// `exited`: it exited (status is its code), or was killed (status is the signal).
  func waitForExit(timeout: Duration) -> (exited: Bool, status: Int32)? {
    let result = procord_test_wait_for_exit(pid, Int32(timeout.components.seconds * 1000))
    guard result == 1 || result == -ESRCH else { return nil }
    process.waitUntilExit()
    return (process.terminationReason == .exit, process.terminationStatus)
  }

  /// For `defer`: stops the child if it still runs (`signal`, then SIGKILL
  /// after 10 s, to it and to its children), and reaps those children if
  /// they were left to us (we are their subreaper).
  func ensureStopped(signal: Int32 = SIGTERM) {
    guard process.isRunning else { return }
    let children = childrenOf(pid)
    kill(pid, signal)
    if waitForExit(timeout: .seconds(10)) == nil {
      kill(pid, SIGKILL)
      children.forEach { kill($0, SIGKILL) }
      _ = waitForExit(timeout: .seconds(10))
    }
    for child in children where procord_test_wait_for_exit(child, 2000) != 0 {
      _ = waitpid(child, nil, WNOHANG)
    }
  }
}

/// A worker server run as a child process, listening on a port of its own
/// choice on 127.0.0.1, ready (it said READY=1 on NOTIFY_SOCKET) once made.
final class ServerUnderTest: @unchecked Sendable {
  let child: ChildProcess
  let port: Int

  /// Starts `program --procord-server --procord-hostname 127.0.0.1
  /// --procord-port 0 --procord-drain-timeout 5000 options...` (a failing
  /// test does not wait 30 s for tasks to drain) and waits for its sd_notify message (see
  /// ``ChildProcess`` for `inheritSignalMask`).
  init(program: String = demoPath, options: [String] = [], inheritSignalMask: Bool = false) throws {
    let notify = try NotifySocket()
    let child = try ChildProcess(
      program,
      [
        "--procord-server", "--procord-hostname", "127.0.0.1", "--procord-port", "0",
        "--procord-drain-timeout", "5000",
      ] + options,
      environment: ["NOTIFY_SOCKET": notify.path], inheritSignalMask: inheritSignalMask)
    guard let message = notify.receive(timeout: .seconds(10)), message.contains("READY=1"),
      let status = message.split(separator: "\n").first(where: { $0.hasPrefix("STATUS=listening on 127.0.0.1:") }),
      let port = Int(status.split(separator: ":").last ?? "")
    else {
      child.ensureStopped()
      throw TestFailure("the server did not say it was ready: \(child.output.text)")
    }
    self.child = child
    self.port = port
  }

  var pid: Int32 { child.pid }
  var output: String { child.output.text }
  var remote: RemoteServer { RemoteServer(host: "127.0.0.1", port: port) }

  /// SIGTERM, then expects the server to exit 0 within 10 s.
  func stop(sourceLocation: SourceLocation = #_sourceLocation) {
    kill(pid, SIGTERM)
    let end = child.waitForExit(timeout: .seconds(10))
    #expect(
      end?.exited == true && end?.status == 0, "server ended \(String(describing: end)): \(output)",
      sourceLocation: sourceLocation)
    child.ensureStopped()
  }

  func ensureStopped() { child.ensureStopped() }

  /// The server's workers running a task of the demo's `sleep` (sleeping in
  /// nanosleep, where idle workers wait in a socket read), once there are
  /// `count` of them; nil if not within 10 s. Looks at /proc every few ms:
  /// another process's state, which nothing can await.
  func waitForBusyWorkers(_ count: Int) -> [Int32]? {
    var busy: [Int32] = []
    let found = repeatUntil(deadline: .seconds(10)) {
      busy = childrenOf(pid).filter {
        (try? String(contentsOfFile: "/proc/\($0)/wchan", encoding: .utf8)) == "hrtimer_nanosleep"
      }
      if busy.count >= count { return true }
      usleep(5000)
      return false
    }
    return found ? busy : nil
  }
}

/// The receiving end of sd_notify: a Unix datagram socket in a directory of
/// its own, both removed when this is freed.
final class NotifySocket {
  let path: String
  private let directory: String
  private let fd: Int32

  init() throws {
    directory = temporaryPath("notify")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    path = directory + "/notify"
    fd = procord_test_notify_socket(path)
    guard fd >= 0 else {
      try? FileManager.default.removeItem(atPath: directory)
      throw TestFailure("notify socket at \(path): errno \(-fd)")
    }
  }

  deinit {
    close(fd)
    try? FileManager.default.removeItem(atPath: directory)
  }

  /// The next message, or nil if none came within `timeout`.
  func receive(timeout: Duration) -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = procord_test_receive(fd, &buffer, buffer.count, Int32(timeout.components.seconds * 1000))
    guard n >= 0 else { return nil }
    return String(decoding: buffer[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

/// A failure of the test's own setup, with what went wrong.
struct TestFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

/// Calls `attempt` until it returns true or `deadline` has passed; returns
/// whether it did. For what nothing can await (another process's state).
func repeatUntil(deadline: Duration, _ attempt: () -> Bool) -> Bool {
  let end = ContinuousClock.now + deadline
  repeat {
    if attempt() { return true }
  } while ContinuousClock.now < end
  return false
}

/// A path in the temporary directory, unique to this call.
func temporaryPath(_ name: String) -> String {
  FileManager.default.temporaryDirectory.path + "/procord-server-tests-\(name)-\(UUID().uuidString.prefix(8))"
}

/// The output of `process` once finished within `timeout`, or nil with the
/// status recorded as an issue (killed if it had not finished).
func outputOf<Output>(
  _ process: DelegatedProcess<Output>, timeout: Duration = .seconds(10),
  sourceLocation: SourceLocation = #_sourceLocation
) -> Output? {
  guard process.wait(timeout: timeout) else {
    Issue.record("no answer within \(timeout)", sourceLocation: sourceLocation)
    process.kill()
    process.wait()
    return nil
  }
  guard case .success(let output) = process.status else {
    Issue.record("status: \(process.status)", sourceLocation: sourceLocation)
    return nil
  }
  return output
}
