#if canImport(Glibc)
import Glibc
#endif

// Copies of message bodies. A large copy lands in a fresh mapping whose every
// 4 KiB page faults and is zeroed when first written, which on some machines
// costs more than the copy itself; such buffers are asked to use transparent
// huge pages first, as the C core does for its own (Sources/CProcord/base/base_private.h).

/// Bodies from this size on are asked to use transparent huge pages.
let hugePageThreshold = 2 << 20

/// Asks the kernel to back the whole pages of a buffer not yet written with
/// transparent huge pages. Advice only: where the kernel will not, nothing
/// changes.
func adviseHugePages(_ start: UnsafeMutableRawPointer, count: Int) {
  guard count >= hugePageThreshold else { return }
  let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
  let first = (UInt(bitPattern: start) + page - 1) & ~(page - 1)
  let end = (UInt(bitPattern: start) + UInt(count)) & ~(page - 1)
  if end > first { madvise(UnsafeMutableRawPointer(bitPattern: first), Int(end - first), MADV_HUGEPAGE) }
}

/// A new array holding a copy of `bytes`.
func copiedBytes(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
  guard bytes.count >= hugePageThreshold, let source = bytes.baseAddress else { return [UInt8](bytes) }
  return [UInt8](unsafeUninitializedCapacity: bytes.count) { buffer, initialized in
    adviseHugePages(UnsafeMutableRawPointer(buffer.baseAddress!), count: bytes.count)
    memcpy(buffer.baseAddress!, source, bytes.count)
    initialized = bytes.count
  }
}

/// A malloc'd copy of `bytes` (for the C core, which frees it), or nil for
/// no bytes or no memory. Only for small bodies: large ones are lent.
func mallocCopy(_ bytes: UnsafeRawBufferPointer) -> UnsafeMutableRawPointer? {
  guard let source = bytes.baseAddress, bytes.count > 0, let copy = malloc(bytes.count) else { return nil }
  memcpy(copy, source, bytes.count)
  return copy
}

/// From this size on, bodies are lent to the C core rather than copied.
let lendingThreshold = 64 << 10

/// An array's bytes lent to the C core without a copy.
///
/// A `[UInt8]` keeps its elements in one heap buffer, which does not move
/// while a reference to it is alive, and which nobody can change in place
/// while this box holds one (a mutation through another copy of the array
/// makes a new buffer first: copy on write). The box keeps that buffer alive
/// until the C core releases it, so the address taken here stays valid.
final class PinnedBytes: @unchecked Sendable {
  private let bytes: [UInt8]
  let base: UnsafeRawPointer?

  init(_ bytes: [UInt8]) {
    self.bytes = bytes
    base = self.bytes.withUnsafeBytes { $0.baseAddress }
  }

  /// A retained reference for the C core, given back by ``releasePinnedBytes``.
  func lend() -> UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }

  /// `bytes` lent to the C core if they are large enough to be worth it:
  /// their address, and the context to give to ``releasePinnedBytes``.
  static func lendIfLarge(_ bytes: [UInt8]) -> (base: UnsafeRawPointer?, context: UnsafeMutableRawPointer)? {
    guard bytes.count >= lendingThreshold else { return nil }
    let pinned = PinnedBytes(bytes)
    return (pinned.base, pinned.lend())
  }
}

/// The C core's release callback for lent bytes.
let releasePinnedBytes: @convention(c) (UnsafeMutableRawPointer?) -> Void = { context in
  guard let context else { return }
  Unmanaged<PinnedBytes>.fromOpaque(context).release()
}
