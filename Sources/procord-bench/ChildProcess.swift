import CProcord

#if canImport(Glibc)
import Glibc
#endif

/// A program the benchmark runs beside itself (the worker server, the
/// memory probe, the Python peers), started and reaped by the C core's own
/// spawn (procord/spawn.h): its process group goes with it.
final class ChildProcess {
  private var child = procord_child_t()
  private var reaped = false

  /// Starts `arguments[0]` at `path` with `extraEnvironment` added to ours.
  /// With `captureOutput`, its stdout comes back from ``finish()``;
  /// otherwise it shares ours.
  init(path: String, arguments: [String], extraEnvironment: [String: String] = [:], captureOutput: Bool) throws {
    var environment: [String] = []
    var index = 0
    while let entry = environ[index] {
      let text = String(cString: entry)
      if extraEnvironment[String(text.prefix { $0 != "=" })] == nil { environment.append(text) }
      index += 1
    }
    environment += extraEnvironment.map { "\($0.key)=\($0.value)" }

    let result = withConstArgumentVector(arguments) { argv in
      withConstArgumentVector(environment) { envp in
        var options = procord_spawn_options_t()
        procord_spawn_options_init(&options)
        options.program = UnsafePointer(strdup(path))
        defer { free(UnsafeMutableRawPointer(mutating: options.program)) }
        options.arguments = argv
        options.environment = envp
        // STDIO: the child's stdout is a pipe to us; SOCKET: it is ours, and
        // its unused descriptor 3 is closed below.
        options.channel = captureOutput ? PROCORD_CHANNEL_STDIO : PROCORD_CHANNEL_SOCKET
        options.stderr_fd = -1
        // A program of its own (a server, a probe that delegates at once), not a worker.
        options.main_program = 1
        return procord_spawn(&options, &child)
      }
    }
    try check(result, "cannot start \(path)")
    // Nothing is written to the child: its stdin ends at once (or it never
    // had one, in socket mode).
    if child.write_fd != child.read_fd { close(child.write_fd) }
    if !captureOutput { close(child.read_fd) }
    child.write_fd = -1
    if !captureOutput { child.read_fd = -1 }
  }

  /// Reads the captured stdout to its end and reaps the child; returns the
  /// output and the exit status (a signal counts as failure, 128 + signal).
  func finish() -> (output: String, status: Int32) {
    var bytes: [UInt8] = []
    if child.read_fd >= 0 {
      var buffer = [UInt8](repeating: 0, count: 65536)
      while true {
        let count = read(child.read_fd, &buffer, buffer.count)
        if count > 0 { bytes += buffer[0..<count] } else if count < 0 && errno == EINTR { continue } else { break }
      }
      close(child.read_fd)
      child.read_fd = -1
    }
    return (String(decoding: bytes, as: UTF8.self), reap())
  }

  /// Its process id.
  var pid: Int32 { child.pid }

  /// Asks the child's process group to stop (SIGTERM) and reaps the child.
  func terminate() {
    if !reaped { procord_child_kill(&child, SIGTERM) }
    _ = finish()
  }

  /// SIGTERM to the child's process group, then waits up to `timeout` for
  /// it to exit; returns its exit status (128 + signal for a signal), or
  /// nil if it had to be killed (SIGKILL) when the time ran out.
  func stop(timeout: Duration) -> Int32? {
    guard !reaped else { return nil }
    procord_child_kill(&child, SIGTERM)
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      var status: Int32 = 0
      if procord_child_try_reap(&child, &status) == 1 {
        reaped = true
        return Self.exitStatus(status)
      }
      usleep(10_000)
    }
    procord_child_kill(&child, SIGKILL)
    _ = reap()
    return nil
  }

  private func reap() -> Int32 {
    guard !reaped else { return 0 }
    var status: Int32 = 0
    _ = procord_child_reap(&child, &status)
    reaped = true
    return Self.exitStatus(status)
  }

  /// A wait status as a shell shows it: the exit code, or 128 + signal.
  private static func exitStatus(_ status: Int32) -> Int32 {
    let signal = status & 0x7f
    return signal != 0 ? 128 + signal : (status >> 8) & 0xff
  }

  deinit {
    if !reaped {
      procord_child_kill(&child, SIGKILL)
      _ = reap()
    }
    if child.read_fd >= 0 { close(child.read_fd) }
  }
}
