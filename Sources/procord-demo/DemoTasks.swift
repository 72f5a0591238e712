import Procord

#if canImport(Glibc)
import Glibc
#endif

/// An error whose text is all there is to it.
struct DemoError: Error, CustomStringConvertible {
  let description: String
}

/// fibo(0) = fibo(1) = 1, fibo(n) = fibo(n-1) + fibo(n-2); JSON codec, no error codec.
let fibo = ProcordTask<Int, Int>(name: "fibo") { n in try fibonacci(n) }

/// fibo(n), or an error for a negative n or a result past 64 bits.
private func fibonacci(_ n: Int) throws -> Int {
  guard n >= 0 else { throw DemoError(description: "fibo: negative argument \(n)") }
  var (previous, current) = (1, 1)
  for _ in 0..<max(0, n - 1) {
    let (next, overflow) = previous.addingReportingOverflow(current)
    guard !overflow else { throw DemoError(description: "fibo: \(n) is too large for a 64-bit result") }
    (previous, current) = (current, next)
  }
  return current
}

/// n!, as decimal text both ways; errors travel as text in an `X` frame.
let fact = ProcordTask<Int, Int>(
  name: "fact", input: .decimal, output: .decimal, error: .text
) { n in
  guard n >= 0 else { throw DemoError(description: "fact: negative argument") }
  return try (0...n).dropFirst().reduce(1) { product, factor in
    let (next, overflow) = product.multipliedReportingOverflow(by: factor)
    guard !overflow else { throw DemoError(description: "fact: \(n) is too large for a 64-bit result") }
    return next
  }
}

/// The bytes it is given.
let echo = ProcordTask<[UInt8], [UInt8]>(name: "echo", input: .bytes, output: .bytes) { $0 }

/// Dies in the middle of the task: `segv`, `abort` or `exit:N`.
let crash = ProcordTask<String, String>(name: "crash", input: .utf8, output: .utf8) { how in
  // Default dispositions first: the Swift runtime's crash handlers would
  // spend seconds printing a backtrace before the worker dies.
  switch how {
  case "segv":
    signal(SIGSEGV, SIG_DFL)
    raise(SIGSEGV)
  case "abort":
    signal(SIGABRT, SIG_DFL)
    abort()
  case let text where text.hasPrefix("exit:"):
    guard let code = Int32(text.dropFirst(5)) else { break }
    exit(code)
  default:
    break
  }
  throw DemoError(description: "crash: expected segv, abort or exit:N, got \"\(how)\"")
}

/// Sleeps the given number of milliseconds and returns it.
let sleepTask = ProcordTask<Int, Int>(name: "sleep", input: .decimal, output: .decimal) { ms in
  guard ms >= 0 else { throw DemoError(description: "sleep: negative duration") }
  var remaining = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
  var request = remaining
  while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
  return ms
}

/// fibo again, but each call delegates its two halves to two new workers and
/// waits on both at once: workers that delegate to workers.
let rfibo = ProcordTask<Int, Int>(name: "rfibo") { n in try recursiveFibonacci(n) }

/// The whole call tree is alive at once, 2 fibo(n) - 1 processes: 177 for
/// n = 10, and it grows as fast as fibo. The cap keeps it a demo.
let rfiboLimit = 10

private func recursiveFibonacci(_ n: Int) throws -> Int {
  guard n <= rfiboLimit else {
    throw DemoError(
      description: "rfibo: \(n) would start \(2 * (try fibonacci(n)) - 1) processes; the limit is \(rfiboLimit)")
  }
  guard n >= 2 else { return 1 }
  let first = try delegate(rfibo, n - 1)
  let second = try delegate(rfibo, n - 2)
  Waiter.waitForAll([first, second])
  return try first.run() + second.run()
}

/// Prints N numbered lines to its standard output (Swift's `print`, buffered)
/// and N to its standard error (`write(2)`), then returns N: what a task
/// prints reaches the main program's terminal, whichever mode it runs in.
let printTask = ProcordTask<Int, Int>(name: "print", input: .decimal, output: .decimal) { n in
  guard n >= 0 else { throw DemoError(description: "print: negative count") }
  for line in 0..<n {
    print("print: line \(line + 1) of \(n)")
    let text = Array("print: error line \(line + 1) of \(n)\n".utf8)
    _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
  }
  return n
}

/// Where `progress` reports: custom destination `1`.
let progressDestination = OutputDestination("1")

/// Sends N progress messages to custom destination `1`, a few milliseconds
/// apart, then returns N.
let progress = ProcordTask<Int, Int>(name: "progress", input: .decimal, output: .decimal) { n in
  guard n >= 0 else { throw DemoError(description: "progress: negative count") }
  for step in stride(from: 1, through: n, by: 1) {
    progressDestination.write("step \(step) of \(n)")
    var pause = timespec(tv_sec: 0, tv_nsec: 20_000_000)
    nanosleep(&pause, nil)
  }
  progressDestination.flush()
  return n
}

/// Maps N MiB, writes to every page and reads each back, then unmaps them
/// and returns N. A mapping rather than malloc: the optimizer may drop a
/// malloc'd block that nothing reads (a release build did, and "allocated"
/// 1 GiB under a 256 MiB limit in no time), never a mapping. An allocation
/// the worker's limits refuse (`run --limit-memory`) is a clean error, where
/// Swift's own allocations would crash the worker.
let alloc = ProcordTask<Int, Int>(name: "alloc", input: .decimal, output: .decimal, error: .text) { mebibytes in
  guard mebibytes >= 0, mebibytes <= 1 << 20 else {
    throw DemoError(description: "alloc: \(mebibytes) MiB is out of range")
  }
  let size = mebibytes << 20
  guard size > 0 else { return 0 }
  let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
  guard let memory = mapped, memory != UnsafeMutableRawPointer(bitPattern: -1) else {
    throw DemoError(description: "alloc: cannot allocate \(mebibytes) MiB: \(String(cString: strerror(errno)))")
  }
  defer { munmap(memory, size) }
  let page = sysconf(Int32(_SC_PAGESIZE))
  let bytes = memory.assumingMemoryBound(to: UInt8.self)
  for offset in stride(from: 0, to: size, by: page) { bytes[offset] = UInt8(truncatingIfNeeded: offset / page | 1) }
  var kept = 0
  for offset in stride(from: 0, to: size, by: page) where bytes[offset] == UInt8(truncatingIfNeeded: offset / page | 1)
  {
    kept += 1
  }
  guard kept == size / page else {
    throw DemoError(description: "alloc: only \(kept) of \(size / page) pages kept what was written")
  }
  return mebibytes
}

/// Every task this program serves as a worker.
let servedTasks: [any ServableTask] = [fibo, fact, echo, crash, sleepTask, rfibo, printTask, progress, alloc]
