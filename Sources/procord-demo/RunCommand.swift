import Procord

/// One task as `procord-demo run` drives it: how to read an INPUT argument
/// and how to show an output.
struct RunnableTask: Sendable {
  let name: String
  /// Starts the task on INPUT; nil when INPUT is not a valid input.
  let start: @Sendable (String, Destination, DelegationOptions) throws -> PendingResult?
}

/// A started task, and how to describe its end.
struct PendingResult {
  let process: AnyDelegatedProcess
  /// The result line and whether the task succeeded; call once finished.
  let describe: () -> (line: String, succeeded: Bool)
}

extension RunnableTask {
  init<Input, Output>(
    _ task: ProcordTask<Input, Output>, parse: @escaping @Sendable (String) -> Input?,
    show: @escaping @Sendable (Output) -> String = { "\($0)" }
  ) {
    name = task.name
    start = { text, destination, options in
      guard let input = parse(text) else { return nil }
      let process = try delegate(task, input, to: destination, options: options)
      return PendingResult(process: process) {
        let head = "\(task.name)(\(text))"
        do {
          return ("\(head) = \(show(try process.run()))", true)
        } catch let error as ProcordError {
          let evidence = error.fatalErrorMessage.map { " (\($0))" } ?? ""
          return ("\(head) failed: \(error.message)\(evidence)", false)
        } catch {
          return ("\(head) raised: \(error)", false)
        }
      }
    }
  }
}

let runnableTasks: [RunnableTask] = [
  RunnableTask(fibo, parse: { Int($0) }),
  RunnableTask(fact, parse: { Int($0) }),
  RunnableTask(echo, parse: { Array($0.utf8) }, show: { String(decoding: $0, as: UTF8.self) }),
  RunnableTask(crash, parse: { $0 }),
  RunnableTask(sleepTask, parse: { Int($0) }),
  RunnableTask(rfibo, parse: { Int($0) }),
  RunnableTask(printTask, parse: { Int($0) }),
  RunnableTask(progress, parse: { Int($0) }),
  RunnableTask(alloc, parse: { Int($0) }),
]

/// What `run`'s options ask for.
private struct RunOptions {
  var sequential = false
  var workerPath: String?
  var workerArguments: [String] = []
  var host: String?
  var port = 1111
  var poolSize: Int?
  var hosts: [RemoteServer] = []
  var timeout: Duration?
  var memoryLimit: Int?
  /// `--procord-tls*`, `--procord-secret-*`: how to secure the servers' connections.
  var tls: TLSConfiguration?
  var secretFile: String?
  var secretVariable: String?
  var positional: [String] = []

  /// The client security these options ask for, or nil.
  func security() throws -> ConnectionSecurity? {
    let secret =
      try secretFile.map { try SharedSecret(contentsOfFile: $0) }
      ?? secretVariable.map { try SharedSecret(environmentVariable: $0) }
    guard tls != nil || secret != nil else { return nil }
    return try ConnectionSecurity(for: .client, tls: tls, secret: secret)
  }
}

