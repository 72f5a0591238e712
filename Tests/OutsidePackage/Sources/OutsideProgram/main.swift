// A program by a user of Procord, in a package of its own that depends on
// Procord as any package would (OutsidePackageTests builds and runs it). It
// uses only the public API, as the README and the doc comments show it, and
// prints one line per check for the test to read: `NAME: what happened`.
import Foundation
import Procord

struct Order: Codable, Sendable, Equatable {
  var id: Int
  var quantities: [String: Int]
}

struct Receipt: Codable, Sendable, Equatable {
  var orderID: Int
  var itemCount: Int
  var lines: [String]
}

enum OrderError: Error, Codable, Equatable {
  case empty(orderID: Int)
}

/// What the task computes, here too, to check what the workers send back.
func receipt(for order: Order) throws -> Receipt {
  guard !order.quantities.isEmpty else { throw OrderError.empty(orderID: order.id) }
  return Receipt(
    orderID: order.id, itemCount: order.quantities.values.reduce(0, +),
    lines: order.quantities.sorted { $0.key < $1.key }.map { "\($0.value) x \($0.key)" })
}

let makeReceipt = ProcordTask<Order, Receipt>(name: "receipt", error: .json(OrderError.self)) { order in
  try receipt(for: order)
}

let nap = ProcordTask<Int, Int>(name: "nap") { milliseconds in
  try await Task.sleep(for: .milliseconds(milliseconds))
  return milliseconds
}

/// Writes its pid to the FIFO at `path`, waits until its Swift task is
/// cancelled, then says so there.
let waitForCancellation = ProcordTask<String, String>(name: "wait-for-cancellation") { path in
  guard let fifo = FileHandle(forWritingAtPath: path) else { return "could not open \(path)" }
  fifo.write(Data("\(getpid())\n".utf8))
  while !Task.isCancelled {
    try? await Task.sleep(for: .milliseconds(20))
  }
  fifo.write(Data("saw Task.isCancelled\n".utf8))
  try fifo.close()
  return "cancelled"
}

let parse = ProcordTask<String, Int>(name: "parse") { text in
  Int(text)!  // the bug on purpose: a crash of the worker, not of this program
}

/// A body that uses the main actor: the worker must not hold it while the
/// body runs (Worker.main serves on a thread of its own).
@MainActor enum Tally { static var total = 0 }
let addOnMainActor = ProcordTask<Int, Int>(name: "add-on-main-actor") { n in
  await MainActor.run {
    Tally.total += n
    return Tally.total
  }
}

func mainActorInTheWorker() async {
  do {
    let total = try await addOnMainActor.run(5, options: DelegationOptions(deadline: .seconds(10)))
    print("main actor: \(total)")
  } catch {
    print("main actor: failed: \(oneLine(error))")
  }
}

/// The usual Cocoa-style delegate, whose name is also Procord's poll-style
/// function: inside `ReceiptPrinter`, `delegate` is the property.
protocol ReceiptPrinterDelegate: AnyObject {
  func printer(_ printer: ReceiptPrinter, didPrint receipt: Receipt)
}

final class ReceiptPrinter {
  weak var delegate: ReceiptPrinterDelegate?

  /// The receipt twice: awaited with `run`, and through the poll layer.
  func printTwice(_ order: Order) async throws -> (Receipt, Receipt) {
    let awaited = try await makeReceipt.run(order)
    let process = try Procord.delegate(makeReceipt, order)
    let polled = try await process.value
    delegate?.printer(self, didPrint: awaited)
    return (awaited, polled)
  }
}

final class PrintCounter: ReceiptPrinterDelegate {
  var printed = 0
  func printer(_ printer: ReceiptPrinter, didPrint receipt: Receipt) { printed += 1 }
}

/// One line of text, whatever newlines the error's description has.
func oneLine(_ error: any Error) -> String {
  String(describing: error).replacingOccurrences(of: "\n", with: " | ")
}

