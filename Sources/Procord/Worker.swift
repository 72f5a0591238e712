import CProcord
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The worker side: serves tasks to a main program.
public enum Worker {
  /// A command line whose `--procord-*` options could not be understood.
  public struct CommandLineError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was wrong, in English.
    public let description: String
  }

  /// Serves `tasks` and exits if the command line asks this program to be a
  /// worker; returns at once otherwise, so call it first thing in `main`.
  ///
  /// The options must come first, right after the program's name, as Procord
  /// passes them when it starts a worker; reading stops at the first
  /// argument that is not one of them, and the rest is left alone. Options:
  /// - `--procord-worker`: serve one task on stdin/stdout, in the original
  ///   library's mode (stdout is pointed at stderr meanwhile, so the task's
  ///   prints cannot corrupt the protocol), then exit.
  /// - `--procord-socket-fd N` with `--procord-worker`: serve tasks on
  ///   descriptor N (this project's mode, used when a Procord for Swift
  ///   program delegates to itself), one after the other (`0R`), until the
  ///   main program closes it.
  /// - `--procord-input-file PATH`, `--procord-output-file PATH` with
  ///   `--procord-worker`: read the frames from a file and write the answer
  ///   to a file, instead of stdin and stdout.
  /// - `--procord-max-message-size N`: the largest frame body accepted.
  /// - `--procord-server`, `--procord-hostname`, `--procord-port`,
  ///   `--procord-max-simultaneous-tasks`, `--procord-reuse-address`,
  ///   `--procord-dont-fork`: worker servers (see ``Server``).
  /// - Without `--procord-server`, `--procord-hostname H` (and
  ///   `--procord-port P`) make this a main program whose delegations go
  ///   to that server, and the function returns.
  /// - Security (docs/SECURITY.md), for a server and for a main program
  ///   that delegates to one:
  ///   - `--procord-tls`: TLS (implied by the options below); a main
  ///     program then trusts the system's CA store.
  ///   - `--procord-tls-cert PATH`, `--procord-tls-key PATH`: a server's
  ///     certificate and key (the key may be in the certificate's file); a
  ///     main program's client certificate.
  ///   - `--procord-tls-ca PATH`: a server's CA of client certificates; a
  ///     main program's CA of the server.
  ///   - `--procord-tls-require-client-cert`: a server requires client
  ///     certificates signed by its CA (mutual TLS).
  ///   - `--procord-tls-server-name NAME`: the name a main program checks in
  ///     the server's certificate instead of the host.
  ///   - `--procord-secret-file PATH` or `--procord-secret-env NAME`: a
  ///     shared secret (16 to 1024 bytes, one trailing newline dropped),
  ///     from a file or an environment variable, which is then removed from
  ///     the environment. Never from the command line (`--procord-secret`
  ///     is refused), where every user of the machine can read it.
  ///   - `--procord-handshake-timeout MS`: how long a server gives a client
  ///     to finish TLS and authentication (default 10000).
  ///
  ///   A server whose security options are wrong (a missing file, a key that
  ///   does not match, no certificate...) says why on stderr and exits with
  ///   status 2.
  ///
  /// In worker mode this never returns: the process exits with status 0 at a
  /// clean end (including a main program that went away), and 1 after a
  /// protocol error (answered with its `E` frame) or an I/O error (described
  /// on stderr).
  /// - Throws: ``CommandLineError`` for an unknown `--procord-` option or a
  ///   bad value, or, in a main program, security options that cannot be
  ///   used (the message says why).
  public static func runIfRequested(
    tasks: [any ServableTask], arguments: [String] = CommandLine.arguments,
    maxMessageSize: Int? = nil
  ) throws {
    let parsed = try ParsedCommandLine(arguments)
    var command = parsed.command
    if command.mode == PROCORD_MODE_NONE {
      // A main program: `--procord-hostname` sends its delegations to a server.
      if let host = command.hostname.map({ String(cString: $0) }) {
        let security: ConnectionSecurity?
        do {
          security = try ConnectionSecurity.fromCommand(parsed, role: .client)
        } catch {
          throw CommandLineError(description: error.message)
        }
        Destination.setFromCommandLine(
          .remote(RemoteServer(host: host, port: command.port >= 0 ? Int(command.port) : 1111, security: security)))
      }
      return
    }
    if command.mode == PROCORD_MODE_SERVER {
      runServer(tasks, parsed, maxMessageSize: maxMessageSize)
    }
    if let maxMessageSize, command.max_message_size == 0 { command.max_message_size = maxMessageSize }
    // An async body gets to see that its task must stop: its main program
    // cancels it with SIGTERM (then SIGKILL); a server's worker hears it
    // from its watchdog when the client goes (a SIGTERM to the whole
    // service must not stop its tasks: the server drains them).
    RunningTask.allowCancellation(bySIGTERM: command.handoff_fd <= 0)
    let result = withExtendedLifetime(parsed) {
      withTaskTable(tasks) { table in procord_worker_run(&command, table.baseAddress, table.count) }
    }
    // A protocol error was answered with its `E` frame: the main program
    // hears of it there, so only I/O errors are worth a line on stderr.
    if result < 0 && result > -4000 {
      writeStandardError("procord worker: \(String(cString: procord_strerror(result)))\n")
    }
    exit(result == 0 || result == PROCORD_EDISCONNECTED.rawValue ? 0 : 1)
  }

  /// The program's entry point: serves `tasks` and exits when the program
  /// was started as a worker; otherwise runs `body`, the main program,
  /// with its own arguments.
  ///
  /// ```swift
  /// let resize = ProcordTask<Image, Image>(name: "resize") { image in try await image.resized() }
  ///
  /// try await Worker.main(tasks: [resize]) { arguments in
  ///   for path in arguments {
  ///     let image = try await resize.run(Image(path: path))
  ///     ...
  ///   }
  /// }
  /// ```
  ///
  /// Because the main program's code lives in `body`, a worker can never
  /// run it: the mistake of delegating before serving, which would start
  /// copies of the program without end, cannot be written.
  ///
  /// - Parameters:
  ///   - tasks: the tasks a worker of this program serves.
  ///   - arguments: the command line; the process's by default.
  ///   - maxMessageSize: the largest input a worker accepts, in bytes, when
  ///     `--procord-max-message-size` does not say; `nil`: 64 MiB.
  ///   - isolation: where `body` runs: the caller's actor (the main actor
  ///     in top-level code and in an `@main` type's `main()`), so that it
  ///     may use the caller's state.
  ///   - body: the main program. Its argument is the command line without
  ///     the program's name and without the leading `--procord-*` options
  ///     (such as `--procord-hostname`, which sends delegations to a server).
  /// - Throws: ``CommandLineError`` for a wrong `--procord-*` option, and
  ///   whatever `body` throws.
  public static func main(
    tasks: [any ServableTask], arguments: [String] = CommandLine.arguments, maxMessageSize: Int? = nil,
    isolation: isolated (any Actor)? = #isolation, _ body: (_ arguments: [String]) async throws -> Void
  ) async throws {
    if try ParsedCommandLine(arguments).command.mode != PROCORD_MODE_NONE {
      // A worker, or a server: it serves on a thread of its own, and this
      // Swift task waits for ever (the process exits when serving ends), so
      // that the caller's actor, the main actor as a rule, stays free for
      // the task bodies that use it.
      await withCheckedContinuation { (parked: CheckedContinuation<Void, Never>) in
        ServingThread.start(parked: parked) {
          do {
            try runIfRequested(tasks: tasks, arguments: arguments, maxMessageSize: maxMessageSize)
          } catch {
            writeStandardError("procord: \(error)\n")
            exit(64)
          }
        }
      }
    }
    try runIfRequested(tasks: tasks, arguments: arguments, maxMessageSize: maxMessageSize)
    try await body(try programArguments(of: arguments))
  }

  /// The program's own arguments: the command line without the program's
  /// name and without the `--procord-*` options before them.
  ///
  /// ```
  /// app --procord-hostname workers.internal --procord-port 9000 in.txt out.txt
  /// ```
  /// gives `["in.txt", "out.txt"]`. Procord reads its options only before
  /// the program's own, so an argument of the program that starts with
  /// `--procord-` is the program's.
  /// - Throws: ``CommandLineError`` for a wrong `--procord-*` option.
  public static func programArguments(
    of arguments: [String] = CommandLine.arguments
  ) throws(CommandLineError) -> [String] {
    let first = Int(try ParsedCommandLine(arguments).command.first_argument)
    return first < arguments.count ? Array(arguments[first...]) : []
  }

  /// Serves `tasks` on the given descriptors until the stream ends, and
  /// returns (it does not exit). With `reusable`, it answers task after task
  /// (`0R`); otherwise exactly one, like an original worker.
  ///
  /// It blocks the calling thread, and an `async` task body runs on Swift
  /// concurrency while it waits: call it from a thread of your own, not
  /// from a Swift task (which would hold one of the few threads the bodies
  /// need).
  /// - Throws: ``ProcordError`` for a protocol error (after answering it with
  ///   an `E` frame) or a failed read or write.
  public static func serve(
    _ tasks: [any ServableTask], readDescriptor: Int32, writeDescriptor: Int32,
    reusable: Bool = true, maxMessageSize: Int = 0
  ) throws {
    let result = withTaskTable(tasks) { table in
      var options = procord_worker_options_t()
      procord_worker_options_init(&options)
      options.read_fd = readDescriptor
      options.write_fd = writeDescriptor
      options.tasks = table.baseAddress
      options.task_count = table.count
      options.reusable = reusable ? 1 : 0
      options.max_message_size = maxMessageSize
      return procord_worker_serve(&options)
    }
    if result != 0 { throw ProcordError(cError: result, operation: "serving tasks") }
  }

  /// Builds the C task table around `tasks` for the duration of `body`.
  static func withTaskTable(
    _ tasks: [any ServableTask], _ body: (UnsafeBufferPointer<procord_worker_task_t>) -> Int32
  ) -> Int32 {
    let boxes = tasks.map { TaskBox($0) }
    let names = tasks.map { strdup($0.name) }
    defer { names.forEach { free($0) } }
    let table = zip(boxes, names).map { box, name in
      procord_worker_task_t(
        name: UnsafePointer(name), run: runTask, context: Unmanaged.passUnretained(box).toOpaque())
    }
    return withExtendedLifetime(boxes) { table.withUnsafeBufferPointer(body) }
  }
}

