import Procord

// Any Codable type can be a task's input or output: it travels as JSON.
struct Invoice: Codable, Sendable {
  struct Line: Codable, Sendable {
    var item: String
    var quantity: Int
    var unitPriceCents: Int
  }
  var number: String
  var lines: [Line]
}

struct InvoiceTotal: Codable, Sendable {
  var number: String
  var totalCents: Int
}

// The task's own error. Codable, and named in the task's ErrorCodec, so the
// main program catches it as itself.
enum InvoiceError: Error, Codable {
  case noLines(invoice: String)
}

let total = ProcordTask<Invoice, InvoiceTotal>(name: "total", error: .json(InvoiceError.self)) { invoice in
  guard !invoice.lines.isEmpty else { throw InvoiceError.noLines(invoice: invoice.number) }
  let cents = invoice.lines.reduce(0) { $0 + $1.quantity * $1.unitPriceCents }
  return InvoiceTotal(number: invoice.number, totalCents: cents)
}

// A long async job. When the main program cancels it (or its deadline
// passes), the body's Swift task is cancelled: it stops at the next check.
let archive = ProcordTask<[Invoice], Int>(name: "archive") { invoices in
  var archived = 0
  while !Task.isCancelled {
    try? await Task.sleep(for: .milliseconds(50))  // stands for a slow upload
    archived += 1
  }
  return archived
}

try await Worker.main(tasks: [total, archive]) { _ in
  let invoices = [
    Invoice(number: "INV-1", lines: [.init(item: "paper", quantity: 3, unitPriceCents: 450)]),
    Invoice(
      number: "INV-2",
      lines: [
        .init(item: "pens", quantity: 10, unitPriceCents: 120),
        .init(item: "stapler", quantity: 1, unitPriceCents: 1599),
      ]),
    Invoice(number: "INV-3", lines: []),
  ]

  // Each run is a worker process of its own; the task's error is itself.
  for invoice in invoices {
    do {
      let result = try await total.run(invoice)
      print("\(result.number): \(result.totalCents) cents")
    } catch let error as InvoiceError {
      print("\(invoice.number): refused, \(error)")
    }
  }

  // A deadline stops the worker and throws a ProcordError that says so.
  do {
    _ = try await archive.run(invoices, options: DelegationOptions(deadline: .milliseconds(300)))
  } catch let error as ProcordError where error.code == .deadlineExceeded {
    print("archive: \(error.message)")
  }

  // Cancelling the Swift task that awaits a run cancels the task in its
  // worker, and the await throws CancellationError.
  let archiving = Task { try await archive.run(invoices) }
  try await Task.sleep(for: .milliseconds(300))  // the user changes their mind
  archiving.cancel()
  do {
    _ = try await archiving.value
  } catch is CancellationError {
    print("archive: cancelled")
  }
}
