#if canImport(Glibc)
import Glibc
#endif

/// What the soak watches in /proc: resident memory, this program's open
/// descriptors and its child processes.
enum SoakProbes {
  /// Every open descriptor of this program and what it points at
  /// (`socket:[1234]`, `/dev/null`, `anon_inode:[eventpoll]`), without the
  /// one that reads the directory.
  static func descriptors() -> [Int32: String] {
    guard let directory = opendir("/proc/self/fd") else { return [:] }
    defer { closedir(directory) }
    let own = dirfd(directory)
    var found: [Int32: String] = [:]
    while let entry = readdir(directory) {
      let name = entryName(entry)
      guard let fd = Int32(name), fd != own else { continue }
      found[fd] = link("/proc/self/fd/\(name)") ?? "?"
    }
    return found
  }

  /// The number of descriptors a process (`self` or a pid) has open.
  static func descriptorCount(of process: String) -> Int? {
    guard let directory = opendir("/proc/\(process)/fd") else { return nil }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
      if Int32(entryName(entry)) != nil { count += 1 }
    }
    return process == "self" ? count - 1 : count  // not the one reading the directory
  }

  /// A process's children (this program's by default), whatever thread
  /// started them (Linux lists them per thread, in
  /// /proc/PID/task/TID/children), zombies included.
  static func children(of process: String = "self") -> [Int32] {
    guard let directory = opendir("/proc/\(process)/task") else { return [] }
    defer { closedir(directory) }
    var pids: [Int32] = []
    while let entry = readdir(directory) {
      let name = entryName(entry)
      guard Int32(name) != nil, let text = contents("/proc/\(process)/task/\(name)/children") else { continue }
      pids += text.split(separator: " ").compactMap { Int32($0.filter { $0.isNumber }) }
    }
    return pids.sorted()
  }

  /// True when the process sleeps in nanosleep: for a server's worker, that
  /// it runs the benchmark's `sleep` task (an idle one waits in a socket
  /// read). Another process's state, which nothing can await.
  static func isSleeping(_ pid: Int32) -> Bool {
    contents("/proc/\(pid)/wchan") == "hrtimer_nanosleep"
  }

  /// This program's anonymous memory in transparent huge pages, in MiB
  /// (AnonHugePages of /proc/self/smaps_rollup).
  static func anonymousHugePagesMebibytes() -> Double? {
    guard let text = contents("/proc/self/smaps_rollup"),
      let line = text.split(separator: "\n").first(where: { $0.hasPrefix("AnonHugePages:") })
    else { return nil }
    return Double(String(line.filter { $0.isNumber })).map { $0 / 1024 }
  }

  /// A process described for a report: `1234 (procord-bench, state S)`.
  static func describe(_ pid: Int32) -> String {
    guard let stat = contents("/proc/\(pid)/stat"), let open = stat.firstIndex(of: "("),
      let close = stat.lastIndex(of: ")")
    else { return "\(pid) (gone)" }
    let name = stat[stat.index(after: open)..<close]
    let state = stat[stat.index(after: close)...].split(separator: " ").first ?? "?"
    return "\(pid) (\(name), state \(state))"
  }

  private static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
    withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
  }

  private static func link(_ path: String) -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink(path, &buffer, buffer.count - 1)
    guard count >= 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  private static func contents(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let count = fread(&buffer, 1, buffer.count, file)
      if count <= 0 { break }
      bytes += buffer[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
