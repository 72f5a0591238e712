// Making security objects (TLS files, shared secrets) and reading the
// outcomes of failed TLS and authentication, without a secure server: what
// is checked when the security is made, and how its failures read.
import CProcord
import Foundation
import Testing

@testable import Procord

@Suite struct SecurityConfigurationTests {
  // MARK: - Shared secrets

  @Test func secretFromAFileDropsOneTrailingNewline() throws {
    let path = try write("0123456789abcdef0123\n\n", named: "secret")
    defer { unlink(path) }
    // Only one newline goes: the second is part of the secret.
    #expect(try SharedSecret(contentsOfFile: path).bytes == Array("0123456789abcdef0123\n".utf8))
  }

  @Test func secretFromAFileDropsATrailingCarriageReturnAndNewline() throws {
    let path = try write("0123456789abcdef0123\r\n", named: "secret")
    defer { unlink(path) }
    #expect(try SharedSecret(contentsOfFile: path).bytes == Array("0123456789abcdef0123".utf8))
  }

  @Test func secretFromAnEnvironmentVariableRemovesTheVariable() throws {
    let name = uniqueVariableName()
    setenv(name, "a secret of enough bytes\n", 1)
    let secret = try SharedSecret(environmentVariable: name)
    #expect(secret.bytes == Array("a secret of enough bytes".utf8))
    #expect(getenv(name) == nil)
  }

  @Test func aSecretTooShortIsRefusedWithItsLength() throws {
    let path = try write("short\n", named: "short-secret")
    defer { unlink(path) }
    let error = try #require(throws: SecurityConfigurationError.self) { try SharedSecret(contentsOfFile: path) }
    #expect(error.message == "the secret in \(path) must have 16 to 1024 bytes (it has 5)")
    #expect(error.code == PROCORD_EINVAL.rawValue)
  }

  @Test func aMissingSecretFileIsNamed() throws {
    let path = temporaryPath("no-such-secret")
    let error = try #require(throws: SecurityConfigurationError.self) { try SharedSecret(contentsOfFile: path) }
    #expect(error.message == "cannot read the secret file \(path): No such file or directory")
  }

