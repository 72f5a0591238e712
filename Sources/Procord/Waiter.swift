import CProcord

/// Waits on several delegated processes at once, blocking the calling thread.
///
/// Each wait sleeps on a condition variable that the loop thread signals
/// when a worker finishes; nothing polls. A process counts as finished once
/// its status is final and its worker is done with it (reaped, unless it is
/// a pooled worker that answered and moved on). For async code,
/// `await` each process's ``DelegatedProcess/value`` instead.
public enum Waiter {
  /// Blocks until at least one of `processes` has finished, or `timeout`
  /// has passed. Returns the indices of those that have finished, in order
  /// (empty after a timeout, or for an empty list).
  public static func waitForAny(_ processes: [AnyDelegatedProcess], timeout: Duration? = nil)
    -> [Int]
  {
    guard !processes.isEmpty else { return [] }
    wait(processes, all: false, timeout: timeout)
    return processes.indices.filter { procord_delegation_is_finished(processes[$0].handle) != 0 }
  }

  /// Blocks until every one of `processes` has finished, or `timeout` has
  /// passed. Returns `true` if they all finished.
  @discardableResult
  public static func waitForAll(_ processes: [AnyDelegatedProcess], timeout: Duration? = nil)
    -> Bool
  {
    wait(processes, all: true, timeout: timeout) == processes.count
  }

  @discardableResult
  private static func wait(_ processes: [AnyDelegatedProcess], all: Bool, timeout: Duration?)
    -> Int
  {
    let handles: [OpaquePointer?] = processes.map { $0.handle }
    let milliseconds = waitMilliseconds(timeout)
    return withExtendedLifetime(processes) {
      handles.withUnsafeBufferPointer { buffer in
        Int(
          procord_delegation_wait(
            Runtime.shared.loop, buffer.baseAddress, buffer.count, all ? 1 : 0, milliseconds))
      }
    }
  }
}
