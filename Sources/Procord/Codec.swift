#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Turns values into the bytes of a frame body and back.
///
/// A task has one codec for its input and one for its output; the worker and
/// the main program must use the same ones, which is why ``ProcordTask`` makes
/// both halves of a task together. Built-in codecs: ``json`` for any `Codable`
/// type, ``bytes`` for raw `[UInt8]`, ``data`` for `Data`, ``decimal`` for
/// integers as decimal text (the original library's integer format). Any other
/// format is a pair of closures given to ``init(encode:decode:)``.
public struct Codec<Value>: Sendable {
  /// Serializes a value. A thrown error fails the delegation (main program)
  /// or becomes the task's exception (worker).
  public let encode: @Sendable (Value) throws -> [UInt8]
  /// Deserializes a value. A thrown error means the bytes were not valid.
  public let decode: @Sendable ([UInt8]) throws -> Value

  /// Makes a codec from two closures.
  public init(
    encode: @escaping @Sendable (Value) throws -> [UInt8],
    decode: @escaping @Sendable ([UInt8]) throws -> Value
  ) {
    self.encode = encode
    self.decode = decode
  }
}

/// A body that a codec could not turn back into a value.
public struct CodecError: Error, Sendable, Equatable, CustomStringConvertible {
  /// What was wrong, in English.
  public let description: String

  /// Makes an error with its English description.
  public init(_ description: String) { self.description = description }
}

extension Codec where Value: Codable & SendableMetatype {
  /// JSON through `JSONEncoder`/`JSONDecoder` (from FoundationEssentials where
  /// it exists, since it starts faster than full Foundation). Top-level
  /// scalars are allowed: `30` is the JSON body of the integer 30.
  public static var json: Codec<Value> {
    Codec(
      encode: { value in [UInt8](try JSONEncoder().encode(value)) },
      decode: { bytes in try JSONDecoder().decode(Value.self, from: Data(bytes)) }
    )
  }
}

extension Codec where Value == [UInt8] {
  /// The bytes themselves, with no transformation.
  public static var bytes: Codec<[UInt8]> {
    Codec(encode: { $0 }, decode: { $0 })
  }
}

extension Codec where Value == Data {
  /// The bytes of a `Data`, with no transformation.
  public static var data: Codec<Data> {
    Codec(encode: { [UInt8]($0) }, decode: { Data($0) })
  }
}

extension Codec where Value == String {
  /// A string as its UTF-8 bytes; invalid UTF-8 is an error when decoding.
  public static var utf8: Codec<String> {
    Codec(
      encode: { Array($0.utf8) },
      decode: { bytes in
        guard let text = String(validating: bytes, as: UTF8.self) else {
          throw CodecError("the body is not valid UTF-8")
        }
        return text
      })
  }
}

extension Codec where Value: FixedWidthInteger & SendableMetatype {
  /// An integer as decimal ASCII text (`-42`), the format the original
  /// library uses for integers. Decoding rejects anything else, including
  /// spaces and out-of-range values.
  public static var decimal: Codec<Value> {
    Codec(
      encode: { Array(String($0).utf8) },
      decode: { bytes in
        guard let text = String(validating: bytes, as: UTF8.self), let value = Value(text) else {
          throw CodecError("expected a decimal integer, got \(bytes.count) bytes: \(preview(bytes))")
        }
        return value
      })
  }
}

/// A short printable view of a body, for error messages.
func preview(_ bytes: [UInt8]) -> String {
  let head = bytes.prefix(40).map { (32..<127).contains($0) ? Character(UnicodeScalar($0)) : "." }
  return "\"" + String(head) + (bytes.count > 40 ? "...\"" : "\"")
}
