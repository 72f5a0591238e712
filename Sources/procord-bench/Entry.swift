// procord-bench: what delegating a task costs on this machine, measured
// against the machine's own floors and against Python's process pools.
import CProcordBench
import Procord

#if canImport(Glibc)
import Glibc
#endif

@main
enum Entry {
  static func main() async {
    // Modes that must not pay for anything else, checked before anything
    // else: `--noop` is the bare process start that spawn-rtt is compared
    // with, and `--floor-peer` is the C end of the floor measurements.
    let arguments = CommandLine.arguments
    if arguments.count == 2 && arguments[1] == "--noop" {
      exit(0)
    }
    if arguments.count == 3 && arguments[1] == "--floor-peer" {
      exit(procord_bench_peer_run(arguments[2], 3) == 0 ? 0 : 1)
    }
    // Worker and server modes: the benchmark delegates to itself.
    do {
      try Worker.runIfRequested(tasks: BenchTasks.all + SoakTasks.all, maxMessageSize: BenchTasks.maxMessageSize)
    } catch {
      progress("\(error)")
      exit(2)
    }
    await BenchCommand.main()
  }
}
