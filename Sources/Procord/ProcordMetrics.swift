import CProcord
import CoreMetrics

/// What Procord reports through swift-metrics. Without a backend
/// (`MetricsSystem.bootstrap`), every metric is swift-metrics' no-op: a call
/// that does nothing. Bootstrap before the first delegation: a metric is
/// bound to the backend of the moment it is made.
///
/// - `procord_tasks_started_total`: delegations started (pooled or not).
/// - `procord_tasks_succeeded_total`: tasks that answered with an output.
/// - `procord_tasks_failed_total`, dimension `cause`: `exception`,
///   `unknown_exception`, `no_worker`, `disconnected`, `killed`,
///   `deadline_exceeded`.
/// - `procord_task_duration_seconds` (a timer): from the delegation to its
///   outcome, queue time included.
/// - `procord_pool_queue_length` and `procord_pool_workers` (gauges),
///   dimension `pool`: each ``WorkerPool``'s, after every change it sees.
enum ProcordMetrics {
  /// Whether a backend was bootstrapped when the metrics were made: without
  /// one they are no-ops, and the work of feeding them (a clock reading
  /// and several calls per task, on the loop's thread) is skipped.
  static let isLive = !(MetricsSystem.factory is NOOPMetricsHandler)
  static let tasksStarted = Counter(label: "procord_tasks_started_total")
  static let tasksSucceeded = Counter(label: "procord_tasks_succeeded_total")
  static let taskDuration = Timer(label: "procord_task_duration_seconds", preferredDisplayUnit: .seconds)

  private static let failureCauses: [(procord_outcome_kind_t, String)] = [
    (PROCORD_OUTCOME_EXCEPTION, "exception"),
    (PROCORD_OUTCOME_UNKNOWN_EXCEPTION, "unknown_exception"),
    (PROCORD_OUTCOME_NO_WORKER, "no_worker"),
    (PROCORD_OUTCOME_DISCONNECTED, "disconnected"),
    (PROCORD_OUTCOME_KILLED, "killed"),
    (PROCORD_OUTCOME_TIMED_OUT, "deadline_exceeded"),
  ]
  private static let tasksFailed: [UInt32: Counter] = Dictionary(
    uniqueKeysWithValues: failureCauses.map { kind, cause in
      (kind.rawValue, Counter(label: "procord_tasks_failed_total", dimensions: [("cause", cause)]))
    })

  /// Counts a finished task and times it.
  static func recordOutcome(_ kind: procord_outcome_kind_t, after duration: Duration) {
    if kind == PROCORD_OUTCOME_VALUE {
      tasksSucceeded.increment()
    } else {
      tasksFailed[kind.rawValue]?.increment()
    }
    let (seconds, attoseconds) = duration.components
    taskDuration.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
  }
}
