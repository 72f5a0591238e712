#if canImport(Glibc)
import Glibc
#endif

// Copies of message bodies. A large copy lands in a fresh mapping whose every
// 4 KiB page faults and is zeroed when first written, which on some machines
// costs more than the copy itself; such buffers are asked to use transparent
// huge pages first, as the C core does for its own (memory_private.h).

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
/// no bytes or no memory.
func mallocCopy(_ bytes: UnsafeRawBufferPointer) -> UnsafeMutableRawPointer? {
  guard let source = bytes.baseAddress, bytes.count > 0, let copy = malloc(bytes.count) else { return nil }
  adviseHugePages(copy, count: bytes.count)
  memcpy(copy, source, bytes.count)
  return copy
}
