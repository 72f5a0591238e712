#if canImport(Glibc)
import Glibc
#endif

/// A program the benchmark runs beside itself (the worker server, the
/// memory probe, the Python peers), started with posix_spawn.
final class ChildProcess {
  let pid: pid_t
  /// The read end of the child's stdout, when it was captured.
  private var outputDescriptor: Int32
  private var reaped = false

  /// Starts `arguments[0]` at `path` with `extraEnvironment` added to ours;
  /// with `captureOutput`, its stdout comes back from ``finish()``.
  init(path: String, arguments: [String], extraEnvironment: [String: String] = [:], captureOutput: Bool) throws {
    // A socketpair rather than a pipe: SOCK_CLOEXEC sets close-on-exec at
    // once (Glibc's module has no pipe2), so no other spawn inherits it.
    var pipeEnds: [Int32] = [-1, -1]
    let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    if captureOutput, socketpair(AF_UNIX, type, 0, &pipeEnds) != 0 {
      throw BenchError("socketpair", code: -errno)
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if captureOutput { posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1) }

    var environment: [String] = []
    var index = 0
    while let entry = environ[index] {
      let text = String(cString: entry)
      let name = String(text.prefix { $0 != "=" })
      if extraEnvironment[name] == nil { environment.append(text) }
      index += 1
    }
    environment += extraEnvironment.map { "\($0.key)=\($0.value)" }

    var child: pid_t = 0
    let result: Int32 = withArgumentVector(arguments) { argv in
      withArgumentVector(environment) { envp in
        posix_spawn(&child, path, &actions, nil, argv, envp)
      }
    }
    if captureOutput { close(pipeEnds[1]) }
    if result != 0 {
      if captureOutput { close(pipeEnds[0]) }
      throw BenchError("cannot start \(path)", code: -result)
    }
    pid = child
    outputDescriptor = captureOutput ? pipeEnds[0] : -1
  }

  /// Reads the captured stdout to its end and reaps the child; returns the
  /// output and the exit status (a signal counts as failure, 128 + signal).
  func finish() -> (output: String, status: Int32) {
    var bytes: [UInt8] = []
    if outputDescriptor >= 0 {
      var buffer = [UInt8](repeating: 0, count: 65536)
      while true {
        let count = read(outputDescriptor, &buffer, buffer.count)
        if count > 0 { bytes += buffer[0..<count] } else if count < 0 && errno == EINTR { continue } else { break }
      }
      close(outputDescriptor)
      outputDescriptor = -1
    }
    return (String(decoding: bytes, as: UTF8.self), reap())
  }

  /// Asks the child to stop (SIGTERM) and reaps it.
  func terminate() {
    if !reaped { kill(pid, SIGTERM) }
    _ = finish()
  }

  private func reap() -> Int32 {
    guard !reaped else { return 0 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    reaped = true
    let signal = status & 0x7f
    return signal != 0 ? 128 + signal : (status >> 8) & 0xff
  }

  deinit {
    if !reaped {
      kill(pid, SIGKILL)
      _ = reap()
    }
    if outputDescriptor >= 0 { close(outputDescriptor) }
  }
}
