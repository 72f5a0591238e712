/// What the main program needs to delegate a task: its name and its codecs.
///
/// Make it together with its ``WorkerTask`` through ``ProcordTask``, so that
/// the names and codecs of the two halves cannot disagree.
public struct DelegatedTask<Input, Output: Sendable>: Sendable {
  /// The name the worker looks the task up by.
  public let name: String
  /// Serializes the input (the worker decodes it with the same codec).
  public let input: Codec<Input>
  /// Deserializes the output.
  public let output: Codec<Output>
  /// Deserializes errors sent in `X` frames; `nil` if the task has none.
  public let error: ErrorCodec?

  /// Describes a task by its name and codecs, for a worker written elsewhere
  /// (another program, or the original OCaml library).
  public init(name: String, input: Codec<Input>, output: Codec<Output>, error: ErrorCodec? = nil) {
    self.name = name
    self.input = input
    self.output = output
    self.error = error
  }
}

extension DelegatedTask where Input: Codable & SendableMetatype, Output: Codable {
  /// Describes a task whose input and output travel as JSON.
  public init(name: String, error: ErrorCodec? = nil) {
    self.init(name: name, input: .json, output: .json, error: error)
  }
}

/// What a worker needs to serve a task: its name, its codecs and its body.
public struct WorkerTask<Input, Output>: Sendable {
  /// A body as it was given: one that never suspends is called directly on
  /// the worker's thread, without the hop to Swift concurrency.
  enum Body: Sendable {
    case synchronous(@Sendable (Input) throws -> Output)
    case asynchronous(@Sendable (Input) async throws -> Output)
  }

  /// The name the main program asks for.
  public let name: String
  /// Deserializes the input.
  public let input: Codec<Input>
  /// Serializes the output.
  public let output: Codec<Output>
  /// Serializes errors the body throws into `X` frames; `nil`: `U` text.
  public let error: ErrorCodec?
  let storedBody: Body

  /// The task itself. It runs in the worker process, one call at a time.
  public var body: @Sendable (Input) async throws -> Output {
    switch storedBody {
    case .synchronous(let body): return { try body($0) }
    case .asynchronous(let body): return body
    }
  }

  /// Makes a worker task from its name, codecs and a body that does not
  /// suspend; the worker calls it directly on its thread.
  public init(
    name: String, input: Codec<Input>, output: Codec<Output>, error: ErrorCodec? = nil,
    body: @escaping @Sendable (Input) throws -> Output
  ) {
    self.name = name
    self.input = input
    self.output = output
    self.error = error
    storedBody = .synchronous(body)
  }

  /// Makes a worker task from its name, codecs and an `async` body, which
  /// the worker runs on Swift concurrency. When the main program cancels
  /// the task (or its deadline passes), the body's Swift task is cancelled
  /// and has the worker's grace period (2 s by default) to return before
  /// the worker is killed: check `Task.isCancelled`, or let
  /// `Task.sleep` and other cancellable calls throw.
  @_disfavoredOverload
  public init(
    name: String, input: Codec<Input>, output: Codec<Output>, error: ErrorCodec? = nil,
    body: @escaping @Sendable (Input) async throws -> Output
  ) {
    self.name = name
    self.input = input
    self.output = output
    self.error = error
    storedBody = .asynchronous(body)
  }
}

/// Both halves of a task, made at once with the same name and codecs, like
/// the original library's `Procord_task.make`.
///
/// ```swift
/// let fibo = ProcordTask<Int, Int>(name: "fibo") { n in fibonacci(n) }
/// try await Worker.main(tasks: [fibo]) { arguments in  // serves it in a worker
///   print(try await fibo.run(30))                    // the main program
/// }
/// ```
///
/// The body may be `async`: `ProcordTask<URL, Int>(name: "count") { url in
/// try await count(url) }`.
public struct ProcordTask<Input, Output: Sendable>: DelegatableTask {
  /// The worker's half.
  public let worker: WorkerTask<Input, Output>
  /// The main program's half.
  public let delegated: DelegatedTask<Input, Output>
  /// The task's name.
  public var name: String { delegated.name }

  /// Makes a task from its name, its codecs and a body that does not suspend.
  public init(
    name: String, input: Codec<Input>, output: Codec<Output>, error: ErrorCodec? = nil,
    body: @escaping @Sendable (Input) throws -> Output
  ) {
    worker = WorkerTask(name: name, input: input, output: output, error: error, body: body)
    delegated = DelegatedTask(name: name, input: input, output: output, error: error)
  }

  /// Makes a task from its name, its codecs and an `async` body; see
  /// ``WorkerTask/init(name:input:output:error:body:)-8zqgb``
  /// for how cancellation reaches it.
  @_disfavoredOverload
  public init(
    name: String, input: Codec<Input>, output: Codec<Output>, error: ErrorCodec? = nil,
    body: @escaping @Sendable (Input) async throws -> Output
  ) {
    worker = WorkerTask(name: name, input: input, output: output, error: error, body: body)
    delegated = DelegatedTask(name: name, input: input, output: output, error: error)
  }
}

