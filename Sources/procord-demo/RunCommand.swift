import Procord

/// One task as `procord-demo run` drives it: how to read an INPUT argument
/// and how to show an output.
struct RunnableTask: Sendable {
  let name: String
  /// Starts the task on INPUT; nil when INPUT is not a valid input.
  let start: @Sendable (String, Target) throws -> PendingResult?
}

/// Where `run` sends its tasks.
enum Target: Sendable {
  case program(WorkerProgram)
  case server(RemoteServer)
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
    start = { text, target in
      guard let input = parse(text) else { return nil }
      let process: DelegatedProcess<Output>
      switch target {
      case .program(let worker): process = try delegate(task.delegated, input, to: worker)
      case .server(let server): process = try delegate(task.delegated, input, to: server)
      }
      return PendingResult(process: process) {
        let head = "\(task.name)(\(text))"
        switch process.status {
        case .success(let output): return ("\(head) = \(show(output))", true)
        case .exception(let error): return ("\(head) raised: \(error)", false)
        case .error(let error): return ("\(head) failed: \(error)", false)
        case .working: return ("\(head) failed: still working", false)
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
]

/// `procord-demo run [--sequential] [--worker-program PATH [--worker-arg ARG]...]
/// [--procord-hostname H [--procord-port P]] TASK INPUT...`
/// Returns the exit status: 0 all succeeded, 1 any raised or failed, 2 usage.
func runCommand(_ arguments: ArraySlice<String>) -> Int32 {
  var sequential = false
  var workerPath: String?
  var workerArguments: [String] = []
  var host: String?
  var port = 1111
  var positional: [String] = []
  var rest = arguments
  while let argument = rest.popFirst() {
    switch argument {
    case "--sequential": sequential = true
    case "--worker-program", "--worker-arg", "--procord-hostname", "--procord-port":
      guard let value = rest.popFirst() else { return usage("\(argument) needs a value") }
      switch argument {
      case "--worker-program": workerPath = value
      case "--worker-arg": workerArguments.append(value)
      case "--procord-hostname": host = value
      default:
        guard let number = Int(value), (1...65535).contains(number) else {
          return usage("--procord-port needs a port number, got \(value)")
        }
        port = number
      }
    case "--": positional += rest; rest = []
    default:
      if argument.hasPrefix("--") && positional.isEmpty { return usage("unknown option \(argument)") }
      positional.append(argument)
    }
  }
  guard let name = positional.first else { return usage("run needs a TASK") }
  guard let task = runnableTasks.first(where: { $0.name == name }) else {
    return usage("unknown task \(name); tasks: \(runnableTasks.map(\.name).joined(separator: ", "))")
  }
  let inputs = positional.dropFirst()
  guard !inputs.isEmpty else { return usage("run \(name) needs at least one INPUT") }
  if workerPath == nil && !workerArguments.isEmpty { return usage("--worker-arg needs --worker-program") }
  if workerPath != nil && host != nil { return usage("--worker-program and --procord-hostname exclude each other") }
  let worker: Target
  if let host {
    worker = .server(RemoteServer(host: host, port: port))
  } else {
    worker = .program(workerPath.map {
      WorkerProgram(path: $0, arguments: workerArguments.isEmpty ? ["--procord-worker"] : workerArguments)
    } ?? .current)
  }

  // Progress messages (custom destination `1`) are shown as they arrive, on
  // stderr, so that the result lines on stdout stay clean.
  PrintHandlers.setDefault({ event in
    if case .text(let text) = event { printError("progress: \(text)") }
  }, for: progressDestination)

  var allSucceeded = true
  func report(_ pending: PendingResult) {
    let (line, succeeded) = pending.describe()
    print(line)
    allSucceeded = allSucceeded && succeeded
  }
  do {
    if sequential {
      for input in inputs {
        guard let pending = try task.start(input, worker) else { return usage("invalid input for \(name): \(input)") }
        pending.process.wait()
        report(pending)
      }
    } else {
      var started: [PendingResult] = []
      for input in inputs {
        guard let pending = try task.start(input, worker) else {
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
