import CTestSupport
import Foundation
import Testing

/// What Procord reports through swift-metrics, read from the in-memory
/// backend of `procord-test-worker metrics` (see its header): four tasks on
/// a pool of one worker, two that succeed, one whose worker dies of
/// SIGSEGV, one that runs past a deadline of 500 ms.
///
/// The scenario runs in a child process because swift-metrics takes one
/// bootstrap per process and binds each metric to the backend of the moment
/// it is made: bootstrapping here would depend on what other tests made
/// first, and change it for the ones after.
@Suite(.serialized) struct MetricsTests {
  /// One run, shared by the tests: the scenario is deterministic, and the
  /// tests differ only in what they read of it.
  static let scenario = Result { try MetricsScenario() }

  @Test func theScenarioExitsZeroAndReportsEveryMetricOnce() throws {
    let scenario = try Self.scenario.get()
    #expect(scenario.run.exitedNormally && scenario.run.status == 0, "\(scenario)")
    // Every metric, and no other: a lost dimension or a renamed label shows
    // here. All six failure counters exist: Procord makes them together.
    #expect(
      scenario.metrics.keys.sorted() == [
        "procord_pool_queue_length{pool=metrics-test}",
        "procord_pool_workers{pool=metrics-test}",
        "procord_task_duration_seconds",
        "procord_tasks_failed_total{cause=deadline_exceeded}",
        "procord_tasks_failed_total{cause=disconnected}",
        "procord_tasks_failed_total{cause=exception}",
        "procord_tasks_failed_total{cause=killed}",
        "procord_tasks_failed_total{cause=no_worker}",
        "procord_tasks_failed_total{cause=unknown_exception}",
        "procord_tasks_started_total",
        "procord_tasks_succeeded_total",
      ], "\(scenario)")
  }

  @Test func everyTaskIsCountedAsStartedAndTheTwoAnswersAsSucceeded() throws {
    let scenario = try Self.scenario.get()
    #expect(scenario.metrics["procord_tasks_started_total"] == "4", "\(scenario)")
    #expect(scenario.metrics["procord_tasks_succeeded_total"] == "2", "\(scenario)")
  }

  /// The crash is a disconnection and the deadline its own cause, though
  /// its worker was killed too: each failure is counted once, under its
  /// cause, and the other causes stay at zero.
  @Test func eachFailureIsCountedOnceUnderItsCause() throws {
    let scenario = try Self.scenario.get()
    let expected = [
      "deadline_exceeded": "1", "disconnected": "1",
      "exception": "0", "unknown_exception": "0", "no_worker": "0", "killed": "0",
    ]
    for (cause, count) in expected {
      #expect(
        scenario.metrics["procord_tasks_failed_total{cause=\(cause)}"] == count,
        "cause \(cause): \(scenario)")
    }
  }

  /// Each task is timed once; the durations are in nanoseconds, positive,
  /// and the longest is the deadline's: 500 ms, ended within the tests'
  /// margin (`deadlineMargin`), far from the 60 s its sleep asked for (the
  /// test worker prints a duration out of range in full, which makes this
  /// comparison fail).
  @Test func everyTaskIsTimedOnceInTheRightUnit() throws {
    let scenario = try Self.scenario.get()
    #expect(
      scenario.metrics["procord_task_duration_seconds"] == "count=4 shortest=positive longest=480ms..900ms",
      "\(scenario)")
  }

  /// The gauges are recorded, and their values follow the pool: its one
  /// worker at most (never more than `maximumWorkers`), a task waiting
  /// while a worker starts (the first task, and the one after the crash),
  /// and nothing queued and no worker left once the killed one is gone.
  @Test func thePoolGaugesFollowItsQueueAndItsWorkers() throws {
    let scenario = try Self.scenario.get()
    for gauge in ["procord_pool_queue_length{pool=metrics-test}", "procord_pool_workers{pool=metrics-test}"] {
      let fields = scenario.fields(of: gauge)
      #expect((fields["count"].flatMap { Int($0) } ?? 0) > 0, "\(gauge) was never recorded: \(scenario)")
      #expect(fields["last"] == "0", "\(gauge): \(scenario)")
      #expect(fields["max"] == "1", "\(gauge): \(scenario)")
    }
  }

  /// The deadline killed the task's `sleep` with its worker's process
  /// group; orphaned, it came to this process (a subreaper) and was reaped
  /// by the scenario, like everything else the scenario started.
  @Test func theDeadlineKilledTheTasksChildAndNothingIsLeft() throws {
    let scenario = try Self.scenario.get()
    #expect(scenario.orphanedSleeps.count == 1, "orphaned sleeps: \(scenario.orphanedSleeps)")
    for (pid, status) in scenario.orphanedSleeps {
      let signal = status & 0x7f
      #expect(signal == SIGTERM || signal == SIGKILL, "sleep \(pid) ended with status \(status)")
    }
    #expect(scenario.childrenLeft.isEmpty, "children left: \(scenario.childrenLeft)")
  }
}

/// One run of `procord-test-worker metrics`, its output read as metrics.
struct MetricsScenario: CustomStringConvertible {
  let run: ProgramRun
  /// Each line's first word (the label, with its dimensions in braces) and
  /// the rest of the line.
  let metrics: [String: String]
  /// The `sleep` processes orphaned to this process, by pid, with their
  /// wait status.
  let orphanedSleeps: [Int32: Int32]
  /// This process's children once those are reaped.
  let childrenLeft: [Int32]

  init() throws {
    warmUp()  // a subreaper, so that what the scenario orphans comes here
    run = try runProgram(["metrics"], program: testWorkerPath)
    var metrics: [String: String] = [:]
    for line in run.outputText.split(separator: "\n") {
      let words = line.split(separator: " ", maxSplits: 1)
      metrics[String(words[0])] = words.count > 1 ? String(words[1]) : ""
    }
    self.metrics = metrics
    var orphanedSleeps: [Int32: Int32] = [:]
    for pid in childProcesses() where Self.commandName(pid) == "sleep" {
      // It was sent SIGTERM with its worker (or SIGKILL at the worker's
      // reap); one that lives on (a bug) is ended with SIGUSR1, which shows.
      if procord_test_wait_for_exit(pid, 5000) != 1 { kill(pid, SIGUSR1) }
      var status: Int32 = 0
      while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
      orphanedSleeps[pid] = status
    }
    self.orphanedSleeps = orphanedSleeps
    childrenLeft = childProcesses()
  }

  /// The `name=value` fields of a metric's line.
  func fields(of key: String) -> [String: String] {
    var fields: [String: String] = [:]
    for word in (metrics[key] ?? "").split(separator: " ") {
      let pair = word.split(separator: "=", maxSplits: 1)
      if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
    }
    return fields
  }

  /// The process's command name (kept by a zombie too).
  static func commandName(_ pid: Int32) -> String? {
    (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
      .trimmingCharacters(in: .whitespacesAndNewlines)
  }

  var description: String {
    "status \(run.status)\nstdout:\n\(run.outputText)stderr:\n\(run.errorText)"
  }
}