  @Test func anUnsetVariableIsNamed() throws {
    let name = uniqueVariableName()
    let error = try #require(throws: SecurityConfigurationError.self) {
      try SharedSecret(environmentVariable: name)
    }
    #expect(error.message == "the environment variable \(name) (the secret) is not set")
    #expect(error.description == error.message)
  }

  @Test(arguments: [0, 15, 1025])
  func secretBytesOfTheWrongLengthAreRefused(length: Int) throws {
    let error = try #require(throws: SecurityConfigurationError.self) {
      try SharedSecret(bytes: [UInt8](repeating: 7, count: length))
    }
    #expect(error.message == "a shared secret must have 16 to 1024 bytes (it has \(length))")
  }

  @Test(arguments: [16, 1024])
  func secretBytesAtTheBoundsAreTaken(length: Int) throws {
    #expect(try SharedSecret(bytes: [UInt8](repeating: 0, count: length)).bytes.count == length)
  }

  @Test func aSecretIsNeverPrinted() throws {
    let secret = try SharedSecret(bytes: Array("do-not-print-this-secret".utf8))
    var dumped = ""
    dump(secret, to: &dumped)
    for text in ["\(secret)", String(reflecting: secret), dumped, "\([secret])"] {
      #expect(!text.contains("do-not-print"), "printed: \(text)")
      #expect(!text.contains("100"), "printed a byte: \(text)")  // "d" is 100
    }
    #expect(secret.description == "SharedSecret(hidden)")
  }

  // MARK: - Security objects

  @Test func aSecretAloneMakesASecurityWithoutTLS() throws {
    let security = try ConnectionSecurity(for: .server, secret: SharedSecret(bytes: Array("0123456789abcdef".utf8)))
    #expect(security.role == .server)
    #expect(security.usesSharedSecret)
    #expect(!security.usesTLS)
  }

  @Test func neitherTLSNorASecretIsRefused() throws {
    let error = try #require(throws: SecurityConfigurationError.self) { try ConnectionSecurity(for: .client) }
    #expect(error.message == "security options with neither TLS nor a shared secret")
  }

  @Test func aServerWithTLSAndNoCertificateIsRefused() throws {
    let error = try #require(throws: SecurityConfigurationError.self) {
      try ConnectionSecurity(for: .server, tls: TLSConfiguration())
    }
    #expect(error.message == "a server with TLS needs a certificate (and its key)")
  }

  @Test func aMissingCertificateFileIsNamed() throws {
    let path = temporaryPath("no-such-certificate") + ".pem"
    let error = try #require(throws: SecurityConfigurationError.self) {
      try ConnectionSecurity(for: .server, tls: .server(certificate: path))
    }
    #expect(error.message.hasPrefix("cannot load the certificate \(path): "), "\(error)")
  }

  @Test func aMissingCAFileIsNamed() throws {
    let path = temporaryPath("no-such-ca") + ".pem"
    let error = try #require(throws: SecurityConfigurationError.self) {
      try ConnectionSecurity(for: .client, tls: .client(trusting: path))
    }
    #expect(error.message.hasPrefix("cannot load the CA file \(path): "), "\(error)")
  }

  @Test func requiringClientCertificatesWithoutACAFileIsRefused() throws {
    let files = try TestCertificates()
    defer { files.remove() }
    var tls = TLSConfiguration.server(certificate: files.certificate, key: files.key)
    tls.requiresClientCertificate = true
    let error = try #require(throws: SecurityConfigurationError.self) {
      try ConnectionSecurity(for: .server, tls: tls)
    }
    #expect(error.message == "requiring client certificates needs the CA file that signs them")
  }

  @Test func aClientTrustingACAFileUsesTLS() throws {
    let files = try TestCertificates()
    defer { files.remove() }
    let security = try ConnectionSecurity(for: .client, tls: .client(trusting: files.certificate, serverName: "test"))
    #expect(security.role == .client)
    #expect(security.usesTLS)
    #expect(!security.usesSharedSecret)
  }

  @Test func aServerWithItsCertificateKeyAndASecretUsesBoth() throws {
    let files = try TestCertificates()
    defer { files.remove() }
    let security = try ConnectionSecurity(
      for: .server, tls: .server(certificate: files.certificate, key: files.key, clientsSignedBy: files.certificate),
      secret: SharedSecret(bytes: [UInt8](repeating: 1, count: 32)))
    #expect(security.usesTLS)
    #expect(security.usesSharedSecret)
  }

  @Test func aKeyThatDoesNotMatchItsCertificateIsRefused() throws {
    let files = try TestCertificates()
    let other = try TestCertificates()
    defer {
      files.remove()
      other.remove()
    }
    let error = try #require(throws: SecurityConfigurationError.self) {
      try ConnectionSecurity(for: .server, tls: .server(certificate: files.certificate, key: other.key))
    }
    // OpenSSL may notice at loading the key or at checking it: both name the key.
    #expect(error.message.contains(other.key), "\(error)")
  }

  @Test func theConveniencesFillTheRightFields() {
    #expect(
      TLSConfiguration.server(certificate: "c.pem", key: "k.pem", clientsSignedBy: "ca.pem")
        == TLSConfiguration(
          certificateFile: "c.pem", privateKeyFile: "k.pem", trustedCAFile: "ca.pem", requiresClientCertificate: true))
    #expect(TLSConfiguration.server(certificate: "c.pem").requiresClientCertificate == false)
    #expect(
      TLSConfiguration.client(trusting: "ca.pem", certificate: "c.pem", key: "k.pem", serverName: "name")
        == TLSConfiguration(
          certificateFile: "c.pem", privateKeyFile: "k.pem", trustedCAFile: "ca.pem", serverName: "name"))
  }

  @Test func remoteServersCompareTheirSecurityByIdentity() throws {
    let secret = try SharedSecret(bytes: [UInt8](repeating: 2, count: 16))
    let one = try ConnectionSecurity(for: .client, secret: secret)
    let same = try ConnectionSecurity(for: .client, secret: secret)
    let server = RemoteServer(host: "127.0.0.1", security: one)
    #expect(server == RemoteServer(host: "127.0.0.1", security: one))
    #expect(server != RemoteServer(host: "127.0.0.1", security: same))
    #expect(server != RemoteServer(host: "127.0.0.1"))
    #expect(RemoteServer(host: "127.0.0.1").security == nil)
  }

  @Test func aServersSecurityOnARemoteServerIsRefusedBeforeConnecting() throws {
    let security = try ConnectionSecurity(for: .server, secret: SharedSecret(bytes: [UInt8](repeating: 3, count: 16)))
    let server = RemoteServer(host: "127.0.0.1", port: 1, security: security)
    let error = try #require(throws: SecurityConfigurationError.self) { try delegate(DemoTasks.fibo, 3, to: server) }
    #expect(error.message.contains("127.0.0.1:1"))
    #expect(throws: SecurityConfigurationError.self) { try WorkerPool([.remote(server)]) }
  }

  @Test func aClientsSecurityOnAServerIsRefused() throws {
    var options = Server.Options()
    let secret = try SharedSecret(bytes: [UInt8](repeating: 4, count: 16))
    options.security = try ConnectionSecurity(for: .client, secret: secret)
    #expect(throws: SecurityConfigurationError.self) { try Server.run(tasks: [], options: options) }
  }

  // MARK: - The command line

  @Test func aMainProgramWithAMissingCAFileGetsACommandLineError() throws {
    let path = temporaryPath("no-such-ca") + ".pem"
    let arguments = ["program", "--procord-hostname", "127.0.0.1", "--procord-tls-ca", path]
    let error = try #require(throws: Worker.CommandLineError.self) {
      try Worker.runIfRequested(tasks: [], arguments: arguments)
    }
    #expect(error.description.hasPrefix("cannot load the CA file \(path): "), "\(error)")
  }

  @Test func aMainProgramWithAnUnsetSecretVariableGetsACommandLineError() throws {
    let name = uniqueVariableName()
    let arguments = ["program", "--procord-hostname", "127.0.0.1", "--procord-secret-env", name]
    let error = try #require(throws: Worker.CommandLineError.self) {
      try Worker.runIfRequested(tasks: [], arguments: arguments)
    }
    #expect(error.description == "the environment variable \(name) (the secret) is not set")
  }

  @Test func aSecretOnTheCommandLineIsRefused() throws {
    let arguments = ["program", "--procord-hostname", "127.0.0.1", "--procord-secret", "0123456789abcdef"]
    let error = try #require(throws: Worker.CommandLineError.self) {
      try Worker.runIfRequested(tasks: [], arguments: arguments)
    }
    #expect(error.description.contains("--procord-secret-file"), "\(error)")
  }

  /// A server whose security options are wrong says why and exits 2,
  /// before listening.
  @Test(arguments: [
    (["--procord-tls-cert", "/nonexistent/cert.pem"], "cannot load the certificate /nonexistent/cert.pem"),
    (["--procord-tls"], "a server with TLS needs a certificate (and its key)"),
    (["--procord-secret-env", "PROCORD_TEST_UNSET_SECRET"], "the environment variable PROCORD_TEST_UNSET_SECRET"),
  ])
  func aServerWithWrongSecurityOptionsExitsWithStatus2(options: [String], message: String) throws {
    let child = try ChildProcess(
      demoPath, ["--procord-server", "--procord-hostname", "127.0.0.1", "--procord-port", "0"] + options)
    defer { child.ensureStopped() }
    let exit = try #require(child.waitForExit(timeout: .seconds(10)))
    #expect(exit.exited && exit.status == 2)
    let said = child.output.wait(timeout: .seconds(5)) { $0.contains("procord server: \(message)") }
    #expect(said, "\(child.output.text)")
  }

  // MARK: - Outcomes of failed TLS and authentication

  @Test func aTLSFailureReadsAsSuch() {
    let cause = disconnection(error: PROCORD_ETLS.rawValue, call: "tls", detail: "certificate verify failed")
    #expect(cause == .tlsFailed(reason: "certificate verify failed"))
    #expect(cause.description == "TLS with the server failed: certificate verify failed")
    #expect(
      ExecutionError.workerDisconnected(cause).description
        == "worker disconnected: TLS with the server failed: certificate verify failed")
  }

  @Test func anAuthenticationFailureReadsAsSuch() {
    let reason = "the server refused our proof of the shared secret"
    let cause = disconnection(error: PROCORD_EAUTH.rawValue, call: "authenticate", detail: reason)
    #expect(cause == .authenticationFailed(reason: reason))
    #expect(cause.description == "authentication with the server failed: \(reason)")
  }

  @Test func aHandshakeTimeoutReadsAsSuch() {
    let cause = disconnection(error: PROCORD_ETIMEOUT.rawValue, call: "handshake", detail: nil)
    #expect(cause == .timedOut(.handshake))
    #expect(cause.description == "TLS or authentication with the server timed out")
    #expect(disconnection(error: PROCORD_ETIMEOUT.rawValue, call: "connect", detail: nil) == .timedOut(.connecting))
  }

  @Test func aFailureWithoutAReasonSaysSo() {
    let cause = disconnection(error: PROCORD_ETLS.rawValue, call: "tls", detail: nil)
    #expect(cause == .tlsFailed(reason: "unknown reason"))
  }
}

