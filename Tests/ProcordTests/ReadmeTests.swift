import Foundation
import Testing

/// The README's example is the file the package compiles as procord-example,
/// and it runs.
@Suite struct ReadmeTests {
  let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

  @Test func theReadmeExampleIsTheCompiledExample() throws {
    let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    let example = try String(
      contentsOf: root.appendingPathComponent("Examples/GettingStarted/main.swift"), encoding: .utf8)
    let blocks = readme.components(separatedBy: "```swift\n").dropFirst().map {
      $0.components(separatedBy: "```")[0]
    }
    #expect(blocks.contains(example), "the README's swift block differs from Examples/GettingStarted/main.swift")
  }

  @Test func theExampleRuns() throws {
    let run = try runProgram([], program: buildDirectory.appendingPathComponent("procord-example").path)
    let text = run.outputText
    #expect(run.exitedNormally && run.status == 0)
    #expect(text.contains("fibo(25) = 121393"))
    #expect(text.contains("fibo(40) = 165580141"))
  }
}
