import CProcord

#if canImport(Glibc)
import Glibc
#endif

// TLS and shared-secret security on the connections between main programs
// and worker servers (docs/SECURITY.md): the Swift face of
// procord/security.h.

/// The TLS side of a ``ConnectionSecurity``: PEM files, loaded and checked
/// when the security is made, so that a mistake shows at start rather than
/// at the first connection.
///
/// TLS 1.2 at least, 1.3 preferred. A client verifies the server's
/// certificate against ``trustedCAFile`` (or the system's trust store) and
/// the host it connects to (or ``serverName``); a server can require client
/// certificates signed by its ``trustedCAFile`` (mutual TLS).
public struct TLSConfiguration: Sendable, Equatable {
  /// This side's certificate, then any intermediate CAs. Required for a
  /// server; for a client, the certificate sent to a server that requires
  /// one.
  public var certificateFile: String?
  /// The certificate's private key; `nil`: read from ``certificateFile``.
  public var privateKeyFile: String?
  /// The CAs the peer's certificate must chain to. A client verifies the
  /// server with it (`nil`: the system's trust store); a server verifies
  /// client certificates with it.
  public var trustedCAFile: String?
  /// A server's: refuse a client that presents no certificate signed by
  /// ``trustedCAFile`` (which it then needs). Ignored by a client.
  public var requiresClientCertificate: Bool
  /// A client's: the DNS name or IP address the server's certificate must
  /// carry; `nil`: the host connected to (``RemoteServer/host``). Ignored
  /// by a server.
  public var serverName: String?

  /// Describes TLS with these files; all `nil` is a client that trusts the
  /// system's CA store.
  public init(
    certificateFile: String? = nil, privateKeyFile: String? = nil, trustedCAFile: String? = nil,
    requiresClientCertificate: Bool = false, serverName: String? = nil
  ) {
    self.certificateFile = certificateFile
    self.privateKeyFile = privateKeyFile
    self.trustedCAFile = trustedCAFile
    self.requiresClientCertificate = requiresClientCertificate
    self.serverName = serverName
  }

  /// A client's TLS: trusts the CAs of `caFile` (`nil`: the system's store),
  /// presents `certificate` (with `key`, or the key in the same file) to
  /// servers that require one, and checks `serverName` in the server's
  /// certificate instead of the host it connects to.
  public static func client(
    trusting caFile: String? = nil, certificate: String? = nil, key: String? = nil,
    serverName: String? = nil
  ) -> TLSConfiguration {
    TLSConfiguration(certificateFile: certificate, privateKeyFile: key, trustedCAFile: caFile, serverName: serverName)
  }

  /// A server's TLS: presents `certificate` (with `key`, or the key in the
  /// same file); with `clientsSignedBy`, requires each client to present a
  /// certificate signed by a CA of that file (mutual TLS).
  public static func server(
    certificate: String, key: String? = nil, clientsSignedBy caFile: String? = nil
  ) -> TLSConfiguration {
    TLSConfiguration(
      certificateFile: certificate, privateKeyFile: key, trustedCAFile: caFile,
      requiresClientCertificate: caFile != nil)
  }
}

/// A secret shared by main programs and a worker server: before any task,
/// each side proves that it knows it (HMAC-SHA256 over a nonce of each
/// side), without sending it. Use it where TLS is terminated elsewhere, or
/// on top of TLS.
///
/// Between 16 and 1024 bytes; make one with `openssl rand -hex 32`. It is
/// never printed: its description, debug description and mirror hide it.
public struct SharedSecret: Sendable, CustomStringConvertible, CustomDebugStringConvertible,
  CustomReflectable
{
  /// The secret; only handed to ``ConnectionSecurity``, which copies it.
  let bytes: [UInt8]

  /// Reads the secret from the file at `path`; one trailing newline (`\n`
  /// or `\r\n`) is dropped.
  /// - Throws: ``SecurityConfigurationError`` for an unreadable file, or a
  ///   secret too short or too long.
  public init(contentsOfFile path: String) throws {
    bytes = try Self.load(path: path, variable: nil)
  }

  /// Reads the secret from the environment variable `name`, then removes
  /// it from the environment, so that no process started later (a worker,
  /// what a task starts) inherits it. One trailing newline is dropped.
  /// - Throws: ``SecurityConfigurationError`` for a variable that is not
  ///   set, or a secret too short or too long.
  public init(environmentVariable name: String) throws {
    bytes = try Self.load(path: nil, variable: name)
  }

  /// Takes the secret as it is (binary-safe).
  /// - Throws: ``SecurityConfigurationError`` unless it has 16 to 1024
  ///   bytes.
  public init(bytes: [UInt8]) throws {
    let range = Int(PROCORD_SECRET_MIN_LENGTH)...Int(PROCORD_SECRET_MAX_LENGTH)
    guard range.contains(bytes.count) else {
      throw SecurityConfigurationError(
        code: PROCORD_EINVAL.rawValue,
        message: "a shared secret must have \(range.lowerBound) to \(range.upperBound) bytes (it has \(bytes.count))")
    }
    self.bytes = bytes
  }

  /// Says that this is a secret, never what it is.
  public var description: String { "SharedSecret(hidden)" }
  /// Says that this is a secret, never what it is.
  public var debugDescription: String { description }
  /// A mirror without children, so that `dump` shows no byte of it.
  public var customMirror: Mirror { Mirror(self, children: [:]) }

  private static func load(path: String?, variable: String?) throws -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: Int(PROCORD_SECRET_MAX_LENGTH))
    var length = 0
    let error = withSecurityMessage { message, size in
      buffer.withUnsafeMutableBufferPointer { secret in
        procord_secret_load(path, variable, secret.baseAddress, secret.count, &length, message, size)
      }
    }
    defer { wipe(&buffer) }
    if let error { throw error }
    return Array(buffer[..<length])
  }
}

