// The mistake that Worker.main makes impossible to write: a program that
// delegates before it serves. Each worker of it runs this main again, and
// would delegate again, without end, if Procord did not refuse. Every
// process of it writes its pid to the file OUTSIDE_PID_LOG names, so that
// the test counts them all.
import Foundation
import Procord

if let log = ProcessInfo.processInfo.environment["OUTSIDE_PID_LOG"] {
  let descriptor = open(log, O_WRONLY | O_APPEND | O_CREAT, 0o600)
  _ = "\(getpid())\n".withCString { write(descriptor, $0, strlen($0)) }
  close(descriptor)
}

let double = ProcordTask<Int, Int>(name: "double") { $0 * 2 }

do {
  print("pid \(getpid()): 21 doubled is \(try await double.run(21))")
} catch {
  print("pid \(getpid()): \(String(describing: error).replacingOccurrences(of: "\n", with: " | "))")
  exit(1)
}

try Worker.runIfRequested(tasks: [double])
