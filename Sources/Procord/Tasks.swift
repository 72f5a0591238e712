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
  /// The name the main program asks for.
  public let name: String
  /// Deserializes the input.
  public let input: Codec<Input>
  /// Serializes the output.
  public let output: Codec<Output>
  /// Serializes errors the body throws into `X` frames; `nil`: `U` text.
  public let error: ErrorCodec?
  /// The task itself. It runs in the worker process, one call at a time.
  public let body: @Sendable (Input) throws -> Output

  /// Makes a worker task from its name, codecs and body.
  public init(
    name: String, input: Codec<Input>, output: Codec<Output>, error: ErrorCodec? = nil,
    body: @escaping @Sendable (Input) throws -> Output
  ) {
    self.name = name
    self.input = input
    self.output = output
    self.error = error
    self.body = body
  }
}

/// Both halves of a task, made at once with the same name and codecs, like
/// the original library's `Procord_task.make`.
///
/// ```swift
/// let fibo = ProcordTask<Int, Int>(name: "fibo") { n in fibonacci(n) }
/// try Worker.runIfRequested(tasks: [fibo])      // in the worker: serves it
/// let process = try delegate(fibo, 30)          // in the main program
/// ```
public struct ProcordTask<Input, Output: Sendable>: Sendable {
  /// The worker's half.
  public let worker: WorkerTask<Input, Output>
  /// The main program's half.
  public let delegated: DelegatedTask<Input, Output>
  /// The task's name.
  public var name: String { delegated.name }

  /// Makes a task from its name, its codecs and its body.
  public init(
    name: String, input: Codec<Input>, output: Codec<Output>, error: ErrorCodec? = nil,
    body: @escaping @Sendable (Input) throws -> Output
  ) {
    worker = WorkerTask(name: name, input: input, output: output, error: error, body: body)
    delegated = DelegatedTask(name: name, input: input, output: output, error: error)
  }
}

extension ProcordTask where Input: Codable & SendableMetatype, Output: Codable {
  /// Makes a task whose input and output travel as JSON.
  public init(
    name: String, error: ErrorCodec? = nil, body: @escaping @Sendable (Input) throws -> Output
  ) {
    self.init(name: name, input: .json, output: .json, error: error, body: body)
  }
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
/// ``Worker/runIfRequested(tasks:arguments:maxMessageSize:)``.
public protocol ServableTask: Sendable {
  /// The name the main program asks for.
  var name: String { get }
  /// Decodes the input, runs the task and encodes its answer.
  func reply(to input: [UInt8]) -> TaskReply
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

  /// The error in English, with what to check.
  public var description: String {
    "the worker could not decode the input of task \"\(taskName)\": \(reason) "
      + "(the main program and the worker must use the same input codec and type)"
  }
}

extension WorkerTask: ServableTask {
  /// Decodes the input, runs the body and encodes the output; a failure of
  /// any of the three becomes an `X` reply if the error codec encodes it, and
  /// a `U` reply with the error's text otherwise. An input that does not
  /// decode fails as a ``TaskInputError``.
  public func reply(to input: [UInt8]) -> TaskReply {
    do {
      let decoded: Input
      do {
        decoded = try self.input.decode(input)
      } catch {
        throw TaskInputError(taskName: name, reason: String(describing: error))
      }
      return .value(try output.encode(try body(decoded)))
    } catch {
      if let encoded = self.error?.encode(error) { return .exception(encoded) }
      return .unknownException(String(describing: error))
    }
  }
}

extension ProcordTask: ServableTask {
  /// Serves the task through its worker half.
  public func reply(to input: [UInt8]) -> TaskReply { worker.reply(to: input) }
}
