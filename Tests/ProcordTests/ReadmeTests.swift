import Foundation
import Testing

/// The README's examples are the files the package compiles as
/// procord-example and procord-pool-example, and they run.
@Suite struct ReadmeTests {
  let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

  @Test(arguments: ["GettingStarted", "Pool", "ManySmallTasks"])
  func theReadmeExampleIsTheCompiledExample(_ name: String) throws {
    let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    let example = try String(
      contentsOf: root.appendingPathComponent("Examples/\(name)/main.swift"), encoding: .utf8)
    let blocks = readme.components(separatedBy: "```swift\n").dropFirst().map {
      $0.components(separatedBy: "```")[0]
    }
    #expect(blocks.contains(example), "no swift block of the README is Examples/\(name)/main.swift")
  }

  @Test func thePoolExampleRuns() throws {
    let run = try runProgram([], program: buildDirectory.appendingPathComponent("procord-pool-example").path)
    #expect(run.exitedNormally && run.status == 0, "\(run.errorText)")
    #expect(
      run.outputText == """
        longest chain below 20001 starts at 17647: 278 steps
        nap(10000): the task ran past its deadline of 200 ms and its worker was stopped
        20001 tasks, 4 worker processes started

        """)
  }

  @Test func theManySmallTasksExampleRuns() throws {
    let run = try runProgram(
      [], program: buildDirectory.appendingPathComponent("procord-many-tasks-example").path)
    #expect(run.exitedNormally && run.status == 0, "\(run.errorText)")
    #expect(
      run.outputText == """
        sum of the squares of 1...10000: 333383335000
        one after the other: [1, 4, 9, 16, 25]

        """)
  }

  @Test func theExampleRuns() throws {
    let run = try runProgram([], program: buildDirectory.appendingPathComponent("procord-example").path)
    let text = run.outputText
    #expect(run.exitedNormally && run.status == 0)
    #expect(text.contains("fibo(25) = 121393"))
    #expect(text.contains("fibo(40) = 165580141"))
  }
}
