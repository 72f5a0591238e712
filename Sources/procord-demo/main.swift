import Procord

#if canImport(Glibc)
import Glibc
#endif

/// procord-demo: a main program and a worker in one executable.
///
///     procord-demo                      a short showcase
///     procord-demo run TASK INPUT...    delegate TASK once per INPUT
///     procord-demo --procord-hostname H run TASK INPUT...
///                                       the same, on the worker server H
///     procord-demo --procord-worker     serve the tasks on stdin/stdout

func printError(_ text: String) {
  var bytes = Array((text + "\n").utf8)[...]
  while !bytes.isEmpty {
    let written = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    if written < 0 && errno == EINTR { continue }
    if written <= 0 { return }
    bytes = bytes.dropFirst(written)
  }
}

let usageText = """
  usage: procord-demo [--procord-hostname HOST [--procord-port PORT]]    run a short showcase
         procord-demo run [--sequential] [--pool N] [--hosts HOST:PORT,...]
                          [--timeout SECONDS] [--limit-memory MIB]
                          [--worker-program PATH [--worker-arg ARG]...]
                          [--procord-hostname HOST [--procord-port PORT]]
                          [SECURITY...] TASK INPUT...
         procord-demo --procord-worker        serve tasks on stdin/stdout
         procord-demo --procord-server [--procord-hostname HOST] [--procord-port PORT]
                      [--procord-max-simultaneous-tasks N] [--procord-reuse-address]
                      [--procord-dont-fork] [--procord-log-level LEVEL] [SECURITY...]
                      [--procord-tls-require-client-cert] [--procord-handshake-timeout MS]
                                              serve tasks over TCP
  SECURITY (docs/SECURITY.md): [--procord-tls] [--procord-tls-cert FILE] [--procord-tls-key FILE]
           [--procord-tls-ca FILE] [--procord-tls-server-name NAME]
           [--procord-secret-file FILE | --procord-secret-env VARIABLE]
  tasks: \(runnableTasks.map(\.name).joined(separator: ", "))
  """

/// Reports a usage error on stderr; returns the exit status for it.
func usage(_ problem: String) -> Int32 {
  printError("procord-demo: \(problem)")
  printError(usageText)
  return 2
}

do {
  try Worker.runIfRequested(tasks: servedTasks)
} catch {
  printError("procord-demo: \(error)")
  exit(2)
}

// Without the --procord-* options before them (--procord-hostname H sends
// every task to the server H).
let arguments = ((try? Worker.programArguments()) ?? Array(CommandLine.arguments.dropFirst()))[...]
switch arguments.first {
case nil: exit(showcase())
case "run": exit(runCommand(arguments.dropFirst()))
case "-h", "--help":
  print("procord-demo: a main program and a worker in one executable\n" + usageText)
  exit(0)
default: exit(usage("unknown command \(arguments.first!)"))
}