/// The command line's bounds on a server's clients (docs/SERVER.md), over
/// the defaults of `options`: a time limit given as 0 is none.
private func applyClientBounds(_ command: procord_worker_command_t, to options: inout Server.Options) {
  func limit(_ milliseconds: Int32) -> Duration? { milliseconds == 0 ? nil : .milliseconds(milliseconds) }
  if command.max_connections > 0 { options.maxConnections = Int(command.max_connections) }
  if command.max_connections_per_peer > 0 { options.maxConnectionsPerPeer = Int(command.max_connections_per_peer) }
  if command.max_tasks_per_peer > 0 { options.maxTasksPerPeer = Int(command.max_tasks_per_peer) }
  if command.idle_timeout_ms >= 0 { options.idleTimeout = limit(command.idle_timeout_ms) }
  if command.task_timeout_ms >= 0 { options.taskTimeout = limit(command.task_timeout_ms) }
  if command.answer_timeout_ms >= 0 { options.answerTimeout = limit(command.answer_timeout_ms) }
  if command.min_receive_rate > 0 { options.minReceiveRate = Int(command.min_receive_rate) }
  if command.min_send_rate > 0 { options.minSendRate = Int(command.min_send_rate) }
  if command.max_buffered_task_bytes > 0 { options.maxBufferedTaskBytes = Int(command.max_buffered_task_bytes) }
  if command.max_buffered_answer_bytes > 0 { options.maxBufferedAnswerBytes = Int(command.max_buffered_answer_bytes) }
}

