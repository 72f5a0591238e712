import CProcord

/// A worker server's figures, kept up to date by the server while it runs
/// (give it in ``Server/Options/statistics``) and readable from any thread.
///
/// ```swift
/// let statistics = ServerStatistics()
/// var options = Server.Options()
/// options.statistics = statistics
/// // on another thread, while Server.run(tasks:options:) runs:
/// print(statistics.current.tasksAnswered, statistics.current.taskTimeouts)
/// ```
public final class ServerStatistics: @unchecked Sendable {
  // Written by the server's thread with relaxed atomic stores, read with
  // atomic loads (procord_server_stats_read): never torn.
  let storage: UnsafeMutablePointer<procord_server_stats_t>

  /// Figures all zero, until a server keeps them.
  public init() {
    storage = .allocate(capacity: 1)
    storage.initialize(to: procord_server_stats_t())
  }

  deinit { storage.deallocate() }

  /// The figures now.
  public var current: Figures {
    var copy = procord_server_stats_t()
    procord_server_stats_read(storage, &copy)
    return Figures(copy)
  }

  /// A server's figures at one moment. Counters only grow; the `...Now`
  /// figures go up and down.
  public struct Figures: Sendable, Equatable {
    /// Connections accepted (before the gate, if any).
    public var connectionsAccepted: Int
    /// Tasks whose answer was carried back to their client.
    public var tasksAnswered: Int
    /// New connections refused at ``Server/Options/maxConnections`` (none idle to close).
    public var refusedAtMaxConnections: Int
    /// New connections refused at ``Server/Options/maxConnectionsPerPeer``.
    public var refusedAtPeerConnections: Int
    /// Idle connections closed to make way for new ones.
    public var evictedIdle: Int
    /// Connections closed after ``Server/Options/idleTimeout``.
    public var idleTimeouts: Int
    /// Connections dropped because a task did not arrive in time.
    public var taskTimeouts: Int
    /// Connections dropped because an answer was not taken in time.
    public var answerTimeouts: Int
    /// Ill-formed, unexpected or too long frames, answered with `E`.
    public var protocolErrors: Int
    /// Tasks of a name the server does not serve, answered `E0`.
    public var unknownTasks: Int
    /// Clients that went away while their task waited or ran.
    public var clientsGoneMidTask: Int
    /// Workers that ended during a task (a crash, a kill).
    public var workersLostMidTask: Int
    /// Worker processes started.
    public var workersStarted: Int
    /// Peers refused by TLS or the shared secret (failed, or too slow).
    public var handshakesRefused: Int
    /// Client connections open now.
    public var connectionsNow: Int
    /// Tasks running now.
    public var tasksRunningNow: Int
    /// Whole tasks waiting for a worker now.
    public var tasksWaitingNow: Int
    /// Bytes of tasks read and not yet handed to a worker now.
    public var taskBytesBufferedNow: Int
    /// Bytes of answers queued for clients and not yet taken now.
    public var answerBytesBufferedNow: Int

    init(_ c: procord_server_stats_t) {
      connectionsAccepted = Int(c.connections_accepted)
      tasksAnswered = Int(c.tasks_answered)
      refusedAtMaxConnections = Int(c.refused_max_connections)
      refusedAtPeerConnections = Int(c.refused_peer_connections)
      evictedIdle = Int(c.evicted_idle)
      idleTimeouts = Int(c.idle_timeouts)
      taskTimeouts = Int(c.task_timeouts)
      answerTimeouts = Int(c.answer_timeouts)
      protocolErrors = Int(c.protocol_errors)
      unknownTasks = Int(c.unknown_tasks)
      clientsGoneMidTask = Int(c.clients_gone_mid_task)
      workersLostMidTask = Int(c.workers_lost_mid_task)
      workersStarted = Int(c.workers_started)
      handshakesRefused = Int(c.handshakes_refused)
      connectionsNow = Int(c.connections_now)
      tasksRunningNow = Int(c.tasks_running_now)
      tasksWaitingNow = Int(c.tasks_waiting_now)
      taskBytesBufferedNow = Int(c.task_bytes_buffered_now)
      answerBytesBufferedNow = Int(c.answer_bytes_buffered_now)
    }
  }
}
