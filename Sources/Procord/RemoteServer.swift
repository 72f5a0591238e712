import CProcord

/// A worker server to delegate tasks to, over TCP.
///
/// Start one with `--procord-server` (see ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``),
/// or use any server that speaks the Procord protocol, the original
/// library's included.
public struct RemoteServer: Sendable, Equatable, CustomStringConvertible {
  /// A DNS name, or an IPv4 or IPv6 literal (without brackets). Names are
  /// resolved on Procord's loop thread without blocking it (no thread is
  /// started for a lookup), so a slow resolver never stalls other
  /// delegations: `localhost` is the loopback, other names come from
  /// `/etc/hosts`, then from the name servers of `/etc/resolv.conf`.
  public var host: String
  /// The server's TCP port; 1111 by default, as in the original library.
  public var port: Int
  /// How long resolving, connecting, and TLS and authentication when
  /// ``security`` asks for them, may take before the delegation ends with
  /// ``DisconnectionCause/timedOut(_:)``; `nil` (the default, as in the
  /// original): no limit beyond the system's.
  public var connectTimeout: Duration?
  /// How long the server may stay silent (no byte received) before the
  /// delegation ends with ``DisconnectionCause/timedOut(_:)``; `nil` (the
  /// default, as in the original): no limit. Set it above the longest task.
  public var idleTimeout: Duration?
  /// How to secure the connections to the server: a client's
  /// ``ConnectionSecurity`` (TLS, a shared secret, or both); `nil` (the
  /// default, as in the original): plain TCP, no authentication. A failure
  /// ends the delegation with ``DisconnectionCause/tlsFailed(reason:)`` or
  /// ``DisconnectionCause/authenticationFailed(reason:)``.
  public var security: ConnectionSecurity?

  /// Describes a server.
  public init(
    host: String, port: Int = 1111, connectTimeout: Duration? = nil, idleTimeout: Duration? = nil,
    security: ConnectionSecurity? = nil
  ) {
    self.host = host
    self.port = port
    self.connectTimeout = connectTimeout
    self.idleTimeout = idleTimeout
    self.security = security
  }

  /// ``security``, checked to be a client's: a server's would fail every
  /// connection.
  func clientSecurity() throws(SecurityConfigurationError) -> ConnectionSecurity? {
    guard let security, security.role != .client else { return security }
    throw SecurityConfigurationError(
      code: PROCORD_EINVAL.rawValue,
      message: "the security of the server \(self) is a server's; make it with ConnectionSecurity(for: .client, ...)")
  }

  /// `host:port`, with brackets around an IPv6 literal.
  public var description: String {
    host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
  }
}