extension ProcordTask where Input: Codable & SendableMetatype, Output: Codable {
  /// Makes a task whose input and output travel as JSON, from a body that
  /// does not suspend.
  public init(
    name: String, error: ErrorCodec? = nil, body: @escaping @Sendable (Input) throws -> Output
  ) {
    self.init(name: name, input: .json, output: .json, error: error, body: body)
  }

  /// Makes a task whose input and output travel as JSON, from an `async` body.
  @_disfavoredOverload
  public init(
    name: String, error: ErrorCodec? = nil, body: @escaping @Sendable (Input) async throws -> Output
  ) {
    self.init(name: name, input: .json, output: .json, error: error, body: body)
  }
}

/// A task the main program can delegate: ``DelegatedTask`` (its name and
/// codecs) and ``ProcordTask`` (both halves) conform, so every call that
/// delegates takes either.
public protocol DelegatableTask<Input, Output>: Sendable {
  /// What the task takes.
  associatedtype Input
  /// What the task returns.
  associatedtype Output: Sendable
  /// The task's name and codecs, as the main program needs them.
  var delegated: DelegatedTask<Input, Output> { get }
}

extension DelegatedTask: DelegatableTask {
  /// The task itself.
  public var delegated: DelegatedTask<Input, Output> { self }
}

/// How a task answered, as bytes ready for the wire.
public enum TaskReply: Sendable, Equatable {
  /// The serialized output (`V` frame).
  case value([UInt8])
  /// A serialized error (`X` frame).
  case exception([UInt8])
  /// The readable text of an error that had no serializer (`U` frame).
  case unknownException(String)
}

/// A task a worker can serve, whatever its input and output types.
///
/// ``WorkerTask`` and ``ProcordTask`` conform; pass them to
/// ``Worker/main(tasks:arguments:maxMessageSize:isolation:_:)`` or
/// ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``.
public protocol ServableTask: Sendable {
  /// The name the main program asks for.
  var name: String { get }
  /// Decodes the input, runs the task and encodes its answer.
  func reply(to input: [UInt8]) async -> TaskReply
  /// The answer, when the task can give it without suspending (its body is
  /// not `async`); `nil` otherwise, and by default. The worker calls this
  /// on its own thread first, and only hops to Swift concurrency
  /// (``reply(to:)``) when it must.
  func replyWithoutSuspending(to input: [UInt8]) -> TaskReply?
}

extension ServableTask {
  /// `nil`: the worker calls ``reply(to:)``.
  public func replyWithoutSuspending(to input: [UInt8]) -> TaskReply? { nil }
}

/// A worker could not decode a task's input: the main program and the
/// worker disagree on the input's codec or type. The worker reports it as
/// the task's failure, in these words, so that the main program learns
/// that it was the input, and on which side.
public struct TaskInputError: Error, CustomStringConvertible {
  /// The task whose input did not decode.
  public let taskName: String
  /// What the input codec said.
  public let reason: String

  /// The words every description starts with: the main program recognizes
  /// an input error of a Swift worker by them
  /// (``ProcordError/Code-swift.enum/inputNotDecodable``).
  static let prefix = "the worker could not decode the input of task"

  /// The error in English, with what to check.
  public var description: String {
    "\(Self.prefix) \"\(taskName)\": \(reason) "
      + "(the main program and the worker must use the same input codec and type)"
  }
}

extension WorkerTask: ServableTask {
  /// Decodes the input, runs the body and encodes the output; a failure of
  /// any of the three becomes an `X` reply if the error codec encodes it, and
  /// a `U` reply with the error's text otherwise. An input that does not
  /// decode fails as a ``TaskInputError``.
  public func reply(to input: [UInt8]) async -> TaskReply {
    switch storedBody {
    case .synchronous(let body): return answer(input) { try body($0) }
    case .asynchronous(let body):
      let decoded: Input
      switch decode(input) {
      case .success(let value): decoded = value
      case .failure(let failure): return failed(failure)
      }
      do { return .value(try output.encode(try await body(decoded))) } catch { return failed(error) }
    }
  }

  /// The answer of a body that does not suspend; `nil` for an `async` one.
  public func replyWithoutSuspending(to input: [UInt8]) -> TaskReply? {
    guard case .synchronous(let body) = storedBody else { return nil }
    return answer(input) { try body($0) }
  }

  private func answer(_ input: [UInt8], _ body: (Input) throws -> Output) -> TaskReply {
    do {
      return .value(try output.encode(try body(try decode(input).get())))
    } catch {
      return failed(error)
    }
  }

  private func decode(_ input: [UInt8]) -> Result<Input, any Error> {
    do {
      return .success(try self.input.decode(input))
    } catch {
      return .failure(TaskInputError(taskName: name, reason: String(describing: error)))
    }
  }

  private func failed(_ error: any Error) -> TaskReply {
    if let encoded = self.error?.encode(error) { return .exception(encoded) }
    return .unknownException(String(describing: error))
  }
}

extension ProcordTask: ServableTask {
  /// Serves the task through its worker half.
  public func reply(to input: [UInt8]) async -> TaskReply { await worker.reply(to: input) }

  /// The answer of a body that does not suspend; `nil` for an `async` one.
  public func replyWithoutSuspending(to input: [UInt8]) -> TaskReply? { worker.replyWithoutSuspending(to: input) }
}
