import CProcord
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// Running a task for the C worker loop, which calls on its own thread and
// waits for the reply: a body that never suspends is called right there; an
// async one runs on Swift concurrency while that thread waits, and a SIGTERM
// from the main program (a cancellation, or a deadline) cancels it.

/// Holds a task for the C worker loop, which sees it as an opaque pointer.
final class TaskBox {
  let task: any ServableTask
  init(_ task: any ServableTask) { self.task = task }
}

/// The C worker loop's task function: decode, run, encode, into a malloc'd reply.
let runTask: procord_task_fn = { context, input, length, reply in
  guard let context, let reply else { return }
  let task = Unmanaged<TaskBox>.fromOpaque(context).takeUnretainedValue().task
  let bytes = input.map { copiedBytes(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
  // No `as?` cast here: its first use scans every conformance record of the
  // process, pages an idle worker would otherwise never touch.
  let answer = task.replyWithoutSuspending(to: bytes) ?? RunningTask.awaitReply { await task.reply(to: bytes) }
  let (kind, body): (procord_frame_kind, [UInt8])
  switch answer {
  case .value(let output): (kind, body) = (PROCORD_FRAME_VALUE, output)
  case .exception(let error): (kind, body) = (PROCORD_FRAME_EXCEPTION, error)
  case .unknownException(let text): (kind, body) = (PROCORD_FRAME_UNKNOWN_EXCEPTION, Array(text.utf8))
  }
  reply.pointee.kind = UInt8(kind.rawValue)
  if let lent = PinnedBytes.lendIfLarge(body) {
    // Lent, not copied: the worker gives it back once it has sent it.
    reply.pointee.body = UnsafeMutableRawPointer(mutating: lent.base)
    reply.pointee.length = body.count
    reply.pointee.release = releasePinnedBytes
    reply.pointee.release_context = lent.context
    return
  }
  let buffer = body.withUnsafeBytes { mallocCopy($0) }
  reply.pointee.body = buffer
  reply.pointee.length = buffer == nil ? 0 : body.count
}

/// The async task this worker process is running, if any, and whether the
/// main program asked it to stop.
enum RunningTask {
  private struct State {
    var current: Task<Void, Never>?
    /// From before `current` is made to after it has answered.
    var running = false
    var terminating = false
  }

  private static let state = Mutex(State())

  /// Whether this process is a worker whose tasks may be cancelled, by
  /// SIGTERM or only by its watchdog, and whether that is watched yet.
  private static let termination = Mutex((allowed: false, bySIGTERM: false, watched: false))

  /// Called by a worker of a main program (`bySIGTERM`) or of a server (not
  /// a program serving on its own descriptors): its first async task makes
  /// the news that the task must stop cancel it.
  static func allowCancellation(bySIGTERM: Bool) {
    termination.withLock { $0 = (true, bySIGTERM, $0.watched) }
  }

  /// Makes the news that the task must stop (SIGTERM, or the watchdog)
  /// cancel the running task instead of killing the process at once: the
  /// task then has its grace period (SIGKILL follows it) to see
  /// `Task.isCancelled` and return, and the worker exits once it has.
  /// Between tasks, the news ends the worker as before.
  private static func watchTermination() {
    termination.withLock { termination in
      guard termination.allowed, !termination.watched else { return }
      termination.watched =
        procord_worker_watch_termination({ _ in RunningTask.terminate() }, nil, termination.bySIGTERM ? 1 : 0) == 0
    }
  }

  /// Runs `operation` on Swift concurrency and blocks this (non-Swift)
  /// thread until it is done: the C worker loop waits for its reply.
  static func awaitReply(_ operation: @escaping @Sendable () async -> TaskReply) -> TaskReply {
    watchTermination()
    // Running from here on, before the task exists: news that comes before
    // it is registered is not mistaken for an idle worker's.
    state.withLock { $0.running = true }
    let result = Mutex<TaskReply?>(nil)
    let done = ThreadSemaphore()
    let task = Task {
      let reply = await operation()
      result.withLock { $0 = reply }
      done.signal()
    }
    let cancelled = state.withLock { state -> Bool in
      state.current = task
      return state.terminating
    }
    if cancelled { task.cancel() }
    done.wait()
    let terminating = state.withLock { state -> Bool in
      state.current = nil
      state.running = false
      return state.terminating
    }
    // Cancelled by the main program, which no longer waits for the answer.
    if terminating { _exit(128 + SIGTERM) }
    return result.withLock { $0 } ?? .unknownException("the task ended without an answer")
  }

  /// The task must stop: cancels the running task (or has awaitReply
  /// cancel it as soon as it is registered), or ends an idle worker.
  private static func terminate() {
    let (running, task) = state.withLock { state -> (Bool, Task<Void, Never>?) in
      state.terminating = true
      return (state.running, state.current)
    }
    guard running else { _exit(128 + SIGTERM) }
    task?.cancel()
  }
}

/// A POSIX semaphore, for a thread outside Swift concurrency to wait on one
/// of its tasks (libswiftDispatch would cost every worker its pages).
private final class ThreadSemaphore: @unchecked Sendable {
  private let semaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)

  init() { sem_init(semaphore, 0, 0) }

  deinit {
    sem_destroy(semaphore)
    semaphore.deallocate()
  }

  func signal() { sem_post(semaphore) }

  func wait() {
    while sem_wait(semaphore) != 0 && errno == EINTR {}
  }
}
