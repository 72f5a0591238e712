// Running a task over many inputs through a pool: in input order, or as the
// results come.

extension WorkerPool {
  /// How many tasks the bulk helpers keep delegated at once by default:
  /// twice the workers, so that each worker has its next task queued when
  /// it answers.
  var defaultConcurrency: Int { max(1, configuration.maximumWorkers * 2) }

  /// Runs `task` on every input, at most `maxConcurrency` at once (by
  /// default twice the pool's workers), and returns the outputs in the
  /// order of the inputs.
  ///
  /// The first failure (the task's own error, or a ``ProcordError``) is
  /// thrown once the tasks already running have finished (their outputs are
  /// dropped): no further input is delegated, tasks still queued in the
  /// pool are withdrawn, and no healthy worker is killed. Use
  /// ``mapUnordered(_:_:maxConcurrency:options:)`` to get every result,
  /// failures included. Cancelling the calling task kills the running ones
  /// and throws `CancellationError`.
  public func map<T: DelegatableTask, Inputs: Sequence>(
    _ task: T, _ inputs: Inputs, maxConcurrency: Int? = nil, options: DelegationOptions = DelegationOptions()
  ) async throws -> [T.Output] where Inputs.Element == T.Input {
    typealias Output = T.Output
    let limit = max(1, maxConcurrency ?? defaultConcurrency)
    var outputs: [Output?] = []
    var outstanding: [Int: DelegatedProcess<Output>] = [:]
    var firstFailure: (any Error)?
    var pending = inputs.makeIterator()
    await withTaskGroup(of: (Int, Result<Output, any Error>).self) { group in
      // Delegates the next input (in input order: the group only awaits);
      // false when there is none, or it could not be delegated.
      func delegateNext() async -> Bool {
        guard firstFailure == nil, let input = pending.next() else { return false }
        do {
          let process = try await submitForAwaiting(task, input, options: options)
          let index = outputs.count
          outputs.append(nil)
          outstanding[index] = process
          group.addTask { (index, await Result { try await process.value }) }
          return true
        } catch {
          firstFailure = error
          return false
        }
      }
      var running = 0
      while running < limit, await delegateNext() { running += 1 }
      while let (index, result) = await group.next() {
        outstanding[index] = nil
        switch result {
        case .success(let output): outputs[index] = output
        case .failure(let error):
          if firstFailure == nil {
            firstFailure = error
            // Withdraw what has not started; what runs finishes.
            for process in outstanding.values where !process.isDelivered { process.kill() }
          }
        }
        _ = await delegateNext()
      }
    }
    if let firstFailure { throw firstFailure }
    return outputs.map { $0! }
  }

  /// Runs `task` on every input, at most `maxConcurrency` at once, and
  /// yields each result as it comes, with the index of its input. Every
  /// input gets exactly one result, failures included. Ending the
  /// iteration early kills the tasks still running.
  public func mapUnordered<T: DelegatableTask, Inputs: Sequence & Sendable>(
    _ task: T, _ inputs: Inputs, maxConcurrency: Int? = nil, options: DelegationOptions = DelegationOptions()
  ) -> AsyncStream<(index: Int, result: Result<T.Output, any Error>)> where Inputs.Element == T.Input {
    typealias Output = T.Output
    let limit = max(1, maxConcurrency ?? defaultConcurrency)
    let (stream, continuation) = AsyncStream.makeStream(of: (index: Int, result: Result<Output, any Error>).self)
    let driver = Task {
      await withTaskGroup(of: (Int, Result<Output, any Error>).self) { group in
        var pending = inputs.makeIterator()
        var delegated = 0
        var running = 0
        /// Delegates the next input; false once there is none (or on cancellation).
        func startNext(_ group: inout TaskGroup<(Int, Result<Output, any Error>)>) async -> Bool {
          guard !Task.isCancelled, let input = pending.next() else { return false }
          let index = delegated
          delegated += 1
          do {
            let process = try await submitForAwaiting(task, input, options: options)
            group.addTask { (index, await Result { try await process.value }) }
          } catch {
            group.addTask { (index, .failure(error)) }
          }
          return true
        }
        while running < limit, await startNext(&group) { running += 1 }
        while let (index, result) = await group.next() {
          continuation.yield((index, result))
          _ = await startNext(&group)
        }
      }
      continuation.finish()
    }
    continuation.onTermination = { _ in driver.cancel() }
    return stream
  }
}

extension WorkerPool {
  /// ``submit(_:_:options:)`` for the calls that await outputs, which throw
  /// ``ProcordError`` rather than ``WorkerPoolError``.
  func submitForAwaiting<T: DelegatableTask>(
    _ task: T, _ input: T.Input, options: DelegationOptions
  ) async throws -> DelegatedProcess<T.Output> {
    do {
      return try await submit(task, input, options: options)
    } catch {
      throw awaitedStartFailure(error, taskName: task.delegated.name, destination: workerName)
    }
  }
}

extension Result where Failure == any Error {
  /// The result of an async throwing body.
  init(catching body: () async throws -> Success) async {
    do { self = .success(try await body()) } catch { self = .failure(error) }
  }
}