/// Why a ``ConnectionSecurity`` or a ``SharedSecret`` could not be made: a
/// missing or unreadable file, a key that does not match its certificate,
/// a server with TLS and no certificate, a secret of the wrong length...
public struct SecurityConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The C core's error code (`PROCORD_EINVAL`, or `-ENOMEM`).
  public let code: Int32
  /// What is wrong, in English, naming the file or variable concerned.
  public let message: String

  /// Makes an error from a C core error code and its message.
  public init(code: Int32, message: String) {
    self.code = code
    self.message = message
  }

  /// The message.
  public var description: String { message }
}

/// How one side secures its connections: TLS, a shared secret, or both
/// (the shared-secret exchange then runs inside TLS).
///
/// A client's goes on ``RemoteServer/security`` (delegations and pools);
/// a server's on ``Server/Options/security``. One object may serve any
/// number of delegations, pools and servers at once, from any thread.
/// Objects are equal only when they are the same object.
public final class ConnectionSecurity: Sendable, Equatable {
  /// Which side of the connection.
  public enum Role: Sendable, Equatable {
    /// A main program: delegations and pools, to a ``RemoteServer``.
    case client
    /// A worker server (``Server``).
    case server
  }

  /// The side this security is for.
  public let role: Role
  /// True when it uses TLS.
  public let usesTLS: Bool
  /// True when it has a shared secret.
  public let usesSharedSecret: Bool
  /// The C core's `procord_security_t *`, holding one reference (released
  /// in deinit). The C core takes references of its own, so it must only
  /// outlive the C call it is passed to.
  nonisolated(unsafe) let pointer: OpaquePointer

  /// Loads and checks the TLS files now, and copies the secret.
  /// - Throws: ``SecurityConfigurationError`` saying what is wrong: neither
  ///   TLS nor a secret, a server with TLS and no certificate, a file that
  ///   is missing or not PEM (named), a key that does not match its
  ///   certificate, client certificates required without a CA file...
  public convenience init(for role: Role, tls: TLSConfiguration? = nil, secret: SharedSecret? = nil) throws {
    var created: OpaquePointer?
    let error = withSecurityMessage { message, size in
      withOptionalCString(tls?.certificateFile) { certificate in
        withOptionalCString(tls?.privateKeyFile) { key in
          withOptionalCString(tls?.trustedCAFile) { ca in
            withOptionalCString(tls?.serverName) { serverName in
              (secret?.bytes ?? []).withUnsafeBytes { secretBytes in
                var options = procord_security_options_t()
                procord_security_options_init(&options)
                options.role = role == .server ? PROCORD_SECURITY_SERVER : PROCORD_SECURITY_CLIENT
                options.tls = tls == nil ? 0 : 1
                options.certificate_file = certificate
                options.private_key_file = key
                options.ca_file = ca
                options.require_client_certificate = tls?.requiresClientCertificate == true ? 1 : 0
                options.server_name = serverName
                options.secret = secret == nil ? nil : secretBytes.baseAddress
                options.secret_length = secret == nil ? 0 : secretBytes.count
                return procord_security_new(&options, &created, message, size)
              }
            }
          }
        }
      }
    }
    if let error { throw error }
    self.init(adopting: created!, role: role)
  }

  /// Takes over the reference of a `procord_security_t *` the C core made.
  init(adopting pointer: OpaquePointer, role: Role) {
    self.pointer = pointer
    self.role = role
    usesTLS = procord_security_uses_tls(pointer) != 0
    usesSharedSecret = procord_security_uses_secret(pointer) != 0
  }

  /// Makes the security a command line's `--procord-tls*` and
  /// `--procord-secret-*` options ask for, or `nil` if they ask for none.
  static func fromCommand(
    _ parsed: ParsedCommandLine, role: Role
  ) throws(SecurityConfigurationError) -> ConnectionSecurity? {
    var command = parsed.command
    var created: OpaquePointer?
    let cRole = role == .server ? PROCORD_SECURITY_SERVER : PROCORD_SECURITY_CLIENT
    let error = withSecurityMessage { message, size in
      // The command's strings point into `parsed`.
      withExtendedLifetime(parsed) { procord_security_from_command(&command, cRole, &created, message, size) }
    }
    if let error { throw error }
    return created.map { ConnectionSecurity(adopting: $0, role: role) }
  }

  deinit { procord_security_release(pointer) }

  /// True when both are the same object.
  public static func == (lhs: ConnectionSecurity, rhs: ConnectionSecurity) -> Bool { lhs === rhs }
}

/// Calls `body` with a buffer for a C error message; returns nil when it
/// returns 0, or the error with the message it wrote.
private func withSecurityMessage(
  _ body: (UnsafeMutablePointer<CChar>, Int) -> Int32
) -> SecurityConfigurationError? {
  var message = [CChar](repeating: 0, count: 512)
  let code = message.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
  guard code != 0 else { return nil }
  var text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  if text.isEmpty { text = String(cString: procord_strerror(code)) }
  return SecurityConfigurationError(code: code, message: text)
}

/// Calls `body` with `string` as a C string, or with nil.
private func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
  guard let string else { return body(nil) }
  return string.withCString { body($0) }
}

/// Overwrites a buffer that held a secret, in a way the optimizer keeps.
private func wipe(_ buffer: inout [UInt8]) {
  buffer.withUnsafeMutableBytes { bytes in
    guard let base = bytes.baseAddress else { return }
    explicit_bzero(base, bytes.count)
  }
}
