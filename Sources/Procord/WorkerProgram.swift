import CProcord

#if canImport(Glibc)
import Glibc
#endif

/// How to start a worker process: which program, with which arguments, and
/// on which descriptors it speaks the protocol.
public struct WorkerProgram: Sendable {
  /// Where the worker speaks the protocol.
  public enum Channel: Sendable {
    /// The original mode: the worker's stdin and stdout. Any Procord worker
    /// understands it, including the original library's.
    case standardStreams
    /// This project's mode: a socketpair end the worker finds as descriptor
    /// 3, named by `--procord-socket-fd 3` (added to the arguments by
    /// Procord). The worker's stdout and stderr stay free for the task, and
    /// the worker can serve several tasks (`0R`). Only for Procord for Swift
    /// workers.
    case socket
  }

  /// The program: a path, or a bare name looked up in `PATH`.
  public var path: String
  /// The arguments after the program name.
  public var arguments: [String]
  /// Where the protocol runs.
  public var channel: Channel
  /// A descriptor to give the worker as its stderr; `nil`: inherit ours.
  public var standardError: Int32?

  /// Describes a worker program.
  public init(
    path: String, arguments: [String] = ["--procord-worker"], channel: Channel = .standardStreams,
    standardError: Int32? = nil
  ) {
    self.path = path
    self.arguments = arguments
    self.channel = channel
    self.standardError = standardError
  }

  /// This very executable as a worker, in this project's socket mode. It is
  /// started through `/proc/self/exe`, never `argv[0]` (which may be
  /// relative, a symlink, or anything the caller chose): that is the running
  /// binary even if its file has since been replaced or deleted.
  public static var current: WorkerProgram {
    var program = WorkerProgram(path: "/proc/self/exe", arguments: ["--procord-worker"], channel: .socket)
    program.displayName = executablePath
    return program
  }

  /// The worker's `argv[0]`, when it should differ from ``path``.
  var displayName: String?

  /// The full argument vector, with the option that names the socket first:
  /// a worker reads `--procord-*` options only before its own arguments.
  func argumentVector(includingSocketOption: Bool = true) -> [String] {
    var vector = [displayName ?? path]
    if channel == .socket && includingSocketOption {
      vector += ["--procord-socket-fd", String(PROCORD_WORKER_SOCKET_FD)]
    }
    return vector + arguments
  }

  /// Calls `body` with C spawn options that stay valid during the call.
  func withSpawnOptions<R>(includingSocketOption: Bool = true, _ body: (procord_spawn_options_t) -> R) -> R {
    let vector = argumentVector(includingSocketOption: includingSocketOption)
    let cStrings = vector.map { strdup($0) }
    let programPath = strdup(path)
    defer {
      cStrings.forEach { free($0) }
      free(programPath)
    }
    var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { argv in
      var options = procord_spawn_options_t()
      options.program = UnsafePointer(programPath)
      options.arguments = argv.baseAddress
      options.environment = nil
      options.channel = channel == .socket ? PROCORD_CHANNEL_SOCKET : PROCORD_CHANNEL_STDIO
      options.stderr_fd = standardError ?? -1
      return body(options)
    }
  }
}

/// The running executable's real path, read once from `/proc/self/exe`.
let executablePath: String = {
  var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
  let count = readlink("/proc/self/exe", &buffer, Int(PATH_MAX))
  guard count > 0 else { return CommandLine.arguments[0] }
  return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}()
