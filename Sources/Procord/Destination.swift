import Synchronization

/// Where a task is delegated: this program started again as a worker,
/// another worker program, a worker server, or a pool. Every call that
/// delegates takes one as its `to:` argument.
///
/// ```swift
/// try await resize.run(image)                                   // .thisProgram
/// try await resize.run(image, to: .program(WorkerProgram(path: "/usr/bin/resizer")))
/// try await resize.run(image, to: .server(host: "workers.internal"))
/// try await resize.run(image, to: pool)                         // a WorkerPool
/// ```
///
/// A ``WorkerProgram``, a ``RemoteServer`` and a ``WorkerPool`` are
/// destinations themselves, so `to: program`, `to: server` and `to: pool`
/// work too.
public struct Destination: DelegationDestination, CustomStringConvertible {
  /// Where it goes; `nil` for ``thisProgram``, resolved at each delegation.
  let fixed: Route?

  /// The destination itself.
  public var destination: Destination { self }

  /// The program, `host:port` or pool it names.
  public var description: String { route.workerName }

  /// Where a delegation goes now.
  var route: Route { fixed ?? Self.commandLineChoice.withLock { $0 } ?? .local(.current) }

  /// Set by ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)`` from
  /// a main program's `--procord-hostname`/`--procord-port`.
  private static let commandLineChoice = Mutex<Route?>(nil)

  static func setFromCommandLine(_ route: Route) {
    commandLineChoice.withLock { $0 = route }
  }
}

/// Anything a task can be delegated to: a ``Destination``, or the
/// ``WorkerProgram``, ``RemoteServer`` or ``WorkerPool`` it would name.
public protocol DelegationDestination: Sendable {
  /// The destination this stands for.
  var destination: Destination { get }
}

extension WorkerProgram: DelegationDestination {
  /// A new process of this program for each task.
  public var destination: Destination { .program(self) }
}

extension RemoteServer: DelegationDestination {
  /// This server.
  public var destination: Destination { .server(self) }
}

extension WorkerPool: DelegationDestination {
  /// The next free worker of this pool.
  public var destination: Destination { .pool(self) }
}

// The destinations, as `to: .thisProgram`, `to: .server(host: "x")`...
// wherever a destination is taken, and as `Destination.thisProgram`.
extension DelegationDestination where Self == Destination {
  /// This executable, started again as a worker in a process of its own
  /// (its `main` must begin with ``Worker/main(tasks:arguments:maxMessageSize:isolation:_:)``
  /// or ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``). When
  /// the program was started with `--procord-hostname HOST` (and
  /// `--procord-port PORT`) before its own arguments, as the original
  /// library allows, it is that worker server instead.
  public static var thisProgram: Destination { Destination(fixed: nil) }

  /// A new process of the worker program described, for each task.
  public static func program(_ program: WorkerProgram) -> Destination { Destination(fixed: .local(program)) }

  /// A new process of any worker program for each task, such as one
  /// written with the original OCaml library.
  /// - Parameters:
  ///   - path: the executable: a path, or a bare name found in `PATH`.
  ///   - arguments: its arguments; `--procord-worker` by default, which
  ///     puts a Procord worker in the original stdin/stdout mode.
  public static func program(_ path: String, arguments: [String] = ["--procord-worker"]) -> Destination {
    Destination(fixed: .local(WorkerProgram(path: path, arguments: arguments)))
  }

  /// A worker server, over TCP; see ``RemoteServer`` for time limits and
  /// security.
  public static func server(_ server: RemoteServer) -> Destination { Destination(fixed: .remote(server)) }

  /// The worker server at `host:port`, over plain TCP with no time limits;
  /// use ``server(_:)`` with a ``RemoteServer`` for more.
  public static func server(host: String, port: Int = 1111) -> Destination {
    Destination(fixed: .remote(RemoteServer(host: host, port: port)))
  }

  /// The next free worker of a pool.
  public static func pool(_ pool: WorkerPool) -> Destination { Destination(fixed: .pool(pool)) }
}
