import Procord

#if canImport(Glibc)
import Glibc
#endif

struct WordCount: Codable, Sendable {
  var words: Int
  var longest: String
}

let countWords = ProcordTask<String, WordCount>(name: "count-words") { text in
  let words = text.split(separator: " ")
  return WordCount(words: words.count, longest: String(words.max { $0.count < $1.count } ?? ""))
}

// `procord-server-example --procord-server --procord-port 9000` is a worker
// server: it serves countWords to every main program that connects, until
// SIGTERM. `procord-server-example HOST PORT` is a main program that sends
// its tasks to the server at HOST:PORT.
try await Worker.main(tasks: [countWords]) { arguments in
  guard arguments.count == 2, let port = Int(arguments[1]) else {
    print("usage: procord-server-example --procord-server --procord-port PORT  (the server)")
    print("       procord-server-example HOST PORT                             (a client)")
    exit(2)
  }
  let server = Destination.server(host: arguments[0], port: port)
  let texts = [
    "a worker server runs tasks for every main program that connects",
    "each task runs in a worker process of the server",
    "a crash takes down one worker and nothing else",
  ]
  // Three tasks on the server at once, each on a connection of its own.
  let counts = try await withThrowingTaskGroup(of: (Int, WordCount).self) { group in
    for (index, text) in texts.enumerated() {
      group.addTask { (index, try await countWords.run(text, to: server)) }
    }
    var counts = [WordCount?](repeating: nil, count: texts.count)
    for try await (index, count) in group { counts[index] = count }
    return counts.compactMap { $0 }
  }
  for count in counts { print("\(count.words) words, the longest is \"\(count.longest)\"") }
}
