import Procord

// Both halves of a task at once, so their name and codecs cannot disagree.
let fibo = ProcordTask<Int, Int>(name: "fibo") { n in
  var (previous, current) = (1, 1)
  for _ in 0..<max(0, n - 1) { (previous, current) = (current, previous + current) }
  return current
}

// Started as a worker, this program serves the task and exits. Otherwise
// the closure, the main program, runs with the program's own arguments.
try await Worker.main(tasks: [fibo]) { arguments in
  // Each run is a worker process of its own; these six run at once.
  let values = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
    for n in 25...30 { group.addTask { (n, try await fibo.run(n)) } }
    var values: [Int: Int] = [:]
    for try await (n, value) in group { values[n] = value }
    return values
  }
  for n in 25...30 { print("fibo(\(n)) = \(values[n]!)") }

  // The original library's style: delegate, then poll or wait.
  let process = try delegate(fibo, 40)
  process.wait()
  if case .success(let value) = process.status { print("fibo(40) = \(value)") }
}
