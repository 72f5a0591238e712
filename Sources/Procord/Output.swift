import CProcord
import Synchronization

// What a task prints, on both sides.
//
// Standard output and standard error need nothing: a task prints as it
// would locally, and the text reaches the main program's stdout and stderr
// in every mode (through the inherited descriptors of a local worker, as
// `P` frames from a server or an original-mode worker), before the task's
// answer. Custom destinations carry anything else (progress, logs) to
// handlers in the main program.

/// A custom destination a task can send text to, by its byte: anything but
/// `O` and `E` (which are stdout and stderr), by convention `0`...`9`.
public struct OutputDestination: Sendable, Hashable {
  /// The destination's byte on the wire.
  public let byte: UInt8

  /// A custom destination. `O` and `E` are stdout and stderr: print to
  /// those instead (this traps on them, a programming error).
  public init(_ byte: UInt8) {
    precondition(
      byte != UInt8(ascii: "O") && byte != UInt8(ascii: "E"),
      "O and E are stdout and stderr: print to them instead")
    self.byte = byte
  }

  /// A custom destination named by a one-character string, such as `"1"`.
  public init(_ name: Unicode.Scalar) { self.init(UInt8(truncatingIfNeeded: name.value)) }

  /// From inside a task: sends `text` to the main program's handler for
  /// this destination, at once. Outside a worker (the task called
  /// directly), or when nobody handles the destination, the text is dropped.
  public func write(_ text: String) { write(bytes: Array(text.utf8)) }

  /// Sends raw bytes; see ``write(_:)``.
  public func write(bytes: [UInt8]) {
    _ = bytes.withUnsafeBytes { procord_worker_print(byte, $0.baseAddress, $0.count) }
  }

  /// Sends an `F` frame: the handler sees ``PrintEvent/flush``.
  public func flush() { _ = procord_worker_flush(byte) }
}

/// What a task sent to a custom destination.
public enum PrintEvent: Sendable, Equatable {
  /// Text, as it arrived (decoded as UTF-8, invalid bytes replaced).
  case text(String)
  /// The task flushed the destination.
  case flush
}

/// Receives what a task sends to one custom destination. Called on
/// Procord's loop thread, in order, as the frames arrive: keep it short and
/// never wait in it for another delegation.
public typealias PrintHandler = @Sendable (PrintEvent) -> Void

/// Handlers used for custom destinations that a delegation does not handle
/// itself (``DelegationOptions/printHandlers``). Text for a destination
/// nobody handles is dropped, as the protocol says.
public enum PrintHandlers {
  private static let defaults = Mutex<[UInt8: PrintHandler]>([:])

  /// Sets (or, with `nil`, removes) the handler for `destination` used by
  /// every delegation that has none of its own.
  public static func setDefault(_ handler: PrintHandler?, for destination: OutputDestination) {
    defaults.withLock { $0[destination.byte] = handler }
  }

  static func handler(for byte: UInt8) -> PrintHandler? { defaults.withLock { $0[byte] } }
}

/// What a task wrote to stdout and stderr, when captured.
public struct CapturedOutput: Sendable, Equatable {
  /// The bytes written to standard output, in order.
  public var standardOutput: [UInt8] = []
  /// The bytes written to standard error, in order.
  public var standardError: [UInt8] = []
}
