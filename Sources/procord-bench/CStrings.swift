#if canImport(Glibc)
import Glibc
#endif

/// Calls `body` with a NULL-terminated C string vector (`const char *const *`)
/// for `strings`, valid during the call.
func withConstArgumentVector<R>(
  _ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) throws -> R
) rethrows -> R {
  let vector = strings.map { strdup($0) } + [nil]
  defer { vector.forEach { free($0) } }
  return try vector.withUnsafeBufferPointer { buffer in
    try body(UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: UnsafePointer<CChar>?.self))
  }
}

/// A monotonic clock reading, in nanoseconds.
func nowNanoseconds() -> UInt64 {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// The resident memory of a process (`self` or a pid), in MiB, from
/// /proc/PID/status.
func residentMebibytes(of process: String = "self") -> Double? {
  guard let file = fopen("/proc/\(process)/status", "r") else { return nil }
  defer { fclose(file) }
  var line = [CChar](repeating: 0, count: 256)
  while fgets(&line, Int32(line.count), file) != nil {
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    if text.hasPrefix("VmRSS:") {
      let digits = text.dropFirst(6).filter { $0.isNumber }
      return Double(String(digits)).map { $0 / 1024 }
    }
  }
  return nil
}
