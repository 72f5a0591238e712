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
    print("Started \(all.count) workers (pids \(all.compactMap(\.pid).map(String.init).joined(separator: ", "))); waiting on all at once.\n")
    Waiter.waitForAll(all)

    show("fibo(30)", fibo30.status, note: "a JSON-coded task")
    show("fact(10)", fact10.status, note: "decimal text both ways")
    show("fact(-1)", factNegative.status, note: "the error came back through fact's error codec")
    show("fibo(-1)", fiboNegative.status, note: "fibo has no error codec: the error travels as text")
    show("crash(segv)", segv.status, note: "the worker died; the main program did not")
    show("echo", hello.status.map { String(decoding: $0, as: UTF8.self) }, note: "raw bytes")
    print("\nTry: procord-demo run fibo 10 20 30   or   procord-demo run rfibo 8")
    return 0
  } catch {
    printError("procord-demo: \(error)")
    return 1
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
