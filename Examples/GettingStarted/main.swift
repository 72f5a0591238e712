import Procord

// Both halves of a task at once, so their name and codecs cannot disagree.
let fibo = ProcordTask<Int, Int>(name: "fibo") { n in
  var (previous, current) = (1, 1)
  for _ in 0..<max(0, n - 1) { (previous, current) = (current, previous + current) }
  return current
}

// Started as a worker, this serves the task and exits; otherwise it returns.
try Worker.runIfRequested(tasks: [fibo])

// The main program: each delegation runs in a worker process of its own.
let inputs = Array(25...30)
let processes = try inputs.map { try delegate(fibo, $0) }
Waiter.waitForAll(processes)
for (n, process) in zip(inputs, processes) {
  switch process.status {
  case .success(let value): print("fibo(\(n)) = \(value)")
  case .exception(let error): print("fibo(\(n)) raised: \(error)")
  case .error(let error): print("fibo(\(n)) failed: \(error)")
  case .working: print("fibo(\(n)) is still working")
  }
}

// The same with async/await; cancelling the awaiting task kills the worker.
let value = try await delegate(fibo, 40).value
print("fibo(40) = \(value)")
