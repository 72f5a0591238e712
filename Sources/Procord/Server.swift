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
/// The server reads each client's whole task itself, then hands it to a
/// worker process started by exec from this executable (never a fork of the
/// server) and carries the answer back; a few workers are kept ready. A task
/// slot is for a task, not a connection: clients that are idle, or slow to
/// send, hold no worker. Whole tasks wait their turn oldest first, one per
/// connection at a time, so a client that sends task after task goes behind
/// the others after each one. Every client is bounded in time (a task must
/// arrive, and an answer be taken, at a minimum rate) and in number
/// (``Options/maxConnections``, optionally per address). A task that
/// crashes its worker affects nothing else, and a client that disconnects
/// mid-task gets its task killed. See docs/SERVER.md.
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
    /// Tasks run at once (worker processes at most); whole tasks beyond
    /// wait their turn, oldest first.
    public var maxSimultaneousTasks: Int = Int(PROCORD_DEFAULT_MAX_SIMULTANEOUS_TASKS)
    /// Client connections held at once (those in TLS or authentication
    /// too). At the limit, a new connection closes the one idle longest; if
    /// none is idle it is refused with an error naming the limit. The
    /// process's soft descriptor limit is raised to fit them if it can be;
    /// if not, this is lowered, with a log line.
    public var maxConnections: Int = Int(PROCORD_DEFAULT_MAX_CONNECTIONS)
    /// Connections one client address (IP) may hold; `nil`: no limit.
    public var maxConnectionsPerPeer: Int?
    /// Tasks one client address may have running at once; its other tasks
    /// wait while other addresses' run. `nil`: no limit.
    public var maxTasksPerPeer: Int?
    /// How long a connection may stay idle between tasks (and before its
    /// first); `nil`: no limit.
    public var idleTimeout: Duration? = .milliseconds(Int64(PROCORD_DEFAULT_IDLE_TIMEOUT_MS))
    /// How long a task may take to arrive, from its first byte to its last,
    /// plus one second per ``minReceiveRate`` bytes received (so a big task
    /// sent steadily is never cut off); `nil`: no limit.
    public var taskTimeout: Duration? = .milliseconds(Int64(PROCORD_DEFAULT_TASK_TIMEOUT_MS))
    /// How long a client may take to take its answer, plus one second per
    /// ``minSendRate`` bytes of it; `nil`: no limit.
    public var answerTimeout: Duration? = .milliseconds(Int64(PROCORD_DEFAULT_ANSWER_TIMEOUT_MS))
    /// Bytes per second a big task must keep arriving at (see ``taskTimeout``).
    public var minReceiveRate: Int = Int(PROCORD_DEFAULT_MIN_RATE)
    /// Bytes per second a big answer must keep being taken at (see ``answerTimeout``).
    public var minSendRate: Int = Int(PROCORD_DEFAULT_MIN_RATE)
    /// Bytes of tasks read and not yet handed to a worker, all clients
    /// together; past it, tasks above 64 KiB wait to be read (their time
    /// limit stopped meanwhile). 0: 256 MiB, or twice ``maxMessageSize``.
    public var maxBufferedTaskBytes: Int = 0
    /// Bytes of answers queued for clients and not yet taken, all clients
    /// together; past it, no task is handed to a worker (and running tasks'
    /// prints wait) until clients take theirs or are dropped at their
    /// ``answerTimeout``. 0: as ``maxBufferedTaskBytes``.
    public var maxBufferedAnswerBytes: Int = 0
    /// Where the server keeps its figures up to date while it runs (read
    /// them from any thread); `nil`: not kept for you.
    public var statistics: ServerStatistics?
    /// Workers kept started and idle, so that a client does not wait for a
    /// process to start.
    public var prestartedWorkers: Int = 2
    /// `SO_REUSEADDR` on the listening socket.
    public var reuseAddress: Bool = false
    /// Run each task inside the server process (on a thread of its own),
    /// one at a time, instead of in worker processes.
    public var dontFork: Bool = false
    /// On SIGTERM or SIGINT, how long running tasks may take to finish
    /// before they are killed and the server exits.
    public var drainTimeout: Duration = .seconds(30)
    /// How long a client may stay silent in the middle of a task, or
    /// between tasks (on top of ``taskTimeout`` and ``idleTimeout``);
    /// `nil`: no such limit.
    public var readTimeout: Duration? = .seconds(30)
    /// The largest frame body accepted (0: ``Limits/maxMessageSize``).
    public var maxMessageSize: Int = 0
    /// How to secure connections: a server's ``ConnectionSecurity`` (TLS, a
    /// shared secret, or both); `nil`: none, as in the original.
    public var security: ConnectionSecurity?
    /// How long a client may take to finish TLS and authentication before
    /// it is refused; only with ``security``. Clients in this phase count
    /// toward ``maxConnections``, never toward the task slots.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Given a connecting peer's address (`host:port`), returns whether to
    /// serve it.
    public var acceptFilter: (@Sendable (String) -> Bool)?
    /// Asked after each task and each connection's end; returning false
    /// stops the server as SIGTERM does.
    public var keepRunning: (@Sendable () -> Bool)?
    /// Where the server logs: start and stop at `.info`, one line per task
    /// (peer, task, answer, duration) at `.debug`, each refusal, drop or
    /// time-out (at most one line a second per kind, counting the others) at
    /// `.info` or `.warning`.
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
      // Its workers' crashes keep the Swift backtracer's full report: the
      // server's log is the only place they show (no client sees a tail).
      worker.withSpawnOptions(includingSocketOption: false, quietingCrashes: false) { spawn in
        var c = procord_server_options_t()
        procord_server_options_init(&c)
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
        c.max_connections = Int32(clamping: max(0, options.maxConnections))
        c.max_connections_per_peer = Int32(clamping: max(0, options.maxConnectionsPerPeer ?? 0))
        c.max_tasks_per_peer = Int32(clamping: max(0, options.maxTasksPerPeer ?? 0))
        c.idle_timeout_ms = serverTimeLimit(options.idleTimeout)
        c.task_timeout_ms = serverTimeLimit(options.taskTimeout)
        c.answer_timeout_ms = serverTimeLimit(options.answerTimeout)
        c.min_receive_rate = Int32(clamping: max(0, options.minReceiveRate))
        c.min_send_rate = Int32(clamping: max(0, options.minSendRate))
        c.max_buffered_task_bytes = max(0, options.maxBufferedTaskBytes)
        c.max_buffered_answer_bytes = max(0, options.maxBufferedAnswerBytes)
        c.stats = options.statistics?.storage
        return withExtendedLifetime(hooks) { procord_server_run(&c) }
      }
    }
    if error != 0 { throw ProcordError(cError: error, operation: "running a server") }
  }
}

/// A time limit as the server's C options take it: nil is none (-1), and
/// any limit is at least 1 ms (0 would mean the default).
private func serverTimeLimit(_ duration: Duration?) -> Int32 {
  guard let duration else { return -1 }
  return Int32(clamping: max(1, wholeMilliseconds(duration)))
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
