import Procord

#if canImport(Glibc)
import Glibc
#endif

// Tasks for a pool are made like any other.
let collatz = ProcordTask<Int, Int>(name: "collatz") { start in
  var (n, steps) = (start, 0)
  while n != 1 { (n, steps) = (n % 2 == 0 ? n / 2 : 3 * n + 1, steps + 1) }
  return steps
}
let nap = ProcordTask<Int, Int>(name: "nap") { milliseconds in
  usleep(useconds_t(milliseconds) * 1000)
  return milliseconds
}

try Worker.runIfRequested(tasks: [collatz, nap])

// Up to four workers, each this executable again, kept between tasks.
let pool = try WorkerPool(workers: 4)

// 20,000 tasks through those workers, results in input order.
let steps = try await pool.map(collatz, 1...20_000)
let longest = steps.indices.max { steps[$0] < steps[$1] }!
print("longest chain below 20001 starts at \(longest + 1): \(steps[longest]) steps")

// A task past its deadline is killed (its worker too; the pool starts another).
do {
  _ = try await pool.run(nap, 10_000, options: DelegationOptions(deadline: .milliseconds(200)))
} catch let error as ProcordError where error.code == .deadlineExceeded {
  print("nap(10000): \(error.message)")
}

let statistics = pool.statistics
print("\(statistics.tasksFinished) tasks, \(statistics.workersStarted) worker processes started")
await pool.shutdown()
