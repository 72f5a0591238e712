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
  /// A descriptor to give the worker as its stderr (above 0: 1 for our
  /// stdout, say); `nil` (or 0): ours. A worker started for one task then
  /// writes to a pipe that Procord passes on to our stderr at once, keeping
  /// its end for ``ProcordError/standardErrorTail`` should it crash; 2 gives
  /// it our stderr itself, with no pipe and no tail.
  public var standardError: Int32?
  /// The worker's whole environment; `nil` (the default): this program's,
  /// with `SWIFT_BACKTRACE=enable=no` added when the worker is this program
  /// (see ``current``).
  public var environment: [String: String]?
  /// The worker's working directory; `nil` (the default): this program's.
  /// A directory that cannot be entered makes the start fail with
  /// ``DisconnectionCause/couldNotStart(program:errno:)``.
  public var workingDirectory: String?
  /// Resource limits set on the worker before it gets any task.
  public var limits = ResourceLimits()

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
  /// binary even if its file has since been replaced or deleted. Under a
  /// tool that runs the program inside itself (valgrind), `/proc/self/exe`
  /// is the tool: set `PROCORD_SELF_EXECUTABLE` to the program's path in
  /// the environment, and that is started instead.
  ///
  /// Crashes are quiet by default: a worker that is this program (started
  /// for a task or for a ``WorkerPool``) gets `SWIFT_BACKTRACE=enable=no`,
  /// so that a runtime error prints its `Fatal error: ...` line on our
  /// stderr rather than the Swift backtracer's report of 50 lines and more
  /// (which also takes a tenth of a second or more to make, before the
  /// worker is gone). The error then carries
  /// that line (``ProcordError/fatalErrorMessage``) and the end of the
  /// worker's stderr (``ProcordError/standardErrorTail``). A debug build
  /// (`-Onone`) still prints the runtime's short, unsymbolicated "Current
  /// stack trace" after the line: the compiler asks for it in such code, and
  /// only an enabled backtracer turns it off. For the full backtrace, set
  /// `SWIFT_BACKTRACE` in this program's environment (`enable=yes`, or any
  /// setting: the workers then inherit it untouched), or give the program an
  /// ``environment`` of its own. A worker server's workers are left as they
  /// are: their backtraces go to the server's log, the only place they show.
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

  /// Whether the worker is this executable (see ``current``).
  var isThisProgram: Bool { path == "/proc/self/exe" || path == executablePath }

  /// Calls `body` with C spawn options that stay valid during the call.
  /// With `quietingCrashes`, a worker that is this program and inherits our
  /// environment gets `SWIFT_BACKTRACE=enable=no` too, unless we have a
  /// `SWIFT_BACKTRACE` of our own (see ``current``).
  func withSpawnOptions<R>(
    includingSocketOption: Bool = true, quietingCrashes: Bool = true, _ body: (procord_spawn_options_t) -> R
  ) -> R {
    let vector = argumentVector(includingSocketOption: includingSocketOption)
    let cStrings = vector.map { strdup($0) }
    let programPath = strdup(path)
    defer {
      cStrings.forEach { free($0) }
      free(programPath)
    }
    let environmentStrings = environment.map { $0.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } }
    let directory = workingDirectory.map { strdup($0) }
    defer {
      environmentStrings?.forEach { free($0) }
      directory.map { free($0) }
    }
    var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
    pointers.append(nil)
    var environmentPointers: [UnsafePointer<CChar>?]? = environmentStrings.map { $0.map { UnsafePointer($0) } + [nil] }
    if environment == nil, quietingCrashes, isThisProgram, getenv("SWIFT_BACKTRACE") == nil {
      environmentPointers = currentEnvironment(adding: quietCrashesEntry)
    }
    return pointers.withUnsafeBufferPointer { argv in
      withOptionalBuffer(&environmentPointers) { environ in
        var options = procord_spawn_options_t()
        procord_spawn_options_init(&options)
        options.program = UnsafePointer(programPath)
        options.arguments = argv.baseAddress
        options.environment = environ
        options.channel = channel == .socket ? PROCORD_CHANNEL_SOCKET : PROCORD_CHANNEL_STDIO
        options.stderr_fd = standardError ?? -1
        options.working_directory = directory.flatMap { UnsafePointer($0) }
        options.limits = limits.cValue
        return body(options)
      }
    }
  }
}

/// `SWIFT_BACKTRACE=enable=no`: the Swift runtime prints a fatal error's
/// message, and no backtrace (see ``WorkerProgram/current``).
nonisolated(unsafe) private let quietCrashesEntry = UnsafePointer(strdup("SWIFT_BACKTRACE=enable=no")!)

/// This program's environment, as C strings (its own: valid while it is
/// not changed), then `entry`, then the NULL that ends them.
private func currentEnvironment(adding entry: UnsafePointer<CChar>) -> [UnsafePointer<CChar>?] {
  var pointers: [UnsafePointer<CChar>?] = []
  var index = 0
  while let string = environ[index] {
    pointers.append(UnsafePointer(string))
    index += 1
  }
  return pointers + [entry, nil]
}

/// Calls `body` with the base address of `array`, or nil without one.
private func withOptionalBuffer<Element, R>(
  _ array: inout [Element]?, _ body: (UnsafePointer<Element>?) -> R
) -> R {
  guard array != nil else { return body(nil) }
  return array!.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// Limits set on a worker process (with `prlimit(2)`) before it gets any
/// task, as both the soft and the hard limit, so the task cannot raise them;
/// what the task starts inherits them. `nil`: the limit the worker inherits.
/// A limit above this program's own hard limit makes the start fail
/// (`EPERM`). In a ``WorkerPool`` they apply to each worker for its whole
/// life: the CPU time adds up over the tasks it runs.
public struct ResourceLimits: Sendable, Equatable {
  /// `RLIMIT_AS`, in bytes: allocations beyond it fail (`malloc` returns
  /// NULL, which most Swift code turns into a crash: a task that wants a
  /// clean error allocates such buffers itself and checks).
  public var addressSpace: Int?
  /// `RLIMIT_CPU`, in whole seconds: SIGXCPU once used, SIGKILL a second
  /// later.
  public var cpuTime: Duration?
  /// `RLIMIT_NOFILE`: descriptors numbered at or above it cannot be opened.
  public var openFiles: Int?

  /// Limits; each `nil` leaves that one as inherited.
  public init(addressSpace: Int? = nil, cpuTime: Duration? = nil, openFiles: Int? = nil) {
    self.addressSpace = addressSpace
    self.cpuTime = cpuTime
    self.openFiles = openFiles
  }

  var cValue: procord_resource_limits_t {
    var limits = procord_resource_limits_t()
    limits.address_space_bytes = UInt64(max(0, addressSpace ?? 0))
    limits.cpu_seconds = UInt64(max(0, cpuTime.map { ($0 + .nanoseconds(999_999_999)).components.seconds } ?? 0))
    limits.open_files = UInt64(max(0, openFiles ?? 0))
    return limits
  }
}

/// The running executable's real path, read once from `/proc/self/exe`.
let executablePath: String = {
  var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
  let count = readlink("/proc/self/exe", &buffer, Int(PATH_MAX))
  guard count > 0 else { return CommandLine.arguments[0] }
  return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}()
