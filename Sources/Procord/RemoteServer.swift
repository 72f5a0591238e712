/// A worker server to delegate tasks to, over TCP.
///
/// Start one with `--procord-server` (see ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``),
/// or use any server that speaks the Procord protocol, the original
/// library's included.
public struct RemoteServer: Sendable, Equatable, CustomStringConvertible {
  /// A DNS name, or an IPv4 or IPv6 literal (without brackets). Names are
  /// resolved off Procord's loop thread, so a slow resolver never stalls
  /// other delegations.
  public var host: String
  /// The server's TCP port; 1111 by default, as in the original library.
  public var port: Int
  /// How long resolving and connecting may take before the delegation ends
  /// with ``DisconnectionCause/timedOut(_:)``; `nil` (the default, as in the
  /// original): no limit beyond the system's.
  public var connectTimeout: Duration?
  /// How long the server may stay silent (no byte received) before the
  /// delegation ends with ``DisconnectionCause/timedOut(_:)``; `nil` (the
  /// default, as in the original): no limit. Set it above the longest task.
  public var idleTimeout: Duration?

  /// Describes a server.
  public init(host: String, port: Int = 1111, connectTimeout: Duration? = nil, idleTimeout: Duration? = nil) {
    self.host = host
    self.port = port
    self.connectTimeout = connectTimeout
    self.idleTimeout = idleTimeout
  }

  /// `host:port`, with brackets around an IPv6 literal.
  public var description: String {
    host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
  }
}