/// The cause the overlay reads from a DISCONNECTED outcome of a remote
/// delegation with this error, call and detail.
private func disconnection(error: Int32, call: String, detail: String?) -> DisconnectionCause {
  call.withCString { call in
    func read(_ detail: UnsafePointer<CChar>?) -> DisconnectionCause {
      var outcome = procord_outcome_t()
      outcome.kind = PROCORD_OUTCOME_DISCONNECTED
      outcome.error = error
      outcome.call = call
      outcome.detail = detail
      outcome.exit_code = -1
      outcome.worker_pid = -1
      return DisconnectionCause(outcome, worker: "127.0.0.1:1111")
    }
    guard let detail else { return read(nil) }
    return detail.withCString { read($0) }
  }
}

/// A self-signed certificate and its key, made with the `openssl` command
/// in a directory of their own.
private struct TestCertificates {
  let directory: String
  var certificate: String { directory + "/certificate.pem" }
  var key: String { directory + "/key.pem" }

  init() throws {
    directory = temporaryPath("tls")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
    let openssl = Process()
    openssl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    openssl.arguments = [
      "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-days", "2", "-subj", "/CN=test", "-addext", "subjectAltName=DNS:test",
      "-keyout", key, "-out", certificate,
    ]
    openssl.standardOutput = FileHandle.nullDevice
    openssl.standardError = FileHandle.nullDevice
    try openssl.run()
    openssl.waitUntilExit()
    guard openssl.terminationStatus == 0 else {
      remove()
      throw TestFailure("openssl req exited with \(openssl.terminationStatus)")
    }
  }

  func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Writes `text` to a new file in the temporary directory; returns its path.
private func write(_ text: String, named name: String) throws -> String {
  let path = temporaryPath(name)
  try text.write(toFile: path, atomically: false, encoding: .utf8)
  return path
}

/// An environment variable name no other test uses.
private func uniqueVariableName() -> String {
  "PROCORD_TEST_SECRET_\(UUID().uuidString.prefix(8).uppercased())"
}