/// Reads the FIFO at `path` on a thread of its own (opening it and reading
/// block), handing each line to `onLine` as it comes, until its writer
/// closes it.
func readLines(ofFIFO path: String, onLine: @escaping @Sendable (String) -> Void) {
  Thread.detachNewThread {
    guard let file = fopen(path, "r") else { return }
    defer { fclose(file) }
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    defer { free(line) }
    while getline(&line, &capacity, file) > 0, let line {
      onLine(String(cString: line).trimmingCharacters(in: .newlines))
    }
    onLine("")  // the end
  }
}

func concurrentReceipts() async {
  let orders = (1...50).map { Order(id: $0, quantities: ["apple": $0, "pear": 50 - $0 + 1]) }
  do {
    let receipts = try await withThrowingTaskGroup(of: (Int, Receipt).self) { group in
      for order in orders { group.addTask { (order.id, try await makeReceipt.run(order)) } }
      var receipts: [Int: Receipt] = [:]
      for try await (id, receipt) in group { receipts[id] = receipt }
      return receipts
    }
    let right = try orders.filter { receipts[$0.id] == (try receipt(for: $0)) }.count
    print("concurrent: \(receipts.count) answers, \(right) right")
  } catch {
    print("concurrent: failed: \(oneLine(error))")
  }
}

func customError() async {
  do {
    let receipt = try await makeReceipt.run(Order(id: 7, quantities: [:]))
    print("custom error: none, got \(receipt)")
  } catch let error as OrderError {
    print("custom error: caught as OrderError: \(error)")
  } catch {
    print("custom error: caught as \(type(of: error)): \(oneLine(error))")
  }
}

func deadline() async {
  let start = ContinuousClock.now
  do {
    let slept = try await nap.run(30_000, options: DelegationOptions(deadline: .milliseconds(300)))
    print("deadline: none, slept \(slept) ms")
  } catch let error as ProcordError {
    let elapsed = (ContinuousClock.now - start).components
    let milliseconds = elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000
    print("deadline: ProcordError \(error.code) after \(milliseconds) ms")
  } catch {
    print("deadline: \(type(of: error)): \(oneLine(error))")
  }
}

func cancellation() async {
  let path = NSTemporaryDirectory() + "outside-cancellation-\(getpid())"
  guard mkfifo(path, 0o600) == 0 else {
    print("cancellation: mkfifo \(path): errno \(errno)")
    return
  }
  defer { unlink(path) }
  let (lines, linesWriter) = AsyncStream.makeStream(of: String.self)
  readLines(ofFIFO: path) { linesWriter.yield($0) }
  let waiting = Task { try await waitForCancellation.run(path) }
  var fromWorker = lines.makeAsyncIterator()
  // The worker runs the body once it has written its pid.
  guard let pid = await fromWorker.next().flatMap({ Int32($0) }) else {
    print("cancellation: the worker never said its pid")
    return
  }
  waiting.cancel()
  var outcome: String
  do {
    outcome = "no error, the task returned \(try await waiting.value)"
  } catch is CancellationError {
    outcome = "CancellationError"
  } catch {
    outcome = "\(type(of: error)): \(oneLine(error))"
  }
  let workerGone = kill(pid, 0) == -1 && errno == ESRCH
  let said = await fromWorker.next() ?? ""
  print("cancellation: \(outcome); the body said \"\(said)\"; worker \(workerGone ? "gone" : "still there")")
}

func crash() async {
  do {
    let number = try await parse.run("not a number")
    print("crash: none, got \(number)")
  } catch let error as ProcordError {
    print("crash: ProcordError \(error.code): \(oneLine(error))")
  } catch {
    print("crash: \(type(of: error)): \(oneLine(error))")
  }
}

func nameCollision() async {
  let printer = ReceiptPrinter()
  let counter = PrintCounter()
  printer.delegate = counter
  do {
    let (awaited, polled) = try await printer.printTwice(Order(id: 3, quantities: ["fig": 2]))
    print("collision: \(awaited.lines) and \(polled.lines), delegate told \(counter.printed) time(s)")
  } catch {
    print("collision: failed: \(oneLine(error))")
  }
}

try await Worker.main(tasks: [makeReceipt, nap, waitForCancellation, parse, addOnMainActor]) { _ in
  await concurrentReceipts()
  await customError()
  await deadline()
  await cancellation()
  await crash()
  await nameCollision()
  await mainActorInTheWorker()
}
