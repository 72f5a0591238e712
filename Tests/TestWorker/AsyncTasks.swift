// Tasks with async bodies, for the tests of Swift concurrency in workers.

import Procord

#if canImport(Glibc)
import Glibc
#endif

/// `async-double N`: 2 N, after a suspension.
let asyncDouble = ProcordTask<Int, Int>(name: "async-double", input: .decimal, output: .decimal) { n in
  await Task.yield()
  return 2 * n
}

/// `wait-for-cancellation FIFO`: writes `started` to the FIFO, sleeps up to
/// a minute, then writes `cancelled` (it saw its cancellation) or `slept`,
/// and returns the same word. The test reads the FIFO: it learns that the
/// task runs, then whether the body saw the cancellation, without sleeping.
let waitForCancellation = ProcordTask<String, String>(
  name: "wait-for-cancellation", input: .utf8, output: .utf8
) { fifo in
  let descriptor = open(fifo, O_WRONLY | O_CLOEXEC)
  guard descriptor >= 0 else { throw TextError("open \(fifo): errno \(errno)") }
  defer { close(descriptor) }
  func say(_ word: String) {
    _ = Array((word + "\n").utf8).withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
  }
  say("started")
  try? await Task.sleep(for: .seconds(60))
  let word = Task.isCancelled ? "cancelled" : "slept"
  say(word)
  return word
}
