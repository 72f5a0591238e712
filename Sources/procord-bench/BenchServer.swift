import CProcordBench
import Procord

#if canImport(Glibc)
import Glibc
#endif

/// This benchmark started again as a worker server on 127.0.0.1, on a port
/// of its own choice, ready once it said so (READY=1 on NOTIFY_SOCKET, as
/// under systemd).
final class BenchServer {
  let port: Int
  private let child: ChildProcess

  /// With `secretFile`, clients must prove they know the secret in it
  /// (`--procord-secret-file`); with `drainTimeoutMilliseconds`, a stop
  /// waits at most that long for running tasks.
  init(
    maximumTasks: Int, secretFile: String? = nil, drainTimeoutMilliseconds: Int? = nil, extraOptions: [String] = []
  ) throws {
    var path = [CChar](repeating: 0, count: 256)
    let notify = procord_bench_notify_open(&path, path.count)
    try check(notify, "cannot make a notification socket")
    let notifyPath = String(decoding: path.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    defer { procord_bench_notify_close(notify, notifyPath) }

    child = try ChildProcess(
      path: "/proc/self/exe",
      arguments: [
        "procord-bench", "--procord-server", "--procord-hostname", "127.0.0.1", "--procord-port", "0",
        "--procord-max-simultaneous-tasks", String(maximumTasks), "--procord-log-level", "warning",
      ] + (secretFile.map { ["--procord-secret-file", $0] } ?? [])
        + (drainTimeoutMilliseconds.map { ["--procord-drain-timeout", String($0)] } ?? []) + extraOptions,
      extraEnvironment: ["NOTIFY_SOCKET": notifyPath], captureOutput: false)
    let port = procord_bench_notify_wait_port(notify, 20_000)
    if port < 0 {
      child.terminate()
      throw BenchError("the worker server did not say it was listening", code: port)
    }
    self.port = Int(port)
  }

  var remote: RemoteServer { RemoteServer(host: "127.0.0.1", port: port) }

  /// The server's process id.
  var pid: Int32 { child.pid }

  /// SIGTERM (the server drains and exits), then reaps it.
  func stop() { child.terminate() }

  /// SIGTERM, then its exit status once it has drained and exited, or nil
  /// if it was still running after `timeout` (it is then killed).
  func stop(timeout: Duration) -> Int32? { child.stop(timeout: timeout) }
}
