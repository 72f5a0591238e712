import Foundation
import Testing

@testable import Procord

private struct Point: Codable, Equatable, Sendable {
  var x: Int
  var y: Double
}

private struct Refusal: Error, Codable, Equatable {
  var reason: String
}

@Suite struct CodecTests {
  @Test func jsonRoundTripsAStruct() throws {
    let codec = Codec<Point>.json
    let point = Point(x: 3, y: -1.5)
    #expect(try codec.decode(codec.encode(point)) == point)
  }

  @Test func jsonEncodesATopLevelIntegerAsItsDigits() throws {
    #expect(try Codec<Int>.json.encode(30) == Array("30".utf8))
    #expect(try Codec<Int>.json.decode(Array("-7".utf8)) == -7)
  }

  @Test func jsonRejectsMalformedInput() {
    #expect(throws: (any Error).self) { try Codec<Int>.json.decode(Array("thirty".utf8)) }
  }

  @Test func decimalWritesPlainDigits() throws {
    #expect(try Codec<Int>.decimal.encode(120) == Array("120".utf8))
    #expect(try Codec<Int>.decimal.encode(-5) == Array("-5".utf8))
    #expect(try Codec<Int>.decimal.decode(Array("3628800".utf8)) == 3_628_800)
  }

  @Test(arguments: [" 5", "5 ", "5x", "", "99999999999999999999", "1.0"])
  func decimalRejectsAnythingElse(text: String) {
    #expect(throws: CodecError.self) { try Codec<Int>.decimal.decode(Array(text.utf8)) }
  }

  @Test func decimalRespectsTheIntegerWidth() {
    #expect(throws: CodecError.self) { try Codec<UInt8>.decimal.decode(Array("256".utf8)) }
  }

  @Test func bytesAreUntouched() throws {
    let bytes: [UInt8] = [0, 255, 10, 13, 0]
    #expect(try Codec<[UInt8]>.bytes.encode(bytes) == bytes)
    #expect(try Codec<[UInt8]>.bytes.decode(bytes) == bytes)
  }

  @Test func dataIsUntouched() throws {
    let data = Data([1, 2, 3, 0])
    #expect(try Codec<Data>.data.decode(Codec<Data>.data.encode(data)) == data)
  }

  @Test func utf8RejectsInvalidBytes() {
    #expect(throws: CodecError.self) { try Codec<String>.utf8.decode([0xff, 0xfe]) }
  }

  @Test func textErrorCodecCarriesTheDescription() throws {
    let encoded = try #require(ErrorCodec.text.encode(TextError("fact: negative argument")))
    #expect(encoded == Array("fact: negative argument".utf8))
    let decoded = try ErrorCodec.text.decode(encoded)
    #expect(decoded as? TextError == TextError("fact: negative argument"))
  }

  @Test func jsonErrorCodecHandlesItsTypeOnly() throws {
    let codec = ErrorCodec.json(Refusal.self)
    let encoded = try #require(codec.encode(Refusal(reason: "no")))
    #expect(try codec.decode(encoded) as? Refusal == Refusal(reason: "no"))
    #expect(codec.encode(TextError("other")) == nil)
  }
}

@Suite struct WorkerReplyTests {
  private let half = WorkerTask<Int, Int>(name: "half", input: .decimal, output: .decimal, error: .text) {
    n in
    guard n % 2 == 0 else { throw TextError("odd: \(n)") }
    return n / 2
  }

  @Test func successIsAValueReply() async {
    #expect(await half.reply(to: Array("10".utf8)) == .value(Array("5".utf8)))
  }

  @Test func anEncodableErrorIsAnExceptionReply() async {
    #expect(await half.reply(to: Array("3".utf8)) == .exception(Array("odd: 3".utf8)))
  }

  @Test func anInputThatDoesNotDecodeIsReportedByTheErrorCodec() async {
    guard case .exception(let bytes) = await half.reply(to: Array("x".utf8)) else {
      Issue.record("expected an exception reply")
      return
    }
    let text = String(decoding: bytes, as: UTF8.self)
    #expect(text.contains("expected a decimal integer"))
    #expect(text.contains("the worker could not decode the input of task"), "got \(text)")
  }

  /// Without an error codec, an input that does not decode says so, naming
  /// the task and what to check, not only the codec's complaint.
  @Test func anInputThatDoesNotDecodeSaysItWasTheInput() async {
    let task = WorkerTask<Int, Int>(name: "twice", input: .decimal, output: .decimal) { $0 * 2 }
    guard case .unknownException(let text) = await task.reply(to: Array("x".utf8)) else {
      Issue.record("expected an unknown-exception reply")
      return
    }
    #expect(text.hasPrefix("the worker could not decode the input of task \"twice\": "), "got \(text)")
    #expect(text.contains("expected a decimal integer") && text.contains("same input codec and type"), "got \(text)")
  }

  @Test func withoutAnErrorCodecErrorsTravelAsText() async {
    let task = WorkerTask<Int, Int>(name: "fail", input: .decimal, output: .decimal) { _ in
      throw TextError("broken")
    }
    #expect(await task.reply(to: Array("1".utf8)) == .unknownException("broken"))
  }

  @Test func procordTaskMakesBothHalvesWithOneName() async {
    let task = ProcordTask<Int, Int>(name: "twice") { $0 * 2 }
    #expect(task.worker.name == "twice")
    #expect(task.delegated.name == "twice")
    #expect(await task.reply(to: Array("21".utf8)) == .value(Array("42".utf8)))
  }
}
