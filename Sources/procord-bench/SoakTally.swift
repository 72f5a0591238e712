import Synchronization

/// The soak's counts: every delegated task once, by kind, route, final
/// status and verdict, and the first unexpected outcomes in full. Its size
/// does not grow with the number of tasks, so it cannot pass for a leak.
final class SoakTally: Sendable {
  /// How many unexpected outcomes are kept in full.
  static let examplesKept = 10

  struct Key: Hashable, Sendable {
    var kind: SoakKind
    var route: SoakRoute
    var status: String
    var verdict: SoakVerdict
  }

  struct Snapshot: Sendable {
    var counts: [Key: Int] = [:]
    var examples: [String] = []
    /// Tasks handed to `delegate` (or a pool), and outcomes recorded: the
    /// same once no task is running.
    var delegated = 0
    var recorded = 0
    /// Tasks delegated to each route, refused ones excepted.
    var accepted: [SoakRoute: Int] = [:]

    var unexpected: Int { counts.filter { $0.key.verdict == .unexpected }.values.reduce(0, +) }

    /// Counts summed over whatever `group` keeps of a key.
    func total<Group: Hashable>(by group: (Key) -> Group) -> [Group: Int] {
      counts.reduce(into: [:]) { totals, entry in totals[group(entry.key), default: 0] += entry.value }
    }
  }

  private let state = Mutex(Snapshot())

  /// A task is about to be delegated.
  func delegating() { state.withLock { $0.delegated += 1 } }

  /// A task was delegated to `route` (not refused).
  func accepted(by route: SoakRoute) { state.withLock { $0.accepted[route, default: 0] += 1 } }

  /// A task's final status, exactly once per task.
  func record(_ outcome: SoakOutcome) {
    let key = Key(kind: outcome.plan.kind, route: outcome.plan.route, status: outcome.status, verdict: outcome.verdict)
    let isNewExample = state.withLock { state -> Bool in
      state.recorded += 1
      state.counts[key, default: 0] += 1
      guard outcome.verdict == .unexpected, state.examples.count < Self.examplesKept else { return false }
      state.examples.append(outcome.detail ?? outcome.status)
      return true
    }
    if isNewExample { progress("soak: unexpected: \(outcome.detail ?? outcome.status)") }
  }

  var snapshot: Snapshot { state.withLock { $0 } }
  var recorded: Int { state.withLock { $0.recorded } }
}
