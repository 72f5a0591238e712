#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Carries a task's errors from the worker to the main program.
///
/// When a task throws and its ``ErrorCodec`` can encode the error, the worker
/// sends the bytes in an `X` frame and the main program's status is
/// ``Status/exception(_:)`` with the decoded error. Errors the codec does not
/// encode (``encode`` returns `nil`), and every error of a task without an
/// error codec, travel as readable text in a `U` frame and end as
/// ``ExecutionError/workerUnknownException(_:)``.
public struct ErrorCodec: Sendable {
  /// Serializes an error, or returns `nil` if this codec does not handle it.
  public let encode: @Sendable (any Error) -> [UInt8]?
  /// Deserializes an error sent by ``encode``.
  public let decode: @Sendable ([UInt8]) throws -> any Error

  /// Makes an error codec from two closures.
  public init(
    encode: @escaping @Sendable (any Error) -> [UInt8]?,
    decode: @escaping @Sendable ([UInt8]) throws -> any Error
  ) {
    self.encode = encode
    self.decode = decode
  }

  /// Sends any error as its text (`String(describing:)`) and reads it back as
  /// a ``TextError`` carrying that text.
  public static var text: ErrorCodec {
    ErrorCodec(
      encode: { error in Array(String(describing: error).utf8) },
      decode: { bytes in TextError(String(decoding: bytes, as: UTF8.self)) })
  }

  /// Sends errors of type `E` as JSON and reads them back as `E`; other
  /// errors travel as text in a `U` frame.
  public static func json<E: Error & Codable>(_ type: E.Type) -> ErrorCodec {
    ErrorCodec(
      encode: { error in (error as? E).flatMap { try? [UInt8](JSONEncoder().encode($0)) } },
      decode: { bytes in try JSONDecoder().decode(E.self, from: Data(bytes)) })
  }
}

/// An error known only by its text, as ``ErrorCodec/text`` delivers it.
public struct TextError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The error's text, as the worker described it.
  public let description: String

  /// Makes an error with the given text.
  public init(_ description: String) { self.description = description }
}