/// Reads `run`'s options; a usage error as text.
private func parseRunOptions(_ arguments: ArraySlice<String>) -> Result<RunOptions, UsageError> {
  var options = RunOptions()
  var rest = arguments
  while let argument = rest.popFirst() {
    switch argument {
    case "--sequential": options.sequential = true
    case "--procord-tls": options.tls = options.tls ?? TLSConfiguration()
    case "--procord-tls-cert", "--procord-tls-key", "--procord-tls-ca", "--procord-tls-server-name",
      "--procord-secret-file", "--procord-secret-env":
      guard let value = rest.popFirst() else { return .failure(UsageError("\(argument) needs a value")) }
      var tls = options.tls ?? TLSConfiguration()
      switch argument {
      case "--procord-tls-cert": tls.certificateFile = value
      case "--procord-tls-key": tls.privateKeyFile = value
      case "--procord-tls-ca": tls.trustedCAFile = value
      case "--procord-tls-server-name": tls.serverName = value
      case "--procord-secret-file": options.secretFile = value
      default: options.secretVariable = value
      }
      if argument.hasPrefix("--procord-tls") { options.tls = tls }
    case "--worker-program", "--worker-arg", "--procord-hostname", "--procord-port", "--pool", "--hosts",
      "--timeout", "--limit-memory":
      guard let value = rest.popFirst() else { return .failure(UsageError("\(argument) needs a value")) }
      switch argument {
      case "--worker-program": options.workerPath = value
      case "--worker-arg": options.workerArguments.append(value)
      case "--procord-hostname": options.host = value
      case "--procord-port":
        guard let number = Int(value), (1...65535).contains(number) else {
          return .failure(UsageError("--procord-port needs a port number, got \(value)"))
        }
        options.port = number
      case "--pool":
        guard let size = Int(value), size >= 1 else {
          return .failure(UsageError("--pool needs a number of workers, got \(value)"))
        }
        options.poolSize = size
      case "--hosts":
        guard !value.split(separator: ",").isEmpty else {
          return .failure(UsageError("--hosts needs HOST:PORT,HOST:PORT..., got \"\(value)\""))
        }
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
          guard let server = parseServer(String(item)) else {
            return .failure(UsageError("--hosts needs HOST:PORT,HOST:PORT..., got \(item)"))
          }
          options.hosts.append(server)
        }
      case "--timeout":
        // A year at most: beyond, Duration's arithmetic is not the point.
        guard let seconds = Double(value), seconds > 0, seconds <= 365 * 86400 else {
          return .failure(UsageError("--timeout needs a number of seconds (at most a year), got \(value)"))
        }
        options.timeout = .milliseconds(Int64((seconds * 1000).rounded(.up)))
      default:
        guard let mebibytes = Int(value), mebibytes > 0, mebibytes <= Int.max >> 20 else {
          return .failure(UsageError("--limit-memory needs a number of MiB, got \(value)"))
        }
        options.memoryLimit = mebibytes << 20
      }
    case "--":
      options.positional += rest
      rest = []
    default:
      if argument.hasPrefix("--") && options.positional.isEmpty {
        return .failure(UsageError("unknown option \(argument)"))
      }
      options.positional.append(argument)
    }
  }
  if options.workerPath == nil && !options.workerArguments.isEmpty {
    return .failure(UsageError("--worker-arg needs --worker-program"))
  }
  let remote = options.host != nil || !options.hosts.isEmpty
  if options.workerPath != nil && remote {
    return .failure(UsageError("--worker-program excludes --procord-hostname and --hosts"))
  }
  if options.host != nil && !options.hosts.isEmpty {
    return .failure(UsageError("--procord-hostname and --hosts exclude each other"))
  }
  if options.memoryLimit != nil && remote {
    return .failure(UsageError("--limit-memory applies to local workers only"))
  }
  if (options.tls != nil || options.secretFile != nil || options.secretVariable != nil) && !remote {
    return .failure(UsageError("--procord-tls* and --procord-secret-* apply to servers (--procord-hostname, --hosts)"))
  }
  if options.secretFile != nil && options.secretVariable != nil {
    return .failure(UsageError("--procord-secret-file and --procord-secret-env exclude each other"))
  }
  return .success(options)
}

/// `HOST:PORT`, or `[IPV6]:PORT`.
private func parseServer(_ text: String) -> RemoteServer? {
  guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
    (1...65535).contains(port)
  else { return nil }
  var host = text[..<colon]
  if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
  return host.isEmpty ? nil : RemoteServer(host: String(host), port: port)
}

struct UsageError: Error {
  let text: String
  init(_ text: String) { self.text = text }
}