/// `--procord-server`: serves until SIGTERM or SIGINT, then exits 0.
private func runServer(
  _ tasks: [any ServableTask], _ parsed: ParsedCommandLine, maxMessageSize: Int?
) -> Never {
  let command = parsed.command
  var options = Server.Options()
  if let host = command.hostname { options.hostname = String(cString: host) }
  if command.port >= 0 { options.port = Int(command.port) }
  if command.max_simultaneous_tasks > 0 { options.maxSimultaneousTasks = Int(command.max_simultaneous_tasks) }
  options.reuseAddress = command.reuse_address != 0
  options.dontFork = command.dont_fork != 0
  if command.drain_timeout_ms >= 0 { options.drainTimeout = .milliseconds(command.drain_timeout_ms) }
  if command.read_timeout_ms >= 0 {
    options.readTimeout = command.read_timeout_ms == 0 ? nil : .milliseconds(command.read_timeout_ms)
  }
  options.maxMessageSize = command.max_message_size > 0 ? Int(command.max_message_size) : maxMessageSize ?? 0
  do {
    options.security = try ConnectionSecurity.fromCommand(parsed, role: .server)
  } catch {
    writeStandardError("procord server: \(error.message)\n")
    exit(2)
  }
  if command.handshake_timeout_ms >= 0 { options.handshakeTimeout = .milliseconds(command.handshake_timeout_ms) }
  applyClientBounds(command, to: &options)
  let levels: [Logger.Level] = [.error, .warning, .info, .debug]
  if command.log_level >= 0 {
    var logger = Logger(label: "procord.server")
    logger.logLevel = levels[Int(command.log_level)]
    options.logger = logger
  }
  do {
    try Server.run(tasks: tasks, options: options)
    exit(0)
  } catch {
    writeStandardError("procord server: \(error)\n")
    exit(1)
  }
}

