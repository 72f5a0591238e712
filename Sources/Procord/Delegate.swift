/// Delegates a task to a new worker process and returns at once.
///
/// The worker is this executable, started again in worker mode (so the
/// program must call ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``
/// early in `main`), speaking the protocol on a socket of its own: what the
/// task prints reaches this program's stdout and stderr untouched. Like the
/// original library, when the program was started with
/// `--procord-hostname HOST` (and `--procord-port PORT`) before its own
/// arguments, the task goes to that worker server instead.
///
/// Everything that can go wrong with the worker (it cannot be started, it
/// crashes, it hangs up, it sends garbage) shows up in the returned process's
/// ``DelegatedProcess/status`` as an ``ExecutionError``; this function only
/// throws when the input cannot be encoded or memory runs out.
public func delegate<Input, Output>(
  _ task: DelegatedTask<Input, Output>, _ input: Input, options: DelegationOptions = DelegationOptions()
) throws -> DelegatedProcess<Output> {
  try startDelegation(task, input, to: Destination.fromCommandLine, options: options)
}

/// Delegates a task to a new worker process started from this executable;
/// see ``delegate(_:_:)-(DelegatedTask<Input,Output>,_)``.
public func delegate<Input, Output>(
  _ task: ProcordTask<Input, Output>, _ input: Input, options: DelegationOptions = DelegationOptions()
) throws -> DelegatedProcess<Output> {
  try startDelegation(task.delegated, input, to: Destination.fromCommandLine, options: options)
}

/// Delegates a task to a new process of any worker program, such as one
/// written with the original OCaml library.
///
/// - Parameters:
///   - program: the worker executable: a path, or a bare name found in `PATH`.
///   - arguments: its arguments; `--procord-worker` by default, which puts a
///     Procord worker in the original stdin/stdout mode.
///   - stderr: a descriptor to give the worker as its stderr (it is
///     duplicated, not taken); `nil` to share this program's.
///   - task: the task's name and codecs.
///   - input: the task's input.
/// - Returns: the process; a program that does not exist gives a status of
///   ``ExecutionError/workerDisconnected(_:)`` with
///   ``DisconnectionCause/couldNotStart(program:errno:)``.
public func delegate<Input, Output>(
  program: String, arguments: [String] = ["--procord-worker"], stderr: Int32? = nil,
  task: DelegatedTask<Input, Output>, input: Input
) throws -> DelegatedProcess<Output> {
  let worker = WorkerProgram(
    path: program, arguments: arguments, channel: .standardStreams, standardError: stderr)
  return try startDelegation(task, input, to: .local(worker))
}

/// Delegates a task to a new process of the worker program described.
public func delegate<Input, Output>(
  _ task: DelegatedTask<Input, Output>, _ input: Input, to worker: WorkerProgram,
  options: DelegationOptions = DelegationOptions()
) throws -> DelegatedProcess<Output> {
  try startDelegation(task, input, to: .local(worker), options: options)
}

/// Delegates a task to a worker server over TCP; see ``RemoteServer`` for
/// the time limits. Killing the returned process closes its connection, and
/// the server kills the task.
public func delegate<Input, Output>(
  host: String, port: Int = 1111, task: DelegatedTask<Input, Output>, input: Input
) throws -> DelegatedProcess<Output> {
  try startDelegation(task, input, to: .remote(RemoteServer(host: host, port: port)))
}

/// Delegates a task to the worker server described.
public func delegate<Input, Output>(
  _ task: DelegatedTask<Input, Output>, _ input: Input, to server: RemoteServer,
  options: DelegationOptions = DelegationOptions()
) throws -> DelegatedProcess<Output> {
  try startDelegation(task, input, to: .remote(server), options: options)
}
