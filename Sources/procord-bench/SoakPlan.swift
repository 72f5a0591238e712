/// What a soak task is made to do, and so which final status it must get.
enum SoakKind: String, CaseIterable, Codable, Sendable {
  /// Bytes there and back: success, the same bytes.
  case echo
  /// fibo(n): success, the right number.
  case fibo
  /// The worker dies mid-task: disconnected, with the signal or exit code.
  case crash
  /// A task that sleeps a minute, with a deadline of a few hundred ms:
  /// deadline exceeded.
  case sleepPastDeadline = "sleep past deadline"
  /// A task that sleeps a minute, killed soon after it is delegated: killed.
  case kill
}

/// Where a soak task goes.
enum SoakRoute: String, CaseIterable, Codable, Sendable {
  /// A pool of this executable's workers in socket mode.
  case localPool = "local pool"
  /// A pool of connections to the worker server.
  case serverPool = "server pool"
  /// One connection to the worker server for this task alone.
  case oneOffServer = "one-off server"
  /// One new worker process for this task alone.
  case oneOffLocal = "one-off local"

  var isRemote: Bool { self == .serverPool || self == .oneOffServer }
}

/// One task of the soak: where it goes and what it is given.
struct SoakPlan: Sendable {
  enum Input: Sendable {
    /// `size` bytes made from `seed` (see ``SoakPayload``).
    case echo(size: Int, seed: UInt64)
    case fibo(Int)
    /// `segv`, `abort` or `exit:N`.
    case crash(String)
    /// Sleep a minute with this deadline.
    case sleepPastDeadline(milliseconds: Int)
    /// Sleep a minute, killed this long after the delegation (0: at once).
    case kill(afterMilliseconds: Int)
  }

  var route: SoakRoute
  var input: Input

  var kind: SoakKind {
    switch input {
    case .echo: return .echo
    case .fibo: return .fibo
    case .crash: return .crash
    case .sleepPastDeadline: return .sleepPastDeadline
    case .kill: return .kill
    }
  }

  /// The task and its input, in a few words.
  var summary: String {
    switch input {
    case .echo(let size, _): return "echo of \(size) bytes"
    case .fibo(let n): return "fibo(\(n))"
    case .crash(let how): return "crash(\(how))"
    case .sleepPastDeadline(let milliseconds): return "sleep(60 s) with a deadline of \(milliseconds) ms"
    case .kill(let milliseconds): return "sleep(60 s) killed after \(milliseconds) ms"
    }
  }
}

/// The weighted random mix of kinds, routes and inputs. Pool tasks
/// dominate, as in a program that uses Procord; the failures come often
/// enough that every one of their paths runs thousands of times in ten
/// minutes.
struct SoakMix: Sendable {
  static let kindWeights: [(SoakKind, Int)] = [
    (.echo, 40), (.fibo, 36), (.crash, 8), (.sleepPastDeadline, 6), (.kill, 10),
  ]
  static let routeWeights: [(SoakRoute, Int)] = [
    (.localPool, 50), (.serverPool, 35), (.oneOffServer, 10), (.oneOffLocal, 5),
  ]

  /// The largest echo: a few MiB, well under the 64 MiB frame limit.
  static let largestEcho = 4 << 20

  func next(_ random: inout SoakRandom) -> SoakPlan {
    let route = Self.pick(Self.routeWeights, &random)
    switch Self.pick(Self.kindWeights, &random) {
    case .echo: return SoakPlan(route: route, input: .echo(size: Self.echoSize(&random), seed: random.next()))
    case .fibo: return SoakPlan(route: route, input: .fibo(Int(random.below(UInt64(SoakTasks.largestFibo + 1)))))
    case .crash:
      let how: String
      switch random.below(10) {
      case 0..<4: how = "segv"
      case 4..<7: how = "abort"
      default: how = "exit:\(random.below(121))"
      }
      return SoakPlan(route: route, input: .crash(how))
    case .sleepPastDeadline:
      return SoakPlan(route: route, input: .sleepPastDeadline(milliseconds: 10 + Int(random.below(291))))
    case .kill:
      // One in ten at once, while the task may still be queued or starting.
      let delay = random.below(10) == 0 ? 0 : 1 + Int(random.below(200))
      return SoakPlan(route: route, input: .kill(afterMilliseconds: delay))
    }
  }

  /// Mostly small, some large: 0 to 1 KiB (60%), to 64 KiB (25%), to 1 MiB
  /// (12%), to ``largestEcho`` (3%).
  private static func echoSize(_ random: inout SoakRandom) -> Int {
    let (low, high): (Int, Int)
    switch random.below(100) {
    case 0..<60: (low, high) = (0, 1 << 10)
    case 60..<85: (low, high) = (1 << 10, 64 << 10)
    case 85..<97: (low, high) = (64 << 10, 1 << 20)
    default: (low, high) = (1 << 20, largestEcho)
    }
    return low + Int(random.below(UInt64(high - low + 1)))
  }

  private static func pick<T>(_ weights: [(T, Int)], _ random: inout SoakRandom) -> T {
    var roll = Int(random.below(UInt64(weights.reduce(0) { $0 + $1.1 })))
    for (value, weight) in weights {
      if roll < weight { return value }
      roll -= weight
    }
    return weights[weights.count - 1].0
  }
}

/// SplitMix64: small, fast and seedable, so that a lane's sequence of tasks
/// is the same for the same `--seed`.
struct SoakRandom: RandomNumberGenerator, Sendable {
  private var state: UInt64

  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A number in 0..<bound (bound > 0).
  mutating func below(_ bound: UInt64) -> UInt64 { next(upperBound: bound) }
}

/// The bytes of an echo: `size` bytes that depend on `seed`, cheap to make
/// even at a few MiB (eight bytes per random number).
enum SoakPayload {
  static func bytes(size: Int, seed: UInt64) -> [UInt8] {
    var random = SoakRandom(seed: seed)
    return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
      var index = 0
      while index < size {
        var word = random.next()
        for _ in 0..<min(8, size - index) {
          buffer[index] = UInt8(truncatingIfNeeded: word)
          word >>= 8
          index += 1
        }
      }
      count = size
    }
  }
}