/// The `--procord-*` options of a command line, parsed by the C core, with
/// the C strings they point into.
final class ParsedCommandLine {
  let command: procord_worker_command_t
  private let strings: [UnsafeMutablePointer<CChar>?]

  init(_ arguments: [String]) throws(Worker.CommandLineError) {
    strings = arguments.map { strdup($0) }
    var command = procord_worker_command_t()
    var message = [CChar](repeating: 0, count: 256)
    let argv = strings.map { UnsafePointer($0) }
    let error = procord_worker_parse_arguments(Int32(argv.count), argv, &command, &message, 256)
    self.command = command
    if error != 0 {
      let text = message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
      throw Worker.CommandLineError(description: String(decoding: text, as: UTF8.self))
    }
  }

  deinit { strings.forEach { free($0) } }
}

/// Writes to descriptor 2 directly: no stdio buffer, no shared `FILE *`.
func writeStandardError(_ text: String) {
  var bytes = Array(text.utf8)[...]
  while !bytes.isEmpty {
    let written = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    if written < 0 && errno == EINTR { continue }
    if written <= 0 { return }
    bytes = bytes.dropFirst(written)
  }
}

/// The thread `Worker.main` serves on; it ends the process when serving ends.
private final class ServingThread: @unchecked Sendable {
  let serve: () -> Void
  /// Kept, never resumed: the Swift task that waits on it waits until exit.
  let parked: CheckedContinuation<Void, Never>

  private init(serve: @escaping () -> Void, parked: CheckedContinuation<Void, Never>) {
    self.serve = serve
    self.parked = parked
  }

  static func start(parked: CheckedContinuation<Void, Never>, serve: @escaping () -> Void) {
    let context = Unmanaged.passRetained(ServingThread(serve: serve, parked: parked)).toOpaque()
    var thread = pthread_t()
    let error = pthread_create(
      &thread, nil,
      { context in
        Unmanaged<ServingThread>.fromOpaque(context!).takeUnretainedValue().serve()
        exit(0)
      }, context)
    if error != 0 {
      writeStandardError("procord: cannot start the thread that serves tasks: errno \(error)\n")
      exit(70)
    }
  }
}
