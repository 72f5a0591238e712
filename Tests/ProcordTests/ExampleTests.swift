import Foundation
import Testing

/// The examples of Examples/CodableTasks and Examples/WorkerServer run and
/// print what they promise.
@Suite(.serialized) struct ExampleTests {
  /// Codable input and output, the task's own error caught as itself, a
  /// deadline, and a cancellation, each a line of its own.
  @Test func theCodableExampleRuns() throws {
    let run = try runProgram(
      [], program: buildDirectory.appendingPathComponent("procord-codable-example").path)
    #expect(run.exitedNormally && run.status == 0, "\(run.errorText)")
    #expect(
      run.outputText == """
        INV-1: 1350 cents
        INV-2: 2799 cents
        INV-3: refused, noLines(invoice: "INV-3")
        archive: the task ran past its deadline of 300 ms and its worker was stopped
        archive: cancelled

        """)
  }

  /// The example started as a server, then as a client of that server: the
  /// client prints the three counts, and the server's log shows that it
  /// ran all three tasks (not the client's own workers).
  @Test func theServerExampleServesItsClient() throws {
    let program = buildDirectory.appendingPathComponent("procord-server-example").path
    let server = try ServerUnderTest(program: program, options: ["--procord-log-level", "debug"])
    defer { server.ensureStopped() }
    let client = try runProgram(["127.0.0.1", String(server.port)], program: program)
    #expect(client.exitedNormally && client.status == 0, "\(client.errorText)")
    #expect(
      client.outputText == """
        11 words, the longest is "connects"
        10 words, the longest is "process"
        9 words, the longest is "nothing"

        """)
    server.stop()
    let servedAll = server.child.output.wait(timeout: .seconds(10)) {
      $0.components(separatedBy: "task count-words, value").count - 1 == 3
    }
    #expect(servedAll, "the server did not log 3 tasks served: \(server.output)")
    #expect(childProcesses().isEmpty)
  }

  /// Without a server to send its tasks to, the example says how to run it.
  @Test func theServerExampleWithoutArgumentsPrintsItsUsage() throws {
    let run = try runProgram(
      [], program: buildDirectory.appendingPathComponent("procord-server-example").path)
    #expect(run.exitedNormally && run.status == 2)
    #expect(run.outputText.hasPrefix("usage: procord-server-example --procord-server --procord-port PORT"))
  }
}
