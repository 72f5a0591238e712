import CProcord
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A worker server: serves tasks to main programs over TCP.
///
/// Usually started through the command line (`--procord-server`, see
/// ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``); ``run(tasks:options:)``
/// is the API form, with an accept filter and a keep-running predicate like
/// the original's `run_listen`.
///
/// Each connection is served by a worker process started by exec from this
/// executable (never a fork of the server), handed the connection over a
/// Unix socket; a few workers are kept ready. A task that crashes its worker
/// affects nothing else, and a client that disconnects mid-task gets its
/// task killed.
///
/// Anyone who can reach the port can run tasks unless
/// ``Options/security`` asks for TLS (with client certificates, for mutual
/// TLS) or a shared secret: the server process then runs TLS and
/// authentication for each connection, within ``Options/handshakeTimeout``,
/// and refuses a peer that fails them (with a warning naming it) before it
/// reaches a worker. Without security, keep the server on loopback or a
/// trusted network; listening elsewhere logs a warning.
public enum Server {
  /// How a server listens and serves.
  public struct Options: Sendable {
    /// Where to listen: an IPv4 or IPv6 literal or a DNS name. The default
    /// is the loopback address, so that a server is never exposed by
    /// accident; `0.0.0.0` or `::` must be asked for.
    public var hostname: String = "127.0.0.1"
    /// The TCP port (0: any free port, named in the log).
    public var port: Int = 1111
    /// Connections served at once; more wait in the listening socket's
    /// backlog (neither refused nor dropped).
    public var maxSimultaneousTasks: Int = Int(PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS)
    /// Workers kept started and idle, so that a client does not wait for a
    /// process to start.
    public var prestartedWorkers: Int = 2
    /// `SO_REUSEADDR` on the listening socket.
    public var reuseAddress: Bool = false
    /// Serve each connection inside the server process, one at a time.
    public var dontFork: Bool = false
    /// On SIGTERM or SIGINT, how long running tasks may take to finish
    /// before they are killed and the server exits.
    public var drainTimeout: Duration = .seconds(30)
    /// How long a client may stay silent while the server waits for a
    /// task's frames; `nil`: no limit.
    public var readTimeout: Duration? = .seconds(30)
    /// The largest frame body accepted (0: ``Limits/maxMessageSize``).
    public var maxMessageSize: Int = 0
    /// How to secure connections: a server's ``ConnectionSecurity`` (TLS, a
    /// shared secret, or both); `nil`: none, as in the original. TLS cannot
    /// be combined with ``dontFork``.
    public var security: ConnectionSecurity?
    /// How long a client may take to finish TLS and authentication before
    /// it is refused; only with ``security``. Clients in this phase count
    /// toward ``maxSimultaneousTasks``, so this also frees the places held by
    /// silent peers.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Given a connecting peer's address (`host:port`), returns whether to
    /// serve it.
    public var acceptFilter: (@Sendable (String) -> Bool)?
    /// Asked after each connection; returning false stops the server as
    /// SIGTERM does.
    public var keepRunning: (@Sendable () -> Bool)?
    /// Where the server logs: start and stop at `.info`, one line per
    /// connection (peer, task, answer, duration) at `.debug`.
    public var logger: Logger

    /// Options with the defaults above, logging to `logger` (by default a
    /// logger labelled `procord.server` at `.notice`: quiet).
    public init(logger: Logger? = nil) {
      if let logger {
        self.logger = logger
      } else {
        var quiet = Logger(label: "procord.server")
        quiet.logLevel = .notice
        self.logger = quiet
      }
    }
  }

  /// Runs a server until SIGTERM or SIGINT (or `keepRunning` returns false),
  /// lets running tasks finish, and returns.
  /// - Throws: ``ProcordError`` if it cannot listen (a log line says why);
  ///   ``SecurityConfigurationError`` if ``Options/security`` is a client's.
  public static func run(tasks: [any ServableTask], options: Options) throws {
    if let security = options.security, security.role != .server {
      throw SecurityConfigurationError(
        code: PROCORD_EINVAL.rawValue,
        message: "a server's security must be a server's; make it with ConnectionSecurity(for: .server, ...)")
    }
    let hooks = Hooks(options)
    var workerArguments = [executablePath, "--procord-worker", "--procord-handoff-fd", "3"]
    if let readTimeout = options.readTimeout {
      workerArguments += ["--procord-read-timeout", String(milliseconds(readTimeout))]
    }
    if options.maxMessageSize > 0 {
      workerArguments += ["--procord-max-message-size", String(options.maxMessageSize)]
    }
    let worker = WorkerProgram(path: "/proc/self/exe", arguments: Array(workerArguments.dropFirst()), channel: .socket)
    let hostname = strdup(options.hostname)
    defer { free(hostname) }
    let error = Worker.withTaskTable(tasks) { table in
      worker.withSpawnOptions(includingSocketOption: false) { spawn in
        var c = procord_server_options_t()
        c.hostname = UnsafePointer(hostname)
        c.port = Int32(options.port)
        c.reuse_address = options.reuseAddress ? 1 : 0
        c.listen_fd = -1
        c.max_simultaneous_tasks = Int32(options.maxSimultaneousTasks)
        c.prestarted_workers = Int32(options.prestartedWorkers)
        c.dont_fork = options.dontFork ? 1 : 0
        c.tasks = table.baseAddress
        c.task_count = table.count
        c.worker = spawn
        c.handle_signals = 1
        c.drain_timeout_ms = milliseconds(options.drainTimeout)
        c.read_timeout_ms = milliseconds(options.readTimeout)
        c.accept_filter = options.acceptFilter == nil ? nil : acceptFilter
        c.keep_running = options.keepRunning == nil ? nil : keepRunning
        c.log = log
        c.context = Unmanaged.passUnretained(hooks).toOpaque()
        // The hooks keep options.security, and so its reference, alive.
        c.security = options.security?.pointer
        c.handshake_timeout_ms = milliseconds(options.handshakeTimeout)
        c.max_message_size = options.maxMessageSize > 0 ? options.maxMessageSize : 0
        return withExtendedLifetime(hooks) { procord_server_run(&c) }
      }
    }
    if error != 0 { throw ProcordError(code: error, operation: "running a server") }
  }
}

/// The Swift closures and logger the C server calls back into.
private final class Hooks: Sendable {
  let options: Server.Options
  init(_ options: Server.Options) { self.options = options }
}

private func hooks(_ context: UnsafeMutableRawPointer?) -> Hooks {
  Unmanaged<Hooks>.fromOpaque(context!).takeUnretainedValue()
}

private let log: procord_log_fn = { context, level, message in
  guard let message else { return }
  let swiftLevel: Logger.Level
  switch level {
  case PROCORD_LOG_ERROR: swiftLevel = .error
  case PROCORD_LOG_WARNING: swiftLevel = .warning
  case PROCORD_LOG_INFO: swiftLevel = .info
  default: swiftLevel = .debug
  }
  hooks(context).options.logger.log(level: swiftLevel, "\(String(cString: message))")
}

private let acceptFilter: procord_accept_filter_fn = { context, address, length in
  guard let address, let filter = hooks(context).options.acceptFilter else { return 1 }
  var text = [CChar](repeating: 0, count: 128)
  procord_address_string(address, length, &text, text.count)
  let peer = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  return filter(peer) ? 1 : 0
}

private let keepRunning: procord_keep_running_fn = { context in
  (hooks(context).options.keepRunning?() ?? true) ? 1 : 0
}
