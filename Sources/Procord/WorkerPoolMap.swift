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
  /// The first failure (the task's error, or an ``ExecutionError``) is
  /// thrown, and the tasks still running are killed; use
  /// ``mapUnordered(_:_:maxConcurrency:options:)`` to get every result,
  /// failures included. Cancelling the calling task kills the running ones.
  public func map<Inputs: Sequence, Output>(
    _ task: DelegatedTask<Inputs.Element, Output>, _ inputs: Inputs, maxConcurrency: Int? = nil,
    options: DelegationOptions = DelegationOptions()
  ) async throws -> [Output] {
    let limit = max(1, maxConcurrency ?? defaultConcurrency)
    return try await withThrowingTaskGroup(of: (Int, Output).self) { group in
      var outputs: [Output?] = []
      var pending = inputs.makeIterator()
      var running = 0
      // Delegating happens here, in input order; the group only awaits.
      while running < limit, let input = pending.next() {
        let process = try await submit(task, input, options: options)
        let index = outputs.count
        outputs.append(nil)
        group.addTask { (index, try await process.value) }
        running += 1
      }
      while let (index, output) = try await group.next() {
        outputs[index] = output
        if let input = pending.next() {
          let process = try await submit(task, input, options: options)
          let next = outputs.count
          outputs.append(nil)
          group.addTask { (next, try await process.value) }
        }
      }
      return outputs.map { $0! }
    }
  }

  /// Runs a task on every input; see ``map(_:_:maxConcurrency:options:)-(DelegatedTask<Inputs.Element,Output>,_,_,_)``.
  public func map<Inputs: Sequence, Output>(
    _ task: ProcordTask<Inputs.Element, Output>, _ inputs: Inputs, maxConcurrency: Int? = nil,
    options: DelegationOptions = DelegationOptions()
  ) async throws -> [Output] {
    try await map(task.delegated, inputs, maxConcurrency: maxConcurrency, options: options)
  }

  /// Runs `task` on every input, at most `maxConcurrency` at once, and
  /// yields each result as it comes, with the index of its input. Every
  /// input gets exactly one result, failures included. Ending the
  /// iteration early kills the tasks still running.
  public func mapUnordered<Inputs: Sequence & Sendable, Output>(
    _ task: DelegatedTask<Inputs.Element, Output>, _ inputs: Inputs, maxConcurrency: Int? = nil,
    options: DelegationOptions = DelegationOptions()
  ) -> AsyncStream<(index: Int, result: Result<Output, any Error>)> {
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
            let process = try await submit(task, input, options: options)
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

extension Result where Failure == any Error {
  /// The result of an async throwing body.
  init(catching body: () async throws -> Success) async {
    do { self = .success(try await body()) } catch { self = .failure(error) }
  }
}
