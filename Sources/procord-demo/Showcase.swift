import Procord

/// What `procord-demo` with no arguments shows: a few delegations, one that
/// raises and one that crashes, side by side with the main program unharmed.
func showcase() -> Int32 {
  print("Procord showcase: each task below runs in a worker process of its own.\n")
  do {
    let fibo30 = try delegate(fibo, 30)
    let fact10 = try delegate(fact, 10)
    let factNegative = try delegate(fact, -1)
    let fiboNegative = try delegate(fibo, -1)
    let segv = try delegate(crash, "segv")
    let hello = try delegate(echo, Array("hello, worker".utf8))
    let all: [AnyDelegatedProcess] = [fibo30, fact10, factNegative, fiboNegative, segv, hello]
    print(
      "Started \(all.count) workers (pids \(all.compactMap(\.pid).map(String.init).joined(separator: ", "))); waiting on all at once.\n"
    )
    Waiter.waitForAll(all)

    show("fibo(30)", fibo30.status, note: "a JSON-coded task")
    show("fact(10)", fact10.status, note: "decimal text both ways")
    show("fact(-1)", factNegative.status, note: "the error came back through fact's error codec")
    show("fibo(-1)", fiboNegative.status, note: "fibo has no error codec: the error travels as text")
    show("crash(segv)", segv.status, note: "the worker died; the main program did not")
    show("echo", hello.status.map { String(decoding: $0, as: UTF8.self) }, note: "raw bytes")
    try showPool()
    print(
      "\nTry: procord-demo run fibo 10 20 30   or   procord-demo run --pool 2 fact 1 2 3   or   procord-demo run rfibo 8"
    )
    return 0
  } catch {
    printError("procord-demo: \(error)")
    return 1
  }
}

/// A pool: many tasks through a few workers that stay alive between tasks.
private func showPool() throws {
  let pool = try WorkerPool(workers: 2)
  defer { pool.shutdownAndWait() }
  let start = ContinuousClock.now
  let processes = try (1...1000).map { try pool.delegate(fact, $0 % 20) }
  Waiter.waitForAll(processes)
  let elapsed = ContinuousClock.now - start
  let failed = processes.filter { if case .success = $0.status { return false } else { return true } }.count
  let statistics = pool.statistics
  print(
    """

    A pool of 2 workers ran 1000 fact tasks (\(failed) failed) in \(elapsed.formattedMilliseconds):
      \(statistics.workersStarted) worker processes started in all, reused task after task.
    """)
}

extension Duration {
  /// `12 ms`.
  var formattedMilliseconds: String {
    let (seconds, attoseconds) = components
    return "\(seconds * 1000 + attoseconds / 1_000_000_000_000_000) ms"
  }
}

private func show<Output>(_ call: String, _ status: Status<Output>, note: String) {
  let outcome: String
  switch status {
  case .success(let output): outcome = "= \(output)"
  case .exception(let error): outcome = "raised: \(error)"
  case .error(let error): outcome = "failed: \(error)"
  case .working: outcome = "still working"
  }
  print("  \(call) \(outcome)\n      (\(note))")
}

extension Status {
  /// The same status with the success value transformed.
  func map<T: Sendable>(_ transform: (Output) -> T) -> Status<T> {
    switch self {
    case .working: return .working
    case .success(let output): return .success(transform(output))
    case .exception(let error): return .exception(error)
    case .error(let error): return .error(error)
    }
  }
}