/// `procord-demo run [--sequential] [--pool N] [--hosts H:P,...] [--timeout SECONDS]
/// [--limit-memory MIB] [--worker-program PATH [--worker-arg ARG]...]
/// [--procord-hostname H [--procord-port P]] [--procord-tls-ca FILE ...] TASK INPUT...`
/// Returns the exit status: 0 all succeeded, 1 any raised or failed, 2 usage.
func runCommand(_ arguments: ArraySlice<String>) -> Int32 {
  let options: RunOptions
  switch parseRunOptions(arguments) {
  case .success(let parsed): options = parsed
  case .failure(let error): return usage(error.text)
  }
  guard let name = options.positional.first else { return usage("run needs a TASK") }
  guard let task = runnableTasks.first(where: { $0.name == name }) else {
    return usage("unknown task \(name); tasks: \(runnableTasks.map(\.name).joined(separator: ", "))")
  }
  let inputs = options.positional.dropFirst()
  guard !inputs.isEmpty else { return usage("run \(name) needs at least one INPUT") }
  var program =
    options.workerPath.map {
      WorkerProgram(
        path: $0, arguments: options.workerArguments.isEmpty ? ["--procord-worker"] : options.workerArguments)
    } ?? .current
  program.limits.addressSpace = options.memoryLimit
  let security: ConnectionSecurity?
  do {
    security = try options.security()
  } catch {
    return usage("\(error)")
  }
  // --pool N over --procord-hostname: N connections to that one server.
  var servers =
    options.hosts.isEmpty && options.poolSize != nil
    ? options.host.map { [RemoteServer(host: $0, port: options.port)] } ?? [] : options.hosts
  for index in servers.indices { servers[index].security = security }
  let target: Destination
  var pool: WorkerPool?
  do {
    if !servers.isEmpty {
      // N connections in all (one per server by default), opened in turn.
      var configuration = WorkerPool.Configuration(maximumWorkers: options.poolSize ?? servers.count)
      configuration.maximumQueueLength = max(configuration.maximumQueueLength, inputs.count)
      pool = try WorkerPool(servers.map { .remote($0) }, configuration: configuration)
      target = .pool(pool!)
    } else if let size = options.poolSize {
      var configuration = WorkerPool.Configuration(maximumWorkers: size)
      configuration.maximumQueueLength = max(configuration.maximumQueueLength, inputs.count)
      pool = try WorkerPool([.local(program)], configuration: configuration)
      target = .pool(pool!)
    } else if let host = options.host {
      target = .server(RemoteServer(host: host, port: options.port, security: security))
    } else if options.workerPath == nil && options.memoryLimit == nil {
      // This program again, or the server named by --procord-hostname
      // before `run`, as for any Procord program.
      target = .thisProgram
    } else {
      target = .program(program)
    }
  } catch {
    printError("procord-demo: \(error)")
    return 1
  }
  defer { pool?.shutdownAndWait(.immediate) }
  // The demo's tasks are pure: a pool over servers may run one again
  // elsewhere when its server goes away.
  let delegationOptions = DelegationOptions(deadline: options.timeout, isIdempotent: true)

  // Progress messages (custom destination `1`) are shown as they arrive, on
  // stderr, so that the result lines on stdout stay clean.
  PrintHandlers.setDefault(
    { event in
      if case .text(let text) = event { printError("progress: \(text)") }
    }, for: progressDestination)

  var allSucceeded = true
  func report(_ pending: PendingResult) {
    let (line, succeeded) = pending.describe()
    print(line)
    allSucceeded = allSucceeded && succeeded
  }
  do {
    if options.sequential {
      for input in inputs {
        guard let pending = try task.start(input, target, delegationOptions) else {
          return usage("invalid input for \(name): \(input)")
        }
        pending.process.wait()
        report(pending)
      }
    } else {
      var started: [PendingResult] = []
      for input in inputs {
        guard let pending = try task.start(input, target, delegationOptions) else {
          started.forEach { $0.process.kill() }
          return usage("invalid input for \(name): \(input)")
        }
        started.append(pending)
      }
      Waiter.waitForAll(started.map(\.process))
      started.forEach(report)
    }
  } catch {
    printError("procord-demo: \(error)")
    return 1
  }
  return allSucceeded ? 0 : 1
}
