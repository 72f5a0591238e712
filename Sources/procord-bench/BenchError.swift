import CProcord

/// What stops a scenario, in words.
struct BenchError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }

  /// A failed C call that returned a negative errno or PROCORD_E* code.
  init(_ what: String, code: Int32) {
    description = "\(what): \(String(cString: procord_strerror(code)))"
  }
}

/// Throws unless `result` is 0 (C convention: a negative code on failure).
func check(_ result: Int32, _ what: String) throws {
  if result < 0 { throw BenchError(what, code: result) }
}
