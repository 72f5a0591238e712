import Procord

// A trivial task, many times over: where sending tasks ahead pays.
let square = ProcordTask<Int, Int>(name: "square", input: .decimal, output: .decimal) { $0 * $0 }

try Worker.runIfRequested(tasks: [square])

var configuration = WorkerPool.Configuration(maximumWorkers: 2, minimumWorkers: 2)
configuration.tasksSentAhead = 8  // each busy worker gets up to 8 more tasks at once
let pool = try WorkerPool([.local(.current)], configuration: configuration)

// 10,000 tasks in flight at once; only idempotent tasks are sent ahead.
let idempotent = DelegationOptions(isIdempotent: true)
let processes = try (1...10_000).map { try pool.delegate(square, $0, options: idempotent) }
var sum = 0
for process in processes { sum += try await process.value }
print("sum of the squares of 1...10000: \(sum)")

// Tasks awaited one after the other: awaited on Procord's own thread, each
// round trip saves two thread switches.
let outputs = try await withTaskExecutorPreference(ProcordLoopExecutor.shared) {
  var outputs: [Int] = []
  for input in 1...5 { outputs.append(try await pool.run(square, input)) }
  return outputs
}
print("one after the other: \(outputs)")
await pool.shutdown()
